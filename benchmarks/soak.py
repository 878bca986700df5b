"""Fault soak: kill workers and the server at random moments; no job is ever lost.

Two loops, bounded by time (run by hand or `make soak`; not part of the test suite):

1. **Worker kills.** A tiny job that checkpoints every few steps is started; at a
   random step its worker gets SIGKILL. The job must be marked `interrupted`, every
   checkpoint left must load (trainer state parses, weights read with safetensors),
   and `resume` must continue it; it may be killed again, and must in the end complete
   with every step logged once.
2. **Server kills.** `flextrain serve` is started, a job is started over REST, the
   server gets SIGKILL mid-run and a new server is started on the same home: the job
   must be found (still training, or interrupted and then resumed) and complete.

    python benchmarks/soak.py [--minutes 5] [--seed 0] [--no-docs]

Prints the counts and appends them to docs/reliability.md ("Faults during runs").
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

ROOT = Path(__file__).resolve().parent.parent
STEPS = 60
SAVE_EVERY = 5


def job_config(seed: int) -> Any:
    from flextrain.config.schemas import AdvancedTrainingConfig

    return AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type="full_training",
        max_steps=STEPS,
        learning_rate=2e-3,
        batch_size=8,
        max_length=48,
        logging_steps=1,
        num_threads=1,
        save_steps=SAVE_EVERY,
        save_total_limit=2,
        eval_split=0.0,
        gradient_checkpointing=False,
        monitor_interval=0.5,
        seed=seed,
    )


def checkpoints_load(checkpoint_dir: Path) -> tuple[int, int]:
    """(checkpoints checked, corrupt ones): every folder the resume could pick must load."""
    from safetensors.torch import load_file

    from flextrain.jobs.checkpoints import list_checkpoints

    checked = corrupt = 0
    for info in list_checkpoints(checkpoint_dir):
        checked += 1
        try:
            json.loads((info.path / "trainer_state.json").read_text())
            for weights in info.path.glob("*.safetensors"):
                load_file(str(weights))
        except Exception as exc:  # a corrupt checkpoint is what this soak looks for
            corrupt += 1
            print(f"  CORRUPT {info.path}: {exc}", flush=True)
    return checked, corrupt


def wait_step(service: Any, job_id: str, step: int, timeout: float = 120) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.require_job(job_id)
        if job.is_finished:
            return False
        if job.current_step >= step:
            return True
        time.sleep(0.05)
    raise RuntimeError(f"job {job_id} never reached step {step}")


def worker_kills(service: Any, rng: random.Random, until: float, counts: dict[str, int]) -> None:
    from flextrain.config.enums import TrainingStatus

    while time.monotonic() < until:
        job = service.create_job(job_config(rng.randrange(1000)))
        service.start_job(job.job_id)
        counts["jobs"] += 1
        kills_left = rng.randint(1, 3)
        while True:
            current = service.require_job(job.job_id)
            # (A job past its second-last step has no step left to be killed at.)
            if (
                kills_left
                and not current.is_finished
                and current.pid
                and (current.current_step + 1 <= STEPS - 1)
            ):
                target = rng.randint(current.current_step + 1, STEPS - 1)
                if wait_step(service, job.job_id, target):
                    pid = service.require_job(job.job_id).pid
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                        counts["worker_kills"] += 1
                        kills_left -= 1
                        time.sleep(0.3)
                        state = service.require_job(job.job_id).status
                        deadline = time.monotonic() + 30
                        while state != TrainingStatus.INTERRUPTED and time.monotonic() < deadline:
                            time.sleep(0.2)
                            state = service.require_job(job.job_id).status
                        if state != TrainingStatus.INTERRUPTED:
                            counts["not_interrupted"] += 1
                            print(f"  job {job.job_id} not interrupted: {state}", flush=True)
                        checked, corrupt = checkpoints_load(
                            service.environment(job.job_id).checkpoint_dir
                        )
                        counts["checkpoints_checked"] += checked
                        counts["corrupt_checkpoints"] += corrupt
                        service.resume_job(job.job_id)
                        counts["resumes"] += 1
                        continue
            done = service.wait(job.job_id, timeout=300, poll=0.2)
            if done.status == TrainingStatus.COMPLETED:
                steps = [r["step"] for r in service.metric_history(job.job_id) if "loss" in r]
                if steps == list(range(1, STEPS + 1)):
                    counts["completed"] += 1
                else:
                    counts["bad_history"] += 1
                    print(f"  job {job.job_id} logged steps {steps}", flush=True)
            else:
                counts["lost"] += 1
                print(f"  job {job.job_id} ended {done.status}: {done.error_message}", flush=True)
            break


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _serve(home: Path, port: int, env: dict[str, str]) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "flextrain", "serve", "--port", str(port)],
        env={**env, "FLEXTRAIN_HOME": str(home)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/api/health", timeout=1)
            return proc
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("the server did not start")


def _call(port: int, path: str, token: str, body: Any = None) -> Any:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=json.dumps(body).encode() if body is not None else None,
        method="POST" if body is not None or path.endswith(("/start", "/resume")) else "GET",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def server_kills(
    home: Path, rng: random.Random, until: float, counts: dict[str, int], env: dict[str, str]
) -> None:
    token = "soak-admin-token-0123456789abcdef"
    env = {**env, "FLEXTRAIN_ADMIN_TOKEN": token}
    while time.monotonic() < until:
        port = _free_port()
        server = _serve(home, port, env)
        body = job_config(rng.randrange(1000)).model_dump(mode="json")
        job = _call(port, "/api/training/jobs/advanced", token, body)
        _call(port, f"/api/training/jobs/{job['job_id']}/start", token)
        counts["server_jobs"] += 1
        target = rng.randint(2, STEPS - 5)
        deadline = time.monotonic() + 120
        while _call(port, f"/api/training/jobs/{job['job_id']}", token)["current_step"] < target:
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
        counts["server_kills"] += 1
        port = _free_port()
        server = _serve(home, port, {**env, "FLEXTRAIN_AUTO_RESUME": "1"})
        try:
            found = _call(port, f"/api/training/jobs/{job['job_id']}", token)
            counts["found_after_restart"] += 1
            deadline = time.monotonic() + 300
            while found["status"] not in ("completed", "failed", "cancelled"):
                if found["status"] == "interrupted":
                    found = _call(port, f"/api/training/jobs/{job['job_id']}/resume", token)
                    counts["resumes"] += 1
                if time.monotonic() > deadline:
                    break
                time.sleep(0.3)
                found = _call(port, f"/api/training/jobs/{job['job_id']}", token)
            if found["status"] == "completed":
                counts["completed"] += 1
            else:
                counts["lost"] += 1
                print(f"  server job {job['job_id']} ended {found['status']}", flush=True)
        finally:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    home = Path(tempfile.mkdtemp(prefix="flextrain-soak-")) / "home"
    models = home.parent / "models"
    env = {**os.environ, "FLEXTRAIN_MODELS_CACHE": str(models)}
    os.environ["FLEXTRAIN_MODELS_CACHE"] = str(models)

    from flextrain.service import TrainingService
    from flextrain.settings import Settings

    counts: dict[str, int] = dict.fromkeys(
        [
            "jobs",
            "worker_kills",
            "resumes",
            "completed",
            "lost",
            "not_interrupted",
            "bad_history",
            "checkpoints_checked",
            "corrupt_checkpoints",
            "server_jobs",
            "server_kills",
            "found_after_restart",
        ],
        0,
    )
    started = time.monotonic()
    budget = args.minutes * 60
    service = TrainingService(Settings(home=home, models_cache=models))
    try:
        print(f"[soak] worker kills for {0.6 * budget:.0f} s in {home}", flush=True)
        worker_kills(service, rng, started + 0.6 * budget, counts)
    finally:
        service.engine.dispose()
    print(f"[soak] server kills for the rest ({budget - (time.monotonic() - started):.0f} s)")
    server_kills(home, rng, started + budget, counts, env)
    elapsed = time.monotonic() - started
    summary = ", ".join(f"{k} {v}" for k, v in counts.items())
    print(f"[soak] {elapsed:.0f} s: {summary}", flush=True)
    if not args.no_docs:
        line = (
            f"- {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {elapsed / 60:.1f} min, seed {args.seed}: "
            f"{summary}.\n"
        )
        path = ROOT / "docs" / "reliability.md"
        text = path.read_text() if path.exists() else "# Reliability\n"
        if "## Faults during runs" not in text:
            text = text.rstrip("\n") + (
                "\n\n## Faults during runs\n\n`make soak` (benchmarks/soak.py): workers "
                "SIGKILLed at random steps (1-3 times per job, every checkpoint left checked "
                "to load, then resumed), and the API server SIGKILLed mid-run and restarted "
                "on the same home.\n\n"
            )
        path.write_text(_append_to_section(text, "## Faults during runs", line))
    bad = counts["lost"] + counts["not_interrupted"] + counts["bad_history"]
    bad += counts["corrupt_checkpoints"]
    sys.exit(1 if bad else 0)


def _append_to_section(text: str, heading: str, line: str) -> str:
    """`text` with `line` added at the end of the section under `heading` (before the
    next `## ` heading, or at the end of the file)."""
    start = text.index(heading)
    following = text.find("\n## ", start + len(heading))
    end = len(text) if following < 0 else following + 1
    section = text[start:end].rstrip("\n") + "\n" + line
    return text[:start] + section + ("\n" + text[end:] if following >= 0 else "")


if __name__ == "__main__":
    main()
