"""The rules of preference and reward training: the data's shape suits the method,
the method's own knobs are in range, GRPO has rewards and groups that divide its
batches, and `trl_options` names fields the method's TRL config has."""

from __future__ import annotations

import re
from collections.abc import Iterator

from flextrain.config.enums import TrainingType
from flextrain.config.issues import RuleContext, ValidationIssue
from flextrain.config.issues import err as _err
from flextrain.config.issues import warn as _warn
from flextrain.config.preference import (
    ACCEPTED_SHAPES,
    DPO_LOSS_TYPES,
    KTO_LOSS_TYPES,
    PreferenceOptions,
    RewardSpec,
)
from flextrain.config.schemas import ExpertTrainingConfig

# What each shape holds, for errors that say which columns a method wants.
SHAPE_COLUMNS = {
    "preference": "prompt, chosen, rejected (or chosen and rejected conversations)",
    "unpaired": "prompt, completion and a true/false label",
    "prompt": "prompt",
    "completion": "prompt and completion (the reference answer)",
}
_PREFERENCE_SHAPES = frozenset({"preference", "unpaired", "prompt"})
# Shapes whose rows carry a reference answer for GRPO (a pair's chosen answer); None is
# data not known yet, judged again when it is.
REFERENCE_SHAPES = (None, "completion", "preference")

# TRL config fields flextrain sets from its own fields: given in trl_options they would
# be silently overwritten, so they are refused with the field to use instead.
OWN_FIELDS = {
    "beta": "preference.beta",
    "loss_type": "preference.loss_type",
    "learning_rate": "learning_rate",
    "num_train_epochs": "num_epochs",
    "per_device_train_batch_size": "batch_size",
    "max_length": "max_length",
    "output_dir": "output_dir",
    "num_generations": "preference.num_generations",
    "max_completion_length": "preference.max_completion_length",
    "temperature": "preference.temperature",
    "precompute_ref_log_probs": "preference.reference",
    "report_to": "tracking",
}


