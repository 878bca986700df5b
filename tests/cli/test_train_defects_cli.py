"""`flextrain train` as a new user met it (issue 19): each defect found, through the CLI.

One real run covers what only a run shows: an advanced config with
per_device_train_batch_size alone starts, eval_steps alone evaluates at those
steps, `jobs checkpoints` marks a best checkpoint, and the log a user reads holds
no library deprecation warnings.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import Result
from typer.testing import CliRunner

from flextrain.cli.main import app
from flextrain.config.enums import TrainingStatus
from flextrain.service import TrainingService
from flextrain.settings import Settings

TINY = ["--model", "flextrain/tiny-llama", "--dataset", "demo/text", "--type", "fine_tuning"]


@pytest.fixture
def cli_service(
    tmp_path: Path, models_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[TrainingService]:
    home = tmp_path / "home"
    monkeypatch.setenv("FLEXTRAIN_HOME", str(home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(models_cache))
    monkeypatch.setenv("COLUMNS", "400")
    service = TrainingService(Settings(home=home, models_cache=models_cache))
    yield service
    for job in service.list_jobs():
        if not job.is_finished:
            service.cancel_job(job.job_id)
    service.engine.dispose()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def write(path: Path, values: dict[str, object]) -> Path:
    path.write_text(yaml.safe_dump(values))
    return path


def test_an_advanced_file_with_per_device_batch_size_alone_trains(
    cli_service: TrainingService, tmp_path: Path
) -> None:
    config = write(
        tmp_path / "adv.yaml",
        {
            "per_device_train_batch_size": 4,
            "eval_steps": 2,
            "save_steps": 2,
            "save_total_limit": None,
            "max_steps": 4,
            "max_length": 32,
            "logging_steps": 1,
            "learning_rate": 3e-3,
            "num_threads": 1,
            "evaluate_before_training": False,
        },
    )
    result = invoke("train", *TINY, "--mode", "advanced", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "Completed." in result.output
    (job,) = cli_service.list_jobs()
    assert job.status == TrainingStatus.COMPLETED
    spec = json.loads(cli_service.environment(job.job_id).config_file.read_text())
    assert spec["config"]["per_device_train_batch_size"] == 4
    # eval_steps alone evaluates every 2 steps (it was per epoch, the value ignored).
    history = cli_service.metric_history(job.job_id)
    assert sorted({r["step"] for r in history if "eval_loss" in r}) == [2, 4]
    # The checkpoints table marks the best one (the column was empty on every job).
    listed = invoke("jobs", "checkpoints", job.job_id, "--json")
    assert listed.exit_code == 0, listed.output
    checkpoints = json.loads(listed.stdout)["checkpoints"]
    assert [c["step"] for c in checkpoints] == [2, 4]
    best = min(checkpoints, key=lambda c: c["eval_loss"])
    assert [c["step"] for c in checkpoints if c["is_best"]] == [best["step"]]
    table = invoke("jobs", "checkpoints", job.job_id)
    assert any(row.rstrip(" │").endswith("*") for row in table.output.splitlines()), table.output
    # What a user reads: no library deprecation notices in the job's log.
    log = cli_service.read_log(job.job_id, tail=10_000)
    assert "Trainable parameters" in log
    assert "FutureWarning" not in log
    assert "DeprecationWarning" not in log


def test_two_jobs_may_not_share_an_output_dir(cli_service: TrainingService, tmp_path: Path) -> None:
    out = tmp_path / "run"
    first = invoke("train", *TINY, "--output-dir", str(out), "--no-start")
    assert first.exit_code == 0, first.output
    first_id = cli_service.list_jobs()[0].job_id
    assert f"flextrain jobs start {first_id}" in flat(first)

    second = invoke("train", *TINY, "--output-dir", str(out), "--no-start")
    assert second.exit_code == 2
    text = flat(second)
    assert f"output_dir: {out} is the output folder of job {first_id}" in text
    assert "Fix: choose a new or empty folder, or leave output_dir unset" in text
    inside = invoke("train", *TINY, "--output-dir", str(out / "inner"), "--no-start")
    assert inside.exit_code == 2
    assert f"job {first_id}" in flat(inside)
    assert len(cli_service.list_jobs()) == 1  # nothing half-written

    full = tmp_path / "full"
    full.mkdir()
    (full / "notes.txt").write_text("mine")
    refused = invoke("train", *TINY, "--output-dir", str(full), "--no-start")
    assert refused.exit_code == 2
    assert f"output_dir: {full} is not empty." in flat(refused)
    assert (full / "notes.txt").read_text() == "mine"


def test_a_job_created_without_starting_starts_later(cli_service: TrainingService) -> None:
    created = invoke("train", *TINY, "--max-length", "32", "--no-start")
    assert created.exit_code == 0, created.output
    (job,) = cli_service.list_jobs()
    assert job.status == TrainingStatus.PENDING

    plan = invoke("jobs", "start", job.job_id, "--dry-run")
    assert plan.exit_code == 0, plan.output
    assert f"Job {job.job_id} would start with" in flat(plan)
    assert cli_service.require_job(job.job_id).status == TrainingStatus.PENDING

    started = invoke("jobs", "start", job.job_id, "--detach")
    assert started.exit_code == 0, started.output
    assert f"Job {job.job_id} started." in flat(started)
    again = invoke("jobs", "start", job.job_id, "--dry-run")
    assert again.exit_code == 2
    assert "only a pending job" in flat(again)
    cli_service.cancel_job(job.job_id)


def test_eval_steps_with_another_strategy_is_refused_by_name(
    cli_service: TrainingService, tmp_path: Path
) -> None:
    config = write(tmp_path / "c.yaml", {"eval_steps": 5, "eval_strategy": "epoch"})
    result = invoke("train", *TINY, "--config", str(config), "--no-start")
    assert result.exit_code == 2
    assert "eval_steps: 5 has no effect with eval_strategy epoch" in flat(result)
    assert cli_service.list_jobs() == []


def test_mode_basic_with_advanced_keys_is_refused_naming_them(
    cli_service: TrainingService, tmp_path: Path
) -> None:
    config = write(tmp_path / "c.yaml", {"lora_r": 8, "weight_decay": 0.1, "num_epochs": 2})
    result = invoke("train", *TINY, "--mode", "basic", "--config", str(config), "--no-start")
    assert result.exit_code == 2
    assert (
        "--mode basic: lora_r, weight_decay are not basic settings. Fix: use --mode advanced"
        in flat(result)
    )
    expert = write(tmp_path / "e.yaml", {"ema_decay": 0.99})
    result = invoke("train", *TINY, "--mode", "advanced", "--config", str(expert), "--no-start")
    assert result.exit_code == 2
    assert "--mode advanced: ema_decay is not an advanced setting. Fix: use --mode expert" in flat(
        result
    )
    assert cli_service.list_jobs() == []


def test_a_yaml_syntax_error_is_one_line_with_file_and_line(
    cli_service: TrainingService, tmp_path: Path
) -> None:
    config = tmp_path / "broken.yaml"
    config.write_text("num_epochs: 2\nlearning_rate: [0.1\nseed: 3\n")
    result = invoke("train", *TINY, "--config", str(config))
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert lines[0].startswith(f"--config: {config}:3:")
    assert "Traceback" not in result.output
    assert "Fix: correct the YAML" in lines[0]


def test_a_bad_batch_size_names_the_field_without_pydantic_internals(
    cli_service: TrainingService, tmp_path: Path
) -> None:
    flag = invoke("train", *TINY, "--batch-size", "foo")
    assert flag.exit_code == 2
    assert "--batch-size: 'foo' is neither a whole number nor 'auto'" in flat(flag)
    config = write(tmp_path / "c.yaml", {"batch_size": "foo"})
    in_file = invoke("train", *TINY, "--config", str(config))
    assert in_file.exit_code == 2
    text = flat(in_file)
    assert "batch_size: 'foo' is not valid: it should be a valid integer or 'auto'" in text
    assert "batch_size.int" not in text
    assert "literal[" not in text
