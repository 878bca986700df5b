"""The trained model's folder: weights, tokenizer, and flextrain.json (what it was trained
from, its metrics and an output probe), so the folder alone says what it is."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer

from flextrain.data.prepare import DEFAULT_CHAT_TEMPLATE, TEMPLATED_SHAPES
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import JobStore
from flextrain.models.quantize import KEEP_OUTSIDE_BLOCKS
from flextrain.train import distributed


def save_outputs(
    spec: RunSpec,
    store: JobStore,
    trainer: Trainer,
    *,
    model: Any,
    tokenizer: Any,
    train_split: Any,
    metrics: dict[str, Any],
    reporter: bool,
) -> dict[str, Any]:
    """Save the model into spec.model_dir and, on the reporting process, everything that
    goes beside it; the final metrics go to the store. Returns the metrics.

    `model` is the trained model as `train()` left `trainer.model` (an evaluation may
    replace that attribute with a wrapped model under FSDP): the probe runs on it.
    """
    model_dir = Path(spec.model_dir)
    trainer.save_model(str(model_dir))  # every rank: FSDP gathers the shards to rank 0
    if not reporter:
        return metrics
    metrics["world_size"] = distributed.world_size()
    if _rendered_with_default_template(spec, tokenizer):
        # The model learnt this format: save it so apply_chat_template prompts it the same way.
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(model_dir))
    probe = output_probe(model, tokenizer, [train_split[i]["input_ids"] for i in range(2)])
    (model_dir / "flextrain.json").write_text(
        json.dumps(
            {
                "job_id": spec.job_id,
                "training_type": spec.config.training_type.value,
                "objective": spec.objective,
                "base_model": spec.config.model_id,
                "base_model_path": spec.model_path,
                "adapter": spec.config.uses_lora,
                # QLoRA: the adapter was trained on these 4-bit weights, not the originals.
                "base_quantization": base_quantization(spec),
                "labels": spec.data.labels,
                "metrics": metrics,
                "probe": probe,
            },
            indent=2,
        )
    )
    store.merge_metrics(spec.job_id, metrics)
    return metrics


def base_quantization(spec: RunSpec) -> dict[str, Any] | None:
    """How a QLoRA run held its base weights (None: at full precision)."""
    cfg = spec.config
    if not cfg.load_in_4bit:
        return None
    return {
        "bits": 4,
        "quant_type": cfg.bnb_4bit_quant_type,
        "double_quant": cfg.bnb_4bit_use_double_quant,
        "compute_dtype": {"bf16": "bfloat16", "fp16": "float16"}.get(spec.precision, "float32"),
        # The modules left at full precision (a transformers skip pattern).
        "kept": KEEP_OUTSIDE_BLOCKS,
    }


def output_probe(model: Any, tokenizer: Any, sequences: list[list[int]]) -> dict[str, Any]:
    """A few output values of the trained model on fixed inputs.

    Stored beside the saved model so anyone (our tests included) can check that
    what was saved reproduces what was trained.
    """
    model.eval()
    device = next(model.parameters()).device
    batch = tokenizer.pad({"input_ids": sequences}, return_tensors="pt").to(device)
    with torch.no_grad():
        logits = model(**batch).logits
    return {"input_ids": sequences, "logits_head": logits.float().flatten()[:32].tolist()}


def _rendered_with_default_template(spec: RunSpec, tokenizer: Any) -> bool:
    """Whether the training text was rendered with flextrain's chat template because the
    model had none (see flextrain.data.prepare)."""
    if spec.objective != "causal_lm" or getattr(tokenizer, "chat_template", None):
        return False
    return spec.data.shape in TEMPLATED_SHAPES
