"""The rules for expert mode: the loss, the optimizer (groups, decay, its name), the
schedule expression over a sample run, and user code read (never run) from code_dir."""

from __future__ import annotations

from collections.abc import Iterator

from flextrain.config.issues import RuleContext, ValidationIssue
from flextrain.config.issues import err as _err
from flextrain.config.issues import warn as _warn
from flextrain.config.rules_quant import bitsandbytes_installed
from flextrain.config.schemas import ExpertOptimizerConfig, ExpertTrainingConfig
from flextrain.config.steps import warmup_steps
from flextrain.config.usercode import check_reference


def expert_rule(ctx: RuleContext) -> Iterator[ValidationIssue]:
    """Expert knobs: loss parameters, the schedule expression (evaluated over a sample
    run), optimizer settings, hooks, and user code read (never run) from code_dir."""
    c = ctx.config
    if not isinstance(c, ExpertTrainingConfig):
        return
    yield from _loss_issues(c)
    if c.lr_schedule_expr is not None:
        yield from _schedule_issues(c)
    if c.optimizer is not None:
        yield from _optimizer_issues(c.optimizer, ctx.fields_set)
    if c.clip_grad_value is not None and c.clip_grad_value <= 0:
        yield _err("clip_grad_value", f"{c.clip_grad_value} is not above 0.", "use e.g. 1.0.")
    if c.ema_decay is not None and not 0 < c.ema_decay < 1:
        yield _err("ema_decay", f"{c.ema_decay} is outside (0, 1).", "use e.g. 0.999.")
    yield from _reference_issues(c)


def _loss_issues(c: ExpertTrainingConfig) -> Iterator[ValidationIssue]:
    loss = c.loss
    if not 0 <= loss.label_smoothing < 1:
        yield _err(
            "loss.label_smoothing", f"{loss.label_smoothing} is outside [0, 1).", "use 0 to 0.2."
        )
    if loss.focal_gamma < 0:
        yield _err("loss.focal_gamma", f"{loss.focal_gamma} is negative.", "use 0 (plain CE) to 5.")
    if loss.focal_alpha is not None and not 0 < loss.focal_alpha <= 1:
        yield _err("loss.focal_alpha", f"{loss.focal_alpha} is outside (0, 1].", "use e.g. 0.25.")
    if loss.z_loss < 0:
        yield _err(
            "loss.z_loss", f"{loss.z_loss} is negative.", "use 0 or a small value like 1e-4."
        )
    for label, weight in (loss.class_weights or {}).items():
        if weight <= 0:
            yield _err(
                "loss.class_weights",
                f"label '{label}' has weight {weight}.",
                "give every weight above 0 (1 is neutral).",
            )
    if loss.name == "focal" and loss.label_smoothing:
        yield _warn(
            "loss.label_smoothing",
            "label smoothing is not applied by the focal loss.",
            "set it to 0, or use name cross_entropy.",
        )
    if c.label_smoothing_factor and not loss.is_default:
        yield _warn(
            "label_smoothing_factor",
            "the expert loss replaces the Trainer's label smoother.",
            "set loss.label_smoothing instead.",
        )


def _optimizer_issues(
    optimizer: ExpertOptimizerConfig, fields_set: frozenset[str]
) -> Iterator[ValidationIssue]:
    if "optim" in fields_set and optimizer.factory is None:
        yield _warn("optim", "optimizer replaces optim.", "remove optim.")
    if optimizer.layerwise_lr_decay is not None and not 0 < optimizer.layerwise_lr_decay <= 1:
        yield _err(
            "optimizer.layerwise_lr_decay",
            f"{optimizer.layerwise_lr_decay} is outside (0, 1].",
            "use e.g. 0.8 (each block lower learns 0.8x as fast), or leave it unset.",
        )
    for i, group in enumerate(optimizer.param_groups):
        where = f"optimizer.param_groups[{i}]"
        if group.lr is not None and group.lr_scale is not None:
            yield _err(where, "has both lr and lr_scale.", "give one of them.")
        for name in ("lr", "lr_scale"):
            value = getattr(group, name)
            if value is not None and value <= 0:
                yield _err(f"{where}.{name}", f"{value} is not above 0.", "use a positive value.")
        if group.weight_decay is not None and group.weight_decay < 0:
            yield _err(f"{where}.weight_decay", "is negative.", "use 0 or more.")
    if optimizer.factory is None:
        problem = _optimizer_name_problem(optimizer.name)
        if problem:
            yield _err("optimizer.name", problem, "use AdamW, SGD, RMSprop, Adafactor, ...")


def _reference_issues(c: ExpertTrainingConfig) -> Iterator[ValidationIssue]:
    """User code named by reference: the file and the name are there (read, not run)."""
    for field, refs in (
        ("loss.function", [c.loss.function]),
        ("optimizer.factory", [c.optimizer.factory if c.optimizer else None]),
        ("callbacks", c.callbacks),
        ("trainer_class", [c.trainer_class]),
        ("reward_functions", c.reward_functions),
    ):
        for ref in refs:
            problem = check_reference(ref, c.code_dir) if ref else None
            if problem:
                yield _err(field, problem, "fix the reference or the file in code_dir.")


def _schedule_issues(c: ExpertTrainingConfig) -> Iterator[ValidationIssue]:
    """The expression parses and gives a finite, non-negative lr over a sample run (the
    real step count is only known once the data is counted; the job checks it again)."""
    from flextrain.config.expression import ExpressionError, schedule_values

    total = c.max_steps if c.max_steps > 0 else 1000
    warmup = warmup_steps(c.warmup_steps, c.warmup_ratio, total)  # as the job computes it
    if "lr_scheduler_type" in c.model_fields_set:
        yield _warn(
            "lr_scheduler_type",
            "lr_schedule_expr replaces lr_scheduler_type.",
            "remove lr_scheduler_type.",
        )
    try:
        schedule_values(
            c.lr_schedule_expr or "", lr=c.learning_rate, total_steps=total, warmup=warmup
        )
    except ExpressionError as exc:
        yield _err(
            "lr_schedule_expr",
            str(exc),
            f"fix the expression (here warmup = {warmup}: warmup_steps, or warmup_ratio x the "
            "steps; lr = learning_rate).",
        )


# The optimizers torch.optim has (torch 2.13), named here so that checking a config
# needs no torch; tests/config/test_optimizer_names.py keeps the list equal to torch's.
TORCH_OPTIMIZERS = frozenset(
    {
        "ASGD",
        "Adadelta",
        "Adafactor",
        "Adagrad",
        "Adam",
        "AdamW",
        "Adamax",
        "LBFGS",
        "Muon",
        "NAdam",
        "RAdam",
        "RMSprop",
        "Rprop",
        "SGD",
        "SparseAdam",
    }
)


def _optimizer_name_problem(name: str) -> str | None:
    if name == "AdamW8bit":
        if not bitsandbytes_installed():
            return "AdamW8bit needs bitsandbytes: pip install bitsandbytes."
        return None
    if name in TORCH_OPTIMIZERS:
        return None
    known = ", ".join(sorted(TORCH_OPTIMIZERS))
    return f"'{name}' is not a torch.optim optimizer; known: {known}, AdamW8bit."
