"""An app per test (fresh home and SQLite file), a caller of each role, and one
completed tiny job shared by every test that only needs to read one.

Every fixture that can start a worker cancels whatever is still running at teardown.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from flextrain.api.app import create_app
from flextrain.jobs.errors import JobStateError
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.api.helpers import TINY_JOB, Caller, create_job, wait_finished
from tests.conftest import TEST_CLIENT_HOST


def stop_jobs(service: TrainingService) -> None:
    """Cancel every unfinished job (and so its worker), then close the database."""
    try:
        for job in service.list_jobs(limit=500):
            if not job.is_finished:
                # It may finish between the listing and the cancel.
                with suppress(JobStateError):
                    service.cancel_job(job.job_id)
    finally:
        service.engine.dispose()


def add_caller(service: TrainingService, name: str, role: str) -> Caller:
    user, token = service.users.create(name, role)
    return Caller(name=user.name, role=user.role.value, token=token)


@pytest.fixture
def app(settings: Settings) -> Iterator[FastAPI]:
    app = create_app(settings)
    yield app
    stop_jobs(app.state.service)


@pytest.fixture
def service(app: FastAPI) -> TrainingService:
    """The app's own service (overrides the root fixture: one service per test)."""
    svc: TrainingService = app.state.service
    return svc


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    # Server errors come back as 500 responses, so a test can assert on them.
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


@pytest.fixture
def admin(service: TrainingService) -> Caller:
    return add_caller(service, "ada", "admin")


@pytest.fixture
def trainer(service: TrainingService) -> Caller:
    return add_caller(service, "tom", "trainer")


@pytest.fixture
def other_trainer(service: TrainingService) -> Caller:
    return add_caller(service, "tina", "trainer")


@pytest.fixture
def viewer(service: TrainingService) -> Caller:
    return add_caller(service, "vic", "viewer")


@pytest.fixture
def callers(
    admin: Caller, trainer: Caller, other_trainer: Caller, viewer: Caller
) -> dict[str, Caller]:
    return {"admin": admin, "trainer": trainer, "other_trainer": other_trainer, "viewer": viewer}


@dataclass(frozen=True)
class Trained:
    """An app whose trainer 'tom' has one completed tiny job; read-only for tests."""

    client: TestClient
    home: Path
    admin: Caller
    trainer: Caller
    other_trainer: Caller
    viewer: Caller
    job: dict[str, Any]

    @property
    def job_id(self) -> str:
        job_id: str = self.job["job_id"]
        return job_id


@pytest.fixture(scope="session")
def trained(tmp_path_factory: pytest.TempPathFactory, models_cache: Path) -> Iterator[Trained]:
    home = tmp_path_factory.mktemp("api-trained") / "home"
    app = create_app(
        Settings(home=home, models_cache=models_cache, allowed_hosts=[TEST_CLIENT_HOST])
    )
    service: TrainingService = app.state.service
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            tom = add_caller(service, "tom", "trainer")
            job = create_job(client, tom, TINY_JOB, mode="advanced")
            started = client.post(f"/api/training/jobs/{job['job_id']}/start", headers=tom.headers)
            assert started.status_code == 200, started.text
            final = wait_finished(client, job["job_id"], tom)
            assert final["status"] == "completed", (
                final["error_message"],
                service.read_log(job["job_id"], tail=40),
            )
            yield Trained(
                client=client,
                home=home,
                admin=add_caller(service, "ada", "admin"),
                trainer=tom,
                other_trainer=add_caller(service, "tina", "trainer"),
                viewer=add_caller(service, "vic", "viewer"),
                job=final,
            )
    finally:
        stop_jobs(service)
