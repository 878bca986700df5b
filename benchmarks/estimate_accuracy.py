"""Predicted vs measured peak memory and step time over a grid of configurations.

Each configuration is measured in a fresh process (flextrain.train.probe_worker,
the same model-building code a job uses), then compared with the analytic
estimate and with the probe-calibrated estimate. Run by hand:

    python benchmarks/estimate_accuracy.py [--out results.json] [--reuse results.json]
        [--probe] [--previous earlier.json]

`--previous` adds an earlier run's measurements of the same grid as repeats: the
measured value is then the mean of the runs, and their spread is printed, since
peak RSS of one configuration varies between fresh processes on CPU.

On a GPU machine the measured value is torch.cuda.max_memory_reserved; on CPU
the process's peak resident memory.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BENCH_DIR = Path(os.environ.get("FLEXTRAIN_BENCH_DIR", "/tmp/flextrain-bench"))


def medium_llama(tiny: Path) -> Path:
    """The built-in decoder family at a second size (~25M parameters)."""
    folder = BENCH_DIR / "medium-llama"
    if (folder / "config.json").exists():
        return folder
    from transformers import AutoTokenizer

    from flextrain.models.builtin import save_random_llama

    return save_random_llama(
        folder,
        AutoTokenizer.from_pretrained(tiny),
        hidden=512,
        intermediate=1376,
        layers=8,
        heads=8,
        kv_heads=4,
        max_positions=1024,
    )


def minilm_for_bench() -> Path:
    """Packaged MiniLM, or (where the package is absent, e.g. a GPU box) the same
    architecture built from its config with random weights: memory and speed do
    not depend on the weights' values."""
    try:
        from flextrain.models.builtin import minilm_path

        return minilm_path()
    except ImportError:
        pass
    source = Path(os.environ.get("FLEXTRAIN_BENCH_MINILM_CONFIG", ".bench/minilm-config"))
    folder = BENCH_DIR / "minilm-arch"
    if not (folder / "config.json").exists():
        import torch
        from transformers import AutoTokenizer, BertConfig, BertModel

        torch.manual_seed(0)
        BertModel(BertConfig.from_pretrained(source)).save_pretrained(folder)
        AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


def grid(paths: dict[str, Path]) -> list[dict[str, Any]]:
    """At least 12 configurations: two decoder sizes and MiniLM; full, LoRA,
    classification; two batch sizes; two lengths; checkpointing on and off."""
    rows: list[dict[str, Any]] = []

    def add(model: str, objective: str, ttype: str, b: int, s: int, gc: bool) -> None:
        rows.append(
            {
                "model": model,
                "model_path": str(paths[model]),
                "objective": objective,
                "training_type": ttype,
                "batch_size": b,
                "seq_len": s,
                "gradient_checkpointing": gc,
            }
        )

    for b, s in ((4, 128), (16, 512)):
        add("tiny-llama", "causal_lm", "fine_tuning", b, s, False)
        add("medium-llama", "causal_lm", "fine_tuning", b, s, False)
        add("medium-llama", "causal_lm", "lora_adaptation", b, s, False)
        add("minilm", "sequence_classification", "fine_tuning", b, s, False)
        add("minilm", "sequence_classification", "lora_adaptation", b, s, False)
    add("medium-llama", "causal_lm", "fine_tuning", 16, 512, True)
    add("medium-llama", "causal_lm", "lora_adaptation", 16, 512, True)
    add("minilm", "sequence_classification", "fine_tuning", 16, 512, True)
    add("minilm", "masked_lm", "continued_pretraining", 8, 256, False)
    add("medium-llama", "causal_lm", "fine_tuning", 8, 256, False)
    add("medium-llama", "sequence_classification", "task_specific", 8, 256, False)
    rows.extend(preference_grid(paths))
    rows.extend(qlora_grid(paths))
    return rows


