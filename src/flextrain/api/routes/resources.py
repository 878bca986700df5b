"""Datasets (list, show, upload) and models (built-in and trained)."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, Query, Request, UploadFile

from flextrain.accounts.users import Role
from flextrain.api.deps import (
    ServiceDep,
    TrainerDep,
    ViewerDep,
    can_see,
    can_use_dataset,
    confine_dataset,
    confine_upload,
)
from flextrain.api.errors import APIError, issue_errors, split_fix
from flextrain.api.limits import upload_too_large
from flextrain.api.routes.model_registry import may_see
from flextrain.api.routing import StrictJSONRoute
from flextrain.api.schemas import (
    DatasetIssue,
    DatasetPreview,
    DatasetSummary,
    DatasetUploaded,
    DatasetValidation,
    DatasetVersionSummary,
    ErrorBody,
    ModelEntry,
)
from flextrain.config.enums import TrainingStatus
from flextrain.public import (
    BUILTIN_DESCRIPTIONS,
    SHAPES,
    ColumnMap,
    DataReport,
    DatasetInfo,
    DatasetInUseError,
    RowIssue,
    Shape,
    split_ref,
)
from flextrain.service import TrainingService

router = APIRouter(prefix="/api", tags=["resources"], route_class=StrictJSONRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    413: {"model": ErrorBody, "description": "Upload larger than the server allows."},
    422: {"model": ErrorBody},
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,99})?$")
_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".tsv", ".parquet", ".txt", ".text", ".md"}
_SHAPES = SHAPES
# The fix of a row error that says none of its own (as for a refused upload).
ROW_FIX = "correct or remove this row, then send the file again."


def _column_map(raw: str | None) -> ColumnMap | None:
    """The `columns` form field as a ColumnMap, or a 422 that says what is wrong."""
    if raw is None or not raw.strip():
        return None
    parts = {f.name for f in fields(ColumnMap)}
    try:
        given = json.loads(raw)
    except json.JSONDecodeError:
        given = None
    if not isinstance(given, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in given.items()
    ):
        fix = 'send a JSON object of part names to column names, e.g. {"text": "body"}.'
        raise APIError(
            422,
            f'columns: must be a JSON object of strings, e.g. {{"text": "body"}}. Fix: {fix}',
            field="columns",
            fix=fix,
        )
    unknown = sorted(set(given) - parts)
    if unknown:
        fix = f"use only these parts: {', '.join(sorted(parts))}."
        raise APIError(
            422,
            f"columns: unknown part(s) {', '.join(unknown)}. Fix: {fix}",
            field="columns",
            fix=fix,
        )
    return ColumnMap(**given)


def _summary(info: DatasetInfo, service: TrainingService) -> DatasetSummary:
    name, _ = split_ref(info.dataset_id)
    owner, shared = service.dataset_access(name) or (info.owner, True)
    return DatasetSummary(
        dataset_id=info.dataset_id,
        path=str(info.path),
        format=info.format,
        num_rows=info.num_rows,
        columns=info.columns,
        text_column=info.text_column,
        label_column=info.label_column,
        labels=info.labels,
        description=info.description,
        version=info.version,
        shape=info.shape,
        owner=owner,
        shared=shared,
    )


@router.get("/datasets", response_model=list[DatasetSummary], responses=_ERRORS)
def list_datasets(user: ViewerDep, service: ServiceDep) -> list[DatasetSummary]:
    """Latest versions; a trainer sees the shared datasets and their own."""
    return [
        _summary(info, service)
        for info in service.list_datasets()
        if can_use_dataset(service, user, info.dataset_id)
    ]


@router.get(
    "/datasets/{dataset_id:path}/versions",
    response_model=list[DatasetVersionSummary],
    responses=_ERRORS,
)
def dataset_versions(
    dataset_id: str, user: ViewerDep, service: ServiceDep
) -> list[DatasetVersionSummary]:
    """Every version, oldest first, with the jobs that trained on each."""
    confine_dataset(service, user, dataset_id)
    if service.dataset_access(dataset_id) is None:
        service.get_dataset(dataset_id)  # raises the not-found error with the known names
    return [
        DatasetVersionSummary(
            version=v.version,
            shape=v.shape,
            num_rows=v.num_rows,
            size_bytes=v.size_bytes,
            source_name=v.source_name,
            owner=v.owner,
            created_at=v.created_at,
            jobs=service.jobs_using_dataset(dataset_id, v.version),
        )
        for v in service.dataset_versions(dataset_id)
    ]


@router.delete("/datasets/{dataset_ref:path}", responses={**_ERRORS, 409: {"model": ErrorBody}})
def delete_dataset(
    dataset_ref: str,
    user: TrainerDep,
    service: ServiceDep,
    force: bool = False,
) -> dict[str, list[str]]:
    """Delete NAME (every version) or NAME@VERSION: the owner or an admin; a version a
    job trained on only with `force` (409 otherwise)."""
    name, version = split_ref(dataset_ref)
    confine_dataset(service, user, name)
    access = service.dataset_access(name)
    if access is not None and user.role != Role.ADMIN and access[0] != user.name:
        raise APIError(
            403,
            f"Dataset '{name}' belongs to another user; only they or an admin may delete it.",
            field="dataset_ref",
            fix="delete your own datasets, or ask an admin.",
        )
    try:
        deleted = service.delete_dataset(name, version, force=force)
    except DatasetInUseError as exc:
        raise APIError(
            409, str(exc), field="force", fix="keep it, or delete it with force=true."
        ) from None
    return {"deleted": deleted}


PREVIEW_MAX = 100


@router.get("/datasets/{dataset_id:path}/preview", response_model=DatasetPreview, responses=_ERRORS)
def preview_dataset(
    dataset_id: str,
    user: ViewerDep,
    service: ServiceDep,
    limit: Annotated[int, Query(ge=1, le=PREVIEW_MAX, description="Rows to show.")] = 20,
) -> DatasetPreview:
    """The first `limit` rows of NAME (latest version) or NAME@VERSION, as training reads
    them; whoever may see the dataset may preview it."""
    confine_dataset(service, user, dataset_id)
    info = service.describe_dataset(dataset_id)
    preview = service.preview_dataset(info, limit)
    return DatasetPreview(
        dataset_id=info.dataset_id,
        version=info.version,
        shape=info.shape,
        columns=info.columns,
        rows=preview.rows,
        total_rows=info.num_rows,
        truncated_values=preview.truncated_values,
    )


@router.get("/datasets/{dataset_id:path}", response_model=DatasetSummary, responses=_ERRORS)
def show_dataset(dataset_id: str, user: ViewerDep, service: ServiceDep) -> DatasetSummary:
    confine_dataset(service, user, dataset_id)
    return _summary(service.describe_dataset(dataset_id), service)


def _upload_name(filename: str, suffix: str) -> str:
    """The uploaded file's own name, safe to create on this server, so errors and the
    version's `source_name` name what the client sent (not a temporary file)."""
    name = re.sub(r"[^\w.\- ]", "_", Path(filename).name).strip(" .")
    return name[-200:] if name.lower().endswith(suffix) else f"upload{suffix}"


