"""One training run, start to finish, with transformers Trainer (+ peft).

`run_training` is the worker's entry point and `_train` lists the run's steps in
order, each a function below. What the steps use lives beside this module: the
Trainer subclass (trainer.py), the TrainingArguments (arguments.py), the collator
(batching.py), out-of-memory back-off (oom.py), resuming a run that had finished
(resume.py), metrics (metrics.py) and the saved model's folder (save.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from datasets import DatasetDict
from transformers import EarlyStoppingCallback, TrainerCallback, TrainingArguments
from transformers.trainer_utils import TrainOutput

from flextrain.config.enums import TrainingStatus
from flextrain.jobs.checkpoints import latest_checkpoint
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import JobStore
from flextrain.train import distributed
from flextrain.train.arguments import training_arguments
from flextrain.train.batching import Batching, choose_batching
from flextrain.train.callbacks import JobCancelledError, StopRequest, StoreProgressCallback
from flextrain.train.data import load_splits
from flextrain.train.expert import ExpertSetup, freeze_configured
from flextrain.train.expert import prepare as prepare_expert
from flextrain.train.guards import Guards
from flextrain.train.health import RollbackRequest
from flextrain.train.hooks import apply_curriculum
from flextrain.train.metrics import last_evaluation, size_metrics, throughput_and_memory
from flextrain.train.model import build_model, load_tokenizer
from flextrain.train.oom import (
    OutOfMemoryAdvice,
    free_memory,
    halved_batch,
    is_out_of_memory,
    out_of_memory_advice,
)
from flextrain.train.pooled import first_position_only
from flextrain.train.preference.run import train_preference
from flextrain.train.resume import finished_training, skip_finished_training
from flextrain.train.save import save_outputs
from flextrain.train.stop import TrainingDivergedError
from flextrain.train.tracking import configure_tracking, log_final_model, mlflow_run
from flextrain.train.trainer import FlexTrainer, trainer_class

# Builds the run's Trainer around a model and its arguments.
BuildTrainer = Callable[[Any, TrainingArguments], FlexTrainer]


def run_training(
    spec: RunSpec, store: JobStore, stop: StopRequest | None = None, home: Path | None = None
) -> dict[str, Any]:
    """Train, evaluate and save; returns the final metrics. Status goes to the store.

    `stop` is set from outside (SIGTERM, cancel): the run saves a checkpoint at the
    next step end and raises JobCancelledError instead of finishing. With tracking
    on, one MLflow run spans training, the final evaluation and the saved model
    (`home` holds the local MLflow store).
    """
    report_to, tracking_env = configure_tracking(spec, home)
    # transformers' tracking callbacks read these when training starts.
    os.environ.update(tracking_env)
    run_name = spec.config.run_name or spec.job_id
    train = train_preference if spec.config.training_type.is_preference else _train
    with mlflow_run(report_to, tracking_env, run_name=run_name) as mlflow_run_id:
        metrics = train(spec, store, stop, report_to)
        log_final_model(mlflow_run_id, Path(spec.model_dir))
    return metrics


@dataclass
class _Parts:
    """What every Trainer of the run is built from besides the model and its arguments,
    which an out-of-memory back-off replaces; these stay."""

    tokenizer: Any
    splits: DatasetDict
    expert: ExpertSetup
    batching: Batching

    @property
    def has_eval(self) -> bool:
        return "eval" in self.splits


@dataclass
class _Session:
    """The trainer in use, its arguments and the checkpoint it starts from: what an
    out-of-memory back-off replaces. The run keeps the trainer (and the model in it)
    only here, so the back-off drops the run's last reference before building anew."""

    trainer: FlexTrainer
    args: TrainingArguments
    resume: str | None


