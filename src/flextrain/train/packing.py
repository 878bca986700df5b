"""Sequence packing for causal language modelling: no compute spent on padding.

A micro-batch of examples is laid end to end in as few rows of at most
max_length tokens as they fit in, with position ids restarting at 0 for every example and no
attention mask. Given position ids and no mask, transformers' masking utilities
build a block-diagonal causal mask (sdpa, eager) or hand the boundaries to
flash-attention's varlen kernel, so each example attends only to itself: the
loss is the unpacked loss, not the approximation that lets packed examples see
each other (LLaMA-Factory's, Axolotl's and TRL's "wrapped" packing).

The micro-batch keeps its examples: packing changes how they are laid out, not
how many real tokens an optimizer step sees, so it cannot win by taking fewer,
bigger steps. The first token of every example gets no label: predicting it
would mean predicting one example from the end of the one before it.

Whether a model packs exactly is checked, not assumed (`packing_is_exact`): a
model whose attention ignores position-id boundaries (e.g. absolute position
embeddings without the masking utilities) falls back to padding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

IGNORE_INDEX = -100
# Sparse logits are used for a micro-batch whose predicted positions are at most this share.
SPARSE_BELOW = 0.8


class PackingCollator:
    """Lays a micro-batch of tokenised examples end to end; see the module docstring.

    Rows are at most `row_tokens` long (max_length: attention is dense within a
    row on sdpa/eager, so a longer row would cost more memory than the estimate
    for unpacked rows). The examples are spread over as few rows as that allows,
    and each row is made about as long as the others, so that padding the rows
    to one width wastes next to nothing.
    """

    def __init__(self, pad_token_id: int, row_tokens: int, sparse_logits: bool = False) -> None:
        self.pad_token_id = pad_token_id
        self.row_tokens = row_tokens
        self.sparse_logits = sparse_logits

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        examples = []
        for feature in features:
            tokens = list(feature["input_ids"])[: self.row_tokens]
            if tokens:
                targets = list(feature.get("labels", tokens))[: len(tokens)]
                examples.append((tokens, [IGNORE_INDEX, *targets[1:]]))
        rows = balanced_rows([len(ids) for ids, _ in examples], self.row_tokens)
        width = max(sum(len(examples[i][0]) for i in row) for row in rows)
        batch_ids, batch_labels, batch_positions = [], [], []
        for row in rows:
            ids: list[int] = []
            labels: list[int] = []
            positions: list[int] = []
            for i in row:
                ids += examples[i][0]
                labels += examples[i][1]
                positions += range(len(examples[i][0]))
            pad = width - len(ids)
            batch_ids.append(ids + [self.pad_token_id] * pad)
            batch_labels.append(labels + [IGNORE_INDEX] * pad)
            # Padding forms one more "example" of its own: it attends only to itself.
            batch_positions.append(positions + list(range(pad)))
        label_tensor = torch.tensor(batch_labels, dtype=torch.long)
        batch: dict[str, Any] = {
            "input_ids": torch.tensor(batch_ids, dtype=torch.long),
            "labels": label_tensor,
            "position_ids": torch.tensor(batch_positions, dtype=torch.long),
            # A key/value cache would make transformers skip the packed-sequence mask.
            "use_cache": False,
        }
        if self.sparse_logits:
            # Logits only where a next token is predicted (prompts and padding predict
            # nothing): the output projection and the loss skip the rest. The labels are
            # handed over already shifted, one per kept position.
            shifted = torch.full_like(label_tensor, IGNORE_INDEX)
            shifted[:, :-1] = label_tensor[:, 1:]
            keep = shifted != IGNORE_INDEX
            # Gathering the kept positions costs a little: worth it only when it skips
            # a real share of them (prompts), not on text trained in full.
            if keep.float().mean().item() <= SPARSE_BELOW:
                batch["logits_to_keep"] = keep
                batch["labels"] = batch["shift_labels"] = shifted[keep]
        return batch


def balanced_rows(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices of `lengths` grouped into rows of at most `capacity` tokens: as few rows as
    first-fit-decreasing manages, each about total / rows long (small padding)."""
    if not lengths:
        return []
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    total, longest = sum(lengths), max(lengths)
    count = -(-total // capacity)
    while True:
        width = max(longest, -(-total // count))
        while width <= capacity:
            rows = _first_fit(order, lengths, width)
            if len(rows) <= count:
                return rows
            width += max(1, width // 50)
        count += 1


def _first_fit(order: Sequence[int], lengths: Sequence[int], width: int) -> list[list[int]]:
    rows: list[list[int]] = []
    room: list[int] = []
    for i in order:
        for r, free in enumerate(room):
            if lengths[i] <= free:
                rows[r].append(i)
                room[r] -= lengths[i]
                break
        else:
            rows.append([i])
            room.append(width - lengths[i])
    return rows


def packing_is_exact(model: Any, vocab_size: int, tolerance: float = 1e-4) -> bool:
    """Whether this model, as built, keeps packed examples apart.

    Runs two short random sequences alone and packed in one row, and compares
    the logits. A few milliseconds on small models; what decides is the model's
    own attention code, which no list of architectures would keep up with.
    """
    generator = torch.Generator().manual_seed(0)
    first = torch.randint(5, max(vocab_size, 6), (1, 5), generator=generator)
    second = torch.randint(5, max(vocab_size, 6), (1, 7), generator=generator)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            alone = [
                model(input_ids=s.to(device), use_cache=False).logits.float()
                for s in (first, second)
            ]
            packed_ids = torch.cat([first, second], dim=1).to(device)
            positions = torch.tensor([[*range(5), *range(7)]], device=device)
            packed = model(input_ids=packed_ids, position_ids=positions, use_cache=False)
    except (TypeError, ValueError, RuntimeError):  # no position_ids, or shapes it refuses
        return False
    finally:
        model.train(was_training)
    logits = packed.logits.float()
    diff = max(
        (logits[:, :5] - alone[0]).abs().max().item(),
        (logits[:, 5:] - alone[1]).abs().max().item(),
    )
    return diff <= tolerance * max(1.0, alone[1].abs().max().item())


def sparse_logits_are_exact(model: Any, vocab_size: int, tolerance: float = 1e-5) -> bool:
    """Whether this model computes the same loss from logits at the predicted positions
    only (`logits_to_keep` as a mask, `shift_labels`) as from all of them."""
    generator = torch.Generator().manual_seed(1)
    features = []
    for length in (6, 9):
        ids = torch.randint(5, max(vocab_size, 6), (length,), generator=generator).tolist()
        features.append({"input_ids": ids, "labels": [IGNORE_INDEX] * 3 + ids[3:]})
    device = next(model.parameters()).device
    full = PackingCollator(0, 32)(features)
    sparse = PackingCollator(0, 32, sparse_logits=True)(features)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            losses = [
                model(**{k: v.to(device) if torch.is_tensor(v) else v for k, v in b.items()})
                .loss.float()
                .item()
                for b in (full, sparse)
            ]
    except (TypeError, ValueError, RuntimeError, AttributeError):
        return False
    finally:
        model.train(was_training)
    return abs(losses[0] - losses[1]) <= tolerance * max(1.0, abs(losses[0]))
