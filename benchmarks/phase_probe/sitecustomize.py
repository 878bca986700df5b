"""Phase time stamps for benchmarks/first_step.py, in every Python process it starts.

Put on PYTHONPATH together with FLEXTRAIN_PHASE_LOG=FILE: each process (the CLI, the
worker) then appends one JSON line per call of the functions named in PHASES, with
its start and end (time.time()), plus its own start (from /proc) and its exit. The
functions are wrapped right after their module is first imported, before anything
imports them by name. Benchmark-only: flextrain itself knows nothing of this.
"""

from __future__ import annotations

import atexit
import functools
import importlib.abc
import importlib.machinery
import json
import os
import sys
import time
from typing import Any

LOG = os.environ.get("FLEXTRAIN_PHASE_LOG")

# module -> attribute paths ("Class.method") whose calls are timed.
PHASES: dict[str, list[str]] = {
    "flextrain.cli.common": ["get_service"],
    "flextrain.cli.follow": ["follow_job"],
    "flextrain.jobs.control": [
        "JobControl.create_job",
        "JobControl._refuse_unrunnable",
        "JobControl.start_job",
    ],
    "flextrain.estimate.plan": [
        "Planner.validate",
        "Planner.choose_checkpointing",
        "Planner._memory_facts",
        "Planner._inspect_uncached",
    ],
    "flextrain.jobs.launcher": ["Launcher.build_spec", "Launcher.launch"],
    "flextrain.jobs.executor": ["LocalExecutor._confine", "LocalExecutor.submit"],
    "flextrain.jobs.outputs": ["output_dir_taken"],
    "flextrain.service": ["TrainingService.hardware"],
    "flextrain.data.manager": ["TrainingDataManager.get"],
    "flextrain.jobs.scheduler": ["Scheduler.tick"],
    "flextrain.jobs.process": ["spawn"],
    "flextrain.train.runner": ["run_training"],
    "flextrain.train.save": ["output_probe"],
    # Trainer is transformers' class, wrapped once here (the module that subclasses it).
    "flextrain.train.health": [
        "Trainer.evaluate",
        "Trainer.train",
        "Trainer.save_model",
    ],
    "flextrain.train.trainer": ["FlexTrainer.__init__"],
    "flextrain.train.model": ["load_tokenizer", "build_model"],
    "flextrain.train.data": ["load_splits"],
    # The worker runs as __main__ (python -m), so its own functions cannot be wrapped:
    # what they call can.
    "flextrain.train.monitor": ["JobMonitor.stop"],
    "flextrain.models.registry": ["ModelRegistry.register_trained"],
    "flextrain.jobs.environment": ["TrainingEnvironmentManager.setup"],
}
# Modules whose import is timed (first import, all of it: what it imports too).
IMPORTS = {"flextrain.cli.main", "flextrain.train.runner"}
STORE = "flextrain.jobs.store"


def _process_start() -> float:
    """This process's start as a time.time() value (to the kernel's 10 ms tick)."""
    with open("/proc/self/stat") as f:
        ticks = int(f.read().rpartition(")")[2].split()[19])
    with open("/proc/uptime") as f:
        uptime = float(f.read().split()[0])
    return time.time() - (uptime - ticks / os.sysconf("SC_CLK_TCK"))


def _role() -> str:
    # Under `python -m`, sys.argv[0] is "-m" until runpy has found the module.
    return "worker" if "--job-id" in sys.argv else "cli"


def _write(name: str, start: float, end: float) -> None:
    assert LOG
    record = {"pid": os.getpid(), "role": _role(), "name": name, "start": start, "end": end}
    with open(LOG, "a") as f:
        f.write(json.dumps(record) + "\n")


def _timed(name: str, fn: Any) -> Any:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.time()
        try:
            return fn(*args, **kwargs)
        finally:
            _write(name, start, time.time())

    return wrapper


def _status_stamps(update: Any) -> Any:
    """JobStore.update, also stamping each status it writes (an instant)."""

    @functools.wraps(update)
    def wrapper(self: Any, job_id: str, *args: Any, **values: Any) -> Any:
        result = update(self, job_id, *args, **values)
        if "status" in values:
            now = time.time()
            _write(f"status -> {getattr(values['status'], 'value', values['status'])}", now, now)
        return result

    return wrapper


def _patch(module: Any) -> None:
    if module.__name__ == "flextrain.jobs.store":
        module.JobStore.update = _status_stamps(module.JobStore.update)
    for path in PHASES.get(module.__name__, []):
        owner_name, _, attr = path.rpartition(".")
        owner = getattr(module, owner_name, None) if owner_name else module
        if owner is None or not hasattr(owner, attr):
            # Renamed or moved since this list was written: say so, do not break the run.
            now = time.time()
            _write(f"not found: {module.__name__}.{path}", now, now)
            continue
        fn = owner.__dict__.get(attr) if isinstance(owner, type) else getattr(owner, attr)
        if fn is None:  # inherited: wrap the base class's method on its own class
            fn = getattr(owner, attr)
        setattr(owner, attr, _timed(path, fn))


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in PHASES and fullname not in IMPORTS and fullname != STORE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module: Any) -> None:
            start = time.time()
            exec_module(module)
            if fullname in IMPORTS:
                _write(f"import {fullname}", start, time.time())
            _patch(module)

        spec.loader.exec_module = exec_and_patch  # type: ignore[method-assign]
        return spec


if LOG:
    _start = _process_start()
    _write("interpreter start (to sitecustomize)", _start, time.time())
    sys.meta_path.insert(0, _Finder())
    atexit.register(
        lambda: _write(
            f"exit (atexit; torch {'loaded' if 'torch' in sys.modules else 'not loaded'})",
            time.time(),
            time.time(),
        )
    )
