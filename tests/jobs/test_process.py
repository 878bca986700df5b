from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil

from flextrain.jobs.process import (
    is_alive,
    process_start_time,
    spawn,
    terminate_tree,
)


def test_terminate_tree_stops_process_and_grandchildren(tmp_path: Path) -> None:
    # A parent that starts a child which ignores nothing: both must go.
    script = (
        "import subprocess, sys, time;"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        "time.sleep(60)"
    )
    proc = spawn([sys.executable, "-c", script], {}, tmp_path / "log.txt")
    deadline = time.monotonic() + 10
    while not psutil.Process(proc.pid).children() and time.monotonic() < deadline:
        time.sleep(0.05)
    child = psutil.Process(proc.pid).children()[0].pid
    started = process_start_time(proc.pid)
    assert is_alive(proc.pid, started)
    assert terminate_tree(proc.pid, started, timeout=3)
    time.sleep(0.2)
    assert not is_alive(proc.pid, started)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_is_alive_rejects_a_recycled_pid() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        started = process_start_time(proc.pid)
        assert started is not None
        assert is_alive(proc.pid, started)
        assert not is_alive(proc.pid, started - 100)  # same pid, different process
        assert not is_alive(None, None)
    finally:
        proc.kill()
        proc.wait()
