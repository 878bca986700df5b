"""The seed's three Python examples run as written, through the compat import path."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.config.validation import ConfigValidationError
from flextrain.service import TrainingService
from flextrain.settings import Settings

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run(script: str, settings: Settings) -> str:
    env = {
        **os.environ,
        "FLEXTRAIN_HOME": str(settings.home),
        "FLEXTRAIN_MODELS_CACHE": str(settings.models_cache),
    }
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def _register_conversations(service: TrainingService, tmp_path: Path) -> None:
    path = tmp_path / "conversations.jsonl"
    turns = [
        ("How is the weather today?", "It is warm and bright by the river."),
        ("Where is the market?", "The market is in the town square, near the library."),
        ("What should I cook?", "A soup with fresh bread from the market."),
        ("When does the train leave?", "The early train leaves the small station at seven."),
    ]
    with path.open("w") as fh:
        for i in range(48):
            prompt, response = turns[i % len(turns)]
            fh.write(json.dumps({"prompt": prompt, "response": response}) + "\n")
    service.datasets.register("conversation_dataset", path)


def test_basic_training_example_trains_for_real(
    service: TrainingService, settings: Settings, tmp_path: Path
) -> None:
    _register_conversations(service, tmp_path)
    out = _run("seed_basic_training.py", settings)
    assert re.search(r"Progress: \d+\.\d%", out)
    job_id = re.search(r"Job: (\w+)", out).group(1)  # type: ignore[union-attr]
    job = service.wait(job_id, timeout=180)
    assert job.status == TrainingStatus.COMPLETED, job.error_message
    assert job.total_epochs == 3
    assert job.config["learning_rate"] == 2e-5
    assert Path(job.model_path or "", "model.safetensors").exists()


def test_advanced_training_example_creates_the_job(
    service: TrainingService, settings: Settings, tmp_path: Path
) -> None:
    _register_conversations(service, tmp_path)
    out = _run("seed_advanced_training.py", settings)
    job_id = re.search(r"Job: (\w+) pending", out).group(1)  # type: ignore[union-attr]
    job = service.require_job(job_id)
    assert job.mode.value == "advanced"
    assert job.config["lora_target_modules"] == ["q_proj", "v_proj", "k_proj"]
    assert job.config["per_device_train_batch_size"] == 16
    # fp16 needs a GPU: kept as a warning on the plan, refused when started on this CPU.
    assert any("fp16" in w for w in job.warnings)
    assert "warning: fp16" in out
    # Starting it here re-validates against this machine: refused with the reason, and
    # only that one (per_device_train_batch_size alone is not "disagreeing" with the
    # batch_size default it was never given).
    with pytest.raises(ConfigValidationError, match=r"\(1 problem\):\n  - fp16: fp16 needs"):
        service.start_job(job_id)
    failed = service.require_job(job_id)
    assert failed.status == TrainingStatus.FAILED
    assert "fp16" in (failed.error_message or "")
    assert failed.pid is None  # no worker was launched


def test_advanced_training_example_without_fp16_starts_and_trains(
    service: TrainingService, tmp_path: Path
) -> None:
    """The seed's advanced example on a CPU, fp16 (a GPU's) being the only change."""
    _register_conversations(service, tmp_path)
    config = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="conversation_dataset",
        training_type=TrainingType.LORA_ADAPTATION,
        learning_rate=1e-4,
        weight_decay=0.01,
        adam_beta1=0.9,
        adam_beta2=0.999,
        num_epochs=5,
        warmup_steps=100,
        lr_scheduler_type="cosine",
        per_device_train_batch_size=16,
        gradient_accumulation_steps=2,
        gradient_checkpointing=True,
        lora_r=32,
        lora_alpha=64,
        lora_dropout=0.1,
        lora_target_modules=["q_proj", "v_proj", "k_proj"],
    )
    job = service.create_job(config)
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=180)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    spec = json.loads(service.environment(job.job_id).config_file.read_text())
    assert spec["config"]["per_device_train_batch_size"] == 16
    assert Path(done.model_path or "", "adapter_model.safetensors").exists()


def test_hardware_example_prints_every_field(settings: Settings) -> None:
    out = _run("seed_hardware.py", settings)
    for label in (
        "Available Memory",
        "GPU Memory",
        "GPU Count",
        "Mixed Precision Support",
        "Recommended Precision",
    ):
        assert re.search(rf"^{label}: \S+", out, re.MULTILINE), out
