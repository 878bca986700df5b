"""Can this model be trained this way here, how much memory, how long?

Reads only the model's config (the model is built on the meta device) and,
for time, the dataset's size. Memory and time come from flextrain.estimate;
`probe=True` replaces the analytic numbers with measured and fitted ones.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from flextrain.config.enums import PAIRED_TYPES, PREFERENCE_TYPES, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.data.registry import DatasetInfo
from flextrain.estimate.batching import BatchingChoice, candidates, plan_epoch
from flextrain.estimate.memory import (
    Architecture,
    MemoryEstimate,
    TrainingSetup,
    estimate_memory,
)
from flextrain.estimate.memory import rows as forward_rows
from flextrain.estimate.probe import (
    ProbeError,
    ProbeResult,
    build_request,
    run_probe,
    should_anchor,
)
from flextrain.estimate.recommend import largest_fitting_batch, recommend
from flextrain.estimate.timing import device_flops_prior, estimate_time, flops_per_token
from flextrain.hardware.detect import HardwareConstraints
from flextrain.models.facts_cache import inspect_model_cached
from flextrain.models.inspect import ModelInfo, choose_lora_targets
from flextrain.models.lengths import LengthSample, sample_lengths
from flextrain.models.report import (
    MemoryReport,
    ModelCompatibility,
    RecommendationReport,
    TimeReport,
)
from flextrain.models.resolve import ModelNotFoundError, ModelResolver
from flextrain.models.tasks import choose_objective, choose_precision
from flextrain.settings import Settings

_GIB = 1024**3
NO_DATASET = "-"  # dataset_id of a config built only to describe a run for a check
_ASSUMED_ROWS = 1000  # time is quoted per 1,000 rows of max_length when no dataset is named

logger = logging.getLogger(__name__)


def framework_versions() -> dict[str, str]:
    out = {}
    for name in ("torch", "transformers", "peft", "accelerate", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "missing"
    return out


def supported_types(info: ModelInfo) -> tuple[list[TrainingType], dict[str, str]]:
    """Which training types the model's heads and modules allow, and why not."""
    supported: list[TrainingType] = []
    reasons: dict[str, str] = {}
    has_lm = info.supports_causal_lm or info.supports_masked_lm
    has_head = has_lm or info.supports_sequence_classification
    for ttype, ok, why in (
        (TrainingType.FINE_TUNING, has_head, "no trainable head (LM or classification)"),
        (
            TrainingType.LORA_ADAPTATION,
            bool(choose_lora_targets(info.linear_module_names)),
            "no linear layers to adapt",
        ),
        (TrainingType.CONTINUED_PRETRAINING, has_lm, "no causal- or masked-LM head"),
        (
            TrainingType.TASK_SPECIFIC,
            info.supports_sequence_classification,
            "no sequence-classification head in transformers",
        ),
        (TrainingType.FULL_TRAINING, has_head, "no trainable head"),
        # Preference and reward training score and sample answers token by token.
        *(
            (ttype, info.supports_causal_lm and not info.is_encoder, "no causal-LM head")
            for ttype in TrainingType
            if ttype in PREFERENCE_TYPES
        ),
    ):
        if ok:
            supported.append(ttype)
        else:
            reasons[ttype.value] = why
    return supported, reasons


