"""Training health, watched at every optimizer step.

The Trainer drops a NaN loss from what it logs (`logging_nan_inf_filter`) and goes on
updating the weights with NaN gradients: the run looks alive and every step after the
bad one is wasted. Here each step's loss and gradient norm are checked before the
optimizer step, while the weights are still the last good ones, and the run stops
(DIVERGED, saying at which step and learning rate, and what to change), skips that
step's update, or goes back to its last checkpoint at half the learning rate, as the
health options say. Loss spikes and stalls become events; gradient-norm statistics of
each logging window go into the metrics.

`HealthMonitor` is the pure part (fed step by step, tested without a model);
`HealthChecked` is the Trainer mixin that feeds it from the Trainer's own loop, and
`HealthCallback` writes what it found to the job store.
"""

from __future__ import annotations

import math
import os
import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from flextrain.config.health import HealthOptions
from flextrain.jobs.store import JobStore
from flextrain.train.stop import TrainingDivergedError

Verdict = Literal["ok", "skip"]

# Steps at which FLEXTRAIN_FAULT_NAN_AT_STEPS has made the loss NaN in this process: each
# fires once, so a run that rolls back past it trains the step again cleanly.
_FIRED: set[int] = set()


@dataclass(frozen=True)
class HealthEvent:
    """Something the monitor saw, for the job's events."""

    kind: str
    message: str
    level: Literal["info", "warning", "error"]
    data: dict[str, Any] = field(default_factory=dict)


class RollbackRequest(Exception):
    """on_divergence=rollback: the runner continues from the last checkpoint with half the
    learning rate (control flow inside the worker, never shown to a user)."""

    def __init__(self, step: int, what: str) -> None:
        super().__init__(f"{what} at step {step}")
        self.step = step
        self.what = what


@dataclass(frozen=True)
class Advice:
    """What the run was doing, for the fixes a divergence message suggests."""

    fp16: bool = False
    clipping: bool = True


