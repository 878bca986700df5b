"""API load: many clients polling a server that has 1,000 jobs while one of them trains.

What a team's dashboards do to a training machine: each open page polls the job it
shows and the job list. The question is whether the API stays fast and whether the
polling slows the training down.

1. A fresh home gets 1,000 jobs in its store (pending, completed with metrics,
   failed, cancelled: rows like real ones, inserted through the job store) and
   `flextrain serve` is started on it (the real server, uvicorn, one process).
2. One job is started over REST: a tiny Llama that trains for as long as the run
   lasts, logging every step.
3. Three phases of `--seconds` each: quiet, under load, quiet again. Under load,
   `--clients` clients (asyncio + httpx, in this process) each loop: GET the
   training job, GET the job list (newest `--page` of the 1,000, with the total), then
   sleep `--poll` seconds (1 s; the web page polls every 2 s and shows 20 jobs a page,
   `--page`; `--poll 0` saturates).
4. Reported: requests, errors (any non-200 or exception), latency p50/p95/p99/max
   per route and overall; the training job's steps per second in each phase (its
   `current_step` read at each phase's ends), and the drop under load against the
   mean of the two quiet phases (one before, one after, so drift is not counted as
   load); the CPU the server, the worker and the clients used under load.
   With `--reserved-cpus`, the clients run on the server's cores: they stand in for
   browsers on other machines and must not take the training's core.

    python benchmarks/load.py [--clients 50] [--seconds 30] [--poll 1.0] [--no-docs]

Prints a table and appends it to docs/reliability.md ("Load"). It measures, it
asserts nothing; run it on a quiet machine (the training job and the server share
its cores with the clients).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))

from soak import _call, _free_port, _serve  # noqa: E402

TOKEN = "load-admin-token-0123456789abcdef"
STATUSES = ("pending", "completed", "failed", "cancelled")


def fill_store(home: Path, count: int) -> None:
    """`count` job rows of the four finished-or-waiting kinds, as the store writes them."""
    from flextrain.config.enums import TrainingMode, TrainingStatus
    from flextrain.service import TrainingService
    from flextrain.settings import Settings

    service = TrainingService(Settings(home=home))
    base = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": "fine_tuning",
        "num_epochs": 1,
        "batch_size": 8,
        "learning_rate": 5e-5,
        "max_length": 128,
    }
    for i in range(count):
        job_id = f"{i:012x}"
        status = STATUSES[i % len(STATUSES)]
        service.store.create(
            job_id=job_id,
            mode=TrainingMode.ADVANCED,
            config={**base, "run_name": f"load-{i}", "seed": i},
            output_dir=str(home / "jobs" / job_id / "output"),
            log_path=str(home / "jobs" / job_id / "logs" / "train.log"),
        )
        if status != "pending":
            service.store.update(
                job_id,
                status=TrainingStatus(status),
                current_step=100,
                total_steps=100,
                metrics={"train_loss": 2.0 + (i % 7) / 10, "eval_loss": 2.1},
                completed_at=datetime.now(UTC),
            )
    service.engine.dispose()


def start_training(port: int, threads: int | None = None) -> str:
    body: dict[str, object] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": "full_training",
        "max_steps": 100_000,
        "batch_size": 8,
        "max_length": 64,
        "logging_steps": 1,
        "save_steps": 1_000_000,
        "eval_split": 0.0,
        "evaluate_before_training": False,
    }
    if threads:
        body["num_threads"] = threads
    job = _call(port, "/api/training/jobs/advanced", TOKEN, body)
    _call(port, f"/api/training/jobs/{job['job_id']}/start", TOKEN)
    return str(job["job_id"])


def current_step(port: int, job_id: str) -> tuple[int, float]:
    """The job's step now, and when that was read."""
    return int(_call(port, f"/api/training/jobs/{job_id}", TOKEN)["current_step"]), time.time()


def cpu_seconds(server_pid: int, job_id: str, port: int) -> dict[str, float]:
    """CPU time so far of the server (itself, not the worker it launched), the training
    worker and this process (the clients)."""
    import psutil

    worker = _call(port, f"/api/training/jobs/{job_id}", TOKEN)["pid"]
    out = {}
    for name, pid in (("server", server_pid), ("worker", worker), ("clients", os.getpid())):
        times = psutil.Process(pid).cpu_times()
        out[name] = times.user + times.system
    return out


def rate(start: tuple[int, float], end: tuple[int, float]) -> float:
    return (end[0] - start[0]) / (end[1] - start[1])


