"""The OpenAPI document lists the seed's endpoints with typed bodies and responses."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

SEED_OPERATIONS = {
    ("post", "/api/training/compatibility/check"): "CompatibilityRequest",
    ("get", "/api/training/models/trainable"): None,
    ("post", "/api/training/jobs/basic"): "BasicTrainingConfig",
    ("post", "/api/training/jobs/advanced"): "AdvancedTrainingConfig",
    ("post", "/api/training/jobs/{job_id}/start"): None,
    ("post", "/api/training/jobs/{job_id}/cancel"): None,
    ("get", "/api/training/jobs/{job_id}"): None,
    ("get", "/api/training/jobs"): None,
    ("get", "/api/training/hardware"): None,
}
SEED_RESPONSES = {
    "/api/training/compatibility/check": "ModelCompatibility",
    "/api/training/models/trainable": "TrainableModel",
    "/api/training/jobs/basic": "TrainingJob",
    "/api/training/jobs/advanced": "TrainingJob",
    "/api/training/jobs/{job_id}/start": "TrainingJob",
    "/api/training/jobs/{job_id}/cancel": "TrainingJob",
    "/api/training/jobs/{job_id}": "TrainingJob",
    "/api/training/jobs": "TrainingJob",  # a list of them, as the seed says
    "/api/training/hardware": "HardwareConstraints",
}


def _ref_name(schema: dict[str, Any]) -> str | None:
    """The component a schema names, directly or as the items of an array."""
    if "$ref" in schema:
        ref: str = schema["$ref"]
        return ref.rsplit("/", 1)[-1]
    if schema.get("type") == "array":
        return _ref_name(schema["items"])
    return None


def test_openapi_lists_every_seed_path(client: TestClient) -> None:
    response = client.get("/openapi.json")  # public, like /api/health
    assert response.status_code == 200, response.text
    paths = response.json()["paths"]
    for method, path in SEED_OPERATIONS:
        assert path in paths, path
        assert method in paths[path], (method, path)


def test_seed_operations_have_typed_bodies_and_responses(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    for (method, path), body_name in SEED_OPERATIONS.items():
        operation = spec["paths"][path][method]
        if body_name is None:
            assert "requestBody" not in operation, path
        else:
            body = operation["requestBody"]
            assert body["required"] is True, path
            schema = body["content"]["application/json"]["schema"]
            assert _ref_name(schema) == body_name, path
            assert components[body_name]["properties"], body_name

        success = [code for code in operation["responses"] if code.startswith("2")]
        assert len(success) == 1, (path, success)
        content = operation["responses"][success[0]]["content"]["application/json"]
        name = _ref_name(content["schema"])
        assert name == SEED_RESPONSES[path], (path, name)
        assert components[name]["properties"], name
        if path.startswith("/api/training/jobs/") and "{job_id}" in path:
            assert {"401", "404", "409"} <= set(operation["responses"]), path


def test_create_endpoints_answer_201_and_document_errors(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    for mode in ("basic", "advanced"):
        responses = spec["paths"][f"/api/training/jobs/{mode}"]["post"]["responses"]
        assert "201" in responses
        error = responses["422"]["content"]["application/json"]["schema"]
        assert _ref_name(error) == "ErrorBody"
    error_body = spec["components"]["schemas"]["ErrorBody"]
    assert set(error_body["properties"]) == {"detail", "code", "errors"}
    assert error_body["required"] == ["detail"]
