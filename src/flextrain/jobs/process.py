"""Starting and stopping worker processes.

The launch command is built by a pure function so it can be tested without
launching anything; supervision goes through psutil, matching the process
start time so a recycled pid is never mistaken for our worker.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import threading
from pathlib import Path

import psutil


def build_worker_command(
    *,
    job_id: str,
    database_url: str,
    home: Path,
    python: str | None = None,
    base_env: dict[str, str] | None = None,
) -> tuple[list[str], dict[str, str]]:
    """Argument vector and environment for the worker process of `job_id`."""
    argv = [
        python or sys.executable,
        "-m",
        "flextrain.train.worker",
        "--job-id",
        job_id,
        "--database-url",
        database_url,
        "--home",
        str(home),
    ]
    env = dict(os.environ if base_env is None else base_env)
    env.update(
        {
            "PYTHONUNBUFFERED": "1",
            # The tokenizer's thread pool would compete with torch for the same cores.
            "TOKENIZERS_PARALLELISM": "false",
            "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
            # Progress bars of file writes only clutter the job log.
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }
    )
    return argv, env


def spawn(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    """Start the worker in its own session (so cancel can stop its whole group)."""
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
    # Reap the child when it exits so it never lingers as a zombie in a long-lived parent.
    threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
    return proc


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