def training_setup(
    info: ModelInfo,
    config: AdvancedTrainingConfig,
    hardware: HardwareConstraints,
    objective: str,
    num_labels: int = 2,
) -> TrainingSetup:
    """The estimator's view of a config on this hardware."""
    lora = config.uses_lora
    targets = config.lora_target_modules or choose_lora_targets(info.linear_module_names)
    seq_len = min(config.max_length, info.max_position_embeddings or config.max_length)
    preference = preference_setup(config)
    if preference.get("generation_tokens"):
        # GRPO: prompts of up to max_length tokens and the sampled completion after them.
        seq_len += preference["generation_tokens"]
    return TrainingSetup(
        objective=objective,  # type: ignore[arg-type]
        lora=lora,
        batch_size=config.train_batch_size,
        seq_len=seq_len,
        precision=choose_precision(config, hardware),
        gradient_checkpointing=config.gradient_checkpointing
        and info.supports_gradient_checkpointing,
        optimizer=config.optim,
        lora_r=config.lora_r,
        lora_targets=tuple(targets) if lora else (),
        num_labels=num_labels,
        gradient_accumulation_steps=config.gradient_accumulation_steps,
        device="cuda" if hardware.gpu_count > 0 else "cpu",
        # Per-process memory: FSDP shards weights, gradients and optimizer states over
        # the processes; DDP (and DeepSpeed, counted conservatively) keeps a full copy each.
        num_gpus=config.world_size,
        strategy=(
            "single"
            if config.world_size == 1
            else "fsdp"
            if config.distributed_strategy == "fsdp"
            else "ddp"
        ),
        quantized_4bit=config.load_in_4bit and lora,
        double_quant=config.bnb_4bit_use_double_quant,
        **preference,
    )


def preference_setup(config: AdvancedTrainingConfig) -> dict[str, Any]:
    """What preference and reward training adds to the estimator's setup: two sequences
    per pair (DPO, ORPO, SimPO), a frozen reference copy (full-weight DPO and KTO without
    precomputed log-probs; GRPO with a KL term), GRPO's sampled tokens."""
    ttype = config.training_type
    if not ttype.is_preference:
        return {}
    p = config.preference
    out: dict[str, Any] = {}
    if ttype in PAIRED_TYPES:
        out["sequences_per_row"] = 2
    full = not config.uses_lora
    if ttype in (TrainingType.DPO, TrainingType.KTO):
        out["reference_copy"] = full and p.reference != "precomputed"
        out["reference_forward"] = True  # once before training when precomputed
    if ttype == TrainingType.GRPO:
        out["reference_copy"] = full and p.beta_for(ttype) > 0
        out["reference_forward"] = p.beta_for(ttype) > 0
        out["generation_tokens"] = p.max_completion_length
        out["generations_per_row"] = p.num_generations
    return out


def memory_budget(hardware: HardwareConstraints) -> tuple[float, str]:
    """Bytes one training process may use, and which memory that is."""
    if hardware.gpu_count > 0:
        per_gpu = (
            min(g.free_memory_gb for g in hardware.gpus)
            if hardware.gpus
            else hardware.available_gpu_memory_gb / hardware.gpu_count
        )
        return per_gpu * _GIB, "gpu"
    return hardware.available_memory_gb * _GIB, "system"


def tokens_per_epoch(
    data: DatasetInfo | None, model_path: Path | None, max_length: int, eval_split: float = 0.0
) -> tuple[int, int, str | None, LengthSample | None]:
    """(tokens, rows) one epoch trains on, from a tokenized sample of the data, or an
    assumption (returned as text) when no dataset is named; and the sample."""
    if data is None:
        return (
            _ASSUMED_ROWS * max_length,
            _ASSUMED_ROWS,
            f"{_ASSUMED_ROWS} rows of {max_length} tokens",
            None,
        )
    sample = sample_lengths(data, model_path)
    train_rows = max(1, data.num_rows - int(data.num_rows * eval_split))
    kept = sum(min(n, max_length) for n in sample.lengths)
    return int(kept * train_rows / max(len(sample.lengths), 1)), train_rows, None, sample


def _batching_plan(
    arch: Architecture,
    setup: TrainingSetup,
    cfg: AdvancedTrainingConfig,
    sample: LengthSample | None,
    rows: int,
) -> tuple[BatchingChoice | None, float | None]:
    """The batching a causal-LM job on this data will use, and one epoch's work with it
    (None for the other objectives and methods, whose batches are padded per batch).
    The worker decides again on the tokenised data, with the same cost model; whether
    the model keeps packed examples apart is only checked there."""
    if setup.objective != "causal_lm" or sample is None or cfg.training_type in PREFERENCE_TYPES:
        return None, None
    options = candidates(
        device=setup.device,
        can_pack=True,
        group_by_length=cfg.group_by_length,
        packing=cfg.packing,
        varlen=cfg.attn_implementation == "flash_attention_2",
    )
    lengths = [min(n, setup.seq_len) for n in sample.lengths]
    return plan_epoch(arch, setup, lengths, sample.predicted, rows=rows, options=options)


