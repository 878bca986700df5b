"""Options of training health: what a run does when its loss diverges, when a spike or a
stall counts as one, and how it treats a disk that fills up.

A diverged run wastes every step after the one that broke it, and a full disk turns a
checkpoint into a half-written folder; both are cheaper to catch at the step they happen
than to find in the morning. The defaults stop a diverged run (keeping the last good
checkpoint) and pause a run whose next checkpoint will not fit.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

DivergenceAction = Literal["stop", "skip", "rollback"]


class HealthOptions(BaseModel):
    """Field `health` of an advanced config."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    on_divergence: DivergenceAction = Field(
        "stop",
        description="A NaN or infinite loss or gradient norm: stop (the job ends DIVERGED "
        "with the last good checkpoint kept), skip (that step's update is dropped and "
        "counted), or rollback (continue from the last checkpoint at half the learning "
        "rate).",
    )
    max_skipped_steps: int = Field(
        10,
        ge=1,
        le=100_000,
        description="skip: steps a run may drop before it is stopped as diverged (a run "
        "that keeps producing NaN is not going to recover).",
    )
    max_rollbacks: int = Field(
        3,
        ge=1,
        le=100,
        description="rollback: times a run may go back and halve its learning rate before "
        "it is stopped as diverged.",
    )
    spike_factor: float = Field(
        3.0,
        gt=1.0,
        le=1e6,
        description="A step's loss above this many times the median of the previous "
        "spike_window steps is recorded as a loss spike.",
    )
    spike_window: int = Field(
        20, ge=3, le=100_000, description="Steps whose median loss a spike is measured against."
    )
    stall_window: int = Field(
        200,
        ge=0,
        le=1_000_000,
        description="A loss whose median over the last stall_window steps is no better "
        "(by stall_tolerance) than over the window before is recorded as stalled; 0: off.",
    )
    stall_tolerance: float = Field(
        0.01,
        ge=0.0,
        le=1.0,
        description="Relative improvement of the median loss below which a window counts "
        "as flat (0.01: less than 1% better).",
    )
    disk_reserve_mb: float = Field(
        256.0,
        ge=0.0,
        le=10_000_000,
        description="Free space (MB) to leave on the output disk: a checkpoint that would "
        "cut into it is not written, and the job pauses instead.",
    )
    prune_checkpoints_when_full: bool = Field(
        False,
        description="When the next checkpoint does not fit, delete older checkpoints (the "
        "newest is always kept) before pausing the job.",
    )
