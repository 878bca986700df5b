"""The baselines of benchmarks/throughput.py, each a whole process of its own.

Every baseline is what a user already has, written the way its documentation shows:

- `trainer`: a plain `transformers.Trainer` with one of four collations: "padded"
  (every row padded to the max length), "dynamic" (each batch padded to its longest:
  `DataCollatorForSeq2Seq` / `DataCollatorWithPadding`), "grouped" (dynamic padding plus
  `train_sampling_strategy="group_by_length"`, the strongest one-flag option) and
  "flatten" (`DataCollatorWithFlattening`: padding-free rows with position ids; with
  sdpa transformers keeps the examples apart only when the model runs without a
  key/value cache, so the model's `use_cache` is turned off, which a user must know);
- `trl`: TRL's `SFTTrainer` with `packing=True, packing_strategy="bfd"` (best-fit
  decreasing into rows of the max length, padding-free, examples kept apart);
- `loop`: a bare PyTorch loop, each batch's examples packed in one row;
- `evaluate`: the held-out loss (and accuracy) of a saved model, the same code for all.

Each prints nothing the parent needs: it writes a JSON result (its own training time
and where it saved the model). The parent times the whole process from outside.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

SEED = 42
WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0
LOGGING_STEPS = 10


def load_causal(data: dict[str, Any], tokenizer: Any, max_length: int) -> Any:
    """Tokenised examples, as a flextrain job prepares them (labels -100 on the prompt):
    every baseline trains on exactly the same tokens."""
    from flextrain.data.prepare import prepare_split

    records = [json.loads(line) for line in Path(data["path"]).read_text().splitlines() if line]
    dataset, _ = prepare_split(
        records,
        data["shape"],
        tokenizer,
        max_length,
        cache_dir=None,
        key=None,
        completion_only=True,
    )
    return dataset


def load_classification(path: str, tokenizer: Any, max_length: int, labels: list[str]) -> Any:
    from datasets import Dataset

    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    encoded = tokenizer([r["text"] for r in rows], truncation=True, max_length=max_length)
    return Dataset.from_dict({**encoded, "labels": [labels.index(str(r["label"])) for r in rows]})


def _model(job: dict[str, Any]) -> Any:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    # Seeded before any weight is drawn (a classification head, LoRA's A matrices), as
    # flextrain does: every run starts from the same weights, so held-out losses compare
    # batching, not initialisations (unseeded, the grouped Trainer's spread 0.517-0.547).
    torch.manual_seed(SEED)

    if job["task"] == "classify":
        model = AutoModelForSequenceClassification.from_pretrained(
            job["model"], num_labels=len(job["labels"])
        )
    else:
        model = AutoModelForCausalLM.from_pretrained(job["model"])
    if job.get("lora"):
        from peft import LoraConfig, get_peft_model

        lora = job["lora"]
        model = get_peft_model(
            model,
            LoraConfig(
                r=lora["r"],
                lora_alpha=lora["alpha"],
                lora_dropout=0.0,
                target_modules=lora["targets"],
                task_type="SEQ_CLS" if job["task"] == "classify" else "CAUSAL_LM",
            ),
        )
    return model


def _arguments(job: dict[str, Any], out: str, **extra: Any) -> dict[str, Any]:
    return {
        "output_dir": out,
        "per_device_train_batch_size": job["batch"],
        "num_train_epochs": job.get("epochs", 1),
        "learning_rate": job["lr"],
        "weight_decay": WEIGHT_DECAY,
        "max_grad_norm": MAX_GRAD_NORM,
        "lr_scheduler_type": "linear",
        "warmup_steps": 0,
        "logging_steps": LOGGING_STEPS,
        "logging_first_step": True,
        "save_strategy": "no",
        "eval_strategy": "no",
        "report_to": "none",
        "seed": SEED,
        "data_seed": SEED,
        # On a GPU (benchmarks/gpu_check.py) in bf16; here on the CPU in fp32.
        "use_cpu": not job.get("cuda"),
        "bf16": bool(job.get("cuda")),
        "disable_tqdm": True,
        **extra,
    }


def child_trainer(job: dict[str, Any]) -> dict[str, Any]:
    """A plain Trainer with the collation `job["variant"]`; saves the model at the end."""
    import torch

    torch.set_num_threads(job["threads"])
    from transformers import (
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        DataCollatorWithFlattening,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    variant, max_length = job["variant"], job["max_length"]
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    classify = job["task"] == "classify"
    if classify:
        dataset = load_classification(job["data"]["path"], tokenizer, max_length, job["labels"])
    else:
        dataset = load_causal(job["data"], tokenizer, max_length)
    model = _model(job)
    padded = variant == "padded"
    if classify:
        collator: Any = DataCollatorWithPadding(
            tokenizer, padding="max_length" if padded else True, max_length=max_length
        )
    elif variant == "flatten":
        collator = DataCollatorWithFlattening(return_position_ids=True)
        model.config.use_cache = False  # else sdpa lets flattened examples see each other
    else:
        collator = DataCollatorForSeq2Seq(
            tokenizer,
            padding="max_length" if padded else True,
            max_length=max_length,
            label_pad_token_id=-100,
        )
    sampling = "group_by_length" if variant.startswith("grouped") else "random"
    args = TrainingArguments(**_arguments(job, job["out"], train_sampling_strategy=sampling))
    trainer = Trainer(model=model, args=args, train_dataset=dataset, data_collator=collator)
    result = trainer.train()
    trainer.save_model(job["out"])
    tokenizer.save_pretrained(job["out"])
    return _result(trainer, result.metrics["train_runtime"], job["out"])


def child_trl(job: dict[str, Any]) -> dict[str, Any]:
    """TRL's SFTTrainer, best-fit-decreasing packing into rows of the max length. Rows
    per step are set so that a step sees about as many real tokens as the others'."""
    import torch

    torch.set_num_threads(job["threads"])
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    dataset = load_causal(job["data"], tokenizer, job["max_length"]).remove_columns(
        ["attention_mask"]
    )
    model = _model(job)
    config = SFTConfig(
        **_arguments(
            {**job, "batch": job["trl_rows"]},
            job["out"],
            packing=True,
            packing_strategy="bfd",
            max_length=job["max_length"],
            dataset_num_proc=None,
        )
    )
    trainer = SFTTrainer(
        model=model, args=config, train_dataset=dataset, processing_class=tokenizer
    )
    result = trainer.train()
    trainer.save_model(job["out"])
    return _result(trainer, result.metrics["train_runtime"], job["out"])


