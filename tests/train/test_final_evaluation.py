"""The final evaluation reuses the Trainer's evaluation of the last step when that was of
the same weights, and evaluates again otherwise (a best checkpoint loaded at the end)."""

from __future__ import annotations

from typing import Any

from transformers import TrainingArguments
from transformers.trainer_callback import TrainerState

from flextrain.train.metrics import last_evaluation

EVAL = {"eval_loss": 0.52, "eval_accuracy": 0.78, "eval_runtime": 0.4, "epoch": 2.0}


def _state(history: list[dict[str, Any]], step: int, best: str | None = None) -> TrainerState:
    state = TrainerState(global_step=step, max_steps=step)
    state.log_history = history
    state.best_model_checkpoint = best
    return state


def _args(tmp_path: Any, **kwargs: Any) -> TrainingArguments:
    return TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", **kwargs)


def test_the_last_steps_evaluation_is_the_final_one(tmp_path: Any) -> None:
    history = [
        {"loss": 0.69, "step": 10},
        {**EVAL, "eval_loss": 0.6, "step": 23},
        {"loss": 0.6, "step": 40},
        {**EVAL, "step": 46},
        {"train_runtime": 7.5, "train_loss": 0.65, "step": 46},
    ]
    assert last_evaluation(_state(history, 46), _args(tmp_path)) == EVAL


def test_no_evaluation_at_the_last_step_means_a_new_one(tmp_path: Any) -> None:
    history = [{**EVAL, "step": 40}, {"loss": 0.6, "step": 46}, {"train_runtime": 7.5, "step": 46}]
    assert last_evaluation(_state(history, 46), _args(tmp_path)) is None
    assert last_evaluation(_state([], 46), _args(tmp_path)) is None


def test_a_best_checkpoint_loaded_at_the_end_is_evaluated_again(tmp_path: Any) -> None:
    history = [{**EVAL, "step": 23}, {**EVAL, "step": 46}, {"train_runtime": 7.5, "step": 46}]
    keep_best = _args(
        tmp_path, load_best_model_at_end=True, eval_strategy="epoch", save_strategy="epoch"
    )
    earlier = _state(history, 46, best=str(tmp_path / "checkpoint-23"))
    assert last_evaluation(earlier, keep_best) is None
    last = _state(history, 46, best=str(tmp_path / "checkpoint-46"))
    assert last_evaluation(last, keep_best) == EVAL
