"""Training throughput: flextrain's default against a plain Trainer and a bare packed loop.

One invocation runs, side by side (order alternated between repetitions, the
median of the repetitions reported):

  (a) a plain `transformers.Trainer`, examples padded to 256 tokens;
  (b) flextrain's default: a real job through `TrainingService`, its own home;
  (c) a bare PyTorch loop on packed data (each batch's examples in one row,
      position ids restarting per example, no attention mask, `use_cache=False`,
      so that transformers keeps the examples apart), the limit on this machine;

on `demo/instructions` (2,000 instructions of 38-235 tokens), and (a) against
(b) again on fixed-length rows (every row 256 tokens of demo/text, full loss),
where packing cannot help. All three share the examples as `flextrain.data.
prepare` tokenises them (labels -100 on the prompt), the model (the built-in
decoder's Llama architecture at hidden 256, 4 layers, with the built-in
tokenizer and an 8,192-row output layer like the issue's reference model, see
VOCAB; the same seeded initial weights), batch 8, one epoch, the
optimisation hyper-parameters and the threads. Real tokens are the inputs'
non-pad tokens; tokens/s counts training time only (the Trainer's
`train_runtime`, the job's `train_runtime`, the bare loop's own timer), not
start-up. Also times `flextrain --help` (median of fresh processes).

    python benchmarks/throughput.py [--repeats 3] [--rows N] [--vocab 8192] [--quick] [--no-docs]

Writes a Markdown table (printed, and appended to docs/benchmarks.md under
"Throughput") and the raw results to docs/throughput_cpu_<date>_vocab<N>k.json. `--quick`
(fewer rows, one repetition) is a smoke run of the harness: it prints and writes
its JSON to the temporary folder only. Runs on the CPU (CUDA is hidden): the
comparison is defined in fp32 with `--threads` threads.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the job's worker inherits this

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
INSTRUCTIONS = ROOT / "src" / "flextrain" / "data" / "bundled" / "instructions.jsonl"
TEXT = ROOT / "src" / "flextrain" / "data" / "bundled" / "text.txt"

MAX_LENGTH = 256
BATCH = 8
LEARNING_RATE = 1e-3
SEED = 42
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
LOGGING_STEPS = 10  # flextrain's default; the final loss is read from these windows
MODEL = {"hidden": 256, "intermediate": 688, "layers": 4, "heads": 4, "kv_heads": 4}
# The output layer's width: the reference model had an 8k BPE vocabulary. The
# bundled text is too small to train 8k merges (BPE saturates near 5k words), and a
# tokenizer trained on the benchmark's own rows would shorten them far below the
# reference's lengths; so the tokens come from the built-in 1k BPE tokenizer (lengths like
# the reference's) and the model's vocabulary is padded to 8,192 rows, as models round
# theirs up. `--vocab 0` keeps the tokenizer's 1k.
VOCAB = 8192
TAIL = 0.1  # final loss: the mean over the last 10% of optimizer steps
FIXED_ROWS = 600


# -- data ---------------------------------------------------------------------------------
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


def load_examples(data: dict[str, Any], tokenizer: Any) -> Any:
    """The tokenised examples exactly as a flextrain job prepares them."""
    from flextrain.data.prepare import prepare_split

    records = [json.loads(line) for line in Path(data["path"]).read_text().splitlines() if line]
    dataset, _ = prepare_split(
        records,
        data["shape"],
        tokenizer,
        MAX_LENGTH,
        cache_dir=None,
        key=None,
        completion_only=True,
    )
    return dataset


# -- children: each measurement runs in a fresh process -------------------------------------
def child_prepare(job: dict[str, Any]) -> dict[str, Any]:
    """Build the model, count the data's tokens, and check that packing is exact."""
    from transformers import AutoTokenizer

    from flextrain.models.builtin import TINY_LLAMA_ID, builtin_path, save_random_llama

    tiny = builtin_path(TINY_LLAMA_ID, Path(job["work"]) / "builtin")
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model_dir = save_random_llama(
        Path(job["model"]),
        tokenizer,
        hidden=MODEL["hidden"],
        intermediate=MODEL["intermediate"],
        layers=MODEL["layers"],
        heads=MODEL["heads"],
        kv_heads=MODEL["kv_heads"],
        vocab_size=job["vocab"] or None,
    )
    stats = {}
    for name, data in job["data"].items():
        dataset = load_examples(data, tokenizer)
        lengths = sorted(len(ids) for ids in dataset["input_ids"])
        stats[name] = {
            "rows": len(lengths),
            "real_tokens": sum(lengths),
            "label_tokens": sum(sum(1 for x in lab if x != -100) for lab in dataset["labels"]),
            "min": lengths[0],
            "median": statistics.median(lengths),
            "p95": lengths[int(0.95 * (len(lengths) - 1))],
            "max": lengths[-1],
        }
    fixed = stats.get("fixed")
    if fixed is not None and fixed["min"] != MAX_LENGTH:
        raise SystemExit(f"fixed-length rows are not all {MAX_LENGTH} tokens: {fixed}")
    check = packing_check(model_dir, load_examples(job["data"]["variable"], tokenizer))
    return {
        "stats": stats,
        "packing_check": check,
        "model_parameters": check.pop("parameters"),
        "vocab_size": check.pop("vocab_size"),
    }


