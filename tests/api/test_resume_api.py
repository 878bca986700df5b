"""POST /api/training/jobs/{job_id}/resume, GET .../timeline and GET .../system.

The refusals use pending jobs, which exist in a fraction of a second. One real
tiny run covers the rest: a job whose worker "died" (the store names a process
that has exited, as after a SIGKILL) is found INTERRUPTED, resumed through the
API (from the start: it never saved a checkpoint) and runs to completion.
"""

from __future__ import annotations

import subprocess
from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from flextrain.config.enums import TrainingStatus
from flextrain.jobs.process import process_start_time
from flextrain.service import TrainingService
from tests.api.helpers import TINY_JOB, Caller, assert_error, create_job, read_events
from tests.staging import stage_status

JOBS = "/api/training/jobs"
RESUMABLE = "only a job that is cancelled, diverged, failed, interrupted, paused can be resumed"
SHORT_JOB: dict[str, Any] = {
    **TINY_JOB,
    "max_steps": 6,
    "max_length": 48,
    "logging_steps": 1,
    "eval_split": 0.0,
    "monitor_interval": 0.5,
    "gradient_checkpointing": False,  # explicit: no "off" note among the events
}


def resume(client: TestClient, job_id: str, caller: Caller) -> Any:
    return client.post(f"{JOBS}/{job_id}/resume", headers=caller.headers)


def kill_worker_of(service: TrainingService, job_id: str) -> None:
    """Record the job as TRAINING in a worker process that has since been killed."""
    proc = subprocess.Popen(["sleep", "60"])
    started = process_start_time(proc.pid)
    proc.kill()
    proc.wait()
    stage_status(
        service.store,
        job_id,
        TrainingStatus.TRAINING,
        pid=proc.pid,
        pid_started_at=started,
        started_at=datetime.now(UTC),
    )


def test_resume_refusals(
    client: TestClient, service: TrainingService, callers: dict[str, Caller]
) -> None:
    tom, tina, vic, ada = (callers[k] for k in ("trainer", "other_trainer", "viewer", "admin"))
    assert_error(resume(client, "nope", ada), 404, "No training job with id 'nope'.")
    job_id = create_job(client, tom)["job_id"]
    # Another trainer cannot tell the job exists; a viewer is refused by role first.
    assert_error(resume(client, job_id, tina), 404, f"No training job with id '{job_id}'.")
    needed = "Your role 'viewer' may not do this; it needs 'trainer' or higher."
    assert_error(resume(client, job_id, vic), 403, needed)
    for caller in (tom, ada):
        assert_error(resume(client, job_id, caller), 409, f"Job {job_id} is pending", RESUMABLE)
    stage_status(service.store, job_id, TrainingStatus.COMPLETED)
    assert_error(resume(client, job_id, tom), 409, f"Job {job_id} is completed", RESUMABLE)
    # Nothing was written by the refusals.
    assert service.require_job(job_id).resume_count == 0
    assert client.get(f"{JOBS}/{job_id}/timeline", headers=tom.headers).json()["events"] == []


