"""Can this model be trained this way here? A first, rough answer.

Reads only the model's config (meta device); memory is a rough upper bound
from bytes per parameter (HF "model memory anatomy": 16 B/param for fp32
AdamW, weights only for a frozen LoRA base) plus an activation allowance.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, Field

from flextrain.config.enums import TrainingType
from flextrain.hardware.detect import HardwareConstraints
from flextrain.models.inspect import ModelInfo, choose_lora_targets, inspect_model
from flextrain.models.resolve import ModelNotFoundError, ModelResolver

_GIB = 1024**3
_BASELINE_GB = 0.8  # torch + transformers imported in the worker (measured ~0.6-0.9 GB)
_FULL_BYTES_PER_PARAM = 16  # fp32 weights 4 + grads 4 + AdamW m,v 8
_LORA_BYTES_PER_PARAM = 4  # frozen fp32 base; adapters are ~1% on top


class ModelCompatibility(BaseModel):
    model_config = {"protected_namespaces": ()}

    model_id: str
    training_type: TrainingType | None = None
    is_compatible: bool
    architecture: str | None = None
    model_type: str | None = None
    num_parameters: int | None = None
    supported_training_types: list[TrainingType] = Field(default_factory=list)
    unsupported_reasons: dict[str, str] = Field(default_factory=dict)
    lora_target_modules: list[str] = Field(default_factory=list)
    max_sequence_length: int | None = None
    supports_gradient_checkpointing: bool = False
    required_memory_gb: float | None = None
    available_memory_gb: float | None = None
    memory_kind: str | None = Field(None, description="'gpu' or 'system' memory compared.")
    recommended_batch_size: int | None = None
    estimated_training_time_hours: float | None = None
    framework_versions: dict[str, str] = Field(default_factory=dict)
    issues: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)
    recommendations: list[str] = Field(default_factory=list)


def framework_versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "peft", "accelerate", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def supported_types(info: ModelInfo) -> tuple[list[TrainingType], dict[str, str]]:
    """Which training types the model's heads and modules allow, and why not."""
    supported: list[TrainingType] = []
    reasons: dict[str, str] = {}
    has_lm = info.supports_causal_lm or info.supports_masked_lm
    has_head = has_lm or info.supports_sequence_classification
    for ttype, ok, why in (
        (TrainingType.FINE_TUNING, has_head, "no trainable head (LM or classification)"),
        (
            TrainingType.LORA_ADAPTATION,
            bool(choose_lora_targets(info.linear_module_names)),
            "no linear layers to adapt",
        ),
        (TrainingType.CONTINUED_PRETRAINING, has_lm, "no causal- or masked-LM head"),
        (
            TrainingType.TASK_SPECIFIC,
            info.supports_sequence_classification,
            "no sequence-classification head in transformers",
        ),
        (TrainingType.FULL_TRAINING, has_head, "no trainable head"),
    ):
        if ok:
            supported.append(ttype)
        else:
            reasons[ttype.value] = why
    return supported, reasons


def rough_memory_gb(
    info: ModelInfo, training_type: TrainingType, batch_size: int, max_length: int
) -> float:
    """Upper-bound-ish memory for training, in GB (the full estimator refines this)."""
    per_param = (
        _LORA_BYTES_PER_PARAM
        if training_type == TrainingType.LORA_ADAPTATION
        else _FULL_BYTES_PER_PARAM
    )
    states = info.num_parameters * per_param
    hidden = info.hidden_size or 768
    layers = info.num_layers or 12
    # Korthikanti et al.: ~34 bytes * s * b * h per layer without recompute.
    activations = 34 * batch_size * max_length * hidden * layers
    return _BASELINE_GB + (states + activations) / _GIB


class ModelCompatibilityChecker:
    """Answers `check(model_id, training_type)` from the model's config alone."""

    def __init__(self, resolver: ModelResolver) -> None:
        self.resolver = resolver

    def check(
        self,
        model_id: str,
        training_type: TrainingType | None = None,
        *,
        hardware: HardwareConstraints | None = None,
        batch_size: int = 8,
        max_length: int = 512,
    ) -> ModelCompatibility:
        versions = framework_versions()
        try:
            resolved = self.resolver.resolve_config(model_id)
            info = inspect_model(resolved.path)
        except ModelNotFoundError as exc:
            return ModelCompatibility(
                model_id=model_id,
                training_type=training_type,
                is_compatible=False,
                framework_versions=versions,
                issues=[str(exc)],
            )
        except (ValueError, OSError, KeyError) as exc:
            # transformers raises ValueError for unknown model types / remote code.
            return ModelCompatibility(
                model_id=model_id,
                training_type=training_type,
                is_compatible=False,
                framework_versions=versions,
                issues=[
                    f"Model '{model_id}' cannot be loaded by transformers "
                    f"{versions['transformers']}: {exc}".strip()
                ],
                recommendations=[
                    "Update transformers, or if the model ships its own code, "
                    "review it and opt in to trust_remote_code."
                ],
            )
        hw = hardware or HardwareConstraints.detect_current()
        supported, reasons = supported_types(info)
        result: dict[str, Any] = {
            "model_id": model_id,
            "training_type": training_type,
            "architecture": (info.architectures or [info.model_type])[0],
            "model_type": info.model_type,
            "num_parameters": info.num_parameters,
            "supported_training_types": supported,
            "unsupported_reasons": reasons,
            "lora_target_modules": choose_lora_targets(info.linear_module_names),
            "max_sequence_length": info.max_position_embeddings,
            "supports_gradient_checkpointing": info.supports_gradient_checkpointing,
            "framework_versions": versions,
        }
        issues: list[str] = []
        warnings: list[str] = []
        recommendations: list[str] = []
        if training_type is not None and training_type not in supported:
            issues.append(
                f"{training_type.value} is not supported: {reasons[training_type.value]}."
            )
        ttype = training_type or TrainingType.FINE_TUNING
        seq = min(max_length, info.max_position_embeddings or max_length)
        on_gpu = hw.gpu_count > 0
        available = hw.available_gpu_memory_gb if on_gpu else hw.available_memory_gb
        required = rough_memory_gb(info, ttype, batch_size, seq)
        batch = batch_size
        while batch > 1 and rough_memory_gb(info, ttype, batch, seq) > available * 0.9:
            batch //= 2
        if rough_memory_gb(info, ttype, batch, seq) > available * 0.9:
            issues.append(
                f"Not enough {'GPU' if on_gpu else 'system'} memory: about {required:.1f} GB "
                f"needed, {available:.1f} GB available."
            )
            if ttype != TrainingType.LORA_ADAPTATION:
                recommendations.append("Use LoRA adaptation: the base weights stay frozen.")
        elif batch < batch_size:
            recommendations.append(f"Lower the batch size to {batch} to fit in memory.")
        if not on_gpu and info.num_parameters > 500_000_000:
            warnings.append("Training a model this size on CPU will be very slow.")
        return ModelCompatibility(
            **result,
            is_compatible=not issues,
            required_memory_gb=round(required, 3),
            available_memory_gb=round(available, 3),
            memory_kind="gpu" if on_gpu else "system",
            recommended_batch_size=batch,
            issues=issues,
            warnings=warnings,
            recommendations=recommendations,
        )
