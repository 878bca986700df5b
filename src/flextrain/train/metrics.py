"""Metrics a run reports beside the Trainer's own: classification scores, real
throughput and peak memory, and the final evaluation the Trainer already made."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from transformers import EvalPrediction, TrainingArguments
from transformers.trainer_callback import TrainerState

from flextrain.hardware.usage import peak_rss_bytes


def classification_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro F1 (the mean of per-class F1: a rare class counts as much as a
    common one, which accuracy hides on unbalanced labels)."""
    logits = prediction.predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(prediction.label_ids)
    f1s = []
    for cls in np.union1d(labels, predicted):
        tp = float(np.sum((predicted == cls) & (labels == cls)))
        fp = float(np.sum((predicted == cls) & (labels != cls)))
        fn = float(np.sum((predicted != cls) & (labels == cls)))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": float((predicted == labels).mean()), "f1": float(np.mean(f1s))}


def throughput_and_memory(
    input_ids: list[list[int]], train_metrics: dict[str, Any]
) -> dict[str, float]:
    """Real tokens per second and peak memory: what the estimator is checked against."""
    out: dict[str, float] = {}
    runtime = float(train_metrics.get("train_runtime") or 0.0)
    epochs = float(train_metrics.get("epoch") or 0.0)
    if runtime > 0:
        tokens = sum(len(ids) for ids in input_ids) * epochs
        out["train_tokens_per_second"] = tokens / runtime
    # The process's own peak resident memory so far (VmHWM, see peak_rss_bytes).
    out["peak_rss_gb"] = peak_rss_bytes() / 1024**3
    if torch.cuda.is_available():
        out["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated() / 1024**3
        out["peak_gpu_reserved_gb"] = torch.cuda.max_memory_reserved() / 1024**3
    return out


def last_evaluation(state: TrainerState, args: TrainingArguments) -> dict[str, float] | None:
    """The evaluation the Trainer made at the run's last step, when the model is still the
    one it evaluated (no best checkpoint loaded in its place); None otherwise.

    With an evaluation per epoch (the default) the last one is of the final weights on
    the same held-out rows, so evaluating again would repeat a whole pass for the same
    numbers (0.5 s of the demo job on 2 CPU cores; docs/benchmarks.md). Every rank sees
    the same log history, so a multi-process run makes the same choice on each.
    """
    best = state.best_model_checkpoint
    if args.load_best_model_at_end and best and not best.endswith(f"-{state.global_step}"):
        return None  # the best checkpoint's weights were loaded: evaluate those
    for entry in reversed(state.log_history):  # the last step's logs: loss, eval, summary
        if entry.get("step") != state.global_step:
            return None
        if "eval_loss" in entry:
            return {k: v for k, v in entry.items() if k != "step"}
    return None


def size_metrics(model: Any, splits: Any) -> dict[str, Any]:
    """Rows and parameters, printed and recorded: the trainable share is what LoRA or
    freezing left to train, which explains a run's speed and memory."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
    return {
        "train_rows": len(splits["train"]),
        "eval_rows": len(splits["eval"]) if "eval" in splits else 0,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
