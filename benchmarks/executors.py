"""Executor overhead: the same tiny job through the local, Slurm and Ray executors.

Starts a throwaway two-node Slurm cluster and a local Ray head on this machine (as
`make test-cluster` does), then runs the same job (8 steps of the built-in tiny
Llama) through each executor in turn, round after round, and reports the wall time
from `start_job` to the first logged training step and to COMPLETED. The local
executor runs with its fork server, as it does by default: the strongest start a
user already has.

    .venv/bin/python benchmarks/executors.py [--rounds 3]

Needs Slurm's and munge's Debian packages and flextrain[ray] (make test-cluster
installs both). Appends a section to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.cluster.engines import RayHead, SlurmCluster, missing_slurm  # noqa: E402

from flextrain.config.enums import TrainingStatus, TrainingType  # noqa: E402
from flextrain.config.schemas import AdvancedTrainingConfig  # noqa: E402
from flextrain.jobs.store import TrainingJob  # noqa: E402
from flextrain.service import TrainingService  # noqa: E402
from flextrain.settings import Settings  # noqa: E402

CONFIG = AdvancedTrainingConfig(
    model_id="flextrain/tiny-llama",
    dataset_id="demo/text",
    training_type=TrainingType.FULL_TRAINING,
    max_steps=8,
    batch_size=4,
    max_length=32,
    logging_steps=1,
    eval_split=0.0,
    num_threads=1,
    gradient_checkpointing=False,
    monitor_interval=0.5,
)


def one_job(service: TrainingService) -> tuple[float, float]:
    """Seconds from start_job to the first logged step, and to COMPLETED."""
    job = service.create_job(CONFIG)
    began = time.perf_counter()
    service.start_job(job.job_id)
    first = None
    deadline = began + 600
    current: TrainingJob = service.require_job(job.job_id)
    next_tick = 0.0
    while not current.is_finished and time.perf_counter() < deadline:
        if first is None and current.current_step >= 1:
            first = time.perf_counter() - began
        next_tick = service.tick_while_queued(current, next_tick)
        time.sleep(0.05)
        current = service.require_job(job.job_id)
    done = time.perf_counter() - began
    if current.status != TrainingStatus.COMPLETED:
        raise SystemExit(f"{service.executor.name}: job ended {current.status.value}")
    return (first if first is not None else done), done


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    rounds = parser.parse_args().rounds
    why = missing_slurm()
    if why:
        raise SystemExit(f"Slurm is needed: {why}")
    ray = shutil.which("ray") or str(Path(sys.executable).with_name("ray"))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        slurm = SlurmCluster(work / "slurm").start()
        os.environ["SLURM_CONF"] = str(slurm.conf)
        head = RayHead(Path("/tmp") / f"ray-bench-{os.getpid()}", ray).start()
        try:
            base = Settings(home=work / "home", models_cache=work / "models")
            services: dict[str, TrainingService] = {
                "local": TrainingService(base),
                "slurm": TrainingService(base.model_copy(update={"executor": "slurm"})),
                "ray": TrainingService(
                    base.model_copy(update={"executor": "ray", "ray_address": head.address})
                ),
            }
            for service in services.values():
                one_job(service)  # warm-up: the built-in model, the tokenized data, caches
            first: dict[str, list[float]] = {name: [] for name in services}
            total: dict[str, list[float]] = {name: [] for name in services}
            for _ in range(rounds):
                for name, service in services.items():
                    to_first, to_end = one_job(service)
                    first[name].append(to_first)
                    total[name].append(to_end)
                    print(f"{name:6s} first step {to_first:6.2f} s   completed {to_end:6.2f} s")
        finally:
            head.stop()
            slurm.stop()
            shutil.rmtree(head.root, ignore_errors=True)
    report(first, total, rounds)


def report(first: dict[str, list[float]], total: dict[str, list[float]], rounds: int) -> None:
    med: Callable[[list[float]], float] = statistics.median
    local_first, local_total = med(first["local"]), med(total["local"])
    lines = [
        "",
        f"## Executor overhead: local vs Slurm vs Ray ({datetime.now(UTC):%Y-%m-%d})",
        "",
        f"Machine: {platform.node()}, {os.cpu_count()} cores, {platform.platform()}; "
        f"`benchmarks/executors.py --rounds {rounds}`. The same tiny job (8 steps, tiny "
        "Llama) through each executor in turn, after one warm-up job each; Slurm is a "
        "two-node test cluster (two slurmd) and Ray a local head, both on this machine. "
        "Medians of the rounds; overhead is the difference to local (fork server on).",
        "",
        "| executor | start to first step (s) | overhead (s) | start to completed (s) | "
        "overhead (s) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name in first:
        f, t = med(first[name]), med(total[name])
        lines.append(
            f"| {name} | {f:.2f} | {f - local_first:+.2f} | {t:.2f} | {t - local_total:+.2f} |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    with (ROOT / "docs" / "benchmarks.md").open("a") as out:
        out.write(text)


if __name__ == "__main__":
    main()
