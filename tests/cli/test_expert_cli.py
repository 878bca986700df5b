"""`flextrain train --mode expert --config file.yaml` trains an expert job; a bad
expression is a message naming the field, not a traceback."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.cli.test_cli import home, invoke, job_id_of, show_json

__all__ = ["home"]  # the fixture, used by name

EXPERT_YAML = {
    "model_id": "flextrain/tiny-llama",
    "dataset_id": "demo/text",
    "training_type": "fine_tuning",
    "max_steps": 6,
    "batch_size": 8,
    "max_length": 32,
    "learning_rate": 0.003,
    "num_threads": 1,
    "eval_split": 0.0,
    "gradient_checkpointing": False,
    "loss": {"name": "focal", "focal_gamma": 1.0},
    "lr_schedule_expr": "lr * (1 - progress)",
}


def test_train_an_expert_job_from_a_yaml_file(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "expert.yaml"
    config.write_text(yaml.safe_dump(EXPERT_YAML))
    result = invoke("train", "--mode", "expert", "--config", str(config))
    assert result.exit_code == 0, result.output
    data = show_json(job_id_of(result))
    assert data["mode"] == "expert"
    assert data["status"] == "completed"
    assert data["config"]["loss"]["name"] == "focal"


def test_a_bad_expression_is_reported_by_field(home: Path, tmp_path: Path) -> None:
    config = tmp_path / "expert.yaml"
    config.write_text(yaml.safe_dump({**EXPERT_YAML, "lr_schedule_expr": "open('x')"}))
    result = invoke("train", "--config", str(config))  # expert keys: expert mode by itself
    assert result.exit_code == 2, result.output
    assert "lr_schedule_expr" in result.output
    assert "open" in result.output
    assert "Traceback" not in result.output
