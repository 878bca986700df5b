"""The local model registry: names for model folders, and where trained models came from.

A registered name stands for a folder on this machine and works wherever a model
id does: the resolver asks the registry before it looks at the disk or the hub,
so a registered name wins over a hub id spelled the same. Folders are checked
when they are registered (config.json, safetensors weights, a config transformers
can read) and described once (architecture, parameters, training types), so
`list` needs no model loading.

A job that completes registers its model folder itself (the worker does it, so it
happens with no API server running), named after the run (or the job id), with
its lineage: base model, dataset and version, config and metrics.

Removing a registration never touches the files. It is refused while a job that
has not finished names the model: a pending or queued job resolves the name only
when it starts, and would then fail.
"""

from __future__ import annotations

import builtins
import json
import math
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import JSON, BigInteger, Boolean, DateTime, String, false, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from flextrain.db import Base, as_utc
from flextrain.errors import ConflictError, InvalidInputError
from flextrain.jobs.store import JobRecord, TrainingJob
from flextrain.models.resolve import ModelNotFoundError, ModelResolver

# Letters, digits, '_', '.', '-', and at most one '/': the dataset names' rule. It keeps
# names apart from paths ('/', '.', '~' first) and from hub ids with a revision.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,99})?$")
RESERVED_PREFIX = "flextrain/"  # the built-in models' namespace
MAX_NAME, MAX_PATH = 200, 2000  # the columns' lengths (PostgreSQL enforces them)
ModelSource = Literal["local", "trained"]


def _now() -> datetime:
    return datetime.now(UTC)


class ModelRegistryError(InvalidInputError, ValueError):
    """A name or folder that cannot be registered; the message names the fix."""

    code = "model_registry"
    field = "name"


class ModelNameTakenError(ConflictError, ModelRegistryError):
    """Another registration has this name."""

    code = "model_name_taken"


class ModelInUseError(ConflictError, ModelRegistryError):
    """A job that has not finished names this model."""

    code = "model_in_use"


class ModelNotRegisteredError(ModelNotFoundError):
    """No registration has this name."""

    code = "model_not_registered"
    field = "name"


class ModelRecord(Base):
    __tablename__ = "models"

    name: Mapped[str] = mapped_column(String(MAX_NAME), primary_key=True)
    path: Mapped[str] = mapped_column(String(MAX_PATH))
    source: Mapped[str] = mapped_column(String(16))
    # A LoRA adapter folder holds no full model: it cannot be a job's model_id as it is.
    adapter: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    architecture: Mapped[str | None] = mapped_column(String(200))
    model_type: Mapped[str | None] = mapped_column(String(64))
    num_parameters: Mapped[int | None] = mapped_column(BigInteger)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    training_types: Mapped[list[str]] = mapped_column(JSON, default=list)
    base_model: Mapped[str | None] = mapped_column(String(500))
    job_id: Mapped[str | None] = mapped_column(String(32), index=True)
    dataset_id: Mapped[str | None] = mapped_column(String(500))
    dataset_version: Mapped[str | None] = mapped_column(String(64))
    config: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    metrics: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True))
    owner: Mapped[str | None] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class RegisteredModel(BaseModel):
    """A registered model as every front end sees it."""

    model_config = ConfigDict(protected_namespaces=())

    name: str
    path: str
    source: ModelSource = Field(description="'local' (registered by hand) or 'trained' (a job).")
    adapter: bool = Field(False, description="A LoRA adapter: merge it before training from it.")
    architecture: str | None = None
    model_type: str | None = None
    num_parameters: int | None = None
    size_bytes: int | None = Field(None, description="Bytes of the files in the folder.")
    training_types: list[str] = Field(
        default_factory=list, description="Training types the model supports as a base."
    )
    base_model: str | None = Field(None, description="The model a trained one started from.")
    job_id: str | None = Field(None, description="The job that trained it.")
    dataset_id: str | None = None
    dataset_version: str | None = Field(None, description="SHA-256 of the data it trained on.")
    config: dict[str, Any] | None = Field(None, description="The training job's config.")
    metrics: dict[str, Any] | None = Field(None, description="The training job's final metrics.")
    owner: str | None = None
    description: str = ""
    created_at: datetime

    @classmethod
    def from_record(cls, r: ModelRecord) -> RegisteredModel:
        return cls(
            name=r.name,
            path=r.path,
            source="trained" if r.source == "trained" else "local",
            adapter=bool(r.adapter),
            architecture=r.architecture,
            model_type=r.model_type,
            num_parameters=r.num_parameters,
            size_bytes=r.size_bytes,
            training_types=list(r.training_types or []),
            base_model=r.base_model,
            job_id=r.job_id,
            dataset_id=r.dataset_id,
            dataset_version=r.dataset_version,
            config=r.config,
            metrics=r.metrics,
            owner=r.owner,
            description=r.description or "",
            created_at=as_utc(r.created_at),
        )


