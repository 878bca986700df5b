"""Training configurations: the seed's two tables, plus what a real run needs.

Construction checks shape only (types, unknown keys); the meaning of the values
is checked by `TrainingParameterValidator`, which sees the hardware, the model
and the data and reports every problem at once instead of the first one.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from flextrain.config.cluster import ClusterOptions
from flextrain.config.enums import TrainingType
from flextrain.config.health import HealthOptions
from flextrain.config.positional import positional_fields
from flextrain.config.preference import PreferenceOptions
from flextrain.config.presets import PRESET_NAMES, preset_values

SCHEDULER_TYPES = (
    "linear",
    "cosine",
    "cosine_with_restarts",
    "polynomial",
    "constant",
    "constant_with_warmup",
    "inverse_sqrt",
    "reduce_lr_on_plateau",
    "cosine_with_min_lr",
    "cosine_warmup_with_min_lr",
    "warmup_stable_decay",
)

OPTIMIZERS = (
    "adamw_torch",
    "adamw_torch_fused",
    "adamw_bnb_8bit",
    "adafactor",
    "sgd",
    "adagrad",
    "rmsprop",
)


# Bounds on text and lists: far beyond any real config, small enough that a job's row
# (sent to every dashboard in each poll of the job list) stays small, and that a typo
# or an attack of millions of items is a 422 naming the field, not a stored job.
MAX_NAME = 200  # run names, metric, scheduler and module names
MAX_ID = 500  # model and dataset ids: the store's columns are this wide
MAX_PATH = 4096  # folders and files: the usual PATH_MAX
MAX_ITEMS = 256  # lists of names or patterns
MAX_EXPRESSION = 2000
Name = Annotated[str, Field(max_length=MAX_NAME)]
Reference = Annotated[str, Field(max_length=MAX_ID)]

# Examples per optimizer step when batch_size is "auto" and no effective_batch_size is given.
AUTO_EFFECTIVE_BATCH = 16


class BasicTrainingConfig(BaseModel):
    """Basic mode: the seed's parameters, optionally filled from a named preset."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=(), validate_assignment=True)
    # The original module's dataclass field order, for programs that pass them positionally.
    positional_order: ClassVar[tuple[str, ...]] = (
        "model_id",
        "dataset_id",
        "training_type",
        "num_epochs",
        "learning_rate",
        "batch_size",
        "max_length",
        "warmup_steps",
        "save_steps",
        "eval_steps",
        "output_dir",
        "use_mixed_precision",
        "gradient_checkpointing",
    )

    def __init__(self, *args: Any, **data: Any) -> None:
        super().__init__(
            **positional_fields(type(self).__name__, self.positional_order, args, data)
        )

    model_id: str = Field(
        max_length=MAX_ID, description="Model to train: local folder, built-in id or hub id."
    )
    dataset_id: str = Field(
        max_length=MAX_ID,
        description="Registered dataset name (an admin may also give a data file's path).",
    )
    training_type: TrainingType = Field(description="What kind of training to run.")
    num_epochs: int = Field(3, description="Passes over the training data.")
    learning_rate: float = Field(2e-5, description="Peak learning rate.")
    batch_size: int | Literal["auto"] = Field(
        8,
        description="Examples per device per step; 'auto': the largest the memory estimate "
        "says fits (with gradient accumulation up to effective_batch_size).",
    )
    max_length: int = Field(512, description="Longest sequence in tokens; longer text is cut.")
    use_mixed_precision: bool = Field(
        True, description="Use bf16/fp16 when the GPU supports it (fp32 on CPU)."
    )
    gradient_checkpointing: bool = Field(
        True, description="Recompute activations in backward to save memory."
    )

    # What a real run needs beyond the seed's table.
    preset: Literal["quick", "balanced", "thorough"] | None = Field(
        None, description="Fill unset knobs from a named preset: quick, balanced, thorough."
    )
    seed: int = Field(42, description="Random seed for data split, init and shuffling.")
    eval_split: float = Field(0.1, description="Share of the data held out for evaluation.")
    logging_steps: int = Field(10, description="Record loss and learning rate every N steps.")
    save_steps: int | None = Field(
        None, description="Checkpoint every N steps; None checkpoints once per epoch."
    )
    save_total_limit: int | None = Field(2, description="Keep at most N checkpoints.")
    # The original module's basic config had these two; advanced mode always did.
    warmup_steps: int = Field(0, description="Linear warm-up steps.")
    eval_steps: int | None = Field(
        None, description="Evaluate every N steps (given alone, evaluation goes by steps)."
    )
    lora_target_modules: list[Name] | None = Field(
        None,
        max_length=MAX_ITEMS,
        description="Module names to adapt with LoRA; detected from the model if unset.",
    )
    load_in_4bit: bool = Field(
        False,
        description="QLoRA: hold the frozen base weights in 4 bits (bitsandbytes) and train "
        "LoRA adapters on them; LoRA runs only.",
    )
    output_dir: str | None = Field(
        None, max_length=MAX_PATH, description="Where to write the result (job folder)."
    )
    run_name: str | None = Field(
        None, max_length=MAX_NAME, description="Human-readable name for the job."
    )

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("preset") is None:
            return data
        name = data["preset"]
        if name not in PRESET_NAMES:
            return data  # the Literal check names the field and the choices
        try:
            filled = preset_values(name, data.get("training_type"))
        except ValueError:
            return data  # a bad training_type is reported on its own field
        if data.get("per_device_train_batch_size") is not None:
            # The user chose the micro-batch; a preset batch_size would contradict it.
            filled.pop("batch_size")
        return {**filled, **data}


