"""Stopping a run from outside its training loop.

Kept apart from the callbacks so that the worker can install its SIGTERM
handler before torch and transformers are imported (seconds, on a cold disk).
"""

from __future__ import annotations

import threading


class JobCancelledError(Exception):
    """The run was stopped from outside (cancel or SIGTERM) after saving a checkpoint.

    Not a FlextrainError: control flow inside the worker (it ends the training loop and
    the job is recorded as cancelled), never an answer to a request or a command.
    """


class StopRequest:
    """A stop asked for from outside the training loop (a signal handler, another host).

    The loop notices it at the next step end, saves a checkpoint and stops: a cancelled
    run can be resumed from where it was, not from the last periodic checkpoint.
    """

    def __init__(self) -> None:
        self._event = threading.Event()
        self.in_training_loop = False
        self.reason = ""

    def set(self, reason: str) -> None:
        self.reason = self.reason or reason
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()


class TrainingDivergedError(Exception):
    """The loss or gradient norm became NaN or infinite and the run stopped (health
    option on_divergence); the message says at which step, at what learning rate, which
    checkpoint is kept and what to change. The job ends DIVERGED, resumable."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class DiskPausedError(Exception):
    """The run stopped before writing what the disk could not hold (a checkpoint, the
    final model); nothing is half-written. The job ends PAUSED and resume continues
    from the latest checkpoint once there is room."""