@dataclass(frozen=True)
class _Facts:
    """What inspection says about a folder; all empty when it could not be read."""

    architecture: str | None = None
    model_type: str | None = None
    num_parameters: int | None = None
    training_types: list[str] = field(default_factory=list)
    model_class: str | None = None  # the class built for the objective inspected with


def is_model_name(text: str) -> bool:
    """`text` has the shape of a registered name (not a path, not a built-in id)."""
    return (
        len(text) <= MAX_NAME
        and bool(NAME_PATTERN.match(text))
        and not text.startswith(RESERVED_PREFIX)
    )


def check_name(name: str) -> str:
    """The name, stripped, or ModelRegistryError saying what is wrong and what to use."""
    name = name.strip()
    if not name:
        raise ModelRegistryError("name is empty. Fix: give a short name, e.g. 'llama-support'.")
    if name.startswith(RESERVED_PREFIX):
        raise ModelRegistryError(
            f"name '{name}': names starting with '{RESERVED_PREFIX}' are the built-in models'. "
            "Fix: choose another name."
        )
    if not NAME_PATTERN.match(name) or len(name) > MAX_NAME:
        shown = name if len(name) <= 60 else name[:60] + "..."
        raise ModelRegistryError(
            f"name {shown!r} is not valid. Fix: use letters, digits, '_', '.', '-' (starting "
            "with a letter or digit, up to 100 characters) and at most one '/' (200 in all), "
            "e.g. 'team/llama-support'."
        )
    return name


