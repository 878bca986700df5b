"""Built-in losses for expert mode: cross-entropy and focal loss, with their parameters.

Expert mode (issue 9) lets a researcher change the loss as data, not code: label
smoothing, focal loss (Lin et al. 2017, "Focal Loss for Dense Object Detection"),
class weights and the z-loss of PaLM (Chowdhery et al. 2022). One function,
`loss_from_logits`, serves every objective once logits are [N, C] and labels [N];
the objectives differ only in how they get there (`causal_lm_loss` shifts,
classification and masked LM do not).

How transformers 5's `Trainer.compute_loss` hands things over, when
`Trainer(compute_loss_func=...)` is set (read from trainer.py, not assumed):

- it pops only "labels" from the inputs, calls `model(**inputs)` without them (so
  the model computes no loss), then calls `compute_loss_func(outputs, labels,
  num_items_in_batch=num_items_in_batch)`;
- "shift_labels" is *not* popped: it goes to the model as a keyword and the
  function never sees it. flextrain's `PackingCollator` does not need it to: with
  sparse logits it sets `labels` and `shift_labels` to the same tensor, already
  shifted and restricted to the kept positions, and the model returns logits of
  shape [kept, vocab] (`logits_to_keep` as a boolean mask). A 2-D logits tensor
  for "causal_lm" therefore means "already shifted": see `make_compute_loss_func`.
  When shift_labels is something the labels cannot reproduce (context parallelism
  shards the sequence after shifting), use `expert_compute_loss` from a Trainer
  subclass instead;
- in training, `num_items_in_batch` counts the labelled targets of the whole
  accumulated batch (`shift_labels` when the batch has them, else `labels[..., 1:]`
  for causal LMs, else `labels`), so sum / num_items_in_batch makes gradient
  accumulation exact; the Trainer then treats the loss as already scaled for it.
  In evaluation it is None and the loss is a mean.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import torch
import torch.nn.functional as F

from flextrain.jobs.spec import Objective

IGNORE_INDEX = -100
LossName = Literal["cross_entropy", "focal"]
LOSS_NAMES: tuple[str, ...] = ("cross_entropy", "focal")


@dataclass(frozen=True)
class LossSpec:
    """A built-in loss and its parameters: data, so it is safe to accept from any user."""

    name: LossName
    """"cross_entropy", or "focal": cross-entropy scaled by (1 - p_target) ** focal_gamma."""
    label_smoothing: float = 0.0
    """Share of the target mass spread evenly over all classes, as in torch's cross_entropy."""
    focal_gamma: float = 2.0
    """Focal loss only: how strongly well-classified positions are down-weighted (0: not at all)."""
    focal_alpha: float | None = None
    """Focal loss only: a scalar multiplying every term (Lin et al.'s alpha; per-class
    alphas are `class_weights`)."""
    class_weights: list[float] | None = None
    """A weight per class index (classes, or the token vocabulary), as torch's `weight=`."""
    z_loss: float = 0.0
    """Coefficient of mean(logsumexp(logits) ** 2) over the counted positions (PaLM): keeps
    the softmax normaliser near 1, which keeps bf16 logits from drifting."""

    def __post_init__(self) -> None:
        problems = []
        if self.name not in LOSS_NAMES:
            problems.append(f"name must be one of {', '.join(LOSS_NAMES)}, not {self.name!r}")
        if not 0.0 <= self.label_smoothing <= 1.0:
            problems.append(f"label_smoothing must be in [0, 1], not {self.label_smoothing}")
        if not (math.isfinite(self.focal_gamma) and self.focal_gamma >= 0.0):
            problems.append(f"focal_gamma must be finite and >= 0, not {self.focal_gamma}")
        if self.focal_alpha is not None:
            if self.name != "focal":
                problems.append("focal_alpha applies to the focal loss only")
            if not (math.isfinite(self.focal_alpha) and self.focal_alpha > 0.0):
                problems.append(f"focal_alpha must be finite and > 0, not {self.focal_alpha}")
        if self.class_weights is not None and (
            not self.class_weights
            or not all(math.isfinite(w) and w >= 0.0 for w in self.class_weights)
            or not any(w > 0.0 for w in self.class_weights)
        ):
            problems.append("class_weights must be finite, >= 0, and not all 0")
        if not (math.isfinite(self.z_loss) and self.z_loss >= 0.0):
            problems.append(f"z_loss must be finite and >= 0, not {self.z_loss}")
        if problems:
            # One error with every problem: a user fixes a config once, not once per field.
            raise ValueError("invalid loss: " + "; ".join(problems))


