"""A tiny training run for the registry tests: four steps of the tiny Llama."""

from __future__ import annotations

from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs.store import TrainingJob
from flextrain.service import TrainingService


def tiny_config(model_id: str, **extra: object) -> AdvancedTrainingConfig:
    """Four steps of fine-tuning on the bundled text: seconds on one thread."""
    values: dict[str, object] = {
        "model_id": model_id,
        "dataset_id": "demo/text",
        "training_type": TrainingType.FINE_TUNING,
        "num_epochs": 1,
        "learning_rate": 3e-3,
        "batch_size": 8,
        "max_length": 32,
        "max_steps": 4,
        "logging_steps": 2,
        "eval_strategy": "no",
        "evaluate_before_training": False,
        "num_threads": 1,
        "gradient_checkpointing": False,
        **extra,
    }
    return AdvancedTrainingConfig(**values)  # type: ignore[arg-type]


def run_completed(service: TrainingService, config: AdvancedTrainingConfig) -> TrainingJob:
    """Create and start a job, wait for it, and insist it completed (else show its log)."""
    job = service.create_job(config)
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=240, poll=0.2)
    assert done.status == TrainingStatus.COMPLETED, (
        done.error_message,
        service.read_log(job.job_id),
    )
    return done
