"""Helpers for queue tests: short tiny-model configs, and a job that holds resources.

`occupy` records a job as TRAINING in a live process (a `sleep`), with the
allocation a scheduler would have given it: the store then says exactly what a
running worker would, without paying for one. Killing the process frees what
it held, as a worker's death does (the next tick reconciles it INTERRUPTED).
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs.process import process_start_time
from flextrain.jobs.store import TrainingJob
from flextrain.service import TrainingService
from tests.staging import stage_status


def quick_config(**overrides: Any) -> AdvancedTrainingConfig:
    """A run of a few steps on the tiny model: seconds on CPU, one thread."""
    values: dict[str, Any] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": TrainingType.FINE_TUNING,
        "max_steps": 4,
        "batch_size": 8,
        "max_length": 32,
        "logging_steps": 1,
        "eval_strategy": "no",
        "evaluate_before_training": False,
        "num_threads": 1,
        "gradient_checkpointing": False,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)


def occupy(
    service: TrainingService,
    allocation: dict[str, Any] | None = None,
    **config: Any,
) -> tuple[str, subprocess.Popen[bytes]]:
    """A job recorded as TRAINING in a live process, holding `allocation`."""
    job_id = service.create_job(quick_config(**config)).job_id
    proc = subprocess.Popen(["sleep", "120"])
    stage_status(
        service.store,
        job_id,
        TrainingStatus.TRAINING,
        pid=proc.pid,
        pid_started_at=process_start_time(proc.pid),
        worker_host=socket.gethostname(),
        started_at=datetime.now(UTC),
        allocation=allocation if allocation is not None else {"gpus": [], "threads": 1},
    )
    return job_id, proc


def end(proc: subprocess.Popen[bytes]) -> None:
    """The "worker" dies: what it held is free for the next tick."""
    proc.kill()
    proc.wait()


def wait_until(
    read: Callable[[], TrainingJob], done: Callable[[TrainingJob], bool], timeout: float = 120
) -> TrainingJob:
    """Poll `read` (without ticking) until `done` holds for the job."""
    deadline = time.monotonic() + timeout
    while True:
        job = read()
        if done(job):
            return job
        assert time.monotonic() < deadline, (job.status, job.wait_reason, job.error_message)
        time.sleep(0.2)
