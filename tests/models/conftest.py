"""Fixtures of the model tests."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from flextrain.service import TrainingService


@pytest.fixture
def llama_folder(service: TrainingService, tmp_path: Path) -> Path:
    """A copy of the tiny Llama: a model folder of the user's own."""
    source = service.models.resolve("flextrain/tiny-llama").path
    return Path(shutil.copytree(source, tmp_path / "my-llama"))
