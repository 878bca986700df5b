"""One preference or reward run, start to finish, with TRL's trainer for its method.

The steps mirror the supervised runner's (flextrain.train.runner): the data, the
model (a LoRA adapter by default), the arguments, progress to the store, an
evaluation before, training (from a checkpoint on resume), an evaluation after,
and the saved folder. What differs is who trains: DPOTrainer, KTOTrainer,
GRPOTrainer, and TRL's experimental ORPO and CPO (SimPO's loss) trainers.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_utils import TrainOutput

from flextrain.config.enums import PAIRED_TYPES, TrainingStatus, TrainingType
from flextrain.config.preference import RewardSpec
from flextrain.config.schemas import AdvancedTrainingConfig, ExpertTrainingConfig
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import JobStore
from flextrain.train import distributed
from flextrain.train.arguments import training_arguments
from flextrain.train.callbacks import JobCancelledError, StopRequest, StoreProgressCallback
from flextrain.train.guards import Guards
from flextrain.train.health import HealthChecked, RollbackRequest
from flextrain.train.metrics import size_metrics, throughput_and_memory
from flextrain.train.model import build_model, load_tokenizer
from flextrain.train.oom import free_memory
from flextrain.train.preference.data import preference_splits
from flextrain.train.preference.evaluate import preference_accuracy
from flextrain.train.preference.rewards import reward_functions, text_of
from flextrain.train.resume import finished_training, skip_finished_training
from flextrain.train.save import save_outputs
from flextrain.train.stop import TrainingDivergedError

# (module, trainer class, config class) of each method. ORPO and CPO live in TRL's
# experimental namespace since TRL 1.0; SimPO is CPO with loss_type "simpo".
TRL_CLASSES: dict[TrainingType, tuple[str, str, str]] = {
    TrainingType.DPO: ("trl", "DPOTrainer", "DPOConfig"),
    TrainingType.KTO: ("trl", "KTOTrainer", "KTOConfig"),
    TrainingType.GRPO: ("trl", "GRPOTrainer", "GRPOConfig"),
    TrainingType.ORPO: ("trl.experimental.orpo", "ORPOTrainer", "ORPOConfig"),
    TrainingType.SIMPO: ("trl.experimental.cpo", "CPOTrainer", "CPOConfig"),
}


def preload_trl() -> None:
    """Import every method's trainer: a process that forks jobs does it once for all."""
    for ttype in TRL_CLASSES:
        trl_classes(ttype)


def trl_classes(ttype: TrainingType) -> tuple[type[Trainer], type[TrainingArguments]]:
    module_name, trainer_name, config_name = TRL_CLASSES[ttype]
    module = importlib.import_module(module_name)
    return getattr(module, trainer_name), getattr(module, config_name)