class ModelCompatibilityChecker:
    """Answers `check(model_id, training_type)` from the model's config alone."""

    def __init__(self, resolver: Any = None, model_info_cache: Path | None = None) -> None:
        """`resolver`: flextrain's ModelResolver. A program written for the original
        module passes its Hugging Face service here; flextrain reads models itself, so
        any other object is set aside (logged) and the default resolver is used."""
        if not isinstance(resolver, ModelResolver):
            if resolver is not None:
                logger.info(
                    "ModelCompatibilityChecker: %s is not a ModelResolver; flextrain reads "
                    "models itself (docs/compat.md)",
                    type(resolver).__name__,
                )
            resolver = ModelResolver(Settings().builtin_models_dir)
        self.resolver = resolver
        # Where inspected facts are kept (see flextrain.models.facts_cache); None: nowhere.
        self.model_info_cache = model_info_cache

    async def check_compatibility(
        self,
        model_id: str,
        training_type: TrainingType | str,
        hardware_constraints: HardwareConstraints | None = None,
    ) -> ModelCompatibility:
        """The original module's call: `check` for this hardware, as a coroutine (the
        model's config is read in a thread)."""
        return await asyncio.to_thread(
            self.check, model_id, TrainingType(training_type), hardware=hardware_constraints
        )

    def check(
        self,
        model_id: str,
        training_type: TrainingType | None = None,
        *,
        hardware: HardwareConstraints | None = None,
        config: AdvancedTrainingConfig | None = None,
        dataset: DatasetInfo | None = None,
        batch_size: int = 8,
        max_length: int = 512,
        probe: bool = False,
    ) -> ModelCompatibility:
        versions = framework_versions()
        base = {
            "model_id": model_id,
            "training_type": training_type,
            "framework_versions": versions,
        }
        try:
            resolved = self.resolver.resolve_config(model_id)
            info = inspect_model_cached(resolved.path, self.model_info_cache)
        except ModelNotFoundError as exc:
            return ModelCompatibility(**base, is_compatible=False, issues=[str(exc)])
        except (ValueError, OSError, KeyError) as exc:
            return _unloadable(model_id, exc, base)
        hw = hardware or HardwareConstraints.detect_current()
        supported, reasons = supported_types(info)
        ttype = training_type or (config.training_type if config else TrainingType.FINE_TUNING)
        cfg = config or AdvancedTrainingConfig(
            model_id=model_id,
            dataset_id=dataset.dataset_id if dataset else NO_DATASET,
            training_type=ttype,
            batch_size=batch_size,
            max_length=max_length,
        )
        issues: list[str] = []
        warnings: list[str] = []
        if training_type is not None and training_type not in supported:
            issues.append(
                f"{training_type.value} is not supported: {reasons[training_type.value]}."
            )
        objective: str
        try:
            objective = choose_objective(ttype, info, dataset)
        except ConfigValidationError as exc:
            issues.extend(str(i) for i in exc.issues)
            objective = info.lm_objective  # estimate anyway, for the report
        num_labels = max(len(dataset.labels), 2) if dataset else 2
        if objective != ("masked_lm" if info.is_encoder else "causal_lm"):
            info = inspect_model_cached(
                resolved.path, self.model_info_cache, objective=objective, num_labels=num_labels
            )
        arch = info.architecture()
        setup = training_setup(info, cfg, hw, objective, num_labels)
        estimate = estimate_memory(arch, setup)
        budget, kind = memory_budget(hw)
        peak, source = float(estimate.peak), "analytic"
        probe_report: dict[str, Any] | None = None
        step_seconds: float | None = None
        flops_range = device_flops_prior(
            # The GPUs this job's processes use (one each), not every GPU of the machine.
            gpu_names=hw.gpu_names[: cfg.num_processes],
            cpu_cores=hw.cpu_cores,
            precision=setup.precision,
        )
        step_flops = flops_per_token(arch, setup) * forward_rows(setup) * setup.seq_len
        if probe:
            try:
                result = self._probe(model_id, setup, arch, ttype, cfg, hw, budget, step_flops)
                peak, source = float(result.predicted_peak_bytes), "probe"
                step_seconds = result.predicted_step_seconds
                probe_report = result.to_dict()
            except ProbeError as exc:
                warnings.append(f"Probe failed; analytic estimate shown. {exc}")
        fits = peak <= budget
        if not fits:
            issues.append(
                f"Not enough {'GPU' if kind == 'gpu' else 'system'} memory: about "
                f"{peak / _GIB:.2f} GB needed, {budget / _GIB:.2f} GB available."
            )
        lora_targets = tuple(choose_lora_targets(info.linear_module_names))
        # Scaled by the probe's correction of the analytic peak, when it ran.
        rec_reports = _recommendations(
            arch, setup, budget, hw, lora_targets, peak / estimate.peak if estimate.peak else 1.0
        )
        recommended = _recommended_batch(arch, setup, budget, probe_report)
        tokens, rows, assumption, sample = tokens_per_epoch(
            dataset,
            resolved.path if resolved.source != "hub" else None,
            setup.seq_len,
            cfg.eval_split,
        )
        batching, epoch_flops = _batching_plan(arch, setup, cfg, sample, rows)
        time_source = "prior"
        if step_seconds:
            rate = step_flops / step_seconds
            flops_range, time_source = (rate * 0.9, rate, rate * 1.1), "probe"
        timing = estimate_time(
            arch,
            setup,
            tokens_per_epoch=tokens,
            rows_per_epoch=rows,
            epochs=cfg.num_epochs,
            flops_range=flops_range,
            source=time_source,
            epoch_flops=epoch_flops,
        )
        if hw.gpu_count == 0 and info.num_parameters > 500_000_000:
            warnings.append("Training a model this size on CPU will be very slow.")
        memory = _memory_report(estimate, peak, budget, fits, source)
        return ModelCompatibility(
            **base,
            is_compatible=not issues,
            architecture=(info.architectures or [info.model_type])[0],
            model_type=info.model_type,
            num_parameters=info.num_parameters,
            objective=objective,
            supported_training_types=supported,
            unsupported_reasons=reasons,
            task_heads=_task_heads(info),
            lora_target_modules=list(lora_targets),
            max_sequence_length=info.max_position_embeddings,
            supports_gradient_checkpointing=info.supports_gradient_checkpointing,
            required_memory_gb=round(peak / _GIB, 3),
            available_memory_gb=round(budget / _GIB, 3),
            memory_kind=kind,
            memory=memory,
            recommended_batch_size=recommended,
            estimated_training_time_hours=timing.hours,
            time=TimeReport(
                overhead_seconds=timing.overhead_seconds,
                seconds=timing.seconds,
                low_seconds=timing.low_seconds,
                high_seconds=timing.high_seconds,
                tokens_per_epoch=timing.tokens_per_epoch,
                epochs=timing.epochs,
                optimizer_steps=timing.optimizer_steps,
                flops_per_token=timing.flops_per_token,
                source=timing.source,
                assumption=assumption,
                batching=batching.strategy if batching else None,
                batching_reason=batching.reason if batching else None,
            ),
            probe=probe_report,
            issues=issues,
            warnings=warnings,
            recommendations=[r.description for r in rec_reports if r.fits]
            or [r.description for r in rec_reports],
            recommendation_details=rec_reports,
        )

    def _probe(
        self,
        model_id: str,
        setup: TrainingSetup,
        arch: Any,
        ttype: TrainingType,
        cfg: AdvancedTrainingConfig,
        hw: HardwareConstraints,
        budget: float,
        step_flops: float,
    ) -> ProbeResult:
        """A few real steps in a subprocess: the measured peak and step time (ProbeError
        when it could not run)."""
        flops_high = device_flops_prior(
            gpu_names=hw.gpu_names[: cfg.num_processes],
            cpu_cores=hw.cpu_cores,
            precision=setup.precision,
        )[1]
        return run_probe(
            build_request(
                str(self.resolver.resolve(model_id).path),
                setup,
                training_type=ttype.value,
                anchored=should_anchor(step_flops / flops_high),
                num_threads=cfg.num_threads or hw.cpu_cores,
                preference=cfg.preference.model_dump() if ttype.is_preference else None,
            ),
            target_batch=setup.batch_size,
            budget_bytes=budget,
            analytic=lambda b: estimate_memory(arch, replace(setup, batch_size=b)).peak,
        )


