"""Paths a non-admin names never reach outside FLEXTRAIN_HOME and FLEXTRAIN_ALLOWED_ROOTS.

Each trick has its own test: '..' and absolute paths in output_dir, a symlink in
the user's own folder that leads out (output_dir, an upload's dataset folder, a
model folder), a local model folder outside the roots, and job ids that are not
the service's own 12-hex format.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from flextrain.api.app import create_app
from flextrain.data.versions import dataset_folder
from flextrain.models.builtin import builtin_path
from flextrain.service import TrainingService
from flextrain.settings import Settings
from tests.api.conftest import add_caller, stop_jobs
from tests.api.helpers import BASIC_JOB, Caller, assert_error
from tests.conftest import TEST_CLIENT_HOST

JOBS = "/api/training/jobs"
TINY = "flextrain/tiny-llama"
TEXT = "".join(json.dumps({"text": f"line {i} of some text"}) + "\n" for i in range(40)).encode()


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def create(client: TestClient, caller: Caller, **overrides: Any) -> Any:
    return client.post(f"{JOBS}/basic", json={**BASIC_JOB, **overrides}, headers=caller.headers)


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    folder = tmp_path / "outside"
    folder.mkdir()
    return folder


@pytest.fixture
def tom_root(service: TrainingService, trainer: Caller) -> Path:
    root = service.settings.home / "outputs" / trainer.name
    root.mkdir(parents=True)
    return root


# -- output_dir ----------------------------------------------------------------------------


def test_dot_dot_in_output_dir_is_refused(
    client: TestClient, trainer: Caller, other_trainer: Caller, service: TrainingService
) -> None:
    response = create(client, trainer, output_dir=f"../{other_trainer.name}/stolen")
    assert_error(response, 403, "output_dir", "Fix:")
    assert service.count_jobs() == 0


def test_an_absolute_output_dir_elsewhere_is_refused(
    client: TestClient, trainer: Caller, outside: Path
) -> None:
    response = create(client, trainer, output_dir=str(outside / "run"))
    assert_error(response, 403, "output_dir", "Fix:")
    assert not (outside / "run").exists()


def test_a_symlink_in_the_users_folder_that_leads_out_is_refused_for_output_dir(
    client: TestClient, trainer: Caller, tom_root: Path, outside: Path
) -> None:
    (tom_root / "link").symlink_to(outside, target_is_directory=True)
    response = create(client, trainer, output_dir="link/run")
    assert_error(response, 403, "output_dir", "symbolic links")
    absolute = create(client, trainer, output_dir=str(tom_root / "link" / "run"))
    assert_error(absolute, 403, "output_dir")
    assert list(outside.iterdir()) == []


def test_an_output_dir_inside_the_users_folder_is_kept_resolved(
    client: TestClient, trainer: Caller, tom_root: Path
) -> None:
    response = create(client, trainer, output_dir="runs/../runs/first")
    assert response.status_code == 201, response.text
    assert response.json()["output_dir"] == str((tom_root / "runs" / "first").resolve())


# -- uploads -------------------------------------------------------------------------------


def upload(client: TestClient, caller: Caller, name: str, filename: str = "t.jsonl") -> Any:
    return client.post(
        "/api/datasets",
        files={"file": (filename, TEXT, "application/octet-stream")},
        data={"name": name},
        headers=caller.headers,
    )


def test_an_upload_whose_dataset_folder_is_a_symlink_out_is_refused(
    client: TestClient, trainer: Caller, service: TrainingService, outside: Path
) -> None:
    planted = dataset_folder(service.datasets.root, "tom/evil")
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to(outside, target_is_directory=True)
    assert_error(upload(client, trainer, "tom/evil"), 403, "name 'tom/evil'", "Fix:")
    assert list(outside.iterdir()) == []
    assert service.datasets.access("tom/evil") is None


@pytest.mark.parametrize("name", ["../evil", "/etc/evil", "~/evil", "a/../../b", "a/b/c"])
def test_an_upload_name_that_looks_like_a_path_is_refused(
    client: TestClient, trainer: Caller, name: str
) -> None:
    assert_error(upload(client, trainer, name), 422, "name")


def test_the_clients_file_name_never_becomes_a_path(
    client: TestClient, trainer: Caller, service: TrainingService, tmp_path: Path
) -> None:
    before = set(files_under(tmp_path)) - set(files_under(service.settings.home))
    response = upload(client, trainer, "tom/notes", filename="../../../escape.jsonl")
    assert response.status_code == 201, response.text
    assert Path(response.json()["path"]).resolve().is_relative_to(service.settings.home.resolve())
    after = set(files_under(tmp_path)) - set(files_under(service.settings.home))
    assert after == before
    assert not any(p.name == "escape.jsonl" for p in files_under(tmp_path))


# -- local model folders -------------------------------------------------------------------


@pytest.fixture
def model_outside(models_cache: Path, outside: Path) -> Path:
    """A real model folder outside FLEXTRAIN_HOME (a copy of the tiny built-in)."""
    folder = outside / "model"
    shutil.copytree(builtin_path(TINY, models_cache), folder)
    return folder


def test_a_local_model_folder_outside_the_roots_is_refused_for_a_trainer(
    client: TestClient, trainer: Caller, admin: Caller, model_outside: Path
) -> None:
    assert_error(create(client, trainer, model_id=str(model_outside)), 403, "model_id", "Fix:")
    check = client.post(
        "/api/training/compatibility/check",
        json={"model_id": str(model_outside)},
        headers=trainer.headers,
    )
    assert_error(check, 403, "model_id", "FLEXTRAIN_ALLOWED_ROOTS")
    missing = create(client, trainer, model_id=str(model_outside.parent / "no-such-model"))
    assert_error(missing, 403, "model_id")  # no probing whether a path exists
    assert create(client, admin, model_id=str(model_outside)).status_code == 201


def test_a_symlinked_model_folder_inside_home_that_leads_out_is_refused(
    client: TestClient, trainer: Caller, tom_root: Path, model_outside: Path
) -> None:
    (tom_root / "model").symlink_to(model_outside, target_is_directory=True)
    assert_error(create(client, trainer, model_id=str(tom_root / "model")), 403, "model_id")
    dotted = str(tom_root / ".." / ".." / ".." / "outside" / "model")
    assert_error(create(client, trainer, model_id=dotted), 403, "model_id")


def test_a_model_folder_in_an_admin_allowed_root_is_fine(
    tmp_path: Path, models_cache: Path, model_outside: Path
) -> None:
    settings = Settings(
        home=tmp_path / "home",
        models_cache=models_cache,
        allowed_roots=[model_outside.parent],
        allowed_hosts=[TEST_CLIENT_HOST],
    )
    app = create_app(settings)
    try:
        with TestClient(app, raise_server_exceptions=False) as client:
            tom = add_caller(app.state.service, "tom", "trainer")
            response = create(client, tom, model_id=str(model_outside))
            assert response.status_code == 201, response.text
    finally:
        stop_jobs(app.state.service)


def test_allowed_roots_come_from_the_environment_split_by_pathsep(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import os

    monkeypatch.setenv("FLEXTRAIN_ALLOWED_ROOTS", f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}")
    assert Settings(home=tmp_path).allowed_roots == [tmp_path / "a", tmp_path / "b"]


# -- code_dir and eval_file ----------------------------------------------------------------


def test_a_trainer_may_not_name_code_dir_or_an_eval_file_path(
    client: TestClient, trainer: Caller, outside: Path
) -> None:
    expert = client.post(
        f"{JOBS}/expert", json={**BASIC_JOB, "code_dir": str(outside)}, headers=trainer.headers
    )
    assert_error(expert, 403, "code_dir", "Fix:")
    check = client.post(
        "/api/training/expert/check", json={"yaml": f"code_dir: {outside}"}, headers=trainer.headers
    )
    assert_error(check, 403, "code_dir")
    secret = outside / "secret.jsonl"
    secret.write_text(TEXT.decode())
    advanced = client.post(
        f"{JOBS}/advanced", json={**BASIC_JOB, "eval_file": str(secret)}, headers=trainer.headers
    )
    assert_error(advanced, 404, "file paths are for admins only")


# -- job ids -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "job_id",
    [
        "..",
        "..%2F..%2Fetc",
        "%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
        "3F2A9C1B0D4E",
        "3f2a9c1b0d4",
        "x" * 300,
    ],
)
def test_a_job_id_not_in_the_services_format_is_a_404_with_a_message(
    client: TestClient, trainer: Caller, job_id: str
) -> None:
    for method, suffix in [("GET", ""), ("GET", "/logs"), ("GET", "/checkpoints")]:
        response = client.request(method, f"{JOBS}/{job_id}{suffix}", headers=trainer.headers)
        assert response.status_code == 404, (job_id, suffix, response.text)
        assert response.json()["detail"]
    started = client.post(f"{JOBS}/{job_id}/start", headers=trainer.headers)
    assert started.status_code == 404, started.text


def test_a_malformed_job_id_never_reaches_the_store(
    client: TestClient, trainer: Caller, service: TrainingService, monkeypatch: pytest.MonkeyPatch
) -> None:
    looked_up: list[str] = []
    original = service.get_job

    def spy(job_id: str) -> Any:
        looked_up.append(job_id)
        return original(job_id)

    monkeypatch.setattr(service, "get_job", spy)
    response = client.get(f"{JOBS}/..%2F..%2Fetc", headers=trainer.headers)
    assert response.status_code == 404
    response = client.get(f"{JOBS}/not-a-job", headers=trainer.headers)
    assert_error(response, 404, "12 lowercase hex characters")
    assert looked_up == []
