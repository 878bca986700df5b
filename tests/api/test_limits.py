"""Limits and safe parsing: upload size, queued jobs per user, failed authentications per
client address, tokens kept out of every log, and safetensors-only local models."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient

from flextrain.accounts.users import Role
from flextrain.api.app import create_app
from flextrain.api.deps import check_queue_quota
from flextrain.config.enums import TrainingStatus
from flextrain.models.builtin import builtin_path
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.api.conftest import add_caller, stop_jobs
from tests.api.helpers import BASIC_JOB, Caller, assert_error, create_job
from tests.conftest import TEST_CLIENT_HOST
from tests.staging import stage_status

JOBS = "/api/training/jobs"


@pytest.fixture
def limited(tmp_path: Path, models_cache: Path) -> Iterator[tuple[TestClient, TrainingService]]:
    """An app with small limits: 1 MB uploads, 1 queued job, 3 failed token checks."""
    settings = Settings(
        home=tmp_path / "home",
        models_cache=models_cache,
        max_upload_mb=1,
        max_queued_jobs_per_user=1,
        max_failed_auth_per_minute=3,
        allowed_hosts=[TEST_CLIENT_HOST],
    )
    app: FastAPI = create_app(settings)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            yield client, app.state.service
    finally:
        stop_jobs(app.state.service)


def rows(size: int) -> bytes:
    line = json.dumps({"text": "some words " * 20}) + "\n"
    return (line * (size // len(line) + 1)).encode()


def upload(client: TestClient, caller: Caller, content: bytes) -> Any:
    return client.post(
        "/api/datasets",
        files={"file": ("big.jsonl", content, "application/octet-stream")},
        data={"name": "tom/big"},
        headers=caller.headers,
    )


def test_an_upload_over_max_upload_mb_is_a_413_naming_the_limit(
    limited: tuple[TestClient, TrainingService],
) -> None:
    client, service = limited
    tom = add_caller(service, "tom", "trainer")
    # Declared far over: refused from Content-Length before the body is read.
    assert_error(upload(client, tom, rows(3 * 1024**2)), 413, "1 MB", "max_upload_mb")
    # Just over: counted while streamed to disk; nothing stays behind.
    assert_error(upload(client, tom, rows(1024**2 + 4096)), 413, "1 MB", "max_upload_mb")
    assert service.datasets.access("tom/big") is None
    assert not list(service.settings.home.glob("tmp*"))
    statuses = [e.status_code for e in service.audit.entries() if e.action == "POST /api/datasets"]
    assert statuses == [413, 413]
    assert upload(client, tom, rows(100_000)).status_code == 201


def test_starting_more_than_max_queued_jobs_per_user_is_a_429(
    limited: tuple[TestClient, TrainingService],
) -> None:
    client, service = limited
    tom = add_caller(service, "tom", "trainer")
    waiting = create_job(client, tom)
    another = create_job(client, tom)
    # Mark one queued in the store (starting it for real would run it on this machine).
    stage_status(service.store, waiting["job_id"], TrainingStatus.QUEUED)
    refused = client.post(f"{JOBS}/{another['job_id']}/start", headers=tom.headers)
    assert_error(refused, 429, "1 queued", "max_queued_jobs_per_user=1", "Fix:")
    assert service.require_job(another["job_id"]).status == TrainingStatus.PENDING


def test_admins_are_exempt_from_the_queued_jobs_limit(
    limited: tuple[TestClient, TrainingService],
) -> None:
    client, service = limited
    ada = add_caller(service, "ada", "admin")
    tom = add_caller(service, "tom", "trainer")
    for caller in (ada, tom):
        job = create_job(client, caller)
        stage_status(service.store, job["job_id"], TrainingStatus.QUEUED)
    check_queue_quota(service, service.users.get(ada.name))
    with pytest.raises(HTTPException) as refused:
        check_queue_quota(service, service.users.get(tom.name))
    assert refused.value.status_code == 429
    assert service.users.get(ada.name).role == Role.ADMIN


def test_repeated_failed_authentications_are_throttled_per_client(
    limited: tuple[TestClient, TrainingService],
) -> None:
    client, service = limited
    tom = add_caller(service, "tom", "trainer")
    for _ in range(5):  # no token at all is not a guess and does not count
        assert client.get("/api/me").status_code == 401
    bad = {"Authorization": "Bearer ft_not-a-real-token-at-all"}
    for _ in range(3):
        assert client.get("/api/me", headers=bad).status_code == 401
    throttled = client.get("/api/me", headers=bad)
    assert_error(throttled, 429, "Too many failed authentications", "per minute", "Fix:")
    assert 1 <= int(throttled.headers["retry-after"]) <= 60
    # While throttled, even a right token from that address waits: guessing gains nothing.
    assert client.get("/api/me", headers=tom.headers).status_code == 429
    assert client.get("/api/health").status_code == 200
    audited = [e.status_code for e in service.audit.entries() if e.action == "GET /api/me"]
    assert audited.count(401) == 8
    assert audited.count(429) == 2


def test_tokens_are_never_written_to_the_audit_log_or_the_server_log(
    client: TestClient,
    admin: Caller,
    service: TrainingService,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    made = client.post("/api/users", json={"name": "sam", "role": "trainer"}, headers=admin.headers)
    assert made.status_code == 201, made.text
    token = made.json()["token"]
    sam = Caller(name="sam", role="trainer", token=token)
    job = create_job(client, sam)
    assert client.get(f"{JOBS}/{job['job_id']}/logs", headers=sam.headers).status_code == 200
    client.post(f"{JOBS}/basic", json={**BASIC_JOB, "output_dir": "/etc"}, headers=sam.headers)
    client.get("/api/users", headers=sam.headers)  # 403, audited
    client.get("/api/me", headers={"Authorization": f"Bearer {token}x"})  # 401, audited
    client.post(f"/api/users/{sam.name}/revoke", headers=admin.headers)
    client.get("/api/me", headers=sam.headers)  # revoked: 401, audited

    entries = service.audit.entries(limit=1000)
    assert len(entries) >= 5
    dumped = "\n".join(e.model_dump_json() for e in entries)
    for secret in (token, admin.token, token[len("ft_") + 4 :]):
        assert secret not in dumped
        assert secret not in caplog.text
        assert secret not in service.read_log(job["job_id"], tail=10000)


# -- safe parsing --------------------------------------------------------------------------


def test_every_yaml_load_in_the_package_is_safe_load() -> None:
    import flextrain

    package = Path(flextrain.__file__).parent
    unsafe = [
        f"{path.relative_to(package)}:{n}"
        for path in package.rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if "yaml." in line
        and any(c in line for c in ("yaml.load(", "yaml.unsafe_load", "yaml.full_load", "Loader"))
        # Scanning tokens with the safe loader's scanner constructs nothing.
        and "Loader=yaml.SafeLoader" not in line
    ]
    assert unsafe == []


@pytest.fixture
def pickle_model(models_cache: Path, tmp_path: Path) -> Path:
    """The tiny built-in saved with pickle weights only (what save_pretrained's old
    safe_serialization=False wrote: a torch.save'd state dict in pytorch_model.bin)."""
    import torch
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "home" / "models" / "pickled"
    shutil.copytree(builtin_path("flextrain/tiny-llama", models_cache), folder)
    model = AutoModelForCausalLM.from_pretrained(folder)
    for weights in folder.glob("*.safetensors*"):
        weights.unlink()
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    return folder


def test_a_local_model_with_only_pickle_weights_is_refused_naming_the_setting(
    client: TestClient, trainer: Caller, admin: Caller, pickle_model: Path
) -> None:
    body = {**BASIC_JOB, "model_id": str(pickle_model)}
    for caller in (trainer, admin):
        refused = client.post(f"{JOBS}/basic", json=body, headers=caller.headers)
        assert refused.status_code in (404, 422), refused.text
        detail = refused.text
        assert "pytorch_model.bin" in detail, detail
        assert "allow_pickle_weights" in detail, detail
        assert "FLEXTRAIN_ALLOW_PICKLE_WEIGHTS" in detail


def test_an_admin_setting_allows_pickle_weights(
    tmp_path: Path, models_cache: Path, pickle_model: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        models_cache=models_cache,
        allow_pickle_weights=True,
        allowed_hosts=[TEST_CLIENT_HOST],
    )
    app = create_app(settings)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            tom = add_caller(app.state.service, "tom", "trainer")
            job = create_job(client, tom, {**BASIC_JOB, "model_id": str(pickle_model)})
            assert job["model_id"] == str(pickle_model)
    finally:
        stop_jobs(app.state.service)


def test_the_worker_loads_weights_from_safetensors_only_unless_allowed() -> None:
    import inspect

    from flextrain.jobs.spec import RunSpec
    from flextrain.train import model

    assert RunSpec.model_fields["allow_pickle_weights"].default is False
    assert "use_safetensors=None if spec.allow_pickle_weights else True" in inspect.getsource(
        model.build_model
    )
