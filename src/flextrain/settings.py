"""Process-wide settings, built once at start-up and passed down.

Nothing deep in the code reads environment variables itself: the worker
process receives the same values on its command line, so a job always runs
against the store that created it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".flextrain"


class Settings(BaseSettings):
    """Where flextrain keeps its state.

    `home` holds the job database, job folders, registered datasets and the
    built-in models generated on first use.
    """

    model_config = SettingsConfigDict(env_prefix="FLEXTRAIN_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    database_url: str | None = None
    models_cache: Path | None = Field(
        None, description="Where built-in models are generated; default HOME/models/builtin."
    )
    admin_token: SecretStr | None = Field(
        None,
        description="The API admin's token (FLEXTRAIN_ADMIN_TOKEN); without it the first "
        "`flextrain serve` makes one and prints it once.",
    )
    auto_resume: bool = Field(
        False,
        description="When the service starts, resume the jobs a crash or restart interrupted "
        "(FLEXTRAIN_AUTO_RESUME=1).",
    )
    max_concurrent_jobs: int | None = Field(
        None,
        ge=1,
        description="At most this many jobs run at once on this home "
        "(FLEXTRAIN_MAX_CONCURRENT_JOBS); unset, the free CPU threads and GPUs decide.",
    )

    allowed_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders besides FLEXTRAIN_HOME whose local models non-admin REST users "
        "may name (FLEXTRAIN_ALLOWED_ROOTS, separated by os.pathsep, e.g. /data/models:/srv/m).",
    )
    max_upload_mb: int = Field(
        512, ge=1, description="Largest dataset upload over REST, in MB (FLEXTRAIN_MAX_UPLOAD_MB)."
    )
    max_queued_jobs_per_user: int = Field(
        20,
        ge=1,
        description="Queued jobs a non-admin may have at once; starting one more is refused "
        "(FLEXTRAIN_MAX_QUEUED_JOBS_PER_USER).",
    )
    max_failed_auth_per_minute: int = Field(
        10,
        ge=1,
        description="Failed token checks per client address per minute before the API answers "
        "429 (FLEXTRAIN_MAX_FAILED_AUTH_PER_MINUTE).",
    )
    allow_pickle_weights: bool = Field(
        False,
        description="Load local model folders that hold only pickle weights (pytorch_model.bin), "
        "which can run code when loaded (FLEXTRAIN_ALLOW_PICKLE_WEIGHTS=1); default: "
        "safetensors only.",
    )
    reserved_cpus: int = Field(
        0,
        ge=0,
        description="CPU cores kept from training jobs for the API server, its clients and the "
        "system (FLEXTRAIN_RESERVED_CPUS); at least one core is always left to training. On a "
        "small machine that also serves a busy API, 1 keeps the training's threads from "
        "fighting the server for cores (docs/reliability.md, Load).",
    )
    job_memory_limit_gb: float | None = Field(
        None,
        gt=0,
        description="Memory limit of each job's worker processes, enforced by a memory cgroup "
        "of its own (FLEXTRAIN_JOB_MEMORY_LIMIT_GB; needs permission to create cgroups: root "
        "or a delegated cgroup v2 subtree). A job over it is stopped by the kernel without "
        "touching the server or other jobs, and recovered like any out-of-memory error. "
        "Default: no limit of its own.",
    )
    fork_server: bool = Field(
        True,
        description="Start single-process CPU jobs as forks of a process that has imported "
        "the training libraries once (FLEXTRAIN_FORK_SERVER; 0 to spawn each worker "
        "afresh, which costs some 5 s of CPU per job). Not for torchrun, GPU jobs or jobs "
        "with their own memory cgroup.",
    )
    executor: Literal["local", "slurm", "ray"] = Field(
        "local",
        description="Where job workers run (FLEXTRAIN_EXECUTOR): 'local', processes or "
        "torchrun on this machine; 'slurm', a batch job per flextrain job (sbatch, srun, "
        "torchrun); 'ray', a Ray job per flextrain job on FLEXTRAIN_RAY_ADDRESS. See "
        "docs/cluster.md.",
    )
    slurm_partition: str | None = Field(
        None,
        description="Slurm partition for jobs (FLEXTRAIN_SLURM_PARTITION; default: "
        "the cluster's default partition). A job's `cluster.partition` wins.",
    )
    slurm_account: str | None = Field(None, description="Slurm account to charge (--account).")
    slurm_qos: str | None = Field(None, description="Slurm quality of service (--qos).")
    slurm_time_limit: str | None = Field(
        None, description="Slurm time limit (--time, e.g. 02:00:00 or 1-00:00:00)."
    )
    slurm_extra_sbatch: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="More #SBATCH options for every job (FLEXTRAIN_SLURM_EXTRA_SBATCH, "
        "separated by ';', e.g. '--constraint=a100;--exclusive').",
    )
    slurm_signal_seconds: int = Field(
        120,
        ge=10,
        description="Seconds before a time limit or preemption at which Slurm signals "
        "the job (--signal), so it saves a checkpoint and is requeued to resume.",
    )
    cluster_gpu_memory_gb: float | None = Field(
        None,
        description="Memory of one GPU on the cluster's nodes, for the memory estimate "
        "(Slurm's GRES counts GPUs but does not say their memory).",
    )
    cluster_gpu_bf16: bool = Field(
        True,
        description="Whether the cluster's GPUs compute in bf16 (Ampere and newer: A100, "
        "H100, L40S, RTX 30/40); off for older ones (V100, T4), which then train in fp16. "
        "Neither Slurm nor Ray says which GPUs a node has.",
    )
    cluster_max_restarts: int = Field(
        3,
        ge=0,
        description="Times a job on a cluster executor is submitted again, from its "
        "latest checkpoint, after its worker or node was lost (its cluster job ended "
        "without the worker's result); 0: it stays interrupted until resumed.",
    )
    slurm_python: str | None = Field(
        None,
        description="The Python that runs workers on the nodes (default: this one; the "
        "nodes must see the same environment, as on a shared file system).",
    )
    ray_address: str = Field(
        "auto",
        description="The Ray cluster's address (FLEXTRAIN_RAY_ADDRESS): its dashboard "
        "URL, http://HEAD:8265, for the Jobs API; 'auto' for RAY_ADDRESS or the local head.",
    )

    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the API answers to besides loopback and the address it "
        "listens on (FLEXTRAIN_ALLOWED_HOSTS, comma-separated, e.g. train.example.org); "
        "any other Host header is refused (DNS rebinding).",
    )
    allowed_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins besides the server's own page that may send requests that "
        "change something (FLEXTRAIN_ALLOWED_ORIGINS, comma-separated, e.g. "
        "https://ui.example.org); other sites are refused (cross-site request forgery).",
    )

    @field_validator("allowed_hosts", "allowed_origins", mode="before")
    @classmethod
    def _split_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("slurm_extra_sbatch", mode="before")
    @classmethod
    def _split_options(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip() for part in value.split(";") if part.strip()]
        return value

    @field_validator("allowed_roots", mode="before")
    @classmethod
    def _split_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [Path(part) for part in value.split(os.pathsep) if part.strip()]
        return value

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.home / 'flextrain.db'}"

    @property
    def jobs_dir(self) -> Path:
        return self.home / "jobs"

    @property
    def builtin_models_dir(self) -> Path:
        return self.models_cache or self.home / "models" / "builtin"

    def ensure_home(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
