"""Preference and reward training through the service: real TRL runs on the tiny Llama.

Each test checks what its method is for on held-out data (preference accuracy, the
reward margin, the mean reward), and that the saved model reloads to what trained.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.service import TrainingService
from tests.train.helpers import (
    assert_reload_matches,
    metric_series,
    run_job,
    write_keyword_preferences,
)

FAST = {
    "max_length": 32,
    "logging_steps": 2,
    "num_threads": 2,
    "save_total_limit": 1,
    "gradient_checkpointing": False,
}


def test_dpo_with_lora_learns_the_preferred_answers(
    service: TrainingService, tmp_path: Path
) -> None:
    data = write_keyword_preferences(tmp_path / "pairs.jsonl")
    cfg = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id=str(data),
        training_type=TrainingType.DPO,
        num_epochs=4,
        learning_rate=1e-2,
        batch_size=16,
        eval_split=0.2,
        eval_strategy="no",  # scored before and after, not per epoch
        **FAST,
    )
    job = run_job(service, cfg)
    m = job.metrics
    assert 0.25 <= m["initial_eval_preference_accuracy"] <= 0.75, m
    assert m["eval_preference_accuracy"] >= 0.9, m
    margins = metric_series(service, job.job_id, "rewards/margins")
    assert margins[-1] > margins[0] + 0.1, margins
    assert m["eval_rewards/margins"] > 0.1
    model_dir = Path(job.model_path or "")
    assert (model_dir / "adapter_model.safetensors").exists()
    assert_reload_matches(model_dir)

    # After training: the policy beside its base, on the pairs the job held out.
    scores = service.evaluate_model(job.job_id)
    assert (scores.split, scores.rows) == ("heldout", 40)
    assert scores.trained["preference_accuracy"] == m["eval_preference_accuracy"]
    assert scores.base["preference_accuracy"] == m["initial_eval_preference_accuracy"]
    assert scores.trained["logp_margin"] > scores.base["logp_margin"]
    tried = service.try_model(job.job_id, ["the soup was"], max_new_tokens=4)
    row = tried.rows[0]
    assert row.trained.generation is not None
    assert row.base.generation is not None


def _pairs_config(data: Path, ttype: TrainingType, **overrides: Any) -> AdvancedTrainingConfig:
    values: dict[str, Any] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": str(data),
        "training_type": ttype,
        "num_epochs": 3,
        "learning_rate": 1e-2,
        "batch_size": 16,
        "eval_split": 0.2,
        # Scored before and after training (the runner's own evaluation), not per epoch.
        "eval_strategy": "no",
        **FAST,
    }
    return AdvancedTrainingConfig(**{**values, **overrides})


def test_orpo_raises_held_out_preference_accuracy(service: TrainingService, tmp_path: Path) -> None:
    data = write_keyword_preferences(tmp_path / "pairs.jsonl")
    job = run_job(service, _pairs_config(data, TrainingType.ORPO))
    m = job.metrics
    assert m["eval_preference_accuracy"] >= m["initial_eval_preference_accuracy"] + 0.3, m
    assert m["eval_loss"] < m["initial_eval_loss"]
    assert metric_series(service, job.job_id, "log_odds_ratio")


def test_simpo_with_full_weights_raises_its_margin(
    service: TrainingService, tmp_path: Path
) -> None:
    data = write_keyword_preferences(tmp_path / "pairs.jsonl")
    cfg = _pairs_config(
        data, TrainingType.SIMPO, learning_rate=3e-3, preference={"use_lora": False}
    )
    job = run_job(service, cfg)
    m = job.metrics
    assert m["trainable_parameters"] == m["total_parameters"]
    assert m["eval_rewards/margins"] > m["initial_eval_rewards/margins"] + 0.1, m
    assert m["eval_preference_accuracy"] >= 0.9, m
    assert (Path(job.model_path or "") / "model.safetensors").exists()
    assert_reload_matches(Path(job.model_path or ""))


def test_kto_on_marked_answers_separates_good_from_bad(
    service: TrainingService, tmp_path: Path
) -> None:
    pairs = write_keyword_preferences(tmp_path / "pairs.jsonl")
    marked = tmp_path / "marked.jsonl"
    with marked.open("w") as fh:
        for i, line in enumerate(pairs.read_text().splitlines()):
            pair = json.loads(line)
            good = i % 2 == 0
            answer = pair["chosen"] if good else pair["rejected"]
            fh.write(json.dumps({"prompt": pair["prompt"], "completion": answer, "label": good}))
            fh.write("\n")
    job = run_job(service, _pairs_config(marked, TrainingType.KTO, num_epochs=4))
    m = job.metrics
    assert m["eval_loss"] < m["initial_eval_loss"] - 0.02, m
    assert m["eval_rewards/chosen"] > m["eval_rewards/rejected"], m


def _prompts(path: Path, rows: int = 128) -> Path:
    rng = __import__("random").Random(1)
    subjects = ["the soup", "the train", "the garden", "the market", "the river"]
    with path.open("w") as fh:
        for _ in range(rows):
            fh.write(json.dumps({"prompt": f"{rng.choice(subjects)} was"}) + "\n")
    return path


def test_grpo_raises_the_mean_reward_of_its_own_samples(
    service: TrainingService, tmp_path: Path
) -> None:
    # Rare at first (a few tokens of the 1k vocabulary hold these letters), learnable.
    cfg = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id=str(_prompts(tmp_path / "prompts.jsonl")),
        training_type=TrainingType.GRPO,
        max_steps=40,  # of 2 prompts x 8 completions: the reward is learnt by about step 30
        learning_rate=1e-2,
        batch_size=16,
        eval_split=0.0,
        preference={
            "use_lora": False,
            "num_generations": 8,
            "max_completion_length": 6,
            "rewards": [{"name": "contains", "pattern": "q|z|x"}],
        },
        **{**FAST, "logging_steps": 4},
    )
    job = run_job(service, cfg)
    rewards = metric_series(service, job.job_id, "reward")
    assert len(rewards) >= 6
    first, last = sum(rewards[:3]) / 3, sum(rewards[-3:]) / 3
    assert first < 0.4, rewards
    assert last > first + 0.4, rewards
    assert metric_series(service, job.job_id, "completions/mean_length")
    assert metric_series(service, job.job_id, "reward_std")
    assert_reload_matches(Path(job.model_path or ""))


def test_dpo_stops_early_once_held_out_reward_accuracy_stops_improving(
    service: TrainingService, tmp_path: Path
) -> None:
    data = write_keyword_preferences(tmp_path / "pairs.jsonl")
    cfg = _pairs_config(
        data,
        TrainingType.DPO,
        num_epochs=6,
        eval_strategy="steps",
        eval_steps=2,
        early_stopping_patience=2,
        metric_for_best_model="rewards/accuracies",
    )
    job = run_job(service, cfg)
    stopped = job.metrics["early_stopped_at_step"]
    assert stopped < job.total_steps, job.metrics
    assert job.metrics["best_metric"] == 1.0
    event = next(e for e in service.events(job.job_id) if e.kind == "early_stopped")
    assert "eval_rewards/accuracies did not improve for 2 evaluations" in event.message


def test_full_weight_dpo_against_precomputed_reference_log_probs(
    service: TrainingService, tmp_path: Path
) -> None:
    data = write_keyword_preferences(tmp_path / "pairs.jsonl")
    cfg = _pairs_config(
        data,
        TrainingType.DPO,
        learning_rate=3e-3,
        preference={"use_lora": False, "reference": "precomputed"},
    )
    job = run_job(service, cfg)
    m = job.metrics
    assert m["trainable_parameters"] == m["total_parameters"]
    assert m["eval_preference_accuracy"] >= m["initial_eval_preference_accuracy"] + 0.3, m
    # Rewards are measured against the precomputed log-probs: a margin means they were.
    assert m["eval_rewards/margins"] > m["initial_eval_rewards/margins"] + 0.1, m


def test_conversational_pairs_train_with_the_chat_template(
    service: TrainingService, tmp_path: Path
) -> None:
    pairs = write_keyword_preferences(tmp_path / "pairs.jsonl", rows=60)
    chats = tmp_path / "chats.jsonl"
    with chats.open("w") as fh:
        for line in pairs.read_text().splitlines():
            pair = json.loads(line)
            user = {"role": "user", "content": pair["prompt"]}
            # No prompt column: the shared first turn is the prompt (implicit prompt).
            row = {
                "chosen": [user, {"role": "assistant", "content": pair["chosen"]}],
                "rejected": [user, {"role": "assistant", "content": pair["rejected"]}],
            }
            fh.write(json.dumps(row) + "\n")
    job = run_job(service, _pairs_config(chats, TrainingType.DPO, max_steps=4, max_length=48))
    assert job.current_step == 4
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(job.model_path)
    assert "<|assistant|>" in (saved.chat_template or "")
