"""The health monitor's judgement, step by step, without a model: what counts as a
divergence, a spike, a stall; what skip and rollback allow; what the message says."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from flextrain.config.health import HealthOptions
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.train.health import Advice, HealthMonitor, RollbackRequest
from flextrain.train.stop import TrainingDivergedError


def _step(monitor: HealthMonitor, step: int, loss: float, norm: float | None = 1.0) -> str:
    monitor.add_loss(loss)
    return monitor.end_step(step, norm, 3e-4)


def test_a_nan_loss_stops_the_run_naming_step_rate_and_fixes() -> None:
    monitor = HealthMonitor(HealthOptions(), Advice(fp16=True, clipping=False))
    for step in range(1, 5):
        assert _step(monitor, step, 2.0, norm=0.5 * step) == "ok"
    with pytest.raises(TrainingDivergedError) as raised:
        _step(monitor, 5, math.nan)
    message = str(raised.value)
    assert raised.value.step == 5
    assert message.startswith(
        "Diverged: loss became nan at step 5 after the learning rate reached 0.0003 "
        "(gradient norm 2 the step before)."
    )
    assert "Fix: lower learning_rate (to 3e-05, say)" in message
    assert "train in bf16 instead of fp16" in message
    assert "clip gradients (max_grad_norm: 1.0)" in message
    assert "health.on_divergence to rollback" in message


def test_an_infinite_gradient_norm_diverges_unless_fp16_scaling_handles_it() -> None:
    monitor = HealthMonitor(HealthOptions())
    monitor.add_loss(1.0)
    assert monitor.end_step(1, math.inf, 1e-3, check_norm=False) == "ok"
    monitor.add_loss(1.0)
    with pytest.raises(TrainingDivergedError, match="gradient norm became infinite at step 2"):
        monitor.end_step(2, math.inf, 1e-3)


def test_skip_drops_bad_steps_up_to_the_limit_then_stops() -> None:
    monitor = HealthMonitor(HealthOptions(on_divergence="skip", max_skipped_steps=2))
    assert _step(monitor, 1, math.inf) == "skip"
    assert _step(monitor, 2, 1.0) == "ok"
    assert _step(monitor, 3, math.nan) == "skip"
    events = monitor.drain()
    assert [e.kind for e in events] == ["skipped_step", "skipped_step"]
    assert events[1].message == "loss was nan at step 3: its update was skipped (2 of at most 2)."
    with pytest.raises(TrainingDivergedError, match="with 2 step\\(s\\) already skipped"):
        _step(monitor, 4, math.nan)


def test_rollback_is_asked_for_until_the_limit() -> None:
    monitor = HealthMonitor(HealthOptions(on_divergence="rollback", max_rollbacks=1))
    with pytest.raises(RollbackRequest) as request:
        _step(monitor, 7, math.nan)
    assert (request.value.step, request.value.what) == (7, "loss became nan")
    monitor.rollbacks += 1  # what the runner counts when it rolls back
    with pytest.raises(TrainingDivergedError, match="after 1 rollback\\(s\\) halving"):
        _step(monitor, 7, math.nan)


def test_one_process_seeing_nan_stops_them_all() -> None:
    monitor = HealthMonitor(HealthOptions(), agree=lambda flag: True)
    with pytest.raises(TrainingDivergedError, match="loss on another process became"):
        _step(monitor, 3, 1.0)


def test_a_spike_is_an_event_once_per_spike() -> None:
    monitor = HealthMonitor(HealthOptions(spike_window=4, spike_factor=3.0, stall_window=0))
    for step, loss in enumerate([2.0, 2.1, 1.9, 2.0, 7.0, 2.0, 2.0, 9.0], start=1):
        _step(monitor, step, loss)
    spikes = [e for e in monitor.drain() if e.kind == "loss_spike"]
    assert [e.data["step"] for e in spikes] == [5, 8]
    assert spikes[0].message == (
        "Loss spiked to 7 at step 5: 3.5x the median 2 of the 4 steps before."
    )


def test_a_flat_loss_is_a_stall_and_a_falling_one_is_not() -> None:
    falling = HealthMonitor(HealthOptions(stall_window=3))
    for step in range(1, 13):
        _step(falling, step, 5.0 - 0.3 * step)
    assert not [e for e in falling.drain() if e.kind == "loss_stalled"]

    flat = HealthMonitor(HealthOptions(stall_window=3, stall_tolerance=0.01))
    for step, loss in enumerate([5, 4, 3, 2.0, 2.01, 1.99, 2.0, 2.0, 2.0], start=1):
        _step(flat, step, loss)
    [stall] = [e for e in flat.drain() if e.kind == "loss_stalled"]
    assert stall.data["step"] == 8
    assert "median 2 over the last 3 steps against 2.01 over the 3 before" in stall.message


def test_gradient_norm_statistics_per_logging_window() -> None:
    monitor = HealthMonitor(HealthOptions())
    for step, norm in enumerate([3.0, 1.0, 2.0], start=1):
        _step(monitor, step, 1.0, norm)
    assert monitor.window_stats() == {
        "grad_norm_min": 1.0,
        "grad_norm_median": 2.0,
        "grad_norm_max": 3.0,
    }
    assert monitor.window_stats() == {}  # the window starts over


def test_health_options_are_checked_by_name() -> None:
    with pytest.raises(ValidationError) as raised:
        AdvancedTrainingConfig(
            model_id="m",
            dataset_id="d",
            training_type="fine_tuning",
            health={"on_divergence": "ignore", "spike_factor": 0.5},
        )
    text = str(raised.value)
    assert "health.on_divergence" in text
    assert "'stop', 'skip' or 'rollback'" in text
    assert "health.spike_factor" in text
