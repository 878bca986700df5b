"""Jobs started as forks of a process that imported the training libraries once.

The fork is the job's process as a spawned worker would be: its own session, its log,
its environment, its exit recorded in its folder. When the server is gone, or turned
off, the job is spawned as before.
"""

from __future__ import annotations

import os
import signal
import time

import psutil
import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs import oom
from flextrain.jobs.process import ForkServer, shared_fork_server
from flextrain.jobs.workerenv import fork_server_command, worker_environment
from flextrain.service import TrainingService
from flextrain.settings import Settings


def _config(**overrides: object) -> AdvancedTrainingConfig:
    values: dict[str, object] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": TrainingType.FULL_TRAINING,
        "max_steps": 3,
        "batch_size": 4,
        "max_length": 32,
        "logging_steps": 1,
        "eval_split": 0.0,
        "num_threads": 1,
        "gradient_checkpointing": False,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)  # type: ignore[arg-type]


def _server() -> ForkServer:
    return shared_fork_server(fork_server_command(), worker_environment())


@pytest.fixture
def settings_without_forks(settings: Settings) -> Settings:
    return settings.model_copy(update={"fork_server": False})


def test_a_job_runs_as_a_fork_of_the_server_and_its_end_is_recorded(
    service: TrainingService,
) -> None:
    job = service.create_job(_config())
    started = service.start_job(job.job_id)
    assert started.pid is not None
    assert psutil.Process(started.pid).ppid() == _server().proc.pid
    # Its own session: a cancel stops its process group, never the server's.
    assert os.getsid(started.pid) == started.pid
    done = service.wait(job.job_id, timeout=120)
    assert done.status == TrainingStatus.COMPLETED, service.read_log(job.job_id, 40)
    assert f"[flextrain] job {job.job_id}: full_training" in service.read_log(job.job_id)
    # The server reaped it and wrote its exit status where the OOM check reads it.
    root = service.environment(job.job_id).root
    deadline = time.monotonic() + 10
    while oom.recorded_exit(root) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert oom.recorded_exit(root) == 0
    assert _server().alive


def test_a_killed_fork_is_recorded_by_its_signal_and_the_job_interrupted(
    service: TrainingService,
) -> None:
    job = service.create_job(_config(max_steps=200))
    started = service.start_job(job.job_id)
    assert started.pid is not None
    deadline = time.monotonic() + 60
    while service.require_job(job.job_id).current_step < 1 and time.monotonic() < deadline:
        time.sleep(0.2)
    oom_kills = oom.vmstat_oom_kills()
    os.kill(started.pid, signal.SIGKILL)
    root = service.environment(job.job_id).root
    while oom.recorded_exit(root) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert oom.recorded_exit(root) == -signal.SIGKILL
    now = service.require_job(job.job_id)
    status = now.status
    if oom_kills is not None and (oom.vmstat_oom_kills() or 0) > oom_kills:
        # The kernel's OOM killer ended some other process meanwhile (test_oom_kill on the
        # other xdist worker does that on purpose). Without a job cgroup the service can
        # only say a SIGKILL was "most likely" the OOM killer's, and retries the job at a
        # smaller batch: queued (or already started) again, never failed.
        assert status == TrainingStatus.INTERRUPTED or not now.is_finished, status
        service.cancel_job(job.job_id)
        return
    assert status == TrainingStatus.INTERRUPTED


def test_without_a_live_server_the_job_is_spawned(service: TrainingService) -> None:
    server = _server()
    server.proc.kill()
    server.proc.wait()
    assert (
        server.launch(["--job-id", "x"], {}, service.settings.home / "x.log", service.settings.home)
        is None
    )
    job = service.create_job(_config())
    started = service.start_job(job.job_id)
    assert started.pid is not None
    # A new server took over (the dead one is replaced on next use).
    assert psutil.Process(started.pid).ppid() == _server().proc.pid != server.proc.pid
    assert service.wait(job.job_id, timeout=120).status == TrainingStatus.COMPLETED


def test_turned_off_the_job_is_a_child_of_this_process(settings_without_forks: Settings) -> None:
    service = TrainingService(settings_without_forks)
    try:
        job = service.create_job(_config())
        started = service.start_job(job.job_id)
        assert started.pid is not None
        assert psutil.Process(started.pid).ppid() == os.getpid()
        assert service.wait(job.job_id, timeout=120).status == TrainingStatus.COMPLETED
    finally:
        service.close()