def _task_heads(info: ModelInfo) -> list[str]:
    """The heads transformers can put on this model's body."""
    return [
        name
        for name, ok in (
            ("causal_lm", info.supports_causal_lm),
            ("masked_lm", info.supports_masked_lm),
            ("sequence_classification", info.supports_sequence_classification),
        )
        if ok
    ]


def _recommended_batch(
    arch: Any, setup: TrainingSetup, budget: float, probe_report: dict[str, Any] | None
) -> int:
    """The batch size to use: the one asked for, or the largest that fits if smaller (the
    probe's measure when it ran, else the estimate's with 5% to spare); 0: none fits."""
    if probe_report and probe_report.get("largest_batch") is not None:
        best = int(probe_report["largest_batch"])
    else:
        best = largest_fitting_batch(arch, replace(setup, batch_size=1), budget * 0.95)
    return min(setup.batch_size, best) if best else 0


def _unloadable(model_id: str, exc: Exception, base: dict[str, Any]) -> ModelCompatibility:
    """The report on a model transformers cannot load (its own code, or a bad config)."""
    text = str(exc)
    if "trust_remote_code" in text:
        return ModelCompatibility(
            **base,
            is_compatible=False,
            needs_trust_remote_code=True,
            issues=[
                f"Model '{model_id}' needs its own code (trust_remote_code): "
                "transformers does not support this architecture natively."
            ],
            recommendations=[
                "Review the model's code; flextrain never enables trust_remote_code silently."
            ],
        )
    version = base["framework_versions"]["transformers"]
    return ModelCompatibility(
        **base,
        is_compatible=False,
        issues=[f"Model '{model_id}' cannot be loaded by transformers {version}: {text}".strip()],
        recommendations=["Update transformers, or check the model's config.json."],
    )


