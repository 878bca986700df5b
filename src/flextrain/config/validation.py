"""Semantic checks of a training configuration.

Every rule runs and every problem is reported, each naming the field and the
fix, so a user corrects a config in one pass. Facts about the hardware, the
model and the data come in as plain data (never looked up here), which keeps
the rules pure and each one testable with a passing and a failing case.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from flextrain.config.enums import TrainingType
from flextrain.config.issues import (
    ConfigValidationError,
    DatasetFacts,
    HardwareFacts,
    MemoryFacts,
    ModelFacts,
    Rule,
    RuleContext,
    Severity,
    ValidationIssue,
)
from flextrain.config.issues import err as _err
from flextrain.config.issues import warn as _warn
from flextrain.config.modes import config_for_mode
from flextrain.config.rules_expert import TORCH_OPTIMIZERS, expert_rule
from flextrain.config.rules_hardware import hardware_rule
from flextrain.config.rules_preference import preference_rule
from flextrain.config.rules_quant import bitsandbytes_installed, quantization_rule
from flextrain.config.rules_run import (
    checkpointing_rule,
    data_rule,
    distributed_rule,
    memory_rule,
    tracking_rule,
)
from flextrain.config.schemas import (
    OPTIMIZERS,
    SCHEDULER_TYPES,
    AdvancedTrainingConfig,
    BasicTrainingConfig,
)

# Importers name these here, the module they always came from.
__all__ = [
    "CLASSIFICATION_METRICS",
    "LANGUAGE_MODEL_METRICS",
    "TORCH_OPTIMIZERS",
    "ConfigValidationError",
    "DatasetFacts",
    "HardwareFacts",
    "MemoryFacts",
    "ModelFacts",
    "RuleContext",
    "Severity",
    "TrainingParameterValidator",
    "ValidationIssue",
    "best_metric_name",
    "config_for_mode",
]


_RULES: list[Rule] = []


def _rule(fn: Rule) -> Rule:
    _RULES.append(fn)
    return fn


@_rule
def _ids(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    if not c.model_id.strip():
        yield _err("model_id", "is empty.", "name a local model folder, built-in or hub id.")
    if not c.dataset_id.strip():
        yield _err("dataset_id", "is empty.", "name a registered dataset or a data file path.")


@_rule
def _learning_rate(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    if not 0 < c.learning_rate <= 1:
        yield _err(
            "learning_rate",
            f"{c.learning_rate} is outside (0, 1].",
            "use a small positive rate: 1e-5 to 5e-5 for fine-tuning, 1e-4 to 5e-4 for LoRA.",
        )


@_rule
def _counts(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    fields_set = ctx.fields_set
    if c.num_epochs < 1 and c.max_steps <= 0:
        yield _err("num_epochs", f"{c.num_epochs} is below 1.", "train for at least 1 epoch.")
    for name in ("batch_size", "gradient_accumulation_steps", "logging_steps"):
        value = getattr(c, name)
        if value != "auto" and value < 1:
            yield _err(name, f"{value} is below 1.", f"set {name} to 1 or more.")
    for name in (
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "save_steps",
        "save_total_limit",
        "eval_steps",
        "num_threads",
        "effective_batch_size",
    ):
        value = getattr(c, name)
        if value is not None and value < 1:
            yield _err(name, f"{value} is below 1.", f"set {name} to 1 or more, or leave it unset.")
    if (
        {"batch_size", "per_device_train_batch_size"} <= fields_set
        and c.per_device_train_batch_size is not None
        and c.per_device_train_batch_size != c.batch_size
    ):
        yield _err(
            "per_device_train_batch_size",
            f"{c.per_device_train_batch_size} disagrees with batch_size={c.batch_size}.",
            "give only one of them, or the same value to both.",
        )
    if c.eval_steps is not None and c.eval_strategy != "steps":
        yield _err(
            "eval_steps",
            f"{c.eval_steps} has no effect with eval_strategy {c.eval_strategy}.",
            "set eval_strategy to steps (or leave it out: eval_steps alone means steps), "
            "or remove eval_steps.",
        )
    if c.max_steps == 0 or c.max_steps < -1:
        yield _err("max_steps", f"{c.max_steps} is not allowed.", "use -1 (all epochs) or >= 1.")
    if c.seed < 0:
        yield _err("seed", f"{c.seed} is negative.", "use a seed of 0 or more.")
    if c.dataloader_num_workers is not None and c.dataloader_num_workers < 0:
        yield _err("dataloader_num_workers", "is negative.", "use 0 (main process) or more.")


# Upper bounds: far beyond any real run, low enough that every value fits the
# database's 64-bit integers and Trainer's arithmetic (a typo of 10**30 must be
# reported, not stored).
_UPPER_BOUNDS: dict[str, int] = {
    "num_epochs": 100_000,
    "batch_size": 1 << 20,
    "per_device_train_batch_size": 1 << 20,
    "per_device_eval_batch_size": 1 << 20,
    "gradient_accumulation_steps": 1 << 20,
    "effective_batch_size": 1 << 20,
    "max_length": 1 << 22,
    "max_steps": 1 << 40,
    "logging_steps": 1 << 40,
    "save_steps": 1 << 40,
    "eval_steps": 1 << 40,
    "warmup_steps": 1 << 40,
    "save_total_limit": 1 << 20,
    "num_threads": 1 << 16,
    "dataloader_num_workers": 1 << 10,
    "seed": (1 << 32) - 1,
    "lora_r": 1 << 16,
    "lora_alpha": 1 << 20,
}


@_rule
def _upper_bounds(ctx: RuleContext) -> Iterator[ValidationIssue]:
    for name, bound in _UPPER_BOUNDS.items():
        value = getattr(ctx.config, name, None)
        if isinstance(value, int) and value > bound:
            yield _err(name, f"{value} is over the limit of {bound}.", f"use {bound} or less.")


@_rule
def _max_length(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    model = ctx.model
    if c.max_length < 8:
        yield _err("max_length", f"{c.max_length} is below 8 tokens.", "use 8 or more (128-512).")
    elif model and model.max_position_embeddings and c.max_length > model.max_position_embeddings:
        yield _err(
            "max_length",
            f"{c.max_length} is over the model's limit of {model.max_position_embeddings} tokens.",
            f"set max_length to {model.max_position_embeddings} or less.",
        )


@_rule
def _eval_split(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    data = ctx.dataset
    if not 0 <= c.eval_split <= 0.5:
        yield _err(
            "eval_split",
            f"{c.eval_split} is outside [0, 0.5].",
            "hold out between 0 (no evaluation) and 0.5 of the data; 0.1 is typical.",
        )
    elif data is not None and c.eval_split > 0 and int(data.num_rows * c.eval_split) < 1:
        yield _warn(
            "eval_split",
            f"holds out no row of {data.num_rows}.",
            "add data or raise eval_split; evaluation is skipped.",
        )


@_rule
def _precision(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    hardware = ctx.hardware
    if c.fp16 and c.bf16:
        yield _err("fp16", "fp16 and bf16 are both on.", "turn one of them off.")
    if hardware is None:
        return
    if c.fp16 and hardware.gpu_count == 0:
        yield _err(
            "fp16",
            "fp16 needs a CUDA GPU and this machine has none.",
            "set fp16=False (training runs in fp32 on CPU).",
        )
    if c.bf16 and hardware.gpu_count > 0 and not hardware.supports_bf16:
        yield _err(
            "bf16",
            "this GPU has no bf16 support (needs compute capability 8.0+).",
            "set bf16=False and fp16=True instead.",
        )


@_rule
def _optimizer(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    if not 0 <= c.weight_decay < 1:
        yield _err("weight_decay", f"{c.weight_decay} is outside [0, 1).", "use 0 to 0.1.")
    for name in ("adam_beta1", "adam_beta2"):
        value = getattr(c, name)
        if not 0 <= value < 1:
            yield _err(name, f"{value} is outside [0, 1).", f"use e.g. {name}=0.9 / 0.999.")
    if c.adam_epsilon <= 0:
        yield _err("adam_epsilon", f"{c.adam_epsilon} is not positive.", "use 1e-8.")
    if c.max_grad_norm < 0:
        yield _err("max_grad_norm", "is negative.", "use 1.0, or 0 to disable clipping.")
    if not 0 <= c.label_smoothing_factor < 1:
        yield _err("label_smoothing_factor", "is outside [0, 1).", "use 0 to 0.2.")
    if c.lr_scheduler_type not in SCHEDULER_TYPES:
        yield _err(
            "lr_scheduler_type",
            f"'{c.lr_scheduler_type}' is not a known scheduler.",
            f"use one of: {', '.join(SCHEDULER_TYPES)}.",
        )
    if c.optim == "adamw_bnb_8bit" and not bitsandbytes_installed():
        yield _err(
            "optim",
            "adamw_bnb_8bit needs the bitsandbytes package, not installed.",
            "pip install bitsandbytes (CUDA), or use optim=adamw_torch.",
        )
    if c.optim not in OPTIMIZERS:
        yield _err(
            "optim",
            f"'{c.optim}' is not a supported optimizer.",
            f"use one of: {', '.join(OPTIMIZERS)}.",
        )


@_rule
def _warmup(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    if c.warmup_steps < 0:
        yield _err("warmup_steps", f"{c.warmup_steps} is negative.", "use 0 or more.")
    if not 0 <= c.warmup_ratio < 1:
        yield _err("warmup_ratio", f"{c.warmup_ratio} is outside [0, 1).", "use 0 to 0.1.")
    if c.warmup_steps > 0 and c.warmup_ratio > 0:
        yield _err(
            "warmup_ratio", "both warmup_steps and warmup_ratio are set.", "give only one of them."
        )


@_rule
def _lora(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    model = ctx.model
    if not c.uses_lora:
        if c.lora_target_modules:
            yield _warn(
                "lora_target_modules",
                "is ignored: training_type is not LoRA.",
                "use training_type=lora_adaptation or drop the field.",
            )
        return
    if c.lora_r < 1:
        yield _err("lora_r", f"{c.lora_r} is below 1.", "use a rank of 4 to 64 (8 or 16 typical).")
    if c.lora_alpha < 1:
        yield _err("lora_alpha", f"{c.lora_alpha} is below 1.", "use lora_alpha = 2 x lora_r.")
    elif c.lora_r >= 1 and c.lora_alpha < c.lora_r:
        yield _err(
            "lora_alpha",
            f"{c.lora_alpha} is below lora_r={c.lora_r}, which damps the "
            "adapter update (scale alpha/r < 1).",
            f"set lora_alpha to at least {c.lora_r} (commonly {2 * c.lora_r}).",
        )
    if not 0 <= c.lora_dropout < 1:
        yield _err("lora_dropout", f"{c.lora_dropout} is outside [0, 1).", "use 0 to 0.1.")
    if c.lora_target_modules is not None and len(c.lora_target_modules) == 0:
        yield _err(
            "lora_target_modules",
            "is an empty list.",
            "leave it unset to detect targets, or name modules such as q_proj, v_proj.",
        )
    elif c.lora_target_modules and model and model.linear_module_names is not None:
        missing = [m for m in c.lora_target_modules if m not in model.linear_module_names]
        if missing:
            found = ", ".join(sorted(model.linear_module_names)) or "none"
            yield _err(
                "lora_target_modules",
                f"{', '.join(missing)} not found among the model's linear layers.",
                f"choose from: {found}.",
            )


# Evaluation metrics a run reports, by whether the task has class labels.
CLASSIFICATION_METRICS = ("loss", "accuracy", "f1")
LANGUAGE_MODEL_METRICS = ("loss", "perplexity")
# TRL's evaluation metrics: reward accuracy and margin of pairs, GRPO's mean reward.
PREFERENCE_METRICS = ("loss", "rewards/accuracies", "rewards/margins", "reward")


def best_metric_name(config: AdvancedTrainingConfig) -> str:
    """The metric that picks the best checkpoint, without the `eval_` prefix."""
    return (config.metric_for_best_model or "loss").removeprefix("eval_")


@_rule
def _early_stopping(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    wants_best = c.early_stopping_patience is not None or c.load_best_model_at_end
    if c.early_stopping_patience is not None and c.early_stopping_patience < 1:
        yield _err(
            "early_stopping_patience",
            f"{c.early_stopping_patience} is below 1.",
            "give the number of evaluations without improvement to wait (e.g. 3), or null.",
        )
    if c.early_stopping_threshold < 0:
        yield _err(
            "early_stopping_threshold",
            f"{c.early_stopping_threshold} is negative.",
            "give the smallest change that counts as an improvement (0 or more).",
        )
    if c.monitor_interval < 0.5 or c.monitor_interval > 600:
        yield _err(
            "monitor_interval",
            f"{c.monitor_interval} s is outside [0.5, 600].",
            "sample every few seconds; 5 is the default.",
        )
    # Labelled data trains a classifier (any training type but the pre-training ones);
    # before the data is known, any metric some objective reports is accepted.
    known: tuple[str, ...]
    if c.training_type.is_preference:
        known, task = PREFERENCE_METRICS, "preference and reward training"
    elif c.training_type == TrainingType.TASK_SPECIFIC or (ctx.dataset and ctx.dataset.has_labels):
        known, task = CLASSIFICATION_METRICS, "classification"
    elif ctx.dataset is not None:
        known, task = LANGUAGE_MODEL_METRICS, "language modelling"
    else:
        known, task = CLASSIFICATION_METRICS + LANGUAGE_MODEL_METRICS[1:], "any task"
    if best_metric_name(c) not in known:
        yield _err(
            "metric_for_best_model",
            f"'{c.metric_for_best_model}' is not reported for {task}.",
            f"choose one of: {', '.join(known)}.",
        )
    if not wants_best:
        return
    if c.eval_strategy == "no":
        yield _err(
            "eval_strategy",
            "is 'no', but early stopping and load_best_model_at_end compare evaluations.",
            "set eval_strategy to 'steps' (with eval_steps) or 'epoch'.",
        )
    elif c.eval_strategy == "steps" and not c.eval_steps:
        yield _err(
            "eval_steps",
            "is not set, but eval_strategy is 'steps'.",
            "give eval_steps, e.g. 50.",
        )
    if c.eval_split == 0 and not c.eval_file:
        yield _err(
            "eval_split",
            "is 0 and no eval_file is given: early stopping has nothing to evaluate on.",
            "hold out a share of the data (eval_split=0.1) or name an eval_file.",
        )


@_rule
def _custom_parameters(ctx: RuleContext) -> Iterator[ValidationIssue]:
    """The original module stored custom_parameters and ignored them; a run that looked
    configured by them and was not is worse than a refusal (docs/compat.md)."""
    given = ctx.config.custom_parameters
    if given:
        yield _err(
            "custom_parameters",
            f"{', '.join(sorted(given)[:8])}: flextrain does not pass unnamed parameters "
            "on (the original module kept them and did nothing with them).",
            "give each as its own field (advanced mode has every Trainer knob), TRL "
            "options in preference.trl_options, or code in expert mode; leave "
            "custom_parameters empty.",
        )


@_rule
def _settings_without_effect(ctx: RuleContext) -> Iterator[ValidationIssue]:
    """Values that only act together with another setting: given alone they would be
    stored, shown and silently do nothing, so say which setting they wait for."""
    c = ctx.config
    given = ctx.fields_set
    keeps_best = c.early_stopping_patience is not None or c.load_best_model_at_end
    if "early_stopping_threshold" in given and c.early_stopping_patience is None:
        yield _warn(
            "early_stopping_threshold",
            "has no effect without early stopping.",
            "set early_stopping_patience too (e.g. 3), or remove early_stopping_threshold.",
        )
    if "greater_is_better" in given and not keeps_best and c.metric_for_best_model is None:
        yield _warn(
            "greater_is_better",
            "has no effect: no metric picks a best checkpoint.",
            "set metric_for_best_model (or early_stopping_patience / load_best_model_at_end).",
        )
    if "effective_batch_size" in given and c.batch_size != "auto":
        yield _warn(
            "effective_batch_size",
            f"only applies to batch_size auto; batch_size is {c.batch_size}.",
            "set batch_size to auto, or use gradient_accumulation_steps.",
        )
    if "rdzv_endpoint" in given and c.num_nodes == 1:
        yield _warn(
            "rdzv_endpoint",
            "has no effect with one node.",
            "set num_nodes above 1 for a multi-node job, or remove rdzv_endpoint.",
        )
    if "deepspeed_config" in given and c.distributed_strategy != "deepspeed":
        yield _warn(
            "deepspeed_config",
            f"has no effect with distributed_strategy {c.distributed_strategy}.",
            "set distributed_strategy to deepspeed, or remove deepspeed_config.",
        )
    if not c.uses_lora:
        for name in ("lora_r", "lora_alpha", "lora_dropout"):
            if name in given:
                yield _warn(
                    name,
                    "is ignored: training_type is not LoRA.",
                    "use training_type=lora_adaptation or drop the field.",
                )


# Where and how the run happens, then expert mode's rules: in this order, as always
# (a config's issues keep their order).
for _run_rule in (
    checkpointing_rule,
    data_rule,
    memory_rule,
    hardware_rule,
    tracking_rule,
    distributed_rule,
    preference_rule,
    quantization_rule,
):
    _rule(_run_rule)
_rule(expert_rule)


class TrainingParameterValidator:
    """Runs every rule and returns every issue, errors and warnings alike."""

    def validate(
        self,
        config: BasicTrainingConfig,
        *,
        hardware: HardwareFacts | None = None,
        model: ModelFacts | None = None,
        dataset: DatasetFacts | None = None,
        memory: MemoryFacts | None = None,
    ) -> list[ValidationIssue]:
        advanced = AdvancedTrainingConfig.from_basic(config)
        fields_set = frozenset(config.model_fields_set)
        issues: list[ValidationIssue] = []
        ctx = RuleContext(advanced, fields_set, hardware, model, dataset, memory)
        for rule in _RULES:
            issues.extend(rule(ctx))
        return issues

    def validate_basic_config(
        self, config: BasicTrainingConfig, compatibility: Any = None, hardware: Any = None
    ) -> tuple[bool, list[str]]:
        """The original module's call: (valid, every issue as text). The compatibility
        report's issues count too; a warning is listed but does not make it invalid."""
        return self._judged(config, compatibility, hardware)

    def validate_advanced_config(
        self, config: BasicTrainingConfig, compatibility: Any = None, hardware: Any = None
    ) -> tuple[bool, list[str]]:
        """The original module's call for an advanced config (same as the basic one: the
        rules read whichever fields the config has)."""
        return self._judged(config, compatibility, hardware)

    def _judged(
        self, config: BasicTrainingConfig, compatibility: Any, hardware: Any
    ) -> tuple[bool, list[str]]:
        found = self.validate(config, hardware=hardware)
        issues = [str(i) for i in found]
        errors = any(i.severity == "error" for i in found)
        if compatibility is not None and not getattr(compatibility, "is_compatible", True):
            issues = [*getattr(compatibility, "issues", []), *issues]
            errors = True
        return not errors, issues

    def validate_or_raise(
        self,
        config: BasicTrainingConfig,
        *,
        hardware: HardwareFacts | None = None,
        model: ModelFacts | None = None,
        dataset: DatasetFacts | None = None,
        memory: MemoryFacts | None = None,
    ) -> list[ValidationIssue]:
        """Raise ConfigValidationError listing every error; return the warnings."""
        issues = self.validate(
            config, hardware=hardware, model=model, dataset=dataset, memory=memory
        )
        if any(i.severity == "error" for i in issues):
            raise ConfigValidationError(issues)
        return issues
