"""Time to first step: `flextrain train` against a plain transformers script, same job.

Runs, alternately (A B A B ...), whole processes of

- `plain`: `python benchmarks/plain_train.py` (transformers + peft, by hand);
- `flextrain`: `flextrain train --config` with the same settings (the demo job:
  src/flextrain/demo.py, with --epochs), in one FLEXTRAIN_HOME that an untimed
  job has used first: a user's second job, database migrated and files cached;
- `fresh` (with --fresh): the same in a new FLEXTRAIN_HOME each run: a first job;
- `before` (with --before-src DIR): `flextrain` run from another copy of the source
  (DIR on PYTHONPATH, e.g. a copy of src/ from before a change), in its own home, so
  that a change is measured against its baseline in the same alternation.

The processes run with bytecode caches (written under the scratch folder by the
untimed warm-up runs, as an installed package has them), unless --no-bytecode-cache.
For each run: the wall time of the whole process (from just before it is started to
its exit), the training time (the Trainer's `train_runtime`: the plain script prints
it, flextrain stores it in the job's metrics) and the overhead, wall minus training.
Prints a Markdown table of medians (min, max).

With --phases, each process also records when its phases start and end (the
sitecustomize in benchmarks/phase_probe, on PYTHONPATH), and the median duration of
each phase is printed, with the timeline of the median flextrain run.

    python benchmarks/first_step.py [--repeat 3] [--epochs 2] [--fresh] [--phases]
                                    [--before-src DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent
PY = sys.executable

DEMO_KEYS = (
    "model_id",
    "dataset_id",
    "training_type",
    "learning_rate",
    "batch_size",
    "max_length",
    "gradient_checkpointing",
    "eval_split",
    "logging_steps",
    "save_total_limit",
    "run_name",
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "warmup_ratio",
)


def demo_config_file(folder: Path, epochs: float) -> Path:
    """The demo job's settings (those it sets) as a config file, with `epochs`."""
    from flextrain.demo import DEMO_CONFIG

    values = DEMO_CONFIG.model_dump(mode="json", include=set(DEMO_KEYS))
    values["num_epochs"] = epochs
    path = folder / "demo.json"
    path.write_text(json.dumps(values, indent=2))
    return path