class HealthMonitor:
    """Judges each optimizer step from its loss and gradient norm (see the module doc)."""

    def __init__(
        self,
        options: HealthOptions,
        advice: Advice | None = None,
        *,
        agree: Callable[[bool], bool] = lambda flag: flag,
    ) -> None:
        self.options = options
        self.advice = advice or Advice()
        self.agree = agree  # several processes: one rank's NaN stops them all
        self._loss = 0.0
        self._losses: deque[float] = deque(
            maxlen=max(options.spike_window, 2 * options.stall_window, 1)
        )
        self._norms: list[float] = []
        self._last_norm: float | None = None
        self._spiking = False
        self._stalled = False
        self.skipped = 0
        self.rollbacks = 0
        self.events: list[HealthEvent] = []

    # -- fed by the Trainer ------------------------------------------------------------
    def add_loss(self, value: float) -> None:
        """One micro-batch's loss (already divided by the accumulation steps)."""
        self._loss += value

    def end_step(
        self, step: int, grad_norm: float | None, learning_rate: float, *, check_norm: bool = True
    ) -> Verdict:
        """The verdict on optimizer step `step` (1-based), before its update is applied:
        "ok", or "skip" (drop this update). Raises TrainingDivergedError (stop) or
        RollbackRequest (rollback). `check_norm` is off under fp16's loss scaling, whose
        scaler skips an overflowing step by itself."""
        loss, self._loss = self._loss, 0.0
        what, value = "", 0.0
        if not math.isfinite(loss):
            what, value = "loss", loss
        elif check_norm and grad_norm is not None and not math.isfinite(grad_norm):
            what, value = "gradient norm", grad_norm
        if self.agree(bool(what)):
            return self._diverged(step, what or "loss on another process", value, learning_rate)
        if grad_norm is not None and math.isfinite(grad_norm):
            self._norms.append(grad_norm)
            self._last_norm = grad_norm
        self._watch_spike(step, loss)
        self._losses.append(loss)
        self._watch_stall(step)
        return "ok"

    def window_stats(self) -> dict[str, float]:
        """min/median/max of the gradient norms since the last call (a logging window)."""
        norms, self._norms = self._norms, []
        if not norms:
            return {}
        return {
            "grad_norm_min": min(norms),
            "grad_norm_median": statistics.median(norms),
            "grad_norm_max": max(norms),
        }

    def drain(self) -> list[HealthEvent]:
        events, self.events = self.events, []
        return events

    # -- divergence --------------------------------------------------------------------
    def _diverged(self, step: int, what: str, value: float, lr: float) -> Verdict:
        action = self.options.on_divergence
        if action == "skip" and self.skipped < self.options.max_skipped_steps:
            self.skipped += 1
            self.events.append(
                HealthEvent(
                    "skipped_step",
                    f"{what} was {_word(value)} at step {step}: its update was skipped "
                    f"({self.skipped} of at most {self.options.max_skipped_steps}).",
                    "warning",
                    {"step": step, "skipped": self.skipped},
                )
            )
            return "skip"
        if action == "rollback" and self.rollbacks < self.options.max_rollbacks:
            raise RollbackRequest(step, f"{what} became {_word(value)}")
        raise TrainingDivergedError(self.divergence_message(step, what, value, lr), step)

    def divergence_message(self, step: int, what: str, value: float, lr: float) -> str:
        """What happened and what to change (the checkpoint kept is added by the runner)."""
        text = (
            f"{what} became {_word(value)} at step {step} after the learning rate reached {lr:.3g}"
        )
        if self._last_norm is not None:
            text += f" (gradient norm {self._last_norm:.3g} the step before)"
        if self.skipped:
            text += f", with {self.skipped} step(s) already skipped"
        if self.rollbacks:
            text += f", after {self.rollbacks} rollback(s) halving the learning rate"
        fixes = [f"lower learning_rate (to {lr / 10:.2g}, say)"]
        if self.advice.fp16:
            fixes.append("train in bf16 instead of fp16 (bf16: true): its range does not overflow")
        if not self.advice.clipping:
            fixes.append("clip gradients (max_grad_norm: 1.0)")
        if self.options.on_divergence == "stop":
            fixes.append(
                "or set health.on_divergence to rollback (back to the last checkpoint at "
                "half the learning rate) or skip (drop the bad steps)"
            )
        return f"Diverged: {text}. Fix: {'; '.join(fixes)}."

    # -- spikes and stalls -------------------------------------------------------------
    def _watch_spike(self, step: int, loss: float) -> None:
        window = self.options.spike_window
        if len(self._losses) < window:
            return
        median = statistics.median(list(self._losses)[-window:])
        spiking = median > 0 and loss > self.options.spike_factor * median
        if spiking and not self._spiking:
            self.events.append(
                HealthEvent(
                    "loss_spike",
                    f"Loss spiked to {loss:.4g} at step {step}: {loss / median:.1f}x the "
                    f"median {median:.4g} of the {window} steps before.",
                    "warning",
                    {"step": step, "loss": loss, "median": median},
                )
            )
        self._spiking = spiking

    def _watch_stall(self, step: int) -> None:
        window = self.options.stall_window
        if window == 0 or len(self._losses) < 2 * window:
            return
        history = list(self._losses)
        before = statistics.median(history[-2 * window : -window])
        now = statistics.median(history[-window:])
        stalled = before - now < self.options.stall_tolerance * abs(before)
        if stalled and not self._stalled:
            self.events.append(
                HealthEvent(
                    "loss_stalled",
                    f"Loss stalled at step {step}: median {now:.4g} over the last {window} "
                    f"steps against {before:.4g} over the {window} before (less than "
                    f"{self.options.stall_tolerance:.0%} better). A higher learning rate, or "
                    "stopping here, may serve better.",
                    "warning",
                    {"step": step, "median": now, "median_before": before},
                )
            )
        self._stalled = stalled


