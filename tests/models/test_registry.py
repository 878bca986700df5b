"""The model registry: names for model folders, checked when registered, usable as a
job's model_id; trained models registered by the worker with their lineage."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.data.bundled import bundled_path
from flextrain.interface import FlexibleTrainingInterface
from flextrain.jobs.spec import RunSpec
from flextrain.models.registry import (
    ModelInUseError,
    ModelNameTakenError,
    ModelNotRegisteredError,
    ModelRegistryError,
)
from flextrain.models.resolve import ModelNotFoundError
from flextrain.service import TrainingService
from flextrain.settings import Settings
from flextrain.train.worker import _register_model
from tests.models.registry_helpers import run_completed, tiny_config


# -- add, list, show, remove -------------------------------------------------------------
def test_add_describes_the_folder_and_remove_keeps_the_files(
    service: TrainingService, llama_folder: Path
) -> None:
    registry = service.model_registry
    model = registry.add(llama_folder, "team/llama", description="ours", owner="ada")

    assert model.name == "team/llama"
    assert model.source == "local"
    assert not model.adapter
    assert model.path == str(llama_folder.resolve())
    assert (model.architecture, model.model_type) == ("LlamaForCausalLM", "llama")
    assert model.num_parameters == service.inspect_model("flextrain/tiny-llama").num_parameters
    assert model.size_bytes == sum(p.stat().st_size for p in llama_folder.iterdir())
    assert {"fine_tuning", "lora_adaptation", "full_training"} <= set(model.training_types)
    assert (model.owner, model.description, model.job_id) == ("ada", "ours", None)
    assert [m.name for m in registry.list()] == ["team/llama"]
    assert registry.get("team/llama") == model
    assert registry.jobs_using("team/llama") == []

    assert registry.remove("team/llama") == model
    assert registry.list() == []
    kept = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json"}
    assert {p.name for p in llama_folder.iterdir()} == {*kept, "tokenizer_config.json"}
    with pytest.raises(ModelNotRegisteredError, match=r"No model named 'team/llama'.*Fix:"):
        registry.get("team/llama")
    with pytest.raises(ModelNotRegisteredError, match="flextrain models list"):
        registry.remove("team/llama")


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "name is empty"),
        ("/models/x", "is not valid. Fix: use letters, digits"),
        ("two words", "is not valid"),
        ("a/b/c", "at most one '/'"),
        ("x" * 101, "up to 100 characters"),
        ("x" * 100 + "/" + "y" * 100, "200 in all"),
        ("flextrain/tiny-llama", "built-in models'. Fix: choose another name"),
    ],
)
def test_bad_names_are_refused_with_the_rule(
    service: TrainingService, llama_folder: Path, name: str, message: str
) -> None:
    with pytest.raises(ModelRegistryError, match=message):
        service.model_registry.add(llama_folder, name)
    assert service.model_registry.list() == []


def test_bad_folders_are_refused_with_the_fix(
    service: TrainingService, llama_folder: Path, tmp_path: Path
) -> None:
    add = service.model_registry.add
    # Issue 19: a missing path said "has no config.json".
    missing = tmp_path / "missing"
    with pytest.raises(ModelRegistryError) as error:
        add(missing, "m")
    assert str(error.value) == (
        f"path '{missing}' does not exist. Fix: check the path; give the folder "
        "save_pretrained() wrote (it holds config.json and *.safetensors)."
    )
    with pytest.raises(ModelRegistryError) as error:
        add(llama_folder / "config.json", "m")
    assert str(error.value) == (
        f"path '{llama_folder / 'config.json'}' is a file, not a folder. Fix: give the folder "
        f"save_pretrained() wrote (it holds config.json and *.safetensors): its folder, "
        f"{llama_folder}."
    )
    with pytest.raises(ModelRegistryError, match="not a valid path"):
        add("bad\x00path", "m")

    no_config = Path(shutil.copytree(llama_folder, tmp_path / "no-config"))
    (no_config / "config.json").unlink()
    with pytest.raises(ModelRegistryError, match=r"has no config\.json\. Fix:"):
        add(no_config, "m")

    pickle_only = Path(shutil.copytree(llama_folder, tmp_path / "pickle-only"))
    (pickle_only / "model.safetensors").rename(pickle_only / "pytorch_model.bin")
    with pytest.raises(ModelRegistryError, match=r"only pickle weights \(pytorch_model\.bin\)"):
        add(pickle_only, "m")

    no_weights = Path(shutil.copytree(llama_folder, tmp_path / "no-weights"))
    (no_weights / "model.safetensors").unlink()
    with pytest.raises(ModelRegistryError, match=r"has no weights \(\*\.safetensors\)"):
        add(no_weights, "m")

    unknown = Path(shutil.copytree(llama_folder, tmp_path / "unknown-type"))
    (unknown / "config.json").write_text(json.dumps({"model_type": "no-such-model"}))
    with pytest.raises(ModelRegistryError, match="transformers cannot read"):
        add(unknown, "m")
    assert service.model_registry.list() == []


def test_the_same_folder_twice_is_no_new_version(
    service: TrainingService, llama_folder: Path
) -> None:
    service.model_registry.add(llama_folder, "llama")
    with pytest.raises(
        ModelNameTakenError,
        match=r"'llama' is already registered as .*\(its latest version, llama:1\)\. Fix: give "
        "another folder to add a version",
    ):
        service.model_registry.add(llama_folder, "llama")
    with pytest.raises(ModelRegistryError, match=r"name 'llama:2' names a version\. Fix: give "):
        service.model_registry.add(llama_folder, "llama:2")


def test_a_registered_name_whose_folder_is_gone_says_so(
    service: TrainingService, llama_folder: Path
) -> None:
    service.model_registry.add(llama_folder, "gone")
    shutil.rmtree(llama_folder)
    with pytest.raises(ModelNotFoundError, match=r"no longer a folder\. Fix: restore"):
        service.models.resolve("gone")


def test_remove_is_refused_while_an_unfinished_job_names_the_model(
    service: TrainingService, llama_folder: Path
) -> None:
    service.model_registry.add(llama_folder, "busy")
    pending = service.create_job(tiny_config("busy"))
    by_path = service.create_job(tiny_config(str(llama_folder.resolve())))
    used = [j.job_id for j in service.model_registry.jobs_using("busy")]
    assert sorted(used) == sorted([pending.job_id, by_path.job_id])
    with pytest.raises(ModelInUseError, match=f"unfinished job.*{pending.job_id}.*cancel them"):
        service.model_registry.remove("busy")
    service.cancel_job(pending.job_id)
    service.cancel_job(by_path.job_id)
    assert service.model_registry.remove("busy").name == "busy"


# -- training from a name, and what a completed job registers -----------------------------
def test_a_registered_name_trains_and_the_result_is_registered_with_lineage(
    service: TrainingService, llama_folder: Path
) -> None:
    registry = service.model_registry
    registry.add(llama_folder, "base-llama")
    assert service.check_compatibility("base-llama").is_compatible
    version = service.datasets.add(bundled_path("text.txt"), name="team/text").version

    job = run_completed(
        service, tiny_config("base-llama", run_name="support bot v1", dataset_id="team/text")
    )

    trained = registry.get("support-bot-v1")
    assert trained.source == "trained"
    assert not trained.adapter
    assert trained.path == job.model_path
    # The base is pinned to the version the job loaded: later versions of it would hide it.
    assert (trained.job_id, trained.base_model, trained.owner) == (job.job_id, "base-llama:1", None)
    assert (trained.version, trained.ref, trained.latest) == (1, "support-bot-v1:1", True)
    assert trained.config_hash is not None
    assert len(trained.config_hash) == 64
    assert json.loads((Path(trained.path) / "flextrain.json").read_text())["job_id"] == job.job_id
    assert (trained.dataset_id, trained.dataset_version) == ("team/text", version)
    assert job.dataset_version == version
    assert len(version) == 64
    assert trained.config == job.config
    assert trained.metrics is not None
    assert trained.metrics["train_loss"] > 0
    assert trained.architecture == "LlamaForCausalLM"
    assert "fine_tuning" in trained.training_types
    assert trained.description == "fine_tuning of base-llama:1 on team/text"
    # `show` of the base lists the job that trained from it.
    assert [j.job_id for j in registry.jobs_using("base-llama")] == [job.job_id]
    assert registry.for_job(job.job_id) == trained
    assert service.events(job.job_id) == []  # a success leaves no event
    # Registering the same job again changes nothing.
    assert registry.register_trained(job) == trained

    # The trained model's name is itself a model id; a finished job does not block removal.
    assert service.inspect_model("support-bot-v1").model_type == "llama"
    assert registry.remove("base-llama").name == "base-llama"


def test_a_lora_run_registers_an_adapter_under_a_free_name(
    service: TrainingService, llama_folder: Path
) -> None:
    registry = service.model_registry
    registry.add(llama_folder, "adapted")  # the run's name is taken
    job = run_completed(
        service,
        tiny_config(
            "flextrain/tiny-llama", run_name="adapted", training_type=TrainingType.LORA_ADAPTATION
        ),
    )
    adapter = registry.for_job(job.job_id)
    assert adapter is not None
    assert adapter.name == f"adapted-{job.job_id}"
    assert adapter.adapter
    assert adapter.training_types == []
    assert adapter.base_model == "flextrain/tiny-llama"
    assert adapter.architecture == "LlamaForCausalLM"  # of the base it adapts
    assert adapter.description.endswith("on demo/text (LoRA adapter)")
    with pytest.raises(ModelNotFoundError, match=r"is a LoRA adapter of 'flextrain/tiny-llama'"):
        service.models.resolve(adapter.name)
    with pytest.raises(ModelNotFoundError, match=f"flextrain models merge {job.job_id}"):
        service.create_job(tiny_config(adapter.name))


def test_a_registry_failure_is_a_warning_and_the_job_stays_completed(
    service: TrainingService, settings: Settings, tmp_path: Path
) -> None:
    job = run_completed(service, tiny_config("flextrain/tiny-llama"))
    registered = service.model_registry.for_job(job.job_id)
    assert registered is not None
    assert registered.name == job.job_id
    spec = RunSpec.model_validate_json(service.environment(job.job_id).config_file.read_text())
    # The worker's step on a database it cannot open (here: no such folder).
    broken = f"sqlite:///{tmp_path / 'missing' / 'db.sqlite'}"
    _register_model(service.store, job.job_id, spec, broken, settings.home)

    (event,) = service.events(job.job_id)
    assert (event.kind, event.level) == ("model_registration_failed", "warning")
    assert event.message.startswith("The model was saved but not registered:")
    assert service.require_job(job.job_id).status == TrainingStatus.COMPLETED


def test_the_python_api_registers_lists_and_removes(
    service: TrainingService, llama_folder: Path
) -> None:
    interface = FlexibleTrainingInterface(service=service)
    model = asyncio.run(interface.register_model(llama_folder, "py/llama", "from Python"))
    assert model.description == "from Python"
    assert model.architecture == "LlamaForCausalLM"
    assert [m.name for m in interface.list_models()] == ["py/llama"]
    assert interface.get_model("py/llama") == model
    copy = shutil.copytree(llama_folder, llama_folder.parent / "copy")
    again = asyncio.run(interface.register_model(copy, "py/llama"))
    assert [m.ref for m in interface.model_versions("py/llama")] == ["py/llama:1", "py/llama:2"]
    assert [c.key for c in interface.diff_models("py/llama:1", "py/llama").lineage] == ["path"]
    back = interface.promote_model("py/llama:1", "py/llama")
    assert (back.ref, back.path) == ("py/llama:3", model.path)
    assert interface.remove_model("py/llama:2") == again.model_copy(update={"latest": False})
    assert interface.remove_model("py/llama") == back
    with pytest.raises(ModelNotRegisteredError):
        interface.get_model("py/llama")


@pytest.mark.parametrize("name", ["team\x00/x", "x" * 300, "/etc", "a/b/c", ""])
def test_lookups_of_impossible_names_find_nothing(service: TrainingService, name: str) -> None:
    """Names the rules refuse never reach the database (PostgreSQL would refuse a NUL or
    an over-long key), and are no registered model."""
    registry = service.model_registry
    assert registry.find(name) is None
    assert registry.folder_for(name) is None
    with pytest.raises(ModelNotRegisteredError, match=r"is registered\. Fix:"):
        registry.remove(name)


def test_metrics_that_diverged_are_stored_as_null(
    service: TrainingService, llama_folder: Path
) -> None:
    """NaN and infinities (a diverged run) fit neither PostgreSQL's JSON nor a response."""
    job = service.create_job(tiny_config("flextrain/tiny-llama", run_name="nan run"))
    service.store.merge_metrics(job.job_id, {"eval_loss": float("nan"), "train_loss": 2.5})
    job = service.require_job(job.job_id)
    model = service.model_registry.register_trained(job, llama_folder)
    assert model.name == "nan-run"
    assert model.source == "trained"
    assert model.metrics == {"eval_loss": None, "train_loss": 2.5}
    assert service.model_registry.get("nan-run").model_dump_json()  # valid JSON