def _run(argv: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Start time, wall seconds and output of one whole process."""
    start = time.time()
    done = subprocess.run(argv, env=env, capture_output=True, text=True)
    wall = time.time() - start
    if done.returncode != 0:
        raise RuntimeError(f"{argv} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
    return start, wall, done.stdout


def _record(log: Path, role: str, name: str, start: float, end: float) -> None:
    with log.open("a") as f:
        f.write(json.dumps({"role": role, "name": name, "start": start, "end": end}) + "\n")


def _latest_train_runtime(home: Path) -> float:
    with sqlite3.connect(home / "flextrain.db") as db:
        row = db.execute(
            "SELECT metrics_json, status FROM jobs ORDER BY created_at DESC LIMIT 1"
        ).fetchone()
    metrics, status = json.loads(row[0]), row[1]
    if status != "completed":
        raise RuntimeError(f"the job ended {status}")
    return float(metrics["train_runtime"])


def run_once(
    variant: str,
    work: Path,
    config: Path,
    epochs: float,
    env: dict[str, str],
    phase_log: Path,
    before_src: Path | None = None,
) -> dict[str, Any]:
    env = dict(env)
    if phase_log.name:
        env["FLEXTRAIN_PHASE_LOG"] = str(phase_log)
    if variant == "before":
        assert before_src is not None
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (env.get("PYTHONPATH"), str(before_src)) if p
        )
    if variant == "plain":
        out = Path(tempfile.mkdtemp(prefix="plain-", dir=work))
        start, wall, stdout = _run(
            [PY, str(HERE / "plain_train.py"), "--epochs", str(epochs), "--out", str(out)], env
        )
        report = json.loads(stdout.strip().splitlines()[-1])
        training = float(report["train_runtime"])
        shutil.rmtree(out, ignore_errors=True)
        if phase_log.name:  # the script's own stamps, as phases
            stamps = list(report["stamps"].items())
            for (_, begin), (name, end) in itertools.pairwise(stamps):
                _record(phase_log, "cli", f"plain: {name}", begin, end)
    else:
        fresh = variant == "fresh"
        home = Path(tempfile.mkdtemp(dir=work)) if fresh else work / f"home-{variant}"
        env["FLEXTRAIN_HOME"] = str(home)
        # `before` runs another copy of the source, whose entry module may differ from the
        # installed console script's: `python -m flextrain` works for every version.
        command = [PY, "-m", "flextrain"] if variant == "before" else [str(BIN / "flextrain")]
        start, wall, _ = _run([*command, "train", "--config", str(config)], env)
        training = _latest_train_runtime(home)
        if variant == "fresh":
            shutil.rmtree(home, ignore_errors=True)
    if phase_log.name:
        _record(
            phase_log, "cli", "process exited (seen by the benchmark)", start + wall, start + wall
        )
    return {"wall": wall, "training": training, "overhead": wall - training}


def _stats(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}–{max(values):.2f})"


def phase_table(logs: list[Path]) -> dict[str, list[float]]:
    """Per phase (role: name), its total seconds in each run (calls added up)."""
    per_run: list[dict[str, float]] = []
    for log in logs:
        totals: dict[str, float] = defaultdict(float)
        counts: dict[str, int] = defaultdict(int)
        for line in log.read_text().splitlines():
            r = json.loads(line)
            key = f"{r['role']}: {r['name']}"
            totals[key] += r["end"] - r["start"]
            counts[key] += 1
        per_run.append(
            {f"{k} (x{counts[k]})" if counts[k] > 1 else k: v for k, v in totals.items()}
        )
    keys = sorted({k for run in per_run for k in run})
    return {k: [run.get(k, 0.0) for run in per_run] for k in keys}


SUMMARY = (
    "Python start, import the CLI (plain: the script's imports)",
    "CLI: parse, build the config, import the service, open the store",
    "CLI: create_job (validate twice, inspect the model, memory estimate)",
    "CLI: start_job (validate again, scheduler tick, run spec, spawn)",
    "worker: Python start, flextrain's worker modules, store, PREPARING",
    "worker: import the training libraries (flextrain.train.runner)",
    "tokenizer, data, model, Trainer",
    "evaluation before training",
    "trainer.train() (train_runtime, its epoch evaluations and checkpoints)",
    "final evaluation",
    "save the model (plain: save_model; flextrain: also tokenizer, probe, metrics)",
    "worker: register the model, COMPLETED",
    "CLI: see the job completed (poll)",
    "exit (report, interpreter teardown)",
)


def summary(log: Path) -> dict[str, float]:
    """One run's seconds per phase of SUMMARY, from its phase log (missing phases: 0)."""
    rows = sorted(
        (json.loads(line) for line in log.read_text().splitlines()), key=lambda r: r["start"]
    )

    def first(name: str, role: str | None = None) -> dict[str, Any]:
        return next(r for r in rows if r["name"].startswith(name) and role in (None, r["role"]))

    begin = first("interpreter start", "cli")["start"]
    exited = first("process exited")["start"]
    out = dict.fromkeys(SUMMARY, 0.0)
    if any(r["name"].startswith("plain:") for r in rows):
        stamp = {
            r["name"][len("plain: ") :]: r["end"] for r in rows if r["name"].startswith("plain:")
        }
        out[SUMMARY[0]] = stamp["imports"] - begin
        out[SUMMARY[6]] = stamp["model"] - stamp["imports"]
        out[SUMMARY[8]] = stamp["train"] - stamp["model"]
        out[SUMMARY[10]] = stamp["save"] - stamp["train"]
        out[SUMMARY[13]] = exited - stamp["save"]
        return out
    imported = first("import flextrain.cli.main")["end"]
    create, start = first("TrainingService.create_job"), first("TrainingService.start_job")
    spawned = first("spawn")["end"]
    runner, run = first("import flextrain.train.runner"), first("run_training")
    train = first("Trainer.train")
    evaluations = [r for r in rows if r["name"] == "Trainer.evaluate" and r["role"] == "worker"]
    before = sum(r["end"] - r["start"] for r in evaluations if r["end"] <= train["start"])
    final = sum(r["end"] - r["start"] for r in evaluations if r["start"] >= train["end"])
    completed = first("status -> completed", "worker")["start"]
    followed = first("follow_job")["end"]
    out[SUMMARY[0]] = imported - begin
    out[SUMMARY[1]] = create["start"] - imported
    out[SUMMARY[2]] = create["end"] - create["start"]
    out[SUMMARY[3]] = spawned - start["start"]
    out[SUMMARY[4]] = runner["start"] - spawned
    out[SUMMARY[5]] = runner["end"] - runner["start"]
    out[SUMMARY[6]] = train["start"] - run["start"] - before
    out[SUMMARY[7]] = before
    out[SUMMARY[8]] = train["end"] - train["start"]
    out[SUMMARY[9]] = final
    out[SUMMARY[10]] = run["end"] - train["end"] - final
    out[SUMMARY[11]] = completed - run["end"]
    out[SUMMARY[12]] = followed - completed
    out[SUMMARY[13]] = exited - followed
    return out


def timeline(log: Path, start: float) -> list[str]:
    """Every recorded phase of one run, in start order, from the run's start."""
    rows = [json.loads(line) for line in log.read_text().splitlines()]
    rows.sort(key=lambda r: r["start"])
    return [
        f"| {r['start'] - start:7.2f} | {r['end'] - start:7.2f} | {r['end'] - r['start']:6.2f} "
        f"| {r['role']} | {r['name']} |"
        for r in rows
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="Runs of each variant.")
    parser.add_argument("--epochs", type=float, default=2, help="Epochs of the demo job.")
    parser.add_argument("--fresh", action="store_true", help="Also a fresh home per run.")
    parser.add_argument("--phases", action="store_true", help="Record phase time stamps.")
    parser.add_argument("--work", type=Path, help="Scratch folder (default: a temp folder).")
    parser.add_argument("--before-src", type=Path, help="Also run flextrain from this source.")
    parser.add_argument(
        "--no-bytecode-cache",
        action="store_true",
        help="Leave PYTHONDONTWRITEBYTECODE as it is (default: compile once, into --work).",
    )
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="flextrain-first-step-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1"}
    env.pop("FLEXTRAIN_DATABASE_URL", None)
    if not args.no_bytecode_cache:
        # As an installed package runs: modules compiled once (by the warm-up runs), into
        # a folder of this benchmark's, whatever PYTHONDONTWRITEBYTECODE says.
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    if args.phases:
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(HERE / "phase_probe"), env.get("PYTHONPATH")) if p
        )
    config = demo_config_file(work, args.epochs)
    variants = ["plain", "flextrain"]
    variants += (["fresh"] if args.fresh else []) + (["before"] if args.before_src else [])
    # Untimed: migrates the reused home and warms the file cache for every variant.
    print("  warm-up runs", file=sys.stderr)
    for variant in variants:
        run_once(variant, work, config, args.epochs, env, Path(""), args.before_src)
    results: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for i in range(args.repeat):
        for variant in variants:  # alternated: a busy spell hits every variant alike
            log = work / f"phases-{variant}-{i}.jsonl" if args.phases else Path("")
            start = time.time()
            result = run_once(variant, work, config, args.epochs, env, log, args.before_src)
            results[variant].append({**result, "log": log, "start": start})
            load = os.getloadavg()[0]
            print(
                f"  {variant} {i + 1}: wall {result['wall']:.2f} s, training "
                f"{result['training']:.2f} s, overhead {result['overhead']:.2f} s "
                f"(load {load:.2f})",
                file=sys.stderr,
            )
    print(
        f"\nPython {sys.version.split()[0]}, {os.cpu_count()} CPUs, {args.epochs:g} epochs; "
        f"median (min–max) of {args.repeat} runs each, seconds.\n"
    )
    print("| variant | wall | training (train_runtime) | overhead (wall − training) |")
    print("|---|---|---|---|")
    for variant in variants:
        rows = results[variant]
        print(
            f"| {variant} | {_stats([r['wall'] for r in rows])} | "
            f"{_stats([r['training'] for r in rows])} | {_stats([r['overhead'] for r in rows])} |"
        )
    plain = statistics.median(r["overhead"] for r in results["plain"])
    for variant in variants[1:]:
        extra = statistics.median(r["overhead"] for r in results[variant]) - plain
        print(f"\n{variant} overhead minus plain overhead (medians): {extra:.2f} s")
    if not args.phases:
        return
    for variant in variants:
        print(f"\nPhases of `{variant}`: median (min–max) seconds per run, calls added up.\n")
        print("| phase | seconds |")
        print("|---|---|")
        for key, values in phase_table([r["log"] for r in results[variant]]).items():
            print(f"| {key} | {_stats(values)} |")
    summaries = {v: [summary(r["log"]) for r in results[v]] for v in variants}
    print("\nWhere the time goes: median seconds per run, phases in order.\n")
    print("| phase | " + " | ".join(variants) + " |")
    print("|---|" + "---|" * len(variants))
    for phase in SUMMARY:
        cells = [f"{statistics.median(s[phase] for s in summaries[v]):.2f}" for v in variants]
        print(f"| {phase} | " + " | ".join(cells) + " |")
    cells = [f"{statistics.median(sum(s.values()) for s in summaries[v]):.2f}" for v in variants]
    print("| total (≈ wall) | " + " | ".join(cells) + " |")
    rows = sorted(results["flextrain"], key=lambda r: r["overhead"])
    median_run = rows[len(rows) // 2]
    print("\nTimeline of the median `flextrain` run, seconds from its start:\n")
    print("| start | end | seconds | process | phase |")
    print("|---|---|---|---|---|")
    print("\n".join(timeline(median_run["log"], median_run["start"])))


if __name__ == "__main__":
    main()
