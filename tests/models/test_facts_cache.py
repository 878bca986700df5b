"""The service keeps a model's inspected facts in the home, keyed by its config.json.

Inspecting builds the model on the meta device (torch and transformers imported): a
second job of the same model, in a new process, must read the facts instead, get
exactly what inspecting gives, and inspect again whenever the config changes or the
kept file cannot be read.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from flextrain.models import facts_cache
from flextrain.models.builtin import TINY_LLAMA_ID
from flextrain.models.facts_cache import inspect_model_cached
from flextrain.models.inspect import inspect_model
from flextrain.models.resolve import ModelResolver
from flextrain.service import TrainingService
from flextrain.settings import Settings


@pytest.fixture
def llama_folder(tmp_path: Path, models_cache: Path) -> Path:
    """A copy of the tiny Llama's folder, free to edit."""
    folder = tmp_path / "llama"
    shutil.copytree(ModelResolver(models_cache).resolve(TINY_LLAMA_ID).path, folder)
    return folder


def _no_inspection(path: Path) -> None:
    raise AssertionError(f"inspected {path} again")


def test_a_new_service_reads_the_facts_kept_by_the_first(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = TrainingService(settings).inspect_model(TINY_LLAMA_ID)
    assert len(list((settings.home / "cache" / "model-info").glob("*.json"))) == 1
    monkeypatch.setattr(facts_cache, "inspect_model", _no_inspection)
    again = TrainingService(settings).inspect_model(TINY_LLAMA_ID)
    assert again == first  # every field, the layer list and the raw config included


def test_a_changed_config_is_inspected_again(tmp_path: Path, llama_folder: Path) -> None:
    cache = tmp_path / "cache"
    before = inspect_model_cached(llama_folder, cache)
    config = json.loads((llama_folder / "config.json").read_text())
    config["num_hidden_layers"] += 1
    (llama_folder / "config.json").write_text(json.dumps(config))
    after = inspect_model_cached(llama_folder, cache)
    assert before.num_layers is not None
    assert after.num_layers == before.num_layers + 1 == inspect_model(llama_folder).num_layers
    assert after.num_parameters > before.num_parameters
    assert len(list(cache.glob("*.json"))) == 2


def test_an_unreadable_entry_is_inspected_again_and_replaced(
    tmp_path: Path, llama_folder: Path
) -> None:
    cache = tmp_path / "cache"
    info = inspect_model_cached(llama_folder, cache)
    (entry,) = cache.glob("*.json")
    entry.write_text("{not json")
    assert inspect_model_cached(llama_folder, cache) == info
    assert json.loads(entry.read_text())["num_parameters"] == info.num_parameters


def test_a_model_with_its_own_code_is_never_kept(tmp_path: Path, llama_folder: Path) -> None:
    config = json.loads((llama_folder / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_custom.CustomConfig"}
    (llama_folder / "config.json").write_text(json.dumps(config))
    cache = tmp_path / "cache"
    info = inspect_model_cached(llama_folder, cache)
    assert info.needs_remote_code
    assert not cache.exists() or not list(cache.glob("*.json"))
