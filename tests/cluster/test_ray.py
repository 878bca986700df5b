"""Jobs on a real local Ray head through `FLEXTRAIN_EXECUTOR=ray` (the Ray Jobs API).

Each job is a Ray job whose entrypoint trains a tiny model; the checks are the ones
a local job passes, plus Ray's: its id and state, a stop that ends every rank, and
a job whose worker is killed resumed from its checkpoint as a new Ray job.
"""

from __future__ import annotations

import time

import psutil
import pytest
from transformers import AutoModelForCausalLM

from flextrain.config.enums import TrainingStatus
from flextrain.config.validation import ConfigValidationError
from flextrain.service import TrainingService
from tests.cluster.test_slurm import _config, _loss_steps, _until, _workers_of

pytestmark = pytest.mark.cluster


def test_a_job_trains_as_a_ray_job(ray_service: TrainingService) -> None:
    job = ray_service.create_job(_config())
    started = ray_service.start_job(job.job_id)
    assert started.executor == "ray"
    assert started.cluster_job_id == f"flextrain-{job.job_id}-0"
    done = _until(ray_service, job.job_id, lambda j: j.is_finished)
    assert done.status == TrainingStatus.COMPLETED, ray_service.read_log(job.job_id, 60)
    losses = [row["loss"] for row in ray_service.metric_history(job.job_id) if row.get("loss")]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3
    assert done.model_path is not None
    assert AutoModelForCausalLM.from_pretrained(done.model_path) is not None
    deadline = time.monotonic() + 30  # the worker records its end, then exits
    while ray_service.executor.cluster_state(done).active and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_service.executor.cluster_state(done).state == "SUCCEEDED"


def test_a_two_worker_ddp_job_runs_under_ray(ray_service: TrainingService) -> None:
    job = ray_service.create_job(_config(num_processes=2, max_steps=8))
    ray_service.start_job(job.job_id)
    done = _until(ray_service, job.job_id, lambda j: j.is_finished, timeout=300)
    assert done.status == TrainingStatus.COMPLETED, ray_service.read_log(job.job_id, 80)
    log = ray_service.read_log(job.job_id)
    assert "rank 0 of 2" in log
    assert "rank 1 of 2" in log


def test_stop_ends_every_worker_with_a_checkpoint(ray_service: TrainingService) -> None:
    job = ray_service.create_job(_config(num_processes=2, max_steps=2000, save_steps=1000))
    ray_service.start_job(job.job_id)
    _until(ray_service, job.job_id, lambda j: j.current_step >= 2, timeout=240)
    assert _workers_of(job.job_id)
    cancelled = ray_service.cancel_job(job.job_id, timeout=60)
    assert cancelled.status == TrainingStatus.CANCELLED
    deadline = time.monotonic() + 60
    while _workers_of(job.job_id) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _workers_of(job.job_id), "a worker outlived the stop"
    deadline = time.monotonic() + 30
    while ray_service.executor.cluster_state(cancelled).active and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray_service.executor.cluster_state(cancelled).state in ("STOPPED", "SUCCEEDED")
    checkpoints = list(ray_service.environment(job.job_id).checkpoint_dir.glob("checkpoint-*"))
    assert checkpoints, "the stop saved no checkpoint"


def test_a_killed_worker_is_submitted_again_and_resumes(ray_service: TrainingService) -> None:
    """A worker lost mid-run (here killed; a node loss looks the same to Ray): the Ray
    job fails, and flextrain submits the job again as a new Ray job that continues from
    the latest checkpoint, with no step lost or logged twice."""
    job = ray_service.create_job(_config(max_steps=40, save_steps=4))
    ray_service.start_job(job.job_id)
    _until(ray_service, job.job_id, lambda j: j.current_step >= 9, timeout=240)
    for proc in _workers_of(job.job_id):
        if "flextrain.train.worker" in proc.cmdline():
            proc.kill()
    done = _until(ray_service, job.job_id, lambda j: j.status == TrainingStatus.COMPLETED, 300)
    assert done.resume_count == 1
    assert done.cluster_job_id == f"flextrain-{job.job_id}-1"  # a new Ray job
    kinds = [e.kind for e in ray_service.events(job.job_id)]
    assert "interrupted" in kinds
    assert "resumed" in kinds
    assert _loss_steps(ray_service, job.job_id) == list(range(1, 41))
    event = next(e for e in ray_service.events(job.job_id) if e.kind == "resumed")
    assert int(event.data["step"]) >= 8


def test_a_multi_node_job_is_refused_with_the_reason(ray_service: TrainingService) -> None:
    job = ray_service.create_job(_config(num_nodes=2))
    with pytest.raises(ConfigValidationError) as raised:
        ray_service.start_job(job.job_id)
    assert "num_nodes: The Ray executor runs a job on one node" in str(raised.value)


def test_the_estimate_is_made_for_a_ray_node(ray_service: TrainingService) -> None:
    hardware = ray_service.hardware()
    assert hardware.platform.startswith("ray node ")
    assert hardware.cpu_cores == 2  # the head was started with --num-cpus=2
    assert hardware.total_memory_gb <= psutil.virtual_memory().total / 1024**3
