"""What a user watches while a job runs: per-step throughput and memory, task metrics at
evaluation, early stopping, the best model kept, tracking to MLflow and TensorBoard,
and memory warnings from the worker's monitor."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from safetensors.torch import load_file

from flextrain.config.enums import TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.service import TrainingService
from flextrain.train.monitor import JobMonitor
from tests.train.helpers import run_job

LM = {
    "model_id": "flextrain/tiny-llama",
    "dataset_id": "demo/text",
    "training_type": TrainingType.FINE_TUNING,
    "batch_size": 8,
    "max_length": 48,
    "num_threads": 1,
    "gradient_checkpointing": False,
    "evaluate_before_training": False,
    "eval_split": 0.1,
    "eval_strategy": "steps",
    "monitor_interval": 0.5,
}


def _config(**overrides: object) -> AdvancedTrainingConfig:
    return AdvancedTrainingConfig(**{**LM, **overrides})  # type: ignore[arg-type]


def test_each_logging_step_records_throughput_memory_and_eval_perplexity(
    service: TrainingService,
) -> None:
    job = run_job(
        service,
        _config(max_steps=12, logging_steps=2, eval_steps=6, learning_rate=3e-3),
    )
    history = service.metric_history(job.job_id)
    train_rows = [r for r in history if "loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 4, 6, 8, 10, 12]
    for row in train_rows:
        assert row["learning_rate"] > 0
        assert row["grad_norm"] > 0
        assert row["epoch"] > 0
        assert 0.05 < row["rss_gb"] <= row["peak_rss_gb"] < 64
    # The first row has no window before it; every later one has real throughput.
    for row in train_rows[1:]:
        assert row["samples_per_second"] > 0
        assert row["tokens_per_second"] > 0
        tokens_per_sample = row["tokens_per_second"] / row["samples_per_second"]
        assert 2 <= tokens_per_sample <= 48  # real tokens (no padding) of <= max_length rows
    eval_rows = [r for r in history if "eval_loss" in r]
    # Every 6 steps; the final evaluation is step 12's (the same weights), not a second pass.
    assert [r["step"] for r in eval_rows] == [6, 12]
    assert job.metrics["eval_loss"] == eval_rows[-1]["eval_loss"]
    for row in eval_rows:
        assert row["eval_perplexity"] == pytest.approx(math.exp(row["eval_loss"]))
    assert job.metrics["eval_perplexity"] == pytest.approx(math.exp(job.metrics["eval_loss"]))
    assert service.system_samples(job.job_id)  # the monitor sampled while it ran


def test_early_stopping_stops_on_a_plateau(service: TrainingService) -> None:
    # A learning rate far below float precision: the weights, and so the eval loss,
    # never change; patience 2 with an evaluation every 2 steps stops at step 6.
    job = run_job(
        service,
        _config(
            max_steps=200,
            learning_rate=1e-12,
            logging_steps=2,
            eval_steps=2,
            early_stopping_patience=2,
            save_total_limit=1,
        ),
    )
    assert job.current_step == 6
    assert job.total_steps == 200
    assert job.metrics["early_stopped_at_step"] == 6
    event = service.events(job.job_id)[-1]
    assert event.kind == "early_stopped"
    assert "Stopped early at step 6 of 200: eval_loss did not improve for 2" in event.message
    assert job.metrics["best_checkpoint"].endswith("checkpoint-2")


def test_the_best_checkpoint_is_the_saved_model(service: TrainingService) -> None:
    # Rank checkpoints by eval loss with *higher* better: while the loss falls, the best is
    # the first evaluated one, so the saved model must be step 4's, not the last step's.
    job = run_job(
        service,
        _config(
            max_steps=12,
            learning_rate=3e-3,
            logging_steps=4,
            eval_steps=4,
            load_best_model_at_end=True,
            metric_for_best_model="loss",
            greater_is_better=True,
            save_total_limit=None,
        ),
    )
    losses = [r["eval_loss"] for r in service.metric_history(job.job_id) if "eval_loss" in r]
    assert losses[0] > losses[1] > losses[2]  # it learnt, so step 4 is "best" here
    assert job.metrics["best_checkpoint"].endswith("checkpoint-4")
    saved = load_file(str(Path(job.model_path or "") / "model.safetensors"))
    checkpoints = service.environment(job.job_id).checkpoint_dir
    best = load_file(str(checkpoints / "checkpoint-4" / "model.safetensors"))
    last = load_file(str(checkpoints / "checkpoint-12" / "model.safetensors"))
    assert all((saved[k] == best[k]).all() for k in best)
    assert any((saved[k] != last[k]).any() for k in last)


def test_mlflow_and_tensorboard_record_a_job(
    service: TrainingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlflow import MlflowClient

    from flextrain.train.tracking import default_tracking_uri

    for name in ("MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    job = run_job(
        service,
        _config(
            max_steps=6,
            logging_steps=1,
            eval_strategy="no",
            learning_rate=3e-3,
            tracking=["mlflow", "tensorboard"],
        ),
    )
    client = MlflowClient(default_tracking_uri(service.settings.home))
    experiment = client.get_experiment_by_name("flextrain")
    assert experiment is not None
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs] == [job.job_id]
    run = runs[0]
    assert run.info.status == "FINISHED"
    assert run.data.tags["flextrain.job_id"] == job.job_id
    losses = client.get_metric_history(run.info.run_id, "loss")
    assert [m.step for m in losses] == [1, 2, 3, 4, 5, 6]
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "model")}
    assert "model/model.safetensors" in artifacts
    events = list((Path(job.output_dir or "") / "tensorboard").rglob("events.out.tfevents.*"))
    assert events


def test_memory_warning_is_raised_once_per_crossing(service: TrainingService) -> None:
    job = service.create_job(_config(max_steps=2))
    # Any machine uses more than 1% of its memory: the line is passed at once.
    monitor = JobMonitor(service.store, job.job_id, interval=60, warn_fraction=0.01)
    try:
        for _ in range(3):
            sample = monitor.tick()
        assert sample.memory_fraction > 0.01
        warnings = [e for e in service.events(job.job_id) if e.kind == "memory_warning"]
        assert len(warnings) == 1
        assert warnings[0].level == "warning"
        assert "System memory at" in warnings[0].message
        assert "lower batch_size" in warnings[0].message
        # Once use falls below the re-arm line (here: anything under 100%), it may warn again.
        monitor.rearm_fraction = 1.0
        monitor.tick()
        monitor.tick()
        warnings = [e for e in service.events(job.job_id) if e.kind == "memory_warning"]
        assert len(warnings) == 2
        assert len(service.system_samples(job.job_id)) == 5
        assert service.require_job(job.job_id).heartbeat_at is not None
    finally:
        monitor.sampler.close()
