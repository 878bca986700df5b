"""The local model registry: named, versioned model folders, and where each came from.

A registered name stands for a model folder on this machine and works wherever a
model id does: the resolver asks the registry before it looks at the disk or the
hub, so a registered name wins over a hub id spelled the same. Each name has
numbered versions; `name` (or `name:latest`) is the newest, `name:N` one version.
A version is added by registering a folder under a name that exists (`models
add`), by promoting a job's model or another version to a name (`models promote`),
or by a job that completes under a run name that is its owner's model of the same
kind. Folders are checked when they are registered (config.json, safetensors
weights, a config transformers can read) and described once (architecture,
parameters, training types), so `list` needs no model loading.

A completed job's version carries its lineage: job id, base model (pinned to the
version it trained from), dataset and version, the config and its hash, and the
metrics at save.

Removing a version (or a name, every version) never touches the files. It is
refused while a job that has not finished names it: a pending or queued job
resolves the name only when it starts, and would then fail or train from another
version than the one it was given.
"""

from __future__ import annotations

import builtins
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import sessionmaker

from flextrain.jobs.store import JobRecord, TrainingJob
from flextrain.models import lineage
from flextrain.models.refs import (
    ModelInUseError,
    ModelNameTakenError,
    ModelNotRegisteredError,
    ModelRef,
    ModelRegistryError,
    check_name,
    is_model_name,
    not_registered,
    parse_ref,
)
from flextrain.models.registry_files import (
    finite,
    folder_size,
    inspect_folder,
    lineage_file,
    model_folder,
    trained_facts,
)
from flextrain.models.registry_records import (
    COPIED,
    ModelRecord,
    ModelSource,
    RegisteredModel,
)
from flextrain.models.resolve import ModelNotFoundError, ModelResolver

__all__ = [
    "ModelInUseError",
    "ModelNameTakenError",
    "ModelNotRegisteredError",
    "ModelRecord",
    "ModelRegistry",
    "ModelRegistryError",
    "RegisteredModel",
    "is_model_name",
    "not_registered",
]

_INSERT_ATTEMPTS = 5  # two processes adding a version of one name at once: retry


