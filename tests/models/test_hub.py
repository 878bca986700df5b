"""Hub search and pulls against a local hub server: the real huggingface_hub code runs,
offline. See tests/models/hub_server.py for the routes served."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from flextrain.config.enums import TrainingType
from flextrain.models.hub import (
    DiskSpaceError,
    HubAccess,
    HubAccessError,
    HubError,
    HubModelNotFoundError,
    HubOfflineError,
    ModelFilters,
    list_trainable,
)
from flextrain.models.pull import PullProgress, pull
from flextrain.models.resolve import ModelNotFoundError, ModelResolver
from flextrain.service import TrainingService
from tests.models.hub_server import (
    APPROVED_TOKEN,
    BERT,
    GATED,
    HUGE,
    PICKLE,
    TINY,
    UNAPPROVED_TOKEN,
    WIDE,
    LocalHub,
    go_offline,
    local_hub_fixture,
)

CHUNK = 10 * 1024 * 1024  # huggingface_hub's read size: what a partial file holds after one read


@pytest.fixture
def local_hub(
    models_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[LocalHub]:
    yield from local_hub_fixture(models_cache, tmp_path, monkeypatch)


def hub_ids(listing_models: list) -> list[str]:  # type: ignore[type-arg]
    return [m.model_id for m in listing_models if m.source == "hub"]


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# -- search -----------------------------------------------------------------------------
def test_search_filters_by_task_license_and_size(
    local_hub: LocalHub, service: TrainingService
) -> None:
    filters = ModelFilters(task="text-generation", license="apache-2.0", max_parameters=5 * 10**6)
    listing = list_trainable(filters, check=service.check_compatibility)
    # Most downloaded first; the 7B one is too big, the gated one is llama3-licensed, the
    # pickle-only one has no known size. No built-in is apache-2.0 text generation.
    assert hub_ids(listing.models) == [TINY, WIDE]
    assert [m.source for m in listing.models] == ["hub", "hub"]
    tiny = listing.models[0]
    assert tiny.is_compatible
    assert tiny.license == "apache-2.0"
    assert tiny.downloads == 500
    assert {TrainingType.LORA_ADAPTATION, TrainingType.FINE_TUNING} <= set(
        tiny.supported_training_types
    )
    assert listing.notes == []
    sent = next(r.path for r in local_hub.hub.requests if r.path == "/api/models")
    assert sent == "/api/models"


def test_search_text_and_library_include_matching_builtins(
    local_hub: LocalHub, service: TrainingService
) -> None:
    listing = list_trainable(
        ModelFilters(search="bert", library="transformers"), check=service.check_compatibility
    )
    ids = [m.model_id for m in listing.models]
    assert BERT in hub_ids(listing.models)
    assert "flextrain/tiny-bert" in ids
    assert "flextrain/tiny-llama" not in ids
    assert HUGE not in ids


def test_gated_hit_is_listed_with_what_pulling_needs(
    local_hub: LocalHub, service: TrainingService
) -> None:
    listing = list_trainable(ModelFilters(search="gated"), check=service.check_compatibility)
    [gated] = [m for m in listing.models if m.source == "hub"]
    assert gated.model_id == GATED
    assert gated.gated
    assert gated.note is not None
    assert "HF_TOKEN" in gated.note


def test_offline_search_lists_local_models_with_a_note(
    local_hub: LocalHub, service: TrainingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    go_offline(monkeypatch)
    listing = list_trainable(ModelFilters(search="llama"), check=service.check_compatibility)
    assert [m.model_id for m in listing.models] == ["flextrain/tiny-llama"]
    assert "not searched" in listing.notes[0]
    assert "HF_HUB_OFFLINE" in listing.notes[0]
    assert local_hub.hub.requests == []


def test_plain_listing_stays_local(local_hub: LocalHub, service: TrainingService) -> None:
    listing = list_trainable(ModelFilters(), check=service.check_compatibility)
    assert {m.source for m in listing.models} == {"builtin"}
    assert local_hub.hub.requests == []


# -- pull -------------------------------------------------------------------------------
def test_pull_reports_progress_to_100_and_the_model_then_trains_offline(
    local_hub: LocalHub,
    service: TrainingService,
    models_cache: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    events: list[PullProgress] = []
    result = pull(TINY, progress=events.append)

    assert events[0].bytes_done == 0
    assert events[-1].percent == 100.0
    assert events[-1].bytes_done == events[-1].bytes_total == result.bytes_total > 0
    assert [e.bytes_done for e in events] == sorted(e.bytes_done for e in events)
    assert events[-1].files_done == events[-1].files_total == len(result.files)
    assert "model.safetensors" in result.files
    assert "config.json" in result.files
    assert result.path.parent.parent == local_hub.cache / "models--acme--tiny-llama"
    served = local_hub.hub.repos[TINY].files
    for name in result.files:
        assert (result.path / name).read_bytes() == served[name]
    assert not any((local_hub.cache / ".flextrain-partial").rglob("*.*"))

    go_offline(monkeypatch)
    assert ModelResolver(models_cache).resolve(TINY).path == result.path
    report = service.check_compatibility(TINY)
    assert report.model_type == "llama"
    assert TrainingType.LORA_ADAPTATION in (report.supported_training_types)


def test_a_checked_but_not_pulled_model_offline_names_the_pull(
    local_hub: LocalHub, models_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import hf_hub_download

    # What a compatibility check of a hub hit leaves in the cache: the config alone.
    config = Path(hf_hub_download(TINY, "config.json", endpoint=local_hub.url))
    assert config.is_file()
    assert not any(config.parent.glob("*.safetensors"))
    resolver = ModelResolver(models_cache)
    go_offline(monkeypatch)
    with pytest.raises(ModelNotFoundError) as caught:
        resolver.resolve(TINY)
    message = str(caught.value)
    assert "has no safetensors weights" in message
    assert f"`flextrain models pull {TINY}` while online" in message


def test_second_pull_downloads_nothing(local_hub: LocalHub) -> None:
    first = pull(TINY)
    before = len(local_hub.hub.downloads_of("model.safetensors"))
    again = pull(TINY)
    assert again.path == first.path
    assert again.bytes_downloaded == 0
    assert again.bytes_cached == again.bytes_total
    assert len(local_hub.hub.downloads_of("model.safetensors")) == before


def test_dropped_connection_resumes_with_a_range_request(local_hub: LocalHub) -> None:
    local_hub.hub.drop_after("model.safetensors", CHUNK + 512 * 1024)
    events: list[PullProgress] = []
    result = pull(WIDE, progress=events.append)

    gets = local_hub.hub.downloads_of("model.safetensors")
    assert [g.range for g in gets] == [None, f"bytes={CHUNK}-"]
    served = local_hub.hub.repos[WIDE].files["model.safetensors"]
    assert sha256(result.path / "model.safetensors") == hashlib.sha256(served).hexdigest()
    assert events[-1].percent == 100.0


class Stop(Exception):
    pass


def test_interrupted_pull_continues_from_its_partial_file(local_hub: LocalHub) -> None:
    reads = 0

    def stop_on_second_read(event: PullProgress) -> None:
        nonlocal reads
        if event.filename == "model.safetensors" and event.files_done < event.files_total:
            reads += 1
            if reads == 2:  # the first 10 MiB are on disk, the rest is arriving
                raise Stop

    with pytest.raises(Stop):
        pull(WIDE, progress=stop_on_second_read)
    [partial] = list((local_hub.cache / ".flextrain-partial").rglob("*"))[-1:]
    assert partial.stat().st_size == CHUNK

    events: list[PullProgress] = []
    result = pull(WIDE, progress=events.append)
    assert local_hub.hub.downloads_of("model.safetensors")[-1].range == f"bytes={CHUNK}-"
    assert result.bytes_resumed == CHUNK
    assert events[0].bytes_done >= CHUNK
    assert events[-1].percent == 100.0
    served = local_hub.hub.repos[WIDE].files["model.safetensors"]
    assert (result.path / "model.safetensors").read_bytes() == served


def test_pull_refuses_before_downloading_when_the_disk_is_too_full(
    local_hub: LocalHub,
) -> None:
    # Twice the free space: other tests of a parallel run free space too, and reserving
    # exactly what was free let a pull through when one did so in between.
    free = shutil.disk_usage(local_hub.cache).free
    with pytest.raises(DiskSpaceError, match=r"needs .* GiB .* bytes.* free") as caught:
        pull(TINY, reserve_bytes=2 * free)
    assert "HF_HUB_CACHE" in str(caught.value)
    assert not any(r.method == "GET" and "/resolve/" in r.path for r in local_hub.hub.requests)


def test_pull_into_a_tiny_filesystem_is_refused(local_hub: LocalHub, tmp_path: Path) -> None:
    small = tmp_path / "small"
    small.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(small)],
        capture_output=True,
        check=False,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with pytest.raises(DiskSpaceError, match="Not enough disk space"):
            pull(TINY, cache_dir=small, reserve_bytes=0)
    finally:
        subprocess.run(["umount", str(small)], check=False)


def test_gated_model_without_a_token_names_the_fix(local_hub: LocalHub) -> None:
    with pytest.raises(HubAccessError) as caught:
        pull(GATED)
    message = str(caught.value)
    assert "gated" in message
    assert "no token" in message
    assert "HF_TOKEN" in message
    assert "huggingface-cli login" in message
    assert not any(r.method == "GET" and "/resolve/" in r.path for r in local_hub.hub.requests)


def test_gated_model_with_a_token_without_access(
    local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_TOKEN", UNAPPROVED_TOKEN)
    with pytest.raises(HubAccessError, match="not been granted access"):
        pull(GATED)
    monkeypatch.setenv("HF_TOKEN", APPROVED_TOKEN)
    assert (pull(GATED).path / "model.safetensors").exists()
    assert all(
        r.authorization == f"Bearer {APPROVED_TOKEN}"
        for r in local_hub.hub.requests[-3:]
        if "/resolve/" in r.path
    )


def test_invalid_token_names_the_fix(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_revoked")
    with pytest.raises(HubAccessError, match=r"invalid or expired.*HF_TOKEN"):
        pull(TINY)


def test_pull_errors_name_the_fix(local_hub: LocalHub, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(HubModelNotFoundError, match=r"not found on http://127\.0\.0\.1"):
        pull("acme/no-such-model")
    with pytest.raises(HubModelNotFoundError, match="no such revision"):
        pull(TINY, revision="v9")
    with pytest.raises(HubError, match=r"no safetensors weights.*pytorch_model\.bin"):
        pull(PICKLE)
    with pytest.raises(HubModelNotFoundError, match="not a hub id"):
        pull("../../etc")
    go_offline(monkeypatch)
    with pytest.raises(HubOfflineError, match="HF_HUB_OFFLINE"):
        pull(TINY)


def test_access_reads_the_environment_when_called(local_hub: LocalHub) -> None:
    access = HubAccess.from_env()
    assert access.endpoint == local_hub.url
    assert not access.offline
    assert access.token is None


# -- the Python API ---------------------------------------------------------------------
def test_interface_lists_and_pulls(local_hub: LocalHub, service: TrainingService) -> None:
    import asyncio

    from flextrain.interface import FlexibleTrainingInterface

    interface = FlexibleTrainingInterface(service=service)
    plain = asyncio.run(interface.get_trainable_models())  # the seed's call: local, offline-safe
    assert {m["model_id"] for m in plain} >= {"flextrain/tiny-llama", "flextrain/tiny-bert"}
    for entry in plain:
        assert {"model_id", "description", "num_parameters", "supported_training_types"} <= set(
            entry
        )
        assert entry["is_compatible"] is True
    assert local_hub.hub.requests == []

    found = asyncio.run(interface.get_trainable_models({"search": "tiny-llama"}))
    assert [m["model_id"] for m in found] == ["flextrain/tiny-llama", TINY]

    events: list[PullProgress] = []
    result = asyncio.run(interface.pull_model(TINY, progress=events.append))
    assert events[-1].percent == 100.0
    assert (result.path / "config.json").exists()
