"""Training-step hooks an expert config can ask for: gradient clipping by value, an EMA of
the weights, and curriculum ordering of the training data.

Facts about transformers 5.x these rely on (checked in its trainer.py):
- At each optimizer step the Trainer clips by norm (`max_grad_norm > 0`), then measures
  the norm, which unscales fp16 gradients in any case (`accelerator.clip_grad_norm_`),
  then fires `on_pre_optimizer_step`, then calls `optimizer.step()`, `on_optimizer_step`,
  the lr scheduler, `zero_grad`, and `on_step_end` (after `global_step` is incremented).
- The training sampler comes from `Trainer._get_train_sampler`, which honours
  `args.train_sampling_strategy` ("random", "sequential", "group_by_length",
  "batch_rebalance"); "sequential" is a `SequentialSampler` over `train_dataset`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

__all__ = [
    "EMA_FILE",
    "ClipGradValueCallback",
    "EMACallback",
    "apply_curriculum",
    "curriculum_order",
]

logger = logging.getLogger(__name__)


def _model(kwargs: dict[str, Any]) -> nn.Module:
    model = kwargs.get("model")
    if not isinstance(model, nn.Module):
        raise RuntimeError("callback called without the model (not run by a Trainer?)")
    return model


def _refuse_zero3(hook: str) -> None:
    from transformers.integrations import is_deepspeed_zero3_enabled

    if is_deepspeed_zero3_enabled():
        raise ValueError(f"{hook} cannot see DeepSpeed ZeRO-3's partitioned weights or grads")


class ClipGradValueCallback(TrainerCallback):
    """Clamps every gradient to [-value, value] just before each optimizer step.

    Runs at `on_pre_optimizer_step`, i.e. after the Trainer's clipping by norm and after
    fp16 gradients are unscaled. Element-wise, so it is also right on FSDP shards; under
    DeepSpeed the gradients live inside the engine (use its `gradient_clipping`).
    """

    def __init__(self, value: float) -> None:
        if not value > 0:
            raise ValueError(f"gradient clip value must be > 0, got {value}")
        self.value = float(value)

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if args.deepspeed:
            raise ValueError(
                "clipping gradients by value is not supported with DeepSpeed; "
                "set gradient_clipping in its config"
            )

    def on_pre_optimizer_step(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        grads = [p.grad for p in _model(kwargs).parameters() if p.grad is not None]
        for grad in grads:
            grad.clamp_(-self.value, self.value)


EMA_FILE = "ema_shadow-{rank}.pt"


class EMACallback(TrainerCallback):
    """Exponential moving average of the trainable weights; the model ends up holding it.

    `shadow` (name -> float32 tensor on the weight's device) starts as a copy of the
    trainable weights at train begin; every `every` optimizer steps it becomes
    `decay * shadow + (1 - decay) * weights` (`decay` applies per update, not per step).
    At train end the shadow is copied into the model, so what is saved afterwards is the
    EMA model (this also replaces weights `load_best_model_at_end` loaded).

    Resume: at each checkpoint the shadow is saved beside it (`ema_shadow-<rank>.pt`);
    a run resumed from `<output_dir>/checkpoint-<step>` picks it up. Without that file
    (a checkpoint from elsewhere, or written without this callback) the average restarts
    from the resumed weights, with a warning. Not for DeepSpeed ZeRO-3.
    """

    def __init__(self, decay: float, every: int = 1) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        if every < 1:
            raise ValueError(f"EMA every must be >= 1, got {every}")
        self.decay = float(decay)
        self.every = int(every)
        self.shadow: dict[str, torch.Tensor] = {}

    @staticmethod
    def _trainable(model: nn.Module) -> dict[str, torch.Tensor]:
        return {n: p for n, p in model.named_parameters() if p.requires_grad}

    def on_train_begin(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        _refuse_zero3("EMA")
        weights = self._trainable(_model(kwargs))
        if state.global_step > 0 and self._load(args, state, weights):
            return
        if state.global_step > 0:
            logger.warning(
                "EMA: no saved average for step %d; the average restarts from the resumed weights",
                state.global_step,
            )
        self.shadow = {n: p.detach().float().clone() for n, p in weights.items()}

    def _path(self, args: TrainingArguments, step: int) -> str:
        folder = os.path.join(args.output_dir or ".", f"checkpoint-{step}")
        return os.path.join(folder, EMA_FILE.format(rank=args.process_index))

    def _load(
        self, args: TrainingArguments, state: TrainerState, weights: dict[str, torch.Tensor]
    ) -> bool:
        path = self._path(args, state.global_step)
        if not os.path.isfile(path):
            return False
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if set(saved) != set(weights):
            logger.warning("EMA: %s holds other parameters than the model trains; ignored", path)
            return False
        self.shadow = {n: saved[n].to(weights[n].device, torch.float32) for n in weights}
        return True

    def on_step_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        if state.global_step % self.every:
            return
        weights = self._trainable(_model(kwargs))
        with torch.no_grad():
            for name, average in self.shadow.items():
                average.lerp_(weights[name].detach().float(), 1.0 - self.decay)

    def on_save(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        path = self._path(args, state.global_step)
        if self.shadow and os.path.isdir(os.path.dirname(path)):
            torch.save({n: t.cpu() for n, t in self.shadow.items()}, path)

    def on_train_end(
        self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any
    ) -> None:
        weights = self._trainable(_model(kwargs))
        with torch.no_grad():
            for name, average in self.shadow.items():
                weights[name].copy_(average.to(weights[name].dtype))


def _sort_value(value: Any, key: str) -> Any:
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, str | Sequence):
        return len(value)
    raise ValueError(f"curriculum: column {key!r} holds {type(value).__name__}, not sortable")


def curriculum_order(dataset: Any, key: str, descending: bool = False) -> list[int]:
    """Indices that sort a `datasets.Dataset` by column `key` (stable: ties keep order).

    Numbers sort by value, lists and strings by their length; `key="length"` without a
    `length` column means the length of `input_ids`.
    """
    columns = list(dataset.column_names)
    if key in columns:
        values = [_sort_value(v, key) for v in dataset[key]]
    elif key == "length" and "input_ids" in columns:
        values = [len(ids) for ids in dataset["input_ids"]]
    else:
        raise ValueError(f"curriculum: no column {key!r}; columns: {', '.join(columns)}")
    return sorted(range(len(values)), key=values.__getitem__, reverse=descending)


def apply_curriculum(trainer: Any, order: Sequence[int]) -> None:
    """Make `trainer` train on its dataset in `order`, the same order every epoch.

    Replaces `trainer.train_dataset` with `dataset.select(order)` (a `Subset` for a
    plain torch dataset) and sets `trainer.args.train_sampling_strategy = "sequential"`,
    the Trainer's own switch for a `SequentialSampler`; this overrides
    `group_by_length`. Call it before `trainer.train()`. A resumed run must apply the
    same order again; the Trainer then skips the batches already seen as usual. With
    several processes accelerate deals consecutive batches to the ranks in turn, so the
    order holds across the global batch.
    """
    dataset = trainer.train_dataset
    if dataset is None or isinstance(dataset, torch.utils.data.IterableDataset):
        raise ValueError("curriculum needs a training dataset with a length (not iterable)")
    size = len(dataset)
    indices = [int(i) for i in order]
    bad = [i for i in indices if not 0 <= i < size]
    if not indices or bad:
        raise ValueError(
            f"curriculum order must be indices in [0, {size}); got {len(indices)} indices"
            + (f", out of range: {bad[:5]}" if bad else "")
        )
    strategy = trainer.args.train_sampling_strategy
    if strategy not in ("random", "sequential"):
        logger.warning("curriculum: train_sampling_strategy %r replaced by 'sequential'", strategy)
    select = getattr(dataset, "select", None)
    trainer.train_dataset = (
        select(indices) if callable(select) else torch.utils.data.Subset(dataset, indices)
    )
    trainer.args.train_sampling_strategy = "sequential"
