"""The built-in expert losses compute what they claim: torch's cross-entropy where they
should equal it, focal and class weights move the gradient where they should, z-loss
pulls logsumexp toward 0, and a Trainer hands them what they expect."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from flextrain.train.losses import (
    LossSpec,
    causal_lm_loss,
    expert_compute_loss,
    loss_from_logits,
    make_compute_loss_func,
)
from flextrain.train.packing import IGNORE_INDEX, PackingCollator

VOCAB = 64


def _batch(
    positions: int = 12, classes: int = 5, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(positions, classes, generator=generator) * 2
    labels = torch.randint(0, classes, (positions,), generator=generator)
    labels[::4] = IGNORE_INDEX
    return logits, labels


def _row_grad_norms(logits: torch.Tensor, labels: torch.Tensor, spec: LossSpec) -> torch.Tensor:
    """Per-example gradient norms: each loss term depends on its own row of logits only."""
    leaf = logits.clone().requires_grad_(True)
    loss_from_logits(leaf, labels, spec).backward()
    assert leaf.grad is not None
    return leaf.grad.norm(dim=-1)


@pytest.mark.parametrize(
    ("smoothing", "weights"),
    [(0.0, None), (0.1, None), (0.0, [0.5, 2.0, 1.0, 3.0, 0.25]), (0.2, [0.5, 2.0, 1.0, 3.0, 0.0])],
)
def test_cross_entropy_equals_torch(smoothing: float, weights: list[float] | None) -> None:
    logits, labels = _batch()
    spec = LossSpec("cross_entropy", label_smoothing=smoothing, class_weights=weights)
    expected = F.cross_entropy(
        logits,
        labels,
        weight=torch.tensor(weights) if weights is not None else None,
        label_smoothing=smoothing,
        ignore_index=IGNORE_INDEX,
    )
    torch.testing.assert_close(loss_from_logits(logits, labels, spec), expected)


def test_ignored_positions_do_not_count() -> None:
    logits, labels = _batch()
    other = logits.clone()
    other[labels == IGNORE_INDEX] = 50.0  # z-loss would notice these if they counted
    spec = LossSpec("focal", label_smoothing=0.1, z_loss=1e-3)
    torch.testing.assert_close(
        loss_from_logits(logits, labels, spec), loss_from_logits(other, labels, spec)
    )


def test_no_counted_position_gives_zero_with_a_gradient() -> None:
    logits = torch.randn(3, 4, requires_grad=True)
    labels = torch.full((3,), IGNORE_INDEX)
    loss = loss_from_logits(logits, labels, LossSpec("cross_entropy", z_loss=1e-4))
    loss.backward()
    assert loss.item() == 0.0
    assert logits.grad is not None
    assert not logits.grad.any()


@pytest.mark.parametrize(("smoothing", "weights"), [(0.0, None), (0.1, [1.0, 2.0, 1.0, 0.5, 3.0])])
def test_focal_with_gamma_zero_is_cross_entropy(
    smoothing: float, weights: list[float] | None
) -> None:
    logits, labels = _batch(seed=1)
    focal = LossSpec("focal", focal_gamma=0.0, label_smoothing=smoothing, class_weights=weights)
    ce = LossSpec("cross_entropy", label_smoothing=smoothing, class_weights=weights)
    torch.testing.assert_close(
        loss_from_logits(logits, labels, focal), loss_from_logits(logits, labels, ce)
    )


def test_focal_alpha_scales_every_term() -> None:
    logits, labels = _batch(seed=2)
    plain = loss_from_logits(logits, labels, LossSpec("focal"))
    scaled = loss_from_logits(logits, labels, LossSpec("focal", focal_alpha=0.25))
    torch.testing.assert_close(scaled, 0.25 * plain)


def test_focal_down_weights_easy_examples() -> None:
    # Row 0 is classified well (p_target ~ 0.96), row 1 badly (p_target ~ 0.1).
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    labels = torch.tensor([0, 0])
    ce = _row_grad_norms(logits, labels, LossSpec("cross_entropy"))
    focal = _row_grad_norms(logits, labels, LossSpec("focal", focal_gamma=2.0))
    ce_ratio = (ce[1] / ce[0]).item()
    focal_ratio = (focal[1] / focal[0]).item()
    assert focal_ratio > 50 * ce_ratio, (ce_ratio, focal_ratio)


def test_raising_a_class_weight_raises_the_gradient_on_its_examples() -> None:
    logits, labels = _batch(positions=16, classes=3, seed=3)
    assert {0, 1} <= set(labels.tolist())
    before = _row_grad_norms(logits, labels, LossSpec("cross_entropy", class_weights=[1, 1, 1]))
    after = _row_grad_norms(logits, labels, LossSpec("cross_entropy", class_weights=[1, 3, 1]))
    ones, others = labels == 1, (labels != 1) & (labels != IGNORE_INDEX)
    assert (after[ones] > before[ones]).all()
    # Relative to the other classes, exactly the weight ratio (the mean renormalises both).
    torch.testing.assert_close(
        after[ones] / after[others].sum(), 3 * before[ones] / before[others].sum()
    )


def test_z_loss_adds_its_term_and_pulls_logsumexp_to_zero() -> None:
    logits, labels = _batch(seed=4)
    logits = logits + 3.0  # logsumexp > 0 everywhere
    counted = labels != IGNORE_INDEX
    base = loss_from_logits(logits, labels, LossSpec("cross_entropy"))
    with_z = loss_from_logits(logits, labels, LossSpec("cross_entropy", z_loss=0.01))
    lse = torch.logsumexp(logits[counted], dim=-1)
    torch.testing.assert_close(with_z, base + 0.01 * lse.pow(2).mean())

    # Cross-entropy is blind to adding a constant to a row; z-loss alone decides that
    # direction, pushing the logits down where logsumexp > 0 and up where it is < 0.
    for shift in (0.0, -12.0):
        leaf = (logits + shift).requires_grad_(True)
        loss_from_logits(leaf, labels, LossSpec("cross_entropy", z_loss=0.01)).backward()
        assert leaf.grad is not None
        row_lse = torch.logsumexp(logits[counted] + shift, dim=-1)
        along_ones = leaf.grad.sum(dim=-1)[counted]
        torch.testing.assert_close(along_ones, 2 * 0.01 * row_lse / counted.sum())
        assert (torch.sign(along_ones) == torch.sign(row_lse)).all()
        # A descent step along that direction brings every logsumexp closer to 0.
        step = (leaf.grad.sum(dim=-1, keepdim=True) / leaf.shape[-1])[counted]
        stepped = torch.logsumexp(logits[counted] + shift - 20.0 * step, dim=-1)
        assert (stepped.abs() < row_lse.abs()).all()


def test_causal_shift_matches_a_loop_over_positions() -> None:
    generator = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 6, 7, generator=generator)
    labels = torch.randint(0, 7, (2, 6), generator=generator)
    labels[0, :3] = IGNORE_INDEX
    labels[1, -1] = IGNORE_INDEX
    weights = [1.0, 2.0, 0.5, 1.0, 1.0, 3.0, 1.0]
    spec = LossSpec("cross_entropy", label_smoothing=0.1, class_weights=weights)
    total, weight = 0.0, 0.0
    for b in range(2):
        for t in range(5):
            target = int(labels[b, t + 1])
            if target == IGNORE_INDEX:
                continue
            total += F.cross_entropy(
                logits[b, t][None],
                torch.tensor([target]),
                weight=torch.tensor(weights),
                label_smoothing=0.1,
                reduction="sum",
            ).item()
            weight += weights[target]
    loss = causal_lm_loss(logits, labels, spec)
    assert loss.item() == pytest.approx(total / weight, rel=1e-5)


def test_causal_shift_labels_are_used_as_given_in_both_layouts() -> None:
    generator = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 6, 7, generator=generator)
    labels = torch.randint(0, 7, (2, 6), generator=generator)
    labels[:, :2] = IGNORE_INDEX
    spec = LossSpec("focal", z_loss=1e-3)
    expected = causal_lm_loss(logits, labels, spec)
    shifted = torch.full_like(labels, IGNORE_INDEX)
    shifted[:, :-1] = labels[:, 1:]
    torch.testing.assert_close(causal_lm_loss(logits, None, spec, shift_labels=shifted), expected)
    # flextrain's sparse packing: logits only at the kept positions, labels to match.
    keep = shifted != IGNORE_INDEX
    sparse = causal_lm_loss(logits[keep], None, spec, shift_labels=shifted[keep])
    torch.testing.assert_close(sparse, expected)


def test_num_items_in_batch_turns_the_mean_into_a_sum_over_it() -> None:
    logits, labels = _batch(seed=7)
    spec = LossSpec("focal", label_smoothing=0.1, z_loss=1e-3)
    count = int((labels != IGNORE_INDEX).sum())
    mean = loss_from_logits(logits, labels, spec)
    torch.testing.assert_close(
        loss_from_logits(logits, labels, spec, num_items_in_batch=count), mean
    )
    # Two micro-batches of one accumulated batch: each divides by the total count.
    half = loss_from_logits(logits, labels, spec, num_items_in_batch=torch.tensor(2 * count))
    torch.testing.assert_close(half, mean / 2)


def test_loss_spec_reports_every_problem_at_once() -> None:
    with pytest.raises(ValueError, match=r"label_smoothing.*focal_alpha applies.*z_loss"):
        LossSpec("cross_entropy", label_smoothing=1.5, focal_alpha=0.5, z_loss=-1.0)
    with pytest.raises(ValueError, match="class_weights"):
        LossSpec("focal", class_weights=[0.0, 0.0])
    with pytest.raises(ValueError, match="3 class_weights for 5 classes"):
        loss_from_logits(*_batch(), LossSpec("cross_entropy", class_weights=[1.0, 1.0, 1.0]))


def test_classification_func_takes_logits_b_by_c() -> None:
    logits, labels = _batch(positions=8, classes=3, seed=8)
    func = make_compute_loss_func(
        LossSpec("cross_entropy", label_smoothing=0.1), "sequence_classification"
    )
    expected = F.cross_entropy(logits, labels, label_smoothing=0.1, ignore_index=IGNORE_INDEX)
    torch.testing.assert_close(func({"logits": logits}, labels), expected)
    with pytest.raises(ValueError, match="class indices"):
        func({"logits": logits}, labels.float())


def test_masked_lm_func_does_not_shift() -> None:
    logits = torch.randn(2, 5, 9)
    labels = torch.randint(0, 9, (2, 5))
    labels[:, ::2] = IGNORE_INDEX
    func = make_compute_loss_func(LossSpec("cross_entropy"), "masked_lm")
    expected = F.cross_entropy(logits.reshape(-1, 9), labels.reshape(-1))
    torch.testing.assert_close(func({"logits": logits}, labels), expected)


@pytest.fixture(scope="module")
def tiny_llama() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config).eval()


def test_causal_func_equals_the_models_own_loss(tiny_llama: LlamaForCausalLM) -> None:
    x = torch.randint(0, VOCAB, (2, 10), generator=torch.Generator().manual_seed(9))
    func = make_compute_loss_func(LossSpec("cross_entropy"), "causal_lm")
    with torch.no_grad():
        own = tiny_llama(input_ids=x, labels=x, num_items_in_batch=25).loss
        ours = func(tiny_llama(input_ids=x), x, num_items_in_batch=25)
        assert abs(ours.item() - own.item()) < 1e-5
        own = tiny_llama(input_ids=x, labels=x).loss
        ours = func(tiny_llama(input_ids=x), x)
    assert abs(ours.item() - own.item()) < 1e-5


def _packed_batch() -> dict[str, Any]:
    generator = torch.Generator().manual_seed(10)
    features = []
    for length in (6, 9, 7):
        ids = torch.randint(5, VOCAB, (length,), generator=generator).tolist()
        features.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]})
    batch = PackingCollator(0, 32, sparse_logits=True)(features)
    assert "logits_to_keep" in batch  # the sparse layout this test is about
    return batch


def test_trainer_hands_sparse_packed_batches_to_the_func(
    tiny_llama: LlamaForCausalLM, tmp_path: Path
) -> None:
    """Through transformers' own Trainer.compute_loss: it pops only "labels" (here the
    collator's already-shifted kept labels) and the model returns logits [kept, vocab]."""
    batch = _packed_batch()
    func = make_compute_loss_func(LossSpec("cross_entropy"), "causal_lm")
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = Trainer(model=tiny_llama, args=args, compute_loss_func=func)
    with torch.no_grad():
        own = tiny_llama(**batch).loss
        via_trainer = trainer.compute_loss(tiny_llama, dict(batch))
        via_expert, _ = expert_compute_loss(
            tiny_llama, batch, LossSpec("cross_entropy"), "causal_lm"
        )
    assert isinstance(via_trainer, torch.Tensor)
    assert abs(via_trainer.item() - own.item()) < 1e-5
    assert abs(via_expert.item() - own.item()) < 1e-5
