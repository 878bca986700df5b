"""Trainer callbacks that report to the job store and stop a run cleanly."""

from __future__ import annotations

import math
import time
from typing import Any

import psutil
import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from flextrain.config.enums import TrainingStatus
from flextrain.hardware.usage import peak_rss_bytes
from flextrain.jobs.store import JobStore
from flextrain.train import distributed
from flextrain.train.stop import JobCancelledError, StopRequest

__all__ = ["JobCancelledError", "StopRequest", "StoreProgressCallback", "memory_now"]

_GIB = 1024**3


class StoreProgressCallback(TrainerCallback):
    """Writes progress at most every `interval` seconds and every logged metric.

    Each training log row also gets what the Trainer does not log: throughput over
    the logging window (tokens and samples per second), the process's resident
    memory and, with a GPU, memory allocated and reserved. Also notices a
    CANCELLED status written by another process, so a job stops even when its
    cancel signal could not reach the worker (other host).

    In a multi-process run only the `reporter` (rank 0) writes and reads the store;
    whether to stop is agreed by every rank at each step end, so that all of them
    save the same step's checkpoint and leave the loop together.
    """

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        interval: float = 0.5,
        *,
        stop: StopRequest | None = None,
        samples_per_step: int = 1,
        objective: str = "causal_lm",
        reporter: bool = True,
    ) -> None:
        self.store = store
        self.job_id = job_id
        self.interval = interval
        self.stop = stop or StopRequest()
        self.samples_per_step = samples_per_step
        self.language_model = objective in ("causal_lm", "masked_lm")
        self._last_write = 0.0
        self._last_cancel_check = 0.0
        self._window: tuple[float, int, int] | None = None  # (time, step, tokens)
        self.stopped_by_request = False
        self.reporter = reporter

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.stop.in_training_loop = True
        self._window = (time.monotonic(), state.global_step, state.num_input_tokens_seen or 0)
        if not self.reporter:
            return
        self.store.update(
            self.job_id,
            status=TrainingStatus.TRAINING,
            total_steps=state.max_steps,
            current_step=state.global_step,
        )

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.stop.in_training_loop = False

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        now = time.monotonic()
        if self.reporter and (
            now - self._last_write >= self.interval or state.global_step == state.max_steps
        ):
            self._write_progress(state)
        if self.reporter and now - self._last_cancel_check >= 2.0:
            self._last_cancel_check = now
            job = self.store.get(self.job_id)
            if job is not None and job.status == TrainingStatus.CANCELLED:
                self.stop.set("cancelled")
        # Every rank acts on the agreed value only: a SIGTERM that lands while the ranks
        # agree sets this rank's flag after it voted, and acting on the flag itself would
        # stop this rank alone at this step while the others train on into their next
        # collective (a deadlock until the grace runs out). It is voted next step.
        requested = self.stop.is_set()
        stop_now = distributed.agree(requested)
        if stop_now and not requested and not self.stop.is_set():
            self.stop.set("another rank stopped")
        if stop_now and not self.stopped_by_request:
            # Checkpoint this step (optimizer, scheduler, RNG and data position with it)
            # and leave the loop; the runner turns this into JobCancelledError.
            self.stopped_by_request = True
            control.should_save = True
            control.should_training_stop = True
            print(
                f"[flextrain] stop requested ({self.stop.reason}): "
                f"saving a checkpoint at step {state.global_step}",
                flush=True,
            )

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if not logs or not self.reporter:
            return
        values = {k: v for k, v in logs.items() if isinstance(v, int | float) and math.isfinite(v)}
        if "loss" in values:
            values.update(self._window_rates(state))
            values.update(memory_now())
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

    def _window_rates(self, state: TrainerState) -> dict[str, float]:
        """Throughput since the previous training log: what the run does *now*."""
        now = time.monotonic()
        tokens = state.num_input_tokens_seen or 0
        out: dict[str, float] = {}
        if self._window is not None:
            then, step, seen = self._window
            elapsed = now - then
            if elapsed > 0 and state.global_step > step:
                out["samples_per_second"] = (
                    (state.global_step - step) * self.samples_per_step / elapsed
                )
                if tokens > seen:
                    out["tokens_per_second"] = (tokens - seen) / elapsed
        self._window = (now, state.global_step, tokens)
        return out

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        """A checkpoint is where a resume continues: the job's step must say so. On a
        cancel the job is already CANCELLED (terminal) when the stop checkpoint is saved,
        so this write is allowed past the terminal state; otherwise the job would show
        the last throttled progress write, a few steps behind its checkpoint."""
        if self.reporter:
            self._write_progress(state, allow_terminal=self.stopped_by_request)

    def _write_progress(self, state: TrainerState, *, allow_terminal: bool = False) -> None:
        self._last_write = time.monotonic()
        total = max(state.max_steps, 1)
        self.store.update(
            self.job_id,
            allow_terminal=allow_terminal,
            progress=min(state.global_step / total, 1.0),
            current_step=state.global_step,
            current_epoch=float(state.epoch or 0.0),
        )


def memory_now() -> dict[str, float]:
    """Resident memory of this process (now and its peak) and, with a GPU, allocated and
    reserved memory."""
    rss = psutil.Process().memory_info().rss / _GIB
    # VmHWM is counted a little differently from psutil's rss.
    peak = max(peak_rss_bytes() / _GIB, rss)
    out = {"rss_gb": rss, "peak_rss_gb": peak}
    if torch.cuda.is_available():
        out["gpu_allocated_gb"] = torch.cuda.memory_allocated() / _GIB
        out["gpu_reserved_gb"] = torch.cuda.memory_reserved() / _GIB
        out["gpu_peak_allocated_gb"] = torch.cuda.max_memory_allocated() / _GIB
    return out
