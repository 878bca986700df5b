"""How tokenized rows become batches: the collator for the objective and the data, and
the metrics that go with it.

Which one fits depends on the data (prepared rows carry their own labels), the model
(packing only where its attention keeps packed examples apart, logits only at predicted
positions where its forward allows it) and the device: among the exact strategies the
cost model of `flextrain.estimate.batching` picks the one with the least work for the
train split's actual lengths.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa  # type: ignore[import-untyped]  # no type information
import pyarrow.compute as pc  # type: ignore[import-untyped]
import torch
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorWithPadding,
)

from flextrain.data.prepare import IGNORE_INDEX
from flextrain.estimate.batching import SPARSE_BELOW, ModelShape, candidates, choose
from flextrain.jobs.spec import RunSpec
from flextrain.train.metrics import classification_metrics
from flextrain.train.packing import (
    PackingCollator,
    PaddingCollator,
    packing_is_exact,
    sparse_logits_are_exact,
)


@dataclass(frozen=True)
class Batching:
    """The collator, the Trainer's compute_metrics (None: loss only), the strategy
    (`flextrain.estimate.batching`: grouped, padded, packed, padding_free) and why."""

    collator: Any
    compute_metrics: Callable[..., dict[str, float]] | None = None
    strategy: str = "grouped"
    reason: str = ""
    sparse_logits: bool = False

    @property
    def packed(self) -> bool:
        """Rows hold several examples: grouping by length has nothing left to gain."""
        return self.strategy in ("packed", "padding_free")


def choose_batching(spec: RunSpec, model: Any, tokenizer: Any, train: Any) -> Batching:
    """The batching for this run, from the train split's lengths, this device and this
    model; says on stdout (the job's log) which strategy and why."""
    cfg = spec.config
    unpacked = "grouped" if cfg.group_by_length else "padded"
    if spec.objective == "sequence_classification":
        return _told(Batching(DataCollatorWithPadding(tokenizer), classification_metrics, unpacked))
    if "labels" not in train.column_names:
        language = DataCollatorForLanguageModeling(
            tokenizer, mlm=spec.objective == "masked_lm", mlm_probability=0.15
        )
        return _told(Batching(language, strategy=unpacked))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    can_pack = cfg.packing is not False and packing_is_exact(model, len(tokenizer))
    lengths, label_lengths = token_counts(train)
    # Worth it where prompts are masked (the collator decides batch by batch, too).
    predicted = sum(label_lengths) / max(sum(lengths), 1)
    sparse = predicted <= SPARSE_BELOW and sparse_logits_are_exact(model, len(tokenizer))
    options = candidates(
        device=device,
        can_pack=can_pack,
        group_by_length=cfg.group_by_length,
        packing=cfg.packing,
        varlen=_varlen_attention(model),
    )
    choice = choose(
        lengths,
        label_lengths,
        batch_size=cfg.train_batch_size,
        max_length=cfg.max_length,
        shape=model_shape(model),
        options=options,
        sparse_logits=sparse,
        seed=cfg.seed,
    )
    if cfg.packing and not can_pack:
        print(
            "[flextrain] packing: off, this model's attention does not keep packed "
            "examples apart; padding each batch to its longest example instead",
            flush=True,
        )
    pad = tokenizer.pad_token_id
    if choice.strategy == "packed":
        collator: Any = PackingCollator(pad, cfg.max_length, sparse)
    elif choice.strategy == "padding_free":
        # One row per micro-batch: the varlen kernel attends per example inside it.
        collator = PackingCollator(pad, cfg.max_length * cfg.train_batch_size, sparse)
    else:
        collator = PaddingCollator(pad, sparse)
    return _told(Batching(collator, None, choice.strategy, choice.reason, sparse))


def token_counts(train: Any) -> tuple[list[int], list[int]]:
    """Tokens per row, and predicted tokens per row (labels other than -100 after the
    first position), read from the Arrow columns: a Python loop over every label would
    cost seconds of start-up per ten million tokens."""
    columns = train.with_format("arrow")
    lengths = pc.list_value_length(columns["input_ids"]).to_numpy(zero_copy_only=False)
    labels = columns["labels"]
    if isinstance(labels, pa.ChunkedArray):
        labels = labels.combine_chunks()
    offsets = labels.offsets.to_numpy()
    predicted = labels.values.to_numpy(zero_copy_only=False) != IGNORE_INDEX
    running = np.concatenate([[0], np.cumsum(predicted, dtype=np.int64)])
    counts = running[offsets[1:]] - running[offsets[:-1]]
    starts = offsets[:-1][offsets[1:] > offsets[:-1]]  # a row's first label predicts nothing
    counts[offsets[1:] > offsets[:-1]] -= predicted[starts]
    return [int(n) for n in lengths], [int(n) for n in counts]


def _told(batching: Batching) -> Batching:
    detail = f" ({batching.reason})" if batching.reason else ""
    sparse = "; logits only where a token is predicted" if batching.sparse_logits else ""
    print(f"[flextrain] batching: {batching.strategy}{detail}{sparse}", flush=True)
    return batching


def _varlen_attention(model: Any) -> bool:
    """Whether the model's attention runs flash-attention's varlen kernel, which attends
    per example inside a row of several (from the position ids)."""
    implementation = str(getattr(model.config, "_attn_implementation", "") or "")
    return "flash" in implementation


def model_shape(model: Any) -> ModelShape:
    """The cost model's view of a built model: parameters of the body's matrix products,
    of the output layer, the layers and the hidden width."""
    config = model.config
    if hasattr(config, "get_text_config"):
        config = config.get_text_config()
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    head_parameters = head.weight.numel() if head is not None else 0
    embeddings = model.get_input_embeddings()
    skip = {id(embeddings.weight)} if embeddings is not None else set()
    if head is not None:
        skip.add(id(head.weight))
    body = sum(p.numel() for p in model.parameters() if p.ndim == 2 and id(p) not in skip)
    return ModelShape(
        body_parameters=body,
        head_parameters=head_parameters,
        layers=int(getattr(config, "num_hidden_layers", 1) or 1),
        hidden=int(getattr(config, "hidden_size", 1) or 1),
    )