def _recommendations(
    arch: Any,
    setup: TrainingSetup,
    budget: float,
    hw: HardwareConstraints,
    lora_targets: tuple[str, ...],
    scale: float,
) -> list[RecommendationReport]:
    """Settings that would need less memory, each with its peak and whether it fits."""
    recs = recommend(arch, setup, budget, gpu_count=hw.gpu_count, lora_targets=lora_targets)
    return [
        RecommendationReport(
            description=r.description,
            changes=r.changes,
            peak_gb=r.estimate.peak * scale / _GIB,
            fits=r.estimate.peak * scale <= budget,
        )
        for r in recs
    ]


def _memory_report(
    estimate: MemoryEstimate, peak: float, budget: float, fits: bool, source: str
) -> MemoryReport:
    return MemoryReport(
        device=estimate.device,
        weights_gb=estimate.weights / _GIB,
        gradients_gb=estimate.gradients / _GIB,
        optimizer_gb=estimate.optimizer / _GIB,
        activations_gb=estimate.activations / _GIB,
        logits_gb=estimate.logits / _GIB,
        reference_gb=estimate.reference / _GIB,
        generation_gb=estimate.generation / _GIB,
        dequantization_gb=estimate.dequantization / _GIB,
        baseline_gb=estimate.baseline / _GIB,
        peak_gb=peak / _GIB,
        available_gb=budget / _GIB,
        fits=fits,
        source=source,
        trainable_parameters=estimate.trainable_parameters,
        total_parameters=estimate.total_parameters,
        notes=estimate.notes,
    )