def packing_check(model_dir: Path, dataset: Any, count: int = 6) -> dict[str, Any]:
    """Loss and logits of a few examples packed in one row against the same padded."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    examples = [dataset[i] for i in range(count)]
    width = max(len(e["input_ids"]) for e in examples)
    pad = model.config.pad_token_id or 0

    def padded(key: str, fill: int) -> torch.Tensor:
        return torch.tensor([e[key] + [fill] * (width - len(e[key])) for e in examples])

    packed = pack_row(examples)
    with torch.no_grad():
        alone = model(
            input_ids=padded("input_ids", pad),
            attention_mask=padded("attention_mask", 0),
            labels=padded("labels", -100),
            use_cache=False,
        )
        together = model(**packed, use_cache=False)
    lengths = [len(e["input_ids"]) for e in examples]
    pieces = torch.split(together.logits[0], lengths)
    diff = max(
        (piece - alone.logits[i, : lengths[i]]).abs().max().item() for i, piece in enumerate(pieces)
    )
    loss_diff = abs(alone.loss.item() - together.loss.item())
    if loss_diff > 1e-4 or diff > 1e-3:
        raise SystemExit(
            f"packed examples are not kept apart: loss diff {loss_diff}, logits {diff}"
        )
    return {
        "examples": count,
        "loss_padded": alone.loss.item(),
        "loss_packed": together.loss.item(),
        "max_abs_logit_diff": diff,
        "parameters": sum(p.numel() for p in model.parameters()),
        "vocab_size": model.config.vocab_size,
    }


def pack_row(examples: list[dict[str, list[int]]]) -> dict[str, Any]:
    """One row: the examples end to end, positions restarting at 0 for each, no mask."""
    import torch

    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for example in examples:
        ids += example["input_ids"]
        # Nothing in this example predicts its first token (the previous one's last does).
        labels += [-100, *example["labels"][1:]]
        positions += range(len(example["input_ids"]))
    return {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([positions]),
    }


def child_trainer(job: dict[str, Any]) -> dict[str, Any]:
    """(a) A plain Trainer, every batch padded to MAX_LENGTH."""
    import torch

    torch.set_num_threads(job["threads"])
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
    )

    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    dataset = load_examples(job["data"], tokenizer)
    model = AutoModelForCausalLM.from_pretrained(job["model"])
    collator = DataCollatorForSeq2Seq(
        tokenizer, padding="max_length", max_length=MAX_LENGTH, label_pad_token_id=-100
    )
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(
            output_dir=out,
            per_device_train_batch_size=BATCH,
            num_train_epochs=1,
            learning_rate=LEARNING_RATE,
            weight_decay=WEIGHT_DECAY,
            max_grad_norm=MAX_GRAD_NORM,
            lr_scheduler_type="linear",
            warmup_steps=0,
            logging_steps=LOGGING_STEPS,
            logging_first_step=True,
            save_strategy="no",
            eval_strategy="no",
            report_to="none",
            seed=SEED,
            data_seed=SEED,
            use_cpu=True,
            disable_tqdm=True,
        )
        trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
        result = trainer.train()
    logged = [[h["step"], h["loss"]] for h in trainer.state.log_history if "loss" in h]
    return {
        "train_runtime": result.metrics["train_runtime"],
        "steps": trainer.state.global_step,
        "logged_losses": logged,
    }


def child_packed(job: dict[str, Any]) -> dict[str, Any]:
    """(c) A bare loop: AdamW, linear decay, clipping, one packed row of 8 examples a step."""
    import torch

    torch.set_num_threads(job["threads"])
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    dataset = load_examples(job["data"], tokenizer)
    examples = [
        {"input_ids": ids, "labels": labels}
        for ids, labels in zip(dataset["input_ids"], dataset["labels"], strict=True)
    ]
    model = AutoModelForCausalLM.from_pretrained(job["model"])
    model.train()
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(SEED)).tolist()
    batches = [order[i : i + BATCH] for i in range(0, len(order), BATCH)]
    # As the Trainer does: no weight decay on 1-D parameters (norms, biases).
    groups = [
        {"params": [p for p in model.parameters() if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in model.parameters() if p.ndim < 2], "weight_decay": 0.0},
    ]
    started = time.perf_counter()
    optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE, fused=True)
    schedule = get_linear_schedule_with_warmup(optimizer, 0, len(batches))
    losses = []
    for batch in batches:
        row = pack_row([examples[i] for i in batch])
        loss = model(**row, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
    runtime = time.perf_counter() - started
    return {
        "train_runtime": runtime,
        "steps": len(batches),
        "logged_losses": trainer_style_log(losses),
    }


def trainer_style_log(losses: list[float]) -> list[list[float]]:
    """Per-step losses as the Trainer logs them: step 1, then the mean of every window of
    LOGGING_STEPS steps ending at a multiple of it."""
    logged: list[list[float]] = []
    previous = 0
    for step in range(1, len(losses) + 1):
        if step == 1 or step % LOGGING_STEPS == 0:
            window = losses[previous:step]
            logged.append([step, sum(window) / len(window)])
            previous = step
    return logged


CHILDREN = {"prepare": child_prepare, "trainer": child_trainer, "packed": child_packed}


def run_child(kind: str, job: dict[str, Any], work: Path) -> dict[str, Any]:
    request = work / f"{kind}-request.json"
    result = work / f"{kind}-result.json"
    request.write_text(json.dumps(job))
    result.unlink(missing_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(job.get("threads", 1))}
    command = [sys.executable, __file__, "--child", kind, str(request), str(result)]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{kind} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    out: dict[str, Any] = json.loads(result.read_text())
    return out


# -- (b): a real flextrain job -------------------------------------------------------------
def run_flextrain(service: Any, dataset_id: str, model_dir: Path, threads: int) -> dict[str, Any]:
    from flextrain.config.enums import TrainingStatus, TrainingType
    from flextrain.config.schemas import AdvancedTrainingConfig

    config = AdvancedTrainingConfig(
        model_id=str(model_dir),
        dataset_id=dataset_id,
        training_type=TrainingType.FINE_TUNING,
        num_epochs=1,
        learning_rate=LEARNING_RATE,
        batch_size=BATCH,
        max_length=MAX_LENGTH,
        seed=SEED,
        eval_split=0.0,
        save_steps=10**9,  # no checkpoint inside the run
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=MAX_GRAD_NORM,
        lr_scheduler_type="linear",
        warmup_steps=0,
        logging_steps=LOGGING_STEPS,
        num_threads=threads,
    )
    job = service.create_job(config)
    service.start_job(job.job_id)
    job = service.wait(job.job_id, timeout=3 * 3600)
    if job.status != TrainingStatus.COMPLETED:
        log = service.read_log(job.job_id, tail=60)
        raise RuntimeError(f"flextrain job {job.status.value}: {job.error_message}\n{log}")
    history = service.metric_history(job.job_id)
    metrics = job.metrics
    return {
        "train_runtime": metrics["train_runtime"],
        "steps": job.current_step,
        "job_train_rows": metrics.get("train_rows"),
        "logged_losses": [[h["step"], h["loss"]] for h in history if "loss" in h],
        "job_tokens_per_second": metrics.get("train_tokens_per_second"),
        "job_train_loss": metrics.get("train_loss"),
        "job_id": job.job_id,
    }


# -- summary ---------------------------------------------------------------------------------
def final_loss(logged: list[list[float]], steps: int) -> float:
    """Mean loss over the last TAIL of the steps, from windowed logs (each the mean since
    the previous log): the windows after the last log at or before that point, weighted
    by their number of steps."""
    cut = steps - math.ceil(TAIL * steps)
    starts = [step for step, _ in logged if step <= cut]
    begin = max(starts) if starts else 0
    if not any(step > begin for step, _ in logged):  # a run too short to have a tail
        begin = max(step for step, _ in logged[:-1]) if len(logged) > 1 else 0
    total = weight = 0.0
    previous = 0.0
    for step, loss in logged:
        if step > begin:
            total += loss * (step - previous)
            weight += step - previous
        previous = step
    return total / weight if weight else float("nan")


def summarise(run: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    steps = int(run["steps"])
    summary = {
        **run,
        "tokens_per_second": stats["real_tokens"] / run["train_runtime"],
        "tokens_per_step": stats["real_tokens"] / steps,
        "final_loss": final_loss(run["logged_losses"], steps),
    }
    reported = run.get("job_tokens_per_second")
    if reported and abs(reported / summary["tokens_per_second"] - 1) > 0.05:
        # The job counts its own tokens: a gap means it trained on other tokens than these.
        print(
            f"  warning: the job reports {reported:,.0f} tokens/s against "
            f"{summary['tokens_per_second']:,.0f} counted here",
            flush=True,
        )
    return summary


def median_of(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


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
    }


RUN_NAMES = {
    "trainer": "(a) plain `Trainer`, padded to 256",
    "flextrain": "(b) flextrain default",
    "packed": "(c) bare loop, packed",
}


def table(results: dict[str, Any]) -> str:
    lines = [
        "| data | run | real tokens/s | real tokens | label tokens | optimizer steps "
        "| real tokens / step | final loss | vs (a) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for data_name, comparison in results["comparisons"].items():
        stats = results["stats"][data_name]
        base = comparison["median"]["trainer"]["tokens_per_second"]
        for kind, med in comparison["median"].items():
            lines.append(
                f"| {data_name} | {RUN_NAMES[kind]} | {med['tokens_per_second']:,.0f} "
                f"| {stats['real_tokens']:,} | {stats['label_tokens']:,} | {med['steps']:.0f} "
                f"| {med['tokens_per_step']:.1f} | {med['final_loss']:.4f} "
                f"| {med['tokens_per_second'] / base:.2f}x |"
            )
    ratios = results["ratios"]
    lines += [
        "",
        "| ratio | value | target |",
        "|---|---|---|",
        f"| (b)/(a) tokens/s, variable length | {ratios['b_over_a']:.2f} | >= 4.0 |",
        f"| (b)/(c) tokens/s, variable length | {ratios['b_over_c']:.2f} | >= 0.95 |",
        f"| final loss (b)/(a), variable length | {ratios['loss_b_over_a']:.3f} | within 2% |",
    ]
    if "fixed_b_over_a" in ratios:
        lines.append(
            f"| (b)/(a) tokens/s, fixed length 256 | {ratios['fixed_b_over_a']:.3f} | within 3% |"
        )
    help_median = statistics.median(results["help_seconds"])
    lines.append(
        f"| `flextrain --help`, median of {len(results['help_seconds'])} | "
        f"{help_median:.2f} s | < 0.5 s |"
    )
    return "\n".join(lines)


def docs_block(results: dict[str, Any], json_name: str) -> str:
    m = results["machine"]
    stats = results["stats"]["variable"]
    about = (
        f"Machine: {m['cpu']}, {m['cores']} cores, {m['memory_gb']} GB, {m['platform']}; "
        f"Python {m['python']}, torch {m['torch']}, transformers {m['transformers']}; "
        f"{results['threads']} threads. Repetitions: {results['repeats']} (median), order "
        f"alternated. Model: Llama, hidden {MODEL['hidden']}, {MODEL['layers']} layers, "
        f"{results['model_parameters']:,} parameters, output vocabulary "
        f"{results.get('vocab_size', 1024):,} (tokens from the built-in 1k BPE tokenizer). Data: "
        f"demo/instructions, {stats['rows']:,} rows of {stats['min']}-{stats['max']} tokens "
        f"(median {stats['median']:.0f}); batch {BATCH}, max length {MAX_LENGTH}, one epoch, "
        f"lr {LEARNING_RATE:g} linear. Raw: `docs/{json_name}`."
    )
    return f"### {results['date']}\n\n{textwrap.fill(about, 88)}\n\n{table(results)}\n"


def append_to_docs(block: str, path: Path) -> None:
    """Add `block` at the end of the Throughput section (created if missing)."""
    intro = (
        "flextrain's default against a plain `Trainer` padded to the max length and a bare "
        "PyTorch loop on packed data: same model, examples, hyper-parameters and real "
        "tokens per optimizer step; tokens/s over training time only (the median of the "
        "repetitions); final loss is the mean over the logging windows that cover the last "
        "10% of optimizer steps. Run with `make bench`."
    )
    append_section(block, path, "## Throughput (benchmarks/throughput.py)", intro)


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


# -- main ----------------------------------------------------------------------------------
def compare(
    kinds: list[str],
    repeats: int,
    run_one: dict[str, Any],
    stats: dict[str, Any],
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
    for repeat in range(repeats):
        order = kinds if repeat % 2 == 0 else list(reversed(kinds))
        for kind in order:
            summary = summarise(run_one[kind](), stats)
            runs[kind].append(summary)
            print(
                f"  repeat {repeat + 1} {kind}: {summary['tokens_per_second']:,.0f} real tokens/s, "
                f"{summary['steps']} steps, final loss {summary['final_loss']:.4f}",
                flush=True,
            )
    keys = ("tokens_per_second", "train_runtime", "steps", "tokens_per_step", "final_loss")
    median = {k: {key: median_of(r, key) for key in keys} for k, r in runs.items()}
    return {"runs": runs, "median": median}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=None, help="repetitions (default 3)")
    parser.add_argument("--rows", type=int, default=None, help="use the first N instructions")
    parser.add_argument("--fixed-rows", type=int, default=None, help="fixed-length rows (600)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--vocab", type=int, default=VOCAB, help="output layer width (8192; 0: the tokenizer's)"
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: 240 rows, 1 repeat")
    parser.add_argument("--no-docs", action="store_true", help="print only; write no docs")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--child", nargs=3, metavar=("KIND", "REQUEST", "RESULT"), help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.child:
        kind, request, result = args.child
        out = CHILDREN[kind](json.loads(Path(request).read_text()))
        Path(result).write_text(json.dumps(out))
        return

    repeats = args.repeats or (1 if args.quick else 3)
    rows = args.rows or (240 if args.quick else None)
    fixed_rows = args.fixed_rows or (80 if args.quick else FIXED_ROWS)
    write_docs = not (args.quick or args.no_docs)
    work = Path(tempfile.mkdtemp(prefix="flextrain-throughput-"))
    print(f"[bench] working in {work}", flush=True)
    try:
        results = measure(args, work, repeats, rows, fixed_rows)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    vocab = results["vocab_size"]
    json_name = f"throughput_cpu_{results['date'][:10]}_vocab{round(vocab / 1024)}k.json"
    json_path = (DOCS if write_docs else Path(tempfile.gettempdir())) / json_name
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    block = docs_block(results, json_name)
    print("\n" + block)
    if write_docs:
        append_to_docs(block, DOCS / "benchmarks.md")
        print(f"[bench] appended to docs/benchmarks.md; raw results in {json_path}")
    else:
        print(f"[bench] raw results in {json_path} (docs not written)")


def measure(
    args: argparse.Namespace, work: Path, repeats: int, rows: int | None, fixed_rows: int
) -> dict[str, Any]:
    """Every run of both comparisons, the ratios, the machine and `--help` times."""
    variable = INSTRUCTIONS
    if rows is not None:
        subset = INSTRUCTIONS.read_text().splitlines(keepends=True)[:rows]
        variable = work / "instructions-subset.jsonl"
        variable.write_text("".join(subset))
    fixed = write_jsonl(work / "fixed-256.jsonl", fixed_length_records(fixed_rows))
    data = {
        "variable": {"path": str(variable), "shape": "instruction"},
        "fixed": {"path": str(fixed), "shape": "text"},
    }
    model_dir = work / "model"
    prepared = run_child(
        "prepare",
        {"work": str(work), "model": str(model_dir), "data": data, "vocab": args.vocab},
        work,
    )
    stats = prepared["stats"]
    print(f"[bench] data: {json.dumps(stats)}", flush=True)
    print(f"[bench] packing check: {json.dumps(prepared['packing_check'])}", flush=True)

    from flextrain.service import TrainingService
    from flextrain.settings import Settings

    service = TrainingService(Settings(home=work / "home", models_cache=work / "builtin"))
    dataset_ids = {"variable": "demo/instructions", "fixed": "bench/fixed-256"}
    if rows is not None:  # a subset is registered with its shape, as demo/instructions has
        service.datasets.add(variable, name="bench/instructions", shape="instruction")
        dataset_ids["variable"] = "bench/instructions"
    service.datasets.add(fixed, name="bench/fixed-256", shape="text")

    comparisons: dict[str, Any] = {}
    for name, kinds in (
        ("variable", ["trainer", "flextrain", "packed"]),
        ("fixed", ["trainer", "flextrain"]),
    ):
        print(f"[bench] {name}-length data: {', '.join(kinds)}", flush=True)
        job = {"model": str(model_dir), "data": data[name], "threads": args.threads}
        dataset_id = dataset_ids[name]
        run_one = {
            "trainer": lambda job=job: run_child("trainer", job, work),
            "packed": lambda job=job: run_child("packed", job, work),
            "flextrain": lambda d=dataset_id: run_flextrain(service, d, model_dir, args.threads),
        }
        comparisons[name] = compare(kinds, repeats, run_one, stats[name])

    median = {name: c["median"] for name, c in comparisons.items()}
    var = median["variable"]
    ratios = {
        "b_over_a": var["flextrain"]["tokens_per_second"] / var["trainer"]["tokens_per_second"],
        "b_over_c": var["flextrain"]["tokens_per_second"] / var["packed"]["tokens_per_second"],
        "loss_b_over_a": var["flextrain"]["final_loss"] / var["trainer"]["final_loss"],
        "fixed_b_over_a": median["fixed"]["flextrain"]["tokens_per_second"]
        / median["fixed"]["trainer"]["tokens_per_second"],
    }
    service.engine.dispose()
    return {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "quick": args.quick,
        "repeats": repeats,
        "threads": args.threads,
        "model": MODEL,
        "vocab_size": prepared["vocab_size"],
        "model_parameters": prepared["model_parameters"],
        "hyperparameters": {
            "batch_size": BATCH,
            "max_length": MAX_LENGTH,
            "epochs": 1,
            "learning_rate": LEARNING_RATE,
            "schedule": "linear, no warm-up",
            "weight_decay": WEIGHT_DECAY,
            "max_grad_norm": MAX_GRAD_NORM,
            "seed": SEED,
        },
        "machine": machine(),
        "stats": stats,
        "packing_check": prepared["packing_check"],
        "comparisons": comparisons,
        "ratios": ratios,
        "help_seconds": help_seconds(2 if args.quick else 5),
    }


if __name__ == "__main__":
    main()
