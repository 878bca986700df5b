"""One training run, start to finish, with transformers Trainer (+ peft)."""

from __future__ import annotations

import gc
import json
import math
import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import (
    DataCollatorForLanguageModeling,
    DataCollatorForSeq2Seq,
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    EvalPrediction,
    Trainer,
    TrainingArguments,
)
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, TrainOutput, rotate_checkpoints

from flextrain.config.enums import TrainingStatus
from flextrain.config.validation import best_metric_name
from flextrain.data.prepare import DEFAULT_CHAT_TEMPLATE, IGNORE_INDEX, TEMPLATED_SHAPES
from flextrain.hardware.usage import peak_rss_bytes
from flextrain.jobs import oom
from flextrain.jobs.checkpoints import (
    STAGING_PREFIX,
    disk_full_message,
    is_disk_full,
    latest_checkpoint,
)
from flextrain.jobs.spec import RunSpec
from flextrain.jobs.store import JobStore
from flextrain.train import distributed
from flextrain.train.callbacks import JobCancelledError, StopRequest, StoreProgressCallback
from flextrain.train.compat import checkpointing_arguments
from flextrain.train.data import load_splits
from flextrain.train.expert import ExpertSetup
from flextrain.train.expert import prepare as prepare_expert
from flextrain.train.hooks import apply_curriculum
from flextrain.train.model import build_model, load_tokenizer
from flextrain.train.packing import (
    PackingCollator,
    packing_is_exact,
    sparse_logits_are_exact,
)
from flextrain.train.tracking import configure_tracking, log_final_model, mlflow_run


def classification_metrics(prediction: EvalPrediction) -> dict[str, float]:
    """Accuracy and macro F1 (the mean of per-class F1: a rare class counts as much as a
    common one, which accuracy hides on unbalanced labels)."""
    logits = prediction.predictions
    if isinstance(logits, tuple):
        logits = logits[0]
    predicted = np.asarray(logits).argmax(axis=-1)
    labels = np.asarray(prediction.label_ids)
    f1s = []
    for cls in np.union1d(labels, predicted):
        tp = float(np.sum((predicted == cls) & (labels == cls)))
        fp = float(np.sum((predicted == cls) & (labels != cls)))
        fn = float(np.sum((predicted != cls) & (labels == cls)))
        f1s.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return {"accuracy": float((predicted == labels).mean()), "f1": float(np.mean(f1s))}


