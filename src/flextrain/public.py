"""What the front ends may use of the service layer besides the facade (`service.py`).

The API, the CLI, the web page, the Python interface and the demo do their work
through `TrainingService`; this module names the rest they need of the layer behind
it: the data types its methods take and return, the constants they pass, the errors
they catch, and a few pure helpers. It is the one surface they see, so the modules
behind it (`jobs`, `models`, `data`, `db` ...) may be rearranged without touching a
front end; an import-linter contract in pyproject.toml keeps the front ends to it.

Plain re-exports, loaded together: importing this module loads SQLAlchemy and
pydantic (not torch, transformers or FastAPI), so the CLI imports it only inside
the commands that need it, or under TYPE_CHECKING.
"""

from __future__ import annotations

from flextrain.data.checks import DataReport, RowIssue, Severity
from flextrain.data.formats import SourceFormat, has_unencodable_text
from flextrain.data.manager import (
    VALIDATION_FIX,
    DatasetInUseError,
    DatasetValidationError,
    TrainingDataManager,
    split_ref,
)
from flextrain.data.preview import Preview
from flextrain.data.registry import DatasetInfo, DatasetNotFoundError
from flextrain.data.registry import not_registered as dataset_not_registered
from flextrain.data.shapes import SHAPES, ColumnMap, Shape
from flextrain.db import DatabaseTooNewError
from flextrain.jobs.checkpoints import CheckpointInfo, CheckpointNotFoundError
from flextrain.jobs.environment import TrainingEnvironment
from flextrain.jobs.errors import JobNotFoundError, JobStateError
from flextrain.jobs.scheduler import QueueSnapshot, SchedulerLoop, TickReport
from flextrain.jobs.store import JobEvent, TrainingJob
from flextrain.models.builtin import BUILTIN_DESCRIPTIONS, BUILTIN_IDS, MINILM_ID
from flextrain.models.compatibility import NO_DATASET, ModelCompatibility
from flextrain.models.evaluate import EvaluationResult, ModelAnswer, Split, TryResult
from flextrain.models.export import EXPORT_FORMATS, ExportFormat, ExportResult, MergeResult
from flextrain.models.gguf_file import GGUF_QUANTS, GGUFQuant
from flextrain.models.gguf_parity import ParityReport
from flextrain.models.heavy import load_transformers
from flextrain.models.hub import HubAccess, HubOfflineError, ModelFilters, TrainableListing
from flextrain.models.lineage import ModelDiff
from flextrain.models.pull import PullProgress, PullResult
from flextrain.models.registry import ModelRegistry, RegisteredModel
from flextrain.models.registry import not_registered as model_not_registered
from flextrain.models.resolve import ModelResolver

__all__ = [
    "BUILTIN_DESCRIPTIONS",
    "BUILTIN_IDS",
    "EXPORT_FORMATS",
    "GGUF_QUANTS",
    "MINILM_ID",
    "NO_DATASET",
    "SHAPES",
    "VALIDATION_FIX",
    "CheckpointInfo",
    "CheckpointNotFoundError",
    "ColumnMap",
    "DataReport",
    "DatabaseTooNewError",
    "DatasetInUseError",
    "DatasetInfo",
    "DatasetNotFoundError",
    "DatasetValidationError",
    "EvaluationResult",
    "ExportFormat",
    "ExportResult",
    "GGUFQuant",
    "HubAccess",
    "HubOfflineError",
    "JobEvent",
    "JobNotFoundError",
    "JobStateError",
    "MergeResult",
    "ModelAnswer",
    "ModelCompatibility",
    "ModelDiff",
    "ModelFilters",
    "ModelRegistry",
    "ModelResolver",
    "ParityReport",
    "Preview",
    "PullProgress",
    "PullResult",
    "QueueSnapshot",
    "RegisteredModel",
    "RowIssue",
    "SchedulerLoop",
    "Severity",
    "Shape",
    "SourceFormat",
    "Split",
    "TickReport",
    "TrainableListing",
    "TrainingDataManager",
    "TrainingEnvironment",
    "TrainingJob",
    "TryResult",
    "dataset_not_registered",
    "has_unencodable_text",
    "load_transformers",
    "model_not_registered",
    "split_ref",
]
