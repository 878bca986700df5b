"""Model ids resolve to folders on disk, or fail with the reason and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flextrain.models.builtin import MINILM_ID, TINY_BERT_ID, TINY_LLAMA_ID, minilm_path
from flextrain.models.resolve import ModelNotFoundError, ModelResolver
from flextrain.service import TrainingService

HUB_ID = "someorg/some-model"
OFFLINE_MESSAGE = "not found or inaccessible (offline?)"


@pytest.fixture
def resolver(models_cache: Path) -> ModelResolver:
    return ModelResolver(models_cache)


@pytest.fixture
def offline_hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No network and an empty hub cache, through the environment only."""
    empty = tmp_path / "hf-home"
    (empty / "hub").mkdir(parents=True)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(empty))
    monkeypatch.setenv("HF_HUB_CACHE", str(empty / "hub"))
    return empty


@pytest.mark.parametrize("model_id", [TINY_LLAMA_ID, TINY_BERT_ID])
def test_tiny_builtins_are_built_under_the_models_cache(
    resolver: ModelResolver, models_cache: Path, model_id: str
) -> None:
    resolved = resolver.resolve(model_id)
    assert resolved.source == "builtin"
    assert resolved.model_id == model_id
    assert resolved.path.is_relative_to(models_cache)
    assert (resolved.path / "config.json").is_file()
    assert (resolved.path / "model.safetensors").is_file()
    assert (resolved.path / "tokenizer.json").is_file()
    # Resolving again reuses the folder instead of rebuilding it elsewhere.
    assert resolver.resolve(model_id).path == resolved.path
    assert resolver.resolve_config(model_id).path == resolved.path


def test_tiny_llama_config_is_small(resolver: ModelResolver) -> None:
    config = json.loads((resolver.resolve(TINY_LLAMA_ID).path / "config.json").read_text())
    assert config["model_type"] == "llama"
    assert config["vocab_size"] <= 1024
    assert config["hidden_size"] == 64


def test_minilm_resolves_to_the_packaged_folder(resolver: ModelResolver) -> None:
    resolved = resolver.resolve(MINILM_ID)
    assert resolved.source == "builtin"
    assert resolved.path == minilm_path()
    assert (resolved.path / "model.safetensors").is_file()
    assert (resolved.path / "config.json").is_file()
    assert "site-packages" in resolved.path.parts


def test_local_folder(resolver: ModelResolver, tmp_path: Path) -> None:
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    resolved = resolver.resolve(str(folder))
    assert resolved.source == "local"
    assert resolved.path == folder.resolve()
    assert resolved.model_id == str(folder)


def test_local_folder_with_surrounding_spaces(resolver: ModelResolver, tmp_path: Path) -> None:
    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    assert resolver.resolve(f"  {folder}  ").source == "local"


def test_folder_without_config_json(resolver: ModelResolver, tmp_path: Path) -> None:
    folder = tmp_path / "weights-only"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(ModelNotFoundError) as info:
        resolver.resolve(str(folder))
    message = str(info.value)
    assert "no config.json" in message
    assert "Fix:" in message
    assert "save_pretrained" in message


@pytest.mark.parametrize("model_id", ["/nonexistent/model", "./not-here", "a/b/c"])
def test_missing_path(resolver: ModelResolver, model_id: str) -> None:
    with pytest.raises(ModelNotFoundError) as info:
        resolver.resolve(model_id)
    message = str(info.value)
    assert model_id in message
    assert "does not exist" in message
    assert "Fix:" in message


def test_empty_id(resolver: ModelResolver) -> None:
    with pytest.raises(ModelNotFoundError, match="empty"):
        resolver.resolve("   ")


@pytest.mark.parametrize("config_only", [False, True])
def test_hub_id_offline_is_a_clear_error(
    resolver: ModelResolver, offline_hub: Path, config_only: bool
) -> None:
    resolve = resolver.resolve_config if config_only else resolver.resolve
    with pytest.raises(ModelNotFoundError) as info:
        resolve(HUB_ID)
    message = str(info.value)
    assert HUB_ID in message
    assert OFFLINE_MESSAGE in message
    assert "Fix:" in message
    # The way out names the built-ins that need no network.
    for builtin in (MINILM_ID, TINY_LLAMA_ID, TINY_BERT_ID):
        assert builtin in message
    # The library's own error is kept as the cause, not shown as a traceback.
    assert info.value.__cause__ is not None
    # Nothing was written into the (empty) hub cache.
    assert not any((offline_hub / "hub").iterdir())


def test_builtins_listing() -> None:
    assert set(ModelResolver.builtins()) == {MINILM_ID, TINY_LLAMA_ID, TINY_BERT_ID}


def test_service_compatibility_of_unreachable_hub_model(
    service: TrainingService, offline_hub: Path
) -> None:
    result = service.check_compatibility(HUB_ID)
    assert result.is_compatible is False
    assert result.model_id == HUB_ID
    assert len(result.issues) == 1
    assert OFFLINE_MESSAGE in result.issues[0]
    assert result.num_parameters is None
    assert result.supported_training_types == []
    assert set(result.framework_versions) >= {"torch", "transformers", "peft"}


def test_a_path_too_long_to_look_up_is_not_found_not_an_os_error(
    resolver: ModelResolver,
) -> None:
    # Found by the API fuzzer: a 300-byte path part made is_dir() raise ENAMETOOLONG.
    with pytest.raises(ModelNotFoundError, match=r"does not exist\. Fix: check the path"):
        resolver.resolve("./" + "m" * 300)