def _train(
    spec: RunSpec, store: JobStore, stop: StopRequest | None, report_to: list[str]
) -> dict[str, Any]:
    """The run's steps, in order; each says why it is there."""
    torch.set_num_threads(spec.num_threads)
    reporter = distributed.is_reporter()
    distributed.init_process_group(spec.config.distributed_timeout)
    parts, model = _build_model_and_data(spec)
    args = _arguments(spec, parts, model, report_to)
    guards = Guards.for_run(spec, store, reporter)
    progress, early, callbacks = _build_callbacks(spec, store, stop, parts, reporter, guards)
    build = _trainer_factory(spec, parts, callbacks, guards)
    session = _Session(build(model, args), args, spec.resume_from_checkpoint)
    metrics = size_metrics(model, parts.splits)
    metrics["batching"] = parts.batching.strategy
    metrics["sparse_logits"] = parts.batching.sparse_logits
    del model  # the session holds it now: an out-of-memory back-off must be able to free it

    if parts.has_eval and spec.config.evaluate_before_training and not session.resume:
        metrics.update(_evaluate_before_training(session.trainer))
        if reporter:
            store.merge_metrics(spec.job_id, metrics)
    result = _train_to_the_end(spec, store, session, build, progress, parts.tokenizer, guards)
    model = session.trainer.model  # as trained, before an evaluation may wrap it
    guards.raise_if_paused()
    if progress.stopped_by_request:
        raise JobCancelledError(stop.reason if stop else "cancelled")

    metrics.update(_result_metrics(result, parts.splits["train"]))
    metrics.update(_early_stop_and_best(spec, store, session, early, reporter))
    if parts.has_eval:
        metrics.update(_final_evaluation(spec, store, session, reporter))
    return save_outputs(
        spec,
        store,
        session.trainer,
        model=model,
        tokenizer=parts.tokenizer,
        train_split=parts.splits["train"],
        metrics=metrics,
        reporter=reporter,
    )


def _build_model_and_data(spec: RunSpec) -> tuple[_Parts, Any]:
    """The tokenizer, the tokenized splits, the model, expert mode's pieces (which freeze
    parts of the model and may reorder the data) and the batching that suits them.

    Rank 0 tokenizes first and the other ranks read its cache: one tokenization
    instead of one per process.
    """
    tokenizer = load_tokenizer(spec)
    with distributed.rank_zero_first():
        splits = load_splits(spec, tokenizer)
    model = _model(spec, tokenizer, announce=True)
    expert = prepare_expert(spec, splits["train"])
    for note in expert.notes:
        print(f"[flextrain] expert: {note}", flush=True)
    batching = choose_batching(spec, model, tokenizer, splits["train"])
    return _Parts(tokenizer, splits, expert, batching), model


def _model(spec: RunSpec, tokenizer: Any, *, announce: bool = False) -> Any:
    """The model to train, with what the config freezes frozen: at the start, and again
    after each out-of-memory back-off (a rebuilt model must train the same parameters)."""
    model, fresh = build_model(spec, tokenizer)
    frozen = freeze_configured(spec, model)
    if announce and fresh:
        print(f"Newly initialised modules (trained in full): {', '.join(fresh)}")
    if first_position_only(model) and announce:
        print("[flextrain] last layer computed at the classified position only", flush=True)
    if announce and frozen:
        print(f"[flextrain] expert: {frozen}", flush=True)
    return model


def _arguments(spec: RunSpec, parts: _Parts, model: Any, report_to: list[str]) -> TrainingArguments:
    """The TrainingArguments once the model and data are known: gradient checkpointing
    only where the model supports it, the length-grouped sampler where the batching
    chose grouping, and the several-process strategy for this model."""
    cfg = spec.config
    supports_gc = bool(getattr(model, "supports_gradient_checkpointing", True))
    return training_arguments(
        spec,
        parts.has_eval,
        supports_gc,
        report_to,
        grouped=parts.batching.strategy == "grouped",
        distributed=distributed.strategy_arguments(cfg, model),
    )


def _build_callbacks(
    spec: RunSpec,
    store: JobStore,
    stop: StopRequest | None,
    parts: _Parts,
    reporter: bool,
    guards: Guards,
) -> tuple[StoreProgressCallback, EarlyStoppingCallback | None, list[TrainerCallback]]:
    """Health (before progress: it adds gradient-norm statistics to the rows progress
    stores), progress (to the store, and the stop request in the other direction), the
    disk guard (after progress: it may veto the checkpoint a stop asks for), expert
    mode's callbacks, and early stopping when configured; progress and early stopping
    are also returned, because what they saw decides how the run ends."""
    cfg = spec.config
    progress = StoreProgressCallback(
        store,
        spec.job_id,
        stop=stop,
        # Every process's micro-batches: samples/s is the whole run's.
        samples_per_step=cfg.train_batch_size
        * cfg.gradient_accumulation_steps
        * distributed.world_size(),
        objective=spec.objective,
        reporter=reporter,
    )
    callbacks: list[TrainerCallback] = [
        guards.callback,
        progress,
        guards.disk,
        *parts.expert.callbacks,
    ]
    early: EarlyStoppingCallback | None = None
    if parts.has_eval and cfg.early_stopping_patience is not None:
        early = EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold)
        callbacks.append(early)
    return progress, early, callbacks


