"""Preference training on pairs through the service: real TRL runs (DPO, ORPO, SimPO) on
the tiny Llama.

Each test checks what its method is for on held-out pairs (preference accuracy, the
reward margin), and that the saved model reloads to what trained.
"""

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
        **PREFERENCE_FAST,
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


def test_orpo_raises_held_out_preference_accuracy(service: TrainingService, tmp_path: Path) -> None:
    data = write_keyword_preferences(tmp_path / "pairs.jsonl")
    job = run_job(service, preference_config(data, TrainingType.ORPO))
    m = job.metrics
    assert m["eval_preference_accuracy"] >= m["initial_eval_preference_accuracy"] + 0.3, m
    assert m["eval_loss"] < m["initial_eval_loss"]
    assert metric_series(service, job.job_id, "log_odds_ratio")


def test_simpo_with_full_weights_raises_its_margin(
    service: TrainingService, tmp_path: Path
) -> None:
    data = write_keyword_preferences(tmp_path / "pairs.jsonl")
    cfg = preference_config(
        data, TrainingType.SIMPO, learning_rate=3e-3, preference={"use_lora": False}
    )
    job = run_job(service, cfg)
    m = job.metrics
    assert m["trainable_parameters"] == m["total_parameters"]
    assert m["eval_rewards/margins"] > m["initial_eval_rewards/margins"] + 0.1, m
    assert m["eval_preference_accuracy"] >= 0.9, m
    assert (Path(job.model_path or "") / "model.safetensors").exists()
    assert_reload_matches(Path(job.model_path or ""))


def test_full_weight_dpo_against_precomputed_reference_log_probs(
    service: TrainingService, tmp_path: Path
) -> None:
    data = write_keyword_preferences(tmp_path / "pairs.jsonl")
    cfg = preference_config(
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
    job = run_job(service, preference_config(chats, TrainingType.DPO, max_steps=4, max_length=48))
    assert job.current_step == 4
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(job.model_path)
    assert "<|assistant|>" in (saved.chat_template or "")
