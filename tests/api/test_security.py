"""The server probed as an attacker would (issue 20): foreign Host names (DNS rebinding),
requests from other sites (CSRF), oversized bodies, strings and lists, YAML bombs,
paths and endpoints outside a trainer's reach, audit records and response headers.

A browser's own cross-site request, from a page on another origin in Chromium, is
tests/web/test_cross_site.py.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from flextrain.api.app import create_app
from flextrain.api.guard import CONTENT_SECURITY_POLICY, MAX_JSON_BODY_BYTES
from flextrain.api.serve import served_host_names
from flextrain.cli.main import app as cli_app
from flextrain.config.schemas import MAX_ITEMS, MAX_NAME, BasicTrainingConfig
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.api.conftest import stop_jobs
from tests.api.helpers import BASIC_JOB, TINY_JOB, Caller, assert_error

JOBS = "/api/training/jobs"
DATA = b'{"text": "a line of text to train on"}\n' * 8


def _fields(response: object) -> list[str]:
    body = response.json()  # type: ignore[attr-defined]
    assert body["errors"], body
    for error in body["errors"]:
        assert error["field"], error
        assert error["fix"], error
    return [e["field"] for e in body["errors"]]


@pytest.fixture
def local_app(settings: Settings) -> Iterator[FastAPI]:
    """`flextrain serve --no-auth`: every request acts as the local admin."""
    app = create_app(settings, auth=False)
    yield app
    stop_jobs(app.state.service)


@pytest.fixture
def local(local_app: FastAPI) -> Iterator[TestClient]:
    with TestClient(local_app, base_url="http://127.0.0.1:8000") as client:
        yield client


def _upload(client: TestClient, name: str, **headers: str) -> object:
    return client.post(
        "/api/datasets",
        data={"name": name},
        files={"file": ("rows.jsonl", DATA, "application/x-ndjson")},
        headers=headers,
    )


# -- Host: DNS rebinding -----------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_a_foreign_host_is_refused_before_anything_runs(local_app: FastAPI, method: str) -> None:
    with TestClient(local_app, base_url="http://attacker.example") as client:
        response = client.request(
            method, f"{JOBS}/basic" if method == "POST" else JOBS, json=BASIC_JOB
        )
    body = assert_error(response, 400, "does not answer to the host name 'attacker.example'")
    assert _fields(response) == ["Host"]
    assert "FLEXTRAIN_ALLOWED_HOSTS" in body["errors"][0]["fix"]
    assert local_app.state.service.count_jobs() == 0


@pytest.mark.parametrize(
    "base",
    ["http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", "http://localhost"],
)
def test_loopback_names_are_answered(local_app: FastAPI, base: str) -> None:
    with TestClient(local_app, base_url=base) as client:
        assert client.get("/api/health").status_code == 200


def test_a_configured_host_name_is_answered(settings: Settings) -> None:
    named = settings.model_copy(update={"allowed_hosts": ["train.example.org"]})
    app = create_app(named)
    try:
        with TestClient(app, base_url="https://train.example.org") as client:
            assert client.get("/api/health").status_code == 200
        with TestClient(app, base_url="https://other.example.org") as client:
            assert client.get("/api/health").status_code == 400
    finally:
        stop_jobs(app.state.service)


def test_a_server_on_every_address_answers_to_this_machines_names() -> None:
    import socket

    names = served_host_names("0.0.0.0")
    assert socket.gethostname() in names
    assert "127.0.0.1" in names
    assert served_host_names("10.1.2.3") == ["10.1.2.3"]


# -- Origin / Sec-Fetch-Site: cross-site requests ---------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {"Origin": "http://attacker.example"},
        {"Origin": "null"},
        {"Origin": "http://127.0.0.1:9999"},  # another port is another origin
        {"Sec-Fetch-Site": "cross-site"},
        {"Sec-Fetch-Site": "same-site"},
    ],
)
def test_a_cross_site_upload_is_refused_and_stores_nothing(
    local: TestClient, local_app: FastAPI, headers: dict[str, str]
) -> None:
    response = _upload(local, "stolen", **headers)
    assert_error(response, 403, "requests that change something")
    assert _fields(response) == ["Origin"]
    assert local_app.state.service.datasets.access("stolen") is None


def test_the_pages_own_requests_and_non_browsers_are_taken(local: TestClient) -> None:
    own = _upload(local, "own", Origin="http://127.0.0.1:8000", **{"Sec-Fetch-Site": "same-origin"})
    assert own.status_code == 201, own.text
    typed = _upload(local, "typed", **{"Sec-Fetch-Site": "none"})  # the address bar
    assert typed.status_code == 201, typed.text
    cli = _upload(local, "cli")  # curl, httpx, the Python API: neither header
    assert cli.status_code == 201, cli.text


def test_a_cross_site_cancel_leaves_the_job_alone(local: TestClient, local_app: FastAPI) -> None:
    job = local.post(f"{JOBS}/basic", json=BASIC_JOB).json()
    response = local.post(
        f"{JOBS}/{job['job_id']}/cancel", headers={"Origin": "http://attacker.example"}
    )
    assert response.status_code == 403, response.text
    assert local_app.state.service.require_job(job["job_id"]).status.value == "pending"


def test_a_token_does_not_make_a_cross_site_request_acceptable(
    client: TestClient, admin: Caller
) -> None:
    response = client.post(
        f"{JOBS}/basic",
        json=BASIC_JOB,
        headers={**admin.headers, "Origin": "http://attacker.example"},
    )
    assert response.status_code == 403, response.text
    assert client.get(JOBS, headers=admin.headers).json() == []


def test_an_allowed_origin_may_change_things(settings: Settings) -> None:
    front = settings.model_copy(update={"allowed_origins": ["https://ui.example.org"]})
    app = create_app(front, auth=False)
    try:
        with TestClient(app, base_url="http://127.0.0.1:8000") as client:
            ok = _upload(client, "from-ui", Origin="https://ui.example.org")
            assert ok.status_code == 201, ok.text
    finally:
        stop_jobs(app.state.service)


# -- sizes -------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_a_413_before_it_is_read(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    huge = {**BASIC_JOB, "run_name": "x" * (MAX_JSON_BODY_BYTES + 10)}
    response = client.post(f"{JOBS}/basic", json=huge, headers=trainer.headers)
    assert_error(response, 413, "larger than 1024 KB")
    assert _fields(response) == ["body"]
    assert service.count_jobs() == 0


def test_a_streamed_body_over_the_limit_is_a_413(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"run_name": "'
        for _ in range(MAX_JSON_BODY_BYTES // 65536 + 2):
            yield b"x" * 65536
        yield b'"}'

    response = client.post(
        f"{JOBS}/basic",
        content=chunks(),
        headers={**trainer.headers, "Content-Type": "application/json"},
    )
    assert response.status_code == 413, response.text
    assert _fields(response) == ["body"]
    assert service.count_jobs() == 0


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("run_name", "x" * (MAX_NAME + 1), "at most 200 characters"),
        ("lora_target_modules", ["q_proj"] * (MAX_ITEMS + 1), "at most 256 items"),
        ("lora_target_modules", ["x" * (MAX_NAME + 1)], "at most 200 characters"),
        ("model_id", "m" * 501, "at most 500 characters"),
        ("output_dir", "d" * 5000, "at most 4096 characters"),
    ],
)
def test_long_strings_and_lists_are_a_422_naming_the_field(
    client: TestClient,
    trainer: Caller,
    service: TrainingService,
    field: str,
    value: object,
    message: str,
) -> None:
    response = client.post(
        f"{JOBS}/basic", json={**BASIC_JOB, field: value}, headers=trainer.headers
    )
    assert response.status_code == 422, response.text
    assert any(f == field or f.startswith(f"{field}.") for f in _fields(response))
    assert message in response.text
    assert service.count_jobs() == 0
    # The same limit in the Python API and the CLI (they share the schema).
    with pytest.raises(ValueError, match=message):
        BasicTrainingConfig(**{**BASIC_JOB, field: value})


def test_a_long_run_name_is_refused_by_the_cli(tmp_path: Path, models_cache: Path) -> None:
    env = {"FLEXTRAIN_HOME": str(tmp_path / "home"), "FLEXTRAIN_MODELS_CACHE": str(models_cache)}
    argv = ["train", "--model", "flextrain/tiny-llama", "--dataset", "demo/text", "--type", "full"]
    result = CliRunner().invoke(cli_app, [*argv, "--run-name", "x" * 300, "--no-start"], env=env)
    assert result.exit_code == 2
    assert "run_name: String should have at most 200 characters" in " ".join(result.output.split())


# -- YAML --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("a: " + "[" * 1000 + "]" * 1000, "nests deeper than 32 levels"),
        ("ema_decay: &d 0.99\nclip_grad_value: *d", "uses an alias"),
    ],
)
def test_hostile_yaml_is_a_422_not_a_crash(
    client: TestClient, trainer: Caller, text: str, problem: str
) -> None:
    response = client.post(
        "/api/training/expert/check", json={"yaml": text}, headers=trainer.headers
    )
    assert_error(response, 422, problem)
    assert _fields(response) == ["yaml"]
    # The server is fine afterwards.
    assert client.get("/api/health").status_code == 200


def test_hostile_yaml_in_a_cli_config_is_one_line(tmp_path: Path, models_cache: Path) -> None:
    config = tmp_path / "bomb.yaml"
    config.write_text("run_name: " + "[" * 1000 + "]" * 1000 + "\n")
    env = {"FLEXTRAIN_HOME": str(tmp_path / "home"), "FLEXTRAIN_MODELS_CACHE": str(models_cache)}
    env["COLUMNS"] = "400"  # one line as a terminal this wide shows it
    argv = ["train", "--model", "flextrain/tiny-llama", "--dataset", "demo/text", "--type", "full"]
    result = CliRunner().invoke(cli_app, [*argv, "--config", str(config)], env=env)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "nests deeper than 32 levels" in lines[0], result.output


# -- what a trainer may name -------------------------------------------------------------


def test_a_trainer_may_not_name_a_rendezvous_endpoint(
    client: TestClient, trainer: Caller, admin: Caller
) -> None:
    body = {**TINY_JOB, "num_nodes": 2, "rdzv_endpoint": "evil.example:29500"}
    refused = client.post(f"{JOBS}/advanced", json=body, headers=trainer.headers)
    assert_error(refused, 403, "rdzv_endpoint")
    assert _fields(refused) == ["rdzv_endpoint"]
    allowed = client.post(f"{JOBS}/advanced", json=body, headers=admin.headers)
    assert allowed.status_code == 201, allowed.text


def test_a_trainers_deepspeed_config_stays_in_their_folder(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    body = {**TINY_JOB, "deepspeed_config": "/etc/passwd"}
    refused = client.post(f"{JOBS}/advanced", json=body, headers=trainer.headers)
    assert_error(refused, 403, "deepspeed_config '/etc/passwd' is outside")
    assert _fields(refused) == ["deepspeed_config"]
    sneaky = client.post(
        f"{JOBS}/advanced",
        json={**TINY_JOB, "deepspeed_config": "../../../etc/passwd"},
        headers=trainer.headers,
    )
    assert sneaky.status_code == 403, sneaky.text
    own = service.settings.home / "outputs" / trainer.name / "ds.json"
    own.parent.mkdir(parents=True, exist_ok=True)
    own.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    accepted = client.post(
        f"{JOBS}/advanced",
        json={**TINY_JOB, "deepspeed_config": "ds.json"},
        headers=trainer.headers,
    )
    assert accepted.status_code == 201, accepted.text
    assert accepted.json()["config"]["deepspeed_config"] == str(own.resolve())


# -- audit and headers -------------------------------------------------------------------


def test_an_upload_is_audited_with_its_name_version_and_origin(
    local: TestClient, local_app: FastAPI
) -> None:
    response = _upload(local, "team/rows", Origin="http://127.0.0.1:8000")
    assert response.status_code == 201, response.text
    version = response.json()["version"]
    (entry,) = [
        e for e in local_app.state.service.audit.entries() if e.action == "POST /api/datasets"
    ]
    assert entry.target == f"team/rows@{version}"
    assert "origin http://127.0.0.1:8000" in (entry.detail or "")
    refused = _upload(local, "x", Origin="http://attacker.example")
    assert refused.status_code == 403
    denied = [e for e in local_app.state.service.audit.entries() if e.status_code == 403]
    assert denied
    assert "origin http://attacker.example" in (denied[0].detail or "")


@pytest.mark.parametrize("path", ["/", "/api/health", "/static/app.js", "/api/nowhere"])
def test_every_response_carries_the_security_headers(local: TestClient, path: str) -> None:
    response = local.get(path)
    assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "frame-ancestors 'none'" in CONTENT_SECURITY_POLICY
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


def test_the_page_has_no_inline_script_or_style() -> None:
    from flextrain.api.app import static_dir

    html = (static_dir() / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []  # every script from a file
    assert re.findall(r"\son[a-z]+\s*=", html) == []  # no onclick=...
    assert "style=" not in html
    assert "<style" not in html


def test_the_compatibility_check_bounds_its_ids(client: TestClient, trainer: Caller) -> None:
    body = {"model_id": "m" * 501, "dataset_id": "d" * 501}
    response = client.post("/api/training/compatibility/check", json=body, headers=trainer.headers)
    assert response.status_code == 422, response.text
    assert set(_fields(response)) == {"model_id", "dataset_id"}
