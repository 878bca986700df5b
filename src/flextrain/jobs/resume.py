"""Putting an ended job back in the queue to continue from its latest checkpoint.

One function for every way a job is resumed: a user's `resume`, the recovery of a
job the kernel killed for memory, and a cluster's requeue of a preempted job (which
the cluster restarts itself, so the job keeps its cluster id). Each drops the logged
steps past the checkpoint, since they are trained again, and says so in an event.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from flextrain.config.enums import RESUMABLE_STATUSES, TrainingStatus
from flextrain.jobs.checkpoints import latest_checkpoint
from flextrain.jobs.environment import TrainingEnvironmentManager
from flextrain.jobs.store import JobStore, TrainingJob

QUEUED_REASON = "submitted; waiting for the scheduler"


def checkpoint_step(checkpoint: Path | None) -> int:
    """The global step a `checkpoint-N` folder was saved at; 0 for none."""
    if checkpoint is None:
        return 0
    return int(checkpoint.name.rpartition("-")[2])


def requeue_from_checkpoint(
    store: JobStore,
    environments: TrainingEnvironmentManager,
    job: TrainingJob,
    *,
    sources: Iterable[TrainingStatus] = RESUMABLE_STATUSES,
    wait_reason: str = QUEUED_REASON,
    by: str | None = None,
    keep_cluster_job: bool = False,
) -> Path | bool | None:
    """Move `job` (in one of `sources`) back to QUEUED to continue from its latest
    checkpoint; False when it was no longer in those states (someone else moved it),
    else the checkpoint it continues from (None: from the start).

    `keep_cluster_job`: the cluster requeued the job itself and will start it again,
    so it keeps its cluster id (flextrain's scheduler must not submit it a second
    time); a user's resume clears it, and the job is submitted anew.
    """
    env = environments.layout(job.job_id, job.settings.output_dir)
    checkpoint = latest_checkpoint(env.checkpoint_dir)
    values: dict[str, Any] = {
        "status": TrainingStatus.QUEUED.value,
        "queued_at": datetime.now(UTC),
        "wait_reason": wait_reason,
        "allocation": None,
        "error_message": None,
        "completed_at": None,
        "pid": None,  # the dead worker's pid must not make the job look dead again
        "pid_started_at": None,
        "resume_count": job.resume_count + 1,
    }
    if not keep_cluster_job:
        values.update(cluster_job_id=None, executor=None)
    if not store.transition(job.job_id, list(sources), **values):
        return False
    step = checkpoint_step(checkpoint)
    dropped = store.drop_metrics_after(job.job_id, step)
    how = f" by {by}" if by else ""
    if checkpoint is None:
        message = f"Resumed{how} from the start: no checkpoint was saved (was {job.status.value})."
    else:
        message = (
            f"Resumed{how} from step {step} (was {job.status.value} at step "
            f"{job.current_step}); {dropped} logged rows past the checkpoint dropped."
        )
    store.add_event(job.job_id, "resumed", message, data={"step": step})
    return checkpoint