def _trainer_factory(
    spec: RunSpec, parts: _Parts, callbacks: list[TrainerCallback], guards: Guards
) -> BuildTrainer:
    """How this run's Trainer is built around a model and arguments: once at the start,
    and again after each out-of-memory back-off, with a new model and smaller batches."""
    cls = trainer_class(parts.expert)

    def build(model: Any, args: TrainingArguments) -> FlexTrainer:
        trainer = cls(
            model=model,
            args=args,
            train_dataset=parts.splits["train"],
            eval_dataset=parts.splits["eval"] if parts.has_eval else None,
            data_collator=parts.batching.collator,
            processing_class=parts.tokenizer,
            compute_metrics=parts.batching.compute_metrics,
            compute_loss_func=parts.expert.compute_loss_func,
            callbacks=callbacks,
            language_model=spec.objective in ("causal_lm", "masked_lm"),
            expert=parts.expert,
        )
        if parts.expert.curriculum is not None:
            apply_curriculum(trainer, parts.expert.curriculum)
        trainer.health = guards.monitor
        return trainer

    return build


def _evaluate_before_training(trainer: FlexTrainer) -> dict[str, Any]:
    """The scores before the first step, as `initial_eval_*`: the "before" number lets a
    user see what training bought them."""
    before = trainer.evaluate()
    return {f"initial_{k}": v for k, v in before.items() if k.startswith("eval_")}


def _train_to_the_end(
    spec: RunSpec,
    store: JobStore,
    session: _Session,
    build: BuildTrainer,
    progress: StoreProgressCallback,
    tokenizer: Any,
    guards: Guards,
) -> TrainOutput:
    """Train from the start or the session's checkpoint; out of memory, back off and go
    on while that is allowed (see _back_off); diverged with on_divergence=rollback, go
    back to the last checkpoint at half the learning rate (see _roll_back). A run
    stopped on request ends like a finished one, with its checkpoint saved; the caller
    tells the two apart."""
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    while True:
        if session.resume:
            print(f"[flextrain] resuming from {session.resume}", flush=True)
        finished = finished_training(session.resume)
        if finished is not None and session.resume is not None:
            return skip_finished_training(session.trainer, session.args, session.resume, finished)
        rollback: RollbackRequest | None = None
        try:
            return session.trainer.train(resume_from_checkpoint=session.resume)
        except RollbackRequest as request:
            rollback = request
        except TrainingDivergedError as exc:
            raise guards.diverged(exc, Path(spec.checkpoint_dir)) from None
        except Exception as exc:
            if not is_out_of_memory(exc) or progress.stopped_by_request:
                raise
            refuse_back_off(spec, session, exc)
            failure = type(exc).__name__
        # Outside the except block: the exception's traceback (which holds the trainer
        # and its model) is gone, so the old model can be freed before the new one is built.
        if rollback is not None:
            _roll_back(spec, store, session, build, tokenizer, guards, rollback)
        else:
            _back_off(spec, store, session, build, tokenizer, failure)


def _roll_back(
    spec: RunSpec,
    store: JobStore,
    session: _Session,
    build: BuildTrainer,
    tokenizer: Any,
    guards: Guards,
    request: RollbackRequest,
) -> None:
    """Set the session up to go on from the last checkpoint (or the start, with the
    model as built) at half the learning rate."""
    session.resume = guards.rolled_back(spec, store, request)
    del session.trainer
    free_memory()
    session.trainer = build(_model(spec, tokenizer), session.args)