def child_loop(job: dict[str, Any]) -> dict[str, Any]:
    """A bare loop: AdamW (fused), linear decay, clipping, one packed row per batch."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_linear_schedule_with_warmup

    torch.set_num_threads(job["threads"])
    torch.manual_seed(SEED)
    tokenizer = AutoTokenizer.from_pretrained(job["model"])
    dataset = load_causal(job["data"], tokenizer, job["max_length"])
    examples = list(zip(dataset["input_ids"], dataset["labels"], strict=True))
    model = AutoModelForCausalLM.from_pretrained(job["model"])
    model.train()
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(SEED)).tolist()
    batches = [order[i : i + job["batch"]] for i in range(0, len(order), job["batch"])]
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0}]
    started = time.perf_counter()
    optimizer = torch.optim.AdamW(groups, lr=job["lr"], fused=True)
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
    model.save_pretrained(job["out"])
    tokenizer.save_pretrained(job["out"])
    return {"train_runtime": runtime, "steps": len(batches), "model": job["out"]}


def pack_row(examples: list[tuple[list[int], list[int]]]) -> dict[str, Any]:
    """One row: the examples end to end, positions restarting at 0 for each, no mask."""
    import torch

    ids: list[int] = []
    labels: list[int] = []
    positions: list[int] = []
    for tokens, targets in examples:
        ids += tokens
        labels += [-100, *targets[1:]]  # nothing in this example predicts its first token
        positions += range(len(tokens))
    return {
        "input_ids": torch.tensor([ids]),
        "labels": torch.tensor([labels]),
        "position_ids": torch.tensor([positions]),
    }


def _result(trainer: Any, runtime: float, out: str) -> dict[str, Any]:
    return {"train_runtime": runtime, "steps": trainer.state.global_step, "model": out}


def child_evaluate(job: dict[str, Any]) -> dict[str, Any]:
    """Held-out loss of each saved model, example by example (no padding, no packing):
    mean loss per predicted token (causal LM), or mean loss and accuracy (classification)."""
    import torch
    from transformers import AutoTokenizer

    torch.set_num_threads(job["threads"])
    tokenizer = AutoTokenizer.from_pretrained(job["tokenizer"])
    classify = job["task"] == "classify"
    if classify:
        data = load_classification(job["data"]["path"], tokenizer, job["max_length"], job["labels"])
    else:
        data = load_causal(job["data"], tokenizer, job["max_length"])
    out: dict[str, Any] = {}
    for name, folder in job["models"].items():
        model = _saved_model(folder, classify).eval()
        # A label's index in this model's head (flextrain names its labels in the config).
        label2id = getattr(model.config, "label2id", None) or {}
        index = [int(label2id.get(label, i)) for i, label in enumerate(job["labels"])]
        total = count = correct = 0.0
        with torch.no_grad():
            for example in data:
                ids = torch.tensor([example["input_ids"]])
                if classify:
                    logits = model(input_ids=ids).logits[0]
                    label = index[int(example["labels"])]
                    total += torch.nn.functional.cross_entropy(logits[None], torch.tensor([label]))
                    correct += float(logits.argmax().item() == label)
                    count += 1
                    continue
                labels = torch.tensor(example["labels"][1:])
                logits = model(input_ids=ids, use_cache=False).logits[0, :-1]
                kept = labels != -100
                loss = torch.nn.functional.cross_entropy(
                    logits[kept], labels[kept], reduction="sum"
                )
                total += loss.item()
                count += int(kept.sum())
        out[name] = {"loss": float(total) / max(count, 1)}
        if classify:
            out[name]["accuracy"] = correct / max(count, 1)
    return out


def _saved_model(folder: str, classify: bool) -> Any:
    """A saved model, or a saved LoRA adapter merged into its base."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    if (Path(folder) / "adapter_config.json").exists():
        from peft import AutoPeftModelForCausalLM, AutoPeftModelForSequenceClassification

        peft_class = (
            AutoPeftModelForSequenceClassification if classify else AutoPeftModelForCausalLM
        )
        return peft_class.from_pretrained(folder).merge_and_unload()
    model_class = AutoModelForSequenceClassification if classify else AutoModelForCausalLM
    return model_class.from_pretrained(folder)


CHILDREN = {
    "trainer": child_trainer,
    "trl": child_trl,
    "loop": child_loop,
    "evaluate": child_evaluate,
}
