"""`GET /api/training/queue`, `?priority=` on job creation, and cancelling a queued job,
on an app limited to one running job that another job occupies."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flextrain.api.app import create_app
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.api.conftest import stop_jobs
from tests.api.helpers import TINY_JOB, Caller, assert_error, create_job
from tests.jobs.queue_helpers import occupy

JOBS = "/api/training/jobs"
QUEUE = "/api/training/queue"


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    """The API on a home that runs one job at a time (overrides the shared fixture)."""
    app = create_app(settings.model_copy(update={"max_concurrent_jobs": 1}))
    yield app
    stop_jobs(app.state.service)


def submit(client: TestClient, caller: Caller, priority: int | None = None) -> dict:
    query = "" if priority is None else f"?priority={priority}"
    created = client.post(f"{JOBS}/advanced{query}", json=TINY_JOB, headers=caller.headers)
    assert created.status_code == 201, created.text
    started = client.post(f"{JOBS}/{created.json()['job_id']}/start", headers=caller.headers)
    assert started.status_code == 200, started.text
    job: dict = started.json()
    return job


def test_queue_lists_positions_reasons_and_running_jobs_per_role(
    client: TestClient,
    service: TrainingService,
    admin: Caller,
    trainer: Caller,
    other_trainer: Caller,
    viewer: Caller,
) -> None:
    blocker, _ = occupy(service)
    reason = f"max_concurrent_jobs 1 reached: job {blocker} running"
    toms = submit(client, trainer)
    assert (toms["status"], toms["wait_reason"], toms["pid"]) == ("queued", reason, None)
    tinas = submit(client, other_trainer)
    urgent = submit(client, admin, priority=5)

    everyone = client.get(QUEUE, headers=viewer.headers)
    assert everyone.status_code == 200, everyone.text
    body = everyone.json()
    assert [(q["position"], q["job_id"], q["priority"]) for q in body["queued"]] == [
        (1, urgent["job_id"], 5),
        (2, toms["job_id"], 0),
        (3, tinas["job_id"], 0),
    ]
    assert body["queued"][0]["wait_reason"] == reason
    assert [(r["job_id"], r["threads"], r["gpus"]) for r in body["running"]] == [(blocker, 1, [])]
    assert body["max_concurrent_jobs"] == 1

    # Trainers see their own jobs, at their real place in the queue.
    mine = client.get(QUEUE, headers=trainer.headers).json()
    assert [(q["position"], q["job_id"]) for q in mine["queued"]] == [(2, toms["job_id"])]
    assert mine["running"] == []
    assert client.get(QUEUE).status_code == 401


def test_priority_above_zero_needs_an_admin_and_is_bounded(
    client: TestClient, admin: Caller, trainer: Caller
) -> None:
    refused = client.post(f"{JOBS}/advanced?priority=5", json=TINY_JOB, headers=trainer.headers)
    assert_error(refused, 403, "priority 5 needs the 'admin' role")
    lower = client.post(f"{JOBS}/advanced?priority=-2", json=TINY_JOB, headers=trainer.headers)
    assert lower.status_code == 201, lower.text
    assert lower.json()["priority"] == -2
    assert create_job(client, admin, TINY_JOB, mode="advanced")["priority"] == 0
    high = client.post(f"{JOBS}/advanced?priority=7", json=TINY_JOB, headers=admin.headers)
    assert high.status_code == 201
    assert high.json()["priority"] == 7
    for bad in ("5000", "high"):
        response = client.post(
            f"{JOBS}/advanced?priority={bad}", json=TINY_JOB, headers=admin.headers
        )
        body = assert_error(response, 422, "priority")
        assert [e["field"] for e in body["errors"]] == ["priority"]


def test_cancel_a_queued_job(client: TestClient, service: TrainingService, trainer: Caller) -> None:
    occupy(service)
    job = submit(client, trainer)
    assert job["status"] == "queued"
    cancelled = client.post(f"{JOBS}/{job['job_id']}/cancel", headers=trainer.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["pid"]) == ("cancelled", None)
    assert client.get(QUEUE, headers=trainer.headers).json()["queued"] == []
    again = client.post(f"{JOBS}/{job['job_id']}/cancel", headers=trainer.headers)
    assert_error(again, 409, "is already cancelled")
