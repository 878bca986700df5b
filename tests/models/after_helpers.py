"""The tiny LoRA language model the after-training tests export, merge and evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig

# Architectures the GGUF writer supports, as tiny_random_lm builds them.
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2")

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


def tiny_random_lm(kind: str, tokenizer_folder: Path, folder: Path) -> Path:
    """A random model of `kind` with the tiny Llama's tokenizer, saved to `folder`."""
    import torch
    from transformers import (
        AutoTokenizer,
        Gemma2Config,
        Gemma2ForCausalLM,
        LlamaConfig,
        LlamaForCausalLM,
        MistralConfig,
        MistralForCausalLM,
        Phi3Config,
        Phi3ForCausalLM,
        Qwen2Config,
        Qwen2ForCausalLM,
        Qwen3Config,
        Qwen3ForCausalLM,
    )

    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_folder))
    sizes: dict[str, Any] = {
        "vocab_size": len(tokenizer),
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 128,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "initializer_range": 0.2,  # sharper logits than the default: top tokens differ
    }
    classes = {
        "llama": (LlamaConfig, LlamaForCausalLM),
        "mistral": (MistralConfig, MistralForCausalLM),
        "qwen2": (Qwen2Config, Qwen2ForCausalLM),
        "qwen3": (Qwen3Config, Qwen3ForCausalLM),
        "phi3": (Phi3Config, Phi3ForCausalLM),
        "gemma2": (Gemma2Config, Gemma2ForCausalLM),
    }
    config_class, model_class = classes[kind]
    extra: dict[str, Any] = {
        "qwen3": {"head_dim": 32},  # head_dim != hidden / heads, as in the real Qwen3
        "gemma2": {"head_dim": 16, "query_pre_attn_scalar": 16},
        "phi3": {"pad_token_id": tokenizer.pad_token_id},
    }.get(kind, {})
    torch.manual_seed(0)
    model = model_class(config_class(**sizes, **extra))
    with torch.no_grad():  # norms away from 1, so a misplaced norm weight shows
        for name, param in model.named_parameters():
            if "norm" in name:
                param.copy_(1 + 0.1 * torch.randn_like(param))
    model.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    return folder
