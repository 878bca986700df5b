"""Nothing is lost: a killed, shut-down or cancelled run resumes from its checkpoint with
the step count and the loss curve continuing, and a dead worker is noticed."""

from __future__ import annotations

import os
import signal
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs.checkpoints import list_checkpoints
from flextrain.jobs.errors import JobStateError
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.staging import stage_status

STEPS = 120
SAVE_EVERY = 10


def _config(**overrides: object) -> AdvancedTrainingConfig:
    values: dict[str, object] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": TrainingType.FULL_TRAINING,
        "max_steps": STEPS,
        "learning_rate": 2e-3,
        "batch_size": 8,
        "max_length": 48,
        "logging_steps": 1,
        "num_threads": 1,
        "save_steps": SAVE_EVERY,
        "save_total_limit": 2,
        "eval_split": 0.0,
        "gradient_checkpointing": False,
        "monitor_interval": 0.5,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)  # type: ignore[arg-type]


def _start(service: TrainingService, **overrides: object) -> str:
    job = service.create_job(_config(**overrides))
    service.start_job(job.job_id)
    return job.job_id


def _wait_step(service: TrainingService, job_id: str, step: int, timeout: float = 90) -> int:
    """Wait until the job has logged `step` (and so saved the checkpoint before it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.require_job(job_id)
        assert not job.is_finished, (job.status, job.error_message)
        history = service.metric_history(job_id)
        if history and history[-1]["step"] >= step:
            return int(history[-1]["step"])
        time.sleep(0.05)
    raise AssertionError(f"job never reached step {step}")


def _train_losses(service: TrainingService, job_id: str) -> dict[int, float]:
    return {row["step"]: row["loss"] for row in service.metric_history(job_id) if "loss" in row}


def test_sigkilled_worker_is_interrupted_and_resume_continues_the_step_count(
    service: TrainingService, settings: Settings
) -> None:
    reference = _start(service)
    job_id = _start(service)
    killed_at = _wait_step(service, job_id, 2 * SAVE_EVERY + 3)
    pid = service.store.get(job_id).pid  # type: ignore[union-attr]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)

    # A second instance (the service restarting) notices the dead worker.
    other = TrainingService(settings)
    recovered = other.recover_jobs()
    assert job_id in recovered["interrupted"]
    assert recovered["resumed"] == []
    job = other.require_job(job_id)
    assert job.status == TrainingStatus.INTERRUPTED
    assert "resume continues" in (job.error_message or "")
    assert [e.kind for e in other.events(job_id)] == ["interrupted"]
    checkpoint_dir = other.environment(job_id).checkpoint_dir
    checkpoint_step = max(c.step for c in list_checkpoints(checkpoint_dir))
    assert SAVE_EVERY <= checkpoint_step < killed_at + 1

    resumed = other.resume_job(job_id)
    assert resumed.status in (TrainingStatus.PREPARING, TrainingStatus.TRAINING)
    assert resumed.resume_count == 1
    resumable = "only a job that is cancelled, diverged, failed, interrupted, paused"
    with pytest.raises(JobStateError, match=resumable):
        other.resume_job(job_id)
    done = other.wait(job_id, timeout=180)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    assert done.current_step == STEPS

    log = other.read_log(job_id, tail=10_000)
    assert f"resuming from {checkpoint_dir}/checkpoint-{checkpoint_step}" in log
    event = other.events(job_id)[-1]
    assert (event.kind, event.data["step"]) == ("resumed", checkpoint_step)

    # One row per step, no repeats: rows past the checkpoint were dropped and trained again,
    # and the resumed run logged from the checkpoint's next step, not from 1.
    steps = [row["step"] for row in other.metric_history(job_id) if "loss" in row]
    assert steps == sorted(set(steps))
    assert set(range(1, STEPS + 1)) <= set(steps)

    # Same data order, same RNG: the curve continues as if nothing happened.
    expected = other.wait(reference, timeout=180)
    assert expected.status == TrainingStatus.COMPLETED
    ours, theirs = _train_losses(other, job_id), _train_losses(other, reference)
    assert ours[1] == pytest.approx(theirs[1], rel=1e-4)
    assert ours[checkpoint_step + 1] == pytest.approx(theirs[checkpoint_step + 1], rel=0.02)
    tail = range(STEPS - 9, STEPS + 1)
    ours_tail = sum(ours[s] for s in tail) / 10
    assert ours_tail == pytest.approx(sum(theirs[s] for s in tail) / 10, rel=0.05)
    assert ours_tail < ours[1] * 0.8  # and it did learn
    other.engine.dispose()


def test_a_job_killed_after_its_last_checkpoint_resumes_without_an_extra_step(
    service: TrainingService,
) -> None:
    # Its last step is checkpointed; the worker then dies before it records the end (what
    # a kill between the last save and the final evaluation leaves in the store).
    job_id = _start(service, max_steps=SAVE_EVERY, save_steps=SAVE_EVERY)
    done = service.wait(job_id, timeout=120)
    assert done.status == TrainingStatus.COMPLETED, service.read_log(job_id, 40)
    stage_status(service.store, job_id, TrainingStatus.INTERRUPTED)
    resumed = service.resume_job(job_id)
    assert resumed.status != TrainingStatus.FAILED
    again = service.wait(job_id, timeout=120)
    assert again.status == TrainingStatus.COMPLETED, service.read_log(job_id, 40)
    assert again.current_step == SAVE_EVERY
    assert sorted(_train_losses(service, job_id)) == list(range(1, SAVE_EVERY + 1))
    assert "nothing left to train" in service.read_log(job_id, 60)
    assert (Path(again.model_path or "") / "model.safetensors").exists()


def test_cancel_saves_a_checkpoint_at_the_current_step_and_resume_finishes(
    service: TrainingService,
) -> None:
    job_id = _start(service, save_steps=1000)  # no periodic checkpoint before the cancel
    _wait_step(service, job_id, 5)
    job = service.cancel_job(job_id)
    assert job.status == TrainingStatus.CANCELLED
    saved = list_checkpoints(service.environment(job_id).checkpoint_dir)
    assert len(saved) == 1
    assert 5 <= saved[0].step < STEPS
    assert "stop requested (SIGTERM)" in service.read_log(job_id)
    # The job says where it stopped: the step of the checkpoint a resume continues from
    # (it showed the last throttled progress write, a few steps behind).
    cancelled = service.require_job(job_id)
    assert cancelled.current_step == saved[0].step
    assert cancelled.progress == pytest.approx(saved[0].step / STEPS)

    service.resume_job(job_id)
    done = service.wait(job_id, timeout=180)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    steps = [row["step"] for row in service.metric_history(job_id) if "loss" in row]
    assert steps == sorted(set(steps))
    assert steps[-1] == STEPS
    assert "Resumed from step" in service.events(job_id)[-1].message


def test_sigterm_that_is_not_a_cancel_leaves_the_job_interrupted(
    service: TrainingService,
) -> None:
    # A machine shutdown sends SIGTERM to every process: the run saves and is resumable.
    job_id = _start(service, save_steps=1000)
    _wait_step(service, job_id, 3)
    pid = service.store.get(job_id).pid  # type: ignore[union-attr]
    os.kill(pid, signal.SIGTERM)  # type: ignore[arg-type]
    job = service.wait(job_id, timeout=30)
    assert job.status == TrainingStatus.INTERRUPTED
    assert "not a cancel" in (job.error_message or "")
    assert len(list_checkpoints(service.environment(job_id).checkpoint_dir)) == 1


def test_auto_resume_on_service_start(service: TrainingService, settings: Settings) -> None:
    job_id = _start(service, max_steps=30)
    _wait_step(service, job_id, SAVE_EVERY + 1)
    os.kill(service.store.get(job_id).pid, signal.SIGKILL)  # type: ignore[arg-type, union-attr]
    time.sleep(0.5)
    other = TrainingService(settings)
    recovered = other.recover_jobs(auto_resume=True)
    assert recovered == {"interrupted": [job_id], "resumed": [job_id]}
    done = other.wait(job_id, timeout=120)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    assert [e.kind for e in other.events(job_id)] == ["interrupted", "resumed"]
    other.engine.dispose()


def test_heartbeat_and_system_samples_while_running(service: TrainingService) -> None:
    job_id = _start(service, max_steps=400, save_steps=1000)
    _wait_step(service, job_id, 2)
    time.sleep(1.5)
    job = service.require_job(job_id)
    assert job.heartbeat_at is not None
    assert (datetime.now(UTC) - job.heartbeat_at).total_seconds() < 3
    assert job.worker_host
    samples = service.system_samples(job_id)
    assert len(samples) >= 2
    last = samples[-1]
    assert last["memory_total_gb"] > 0
    assert 0 < last["memory_used_gb"] <= last["memory_total_gb"]
    assert 0.05 < last["process_rss_gb"] < last["memory_total_gb"]
    assert 0 <= last["cpu_percent"] <= 100
    assert last["process_cpu_percent"] >= 0
    service.cancel_job(job_id)


def test_a_worker_on_another_host_is_judged_by_its_heartbeat(service: TrainingService) -> None:
    job = service.create_job(_config())
    stale = datetime.now(UTC) - timedelta(minutes=5)
    stage_status(
        service.store,
        job.job_id,
        TrainingStatus.TRAINING,
        worker_host="gpu-node-7",
        pid=1,
        heartbeat_at=stale,
    )
    fresh = service.create_job(_config())
    stage_status(
        service.store,
        fresh.job_id,
        TrainingStatus.TRAINING,
        worker_host="gpu-node-7",
        pid=1,
        heartbeat_at=datetime.now(UTC),
    )
    assert service.require_job(job.job_id).status == TrainingStatus.INTERRUPTED
    assert service.require_job(fresh.job_id).status == TrainingStatus.TRAINING
    stage_status(service.store, fresh.job_id, TrainingStatus.CANCELLED)


def test_only_ended_jobs_can_be_resumed(service: TrainingService) -> None:
    job = service.create_job(_config())
    with pytest.raises(JobStateError, match=r"is pending; only a job that is"):
        service.resume_job(job.job_id)


def test_python_api_resumes_a_job_without_checkpoint_from_the_start(
    service: TrainingService,
) -> None:
    import asyncio

    from flextrain import FlexibleTrainingInterface

    job = service.create_job(_config(max_steps=4))
    stage_status(service.store, job.job_id, TrainingStatus.INTERRUPTED)
    api = FlexibleTrainingInterface(service=service)
    resumed = asyncio.run(api.resume_training_job(job.job_id))
    assert resumed.resume_count == 1
    done = asyncio.run(api.wait_for_job(job.job_id, timeout=120))
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    assert done.current_step == 4
    events = api.get_job_events(job.job_id)
    assert events[-1].message.startswith("Resumed from the start: no checkpoint was saved")
    assert api.get_system_metrics(job.job_id)
