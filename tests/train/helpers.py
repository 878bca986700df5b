"""Helpers for real-training tests: tiny data, running a job, reloading its output."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig
from flextrain.jobs.spec import DataSpec, Objective, RunSpec
from flextrain.jobs.store import TrainingJob
from flextrain.service import TrainingService

POSITIVE = ["good", "great", "lovely", "nice", "warm", "fresh", "bright", "happy"]
NEGATIVE = ["bad", "awful", "poor", "cold", "dull", "sad", "broken", "late"]
SUBJECTS = [
    "the soup",
    "the train",
    "the garden",
    "the market",
    "the river",
    "the bread",
    "the library",
    "the town",
    "the weather",
    "the room",
]


def write_keyword_sentiment(path: Path, rows: int = 160, seed: int = 0) -> Path:
    """Labelled rows a tiny model can learn in seconds: the adjective decides."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        for i in range(rows):
            label = "positive" if i % 2 == 0 else "negative"
            word = rng.choice(POSITIVE if label == "positive" else NEGATIVE)
            text = f"{rng.choice(SUBJECTS)} was {word} today"
            fh.write(json.dumps({"text": text, "label": label}) + "\n")
    return path


def run_job(
    service: TrainingService, config: BasicTrainingConfig, timeout: float = 240
) -> TrainingJob:
    job = service.create_job(config)
    service.start_job(job.job_id)
    job = service.wait(job.job_id, timeout=timeout, poll=0.2)
    assert job.status.value == "completed", (job.error_message, service.read_log(job.job_id, 40))
    return job


def logged_losses(service: TrainingService, job_id: str) -> list[float]:
    return [m["loss"] for m in service.store.metric_history(job_id) if "loss" in m]


def reload_logits(model_dir: Path) -> tuple[list[float], list[float]]:
    """Reload the saved model from disk; return (its probe logits, the recorded ones)."""
    meta = json.loads((model_dir / "flextrain.json").read_text())
    model = load_saved_model(model_dir, meta)
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer.pad({"input_ids": meta["probe"]["input_ids"]}, return_tensors="pt")
    model.eval()
    with torch.no_grad():
        logits = model(**batch).logits
    return logits.float().flatten()[:32].tolist(), meta["probe"]["logits_head"]


def load_saved_model(model_dir: Path, meta: dict[str, Any]) -> Any:
    objective = meta["objective"]
    if meta["adapter"]:
        from peft import (
            AutoPeftModelForCausalLM,
            AutoPeftModelForSequenceClassification,
            PeftModel,
        )

        if objective == "causal_lm":
            return AutoPeftModelForCausalLM.from_pretrained(model_dir)
        if objective == "sequence_classification":
            return AutoPeftModelForSequenceClassification.from_pretrained(model_dir)
        from transformers import AutoModelForMaskedLM

        base = AutoModelForMaskedLM.from_pretrained(meta["base_model_path"])
        return PeftModel.from_pretrained(base, model_dir)
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSequenceClassification,
    )

    auto = {
        "causal_lm": AutoModelForCausalLM,
        "masked_lm": AutoModelForMaskedLM,
        "sequence_classification": AutoModelForSequenceClassification,
    }[objective]
    return auto.from_pretrained(model_dir)


def assert_reload_matches(model_dir: Path) -> None:
    got, recorded = reload_logits(model_dir)
    assert len(got) == len(recorded) > 0
    assert torch.allclose(torch.tensor(got), torch.tensor(recorded), atol=1e-4), (got, recorded)


def tiny_llama() -> Any:
    """A 3-block Llama of a few thousand parameters, seeded: for optimizer and hook tests."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    return LlamaForCausalLM(config)


def run_spec(
    tmp_path: Path,
    *,
    objective: Objective = "causal_lm",
    model_path: Path | None = None,
    data: DataSpec | None = None,
    job_id: str = "job-test",
    num_threads: int = 1,
    **config: Any,
) -> RunSpec:
    """A run spec as the launcher writes it, for tests that build a worker's pieces
    without a service: the tiny Llama fine-tuned on plain text unless `config` says
    otherwise, every folder under `tmp_path`."""
    values: dict[str, Any] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": TrainingType.FINE_TUNING,
        **config,
    }
    out = tmp_path / "output"
    return RunSpec(
        job_id=job_id,
        config=AdvancedTrainingConfig(**values),
        model_path=str(model_path or tmp_path / "base"),
        objective=objective,
        precision="fp32",
        lora_target_modules=None,
        data=data
        or DataSpec(
            path=str(tmp_path / "data.txt"),
            format="text",
            text_column=None,
            label_column=None,
            labels=[],
            version="0" * 64,
        ),
        output_dir=str(out),
        checkpoint_dir=str(out / "checkpoints"),
        model_dir=str(out / "model"),
        temp_dir=str(tmp_path / "tmp"),
        num_threads=num_threads,
    )


def write_keyword_preferences(path: Path, rows: int = 200, seed: int = 0) -> Path:
    """Pairs a tiny model can learn in seconds: the positive adjective is chosen, the
    negative one rejected, after the same prompt."""
    rng = random.Random(seed)
    with path.open("w") as fh:
        for _ in range(rows):
            subject = rng.choice(SUBJECTS)
            pair = {
                "prompt": f"{subject} was",
                "chosen": f" {rng.choice(POSITIVE)} today",
                "rejected": f" {rng.choice(NEGATIVE)} today",
            }
            fh.write(json.dumps(pair) + "\n")
    return path


def metric_series(service: TrainingService, job_id: str, key: str) -> list[float]:
    """Every logged value of `key` (training logs, not evaluations), in step order."""
    return [m[key] for m in service.store.metric_history(job_id) if key in m]


# Preference runs on the tiny Llama: short rows, a log row every 2 steps, no checkpoint
# kept beyond one.
PREFERENCE_FAST = {
    "max_length": 32,
    "logging_steps": 2,
    "num_threads": 2,
    "save_total_limit": 1,
    "gradient_checkpointing": False,
}


def preference_config(data: Path, ttype: TrainingType, **overrides: Any) -> AdvancedTrainingConfig:
    """A preference run on the tiny Llama that trains in seconds; `overrides` win."""
    values: dict[str, Any] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": str(data),
        "training_type": ttype,
        "num_epochs": 3,
        "learning_rate": 1e-2,
        "batch_size": 16,
        "eval_split": 0.2,
        # Scored before and after training (the runner's own evaluation), not per epoch.
        "eval_strategy": "no",
        **PREFERENCE_FAST,
    }
    return AdvancedTrainingConfig(**{**values, **overrides})


def lora_classifier_spec(tmp_path: Path, models_cache: Path, **config: Any) -> RunSpec:
    """The run spec of a LoRA classifier on the tiny BERT (two labels), for tests that
    build the worker's model without training it."""
    from flextrain.models.builtin import TINY_BERT_ID, builtin_path

    data = DataSpec(
        path=str(tmp_path / "data.jsonl"),
        format="jsonl",
        text_column="text",
        label_column="label",
        labels=["negative", "positive"],
        version="0" * 64,
    )
    return run_spec(
        tmp_path,
        objective="sequence_classification",
        model_path=builtin_path(TINY_BERT_ID, models_cache),
        data=data,
        model_id=TINY_BERT_ID,
        dataset_id="demo/sentiment",
        training_type=TrainingType.LORA_ADAPTATION,
        **config,
    )