def test_resume_an_interrupted_job_to_completion(
    client: TestClient, service: TrainingService, callers: dict[str, Caller]
) -> None:
    tom, tina, vic = (callers[k] for k in ("trainer", "other_trainer", "viewer"))
    job_id = create_job(client, tom, SHORT_JOB, mode="advanced")["job_id"]
    kill_worker_of(service, job_id)
    assert service.recover_jobs() == {"interrupted": [job_id], "resumed": []}
    interrupted = client.get(f"{JOBS}/{job_id}", headers=tom.headers).json()
    assert interrupted["status"] == "interrupted"
    assert "resume continues from the latest checkpoint" in interrupted["error_message"]

    resumed = resume(client, job_id, tom)
    assert resumed.status_code == 200, resumed.text
    body = resumed.json()
    assert body["status"] in ("preparing", "training"), body
    assert body["resume_count"] == 1
    assert body["error_message"] is None
    assert body["completed_at"] is None
    assert_error(resume(client, job_id, tom), 409, f"Job {job_id} is {body['status']}")
    done = service.wait(job_id, timeout=120, poll=0.2)
    assert done.status == TrainingStatus.COMPLETED, service.read_log(job_id, 40)
    assert done.current_step == 6
    assert done.resume_count == 1

    # The timeline: the interruption, then the resume (from the start: no checkpoint).
    timeline = client.get(f"{JOBS}/{job_id}/timeline", headers=tom.headers)
    assert timeline.status_code == 200, timeline.text
    assert timeline.json()["job_id"] == job_id
    events = [e for e in timeline.json()["events"] if e["kind"] != "memory_warning"]
    assert [(e["kind"], e["level"]) for e in events] == [
        ("interrupted", "warning"),
        ("resumed", "info"),
    ]
    assert events[1]["message"] == (
        "Resumed from the start: no checkpoint was saved (was interrupted)."
    )
    assert events[1]["data"] == {"step": 0}
    assert events[0]["id"] < events[1]["id"]
    for event in events:
        assert event["job_id"] == job_id
        assert datetime.fromisoformat(event["created_at"]).tzinfo is not None

    # The live stream replays them as `notice` events, before its `end`.
    streamed = read_events(client, job_id, tom)
    notices = [e.data for e in streamed if e.event == "notice"]
    assert [n["kind"] for n in notices if n["kind"] != "memory_warning"] == [
        "interrupted",
        "resumed",
    ]
    assert streamed[-1].event == "end"
    assert streamed[-1].data["status"] == "completed"

    # System samples of the run, with the memory fields.
    system = client.get(f"{JOBS}/{job_id}/system", headers=tom.headers)
    assert system.status_code == 200, system.text
    samples = system.json()["samples"]
    assert samples
    assert system.json()["job_id"] == job_id
    for sample in samples:
        assert datetime.fromisoformat(sample["at"]).tzinfo is not None
        assert 0 < sample["memory_used_gb"] <= sample["memory_total_gb"]
        assert 0 <= sample["memory_percent"] <= 100
        assert 0 < sample["process_rss_gb"] < sample["memory_total_gb"]
        assert sample["cpu_percent"] >= 0
        assert sample["process_cpu_percent"] >= 0
        assert isinstance(sample["gpus"], list)

    # Per-step rows carry throughput and memory.
    rows = client.get(f"{JOBS}/{job_id}/metrics", headers=tom.headers).json()["history"]
    steps = [r for r in rows if "loss" in r]
    assert [r["step"] for r in steps] == list(range(1, 7))
    assert all(r["rss_gb"] > 0 and r["peak_rss_gb"] >= r["rss_gb"] for r in steps)
    assert all(r["tokens_per_second"] > 0 and r["samples_per_second"] > 0 for r in steps)

    # Viewers read every job's timeline and samples; another trainer not even the job.
    for path in ("timeline", "system"):
        assert client.get(f"{JOBS}/{job_id}/{path}", headers=vic.headers).status_code == 200
        hidden = client.get(f"{JOBS}/{job_id}/{path}", headers=tina.headers)
        assert_error(hidden, 404, f"No training job with id '{job_id}'.")


def test_timeline_and_system_of_an_unknown_job_are_404(client: TestClient, admin: Caller) -> None:
    for path in ("timeline", "system"):
        response = client.get(f"{JOBS}/nope/{path}", headers=admin.headers)
        assert_error(response, 404, "No training job with id 'nope'.")


def test_the_new_endpoints_are_typed_in_openapi(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    components = spec["components"]["schemas"]
    for method, path, model in (
        ("post", "/api/training/jobs/{job_id}/resume", "TrainingJob"),
        ("get", "/api/training/jobs/{job_id}/timeline", "JobTimeline"),
        ("get", "/api/training/jobs/{job_id}/system", "SystemSamples"),
    ):
        operation = spec["paths"][path][method]
        assert "requestBody" not in operation, path
        responses = operation["responses"]
        schema = responses["200"]["content"]["application/json"]["schema"]
        assert schema["$ref"].rsplit("/", 1)[-1] == model, path
        assert {"401", "403", "404", "409"} <= set(responses), path
        error = responses["404"]["content"]["application/json"]["schema"]
        assert error["$ref"].rsplit("/", 1)[-1] == "ErrorBody"
    events = components["JobTimeline"]["properties"]["events"]
    assert events["type"] == "array"
    assert events["items"]["$ref"].endswith("/JobEvent")
    event = components["JobEvent"]
    assert {"kind", "level", "message", "data", "created_at"} <= set(event["properties"])
    assert set(event["properties"]["level"]["enum"]) == {"info", "warning", "error"}
    samples = components["SystemSamples"]["properties"]["samples"]
    assert samples["type"] == "array"
    assert "interrupted" in components["TrainingStatus"]["enum"]