class ModelRegistry:
    """Registered model versions: add, promote, list, get, diff, remove, and the jobs
    that used each."""

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
        """Register the model folder `path` as the next version of `name` (version 1 of
        a new name) after checking it can be trained.

        The folder needs a config.json transformers can read and safetensors weights
        (pickle weights only where the admin allows them): the rules a job's model
        folder is held to, checked now rather than when a job starts.
        """
        name = check_name(name)
        if len(description) > 1000:
            raise ModelRegistryError("description is over 1000 characters. Fix: shorten it.")
        folder = model_folder(path)
        self._refuse_same_as_latest(name, str(folder))
        try:
            self._resolver.resolve(str(folder))
        except ModelNotFoundError as exc:
            raise ModelRegistryError(str(exc)) from None
        if not any(folder.glob("*.safetensors")) and not self._resolver.allow_pickle:
            raise ModelRegistryError(
                f"Model folder '{folder}' has no weights (*.safetensors). Fix: point at a "
                "folder written by save_pretrained(), which writes model.safetensors."
            )
        facts = inspect_folder(folder, strict=True)
        fields: dict[str, Any] = {
            "path": str(folder),
            "source": "local",
            "adapter": False,
            "architecture": facts.architecture,
            "model_type": facts.model_type,
            "num_parameters": facts.num_parameters,
            "size_bytes": folder_size(folder),
            "training_types": facts.training_types,
        }
        return self._insert_version(name, fields, owner=owner, description=description)

    def register_trained(self, job: TrainingJob, folder: Path | None = None) -> RegisteredModel:
        """Record the model a job saved (in `folder`, else its `model_path`) with its
        lineage: base model, dataset and version, config and its hash, metrics.

        Named after the run (its run_name made into a valid name), else the job id. A
        run name that is already a model of the job's owner, of the same kind (full
        model or adapter), gets the next version; any other taken name gets
        `-<job id>` added. Registering the same job twice returns the first
        registration. The worker calls it once the model is saved, just before it
        marks the job COMPLETED.
        """
        existing = self.for_job(job.job_id)
        if existing is not None:
            return existing
        fields = self._job_fields(job, folder)
        for name in _trained_names(job):
            latest = self.find(name)
            if latest is not None and (
                latest.owner != job.owner or latest.adapter != fields["adapter"]
            ):
                continue
            return self._insert_version(name, fields, owner=job.owner, description=None)
        raise ModelNameTakenError(
            f"Job {job.job_id}: every name tried ({', '.join(_trained_names(job))}) is taken. "
            f"Fix: register {fields['path']} by hand with `flextrain models add`."
        )

    def promote(
        self,
        source: str,
        name: str,
        description: str = "",
        owner: str | None = None,
        *,
        job: TrainingJob | None = None,
    ) -> RegisteredModel:
        """Make a model the newest version of `name`, so the bare name means it.

        `source` is a registered version (`other:3`, or `other` for its latest) or,
        with `job` given, that job's saved model. The new version keeps the source's
        lineage (job, base model, data, config, metrics) and its folder. Promoting an
        older version of `name` itself brings it back as the latest.
        """
        name = check_name(name)
        if len(description) > 1000:
            raise ModelRegistryError("description is over 1000 characters. Fix: shorten it.")
        if job is not None:
            found = self.for_job(job.job_id)
            if found is not None:
                fields = {k: getattr(found, k) for k in COPIED}
                origin = f"job {job.job_id} ({found.ref})"
            else:
                fields, origin = self._job_fields(job, None), f"job {job.job_id}"
        else:
            model = self.get(source)
            fields, origin = {k: getattr(model, k) for k in COPIED}, model.ref
        self._refuse_same_as_latest(name, str(fields["path"]))
        text = description or f"promoted from {origin}"
        return self._insert_version(name, fields, owner=owner, description=text)

    def _job_fields(self, job: TrainingJob, folder: Path | None) -> dict[str, Any]:
        """A version's columns for the model job `job` saved (in `folder`, else its
        model_path), read from the folder and its lineage file."""
        if folder is None and not job.model_path:
            raise ModelRegistryError(
                f"Job {job.job_id} has no saved model (status {job.status.value}). Fix: "
                "promote a completed job's model."
            )
        folder = folder or Path(str(job.model_path))
        saved = lineage_file(folder)
        adapter = bool(saved.get("adapter")) or not (folder / "config.json").is_file()
        facts = trained_facts(folder, saved, adapter=adapter)
        base_model = self._pinned(str(saved.get("base_model") or job.model_id), saved)
        config = finite(job.config)
        return {
            "path": str(folder),
            "source": "trained",
            "adapter": adapter,
            "architecture": facts.architecture,
            "model_type": facts.model_type,
            "num_parameters": facts.num_parameters,
            "size_bytes": folder_size(folder),
            "training_types": [] if adapter else facts.training_types,
            "base_model": base_model[:500],
            "job_id": job.job_id,
            "dataset_id": job.dataset_id[:500],
            "dataset_version": job.dataset_version,
            "config_hash": lineage.config_hash(config),
            "config": config,
            "metrics": finite(job.metrics or saved.get("metrics")) or None,
            "_description": (
                f"{job.training_type.value} of {base_model} on {job.dataset_id}"
                + (" (LoRA adapter)" if adapter else "")
            ),
        }

    def _pinned(self, base_model: str, saved: dict[str, Any]) -> str:
        """`base_model` as the exact version trained from: a bare registered name meant
        its latest version when the job started, which later versions would hide; the
        folder the job loaded (in the lineage file) says which version that was."""
        ref = parse_ref(base_model)
        loaded = saved.get("base_model_path")
        if ref is None or ref.version is not None or not loaded:
            return base_model
        try:
            versions = self.versions(ref.name)
        except ModelNotRegisteredError:
            return base_model
        loaded_path = str(Path(str(loaded)).resolve())
        matches = [v for v in versions if str(Path(v.path).resolve()) == loaded_path]
        return matches[-1].ref if matches else base_model

    def _refuse_same_as_latest(self, name: str, path: str) -> None:
        """A new version that is the folder the name already means changes nothing."""
        latest = self.find(name)
        if latest is not None and latest.path == path:
            raise ModelNameTakenError(
                f"'{name}' is already registered as {path} (its latest version, "
                f"{latest.ref}). Fix: give another folder to add a version, or another name."
            )

    def _insert_version(
        self, name: str, fields: dict[str, Any], *, owner: str | None, description: str | None
    ) -> RegisteredModel:
        """Add `fields` as the next version of `name`; the number is taken again when
        another process took it meanwhile."""
        columns = {k: v for k, v in fields.items() if not k.startswith("_")}
        text = fields.get("_description", "") if description is None else description
        for _ in range(_INSERT_ATTEMPTS):
            with self._sessions() as session:
                top = session.scalar(
                    select(func.max(ModelRecord.version)).where(ModelRecord.name == name)
                )
            version = (top or 0) + 1
            record = ModelRecord(
                name=name, version=version, owner=owner, description=text[:1000], **columns
            )
            try:
                with self._sessions.begin() as session:
                    session.add(record)
            except IntegrityError:
                continue
            self._on_change()
            return self.get(f"{name}:{version}")
        raise ModelNameTakenError(
            f"Model '{name}' gained versions faster than this one could be added. Fix: retry."
        )

    # -- reading -----------------------------------------------------------------------
    def find(self, ref: str) -> RegisteredModel | None:
        """The version `ref` names (`name`, `name:latest`, `name:N`), or None."""
        parsed = parse_ref(ref)
        if parsed is None:
            return None  # never a registered name; not worth a query
        with self._sessions() as session:
            top = session.scalar(
                select(func.max(ModelRecord.version)).where(ModelRecord.name == parsed.name)
            )
            if top is None:
                return None
            record = session.get(ModelRecord, (parsed.name, parsed.version or top))
            return (
                RegisteredModel.from_record(record, latest=record.version == top)
                if record
                else None
            )

    def get(self, ref: str) -> RegisteredModel:
        """The version `ref` names; ModelNotRegisteredError names the way out."""
        found = self.find(ref)
        if found is None:
            raise not_registered(ref)
        return found

    def versions(self, name: str) -> builtins.list[RegisteredModel]:
        """Every version of `name`, oldest first."""
        parsed = parse_ref(name)
        if parsed is None:
            raise not_registered(name)
        found = [m for m in self._rows(parsed.name) if m.name == parsed.name]
        if not found:
            raise not_registered(parsed.name)
        return found

    def for_job(self, job_id: str) -> RegisteredModel | None:
        """The first registration of the model job `job_id` trained, if there is one."""
        with self._sessions() as session:
            record = session.scalar(
                select(ModelRecord)
                .where(ModelRecord.job_id == job_id)
                .order_by(ModelRecord.created_at, ModelRecord.version)
                .limit(1)
            )
        return self.find(f"{record.name}:{record.version}") if record else None

    def list(
        self, *, source: ModelSource | None = None, all_versions: bool = False
    ) -> builtins.list[RegisteredModel]:
        """The latest version of every name (every version with `all_versions`), by name."""
        rows = self._rows()
        if not all_versions:
            rows = [m for m in rows if m.latest]
        return [m for m in rows if source is None or m.source == source]

    def _rows(self, name: str | None = None) -> builtins.list[RegisteredModel]:
        """Registrations (of `name`, or all) by name and version, each marked latest or not."""
        query = select(ModelRecord).order_by(ModelRecord.name, ModelRecord.version)
        if name is not None:
            query = query.where(ModelRecord.name == name)
        with self._sessions() as session:
            records = builtins.list(session.scalars(query))
        top: dict[str, int] = {}
        for r in records:
            top[r.name] = max(top.get(r.name, 0), r.version)
        return [RegisteredModel.from_record(r, latest=r.version == top[r.name]) for r in records]

    def diff(self, a: str, b: str) -> lineage.ModelDiff:
        """What differs between two versions: lineage, config settings, metrics."""
        first, second = self.get(a), self.get(b)
        return lineage.diff(first.ref, first.model_dump(), second.ref, second.model_dump())

    def jobs_using(self, ref: str) -> builtins.list[TrainingJob]:
        """Jobs that trained (or will train) from the model, newest first: for a name, by
        any of its references or folders; for `name:N`, by that reference or folder."""
        model = self.get(ref)
        query = (
            select(JobRecord)
            .where(JobRecord.model_id.in_(self._ids_for(ref, model)))
            .order_by(JobRecord.created_at.desc(), JobRecord.job_id)
        )
        with self._sessions() as session:
            return [TrainingJob.from_record(r) for r in session.scalars(query)]

    def _ids_for(self, ref: str, model: RegisteredModel) -> set[str]:
        """The model ids a job may have named this model (or version) by."""
        parsed = parse_ref(ref) or ModelRef(model.name)
        if parsed.version is not None:
            return {model.ref, model.path}
        ids = {model.name, f"{model.name}:latest"}
        for version in self.versions(model.name):
            ids |= {version.ref, version.path}
        return ids

    def folder_for(self, model_id: str) -> Path | None:
        """The folder a registered reference stands for; None when `model_id` is none.
        ModelNotFoundError when it is one but cannot be trained from: an adapter, or a
        folder that has gone."""
        model = self.find(model_id)
        if model is None:
            return None
        if model.adapter:
            merge = f" (`flextrain models merge {model.job_id}`)" if model.job_id else ""
            raise ModelNotFoundError(
                f"Model '{model.ref}' is a LoRA adapter of '{model.base_model}', not a full "
                f"model. Fix: merge it into its base model first{merge}, then register the "
                f"merged folder; or train a new adapter from '{model.base_model}'."
            )
        folder = Path(model.path)
        if not folder.is_dir():
            raise ModelNotFoundError(
                f"Model '{model.ref}' is registered at '{folder}', which is no longer a "
                f"folder. Fix: restore the folder, or remove the version (`flextrain "
                f"models remove {model.ref}`) and register the model where it is now."
            )
        return folder

    # -- removing ----------------------------------------------------------------------
    def remove(self, ref: str) -> RegisteredModel:
        """Forget `name:N`, or every version of `name`; the files stay where they are.
        Returns the version named (for a bare name, its latest).

        Refused (ModelInUseError) while a job that has not finished names what goes:
        `name:N` itself, or the bare name when the latest version goes (the name
        would then mean another version than the one the job was given).
        """
        return self.remove_versions(ref)[-1]

    def remove_versions(self, ref: str) -> builtins.list[RegisteredModel]:
        """`remove`, returning every version removed (oldest first)."""
        model = self.get(ref)
        parsed = parse_ref(ref) or ModelRef(model.name)
        every = parsed.version is None
        going = self.versions(model.name) if every else [model]
        names = {v.ref for v in going}
        if every or model.latest:
            names |= {model.name, f"{model.name}:latest"}
        query = select(JobRecord).where(JobRecord.model_id.in_(names))
        with self._sessions() as session:
            jobs = [TrainingJob.from_record(r) for r in session.scalars(query)]
        waiting = sorted(j.job_id for j in jobs if not j.is_finished)
        if waiting:
            what = f"Model '{model.name}'" if every else f"Version {model.ref}"
            raise ModelInUseError(
                f"{what} is named by unfinished job(s) {', '.join(waiting[:5])}, which need "
                "it when they start. Fix: wait for them to finish or cancel them, then "
                "remove it."
            )
        with self._sessions.begin() as session:
            query_delete = delete(ModelRecord).where(ModelRecord.name == model.name)
            if not every:
                query_delete = query_delete.where(ModelRecord.version == model.version)
            session.execute(query_delete)
        self._on_change()
        return going


def _trained_names(job: TrainingJob) -> builtins.list[str]:
    """Names to try for a job's model: its run name made valid, then with the job id."""
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", job.run_name or "").strip("-._")[:87]
    if not base or not is_model_name(base):
        return [job.job_id]
    return [base, f"{base}-{job.job_id}"]