def loss_from_logits(
    logits: torch.Tensor,
    labels: torch.Tensor,
    spec: LossSpec,
    *,
    ignore_index: int = IGNORE_INDEX,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> torch.Tensor:
    """The loss of logits [N, C] against labels [N]: classification, or flattened tokens.

    Positions labelled `ignore_index` do not count. Per counted position i with target y:

        ce_i = (1 - s) * w_y * -log p_y + (s / C) * sum_c w_c * -log p_c
        term_i = alpha * (1 - p_y) ** gamma * ce_i      (focal; ce_i itself for cross_entropy)

    with s the label smoothing and w the class weights (all 1 without). Without
    `num_items_in_batch` the loss is sum(term) / sum(w_y), torch's weighted mean (the
    count without weights), so cross-entropy equals `F.cross_entropy` exactly. With it,
    the loss is sum(term) / num_items_in_batch: transformers counts the targets of the
    whole accumulated batch, so summing micro-batches gives the full batch's loss; class
    weights then scale terms without renormalising (the weights of later micro-batches
    are not known yet). z-loss adds z * sum(logsumexp ** 2) over the same denominator as
    a count: num_items_in_batch, or the number of counted positions.

    Logits are upcast to float32 (bf16 log-softmax loses too much). A batch with no
    counted position gives 0, not NaN, still attached to the graph: a micro-batch of
    prompts only must not poison the step.
    """
    if logits.ndim != 2:
        raise ValueError(f"logits must be [positions, classes], got shape {tuple(logits.shape)}")
    logits = logits.float()
    labels = labels.reshape(-1).to(logits.device)
    positions, classes = logits.shape
    if labels.numel() != positions:
        raise ValueError(f"{labels.numel()} labels for {positions} logit rows")
    if labels.is_floating_point():
        raise ValueError(
            "labels must be class indices (multi-label and regression are not built in)"
        )

    # Masking instead of selecting keeps shapes static: no host sync, compile-friendly.
    counted = labels != ignore_index
    targets = labels.masked_fill(~counted, 0)
    log_probs = F.log_softmax(logits, dim=-1)
    target_log_probs = log_probs.gather(1, targets[:, None]).squeeze(1)

    weights = _class_weights(spec, classes, logits.device)
    target_weights = weights[targets] if weights is not None else torch.ones_like(logits[:, 0])
    target_weights = target_weights * counted

    terms = -target_log_probs * target_weights
    if spec.label_smoothing > 0.0:
        spread = log_probs * weights if weights is not None else log_probs
        smooth = -spread.sum(dim=-1) * counted
        terms = (1.0 - spec.label_smoothing) * terms + (spec.label_smoothing / classes) * smooth
    if spec.name == "focal":
        if spec.focal_gamma > 0.0:
            # 1 - p = -expm1(log p): exact where p is close to 1, the positions focal targets.
            terms = terms * (-torch.expm1(target_log_probs)).clamp(min=0.0).pow(spec.focal_gamma)
        if spec.focal_alpha is not None:
            terms = terms * spec.focal_alpha

    z_sum = None
    if spec.z_loss > 0.0:
        z_sum = (torch.logsumexp(logits, dim=-1).pow(2) * counted).sum()

    if num_items_in_batch is not None:
        if isinstance(num_items_in_batch, torch.Tensor):
            num_items_in_batch = num_items_in_batch.to(logits.device)
        total = terms.sum() + (spec.z_loss * z_sum if z_sum is not None else 0.0)
        return total / num_items_in_batch
    loss = terms.sum() / _nonzero(target_weights.sum())
    if z_sum is not None:
        loss = loss + spec.z_loss * z_sum / _nonzero(counted.sum().float())
    return loss


def causal_lm_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    spec: LossSpec,
    *,
    shift_labels: torch.Tensor | None = None,
    num_items_in_batch: torch.Tensor | int | None = None,
    ignore_index: int = IGNORE_INDEX,
) -> torch.Tensor:
    """The loss of a causal LM: position t predicts token t + 1.

    Without `shift_labels`: logits [B, T, V] and labels [B, T] are shifted here
    (logits[:, :-1] against labels[:, 1:]) and flattened. With `shift_labels`
    (already shifted: label of position t is the token at t + 1), they are used as
    they are and `labels` is ignored, in either of two layouts:

    - logits [B, T, V] with shift_labels [B, T] (transformers' convention);
    - logits [K, V] with shift_labels [K]: flextrain's `PackingCollator` with sparse
      logits passes `logits_to_keep` as a boolean mask, so the model returns logits
      only at the K kept positions, flattened row by row, and the shift_labels are
      the labels of exactly those positions in the same order.
    """
    if shift_labels is not None:
        if logits.ndim == 3:
            flat_logits = logits.reshape(-1, logits.shape[-1])
        elif logits.ndim == 2:
            flat_logits = logits
        else:
            raise ValueError(f"logits must be [B, T, V] or [K, V], got {tuple(logits.shape)}")
        flat_labels = shift_labels.reshape(-1)
        if flat_labels.numel() != flat_logits.shape[0]:
            raise ValueError(
                f"{flat_labels.numel()} shift_labels for {flat_logits.shape[0]} logit rows"
            )
    else:
        if labels is None:
            raise ValueError("causal_lm_loss needs labels or shift_labels")
        if logits.ndim != 3 or labels.shape != logits.shape[:2]:
            raise ValueError(
                f"without shift_labels, logits must be [B, T, V] and labels [B, T]; got "
                f"{tuple(logits.shape)} and {tuple(labels.shape)}"
            )
        flat_logits = logits[:, :-1].reshape(-1, logits.shape[-1])
        flat_labels = labels[:, 1:].reshape(-1)
    return loss_from_logits(
        flat_logits,
        flat_labels,
        spec,
        ignore_index=ignore_index,
        num_items_in_batch=num_items_in_batch,
    )


