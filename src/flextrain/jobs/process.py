"""Starting and stopping worker processes.

The command itself is built in `flextrain.jobs.launch`; supervision goes through
psutil, matching the process start time so a recycled pid is never mistaken for
our worker.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path

import psutil


def spawn(
    argv: list[str],
    env: dict[str, str],
    log_path: Path,
    on_exit: Callable[[int], None] | None = None,
) -> subprocess.Popen[bytes]:
    """Start the worker in its own session (so cancel can stop its whole group).

    `on_exit` gets the exit status (negative: killed by that signal) when the worker
    ends while this process still runs: the one account of how it died that outlives
    it, since a worker killed by the kernel reports nothing itself.
    """
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    _reap_in_background(proc, on_exit)
    return proc


def _reap_in_background(
    proc: subprocess.Popen[bytes], on_exit: Callable[[int], None] | None
) -> None:
    """Wait for the child in a thread, so it never lingers as a zombie in a long-lived
    parent, and report its exit status to `on_exit`."""

    def reap() -> None:
        returncode = proc.wait()
        if on_exit is not None:
            on_exit(returncode)

    threading.Thread(target=reap, name=f"reap-{proc.pid}", daemon=True).start()


def process_start_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def is_alive(pid: int | None, started_at: float | None) -> bool:
    """True if `pid` still runs and is the same process that was started."""
    if pid is None:
        return False
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        return started_at is None or abs(proc.create_time() - started_at) < 1.0
    except psutil.Error:
        return False


def terminate_tree(pid: int | None, started_at: float | None, timeout: float = 5.0) -> bool:
    """Stop the worker and every child: SIGTERM to the worker, then SIGKILL to what is left
    of the tree after `timeout` seconds.

    Only the worker gets SIGTERM: it saves a checkpoint and stops its own children
    (dataloader workers), which would otherwise die under it mid-step. Returns True
    when nothing of the tree is left running.
    """
    if not is_alive(pid, started_at):
        return True
    assert pid is not None
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return True
    with contextlib.suppress(psutil.Error):
        root.terminate()
    psutil.wait_procs([root], timeout=timeout)
    alive = [p for p in procs if _running(p)]
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    _, still = psutil.wait_procs(alive, timeout=timeout)
    return not still


def _running(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class WarmWorker:
    """A worker process started before its job exists, to be handed that job later.

    A worker spends about 4 s importing torch, transformers and peft before it can do
    anything; a front end spends as long validating the job first (the first job of a
    model inspects it, which imports the same libraries). Started when the front end
    starts validating, the worker imports meanwhile, then waits on its stdin; `take`
    gives it the command line, environment and log of the job `spawn` would have
    started, and it runs the job as that fresh process would (see
    `flextrain.train.worker`). Not taken, it is killed by `discard`.
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def take(
        self,
        worker_args: list[str],
        env: dict[str, str],
        log_path: Path,
        on_exit: Callable[[int], None] | None = None,
    ) -> subprocess.Popen[bytes] | None:
        """Hand over the job whose worker arguments (after `-m flextrain.train.worker`)
        are `worker_args`; the process, or None when this one cannot run it any more
        (it exited, or was taken) and the caller spawns a fresh one."""
        proc, self.proc = self.proc, None
        if proc is None or proc.stdin is None or proc.poll() is not None:
            return None
        log_path.parent.mkdir(parents=True, exist_ok=True)
        order = {"args": worker_args, "env": env, "log": str(log_path)}
        try:
            proc.stdin.write(json.dumps(order).encode() + b"\n")
            proc.stdin.close()
        except OSError:  # it died meanwhile
            with contextlib.suppress(OSError):
                proc.kill()
            return None
        _reap_in_background(proc, on_exit)
        return proc

    def discard(self) -> None:
        """Stop the process if no job was handed to it (it holds ~0.5 GB of libraries)."""
        proc, self.proc = self.proc, None
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(OSError):
                proc.kill()
            proc.wait()


# A warm worker the `flextrain` entry point started before its own imports (entry.py),
# for the executor's `prepare` to take.
_prestarted: WarmWorker | None = None


def prestart_warm_worker(argv: list[str], env: dict[str, str]) -> None:
    """Start the next job's warm worker now, at the very start of a command that is about
    to start one job: 0.5 s sooner than the command could once it has imported its own
    code. Killed when this process exits if no executor took it."""
    global _prestarted
    if _prestarted is None:
        _prestarted = WarmWorker(argv, env)
        atexit.register(_prestarted.discard)


def take_prestarted() -> WarmWorker | None:
    """The worker `prestart_warm_worker` started, once; None without one."""
    global _prestarted
    worker, _prestarted = _prestarted, None
    return worker


class ForkServer:
    """A process that has imported the training libraries once and starts each job as a
    fork of itself (`flextrain.train.worker --fork-server`).

    A spawned worker spends some 5 s of CPU importing torch, transformers and peft before
    its first step; a fork has them already. One server serves every job this process
    launches (any home: the order carries the job's arguments and environment), so a
    long-lived API server, or a test session, pays the import once. A fork is the job's
    process as a spawned one would be: its own session, its log, its environment; the
    server reaps it and records how it ended, as `spawn`'s reaper does.
    """

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            argv,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None

    def launch(
        self, worker_args: list[str], env: dict[str, str], log_path: Path, job_dir: Path
    ) -> int | None:
        """Start the job whose worker arguments (after `-m flextrain.train.worker`) are
        `worker_args`; its pid, or None when the server cannot (it died: the caller
        spawns the job instead)."""
        log_path.parent.mkdir(parents=True, exist_ok=True)
        order = {"args": worker_args, "env": env, "log": str(log_path), "job_dir": str(job_dir)}
        with self._lock:
            if not self.alive or self.proc.stdin is None or self.proc.stdout is None:
                return None
            try:
                self.proc.stdin.write(json.dumps(order).encode() + b"\n")
                self.proc.stdin.flush()
                answer = self.proc.stdout.readline()
            except OSError:
                return None
        if not answer:
            return None
        return int(json.loads(answer)["pid"])

    def close(self) -> None:
        """Stop serving: the server exits once stdin closes; its running jobs go on."""
        with self._lock:
            if self.proc.stdin is not None:
                with contextlib.suppress(OSError):
                    self.proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=5)


_FORK_SERVERS: dict[str, ForkServer] = {}
_FORK_SERVERS_LOCK = threading.Lock()


def shared_fork_server(argv: list[str], env: dict[str, str]) -> ForkServer:
    """This process's fork server for `argv`, started on first use (and again if it
    died); closed when this process exits."""
    key = json.dumps(argv)
    with _FORK_SERVERS_LOCK:
        server = _FORK_SERVERS.get(key)
        if server is None or not server.alive:
            server = ForkServer(argv, env)
            _FORK_SERVERS[key] = server
            atexit.register(server.close)
        return server
