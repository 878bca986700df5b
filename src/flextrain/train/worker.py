"""Worker process entry point: `python -m flextrain.train.worker --job-id ...`.

Runs one job and records its end in the store: COMPLETED with the model path,
FAILED with the error (traceback in the job's log), or leaves the CANCELLED
that a front end wrote. A monitor thread beats a heartbeat and samples the
machine meanwhile.

SIGTERM during the training loop asks the loop to save a checkpoint and stop
(a cancelled or shut-down run resumes from where it was); before or after the
loop, or on a second SIGTERM, it unwinds at once through `finally` so
temporary files are removed. A SIGTERM that was not a cancel (a shutdown)
leaves the job INTERRUPTED, which `resume` continues.

Started by torchrun as one rank of several (RANK set), only rank 0 reports to
the store; how the run ended is recorded by the supervisor around torchrun
(`flextrain.jobs.supervise`), which knows which rank failed first. A rank's
exception is written to its error file (torchrun's `record`) for that report.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import sys
import traceback
import warnings
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import Any

from flextrain.config.enums import TrainingStatus
from flextrain.db import make_sessionmaker
from flextrain.jobs.checkpoints import latest_checkpoint
from flextrain.jobs.environment import TrainingEnvironment, TrainingEnvironmentManager
from flextrain.jobs.oom import prefer_as_oom_victim
from flextrain.jobs.resume import requeue_from_checkpoint
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import JobStore
from flextrain.migrations import make_engine
from flextrain.models.quantize import quiet_bitsandbytes_kernel_fetch
from flextrain.train.monitor import JobMonitor
from flextrain.train.stop import (
    DiskPausedError,
    JobCancelledError,
    StopRequest,
    TrainingDivergedError,
)


class _Terminated(BaseException):
    """Raised from the SIGTERM handler; BaseException so library code can't swallow it."""


_STOP = StopRequest()


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    """In the training loop: stop after this step with a checkpoint. A second SIGTERM
    changes nothing (a cluster signals every process, and torchrun signals its ranks
    again), so the checkpoint is still written; outside the loop: stop now."""
    if _STOP.in_training_loop:
        if not _STOP.is_set():
            _STOP.set("SIGTERM")
        return
    raise _Terminated()


def _rank() -> int | None:
    """This process's rank when torchrun started it; None for a single-process run."""
    return int(os.environ["RANK"]) if "RANK" in os.environ else None


def quiet_library_deprecations() -> None:
    """Keep other libraries' deprecation notices out of the job log a user reads: they
    are about those libraries' next versions, not about this run. Warnings asked for on
    the command line (python -W) still win, and flextrain's own still show."""
    if sys.warnoptions:
        return
    for category in (FutureWarning, DeprecationWarning):
        warnings.filterwarnings("ignore", category=category, module=r"^(?!flextrain)")


# Read by CUDA when it initialises: a warm worker that had CUDA initialised with other
# values than its job's cannot take them any more, and starts afresh instead.
_CUDA_VARIABLES = ("CUDA_VISIBLE_DEVICES", "CUDA_DEVICE_ORDER")


def _wait_for_job() -> list[str] | None:
    """A warm worker (`flextrain.jobs.process.WarmWorker`): import the training libraries
    now, then take the job the front end hands over on stdin, one JSON line: the worker
    arguments, the environment and the log file a freshly spawned worker would have had.
    None when the front end closes stdin without a job."""
    import flextrain.train.runner  # noqa: F401  # the seconds this process is started early for

    line = sys.stdin.readline()
    if not line.strip():
        return None
    order = json.loads(line)
    args: list[str] = order["args"]
    env: dict[str, str] = order["env"]
    sys.stdout.flush()
    sys.stderr.flush()
    log = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(log)
    import torch

    if torch.cuda.is_initialized() and any(
        os.environ.get(name) != env.get(name) for name in _CUDA_VARIABLES
    ):
        os.execve(sys.executable, [sys.executable, "-m", "flextrain.train.worker", *args], env)
    os.environ.clear()
    os.environ.update(env)
    return args