class AdvancedTrainingConfig(BasicTrainingConfig):
    """Advanced mode: every Trainer knob a user tunes, defaults from the seed's table."""

    positional_order: ClassVar[tuple[str, ...]] = (
        "model_id",
        "dataset_id",
        "training_type",
        "learning_rate",
        "weight_decay",
        "adam_beta1",
        "adam_beta2",
        "adam_epsilon",
        "max_grad_norm",
        "num_epochs",
        "warmup_steps",
        "warmup_ratio",
        "lr_scheduler_type",
        "per_device_train_batch_size",
        "per_device_eval_batch_size",
        "gradient_accumulation_steps",
        "max_length",
        "fp16",
        "bf16",
        "gradient_checkpointing",
        "dataloader_num_workers",
        "logging_steps",
        "save_steps",
        "eval_steps",
        "save_total_limit",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_target_modules",
        "output_dir",
        "run_name",
        "custom_parameters",
    )

    weight_decay: float = Field(0.01, description="Decoupled weight decay (AdamW).")
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    lr_scheduler_type: str = Field(
        "linear", max_length=MAX_NAME, description=f"One of: {', '.join(SCHEDULER_TYPES)}."
    )
    gradient_accumulation_steps: int = Field(1, description="Micro-batches per optimizer step.")
    fp16: bool = Field(False, description="Train with fp16 autocast (CUDA only).")
    bf16: bool = Field(False, description="Train with bf16 autocast.")
    lora_r: int = Field(16, description="LoRA rank.")
    lora_alpha: int = Field(32, description="LoRA scaling numerator (scale = alpha / r).")
    lora_dropout: float = Field(0.1, description="Dropout on the LoRA path.")
    bnb_4bit_quant_type: Literal["nf4", "fp4"] = Field(
        "nf4", description="With load_in_4bit: the 4-bit code (nf4 suits normal weights)."
    )
    bnb_4bit_use_double_quant: bool = Field(
        True,
        description="With load_in_4bit: quantise the per-block scales too (about 0.4 bits "
        "a weight less).",
    )

    per_device_train_batch_size: int | None = Field(
        None, description="Overrides batch_size when set."
    )
    per_device_eval_batch_size: int | None = None
    effective_batch_size: int | None = Field(
        None,
        description="With batch_size='auto': examples per optimizer step (default "
        f"{AUTO_EFFECTIVE_BATCH}), reached with gradient accumulation when fewer fit at once.",
    )
    warmup_ratio: float = Field(0.0, description="Warm-up as a share of all steps (if no steps).")
    max_steps: int = Field(-1, description="Stop after N optimizer steps (-1: run all epochs).")
    max_grad_norm: float = Field(1.0, description="Gradient clipping norm (0 disables).")
    optim: str = Field(
        "adamw_torch", max_length=MAX_NAME, description=f"One of: {', '.join(OPTIMIZERS)}."
    )
    label_smoothing_factor: float = 0.0
    eval_strategy: Literal["no", "steps", "epoch"] = "epoch"
    dataloader_num_workers: int | None = Field(
        None,
        description="Processes preparing batches beside training; None: none on CPU (they "
        "would take cores from the training threads), up to 4 with a GPU.",
    )
    evaluate_before_training: bool = Field(
        True, description="Evaluate once before training so the gain can be shown."
    )
    num_threads: int | None = Field(
        None, description="CPU threads for the worker; defaults to all cores."
    )
    completion_only_loss: bool = Field(
        True,
        description="Train only on completion/assistant tokens of instruction, chat and "
        "completion data.",
    )
    eval_file: str | None = Field(
        None,
        max_length=MAX_ID,
        description="A registered dataset id or a file evaluated on instead of holding out "
        "eval_split of the training data.",
    )

    packing: bool | None = Field(
        None,
        description="Lay several examples end to end in each row (causal LM), each attending "
        "only to itself. None: flextrain picks the exact batching with the least work for "
        "the data's lengths on this device (packed rows in random order on CPU, one "
        "padding-free row per batch with flash-attention); False: never pack.",
    )
    torch_compile: bool = Field(
        False, description="Compile the model with torch.compile (GPU; slow first steps)."
    )
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2"] | None = Field(
        None,
        description="Attention kernel; None: the model's default (sdpa where supported).",
    )
    group_by_length: bool = Field(
        True,
        description="Allow batches of examples of similar length (less padding). Causal LM: "
        "used only where it saves at least 15% of the work of the best strategy that "
        "keeps the data's random order (it changes what is learnt); classification and "
        "masked LM: always. Off: random order, each batch padded to its longest.",
    )
    early_stopping_patience: int | None = Field(
        None,
        description="Stop after N evaluations without improvement of metric_for_best_model "
        "(None: never stop early). Needs evaluation data.",
    )
    early_stopping_threshold: float = Field(
        0.0, description="Smallest change of the metric that counts as an improvement."
    )
    metric_for_best_model: str | None = Field(
        None,
        max_length=MAX_NAME,
        description="Evaluation metric that picks the best checkpoint: loss, accuracy, f1, "
        "perplexity (default loss).",
    )
    greater_is_better: bool | None = Field(
        None, description="Whether a higher metric is better; by default from its name."
    )
    load_best_model_at_end: bool = Field(
        False,
        description="Save the best checkpoint's weights as the result (always on with "
        "early stopping).",
    )
    tracking: list[Literal["mlflow", "tensorboard"]] = Field(
        default_factory=list,
        max_length=8,
        description="Also log params, metrics and the model to MLflow and/or TensorBoard "
        "(optional extras: pip install 'flextrain[tracking]').",
    )
    monitor_interval: float = Field(
        5.0, description="Seconds between the worker's heartbeats and system-metric samples."
    )
    ignore_memory_estimate: bool = Field(
        False,
        description="Start even when the memory estimate says the run does not fit (the "
        "estimate errs; out-of-memory recovery may still save the run).",
    )
    oom_recovery: bool = Field(
        True,
        description="On an out-of-memory error, continue from the last checkpoint with half "
        "the micro-batch and twice the gradient accumulation (same effective batch), down "
        "to a micro-batch of 1; off: fail with what to change.",
    )

    # Scale-out: several processes (one per GPU) and machines, launched by torchrun.
    num_processes: int = Field(
        1,
        description="Training processes per machine (one per GPU; on CPU they share the "
        "cores); more than 1 launches the job through torchrun.",
    )
    num_nodes: int = Field(
        1,
        description="Machines taking part; the others join with `flextrain worker join`.",
    )
    distributed_strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp",
        description="How processes share the work: ddp (a full copy per process), fsdp "
        "(parameters, gradients and optimizer states sharded), deepspeed (ZeRO; optional "
        "extra).",
    )
    rdzv_endpoint: str | None = Field(
        None,
        max_length=MAX_NAME,
        description="HOST:PORT where the nodes of a multi-node job meet; default this "
        "machine at a free port.",
    )
    distributed_timeout: int = Field(
        600,
        description="Seconds a rendezvous or collective may wait for a process before the "
        "job fails (instead of hanging on a dead rank).",
    )
    deepspeed_config: str | None = Field(
        None, max_length=MAX_PATH, description="DeepSpeed JSON config file (default: ZeRO stage 2)."
    )
    cluster: ClusterOptions | None = Field(
        None,
        description="Where in a Slurm cluster the job runs (partition, account, qos, "
        "time_limit, extra_sbatch); only read by the slurm executor.",
    )

    preference: PreferenceOptions = Field(
        default_factory=PreferenceOptions,
        description="Preference and reward training (dpo, orpo, kto, simpo, grpo): adapter "
        "or full weights, beta, loss variant, GRPO's generations and rewards, other TRL "
        "options.",
    )

    custom_parameters: dict[str, Any] = Field(
        default_factory=dict,
        max_length=MAX_ITEMS,
        description="Accepted for programs written for the original module, which stored "
        "and ignored it; must stay empty (each knob has its own field here).",
    )
    health: HealthOptions = Field(
        default_factory=HealthOptions,
        description="Training health: what a NaN or infinite loss does (stop, skip, "
        "rollback), loss spikes and stalls, and the disk space a run keeps free.",
    )

    @model_validator(mode="before")
    @classmethod
    def _eval_steps_mean_step_evaluation(cls, data: Any) -> Any:
        """eval_steps alone asks for evaluation every N steps: without this the Trainer
        keeps evaluating per epoch and the value is silently ignored. With another
        eval_strategy given explicitly, a rule reports the contradiction."""
        steps_only = isinstance(data, dict) and data.get("eval_steps") is not None
        if steps_only and "eval_strategy" not in data:
            return {**data, "eval_strategy": "steps"}
        return data

    @property
    def uses_lora(self) -> bool:
        """Whether the run trains a LoRA adapter: the LoRA type, or a preference type
        with its adapter on (the default)."""
        if self.training_type.is_preference:
            return self.preference.use_lora
        return self.training_type == TrainingType.LORA_ADAPTATION

    @property
    def world_size(self) -> int:
        return self.num_processes * self.num_nodes

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def train_batch_size(self) -> int:
        """The micro-batch actually used: per_device_train_batch_size wins when given.

        An unresolved batch_size='auto' counts as 1, the smallest it can become: checks
        made before the hardware is known then ask whether the run can fit at all.
        """
        if self.per_device_train_batch_size:
            return self.per_device_train_batch_size
        return 1 if self.batch_size == "auto" else self.batch_size

    @property
    def eval_batch_size(self) -> int:
        return self.per_device_eval_batch_size or self.train_batch_size

    @classmethod
    def from_basic(cls, basic: BasicTrainingConfig) -> AdvancedTrainingConfig:
        """Lift a basic config into the one shape the worker reads.

        The fields the user gave stay the only ones marked as given: rules that tell an
        explicit value from a default (two batch sizes that disagree) must judge the
        lifted config as they judged the original.
        """
        if isinstance(basic, AdvancedTrainingConfig):
            return basic
        return _lift(cls, basic)


