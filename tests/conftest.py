"""Shared fixtures: an isolated flextrain home per test, built-in models built once.

Tests run offline (HF_HUB_OFFLINE=1): the hub is outside the project, and
every model used here is built locally or shipped by a package.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"

from flextrain.hardware.detect import HardwareConstraints
from flextrain.service import TrainingService
from flextrain.settings import Settings


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built-in tiny models are generated once per test session."""
    return tmp_path_factory.mktemp("builtin-models")


@pytest.fixture
def settings(tmp_path: Path, models_cache: Path) -> Settings:
    return Settings(home=tmp_path / "home", models_cache=models_cache)


@pytest.fixture
def service(settings: Settings) -> Iterator[TrainingService]:
    svc = TrainingService(settings)
    yield svc
    # Never leave a worker behind, whatever the test did.
    for job in svc.list_jobs():
        if not job.is_finished:
            svc.cancel_job(job.job_id)
    svc.engine.dispose()


def cpu_hardware(**overrides: object) -> HardwareConstraints:
    """A CPU-only machine as data, for rules that depend on hardware."""
    values: dict[str, object] = {
        "available_memory_gb": 16.0,
        "total_memory_gb": 24.0,
        "available_gpu_memory_gb": 0.0,
        "gpu_count": 0,
        "cpu_cores": 2,
        "supports_mixed_precision": False,
        "recommended_precision": "fp32",
        "supports_bf16": False,
        "disk_free_gb": 50.0,
    }
    values.update(overrides)
    return HardwareConstraints(**values)  # type: ignore[arg-type]


def gpu_hardware(*, bf16: bool = True) -> HardwareConstraints:
    return cpu_hardware(
        available_gpu_memory_gb=20.0,
        gpu_count=1,
        supports_mixed_precision=True,
        recommended_precision="bf16" if bf16 else "fp16",
        supports_bf16=bf16,
    )
