"""The REST door of the defects a new user met (issue 19)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from flextrain.service import TrainingService
from tests.api.helpers import TINY_JOB, Caller, assert_error, create_job, wait_finished

JOBS = "/api/training/jobs"


def _fields(body: dict[str, Any]) -> dict[str, str]:
    return {e["field"]: f"{e['message']} Fix: {e['fix']}" for e in body["errors"]}


def test_per_device_batch_size_alone_is_created_started_and_trained(
    client: TestClient, service: TrainingService, trainer: Caller
) -> None:
    body = {k: v for k, v in TINY_JOB.items() if k != "batch_size"}
    body.update(
        per_device_train_batch_size=4,
        max_steps=4,
        eval_split=0.1,
        eval_steps=2,
        save_steps=2,
        save_total_limit=None,
    )
    body.pop("eval_strategy")
    job = create_job(client, trainer, body, mode="advanced")
    started = client.post(f"{JOBS}/{job['job_id']}/start", headers=trainer.headers)
    assert started.status_code == 200, started.text
    final = wait_finished(client, job["job_id"], trainer)
    assert final["status"] == "completed", service.read_log(job["job_id"], 40)
    assert final["config"]["per_device_train_batch_size"] == 4
    assert "per_device_train_batch_size" in final["config_fields"]
    listed = client.get(f"{JOBS}/{job['job_id']}/checkpoints", headers=trainer.headers).json()
    steps = {c["step"]: c for c in listed["checkpoints"]}
    assert sorted(steps) == [2, 4]
    best = min(steps.values(), key=lambda c: c["eval_loss"])
    assert [c["step"] for c in steps.values() if c["is_best"]] == [best["step"]]


def test_a_second_job_in_the_same_output_dir_is_a_422_naming_the_first(
    client: TestClient, service: TrainingService, trainer: Caller
) -> None:
    first = create_job(client, trainer, {**TINY_JOB, "output_dir": "run"}, mode="advanced")
    response = client.post(
        f"{JOBS}/advanced", json={**TINY_JOB, "output_dir": "run"}, headers=trainer.headers
    )
    body = assert_error(response, 422, "output_dir")
    message = _fields(body)["output_dir"]
    assert f"is the output folder of job {first['job_id']}" in message
    assert "Fix: choose a new or empty folder" in message
    assert service.count_jobs() == 1


def test_eval_steps_with_epoch_evaluation_is_a_422_naming_eval_steps(
    client: TestClient, trainer: Caller
) -> None:
    body = {**TINY_JOB, "eval_strategy": "epoch", "eval_steps": 5}
    response = client.post(f"{JOBS}/advanced", json=body, headers=trainer.headers)
    fields = _fields(assert_error(response, 422))
    assert fields["eval_steps"].startswith("5 has no effect with eval_strategy epoch.")


def test_a_basic_job_with_an_advanced_key_is_a_422_naming_it(
    client: TestClient, trainer: Caller
) -> None:
    body = {"model_id": "flextrain/tiny-llama", "dataset_id": "demo/text"}
    body |= {"training_type": "lora_adaptation", "lora_r": 8}
    response = client.post(f"{JOBS}/basic", json=body, headers=trainer.headers)
    body = assert_error(response, 422, "lora_r")
    assert [e["field"] for e in body["errors"]] == ["lora_r"]


def test_a_bad_batch_size_names_the_field_as_written(client: TestClient, trainer: Caller) -> None:
    body = {"model_id": "flextrain/tiny-llama", "dataset_id": "demo/text"}
    body |= {"training_type": "fine_tuning", "batch_size": "foo"}
    response = client.post(f"{JOBS}/basic", json=body, headers=trainer.headers)
    body = assert_error(response, 422, "batch_size")
    assert {e["field"] for e in body["errors"]} == {"batch_size"}
    assert "batch_size.int" not in response.text
    assert "literal[" not in response.text
