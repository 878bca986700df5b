"""The job queue's scheduler: starts QUEUED jobs when the resources they need are free.

One `tick` looks at the machine and the store and starts whatever fits:

1. It takes an exclusive file lock, HOME/scheduler.lock, so that ticks from
   every process on this home (the serve loop, a CLI command following its
   job, a worker that just finished) run one at a time and two of them never
   give the same cores or GPU away.
2. It reconciles the running jobs (a dead worker frees what it held) and adds
   up what they hold, from the allocation each was launched with.
3. It walks the queue in order (priority, highest first; then the time each
   job was queued, FIFO) and launches each job that fits through the service.
   Strict priority: the first job that does not fit stops the walk, and every
   job behind it waits too, even one small enough to fit. No job is passed
   over, so a big job is never starved by a stream of small ones; the price is
   idle resources while it waits. Each waiting job gets its reason in words.

A queued job is moved to VALIDATING by one conditional UPDATE before it is
launched, and a cancel moves it to CANCELLED the same way: whichever comes
first wins, so a cancelled queued job never starts.

Nothing runs in the background by itself: ticks happen when a job is
submitted or cancelled, when a worker ends (`tick_after_exit`), while a CLI
command follows a queued job, and every few seconds in the one `SchedulerLoop`
per home (in `flextrain serve` or `flextrain scheduler`), guarded by a second
lock, HOME/scheduler-loop.lock, held for the loop's lifetime.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import BaseModel, Field

from flextrain.config.enums import TrainingStatus
from flextrain.config.validation import ConfigValidationError
from flextrain.errors import ConflictError
from flextrain.hardware.detect import HardwareConstraints
from flextrain.jobs.checkpoints import latest_checkpoint
from flextrain.jobs.placement import (
    Demand,
    Reservation,
    demand_of,
    gpu_slots,
    never_fits,
    place,
    reservation_of,
)
from flextrain.jobs.resources import Allocation
from flextrain.jobs.store import TrainingJob
from flextrain.settings import Settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from flextrain.jobs.environment import TrainingEnvironmentManager
    from flextrain.jobs.executor import Executor
    from flextrain.jobs.store import JobStore


class SchedulerHost(Protocol):
    """What the scheduler needs of the service it starts jobs for (the facade, in
    practice): the store, the machine, what runs, and the launch of one job."""

    settings: Settings
    store: JobStore
    environments: TrainingEnvironmentManager
    engine: Engine
    executor: Executor

    def hardware(self) -> HardwareConstraints: ...

    def running_jobs(self) -> list[TrainingJob]: ...

    def watch_cluster_jobs(self) -> None: ...

    def estimated_peak_gb(
        self, job: TrainingJob, hardware: HardwareConstraints
    ) -> float | None: ...

    def launch(
        self, job: TrainingJob, resume_from: Path | None, allocation: Allocation | None = None
    ) -> None: ...


log = logging.getLogger("flextrain.scheduler")

TICK_LOCK = "scheduler.lock"
LOOP_LOCK = "scheduler-loop.lock"
# The settings of the scheduler that last launched a job, for a finishing worker's tick.
SETTINGS_FILE = "scheduler.json"
# Seconds between the loop's ticks: a freed machine is used within this long even
# when nothing else ticks (a worker killed by SIGKILL cannot).
LOOP_INTERVAL = 3.0


class SchedulerBusyError(ConflictError, RuntimeError):
    """Another scheduler loop already runs for this home (a second `flextrain queue run`:
    the user's to stop, so a conflict, not a bug; exit code 1 as `queue run` always gave)."""

    code = "scheduler_busy"
    exit_code = 1


@dataclass
class TickReport:
    """What one tick did: jobs started, jobs left waiting (with why), jobs failed."""

    started: list[str] = field(default_factory=list)
    waiting: dict[str, str] = field(default_factory=dict)
    failed: dict[str, BaseException] = field(default_factory=dict)


class QueuedJob(BaseModel):
    position: int = Field(description="1 for the job that starts next.")
    job_id: str
    run_name: str | None = None
    owner: str | None = None
    model_id: str
    priority: int
    queued_at: datetime | None = None
    waiting_seconds: float = Field(description="Seconds since the job entered the queue.")
    wait_reason: str | None = None


class RunningJob(BaseModel):
    job_id: str
    run_name: str | None = None
    owner: str | None = None
    status: TrainingStatus
    priority: int
    started_at: datetime | None = None
    progress: float = 0.0
    processes: int
    gpus: list[int] = Field(default_factory=list, description="GPU indices it holds.")
    threads: int = Field(description="CPU threads reserved, all processes together.")


class QueueSnapshot(BaseModel):
    """The queue in start order and what runs now, with the machine's totals."""

    queued: list[QueuedJob]
    running: list[RunningJob]
    cpu_threads: int = Field(description="CPU threads (cores) jobs may reserve.")
    cpu_threads_reserved: int
    gpus: list[int] = Field(description="GPU indices of this machine.")
    max_concurrent_jobs: int | None


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` for the block, waiting for it. flock locks belong to
    the open file, so two threads of one process exclude each other too, and a lock
    dies with its process: a crashed holder never leaves it stuck."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


class Scheduler:
    """Starts the queued jobs of one flextrain home that fit the machine now."""

    def __init__(self, service: SchedulerHost) -> None:
        self.service = service
        self.home = service.settings.home

    @property
    def lock_path(self) -> Path:
        return self.home / TICK_LOCK

    def tick(self) -> TickReport:
        """Reconcile, then start every queued job that fits, in strict priority order.
        With a cluster executor, first hear from the cluster about the jobs it holds."""
        self.service.watch_cluster_jobs()  # nothing to do for the local executor
        if not self.service.store.queued_jobs():
            return TickReport()  # the usual case: no lock, no hardware probe
        with _flock(self.lock_path):
            return self._tick_locked()

    def _tick_locked(self) -> TickReport:
        report = TickReport()
        queued = self.service.store.queued_jobs()  # again, under the lock
        if not queued:
            return report
        self._record_settings()
        hardware = self.service.hardware()
        # A cluster executor queues and places jobs itself: each job that could fit on
        # one of its nodes is handed over at once, nothing is reserved here.
        cluster = self.service.executor.places_jobs
        running = (
            [] if cluster else [self._reservation(j, hardware) for j in self.service.running_jobs()]
        )
        limit = self.service.settings.max_concurrent_jobs
        blocker: TrainingJob | None = None
        for job in queued:
            if blocker is not None:
                reason = (
                    f"waits its turn behind job {blocker.job_id} (priority {blocker.priority}), "
                    "which waits for resources"
                )
                self._wait(job, reason, report)
                continue
            try:
                demand = self._demand(job, hardware)
            except Exception as exc:  # a config that no longer loads: fail it, go on
                self._fail(job, f"Could not schedule the job: {exc}", report, exc)
                continue
            problems = never_fits(demand, hardware)
            if problems:
                error = ConfigValidationError(problems)
                self._fail(job, str(error), report, error)
                continue
            placed = Allocation() if cluster else place(demand, hardware, running, limit)
            if isinstance(placed, str):
                self._wait(job, placed, report)
                blocker = job
                continue
            if self._launch(job, placed, report):
                running.append(Reservation(job.job_id, demand.slots, placed.gpus))
        return report

    def _demand(self, job: TrainingJob, hardware: HardwareConstraints) -> Demand:
        memory = None
        if gpu_slots(hardware):
            memory = self.service.estimated_peak_gb(job, hardware)
        return demand_of(job.layout, hardware, memory)

    @staticmethod
    def _reservation(job: TrainingJob, hardware: HardwareConstraints) -> Reservation:
        return reservation_of(job.job_id, job.layout, job.allocation, hardware)

    def _launch(self, job: TrainingJob, allocation: Allocation, report: TickReport) -> bool:
        store = self.service.store
        # The one UPDATE that a cancel races against: if the cancel came first, skip.
        if not store.transition(
            job.job_id,
            [TrainingStatus.QUEUED],
            status=TrainingStatus.VALIDATING,
            allocation=allocation.as_dict(),
            wait_reason=None,
        ):
            return False
        resume_from = None
        if job.resume_count:  # resume_job queued it: continue from its latest checkpoint
            env = self.service.environments.layout(job.job_id, job.settings.output_dir)
            resume_from = latest_checkpoint(env.checkpoint_dir)
        try:
            self.service.launch(job, resume_from, allocation)
        except Exception as exc:
            # launch marks the job FAILED when its spec cannot be built; anything else
            # (no process could be started) is marked here, never left half-launched.
            self._fail(job, f"Could not start the job: {exc}", report, exc)
            return False
        report.started.append(job.job_id)
        return True

    def _wait(self, job: TrainingJob, reason: str, report: TickReport) -> None:
        report.waiting[job.job_id] = reason
        if job.wait_reason != reason:  # unchanged reasons are not rewritten every tick
            self.service.store.transition(job.job_id, [TrainingStatus.QUEUED], wait_reason=reason)

    def _fail(self, job: TrainingJob, message: str, report: TickReport, exc: BaseException) -> None:
        report.failed[job.job_id] = exc
        store = self.service.store
        changed = store.transition(
            job.job_id,
            [TrainingStatus.QUEUED, TrainingStatus.VALIDATING, TrainingStatus.PREPARING],
            status=TrainingStatus.FAILED,
            error_message=message[:4000],
            wait_reason=None,
            completed_at=datetime.now(UTC),
        )
        if changed:
            store.add_event(job.job_id, "not_scheduled", message[:4000], level="error")

    def _record_settings(self) -> None:
        """Write the settings a finishing worker's tick must share with this scheduler."""
        settings = self.service.settings
        values = {
            "max_concurrent_jobs": settings.max_concurrent_jobs,
            "models_cache": str(settings.models_cache) if settings.models_cache else None,
            # The GPUs this scheduler may give out; a worker's own is its allocation only.
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        }
        path = self.home / SETTINGS_FILE
        text = json.dumps(values, sort_keys=True)
        with contextlib.suppress(OSError):
            if path.exists() and path.read_text() == text:
                return
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(text)
            tmp.replace(path)

    # -- reading the queue ---------------------------------------------------------
    def snapshot(self) -> QueueSnapshot:
        """The queued jobs in the order they will start, and what runs now."""
        hardware = self.service.hardware()
        now = datetime.now(UTC)
        queued = [
            QueuedJob(
                position=position,
                job_id=job.job_id,
                run_name=job.run_name,
                owner=job.owner,
                model_id=job.model_id,
                priority=job.priority,
                queued_at=job.queued_at,
                waiting_seconds=max(0.0, (now - (job.queued_at or job.created_at)).total_seconds()),
                wait_reason=job.wait_reason,
            )
            for position, job in enumerate(self.service.store.queued_jobs(), start=1)
        ]
        running = []
        for job in self.service.running_jobs():
            held = self._reservation(job, hardware)
            running.append(
                RunningJob(
                    job_id=job.job_id,
                    run_name=job.run_name,
                    owner=job.owner,
                    status=job.status,
                    priority=job.priority,
                    started_at=job.started_at,
                    progress=job.progress,
                    processes=job.layout.processes,
                    gpus=list(held.gpus),
                    threads=held.slots,
                )
            )
        return QueueSnapshot(
            queued=queued,
            running=running,
            cpu_threads=hardware.cpu_cores,
            cpu_threads_reserved=sum(r.threads for r in running),
            gpus=[g.index for g in gpu_slots(hardware)],
            max_concurrent_jobs=self.service.settings.max_concurrent_jobs,
        )


class SchedulerLoop:
    """Ticks every `interval` seconds; at most one loop per home (a lock held for life)."""

    def __init__(
        self,
        service: SchedulerHost,
        interval: float = LOOP_INTERVAL,
        on_report: Callable[[TickReport], None] | None = None,
    ) -> None:
        self.scheduler = Scheduler(service)
        self.interval = interval
        self.on_report = on_report
        self.lock_path = service.settings.home / LOOP_LOCK
        self._fd: int | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        """Become this home's scheduler loop; False when another one already is."""
        if self._fd is not None:
            return True
        self.lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd
        return True

    def require(self) -> None:
        """acquire(), or SchedulerBusyError naming the process that holds the loop."""
        if self.acquire():
            return
        try:
            holder = f" (pid {self.lock_path.read_text().strip()})"
        except OSError:
            holder = ""
        raise SchedulerBusyError(
            f"A scheduler already runs for {self.scheduler.home}{holder}, in `flextrain serve` "
            "or `flextrain scheduler`; only one runs per FLEXTRAIN_HOME. It starts queued jobs "
            "already. Fix: stop it first, or use another FLEXTRAIN_HOME."
        )

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def tick_once(self) -> TickReport | None:
        """One tick, never raising: a loop must outlive a bad job or a database hiccup."""
        try:
            report = self.scheduler.tick()
        except Exception:
            log.exception("Scheduler tick failed")
            return None
        if self.on_report is not None:
            self.on_report(report)
        return report

    def run(self) -> None:
        """Tick until stop(); the loop lock must be held (require())."""
        if not self.held:
            raise SchedulerBusyError("SchedulerLoop.run() needs the loop lock: call require().")
        try:
            while True:
                self.tick_once()
                if self._stop.wait(self.interval):
                    return
        finally:
            self.release()

    def start(self) -> None:
        """Run in a background thread (flextrain serve). If another loop holds the home,
        stand by and take over when it stops, so the home always has one loop."""

        def standby_then_run() -> None:
            while not self.acquire():
                if self._stop.wait(self.interval):
                    return
            self.run()

        self._thread = threading.Thread(
            target=standby_then_run, name="flextrain-scheduler", daemon=True
        )
        self._thread.start()

    def request_stop(self) -> None:
        """Ask the loop to end after its current tick (safe from a signal handler)."""
        self._stop.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.release()


def recorded_settings(home: Path) -> dict[str, Any]:
    """The settings the last launching scheduler recorded in the home (see SETTINGS_FILE)."""
    try:
        values = json.loads((home / SETTINGS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(values, dict):
        return {}
    keys = ("max_concurrent_jobs", "models_cache", "cuda_visible_devices")
    return {k: v for k, v in values.items() if k in keys}


def tick_after_exit(
    home: Path, database_url: str, make_service: Callable[[Settings], SchedulerHost]
) -> None:
    """Start the next queued jobs now that a job's processes have ended.

    Called by a finishing worker (or the torchrun supervisor) so the queue moves
    without any daemon. It runs with the launching scheduler's settings (its
    max_concurrent_jobs, where built-in models live, the GPUs it may give out),
    read from the home, and never raises: the job that called it has already
    ended and recorded its result, and a failed tick is retried by the next one.
    It sets CUDA_VISIBLE_DEVICES in this process's environment (the caller's is its
    own job's allocation), so it is meant for a process that is about to exit.
    """
    try:
        recorded = recorded_settings(home)
        visible = recorded.pop("cuda_visible_devices", None)
        if visible is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = str(visible)
        recorded = {k: v for k, v in recorded.items() if v is not None}
        settings = Settings(home=home, database_url=database_url, **recorded)
        service = make_service(settings)
        try:
            report = Scheduler(service).tick()
        finally:
            service.engine.dispose()
        for job_id in report.started:
            print(f"[flextrain] started queued job {job_id}", flush=True)
    except Exception as exc:  # never fail the caller; the next tick retries
        print(f"[flextrain] could not start queued jobs: {exc}", file=sys.stderr, flush=True)