def train_preference(
    spec: RunSpec, store: JobStore, stop: StopRequest | None, report_to: list[str]
) -> dict[str, Any]:
    """Train, evaluate and save a preference or reward run; returns the final metrics."""
    cfg = spec.config
    torch.set_num_threads(spec.num_threads)
    reporter = distributed.is_reporter()
    distributed.init_process_group(cfg.distributed_timeout)
    tokenizer = load_tokenizer(spec)
    with distributed.rank_zero_first():
        splits = preference_splits(spec, tokenizer)
    has_eval = "eval" in splits
    model, _ = build_model(spec, tokenizer)
    args = method_arguments(spec, model, has_eval, report_to)
    progress = StoreProgressCallback(
        store,
        spec.job_id,
        stop=stop,
        samples_per_step=cfg.train_batch_size
        * cfg.gradient_accumulation_steps
        * distributed.world_size(),
        objective="preference",
        reporter=reporter,
    )
    guards = Guards.for_run(spec, store, reporter)
    callbacks: list[TrainerCallback] = [guards.callback, progress, guards.disk]
    early: EarlyStoppingCallback | None = None
    if has_eval and cfg.early_stopping_patience is not None:
        early = EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold)
        callbacks.append(early)

    def rebuild() -> HealthChecked:
        fresh, _ = build_model(spec, tokenizer)
        built = build_trainer(spec, fresh, args, splits, tokenizer, callbacks)
        built.health = guards.monitor
        return built

    trainer = build_trainer(spec, model, args, splits, tokenizer, callbacks)
    trainer.health = guards.monitor
    metrics = size_metrics(model, splits)
    del model  # the trainer holds it (and may have wrapped it)

    resume = spec.resume_from_checkpoint
    if has_eval and cfg.evaluate_before_training and not resume:
        before = _evaluate(spec, trainer, splits, tokenizer)
        metrics.update({f"initial_{k}": v for k, v in before.items()})
        if reporter:
            store.merge_metrics(spec.job_id, metrics)
    finished = finished_training(resume)
    if finished is not None and resume is not None:
        result = skip_finished_training(trainer, args, resume, finished)
    else:
        trainer, result = _train_guarded(spec, store, trainer, guards, resume, rebuild)
    guards.raise_if_paused()
    if progress.stopped_by_request:
        raise JobCancelledError(stop.reason if stop else "cancelled")
    metrics.update(_result_metrics(result, splits, tokenizer))
    metrics.update(_early_stop_and_best(spec, store, trainer, early, reporter))
    if has_eval:
        if reporter:
            store.update(spec.job_id, status=TrainingStatus.EVALUATING)
        after = _evaluate(spec, trainer, splits, tokenizer)
        metrics.update(after)
        if "eval_loss" in after and reporter:
            store.update(spec.job_id, eval_loss=after["eval_loss"])
    return save_outputs(
        spec,
        store,
        trainer,
        model=trainer.model,
        tokenizer=tokenizer,
        train_split=_probe_rows(splits["train"], tokenizer),
        metrics=metrics,
        reporter=reporter,
    )


def _early_stop_and_best(
    spec: RunSpec,
    store: JobStore,
    trainer: Trainer,
    early: EarlyStoppingCallback | None,
    reporter: bool,
) -> dict[str, Any]:
    """Where the run stopped early (in the log and as an event) and, when it keeps the
    best model, which: as the supervised runner reports them."""
    state, args = trainer.state, trainer.args
    metrics: dict[str, Any] = {}
    if early is not None and early.early_stopping_patience_counter >= early.early_stopping_patience:
        metrics["early_stopped_at_step"] = state.global_step
        message = (
            f"Stopped early at step {state.global_step} of {state.max_steps}: "
            f"{args.metric_for_best_model} did not improve for "
            f"{spec.config.early_stopping_patience} evaluations; best "
            f"{state.best_metric:.4g} at {state.best_model_checkpoint}."
        )
        print(f"[flextrain] {message}", flush=True)
        if reporter:
            data = {"best_metric": state.best_metric}
            store.add_event(spec.job_id, "early_stopped", message, data=data)
    if state.best_metric is not None and args.load_best_model_at_end:
        metrics["best_metric"] = state.best_metric
        metrics["best_checkpoint"] = state.best_model_checkpoint
    return metrics


def method_arguments(
    spec: RunSpec, model: Any, has_eval: bool, report_to: list[str]
) -> TrainingArguments:
    """The method's TRL config: flextrain's Trainer arguments plus the method's own."""
    cfg = spec.config
    _, config_cls = trl_classes(cfg.training_type)
    supports_gc = bool(getattr(model, "supports_gradient_checkpointing", True))
    return training_arguments(
        spec,
        has_eval,
        supports_gc,
        report_to,
        # Pairs of similar length batched together: TRL pads a batch's pairs to its
        # longest sequence, so random batches of varied lengths are mostly padding.
        grouped=cfg.group_by_length and cfg.training_type in PAIRED_TYPES,
        distributed=distributed.strategy_arguments(cfg, model),
        cls=config_cls,
        **method_options(cfg),
    )


