"""Jobs behave like a service: persisted, visible across processes, cancellable,
and honest about failures."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import psutil
import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig
from flextrain.jobs.errors import JobNotFoundError, JobStateError
from flextrain.service import TrainingService
from flextrain.settings import Settings


def _long_job(service: TrainingService) -> str:
    cfg = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=TrainingType.FULL_TRAINING,
        num_epochs=500,
        learning_rate=1e-3,
        batch_size=8,
        max_length=48,
        logging_steps=1,
        num_threads=1,
        save_steps=100000,
        gradient_checkpointing=False,
    )
    job = service.create_job(cfg)
    service.start_job(job.job_id)
    return job.job_id


def _wait_training(service: TrainingService, job_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.require_job(job_id)
        if job.status == TrainingStatus.TRAINING and job.current_step > 0:
            return
        assert not job.is_finished, (job.status, job.error_message)
        time.sleep(0.2)
    raise AssertionError("job never started training")


def test_cancel_from_a_second_instance_stops_worker_and_children(
    service: TrainingService, settings: Settings
) -> None:
    job_id = _long_job(service)
    _wait_training(service, job_id)
    pid = service.require_job(job_id).pid
    assert pid is not None
    assert psutil.pid_exists(pid)
    tree = [pid, *(c.pid for c in psutil.Process(pid).children(recursive=True))]

    other = TrainingService(settings)  # as if another process (CLI) opened the same home
    assert other.require_job(job_id).status == TrainingStatus.TRAINING
    started = time.monotonic()
    job = other.cancel_job(job_id)
    elapsed = time.monotonic() - started

    assert job.status == TrainingStatus.CANCELLED
    assert elapsed < 6
    time.sleep(0.3)
    alive = [
        p
        for p in tree
        if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE
    ]
    assert alive == []
    # The first instance sees the cancellation too, and it sticks.
    time.sleep(1)
    assert service.require_job(job_id).status == TrainingStatus.CANCELLED
    with pytest.raises(JobStateError, match="already cancelled"):
        service.cancel_job(job_id)


def test_jobs_are_persisted_and_listed_by_another_instance(
    service: TrainingService, settings: Settings
) -> None:
    cfg = BasicTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=TrainingType.FINE_TUNING,
        max_length=64,
    )
    a = service.create_job(cfg)
    b = service.create_job(cfg.model_copy(update={"run_name": "second"}))
    other = TrainingService(settings)
    listed = other.list_jobs()
    assert [j.job_id for j in listed] == [b.job_id, a.job_id]
    assert other.list_jobs(status=TrainingStatus.COMPLETED) == []
    assert other.require_job(a.job_id).config["max_length"] == 64
    assert other.list_jobs(limit=1, offset=1)[0].job_id == a.job_id


def test_cancelling_a_pending_job_and_starting_twice(service: TrainingService) -> None:
    cfg = BasicTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=TrainingType.FINE_TUNING,
        max_length=64,
    )
    job = service.create_job(cfg)
    assert service.cancel_job(job.job_id).status == TrainingStatus.CANCELLED
    with pytest.raises(JobStateError, match="only a pending job can be started"):
        service.start_job(job.job_id)
    with pytest.raises(JobNotFoundError, match="No training job with id 'nope'"):
        service.start_job("nope")


def test_crashing_worker_leaves_failed_job_with_message_and_traceback(
    service: TrainingService, models_cache: Path, tmp_path: Path
) -> None:
    # A model folder that passes the checks at start, whose weights turn to garbage
    # before the worker loads them (garbage from the start is refused when created).
    broken = tmp_path / "broken-model"
    shutil.copytree(models_cache / "tiny-llama", broken)
    cfg = BasicTrainingConfig(
        model_id=str(broken),
        dataset_id="demo/text",
        training_type=TrainingType.FINE_TUNING,
        max_length=64,
    )
    job = service.create_job(cfg)
    service.start_job(job.job_id)
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    job = service.wait(job.job_id, timeout=120)
    assert job.status == TrainingStatus.FAILED
    assert job.error_message
    assert "safetensor" in job.error_message.lower()
    log = Path(job.log_path or "").read_text()
    assert "Traceback (most recent call last)" in log


def test_progress_is_written_while_training(service: TrainingService) -> None:
    job_id = _long_job(service)
    _wait_training(service, job_id)
    first = service.require_job(job_id)
    time.sleep(2)
    later = service.require_job(job_id)
    assert later.current_step > first.current_step
    assert 0 < later.progress < 1
    assert later.total_steps > 1000
    assert later.loss is not None
    assert later.learning_rate is not None
    assert len(service.store.metric_history(job_id)) >= 2
    service.cancel_job(job_id)