class FlexTrainer(Trainer):
    """Trainer that also reports perplexity wherever a language model's eval loss is logged
    (history, job metrics, and the best-model choice, which reads the same dict)."""

    def __init__(
        self,
        *args: Any,
        language_model: bool = False,
        expert: ExpertSetup | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.language_model = language_model
        self.expert = expert or ExpertSetup()
        self._staging_dir: str | None = None

    # Checkpoints are written whole or not at all. The Trainer writes `checkpoint-N`
    # file by file, so a full disk or a kill half-way left a folder with the final
    # name. Here it writes into `tmp-checkpoint-N/` (its run folder while saving),
    # which is renamed to `checkpoint-N` once complete; a failed save is removed, and
    # a full disk says what was kept and what to do.
    def _get_output_dir(self, trial: Any) -> str:
        return self._staging_dir or super()._get_output_dir(trial)

    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        run_dir = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging = os.path.join(run_dir, f"{STAGING_PREFIX}{self.state.global_step}")
        final, staged = os.path.join(run_dir, name), os.path.join(staging, name)
        main = self.args.should_save  # the process that writes the shared files
        if main:  # a save a kill interrupted: nothing in it is wanted
            for stale in Path(run_dir).glob(f"{STAGING_PREFIX}*"):
                shutil.rmtree(stale, ignore_errors=True)
        self.accelerator.wait_for_everyone()
        self._staging_dir = staging
        try:
            super()._save_checkpoint(model, trial)  # its rotation sees only the staged one
            self.accelerator.wait_for_everyone()  # every rank's RNG state is in
            if main:
                if self.state.best_model_checkpoint == staged:  # this one is the best
                    self.state.best_model_checkpoint = final
                    self.state.save_to_json(os.path.join(staged, TRAINER_STATE_NAME))
                if os.path.isdir(final):  # the same step saved before (the Trainer overwrote)
                    shutil.rmtree(final)
                os.replace(staged, final)
                os.rmdir(staging)
        except Exception as exc:
            disk_full = is_disk_full(exc, Path(run_dir))
            if main:
                shutil.rmtree(staging, ignore_errors=True)
            if disk_full:
                raise CheckpointDiskFullError(
                    disk_full_message(Path(run_dir), self.state.global_step)
                ) from exc
            raise
        finally:
            self._staging_dir = None
        if main:
            rotate_checkpoints(
                output_dir=run_dir,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
                use_mtime=True,
            )
        self.accelerator.wait_for_everyone()

    # Expert mode through the Trainer's own extension points: what it builds is then
    # checkpointed, resumed and logged like the defaults.
    def create_optimizer(self, model: Any = None) -> Any:
        if self.expert.optimizer is not None and self.optimizer is None:
            target = self.model if model is None else model
            assert target is not None
            self.optimizer = self.expert.optimizer(target)
            return self.optimizer
        return super().create_optimizer(model)

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
        if self.expert.schedule is not None and self.lr_scheduler is None:
            chosen = optimizer or self.optimizer
            assert chosen is not None, "create_optimizer runs first"
            self.lr_scheduler = self.expert.schedule(chosen, num_training_steps)
            self._created_lr_scheduler = True
            return self.lr_scheduler
        return super().create_scheduler(num_training_steps, optimizer)

    def compute_loss(
        self,
        model: Any,
        inputs: dict[str, Any],
        return_outputs: bool = False,
        num_items_in_batch: Any = None,
    ) -> Any:
        if self.expert.user_loss is None:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        # The user's function returns a per-batch mean, like a model's own loss.
        self.loss_is_scaled_for_ga = False
        outputs = model(**inputs)
        loss = self.expert.user_loss(model, inputs, outputs)
        return (loss, outputs) if return_outputs else loss

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        # Fault injection for the tests of out-of-memory back-off (CI has no GPU to fill).
        limit = os.environ.get("FLEXTRAIN_FAULT_OOM_ABOVE_BATCH")
        if limit and self.args.per_device_train_batch_size > int(limit):
            raise torch.OutOfMemoryError(
                "CUDA out of memory. (injected: FLEXTRAIN_FAULT_OOM_ABOVE_BATCH)"
            )
        return super().training_step(*args, **kwargs)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        if self.language_model:
            for key in [k for k in logs if k.endswith("eval_loss")]:
                # exp() overflows past ~709; a loss that high means "no model" anyway.
                logs[key.replace("eval_loss", "eval_perplexity")] = math.exp(min(logs[key], 700))
        super().log(logs, start_time)


def _throughput_and_memory(
    input_ids: list[list[int]], train_metrics: dict[str, Any]
) -> dict[str, float]:
    """Real tokens per second and peak memory: what the estimator is checked against."""
    out: dict[str, float] = {}
    runtime = float(train_metrics.get("train_runtime") or 0.0)
    epochs = float(train_metrics.get("epoch") or 0.0)
    if runtime > 0:
        tokens = sum(len(ids) for ids in input_ids) * epochs
        out["train_tokens_per_second"] = tokens / runtime
    # The process's own peak resident memory so far (VmHWM, see peak_rss_bytes).
    out["peak_rss_gb"] = peak_rss_bytes() / 1024**3
    if torch.cuda.is_available():
        out["peak_gpu_allocated_gb"] = torch.cuda.max_memory_allocated() / 1024**3
        out["peak_gpu_reserved_gb"] = torch.cuda.max_memory_reserved() / 1024**3
    return out


def output_probe(model: Any, tokenizer: Any, sequences: list[list[int]]) -> dict[str, Any]:
    """A few output values of the trained model on fixed inputs.

    Stored beside the saved model so anyone (our tests included) can check that
    what was saved reproduces what was trained.
    """
    model.eval()
    device = next(model.parameters()).device
    batch = tokenizer.pad({"input_ids": sequences}, return_tensors="pt").to(device)
    with torch.no_grad():
        logits = model(**batch).logits
    return {"input_ids": sequences, "logits_head": logits.float().flatten()[:32].tolist()}


# Metrics where higher is better; the rest (loss, perplexity) are better lower.
GREATER = ("accuracy", "f1")


def training_arguments(
    spec: RunSpec,
    has_eval: bool,
    supports_gc: bool,
    report_to: list[str] | None = None,
    *,
    grouped: bool = False,
    distributed: dict[str, Any] | None = None,
) -> TrainingArguments:
    """Map the run spec onto TrainingArguments (the one place knob names meet)."""
    cfg = spec.config
    warmup: float = cfg.warmup_steps if cfg.warmup_steps > 0 else cfg.warmup_ratio
    eval_strategy = cfg.eval_strategy if has_eval else "no"
    save_strategy = "steps" if cfg.save_steps else "epoch"
    save_steps = cfg.save_steps or 500
    keep_best = has_eval and (cfg.load_best_model_at_end or cfg.early_stopping_patience is not None)
    # A metric named alone still makes the Trainer track (and its rotation keep) the best
    # checkpoint, which `jobs checkpoints` marks.
    tracks_best = keep_best or (has_eval and cfg.metric_for_best_model is not None)
    metric = best_metric_name(cfg)
    if keep_best:
        # The Trainer can only pick a best model among evaluated checkpoints: save
        # when it evaluates (at a multiple of eval_steps).
        save_strategy = eval_strategy
        if eval_strategy == "steps" and cfg.eval_steps:
            multiple = cfg.save_steps and cfg.save_steps % cfg.eval_steps == 0
            save_steps = cfg.save_steps if multiple else cfg.eval_steps  # type: ignore[assignment]
    return TrainingArguments(
        output_dir=spec.checkpoint_dir,
        run_name=cfg.run_name or spec.job_id,
        num_train_epochs=cfg.num_epochs,
        max_steps=cfg.max_steps,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.train_batch_size,
        per_device_eval_batch_size=cfg.eval_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        weight_decay=cfg.weight_decay,
        adam_beta1=cfg.adam_beta1,
        adam_beta2=cfg.adam_beta2,
        adam_epsilon=cfg.adam_epsilon,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=warmup,
        max_grad_norm=cfg.max_grad_norm,
        optim=_optimizer(cfg),
        torch_compile=cfg.torch_compile,
        label_smoothing_factor=cfg.label_smoothing_factor,
        fp16=spec.precision == "fp16",
        bf16=spec.precision == "bf16",
        **checkpointing_arguments(cfg.gradient_checkpointing and supports_gc),
        logging_steps=cfg.logging_steps,
        logging_first_step=True,
        eval_strategy=eval_strategy,
        eval_steps=cfg.eval_steps if eval_strategy == "steps" else None,
        save_strategy=save_strategy,
        save_steps=save_steps,
        save_total_limit=cfg.save_total_limit,
        load_best_model_at_end=keep_best,
        metric_for_best_model=f"eval_{metric}" if tracks_best else None,
        greater_is_better=(
            cfg.greater_is_better if cfg.greater_is_better is not None else metric in GREATER
        )
        if tracks_best
        else None,
        # Counted from the attention mask: the tokens/s a user compares is real tokens.
        include_num_input_tokens_seen="non_padding",
        # Batches of similar lengths: dynamic padding then pads little.
        train_sampling_strategy="group_by_length" if grouped else "random",
        seed=cfg.seed,
        data_seed=cfg.seed,
        dataloader_num_workers=_dataloader_workers(cfg, spec.num_threads),
        # Page-locked batches copy to the GPU asynchronously; nothing to gain on CPU.
        dataloader_pin_memory=torch.cuda.is_available(),
        use_cpu=not torch.cuda.is_available(),
        report_to=report_to or "none",
        disable_tqdm=True,
        **(distributed or {}),
    )


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
    with mlflow_run(report_to, tracking_env, run_name=run_name) as mlflow_run_id:
        metrics = _train(spec, store, stop, report_to)
        log_final_model(mlflow_run_id, Path(spec.model_dir))
    return metrics


def _train(
    spec: RunSpec, store: JobStore, stop: StopRequest | None, report_to: list[str]
) -> dict[str, Any]:
    torch.set_num_threads(spec.num_threads)
    cfg = spec.config
    reporter = distributed.is_reporter()
    distributed.init_process_group(cfg.distributed_timeout)
    tokenizer = load_tokenizer(spec)
    with distributed.rank_zero_first():
        splits = load_splits(spec, tokenizer)
    model, fresh = build_model(spec, tokenizer)
    if fresh:
        print(f"Newly initialised modules (trained in full): {', '.join(fresh)}")
    expert = prepare_expert(spec, model, splits["train"])
    for note in expert.notes:
        print(f"[flextrain] expert: {note}", flush=True)

    packed = False
    if spec.objective == "sequence_classification":
        collator: Any = DataCollatorWithPadding(tokenizer)
        compute_metrics: Any = classification_metrics
    elif "labels" in splits["train"].column_names:
        compute_metrics = None
        packed = cfg.packing is not False and packing_is_exact(model, len(tokenizer))
        if packed:
            sparse = sparse_logits_are_exact(model, len(tokenizer))
            collator = PackingCollator(tokenizer.pad_token_id, cfg.max_length, sparse)
            print(
                "[flextrain] packing: several examples per row, each attending only to itself"
                + ("; logits only where a token is predicted" if sparse else ""),
                flush=True,
            )
        else:
            if cfg.packing:
                print(
                    "[flextrain] packing: off, this model's attention does not keep packed "
                    "examples apart; padding each batch to its longest example instead",
                    flush=True,
                )
            # Prepared data carries its own labels (-100 on the prompt); the LM collator
            # would overwrite them with a copy of input_ids, so pad them with -100 instead.
            collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)
    else:
        collator = DataCollatorForLanguageModeling(
            tokenizer, mlm=spec.objective == "masked_lm", mlm_probability=0.15
        )
        compute_metrics = None

    has_eval = "eval" in splits
    supports_gc = bool(getattr(model, "supports_gradient_checkpointing", True))
    args = training_arguments(
        spec,
        has_eval,
        supports_gc,
        report_to,
        grouped=cfg.group_by_length and not packed,
        distributed=distributed.strategy_arguments(cfg, model),
    )
    progress = StoreProgressCallback(
        store,
        spec.job_id,
        stop=stop,
        samples_per_step=cfg.train_batch_size
        * cfg.gradient_accumulation_steps
        * distributed.world_size(),
        objective=spec.objective,
        reporter=reporter,
    )
    callbacks: list[Any] = [progress, *expert.callbacks]
    early: EarlyStoppingCallback | None = None
    if has_eval and cfg.early_stopping_patience is not None:
        early = EarlyStoppingCallback(cfg.early_stopping_patience, cfg.early_stopping_threshold)
        callbacks.append(early)

    trainer_class: type[FlexTrainer] = FlexTrainer
    if expert.trainer_class is not None:
        # The user's subclass first: its overrides win, flextrain's reporting stays.
        trainer_class = type("ExpertTrainer", (expert.trainer_class, FlexTrainer), {})

    def make_trainer(model: Any, args: TrainingArguments) -> FlexTrainer:
        trainer = trainer_class(
            model=model,
            args=args,
            train_dataset=splits["train"],
            eval_dataset=splits["eval"] if has_eval else None,
            data_collator=collator,
            processing_class=tokenizer,
            compute_metrics=compute_metrics,
            compute_loss_func=expert.compute_loss_func,
            callbacks=callbacks,
            language_model=spec.objective in ("causal_lm", "masked_lm"),
            expert=expert,
        )
        if expert.curriculum is not None:
            apply_curriculum(trainer, expert.curriculum)
        return trainer

    trainer = make_trainer(model, args)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    print(f"Trainable parameters: {trainable:,} of {total:,} ({100 * trainable / total:.2f}%)")
    metrics: dict[str, Any] = {
        "train_rows": len(splits["train"]),
        "eval_rows": len(splits["eval"]) if has_eval else 0,
        "trainable_parameters": trainable,
        "total_parameters": total,
    }
    resume = spec.resume_from_checkpoint
    if has_eval and cfg.evaluate_before_training and not resume:
        # The "before" number lets a user see what training bought them.
        before = trainer.evaluate()
        metrics.update({f"initial_{k}": v for k, v in before.items() if k.startswith("eval_")})
        if reporter:
            store.merge_metrics(spec.job_id, metrics)

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    while True:
        if resume:
            print(f"[flextrain] resuming from {resume}", flush=True)
        finished = _finished_training(resume)
        if finished is not None and resume is not None:
            # Killed after its last step's checkpoint, before the end: train() would take
            # one optimizer step past max_steps; only the weights are needed (the best
            # ones, when the run keeps the best).
            kept = finished.best_model_checkpoint
            use_best = args.load_best_model_at_end and kept and Path(kept).is_dir()
            trainer._load_from_checkpoint(str(kept) if use_best else resume)
            trainer.state = finished
            print(
                f"[flextrain] {Path(resume or '').name} is the last step "
                f"({finished.global_step} of {finished.max_steps}): nothing left to train",
                flush=True,
            )
            result = TrainOutput(finished.global_step, _last_train_loss(finished), {})
            break
        try:
            result = trainer.train(resume_from_checkpoint=resume)
            break
        except Exception as exc:
            micro, accumulation = args.per_device_train_batch_size, args.gradient_accumulation_steps
            if not is_out_of_memory(exc) or progress.stopped_by_request:
                raise
            if micro == 1 or not cfg.oom_recovery or distributed.is_distributed():
                # No back-off left (or not allowed; with several processes the other
                # ranks are mid-collective): fail with what to change.
                raise OutOfMemoryAdvice(out_of_memory_advice(cfg, micro, accumulation)) from exc
            # Back off: half the micro-batch, twice the accumulation (the same examples per
            # optimizer step), from the last checkpoint or, without one, from the start
            # with the model as it was built (the failed steps changed its weights).
            latest = latest_checkpoint(Path(spec.checkpoint_dir))
            message = (
                f"Out of memory at micro-batch {micro} ({type(exc).__name__}); continuing "
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
            del trainer, model
            _free_memory()
            model, _ = build_model(spec, tokenizer)
            args = replace(
                args,
                per_device_train_batch_size=micro // 2,
                gradient_accumulation_steps=accumulation * 2,
            )
            trainer = make_trainer(model, args)
            resume = str(latest) if latest else None
    model = trainer.model
    if progress.stopped_by_request:
        raise JobCancelledError(stop.reason if stop else "cancelled")
    metrics.update({k: v for k, v in result.metrics.items() if isinstance(v, int | float)})
    metrics["train_loss"] = result.training_loss
    metrics.update(_throughput_and_memory(splits["train"]["input_ids"], result.metrics))
    if early is not None and early.early_stopping_patience_counter >= early.early_stopping_patience:
        best = trainer.state.best_metric
        message = (
            f"Stopped early at step {trainer.state.global_step} of {trainer.state.max_steps}: "
            f"{args.metric_for_best_model} did not improve for {cfg.early_stopping_patience} "
            f"evaluations; best {best:.4g} at {trainer.state.best_model_checkpoint}."
        )
        print(f"[flextrain] {message}", flush=True)
        if reporter:
            store.add_event(spec.job_id, "early_stopped", message, data={"best_metric": best})
        metrics["early_stopped_at_step"] = trainer.state.global_step
    if trainer.state.best_metric is not None and args.load_best_model_at_end:
        metrics["best_metric"] = trainer.state.best_metric
        metrics["best_checkpoint"] = trainer.state.best_model_checkpoint

    if has_eval:
        if reporter:
            store.update(spec.job_id, status=TrainingStatus.EVALUATING)
        after = last_evaluation(trainer.state, args) or trainer.evaluate()
        metrics.update({k: v for k, v in after.items() if isinstance(v, int | float)})
        if "eval_loss" in after and reporter:
            store.update(spec.job_id, eval_loss=after["eval_loss"])

    model_dir = Path(spec.model_dir)
    trainer.save_model(str(model_dir))  # every rank: FSDP gathers the shards to rank 0
    if not reporter:
        return metrics
    metrics["world_size"] = distributed.world_size()
    if _rendered_with_default_template(spec, tokenizer):
        # The model learnt this format: save it so apply_chat_template prompts it the same way.
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    tokenizer.save_pretrained(str(model_dir))
    probe = output_probe(model, tokenizer, [splits["train"][i]["input_ids"] for i in range(2)])
    (model_dir / "flextrain.json").write_text(
        json.dumps(
            {
                "job_id": spec.job_id,
                "training_type": spec.config.training_type.value,
                "objective": spec.objective,
                "base_model": spec.config.model_id,
                "base_model_path": spec.model_path,
                "adapter": spec.config.training_type.value == "lora_adaptation",
                "labels": spec.data.labels,
                "metrics": metrics,
                "probe": probe,
            },
            indent=2,
        )
    )
    store.merge_metrics(spec.job_id, metrics)
    return metrics


def last_evaluation(state: TrainerState, args: TrainingArguments) -> dict[str, float] | None:
    """The evaluation the Trainer made at the run's last step, when the model is still the
    one it evaluated (no best checkpoint loaded in its place); None otherwise.

    With an evaluation per epoch (the default) the last one is of the final weights on
    the same held-out rows, so evaluating again would repeat a whole pass for the same
    numbers (0.5 s of the demo job on 2 CPU cores; docs/benchmarks.md). Every rank sees
    the same log history, so a multi-process run makes the same choice on each.
    """
    best = state.best_model_checkpoint
    if args.load_best_model_at_end and best and not best.endswith(f"-{state.global_step}"):
        return None  # the best checkpoint's weights were loaded: evaluate those
    for entry in reversed(state.log_history):  # the last step's logs: loss, eval, summary
        if entry.get("step") != state.global_step:
            return None
        if "eval_loss" in entry:
            return {k: v for k, v in entry.items() if k != "step"}
    return None


def _finished_training(checkpoint: str | None) -> TrainerState | None:
    """The checkpoint's trainer state when it was saved at the run's last step."""
    if checkpoint is None:
        return None
    try:
        state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    except (OSError, ValueError):
        return None
    return state if state.max_steps and state.global_step >= state.max_steps else None


def _last_train_loss(state: TrainerState) -> float:
    """The mean of the logged training losses (what train() reports), NaN without any."""
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    return float(sum(losses) / len(losses)) if losses else float("nan")


def _optimizer(cfg: Any) -> str:
    """The configured optimizer; unless one was chosen, AdamW's fused kernel (the same
    update in one pass over all parameters: on this CPU 1.4 ms a step for 3.4M parameters
    against 6.8 ms for the per-tensor loop, on a GPU one launch instead of several each).
    A plain `Trainer` defaults to it too, so not using it would lose to the baseline."""
    chosen = "optim" in cfg.model_fields_set or cfg.optim != "adamw_torch"
    if not chosen and _fused_adamw_supported():
        return "adamw_torch_fused"
    return str(cfg.optim)


def _dataloader_workers(cfg: Any, threads: int) -> int:
    """Batch-preparing processes: the configured number, else none on CPU (the collators
    are light, and a worker would take a core from the training threads) and, with a
    GPU, up to 4 from the cores this process was given (the GPU waits on slow batches)."""
    if cfg.dataloader_num_workers is not None:
        return int(cfg.dataloader_num_workers)
    if not torch.cuda.is_available():
        return 0
    return max(0, min(4, threads - 1))


def _fused_adamw_supported() -> bool:
    """Whether torch has the fused AdamW kernel for the device training will use."""
    try:
        from torch.optim.optimizer import _get_fused_kernels_supported_devices
    except ImportError:  # a private helper; without it keep the portable loop
        return False
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return device in _get_fused_kernels_supported_devices()


class CheckpointDiskFullError(OSError):
    """A checkpoint did not fit on the disk; the message says what was kept and the fix."""


class OutOfMemoryAdvice(RuntimeError):
    """The run ran out of memory and was not (or no longer) recovered: what to change."""


def out_of_memory_advice(cfg: Any, micro: int, accumulation: int) -> str:
    """The message a user can act on, instead of an allocator's stack trace."""
    why = (
        "already at micro-batch 1"
        if micro == 1
        else "oom_recovery is off"
        if not cfg.oom_recovery
        else "recovery is not done with several processes"
    )
    return oom.out_of_memory_advice(cfg.model_dump(mode="json"), micro, accumulation, why)


def is_out_of_memory(exc: BaseException) -> bool:
    """CUDA/MPS/XPU out-of-memory errors, the CPU allocator's failure, Python's MemoryError
    (accelerate's list of messages, which auto_find_batch_size also relies on)."""
    from accelerate.utils.memory import should_reduce_batch_size

    return isinstance(exc, MemoryError | torch.OutOfMemoryError) or (
        isinstance(exc, Exception) and should_reduce_batch_size(exc)
    )


def _free_memory() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _rendered_with_default_template(spec: RunSpec, tokenizer: Any) -> bool:
    if spec.objective != "causal_lm" or getattr(tokenizer, "chat_template", None):
        return False
    return spec.data.shape in TEMPLATED_SHAPES
