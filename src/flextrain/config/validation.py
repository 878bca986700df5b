"""Semantic checks of a training configuration.

Every rule runs and every problem is reported, each naming the field and the
fix, so a user corrects a config in one pass. Facts about the hardware, the
model and the data come in as plain data (never looked up here), which keeps
the rules pure and each one testable with a passing and a failing case.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, Protocol

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import (
    OPTIMIZERS,
    SCHEDULER_TYPES,
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertOptimizerConfig,
    ExpertTrainingConfig,
    with_fields_set,
)
from flextrain.config.steps import warmup_steps
from flextrain.config.usercode import check_reference
from flextrain.errors import InvalidInputError

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class ValidationIssue:
    """One problem: which field, what is wrong, and how to fix it."""

    field: str
    message: str
    fix: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.field}: {self.message} Fix: {self.fix}"


class ConfigValidationError(InvalidInputError, ValueError):
    """A configuration with at least one error; carries every issue found."""

    code = "config_invalid"
    field = "config"

    def __init__(self, issues: Iterable[ValidationIssue]) -> None:
        self.issues = list(issues)
        errors = [i for i in self.issues if i.severity == "error"]
        lines = "\n".join(f"  - {issue}" for issue in errors)
        noun = "problem" if len(errors) == 1 else "problems"
        super().__init__(f"Invalid training configuration ({len(errors)} {noun}):\n{lines}")

    @property
    def errors(self) -> list[ValidationIssue]:
        return [i for i in self.issues if i.severity == "error"]


class HardwareFacts(Protocol):
    """What the rules need to know about the machine (HardwareConstraints fits)."""

    @property
    def gpu_count(self) -> int: ...

    @property
    def supports_bf16(self) -> bool: ...


@dataclass(frozen=True)
class ModelFacts:
    """What the rules need to know about the model, read from its config."""

    max_position_embeddings: int | None = None
    linear_module_names: frozenset[str] | None = None
    supports_gradient_checkpointing: bool = True


@dataclass(frozen=True)
class DatasetFacts:
    """What the rules need to know about the data, read from the file."""

    num_rows: int
    has_labels: bool
    num_labels: int = 0


@dataclass(frozen=True)
class RuleContext:
    """Everything a rule may look at; `fields_set` tells explicit values from defaults."""

    config: AdvancedTrainingConfig
    fields_set: frozenset[str]
    hardware: HardwareFacts | None
    model: ModelFacts | None
    dataset: DatasetFacts | None
    memory: MemoryFacts | None = None


Rule = Callable[[RuleContext], Iterable[ValidationIssue]]


@dataclass(frozen=True)
class MemoryFacts:
    """The memory estimate for this config on this machine, and the best fix."""

    peak_gb: float
    available_gb: float
    kind: str  # "GPU" or "system"
    fix: str = "lower batch_size or max_length, or turn on gradient_checkpointing."


_RULES: list[Rule] = []


def _rule(fn: Rule) -> Rule:
    _RULES.append(fn)
    return fn


def _err(field: str, message: str, fix: str) -> ValidationIssue:
    return ValidationIssue(field, message, fix, "error")


def _warn(field: str, message: str, fix: str) -> ValidationIssue:
    return ValidationIssue(field, message, fix, "warning")


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
    if c.optim == "adamw_bnb_8bit" and importlib.util.find_spec("bitsandbytes") is None:
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
    if c.training_type != TrainingType.LORA_ADAPTATION:
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
    if c.training_type == TrainingType.TASK_SPECIFIC or (ctx.dataset and ctx.dataset.has_labels):
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
    if c.training_type != TrainingType.LORA_ADAPTATION:
        for name in ("lora_r", "lora_alpha", "lora_dropout"):
            if name in given:
                yield _warn(
                    name,
                    "is ignored: training_type is not LoRA.",
                    "use training_type=lora_adaptation or drop the field.",
                )


@_rule
def _checkpointing(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    model = ctx.model
    if c.gradient_checkpointing and model and not model.supports_gradient_checkpointing:
        yield _warn(
            "gradient_checkpointing",
            "this model does not support it; it will be off.",
            "set gradient_checkpointing=False to silence this.",
        )


@_rule
def _data(ctx: RuleContext) -> Iterator[ValidationIssue]:
    c = ctx.config
    data = ctx.dataset
    if data is None:
        return
    if data.num_rows < 2:
        yield _err(
            "dataset_id",
            f"the dataset has {data.num_rows} usable rows.",
            "provide at least 2 rows (hundreds for a useful model).",
        )
    if c.training_type == TrainingType.TASK_SPECIFIC:
        if not data.has_labels:
            yield _err(
                "dataset_id",
                "task_specific training needs a 'label' column.",
                "use a dataset with text and label columns, or another training type.",
            )
        elif data.num_labels < 2:
            yield _err(
                "dataset_id",
                f"has {data.num_labels} distinct label(s).",
                "provide examples of at least 2 labels.",
            )


# An estimate is not a measurement: refuse only what clearly cannot fit, warn near the edge.
MEMORY_REFUSE_FACTOR = 1.10
MEMORY_WARN_FACTOR = 0.90


@_rule
def _memory(ctx: RuleContext) -> Iterator[ValidationIssue]:
    mem = ctx.memory
    if mem is None:
        return
    message = (
        f"needs about {mem.peak_gb:.2f} GB of {mem.kind} memory; "
        f"{mem.available_gb:.2f} GB is available."
    )
    if mem.peak_gb > mem.available_gb * MEMORY_REFUSE_FACTOR:
        if ctx.config.ignore_memory_estimate:
            yield _warn(
                "batch_size", message + " Started anyway (ignore_memory_estimate).", mem.fix
            )
        else:
            yield _err("batch_size", message, f"{mem.fix} Or force it with ignore_memory_estimate.")
    elif mem.peak_gb > mem.available_gb * MEMORY_WARN_FACTOR:
        yield _warn("batch_size", message + " It may not fit.", mem.fix)


@_rule
def _tracking(ctx: RuleContext) -> Iterator[ValidationIssue]:
    # Import names per tracker, as flextrain.train.tracking has them (config imports
    # nothing of ours); TensorBoardCallback also writes with tensorboardX.
    packages = {"mlflow": ("mlflow",), "tensorboard": ("tensorboard", "tensorboardX")}
    for tracker in dict.fromkeys(ctx.config.tracking):
        if not any(importlib.util.find_spec(name) for name in packages[tracker]):
            yield _err(
                "tracking",
                f"{tracker} is requested but the {tracker} package is not installed.",
                f"pip install 'flextrain[tracking]', or remove {tracker} from tracking.",
            )


@_rule
def _distributed(ctx: RuleContext) -> Iterator[ValidationIssue]:
    """Process layout and strategy: what torchrun would otherwise fail on, minutes in."""
    c = ctx.config
    for name in ("num_processes", "num_nodes"):
        if getattr(c, name) < 1:
            yield _err(name, f"{getattr(c, name)} is below 1.", f"set {name} to 1 or more.")
    if c.distributed_timeout < 30:
        yield _err(
            "distributed_timeout",
            f"{c.distributed_timeout} s is too short for a rendezvous or a checkpoint save.",
            "use 30 seconds or more (default 600).",
        )
    if c.num_nodes > 1 and c.rdzv_endpoint is not None and ":" not in c.rdzv_endpoint:
        yield _err(
            "rdzv_endpoint",
            f"'{c.rdzv_endpoint}' has no port.",
            "write it as HOST:PORT, e.g. node0.example.org:29400.",
        )
    if c.distributed_strategy != "ddp" and c.world_size == 1:
        yield _warn(
            "distributed_strategy",
            f"{c.distributed_strategy} shards over several processes; with one process the "
            "job trains as a plain single-process run.",
            "raise num_processes (one per GPU), or leave distributed_strategy at ddp.",
        )
    if c.distributed_strategy == "deepspeed" and not importlib.util.find_spec("deepspeed"):
        yield _err(
            "distributed_strategy",
            "deepspeed is requested but the deepspeed package is not installed.",
            "pip install 'flextrain[deepspeed]', or use fsdp (built into PyTorch).",
        )
    hardware = ctx.hardware
    if hardware is None or c.num_processes <= 1:
        return
    gpus = hardware.gpu_count
    if gpus > 0 and c.num_processes > gpus:
        yield _err(
            "num_processes",
            f"{c.num_processes} processes but this machine has {gpus} GPU(s); each process "
            "trains on its own GPU.",
            f"set num_processes to {gpus} or fewer (or add nodes with num_nodes).",
        )
    cores = getattr(hardware, "cpu_cores", None)
    if gpus == 0 and cores and c.num_processes > cores:
        yield _err(
            "num_processes",
            f"{c.num_processes} CPU processes on {cores} cores: each needs a core of its own "
            "(oversubscribed threads run several times slower).",
            f"set num_processes to {cores} or fewer.",
        )
    if gpus == 0 and c.distributed_strategy == "deepspeed":
        yield _err(
            "distributed_strategy",
            "DeepSpeed trains on GPUs and this machine has none.",
            "use ddp (or fsdp) on CPU, or run the job on a GPU machine.",
        )


@_rule
def _expert(ctx: RuleContext) -> Iterator[ValidationIssue]:
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
        if not importlib.util.find_spec("bitsandbytes"):
            return "AdamW8bit needs bitsandbytes: pip install bitsandbytes."
        return None
    if name in TORCH_OPTIMIZERS:
        return None
    known = ", ".join(sorted(TORCH_OPTIMIZERS))
    return f"'{name}' is not a torch.optim optimizer; known: {known}, AdamW8bit."


_MODE_CONFIGS: dict[str, type[BasicTrainingConfig]] = {
    "basic": BasicTrainingConfig,
    "advanced": AdvancedTrainingConfig,
    "expert": ExpertTrainingConfig,
}


def config_for_mode(config: BasicTrainingConfig, mode: str) -> BasicTrainingConfig:
    """`config` as the config class of `mode` (basic, advanced, expert).

    A narrower config is lifted; a wider one is accepted only when it gives nothing the
    mode lacks: a "basic" job quietly carrying advanced settings would be stored as one
    kind of job and read back at start as another (ConfigValidationError naming each
    such field and the mode it needs).
    """
    cls = _MODE_CONFIGS[mode]
    if type(config) is cls:
        return config
    if not isinstance(config, cls):
        lifted: BasicTrainingConfig = cls.from_basic(config)  # type: ignore[attr-defined]
        return lifted
    wider = sorted(f for f in config.model_fields_set if f not in cls.model_fields)
    if wider:
        needed = next(m for m, c in _MODE_CONFIGS.items() if set(wider) <= set(c.model_fields))
        raise ConfigValidationError(
            _err(
                name,
                f"is not a {mode} setting.",
                f"create an {needed} job (create_{needed}_training_job, POST /jobs/{needed}, "
                f"--mode {needed}), or leave {name} out.",
            )
            for name in wider
        )
    values = config.model_dump(include=set(cls.model_fields))
    return with_fields_set(cls(**values), config.model_fields_set)


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
