"""flextrain: check, estimate and really train Hugging Face models on your own hardware.

The public Python API lives here; submodules are implementation detail. Heavy
libraries (torch, transformers) are imported only where training or model
inspection needs them, so importing flextrain itself stays fast.

The names below are loaded on first use (PEP 562 `__getattr__`): every process
imports this package first, including `flextrain --help` and the training
worker, and importing all of them eagerly (the service, the store, the data
manager with SQLAlchemy) would cost each of those processes a few hundred
milliseconds for names it never touches. `from flextrain import X` works as
before.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flextrain.config import (
        AdvancedTrainingConfig,
        BasicTrainingConfig,
        ConfigValidationError,
        ExpertTrainingConfig,
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

# Public name -> the module that defines it (kept in step with the imports above;
# tests/test_startup.py checks that both agree and that every name resolves).
_EXPORTS = {
    "AdvancedTrainingConfig": "flextrain.config",
    "BasicTrainingConfig": "flextrain.config",
    "ColumnMap": "flextrain.data.shapes",
    "ConfigValidationError": "flextrain.config",
    "DataReport": "flextrain.data.checks",
    "DatasetNotFoundError": "flextrain.data.registry",
    "DatasetRegistry": "flextrain.data.registry",
    "DatasetValidationError": "flextrain.data.manager",
    "ExpertTrainingConfig": "flextrain.config",
    "FlexibleTrainingInterface": "flextrain.interface",
    "GPUInfo": "flextrain.hardware",
    "HardwareConstraints": "flextrain.hardware",
    "ModelCompatibility": "flextrain.models.compatibility",
    "ModelCompatibilityChecker": "flextrain.models.compatibility",
    "ModelNotFoundError": "flextrain.models.resolve",
    "ModelResolver": "flextrain.models.resolve",
    "Settings": "flextrain.settings",
    "TrainingDataManager": "flextrain.data.manager",
    "TrainingEnvironment": "flextrain.jobs.environment",
    "TrainingEnvironmentManager": "flextrain.jobs.environment",
    "TrainingJob": "flextrain.jobs.store",
    "TrainingMode": "flextrain.config",
    "TrainingParameterValidator": "flextrain.config",
    "TrainingStatus": "flextrain.config",
    "TrainingType": "flextrain.config",
    "ValidationIssue": "flextrain.config",
}

__all__ = [
    "AdvancedTrainingConfig",
    "BasicTrainingConfig",
    "ColumnMap",
    "ConfigValidationError",
    "DataReport",
    "DatasetNotFoundError",
    "DatasetRegistry",
    "DatasetValidationError",
    "ExpertTrainingConfig",
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'flextrain' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
