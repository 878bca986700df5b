"""How tokenized rows become batches: the collator for the objective and the data, and
the metrics that go with it.

Which one fits depends on the data (prepared rows carry their own labels) and on the
model (packing is only used where its attention keeps packed examples apart).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
)

from flextrain.data.prepare import IGNORE_INDEX
from flextrain.jobs.spec import RunSpec
from flextrain.train.metrics import classification_metrics
from flextrain.train.packing import PackingCollator, packing_is_exact, sparse_logits_are_exact


@dataclass(frozen=True)
class Batching:
    """The collator, the Trainer's compute_metrics (None: loss only), and whether rows
    are packed (then grouping by length has nothing left to gain)."""

    collator: Any
    compute_metrics: Callable[..., dict[str, float]] | None = None
    packed: bool = False


def choose_batching(
    spec: RunSpec, model: Any, tokenizer: Any, train_columns: list[str]
) -> Batching:
    """The batching for this run; says on stdout (the job's log) when packing is on, or
    was asked for but cannot be used with this model."""
    cfg = spec.config
    if spec.objective == "sequence_classification":
        return Batching(DataCollatorWithPadding(tokenizer), classification_metrics)
    if "labels" not in train_columns:
        collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=spec.objective == "masked_lm", mlm_probability=0.15
        )
        return Batching(collator)
    if cfg.packing is not False and packing_is_exact(model, len(tokenizer)):
        sparse = sparse_logits_are_exact(model, len(tokenizer))
        packing = PackingCollator(tokenizer.pad_token_id, cfg.max_length, sparse)
        print(
            "[flextrain] packing: several examples per row, each attending only to itself"
            + ("; logits only where a token is predicted" if sparse else ""),
            flush=True,
        )
        return Batching(packing, packed=True)
    if cfg.packing:
        print(
            "[flextrain] packing: off, this model's attention does not keep packed "
            "examples apart; padding each batch to its longest example instead",
            flush=True,
        )
    # Prepared data carries its own labels (-100 on the prompt); the LM collator would
    # overwrite them with a copy of input_ids, so pad them with -100 instead.
    return Batching(DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX))