def qlora_grid(paths: dict[str, Path]) -> list[dict[str, Any]]:
    """QLoRA (issue 25): the LoRA rows again with the base held in 4 bits."""
    rows: list[dict[str, Any]] = []
    for model, objective, b, s, gc in (
        ("medium-llama", "causal_lm", 4, 128, False),
        ("medium-llama", "causal_lm", 16, 512, False),
        ("medium-llama", "causal_lm", 16, 512, True),
        ("minilm", "sequence_classification", 16, 512, False),
    ):
        rows.append(
            {
                "model": model,
                "model_path": str(paths[model]),
                "objective": objective,
                "training_type": "lora_adaptation",
                "batch_size": b,
                "seq_len": s,
                "gradient_checkpointing": gc,
                "load_in_4bit": True,
            }
        )
    return rows


def preference_grid(paths: dict[str, Path]) -> list[dict[str, Any]]:
    """Preference and reward training (issue 23): pairs with and without a reference
    copy, precomputed reference log-probs, KTO, ORPO, SimPO and GRPO's sampling."""
    rows: list[dict[str, Any]] = []

    def add(ttype: str, b: int, s: int, **preference: Any) -> None:
        rows.append(
            {
                "model": "medium-llama",
                "model_path": str(paths["medium-llama"]),
                "objective": "causal_lm",
                "training_type": ttype,
                "batch_size": b,
                "seq_len": s,
                "gradient_checkpointing": False,
                "preference": preference,
            }
        )

    add("dpo", 4, 256)
    add("dpo", 4, 256, use_lora=False)
    add("dpo", 4, 256, use_lora=False, reference="precomputed")
    add("kto", 8, 256)
    add("orpo", 4, 256, use_lora=False)
    add("simpo", 8, 128)
    grpo = {"num_generations": 4, "max_completion_length": 32}
    add("grpo", 8, 160, use_lora=False, **grpo, rewards=[{"name": "length", "target_length": 64}])
    add("grpo", 8, 160, **grpo, rewards=[{"name": "length", "target_length": 64}])
    return rows


def measure(row: dict[str, Any], threads: int) -> dict[str, Any]:
    request = {
        "model_path": row["model_path"],
        "objective": row["objective"],
        "training_type": row["training_type"],
        "gradient_checkpointing": row["gradient_checkpointing"],
        "points": [[row["batch_size"], row["seq_len"]]],
        "steps": 3,
        "num_threads": threads,
        "precision": row.get("precision", "fp32"),
        "preference": row.get("preference"),
        "load_in_4bit": row.get("load_in_4bit", False),
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(request, fh)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "flextrain.train.probe_worker", fh.name],
        capture_output=True,
        text=True,
        timeout=900,
    )
    os.unlink(fh.name)
    if done.returncode != 0:
        return {"error": done.stderr[-2000:]}
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"event"')]
    point = next(e for e in events if e["event"] == "point")
    loaded = next(e for e in events if e["event"] == "loaded")
    measured = point["gpu_peak_reserved"] or point["peak_rss"]
    return {
        "measured_bytes": measured,
        "baseline_rss": loaded["baseline_rss"],
        "step_time": statistics.median(point["step_times"][1:]),
        "wall_s": time.monotonic() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("estimate_results.json"))
    parser.add_argument("--reuse", type=Path, help="skip measuring; reuse this file")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--probe", action="store_true", help="also run the probe per row")
    parser.add_argument("--previous", type=Path, help="earlier measurements of the same grid")
    parser.add_argument(
        "--only", choices=["preference", "qlora"], help="measure only this part of the grid"
    )
    args = parser.parse_args()

    import torch

    from flextrain.models.builtin import TINY_LLAMA_ID, builtin_path

    tiny = builtin_path(TINY_LLAMA_ID, BENCH_DIR / "builtin")
    paths = {"tiny-llama": tiny, "medium-llama": medium_llama(tiny), "minilm": minilm_for_bench()}
    rows = grid(paths)
    if args.only == "preference":
        rows = [r for r in rows if r.get("preference") is not None]
    if args.only == "qlora":  # with the same rows' 16-bit LoRA beside them
        rows = [r for r in rows if r["training_type"] == "lora_adaptation"]
        rows = [r for r in rows if r.get("preference") is None]
    if torch.cuda.is_available():  # the same grid in bf16 mixed precision on the GPU
        for row in rows:
            row.update(device="cuda", precision="bf16")
    if args.reuse:
        rows = json.loads(args.reuse.read_text())
    else:
        for row in rows:
            row.update(measure(row, args.threads))
            row["measured_runs"] = [row["measured_bytes"]] if "measured_bytes" in row else []
            print(json.dumps(row), flush=True)
            args.out.write_text(json.dumps(rows, indent=2))  # keep partial results
    if args.previous:
        merge_previous(rows, json.loads(args.previous.read_text()))
        args.out.write_text(json.dumps(rows, indent=2))
    if args.probe:
        for row in rows:
            row.update(probe_row(row, args.threads))
            print(
                json.dumps(
                    {
                        k: row.get(k)
                        for k in ("model", "batch_size", "seq_len", "probe_bytes", "probe_wall_s")
                    }
                ),
                flush=True,
            )
            args.out.write_text(json.dumps(rows, indent=2))
    args.out.write_text(json.dumps(rows, indent=2))
    report(rows)


