"""Facts about a model read from its config alone, never its weights.

The model is built on the meta device (no memory, no download of weights) to
count parameters exactly and list its module names, as `accelerate
estimate-memory` does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flextrain.config.validation import ModelFacts
from flextrain.estimate.memory import Architecture
from flextrain.models.heavy import load_transformers

# LoRA targets by preference: attention projections first (LoRA paper, PEFT defaults).
_TARGET_PREFERENCES: tuple[tuple[str, ...], ...] = (
    ("q_proj", "v_proj"),
    ("query", "value"),
    ("c_attn",),
    ("query_key_value",),
    ("qkv_proj",),
    ("Wqkv",),
    ("q", "v"),
)
_HEAD_NAMES = frozenset({"lm_head", "score", "classifier", "cls", "decoder", "pooler", "dense"})


@dataclass(frozen=True)
class ModelInfo:
    model_type: str
    architectures: list[str]
    num_parameters: int
    hidden_size: int | None
    num_layers: int | None
    vocab_size: int | None
    max_position_embeddings: int | None
    linear_module_names: frozenset[str]
    supports_causal_lm: bool
    supports_masked_lm: bool
    supports_sequence_classification: bool
    supports_gradient_checkpointing: bool
    is_encoder: bool
    num_attention_heads: int | None = None
    num_key_value_heads: int | None = None
    intermediate_size: int | None = None
    tie_word_embeddings: bool = False
    # (module path, in_features, out_features) of every nn.Linear: LoRA sizes come from here.
    linear_layers: tuple[tuple[str, int, int], ...] = ()
    needs_remote_code: bool = False
    # The transformers class built for the objective asked for (e.g.
    # BertForSequenceClassification), which config.json's `architectures` may not name.
    model_class: str = ""
    config: dict[str, Any] = field(default_factory=dict, repr=False)

    def facts(self) -> ModelFacts:
        return ModelFacts(
            max_position_embeddings=self.max_position_embeddings,
            linear_module_names=self.linear_module_names,
            supports_gradient_checkpointing=self.supports_gradient_checkpointing,
            num_parameters=self.num_parameters,
        )

    def architecture(self) -> Architecture:
        """The facts the memory and time estimates need."""
        heads = self.num_attention_heads or 1
        return Architecture(
            num_parameters=self.num_parameters,
            hidden_size=self.hidden_size or 0,
            num_layers=self.num_layers or 0,
            num_heads=heads,
            num_kv_heads=self.num_key_value_heads or heads,
            intermediate_size=self.intermediate_size or 4 * (self.hidden_size or 0),
            vocab_size=self.vocab_size or 0,
            is_encoder=self.is_encoder,
            linear_layers=self.linear_layers,
            model_type=self.model_type,
            tie_word_embeddings=self.tie_word_embeddings,
        )

    @property
    def lm_objective(self) -> str:
        """The language-model objective this model trains with on raw text."""
        return "masked_lm" if self.is_encoder else "causal_lm"


def choose_lora_targets(linear_names: frozenset[str] | set[str]) -> list[str]:
    """Pick LoRA target modules from a model's linear-layer names.

    Attention query/value projections when the model has them; otherwise every
    linear layer that is not an output head.
    """
    for group in _TARGET_PREFERENCES:
        if all(name in linear_names for name in group):
            return list(group)
    return sorted(n for n in linear_names if n not in _HEAD_NAMES)


def inspect_model(
    path: Path,
    *,
    objective: str | None = None,
    num_labels: int = 2,
    trust_remote_code: bool = False,
) -> ModelInfo:
    """Read `config.json` under `path` and build the model on the meta device.

    `objective` picks the head ("sequence_classification", "causal_lm",
    "masked_lm"); by default the model's language-model head.
    """
    load_transformers()
    import torch
    from transformers import AutoConfig
    from transformers.models.auto import modeling_auto as auto

    config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    model_type = config.model_type
    causal = model_type in auto.MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    masked = model_type in auto.MODEL_FOR_MASKED_LM_MAPPING_NAMES
    seq_cls = model_type in auto.MODEL_FOR_SEQUENCE_CLASSIFICATION_MAPPING_NAMES
    # Encoders (BERT family) appear in both LM mappings; they train with masked LM.
    is_encoder = (
        masked
        and not bool(getattr(config, "is_decoder", False))
        and (not causal or model_type in _ENCODER_TYPES)
    )
    if objective == "sequence_classification":
        from transformers import AutoModelForSequenceClassification

        auto_cls: Any = AutoModelForSequenceClassification
        config.num_labels = num_labels
    elif objective == "causal_lm":
        auto_cls = _auto_class(causal=True, masked=False)
    elif objective == "masked_lm":
        auto_cls = _auto_class(causal=False, masked=True)
    else:
        auto_cls = _auto_class(causal=causal and not is_encoder, masked=masked)
    with torch.device("meta"):
        model = auto_cls.from_config(config, trust_remote_code=trust_remote_code)
    layers = tuple(
        (name, module.in_features, module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear)
    )
    linear = frozenset(name.rsplit(".", 1)[-1] for name, _, _ in layers)
    num_parameters = sum(p.numel() for p in model.parameters())
    return ModelInfo(
        model_type=model_type,
        architectures=list(getattr(config, "architectures", None) or []),
        num_parameters=num_parameters,
        hidden_size=_first(config, "hidden_size", "d_model", "n_embd"),
        num_layers=_first(config, "num_hidden_layers", "n_layer", "num_layers"),
        vocab_size=_first(config, "vocab_size"),
        max_position_embeddings=_first(config, "max_position_embeddings", "n_positions"),
        linear_module_names=linear,
        supports_causal_lm=causal,
        supports_masked_lm=masked,
        supports_sequence_classification=seq_cls,
        supports_gradient_checkpointing=bool(
            getattr(model, "supports_gradient_checkpointing", False)
        ),
        is_encoder=is_encoder,
        num_attention_heads=_first(config, "num_attention_heads", "n_head"),
        num_key_value_heads=_first(config, "num_key_value_heads", "num_attention_heads", "n_head"),
        intermediate_size=_first(config, "intermediate_size", "n_inner", "ffn_dim"),
        tie_word_embeddings=bool(getattr(config, "tie_word_embeddings", False)),
        linear_layers=layers,
        needs_remote_code=bool(getattr(config, "auto_map", None)),
        model_class=type(model).__name__,
        config=config.to_dict(),
    )


_ENCODER_TYPES = frozenset(
    {
        "bert",
        "roberta",
        "xlm-roberta",
        "distilbert",
        "electra",
        "camembert",
        "deberta",
        "deberta-v2",
        "albert",
        "mpnet",
        "modernbert",
        "ernie",
        "megatron-bert",
        "xlm",
    }
)


def _auto_class(*, causal: bool, masked: bool) -> Any:
    load_transformers()
    from transformers import AutoModel, AutoModelForCausalLM, AutoModelForMaskedLM

    if causal:
        return AutoModelForCausalLM
    if masked:
        return AutoModelForMaskedLM
    return AutoModel


def _first(config: Any, *names: str) -> int | None:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None
