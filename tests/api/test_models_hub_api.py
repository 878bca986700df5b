"""Hub search and background pulls over REST, against a local hub server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flextrain.service import TrainingService
from tests.api.helpers import Caller
from tests.models.hub_server import GATED, TINY, WIDE, LocalHub, go_offline, local_hub_fixture

TRAINABLE = "/api/training/models/trainable"
SEARCH = "/api/training/models/search"
PULL = "/api/training/models/pull"


@pytest.fixture
def local_hub(
    models_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalHub]:
    yield from local_hub_fixture(models_cache, tmp_path, monkeypatch)


def wait_pull(
    client: TestClient, pull_id: str, caller: Caller, timeout: float = 60
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/training/models/pulls/{pull_id}", headers=caller.headers)
        assert response.status_code == 200, response.text
        status: dict[str, Any] = response.json()
        if status["status"] != "running" or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def test_trainable_filters_add_hub_models(
    client: TestClient, viewer: Caller, local_hub: LocalHub
) -> None:
    plain = client.get(TRAINABLE, headers=viewer.headers)
    assert plain.status_code == 200, plain.text
    assert {m["source"] for m in plain.json()} == {"builtin"}
    assert local_hub.hub.requests == []  # a plain listing (the web page's) stays local

    params = {"search": "llama", "task": "text-generation", "max_parameters": 5_000_000}
    filtered = client.get(TRAINABLE, params=params, headers=viewer.headers)
    assert filtered.status_code == 200, filtered.text
    models = {m["model_id"]: m for m in filtered.json()}
    assert set(models) == {"flextrain/tiny-llama", GATED, TINY, WIDE}
    assert models[TINY]["source"] == "hub"
    assert models[TINY]["license"] == "apache-2.0"
    assert "lora_adaptation" in models[TINY]["supported_training_types"]
    assert models[GATED]["gated"]
    assert "HF_TOKEN" in models[GATED]["note"]


def test_search_says_when_the_hub_was_not_searched(
    client: TestClient, viewer: Caller, local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    go_offline(monkeypatch)
    response = client.get(SEARCH, params={"search": "tiny"}, headers=viewer.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert {m["source"] for m in body["items"]} == {"builtin"}
    assert "not searched" in body["notes"][0]
    header = client.get(TRAINABLE, params={"search": "tiny"}, headers=viewer.headers)
    assert "HF_HUB_OFFLINE" in header.headers["X-Flextrain-Notes"]


def test_pull_runs_in_the_background_to_100_percent(
    client: TestClient, trainer: Caller, service: TrainingService, local_hub: LocalHub
) -> None:
    response = client.post(PULL, json={"model_id": TINY}, headers=trainer.headers)
    assert response.status_code == 202, response.text
    started = response.json()
    assert started["status"] == "running"
    assert started["requested_by"] == "tom"

    final = wait_pull(client, started["pull_id"], trainer)
    assert final["status"] == "completed", final
    assert final["percent"] == 100.0
    assert final["bytes_done"] == final["bytes_total"] > 0
    assert final["files_done"] == final["files_total"] > 0
    assert (Path(final["path"]) / "model.safetensors").is_file()
    [entry] = [e for e in service.audit.entries() if e.action == f"POST {PULL}"]
    assert (entry.actor, entry.target, entry.status_code) == ("tom", TINY, 202)


def test_gated_pull_fails_with_the_fix(
    client: TestClient, trainer: Caller, local_hub: LocalHub
) -> None:
    response = client.post(PULL, json={"model_id": GATED}, headers=trainer.headers)
    assert response.status_code == 202, response.text
    final = wait_pull(client, response.json()["pull_id"], trainer)
    assert final["status"] == "failed"
    assert "gated" in final["error"]
    assert "HF_TOKEN" in final["error"]


def test_pull_needs_the_trainer_role_and_a_hub_id(
    client: TestClient, viewer: Caller, trainer: Caller, local_hub: LocalHub
) -> None:
    denied = client.post(PULL, json={"model_id": TINY}, headers=viewer.headers)
    assert denied.status_code == 403
    bad = client.post(PULL, json={"model_id": "../etc/passwd"}, headers=trainer.headers)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "model_id"
    unknown = client.get("/api/training/models/pulls/nope", headers=trainer.headers)
    assert unknown.status_code == 404
    assert "POST /api/training/models/pull" in unknown.text
    assert local_hub.hub.requests == []


def test_pull_offline_is_a_quick_409(client: TestClient, trainer: Caller) -> None:
    # The suite runs with HF_HUB_OFFLINE=1: nothing is started.
    response = client.post(PULL, json={"model_id": TINY}, headers=trainer.headers)
    assert response.status_code == 409
    assert "HF_HUB_OFFLINE" in response.json()["detail"]
