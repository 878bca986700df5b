"""The check before training, for one config on this machine: will it run, in how
much memory, and what would fit instead.

The service layer's side of estimation: it looks the model and the data up (the
registries) and hands their facts to the pure estimators in `estimate.memory`,
`estimate.recommend` and `config.validation`. Creating a job, starting it and the
compatibility report all ask this one planner, so they cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import TypeVar, cast

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import (
    AUTO_EFFECTIVE_BATCH,
    AdvancedTrainingConfig,
    BasicTrainingConfig,
    ExpertTrainingConfig,
)
from flextrain.config.steps import steps_per_epoch, total_steps, warmup_steps
from flextrain.config.validation import (
    ConfigValidationError,
    MemoryFacts,
    TrainingParameterValidator,
    ValidationIssue,
)
from flextrain.data.checks import identical_pairs
from flextrain.data.manager import TrainingDataManager, load_and_check
from flextrain.data.registry import DatasetFormatError, DatasetInfo, DatasetNotFoundError
from flextrain.data.shapes import PREFERENCE_SHAPES, Shape
from flextrain.estimate.disk import TOKENIZER_FILES, estimate_disk
from flextrain.estimate.memory import TrainingSetup, estimate_memory
from flextrain.estimate.recommend import largest_fitting_batch, recommend
from flextrain.hardware.detect import HardwareConstraints
from flextrain.hardware.disk import describe_bytes, existing_parent, files_bytes, free_bytes
from flextrain.jobs.outputs import output_dir_issue
from flextrain.jobs.store import TrainingJob
from flextrain.models.compatibility import (
    NO_DATASET,
    ModelCompatibility,
    ModelCompatibilityChecker,
    memory_budget,
    training_setup,
)
from flextrain.models.facts_cache import inspect_model_cached
from flextrain.models.inspect import ModelInfo, choose_lora_targets
from flextrain.models.resolve import ModelNotFoundError, ModelResolver
from flextrain.models.tasks import choose_objective

AdvancedT = TypeVar("AdvancedT", bound=AdvancedTrainingConfig)

# Share of the memory budget that batch_size="auto" leaves free: the estimate's own
# error (median 3.5%, worst 18% analytic; docs/benchmarks.md) and whatever else runs.
AUTO_BATCH_MARGIN = 0.10

# Default gradient checkpointing is dropped when the run's peak without it stays
# under this share of the memory budget.
CHECKPOINTING_OFF_BELOW = 0.5


class Planner:
    """Validation, memory estimates and the choices made from them, for one home."""

    def __init__(
        self,
        models: ModelResolver,
        datasets: TrainingDataManager,
        hardware: Callable[[], HardwareConstraints],
        model_info_cache: Path,
        jobs_dir: Path | None = None,
    ) -> None:
        self.models = models
        self.jobs_dir = jobs_dir  # where a job without output_dir writes
        self.datasets = datasets
        self.hardware = hardware
        self.model_info_cache = model_info_cache
        self.validator = TrainingParameterValidator()
        self.compatibility = ModelCompatibilityChecker(models, model_info_cache)
        self._inspect = lru_cache(maxsize=32)(self._inspect_uncached)

    def inspect_model(self, model_id: str) -> ModelInfo:
        """The model's facts (architecture, sizes, modules), from the on-disk cache after
        the first time, so that a later job of the model needs no torch here."""
        return self._inspect(model_id)

    def forget_models(self) -> None:
        """Drop remembered facts: a registered name now names another folder."""
        self._inspect.cache_clear()

    def _inspect_uncached(self, model_id: str) -> ModelInfo:
        return inspect_model_cached(
            self.models.resolve_config(model_id).path, self.model_info_cache
        )

    def check_compatibility(
        self,
        model_id: str,
        training_type: TrainingType | None = None,
        *,
        config: BasicTrainingConfig | None = None,
        dataset_id: str | None = None,
        batch_size: int = 8,
        max_length: int = 512,
        probe: bool = False,
    ) -> ModelCompatibility:
        """The full report: support, memory parts, time, recommendations (and probe)."""
        dataset_name = dataset_id or (config.dataset_id if config else None)
        if dataset_name == NO_DATASET:
            dataset_name = None  # a config made only to describe the run, no data named
        dataset = self.datasets.get(dataset_name) if dataset_name else None
        report = self.compatibility.check(
            model_id,
            training_type,
            hardware=self.hardware(),
            config=AdvancedTrainingConfig.from_basic(config) if config else None,
            dataset=dataset,
            batch_size=batch_size,
            max_length=max_length,
            probe=probe,
        )
        if config is None:
            return report
        # The config's own problems belong in the verdict too (bad optimizer, lr, a
        # max_length over the model's limit, labels missing for a task head, ...), the
        # same rules that creating the job applies.
        try:
            found, _, _ = self.validate(config)
        except (ModelNotFoundError, DatasetNotFoundError, DatasetFormatError):
            found = self.validator.validate(config)  # already in the report's issues
        errors = [str(i) for i in found if i.severity == "error" and str(i) not in report.issues]
        if not errors:
            return report
        return report.model_copy(
            update={"is_compatible": False, "issues": [*report.issues, *errors]}
        )

    def validate(
        self, config: BasicTrainingConfig, *, hardware: HardwareConstraints | None = None
    ) -> tuple[list[ValidationIssue], ModelInfo, DatasetInfo]:
        """Every issue of `config` against its model, its data and (if given) hardware.

        Raises ModelNotFoundError / DatasetNotFoundError when the ids resolve to nothing.
        """
        model = self.inspect_model(config.model_id)
        data = self.datasets.get(config.dataset_id)
        eval_file = getattr(config, "eval_file", None)
        if eval_file:  # fail at creation, not an hour later when the worker starts
            self.datasets.get(eval_file)
        memory = self._memory_facts(config, model, data, hardware) if hardware else None
        issues = self.validator.validate(
            config, hardware=hardware, model=model.facts(), dataset=data.facts(), memory=memory
        )
        output_issue = output_dir_issue(config.output_dir)
        if output_issue is not None:
            issues.append(output_issue)
        else:
            issues.extend(self._disk_issues(config, model, data, hardware))
        issues.extend(preference_row_issues(data, "dataset_id"))
        # Not cached with the model's facts: weights can go missing after a first check.
        missing = (
            self.models.missing_weights(config.model_id)
            if config.training_type != TrainingType.FULL_TRAINING
            else None
        )
        if missing:
            issues.append(
                ValidationIssue(
                    "model_id",
                    missing,
                    "copy the weights into the folder (or save the model again with "
                    "save_pretrained()), or use training_type full_training to train it "
                    "from scratch.",
                )
            )
        if not any(i.severity == "error" for i in issues):
            try:
                choose_objective(config.training_type, model, data)
            except ConfigValidationError as exc:
                issues.extend(exc.issues)
        return issues, model, data

    def _disk_issues(
        self,
        config: BasicTrainingConfig,
        model: ModelInfo,
        data: DatasetInfo,
        hardware: HardwareConstraints | None,
    ) -> list[ValidationIssue]:
        """An error when the run's checkpoints and final model cannot fit the free space
        of the disk they go to, less the reserve the config keeps (health.disk_reserve_mb)."""
        if config.output_dir:
            where = Path(config.output_dir).expanduser().resolve() / "checkpoints"
        elif self.jobs_dir is not None:
            where = self.jobs_dir
        else:
            return []
        advanced = AdvancedTrainingConfig.from_basic(config)
        try:
            setup = estimator_setup(config, model, data, hardware or self.hardware())
        except ConfigValidationError:
            return []  # reported by its own rule
        memory = estimate_memory(model.architecture(), setup)
        rows = max(1, int(data.num_rows * (1 - (0 if advanced.eval_file else advanced.eval_split))))
        per_step = (
            advanced.train_batch_size * advanced.gradient_accumulation_steps * advanced.world_size
        )
        total = total_steps(rows, per_step, advanced.num_epochs, advanced.max_steps)
        estimate = estimate_disk(
            total_parameters=memory.total_parameters,
            trainable_parameters=memory.trainable_parameters,
            lora=advanced.uses_lora,
            optimizer=advanced.optim,
            tokenizer_bytes=tokenizer_bytes(self.models, config.model_id),
            total_steps=total,
            steps_per_save=advanced.save_steps or steps_per_epoch(rows, per_step),
            save_total_limit=advanced.save_total_limit,
        )
        free = free_bytes(where)
        reserve = int(advanced.health.disk_reserve_mb * 1024**2)
        if estimate.peak + reserve <= free:
            return []
        return [
            ValidationIssue(
                "output_dir",
                f"the run writes about {describe_bytes(estimate.peak)} "
                f"({estimate.describe()}), but {existing_parent(where)} has "
                f"{describe_bytes(free)} free, of which health.disk_reserve_mb keeps "
                f"{describe_bytes(reserve)}.",
                "free space there, keep fewer checkpoints (save_total_limit) or save less "
                "often (save_steps), or set output_dir on a larger disk.",
            )
        ]

    def _memory_facts(
        self,
        config: BasicTrainingConfig,
        model: ModelInfo,
        data: DatasetInfo,
        hardware: HardwareConstraints,
    ) -> MemoryFacts | None:
        """The analytic memory estimate of `config` against this machine's budget."""
        try:
            setup = estimator_setup(config, model, data, hardware)
        except ConfigValidationError:
            return None  # reported by its own rule
        arch = model.architecture()
        budget, kind = memory_budget(hardware)
        peak = estimate_memory(arch, setup).peak
        targets = tuple(choose_lora_targets(model.linear_module_names))
        options = recommend(arch, setup, budget, gpu_count=hardware.gpu_count, lora_targets=targets)
        fits = [r for r in options if r.fits]
        fix = (
            f"{fits[0].description} (about {fits[0].estimate.peak / 1024**3:.2f} GB)."
            if fits
            else "use a smaller model or a machine with more memory."
        )
        return MemoryFacts(
            peak / 1024**3, budget / 1024**3, "GPU" if kind == "gpu" else "system", fix
        )

    def choose_checkpointing(
        self, config: BasicTrainingConfig, hardware: HardwareConstraints
    ) -> tuple[BasicTrainingConfig, str | None]:
        """Gradient checkpointing left at its default is turned off when the run fits in
        half the memory budget without it: recomputing activations costs about a third
        of the step time and buys memory this run does not need. An explicit value is
        kept, as is the default for a run that may need the memory.
        """
        if not config.gradient_checkpointing or "gradient_checkpointing" in config.model_fields_set:
            return config, None
        try:
            model = self.inspect_model(config.model_id)
            data = self.datasets.get(config.dataset_id)
            plain = config.model_copy(update={"gradient_checkpointing": False})
            setup = estimator_setup(plain, model, data, hardware)
        except Exception:  # a best-effort choice: validation reports what is wrong
            return config, None
        if not model.supports_gradient_checkpointing:
            return config, None
        peak = estimate_memory(model.architecture(), setup).peak
        budget, kind = memory_budget(hardware)
        if peak > budget * CHECKPOINTING_OFF_BELOW:
            return config, None
        note = (
            f"gradient_checkpointing off: the run needs about {peak / 1024**3:.2f} GB without it, "
            f"under {100 * CHECKPOINTING_OFF_BELOW:.0f}% of the {budget / 1024**3:.1f} GB "
            f"{'GPU' if kind == 'gpu' else 'system'} memory free (set it to true to keep it)."
        )
        return config.model_copy(update={"gradient_checkpointing": False}), note

    def estimated_peak_gb(self, job: TrainingJob, hardware: HardwareConstraints) -> float | None:
        """The estimator's peak memory of one of the job's processes (per GPU) on
        `hardware`; None when it cannot say (validation reports why)."""
        try:
            config = job.pinned_config()
            model = self.inspect_model(config.model_id)
            data = self.datasets.get(config.dataset_id)
            setup = estimator_setup(config, model, data, hardware)
            return estimate_memory(model.architecture(), setup).peak / 1024**3
        except Exception:
            return None

    def resolve_auto_batch(
        self, config: AdvancedT, hardware: HardwareConstraints
    ) -> tuple[AdvancedT, str | None]:
        """Turn batch_size='auto' into a micro-batch and gradient accumulation for this machine.

        The micro-batch is the largest divisor of the effective batch whose estimated
        peak stays under the memory budget less AUTO_BATCH_MARGIN; accumulation makes
        up the rest, so the optimizer sees the same number of examples per step
        whatever the machine. Returns the config unchanged (and no message) otherwise.
        """
        if config.batch_size != "auto" or config.per_device_train_batch_size:
            return config, None
        effective = config.effective_batch_size or AUTO_EFFECTIVE_BATCH
        model = self.inspect_model(config.model_id)
        data = self.datasets.get(config.dataset_id)
        trial = config.model_copy(update={"batch_size": 1, "gradient_accumulation_steps": 1})
        setup = estimator_setup(trial, model, data, hardware)
        budget, kind = memory_budget(hardware)
        fitting = largest_fitting_batch(
            model.architecture(), setup, budget * (1 - AUTO_BATCH_MARGIN), upper=effective
        )
        micro = max(d for d in range(1, max(fitting, 1) + 1) if effective % d == 0)
        accumulation = effective // micro
        resolved = config.model_copy(
            update={"batch_size": micro, "gradient_accumulation_steps": accumulation}
        )
        memory = "GPU" if kind == "gpu" else "system"
        message = (
            f"batch_size auto: {micro} per step x {accumulation} accumulation = {effective} "
            f"examples per optimizer step (largest that fits {100 * (1 - AUTO_BATCH_MARGIN):.0f}%"
            f" of {budget / 1024**3:.1f} GB {memory} memory: {fitting or 'none'})"
        )
        return resolved, message