ShapeForm = Annotated[
    str | None, Form(description=f"One of {', '.join(_SHAPES)}; default: detect.")
]
ColumnsForm = Annotated[
    str | None,
    Form(
        description='Column map as JSON, e.g. {"text": "body", "label": "tag"} '
        "(parts: text, label, instruction, input, output, prompt, completion, messages, "
        "chosen, rejected)."
    ),
]


def _reading_options(
    file: UploadFile, shape: str | None, columns: str | None
) -> tuple[Shape | None, ColumnMap | None, str]:
    """The shape, the column map and the file's suffix, or a 422 naming what is wrong."""
    if shape is not None and shape not in _SHAPES:
        fix = f"use one of {', '.join(_SHAPES)}, or leave shape out to detect it."
        raise APIError(422, f"shape: '{shape}' is not known. Fix: {fix}", field="shape", fix=fix)
    column_map = _column_map(columns)
    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in _SUFFIXES:
        fix = "upload one of " + ", ".join(sorted(_SUFFIXES)) + "."
        raise APIError(
            422,
            f"file: unsupported type {suffix or '(none)'!r}. Fix: {fix}",
            field="file",
            fix=fix,
        )
    return shape, column_map, suffix


@contextmanager
def _received(service: TrainingService, file: UploadFile, suffix: str) -> Iterator[Path]:
    """The upload as a file in a fresh temporary folder inside FLEXTRAIN_HOME, under the
    uploaded file's own name (never at a path the client names); the folder is removed
    whatever happens. The size is counted while copying (a declared Content-Length over
    the limit never gets this far)."""
    max_mb = service.settings.max_upload_mb
    folder = Path(tempfile.mkdtemp(prefix=".upload-", dir=service.settings.home))
    try:
        upload = folder / _upload_name(file.filename or "", suffix)
        with upload.open("wb") as out:
            size = 0
            while chunk := file.file.read(1024 * 1024):
                size += len(chunk)
                if size > max_mb * 1024**2:
                    raise APIError(413, upload_too_large(max_mb), field="file")
                out.write(chunk)
        yield upload
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@router.post("/datasets", response_model=DatasetUploaded, status_code=201, responses=_ERRORS)
def upload_dataset(
    request: Request,
    user: TrainerDep,
    service: ServiceDep,
    file: UploadFile,
    name: Annotated[str, Form(description="Dataset id, e.g. 'team/reviews'.")],
    description: Annotated[str, Form(max_length=1000)] = "",
    shared: Annotated[bool, Form(description="Visible to every user, not only you.")] = False,
    shape: ShapeForm = None,
    columns: ColumnsForm = None,
) -> DatasetUploaded:
    """Store an uploaded JSONL/JSON/CSV/TSV/Parquet/text file and register it under `name`.

    The file is checked as training data before it is kept: a file that cannot
    serve is refused (422, every bad row and unreadable line in `errors`, in file
    order) and nothing stays behind. What the checks only warn about is in
    `warnings`.
    """
    if not _NAME.match(name):
        fix = "use letters, digits, '_', '.', '-' and at most one '/', e.g. 'team/reviews'."
        raise APIError(422, f"name {name!r} is not valid. Fix: {fix}", field="name", fix=fix)
    access = service.dataset_access(name)
    if access is not None and user.role != Role.ADMIN and access[0] != user.name:
        # Uploading to one's own name (or as admin) stores a new version instead.
        raise APIError(
            409,
            f"A dataset named {name!r} exists and is not yours. Fix: choose another name.",
            field="name",
        )
    confine_upload(service, name)
    given_shape, column_map, suffix = _reading_options(file, shape, columns)
    # Registering copies the checked content into an immutable version.
    with _received(service, file, suffix) as upload:
        version = service.add_dataset(
            upload,
            name=name,
            description=description,
            owner=user.name,
            shared=shared,
            shape=given_shape,
            columns=column_map,
        )
        info = service.describe_dataset(name)
    request.state.audit_target = f"{name}@{version.version}"
    warnings = []
    if version.report is not None:
        fix = "the data was registered; if these rows are not what you meant, correct them "
        fix += "and upload again."
        warnings = issue_errors(version.report, "warning", fix=fix)
    return DatasetUploaded(**_summary(info, service).model_dump(), warnings=warnings)


