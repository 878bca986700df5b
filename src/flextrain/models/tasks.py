"""Which objective and which precision a run uses (pure decisions, shared by the
service, the compatibility check and the estimator)."""

from __future__ import annotations

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.config.validation import ConfigValidationError, ValidationIssue
from flextrain.data.registry import DatasetInfo
from flextrain.hardware.detect import HardwareConstraints
from flextrain.jobs.spec import Objective, Precision
from flextrain.models.inspect import ModelInfo


def choose_objective(ttype: TrainingType, model: ModelInfo, data: DatasetInfo | None) -> Objective:
    """The training objective for a type, a model and a dataset, or a clear error.

    Labelled data means classification for every type except continued
    pre-training, which always trains the language-model objective on the text.
    Preference and reward training always trains a causal LM (a KTO set's true/false
    label marks answers, it is not a class).
    """
    if ttype.is_preference:
        if model.supports_causal_lm and not model.is_encoder:
            return "causal_lm"
        raise ConfigValidationError(
            [
                ValidationIssue(
                    "training_type",
                    f"{ttype.value} trains a causal language model, and model type "
                    f"'{model.model_type}' has no causal-LM head.",
                    "use a decoder model (Llama, Qwen, GPT-2 ...), e.g. flextrain/tiny-llama.",
                )
            ]
        )
    classify = ttype == TrainingType.TASK_SPECIFIC or (
        data is not None and data.has_labels and ttype != TrainingType.CONTINUED_PRETRAINING
    )
    if classify:
        if not model.supports_sequence_classification:
            raise ConfigValidationError(
                [
                    ValidationIssue(
                        "training_type",
                        f"model type '{model.model_type}' has no sequence-classification head.",
                        "use a model supported by AutoModelForSequenceClassification, "
                        "or a dataset without labels for language modelling.",
                    )
                ]
            )
        return "sequence_classification"
    if model.is_encoder and model.supports_masked_lm:
        return "masked_lm"
    if model.supports_causal_lm:
        return "causal_lm"
    raise ConfigValidationError(
        [
            ValidationIssue(
                "training_type",
                f"model type '{model.model_type}' has no language-model head for text data.",
                "use a labelled dataset (classification) or a causal/masked LM model.",
            )
        ]
    )


def choose_precision(config: AdvancedTrainingConfig, hw: HardwareConstraints) -> Precision:
    """Explicit fp16/bf16 win; otherwise use_mixed_precision picks what the GPU does best."""
    if config.bf16:
        return "bf16"
    if config.fp16:
        return "fp16"
    if config.use_mixed_precision and hw.gpu_count > 0:
        return "bf16" if hw.supports_bf16 else "fp16"
    return "fp32"
