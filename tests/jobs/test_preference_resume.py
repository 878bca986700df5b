"""A preference (DPO) and a reward (GRPO) run killed mid-way resume from their checkpoint
and end with the same number of steps, as supervised runs do (tests/jobs/test_resume.py)."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs.checkpoints import list_checkpoints
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.jobs.test_resume import _wait_step
from tests.train.helpers import write_keyword_preferences

STEPS = 150
SAVE_EVERY = 10


def _prompts(path: Path) -> Path:
    subjects = ["the soup", "the train", "the garden", "the river"]
    path.write_text("".join(json.dumps({"prompt": f"{s} was"}) + "\n" for s in subjects * 16))
    return path


def _config(ttype: TrainingType, data: Path) -> AdvancedTrainingConfig:
    values: dict[str, Any] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": str(data),
        "training_type": ttype,
        "max_steps": STEPS,
        "learning_rate": 5e-3,
        "batch_size": 8,
        "max_length": 32,
        "logging_steps": 1,
        "num_threads": 1,
        "save_steps": SAVE_EVERY,
        "save_total_limit": 2,
        "eval_split": 0.0,
        "gradient_checkpointing": False,
        "monitor_interval": 0.5,
    }
    if ttype == TrainingType.GRPO:
        values["preference"] = {
            "num_generations": 4,
            "max_completion_length": 4,
            "rewards": [{"name": "contains", "pattern": "e"}],
        }
    return AdvancedTrainingConfig(**values)


@pytest.mark.parametrize("ttype", [TrainingType.DPO, TrainingType.GRPO])
def test_a_killed_preference_run_resumes_from_its_checkpoint_to_the_same_end(
    service: TrainingService, settings: Settings, tmp_path: Path, ttype: TrainingType
) -> None:
    data = (
        write_keyword_preferences(tmp_path / "pairs.jsonl")
        if ttype == TrainingType.DPO
        else _prompts(tmp_path / "prompts.jsonl")
    )
    job = service.create_job(_config(ttype, data))
    service.start_job(job.job_id)
    killed_at = _wait_step(service, job.job_id, 2 * SAVE_EVERY + 3)
    pid = service.store.get(job.job_id).pid  # type: ignore[union-attr]
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)

    other = TrainingService(settings)
    assert job.job_id in other.recover_jobs()["interrupted"]
    checkpoint_dir = other.environment(job.job_id).checkpoint_dir
    checkpoint_step = max(c.step for c in list_checkpoints(checkpoint_dir))
    assert SAVE_EVERY <= checkpoint_step < killed_at + 1

    other.resume_job(job.job_id)
    done = other.wait(job.job_id, timeout=240)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    assert done.current_step == STEPS
    log = other.read_log(job.job_id, tail=10_000)
    assert f"resuming from {checkpoint_dir}/checkpoint-{checkpoint_step}" in log
    steps = [row["step"] for row in other.metric_history(job.job_id) if "loss" in row]
    assert steps == sorted(set(steps))
    assert set(range(checkpoint_step + 1, STEPS + 1)) <= set(steps)
    assert (Path(done.model_path or "") / "adapter_model.safetensors").exists()
    other.engine.dispose()
