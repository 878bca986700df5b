"""Calibration probe: a few real optimizer steps at two batch sizes, then a fit.

Memory at a fixed sequence length grows linearly with the batch (activations
and logits are per row), so peaks at two or three small batch sizes give the
fixed part M0 and the per-row slope; the same for step time. The fit predicts
the requested batch and the largest one that fits. Steps run in a subprocess
(flextrain.train.probe_worker) that builds the model with the training code
itself, after at least two optimizer steps so AdamW's lazily created state is
counted (ESTIMATION.md §6).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flextrain.estimate.memory import TrainingSetup
from flextrain.jobs.workerenv import preload_allocator, tcmalloc_path


class ProbeError(RuntimeError):
    """The probe subprocess failed; the message carries the end of its output.

    Not a FlextrainError: the one caller (models/compatibility.py) turns it into a
    warning and shows the analytic estimate; it never reaches a front end.
    """


@dataclass(frozen=True)
class ProbePoint:
    batch_size: int
    seq_len: int
    peak_bytes: int
    step_seconds: float


@dataclass(frozen=True)
class ProbeResult:
    points: list[ProbePoint]
    fixed_bytes: float
    bytes_per_row: float
    step_fixed_seconds: float
    step_seconds_per_row: float
    predicted_peak_bytes: int
    predicted_step_seconds: float
    largest_batch: int | None
    wall_seconds: float
    measured_on: str  # "cpu" (peak RSS) or "cuda" (peak reserved)

    def to_dict(self) -> dict[str, Any]:
        return {
            "points": [p.__dict__ for p in self.points],
            "fixed_bytes": self.fixed_bytes,
            "bytes_per_row": self.bytes_per_row,
            "predicted_peak_gb": self.predicted_peak_bytes / 1024**3,
            "predicted_step_seconds": self.predicted_step_seconds,
            "largest_batch": self.largest_batch,
            "wall_seconds": self.wall_seconds,
            "measured_on": self.measured_on,
        }


# Above this many seconds per optimizer step at the requested batch (analytic
# estimate), the probe does not run the requested batch itself but extrapolates
# from b/4 and b/2, keeping its cost bounded.
ANCHOR_MAX_STEP_SECONDS = 30.0


def probe_batches(target: int, *, anchored: bool = True) -> list[int]:
    """Two batch sizes to measure, distinct and ascending.

    Anchored (the default): a quarter of the target and the target itself. On CPU
    the allocator keeps a share of freed memory that depends on tensor sizes, so
    peak RSS is not linear in the batch (measured: b/4 and b/2 extrapolated to b
    over-predicted checkpointed runs by 15%); measuring the target removes that
    error, and the small point gives the slope for the largest batch that fits.
    Unanchored: b/4 and b/2, for when a step at the target is too slow to probe.
    """
    if target <= 2:
        return [1, 2]
    if anchored:
        return [max(1, target // 4), target]
    candidates = sorted({max(1, target // 4), max(2, target // 2)})
    if len(candidates) < 2:
        candidates = [1, 2]
    return candidates


def should_anchor(analytic_step_seconds: float) -> bool:
    """Whether the probe can afford to run the requested batch itself."""
    return analytic_step_seconds <= ANCHOR_MAX_STEP_SECONDS


def fit_line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares intercept and slope."""
    mean_x, mean_y = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mean_x) ** 2 for x in xs)
    if var == 0:
        return mean_y, 0.0
    slope = sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / var
    return mean_y - slope * mean_x, slope


