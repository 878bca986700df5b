"""GET and DELETE /api/training/jobs/{job_id}/checkpoints: who may list, who may prune,
and never while the Trainer is still writing.

One real tiny run (a checkpoint every 2 of 6 steps) covers listing and pruning;
the refusals use pending jobs, which exist in a fraction of a second.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from flextrain.config.enums import TrainingStatus
from flextrain.service import TrainingService
from tests.api.helpers import TINY_JOB, Caller, assert_error, create_job, wait_finished
from tests.staging import stage_status

JOBS = "/api/training/jobs"
CHECKPOINTED_JOB: dict[str, Any] = {
    **TINY_JOB,
    "max_steps": 6,
    "save_steps": 2,
    "save_total_limit": None,
}


def url(job_id: str) -> str:
    return f"{JOBS}/{job_id}/checkpoints"


def bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_list_and_prune_a_finished_jobs_checkpoints(
    client: TestClient, service: TrainingService, callers: dict[str, Caller]
) -> None:
    tom, tina, vic, ada = (callers[k] for k in ("trainer", "other_trainer", "viewer", "admin"))
    job_id = create_job(client, tom, CHECKPOINTED_JOB, mode="advanced")["job_id"]
    started = client.post(f"{JOBS}/{job_id}/start", headers=tom.headers)
    assert started.status_code == 200, started.text
    final = wait_finished(client, job_id, tom)
    assert final["status"] == "completed", service.read_log(job_id, 40)
    folder = service.environment(job_id).checkpoint_dir

    listed = client.get(url(job_id), headers=tom.headers)
    assert listed.status_code == 200, listed.text
    body = listed.json()
    assert body["job_id"] == job_id
    assert [c["step"] for c in body["checkpoints"]] == [2, 4, 6]
    assert body["total_bytes"] == bytes_under(folder)
    assert body["total_bytes"] == sum(c["size_bytes"] for c in body["checkpoints"])
    for c in body["checkpoints"]:
        assert Path(c["path"]) == folder / f"checkpoint-{c['step']}"
        assert isinstance(c["loss"], float)
        assert c["eval_loss"] is None
        assert c["is_best"] is False
        assert c["epoch"] > 0
        assert datetime.fromisoformat(c["modified"]).tzinfo is not None
    # Viewers and admins see every job's checkpoints; another trainer not even the job.
    for caller in (vic, ada):
        assert client.get(url(job_id), headers=caller.headers).json() == body
    not_found = f"No training job with id '{job_id}'."
    assert_error(client.get(url(job_id), headers=tina.headers), 404, not_found)

    # Only the owner (or an admin) prunes: a viewer is refused by role; another
    # trainer gets the same 404 as for reading, so the id's existence stays hidden.
    needed = "Your role 'viewer' may not do this; it needs 'trainer' or higher."
    assert_error(client.delete(url(job_id), headers=vic.headers), 403, needed)
    assert_error(client.delete(url(job_id), headers=tina.headers), 404, not_found)
    unknown = client.delete(url(job_id), params={"keep": [2, 3]}, headers=tom.headers)
    assert_error(unknown, 404, "step 3", "available steps: 2, 4, 6")
    assert sorted(p.name for p in folder.iterdir()) == [f"checkpoint-{s}" for s in (2, 4, 6)]

    before = bytes_under(folder)
    size_of_4 = bytes_under(folder / "checkpoint-4")
    pruned = client.delete(url(job_id), params={"keep": [2, 6]}, headers=tom.headers)
    assert pruned.status_code == 200, pruned.text
    assert pruned.json() == {
        "job_id": job_id,
        "deleted": [4],
        "kept": [2, 6],
        "freed_bytes": size_of_4,
    }
    assert before - bytes_under(folder) == size_of_4
    by_admin = client.delete(url(job_id), headers=ada.headers)  # default: latest (and best)
    assert by_admin.status_code == 200, by_admin.text
    assert (by_admin.json()["deleted"], by_admin.json()["kept"]) == ([2], [6])
    assert [p.name for p in folder.iterdir()] == ["checkpoint-6"]
    after = client.get(url(job_id), headers=tom.headers).json()
    assert [c["step"] for c in after["checkpoints"]] == [6]
    assert after["total_bytes"] == bytes_under(folder)


def test_prune_is_refused_while_the_job_is_active(
    client: TestClient, service: TrainingService, trainer: Caller, admin: Caller
) -> None:
    job_id = create_job(client, trainer)["job_id"]
    empty = client.get(url(job_id), headers=trainer.headers)
    assert empty.status_code == 200, empty.text
    assert (empty.json()["checkpoints"], empty.json()["total_bytes"]) == ([], 0)
    nothing = client.delete(url(job_id), headers=trainer.headers)
    assert nothing.status_code == 200
    assert nothing.json()["deleted"] == []

    stage_status(service.store, job_id, TrainingStatus.TRAINING)
    for caller in (trainer, admin):
        busy = client.delete(url(job_id), headers=caller.headers)
        assert_error(busy, 409, f"Job {job_id} is training", "still being written")
    # Reading stays allowed while it trains.
    assert client.get(url(job_id), headers=trainer.headers).status_code == 200


def test_an_unknown_job_is_404(client: TestClient, admin: Caller) -> None:
    for method in ("GET", "DELETE"):
        response = client.request(method, url("nope"), headers=admin.headers)
        assert_error(response, 404, "No training job with id 'nope'.")


def test_the_endpoints_are_typed_in_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    operations = spec["paths"]["/api/training/jobs/{job_id}/checkpoints"]
    for method, model in (("get", "CheckpointList"), ("delete", "PruneResult")):
        responses = operations[method]["responses"]
        schema = responses["200"]["content"]["application/json"]["schema"]
        assert schema["$ref"].rsplit("/", 1)[-1] == model
        assert {"401", "403", "404", "409"} <= set(responses)
    keep = next(p for p in operations["delete"]["parameters"] if p["name"] == "keep")
    assert keep["in"] == "query"
    listed = spec["components"]["schemas"]["CheckpointList"]["properties"]
    assert {"checkpoints", "total_bytes"} <= set(listed)
