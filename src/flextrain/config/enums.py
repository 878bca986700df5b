"""The enumerations shared by every front end.

String values are part of the public contract: the CLI's `--type` and the REST
API accept exactly these.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal, get_args

# What a dataset's records are for (flextrain.data.shapes maps columns onto these):
# supervised text, labels, instructions, chats and completions; preference pairs,
# answers marked good or bad (KTO) and bare prompts (GRPO).
DataShape = Literal[
    "text",
    "classification",
    "instruction",
    "chat",
    "completion",
    "preference",
    "unpaired",
    "prompt",
]
DATA_SHAPES: tuple[DataShape, ...] = get_args(DataShape)


class TrainingType(StrEnum):
    FINE_TUNING = "fine_tuning"
    LORA_ADAPTATION = "lora_adaptation"
    CONTINUED_PRETRAINING = "continued_pretraining"
    TASK_SPECIFIC = "task_specific"
    FULL_TRAINING = "full_training"
    # Preference and reward training (through TRL): a policy learns from pairs of
    # answers (DPO, ORPO, SimPO), from answers marked good or bad (KTO), or from the
    # rewards its own sampled answers earn (GRPO).
    DPO = "dpo"
    ORPO = "orpo"
    KTO = "kto"
    SIMPO = "simpo"
    GRPO = "grpo"

    @property
    def is_preference(self) -> bool:
        """Trained by a TRL preference or reward trainer, not the supervised Trainer."""
        return self in PREFERENCE_TYPES


PREFERENCE_TYPES = frozenset(
    {
        TrainingType.DPO,
        TrainingType.ORPO,
        TrainingType.KTO,
        TrainingType.SIMPO,
        TrainingType.GRPO,
    }
)
# Methods that compare a chosen with a rejected answer to the same prompt.
PAIRED_TYPES = frozenset({TrainingType.DPO, TrainingType.ORPO, TrainingType.SIMPO})


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
    # The loss or gradient norm became NaN or infinite; the last good checkpoint is
    # kept: resumable (after lowering the learning rate, as the message says).
    DIVERGED = "diverged"
    # Stopped before a checkpoint the disk could not hold; nothing half-written, and
    # resume continues once there is room.
    PAUSED = "paused"

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
        TrainingStatus.DIVERGED,
        TrainingStatus.PAUSED,
    }
)
# Ended without finishing: `resume` continues these from their latest checkpoint.
RESUMABLE_STATUSES = frozenset(
    {
        TrainingStatus.FAILED,
        TrainingStatus.CANCELLED,
        TrainingStatus.INTERRUPTED,
        TrainingStatus.DIVERGED,
        TrainingStatus.PAUSED,
    }
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
