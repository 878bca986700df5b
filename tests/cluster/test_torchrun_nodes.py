"""Two nodes of one torchrun job on this machine, meeting over a loopback rendezvous
(`flextrain worker join` on the second): the multi-node path without a cluster. Run
with the cluster tests (`make test-cluster`): it is their kind of check (several
nodes' processes), and the heaviest of the several-process tests."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from flextrain.config.enums import TrainingStatus
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.train.test_distributed import _config

pytestmark = pytest.mark.cluster


def test_two_nodes_on_one_machine_meet_over_a_loopback_rendezvous(
    service: TrainingService, settings: Settings
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    config = _config(batch_size=4, num_nodes=2, rdzv_endpoint=f"127.0.0.1:{port}")
    job = service.create_job(config)
    service.start_job(job.job_id)
    env = {
        **os.environ,
        "FLEXTRAIN_HOME": str(settings.home),
        "FLEXTRAIN_DATABASE_URL": settings.resolved_database_url,
    }
    if settings.models_cache:
        env["FLEXTRAIN_MODELS_CACHE"] = str(settings.models_cache)
    second = subprocess.run(
        [sys.executable, "-m", "flextrain", "worker", "join", "--job", job.job_id],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    done = service.wait(job.job_id, timeout=120, poll=0.2)
    assert second.returncode == 0, (second.stdout[-2000:], second.stderr[-2000:])
    assert done.status == TrainingStatus.COMPLETED, (done.error_message, done.status)
    assert done.metrics["world_size"] == 2
