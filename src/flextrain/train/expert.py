"""Expert mode in the worker: the config's loss, optimizer, schedule, hooks and user code
turned into what the Trainer takes.

Everything here goes through the Trainer's own extension points (compute_loss_func,
create_optimizer / create_scheduler, callbacks, a subclass), so checkpoints, resume,
metrics, early stopping and several processes keep working as in the other modes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import Trainer, TrainerCallback

from flextrain.config.schemas import ExpertTrainingConfig
from flextrain.config.steps import warmup_steps
from flextrain.jobs.spec import RunSpec
from flextrain.train import usercode
from flextrain.train.hooks import ClipGradValueCallback, EMACallback, curriculum_order
from flextrain.train.losses import LossSpec, make_compute_loss_func
from flextrain.train.optim import ParamGroupRule, build_optimizer, describe_groups, freeze

UserLoss = Callable[[Any, dict[str, Any], Any], torch.Tensor]


@dataclass
class ExpertSetup:
    """What the Trainer needs for an expert run (all empty for the other modes)."""

    callbacks: list[TrainerCallback] = field(default_factory=list)
    trainer_class: type[Trainer] | None = None
    compute_loss_func: Callable[..., torch.Tensor] | None = None
    user_loss: Callable[[Any, dict[str, Any], Any], torch.Tensor] | None = None
    optimizer: Callable[[torch.nn.Module], torch.optim.Optimizer] | None = None
    schedule: Callable[[torch.optim.Optimizer, int], Any] | None = None
    curriculum: list[int] | None = None
    notes: list[str] = field(default_factory=list)


def freeze_configured(spec: RunSpec, model: torch.nn.Module) -> str | None:
    """Freeze the parameters the config freezes; what was frozen, in words (None: nothing
    to freeze). Applied to every model the run builds, the one an out-of-memory back-off
    rebuilds too."""
    cfg = spec.config
    if not isinstance(cfg, ExpertTrainingConfig) or not cfg.freeze:
        return None
    frozen = freeze(model, cfg.freeze)
    return f"froze {len(frozen)} parameter tensors matching {cfg.freeze}"


def prepare(spec: RunSpec, train_dataset: Any) -> ExpertSetup:
    """Build the pieces the Trainer will use: loss, optimizer, schedule, callbacks, the
    user's Trainer class and the curriculum (freezing is `freeze_configured`)."""
    cfg = spec.config
    setup = ExpertSetup()
    if not isinstance(cfg, ExpertTrainingConfig):
        return setup
    setup.compute_loss_func, setup.user_loss = _loss(spec, cfg)
    setup.optimizer = _optimizer(cfg)
    setup.schedule = _schedule(cfg)
    if cfg.clip_grad_value is not None:
        setup.callbacks.append(ClipGradValueCallback(cfg.clip_grad_value))
    if cfg.ema_decay is not None:
        setup.callbacks.append(EMACallback(cfg.ema_decay))
        setup.notes.append(f"EMA of the weights, decay {cfg.ema_decay}; the EMA weights are saved")
    for ref in cfg.callbacks:
        cls = usercode.load(ref, cfg.code_dir)
        if not (isinstance(cls, type) and issubclass(cls, TrainerCallback)):
            raise usercode.UserCodeError(f"{ref} is not a transformers TrainerCallback class.")
        setup.callbacks.append(usercode.call(ref, cfg.code_dir, cls))
    if cfg.trainer_class:
        cls = usercode.load(cfg.trainer_class, cfg.code_dir)
        if not (isinstance(cls, type) and issubclass(cls, Trainer)):
            raise usercode.UserCodeError(
                f"{cfg.trainer_class} is not a subclass of transformers.Trainer."
            )
        setup.trainer_class = cls
    if cfg.curriculum:
        setup.curriculum = curriculum_order(
            train_dataset, cfg.curriculum, descending=cfg.curriculum_descending
        )
        setup.notes.append(
            f"curriculum: training in {'descending' if cfg.curriculum_descending else 'ascending'}"
            f" order of {cfg.curriculum}"
        )
    return setup