def _serve_forks() -> int:
    """A fork server (`flextrain.jobs.process.ForkServer`): import the training libraries
    once, then start each job the launching process sends on stdin (one JSON line: the
    worker arguments, the environment, the log and the job's folder) as a fork of this
    process, which has nothing left to import. Answers each order with the job's pid,
    reaps the jobs that end and records how each ended (`jobs.oom.record_exit`), as the
    launching process does for a spawned worker. Ends when stdin closes.

    Single-threaded on purpose: a fork copies only the calling thread, so no other
    thread may hold a lock at that moment. Stdin is read with os.read, not sys.stdin,
    whose buffer select() cannot see.
    """
    import select

    import flextrain.train.runner  # noqa: F401  # the seconds every fork is spared
    from flextrain.jobs.oom import record_exit
    from flextrain.train.preference.run import preload_trl

    preload_trl()  # about a second more, once, instead of in every preference job

    jobs: dict[int, str] = {}
    pending = b""
    while True:
        ready, _, _ = select.select([0], [], [], 0.2)
        _reap(jobs, record_exit)
        if not ready:
            continue
        chunk = os.read(0, 65536)
        if not chunk:
            return 0
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            if line.strip():
                order = json.loads(line)
                pid = _fork_job(order)
                jobs[pid] = order["job_dir"]
                sys.stdout.write(json.dumps({"pid": pid}) + "\n")
                sys.stdout.flush()


def _reap(jobs: dict[int, str], record_exit: Any) -> None:
    """Collect the jobs that ended; write each one's exit status to its folder."""
    while jobs:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        job_dir = jobs.pop(pid, None)
        if job_dir is not None:
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            record_exit(Path(job_dir), code)


