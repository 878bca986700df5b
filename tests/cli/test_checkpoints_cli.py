"""`flextrain jobs checkpoints ID [--export STEP --to DIR | --prune [--keep STEP]] [--json]`.

One real tiny run (a checkpoint every 2 of 6 steps) serves the whole command;
what the files hold and how export and prune behave is tested in
tests/jobs/test_checkpoints.py.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from flextrain.cli.main import app
from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.staging import stage_status


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FLEXTRAIN_HOME", str(settings.home))
    # The same database as `settings` (a PostgreSQL one under `make test-postgres`).
    monkeypatch.setenv("FLEXTRAIN_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(settings.builtin_models_dir))
    monkeypatch.setenv("COLUMNS", "200")
    return settings


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["jobs", "checkpoints", *args])


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def bytes_under(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def test_list_export_and_prune_a_real_runs_checkpoints(
    cli_env: Settings, service: TrainingService, tmp_path: Path
) -> None:
    cfg = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=TrainingType.FINE_TUNING,
        max_steps=6,
        batch_size=8,
        max_length=32,
        logging_steps=2,
        save_steps=2,
        save_total_limit=None,
        eval_strategy="no",
        evaluate_before_training=False,
        num_threads=1,
    )
    job_id = service.create_job(cfg).job_id
    service.start_job(job_id)
    job = service.wait(job_id, timeout=120, poll=0.2)
    assert job.status == TrainingStatus.COMPLETED, service.read_log(job_id, 40)
    folder = service.environment(job_id).checkpoint_dir

    listed = invoke(job_id)
    assert listed.exit_code == 0, listed.output
    rows = re.findall(r"^│\s*(\d+)\s*│", listed.output, flags=re.MULTILINE)
    assert rows == ["2", "4", "6"], listed.output
    assert "eval loss" in listed.output
    assert "3 checkpoint(s)" in listed.output

    as_json = invoke(job_id, "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert [c["step"] for c in data["checkpoints"]] == [2, 4, 6]
    assert data["total_bytes"] == bytes_under(folder)
    assert all(c["loss"] is not None and c["eval_loss"] is None for c in data["checkpoints"])

    target = tmp_path / "step-4"
    exported = invoke(job_id, "--export", "4", "--to", str(target))
    assert exported.exit_code == 0, exported.output
    assert exported.output.strip() == str(target.resolve())
    names = {p.name for p in target.iterdir()}
    assert "model.safetensors" in names
    assert "optimizer.pt" not in names
    latest = invoke(job_id, "--export", "latest", "--to", str(tmp_path / "latest"))
    assert latest.exit_code == 0, latest.output
    again = invoke(job_id, "--export", "latest", "--to", str(target))
    assert again.exit_code == 2
    assert "not an empty folder" in flat(again)

    unknown = invoke(job_id, "--export", "5", "--to", str(tmp_path / "five"))
    assert unknown.exit_code == 2
    assert "available steps: 2, 4, 6" in flat(unknown)
    assert "Traceback" not in unknown.output
    bad_keep = invoke(job_id, "--prune", "--keep", "4", "--keep", "7")
    assert bad_keep.exit_code == 2
    assert "available steps: 2, 4, 6" in flat(bad_keep)

    size_of = {s: bytes_under(folder / f"checkpoint-{s}") for s in (2, 6)}
    pruned = invoke(job_id, "--prune", "--keep", "4", "--json")
    assert pruned.exit_code == 0, pruned.output
    assert json.loads(pruned.stdout) == {"deleted": [2, 6], "freed_bytes": sum(size_of.values())}
    assert [p.name for p in folder.iterdir()] == ["checkpoint-4"]
    nothing = invoke(job_id, "--prune")
    assert nothing.exit_code == 0
    assert "Nothing to delete." in nothing.output

    # A running job's Trainer still writes (and rotates) checkpoints: hands off. (No pid:
    # the finished worker must not be reconciled back to a terminal state.)
    stage_status(service.store, job_id, TrainingStatus.TRAINING, pid=None)
    busy = invoke(job_id, "--prune")
    assert busy.exit_code == 2
    assert "is training" in flat(busy)
    assert [p.name for p in folder.iterdir()] == ["checkpoint-4"]


def test_a_pending_job_has_none_and_usage_errors_name_the_fix(
    cli_env: Settings, service: TrainingService, tmp_path: Path
) -> None:
    cfg = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=TrainingType.FINE_TUNING,
        max_length=32,
    )
    job_id = service.create_job(cfg).job_id

    empty = invoke(job_id)
    assert empty.exit_code == 0
    assert f"Job {job_id} has no checkpoints" in flat(empty)
    assert json.loads(invoke(job_id, "--json").stdout)["checkpoints"] == []
    pruned = invoke(job_id, "--prune")
    assert pruned.exit_code == 0
    assert "Nothing to delete." in pruned.output
    none_yet = invoke(job_id, "--export", "latest", "--to", str(tmp_path / "x"))
    assert none_yet.exit_code == 2
    assert "available steps: none yet" in flat(none_yet)

    for args, message in (
        (["--export", "2"], "--export STEP and --to DIR go together."),
        (["--to", str(tmp_path)], "--export STEP and --to DIR go together."),
        (["--export", "2", "--to", str(tmp_path), "--prune"], "choose one"),
        (["--keep", "2"], "--keep only applies with --prune."),
        (["--export", "two", "--to", str(tmp_path / "y")], "give a step number or 'latest'"),
    ):
        result = invoke(job_id, *args)
        assert result.exit_code == 2, (args, result.output)
        assert message in flat(result), (args, result.output)
    assert not (tmp_path / "y").exists()

    missing = invoke("no-such-job")
    assert missing.exit_code == 2
    assert "No training job with id 'no-such-job'" in flat(missing)
