"""The job state machine: one table of the status changes a job may make.

Every status write goes through the job store, which consults this table: an
explicit compare-and-set (`JobStore.transition`) that names a forbidden edge raises
`IllegalTransitionError` before touching the database, and a plain write
(`JobStore.update(status=...)`) only moves a job that is in one of the states the
new status may be reached from. The second is what lets a worker race a user's
cancel safely: its "training" or "completed" lands only while the job still runs.

    pending --start--> queued --scheduler--> validating --launch--> preparing
    preparing --> training <--> evaluating --> completed
    any active state --> failed | cancelled | interrupted | diverged | paused
    failed | cancelled | interrupted | diverged | paused --resume--> queued

With a cluster executor (Slurm, Ray) the cluster queues and places the job: the
launch hands it over (validating --> queued, now with its cluster job id, which
keeps it out of flextrain's own queue) and its worker, started by the cluster,
takes it on (queued --> preparing). A job the cluster requeued after a preemption
goes interrupted --> queued and on again the same way.

`completed` is final. A job never goes back to `pending`, and nothing skips the queue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from flextrain.config.enums import TrainingStatus
from flextrain.errors import ConflictError

S = TrainingStatus
_ENDED_EARLY = frozenset({S.FAILED, S.CANCELLED, S.INTERRUPTED, S.DIVERGED, S.PAUSED})

# status -> the statuses it may change to. A status is listed in its own row where
# writing it again (with other columns) is allowed: a worker restarting its training
# loop after a memory back-off sets "training" again.
TRANSITIONS: Mapping[TrainingStatus, frozenset[TrainingStatus]] = {
    S.PENDING: frozenset({S.QUEUED, S.FAILED, S.CANCELLED}),
    S.QUEUED: frozenset({S.VALIDATING, S.PREPARING, S.FAILED, S.CANCELLED}),
    S.VALIDATING: frozenset({S.PREPARING, S.QUEUED, *_ENDED_EARLY}),
    S.PREPARING: frozenset({S.PREPARING, S.TRAINING, S.EVALUATING, S.COMPLETED, *_ENDED_EARLY}),
    S.TRAINING: frozenset({S.TRAINING, S.EVALUATING, S.COMPLETED, *_ENDED_EARLY}),
    S.EVALUATING: frozenset({S.EVALUATING, S.TRAINING, S.COMPLETED, *_ENDED_EARLY}),
    S.COMPLETED: frozenset(),
    S.FAILED: frozenset({S.QUEUED}),
    S.CANCELLED: frozenset({S.QUEUED}),
    S.INTERRUPTED: frozenset({S.QUEUED}),
    S.DIVERGED: frozenset({S.QUEUED}),
    S.PAUSED: frozenset({S.QUEUED}),
}


class IllegalTransitionError(ConflictError, RuntimeError):
    """Code asked for a status change the state machine forbids (a bug, not input)."""

    code = "illegal_transition"
    field = "status"


def is_allowed(current: TrainingStatus, new: TrainingStatus) -> bool:
    return new in TRANSITIONS[current]


def check_transition(current: TrainingStatus, new: TrainingStatus, job_id: str = "") -> None:
    """Raise IllegalTransitionError unless a job may go from `current` to `new`."""
    if not is_allowed(current, new):
        allowed = ", ".join(sorted(s.value for s in TRANSITIONS[current])) or "nothing"
        job = f"Job {job_id}: " if job_id else ""
        raise IllegalTransitionError(
            f"{job}a {current.value} job cannot become {new.value} (from {current.value} "
            f"only: {allowed}). Fix: this is a bug in the caller; report it."
        )


def check_transitions(
    currents: Iterable[TrainingStatus], new: TrainingStatus, job_id: str = ""
) -> None:
    """Raise for the first of `currents` that may not change to `new`."""
    for current in currents:
        check_transition(TrainingStatus(current), new, job_id)


def sources(new: TrainingStatus, *, terminal: bool = True) -> frozenset[TrainingStatus]:
    """The statuses a job may reach `new` from (without the terminal ones, if asked)."""
    found = frozenset(s for s, targets in TRANSITIONS.items() if new in targets)
    return found if terminal else found - {S.COMPLETED, *_ENDED_EARLY}