def estimator_setup(
    config: BasicTrainingConfig,
    model: ModelInfo,
    data: DatasetInfo,
    hardware: HardwareConstraints,
) -> TrainingSetup:
    """The memory estimator's view of `config` for this model, data and machine
    (ConfigValidationError when the data does not suit the training type)."""
    advanced = AdvancedTrainingConfig.from_basic(config)
    objective = choose_objective(advanced.training_type, model, data)
    return training_setup(model, advanced, hardware, objective, max(len(data.labels), 2))


def schedule_of(config: BasicTrainingConfig, data: DatasetInfo) -> list[float] | None:
    """The expression schedule's lr at every step of this run (ConfigValidationError if it
    goes negative or non-finite at a step the sample run of validation did not reach)."""
    if not isinstance(config, ExpertTrainingConfig) or not config.lr_schedule_expr:
        return None
    from flextrain.config.expression import ExpressionError, schedule_values

    rows = max(1, int(data.num_rows * (1 - (0 if config.eval_file else config.eval_split))))
    per_step = config.train_batch_size * config.gradient_accumulation_steps * config.world_size
    total = total_steps(rows, per_step, config.num_epochs, config.max_steps)
    try:
        return schedule_values(
            config.lr_schedule_expr,
            lr=config.learning_rate,
            total_steps=total,
            warmup=warmup_steps(config.warmup_steps, config.warmup_ratio, total),
            steps_per_epoch=steps_per_epoch(rows, per_step),
        )
    except ExpressionError as exc:
        raise ConfigValidationError(
            [ValidationIssue("lr_schedule_expr", str(exc), "change the expression.")]
        ) from None