class ComputeLossFunc(Protocol):
    """What `transformers.Trainer(compute_loss_func=...)` calls."""

    def __call__(
        self,
        outputs: Any,
        labels: torch.Tensor | None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor: ...


def make_compute_loss_func(spec: LossSpec, objective: Objective | str) -> ComputeLossFunc:
    """A `compute_loss_func` for transformers' Trainer computing `spec` for `objective`.

    - "sequence_classification": logits [B, C], labels [B];
    - "causal_lm": logits [B, T, V] with labels [B, T] are shifted; logits [K, V] are
      flextrain's sparse packed logits, whose labels arrive already shifted and
      restricted to the K kept positions (the collator sets labels = shift_labels);
    - "masked_lm": logits [B, T, V] and labels [B, T] are aligned: no shift.
    """
    if objective not in ("sequence_classification", "causal_lm", "masked_lm"):
        raise ValueError(f"no built-in loss for objective {objective!r}")

    def compute_loss_func(
        outputs: Any,
        labels: torch.Tensor | None,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor:
        if labels is None:
            raise ValueError("the built-in losses need labels; this batch has none")
        return _objective_loss(_logits(outputs), labels, None, spec, objective, num_items_in_batch)

    return compute_loss_func


def expert_compute_loss(
    model: Any,
    inputs: Mapping[str, Any],
    spec: LossSpec,
    objective: Objective | str,
    num_items_in_batch: torch.Tensor | int | None = None,
) -> tuple[torch.Tensor, Any]:
    """(loss, outputs) for a Trainer subclass's `compute_loss`, which sees every input.

    Use this instead of `make_compute_loss_func` when `shift_labels` carries what the
    labels cannot (e.g. context parallelism shifts before sharding the sequence):
    labels and shift_labels are taken out of a copy of `inputs`, the model runs
    without them, and the loss uses shift_labels when present. For example:

        class ExpertTrainer(Trainer):
            def compute_loss(self, model, inputs, return_outputs=False,
                             num_items_in_batch=None):
                loss, outputs = expert_compute_loss(
                    model, inputs, spec, objective, num_items_in_batch
                )
                # What Trainer.compute_loss does after a loss normalised by the
                # global token count (num_items_in_batch is all-reduced):
                if self.args.average_tokens_across_devices and num_items_in_batch is not None:
                    loss = loss * (self.accelerator.num_processes // self.get_tp_size())
                return (loss, outputs) if return_outputs else loss

    Do not also pass compute_loss_func. The Trainer treats this loss as scaled for
    gradient accumulation exactly when the model accepts loss kwargs and
    num_items_in_batch is given, which is when this loss divides by it.
    """
    model_inputs = dict(inputs)
    labels = model_inputs.pop("labels", None)
    shift_labels = model_inputs.pop("shift_labels", None)
    if labels is None and shift_labels is None:
        raise ValueError("the built-in losses need labels; this batch has none")
    outputs = model(**model_inputs)
    loss = _objective_loss(
        _logits(outputs), labels, shift_labels, spec, objective, num_items_in_batch
    )
    return loss, outputs


def _objective_loss(
    logits: torch.Tensor,
    labels: torch.Tensor | None,
    shift_labels: torch.Tensor | None,
    spec: LossSpec,
    objective: str,
    num_items_in_batch: torch.Tensor | int | None,
) -> torch.Tensor:
    if objective == "causal_lm":
        if shift_labels is None and logits.ndim == 2:
            # Sparse packed logits: the labels are the collator's shift_labels.
            shift_labels = labels
        return causal_lm_loss(
            logits, labels, spec, shift_labels=shift_labels, num_items_in_batch=num_items_in_batch
        )
    if labels is None:
        raise ValueError(f"{objective} needs labels")
    if objective == "sequence_classification":
        if logits.ndim != 2:
            raise ValueError(f"classification logits must be [B, C], got {tuple(logits.shape)}")
        return loss_from_logits(logits, labels, spec, num_items_in_batch=num_items_in_batch)
    if objective == "masked_lm":
        return loss_from_logits(
            logits.reshape(-1, logits.shape[-1]),
            labels.reshape(-1),
            spec,
            num_items_in_batch=num_items_in_batch,
        )
    raise ValueError(f"no built-in loss for objective {objective!r}")


def _logits(outputs: Any) -> torch.Tensor:
    """Logits from a ModelOutput, a dict, or a tuple (no labels were given, so no loss first)."""
    if isinstance(outputs, Mapping):
        return outputs["logits"]
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    return outputs[0]


def _class_weights(spec: LossSpec, classes: int, device: torch.device) -> torch.Tensor | None:
    if spec.class_weights is None:
        return None
    if len(spec.class_weights) != classes:
        raise ValueError(f"{len(spec.class_weights)} class_weights for {classes} classes")
    return torch.tensor(spec.class_weights, dtype=torch.float32, device=device)


def _nonzero(denominator: torch.Tensor) -> torch.Tensor:
    """The denominator, or 1 where it is 0 (then the numerator is 0 too)."""
    return torch.where(denominator > 0, denominator, torch.ones_like(denominator))
