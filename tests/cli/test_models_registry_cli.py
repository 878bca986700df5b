"""`flextrain models add | list | show | promote | diff | remove`, through Typer's
CliRunner."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flextrain.cli.main import app
from flextrain.config.enums import TrainingType
from flextrain.config.schemas import BasicTrainingConfig
from flextrain.service import TrainingService
from flextrain.settings import Settings


@pytest.fixture
def cli_service(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrainingService]:
    """The home the CLI opens (same database), and a service on it for the test's own use."""
    monkeypatch.setenv("FLEXTRAIN_HOME", str(settings.home))
    monkeypatch.setenv("FLEXTRAIN_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(settings.models_cache))
    monkeypatch.setenv("COLUMNS", "300")
    service = TrainingService(settings)
    yield service
    service.engine.dispose()


@pytest.fixture
def folder(cli_service: TrainingService, tmp_path: Path) -> Path:
    source = cli_service.models.resolve("flextrain/tiny-llama").path
    return Path(shutil.copytree(source, tmp_path / "llama"))


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_add_list_show_remove(cli_service: TrainingService, folder: Path) -> None:
    code, out = run("models", "add", str(folder), "--name", "team/llama", "--description", "ours")
    assert code == 0, out
    assert "Registered 'team/llama:1': LlamaForCausalLM" in out
    assert "use --model team/llama" in out

    code, listed = run("models", "list")
    assert code == 0, listed
    assert "team/llama" in listed
    assert "local" in listed
    assert str(folder) in listed
    code, raw = run("models", "list", "--json")
    assert code == 0
    assert [m["name"] for m in json.loads(raw)] == ["team/llama"]

    job = cli_service.create_job(
        BasicTrainingConfig(
            model_id="team/llama", dataset_id="demo/text", training_type=TrainingType.FINE_TUNING
        )
    )
    code, shown = run("models", "show", "team/llama")
    assert code == 0, shown
    assert "architecture LlamaForCausalLM (llama)" in shown
    assert "training types fine_tuning, lora_adaptation" in shown
    assert f"{job.job_id} │ team/llama │ pending │ fine_tuning" in shown
    code, raw = run("models", "show", "team/llama", "--json")
    data = json.loads(raw)
    assert code == 0
    assert data["num_parameters"] > 0
    assert [j["job_id"] for j in data["jobs"]] == [job.job_id]

    code, refused = run("models", "remove", "team/llama")
    assert code == 2
    assert f"unfinished job(s) {job.job_id}" in refused
    cli_service.cancel_job(job.job_id)
    code, removed = run("models", "remove", "team/llama")
    assert code == 0, removed
    assert f"'team/llama' (1 version(s)); the files in {folder} were left" in removed
    assert (folder / "model.safetensors").exists()
    code, empty = run("models", "list")
    assert code == 0
    assert "None yet" in empty


def test_errors_are_one_line_with_the_fix(cli_service: TrainingService, folder: Path) -> None:
    code, out = run("models", "add", str(folder / "nowhere"), "--name", "x")
    assert code == 2
    assert "Traceback" not in out
    assert out == (
        f"path '{folder / 'nowhere'}' does not exist. Fix: check the path; give the folder "
        "save_pretrained() wrote (it holds config.json and *.safetensors)."
    )
    code, out = run("models", "add", "/nonexistent", "--name", "x")
    assert code == 2
    assert out.startswith("path '/nonexistent' does not exist. Fix: check the path")
    code, out = run("models", "add", str(folder / "config.json"), "--name", "x")
    assert code == 2
    assert "is a file, not a folder. Fix: give the folder" in out
    code, out = run("models", "add", str(folder), "--name", "bad name")
    assert code == 2
    assert "name 'bad name' is not valid. Fix:" in out
    assert run("models", "add", str(folder), "--name", "llama")[0] == 0
    code, out = run("models", "add", str(folder), "--name", "llama")
    assert code == 2
    assert "already registered" in out
    for command in ("show", "remove"):
        code, out = run("models", command, "nope")
        assert code == 2
        assert "No model named 'nope' is registered. Fix:" in out


def test_versions_promote_diff_and_remove_one(
    cli_service: TrainingService, folder: Path, tmp_path: Path
) -> None:
    second = Path(shutil.copytree(folder, tmp_path / "llama-2"))
    assert run("models", "add", str(folder), "--name", "team/llama")[0] == 0
    code, out = run("models", "add", str(second), "--name", "team/llama")
    assert code == 0, out
    assert "Registered 'team/llama:2'" in out
    assert cli_service.resolve_model("team/llama").path == second
    assert cli_service.resolve_model("team/llama:1").path == folder

    code, listed = run("models", "list")
    assert "│ team/llama │ 2 (of 2) │ local" in listed, listed
    code, listed = run("models", "list", "--all-versions", "--json")
    assert [(m["ref"], m["latest"]) for m in json.loads(listed)] == [
        ("team/llama:1", False),
        ("team/llama:2", True),
    ]
    code, shown = run("models", "show", "team/llama:1")
    assert code == 0, shown
    assert "team/llama:1 " in shown
    assert "Versions of team/llama (the last is the latest)" in shown
    assert "│ 1 * │ local" in shown

    code, diff = run("models", "diff", "team/llama:1", "team/llama")
    assert code == 0, diff
    assert "team/llama:1 vs team/llama:2: no training config recorded for both" in diff
    assert f"│ path │ {folder} │ {second} │" in diff
    assert "Config: no difference." in diff
    assert "Metrics: neither version has any." in diff

    code, out = run("models", "promote", "team/llama:1", "--name", "team/llama")
    assert code == 0, out
    assert f"Promoted team/llama:1 to 'team/llama:3': 'team/llama' now means {folder}." in out
    assert cli_service.resolve_model("team/llama").path == folder
    code, out = run("models", "promote", "team/llama:1", "--name", "team/llama")
    assert code == 2
    assert "is already registered as" in out
    assert "(its latest version, team/llama:3)" in out
    code, out = run("models", "promote", "nothing-here", "--name", "team/llama")
    assert code == 2
    assert "'nothing-here' is neither a registered model nor a job. Fix:" in out

    code, out = run("models", "remove", "team/llama:2")
    assert code == 0, out
    assert f"Removed 'team/llama:2'; the files in {second} were left" in out
    versions = [m.version for m in cli_service.model_versions("team/llama")]
    assert versions == [1, 3]
    code, out = run("models", "show", "team/llama:2")
    assert code == 2
    assert "Model 'team/llama:2' is not registered: 'team/llama' has no version 2." in out
