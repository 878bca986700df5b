"""What preference and reward training adds to the memory and time estimates: a pair's
two sequences, a frozen reference copy (or none), GRPO's sampling and its decoding
steps; and which of them each method and option brings (models/compatibility)."""

from __future__ import annotations

from dataclasses import replace

import pytest

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.estimate.memory import TrainingSetup, estimate_memory, generation_bytes
from flextrain.estimate.timing import (
    DECODE_STEP_SECONDS,
    STARTUP_SECONDS,
    STEP_OVERHEAD_SECONDS,
    decode_seconds,
    estimate_time,
    flops_per_token,
    matmul_parameters,
)
from flextrain.models.compatibility import preference_setup
from tests.estimate.archs import llama_like

DECODER = llama_like()
CAUSAL = TrainingSetup(objective="causal_lm", lora=False, batch_size=4, seq_len=128)
FLOPS = (1e9, 2e9, 4e9)


def test_a_pair_doubles_activations_and_logits_not_weights() -> None:
    one = estimate_memory(DECODER, CAUSAL)
    pair = estimate_memory(DECODER, replace(CAUSAL, sequences_per_row=2))
    assert pair.activations == 2 * one.activations
    assert pair.logits == 2 * one.logits
    assert (pair.weights, pair.optimizer, pair.gradients) == (
        one.weights,
        one.optimizer,
        one.gradients,
    )
    # Two sequences of a micro-batch of 4 are the same forward as 8 sequences.
    eight = estimate_memory(DECODER, replace(CAUSAL, batch_size=8))
    assert pair.activations == eight.activations


def test_a_reference_copy_adds_the_weights_once_more_to_the_peak() -> None:
    one = estimate_memory(DECODER, CAUSAL)
    ref = estimate_memory(DECODER, replace(CAUSAL, reference_copy=True))
    assert ref.reference == DECODER.num_parameters * 4
    assert ref.peak - one.peak == ref.reference
    assert ref.weights == one.weights  # reported apart
    assert ref.parts_gb()["reference"] == pytest.approx(ref.reference / 1024**3)


def test_grpo_sampling_counts_when_its_cache_outgrows_the_training_forward() -> None:
    grpo = replace(CAUSAL, generation_tokens=32, generations_per_row=4, batch_size=64)
    kv = generation_bytes(DECODER, grpo)
    head_dim = DECODER.hidden_size // DECODER.num_heads
    assert kv > 2 * DECODER.num_layers * DECODER.num_kv_heads * head_dim * 64 * 128 * 4
    estimate = estimate_memory(DECODER, grpo)
    assert estimate.generation == kv
    assert generation_bytes(DECODER, CAUSAL) == 0
    # The forward keeps far more than the cache here: the peak is the forward's.
    plain = estimate_memory(DECODER, replace(grpo, generation_tokens=0))
    assert estimate.peak == plain.peak


def _config(ttype: TrainingType, **preference: object) -> AdvancedTrainingConfig:
    return AdvancedTrainingConfig(
        model_id="m", dataset_id="d", training_type=ttype, preference=preference
    )


@pytest.mark.parametrize(
    ("ttype", "options", "expected"),
    [
        (TrainingType.FINE_TUNING, {}, {}),
        (TrainingType.DPO, {}, {"sequences_per_row": 2, "reference_copy": False}),
        (TrainingType.DPO, {"use_lora": False}, {"reference_copy": True}),
        (
            TrainingType.DPO,
            {"use_lora": False, "reference": "precomputed"},
            {"reference_copy": False, "reference_forward": True},
        ),
        (TrainingType.KTO, {"use_lora": False}, {"reference_copy": True}),
        (TrainingType.ORPO, {"use_lora": False}, {"sequences_per_row": 2}),
        (TrainingType.SIMPO, {}, {"sequences_per_row": 2}),
        (
            TrainingType.GRPO,
            {"use_lora": False, "num_generations": 8, "max_completion_length": 16},
            {"reference_copy": False, "generation_tokens": 16, "generations_per_row": 8},
        ),
        (TrainingType.GRPO, {"use_lora": False, "beta": 0.04}, {"reference_copy": True}),
    ],
)
def test_each_method_brings_its_parts(
    ttype: TrainingType, options: dict[str, object], expected: dict[str, object]
) -> None:
    setup = preference_setup(_config(ttype, **options))
    for key, value in expected.items():
        assert setup.get(key, False) == value, (key, setup)
    if ttype in (TrainingType.ORPO, TrainingType.SIMPO):
        assert "reference_copy" not in setup
    if not expected:
        assert setup == {}


def test_dpo_runs_the_reference_forward_and_trains_both_sequences() -> None:
    base = flops_per_token(DECODER, replace(CAUSAL, lora=True))
    dpo = replace(CAUSAL, lora=True, reference_forward=True, sequences_per_row=2)
    n = matmul_parameters(DECODER, "causal_lm")
    assert flops_per_token(DECODER, dpo) == pytest.approx(base + 2 * n)
    plain = estimate_time(
        DECODER, CAUSAL, tokens_per_epoch=10_000, rows_per_epoch=100, epochs=1, flops_range=FLOPS
    )
    pair = estimate_time(
        DECODER,
        replace(CAUSAL, sequences_per_row=2),
        tokens_per_epoch=10_000,
        rows_per_epoch=100,
        epochs=1,
        flops_range=FLOPS,
    )
    compute = plain.seconds - plain.overhead_seconds
    assert pair.seconds - pair.overhead_seconds == pytest.approx(2 * compute)
    assert pair.optimizer_steps == plain.optimizer_steps  # a pair is one row


def test_grpo_time_counts_every_completion_and_its_decoding() -> None:
    grpo = replace(CAUSAL, batch_size=8, generation_tokens=10, generations_per_row=4)
    timing = estimate_time(
        DECODER, grpo, tokens_per_epoch=2_000, rows_per_epoch=100, epochs=1, flops_range=FLOPS
    )
    # 100 prompts x 4 completions, 8 per micro-batch: 50 optimizer steps.
    assert timing.optimizer_steps == 50
    n = matmul_parameters(DECODER, "causal_lm")
    sampled = 400 * 10
    trained = (2_000 * 4 + sampled) * flops_per_token(DECODER, grpo)
    decoding = 2 * n * sampled / FLOPS[1] + DECODE_STEP_SECONDS["cpu"][1] * 50 * 10
    overhead = STARTUP_SECONDS["cpu"][1] + STEP_OVERHEAD_SECONDS["cpu"][1] * 50 + decoding
    assert timing.overhead_seconds == pytest.approx(overhead)
    assert timing.seconds == pytest.approx(trained / FLOPS[1] + overhead)
    per_step = decode_seconds(DECODER, grpo, FLOPS[1])
    assert per_step == pytest.approx(decoding / 50)