def build_request(
    model_path: str,
    setup: TrainingSetup,
    *,
    training_type: str,
    labels: list[str] | None = None,
    batches: list[int] | None = None,
    anchored: bool = True,
    steps: int | None = None,
    num_threads: int = 1,
    preference: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The probe worker's request (pure, testable without launching).

    Anchored probes take two optimizer steps per point (the second one runs with
    AdamW's state allocated, which is the peak), unanchored ones three, to keep
    the anchored probe's cost near the unanchored one's.
    """
    if batches is None and setup.generations_per_row > 1:
        # GRPO: every probed batch must hold whole groups of completions.
        group = setup.generations_per_row
        target = max(group, setup.batch_size - setup.batch_size % group)
        batches = sorted({group, target}) if target > group else [group, 2 * group]
    return {
        "model_path": model_path,
        "objective": setup.objective,
        "training_type": training_type,
        "labels": labels or [str(i) for i in range(setup.num_labels)],
        "precision": setup.precision,
        "gradient_checkpointing": setup.gradient_checkpointing,
        "optim": setup.optimizer,
        "lora_r": setup.lora_r,
        "lora_alpha": 2 * setup.lora_r,
        "lora_target_modules": list(setup.lora_targets) or None,
        "load_in_4bit": setup.quantized_4bit,
        "double_quant": setup.double_quant,
        "points": [
            [b, setup.seq_len]
            for b in (batches or probe_batches(setup.batch_size, anchored=anchored))
        ],
        "steps": steps if steps is not None else (2 if anchored else 3),
        "num_threads": num_threads,
        # Preference and reward training: the method's options (the probe runs its
        # TRL trainer on synthetic pairs, marked answers or prompts of the same length).
        "preference": preference,
    }


def run_probe(
    request: dict[str, Any],
    *,
    target_batch: int,
    budget_bytes: float | None = None,
    margin: float = 0.05,
    timeout: float = 300,
    analytic: Callable[[int], float] | None = None,
) -> ProbeResult:
    """Measure each of the request's points in a fresh process, then fit.

    `analytic(batch)` is the analytic peak estimate at a batch size; with it the
    fit keeps the analytic model's shape (see fit_probe).

    One process per point: a process's peak resident memory never goes down,
    and memory the allocator kept from a smaller point would inflate the next.
    """
    started = time.monotonic()
    deadline = started + timeout
    raw: list[dict[str, Any]] = []
    for point in request["points"]:
        single = {**request, "points": [point]}
        raw.extend(_run_worker(single, max(deadline - time.monotonic(), 1.0), timeout))
    if len(raw) < 2:
        raise ProbeError("The probe returned fewer than two measurements.")
    on_gpu = raw[0]["gpu_peak_reserved"] is not None
    points = [
        ProbePoint(
            batch_size=e["batch_size"],
            seq_len=e["seq_len"],
            peak_bytes=int(e["gpu_peak_reserved"] if on_gpu else e["peak_rss"]),
            # The first step allocates optimizer state; steady state is the rest.
            step_seconds=statistics.median(e["step_times"][1:] or e["step_times"]),
        )
        for e in raw
    ]
    # A job's process goes through the same set-up, so its peak is never below
    # set-up's own (reported apart so that it does not distort the slope).
    setup_floor = 0 if on_gpu else max(int(e.get("setup_peak_rss") or 0) for e in raw)
    return fit_probe(
        points,
        target_batch,
        budget_bytes,
        margin,
        time.monotonic() - started,
        "cuda" if on_gpu else "cpu",
        analytic,
        floor_bytes=setup_floor,
    )


def probe_environment() -> dict[str, str]:
    """The probe process's environment: the allocator the job's worker will have
    (jobs/workerenv.py), so its steps are as fast as the job's and its memory the same."""
    env = {
        **os.environ,
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    }
    return preload_allocator(env, tcmalloc_path())


def _run_worker(request: dict[str, Any], remaining: float, timeout: float) -> list[dict[str, Any]]:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as fh:
        json.dump(request, fh)
    try:
        done = subprocess.run(
            [sys.executable, "-m", "flextrain.train.probe_worker", fh.name],
            capture_output=True,
            text=True,
            timeout=remaining,
            env=probe_environment(),
        )
    except subprocess.TimeoutExpired as exc:
        raise ProbeError(f"The probe took longer than {timeout:.0f} s.") from exc
    finally:
        Path(fh.name).unlink(missing_ok=True)
    if done.returncode != 0:
        raise ProbeError(f"The probe failed: {done.stderr.strip()[-1500:]}")
    events = [json.loads(ln) for ln in done.stdout.splitlines() if ln.startswith('{"event"')]
    return [e for e in events if e["event"] == "point"]


# Added to the calibrated estimate: an under-estimate is an out-of-memory crash for
# the user, an over-estimate only a smaller batch. Repeated fresh-process runs of
# one configuration on this machine differ by up to 4-6% in peak RSS (glibc keeps
# a varying share of freed memory); see docs/benchmarks.md.
PROBE_BIAS = 0.025


def fit_probe(
    points: list[ProbePoint],
    target_batch: int,
    budget_bytes: float | None,
    margin: float,
    wall_seconds: float,
    measured_on: str,
    analytic: Callable[[int], float] | None = None,
    floor_bytes: int = 0,
) -> ProbeResult:
    """Predict the target batch from the measured points.

    Two predictors, averaged: a straight line through the points (memory is
    linear in the batch at a fixed length), and the analytic estimate scaled by
    its error at the largest measured point (keeps the analytic model's shape,
    e.g. where the peak moves from gradients to activations). Then a small bias
    towards over-estimating, and never below a measurement (nor below
    `floor_bytes`, the set-up peak a job also goes through).
    """
    xs = [float(p.batch_size) for p in points]
    fixed, per_row = fit_line(xs, [float(p.peak_bytes) for p in points])
    per_row = max(per_row, 0.0)
    largest_point = max(points, key=lambda p: p.batch_size)
    measured_max = max(
        (p.peak_bytes for p in points if p.batch_size <= target_batch), default=floor_bytes
    )
    measured_max = max(measured_max, floor_bytes)

    def predict(batch: int) -> float:
        linear = fixed + per_row * batch
        if analytic is not None:
            scaled = analytic(batch) * largest_point.peak_bytes / analytic(largest_point.batch_size)
            linear = (linear + scaled) / 2
        return linear * (1 + PROBE_BIAS)

    predicted = max(predict(target_batch), measured_max)
    t0, t_row = fit_line(xs, [p.step_seconds for p in points])
    step = max(t0 + t_row * target_batch, 1e-6)
    largest = None
    if budget_bytes is not None and (per_row > 0 or analytic is not None):
        limit = budget_bytes * (1 - margin)
        lo, hi = 0, 1
        while hi <= 1 << 20 and predict(hi) <= limit:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if predict(mid) <= limit else (lo, mid)
        largest = lo
    return ProbeResult(
        points=points,
        fixed_bytes=fixed,
        bytes_per_row=per_row,
        step_fixed_seconds=t0,
        step_seconds_per_row=t_row,
        predicted_peak_bytes=int(predicted),
        predicted_step_seconds=step,
        largest_batch=largest,
        wall_seconds=wall_seconds,
        measured_on=measured_on,
    )
