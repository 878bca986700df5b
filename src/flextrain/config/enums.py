"""The enumerations shared by every front end.

String values are part of the public contract: the CLI's `--type` and the REST
API accept exactly these.
"""

from __future__ import annotations

from enum import StrEnum


class TrainingType(StrEnum):
    FINE_TUNING = "fine_tuning"
    LORA_ADAPTATION = "lora_adaptation"
    CONTINUED_PRETRAINING = "continued_pretraining"
    TASK_SPECIFIC = "task_specific"
    FULL_TRAINING = "full_training"


class TrainingMode(StrEnum):
    BASIC = "basic"
    ADVANCED = "advanced"
    EXPERT = "expert"


class TrainingStatus(StrEnum):
    PENDING = "pending"
    # Submitted and waiting in the scheduler's queue for the resources it needs; no
    # worker process exists yet, so it is neither active nor terminal.
    QUEUED = "queued"
    VALIDATING = "validating"
    PREPARING = "preparing"
    TRAINING = "training"
    EVALUATING = "evaluating"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    # The worker died without reporting (killed, machine restart): resumable.
    INTERRUPTED = "interrupted"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES


TERMINAL_STATUSES = frozenset(
    {
        TrainingStatus.COMPLETED,
        TrainingStatus.FAILED,
        TrainingStatus.CANCELLED,
        TrainingStatus.INTERRUPTED,
    }
)
# Ended without finishing: `resume` continues these from their latest checkpoint.
RESUMABLE_STATUSES = frozenset(
    {TrainingStatus.FAILED, TrainingStatus.CANCELLED, TrainingStatus.INTERRUPTED}
)
# A worker process exists (or is being launched) for a job in one of these states; a
# QUEUED job has none yet and holds no resources.
ACTIVE_STATUSES = frozenset(
    {
        TrainingStatus.VALIDATING,
        TrainingStatus.PREPARING,
        TrainingStatus.TRAINING,
        TrainingStatus.EVALUATING,
    }
)
