"""The seed's /api/training endpoints, plus a job's logs, metrics and event stream.

Jobs that only need to exist are created and left pending (validation takes a
fraction of a second); reading a finished run uses the shared `trained` job.
"""

from __future__ import annotations

import time
from pathlib import Path

import psutil
import pytest
from fastapi.testclient import TestClient

from flextrain.models.resolve import ModelResolver
from flextrain.service import TrainingService
from tests.api.conftest import Trained
from tests.api.helpers import (
    BASIC_JOB,
    TINY_JOB,
    Caller,
    assert_error,
    create_job,
    parse_sse,
    read_events,
    wait_finished,
)

CHECK = "/api/training/compatibility/check"
JOBS = "/api/training/jobs"


def _worker_gone(pid: int, timeout: float = 5) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not psutil.pid_exists(pid):
            return True
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.1)
    return False


# -- compatibility ---------------------------------------------------------------------


def test_compatibility_of_a_model_alone(client: TestClient, viewer: Caller) -> None:
    response = client.post(CHECK, json={"model_id": "flextrain/tiny-llama"}, headers=viewer.headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["model_id"] == "flextrain/tiny-llama"
    assert report["is_compatible"] is True
    assert report["architecture"] == "LlamaForCausalLM"
    assert {"fine_tuning", "lora_adaptation", "task_specific"} <= set(
        report["supported_training_types"]
    )
    assert report["num_parameters"] > 0
    assert report["issues"] == []


def test_compatibility_with_a_dataset_chooses_the_objective(
    client: TestClient, viewer: Caller
) -> None:
    body = {
        "model_id": "flextrain/tiny-llama",
        "training_type": "task_specific",
        "dataset_id": "demo/sentiment",
        "batch_size": 4,
        "max_length": 32,
    }
    response = client.post(CHECK, json=body, headers=viewer.headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["training_type"] == "task_specific"
    assert report["objective"] == "sequence_classification"
    assert report["is_compatible"] is True
    assert report["required_memory_gb"] > 0


def test_compatibility_with_a_config_reports_its_problems(
    client: TestClient, viewer: Caller
) -> None:
    body = {"model_id": "flextrain/tiny-llama", "config": BASIC_JOB}
    good = client.post(CHECK, json=body, headers=viewer.headers)
    assert good.status_code == 200, good.text
    assert good.json()["is_compatible"] is True

    config = {**BASIC_JOB, "learning_rate": 5.0}
    bad = client.post(
        CHECK, json={"model_id": "flextrain/tiny-llama", "config": config}, headers=viewer.headers
    )
    assert bad.status_code == 200, bad.text
    report = bad.json()
    assert report["is_compatible"] is False
    assert any(i.startswith("learning_rate: 5.0 is outside (0, 1]") for i in report["issues"])


def test_compatibility_with_an_unknown_dataset_is_404(client: TestClient, viewer: Caller) -> None:
    body = {"model_id": "flextrain/tiny-llama", "dataset_id": "no/such-data"}
    response = client.post(CHECK, json=body, headers=viewer.headers)
    assert_error(response, 404, "Dataset 'no/such-data' is not registered")


def test_compatibility_of_an_unknown_model_is_a_negative_verdict(
    client: TestClient, viewer: Caller
) -> None:
    """The check answers "no, because ..." (issue 3: is_compatible false with a reason for
    each problem) rather than an error, like the Python API and `flextrain check`."""
    response = client.post(CHECK, json={"model_id": "no/such-model-xyz"}, headers=viewer.headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["is_compatible"] is False
    assert any("no/such-model-xyz" in issue and "not found" in issue for issue in report["issues"])


def test_compatibility_probe_needs_the_trainer_role(client: TestClient, viewer: Caller) -> None:
    body = {"model_id": "flextrain/tiny-llama", "probe": True}
    response = client.post(CHECK, json=body, headers=viewer.headers)
    assert_error(response, 403, "Running the calibration probe needs the 'trainer' role.")


# -- trainable models ------------------------------------------------------------------


def test_trainable_models_lists_every_builtin_with_its_types(
    client: TestClient, viewer: Caller
) -> None:
    response = client.get("/api/training/models/trainable", headers=viewer.headers)
    assert response.status_code == 200, response.text
    models = {m["model_id"]: m for m in response.json()}
    assert set(models) == set(ModelResolver.builtins())
    for model_id, entry in models.items():
        assert entry["description"] == ModelResolver.builtins()[model_id]
        assert entry["is_compatible"] is True
        assert entry["num_parameters"] > 0
        assert "fine_tuning" in entry["supported_training_types"]


# -- creating jobs ---------------------------------------------------------------------


def test_create_basic_job_records_a_pending_job_owned_by_the_caller(
    client: TestClient, trainer: Caller
) -> None:
    response = client.post(f"{JOBS}/basic", json=BASIC_JOB, headers=trainer.headers)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["owner"] == "tom"
    assert job["status"] == "pending"
    assert job["mode"] == "basic"
    assert job["model_id"] == "flextrain/tiny-llama"
    assert job["config"]["max_length"] == 32
    assert Path(job["output_dir"]).is_dir()

    again = client.get(f"{JOBS}/{job['job_id']}", headers=trainer.headers)
    assert again.status_code == 200
    assert again.json()["job_id"] == job["job_id"]


def test_create_advanced_job_keeps_every_knob(client: TestClient, trainer: Caller) -> None:
    body = {**TINY_JOB, "training_type": "lora_adaptation", "lora_r": 4, "lora_alpha": 8}
    response = client.post(f"{JOBS}/advanced", json=body, headers=trainer.headers)
    assert response.status_code == 201, response.text
    job = response.json()
    assert job["owner"] == "tom"
    assert job["mode"] == "advanced"
    assert job["training_type"] == "lora_adaptation"
    assert job["config"]["lora_r"] == 4
    assert job["config"]["max_steps"] == 12


def test_invalid_config_names_every_field_and_its_fix(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    body = {**BASIC_JOB, "learning_rate": -1, "batch_size": 0, "num_epochs": 0}
    response = client.post(f"{JOBS}/basic", json=body, headers=trainer.headers)
    error = assert_error(response, 422, "Invalid training configuration (3 problems)")
    by_field = {e["field"]: e for e in error["errors"]}
    assert set(by_field) == {"learning_rate", "batch_size", "num_epochs"}
    assert by_field["learning_rate"]["message"] == "-1.0 is outside (0, 1]."
    assert by_field["batch_size"]["fix"] == "set batch_size to 1 or more."
    assert by_field["num_epochs"]["fix"] == "train for at least 1 epoch."
    assert all(e["fix"] for e in error["errors"])
    # Nothing was recorded or created on disk.
    assert client.get(JOBS, headers=trainer.headers).json() == []
    assert list(service.settings.jobs_dir.iterdir()) == []


def test_a_qlora_job_trains_and_a_4bit_full_fine_tune_is_refused(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    pytest.importorskip("bitsandbytes")
    refused = client.post(
        f"{JOBS}/basic", json={**BASIC_JOB, "load_in_4bit": True}, headers=trainer.headers
    )
    error = assert_error(refused, 422, "Invalid training configuration")
    by_field = {e["field"]: e for e in error["errors"]}
    assert "4-bit weights are frozen" in by_field["load_in_4bit"]["message"]
    assert "training_type=lora_adaptation" in by_field["load_in_4bit"]["fix"]
    assert client.get(JOBS, headers=trainer.headers).json() == []

    body = {**TINY_JOB, "training_type": "lora_adaptation", "load_in_4bit": True}
    check = client.post(
        CHECK, json={"model_id": body["model_id"], "config": body}, headers=trainer.headers
    )
    assert check.status_code == 200, check.text
    assert check.json()["memory"]["dequantization_gb"] > 0
    job = create_job(client, trainer, body, mode="advanced")
    assert job["config"]["load_in_4bit"] is True
    started = client.post(f"{JOBS}/{job['job_id']}/start", headers=trainer.headers)
    assert started.status_code == 200, started.text
    done = wait_finished(client, job["job_id"], trainer)
    assert done["status"] == "completed", done
    losses = [m["loss"] for m in service.store.metric_history(job["job_id"]) if "loss" in m]
    assert losses[-1] < losses[0]


def test_unknown_model_or_dataset_is_404(client: TestClient, trainer: Caller) -> None:
    body = {**BASIC_JOB, "model_id": "no/such-model-xyz"}
    model = client.post(f"{JOBS}/basic", json=body, headers=trainer.headers)
    assert_error(model, 404, "Model 'no/such-model-xyz' not found", "Fix:")
    data = client.post(
        f"{JOBS}/advanced", json={**TINY_JOB, "dataset_id": "no/such"}, headers=trainer.headers
    )
    assert_error(data, 404, "Dataset 'no/such' is not registered", "demo/sentiment")


def test_wrong_json_types_name_the_field(client: TestClient, trainer: Caller) -> None:
    response = client.post(
        f"{JOBS}/basic", json={**BASIC_JOB, "num_epochs": "three"}, headers=trainer.headers
    )
    error = assert_error(response, 422, "num_epochs")
    assert [e["field"] for e in error["errors"]] == ["num_epochs"]
    assert "valid integer" in error["errors"][0]["message"]

    response = client.post(
        f"{JOBS}/advanced",
        json={**TINY_JOB, "lora_r": [4], "fp16": "maybe"},
        headers=trainer.headers,
    )
    error = assert_error(response, 422, "lora_r", "fp16")
    assert {e["field"] for e in error["errors"]} == {"lora_r", "fp16"}


# -- start and cancel ------------------------------------------------------------------


def test_start_launches_a_worker_and_refuses_a_second_start(
    client: TestClient, trainer: Caller
) -> None:
    job = create_job(client, trainer, TINY_JOB, mode="advanced")
    started = client.post(f"{JOBS}/{job['job_id']}/start", headers=trainer.headers)
    assert started.status_code == 200, started.text
    running = started.json()
    assert running["status"] in ("preparing", "training")
    assert running["started_at"] is not None
    assert running["pid"] is not None
    assert psutil.pid_exists(running["pid"])

    again = client.post(f"{JOBS}/{job['job_id']}/start", headers=trainer.headers)
    assert_error(again, 409, f"Job {job['job_id']} is", "only a pending job can be started")

    cancelled = client.post(f"{JOBS}/{job['job_id']}/cancel", headers=trainer.headers)
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["status"] == "cancelled"
    assert _worker_gone(running["pid"])


def test_start_unknown_job_is_404(client: TestClient, trainer: Caller) -> None:
    response = client.post(f"{JOBS}/nope/start", headers=trainer.headers)
    assert_error(response, 404, "No training job with id 'nope'.")


def test_start_or_cancel_a_completed_job_is_409(trained: Trained) -> None:
    start = trained.client.post(f"{JOBS}/{trained.job_id}/start", headers=trained.trainer.headers)
    assert_error(start, 409, f"Job {trained.job_id} is completed", "only a pending job")
    cancel = trained.client.post(f"{JOBS}/{trained.job_id}/cancel", headers=trained.trainer.headers)
    assert_error(cancel, 409, f"Job {trained.job_id} is already completed.")
    job = trained.client.get(f"{JOBS}/{trained.job_id}", headers=trained.trainer.headers)
    assert job.json()["status"] == "completed"


def test_cancel_stops_a_running_job(client: TestClient, trainer: Caller) -> None:
    job = create_job(client, trainer, TINY_JOB, mode="advanced")
    pid = client.post(f"{JOBS}/{job['job_id']}/start", headers=trainer.headers).json()["pid"]
    assert pid is not None

    response = client.post(f"{JOBS}/{job['job_id']}/cancel", headers=trainer.headers)
    assert response.status_code == 200, response.text
    cancelled = response.json()
    assert cancelled["status"] == "cancelled"
    assert cancelled["completed_at"] is not None
    assert _worker_gone(pid)

    time.sleep(0.5)  # a dying worker must not overwrite the cancellation
    shown = client.get(f"{JOBS}/{job['job_id']}", headers=trainer.headers).json()
    assert shown["status"] == "cancelled"
    again = client.post(f"{JOBS}/{job['job_id']}/cancel", headers=trainer.headers)
    assert_error(again, 409, "is already cancelled")


def test_cancel_unknown_job_is_404(client: TestClient, trainer: Caller) -> None:
    response = client.post(f"{JOBS}/nope/cancel", headers=trainer.headers)
    assert_error(response, 404, "No training job with id 'nope'.")


# -- reading jobs ----------------------------------------------------------------------


def test_get_a_completed_job(trained: Trained) -> None:
    response = trained.client.get(f"{JOBS}/{trained.job_id}", headers=trained.trainer.headers)
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["status"] == "completed"
    assert job["owner"] == "tom"
    assert job["progress"] == 1.0
    assert job["current_step"] == job["total_steps"] == 12
    assert job["loss"] is not None
    assert Path(job["model_path"], "config.json").is_file()


def test_get_unknown_job_is_404(client: TestClient, viewer: Caller) -> None:
    response = client.get(f"{JOBS}/nope", headers=viewer.headers)
    assert_error(response, 404, "No training job with id 'nope'.")


def test_list_jobs_pages_and_filters(client: TestClient, trainer: Caller) -> None:
    ids = [
        create_job(client, trainer, {**BASIC_JOB, "run_name": f"run-{i}"})["job_id"]
        for i in range(3)
    ]
    cancelled = client.post(f"{JOBS}/{ids[0]}/cancel", headers=trainer.headers)
    assert cancelled.status_code == 200

    # The seed's list by default: every job, newest first, a plain JSON array.
    listed = client.get(JOBS, headers=trainer.headers)
    assert [j["job_id"] for j in listed.json()] == ids[::-1]
    assert listed.headers["X-Total-Count"] == "3"
    assert "Link" not in listed.headers  # nothing further

    first = client.get(JOBS, params={"limit": 2}, headers=trainer.headers)
    assert [j["job_id"] for j in first.json()] == [ids[2], ids[1]]  # newest first
    assert first.headers["X-Total-Count"] == "3"
    assert first.headers["Link"] == f'<{JOBS}?limit=2&offset=2>; rel="next"'
    rest = client.get(JOBS, params={"limit": 2, "offset": 2}, headers=trainer.headers)
    assert [j["job_id"] for j in rest.json()] == [ids[0]]
    assert (rest.headers["X-Total-Count"], rest.headers.get("Link")) == ("3", None)
    beyond = client.get(JOBS, params={"offset": 10}, headers=trainer.headers)
    assert beyond.json() == []
    assert beyond.headers["X-Total-Count"] == "3"

    pending = client.get(JOBS, params={"status": "pending"}, headers=trainer.headers)
    assert {j["job_id"] for j in pending.json()} == set(ids[1:])
    assert pending.headers["X-Total-Count"] == "2"
    done = client.get(JOBS, params={"status": "cancelled"}, headers=trainer.headers)
    assert [j["job_id"] for j in done.json()] == [ids[0]]
    assert done.headers["X-Total-Count"] == "1"


def test_list_jobs_rejects_a_bad_limit(client: TestClient, trainer: Caller) -> None:
    for limit in (0, 501, "ten"):
        response = client.get(JOBS, params={"limit": limit}, headers=trainer.headers)
        error = assert_error(response, 422, "limit")
        assert [e["field"] for e in error["errors"]] == ["limit"]


def test_logs_of_a_completed_job(trained: Trained) -> None:
    url = f"{JOBS}/{trained.job_id}/logs"
    response = trained.client.get(url, headers=trained.trainer.headers)
    assert response.status_code == 200, response.text
    logs = response.json()
    assert logs["job_id"] == trained.job_id
    assert any(line.startswith("[flextrain] completed") for line in logs["lines"])
    tail = trained.client.get(url, params={"tail": 1}, headers=trained.trainer.headers).json()
    assert len(tail["lines"]) == 1


def test_logs_of_a_pending_job_are_empty(client: TestClient, trainer: Caller) -> None:
    job = create_job(client, trainer)
    response = client.get(f"{JOBS}/{job['job_id']}/logs", headers=trainer.headers)
    assert response.status_code == 200, response.text
    assert response.json() == {"job_id": job["job_id"], "lines": []}


def test_metrics_history_has_falling_loss_rows(trained: Trained) -> None:
    response = trained.client.get(
        f"{JOBS}/{trained.job_id}/metrics", headers=trained.trainer.headers
    )
    assert response.status_code == 200, response.text
    metrics = response.json()
    assert metrics["job_id"] == trained.job_id
    rows = [row for row in metrics["history"] if "loss" in row]
    assert len(rows) >= 5
    steps = [row["step"] for row in rows]
    assert steps == sorted(steps)
    assert all(row["learning_rate"] > 0 for row in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]


def test_events_of_a_completed_job(trained: Trained) -> None:
    events = read_events(trained.client, trained.job_id, trained.trainer)
    kinds = [e.event for e in events]
    assert kinds[0] == "progress"
    assert kinds[-1] == "end"
    assert set(kinds) == {"progress", "metric", "end"}

    progress = events[0].data
    assert progress["job_id"] == trained.job_id
    assert progress["status"] == "completed"
    assert progress["progress"] == 1.0

    history = trained.client.get(
        f"{JOBS}/{trained.job_id}/metrics", headers=trained.trainer.headers
    ).json()["history"]
    assert [e.data for e in events if e.event == "metric"] == history
    assert any("loss" in e.data for e in events if e.event == "metric")

    end = events[-1].data
    assert end["job_id"] == trained.job_id
    assert end["status"] == "completed"
    assert end["at"]


def test_events_resume_after_the_last_event_id(trained: Trained) -> None:
    """A client reconnecting with Last-Event-ID gets only the metric rows it missed."""
    url = f"{JOBS}/{trained.job_id}/events"
    history = trained.client.get(
        f"{JOBS}/{trained.job_id}/metrics", headers=trained.trainer.headers
    ).json()["history"]
    assert len(history) >= 3
    headers = {**trained.trainer.headers, "Last-Event-ID": "2"}
    with trained.client.stream("GET", url, headers=headers) as response:
        assert response.status_code == 200
        lines = list(response.iter_lines())
    metrics = [e.data for e in parse_sse(lines) if e.event == "metric"]
    assert metrics == history[2:]
    assert "id: 3" in lines


def test_events_of_an_unknown_job_is_404(client: TestClient, viewer: Caller) -> None:
    response = client.get(f"{JOBS}/nope/events", headers=viewer.headers)
    assert_error(response, 404, "No training job with id 'nope'.")


# -- hardware --------------------------------------------------------------------------


def test_hardware(client: TestClient, viewer: Caller) -> None:
    response = client.get("/api/training/hardware", headers=viewer.headers)
    assert response.status_code == 200, response.text
    hw = response.json()
    assert hw["cpu_cores"] >= 1
    assert 0 < hw["available_memory_gb"] <= hw["total_memory_gb"]
    assert hw["gpu_count"] == len(hw["gpus"])
    assert hw["recommended_precision"] in ("bf16", "fp16", "fp32")
    assert hw["disk_free_gb"] > 0


# -- presets ---------------------------------------------------------------------------


def test_presets_list_each_knob_per_training_type(client: TestClient, viewer: Caller) -> None:
    response = client.get("/api/training/presets", headers=viewer.headers)
    assert response.status_code == 200, response.text
    presets = response.json()
    assert set(presets) == {"quick", "balanced", "thorough"}
    quick = presets["quick"]
    assert quick["lora_adaptation"]["learning_rate"] == 5e-4
    assert quick["fine_tuning"]["learning_rate"] == 5e-5
    assert quick["fine_tuning"]["num_epochs"] == 1
    assert client.get("/api/training/presets").status_code == 401
