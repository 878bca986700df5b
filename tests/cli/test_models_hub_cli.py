"""`flextrain models search` and `flextrain models pull` against a local hub server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from flextrain.cli.main import app
from tests.models.hub_server import (
    GATED,
    TINY,
    WIDE,
    LocalHub,
    go_offline,
    local_hub_fixture,
)


@pytest.fixture
def home(tmp_path: Path, models_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("FLEXTRAIN_HOME", str(home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(models_cache))
    monkeypatch.setenv("COLUMNS", "400")
    return home


@pytest.fixture
def local_hub(
    home: Path, models_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalHub]:
    yield from local_hub_fixture(models_cache, tmp_path, monkeypatch)


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def test_search_json_applies_filters(local_hub: LocalHub) -> None:
    result = invoke(
        "models", "search", "llama", "--task", "text-generation", "--max-params", "5M", "--json"
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    hub = [m["model_id"] for m in data["models"] if m["source"] == "hub"]
    assert hub == [GATED, TINY, WIDE]  # by downloads; the 7B one is over --max-params
    assert "flextrain/tiny-llama" in [m["model_id"] for m in data["models"]]
    tiny = next(m for m in data["models"] if m["model_id"] == TINY)
    assert "lora_adaptation" in tiny["supported_training_types"]
    assert data["notes"] == []


def test_search_table_and_offline_note(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    result = invoke("models", "search", "tiny", "--license", "apache-2.0")
    assert result.exit_code == 0, result.output
    assert TINY in result.output
    assert "hub" in result.output

    go_offline(monkeypatch)
    offline = invoke("models", "search", "tiny")
    assert offline.exit_code == 0, offline.output
    assert TINY not in offline.output
    assert "flextrain/tiny-llama" in offline.output
    assert "hub was not searched" in flat(offline)


def test_search_rejects_a_bad_size(home: Path) -> None:
    result = invoke("models", "search", "--max-params", "lots")
    assert result.exit_code == 2
    assert "--max-params 'lots'" in flat(result)
    assert "135M" in flat(result)


def test_pull_downloads_and_says_where(local_hub: LocalHub) -> None:
    result = invoke("models", "pull", TINY)
    assert result.exit_code == 0, result.output
    assert f"{TINY} pulled" in flat(result)
    snapshot = next((local_hub.cache / "models--acme--tiny-llama" / "snapshots").iterdir())
    assert (snapshot / "model.safetensors").stat().st_size > 0
    assert str(snapshot) in flat(result).replace(" ", "") or snapshot.name in result.output

    again = invoke("models", "pull", TINY, "--json")
    assert again.exit_code == 0, again.output
    data = json.loads(again.stdout)
    assert data["bytes_downloaded"] == 0
    assert data["bytes_cached"] == data["bytes_total"]


def test_pull_resumes_after_a_dropped_connection(local_hub: LocalHub) -> None:
    local_hub.hub.drop_after("model.safetensors", 10 * 1024 * 1024 + 4096)
    result = invoke("models", "pull", WIDE, "--json")
    assert result.exit_code == 0, result.output
    ranges = [r.range for r in local_hub.hub.downloads_of("model.safetensors")]
    assert ranges == [None, f"bytes={10 * 1024 * 1024}-"]
    assert json.loads(result.stdout)["bytes_downloaded"] > 10 * 1024 * 1024


def test_pull_gated_without_token_is_a_message_not_a_traceback(local_hub: LocalHub) -> None:
    result = invoke("models", "pull", GATED)
    assert result.exit_code == 1
    text = flat(result)
    assert "is gated" in text
    assert "HF_TOKEN" in text
    assert "huggingface-cli login" in text
    assert "Traceback" not in result.output


def test_pull_errors_exit_cleanly(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = invoke("models", "pull", "acme/nothing-here")
    assert missing.exit_code == 2
    assert "was not found" in flat(missing)
    go_offline(monkeypatch)
    offline = invoke("models", "pull", TINY)
    assert offline.exit_code == 1
    assert "HF_HUB_OFFLINE" in flat(offline)
    assert "Traceback" not in offline.output
