"""The tiny LoRA language model the after-training tests export, merge and evaluate."""

from __future__ import annotations

from typing import Any

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig

FAST: dict[str, Any] = {
    "batch_size": 16,
    "logging_steps": 4,
    "num_threads": 2,
    "save_total_limit": 1,
    "gradient_checkpointing": False,
}


def lora_lm_config(**extra: Any) -> AdvancedTrainingConfig:
    """Eight LoRA steps of the tiny Llama on the bundled instructions (registered as
    'instructions', so the run saves the chat template it rendered them with)."""
    values: dict[str, Any] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "instructions",
        "training_type": TrainingType.LORA_ADAPTATION,
        "max_steps": 8,
        "learning_rate": 2e-2,
        "max_length": 64,
        "eval_split": 0.05,
        "evaluate_before_training": False,
        "lora_r": 4,
        "lora_alpha": 8,
        "lora_dropout": 0.0,
        **FAST,
        **extra,
    }
    return AdvancedTrainingConfig(**values)