def _loss(
    spec: RunSpec, cfg: ExpertTrainingConfig
) -> tuple[Callable[..., torch.Tensor] | None, UserLoss | None]:
    loss = cfg.loss
    if loss.function:
        fn = usercode.load(loss.function, cfg.code_dir)
        ref, code_dir = loss.function, cfg.code_dir

        def user_loss(model: Any, inputs: dict[str, Any], outputs: Any) -> torch.Tensor:
            result: torch.Tensor = usercode.call(ref, code_dir, fn, model, inputs, outputs)
            return result

        return None, user_loss
    if loss.is_default:
        return None, None  # the model's own loss is exactly this
    weights = None
    if loss.class_weights:
        labels = spec.data.labels
        unknown = sorted(set(loss.class_weights) - set(labels))
        if unknown:
            raise ValueError(
                f"loss.class_weights names labels the data does not have: {unknown}; the "
                f"labels are {labels}."
            )
        weights = [float(loss.class_weights.get(label, 1.0)) for label in labels]
    loss_spec = LossSpec(
        name=loss.name,
        label_smoothing=loss.label_smoothing,
        focal_gamma=loss.focal_gamma,
        focal_alpha=loss.focal_alpha,
        class_weights=weights,
        z_loss=loss.z_loss,
    )
    return make_compute_loss_func(loss_spec, spec.objective), None


def _optimizer(
    cfg: ExpertTrainingConfig,
) -> Callable[[torch.nn.Module], torch.optim.Optimizer] | None:
    chosen = cfg.optimizer
    if chosen is None:
        return None
    if chosen.factory:
        factory = usercode.load(chosen.factory, cfg.code_dir)
        ref = chosen.factory

        def from_factory(model: torch.nn.Module) -> torch.optim.Optimizer:
            optimizer = usercode.call(ref, cfg.code_dir, factory, model, cfg)
            if not isinstance(optimizer, torch.optim.Optimizer):
                raise usercode.UserCodeError(
                    f"{ref} returned {type(optimizer).__name__}, not a torch.optim.Optimizer."
                )
            return optimizer

        return from_factory
    rules = [
        ParamGroupRule(g.pattern, lr=g.lr, lr_scale=g.lr_scale, weight_decay=g.weight_decay)
        for g in chosen.param_groups
    ]

    def built(model: torch.nn.Module) -> torch.optim.Optimizer:
        optimizer = build_optimizer(
            model,
            name=chosen.name,
            lr=cfg.learning_rate,
            weight_decay=cfg.weight_decay,
            kwargs=dict(chosen.kwargs),
            rules=rules,
            no_decay_on_norms_and_biases=chosen.no_decay_on_norms_and_biases,
            layerwise_lr_decay=chosen.layerwise_lr_decay,
        )
        for group in describe_groups(optimizer):
            print(f"[flextrain] optimizer group: {group}", flush=True)
        return optimizer

    return built


def _schedule(cfg: ExpertTrainingConfig) -> Callable[[torch.optim.Optimizer, int], Any] | None:
    if not cfg.lr_schedule_expr:
        return None
    from flextrain.config.expression import compile_schedule, lr_lambda

    schedule = compile_schedule(cfg.lr_schedule_expr)

    def make(optimizer: torch.optim.Optimizer, total_steps: int) -> Any:
        warmup = warmup_steps(cfg.warmup_steps, cfg.warmup_ratio, total_steps)
        multiplier = lr_lambda(
            schedule,
            lr=cfg.learning_rate,
            total_steps=total_steps,
            warmup=warmup,
            steps_per_epoch=max(1, total_steps // max(cfg.num_epochs, 1))
            if cfg.max_steps <= 0
            else None,
        )
        return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)

    return make
