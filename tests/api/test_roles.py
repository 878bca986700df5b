"""Who may do what: 401 without a valid token, viewers read, trainers own their jobs,
admins everything. Another trainer's job is 404, never 403 (that would confirm it exists)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from flextrain.service import TrainingService
from tests.api.conftest import Trained
from tests.api.helpers import BASIC_JOB, TINY_JOB, Caller, assert_error, create_job, read_events

JOBS = "/api/training/jobs"
MISSING = "Authentication required: send 'Authorization: Bearer <token>'"
INVALID = "The token is not valid or was revoked: ask an admin for a new one."

PROTECTED = [
    ("GET", "/api/me", None),
    ("GET", JOBS, None),
    ("GET", "/api/training/hardware", None),
    ("GET", "/api/datasets", None),
    ("GET", "/api/models", None),
    ("POST", f"{JOBS}/basic", BASIC_JOB),
    ("POST", "/api/training/compatibility/check", {"model_id": "flextrain/tiny-llama"}),
]


@pytest.mark.parametrize(
    ("authorization", "message"),
    [
        (None, MISSING),
        ("Basic dG9tOnB3", MISSING),
        ("Bearer ", MISSING),
        ("Bearer ft_not-a-real-token-at-all", INVALID),
        ("Bearer short", INVALID),
    ],
    ids=["none", "basic-scheme", "empty-bearer", "unknown-token", "short-token"],
)
def test_without_a_valid_token_is_401(
    client: TestClient, trainer: Caller, authorization: str | None, message: str
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    for method, path, body in PROTECTED:
        response = client.request(method, path, json=body, headers=headers)
        assert_error(response, 401, message)
        assert response.headers["www-authenticate"] == "Bearer", path
    assert client.get(JOBS, headers=trainer.headers).json() == []


def test_viewer_reads_every_job_but_changes_none(
    client: TestClient, trainer: Caller, other_trainer: Caller, viewer: Caller
) -> None:
    toms = create_job(client, trainer)["job_id"]
    tinas = create_job(client, other_trainer)["job_id"]
    needed = "Your role 'viewer' may not do this; it needs 'trainer' or higher."

    for mode, body in (("basic", BASIC_JOB), ("advanced", TINY_JOB)):
        assert_error(client.post(f"{JOBS}/{mode}", json=body, headers=viewer.headers), 403, needed)
    for action in ("start", "cancel"):
        response = client.post(f"{JOBS}/{toms}/{action}", headers=viewer.headers)
        assert_error(response, 403, needed)

    listed = client.get(JOBS, headers=viewer.headers)
    assert {j["job_id"] for j in listed.json()} == {toms, tinas}
    assert listed.headers["X-Total-Count"] == "2"
    for job_id in (toms, tinas):
        shown = client.get(f"{JOBS}/{job_id}", headers=viewer.headers)
        assert shown.status_code == 200
        assert shown.json()["status"] == "pending"
        assert client.get(f"{JOBS}/{job_id}/logs", headers=viewer.headers).status_code == 200
        assert client.get(f"{JOBS}/{job_id}/metrics", headers=viewer.headers).status_code == 200


def test_viewer_follows_anyones_finished_job(trained: Trained) -> None:
    events = read_events(trained.client, trained.job_id, trained.viewer)
    assert events[-1].event == "end"
    assert events[-1].data["status"] == "completed"
    metrics = trained.client.get(f"{JOBS}/{trained.job_id}/metrics", headers=trained.viewer.headers)
    assert metrics.status_code == 200
    assert metrics.json()["history"]


def test_trainer_cannot_see_or_touch_another_trainers_job(
    client: TestClient, trainer: Caller, other_trainer: Caller, service: TrainingService
) -> None:
    toms = create_job(client, trainer)["job_id"]
    tinas = create_job(client, other_trainer)["job_id"]
    not_found = f"No training job with id '{toms}'."

    assert_error(client.get(f"{JOBS}/{toms}", headers=other_trainer.headers), 404, not_found)
    for action in ("start", "cancel"):
        response = client.post(f"{JOBS}/{toms}/{action}", headers=other_trainer.headers)
        assert_error(response, 404, not_found)
    for part in ("logs", "metrics"):
        response = client.get(f"{JOBS}/{toms}/{part}", headers=other_trainer.headers)
        assert_error(response, 404, not_found)

    listed = client.get(JOBS, headers=other_trainer.headers)
    assert [j["job_id"] for j in listed.json()] == [tinas]
    assert listed.headers["X-Total-Count"] == "1"
    pending = client.get(JOBS, params={"status": "pending"}, headers=other_trainer.headers)
    assert pending.headers["X-Total-Count"] == "1"
    # Tom's job is untouched: still pending, no worker.
    job = service.require_job(toms)
    assert (job.status.value, job.pid) == ("pending", None)


def test_trainer_cannot_follow_another_trainers_events(trained: Trained) -> None:
    response = trained.client.get(
        f"{JOBS}/{trained.job_id}/events", headers=trained.other_trainer.headers
    )
    assert_error(response, 404, f"No training job with id '{trained.job_id}'.")


def test_trainer_cannot_read_another_trainers_finished_job(trained: Trained) -> None:
    tina = trained.other_trainer.headers
    not_found = f"No training job with id '{trained.job_id}'."
    for suffix in ("", "/logs", "/metrics"):
        response = trained.client.get(f"{JOBS}/{trained.job_id}{suffix}", headers=tina)
        assert_error(response, 404, not_found)
    listed = trained.client.get(JOBS, params={"status": "completed"}, headers=tina)
    assert (listed.json(), listed.headers["X-Total-Count"]) == ([], "0")


def test_admin_sees_and_cancels_everyones_jobs(
    client: TestClient, admin: Caller, trainer: Caller, other_trainer: Caller
) -> None:
    toms = create_job(client, trainer)["job_id"]
    tinas = create_job(client, other_trainer)["job_id"]
    listed = client.get(JOBS, headers=admin.headers).json()
    assert {(j["job_id"], j["owner"]) for j in listed} == {
        (toms, "tom"),
        (tinas, "tina"),
    }
    assert client.get(f"{JOBS}/{toms}", headers=admin.headers).status_code == 200

    response = client.post(f"{JOBS}/{tinas}/cancel", headers=admin.headers)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    assert response.json()["owner"] == "tina"
    seen_by_tina = client.get(f"{JOBS}/{tinas}", headers=other_trainer.headers).json()
    assert seen_by_tina["status"] == "cancelled"


def test_admin_reads_anyones_finished_job(trained: Trained) -> None:
    admin = trained.admin.headers
    job = trained.client.get(f"{JOBS}/{trained.job_id}", headers=admin).json()
    assert (job["owner"], job["status"]) == ("tom", "completed")
    logs = trained.client.get(f"{JOBS}/{trained.job_id}/logs", headers=admin).json()
    assert logs["lines"]
    events = read_events(trained.client, trained.job_id, trained.admin)
    assert events[-1].data["status"] == "completed"
