"""The executor seam: where a job's worker processes run, and how they are watched.

Everything above this seam is the same for every executor: validation, the queue,
the run spec in `job.json`, the launch command (`jobs.launch.build_launch_command`,
a pure function of the job), the job store the workers report to. An executor only
starts that command somewhere, says whether it still runs, reads its log and stops
all of its ranks. `LocalExecutor` runs it as a process (or torchrun) on this
machine; a cluster executor (Slurm, Ray) implements the same five methods and is
chosen with `FLEXTRAIN_EXECUTOR`, with no change elsewhere.
"""

from __future__ import annotations

import atexit
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Protocol, runtime_checkable

from flextrain.config.issues import ValidationIssue
from flextrain.hardware.detect import HardwareConstraints
from flextrain.jobs import oom
from flextrain.jobs.process import (
    WarmWorker,
    is_alive,
    process_start_time,
    shared_fork_server,
    spawn,
    take_prestarted,
    terminate_tree,
)
from flextrain.jobs.store import JobStore, TrainingJob
from flextrain.jobs.workerenv import fork_server_command, warm_worker_command, worker_environment
from flextrain.settings import Settings

# A worker on another host is presumed dead when its heartbeat is this much older
# than its monitor interval, and never sooner than HEARTBEAT_GRACE seconds.
HEARTBEAT_MISSES = 6
HEARTBEAT_GRACE = 60.0


@dataclass(frozen=True)
class Submission:
    """One job's command, ready to run: what every executor is handed."""

    job_id: str
    argv: list[str]
    env: dict[str, str]
    job_dir: Path  # FLEXTRAIN_HOME/jobs/<id>: job.json, the log, the launch record
    log_file: Path
    distributed: bool  # torchrun: it starts (and restarts) its own worker processes
    gpus: tuple[int, ...] = ()  # the GPUs it may see (CUDA_VISIBLE_DEVICES)


@dataclass(frozen=True)
class Submitted:
    """Where the job now runs: what the store records so any process can find it."""

    pid: int | None
    pid_started_at: float | None
    host: str | None
    cluster_job_id: str | None = None  # a cluster executor's id for it (Slurm, Ray)


@dataclass(frozen=True)
class ClusterState:
    """A job as its cluster sees it: whether it still waits or runs, in the cluster's
    own words (Slurm's PENDING and reason Priority, Ray's RUNNING ...)."""

    active: bool
    state: str
    reason: str | None = None
    nodes: str | None = None

    def describe(self, executor: str, cluster_job_id: str) -> str:
        where = f" on {self.nodes}" if self.nodes else ""
        why = f": {self.reason}" if self.reason else ""
        return f"{executor} job {cluster_job_id} is {self.state.lower()}{where}{why}"


@runtime_checkable
class Executor(Protocol):
    """Runs submitted jobs and answers for them. Its methods must not block for long:
    the front ends call `is_running` while listing jobs."""

    name: str
    places_jobs: bool  # a cluster that queues and places jobs itself (ClusterExecutor)

    def submit(self, submission: Submission) -> Submitted:
        """Start the job's command; raise OSError when it cannot be started."""
        ...

    def is_running(self, job: TrainingJob) -> bool:
        """Whether the job's workers still run (False: gone without a word)."""
        ...

    def read_log(self, job: TrainingJob, tail: int = 200) -> str:
        """The last `tail` lines of the job's log ("" when there is none yet)."""
        ...

    def cancel(self, job: TrainingJob, timeout: float = 30.0) -> None:
        """Stop every rank of the job, giving them `timeout` s to checkpoint first."""
        ...

    def running(self) -> list[str]:
        """The ids of the jobs this executor runs now."""
        ...


@runtime_checkable
class ClusterExecutor(Executor, Protocol):
    """An executor whose cluster queues and places jobs itself (Slurm, Ray): flextrain's
    scheduler hands every queued job over at once, and the job waits in the cluster's
    queue (QUEUED, with the cluster's reason) until its worker starts there."""

    def cluster_state(self, job: TrainingJob) -> ClusterState:
        """The job's state in the cluster (one short query)."""
        ...

    def node_hardware(self, job: TrainingJob | None = None) -> HardwareConstraints | None:
        """What one of the job's nodes has, for the estimates (None: unknown)."""
        ...

    def preflight(self, job: TrainingJob) -> list[ValidationIssue]:
        """What the cluster would refuse, said before the job is handed over."""
        ...


def cluster_node(executor: Executor, job: TrainingJob) -> HardwareConstraints | None:
    """The node a cluster executor would give `job` (its own partition's), for the
    checks and the run spec; None when the job runs on this machine or the cluster
    cannot tell."""
    return executor.node_hardware(job) if isinstance(executor, ClusterExecutor) else None


