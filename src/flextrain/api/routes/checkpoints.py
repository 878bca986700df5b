"""A job's Trainer checkpoints: list them, delete all but the ones to keep."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from flextrain.api.deps import ServiceDep, TrainerDep, ViewerDep, owned_job, visible_job
from flextrain.api.routing import StrictJSONRoute
from flextrain.api.schemas import ErrorBody
from flextrain.config.enums import TrainingStatus
from flextrain.public import CheckpointInfo, JobStateError

router = APIRouter(prefix="/api/training", tags=["training"], route_class=StrictJSONRoute)

_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "No valid token."},
    403: {"model": ErrorBody, "description": "The role may not do this, or not on this job."},
    404: {"model": ErrorBody, "description": "No such job (or not yours), or no such step."},
    409: {"model": ErrorBody, "description": "The job is still running."},
    422: {"model": ErrorBody, "description": "Invalid input; each field named."},
}


class Checkpoint(BaseModel):
    step: int
    epoch: float | None
    path: str
    size_bytes: int
    modified: datetime
    is_best: bool = Field(description="The Trainer's best_model_checkpoint.")
    loss: float | None = Field(description="Last training loss logged at or before `step`.")
    eval_loss: float | None = Field(description="Last eval loss logged at or before `step`.")

    @classmethod
    def of(cls, info: CheckpointInfo) -> Checkpoint:
        return cls(**{**info.to_dict(), "modified": info.modified})


class CheckpointList(BaseModel):
    job_id: str
    checkpoints: list[Checkpoint] = Field(description="Oldest step first.")
    total_bytes: int


class PruneResult(BaseModel):
    job_id: str
    deleted: list[int] = Field(description="Steps whose checkpoints were deleted.")
    kept: list[int]
    freed_bytes: int


@router.get("/jobs/{job_id}/checkpoints", response_model=CheckpointList, responses=_ERRORS)
def job_checkpoints(job_id: str, user: ViewerDep, service: ServiceDep) -> CheckpointList:
    """Complete checkpoints with their step, losses, size and the best marker."""
    visible_job(service, user, job_id)
    infos = service.list_checkpoints(job_id)
    return CheckpointList(
        job_id=job_id,
        checkpoints=[Checkpoint.of(i) for i in infos],
        total_bytes=sum(i.size_bytes for i in infos),
    )


@router.delete("/jobs/{job_id}/checkpoints", response_model=PruneResult, responses=_ERRORS)
def prune_job_checkpoints(
    job_id: str,
    user: TrainerDep,
    service: ServiceDep,
    keep: Annotated[
        list[int] | None,
        Query(description="Steps to keep (repeat); default: the latest and the best."),
    ] = None,
) -> PruneResult:
    """Delete every checkpoint but `keep`: the job's owner or an admin, once it has stopped."""
    job = owned_job(service, user, job_id)
    if job.status == TrainingStatus.QUEUED:
        raise JobStateError(
            f"Job {job_id} is queued and continues from its latest checkpoint when it "
            "starts. Fix: prune after it finishes (or cancel it)."
        )
    if job.status.is_active:
        # The Trainer rotates and writes checkpoints while it runs; deleting under it
        # would race its own save_total_limit clean-up.
        raise JobStateError(
            f"Job {job_id} is {job.status.value}; its checkpoints are still being written. "
            "Fix: prune after it finishes (or cancel it)."
        )
    deleted, freed = service.prune_checkpoints(job_id, keep or None)
    return PruneResult(
        job_id=job_id,
        deleted=deleted,
        kept=[i.step for i in service.list_checkpoints(job_id)],
        freed_bytes=freed,
    )
