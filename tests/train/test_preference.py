"""KTO on marked answers, GRPO on its own samples, and early stopping of a preference run,
through the service on the tiny Llama (pairs: test_preference_pairs.py)."""

from __future__ import annotations

import json
from pathlib import Path

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.service import TrainingService
from tests.train.helpers import (
    PREFERENCE_FAST,
    assert_reload_matches,
    metric_series,
    preference_config,
    run_job,
    write_keyword_preferences,
)


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
    job = run_job(service, preference_config(marked, TrainingType.KTO, num_epochs=4))
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
        **{**PREFERENCE_FAST, "logging_steps": 4},
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
    cfg = preference_config(
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