def method_options(cfg: AdvancedTrainingConfig) -> dict[str, Any]:
    """The fields of the method's TRL config that flextrain's fields set, then the
    user's `trl_options` (validated not to name any of these)."""
    ttype, p = cfg.training_type, cfg.preference
    options: dict[str, Any] = {"beta": p.beta_for(ttype)}
    precompute = p.reference == "precomputed"
    if ttype == TrainingType.DPO:
        options.update(
            max_length=cfg.max_length,
            loss_type=[p.loss_type or "sigmoid"],
            label_smoothing=p.label_smoothing,
            precompute_ref_log_probs=precompute,
        )
    elif ttype == TrainingType.KTO:
        options.update(
            max_length=cfg.max_length,
            loss_type=p.loss_type or "kto",
            desirable_weight=p.desirable_weight,
            undesirable_weight=p.undesirable_weight,
            precompute_ref_log_probs=precompute,
            # KTO's KL term pairs each row with its batch neighbours' answers, which needs
            # a fixed order (the rows are shuffled once, by seed, instead).
            train_sampling_strategy="sequential",
        )
    elif ttype == TrainingType.ORPO:
        options.update(max_length=cfg.max_length)
    elif ttype == TrainingType.SIMPO:
        options.update(
            max_length=cfg.max_length,
            loss_type="simpo",
            cpo_alpha=0.0,
            simpo_gamma=p.simpo_gamma,
            label_smoothing=p.label_smoothing,
        )
    else:
        options.update(
            num_generations=p.num_generations,
            max_completion_length=p.max_completion_length,
            temperature=p.temperature,
            reward_weights=[r.weight for r in builtin_rewards(cfg)]
            + [1.0] * len(_user_rewards(cfg)),
        )
    return {**options, **p.trl_options}


def _train_guarded(
    spec: RunSpec,
    store: JobStore,
    trainer: HealthChecked,
    guards: Guards,
    resume: str | None,
    rebuild: Callable[[], HealthChecked],
) -> tuple[HealthChecked, Any]:
    """trainer.train(), going back to the last checkpoint at half the learning rate
    when a step diverges under on_divergence=rollback; the trainer that finished, and
    its result."""
    while True:
        if resume:
            print(f"[flextrain] resuming from {resume}", flush=True)
        try:
            return trainer, trainer.train(resume_from_checkpoint=resume)
        except RollbackRequest as request:
            resume = guards.rolled_back(spec, store, request)
        except TrainingDivergedError as exc:
            raise guards.diverged(exc, Path(spec.checkpoint_dir)) from None
        del trainer
        free_memory()
        trainer = rebuild()


def build_trainer(
    spec: RunSpec,
    model: Any,
    args: TrainingArguments,
    splits: DatasetDict,
    tokenizer: Any,
    callbacks: list[TrainerCallback],
) -> HealthChecked:
    """The method's trainer. A LoRA policy's reference is its base with the adapter off
    (TRL's default for a PEFT model); full weights train against a frozen copy (DPO,
    KTO) unless the reference log-probs are precomputed."""
    cfg = spec.config
    ttype = cfg.training_type
    method_cls, _ = trl_classes(ttype)
    # The health checks first in the order, so that they see every step of TRL's loop.
    trainer_cls: type[HealthChecked] = type(
        f"Checked{method_cls.__name__}", (HealthChecked, method_cls), {}
    )
    common: dict[str, Any] = {
        "model": model,
        "args": args,
        "train_dataset": splits["train"],
        "eval_dataset": splits.get("eval"),
        "processing_class": tokenizer,
        "callbacks": callbacks,
    }
    if ttype == TrainingType.GRPO:
        functions, _ = reward_functions(builtin_rewards(cfg), _user_rewards(cfg), _code_dir(cfg))
        return trainer_cls(reward_funcs=functions, **common)  # type: ignore[call-arg]
    if ttype in (TrainingType.DPO, TrainingType.KTO):
        frozen = not cfg.uses_lora and cfg.preference.reference != "precomputed"
        common["ref_model"] = _frozen_copy(model) if frozen else None
    if args.train_sampling_strategy == "group_by_length":
        trainer_cls = type(f"Grouped{method_cls.__name__}", (GroupedPairs, trainer_cls), {})
    return trainer_cls(**common)


