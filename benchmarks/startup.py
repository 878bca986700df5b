"""Start-up times of flextrain's entry points: the median of several fresh processes each.

Prints a Markdown table (no assertion; run by hand, see docs/benchmarks.md):

- `flextrain --help` and `flextrain jobs list` (an empty home, migrated by one
  untimed run first, so the timed runs see the usual start-up);
- `import flextrain`, and importing `flextrain.api.app` plus `create_app()`;
- the worker: importing its module, importing what training needs
  (`flextrain.train.runner`), and the floor a plain script pays for the same
  libraries (`import torch, transformers, peft, datasets`);
- with `--worker`, a real job (the built-in tiny Llama, logging every step, no
  held-out evaluation before training): from the worker process's start to its
  first logged training step, both as the store records them.

    python benchmarks/startup.py [--repeat 5] [--worker]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

BIN = Path(sys.executable).parent
CLI = str(BIN / "flextrain")
PY = sys.executable


def _timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return time.perf_counter() - start


def _median(run: Callable[[], float], repeat: int) -> tuple[float, float, float]:
    times = [run() for _ in range(repeat)]
    return statistics.median(times), min(times), max(times)


def _python(code: str) -> list[str]:
    return [PY, "-c", code]


def measure(repeat: int, env: dict[str, str]) -> list[tuple[str, tuple[float, float, float]]]:
    cases: list[tuple[str, list[str]]] = [
        ("`flextrain --help`", [CLI, "--help"]),
        ("`flextrain jobs list` (empty home)", [CLI, "jobs", "list"]),
        ("`import flextrain`", _python("import flextrain")),
        (
            "import `flextrain.api.app` + `create_app()`",
            _python("from flextrain.api.app import create_app; create_app()"),
        ),
        ("worker: import `flextrain.train.worker`", _python("import flextrain.train.worker")),
        (
            "worker: import `flextrain.train.runner` (training libraries)",
            _python("import flextrain.train.runner"),
        ),
        (
            "plain script: `import torch, transformers, peft, datasets`",
            _python("import torch, transformers, peft, datasets"),
        ),
    ]
    # One untimed run creates and migrates the database, and warms the file cache.
    subprocess.run([CLI, "jobs", "list"], env=env, check=True, stdout=subprocess.DEVNULL)
    results = []
    for label, argv in cases:
        results.append((label, _median(partial(_timed, argv, env), repeat)))
        print(f"  measured {label}", file=sys.stderr)
    return results


def worker_first_step(repeat: int, env: dict[str, str]) -> tuple[float, float, float]:
    """Seconds from the worker process's start to its first logged training step."""
    os.environ.update(env)
    from sqlalchemy import select

    from flextrain.config.enums import TrainingType
    from flextrain.config.schemas import AdvancedTrainingConfig
    from flextrain.db import as_utc, make_sessionmaker
    from flextrain.jobs.store import MetricRecord
    from flextrain.models.builtin import TINY_LLAMA_ID
    from flextrain.service import TrainingService

    service = TrainingService()
    sessions = make_sessionmaker(service.engine)
    times = []
    for i in range(repeat):
        cfg = AdvancedTrainingConfig(
            model_id=TINY_LLAMA_ID,
            dataset_id="demo/text",
            training_type=TrainingType.FULL_TRAINING,
            num_epochs=1,
            batch_size=8,
            max_length=48,
            logging_steps=1,
            eval_split=0.0,  # no evaluation before the first step: start-up only
            gradient_checkpointing=False,
            run_name=f"startup-{i}",
        )
        job = service.start_job(service.create_job(cfg).job_id)
        deadline = time.monotonic() + 600
        first = None
        while first is None and time.monotonic() < deadline:
            with sessions() as session:
                first = session.scalar(
                    select(MetricRecord.created_at)
                    .where(MetricRecord.job_id == job.job_id)
                    .order_by(MetricRecord.id)
                    .limit(1)
                )
            job = service.require_job(job.job_id)
            if job.is_finished and first is None:
                raise RuntimeError(f"job {job.job_id} ended as {job.status}: {job.error_message}")
            time.sleep(0.25)  # the times come from the store, not from this loop
        if first is None:
            raise RuntimeError(f"job {job.job_id} logged no step in 10 minutes")
        started = service.store.pid_started_at(job.job_id)
        assert started is not None
        first_at = as_utc(first)  # SQLite hands back naive UTC
        assert first_at is not None
        times.append(first_at.timestamp() - started)
        service.cancel_job(job.job_id)
        print(f"  worker run {i + 1}: {times[-1]:.2f} s", file=sys.stderr)
    return statistics.median(times), min(times), max(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="Fresh processes per case.")
    parser.add_argument("--worker", action="store_true", help="Also time a real job's start.")
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="flextrain-startup-")
    env = {
        **os.environ,
        "FLEXTRAIN_HOME": home,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    env.pop("FLEXTRAIN_DATABASE_URL", None)
    rows = measure(args.repeat, env)
    if args.worker:
        rows.append(
            ("worker: process start to first logged step", worker_first_step(args.repeat, env))
        )
    print(f"Python {sys.version.split()[0]}, {os.cpu_count()} CPUs; median of {args.repeat}.\n")
    print("| entry point | median s | min s | max s |")
    print("|---|---|---|---|")
    for label, (median, low, high) in rows:
        print(f"| {label} | {median:.3f} | {low:.3f} | {high:.3f} |")


if __name__ == "__main__":
    main()
