"""Job start through the fork server against a spawned worker, side by side.

Runs the same tiny job (3 steps of the built-in tiny Llama) through one service
repeatedly, alternating FLEXTRAIN_FORK_SERVER on and off, and reports the wall time
from start_job to COMPLETED and the CPU time the job's process used. The first job of
the fork server pays the import (the server starts then); it is reported apart.

    .venv/bin/python benchmarks/fork_server.py [--runs 5]

Appends a section to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.service import TrainingService
from flextrain.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
CONFIG = AdvancedTrainingConfig(
    model_id="flextrain/tiny-llama",
    dataset_id="demo/text",
    training_type=TrainingType.FULL_TRAINING,
    max_steps=3,
    batch_size=4,
    max_length=32,
    eval_split=0.0,
    num_threads=1,
    gradient_checkpointing=False,
)


def one_job(service: TrainingService) -> float:
    job = service.create_job(CONFIG)
    began = time.perf_counter()
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=300, poll=0.05)
    elapsed = time.perf_counter() - began
    if done.status != TrainingStatus.COMPLETED:
        raise SystemExit(f"job {job.job_id} ended {done.status}: {done.error_message}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=5)
    runs = parser.parse_args().runs
    times: dict[str, list[float]] = {"fork": [], "spawn": []}
    with tempfile.TemporaryDirectory() as tmp:
        base = Settings(home=Path(tmp) / "home", models_cache=Path(tmp) / "models")
        services = {
            "fork": TrainingService(base.model_copy(update={"fork_server": True})),
            "spawn": TrainingService(base.model_copy(update={"fork_server": False})),
        }
        one_job(services["spawn"])  # builds the tiny model once, for both
        first_fork = one_job(services["fork"])  # starts the server: the import is paid here
        for _ in range(runs):
            for name in ("spawn", "fork"):
                times[name].append(one_job(services[name]))
        for service in services.values():
            service.close()
    fork, spawn = statistics.median(times["fork"]), statistics.median(times["spawn"])
    lines = [
        "",
        f"## Job start: fork server against a spawned worker ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}; "
        f"`benchmarks/fork_server.py --runs {runs}`: the same 3-step tiny-Llama job, "
        "start_job to COMPLETED, alternated.",
        "",
        "| worker | median s | runs |",
        "|---|---|---|",
        f"| spawned (FLEXTRAIN_FORK_SERVER=0) | {spawn:.2f} | "
        + ", ".join(f"{t:.2f}" for t in times["spawn"])
        + " |",
        f"| fork of the server | {fork:.2f} | "
        + ", ".join(f"{t:.2f}" for t in times["fork"])
        + " |",
        "",
        f"Ratio spawned / forked: **{spawn / fork:.2f}x**; {spawn - fork:.2f} s saved per job. "
        f"The server's first job (server start and import included): {first_fork:.2f} s.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    with (ROOT / "docs" / "benchmarks.md").open("a") as fh:
        fh.write(text)


if __name__ == "__main__":
    main()
