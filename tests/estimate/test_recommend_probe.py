"""What to change when a run does not fit, and the calibration probe.

The recommendation and fitting tests are pure arithmetic; two tests launch the
probe worker for real: one short probe of tiny-llama, one on a missing model.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from flextrain.estimate.memory import TrainingSetup, estimate_memory
from flextrain.estimate.probe import (
    ANCHOR_MAX_STEP_SECONDS,
    PROBE_BIAS,
    ProbeError,
    ProbePoint,
    build_request,
    fit_line,
    fit_probe,
    probe_batches,
    run_probe,
    should_anchor,
)
from flextrain.estimate.recommend import Recommendation, largest_fitting_batch, recommend
from flextrain.models.builtin import TINY_LLAMA_ID
from flextrain.models.resolve import ModelResolver
from tests.estimate.archs import llama_like

DECODER = llama_like()
TARGETS = ("q_proj", "v_proj")
BIG = TrainingSetup(objective="causal_lm", lora=False, batch_size=32, seq_len=512)


def peak(setup: TrainingSetup, **changes: object) -> int:
    return estimate_memory(DECODER, replace(setup, **changes)).peak  # type: ignore[arg-type]


def by_changes(options: list[Recommendation], **changes: object) -> Recommendation:
    found = [r for r in options if all(r.changes.get(k) == v for k, v in changes.items())]
    assert found, f"no option with {changes}: {[r.changes for r in options]}"
    return found[0]


def smaller_batch_options(options: list[Recommendation]) -> list[Recommendation]:
    return [r for r in options if "batch_size" in r.changes]


# -- recommend -------------------------------------------------------------------------


def test_nothing_to_recommend_when_it_fits() -> None:
    need = peak(BIG)
    assert recommend(DECODER, BIG, need, lora_targets=TARGETS) == []
    assert recommend(DECODER, BIG, need * 2, gpu_count=4, lora_targets=TARGETS) == []


def test_options_when_it_does_not_fit() -> None:
    # Batch 8 with accumulation fits exactly; the full batch of 32 does not.
    budget = peak(BIG, batch_size=8, gradient_accumulation_steps=2) + 1
    assert peak(BIG) > budget
    options = recommend(DECODER, BIG, budget, lora_targets=TARGETS)
    assert options

    smaller = by_changes(options, batch_size=8)
    assert smaller.changes == {"batch_size": 8, "gradient_accumulation_steps": 4}
    assert smaller.fits
    assert "effective batch 32" in smaller.description
    assert smaller.estimate == estimate_memory(
        DECODER, replace(BIG, batch_size=8, gradient_accumulation_steps=4)
    )

    checkpointing = next(r for r in options if r.changes == {"gradient_checkpointing": True})
    assert checkpointing.estimate.activations < estimate_memory(DECODER, BIG).activations

    lora = next(r for r in options if r.changes == {"training_type": "lora_adaptation"})
    assert lora.estimate.trainable_parameters < DECODER.num_parameters / 50

    # No GPU: no sharding and no mixed precision to offer.
    assert not any("num_processes" in r.changes for r in options)
    assert not any("use_mixed_precision" in r.changes for r in options)


@pytest.mark.parametrize(("batch", "accumulation"), [(32, 1), (30, 1), (12, 3), (7, 2)])
def test_smaller_batches_keep_the_effective_batch(batch: int, accumulation: int) -> None:
    setup = replace(BIG, batch_size=batch, gradient_accumulation_steps=accumulation)
    budget = peak(setup, batch_size=2, gradient_accumulation_steps=2) + 1
    options = smaller_batch_options(recommend(DECODER, setup, budget, lora_targets=TARGETS))
    assert options
    for r in options:
        micro, steps = r.changes["batch_size"], r.changes["gradient_accumulation_steps"]
        assert 1 <= micro < batch
        assert micro * steps >= batch * accumulation
        # No more accumulation than needed to reach the effective batch.
        assert micro * (steps - 1) < batch * accumulation
        assert f"effective batch {micro * steps}" in r.description


def test_smaller_batches_do_not_nearly_double_the_effective_batch() -> None:
    setup = replace(BIG, batch_size=64, seq_len=256)
    budget = peak(setup, batch_size=63, gradient_accumulation_steps=2) + 1
    for r in smaller_batch_options(recommend(DECODER, setup, budget, lora_targets=TARGETS)):
        micro, steps = r.changes["batch_size"], r.changes["gradient_accumulation_steps"]
        # Within one row per micro-batch of the requested 64 (32 x 2 is exact).
        assert 64 <= micro * steps < 64 + steps, r.description


def test_every_option_says_truly_whether_it_fits() -> None:
    for budget_gb in (0.05, 0.6, 0.8, 1.0, 1.5, 2.0):
        budget = budget_gb * 1024**3
        options = recommend(DECODER, BIG, budget, gpu_count=2, lora_targets=TARGETS)
        for r in options:
            assert r.fits == (r.estimate.peak <= budget), r
        # Options that fit come first.
        fits = [r.fits for r in options]
        assert fits == sorted(fits, reverse=True)


def test_a_budget_below_the_baseline_lists_options_that_do_not_fit() -> None:
    budget = 0.3 * 1024**3  # under the CPU framework baseline alone
    options = recommend(DECODER, BIG, budget, lora_targets=TARGETS)
    assert options
    assert not any(r.fits for r in options)
    assert smaller_batch_options(options) == []  # not even batch 1 fits
    assert {"gradient_checkpointing": True} in [r.changes for r in options]
    assert {"training_type": "lora_adaptation"} in [r.changes for r in options]


def test_lora_is_offered_only_for_full_training_with_known_targets() -> None:
    budget = peak(BIG) / 2
    assert not any(
        r.changes.get("training_type") for r in recommend(DECODER, BIG, budget, lora_targets=())
    )
    lora_setup = replace(BIG, lora=True, lora_targets=TARGETS)
    options = recommend(DECODER, lora_setup, peak(lora_setup) / 2, lora_targets=TARGETS)
    assert options
    assert not any(r.changes.get("training_type") for r in options)


def test_checkpointing_is_not_offered_when_already_on() -> None:
    setup = replace(BIG, gradient_checkpointing=True)
    options = recommend(DECODER, setup, peak(setup) / 2, lora_targets=TARGETS)
    assert options
    assert not any("gradient_checkpointing" in r.changes for r in options)


def test_fsdp_and_mixed_precision_on_several_gpus() -> None:
    setup = replace(BIG, device="cuda")
    budget = peak(setup) * 0.9
    options = recommend(DECODER, setup, budget, gpu_count=4, lora_targets=TARGETS)
    fsdp = next(r for r in options if r.changes.get("distributed_strategy") == "fsdp")
    assert "FSDP" in fsdp.description
    count = fsdp.changes["num_processes"]
    # The fewest GPUs that fit, or all of them when none does.
    assert 2 <= count <= 4
    assert fsdp.fits or count == 4
    assert fsdp.estimate.gradients == estimate_memory(DECODER, setup).gradients // count
    # The fewest GPUs that fit: one fewer would not.
    if count > 2:
        fewer = replace(setup, num_gpus=count - 1, strategy="fsdp")
        assert estimate_memory(DECODER, fewer).peak > budget
    mixed = by_changes(options, use_mixed_precision=True)
    assert mixed.estimate.activations * 2 == estimate_memory(DECODER, setup).activations
    # One GPU: nothing to shard over.
    single = recommend(DECODER, setup, budget, gpu_count=1, lora_targets=TARGETS)
    assert not any("num_processes" in r.changes for r in single)
    # Already sharded: not offered again.
    sharded = replace(setup, num_gpus=4, strategy="fsdp")
    again = recommend(DECODER, sharded, peak(sharded) / 2, gpu_count=4, lora_targets=TARGETS)
    assert not any("num_processes" in r.changes for r in again)


# -- largest_fitting_batch -------------------------------------------------------------


def test_largest_fitting_batch_is_the_edge_of_the_budget() -> None:
    budget = peak(BIG, batch_size=13) + 1
    batch = largest_fitting_batch(DECODER, BIG, budget)
    assert batch == 13
    assert peak(BIG, batch_size=batch) <= budget < peak(BIG, batch_size=batch + 1)


def test_largest_fitting_batch_is_monotone_in_budget() -> None:
    budgets = [b * 1024**3 for b in (0.56, 0.6, 0.7, 0.9, 1.2, 2.0, 4.0, 16.0)]
    batches = [largest_fitting_batch(DECODER, BIG, b) for b in budgets]
    assert batches == sorted(batches)
    assert batches[0] < batches[-1]


def test_largest_fitting_batch_is_zero_when_one_row_does_not_fit() -> None:
    assert largest_fitting_batch(DECODER, BIG, peak(BIG, batch_size=1) - 1) == 0
    assert largest_fitting_batch(DECODER, BIG, peak(BIG, batch_size=1)) == 1


def test_largest_fitting_batch_stops_at_the_upper_bound() -> None:
    huge = 1024.0**5
    assert largest_fitting_batch(DECODER, BIG, huge) == 4096
    assert largest_fitting_batch(DECODER, BIG, huge, upper=100) == 100


# -- probe: pure parts -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "expected"),
    [(1, [1, 2]), (2, [1, 2]), (3, [1, 2]), (4, [1, 2]), (6, [1, 3]), (8, [2, 4]), (64, [16, 32])],
)
def test_unanchored_probe_batches_stay_below_the_target(target: int, expected: list[int]) -> None:
    assert probe_batches(target, anchored=False) == expected


@pytest.mark.parametrize(
    ("target", "expected"),
    [(1, [1, 2]), (2, [1, 2]), (3, [1, 3]), (4, [1, 4]), (8, [2, 8]), (64, [16, 64])],
)
def test_anchored_probe_batches_include_the_target(target: int, expected: list[int]) -> None:
    assert probe_batches(target) == expected


@pytest.mark.parametrize("anchored", [True, False])
def test_probe_batches_are_distinct_ascending_and_bounded(anchored: bool) -> None:
    for target in range(1, 300):
        batches = probe_batches(target, anchored=anchored)
        assert len(batches) == 2, target
        assert batches == sorted(set(batches)), target
        assert batches[0] >= 1, target
        assert batches[-1] <= max(target, 2), target
        if anchored and target > 2:
            assert batches[-1] == target


def test_anchoring_depends_on_the_estimated_step_time() -> None:
    assert should_anchor(ANCHOR_MAX_STEP_SECONDS)
    assert not should_anchor(ANCHOR_MAX_STEP_SECONDS * 1.01)


def test_anchored_requests_take_two_steps_and_unanchored_three() -> None:
    anchored = build_request("m", BIG, training_type="fine_tuning")
    plain = build_request("m", BIG, training_type="fine_tuning", anchored=False)
    assert anchored["steps"] == 2
    assert plain["steps"] == 3
    target = BIG.batch_size
    assert [b for b, _ in anchored["points"]] == [target // 4, target]
    assert [b for b, _ in plain["points"]] == [target // 4, target // 2]


def test_fit_line_is_exact_on_collinear_points() -> None:
    intercept, slope = fit_line([1.0, 2.0, 4.0, 8.0], [3.0 + 2.5 * x for x in (1, 2, 4, 8)])
    assert intercept == pytest.approx(3.0)
    assert slope == pytest.approx(2.5)


def test_fit_line_least_squares_and_degenerate_input() -> None:
    intercept, slope = fit_line([0.0, 1.0, 2.0], [0.0, 2.0, 1.0])
    assert slope == pytest.approx(0.5)
    assert intercept == pytest.approx(0.5)
    assert fit_line([4.0, 4.0], [10.0, 20.0]) == (15.0, 0.0)


def points(*rows: tuple[int, int, float]) -> list[ProbePoint]:
    return [ProbePoint(batch, 128, peak_bytes, seconds) for batch, peak_bytes, seconds in rows]


def test_fit_probe_extrapolates_the_line() -> None:
    measured = points((2, 1_000 + 2 * 300, 0.5 + 2 * 0.1), (4, 1_000 + 4 * 300, 0.5 + 4 * 0.1))
    result = fit_probe(measured, 16, 100_000, 0.05, 1.5, "cpu")
    assert result.fixed_bytes == pytest.approx(1_000)
    assert result.bytes_per_row == pytest.approx(300)
    # The line, plus the bias towards over-estimating.
    assert result.predicted_peak_bytes == int((1_000 + 16 * 300) * (1 + PROBE_BIAS))
    assert result.step_fixed_seconds == pytest.approx(0.5)
    assert result.step_seconds_per_row == pytest.approx(0.1)
    assert result.predicted_step_seconds == pytest.approx(0.5 + 16 * 0.1)
    # Largest b with (fixed + per_row·b)·(1 + bias) <= budget·(1 - margin).
    limit = 100_000 * (1 - 0.05)
    expected = max(b for b in range(1, 1000) if (1_000 + 300 * b) * (1 + PROBE_BIAS) <= limit)
    assert result.largest_batch == expected
    assert (result.wall_seconds, result.measured_on, result.points) == (1.5, "cpu", measured)


def test_fit_probe_margin_lowers_the_largest_batch() -> None:
    measured = points((1, 1_300, 0.1), (2, 1_600, 0.2))
    loose = fit_probe(measured, 2, 10_000, 0.0, 0.0, "cuda").largest_batch
    tight = fit_probe(measured, 2, 10_000, 0.2, 0.0, "cuda").largest_batch
    assert (loose, tight) == (29, 22)


def test_fit_probe_never_predicts_below_a_measured_point() -> None:
    # A noisy middle point: the fitted line passes under the measurement at batch 2.
    measured = points((1, 1_000, 0.1), (2, 1_500, 0.2), (3, 1_400, 0.3))
    result = fit_probe(measured, 2, None, 0.05, 0.0, "cpu")
    assert result.fixed_bytes + result.bytes_per_row * 2 < 1_500
    assert result.predicted_peak_bytes == 1_500


def test_fit_probe_never_predicts_below_the_set_up_peak() -> None:
    # Set-up (imports, model load) peaked above training: a job goes through it too.
    measured = points((1, 1_000, 0.1), (2, 1_100, 0.2))
    high = fit_probe(measured, 2, None, 0.05, 0.0, "cpu", floor_bytes=5_000)
    low = fit_probe(measured, 2, None, 0.05, 0.0, "cpu", floor_bytes=10)
    assert (high.predicted_peak_bytes, low.predicted_peak_bytes > 1_100) == (5_000, True)


def test_fit_probe_without_budget_or_growth_has_no_largest_batch() -> None:
    growing = points((1, 1_000, 0.1), (2, 1_100, 0.2))
    assert fit_probe(growing, 4, None, 0.05, 0.0, "cpu").largest_batch is None
    flat = points((1, 1_000, 0.1), (2, 1_000, 0.2))
    result = fit_probe(flat, 4, 10_000, 0.05, 0.0, "cpu")
    assert result.bytes_per_row == 0
    assert result.largest_batch is None
    assert result.predicted_peak_bytes == int(1_000 * (1 + PROBE_BIAS))


def test_fit_probe_clamps_a_shrinking_measurement_and_a_tiny_budget() -> None:
    shrinking = points((1, 1_000, 0.1), (2, 900, 0.2))
    result = fit_probe(shrinking, 8, 10_000, 0.05, 0.0, "cpu")
    assert result.bytes_per_row == 0
    assert result.predicted_peak_bytes >= 1_000
    too_small = fit_probe(points((1, 1_000, 0.1), (2, 1_100, 0.2)), 8, 500, 0.0, 0.0, "cpu")
    assert too_small.largest_batch == 0


def test_probe_result_to_dict() -> None:
    measured = points((1, 2 * 1024**3, 0.1), (2, 3 * 1024**3, 0.2))
    data = fit_probe(measured, 2, None, 0.05, 2.0, "cpu").to_dict()
    assert data["points"] == [
        {"batch_size": 1, "seq_len": 128, "peak_bytes": 2 * 1024**3, "step_seconds": 0.1},
        {"batch_size": 2, "seq_len": 128, "peak_bytes": 3 * 1024**3, "step_seconds": 0.2},
    ]
    assert data["predicted_peak_gb"] == pytest.approx(3.0 * (1 + PROBE_BIAS))
    assert data["bytes_per_row"] == pytest.approx(1024**3)
    assert (data["wall_seconds"], data["measured_on"], data["largest_batch"]) == (2.0, "cpu", None)


def test_build_request_for_full_fine_tuning() -> None:
    setup = TrainingSetup(objective="causal_lm", lora=False, batch_size=16, seq_len=96)
    request = build_request("/models/x", setup, training_type="fine_tuning")
    assert request == {
        "model_path": "/models/x",
        "objective": "causal_lm",
        "training_type": "fine_tuning",
        "labels": ["0", "1"],
        "precision": "fp32",
        "gradient_checkpointing": False,
        "optim": "adamw_torch",
        "lora_r": 16,
        "lora_alpha": 32,
        "lora_target_modules": None,
        "load_in_4bit": False,
        "double_quant": True,
        "points": [[4, 96], [16, 96]],
        "steps": 2,
        "num_threads": 1,
        "preference": None,
    }


def test_build_request_for_lora_classification() -> None:
    setup = TrainingSetup(
        objective="sequence_classification",
        lora=True,
        batch_size=4,
        seq_len=64,
        precision="bf16",
        gradient_checkpointing=True,
        optimizer="sgd",
        lora_r=4,
        lora_targets=("query", "value"),
        num_labels=3,
    )
    request = build_request(
        "/m",
        setup,
        training_type="lora_adaptation",
        labels=["neg", "neu", "pos"],
        batches=[1, 3, 5],
        steps=2,
        num_threads=4,
    )
    assert request["labels"] == ["neg", "neu", "pos"]
    assert request["points"] == [[1, 64], [3, 64], [5, 64]]
    assert request["lora_target_modules"] == ["query", "value"]
    assert (request["lora_r"], request["lora_alpha"]) == (4, 8)
    assert request["precision"] == "bf16"
    assert request["gradient_checkpointing"] is True
    assert request["optim"] == "sgd"
    assert (request["steps"], request["num_threads"]) == (2, 4)
    # Default labels follow num_labels.
    assert build_request("/m", setup, training_type="lora_adaptation")["labels"] == ["0", "1", "2"]


# -- probe: real runs ------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_llama_path(models_cache: Path) -> Path:
    return ModelResolver(models_cache).resolve(TINY_LLAMA_ID).path


def test_real_probe_of_tiny_llama(tiny_llama_path: Path) -> None:
    from flextrain.models.inspect import inspect_model

    setup = TrainingSetup(objective="causal_lm", lora=False, batch_size=16, seq_len=256)
    # Batches 1 and 16 at 256 tokens: a row of tiny-llama is then about 4 MB (logits of
    # a 1k vocabulary and activations), well above the few MB by which each fresh
    # process's resident size varies, so the measured slope cannot come out flat
    # (seen at 32 tokens and batches 1 and 4, in a busy full-suite run). Each point's
    # peak is taken from training begin: a set-up peak once made batch 1 outweigh 16.
    request = build_request(
        str(tiny_llama_path), setup, training_type="fine_tuning", batches=[1, 16], num_threads=1
    )
    result = run_probe(request, target_batch=16, budget_bytes=20 * 2**30)

    assert len(result.points) >= 2
    assert [p.batch_size for p in result.points] == [1, 16]
    assert all(p.seq_len == 256 and p.peak_bytes > 0 and p.step_seconds > 0 for p in result.points)
    assert result.measured_on in ("cpu", "cuda")
    assert result.bytes_per_row > 0
    assert result.predicted_peak_bytes >= max(p.peak_bytes for p in result.points)
    # Sanity against the analytic estimate for the device the probe measured.
    analytic = estimate_memory(
        inspect_model(tiny_llama_path).architecture(),
        replace(setup, device=result.measured_on),  # type: ignore[arg-type]
    )
    assert result.predicted_peak_bytes == pytest.approx(analytic.peak, rel=0.3)
    assert result.largest_batch is not None
    assert result.largest_batch > 16
    assert result.predicted_step_seconds > 0
    assert 0 < result.wall_seconds < 180  # bounded: two fresh processes, even on a busy machine


def test_probe_of_a_missing_model_raises_probe_error(tmp_path: Path) -> None:
    setup = TrainingSetup(objective="causal_lm", lora=False, batch_size=2, seq_len=16)
    missing = tmp_path / "no-such-model"
    with pytest.raises(ProbeError, match="The probe failed") as caught:
        run_probe(build_request(str(missing), setup, training_type="fine_tuning"), target_batch=2)
    # The message carries the end of the worker's error output, which names the path.
    assert str(missing) in str(caught.value)


def test_fsdp_proposes_the_fewest_gpus_that_fit() -> None:
    setup = replace(BIG, device="cuda", batch_size=1)
    two = estimate_memory(DECODER, replace(setup, num_gpus=2, strategy="fsdp")).peak
    options = recommend(DECODER, setup, two * 1.01, gpu_count=8, lora_targets=TARGETS)
    fsdp = next(r for r in options if r.changes.get("distributed_strategy") == "fsdp")
    assert fsdp.changes["num_processes"] == 2
    assert fsdp.fits
    assert fsdp.estimate.peak == two


def test_qlora_is_offered_when_lora_alone_does_not_fit() -> None:
    lora_setup = replace(BIG, lora=True, lora_targets=TARGETS, batch_size=1, seq_len=64)
    qlora_peak = peak(lora_setup, quantized_4bit=True)
    assert qlora_peak < peak(lora_setup)
    budget = qlora_peak + 1  # the 4-bit base fits, the float32 one does not
    options = recommend(DECODER, lora_setup, budget, lora_targets=TARGETS)
    qlora = by_changes(options, load_in_4bit=True)
    assert qlora.changes == {"load_in_4bit": True}
    assert qlora.fits
    assert "QLoRA" in qlora.description
    # From full fine-tuning, it comes with the switch to LoRA.
    full = replace(lora_setup, lora=False, lora_targets=())
    from_full = by_changes(
        recommend(DECODER, full, budget, lora_targets=TARGETS), load_in_4bit=True
    )
    assert from_full.changes == {"training_type": "lora_adaptation", "load_in_4bit": True}


def test_qlora_is_not_offered_when_lora_fits_or_under_fsdp() -> None:
    budget = peak(BIG, lora=True, lora_targets=TARGETS) + 1
    options = recommend(DECODER, BIG, budget, lora_targets=TARGETS)
    assert options
    assert not any(r.changes.get("load_in_4bit") for r in options)
    sharded = replace(BIG, lora=True, lora_targets=TARGETS, device="cuda", strategy="fsdp")
    options = recommend(DECODER, sharded, peak(sharded) / 2, gpu_count=2, lora_targets=TARGETS)
    assert not any(r.changes.get("load_in_4bit") for r in options)


def test_the_probe_runs_with_the_allocator_the_jobs_worker_has() -> None:
    """Measured as the job will run: with tcmalloc where this machine has it."""
    import subprocess
    import sys

    from flextrain.estimate.probe import probe_environment
    from flextrain.jobs.workerenv import tcmalloc_path

    code = "print('tcmalloc' in open('/proc/self/maps').read())"
    done = subprocess.run(
        [sys.executable, "-c", code], env=probe_environment(), capture_output=True, text=True
    )
    assert done.stdout.strip() == str(tcmalloc_path() is not None), done.stderr
