"""Datasets (list, show, upload) and models (built-in and trained)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Form, HTTPException, UploadFile

from flextrain.api.deps import ServiceDep, TrainerDep, ViewerDep, can_see, confine_dataset
from flextrain.api.schemas import DatasetSummary, ErrorBody, ModelEntry
from flextrain.config.enums import TrainingStatus
from flextrain.data.registry import DatasetInfo
from flextrain.models.resolve import ModelResolver

router = APIRouter(prefix="/api", tags=["resources"])

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody},
    403: {"model": ErrorBody},
    404: {"model": ErrorBody},
    413: {"model": ErrorBody, "description": "Upload larger than the server allows."},
    422: {"model": ErrorBody},
}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}(/[A-Za-z0-9][A-Za-z0-9_.-]{0,99})?$")
_SUFFIXES = {".jsonl", ".ndjson", ".json", ".csv", ".txt", ".text"}
# Upload size limit; a dataset bigger than this belongs on disk, registered by path.
MAX_UPLOAD_BYTES = 200 * 1024**2


def _summary(info: DatasetInfo) -> DatasetSummary:
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
    )


@router.get("/datasets", response_model=list[DatasetSummary], responses=_ERRORS)
def list_datasets(user: ViewerDep, service: ServiceDep) -> list[DatasetSummary]:
    return [_summary(service.datasets.get(name)) for name in service.datasets.names()]


@router.get("/datasets/{dataset_id:path}", response_model=DatasetSummary, responses=_ERRORS)
def show_dataset(dataset_id: str, user: ViewerDep, service: ServiceDep) -> DatasetSummary:
    confine_dataset(service, user, dataset_id)
    return _summary(service.datasets.get(dataset_id))


@router.post("/datasets", response_model=DatasetSummary, status_code=201, responses=_ERRORS)
def upload_dataset(
    user: TrainerDep,
    service: ServiceDep,
    file: UploadFile,
    name: Annotated[str, Form(description="Dataset id, e.g. 'team/reviews'.")],
    description: Annotated[str, Form(max_length=1000)] = "",
) -> DatasetSummary:
    """Store an uploaded JSONL/JSON/CSV/text file and register it under `name`.

    The file is checked as training data before it is kept: a file that cannot
    serve is refused and nothing stays behind.
    """
    if not _NAME.match(name):
        raise HTTPException(
            422,
            f"name {name!r} is not valid: use letters, digits, '_', '.', '-' and at most "
            "one '/', e.g. 'team/reviews'.",
        )
    if name in service.datasets.names():
        raise HTTPException(409, f"A dataset named {name!r} exists; choose another name.")
    suffix = Path(file.filename or "").suffix.lower()
    if suffix not in _SUFFIXES:
        raise HTTPException(
            422,
            f"file: unsupported type {suffix or '(none)'!r}; upload one of "
            + ", ".join(sorted(_SUFFIXES)),
        )
    # The upload lands in a temporary file inside FLEXTRAIN_HOME (never at a path the
    # client names); registering copies its checked content into an immutable
    # version, and the temporary file is removed whatever happens.
    with tempfile.NamedTemporaryFile(
        "wb", suffix=suffix, dir=service.settings.home, delete=False
    ) as tmp:
        size = 0
        while chunk := file.file.read(1024 * 1024):
            size += len(chunk)
            if size > MAX_UPLOAD_BYTES:
                tmp.close()
                Path(tmp.name).unlink(missing_ok=True)
                raise HTTPException(
                    413, f"file: larger than {MAX_UPLOAD_BYTES // 1024**2} MB; register it by path."
                )
            tmp.write(chunk)
    try:
        service.datasets.add(Path(tmp.name), name=name, description=description, owner=user.name)
        info = service.datasets.get(name)
    finally:
        Path(tmp.name).unlink(missing_ok=True)
    return _summary(info)


@router.get("/models", response_model=list[ModelEntry], responses=_ERRORS)
def list_models(user: ViewerDep, service: ServiceDep) -> list[ModelEntry]:
    """Built-in models, and the models saved by completed jobs the user can see."""
    entries = [
        ModelEntry(model_id=model_id, source="builtin", description=description)
        for model_id, description in ModelResolver.builtins().items()
    ]
    for job in service.list_jobs(status=TrainingStatus.COMPLETED, limit=500):
        if job.model_path and can_see(user, job):
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
