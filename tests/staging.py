"""Set-up for tests that need a job in a state the code reaches only by a crash.

The job store refuses status changes the state machine forbids (a completed job
never becomes interrupted). A test that stages "the worker died after its last
checkpoint but before recording the end" writes the row directly, as the crash
would have left it: set-up, not a transition.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update

from flextrain.config.enums import TrainingStatus
from flextrain.jobs.store import JobRecord, JobStore


def stage_status(store: JobStore, job_id: str, status: TrainingStatus, **values: Any) -> None:
    """Put job `job_id` in `status` (and set `values`), bypassing the state machine."""
    with store._sessions.begin() as session:
        result = session.execute(
            update(JobRecord)
            .where(JobRecord.job_id == job_id)
            .values(status=TrainingStatus(status).value, **values)
        )
        assert getattr(result, "rowcount", 0) == 1, f"no job {job_id}"