@router.post("/datasets/validate", response_model=DatasetValidation, responses=_ERRORS)
def validate_dataset(
    user: TrainerDep,
    service: ServiceDep,
    file: UploadFile,
    shape: ShapeForm = None,
    columns: ColumnsForm = None,
) -> DatasetValidation:
    """Check an uploaded file as `flextrain datasets validate` does, registering nothing:
    rows, shape, columns, labels, and every error and warning with its row and line (the
    first 50 listed, the rest counted). Rows with errors are a report (200, `ok` false); a
    file with no readable record or no recognisable shape is a 422 naming the field, as
    for an upload. Same size limit as an upload."""
    given_shape, column_map, suffix = _reading_options(file, shape, columns)
    with _received(service, file, suffix) as upload:
        _, report, fmt, _ = service.check_dataset_file(
            upload, shape=given_shape, columns=column_map
        )
    return _validation(report, upload.name, fmt)


def _issue(issue: RowIssue) -> DatasetIssue:
    message, fix = split_fix(str(issue))
    if fix is None and issue.severity == "error":
        fix = ROW_FIX
    return DatasetIssue(
        severity=issue.severity,
        row=issue.row,
        line=issue.line,
        field=issue.field,
        message=message,
        fix=fix,
    )


def _validation(report: DataReport, file_name: str, fmt: str) -> DatasetValidation:
    shown = report.shown_issues()
    errors = [_issue(i) for i in shown if i.severity == "error"]
    warnings = [_issue(i) for i in shown if i.severity == "warning"]
    return DatasetValidation(
        ok=report.ok,
        file_name=file_name,
        format=fmt,
        shape=report.shape,
        rows=report.num_rows,
        columns=report.columns,
        mapping=report.mapping.given(),
        labels=report.label_counts,
        duplicate_rows=report.duplicate_rows,
        error_count=report.error_count,
        warning_count=report.warning_count,
        errors=errors,
        warnings=warnings,
        errors_not_shown=report.error_count - len(errors),
        warnings_not_shown=report.warning_count - len(warnings),
        summary=report.summary(),
    )


@router.get("/models", response_model=list[ModelEntry], responses=_ERRORS)
def list_models(user: ViewerDep, service: ServiceDep) -> list[ModelEntry]:
    """Built-in models, registered models (by hand or by a completed job; the registry has
    their details), and the models of completed jobs from before the registry."""
    entries = [
        ModelEntry(model_id=model_id, source="builtin", description=description)
        for model_id, description in BUILTIN_DESCRIPTIONS.items()
    ]
    registered = [m for m in service.list_registered_models() if may_see(user, m)]
    entries += [
        ModelEntry(
            model_id=m.name,
            source=m.source,
            description=m.description or f"registered folder {m.path}",
            path=m.path,
            job_id=m.job_id,
        )
        for m in registered
    ]
    known = {m.job_id for m in service.list_registered_models(source="trained")}
    for job in service.list_jobs(status=TrainingStatus.COMPLETED, limit=500):
        if job.model_path and can_see(user, job) and job.job_id not in known:
            entries.append(
                ModelEntry(
                    model_id=job.model_path,
                    source="trained",
                    description=f"{job.training_type.value} of {job.model_id} on {job.dataset_id}",
                    path=job.model_path,
                    job_id=job.job_id,
                )
            )
    return entries
