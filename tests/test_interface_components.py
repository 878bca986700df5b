"""The seed's constructor: the three services it is given are the ones the interface uses."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from flextrain import FlexibleTrainingInterface
from flextrain.config.enums import TrainingType
from flextrain.config.schemas import BasicTrainingConfig
from flextrain.service import TrainingService
from flextrain.settings import Settings


def test_a_dataset_manager_given_is_the_one_jobs_read(
    service: TrainingService, settings: Settings, tmp_path: Path
) -> None:
    data = tmp_path / "lines.txt"
    data.write_text("".join(f"line {i} of the text\n" for i in range(40)))
    service.register_dataset("given/lines", data)
    # Another home, whose own dataset manager has never heard of "given/lines".
    other = Settings(home=tmp_path / "other", models_cache=settings.models_cache)
    interface = FlexibleTrainingInterface(training_data_manager=service.datasets, settings=other)
    config = BasicTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="given/lines",
        training_type=TrainingType.FINE_TUNING,
    )
    job = asyncio.run(interface.create_basic_training_job(config))
    assert job.dataset_id == "given/lines"
    assert (
        interface.service.get_dataset("given/lines").path == service.get_dataset("given/lines").path
    )
    interface.service.close()


def test_a_service_and_components_together_are_refused(service: TrainingService) -> None:
    with pytest.raises(ValueError, match="give either service or the components"):
        FlexibleTrainingInterface(training_data_manager=service.datasets, service=service)