# -- expert mode ------------------------------------------------------------------------
class ExpertLossConfig(BaseModel):
    """The training loss: a built-in one with its parameters (data, safe for any user), or
    a user function `module:function(model, inputs, outputs) -> loss` (code)."""

    model_config = ConfigDict(extra="forbid")

    name: Literal["cross_entropy", "focal"] = Field(
        "cross_entropy", description="cross_entropy or focal (Lin et al. 2017)."
    )
    label_smoothing: float = Field(0.0, description="Cross-entropy label smoothing, 0 to <1.")
    focal_gamma: float = Field(2.0, description="Focal loss focusing parameter (0: plain CE).")
    focal_alpha: float | None = Field(
        None, description="Focal loss balance factor in (0, 1]; None: no balancing."
    )
    class_weights: dict[Name, float] | None = Field(
        None,
        max_length=10_000,
        description="Classification: weight per label name (labels not named weigh 1).",
    )
    z_loss: float = Field(
        0.0, description="Coefficient of the z-loss (mean squared log-partition; PaLM uses 1e-4)."
    )
    function: str | None = Field(
        None,
        max_length=MAX_ID,
        description="User loss `module:function(model, inputs, outputs) -> loss`, loaded from "
        "code_dir; replaces the built-in loss.",
    )

    @property
    def is_default(self) -> bool:
        """Plain cross-entropy: the model's own loss does the same."""
        return (
            self.name == "cross_entropy"
            and self.label_smoothing == 0.0
            and not self.class_weights
            and self.z_loss == 0.0
            and self.function is None
        )


