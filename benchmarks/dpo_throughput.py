"""DPO throughput: a flextrain DPO job against TRL's `DPOTrainer` with its defaults.

One invocation runs, side by side (order alternated between repetitions, the median
reported):

  (a) TRL's `DPOTrainer` as its documentation shows it: `DPOConfig` defaults but for
      the shared hyper-parameters below, pairs in random order, each batch padded to
      its longest sequence;
  (b) flextrain: a real `dpo` job through `TrainingService` (its default: pairs of
      similar length batched together);

on the same variable-length pairs: the prompts and answers of demo/instructions
(38-235 tokens), each chosen answer paired with another row's answer as the
rejected one, so a pair's two sequences differ in length as real ones do. Both
train the same LoRA adapter (r 16, alpha 32, dropout 0.1, the same target modules)
on the same seeded model (the throughput benchmark's Llama: hidden 256, 4 layers,
the built-in 1k tokenizer, 8,192 output rows), batch 8, max length 256, beta 0.1,
one epoch, the same learning rate and threads. Pairs/s counts training time only
(each run's `train_runtime`). Both models are then scored on the same held-out
pairs (DPO's loss against the reference, each trainer's own evaluation): that
eval loss is the "same result" check. The mean training loss over the last 10%
of steps is shown too, but it is not comparable: grouped batches end the epoch on
different pairs than random ones do.

    python benchmarks/dpo_throughput.py [--repeats 3] [--pairs 512] [--quick] [--no-docs]

Appends a table to docs/benchmarks.md ("DPO throughput") and writes the raw runs to
docs/dpo_throughput_cpu_<date>.json (`--quick`: one repetition of 128 pairs,
printed only).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["CUDA_VISIBLE_DEVICES"] = ""

sys.path.insert(0, str(Path(__file__).resolve().parent))
# The throughput benchmark's model, machine facts and final-loss rule.
from throughput import (
    INSTRUCTIONS,
    MODEL,
    VOCAB,
    append_section,
    final_loss,
    machine,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
BATCH = 8
MAX_LENGTH = 256
LEARNING_RATE = 5e-4
BETA = 0.1
SEED = 42
LOGGING_STEPS = 5
LORA = {"r": 16, "lora_alpha": 32, "lora_dropout": 0.1}


HELD_OUT = 64


def make_pairs(count: int, seed: int = SEED, skip: int = 0) -> list[dict[str, str]]:
    """Prompt, chosen answer (its own) and rejected answer (another row's)."""
    rows = [json.loads(line) for line in INSTRUCTIONS.read_text().splitlines() if line]
    rng = random.Random(seed + skip)
    picked = rows[skip : skip + count]
    out = []
    for row in picked:
        other = rng.choice(rows)
        prompt = row["instruction"] + (f"\n{row['input']}" if row.get("input") else "")
        out.append({"prompt": prompt + "\n", "chosen": row["output"], "rejected": other["output"]})
    return out


def child_prepare(job: dict[str, Any]) -> dict[str, Any]:
    """Build the seeded model and count the pairs' tokens."""
    from transformers import AutoTokenizer

    from flextrain.models.builtin import TINY_LLAMA_ID, builtin_path, save_random_llama

    tiny = builtin_path(TINY_LLAMA_ID, Path(job["work"]) / "builtin")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    save_random_llama(
        Path(job["model"]),
        tokenizer,
        hidden=MODEL["hidden"],
        intermediate=MODEL["intermediate"],
        layers=MODEL["layers"],
        heads=MODEL["heads"],
        kv_heads=MODEL["kv_heads"],
        vocab_size=VOCAB,
    )
    pairs = [json.loads(line) for line in Path(job["data"]).read_text().splitlines()]
    lengths = []
    for pair in pairs:
        prompt = len(tokenizer(pair["prompt"])["input_ids"])
        answers = [
            len(tokenizer(pair[k], add_special_tokens=False)["input_ids"])
            for k in ("chosen", "rejected")
        ]
        lengths.append(min(prompt + max(answers) + 1, MAX_LENGTH))
    lengths.sort()
    return {
        "pairs": len(pairs),
        "min": lengths[0],
        "median": statistics.median(lengths),
        "max": lengths[-1],
    }


def child_trl(job: dict[str, Any]) -> dict[str, Any]:
    """(a) TRL's DPOTrainer with its defaults."""
    import torch

    torch.set_num_threads(job["threads"])
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    from flextrain.models.inspect import choose_lora_targets
    from flextrain.train.model import linear_module_names

    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    torch.manual_seed(SEED)
    model = AutoModelForCausalLM.from_pretrained(job["model"], dtype=torch.float32)
    pairs = [json.loads(line) for line in Path(job["data"]).read_text().splitlines()]
    held = [json.loads(line) for line in Path(job["eval"]).read_text().splitlines()]
    targets = choose_lora_targets(linear_module_names(model))
    with tempfile.TemporaryDirectory() as out:
        args = DPOConfig(
            output_dir=out,
            per_device_train_batch_size=BATCH,
            num_train_epochs=1,
            learning_rate=LEARNING_RATE,
            beta=BETA,
            max_length=MAX_LENGTH,
            logging_steps=LOGGING_STEPS,
            logging_first_step=True,
            save_strategy="no",
            report_to="none",
            seed=SEED,
            data_seed=SEED,
            use_cpu=True,
            disable_tqdm=True,
            gradient_checkpointing=False,
        )
        trainer = DPOTrainer(
            model=model,
            args=args,
            train_dataset=Dataset.from_list(pairs),
            eval_dataset=Dataset.from_list(held),
            processing_class=tokenizer,
            peft_config=LoraConfig(target_modules=targets, task_type="CAUSAL_LM", **LORA),
        )
        result = trainer.train()
        eval_loss = trainer.evaluate()["eval_loss"]
    logged = [[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h]
    return {
        "train_runtime": result.metrics["train_runtime"],
        "steps": trainer.state.global_step,
        "logged_losses": logged,
        "eval_loss": eval_loss,
    }


def run_flextrain(
    service: Any, dataset: Path, held: Path, model_dir: Path, threads: int
) -> dict[str, Any]:
    """(b) A flextrain dpo job with the same settings."""
    from flextrain.config.enums import TrainingStatus, TrainingType
    from flextrain.config.schemas import AdvancedTrainingConfig

    config = AdvancedTrainingConfig(
        model_id=str(model_dir),
        dataset_id=str(dataset),
        training_type=TrainingType.DPO,
        num_epochs=1,
        learning_rate=LEARNING_RATE,
        batch_size=BATCH,
        max_length=MAX_LENGTH,
        seed=SEED,
        eval_file=str(held),
        eval_strategy="no",  # scored once after training, outside train_runtime
        evaluate_before_training=False,
        save_steps=10**9,
        logging_steps=LOGGING_STEPS,
        gradient_checkpointing=False,
        num_threads=threads,
        lora_r=LORA["r"],
        lora_alpha=LORA["lora_alpha"],
        lora_dropout=LORA["lora_dropout"],
        # DPOConfig's defaults, where flextrain's own differ: no weight decay, lr warmup 0.
        weight_decay=0.0,
        preference={"beta": BETA},
    )
    job = service.create_job(config)
    service.start_job(job.job_id)
    job = service.wait(job.job_id, timeout=3 * 3600)
    if job.status != TrainingStatus.COMPLETED:
        log = service.read_log(job.job_id, tail=60)
        raise RuntimeError(f"flextrain job {job.status.value}: {job.error_message}\n{log}")
    history = service.metric_history(job.job_id)
    return {
        "train_runtime": job.metrics["train_runtime"],
        "steps": job.current_step,
        "logged_losses": [[h["step"], h["loss"]] for h in history if "loss" in h],
        "eval_loss": job.metrics["eval_loss"],
        "job_id": job.job_id,
    }


def run_child(kind: str, job: dict[str, Any], work: Path) -> dict[str, Any]:
    request, result = work / f"{kind}-request.json", work / f"{kind}-result.json"
    request.write_text(json.dumps(job))
    result.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(job.get("threads", 1))}
    done = subprocess.run(
        [sys.executable, __file__, "--child", kind, str(request), str(result)],
        env=env,
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(result.read_text())
    return out


CHILDREN = {"prepare": child_prepare, "trl": child_trl}
RUN_NAMES = {"trl": "(a) TRL `DPOTrainer`, defaults", "flextrain": "(b) flextrain `dpo` job"}


def summarise(run: dict[str, Any], pairs: int) -> dict[str, Any]:
    return {
        **run,
        "pairs_per_second": pairs / run["train_runtime"],
        "final_loss": final_loss(run["logged_losses"], int(run["steps"])),
    }


def table(results: dict[str, Any]) -> str:
    rows = [
        "| run | pairs/s (median) | runs | held-out eval loss | last-10% train loss "
        "| ratio to (a) |",
        "|---|---|---|---|---|---|",
    ]
    base = results["median"]["trl"]
    for kind in ("trl", "flextrain"):
        runs = results["runs"][kind]
        rate = results["median"][kind]
        per_run = ", ".join(f"{r['pairs_per_second']:.2f}" for r in runs)
        loss = statistics.median(r["final_loss"] for r in runs)
        held = statistics.median(r["eval_loss"] for r in runs)
        rows.append(
            f"| {RUN_NAMES[kind]} | {rate:.2f} | {per_run} | {held:.4f} | {loss:.4f} "
            f"| {rate / base:.2f}x |"
        )
    return "\n".join(rows)


def docs_block(results: dict[str, Any], json_name: str) -> str:
    m, d = results["machine"], results["data"]
    about = (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB; torch {m['torch']}, "
        f"transformers {m['transformers']}, TRL {results['trl']}; {results['threads']} "
        f"threads. Repetitions: {results['repeats']} (median), order alternated. Data: "
        f"{d['pairs']} pairs from demo/instructions, longer sequence of a pair {d['min']}-"
        f"{d['max']} tokens (median {d['median']:.0f}); LoRA r 16 on the same targets, "
        f"batch {BATCH}, max length {MAX_LENGTH}, beta {BETA}, one epoch. Held-out eval "
        f"losses ({HELD_OUT} pairs) differ by {results['loss_gap']:.1%}. Raw: "
        f"`docs/{json_name}`."
    )
    return f"### {results['date']}\n\n{textwrap.fill(about, 88)}\n\n{table(results)}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--pairs", type=int, default=None)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-docs", action="store_true")
    parser.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        kind, request, result = args.child
        Path(result).write_text(json.dumps(CHILDREN[kind](json.loads(Path(request).read_text()))))
        return
    repeats = args.repeats or (1 if args.quick else 3)
    count = args.pairs or (128 if args.quick else 512)
    write_docs = not (args.quick or args.no_docs)
    work = Path(tempfile.mkdtemp(prefix="flextrain-dpo-bench-"))
    try:
        data = work / "pairs.jsonl"
        data.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(count)))
        held = work / "held-out.jsonl"
        held.write_text("".join(json.dumps(p) + "\n" for p in make_pairs(HELD_OUT, skip=count)))
        model_dir = work / "model"
        job = {"work": str(work), "model": str(model_dir), "data": str(data), "eval": str(held)}
        stats = run_child("prepare", job, work)
        print(f"[bench] data: {json.dumps(stats)}", flush=True)

        from flextrain.service import TrainingService
        from flextrain.settings import Settings

        service = TrainingService(Settings(home=work / "home", models_cache=work / "builtin"))
        runs: dict[str, list[dict[str, Any]]] = {"trl": [], "flextrain": []}
        for repeat in range(repeats):
            order = ["trl", "flextrain"] if repeat % 2 == 0 else ["flextrain", "trl"]
            for kind in order:
                if kind == "trl":
                    raw = run_child("trl", {**job, "threads": args.threads}, work)
                else:
                    raw = run_flextrain(service, data, held, model_dir, args.threads)
                run = summarise(raw, stats["pairs"])
                runs[kind].append(run)
                print(
                    f"[bench] {kind}: {run['pairs_per_second']:.2f} pairs/s, held-out loss "
                    f"{run['eval_loss']:.4f}, last-10% train loss {run['final_loss']:.4f}",
                    flush=True,
                )
        service.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import trl

    median = {k: statistics.median(r["pairs_per_second"] for r in v) for k, v in runs.items()}
    losses = {k: statistics.median(r["eval_loss"] for r in v) for k, v in runs.items()}
    results = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "trl": trl.__version__,
        "threads": args.threads,
        "repeats": repeats,
        "data": stats,
        "runs": runs,
        "median": median,
        "ratio": median["flextrain"] / median["trl"],
        "loss_gap": abs(losses["flextrain"] / losses["trl"] - 1),
    }
    json_name = f"dpo_throughput_cpu_{results['date'][:10]}.json"
    json_path = (DOCS if write_docs else Path(tempfile.gettempdir())) / json_name
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    block = docs_block(results, json_name)
    print("\n" + block)
    if write_docs:
        append_section(
            block,
            DOCS / "benchmarks.md",
            "## DPO throughput (benchmarks/dpo_throughput.py)",
            "A flextrain `dpo` job against TRL's `DPOTrainer` with its defaults, on the same "
            "variable-length pairs, model, adapter and hyper-parameters; pairs/s over "
            "training time only.",
        )


if __name__ == "__main__":
    main()
