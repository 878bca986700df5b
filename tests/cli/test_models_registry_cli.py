"""`flextrain models add | list | show | remove`, through Typer's CliRunner."""

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
    assert "Registered 'team/llama': LlamaForCausalLM" in out
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
    assert f"{job.job_id} │ pending │ fine_tuning" in shown
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
    assert f"its files in {folder} were left as they are" in removed
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