def refuse_back_off(spec: RunSpec, session: _Session, exc: BaseException) -> None:
    """Raise OutOfMemoryAdvice, what to change, where no back-off is left or allowed: at
    micro-batch 1, with oom_recovery off, or with several processes (the other ranks
    are mid-collective)."""
    micro = session.args.per_device_train_batch_size
    accumulation = session.args.gradient_accumulation_steps
    if micro == 1 or not spec.config.oom_recovery or distributed.is_distributed():
        advice = out_of_memory_advice(spec.config, micro, accumulation)
        raise OutOfMemoryAdvice(advice) from exc


def _back_off(
    spec: RunSpec,
    store: JobStore,
    session: _Session,
    build: BuildTrainer,
    tokenizer: Any,
    failure: str,
) -> None:
    """Set the session up to go on at half the micro-batch and twice the accumulation (the
    same examples per optimizer step), from the last checkpoint or, without one, from
    the start with the model as it was built (the failed steps changed its weights)."""
    micro = session.args.per_device_train_batch_size
    accumulation = session.args.gradient_accumulation_steps
    latest = latest_checkpoint(Path(spec.checkpoint_dir))
    message = (
        f"Out of memory at micro-batch {micro} ({failure}); continuing "
        f"with micro-batch {micro // 2} x {accumulation * 2} accumulation (same "
        f"{micro * accumulation} examples per optimizer step) from "
        f"{latest.name if latest else 'the start'}."
    )
    print(f"[flextrain] {message}", flush=True)
    store.add_event(
        spec.job_id,
        "oom_backoff",
        message,
        level="warning",
        data={"batch_size": micro // 2, "gradient_accumulation_steps": accumulation * 2},
    )
    del session.trainer
    free_memory()
    model = _model(spec, tokenizer)
    session.args = halved_batch(session.args)
    session.trainer = build(model, session.args)
    session.resume = str(latest) if latest else None


def _result_metrics(result: TrainOutput, train_split: Any) -> dict[str, Any]:
    """train()'s own numbers and its mean loss, plus real tokens per second and peak
    memory: what runs are compared by, and the memory estimator checked against."""
    metrics = {k: v for k, v in result.metrics.items() if isinstance(v, int | float)}
    metrics["train_loss"] = result.training_loss
    metrics.update(throughput_and_memory(train_split["input_ids"], result.metrics))
    return metrics


def _early_stop_and_best(
    spec: RunSpec,
    store: JobStore,
    session: _Session,
    early: EarlyStoppingCallback | None,
    reporter: bool,
) -> dict[str, Any]:
    """Where the run stopped early (said in the log and as an event: otherwise a run that
    ends before max_steps looks cut short) and, when it keeps the best model, which."""
    state, args = session.trainer.state, session.args
    metrics: dict[str, Any] = {}
    if early is not None and early.early_stopping_patience_counter >= early.early_stopping_patience:
        best = state.best_metric
        message = (
            f"Stopped early at step {state.global_step} of {state.max_steps}: "
            f"{args.metric_for_best_model} did not improve for "
            f"{spec.config.early_stopping_patience} evaluations; "
            f"best {best:.4g} at {state.best_model_checkpoint}."
        )
        print(f"[flextrain] {message}", flush=True)
        if reporter:
            store.add_event(spec.job_id, "early_stopped", message, data={"best_metric": best})
        metrics["early_stopped_at_step"] = state.global_step
    if state.best_metric is not None and args.load_best_model_at_end:
        metrics["best_metric"] = state.best_metric
        metrics["best_checkpoint"] = state.best_model_checkpoint
    return metrics


def _final_evaluation(
    spec: RunSpec, store: JobStore, session: _Session, reporter: bool
) -> dict[str, Any]:
    """The trained model's held-out scores. The Trainer's own evaluation at the last step
    is reused when it is of the final weights (see last_evaluation): a second pass
    would cost as long for the same numbers."""
    if reporter:
        store.update(spec.job_id, status=TrainingStatus.EVALUATING)
    after = last_evaluation(session.trainer.state, session.args) or session.trainer.evaluate()
    if "eval_loss" in after and reporter:
        store.update(spec.job_id, eval_loss=after["eval_loss"])
    return {k: v for k, v in after.items() if isinstance(v, int | float)}