_KEY = ("model", "objective", "training_type", "batch_size", "seq_len", "gradient_checkpointing")


def _key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        *(row[k] for k in _KEY),
        json.dumps(row.get("preference"), sort_keys=True),
        row.get("load_in_4bit", False),
    )


def merge_previous(rows: list[dict[str, Any]], previous: list[dict[str, Any]]) -> None:
    """Add an earlier run's peaks as repeats; the measured value becomes their mean."""
    earlier = {_key(r): r for r in previous if "measured_bytes" in r}
    for row in rows:
        old = earlier.get(_key(row))
        if old is None or "measured_bytes" not in row:
            continue
        runs = row.get("measured_runs") or [row["measured_bytes"]]
        runs = runs + (old.get("measured_runs") or [old["measured_bytes"]])
        row["measured_runs"] = runs
        row["measured_bytes"] = statistics.fmean(runs)


def _setup(row: dict[str, Any]) -> Any:
    from flextrain.estimate.memory import TrainingSetup
    from flextrain.models.inspect import choose_lora_targets, inspect_model

    key = (row["model_path"], row["objective"])
    if key not in _INFO:
        _INFO[key] = inspect_model(Path(row["model_path"]), objective=row["objective"])
    info = _INFO[key]
    lora = row["training_type"] == "lora_adaptation"
    extra: dict[str, Any] = {}
    if row.get("preference") is not None:
        from flextrain.config.schemas import AdvancedTrainingConfig
        from flextrain.models.compatibility import preference_setup

        config = AdvancedTrainingConfig(
            model_id=row["model_path"],
            dataset_id="bench",
            training_type=row["training_type"],
            preference=row["preference"],
        )
        lora = config.uses_lora
        extra = preference_setup(config)
    return info, TrainingSetup(
        objective=row["objective"],
        lora=lora,
        batch_size=row["batch_size"],
        seq_len=row["seq_len"],
        gradient_checkpointing=row["gradient_checkpointing"],
        lora_targets=tuple(choose_lora_targets(info.linear_module_names)) if lora else (),
        precision=row.get("precision", "fp32"),
        device="cuda" if row.get("device") == "cuda" else "cpu",
        quantized_4bit=row.get("load_in_4bit", False),
        **extra,
    )


def probe_row(row: dict[str, Any], threads: int) -> dict[str, Any]:
    """Calibrated estimate: the probe as `flextrain check --probe` runs it for this row."""
    from dataclasses import replace

    from flextrain.estimate.memory import estimate_memory
    from flextrain.estimate.probe import ProbeError, build_request, run_probe, should_anchor

    info, setup = _setup(row)
    request = build_request(
        row["model_path"],
        setup,
        training_type=row["training_type"],
        anchored=should_anchor(analytic_step(row)),
        num_threads=threads,
        preference=_preference_options(row),
    )
    try:
        result = run_probe(
            request,
            target_batch=row["batch_size"],
            timeout=900,
            analytic=lambda b: (
                estimate_memory(info.architecture(), replace(setup, batch_size=b)).peak
            ),
        )
    except ProbeError as exc:
        return {"probe_error": str(exc)[-500:]}
    return {
        "probe_bytes": result.predicted_peak_bytes,
        "probe_wall_s": result.wall_seconds,
        "probe_step_time": result.predicted_step_seconds,
        "probe_points": [p.__dict__ for p in result.points],
    }


