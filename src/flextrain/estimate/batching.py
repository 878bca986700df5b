"""Which exact way of batching variable-length examples trains fastest here.

Every strategy is exact: no example attends to another, and the loss is the one of
the examples run one by one. They differ in how many positions the matrix products
see (real tokens plus padding) and how long the rows are that attention is dense over:

- "grouped": batches of similar length (transformers' length-grouped sampler), each
  padded to its longest; attention is per example.
- "padded": batches in random order, each padded to its longest (when grouping is off).
- "packed": a batch's examples laid end to end in rows of at most max_length, a
  block-diagonal causal mask keeping them apart. With sdpa or eager attention that
  mask is dense, so attention costs the square of the packed row, not of each example.
- "padding_free": the batch in one row with position ids; flash-attention's varlen
  kernel attends per example, with no padding and no dense mask (CUDA only).

The cost model counts the work each strategy gives the device for one epoch of the
data's actual lengths: matrix products over the positions they process, the output
layer over the positions that get logits (only the predicted ones when logits are
sparse), and attention over rows. Grouping is held to a higher bar than the others,
because it changes the batches and their order, and with them what is learnt (see
`choose`). Pure: lengths in, costs out.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from flextrain.estimate.memory import Architecture, TrainingSetup
from flextrain.estimate.timing import flops_per_token, matmul_parameters

STRATEGIES = ("grouped", "padded", "packed", "padding_free")
# transformers' LengthGroupedSampler sorts mega-batches of this many batches by length.
MEGABATCH_BATCHES = 50
# A strategy must be this much cheaper than the simplest candidate to be chosen over it:
# the model is a ranking, not a stopwatch.
MARGIN = 0.03
# Length grouping must save this share of the work of the best strategy that keeps the
# data's order: it changes what is learnt (see `choose`), packing usually does not lose
# much speed to it, and plain padding in random order loses a lot.
GROUPING_MIN_SAVING = 0.15
# Logits only at predicted positions pay off when at most this share of positions is
# predicted (prompts masked); the collator applies the same bound batch by batch.
SPARSE_BELOW = 0.8


@dataclass(frozen=True)
class ModelShape:
    """What the cost model needs of a model: the parameters of the matrix products in
    the body (per position) and in the output layer (per logit position), the layers and
    the hidden width (attention)."""

    body_parameters: int
    head_parameters: int
    layers: int
    hidden: int


@dataclass(frozen=True)
class StrategyCost:
    name: str
    flops: float  # one epoch
    processed_tokens: int  # real tokens plus padding
    logit_positions: int
    padding_share: float


@dataclass(frozen=True)
class BatchingChoice:
    """The chosen strategy, why, and the cost of every candidate (relative to it)."""

    strategy: str
    reason: str
    costs: dict[str, StrategyCost] = field(default_factory=dict)

    def relative(self) -> dict[str, float]:
        chosen = self.costs[self.strategy].flops or 1.0
        return {name: round(c.flops / chosen, 3) for name, c in self.costs.items()}


def candidates(
    *, device: str, can_pack: bool, group_by_length: bool, packing: bool | None, varlen: bool
) -> list[str]:
    """The strategies this run may use: those that keep the data's random order first
    (padded, then packed or padding-free unless packing is off), grouping last when it
    is allowed. `packing=True` asks for rows of several examples only; `varlen`: the
    attention kernel attends per example inside a row (flash-attention on CUDA)."""
    packed = "padding_free" if varlen and device == "cuda" else "packed"
    if packing and can_pack:
        return [packed]
    options = ["padded"]
    if can_pack and packing is not False:
        options.append(packed)
    if group_by_length:
        options.append("grouped")
    return options


def choose(
    lengths: Sequence[int],
    label_lengths: Sequence[int] | None,
    *,
    batch_size: int,
    max_length: int,
    shape: ModelShape,
    options: Sequence[str],
    sparse_logits: bool,
    seed: int = 0,
) -> BatchingChoice:
    """The strategy for one epoch of `lengths` (tokens per example, already truncated),
    `label_lengths` the predicted tokens per example (None: all).

    Among the strategies that keep the data's random order, the one with the least work
    (a near tie keeps the earlier, simpler one). Length-grouped batches only when they
    save at least GROUPING_MIN_SAVING of that work: grouping puts examples of similar
    length, often of similar kind, in the same batch and sorts the batches, which cost
    5-16% of held-out loss on demo/instructions (docs/benchmarks.md, "Throughput")."""
    if not options:
        raise ValueError("no batching strategy to choose from")
    costs = {
        name: epoch_cost(
            name,
            lengths,
            label_lengths,
            batch_size=batch_size,
            max_length=max_length,
            shape=shape,
            sparse_logits=sparse_logits,
            seed=seed,
        )
        for name in options
    }
    ordered = [costs[n] for n in options if n != "grouped"]
    best = ordered[0] if ordered else costs["grouped"]
    for cost in ordered[1:]:
        if cost.flops < best.flops * (1 - MARGIN):
            best = cost
    grouped = costs.get("grouped")
    if grouped is not None and grouped.flops < best.flops * (1 - GROUPING_MIN_SAVING):
        best = grouped
    if len(options) == 1:
        reason = "the only exact strategy for this model and config"
    else:
        others = ", ".join(
            f"{c.name} {c.flops / best.flops:.2f}x" for c in costs.values() if c is not best
        )
        reason = f"work per epoch against it: {others}; padding {best.padding_share:.1%}"
    return BatchingChoice(best.name, reason, costs)


def epoch_cost(
    name: str,
    lengths: Sequence[int],
    label_lengths: Sequence[int] | None,
    *,
    batch_size: int,
    max_length: int,
    shape: ModelShape,
    sparse_logits: bool,
    seed: int = 0,
) -> StrategyCost:
    """Training FLOPs of one epoch with strategy `name` (forward and backward: 3x forward)."""
    if name not in STRATEGIES:
        raise ValueError(f"unknown batching strategy {name!r}; one of {', '.join(STRATEGIES)}")
    lengths = [max(1, min(n, max_length)) for n in lengths]
    labels = list(label_lengths) if label_lengths is not None else lengths
    batches = _batches(name, len(lengths), lengths, batch_size, seed)
    processed = 0
    attention = 0.0  # sum over rows of (attended width)^2
    for batch in batches:
        sizes = [lengths[i] for i in batch]
        if name in ("grouped", "padded"):
            processed += max(sizes) * len(sizes)
            attention += len(sizes) * max(sizes) ** 2
        elif name == "packed":
            rows = balanced_rows(sizes, max_length)
            width = max(sum(sizes[i] for i in row) for row in rows)
            processed += width * len(rows)
            attention += len(rows) * width**2
        else:  # padding_free: per example, causal half skipped by the kernel
            processed += sum(sizes)
            attention += 0.5 * sum(n * n for n in sizes)
    real = sum(lengths)
    predicted = sum(min(a, b) for a, b in zip(labels, lengths, strict=False))
    logits = predicted if sparse_logits else processed
    # Forward 2 FLOPs per parameter and position, backward 4; attention 4·d·T² per layer
    # forward (scores and weighted values), 12·d·T² with the backward.
    flops = (
        6.0 * shape.body_parameters * processed
        + 6.0 * shape.head_parameters * logits
        + 12.0 * shape.layers * shape.hidden * attention
    )
    return StrategyCost(
        name=name,
        flops=flops,
        processed_tokens=processed,
        logit_positions=logits,
        padding_share=(processed - real) / processed if processed else 0.0,
    )


def _batches(
    name: str, count: int, lengths: Sequence[int], batch_size: int, seed: int
) -> list[list[int]]:
    """The epoch's batches as the sampler makes them: random order, or random mega-batches
    each sorted by length (longest first) and cut into batches."""
    order = list(range(count))
    random.Random(seed).shuffle(order)
    if name == "grouped":
        size = MEGABATCH_BATCHES * batch_size
        grouped: list[int] = []
        for start in range(0, count, size):
            grouped += sorted(order[start : start + size], key=lambda i: -lengths[i])
        order = grouped
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


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


def shape_of(arch: Architecture) -> ModelShape:
    """The cost model's view of an inspected architecture (language-model head: the
    vocabulary times the hidden width)."""
    head = arch.vocab_size * arch.hidden_size
    body = max(matmul_parameters(arch, "causal_lm") - head, 1)
    return ModelShape(body, head, max(arch.num_layers, 1), max(arch.hidden_size, 1))


def plan_epoch(
    arch: Architecture,
    setup: TrainingSetup,
    sample: Sequence[int],
    label_sample: Sequence[int] | None,
    *,
    rows: int,
    options: Sequence[str],
) -> tuple[BatchingChoice, float]:
    """The strategy a causal-LM job will choose, from a sample of its lengths, and the
    training FLOPs of one epoch of `rows` rows with it: the sample's cost scaled to the
    rows, and to the passes the setup makes (LoRA skips weight gradients, checkpointing
    recomputes the forward) as `timing.flops_per_token` counts them."""
    predicted = sum(label_sample) / max(sum(sample), 1) if label_sample is not None else 1.0
    choice = choose(
        sample,
        label_sample,
        batch_size=setup.batch_size,
        max_length=setup.seq_len,
        shape=shape_of(arch),
        options=options,
        sparse_logits=predicted <= SPARSE_BELOW,
    )
    full = replace(setup, lora=False, gradient_checkpointing=False)
    passes = flops_per_token(arch, setup) / flops_per_token(arch, full)
    flops = choice.costs[choice.strategy].flops * rows / max(len(sample), 1) * passes
    return choice, flops
