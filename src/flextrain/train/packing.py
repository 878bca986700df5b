"""Collators for causal language modelling: packed rows, and padded rows, both with
logits only where a token is predicted.

Which one a job uses is the cost model's choice (`flextrain.estimate.batching`): packed
rows keep the data's random order and, on CPU, usually cost a little more than
length-grouped padded batches (the dense block-diagonal mask makes attention grow with
the row), not the 15% that grouping must save; `packing: true` asks for packing, and on
CUDA with flash-attention one padding-free row per batch is used.

Packing, below, spends no compute on padding.

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

from flextrain.estimate.batching import SPARSE_BELOW, balanced_rows

IGNORE_INDEX = -100


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
            _keep_predicted_only(batch)
        return batch


class PaddingCollator:
    """Pads a micro-batch to its longest example (attention mask 0 and label -100 on the
    padding), with logits only where a token is predicted when `sparse_logits` is on.

    The "grouped" and "padded" strategies (`flextrain.estimate.batching`): attention is
    per example, so no mask spans two examples, and with length-grouped batches the
    padding is a few percent. transformers' DataCollatorForSeq2Seq pads the same way but
    cannot hand the model `logits_to_keep`.
    """

    def __init__(self, pad_token_id: int, sparse_logits: bool = False) -> None:
        self.pad_token_id = pad_token_id
        self.sparse_logits = sparse_logits

    def __call__(self, features: Sequence[dict[str, Any]]) -> dict[str, Any]:
        rows = [list(f["input_ids"]) for f in features]
        targets = [list(f.get("labels", f["input_ids"])) for f in features]
        width = max(len(r) for r in rows)
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([r + [self.pad_token_id] * (width - len(r)) for r in rows]),
            "attention_mask": torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows]),
            "labels": torch.tensor([t + [IGNORE_INDEX] * (width - len(t)) for t in targets]),
        }
        if self.sparse_logits:
            _keep_predicted_only(batch)
        return batch


def _keep_predicted_only(batch: dict[str, Any]) -> None:
    """Logits only where a next token is predicted (prompts and padding predict nothing):
    the output projection and the loss skip the rest. The labels are handed over already
    shifted, one per kept position. Gathering the kept positions costs a little: done
    only when it skips a real share of them (prompts), not on text trained in full."""
    labels = batch["labels"]
    shifted = torch.full_like(labels, IGNORE_INDEX)
    shifted[:, :-1] = labels[:, 1:]
    keep = shifted != IGNORE_INDEX
    if keep.float().mean().item() <= SPARSE_BELOW:
        batch["logits_to_keep"] = keep
        batch["labels"] = batch["shift_labels"] = shifted[keep]


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
