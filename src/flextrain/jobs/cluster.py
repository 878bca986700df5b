"""What the cluster executors (Slurm, Ray) share: a node as the estimates see it, the
job a submission is for, its own log, and the cluster's word on whether it runs.

Each executor adds what its engine does differently: how it submits, asks for a
job's state, reads its own output and stops a job.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from pathlib import Path

from flextrain.hardware.detect import GPUInfo, HardwareConstraints
from flextrain.jobs.executor import ClusterState, Submission
from flextrain.jobs.store import JobStore, TrainingJob
from flextrain.settings import Settings


def node_constraints(
    *,
    cpus: int,
    memory_gb: float,
    gpus: int,
    gpu_memory_gb: float,
    platform: str,
    bf16: bool = True,
) -> HardwareConstraints:
    """One cluster node as the estimates see it. Its GPUs' memory and bf16 support are
    settings (FLEXTRAIN_CLUSTER_GPU_MEMORY_GB, FLEXTRAIN_CLUSTER_GPU_BF16): neither
    Slurm's GRES nor Ray's resources say them."""
    return HardwareConstraints(
        available_memory_gb=memory_gb,
        total_memory_gb=memory_gb,
        available_gpu_memory_gb=gpu_memory_gb * gpus,
        gpu_count=gpus,
        cpu_cores=max(1, cpus),
        supports_mixed_precision=gpus > 0,
        recommended_precision=("bf16" if bf16 else "fp16") if gpus else "fp32",
        supports_bf16=gpus > 0 and bf16,
        disk_free_gb=0.0,  # the node's scratch is not known here
        gpus=[
            GPUInfo(
                index=i,
                name="cluster gpu",
                total_memory_gb=gpu_memory_gb,
                free_memory_gb=gpu_memory_gb,
            )
            for i in range(gpus)
        ],
        platform=platform,
    )


class ClusterExecutorBase(ABC):
    """The parts of a cluster executor that do not depend on the engine; each engine
    says how it reads a job's state (`cluster_state`)."""

    name = "cluster"
    places_jobs = True

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store

    @abstractmethod
    def cluster_state(self, job: TrainingJob) -> ClusterState:
        """The job's state in the cluster (one short query)."""

    def job_of(self, submission: Submission) -> TrainingJob:
        job = self.store.get(submission.job_id)
        if job is None:
            raise LookupError(f"Job {submission.job_id} was deleted before it was submitted.")
        return job

    def is_running(self, job: TrainingJob) -> bool:
        """Whether the cluster still holds the job, waiting or running."""
        return bool(job.cluster_job_id) and self.cluster_state(job).active

    def own_log(self, job: TrainingJob) -> list[str]:
        """The lines of the job's log (every process of the job appends to it)."""
        if job.log_path and Path(job.log_path).exists():
            return Path(job.log_path).read_text(errors="replace").splitlines()
        return []

    def wait_gone(self, job: TrainingJob, seconds: float) -> bool:
        """Wait up to `seconds` for the cluster to let go of the job; True if it did."""
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if not self.is_running(job):
                return True
            time.sleep(0.5)
        return not self.is_running(job)

    def running(self) -> list[str]:
        return [
            job.job_id
            for job in self.store.active_jobs()
            if job.cluster_job_id and job.executor == self.name and self.is_running(job)
        ]