class ModelRegistry:
    """Registered model folders: add, list, get, remove, and the jobs that used each."""

    def __init__(
        self,
        sessions: sessionmaker[Any],
        resolver: ModelResolver,
        *,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._sessions = sessions
        self._resolver = resolver
        # Told when a name starts or stops meaning a folder (the service forgets what it
        # inspected under that name).
        self._on_change = on_change or (lambda: None)

    # -- registering -------------------------------------------------------------------
    def add(
        self,
        path: str | Path,
        name: str,
        description: str = "",
        owner: str | None = None,
    ) -> RegisteredModel:
        """Register the model folder `path` as `name` after checking it can be trained.

        The folder needs a config.json transformers can read and safetensors weights
        (pickle weights only where the admin allows them): the rules a job's model
        folder is held to, checked now rather than when a job starts.
        """
        name = check_name(name)
        if len(description) > 1000:
            raise ModelRegistryError("description is over 1000 characters. Fix: shorten it.")
        folder = _folder(path)
        taken = self.find(name)
        if taken is not None:
            raise ModelNameTakenError(
                f"A model named '{name}' is already registered (at {taken.path}). Fix: choose "
                f"another name, or remove it first (`flextrain models remove {name}`)."
            )
        try:
            self._resolver.resolve(str(folder))
        except ModelNotFoundError as exc:
            raise ModelRegistryError(str(exc)) from None
        if not any(folder.glob("*.safetensors")) and not self._resolver.allow_pickle:
            raise ModelRegistryError(
                f"Model folder '{folder}' has no weights (*.safetensors). Fix: point at a "
                "folder written by save_pretrained(), which writes model.safetensors."
            )
        facts = _inspect(folder, strict=True)
        record = ModelRecord(
            name=name,
            path=str(folder),
            source="local",
            adapter=False,
            architecture=facts.architecture,
            model_type=facts.model_type,
            num_parameters=facts.num_parameters,
            size_bytes=_size(folder),
            training_types=facts.training_types,
            owner=owner,
            description=description,
        )
        if not self._insert(record):
            raise ModelNameTakenError(
                f"A model named '{name}' was registered a moment ago. Fix: choose another name."
            )
        self._on_change()
        return self.get(name)

    def register_trained(self, job: TrainingJob, folder: Path | None = None) -> RegisteredModel:
        """Record the model a job saved (in `folder`, else its `model_path`) with its
        lineage: base model, dataset and version, config, metrics.

        Named after the run (its run_name made into a valid name), else the job id;
        a name already taken gets `-<job id>` added. Registering the same job twice
        returns the first registration. The worker calls it once the model is saved,
        just before it marks the job COMPLETED.
        """
        existing = self.for_job(job.job_id)
        if existing is not None:
            return existing
        if folder is None and not job.model_path:
            raise ModelRegistryError(f"Job {job.job_id} has no model folder to register.")
        folder = folder or Path(str(job.model_path))
        lineage = _lineage(folder)
        full = (folder / "config.json").is_file()
        adapter = bool(lineage.get("adapter")) or not full
        facts = _trained_facts(folder, lineage, adapter=adapter)
        base_model = str(lineage.get("base_model") or job.model_id)
        kind = " (LoRA adapter)" if adapter else ""
        metrics = _finite(job.metrics or lineage.get("metrics")) or None
        for name in _trained_names(job):
            record = ModelRecord(
                name=name,
                path=str(folder),
                source="trained",
                adapter=adapter,
                architecture=facts.architecture,
                model_type=facts.model_type,
                num_parameters=facts.num_parameters,
                size_bytes=_size(folder),
                training_types=[] if adapter else facts.training_types,
                base_model=base_model[:500],
                job_id=job.job_id,
                dataset_id=job.dataset_id[:500],
                dataset_version=job.dataset_version,
                config=_finite(job.config),
                metrics=metrics,
                owner=job.owner,
                description=(
                    f"{job.training_type.value} of {base_model} on {job.dataset_id}{kind}"
                )[:1000],
            )
            if self.find(name) is None and self._insert(record):
                self._on_change()
                return self.get(name)
        raise ModelNameTakenError(
            f"Job {job.job_id}: every name tried ({', '.join(_trained_names(job))}) is taken. "
            f"Fix: register {folder} by hand with `flextrain models add`."
        )

    def _insert(self, record: ModelRecord) -> bool:
        """Add the row; False when its name was taken meanwhile (by another process)."""
        try:
            with self._sessions.begin() as session:
                session.add(record)
        except IntegrityError:
            return False
        return True

    # -- reading -----------------------------------------------------------------------
    def find(self, name: str) -> RegisteredModel | None:
        """The registration called `name`, or None."""
        if not is_model_name(name):
            return None  # never a registered name; not worth a query
        with self._sessions() as session:
            record = session.get(ModelRecord, name)
            return RegisteredModel.from_record(record) if record else None

    def get(self, name: str) -> RegisteredModel:
        """The registration called `name`; ModelNotRegisteredError names the way out."""
        found = self.find(name)
        if found is None:
            raise not_registered(name)
        return found

    def for_job(self, job_id: str) -> RegisteredModel | None:
        """The registration of the model job `job_id` trained, if there is one."""
        with self._sessions() as session:
            record = session.scalar(
                select(ModelRecord).where(ModelRecord.job_id == job_id).limit(1)
            )
            return RegisteredModel.from_record(record) if record else None

    def list(self, *, source: ModelSource | None = None) -> builtins.list[RegisteredModel]:
        """Every registration, by name."""
        query = select(ModelRecord).order_by(ModelRecord.name)
        if source is not None:
            query = query.where(ModelRecord.source == source)
        with self._sessions() as session:
            return [RegisteredModel.from_record(r) for r in session.scalars(query)]

    def jobs_using(self, name: str) -> builtins.list[TrainingJob]:
        """Jobs that trained from the model: by its name or by its folder's path; newest
        first."""
        model = self.get(name)
        query = (
            select(JobRecord)
            .where(or_(JobRecord.model_id == model.name, JobRecord.model_id == model.path))
            .order_by(JobRecord.created_at.desc(), JobRecord.job_id)
        )
        with self._sessions() as session:
            return [TrainingJob.from_record(r) for r in session.scalars(query)]

    def folder_for(self, model_id: str) -> Path | None:
        """The folder a registered name stands for; None when `model_id` is no registered
        name. ModelNotFoundError when it is one but cannot be trained from: an adapter,
        or a folder that has gone."""
        model = self.find(model_id)
        if model is None:
            return None
        if model.adapter:
            merge = f" (`flextrain models merge {model.job_id}`)" if model.job_id else ""
            raise ModelNotFoundError(
                f"Model '{model.name}' is a LoRA adapter of '{model.base_model}', not a full "
                f"model. Fix: merge it into its base model first{merge}, then register the "
                f"merged folder; or train a new adapter from '{model.base_model}'."
            )
        folder = Path(model.path)
        if not folder.is_dir():
            raise ModelNotFoundError(
                f"Model '{model.name}' is registered at '{folder}', which is no longer a "
                f"folder. Fix: restore the folder, or remove the registration (`flextrain "
                f"models remove {model.name}`) and register the model where it is now."
            )
        return folder

    # -- removing ----------------------------------------------------------------------
    def remove(self, name: str) -> RegisteredModel:
        """Forget the registration `name`; its files stay where they are.

        Refused (ModelInUseError) while a job that has not finished names the model:
        a pending or queued job resolves the name when it starts and would fail.
        """
        model = self.get(name)
        waiting = [j.job_id for j in self.jobs_using(name) if not j.is_finished]
        if waiting:
            raise ModelInUseError(
                f"Model '{model.name}' is named by unfinished job(s) {', '.join(waiting[:5])}, "
                "which need it when they start. Fix: wait for them to finish or cancel them, "
                "then remove it."
            )
        with self._sessions.begin() as session:
            record = session.get(ModelRecord, model.name)
            if record is not None:
                session.delete(record)
        self._on_change()
        return model


def not_registered(name: str) -> ModelNotRegisteredError:
    """The error for a name with no registration (or one the caller may not see)."""
    shown = name if len(name) <= 60 else name[:60] + "..."
    return ModelNotRegisteredError(
        f"No model named {shown!r} is registered. Fix: see `flextrain models list`, "
        "or register a folder with `flextrain models add PATH --name NAME`."
    )


def _folder(path: str | Path) -> Path:
    """`path` as an absolute folder, or ModelRegistryError naming what is wrong."""
    text = str(path)
    if not text.strip() or "\x00" in text:
        raise ModelRegistryError("path is empty or not a valid path. Fix: give a model folder.")
    try:
        folder = Path(text).expanduser().resolve()
        exists, is_dir = folder.exists(), folder.is_dir()
    except (OSError, RuntimeError) as exc:  # too long, a symlink loop, no home for '~'
        raise ModelRegistryError(f"path '{text}' cannot be read ({exc}). Fix: check it.") from None
    if len(str(folder)) > MAX_PATH:
        raise ModelRegistryError(
            f"path is over {MAX_PATH} characters once resolved. Fix: move the model to a "
            "shorter path."
        )
    if not exists:
        raise ModelRegistryError(
            f"path '{text}' does not exist. Fix: check the path; give the folder "
            "save_pretrained() wrote (it holds config.json and *.safetensors)."
        )
    if not is_dir:
        model_file = folder.name == "config.json" or folder.suffix == ".safetensors"
        parent = f": its folder, {folder.parent}" if model_file else ""
        raise ModelRegistryError(
            f"path '{text}' is a file, not a folder. Fix: give the folder save_pretrained() "
            f"wrote (it holds config.json and *.safetensors){parent}."
        )
    return folder


# peft's task_type, for an adapter saved without flextrain.json (or an older one).
_PEFT_TASKS = {"SEQ_CLS": "sequence_classification", "CAUSAL_LM": "causal_lm"}


def _trained_facts(folder: Path, lineage: dict[str, Any], *, adapter: bool) -> _Facts:
    """What a job's model folder is: as the task model it runs as (with its head), so a
    LoRA classifier of a BERT reads BertForSequenceClassification, not the BertModel its
    base's config.json names. An adapter folder holds no config.json: its base's is
    built with the job's objective instead."""
    peft = _json_file(folder / "adapter_config.json")
    objective = lineage.get("objective") or _PEFT_TASKS.get(str(peft.get("task_type")))
    labels = lineage.get("labels")
    num_labels = len(labels) if isinstance(labels, list) and labels else 2
    if not adapter:
        return _inspect(folder, strict=False, objective=objective, num_labels=num_labels)
    base = lineage.get("base_model_path") or peft.get("base_model_name_or_path")
    if not base or not (Path(str(base)) / "config.json").is_file():
        return _Facts()
    # Built with the task's head, so its class is the model the adapter runs on; its
    # `architectures` (the base's own class) would misname it.
    facts = _inspect(Path(str(base)), strict=False, objective=objective, num_labels=num_labels)
    return _Facts(
        architecture=facts.model_class or facts.architecture,
        model_type=facts.model_type,
        num_parameters=facts.num_parameters,
        training_types=facts.training_types,
    )


def _inspect(
    folder: Path, *, strict: bool, objective: str | None = None, num_labels: int = 2
) -> _Facts:
    """Architecture, parameters and training types of the model in `folder`, from its
    config alone (built with the head for `objective`, when given). A config
    transformers cannot read is an error when `strict`, else leaves the facts empty (a
    trained model is registered whatever inspection says)."""
    from flextrain.models.compatibility import supported_types
    from flextrain.models.inspect import inspect_model

    try:
        info = inspect_model(folder, objective=objective, num_labels=num_labels)
    except Exception as exc:  # transformers raises many kinds for a config it cannot read
        if not strict:
            return _Facts()
        raise ModelRegistryError(
            f"transformers cannot read '{folder / 'config.json'}' ({type(exc).__name__}: "
            f"{str(exc)[:200]}). Fix: use a folder written by save_pretrained() for a model "
            "type this transformers version knows."
        ) from None
    supported, _ = supported_types(info)
    architecture = info.architectures[0] if info.architectures else info.model_type
    return _Facts(
        architecture=architecture[:200],
        model_type=info.model_type[:64],
        num_parameters=info.num_parameters,
        training_types=[t.value for t in supported],
        model_class=info.model_class[:200],
    )


def _size(folder: Path) -> int:
    """Bytes of the files directly in `folder`: what loading the model reads (not the
    checkpoints or logs a training output may keep in subfolders)."""
    try:
        return sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    except OSError:
        return 0


def _lineage(folder: Path) -> dict[str, Any]:
    """The `flextrain.json` the trainer writes beside a model (base model, metrics)."""
    return _json_file(folder / "flextrain.json")


def _json_file(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; empty when it is missing or not one."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _finite(value: Any) -> Any:
    """`value` with NaN and infinities as None: a run that diverged logs them, and neither
    PostgreSQL's JSON nor a JSON response can hold them."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _trained_names(job: TrainingJob) -> builtins.list[str]:
    """Names to try for a job's model: its run name made valid, then with the job id."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", job.run_name or "").strip("-._")[:87]
    if not base or not is_model_name(base):
        return [job.job_id]
    return [base, f"{base}-{job.job_id}"]
