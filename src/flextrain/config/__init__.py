"""Configuration schemas, presets and validation rules (pure; no torch)."""

from flextrain.config.enums import TrainingMode, TrainingStatus, TrainingType
from flextrain.config.presets import PRESET_NAMES, describe_presets, preset_values
from flextrain.config.schemas import (
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertTrainingConfig,
)
from flextrain.config.validation import (
    ConfigValidationError,
    DatasetFacts,
    ModelFacts,
    TrainingParameterValidator,
    ValidationIssue,
)

__all__ = [
    "PRESET_NAMES",
    "AdvancedTrainingConfig",
    "BasicTrainingConfig",
    "ConfigValidationError",
    "DatasetFacts",
    "ExpertTrainingConfig",
    "ModelFacts",
    "TrainingMode",
    "TrainingParameterValidator",
    "TrainingStatus",
    "TrainingType",
    "ValidationIssue",
    "describe_presets",
    "preset_values",
]