def tokenizer_bytes(models: ModelResolver, model_id: str) -> int:
    """Bytes of the model's tokenizer files (0 when its folder is not local yet)."""
    try:
        folder = models.resolve_config(model_id).path
    except Exception:  # a best-effort size: resolving errors are reported elsewhere
        return 0
    return files_bytes(Path(folder), TOKENIZER_FILES)


def preference_row_issues(info: DatasetInfo, field: str) -> list[ValidationIssue]:
    """Row errors of a preference file used as it is (an admin's path, a bundled set):
    a registered version was checked when it was added, and supervised files are read
    leniently by their training code, but a pair with an empty answer must be refused
    at creation, not fail the job at its first step."""
    if info.shape not in PREFERENCE_SHAPES or info.version is not None:
        return []
    _, report, _, _ = load_and_check(info.path, shape=cast(Shape, info.shape))
    issues: list[ValidationIssue] = []
    if report.errors:
        shown = "; ".join(report.issue_lines(5))
        issues.append(
            ValidationIssue(
                field,
                f"{report.error_count} row error(s) in {info.shape} data: {shown}.",
                "correct or remove these rows (`flextrain datasets add FILE` lists them all).",
            )
        )
    same = identical_pairs(report)
    if same:
        issues.append(
            ValidationIssue(
                field,
                f"{same} pair(s) have chosen identical to rejected: they teach nothing.",
                "give each pair a better and a worse answer, or drop those rows.",
                "warning",
            )
        )
    return issues
