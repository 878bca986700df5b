"""Request and response bodies of the REST API that are not service models.

Jobs, compatibility reports and hardware are returned as the service's own
pydantic models (TrainingJob, ModelCompatibility, HardwareConstraints), so the
Python API, the CLI's --json and the REST API show the same fields.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from flextrain.accounts.audit import AuditEntry
from flextrain.accounts.users import Role, User
from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import MAX_ID, AdvancedTrainingConfig
from flextrain.public import JobEvent, RegisteredModel, TrainingJob


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the field, e.g. 'learning_rate'.")
    message: str
    fix: str | None = None


class ErrorBody(BaseModel):
    """Every 4xx/5xx answer: a sentence for people, the fields for programs."""

    detail: str
    code: str | None = Field(
        None,
        description="Stable code of the kind of error (e.g. 'job_not_found'); null for "
        "request-shape and HTTP errors.",
    )
    errors: list[FieldError] = Field(default_factory=list)


class CompatibilityRequest(BaseModel):
    model_id: str = Field(
        min_length=1, max_length=MAX_ID, description="Built-in name, local folder or hub id."
    )
    training_type: TrainingType | None = None
    dataset_id: str | None = Field(None, max_length=MAX_ID)
    batch_size: int = Field(8, ge=1, le=4096)
    max_length: int = Field(512, ge=8, le=131072)
    probe: bool = Field(False, description="Run a few real steps to calibrate (trainer role).")
    config: AdvancedTrainingConfig | None = Field(
        None, description="A full config to check instead of batch_size/max_length."
    )


class TrainableModel(BaseModel):
    model_config = {"protected_namespaces": ()}

    model_id: str
    description: str
    num_parameters: int | None
    supported_training_types: list[TrainingType]
    is_compatible: bool
    source: Literal["builtin", "local", "hub"] = "builtin"
    task: str | None = Field(None, description="Hub task (pipeline tag), e.g. text-generation.")
    library: str | None = None
    license: str | None = None
    downloads: int | None = Field(None, description="Hub downloads (hub models only).")
    gated: bool = Field(False, description="Pulling needs a token with access (HF_TOKEN).")
    path: str | None = None
    note: str | None = Field(None, description="Why facts are missing, or what pulling needs.")


class ModelSearchResult(BaseModel):
    items: list[TrainableModel]
    notes: list[str] = Field(
        default_factory=list, description="E.g. that the hub was not searched, and why."
    )


class PullRequest(BaseModel):
    model_id: str = Field(
        min_length=1,
        max_length=192,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,95}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,95})?$",
        description="Hub id, owner/name.",
    )
    revision: str = Field(
        "main",
        min_length=1,
        max_length=100,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
        description="Branch, tag or commit.",
    )


class PullStatus(BaseModel):
    """A download started by POST /api/training/models/pull, kept in the server's memory
    (a restart forgets it; the files already pulled stay in the cache)."""

    pull_id: str
    model_id: str
    revision: str
    status: Literal["running", "completed", "failed"]
    bytes_done: int = 0
    bytes_total: int = 0
    percent: float = 0.0
    files_done: int = 0
    files_total: int = 0
    error: str | None = None
    path: str | None = Field(None, description="The snapshot folder once completed.")
    requested_by: str | None = None
    started_at: datetime
    finished_at: datetime | None = None


class ModelEntry(BaseModel):
    model_id: str
    source: Literal["builtin", "local", "trained"]
    description: str
    path: str | None = None
    job_id: str | None = None


class ModelRegistration(BaseModel):
    """POST /api/training/models/registry: name a model folder on the server."""

    path: str = Field(
        min_length=1,
        max_length=2000,
        description="A folder written by save_pretrained() (config.json, *.safetensors) on "
        "the server; trainers may name folders inside FLEXTRAIN_HOME or the allowed roots.",
    )
    name: str = Field(
        min_length=1, max_length=200, description="The model id jobs will use, e.g. 'team/llama'."
    )
    description: str = Field("", max_length=1000)


class ModelJobUse(BaseModel):
    """A job that trained from a registered model."""

    job_id: str
    model_id: str = Field("", description="How the job named the model (a version, or the name).")
    status: TrainingStatus
    training_type: TrainingType
    owner: str | None = None
    created_at: datetime


class RegisteredModelDetail(RegisteredModel):
    versions: list[RegisteredModel] = Field(
        default_factory=list,
        description="Every version of the name (that you may see), oldest first.",
    )
    jobs: list[ModelJobUse] = Field(
        default_factory=list, description="Jobs that trained from it (that you may see)."
    )


class ModelPromotion(BaseModel):
    """POST /api/training/models/registry/promote: make a model the latest of a name."""

    source: str = Field(
        min_length=1,
        max_length=300,
        description="A registered version ('team/llama:2', or a name for its latest) or a "
        "completed job's id.",
    )
    name: str = Field(
        min_length=1, max_length=200, description="The name it becomes the newest version of."
    )
    description: str = Field("", max_length=1000)


class ModelRemoved(BaseModel):
    name: str
    path: str
    versions: list[int] = Field(default_factory=list, description="The versions removed.")
    detail: str = Field(description="What was removed: the registration, never the files.")


class LogTail(BaseModel):
    job_id: str
    lines: list[str]


class MetricHistory(BaseModel):
    job_id: str
    history: list[dict[str, Any]]


class JobTimeline(BaseModel):
    """What happened to a job besides its metrics: warnings, interruptions, resumes."""

    job_id: str
    events: list[JobEvent]


class SystemSamples(BaseModel):
    """CPU, memory and GPU use sampled by the worker (`at`: ISO 8601 time)."""

    job_id: str
    samples: list[dict[str, Any]]


class DatasetSummary(BaseModel):
    dataset_id: str
    path: str
    format: str
    num_rows: int
    columns: list[str]
    text_column: str | None
    label_column: str | None
    labels: list[str]
    description: str = ""
    version: str | None = Field(None, description="SHA-256 of the latest version's content.")
    shape: str | None = None
    owner: str | None = Field(None, description="Who registered it; None for bundled demos.")
    shared: bool = Field(True, description="Visible to every user, not only its owner.")


class DatasetUploaded(DatasetSummary):
    """An upload that was registered: the dataset, and what its checks warned about."""

    warnings: list[FieldError] = Field(
        default_factory=list,
        description="Problems that do not block training (duplicate rows, integer and "
        "string labels mixed in one column ...), each with its fix.",
    )


class DatasetIssue(BaseModel):
    """One problem the checks found: where (row among the records, line in the file) and
    what. A line that is not a record has a line and no row; a problem of a whole column
    has neither."""

    severity: Literal["error", "warning"]
    row: int | None = Field(None, description="1-based among the records read.")
    line: int | None = Field(None, description="Line of the uploaded file, where it has lines.")
    field: str = Field(description="The part at fault: text, label, messages, record ...")
    message: str = Field(description="The problem, with its row and line, as the CLI says it.")
    fix: str | None = None


class DatasetValidation(BaseModel):
    """POST /api/datasets/validate: what `flextrain datasets validate` reports for a file,
    nothing registered. `ok` is false when there is any error; the first 50 issues are
    listed (errors in file order first) and the rest counted."""

    ok: bool = Field(description="No errors: the file can be saved and trained on.")
    file_name: str
    format: str = Field(description="The file format read: jsonl, json, csv, parquet, text ...")
    shape: str = Field(description="text, classification, instruction, chat or completion.")
    rows: int = Field(description="Records read.")
    columns: list[str] = Field(description="Columns seen in the records.")
    mapping: dict[str, str] = Field(description="Which column serves as each part of the shape.")
    labels: dict[str, int] = Field(
        default_factory=dict, description="Classification: rows per label."
    )
    duplicate_rows: int = 0
    error_count: int = Field(description="Every error, listed or not.")
    warning_count: int = Field(description="Every warning, listed or not.")
    errors: list[DatasetIssue] = Field(default_factory=list)
    warnings: list[DatasetIssue] = Field(default_factory=list)
    errors_not_shown: int = Field(0, description="Errors beyond those listed.")
    warnings_not_shown: int = Field(0, description="Warnings beyond those listed.")
    summary: str = Field(description="The report as `flextrain datasets validate` prints it.")


class DatasetPreview(BaseModel):
    """The first rows of a dataset (of its latest or pinned version), as training reads
    them: the shape's canonical fields for a registered version."""

    dataset_id: str
    version: str | None = None
    shape: str | None = None
    columns: list[str]
    rows: list[dict[str, Any]] = Field(
        description="At most `limit` rows; strings over 1,000 characters are cut short."
    )
    total_rows: int
    truncated_values: int = Field(0, description="String values cut to 1,000 characters.")


