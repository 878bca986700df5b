"""A job's output folder is its own: another job's folder, one inside or around it, or
a folder that already holds files is refused when the job is created (issue 19)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flextrain import ExpertTrainingConfig
from flextrain.config.enums import TrainingMode, TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig, BasicTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.interface import FlexibleTrainingInterface
from flextrain.service import TrainingService


def _config(**values: object) -> AdvancedTrainingConfig:
    return AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=TrainingType.FINE_TUNING,
        max_length=32,
        **values,  # type: ignore[arg-type]
    )


def _refusal(service: TrainingService, output_dir: Path) -> str:
    with pytest.raises(ConfigValidationError) as info:
        service.create_job(_config(output_dir=str(output_dir)))
    (issue,) = [i for i in info.value.errors if i.field == "output_dir"]
    return str(issue)


def test_a_folder_another_job_writes_to_is_refused_naming_the_job(
    service: TrainingService, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    first = service.create_job(_config(output_dir=str(out)))
    for taken in (out, out / "nested", tmp_path):  # the same, inside it, around it
        message = _refusal(service, taken)
        assert f"is the output folder of job {first.job_id}" in message
        assert "leave output_dir unset" in message
    assert [j.job_id for j in service.list_jobs()] == [first.job_id]
    # A sibling folder is free, and jobs without output_dir each get their own folder.
    service.create_job(_config(output_dir=str(tmp_path.parent / f"{tmp_path.name}-other")))
    a, b = service.create_job(_config()), service.create_job(_config())
    assert a.output_dir != b.output_dir


def test_a_folder_with_files_is_refused_and_an_empty_one_is_used(
    service: TrainingService, tmp_path: Path
) -> None:
    full = tmp_path / "full"
    full.mkdir()
    (full / "model.safetensors").write_bytes(b"someone's model")
    assert _refusal(service, full).startswith(f"output_dir: {full} is not empty.")
    assert (full / "model.safetensors").read_bytes() == b"someone's model"

    empty = tmp_path / "empty"
    empty.mkdir()
    job = service.create_job(_config(output_dir=str(empty), max_steps=2, num_threads=1))
    assert job.output_dir == str(empty)
    assert service.plan_start(job.job_id).output_dir == str(empty)


def test_the_python_api_refuses_advanced_settings_in_a_basic_job(
    service: TrainingService,
) -> None:
    interface = FlexibleTrainingInterface(service=service)
    with pytest.raises(ConfigValidationError) as info:
        asyncio.run(interface.create_basic_training_job(_config(lora_r=8)))  # type: ignore[arg-type]
    assert [i.field for i in info.value.errors] == ["lora_r"]
    assert "create an advanced job (create_advanced_training_job" in str(info.value)
    assert service.list_jobs() == []

    # Only basic fields given: stored as the basic job asked for, and it starts.
    job = asyncio.run(interface.create_basic_training_job(_config(num_epochs=1)))  # type: ignore[arg-type]
    assert job.mode == TrainingMode.BASIC
    assert "weight_decay" not in job.config
    assert service.plan_start(job.job_id).config.num_epochs == 1
    assert service.require_job(job.job_id).status == TrainingStatus.PENDING


def test_expert_config_is_exported_where_basic_and_advanced_are() -> None:
    from ai_karen_engine.core.response.training_interface import (
        ExpertTrainingConfig as FromSeedPath,
    )

    assert FromSeedPath is ExpertTrainingConfig
    assert issubclass(ExpertTrainingConfig, AdvancedTrainingConfig)
    assert issubclass(AdvancedTrainingConfig, BasicTrainingConfig)
