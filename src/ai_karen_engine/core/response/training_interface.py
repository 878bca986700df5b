"""The seed's import path, re-exporting flextrain's public API unchanged."""

from flextrain import (
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ConfigValidationError,
    DatasetRegistry,
    ExpertTrainingConfig,
    FlexibleTrainingInterface,
    HardwareConstraints,
    ModelCompatibility,
    ModelCompatibilityChecker,
    ModelResolver,
    TrainingEnvironmentManager,
    TrainingJob,
    TrainingMode,
    TrainingParameterValidator,
    TrainingStatus,
    TrainingType,
)

__all__ = [
    "AdvancedTrainingConfig",
    "BasicTrainingConfig",
    "ConfigValidationError",
    "DatasetRegistry",
    "ExpertTrainingConfig",
    "FlexibleTrainingInterface",
    "HardwareConstraints",
    "ModelCompatibility",
    "ModelCompatibilityChecker",
    "ModelResolver",
    "TrainingEnvironmentManager",
    "TrainingJob",
    "TrainingMode",
    "TrainingParameterValidator",
    "TrainingStatus",
    "TrainingType",
]