class DatasetVersionSummary(BaseModel):
    version: str = Field(description="SHA-256 of the version's canonical content.")
    shape: str
    num_rows: int
    size_bytes: int
    source_name: str
    owner: str | None
    created_at: datetime
    jobs: list[str] = Field(description="Jobs that trained on this version.")


class Health(BaseModel):
    status: Literal["ok"]
    version: str
    database: Literal["ok"]
    auth: bool


class Me(BaseModel):
    name: str
    role: Role


class UserCreate(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    role: Role = Role.TRAINER


class UserCreated(BaseModel):
    user: User
    token: str = Field(description="Shown once; only its hash is stored.")


class AuditPage(BaseModel):
    items: list[AuditEntry]
    total: int
    limit: int
    offset: int


class EventProgress(BaseModel):
    """The `progress` event of a job's event stream (also the first event)."""

    job: TrainingJob


class EventEnd(BaseModel):
    job_id: str
    status: str
    at: datetime


class ExpertYaml(BaseModel):
    """The expert section of the web form: YAML of expert config keys."""

    yaml: str = Field(max_length=20_000, description="YAML mapping of expert config keys.")


class ExpertCheck(BaseModel):
    """The YAML as config keys, and what the validator says about them."""

    config: dict[str, Any]
    issues: list[FieldError] = Field(default_factory=list)
    warnings: list[FieldError] = Field(default_factory=list)
