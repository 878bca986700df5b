"""Resuming from a checkpoint saved at the run's last step.

A worker killed after its last checkpoint but before the end (the final evaluation
or save) is resumed at max_steps. `Trainer.train` would then take one optimizer step
past max_steps, so the weights are loaded instead and training is skipped.
"""

from __future__ import annotations

from pathlib import Path

from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import TrainerState
from transformers.trainer_utils import TrainOutput


def finished_training(checkpoint: str | None) -> TrainerState | None:
    """The checkpoint's trainer state when it was saved at the run's last step."""
    if checkpoint is None:
        return None
    try:
        state = TrainerState.load_from_json(str(Path(checkpoint) / "trainer_state.json"))
    except (OSError, ValueError):
        return None
    return state if state.max_steps and state.global_step >= state.max_steps else None


def last_train_loss(state: TrainerState) -> float:
    """The mean of the logged training losses (what train() reports), NaN without any."""
    losses = [e["loss"] for e in state.log_history if "loss" in e]
    return float(sum(losses) / len(losses)) if losses else float("nan")


def skip_finished_training(
    trainer: Trainer, args: TrainingArguments, checkpoint: str, finished: TrainerState
) -> TrainOutput:
    """Load the finished run's weights (the best ones, when the run keeps the best) and
    state into `trainer`; what `train()` would have returned, without its metrics.

    `_load_from_checkpoint` is private: it is the loader `train()` itself resumes with,
    which knows every checkpoint layout the Trainer writes. tests/train/
    test_trainer_overrides.py checks that it is still there, taking the same arguments.
    """
    kept = finished.best_model_checkpoint
    use_best = args.load_best_model_at_end and kept and Path(kept).is_dir()
    trainer._load_from_checkpoint(str(kept) if use_best else checkpoint)
    trainer.state = finished
    print(
        f"[flextrain] {Path(checkpoint).name} is the last step "
        f"({finished.global_step} of {finished.max_steps}): nothing left to train",
        flush=True,
    )
    return TrainOutput(finished.global_step, last_train_loss(finished), {})
