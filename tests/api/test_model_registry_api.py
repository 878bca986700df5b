"""/api/training/models/registry: who may list, show, register and remove models, and the
messages for what cannot be done."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from flextrain.service import TrainingService
from tests.api.conftest import Trained
from tests.api.helpers import BASIC_JOB, Caller, assert_error, create_job

REGISTRY = "/api/training/models/registry"


@pytest.fixture
def outside(service: TrainingService, tmp_path: Path) -> Path:
    """A model folder outside FLEXTRAIN_HOME (only an admin may register it)."""
    source = service.models.resolve("flextrain/tiny-llama").path
    return Path(shutil.copytree(source, tmp_path / "outside-llama"))


@pytest.fixture
def inside(service: TrainingService, outside: Path) -> Path:
    """The same model inside FLEXTRAIN_HOME (a trainer may register it)."""
    return Path(shutil.copytree(outside, service.settings.home / "my-models" / "llama"))


def register(client: TestClient, caller: Caller, path: Path | str, name: str):  # type: ignore[no-untyped-def]
    return client.post(REGISTRY, json={"path": str(path), "name": name}, headers=caller.headers)


def test_roles_register_list_show_and_remove(
    client: TestClient,
    service: TrainingService,
    callers: dict[str, Caller],
    outside: Path,
    inside: Path,
) -> None:
    ada, tom, tina, vic = (callers[k] for k in ("admin", "trainer", "other_trainer", "viewer"))

    created = register(client, ada, outside, "team/llama")
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["name"], body["source"], body["owner"]) == ("team/llama", "local", "ada")
    assert body["architecture"] == "LlamaForCausalLM"
    assert body["num_parameters"] > 0
    assert "fine_tuning" in body["training_types"]

    assert_error(register(client, tom, outside, "mine"), 403, "outside the folders you may")
    assert_error(register(client, tom, "/nowhere/at/all", "mine"), 403, "outside the folders")
    assert_error(register(client, vic, inside, "mine"), 403, "needs 'trainer'")
    mine = register(client, tom, inside, "tom/llama")
    assert mine.status_code == 201, mine.text
    assert mine.json()["owner"] == "tom"

    for caller in (ada, tom, tina, vic):
        listed = client.get(REGISTRY, headers=caller.headers)
        assert listed.status_code == 200, listed.text
        assert [m["name"] for m in listed.json()] == ["team/llama", "tom/llama"]

    # A job from the registered name: `show` lists it to whoever may see the job.
    job = create_job(client, tom, {**BASIC_JOB, "model_id": "tom/llama"})
    shown = client.get(f"{REGISTRY}/tom/llama", headers=tom.headers)
    assert shown.status_code == 200, shown.text
    assert [(j["job_id"], j["status"]) for j in shown.json()["jobs"]] == [
        (job["job_id"], "pending")
    ]
    assert client.get(f"{REGISTRY}/tom/llama", headers=tina.headers).json()["jobs"] == []

    # Removing: the owner or an admin; never while a waiting job names the model.
    assert_error(client.delete(f"{REGISTRY}/tom/llama", headers=vic.headers), 403)
    assert_error(
        client.delete(f"{REGISTRY}/tom/llama", headers=tina.headers),
        403,
        "registered by tom; only they or an admin may remove them",
    )
    assert_error(
        client.delete(f"{REGISTRY}/team/llama", headers=tom.headers), 403, "registered by ada"
    )
    assert_error(
        client.delete(f"{REGISTRY}/tom/llama", headers=tom.headers),
        409,
        f"unfinished job(s) {job['job_id']}",
    )
    service.cancel_job(job["job_id"])
    removed = client.delete(f"{REGISTRY}/tom/llama", headers=tom.headers)
    assert removed.status_code == 200, removed.text
    assert removed.json()["detail"] == (
        f"Registration removed; the files in {inside} were left as they are."
    )
    assert (inside / "model.safetensors").exists()
    assert client.delete(f"{REGISTRY}/team/llama", headers=ada.headers).status_code == 200
    assert client.get(REGISTRY, headers=ada.headers).json() == []

    # Every write is in the audit log, with the model's name as its target.
    writes = [
        (e.actor, e.action, e.target, e.status_code)
        for e in service.audit.entries(limit=50)
        if e.action.startswith(("POST", "DELETE")) and "models/registry" in e.action
    ]
    assert ("ada", f"POST {REGISTRY}", "team/llama", 201) in writes
    assert ("tom", "DELETE " + REGISTRY + "/{name:path}", "tom/llama", 200) in writes


def test_bad_input_is_4xx_with_the_fix(
    client: TestClient, service: TrainingService, callers: dict[str, Caller], outside: Path
) -> None:
    ada = callers["admin"]
    # Issue 19: a missing folder said "has no config.json"; a trainer's (inside the
    # folders they may register) is told the same as an admin's.
    missing = service.settings.home / "my-models" / "none"
    assert_error(
        register(client, callers["trainer"], missing, "x"),
        422,
        f"path '{missing}' does not exist. Fix: check the path; give the folder",
    )
    assert_error(register(client, ada, outside, "a b"), 422, "is not valid. Fix:")
    assert_error(
        register(client, ada, outside / "nope", "x"),
        422,
        f"path '{outside / 'nope'}' does not exist. Fix: check the path",
    )
    assert_error(register(client, ada, outside / "config.json", "x"), 422, "is a file, not a")
    assert_error(register(client, ada, "bad\x00path", "x"), 422, "not a valid path")
    (outside / "config.json").rename(outside / "config.bak")
    assert_error(register(client, ada, outside, "x"), 422, "has no config.json. Fix:")
    (outside / "config.bak").rename(outside / "config.json")
    assert register(client, ada, outside, "x").status_code == 201
    assert_error(register(client, ada, outside, "x"), 409, "'x' is already registered")
    assert_error(client.get(f"{REGISTRY}/nope", headers=ada.headers), 404, "No model named")
    assert_error(client.delete(f"{REGISTRY}/nope", headers=ada.headers), 404, "No model named")
    missing = client.post(REGISTRY, json={"name": "x"}, headers=ada.headers)
    assert_error(missing, 422, "path")


def test_a_completed_job_is_registered_for_its_owner(trained: Trained) -> None:
    client, job_id = trained.client, trained.job_id
    url = f"{REGISTRY}/{job_id}"  # no run_name: the job id names the model
    shown = client.get(url, headers=trained.trainer.headers)
    assert shown.status_code == 200, shown.text
    model = shown.json()
    assert (model["source"], model["job_id"], model["owner"]) == ("trained", job_id, "tom")
    assert model["base_model"] == "flextrain/tiny-llama"
    assert model["dataset_id"] == "demo/text"
    assert model["path"] == trained.job["model_path"]
    assert model["config"]["max_steps"] == 12
    assert model["metrics"]["train_loss"] > 0
    assert client.get(url, headers=trained.viewer.headers).status_code == 200
    # As private as the job: another trainer cannot tell it exists.
    assert_error(client.get(url, headers=trained.other_trainer.headers), 404, "No model named")
    assert client.get(REGISTRY, headers=trained.other_trainer.headers).json() == []

    # GET /api/models lists it once, as the registered model.
    entries = client.get("/api/models", headers=trained.trainer.headers).json()
    mine = [e for e in entries if e["job_id"] == job_id]
    assert mine == [
        {
            "model_id": job_id,
            "source": "trained",
            "description": "fine_tuning of flextrain/tiny-llama on demo/text",
            "path": trained.job["model_path"],
            "job_id": job_id,
        }
    ]


def test_versions_promote_diff_and_remove_one_version(
    client: TestClient, service: TrainingService, callers: dict[str, Caller], inside: Path
) -> None:
    tom, tina, vic = (callers[k] for k in ("trainer", "other_trainer", "viewer"))
    second = Path(shutil.copytree(inside, inside.parent / "llama-2"))
    assert register(client, tom, inside, "tom/llama").status_code == 201
    added = register(client, tom, second, "tom/llama")
    assert added.status_code == 201, added.text
    assert (added.json()["ref"], added.json()["version"]) == ("tom/llama:2", 2)
    # Only the name's owner (or an admin) adds versions to it.
    assert_error(
        register(client, tina, second, "tom/llama"),
        403,
        "Model 'tom/llama' belongs to tom; only they or an admin may add versions to it.",
    )

    shown = client.get(f"{REGISTRY}/tom/llama:1", headers=vic.headers)
    assert shown.status_code == 200, shown.text
    body = shown.json()
    assert (body["ref"], body["latest"], body["path"]) == ("tom/llama:1", False, str(inside))
    assert [(v["ref"], v["latest"]) for v in body["versions"]] == [
        ("tom/llama:1", False),
        ("tom/llama:2", True),
    ]
    listed = client.get(REGISTRY, params={"all_versions": "true"}, headers=tom.headers).json()
    assert [m["ref"] for m in listed] == ["tom/llama:1", "tom/llama:2"]
    assert [m["ref"] for m in client.get(REGISTRY, headers=tom.headers).json()] == ["tom/llama:2"]

    diff = client.get(
        "/api/training/models/diff",
        params={"a": "tom/llama:1", "b": "tom/llama"},
        headers=vic.headers,
    )
    assert diff.status_code == 200, diff.text
    assert diff.json()["b"] == "tom/llama:2"
    assert {c["key"]: (c["a"], c["b"]) for c in diff.json()["lineage"]} == {
        "path": (str(inside), str(second))
    }
    assert_error(
        client.get(
            "/api/training/models/diff",
            params={"a": "tom/llama:1", "b": "tom/llama:7"},
            headers=vic.headers,
        ),
        404,
        "'tom/llama' has no version 7",
    )

    promote = "/api/training/models/registry/promote"
    back = client.post(
        promote, json={"source": "tom/llama:1", "name": "tom/llama"}, headers=tom.headers
    )
    assert back.status_code == 201, back.text
    assert (back.json()["ref"], back.json()["path"]) == ("tom/llama:3", str(inside))
    assert service.resolve_model("tom/llama").path == inside
    assert_error(
        client.post(
            promote, json={"source": "tom/llama:1", "name": "tom/llama"}, headers=tina.headers
        ),
        403,
        "only they or an admin may add versions",
    )
    assert_error(
        client.post(promote, json={"source": "nope:2", "name": "tina/x"}, headers=tina.headers),
        404,
        "is neither a registered model nor a job",
    )

    assert_error(
        client.delete(f"{REGISTRY}/tom/llama:2", headers=tina.headers), 403, "registered by tom"
    )
    removed = client.delete(f"{REGISTRY}/tom/llama:2", headers=tom.headers)
    assert removed.status_code == 200, removed.text
    assert removed.json()["versions"] == [2]
    left = client.get(f"{REGISTRY}/tom/llama", headers=tom.headers).json()["versions"]
    assert [v["version"] for v in left] == [1, 3]
    assert_error(
        client.get(f"{REGISTRY}/tom/llama:2", headers=tom.headers), 404, "has no version 2"
    )
