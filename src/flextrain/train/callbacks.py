"""Trainer callbacks that report to the job store."""

from __future__ import annotations

import math
import time
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from flextrain.config.enums import TrainingStatus
from flextrain.jobs.store import JobStore


class JobCancelledError(Exception):
    """The job was cancelled from outside while the worker was training."""


class StoreProgressCallback(TrainerCallback):
    """Writes progress at most every `interval` seconds and every logged metric.

    Also notices a CANCELLED status written by another process, so a job stops
    even when its cancel signal could not reach the worker (other host).
    """

    def __init__(self, store: JobStore, job_id: str, interval: float = 0.5) -> None:
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self._last_write = 0.0
        self._last_cancel_check = 0.0

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.store.update(
            self.job_id,
            status=TrainingStatus.TRAINING,
            total_steps=state.max_steps,
            current_step=state.global_step,
        )

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        now = time.monotonic()
        if now - self._last_write >= self.interval or state.global_step == state.max_steps:
            self._write_progress(state)
        if now - self._last_cancel_check >= 2.0:
            self._last_cancel_check = now
            job = self.store.get(self.job_id)
            if job is not None and job.status == TrainingStatus.CANCELLED:
                raise JobCancelledError(self.job_id)

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if not logs:
            return
        values = {k: v for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(v)}
        self.store.add_metric(self.job_id, step=state.global_step, epoch=state.epoch, values=values)
        update: dict[str, Any] = {}
        if "loss" in values:
            update["loss"] = values["loss"]
        if "learning_rate" in values:
            update["learning_rate"] = values["learning_rate"]
        if "eval_loss" in values:
            update["eval_loss"] = values["eval_loss"]
        if update:
            self.store.update(self.job_id, **update)
        self._write_progress(state)

    def _write_progress(self, state: TrainerState) -> None:
        self._last_write = time.monotonic()
        total = max(state.max_steps, 1)
        self.store.update(
            self.job_id,
            progress=min(state.global_step / total, 1.0),
            current_step=state.global_step,
            current_epoch=float(state.epoch or 0.0),
        )
