"""Training health in real runs: a diverging run stops at the step it diverged with the
last good checkpoint loadable; skip and rollback go on; gradient-norm statistics are
stored with each logged row.

The divergence is real (SGD at learning rate 1 without clipping on a tiny model). The
skip and rollback runs need a NaN at a known step and a run that recovers, so the
worker makes the loss NaN at chosen steps (FLEXTRAIN_FAULT_NAN_AT_STEPS, once each);
what happens next is the code under test.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs.checkpoints import latest_checkpoint
from flextrain.service import TrainingService


def _config(**overrides: object) -> AdvancedTrainingConfig:
    values: dict[str, object] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": TrainingType.FULL_TRAINING,
        "max_steps": 12,
        "save_steps": 4,
        "batch_size": 8,
        "max_length": 32,
        "logging_steps": 1,
        "num_threads": 1,
        "eval_split": 0.0,
        "evaluate_before_training": False,
        "gradient_checkpointing": False,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "warmup_steps": 0,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)  # type: ignore[arg-type]


def _losses(service: TrainingService, job_id: str) -> dict[int, float]:
    return {
        int(row["step"]): float(row["loss"])
        for row in service.metric_history(job_id)
        if row.get("loss") is not None
    }


def test_an_absurd_learning_rate_stops_as_diverged_with_the_last_good_checkpoint(
    service: TrainingService,
) -> None:
    job = service.create_job(
        _config(optim="sgd", learning_rate=1.0, max_grad_norm=0.0, max_steps=60, save_steps=2)
    )
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=180)
    assert done.status == TrainingStatus.DIVERGED, (done.status, done.error_message)
    [event] = [e for e in service.events(job.job_id) if e.kind == "diverged"]
    step = int(event.data["step"])
    message = done.error_message or ""
    assert f"at step {step} after the learning rate reached 1" in message
    assert "Fix: lower learning_rate (to 0.1, say)" in message
    assert "clip gradients (max_grad_norm: 1.0)" in message
    assert "health.on_divergence to rollback" in message
    # Every step before it was logged with a finite loss; none after.
    losses = _losses(service, job.job_id)
    assert sorted(losses) == list(range(1, step)), (step, sorted(losses))
    assert all(math.isfinite(v) for v in losses.values())
    # The checkpoint kept is the last one before the bad step, and it loads, finite.
    checkpoints = service.environment(job.job_id).checkpoint_dir
    kept = latest_checkpoint(checkpoints)
    assert kept is not None
    assert f"The last good checkpoint, {kept.name}, is kept" in message
    assert int(kept.name.split("-")[1]) == (step - 1) // 2 * 2
    model = AutoModelForCausalLM.from_pretrained(kept)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    # Gradient-norm statistics ride with each logged row.
    rows = [r for r in service.metric_history(job.job_id) if r.get("loss") is not None]
    assert all(r["grad_norm_min"] <= r["grad_norm_median"] <= r["grad_norm_max"] for r in rows)


def test_skip_drops_the_bad_steps_and_the_run_completes(
    service: TrainingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXTRAIN_FAULT_NAN_AT_STEPS", "3,7")
    job = service.create_job(_config(health={"on_divergence": "skip"}))
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=180)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    skipped = [e for e in service.events(job.job_id) if e.kind == "skipped_step"]
    assert [int(e.data["step"]) for e in skipped] == [3, 7]
    assert "loss was nan at step 3: its update was skipped (1 of at most 10)" in skipped[0].message
    losses = _losses(service, job.job_id)
    assert sorted(losses) == list(range(1, 13))
    assert all(math.isfinite(v) for v in losses.values())
    assert losses[12] < losses[1]
    model = AutoModelForCausalLM.from_pretrained(done.model_path)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_rollback_goes_back_to_the_checkpoint_at_half_the_learning_rate(
    service: TrainingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FLEXTRAIN_FAULT_NAN_AT_STEPS", "6")
    job = service.create_job(_config(health={"on_divergence": "rollback"}))
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=180)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    [event] = [e for e in service.events(job.job_id) if e.kind == "rolled_back"]
    assert event.data["checkpoint_step"] == 4
    assert event.data["lr_factor"] == 0.5
    assert "Loss became nan at step 6: back to checkpoint-4 at half the learning rate" in (
        event.message
    )
    # Steps 5 and 6 were trained again, once each in the history, at half the rate.
    history = [r for r in service.metric_history(job.job_id) if r.get("loss") is not None]
    assert [int(r["step"]) for r in history] == list(range(1, 13))
    rates = {int(r["step"]): r["learning_rate"] for r in history}
    assert rates[4] == pytest.approx(3e-3)
    assert rates[5] == pytest.approx(1.5e-3)
    assert rates[12] == pytest.approx(1.5e-3)
    assert Path(done.model_path or "").is_dir()
