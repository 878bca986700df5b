"""The batching cost model: which exact strategy does the least work for given lengths."""

from __future__ import annotations

import random

import pytest

from flextrain.estimate.batching import (
    GROUPING_MIN_SAVING,
    BatchingChoice,
    ModelShape,
    candidates,
    choose,
    epoch_cost,
)

# The benchmark's Llama: hidden 256, 4 layers, an 8,192-row output layer.
LLAMA = ModelShape(body_parameters=3_160_000, head_parameters=2_097_152, layers=4, hidden=256)


def _instruction_lengths(count: int = 2000, seed: int = 0) -> tuple[list[int], list[int]]:
    """Like demo/instructions: 38-235 tokens, most short, about 16% of them predicted."""
    rng = random.Random(seed)
    lengths = [min(235, 38 + int(rng.expovariate(1 / 30))) for _ in range(count)]
    return lengths, [max(1, n // 6) for n in lengths]


def _choose(options: list[str], **kw: object) -> BatchingChoice:
    lengths, labels = _instruction_lengths()
    return choose(
        lengths,
        labels,
        batch_size=8,
        max_length=256,
        shape=LLAMA,
        options=options,
        sparse_logits=True,
        **kw,  # type: ignore[arg-type]
    )


def test_packing_keeps_the_order_at_about_the_cost_of_grouping() -> None:
    # Packed rows of ~3 examples make attention grow with the row, so grouped batches
    # do a little less work; not the 15% that would justify changing what is learnt.
    choice = _choose(["padded", "packed", "grouped"])
    assert choice.strategy == "packed"
    grouped, packed = choice.costs["grouped"], choice.costs["packed"]
    assert grouped.flops < packed.flops < grouped.flops / (1 - GROUPING_MIN_SAVING)
    assert choice.costs["padded"].padding_share > 0.3
    assert choice.relative()["padded"] > 1.5
    assert "work per epoch against it: padded " in choice.reason


def test_grouping_wins_when_packing_is_off() -> None:
    # Random-order padding wastes about half the positions here: grouping saves more
    # than the bar.
    choice = _choose(["padded", "grouped"])
    assert choice.strategy == "grouped"
    assert choice.costs["grouped"].padding_share < 0.05
    assert choice.costs["padded"].flops > 1.5 * choice.costs["grouped"].flops


def test_varlen_attention_is_chosen_where_the_kernel_has_it() -> None:
    options = candidates(
        device="cuda", can_pack=True, group_by_length=True, packing=None, varlen=True
    )
    assert options == ["padded", "padding_free", "grouped"]
    choice = _choose(options)
    assert choice.strategy == "padding_free"
    assert choice.costs["padding_free"].padding_share == 0.0


def test_a_near_tie_keeps_the_simplest_strategy() -> None:
    # Every row the same length: nothing to pad, nothing to gain.
    choice = choose(
        [64] * 400,
        None,
        batch_size=8,
        max_length=64,
        shape=LLAMA,
        options=["padded", "packed", "grouped"],
        sparse_logits=False,
    )
    assert choice.strategy == "padded"


@pytest.mark.parametrize(
    ("group", "packing", "can_pack", "expected"),
    [
        (True, None, True, ["padded", "packed", "grouped"]),
        (False, None, True, ["padded", "packed"]),
        (True, True, True, ["packed"]),
        (True, False, True, ["padded", "grouped"]),
        (True, True, False, ["padded", "grouped"]),
        (False, None, False, ["padded"]),
    ],
)
def test_candidates_follow_the_config(
    group: bool, packing: bool | None, can_pack: bool, expected: list[str]
) -> None:
    got = candidates(
        device="cpu", can_pack=can_pack, group_by_length=group, packing=packing, varlen=True
    )
    assert got == expected


def test_sparse_logits_count_only_predicted_positions() -> None:
    lengths, labels = _instruction_lengths(200)
    kw = {"batch_size": 8, "max_length": 256, "shape": LLAMA}
    sparse = epoch_cost("grouped", lengths, labels, sparse_logits=True, **kw)  # type: ignore[arg-type]
    full = epoch_cost("grouped", lengths, labels, sparse_logits=False, **kw)  # type: ignore[arg-type]
    assert sparse.logit_positions == sum(labels)
    assert full.logit_positions == full.processed_tokens
    assert sparse.flops < full.flops
    # Truncation applies before counting: nothing is longer than max_length.
    short = epoch_cost("padding_free", [500], None, sparse_logits=False, **kw)  # type: ignore[arg-type]
    assert short.processed_tokens == 256


def test_bad_strategy_and_no_options_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown batching strategy 'bucketed'; one of grouped"):
        epoch_cost(
            "bucketed", [10], None, batch_size=1, max_length=8, shape=LLAMA, sparse_logits=False
        )
    with pytest.raises(ValueError, match="no batching strategy"):
        choose([10], None, batch_size=1, max_length=8, shape=LLAMA, options=[], sparse_logits=False)


def test_plan_epoch_scales_to_the_rows_and_the_method() -> None:
    from dataclasses import replace

    from flextrain.estimate.batching import plan_epoch
    from flextrain.estimate.memory import Architecture, TrainingSetup
    from flextrain.estimate.timing import estimate_time

    arch = Architecture(
        num_parameters=5_261_568,
        hidden_size=256,
        num_layers=4,
        num_heads=4,
        num_kv_heads=4,
        intermediate_size=688,
        vocab_size=8192,
        is_encoder=False,
        tie_word_embeddings=True,
    )
    setup = TrainingSetup(objective="causal_lm", lora=False, batch_size=8, seq_len=256)
    lengths, labels = _instruction_lengths(500)
    options = ["padded", "packed", "grouped"]
    choice, flops = plan_epoch(arch, setup, lengths, labels, rows=500, options=options)
    assert choice.strategy == "packed"
    _, doubled = plan_epoch(arch, setup, lengths, labels, rows=1000, options=options)
    assert doubled == pytest.approx(2 * flops)
    # LoRA skips the weight gradients: less work for the same batches.
    _, lora = plan_epoch(
        arch, replace(setup, lora=True), lengths, labels, rows=500, options=options
    )
    assert lora < flops
    # The time estimate divides exactly that work by the device's rate.
    rate = (1e9, 2e9, 4e9)
    timed = estimate_time(
        arch,
        setup,
        tokens_per_epoch=sum(lengths),
        rows_per_epoch=500,
        epochs=2,
        flops_range=rate,
        epoch_flops=flops,
    )
    assert timed.seconds - timed.overhead_seconds == pytest.approx(2 * flops / 2e9)
