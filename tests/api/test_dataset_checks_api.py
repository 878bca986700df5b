"""The datasets page's endpoints: check a file before saving it, preview a dataset.

`POST /api/datasets/validate` reports what `flextrain datasets validate` does and
registers nothing; `GET /api/datasets/{id}/preview` shows the first rows to whoever
may see the dataset.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flextrain.api.app import create_app
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.api.conftest import add_caller, stop_jobs
from tests.api.helpers import Caller, assert_error
from tests.api.test_resources import LINTED, REVIEWS, stray_uploads, upload

VALIDATE = "/api/datasets/validate"


def validate(
    client: TestClient,
    caller: Caller | None,
    content: bytes = REVIEWS,
    filename: str = "reviews.jsonl",
    **data: str,
) -> Any:
    return client.post(
        VALIDATE,
        files={"file": (filename, content, "application/octet-stream")},
        data=data,
        headers=caller.headers if caller else {},
    )


def assert_fields(body: dict[str, Any], field: str) -> None:
    """Every entry names a field and a fix; the first names `field`."""
    assert body["errors"], body
    for error in body["errors"]:
        assert error["field"], error
        assert error["message"], error
        assert error["fix"], error
    assert body["errors"][0]["field"] == field, body["errors"]


# -- validate ---------------------------------------------------------------------------


def test_validate_reports_rows_shape_and_labels_and_registers_nothing(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    response = validate(client, trainer)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is True
    assert report["file_name"] == "reviews.jsonl"
    assert report["format"] == "jsonl"
    assert report["shape"] == "classification"
    assert report["rows"] == 40
    assert report["columns"] == ["text", "label"]
    assert report["mapping"] == {"text": "text", "label": "label"}
    assert report["labels"] == {"positive": 20, "negative": 20}
    assert report["errors"] == []
    assert report["error_count"] == 0
    # Twenty rows repeat the first two: warnings, with their rows.
    assert report["duplicate_rows"] == 38
    assert report["warning_count"] == 38
    assert report["warnings"][0] == {
        "severity": "warning",
        "row": 3,
        "line": 3,
        "field": "record",
        "message": "row 3, record: duplicates row 1",
        "fix": None,
    }
    assert service.datasets.access("reviews") is None
    assert [n for n in service.datasets.names() if not n.startswith("demo/")] == []
    assert stray_uploads(service) == []


def test_validate_lists_errors_with_their_lines_as_the_cli_does(
    client: TestClient, trainer: Caller, service: TrainingService, tmp_path: Path
) -> None:
    response = validate(client, trainer, LINTED, filename="linted.jsonl")
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["ok"] is False
    assert report["error_count"] == 3
    assert report["errors_not_shown"] == 0
    where = [(e["row"], e["line"], e["field"]) for e in report["errors"]]
    assert where == [(None, 2, "record"), (3, 4, "text"), (None, 6, "record")]
    assert report["errors"][1]["message"] == "row 3 (line 4), text: is missing"
    assert report["errors"][0]["fix"] == "one complete JSON object per line."
    # The summary is the CLI's report of the same file, word for word.
    local = tmp_path / "linted.jsonl"
    local.write_bytes(LINTED)
    assert report["summary"] == service.datasets.validate(local).summary()
    assert service.datasets.access("linted") is None
    assert stray_uploads(service) == []


def test_validate_lists_50_issues_and_counts_the_rest(client: TestClient, trainer: Caller) -> None:
    report = validate(client, trainer, b'{"text": "ok"}\n' + b"[1]\n" * 60).json()
    assert report["error_count"] == 60
    assert len(report["errors"]) == 50
    assert report["errors_not_shown"] == 10
    assert report["errors"][49]["line"] == 51
    assert "... and 10 more (10 errors, 0 warnings not shown)" in report["summary"]


def test_validate_takes_the_shape_and_column_map(client: TestClient, trainer: Caller) -> None:
    content = b'{"body": "hello there", "tag": "a"}\n{"body": "bye now", "tag": "b"}\n'
    report = validate(
        client, trainer, content, shape="classification", columns='{"text": "body", "label": "tag"}'
    ).json()
    assert report["shape"] == "classification"
    assert report["mapping"] == {"text": "body", "label": "tag"}
    # Each label once: an error per row, with the fix in its own field.
    assert report["ok"] is False
    assert report["errors"][0]["field"] == "label"
    assert report["errors"][0]["fix"].startswith("add examples of it")


def test_a_file_validate_cannot_read_is_a_422_naming_the_field(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    assert_fields(assert_error(validate(client, trainer, b""), 422, "has no records"), "file")
    unknown = validate(client, trainer, b'{"a": 1}\n')
    assert_fields(assert_error(unknown, 422), "columns")
    suffix = validate(client, trainer, filename="data.exe")
    assert_fields(assert_error(suffix, 422, "unsupported type '.exe'"), "file")
    shape = validate(client, trainer, shape="poem")
    assert_fields(assert_error(shape, 422, "shape: 'poem' is not known"), "shape")
    columns = validate(client, trainer, columns="[1]")
    assert_fields(assert_error(columns, 422), "columns")
    missing = client.post(VALIDATE, data={"shape": "text"}, headers=trainer.headers)
    assert_fields(assert_error(missing, 422), "file")
    assert stray_uploads(service) == []


def test_validate_needs_the_trainer_role(client: TestClient, viewer: Caller, admin: Caller) -> None:
    assert_fields(assert_error(validate(client, viewer), 403, "'viewer'"), "role")
    assert_fields(assert_error(validate(client, None), 401), "Authorization")
    assert validate(client, admin).status_code == 200


@pytest.fixture
def small_uploads(settings: Settings) -> Iterator[tuple[TestClient, TrainingService]]:
    app: FastAPI = create_app(settings.model_copy(update={"max_upload_mb": 1}))
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, app.state.service
    finally:
        stop_jobs(app.state.service)


def test_validate_has_the_upload_size_limit(
    small_uploads: tuple[TestClient, TrainingService],
) -> None:
    client, service = small_uploads
    tom = add_caller(service, "tom", "trainer")
    line = json.dumps({"text": "some words " * 20}) + "\n"

    def rows(size: int) -> bytes:
        return (line * (size // len(line) + 1)).encode()

    # Declared far over (refused before the body is read), and just over (counted).
    for size in (3 * 1024**2, 1024**2 + 4096):
        body = assert_error(validate(client, tom, rows(size)), 413, "1 MB", "max_upload_mb")
        assert_fields(body, "file")
    assert stray_uploads(service) == []
    assert validate(client, tom, rows(100_000)).status_code == 200


# -- preview ----------------------------------------------------------------------------


def test_preview_shows_the_first_rows_as_training_reads_them(
    client: TestClient, trainer: Caller
) -> None:
    saved = upload(client, trainer, "tom/reviews").json()
    response = client.get("/api/datasets/tom/reviews/preview?limit=3", headers=trainer.headers)
    assert response.status_code == 200, response.text
    preview = response.json()
    assert preview["dataset_id"] == "tom/reviews"
    assert preview["version"] == saved["version"]
    assert preview["shape"] == "classification"
    assert preview["columns"] == ["text", "label"]
    assert preview["total_rows"] == 40
    assert preview["rows"] == [
        {"text": "the soup was good today", "label": "positive"},
        {"text": "the soup was awful today", "label": "negative"},
        {"text": "the soup was good today", "label": "positive"},
    ]
    default = client.get("/api/datasets/tom/reviews/preview", headers=trainer.headers).json()
    assert len(default["rows"]) == 20
    pinned = f"/api/datasets/tom/reviews@{saved['version'][:12]}/preview?limit=1"
    assert client.get(pinned, headers=trainer.headers).json()["rows"][0]["label"] == "positive"


def test_preview_of_a_bundled_dataset(client: TestClient, viewer: Caller) -> None:
    preview = client.get("/api/datasets/demo/sentiment/preview?limit=2", headers=viewer.headers)
    assert preview.status_code == 200, preview.text
    data = preview.json()
    assert data["total_rows"] == 480
    assert len(data["rows"]) == 2
    assert set(data["rows"][0]) == {"text", "label"}
    text = client.get("/api/datasets/demo/text/preview?limit=1", headers=viewer.headers).json()
    assert list(text["rows"][0]) == ["text"]


def test_preview_cuts_long_values_and_bounds_the_rows(client: TestClient, trainer: Caller) -> None:
    long = json.dumps({"text": "word " * 600}) + "\n" + json.dumps({"text": "short"}) + "\n"
    assert upload(client, trainer, "tom/long", long.encode()).status_code == 201
    data = client.get("/api/datasets/tom/long/preview", headers=trainer.headers).json()
    assert data["truncated_values"] == 1
    assert len(data["rows"][0]["text"]) == 1001
    assert data["rows"][0]["text"].endswith("…")
    for limit in (0, 101, "many"):
        bad = client.get(f"/api/datasets/tom/long/preview?limit={limit}", headers=trainer.headers)
        assert_fields(assert_error(bad, 422), "limit")


def test_preview_only_for_those_who_may_see_the_dataset(
    client: TestClient, trainer: Caller, other_trainer: Caller, viewer: Caller
) -> None:
    assert upload(client, trainer, "tom/private").status_code == 201
    path = "/api/datasets/tom/private/preview"
    hidden = client.get(path, headers=other_trainer.headers)
    assert_fields(assert_error(hidden, 404, "'tom/private' is not registered"), "dataset_id")
    assert client.get(path, headers=viewer.headers).status_code == 200
    assert_fields(assert_error(client.get(path), 401), "Authorization")
    unknown = client.get("/api/datasets/nope/preview", headers=viewer.headers)
    assert_fields(assert_error(unknown, 404, "'nope' is not registered"), "dataset_id")
    # A trainer names datasets, never server files.
    file = client.get("/api/datasets//etc/passwd/preview", headers=trainer.headers)
    assert file.status_code == 404, file.text


def test_the_list_says_who_owns_each_dataset(client: TestClient, trainer: Caller) -> None:
    assert upload(client, trainer, "tom/mine").status_code == 201
    listed = {
        d["dataset_id"]: d for d in client.get("/api/datasets", headers=trainer.headers).json()
    }
    assert (listed["tom/mine"]["owner"], listed["tom/mine"]["shared"]) == ("tom", False)
    assert (listed["demo/text"]["owner"], listed["demo/text"]["shared"]) == (None, True)


# -- OpenAPI ----------------------------------------------------------------------------


def test_the_new_endpoints_are_typed_in_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    check = spec["paths"][VALIDATE]["post"]
    body = check["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    form = spec["components"]["schemas"][body.rsplit("/", 1)[-1]]
    assert {"file", "shape", "columns"} <= set(form["properties"])
    assert form["required"] == ["file"]
    ok = check["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/DatasetValidation")
    assert {"401", "403", "413", "422"} <= set(check["responses"])
    preview = spec["paths"]["/api/datasets/{dataset_id}/preview"]["get"]
    ok = preview["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    assert ok.endswith("/DatasetPreview")
    limit = next(p for p in preview["parameters"] if p["name"] == "limit")
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"]) == (1, 100)
    issue = spec["components"]["schemas"]["DatasetIssue"]["properties"]
    assert {"severity", "row", "line", "field", "message", "fix"} == set(issue)