_INFO: dict[tuple[str, str], Any] = {}


def _preference_options(row: dict[str, Any]) -> dict[str, Any] | None:
    """The row's preference options as the probe request carries them (all fields)."""
    if row.get("preference") is None:
        return None
    from flextrain.config.preference import PreferenceOptions

    return PreferenceOptions(**row["preference"]).model_dump()


def estimate_for_row(row: dict[str, Any]) -> int:
    """The analytic estimate for one grid row."""
    from flextrain.estimate.memory import estimate_memory

    info, setup = _setup(row)
    return estimate_memory(info.architecture(), setup).peak


def analytic_step(row: dict[str, Any]) -> float:
    """Step time from FLOPs and this machine's throughput prior (no probe)."""
    from flextrain.estimate.memory import rows as forward_rows
    from flextrain.estimate.timing import (
        decode_seconds,
        dequantization_seconds,
        device_flops_prior,
        flops_per_token,
    )

    info, setup = _setup(row)
    flops = flops_per_token(info.architecture(), setup) * forward_rows(setup) * row["seq_len"]
    names = ["NVIDIA H200"] if row.get("device") == "cuda" else []
    typical = device_flops_prior(
        gpu_names=names, cpu_cores=os.cpu_count() or 1, precision=row.get("precision", "fp32")
    )[1]
    arch = info.architecture()
    return (
        flops / typical + decode_seconds(arch, setup, typical) + dequantization_seconds(arch, setup)
    )


def _type_label(row: dict[str, Any]) -> str:
    """The training type with the preference options that change memory."""
    options = row.get("preference")
    if row.get("load_in_4bit"):
        return f"{row['training_type']} (4-bit base)"
    if not options:
        return str(row["training_type"])
    parts = ["full" if options.get("use_lora") is False else "lora"]
    if options.get("reference") == "precomputed":
        parts.append("precomputed ref")
    return f"{row['training_type']} ({', '.join(parts)})"


def report(rows: list[dict[str, Any]]) -> None:
    errors: list[float] = []
    probe_errors: list[float] = []
    time_errors: list[float] = []
    probe_time_errors: list[float] = []
    print(
        "| model | objective | type | b | s | ckpt | measured GiB | analytic GiB | error "
        "| probe GiB | error | step s (measured / analytic / probe) | runs spread |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for row in rows:
        if "measured_bytes" not in row:
            continue
        measured = row["measured_bytes"]
        predicted = estimate_for_row(row)
        err = (predicted - measured) / measured
        errors.append(err)
        probe_cells = "| - | - | -"
        time_errors.append(analytic_step(row) / row["step_time"] - 1)
        if "probe_step_time" in row:
            probe_time_errors.append(row["probe_step_time"] / row["step_time"] - 1)
        if "probe_bytes" in row:
            perr = (row["probe_bytes"] - measured) / measured
            probe_errors.append(perr)
            probe_cells = (
                f"| {row['probe_bytes'] / 2**30:.3f} | {perr:+.1%} "
                f"| {row['step_time']:.2f} / {analytic_step(row):.2f} / "
                f"{row['probe_step_time']:.2f}"
            )
        runs = row.get("measured_runs") or [measured]
        spread = (max(runs) - min(runs)) / measured
        print(
            f"| {row['model']} | {row['objective']} | {_type_label(row)} "
            f"| {row['batch_size']} | {row['seq_len']} | {int(row['gradient_checkpointing'])} "
            f"| {measured / 2**30:.3f} | {predicted / 2**30:.3f} | {err:+.1%} {probe_cells} "
            f"| {spread:.1%} ({len(runs)}) |"
        )
    for name, errs in (
        ("analytic memory", errors),
        ("probe memory", probe_errors),
        ("analytic step time", time_errors),
        ("probe step time", probe_time_errors),
    ):
        if errs:
            abs_err = sorted(abs(e) for e in errs)
            print(
                f"{name}: {len(errs)} configs, median |error| {statistics.median(abs_err):.1%}, "
                f"worst {abs_err[-1]:.1%}, most under-predicted {min(errs):+.1%}"
            )


if __name__ == "__main__":
    main()
