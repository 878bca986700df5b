"""A worker started before its job: it imports while the job is validated, then runs
the job handed to it exactly as a freshly spawned worker would."""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.entry import wants_warm_worker
from flextrain.jobs.executor import LocalExecutor
from flextrain.jobs.process import WarmWorker, prestart_warm_worker, take_prestarted
from flextrain.jobs.workerenv import warm_worker_command, worker_environment
from flextrain.service import TrainingService


def _config() -> AdvancedTrainingConfig:
    return AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=TrainingType.FULL_TRAINING,
        max_steps=3,
        batch_size=8,
        max_length=32,
        logging_steps=1,
        eval_split=0.0,
        num_threads=1,
        gradient_checkpointing=False,
    )


def _cmdline(pid: int) -> list[str]:
    """The process's command line once the kernel shows it: /proc/PID/cmdline reads empty
    for a moment while a just-spawned process execs."""
    deadline = time.monotonic() + 10
    while not (line := psutil.Process(pid).cmdline()) and time.monotonic() < deadline:
        time.sleep(0.05)
    return line


def _warm(service: TrainingService) -> WarmWorker | None:
    assert isinstance(service.executor, LocalExecutor)
    return service.executor.warm


def test_the_warm_worker_runs_the_next_job_and_writes_its_log(service: TrainingService) -> None:
    service.start_warm_worker()
    warm = _warm(service)
    assert warm is not None
    assert warm.proc is not None
    pid = warm.proc.pid
    assert "--warm" in _cmdline(pid)

    job = service.create_job(_config())
    started = service.start_job(job.job_id)
    assert started.pid == pid
    assert _warm(service) is None
    done = service.wait(job.job_id, timeout=120)
    assert done.status == TrainingStatus.COMPLETED, service.read_log(job.job_id, 40)
    assert done.current_step == 3
    log = service.read_log(job.job_id, tail=200)
    assert f"[flextrain] job {job.job_id}: full_training" in log
    assert "Trainable parameters" in log
    # The next job gets a fresh worker of its own.
    second = service.create_job(_config())
    assert service.start_job(second.job_id).pid != pid
    assert service.wait(second.job_id, timeout=120).status == TrainingStatus.COMPLETED


def test_an_unused_warm_worker_is_stopped(service: TrainingService) -> None:
    service.start_warm_worker()
    warm = _warm(service)
    assert warm is not None
    assert warm.proc is not None
    proc = warm.proc
    warm.discard()
    assert proc.poll() is not None
    assert warm.proc is None


def test_a_warm_worker_that_died_is_replaced_by_a_fresh_one(service: TrainingService) -> None:
    service.start_warm_worker()
    warm = _warm(service)
    assert warm is not None
    assert warm.proc is not None
    dead = warm.proc.pid
    os.kill(dead, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while warm.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)

    job = service.create_job(_config())
    started = service.start_job(job.job_id)
    assert started.pid not in (None, dead)
    assert service.wait(job.job_id, timeout=120).status == TrainingStatus.COMPLETED


def test_a_worker_the_entry_point_started_runs_the_job(service: TrainingService) -> None:
    """`flextrain train` starts its worker before importing its own code (entry.py); the
    executor takes that one instead of starting another."""
    prestart_warm_worker(warm_worker_command(), worker_environment())
    service.start_warm_worker()
    warm = _warm(service)
    assert warm is not None
    assert warm.proc is not None
    assert take_prestarted() is None  # taken once
    pid = warm.proc.pid
    job = service.create_job(_config())
    assert service.start_job(job.job_id).pid == pid
    assert service.wait(job.job_id, timeout=120).status == TrainingStatus.COMPLETED


@pytest.mark.parametrize(
    ("argv", "env", "wanted"),
    [
        (["train", "--config", "x.yaml"], {}, True),
        (["demo"], {}, True),
        (["train", "--help"], {}, False),
        (["train", "--config", "x.yaml", "--no-start"], {}, False),
        (["jobs", "list"], {}, False),
        ([], {}, False),
        (["train", "--config", "x.yaml"], {"FLEXTRAIN_EXECUTOR": "slurm"}, False),
    ],
)
def test_the_entry_point_starts_a_worker_only_for_a_job_started_here(
    argv: list[str], env: dict[str, str], wanted: bool
) -> None:
    assert wants_warm_worker(argv, env) is (wanted and not os.path.exists("/dev/nvidiactl"))
