"""`flextrain queue`, `flextrain scheduler`, `train --priority` and a foreground `train`
whose job waits in the queue, on a home limited to one running job
(FLEXTRAIN_MAX_CONCURRENT_JOBS=1) that another job occupies."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner, Result

from flextrain.cli.main import app
from flextrain.config.enums import TrainingStatus
from flextrain.jobs.errors import JobStateError
from flextrain.jobs.scheduler import LOOP_LOCK
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.jobs.queue_helpers import end, occupy, quick_config

QUICK_FLAGS = [
    "--model",
    "flextrain/tiny-llama",
    "--dataset",
    "demo/text",
    "--type",
    "fine_tuning",
    "--max-length",
    "32",
]


@pytest.fixture
def service(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Iterator[TrainingService]:
    """The CLI's home, limited to one running job; the service the test sets it up with."""
    monkeypatch.setenv("FLEXTRAIN_HOME", str(settings.home))
    # The same database as `settings` (a PostgreSQL one under `make test-postgres`).
    monkeypatch.setenv("FLEXTRAIN_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(settings.builtin_models_dir))
    monkeypatch.setenv("FLEXTRAIN_MAX_CONCURRENT_JOBS", "1")
    monkeypatch.setenv("COLUMNS", "400")  # rich never wraps an id or a reason
    svc = TrainingService(settings.model_copy(update={"max_concurrent_jobs": 1}))
    yield svc
    for job in svc.list_jobs():
        if not job.is_finished:
            with suppress(JobStateError):
                svc.cancel_job(job.job_id, timeout=10)
    svc.engine.dispose()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(app, list(args))


def flat(result: Result) -> str:
    return " ".join(result.output.split())


def test_queue_shows_the_order_the_reasons_and_the_running_jobs(
    service: TrainingService,
) -> None:
    empty = invoke("queue")
    assert empty.exit_code == 0, empty.output
    assert "The queue is empty." in empty.output
    assert "No job is running." in empty.output

    blocker, _ = occupy(service)
    low = service.start_job(service.create_job(quick_config()).job_id).job_id
    high = service.start_job(service.create_job(quick_config(), priority=3).job_id).job_id

    result = invoke("queue")
    assert result.exit_code == 0, result.output
    text = result.output
    reason = f"max_concurrent_jobs 1 reached: job {blocker} running"
    assert re.search(rf"│ 1 +│ {high} │ 3 +│ \d+ s +│ - +│ {reason}", text), text
    behind = f"waits its turn behind job {high} (priority 3), which waits for resources"
    assert re.search(rf"│ 2 +│ {low} │ 0 +│ \d+ s +│ - +│ {re.escape(behind)}", text), text
    assert re.search(rf"│ {blocker} │ training │ 0 +│ 1 +│ - +│ 1 +│", text), text
    assert "CPU threads reserved: 1 of" in flat(result)
    assert "max_concurrent_jobs: 1" in flat(result)

    as_json = invoke("queue", "--json")
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert [(q["position"], q["job_id"]) for q in data["queued"]] == [(1, high), (2, low)]
    assert [r["job_id"] for r in data["running"]] == [blocker]


def test_train_priority_detach_queues_and_cancel_removes_it(service: TrainingService) -> None:
    blocker, _ = occupy(service)
    result = invoke("train", *QUICK_FLAGS, "--priority", "3", "--detach")
    assert result.exit_code == 0, result.output
    match = re.search(r"Job ([0-9a-f]{12}) queued \(fine_tuning\)", result.output)
    assert match, result.output
    job_id = match.group(1)
    assert f"queued: max_concurrent_jobs 1 reached: job {blocker} running" in flat(result)
    shown = json.loads(invoke("jobs", "show", job_id, "--json").stdout)
    assert (shown["status"], shown["priority"], shown["pid"]) == ("queued", 3, None)

    listed = invoke("jobs", "list", "--status", "queued")
    assert listed.exit_code == 0
    assert job_id in listed.output

    cancelled = invoke("jobs", "cancel", job_id)
    assert cancelled.exit_code == 0, cancelled.output
    assert f"Job {job_id} is cancelled." in cancelled.output
    assert "The queue is empty." in invoke("queue").output
    assert service.require_job(job_id).pid is None


def test_train_priority_out_of_range_is_bad_input(service: TrainingService) -> None:
    result = invoke("train", *QUICK_FLAGS, "--priority", "5000")
    assert result.exit_code == 2
    assert "--priority" in flat(result)
    assert service.list_jobs() == []


def test_a_foreground_train_waits_in_the_queue_then_runs(
    service: TrainingService, tmp_path: Path
) -> None:
    """No scheduler loop runs: the command following its queued job ticks, and starts it
    once the job that held the machine is gone."""
    blocker, proc = occupy(service)
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump(quick_config().model_dump(mode="json")))
    threading.Timer(2.0, end, args=(proc,)).start()
    result = invoke("train", "--config", str(config))
    assert result.exit_code == 0, result.output
    text = flat(result)
    assert "queued (fine_tuning)" in text
    assert f"queued: max_concurrent_jobs 1 reached: job {blocker} running" in text
    assert "Completed." in text
    assert service.require_job(blocker).status == TrainingStatus.INTERRUPTED


def test_a_second_scheduler_on_the_same_home_is_refused(
    service: TrainingService, settings: Settings
) -> None:
    first = subprocess.Popen(
        [sys.executable, "-m", "flextrain.cli.main", "scheduler", "--interval", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=dict(os.environ),
    )
    try:
        lock = settings.home / LOOP_LOCK
        deadline = time.monotonic() + 60
        while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
            assert first.poll() is None, first.communicate()[0]
            assert time.monotonic() < deadline, "the first scheduler never took the home"
            time.sleep(0.2)

        second = invoke("scheduler")
        assert second.exit_code == 1, second.output
        text = flat(second)
        assert f"A scheduler already runs for {settings.home} (pid {first.pid})" in text
        assert "only one runs per FLEXTRAIN_HOME" in text
        once = invoke("scheduler", "--once")  # a single tick is always allowed
        assert once.exit_code == 0, once.output
    finally:
        first.send_signal(signal.SIGTERM)
        output = first.communicate(timeout=30)[0].decode()
    assert first.returncode == 0, output
    assert "Scheduler stopped." in output