class LocalExecutor:
    """Worker processes (or torchrun) on this machine, in their own session.

    A job it starts gets the kernel's out-of-memory count recorded and, with
    `job_memory_limit_gb`, its own memory cgroup (see `flextrain.jobs.oom`); a worker
    may be a warm one started ahead (`prepare`), which has imported the training
    libraries while the front end validated the job.
    """

    name = "local"
    places_jobs = False

    def __init__(self, settings: Settings, store: JobStore) -> None:
        self.settings = settings
        self.store = store
        self.warm: WarmWorker | None = None

    def prepare(self) -> None:
        """Start a worker now for the next single-process job (see `WarmWorker`); it is
        stopped when this process exits if no job took it."""
        if self.warm is None:
            self.warm = take_prestarted() or WarmWorker(warm_worker_command(), worker_environment())
            atexit.register(self.warm.discard)

    def submit(self, submission: Submission) -> Submitted:
        job_id = submission.job_id
        limits = self._confine(job_id, submission.job_dir)
        on_exit = partial(oom.record_exit, submission.job_dir)
        warm, self.warm = self.warm, None
        proc = None
        # Not for torchrun (it starts its own workers), nor into a memory cgroup: what a
        # warm worker imported was charged before it could join it.
        if warm is not None and not submission.distributed and limits.memory_cgroup is None:
            proc = warm.take(submission.argv[3:], submission.env, submission.log_file, on_exit)
        if warm is not None and proc is None:
            warm.discard()
        pid = proc.pid if proc is not None else None
        if pid is None and self._forks(submission) and limits.memory_cgroup is None:
            server = shared_fork_server(fork_server_command(), worker_environment())
            pid = server.launch(
                submission.argv[3:], submission.env, submission.log_file, submission.job_dir
            )
        if pid is None:
            pid = spawn(submission.argv, submission.env, submission.log_file, on_exit=on_exit).pid
        if limits.memory_cgroup is not None:
            try:
                limits.memory_cgroup.add(pid)
            except OSError as exc:
                message = (
                    f"The job runs without its memory limit: joining its cgroup failed ({exc})."
                )
                self.store.add_event(job_id, "memory_limit", message, level="warning")
        return Submitted(pid, process_start_time(pid), socket.gethostname())

    def _forks(self, submission: Submission) -> bool:
        """Whether the job starts as a fork of the fork server: one process (torchrun
        starts its own), no GPU (which ones a process sees is fixed when CUDA starts),
        and FLEXTRAIN_FORK_SERVER not turned off. A memory cgroup is checked by the
        caller: what the server imported was charged before the job could join it."""
        return self.settings.fork_server and not submission.distributed and not submission.gpus

    def _confine(self, job_id: str, job_dir: Path) -> oom.LaunchRecord:
        """What tells an out-of-memory kill apart afterwards: the kernel's count now and,
        with `job_memory_limit_gb`, the job's own memory cgroup."""
        oom.clear_exit(job_dir)
        oom.sweep({job.job_id for job in self.store.active_jobs()} | {job_id})
        limits = oom.confine(job_id, job_dir, self.settings.job_memory_limit_gb)
        limits.save(job_dir)
        if limits.cgroup_error:
            self.store.add_event(job_id, "memory_limit", limits.cgroup_error, level="warning")
        return limits

    def is_running(self, job: TrainingJob) -> bool:
        """On this host the worker's pid (and its start time, against pid reuse) says
        whether it lives; a worker on another host sharing this home is judged by its
        heartbeat."""
        if job.worker_host in (None, socket.gethostname()):
            started = job.pid_started_at
            if started is None:
                started = self.store.pid_started_at(job.job_id)
            return is_alive(job.pid, started)
        interval = float(job.settings.monitor_interval or 5.0)
        limit = max(HEARTBEAT_MISSES * interval, HEARTBEAT_GRACE)
        beat = job.heartbeat_at or job.updated_at
        return (datetime.now(UTC) - beat).total_seconds() < limit

    def read_log(self, job: TrainingJob, tail: int = 200) -> str:
        if not job.log_path or not Path(job.log_path).exists():
            return ""
        lines = Path(job.log_path).read_text(errors="replace").splitlines()
        return "\n".join(lines[-tail:])

    def cancel(self, job: TrainingJob, timeout: float = 30.0) -> None:
        """SIGTERM to the worker's whole process group (torchrun and every rank), then
        SIGKILL after `timeout` s."""
        if job.pid is not None:
            terminate_tree(job.pid, self.store.pid_started_at(job.job_id), timeout=timeout)

    def running(self) -> list[str]:
        host = socket.gethostname()
        return [
            job.job_id
            for job in self.store.active_jobs()
            if job.pid is not None and job.worker_host in (None, host) and self.is_running(job)
        ]
