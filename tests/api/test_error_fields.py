"""Every 4xx names the field at fault and the fix (issue 19).

A table of bad requests across the API: unknown ids of each kind, bad enum
values, bad uploads, wrong job state, missing or wrong roles. Each answer must
carry a non-empty `errors` list whose entries all have a field, a message and a
fix, and whose first entry names the field the request got wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flextrain.service import TrainingService
from tests.api.helpers import BASIC_JOB, Caller, assert_error, create_job

UNKNOWN_JOB = "0123456789ab"
REVIEWS = b"".join(
    b'{"text": "review %d", "label": "%s"}\n' % (i, b"pos" if i % 2 else b"neg") for i in range(8)
)


@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    path: str
    status: int
    field: str
    role: str | None = "trainer"  # None: no Authorization header
    json: Any = None
    files: dict[str, Any] | None = None
    data: dict[str, str] | None = None
    params: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


def _upload(content: bytes = REVIEWS, filename: str = "r.jsonl", **data: str) -> dict[str, Any]:
    return {"files": {"file": (filename, content)}, "data": {"name": "up", **data}}


def _check(content: bytes = REVIEWS, filename: str = "r.jsonl", **data: str) -> dict[str, Any]:
    return {"files": {"file": (filename, content)}, "data": data}


VALIDATE = "/api/datasets/validate"
CASES = [
    # unknown or malformed ids of each kind
    Bad("unknown-job", "GET", f"/api/training/jobs/{UNKNOWN_JOB}", 404, "job_id"),
    Bad("malformed-job-id", "GET", "/api/training/jobs/not-an-id", 404, "job_id"),
    Bad("start-unknown-job", "POST", f"/api/training/jobs/{UNKNOWN_JOB}/start", 404, "job_id"),
    Bad("logs-unknown-job", "GET", f"/api/training/jobs/{UNKNOWN_JOB}/logs", 404, "job_id"),
    Bad(
        "checkpoints-unknown-job",
        "GET",
        f"/api/training/jobs/{UNKNOWN_JOB}/checkpoints",
        404,
        "job_id",
    ),
    Bad(
        "job-with-unknown-model",
        "POST",
        "/api/training/jobs/basic",
        404,
        "model_id",
        json={**BASIC_JOB, "model_id": "no-such-org/no-such-model"},
    ),
    Bad(
        "unregistered-model",
        "GET",
        "/api/training/models/registry/no-such-model",
        404,
        "name",
    ),
    Bad("unknown-dataset", "GET", "/api/datasets/no/such", 404, "dataset_id"),
    Bad("unknown-dataset-admin", "GET", "/api/datasets/nosuch", 404, "dataset_id", role="admin"),
    Bad("unknown-dataset-versions", "GET", "/api/datasets/nosuch/versions", 404, "dataset_id"),
    Bad("delete-unknown-dataset", "DELETE", "/api/datasets/nosuch", 404, "dataset_id"),
    Bad(
        "job-with-unknown-dataset",
        "POST",
        "/api/training/jobs/basic",
        404,
        "dataset_id",
        json={**BASIC_JOB, "dataset_id": "no-such-data"},
    ),
    Bad(
        "job-with-unknown-eval-file",
        "POST",
        "/api/training/jobs/advanced",
        404,
        "eval_file",
        json={**BASIC_JOB, "eval_file": "no-such-eval"},
    ),
    Bad("unknown-pull", "GET", "/api/training/models/pulls/nope", 404, "pull_id"),
    Bad("unknown-user", "POST", "/api/users/nobody/revoke", 404, "name", role="admin"),
    Bad("unknown-route", "GET", "/api/no-such-route", 404, "path"),
    Bad("wrong-method", "PUT", "/api/datasets", 405, "method"),
    # bad enum values and request bodies
    Bad(
        "status-enum",
        "GET",
        "/api/training/jobs",
        422,
        "status",
        params={"status": "done"},
    ),
    Bad(
        "training-type-enum",
        "POST",
        "/api/training/jobs/basic",
        422,
        "training_type",
        json={**BASIC_JOB, "training_type": "magic"},
    ),
    Bad(
        "preset-enum",
        "POST",
        "/api/training/jobs/basic",
        422,
        "preset",
        json={**BASIC_JOB, "preset": "turbo"},
    ),
    Bad(
        "missing-field",
        "POST",
        "/api/training/jobs/basic",
        422,
        "model_id",
        json={k: v for k, v in BASIC_JOB.items() if k != "model_id"},
    ),
    Bad(
        "unknown-key",
        "POST",
        "/api/training/jobs/basic",
        422,
        "epochs",
        json={**BASIC_JOB, "epochs": 3},
    ),
    Bad(
        "broken-json",
        "POST",
        "/api/training/jobs/basic",
        422,
        "body",
        json=None,
        headers={"content-type": "application/json"},
        data=None,
    ),
    Bad(
        "expert-yaml",
        "POST",
        "/api/training/expert/check",
        422,
        "yaml",
        json={"yaml": "lr_schedule_expr: [1"},
    ),
    # bad uploads
    Bad("upload-shape", "POST", "/api/datasets", 422, "shape", **_upload(shape="poem")),
    Bad("upload-columns-json", "POST", "/api/datasets", 422, "columns", **_upload(columns="[1]")),
    Bad(
        "upload-columns-part",
        "POST",
        "/api/datasets",
        422,
        "columns",
        **_upload(columns='{"txt": "text"}'),
    ),
    Bad(
        "upload-columns-missing",
        "POST",
        "/api/datasets",
        422,
        "columns",
        **_upload(columns='{"text": "body"}'),
    ),
    Bad("upload-empty", "POST", "/api/datasets", 422, "file", **_upload(b"")),
    Bad("upload-suffix", "POST", "/api/datasets", 422, "file", **_upload(filename="x.exe")),
    Bad(
        "upload-bad-rows",
        "POST",
        "/api/datasets",
        422,
        "file",
        **_upload(b'{"text": "a"}\n{"text": ""}\n[]\n'),
    ),
    Bad("upload-no-shape", "POST", "/api/datasets", 422, "columns", **_upload(b'{"a": 1}\n')),
    Bad("upload-name", "POST", "/api/datasets", 422, "name", **_upload(**{"name": "../x"})),
    Bad("upload-as-viewer", "POST", "/api/datasets", 403, "role", role="viewer", **_upload()),
    Bad(
        "upload-taken-name",
        "POST",
        "/api/datasets",
        409,
        "name",
        **_upload(**{"name": "tina/reviews"}),
    ),
    Bad("delete-others-dataset", "DELETE", "/api/datasets/tina/reviews", 403, "dataset_ref"),
    # checking a file before saving it, previewing a dataset
    Bad("validate-as-viewer", "POST", VALIDATE, 403, "role", role="viewer", **_check()),
    Bad("validate-no-token", "POST", VALIDATE, 401, "Authorization", role=None, **_check()),
    Bad("validate-suffix", "POST", VALIDATE, 422, "file", **_check(filename="x.exe")),
    Bad("validate-empty", "POST", VALIDATE, 422, "file", **_check(b"")),
    Bad("validate-shape", "POST", VALIDATE, 422, "shape", **_check(shape="poem")),
    Bad("validate-no-file", "POST", VALIDATE, 422, "file", data={"shape": "text"}),
    Bad("preview-unknown", "GET", "/api/datasets/nosuch/preview", 404, "dataset_id"),
    Bad(
        "preview-limit", "GET", "/api/datasets/demo/text/preview", 422, "limit", params={"limit": 0}
    ),
    Bad("delete-bundled", "DELETE", "/api/datasets/demo/text", 422, "dataset_id", role="admin"),
    # authentication and roles
    Bad("no-token", "GET", "/api/training/jobs", 401, "Authorization", role=None),
    Bad(
        "bad-token",
        "GET",
        "/api/training/jobs",
        401,
        "Authorization",
        role=None,
        headers={"Authorization": "Bearer not-a-token-at-all"},
    ),
    Bad("admin-only", "GET", "/api/users", 403, "role"),
    Bad(
        "priority-needs-admin",
        "POST",
        "/api/training/jobs/basic",
        403,
        "priority",
        json=BASIC_JOB,
        params={"priority": 5},
    ),
    # wrong job state ({cancelled} and {pending} are real jobs of the trainer)
    Bad("start-cancelled", "POST", "/api/training/jobs/{cancelled}/start", 409, "job_id"),
    Bad("cancel-cancelled", "POST", "/api/training/jobs/{cancelled}/cancel", 409, "job_id"),
    Bad("resume-pending", "POST", "/api/training/jobs/{pending}/resume", 409, "job_id"),
    Bad("others-job", "POST", "/api/training/jobs/{others}/cancel", 404, "job_id"),
]


@pytest.fixture
def world(
    client: TestClient, callers: dict[str, Caller], service: TrainingService
) -> dict[str, str]:
    """A pending and a cancelled job of the trainer, a job of another trainer, and a
    dataset of the other trainer."""
    trainer, other = callers["trainer"], callers["other_trainer"]
    pending = create_job(client, trainer)["job_id"]
    cancelled = create_job(client, trainer)["job_id"]
    service.cancel_job(cancelled)
    others = create_job(client, other)["job_id"]
    response = client.post(
        "/api/datasets",
        files={"file": ("r.jsonl", REVIEWS)},
        data={"name": "tina/reviews", "shared": "true"},
        headers=other.headers,
    )
    assert response.status_code == 201, response.text
    return {"pending": pending, "cancelled": cancelled, "others": others}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_every_4xx_names_the_field_and_the_fix(
    client: TestClient, callers: dict[str, Caller], world: dict[str, str], case: Bad
) -> None:
    headers = {**(callers[case.role].headers if case.role else {}), **case.headers}
    content = b'{"model_id": ' if case.id == "broken-json" else None
    response = client.request(
        case.method,
        case.path.format(**world),
        json=case.json,
        content=content,
        files=case.files,
        data=case.data,
        params=case.params,
        headers=headers,
    )
    body = assert_error(response, case.status)
    errors = body["errors"]
    assert errors, body
    for error in errors:
        assert set(error) == {"field", "message", "fix"}, error
        assert error["field"].strip(), error
        assert error["message"].strip(), error
        assert isinstance(error["fix"], str), error
        assert error["fix"].strip(), error
        assert not error["fix"].startswith("Fix:"), error
    assert errors[0]["field"] == case.field, errors
