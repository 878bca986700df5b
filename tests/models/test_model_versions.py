"""Model versions: `name:N` and `name` (the latest), versions added by registering,
by a job that completes under its owner's model name, and by promotion; lineage
pinned to the version trained from; a diff of two versions; removal of one version,
refused while a waiting or running job names it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flextrain.config.enums import TrainingStatus
from flextrain.models.lineage import config_hash
from flextrain.models.registry import ModelInUseError, ModelNameTakenError, ModelRegistryError
from flextrain.service import TrainingService
from tests.models.registry_helpers import run_completed, tiny_config


def test_jobs_add_versions_with_pinned_lineage_and_versions_diff_and_promote(
    service: TrainingService, llama_folder: Path, tmp_path: Path
) -> None:
    registry = service.model_registry
    second = Path(shutil.copytree(llama_folder, tmp_path / "llama-2"))
    registry.add(llama_folder, "team/base")
    assert registry.add(second, "team/base").ref == "team/base:2"
    assert service.resolve_model("team/base").path == second
    assert service.resolve_model("team/base:latest").path == second
    assert service.resolve_model("team/base:1").path == llama_folder

    # Two runs under one run name: the second completed job is the name's next version.
    first = run_completed(service, tiny_config("team/base", run_name="bot"))
    later = run_completed(service, tiny_config("team/base:1", run_name="bot", learning_rate=1e-3))
    v1, v2 = registry.get("bot:1"), registry.get("bot")
    assert (v1.job_id, v1.base_model, v1.latest) == (first.job_id, "team/base:2", False)
    assert (v2.job_id, v2.base_model, v2.latest) == (later.job_id, "team/base:1", True)
    assert v2.path == later.model_path
    assert v1.config_hash == config_hash(first.config)
    assert v1.config_hash != v2.config_hash
    # The run name and output folder do not count: a rerun under another name hashes alike.
    renamed = {**first.config, "run_name": "other", "output_dir": "/elsewhere"}
    assert config_hash(renamed) == v1.config_hash

    diff = service.diff_models("bot:1", "bot")
    assert (diff.a, diff.b, diff.same_config) == ("bot:1", "bot:2", False)
    config = {c.key: (c.a, c.b) for c in diff.config}
    assert config == {"learning_rate": (3e-3, 1e-3), "model_id": ("team/base", "team/base:1")}
    lineage = {c.key for c in diff.lineage}
    assert {"base_model", "job_id", "config_hash", "path"} <= lineage
    assert "dataset_version" not in lineage  # both trained on the same data
    loss = next(m for m in diff.metrics if m.key == "train_loss")
    assert loss.a == v1.metrics["train_loss"]  # type: ignore[index]
    assert loss.change == pytest.approx(loss.b - loss.a)  # type: ignore[operator]

    # Promote the first run back: it becomes version 3, with its lineage.
    v3 = service.promote_model("bot:1", "bot")
    assert (v3.ref, v3.path, v3.job_id, v3.base_model) == (
        "bot:3",
        v1.path,
        first.job_id,
        v1.base_model,
    )
    assert v3.description == "promoted from bot:1"
    assert service.resolve_model("bot").path == Path(v1.path)
    with pytest.raises(ModelNameTakenError, match=r"\(its latest version, bot:3\)"):
        service.promote_model("bot:1", "bot")
    # A completed job by its id, to a new name; its registration's lineage comes along.
    release = service.promote_model(later.job_id, "release", "the tuned one")
    assert (release.ref, release.job_id, release.config) == ("release:1", later.job_id, v2.config)
    assert [m.ref for m in registry.list()] == ["bot:3", "release:1", "team/base:2"]
    assert len(registry.list(all_versions=True)) == 6


def test_a_version_a_started_job_names_cannot_be_removed_or_the_job_promoted(
    service: TrainingService, llama_folder: Path, tmp_path: Path
) -> None:
    registry = service.model_registry
    registry.add(llama_folder, "base")
    registry.add(Path(shutil.copytree(llama_folder, tmp_path / "v2")), "base")
    job = service.create_job(tiny_config("base:1", max_steps=400))
    service.start_job(job.job_id)
    # Not finished, so it has no model to promote either.
    with pytest.raises(
        ModelRegistryError, match=f"Job {job.job_id} is [a-z]+: it has no finished model"
    ):
        service.promote_model(job.job_id, "early")
    with pytest.raises(
        ModelInUseError, match=f"Version base:1 is named by unfinished job.*{job.job_id}"
    ):
        registry.remove("base:1")
    with pytest.raises(
        ModelInUseError, match=f"Model 'base' is named by unfinished job.*{job.job_id}"
    ):
        registry.remove("base")
    # The latest version is not the one the job named: it may go.
    assert [m.ref for m in registry.remove_versions("base:2")] == ["base:2"]
    assert registry.get("base").ref == "base:1"
    service.cancel_job(job.job_id)
    assert service.wait(job.job_id, timeout=60, poll=0.2).status == TrainingStatus.CANCELLED
    assert registry.remove("base:1").ref == "base:1"
    assert registry.find("base") is None