def preference_rule(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    ttype = c.training_type
    data_shape = ctx.dataset.shape if ctx.dataset is not None else None
    if not ttype.is_preference:
        if data_shape in _PREFERENCE_SHAPES:
            yield _err(
                "training_type",
                f"{ttype.value} trains on text, but the dataset holds {data_shape} rows "
                f"({SHAPE_COLUMNS[data_shape]}).",
                "use a preference type for it: dpo, orpo or simpo for pairs, kto for "
                "marked answers, grpo for prompts.",
            )
        if "preference" in ctx.fields_set and c.preference != PreferenceOptions():
            yield _warn(
                "preference",
                f"is ignored: {ttype.value} is not preference or reward training.",
                "use training_type dpo, orpo, kto, simpo or grpo, or drop the field.",
            )
        return
    accepted = ACCEPTED_SHAPES[ttype]
    if ctx.dataset is not None and data_shape not in accepted:
        wanted = "; or ".join(SHAPE_COLUMNS[s] for s in accepted)
        yield _err(
            "dataset_id",
            f"{ttype.value} needs rows with {wanted}; the dataset is "
            f"{data_shape or 'plain text'} data.",
            f"give a dataset with those columns (e.g. demo/preferences for pairs), or map "
            f"yours when adding it: `flextrain datasets add FILE --shape {accepted[0]}` with "
            "--prompt-column / --chosen-column / --rejected-column.",
        )
    yield from _method_knobs(c.preference, ttype)
    yield from _supervised_only(ctx)
    if ttype == TrainingType.GRPO:
        yield from _grpo(ctx, data_shape)
    yield from _trl_options(c.preference, ttype)


# Expert settings the supervised trainer applies and TRL's trainers do not take.
SUPERVISED_ONLY = (
    "loss",
    "optimizer",
    "lr_schedule_expr",
    "callbacks",
    "clip_grad_value",
    "freeze",
    "ema_decay",
    "curriculum",
    "trainer_class",
    "packing",
    "completion_only_loss",
)


def _supervised_only(ctx: RuleContext) -> Iterator[ValidationIssue]:
    """Knobs given for a preference run that only the supervised trainer reads: said,
    so a user does not think a custom loss or schedule shaped the run."""
    for name in SUPERVISED_ONLY:
        if name in ctx.fields_set:
            yield _warn(
                name,
                f"is ignored: {ctx.config.training_type.value} is trained by TRL's trainer, "
                "which uses its own loss, optimizer set-up and data order.",
                "drop it; preference options go in `preference` (or its trl_options).",
            )


def _method_knobs(p: PreferenceOptions, ttype: TrainingType) -> Iterator[ValidationIssue]:
    if p.beta is not None and (p.beta < 0 or (p.beta == 0 and ttype != TrainingType.GRPO)):
        yield _err(
            "preference.beta",
            f"{p.beta} is not above 0.",
            "use 0.1 (DPO, KTO, ORPO) or 2.0 (SimPO); only GRPO may use 0 (no KL term).",
        )
    if p.loss_type is not None:
        allowed = {TrainingType.DPO: DPO_LOSS_TYPES, TrainingType.KTO: KTO_LOSS_TYPES}.get(ttype)
        if allowed is None:
            yield _err(
                "preference.loss_type",
                f"{ttype.value} has no loss variants.",
                "drop preference.loss_type (variants: dpo and kto).",
            )
        elif p.loss_type not in allowed:
            yield _err(
                "preference.loss_type",
                f"'{p.loss_type}' is not a {ttype.value} loss.",
                f"choose one of: {', '.join(allowed)}.",
            )
    if not 0 <= p.label_smoothing < 0.5:
        yield _err(
            "preference.label_smoothing", f"{p.label_smoothing} is outside [0, 0.5).", "use 0-0.2."
        )
    if p.reference == "precomputed" and ttype not in (TrainingType.DPO, TrainingType.KTO):
        yield _err(
            "preference.reference",
            f"precomputed reference log-probs are for dpo and kto; {ttype.value} "
            + ("uses no reference model." if ttype != TrainingType.GRPO else "samples anew."),
            "set preference.reference to auto.",
        )
    for name in ("desirable_weight", "undesirable_weight"):
        if getattr(p, name) <= 0:
            yield _err(f"preference.{name}", "is not above 0.", "use 1.0, or a positive weight.")


def _grpo(ctx: RuleContext, data_shape: str | None) -> Iterator[ValidationIssue]:
    c = ctx.config
    p = c.preference
    user_rewards = c.reward_functions if isinstance(c, ExpertTrainingConfig) else []
    if not p.rewards and not user_rewards and data_shape not in REFERENCE_SHAPES:
        yield _err(
            "preference.rewards",
            "is empty: GRPO learns from rewards and has none (and the data has no reference "
            "answer for the default, exact_match).",
            'add a built-in reward, e.g. {"name": "contains", "pattern": "\\\\d"}, or '
            "reward_functions in expert mode; or give prompt/completion data.",
        )
    if p.num_generations < 2:
        yield _err(
            "preference.num_generations",
            f"{p.num_generations} is below 2: a group of one has no spread to learn from.",
            "sample 4 to 16 completions per prompt.",
        )
    else:
        batch = c.train_batch_size * c.gradient_accumulation_steps * c.world_size
        if batch % p.num_generations:
            yield _err(
                "preference.num_generations",
                f"{p.num_generations} does not divide the {batch} completions of a step "
                "(batch_size x gradient_accumulation_steps x processes): every prompt's "
                "group must be whole.",
                f"use a batch of a multiple of {p.num_generations} (e.g. "
                f"{p.num_generations * max(1, batch // p.num_generations)}), or a "
                "num_generations that divides it.",
            )
    if p.max_completion_length < 1:
        yield _err("preference.max_completion_length", "is below 1.", "use e.g. 64 to 512.")
    if p.temperature <= 0:
        yield _err("preference.temperature", "is not above 0.", "sample at 0.7 to 1.0.")
    for i, reward in enumerate(p.rewards):
        yield from _reward(f"preference.rewards[{i}]", reward, data_shape)


def _reward(where: str, reward: RewardSpec, data_shape: str | None) -> Iterator[ValidationIssue]:
    needs_pattern = reward.name in ("contains", "format", "regex_match")
    if needs_pattern and not reward.pattern:
        yield _err(f"{where}.pattern", f"is missing: {reward.name} needs one.", "give a regex.")
    elif reward.pattern:
        try:
            re.compile(reward.pattern)
        except (re.error, OverflowError, RecursionError) as exc:
            yield _err(f"{where}.pattern", f"is not a valid regex ({exc}).", "fix the pattern.")
    if reward.name == "length" and (reward.target_length is None or reward.target_length < 1):
        yield _err(
            f"{where}.target_length", "is missing or below 1.", "give the characters to aim at."
        )
    if reward.name in ("exact_match", "regex_match") and data_shape not in REFERENCE_SHAPES:
        yield _err(
            f"{where}.name",
            f"{reward.name} compares with each row's reference answer, and "
            f"{data_shape or 'this'} data has none.",
            "give prompt/completion data (the completion is the reference answer), or "
            "use contains, format or length.",
        )


def _trl_options(p: PreferenceOptions, ttype: TrainingType) -> Iterator[ValidationIssue]:
    for key in p.trl_options:
        if key in OWN_FIELDS:
            yield _err(
                f"preference.trl_options.{key}",
                "is set by flextrain from its own field.",
                f"use {OWN_FIELDS[key]} instead.",
            )
    unknown = [k for k in p.trl_options if k not in OWN_FIELDS]
    if not unknown:
        return
    fields = trl_config_fields(ttype)
    for key in unknown:
        if fields is not None and key not in fields:
            close = sorted(f for f in fields if key.split("_")[0] in f)[:6]
            hint = f" Close: {', '.join(close)}." if close else ""
            yield _err(
                f"preference.trl_options.{key}",
                f"is not a field of TRL's {ttype.value} config.{hint}",
                "use a field of that config (see TRL's documentation), or drop it.",
            )


def trl_config_fields(ttype: TrainingType) -> frozenset[str] | None:
    """The field names of the TRL config `ttype` trains with, or None without TRL.

    TRL is imported only here and only when trl_options is given: the other rules stay
    light enough for every request."""
    import dataclasses
    import importlib

    where = {
        TrainingType.DPO: ("trl", "DPOConfig"),
        TrainingType.KTO: ("trl", "KTOConfig"),
        TrainingType.GRPO: ("trl", "GRPOConfig"),
        TrainingType.ORPO: ("trl.experimental.orpo", "ORPOConfig"),
        TrainingType.SIMPO: ("trl.experimental.cpo", "CPOConfig"),
    }[ttype]
    try:
        cls = getattr(importlib.import_module(where[0]), where[1])
    except ImportError:
        return None
    return frozenset(f.name for f in dataclasses.fields(cls))
