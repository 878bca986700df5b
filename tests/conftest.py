"""Shared fixtures: an isolated flextrain home per test, built-in models built once.

Tests run offline (HF_HUB_OFFLINE=1): the hub is outside the project, and
every model used here is built locally or shipped by a package.

The database is a SQLite file in that home, unless FLEXTRAIN_TEST_DATABASE_URL
names a PostgreSQL database (`make test-postgres` does): then each test gets a
database of its own, created next to that one and dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.pool import NullPool

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# The CLI's rich consoles read COLUMNS once, when flextrain.cli.common is first
# imported: whichever test imported it first decided every later test's line width
# (80 under pytest-xdist, so tables and long messages wrapped). Wide for all.
os.environ["COLUMNS"] = "400"
# Idle OpenMP threads sleep instead of spinning. The suite runs on both cores at once
# (pytest-xdist) and most tests start a training worker with threads of its own, so
# the cores are oversubscribed, and spinning threads took the cores from the ones with
# work: the training tests ran 2.5x slower (117 s against 46 s for the same three files
# on 2 workers). Alone on the machine a job is 7-15% faster spinning (OpenMP's default,
# which real jobs keep). Set before torch is first imported; workers inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from flextrain.hardware.detect import HardwareConstraints
from flextrain.service import TrainingService
from flextrain.settings import Settings


@pytest.fixture(scope="session")
def models_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Built-in tiny models are generated once per test session."""
    return tmp_path_factory.mktemp("builtin-models")


@pytest.fixture(scope="session")
def database_admin() -> Iterator[Engine | None]:
    """A connection to FLEXTRAIN_TEST_DATABASE_URL to create and drop test databases."""
    url = os.environ.get("FLEXTRAIN_TEST_DATABASE_URL")
    if not url:
        yield None
        return
    # CREATE/DROP DATABASE cannot run inside a transaction.
    engine = create_engine(url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    yield engine
    engine.dispose()


@pytest.fixture
def database_url(database_admin: Engine | None) -> Iterator[str | None]:
    """A fresh, empty database for this test; None means the SQLite file in its home."""
    if database_admin is None:
        yield None
        return
    name = f"{database_admin.url.database}_{uuid.uuid4().hex[:12]}"
    with database_admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield database_admin.url.set(database=name).render_as_string(hide_password=False)
    # FORCE ends the connections a test left open (an engine, a worker).
    with database_admin.connect() as connection:
        connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# The Host name FastAPI's TestClient sends: a server answers only to the names it is
# configured for (loopback and FLEXTRAIN_ALLOWED_HOSTS).
TEST_CLIENT_HOST = "testserver"


@pytest.fixture
def settings(tmp_path: Path, models_cache: Path, database_url: str | None) -> Settings:
    return Settings(
        home=tmp_path / "home",
        models_cache=models_cache,
        database_url=database_url,
        allowed_hosts=[TEST_CLIENT_HOST],
    )


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