class ParamGroupConfig(BaseModel):
    """Learning rate and weight decay of the parameters whose name matches `pattern`."""

    model_config = ConfigDict(extra="forbid")

    pattern: str = Field(
        max_length=MAX_ID, description="fnmatch pattern on parameter names, e.g. *lora_B*."
    )
    lr: float | None = Field(None, description="Learning rate of these parameters.")
    lr_scale: float | None = Field(None, description="Or: a multiple of the base learning rate.")
    weight_decay: float | None = Field(None, description="Weight decay of these parameters.")


class ExpertOptimizerConfig(BaseModel):
    """Any torch.optim optimizer by name (plus Adafactor and 8-bit AdamW), with keyword
    arguments and per-parameter-group settings, or a user factory."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(
        "AdamW",
        max_length=MAX_NAME,
        description="A torch.optim class (AdamW, SGD, RMSprop, ...), Adafactor, or AdamW8bit "
        "(bitsandbytes).",
    )
    kwargs: dict[Name, Any] = Field(
        default_factory=dict,
        max_length=64,
        description="Keyword arguments, e.g. {momentum: 0.9, nesterov: true}.",
    )
    param_groups: list[ParamGroupConfig] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="Per-parameter settings; the first matching rule wins.",
    )
    no_decay_on_norms_and_biases: bool = Field(
        True, description="No weight decay on 1-D parameters (norm weights, biases)."
    )
    layerwise_lr_decay: float | None = Field(
        None, description="Layer-wise lr decay in (0, 1]: lower blocks learn more slowly."
    )
    factory: str | None = Field(
        None,
        max_length=MAX_ID,
        description="User factory `module:function(model, config) -> optimizer`, loaded from "
        "code_dir; replaces the above.",
    )


class ExpertTrainingConfig(AdvancedTrainingConfig):
    """Expert mode: the advanced knobs plus *how* the model is trained: loss, optimizer,
    schedule as an expression, step hooks and user code (by dotted path from code_dir)."""

    loss: ExpertLossConfig = Field(default_factory=ExpertLossConfig)
    optimizer: ExpertOptimizerConfig | None = Field(
        None, description="Optimizer with groups and kwargs; None: the advanced `optim` knob."
    )
    lr_schedule_expr: str | None = Field(
        None,
        max_length=MAX_EXPRESSION,
        description="Learning rate as an expression of lr, step, total_steps, progress, warmup, "
        "epoch, e.g. lr * min(1, step / warmup) * 0.5 * (1 + cos(pi * progress)); replaces "
        "lr_scheduler_type.",
    )
    callbacks: list[Reference] = Field(
        default_factory=list,
        max_length=32,
        description="User transformers TrainerCallback classes, `module:Class`, from code_dir.",
    )
    clip_grad_value: float | None = Field(
        None, description="Clamp every gradient to [-v, v] before each optimizer step."
    )
    freeze: list[Reference] = Field(
        default_factory=list,
        max_length=MAX_ITEMS,
        description="fnmatch patterns of parameter names to freeze, e.g. *embed_tokens*.",
    )
    ema_decay: float | None = Field(
        None,
        description="Keep an exponential moving average of the weights (e.g. 0.999) and save it.",
    )
    curriculum: str | None = Field(
        None,
        max_length=MAX_NAME,
        description="Train in order of `length` (tokens) or of a column of the prepared data "
        "instead of shuffled.",
    )
    curriculum_descending: bool = Field(False, description="Longest / largest first.")
    trainer_class: str | None = Field(
        None,
        max_length=MAX_ID,
        description="A transformers Trainer subclass, `module:Class`, from code_dir.",
    )
    reward_functions: list[Reference] = Field(
        default_factory=list,
        max_length=16,
        description="GRPO: user reward functions `module:function(prompts, completions, "
        "**columns) -> list[float]`, from code_dir, added to the built-in rewards.",
    )
    code_dir: str | None = Field(
        None,
        max_length=MAX_PATH,
        description="Folder the user code (loss, optimizer factory, callbacks, trainer, "
        "reward functions) is loaded from.",
    )

    @property
    def user_code(self) -> list[str]:
        """Every reference to user code: running it is code execution (admin only by REST)."""
        refs = [self.loss.function, self.optimizer.factory if self.optimizer else None]
        refs += [*self.callbacks, self.trainer_class, *self.reward_functions]
        return [r for r in refs if r]

    @classmethod
    def from_basic(cls, basic: BasicTrainingConfig) -> ExpertTrainingConfig:
        """Any config as the one shape the worker reads (expert fields at their defaults,
        the user's explicit fields still the only ones marked as given)."""
        if isinstance(basic, ExpertTrainingConfig):
            return basic
        return _lift(cls, basic)


ConfigT = TypeVar("ConfigT", bound=BasicTrainingConfig)


def _lift(cls: type[ConfigT], config: BasicTrainingConfig) -> ConfigT:
    """`config` as the wider `cls`, with the same fields marked as given."""
    lifted = cls(**config.model_dump(exclude={"preset"}))
    return with_fields_set(lifted, config.model_fields_set - {"preset"})


def with_fields_set(config: ConfigT, fields: Iterable[str]) -> ConfigT:
    """The same values with exactly `fields` marked as given by the user."""
    copy = config.model_copy()
    # pydantic keeps the set on the instance; model_copy() gives this copy its own.
    object.__setattr__(
        copy, "__pydantic_fields_set__", set(fields) & set(type(config).model_fields)
    )
    return copy


def explicit_fields(config: BasicTrainingConfig) -> list[str]:
    """The fields the user gave (or a preset or the service chose), to store beside the
    values: a config restored from storage must not count every default as given."""
    return sorted(config.model_fields_set)


def restore_config(
    cls: type[ConfigT], values: dict[str, Any], fields: Iterable[str] | None
) -> ConfigT:
    """A stored config as it was created: its values, and as given only `fields`.

    A record stored before the given fields were kept (`fields` None) counts as given
    every value that differs from its field's default: what a user must have written.
    """
    config = cls.model_validate(values)
    if fields is None:
        fields = [
            name
            for name, info in cls.model_fields.items()
            if info.is_required()
            or getattr(config, name) != info.get_default(call_default_factory=True)
        ]
    return with_fields_set(config, fields)


TrainingConfig = BasicTrainingConfig | AdvancedTrainingConfig | ExpertTrainingConfig