def _fork_job(order: dict[str, Any]) -> int:
    """Fork, and in the child run the job as a freshly spawned worker would: its own
    session (cancel stops its group), its log as stdout and stderr, its environment."""
    sys.stdout.flush()
    sys.stderr.flush()
    # The pid is answered only once the child leads its own session: a cancel sent
    # the moment the launcher learns the pid must find the job's process group.
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid:
        os.close(ready_write)
        os.read(ready_read, 1)
        os.close(ready_read)
        return pid
    code = 1
    try:
        os.close(ready_read)
        os.setsid()
        os.write(ready_write, b"1")
        os.close(ready_write)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        log = os.open(order["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(log)
        os.environ.clear()
        os.environ.update(order["env"])
        code = main(order["args"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return 0  # not reached: the child always leaves through os._exit


def main(argv: list[str] | None = None) -> int:
    quiet_library_deprecations()
    quiet_bitsandbytes_kernel_fetch()
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--fork-server"]:
        return _serve_forks()
    # A service built inside a worker (to start the next queued job as this one ends)
    # spawns that job: a fork server started here would end with this process.
    os.environ["FLEXTRAIN_FORK_SERVER"] = "0"
    if argv == ["--warm"]:
        job = _wait_for_job()
        if job is None:
            return 0
        argv = job
    if _rank() is not None:
        from torch.distributed.elastic.multiprocessing.errors import record

        code = record(_main)(argv)
        return 0 if code is None else code
    return _main(argv)


def _main(argv: list[str] | None = None) -> int:
    rank = _rank()
    reporter = rank in (None, 0)
    parser = argparse.ArgumentParser(prog="flextrain.train.worker")
    parser.add_argument("--job-id", required=True)
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--home", required=True)
    parser.add_argument(
        "--resume-latest",
        action="store_true",
        help="a cluster restarted this job (requeue after preemption or node failure): "
        "continue from its latest checkpoint",
    )
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # When memory runs out, the kernel should stop training, not the server or the desktop.
    prefer_as_oom_victim()

    # The service that launched this worker has already migrated the database.
    store = JobStore(make_sessionmaker(make_engine(args.database_url, migrate=False)))
    job = store.get(args.job_id)
    if job is None:
        print(f"Job {args.job_id} not found in {args.database_url}", file=sys.stderr)
        return 2
    restarted = args.resume_latest and job.status in (
        TrainingStatus.INTERRUPTED,
        TrainingStatus.QUEUED,
    )
    if job.is_finished and not restarted:  # cancelled before the worker got going
        print(f"Job {args.job_id} is already {job.status.value}; nothing to do.")
        return 0
    spec_env: TrainingEnvironment | None = None
    monitor: JobMonitor | None = None
    try:
        environments = TrainingEnvironmentManager.for_home(Path(args.home))
        spec = _read_spec(environments, args.job_id, rank)
        spec_env = environments.layout(spec.job_id, spec.config.output_dir)
        if args.resume_latest:
            spec = _continue_after_requeue(store, environments, spec, reporter=reporter)
        if reporter:
            store.update(
                args.job_id,
                status=TrainingStatus.PREPARING,
                worker_host=socket.gethostname(),
                wait_reason=None,  # a cluster's queue reason, now past
            )
            monitor = JobMonitor(store, args.job_id, spec.config.monitor_interval)
            monitor.start()
        return _run(store, args, spec, rank)
    except _Terminated:
        print("[flextrain] terminated", flush=True)
        _stopped(store, args.job_id, reporter=rank is None)
        return 143
    except BaseException as exc:
        if rank is not None:
            raise  # to torchrun's error file; the supervisor reports the first failure
        traceback.print_exc()
        message = f"{type(exc).__name__}: {exc}".strip()
        store.update(
            args.job_id,
            status=TrainingStatus.FAILED,
            error_message=message[:4000],
            completed_at=datetime.now(UTC),
        )
        return 1
    finally:
        if rank is not None and "torch" in sys.modules:
            from flextrain.train.distributed import shutdown

            shutdown()
        if monitor is not None:
            monitor.stop()
        if spec_env is not None and reporter:
            TrainingEnvironmentManager.for_home(Path(args.home)).cleanup(spec_env)
        if rank is None:  # ranks of a torchrun run leave this to their supervisor
            _start_next_queued(store, Path(args.home), args.database_url)


def _read_spec(environments: TrainingEnvironmentManager, job_id: str, rank: int | None) -> RunSpec:
    """The run spec the launcher wrote; this process pinned to its CPUs, and the run
    announced in the job's log."""
    spec = RunSpec.read(environments.jobs_dir / job_id)
    if spec.cpu_affinity and hasattr(os, "sched_setaffinity"):
        # Before the first parallel region: OpenMP's threads inherit it when created.
        try:
            os.sched_setaffinity(0, spec.cpu_affinity)
        except OSError as exc:  # CPUs gone since the launch: run where allowed
            print(f"[flextrain] cpu_affinity {spec.cpu_affinity} not set: {exc}", flush=True)
    where = f", rank {rank} of {os.environ.get('WORLD_SIZE')}" if rank is not None else ""
    print(
        f"[flextrain] job {spec.job_id}: {spec.config.training_type.value} "
        f"of {spec.config.model_id} on {spec.config.dataset_id} ({spec.objective}, "
        f"{spec.precision}, {spec.num_threads} threads{_allocator()}{where})",
        flush=True,
    )
    return spec


def _allocator() -> str:
    """ ", tcmalloc" when this process runs with it (jobs/workerenv.py preloads it)."""
    try:
        with open("/proc/self/maps") as maps:
            return ", tcmalloc" if "tcmalloc" in maps.read() else ""
    except OSError:  # no /proc (not Linux)
        return ""


def _continue_after_requeue(
    store: JobStore, environments: TrainingEnvironmentManager, spec: RunSpec, *, reporter: bool
) -> RunSpec:
    """The run spec continuing from the job's latest checkpoint, as a cluster restarted
    it. The reporting process queues the job again first if nobody has yet (the
    cluster's requeue ended it INTERRUPTED), which records the resume; every rank
    reads the same checkpoint from the shared job folder."""
    job = store.get(spec.job_id)
    if reporter and job is not None and job.status == TrainingStatus.INTERRUPTED:
        requeue_from_checkpoint(
            store,
            environments,
            job,
            sources=[TrainingStatus.INTERRUPTED],
            by=f"{job.executor or 'the cluster'} (requeued)",
            keep_cluster_job=True,
        )
    env = environments.layout(spec.job_id, spec.config.output_dir)
    checkpoint = latest_checkpoint(env.checkpoint_dir)
    if checkpoint is None:
        return spec
    print(f"[flextrain] restarted by the cluster: continuing from {checkpoint.name}", flush=True)
    return spec.model_copy(update={"resume_from_checkpoint": str(checkpoint)})


def _register_model(
    store: JobStore, job_id: str, spec: RunSpec, database_url: str, home: Path
) -> None:
    """Record the job's saved model in the model registry, with its lineage. Done here,
    by the worker, so it happens with no API server running. The model is saved
    already: a registry failure is a warning event, never a failed job."""
    from flextrain.models.registry import ModelRegistry
    from flextrain.models.resolve import ModelResolver

    engine = None
    try:
        job = store.get(job_id)
        if job is None:
            return
        engine = make_engine(database_url, migrate=False)
        resolver = ModelResolver(
            home / "models" / "builtin", allow_pickle=spec.allow_pickle_weights
        )
        registry = ModelRegistry(make_sessionmaker(engine), resolver)
        model = registry.register_trained(job, Path(spec.model_dir))
        # Only printed: a success needs no event (`flextrain models show` has the lineage).
        print(f"[flextrain] model registered as '{model.ref}'", flush=True)
    except Exception as exc:
        message = f"The model was saved but not registered: {exc}"
        print(f"[flextrain] {message}", flush=True)
        with contextlib.suppress(Exception):
            store.add_event(job_id, "model_registration_failed", message, level="warning")
    finally:
        if engine is not None:
            engine.dispose()


def _start_next_queued(store: JobStore, home: Path, database_url: str) -> None:
    """Hand this job's cores and GPUs to the next queued job, so the queue moves without
    a daemon. The job's result is recorded already: nothing here may change the exit
    code, so it never raises, and SIGTERM waits until the launch is written down."""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        if not store.queued_jobs():
            return  # the usual case: exit at once, without loading the service
        torch = sys.modules.get("torch")
        if torch is not None and torch.cuda.is_initialized():
            torch.cuda.empty_cache()  # the next job's GPU memory check sees it free
        from flextrain.service import tick_after_exit

        tick_after_exit(home, database_url)
    except Exception as exc:
        print(f"[flextrain] could not start queued jobs: {exc}", flush=True)
    finally:
        # A SIGTERM that came during the tick is delivered here; the run is over anyway.
        with contextlib.suppress(_Terminated):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM})


def _run(store: JobStore, args: argparse.Namespace, spec: RunSpec, rank: int | None) -> int:
    """Train and record how it ended: COMPLETED (model registered first), stopped on
    request, or stopped by a guard (DIVERGED, PAUSED); other errors go to the caller."""
    from flextrain.train.runner import run_training

    reporter = rank in (None, 0)
    try:
        run_training(spec, store, _STOP, home=Path(args.home))
    except JobCancelledError:
        return _stopped(store, args.job_id, reporter=rank is None)
    except (TrainingDivergedError, DiskPausedError) as exc:
        if reporter:  # every rank stopped at the same step; one records it
            _ended_by_guard(store, args.job_id, exc)
        return 0
    if not reporter:
        return 0
    # Before COMPLETED: whoever sees the job completed finds its model registered.
    _register_model(store, args.job_id, spec, args.database_url, Path(args.home))
    store.update(
        args.job_id,
        status=TrainingStatus.COMPLETED,
        progress=1.0,
        model_path=spec.model_dir,
        completed_at=datetime.now(UTC),
    )
    print(f"[flextrain] completed; model saved to {spec.model_dir}", flush=True)
    return 0


def _ended_by_guard(
    store: JobStore, job_id: str, exc: TrainingDivergedError | DiskPausedError
) -> None:
    """A run stopped by its health or disk guard: DIVERGED or PAUSED, with the guard's
    message (what happened, the checkpoint kept, what to change) and an event."""
    diverged = isinstance(exc, TrainingDivergedError)
    status = TrainingStatus.DIVERGED if diverged else TrainingStatus.PAUSED
    message = str(exc)
    print(f"[flextrain] {message}", flush=True)
    store.update(
        job_id, status=status, error_message=message[:4000], completed_at=datetime.now(UTC)
    )
    data = {"step": exc.step} if isinstance(exc, TrainingDivergedError) else {}
    store.add_event(
        job_id, status.value, message, level="error" if diverged else "warning", data=data
    )


def _stopped(store: JobStore, job_id: str, *, reporter: bool = True) -> int:
    """The run stopped on request: a cancel (already CANCELLED in the store) or a SIGTERM
    from elsewhere, e.g. a shutdown, which leaves it INTERRUPTED and resumable. A rank of
    a multi-process run leaves the status to the supervisor: its SIGTERM may come from
    torchrun stopping the survivors of a failed rank."""
    job = store.get(job_id)
    if job is not None and job.status == TrainingStatus.CANCELLED:
        print("[flextrain] cancelled by request", flush=True)
        return 0
    if not reporter:
        print("[flextrain] stopped by SIGTERM", flush=True)
        return 143
    message = "Stopped by SIGTERM (not a cancel from flextrain); resume continues it."
    print(f"[flextrain] {message}", flush=True)
    store.update(
        job_id,
        status=TrainingStatus.INTERRUPTED,
        error_message=message,
        completed_at=datetime.now(UTC),
    )
    store.add_event(job_id, "interrupted", message, level="warning")
    return 0


if __name__ == "__main__":
    sys.exit(main())
