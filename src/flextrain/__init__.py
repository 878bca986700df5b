"""flextrain: check, estimate and really train Hugging Face models on your own hardware.

The public Python API lives here; submodules are implementation detail. Heavy
libraries (torch, transformers) are imported only where training or model
inspection needs them, so importing flextrain itself stays fast.
"""

from flextrain.config import (
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ConfigValidationError,
    TrainingMode,
    TrainingParameterValidator,
    TrainingStatus,
    TrainingType,
    ValidationIssue,
)
from flextrain.data.checks import DataReport
from flextrain.data.manager import DatasetValidationError, TrainingDataManager
from flextrain.data.registry import DatasetNotFoundError, DatasetRegistry
from flextrain.data.shapes import ColumnMap
from flextrain.hardware import GPUInfo, HardwareConstraints
from flextrain.interface import FlexibleTrainingInterface
from flextrain.jobs.environment import TrainingEnvironment, TrainingEnvironmentManager
from flextrain.jobs.store import TrainingJob
from flextrain.models.compatibility import ModelCompatibility, ModelCompatibilityChecker
from flextrain.models.resolve import ModelNotFoundError, ModelResolver
from flextrain.settings import Settings

__all__ = [
    "AdvancedTrainingConfig",
    "BasicTrainingConfig",
    "ColumnMap",
    "ConfigValidationError",
    "DataReport",
    "DatasetNotFoundError",
    "DatasetRegistry",
    "DatasetValidationError",
    "FlexibleTrainingInterface",
    "GPUInfo",
    "HardwareConstraints",
    "ModelCompatibility",
    "ModelCompatibilityChecker",
    "ModelNotFoundError",
    "ModelResolver",
    "Settings",
    "TrainingDataManager",
    "TrainingEnvironment",
    "TrainingEnvironmentManager",
    "TrainingJob",
    "TrainingMode",
    "TrainingParameterValidator",
    "TrainingStatus",
    "TrainingType",
    "ValidationIssue",
]
__version__ = "0.1.0"