class GroupedPairs(Trainer):
    """A TRL pair trainer whose batches hold pairs of similar length.

    The Trainer's length-grouped sampler reads `input_ids` (or a length column, which
    the Trainer drops with the other columns the model does not take before it builds
    the sampler); pairs have neither, so their lengths, the longer of a pair's two
    sequences, are read here from the tokenised rows once and given to the sampler.
    """

    def _get_train_sampler(self, train_dataset: Any = None) -> Any:
        from transformers.trainer_pt_utils import LengthGroupedSampler

        dataset = train_dataset if train_dataset is not None else self.train_dataset
        lengths = [pair_length(row) for row in self.train_dataset]  # type: ignore[union-attr]
        return LengthGroupedSampler(
            self.args.train_batch_size * self.args.gradient_accumulation_steps,
            dataset=dataset,
            lengths=lengths,
        )

    def _get_eval_sampler(self, eval_dataset: Any) -> Any:
        """Held-out pairs in their order: grouping buys nothing for a pass without steps
        (and the Trainer's grouped eval sampler cannot read pairs' lengths either)."""
        from torch.utils.data import SequentialSampler

        return SequentialSampler(eval_dataset)


def pair_length(row: dict[str, Any]) -> int:
    """The longer of a tokenised pair's two sequences, prompt included."""
    if "prompt_ids" in row:  # DPO: the prompt, then either answer
        return len(row["prompt_ids"]) + max(len(row["chosen_ids"]), len(row["rejected_ids"]))
    # ORPO and CPO keep each answer with its prompt.
    return max(len(row["chosen_input_ids"]), len(row["rejected_input_ids"]))


def _frozen_copy(model: Any) -> Any:
    """The reference: the policy's starting weights, never trained (built here, not by
    TRL from the model's hub id, which may not resolve offline or may be a folder)."""
    ref = copy.deepcopy(model)
    ref.eval()
    for parameter in ref.parameters():
        parameter.requires_grad_(False)
    return ref


def builtin_rewards(cfg: AdvancedTrainingConfig) -> list[RewardSpec]:
    """The configured built-in rewards; with none at all, exact_match against the rows'
    reference answers (the validation refuses data without them)."""
    if cfg.preference.rewards or _user_rewards(cfg):
        return list(cfg.preference.rewards)
    return [RewardSpec(name="exact_match")]


def _user_rewards(cfg: AdvancedTrainingConfig) -> list[str]:
    return list(cfg.reward_functions) if isinstance(cfg, ExpertTrainingConfig) else []


def _code_dir(cfg: AdvancedTrainingConfig) -> str | None:
    return cfg.code_dir if isinstance(cfg, ExpertTrainingConfig) else None


def _evaluate(
    spec: RunSpec, trainer: Trainer, splits: DatasetDict, tokenizer: Any
) -> dict[str, float]:
    """TRL's evaluation of the method (eval_loss, rewards, margins; GRPO's mean reward on
    fresh samples) and, for pairs, the held-out preference accuracy."""
    scores = {k: float(v) for k, v in trainer.evaluate().items() if isinstance(v, int | float)}
    held = splits["eval"]
    if spec.config.training_type in PAIRED_TYPES and "chosen" in held.column_names:
        rows = [{k: held[i][k] for k in ("prompt", "chosen", "rejected")} for i in range(len(held))]
        accuracy = preference_accuracy(trainer.model, tokenizer, rows, spec.config.max_length)
        scores.update({f"eval_{k}": v for k, v in accuracy.items()})
    return scores


def _result_metrics(result: TrainOutput, splits: DatasetDict, tokenizer: Any) -> dict[str, Any]:
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
    metrics["train_loss"] = result.training_loss
    metrics.update(throughput_and_memory([], result.metrics))
    metrics.pop("train_tokens_per_second", None)  # counted by TRL as num_tokens instead
    return metrics


def _probe_rows(train: Any, tokenizer: Any) -> list[dict[str, list[int]]]:
    """Two prompts as token ids: the output probe saved beside the model."""
    rows = []
    for i in range(min(2, len(train))):
        prompt = train[i]["prompt"]
        text = (
            tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
            if isinstance(prompt, list)
            else text_of(prompt)
        )
        rows.append({"input_ids": tokenizer(text)["input_ids"]})
    return rows