def _word(value: float) -> str:
    return "nan" if math.isnan(value) else "infinite" if math.isinf(value) else f"{value:.3g}"


class HealthChecked(Trainer):
    """Trainer mixin: each step's loss and gradient norm go to `health` before the optimizer
    step, through the Trainer's `training_step` and `_get_grad_norm` (the one place every
    optimizer step passes with its gradient norm known and its update not yet applied;
    tests/train/test_trainer_overrides.py fails if a transformers release moves it)."""

    health: HealthMonitor | None = None

    def compute_loss(self, model: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
        out = super().compute_loss(model, inputs, *args, **kwargs)
        # Fault injection for the divergence tests: a NaN loss at chosen steps (once each).
        steps = os.environ.get("FLEXTRAIN_FAULT_NAN_AT_STEPS")
        step = self.state.global_step + 1
        if steps and model.training and step not in _FIRED and str(step) in steps.split(","):
            _FIRED.add(step)
            if isinstance(out, tuple):
                return (out[0] * float("nan"), *out[1:])
            return out * float("nan")
        return out

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        loss = super().training_step(*args, **kwargs)
        if self.health is not None:
            self.health.add_loss(float(loss))
        return loss

    def _get_grad_norm(self, model: Any, grad_norm: Any = None) -> Any:
        norm = super()._get_grad_norm(model, grad_norm=grad_norm)
        if self.health is None:
            return norm
        value = float(norm) if norm is not None else None
        verdict = self.health.end_step(
            self.state.global_step + 1,
            value,
            float(self._get_learning_rate()),
            check_norm=getattr(self.accelerator, "scaler", None) is None,
        )
        if verdict == "skip":
            # Parameters without a gradient are left alone by the optimizer: no update,
            # no moment decay, as if the batch had not been seen.
            model.zero_grad(set_to_none=True)
        return norm


class HealthCallback(TrainerCallback):
    """Writes the monitor's events to the job store (rank 0), adds gradient-norm
    statistics to each logged row, and applies a rollback's learning-rate factor once the
    checkpoint's optimizer and scheduler state are loaded (they carry the old rate)."""

    def __init__(
        self, monitor: HealthMonitor, store: JobStore, job_id: str, *, reporter: bool = True
    ) -> None:
        self.monitor = monitor
        self.store = store
        self.job_id = job_id
        self.reporter = reporter
        self.lr_factor = 1.0  # to apply at the next step begin (a rollback's)
        self._applied = True
        self.total_factor = 1.0  # of the configured learning rate, after rollbacks
        self.saved_at: dict[int, float] = {}  # checkpoint step -> total_factor then

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        self.saved_at[state.global_step] = self.total_factor

    def scale_learning_rate(self, factor: float) -> None:
        self.lr_factor = factor
        self._applied = False

    def on_step_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        if self._applied:
            return
        self._applied = True
        optimizer, scheduler = kw.get("optimizer"), kw.get("lr_scheduler")
        if optimizer is not None:
            for group in optimizer.param_groups:
                group["lr"] *= self.lr_factor
                if "initial_lr" in group:
                    group["initial_lr"] *= self.lr_factor
        if scheduler is not None and hasattr(scheduler, "base_lrs"):
            scheduler.base_lrs = [lr * self.lr_factor for lr in scheduler.base_lrs]
            if hasattr(scheduler, "_last_lr"):
                scheduler._last_lr = [lr * self.lr_factor for lr in scheduler._last_lr]

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kw: Any
    ) -> None:
        for event in self.monitor.drain():
            print(f"[flextrain] {event.message}", flush=True)
            if self.reporter:
                self.store.add_event(
                    self.job_id, event.kind, event.message, level=event.level, data=event.data
                )

    def on_log(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        logs: dict[str, float] | None = None,
        **kw: Any,
    ) -> None:
        if logs is not None and "loss" in logs:
            logs.update(self.monitor.window_stats())