async def clients(
    port: int, job_id: str, count: int, seconds: float, poll: float, page: int = 20
) -> dict[str, list[float] | int]:
    import httpx

    latencies: dict[str, list[float]] = {"job": [], "list": []}
    errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=count, max_keepalive_connections=count)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", headers=headers, limits=limits, timeout=30
    ) as http:

        async def one(index: int) -> None:
            nonlocal errors
            await asyncio.sleep(poll * index / count)  # pages were opened at different times
            while time.monotonic() < deadline:
                for name, path in (
                    ("job", f"/api/training/jobs/{job_id}"),
                    ("list", f"/api/training/jobs?limit={page}"),
                ):
                    started = time.perf_counter()
                    try:
                        answer = await http.get(path)
                        ok = answer.status_code == 200
                    except httpx.HTTPError:
                        ok = False
                    latencies[name].append(time.perf_counter() - started)
                    errors += not ok
                if poll:
                    await asyncio.sleep(poll)

        await asyncio.gather(*(one(i) for i in range(count)))
    return {**latencies, "errors": errors}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument(
        "--page", type=int, default=20, help="jobs per list request (the web page's: 20)"
    )
    parser.add_argument(
        "--train-threads", type=int, default=None, help="the job's num_threads (default: its own)"
    )
    parser.add_argument(
        "--reserved-cpus", type=int, default=0, help="FLEXTRAIN_RESERVED_CPUS of the server"
    )
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="flextrain-load-"))
    env = {
        **os.environ,
        "FLEXTRAIN_ADMIN_TOKEN": TOKEN,
        "FLEXTRAIN_HOME": str(home),
        "FLEXTRAIN_RESERVED_CPUS": str(args.reserved_cpus),
    }
    print(f"[load] filling {args.jobs} jobs in {home}", flush=True)
    fill_store(home, args.jobs)
    port = _free_port()
    server = _serve(home, port, env)
    try:
        job_id = start_training(port, args.train_threads)
        while current_step(port, job_id)[0] < 5:
            time.sleep(0.5)  # past start-up: the phases compare steady training
        marks = [current_step(port, job_id)]
        print(f"[load] job {job_id} training; quiet {args.seconds:.0f} s", flush=True)
        time.sleep(args.seconds)
        marks.append(current_step(port, job_id))
        print(f"[load] {args.clients} clients for {args.seconds:.0f} s", flush=True)
        before = cpu_seconds(server.pid, job_id, port)
        if args.reserved_cpus and hasattr(os, "sched_setaffinity"):
            # The clients stand in for browsers elsewhere: keep them off training's cores.
            os.sched_setaffinity(0, list(range(args.reserved_cpus)))
        result = asyncio.run(
            clients(port, job_id, args.clients, args.seconds, args.poll, args.page)
        )
        marks.append(current_step(port, job_id))
        after = cpu_seconds(server.pid, job_id, port)
        print(f"[load] quiet {args.seconds:.0f} s", flush=True)
        time.sleep(args.seconds)
        marks.append(current_step(port, job_id))
        _call(port, f"/api/training/jobs/{job_id}/cancel", TOKEN, body={})
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)

    rates = [rate(marks[i], marks[i + 1]) for i in range(3)]
    quiet = (rates[0] + rates[2]) / 2
    drop = 1 - rates[1] / quiet if quiet else float("nan")
    job_lat, list_lat = result["job"], result["list"]
    assert isinstance(job_lat, list)
    assert isinstance(list_lat, list)
    every = job_lat + list_lat
    rows = [
        ("job status", job_lat),
        (f"job list ({args.page} of {args.jobs:,})", list_lat),
        ("all", every),
    ]
    lines = [
        "| route | requests | p50 ms | p95 ms | p99 ms | max ms |",
        "|---|---|---|---|---|---|",
    ]
    for name, values in rows:
        lines.append(
            f"| {name} | {len(values):,} | {1000 * percentile(values, 0.5):.1f} | "
            f"{1000 * percentile(values, 0.95):.1f} | {1000 * percentile(values, 0.99):.1f} | "
            f"{1000 * max(values):.1f} |"
        )
    summary = (
        f"{args.clients} clients, poll {args.poll:g} s, {args.seconds:.0f} s: "
        f"{len(every):,} requests ({len(every) / args.seconds:.0f}/s), "
        f"{result['errors']} errors, p99 {1000 * percentile(every, 0.99):.1f} ms; training "
        f"{rates[0]:.2f} / {rates[1]:.2f} / {rates[2]:.2f} steps/s (quiet / load / quiet), "
        f"drop {100 * drop:.1f}%"
    )
    used = {k: (after[k] - before[k]) / args.seconds for k in after}
    summary += (
        f"; CPU under load (cores): server {used['server']:.2f}, training worker "
        f"{used['worker']:.2f}, clients {used['clients']:.2f}; server CPU per request "
        f"{1000 * (after['server'] - before['server']) / max(len(every), 1):.1f} ms"
    )
    print("\n".join(lines))
    print(summary)
    if args.no_docs:
        return
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    block = [
        "",
        f"### Load run {stamp} ({machine})",
        "",
        f"`python benchmarks/load.py --clients {args.clients} --seconds {args.seconds:g} "
        f"--poll {args.poll:g} --page {args.page} --reserved-cpus {args.reserved_cpus}"
        + (f" --train-threads {args.train_threads}" if args.train_threads else "")
        + f"` with {args.jobs:,} jobs in the store.",
        "",
        *lines,
        "",
        summary + ".",
        "",
    ]
    with (ROOT / "docs" / "reliability.md").open("a") as docs:
        docs.write("\n".join(block))
    print(json.dumps({"rates": rates, "drop": drop, "errors": result["errors"]}))


if __name__ == "__main__":
    main()
