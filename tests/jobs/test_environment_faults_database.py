"""A job database that is locked by another process, held by a real competing SQLite
connection (`BEGIN EXCLUSIVE` in a thread): a brief lock is waited out, by the front
end and by a training worker alike; one held past the wait budget is a clear error
(StoreUnavailableError: which database, how long, the fix), a 503 from the API and one
line from the CLI, and no other job's row changes.

SQLite only: PostgreSQL has no database-wide lock to hold (its engines test their
pooled connections before use instead, `pool_pre_ping`).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from flextrain.api.app import create_app
from flextrain.cli.main import app as cli_app
from flextrain.config.enums import TrainingStatus, TrainingType
from flextrain.config.schemas import AdvancedTrainingConfig
from flextrain.db import StoreUnavailableError, make_sessionmaker
from flextrain.jobs.store import JobStore
from flextrain.migrations import make_engine
from flextrain.service import TrainingService
from flextrain.settings import Settings

# The wait budget of the stores and apps that must give up in these tests.
SHORT_WAIT_S = 0.5


def _config(**overrides: object) -> AdvancedTrainingConfig:
    values: dict[str, object] = {
        "model_id": "flextrain/tiny-llama",
        "dataset_id": "demo/text",
        "training_type": TrainingType.FINE_TUNING,
        "max_steps": 30,
        "batch_size": 8,
        "max_length": 32,
        "logging_steps": 1,
        "num_threads": 1,
        "eval_split": 0.0,
        "evaluate_before_training": False,
        "gradient_checkpointing": False,
    }
    values.update(overrides)
    return AdvancedTrainingConfig(**values)  # type: ignore[arg-type]


def _database_file(service: TrainingService) -> Path:
    if service.engine.dialect.name != "sqlite" or not service.engine.url.database:
        pytest.skip("a database-wide lock is a SQLite file's; this run uses another database")
    return Path(service.engine.url.database)


class Lock:
    """Another connection's write transaction on the database file, held for `seconds`
    or until released, whichever comes first."""

    def __init__(self, database: Path, seconds: float) -> None:
        self._held = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._hold, args=(database, seconds))
        self._thread.start()
        assert self._held.wait(10), "the competing connection never got its lock"

    def _hold(self, database: Path, seconds: float) -> None:
        connection = sqlite3.connect(database, isolation_level=None, check_same_thread=False)
        try:
            connection.execute("BEGIN EXCLUSIVE")
            self._held.set()
            self._done.wait(seconds)
            connection.execute("ROLLBACK")
        finally:
            connection.close()

    def wait(self) -> None:
        """Until the lock ends by itself."""
        self._thread.join()

    def release(self) -> None:
        self._done.set()
        self._thread.join()


@pytest.fixture
def locked_for_long(settings: Settings) -> Iterator[Settings]:
    """Settings whose database URL gives up after SHORT_WAIT_S (`?timeout=`)."""
    url = f"sqlite:///{settings.home / 'flextrain.db'}?timeout={SHORT_WAIT_S}"
    return settings.model_copy(update={"database_url": url})


def test_a_write_waits_out_a_brief_lock(service: TrainingService) -> None:
    database = _database_file(service)
    job = service.create_job(_config())
    lock = Lock(database, 1.0)
    started = time.monotonic()
    assert service.store.update(job.job_id, run_name="renamed while locked")
    waited = time.monotonic() - started
    lock.wait()
    assert waited >= 0.5  # it did meet the lock, and waited instead of failing
    assert service.require_job(job.job_id).run_name == "renamed while locked"


def test_a_lock_held_past_the_wait_budget_is_a_clear_error_and_other_jobs_are_untouched(
    service: TrainingService,
) -> None:
    database = _database_file(service)
    first = service.create_job(_config())
    second = service.create_job(_config())
    before = {job.job_id: job for job in service.list_jobs()}
    impatient = JobStore(
        make_sessionmaker(make_engine(f"sqlite:///{database}", migrate=False, wait_s=SHORT_WAIT_S))
    )

    lock = Lock(database, 4.0)
    started = time.monotonic()
    with pytest.raises(StoreUnavailableError) as info:
        impatient.update(first.job_id, status=TrainingStatus.CANCELLED)
    waited = time.monotonic() - started
    lock.release()

    message = str(info.value)
    assert str(database) in message
    assert "is locked by another process" in message
    assert "(waited 0." in message
    assert "Fix: retry when the other process is done" in message
    assert SHORT_WAIT_S <= waited < 3.0  # bounded: it gave up long before the lock ended
    after = {job.job_id: job for job in service.list_jobs()}
    assert after == before
    assert after[second.job_id].status == TrainingStatus.PENDING


def test_a_locked_database_is_a_503_from_the_api_and_one_line_from_the_cli(
    locked_for_long: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = create_app(locked_for_long)
    service: TrainingService = app.state.service
    database = _database_file(service)
    _, token = service.users.create("ada", "admin")
    job = service.create_job(_config())

    lock = Lock(database, 120.0)  # until both front ends have answered
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            answer = client.post(
                f"/api/training/jobs/{job.job_id}/cancel",
                headers={"Authorization": f"Bearer {token}"},
            )
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"]
        assert "is locked by another process" in answer.json()["detail"]

        monkeypatch.setenv("FLEXTRAIN_HOME", str(locked_for_long.home))
        monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(locked_for_long.models_cache))
        monkeypatch.setenv("FLEXTRAIN_DATABASE_URL", locked_for_long.resolved_database_url)
        result = CliRunner().invoke(cli_app, ["jobs", "cancel", job.job_id])
    finally:
        lock.release()
    assert result.exit_code == 1, result.output
    text = "".join(result.output.split())  # the console wraps long paths anywhere
    assert f"Thejobdatabase'{database}'islockedbyanotherprocess" in text
    assert "Fix:" in text
    assert "Traceback" not in text
    assert service.require_job(job.job_id).status == TrainingStatus.PENDING
    service.engine.dispose()


def test_a_worker_waits_out_a_lock_while_training_and_records_its_result(
    service: TrainingService,
) -> None:
    database = _database_file(service)
    job = service.create_job(_config())
    service.start_job(job.job_id)
    deadline = time.monotonic() + 120
    while service.require_job(job.job_id).current_step < 2:
        assert time.monotonic() < deadline, "the job never started training"
        assert not service.require_job(job.job_id).is_finished
        time.sleep(0.1)

    # Several progress, metric and heartbeat writes meet this lock.
    Lock(database, 3.0).wait()

    done = service.wait(job.job_id, timeout=180)
    assert done.status == TrainingStatus.COMPLETED, done.error_message
    assert done.current_step == 30
    assert done.model_path
    steps = [row["step"] for row in service.metric_history(job.job_id) if "loss" in row]
    assert steps == list(range(1, 31))  # no logged step lost to the lock
