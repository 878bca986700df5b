"""Fixtures of the cluster tests (`make test-cluster`): a real one-node Slurm cluster
and a real local Ray head, each started once for the session and stopped after it."""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.cluster.engines import RayHead, SlurmCluster, missing_slurm

# Each test module here is marked `cluster` (pyproject's addopts leave those out of
# `make test`; `make test-cluster` runs them).


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlurmCluster]:
    why = missing_slurm()
    if why:
        pytest.skip(why)
    cluster = SlurmCluster(tmp_path_factory.mktemp("slurm")).start()
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)
    try:
        yield cluster
    finally:
        cluster.stop()
        if previous is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = previous


@pytest.fixture
def slurm_service(settings: Settings, slurm: SlurmCluster) -> Iterator[TrainingService]:
    svc = TrainingService(settings.model_copy(update={"executor": "slurm"}))
    yield svc
    for job in svc.list_jobs():
        if not job.is_finished:
            svc.cancel_job(job.job_id)
    svc.engine.dispose()


@pytest.fixture(scope="session")
def ray_head(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RayHead]:
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    if not Path(ray).exists():
        pytest.skip("Ray is not installed (make test-cluster installs flextrain[ray])")
    # Ray's socket paths must stay under 107 bytes: a short folder of its own.
    root = Path("/tmp") / f"ray-{os.getpid()}"
    head = RayHead(root, ray).start()
    try:
        yield head
    finally:
        head.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def ray_service(settings: Settings, ray_head: RayHead) -> Iterator[TrainingService]:
    svc = TrainingService(
        settings.model_copy(update={"executor": "ray", "ray_address": ray_head.address})
    )
    yield svc
    for job in svc.list_jobs():
        if not job.is_finished:
            svc.cancel_job(job.job_id)
    svc.engine.dispose()
