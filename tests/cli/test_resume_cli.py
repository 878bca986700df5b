"""`flextrain jobs resume | events | metrics [--system]` on a real tiny run.

A job whose worker "died" (the store names a process that has exited, as after a
SIGKILL) is found INTERRUPTED; `jobs resume --detach` restarts it (from the
start: it never saved a checkpoint) and the run's events, system samples and
per-step metrics are then read back through the CLI.
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner, Result

from flextrain.cli.main import app
from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.jobs.process import process_start_time
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.staging import stage_status

RESUMABLE = "only a job that is cancelled, diverged, failed, interrupted, paused can be resumed"


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FLEXTRAIN_HOME", str(settings.home))
    # The same database as `settings` (a PostgreSQL one under `make test-postgres`).
    monkeypatch.setenv("FLEXTRAIN_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(settings.builtin_models_dir))
    # Wide enough that rich never wraps a column name of the metrics table.
    monkeypatch.setenv("COLUMNS", "400")
    return settings


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, ["jobs", *args])


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def short_config() -> AdvancedTrainingConfig:
    return AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="demo/text",
        training_type=TrainingType.FINE_TUNING,
        max_steps=6,
        batch_size=8,
        max_length=48,
        logging_steps=1,
        eval_split=0.0,
        evaluate_before_training=False,
        num_threads=1,
        monitor_interval=0.5,
        gradient_checkpointing=False,  # explicit: no "off" note among the events
    )


def interrupted_job(service: TrainingService) -> str:
    """A job recorded as TRAINING in a worker process that has since been killed."""
    job_id = service.create_job(short_config()).job_id
    proc = subprocess.Popen(["sleep", "60"])
    started = process_start_time(proc.pid)
    proc.kill()
    proc.wait()
    stage_status(
        service.store,
        job_id,
        TrainingStatus.TRAINING,
        pid=proc.pid,
        pid_started_at=started,
        started_at=datetime.now(UTC),
    )
    assert service.require_job(job_id).status == TrainingStatus.INTERRUPTED
    return job_id


def test_resume_detached_then_events_and_metrics(
    cli_env: Settings, service: TrainingService
) -> None:
    job_id = interrupted_job(service)
    resumed = invoke("resume", job_id, "--detach")
    assert resumed.exit_code == 0, resumed.output
    out = flat(resumed)
    assert f"Job {job_id}: Resumed from the start: no checkpoint was saved" in out
    assert "(was interrupted)" in out
    assert "Traceback" not in resumed.output
    job = service.wait(job_id, timeout=120, poll=0.2)
    assert job.status == TrainingStatus.COMPLETED, service.read_log(job_id, 40)
    assert job.resume_count == 1

    events = invoke("events", job_id)
    assert events.exit_code == 0, events.output
    text = flat(events)
    assert f"Events of job {job_id}" in text
    assert "interrupted" in text
    assert "resumed" in text
    assert "The worker process stopped without reporting a result" in text
    as_json = invoke("events", job_id, "--json")
    assert as_json.exit_code == 0, as_json.output
    kinds = [e["kind"] for e in json.loads(as_json.stdout) if e["kind"] != "memory_warning"]
    assert kinds == ["interrupted", "resumed"]

    system = invoke("metrics", job_id, "--system", "--json")
    assert system.exit_code == 0, system.output
    samples = json.loads(system.stdout)
    assert samples, "the worker's monitor took no sample"
    for sample in samples:
        assert datetime.fromisoformat(sample["at"]).tzinfo is not None
        assert 0 < sample["memory_used_gb"] <= sample["memory_total_gb"]
        assert 0 < sample["process_rss_gb"] < sample["memory_total_gb"]
    table = invoke("metrics", job_id, "--system")
    assert table.exit_code == 0, table.output
    assert f"System samples of job {job_id} ({len(samples)} rows)" in flat(table)
    assert "memory_used_gb" in table.output
    assert "process_rss_gb" in table.output

    metrics = invoke("metrics", job_id)
    assert metrics.exit_code == 0, metrics.output
    header = next(line for line in metrics.output.splitlines() if " step " in line)
    for column in ("loss", "tokens_per_second", "samples_per_second", "rss_gb", "peak_rss_gb"):
        assert f" {column} " in header, header
    rows = json.loads(invoke("metrics", job_id, "--json").stdout)
    assert [r["step"] for r in rows if "loss" in r] == list(range(1, 7))
    assert all(r["tokens_per_second"] > 0 for r in rows if "loss" in r)


def test_resume_is_refused_for_a_pending_or_completed_job(
    cli_env: Settings, service: TrainingService
) -> None:
    job_id = service.create_job(short_config()).job_id
    pending = invoke("resume", job_id)
    assert pending.exit_code == 2, pending.output
    assert f"Job {job_id} is pending; {RESUMABLE}." in flat(pending)
    assert isinstance(pending.exception, SystemExit)
    assert "Traceback" not in pending.output

    stage_status(service.store, job_id, TrainingStatus.COMPLETED)
    completed = invoke("resume", job_id, "--detach")
    assert completed.exit_code == 2, completed.output
    assert f"Job {job_id} is completed; {RESUMABLE}." in flat(completed)
    assert isinstance(completed.exception, SystemExit)
    assert "Traceback" not in completed.output
    assert service.require_job(job_id).resume_count == 0
    assert invoke("events", job_id, "--json").stdout.strip() == "[]"

    unknown = invoke("resume", "nope")
    assert unknown.exit_code == 2, unknown.output
    assert "No training job with id 'nope'." in flat(unknown)
