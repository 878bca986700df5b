"""Preference and reward training from the command line: the method's own flags merge
with a config file's `preference`, the end report shows the preference scores, and a
bad reward flag is bad input (exit 2, no job)."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.cli.test_cli import TRAIN_FAST, flat, home, invoke, job_id_of, show_json

__all__ = ["home"]  # the fixture, used by name below


def test_dpo_from_flags_reports_preference_accuracy_before_and_after(
    home: Path, tmp_path: Path
) -> None:
    cfg = tmp_path / "dpo.yaml"
    cfg.write_text(yaml.safe_dump({"preference": {"label_smoothing": 0.1}, "max_steps": 6}))
    result = invoke(
        "train",
        *TRAIN_FAST,
        "--dataset",
        "demo/preferences",
        "--type",
        "dpo",
        "--config",
        str(cfg),
        "--beta",
        "0.2",
        "--loss-type",
        "robust",
        "--learning-rate",
        "0.005",
    )
    assert result.exit_code == 0, result.output
    text = flat(result)
    assert "initial_eval_preference_accuracy:" in text
    assert "eval_rewards/margins:" in text
    job = show_json(job_id_of(result))
    assert job["status"] == "completed"
    preference = job["config"]["preference"]
    assert (preference["beta"], preference["loss_type"]) == (0.2, "robust")
    assert preference["label_smoothing"] == 0.1  # the file's value stays beside the flags
    assert preference["use_lora"] is True


def test_a_grpo_reward_flag_without_its_argument_is_bad_input(home: Path) -> None:
    result = invoke(
        "train",
        *TRAIN_FAST,
        "--dataset",
        "demo/preferences",
        "--type",
        "grpo",
        "--reward",
        "length",
    )
    assert result.exit_code == 2, result.output
    assert "--reward: 'length' needs a length in characters" in flat(result)
    assert "Traceback" not in result.output
    assert invoke("jobs", "list", "--json").output.strip() in ("[]", "")


def test_grpo_reward_flags_become_reward_specs(home: Path, tmp_path: Path) -> None:
    cfg = tmp_path / "grpo.yaml"
    short = {"max_steps": 3, "eval_split": 0.0, "preference": {"max_completion_length": 4}}
    cfg.write_text(yaml.safe_dump(short))
    result = invoke(
        "train",
        *TRAIN_FAST,
        "--config",
        str(cfg),
        "--dataset",
        "demo/preferences",
        "--type",
        "grpo",
        "--reward",
        "contains:\\d",
        "--reward",
        "length:12",
        "--num-generations",
        "4",
        "--full-weights",
    )
    assert result.exit_code == 0, result.output
    job = show_json(job_id_of(result))
    assert (job["status"], job["current_step"]) == ("completed", 3)
    preference = job["config"]["preference"]
    assert preference["max_completion_length"] == 4
    assert preference["rewards"][0] == {
        "name": "contains",
        "pattern": "\\d",
        "target_length": None,
        "weight": 1.0,
    }
    assert preference["rewards"][1]["target_length"] == 12
    assert preference["use_lora"] is False
    assert preference["num_generations"] == 4
