"""Packing lays examples end to end without changing what is learnt: no example sees
another, no loss target crosses an example boundary, and the loss equals the unpacked one."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
import torch
from transformers import AutoModelForCausalLM

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.estimate.batching import balanced_rows
from flextrain.models.builtin import TINY_LLAMA_ID
from flextrain.models.resolve import ModelResolver
from flextrain.service import TrainingService
from flextrain.train.packing import (
    IGNORE_INDEX,
    PackingCollator,
    PaddingCollator,
    packing_is_exact,
    sparse_logits_are_exact,
)
from tests.train.helpers import run_job


def _examples(count: int, seed: int = 0, longest: int = 40) -> list[dict[str, list[int]]]:
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        ids = [rng.randrange(5, 500) for _ in range(rng.randint(2, longest))]
        prompt = rng.randint(0, len(ids) - 1)  # completion-only: no label on the prompt
        out.append({"input_ids": ids, "labels": [IGNORE_INDEX] * prompt + ids[prompt:]})
    return out


@pytest.mark.parametrize("seed", range(5))
def test_packed_rows_keep_every_target_inside_its_example(seed: int) -> None:
    examples = _examples(12, seed)
    batch = PackingCollator(pad_token_id=0, row_tokens=64)(examples)
    ids, labels, positions = batch["input_ids"], batch["labels"], batch["position_ids"]
    assert batch["use_cache"] is False
    assert ids.shape == labels.shape == positions.shape
    assert ids.shape[1] <= 64

    # Cut each row back into examples at its position resets; padding has no label.
    found = []
    for row in range(ids.shape[0]):
        starts = [i for i, p in enumerate(positions[row].tolist()) if p == 0]
        for start, end in zip(starts, [*starts[1:], ids.shape[1]], strict=True):
            piece_ids = ids[row, start:end].tolist()
            piece_labels = labels[row, start:end].tolist()
            assert positions[row, start:end].tolist() == list(range(end - start))
            # The first token of an example is never a target: predicting it would mean
            # predicting it from the end of the example before.
            assert piece_labels[0] == IGNORE_INDEX
            found.append((piece_ids, piece_labels))
    originals = {tuple(e["input_ids"]): e["labels"] for e in examples}
    real = [(i, lab) for i, lab in found if tuple(i) in originals]
    assert len(real) == len(examples)  # each example exactly once, whole
    for piece_ids, piece_labels in real:
        expected = [IGNORE_INDEX, *originals[tuple(piece_ids)][1:]]
        assert piece_labels == expected
    padding = [lab for i, lab in found if tuple(i) not in originals]
    assert all(set(lab) == {IGNORE_INDEX} for lab in padding)


def test_rows_are_few_and_even() -> None:
    rng = random.Random(0)
    lengths = [rng.randint(10, 230) for _ in range(32)]
    rows = balanced_rows(lengths, 256)
    assert sorted(i for row in rows for i in row) == list(range(32))
    sums = [sum(lengths[i] for i in row) for row in rows]
    assert max(sums) <= 256
    assert len(rows) <= -(-sum(lengths) // 256) + 2
    assert sum(lengths) / (max(sums) * len(rows)) > 0.9  # under 10% padding
    assert balanced_rows([], 10) == []
    assert balanced_rows([10, 10, 10], 10) == [[0], [1], [2]]


@pytest.fixture(scope="module")
def tiny_llama(models_cache: Path) -> Any:
    path = ModelResolver(models_cache).resolve(TINY_LLAMA_ID).path
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def test_loss_and_gradients_packed_equal_unpacked(tiny_llama: Any) -> None:
    model = tiny_llama
    vocab = model.config.vocab_size
    examples = [
        {"input_ids": [i % vocab for i in e["input_ids"]], "labels": e["labels"]}
        for e in _examples(6, seed=3, longest=30)
    ]
    for e in examples:  # as flextrain prepares them: no label on an example's first token
        e["labels"] = [IGNORE_INDEX, *[x % vocab if x >= 0 else x for x in e["labels"][1:]]]

    def loss_and_grads(batch: dict[str, Any]) -> tuple[float, torch.Tensor]:
        model.zero_grad()
        loss = model(**batch).loss
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None])
        return loss.item(), grads

    # One example per row, padded to the longest, with an attention mask.
    width = max(len(e["input_ids"]) for e in examples)

    def pad(values: list[int], fill: int) -> list[int]:
        return values + [fill] * (width - len(values))

    unpacked = {
        "input_ids": torch.tensor([pad(e["input_ids"], 0) for e in examples]),
        "attention_mask": torch.tensor([pad([1] * len(e["input_ids"]), 0) for e in examples]),
        "labels": torch.tensor([pad(e["labels"], IGNORE_INDEX) for e in examples]),
    }
    model.train()
    loss_unpacked, grads_unpacked = loss_and_grads(unpacked)
    packed = PackingCollator(pad_token_id=0, row_tokens=48)(examples)
    assert packed["input_ids"].shape[0] < len(examples)  # several examples did share rows
    loss_packed, grads_packed = loss_and_grads(packed)
    assert loss_packed == pytest.approx(loss_unpacked, rel=1e-5)
    assert torch.allclose(grads_packed, grads_unpacked, rtol=1e-4, atol=1e-6)
    # Logits only at the predicted positions: the same loss and gradients from fewer rows
    # of the output projection.
    sparse = PackingCollator(pad_token_id=0, row_tokens=48, sparse_logits=True)(examples)
    kept = int(sparse["logits_to_keep"].sum())
    predicted = sum(sum(x != IGNORE_INDEX for x in e["labels"][1:]) for e in examples)
    assert kept == predicted < packed["input_ids"].numel()
    loss_sparse, grads_sparse = loss_and_grads(sparse)
    assert loss_sparse == pytest.approx(loss_unpacked, rel=1e-5)
    assert torch.allclose(grads_sparse, grads_unpacked, rtol=1e-4, atol=1e-6)
    # The same with one example per row, padded (the grouped and padded strategies).
    padded = PaddingCollator(pad_token_id=0, sparse_logits=True)(examples)
    assert padded["input_ids"].shape == unpacked["input_ids"].shape
    assert int(padded["logits_to_keep"].sum()) == predicted
    loss_padded, grads_padded = loss_and_grads(padded)
    assert loss_padded == pytest.approx(loss_unpacked, rel=1e-5)
    assert torch.allclose(grads_padded, grads_unpacked, rtol=1e-4, atol=1e-6)


def test_exactness_check(tiny_llama: Any) -> None:
    assert packing_is_exact(tiny_llama, tiny_llama.config.vocab_size)

    class NoPositions(torch.nn.Module):
        """A model whose forward has no position ids: it cannot keep examples apart."""

        def __init__(self) -> None:
            super().__init__()
            self.embed = torch.nn.Embedding(100, 8)

        def forward(self, input_ids: torch.Tensor, use_cache: bool = False) -> Any:
            return type("Out", (), {"logits": self.embed(input_ids).cumsum(dim=1)})()

    assert not packing_is_exact(NoPositions(), 100)
    assert sparse_logits_are_exact(tiny_llama, tiny_llama.config.vocab_size)
    assert not sparse_logits_are_exact(NoPositions(), 100)  # no loss, no logits_to_keep


def test_a_packed_job_learns_as_the_unpacked_one(service: TrainingService) -> None:
    common: dict[str, Any] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/instructions",
        "training_type": TrainingType.FINE_TUNING,
        "max_steps": 8,
        "batch_size": 8,
        "max_length": 128,
        "learning_rate": 3e-3,
        "logging_steps": 1,
        "num_threads": 1,
        "eval_split": 0.0,
        "gradient_checkpointing": False,
        "group_by_length": False,  # same batches in the same order for both
    }
    packed = run_job(service, AdvancedTrainingConfig(**common, packing=True))
    padded = run_job(service, AdvancedTrainingConfig(**common, packing=False))
    log = service.read_log(packed.job_id)
    assert "batching: packed" in log
    assert "logits only where a token is predicted" in log
    assert "batching: padded" in service.read_log(padded.job_id)
    assert packed.metrics["batching"] == "packed"
    assert padded.metrics["batching"] == "padded"

    def losses(job_id: str) -> list[float]:
        return [r["loss"] for r in service.metric_history(job_id) if "loss" in r]

    ours, theirs = losses(packed.job_id), losses(padded.job_id)
    assert len(ours) == len(theirs) == 8
    assert ours == pytest.approx(theirs, rel=2e-3)
    assert ours[-1] < ours[0]
