"""Malformed requests answer 4xx with a sentence, never 500."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.helpers import BASIC_JOB, TINY_JOB, Caller

BIG = 10**30  # beyond 64 bits: must be refused, not passed on to SQLite or torch


@dataclass(frozen=True)
class Bad:
    id: str
    method: str
    path: str
    role: str = "trainer"
    json: Any = None
    content: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    status: int = 422
    mentions: str = ""


CASES = [
    Bad(
        "broken-json",
        "POST",
        "/api/training/jobs/basic",
        content=b'{"model_id": "flextrain/tiny-llama",',
        headers={"content-type": "application/json"},
        mentions="JSON",
    ),
    Bad(
        "empty-body",
        "POST",
        "/api/training/jobs/basic",
        content=b"",
        headers={"content-type": "application/json"},
        mentions="required",
    ),
    Bad(
        "text-plain",
        "POST",
        "/api/training/jobs/advanced",
        content=b"model_id=flextrain/tiny-llama",
        headers={"content-type": "text/plain"},
    ),
    Bad(
        "form-encoded",
        "POST",
        "/api/training/compatibility/check",
        content=b"model_id=flextrain%2Ftiny-llama",
        headers={"content-type": "application/x-www-form-urlencoded"},
    ),
    Bad("json-array", "POST", "/api/training/jobs/basic", json=[BASIC_JOB]),
    Bad(
        "json-null",
        "POST",
        "/api/training/jobs/basic",
        json=None,
        content=b"null",
        headers={"content-type": "application/json"},
    ),
    Bad("missing-fields", "POST", "/api/training/jobs/basic", json={}, mentions="model_id"),
    Bad(
        "string-for-int",
        "POST",
        "/api/training/jobs/basic",
        json={**BASIC_JOB, "batch_size": "eight"},
        mentions="batch_size",
    ),
    Bad(
        "object-for-float",
        "POST",
        "/api/training/jobs/advanced",
        json={**TINY_JOB, "weight_decay": {"value": 0.1}},
        mentions="weight_decay",
    ),
    Bad(
        "unknown-key",
        "POST",
        "/api/training/jobs/basic",
        json={**BASIC_JOB, "epochs": 3},
        mentions="epochs",
    ),
    Bad(
        "unknown-training-type",
        "POST",
        "/api/training/jobs/basic",
        json={**BASIC_JOB, "training_type": "magic"},
        mentions="training_type",
    ),
    Bad(
        "unknown-preset",
        "POST",
        "/api/training/jobs/basic",
        json={**BASIC_JOB, "preset": "turbo"},
        mentions="preset",
    ),
    Bad(
        "unknown-eval-strategy",
        "POST",
        "/api/training/jobs/advanced",
        json={**TINY_JOB, "eval_strategy": "sometimes"},
        mentions="eval_strategy",
    ),
    Bad(
        "nan-learning-rate",
        "POST",
        "/api/training/jobs/basic",
        content=b'{"model_id": "flextrain/tiny-llama", "dataset_id": "demo/text", '
        b'"training_type": "fine_tuning", "learning_rate": NaN}',
        headers={"content-type": "application/json"},
        mentions="learning_rate",
    ),
    Bad(
        "huge-max-length",
        "POST",
        "/api/training/jobs/basic",
        json={**BASIC_JOB, "max_length": BIG},
        mentions="max_length",
    ),
    Bad(
        "huge-num-epochs",
        "POST",
        "/api/training/jobs/basic",
        json={**BASIC_JOB, "num_epochs": BIG},
        mentions="num_epochs",
    ),
    Bad(
        "compat-huge-batch",
        "POST",
        "/api/training/compatibility/check",
        json={"model_id": "flextrain/tiny-llama", "batch_size": BIG},
        mentions="batch_size",
    ),
    Bad(
        "compat-empty-model",
        "POST",
        "/api/training/compatibility/check",
        json={"model_id": ""},
        mentions="model_id",
    ),
    Bad(
        "compat-config-not-object",
        "POST",
        "/api/training/compatibility/check",
        json={"model_id": "flextrain/tiny-llama", "config": "fast"},
        mentions="config",
    ),
    Bad(
        "compat-unknown-type",
        "POST",
        "/api/training/compatibility/check",
        json={"model_id": "flextrain/tiny-llama", "training_type": "distillation"},
        mentions="training_type",
    ),
    Bad("limit-negative", "GET", "/api/training/jobs", params={"limit": -5}, mentions="limit"),
    Bad("limit-huge", "GET", "/api/training/jobs", params={"limit": BIG}, mentions="limit"),
    Bad("offset-negative", "GET", "/api/training/jobs", params={"offset": -1}, mentions="offset"),
    Bad("offset-huge", "GET", "/api/training/jobs", params={"offset": BIG}, mentions="offset"),
    Bad("offset-float", "GET", "/api/training/jobs", params={"offset": 1.5}, mentions="offset"),
    Bad(
        "status-unknown", "GET", "/api/training/jobs", params={"status": "done"}, mentions="status"
    ),
    Bad(
        "logs-tail-text",
        "GET",
        "/api/training/jobs/x/logs",
        params={"tail": "all"},
        mentions="tail",
    ),
    Bad(
        "logs-tail-huge", "GET", "/api/training/jobs/x/logs", params={"tail": BIG}, mentions="tail"
    ),
    Bad("job-id-long", "GET", "/api/training/jobs/" + "a" * 5000, status=404),
    Bad("job-id-odd", "POST", "/api/training/jobs/%00%27;--/start", status=404),
    Bad(
        "user-bad-role",
        "POST",
        "/api/users",
        role="admin",
        json={"name": "x", "role": "root"},
        mentions="role",
    ),
    Bad(
        "user-long-name",
        "POST",
        "/api/users",
        role="admin",
        json={"name": "n" * 65},
        mentions="name",
    ),
    Bad(
        "user-empty-body",
        "POST",
        "/api/users",
        role="admin",
        content=b"",
        headers={"content-type": "application/json"},
    ),
    Bad(
        "audit-offset-negative",
        "GET",
        "/api/audit",
        role="admin",
        params={"offset": -1},
        mentions="offset",
    ),
    Bad(
        "audit-offset-huge",
        "GET",
        "/api/audit",
        role="admin",
        params={"offset": BIG},
        mentions="offset",
    ),
    Bad("upload-json-body", "POST", "/api/datasets", json={"name": "x"}, mentions="file"),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_malformed_request_is_4xx_with_a_detail(
    client: TestClient, callers: dict[str, Caller], case: Bad
) -> None:
    headers = {**callers[case.role].headers, **case.headers}
    response = client.request(
        case.method,
        case.path,
        json=case.json if case.content is None else None,
        content=case.content,
        params=case.params,
        headers=headers,
    )
    assert response.status_code == case.status, response.text
    body = response.json()
    assert isinstance(body["detail"], str)
    assert body["detail"].strip()
    assert case.mentions in body["detail"]
    assert body["errors"], body  # issue 19: every 4xx names the field and the fix
    assert all(e["field"] and e["message"] and e["fix"] for e in body["errors"])
