"""The seed's import path: flextrain's public API under the original module's names.

Every public name of the original `training_interface` module is here (its enums,
configs, hardware and compatibility facts, environment, job, checker, environment
manager, validator and interface, and the TrainingDataManager it imported), so a
program written for it runs unchanged, against real training. Where the original's
behaviour was a placeholder, flextrain trains for real or says clearly why not:
docs/compat.md lists each difference.
"""

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
    TrainingDataManager,
    TrainingEnvironment,
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
    "TrainingDataManager",
    "TrainingEnvironment",
    "TrainingEnvironmentManager",
    "TrainingJob",
    "TrainingMode",
    "TrainingParameterValidator",
    "TrainingStatus",
    "TrainingType",
]
