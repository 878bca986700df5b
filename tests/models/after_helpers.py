"""The tiny LoRA language model the after-training tests export, merge and evaluate."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig

# Architectures the GGUF writer supports, as tiny_random_lm builds them.
ARCHITECTURES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma2")
# Real Llama 2, Mistral (to v0.3) and Gemma models ship SentencePiece-style tokenizers
# (BPE with byte fallback, "▁" for spaces), not byte-level BPE: the same kinds again
# with such a tokenizer, in transformers' own Llama and Gemma layouts.
SENTENCEPIECE_KINDS = ("llama-spm", "mistral-spm", "gemma2-spm")

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


def train_tiny_helper(service: Any) -> Any:
    """The LoRA job the export tests and benchmark export: `lora_lm_config` trained on
    the bundled instructions, registered first, under the run name "tiny helper"."""
    from flextrain.data.bundled import bundled_path
    from tests.train.helpers import run_job

    service.datasets.register("instructions", bundled_path("instructions.jsonl"))
    return run_job(service, lora_lm_config(run_name="tiny helper"))


def sentencepiece_tokenizer(style: str) -> Any:
    """A SentencePiece-style tokenizer learned from the bundled text: Llama's layout
    (<unk> <s> </s>, a space put before the text) or Gemma's (<pad> <eos> <bos> <unk>
    <mask>, no space put before). Its merges are derived from the vocabulary's order,
    as transformers converts a SentencePiece model, so any pair that joins into a
    token may merge (SentencePiece's rule), ranked by that token's place."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GemmaTokenizer, LlamaTokenizer
    from transformers.tokenization_utils_base import generate_merges

    from flextrain.data.bundled import bundled_path

    specials = (
        ["<unk>", "<s>", "</s>"]
        if style == "llama"
        else ["<pad>", "<eos>", "<bos>", "<unk>", "<mask>"]
    )
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    learner = Tokenizer(models.BPE(byte_fallback=True))
    learner.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first")
    trainer = trainers.BpeTrainer(
        vocab_size=700, special_tokens=specials + byte_tokens, show_progress=False
    )
    learner.train_from_iterator(bundled_path("text.txt").read_text().splitlines(), trainer)
    vocab = learner.get_vocab()
    merges = generate_merges(
        vocab, {t: -i for t, i in vocab.items()}, skip_tokens=specials + byte_tokens
    )
    cls = LlamaTokenizer if style == "llama" else GemmaTokenizer
    return cls(vocab=vocab, merges=merges, add_bos_token=True)  # as both models do


def tiny_random_lm(kind: str, tokenizer_folder: Path, folder: Path) -> Path:
    """A random model of `kind` with the tiny Llama's tokenizer, saved to `folder`;
    `<kind>-spm` gives it a SentencePiece-style tokenizer instead."""
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

    if kind.endswith("-spm"):
        kind = kind.removesuffix("-spm")
        tokenizer = sentencepiece_tokenizer("gemma" if kind == "gemma2" else "llama")
    else:
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
