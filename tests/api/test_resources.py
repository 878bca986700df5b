"""Datasets (list, show, upload) and models (built-in and trained)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from flextrain.models.resolve import ModelResolver
from flextrain.service import TrainingService
from tests.api.conftest import Trained
from tests.api.helpers import BASIC_JOB, Caller, assert_error

REVIEWS = "".join(
    json.dumps({"text": f"the soup was {word} today", "label": label}) + "\n"
    for word, label in [("good", "positive"), ("awful", "negative")] * 20
).encode()


def upload(
    client: TestClient,
    caller: Caller,
    name: str,
    content: bytes = REVIEWS,
    filename: str = "reviews.jsonl",
    description: str = "",
) -> Any:
    return client.post(
        "/api/datasets",
        files={"file": (filename, content, "application/octet-stream")},
        data={"name": name, "description": description},
        headers=caller.headers,
    )


def files_under(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


def stray_uploads(service: TrainingService) -> list[Path]:
    """Temporary upload files left in the home folder."""
    home = service.settings.home
    return [p for p in home.iterdir() if p.is_file() and not p.name.startswith("flextrain.db")]


# -- listing and showing ---------------------------------------------------------------


def test_list_datasets_includes_the_demos(client: TestClient, viewer: Caller) -> None:
    response = client.get("/api/datasets", headers=viewer.headers)
    assert response.status_code == 200, response.text
    by_id = {d["dataset_id"]: d for d in response.json()}
    assert {"demo/sentiment", "demo/text"} <= set(by_id)
    assert by_id["demo/sentiment"]["num_rows"] == 480
    assert by_id["demo/text"]["format"] == "text"
    assert by_id["demo/text"]["label_column"] is None


def test_show_a_dataset(client: TestClient, viewer: Caller) -> None:
    response = client.get("/api/datasets/demo/sentiment", headers=viewer.headers)
    assert response.status_code == 200, response.text
    data = response.json()
    assert data["dataset_id"] == "demo/sentiment"
    assert data["format"] == "jsonl"
    assert data["text_column"] == "text"
    assert data["label_column"] == "label"
    assert data["labels"] == ["negative", "positive"]
    assert data["num_rows"] == 480


def test_show_an_unknown_dataset_is_404(client: TestClient, viewer: Caller) -> None:
    response = client.get("/api/datasets/nope", headers=viewer.headers)
    assert_error(response, 404, "Dataset 'nope' is not registered", "demo/sentiment")


# -- upload ----------------------------------------------------------------------------


def test_upload_registers_a_dataset_a_job_can_use(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    response = upload(client, trainer, "team/reviews", description="soup reviews")
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["dataset_id"] == "team/reviews"
    assert data["num_rows"] == 40
    assert data["labels"] == ["negative", "positive"]
    assert data["description"] == "soup reviews"
    stored = Path(data["path"])
    assert stored.is_relative_to(service.settings.home / "datasets")
    # Stored as an immutable version: canonical JSON lines named by their SHA-256.
    assert data["version"] and len(data["version"]) == 64 and data["version"] in str(stored)
    assert data["shape"] == "classification"
    assert stored.read_bytes() != REVIEWS and len(stored.read_text().splitlines()) == 40
    assert stray_uploads(service) == []

    listed = client.get("/api/datasets", headers=trainer.headers).json()
    assert "team/reviews" in [d["dataset_id"] for d in listed]
    shown = client.get("/api/datasets/team/reviews", headers=trainer.headers)
    assert shown.status_code == 200 and shown.json()["num_rows"] == 40

    body = {**BASIC_JOB, "dataset_id": "team/reviews", "training_type": "task_specific"}
    job = client.post("/api/training/jobs/basic", json=body, headers=trainer.headers)
    assert job.status_code == 201, job.text
    assert job.json()["dataset_id"] == "team/reviews"


def test_upload_of_a_file_that_is_not_training_data_leaves_nothing(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    response = upload(client, trainer, "numbers", b'{"a": 1}\n{"a": 2}\n')
    assert_error(response, 422, "No training shape fits the columns ['a']", "Fix:")
    assert files_under(service.settings.home / "datasets") == []
    assert stray_uploads(service) == []
    assert_error(client.get("/api/datasets/numbers", headers=trainer.headers), 404)


def test_upload_of_malformed_json_is_422_and_leaves_nothing(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    response = upload(client, trainer, "broken", b'[{"text": "unterminated', filename="d.json")
    assert_error(response, 422, "JSON")
    assert files_under(service.settings.home / "datasets") == []
    assert stray_uploads(service) == []


def test_upload_of_a_binary_file_is_422_and_leaves_nothing(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    response = upload(client, trainer, "binary", b"\xff\xfe\x00\x80garbage\x81", "blob.jsonl")
    assert_error(response, 422)
    assert files_under(service.settings.home / "datasets") == []
    assert stray_uploads(service) == []


def test_upload_to_your_own_name_is_a_new_version(client: TestClient, trainer: Caller) -> None:
    first = upload(client, trainer, "team/reviews").json()
    again = upload(client, trainer, "team/reviews", b'{"text": "other"}\n')
    assert again.status_code == 201, again.text
    assert again.json()["num_rows"] == 1 and again.json()["version"] != first["version"]
    versions = client.get("/api/datasets/team/reviews/versions", headers=trainer.headers)
    assert versions.status_code == 200, versions.text
    assert [v["version"] for v in versions.json()] == [first["version"], again.json()["version"]]
    assert [v["num_rows"] for v in versions.json()] == [40, 1]
    pinned = client.get(
        f"/api/datasets/team/reviews@{first['version'][:12]}", headers=trainer.headers
    )
    assert pinned.status_code == 200 and pinned.json()["num_rows"] == 40


def test_upload_under_someone_elses_name_is_409(
    client: TestClient, trainer: Caller, other_trainer: Caller
) -> None:
    assert upload(client, trainer, "team/reviews").status_code == 201
    again = upload(client, other_trainer, "team/reviews", b'{"text": "other"}\n')
    assert_error(again, 409, "A dataset named 'team/reviews' exists and is not yours")
    shown = client.get("/api/datasets/team/reviews", headers=trainer.headers).json()
    assert shown["num_rows"] == 40  # the first upload is untouched
    bundled = upload(client, trainer, "demo/sentiment")
    assert_error(bundled, 409, "'demo/sentiment' exists")


def test_a_trainer_sees_shared_datasets_and_their_own_only(
    client: TestClient, trainer: Caller, other_trainer: Caller, viewer: Caller
) -> None:
    assert upload(client, trainer, "tom/private").status_code == 201
    shared = client.post(
        "/api/datasets",
        files={"file": ("r.jsonl", REVIEWS, "application/octet-stream")},
        data={"name": "tom/shared", "shared": "true"},
        headers=trainer.headers,
    )
    assert shared.status_code == 201, shared.text

    def names(caller: Caller) -> set[str]:
        return {d["dataset_id"] for d in client.get("/api/datasets", headers=caller.headers).json()}

    assert {"tom/private", "tom/shared", "demo/sentiment"} <= names(trainer)
    assert "tom/private" not in names(other_trainer)
    assert {"tom/shared", "demo/sentiment"} <= names(other_trainer)
    assert {"tom/private", "tom/shared"} <= names(viewer)
    hidden = client.get("/api/datasets/tom/private", headers=other_trainer.headers)
    assert_error(hidden, 404, "'tom/private' is not registered")
    job = client.post(
        "/api/training/jobs/basic",
        json={
            "model_id": "flextrain/tiny-llama",
            "dataset_id": "tom/private",
            "training_type": "task_specific",
        },
        headers=other_trainer.headers,
    )
    assert_error(job, 404, "'tom/private' is not registered")


def test_delete_a_dataset_as_its_owner(
    client: TestClient, trainer: Caller, other_trainer: Caller
) -> None:
    assert upload(client, trainer, "tom/gone").status_code == 201
    refused = client.delete("/api/datasets/tom/gone", headers=other_trainer.headers)
    assert refused.status_code in (403, 404), refused.text
    deleted = client.delete("/api/datasets/tom/gone", headers=trainer.headers)
    assert deleted.status_code == 200, deleted.text
    assert len(deleted.json()["deleted"]) == 1
    assert client.get("/api/datasets/tom/gone", headers=trainer.headers).status_code == 404


def test_upload_whose_folder_name_matches_another_dataset_keeps_that_dataset(
    client: TestClient, trainer: Caller
) -> None:
    """'team/reviews' and 'team__reviews' are different names; neither may harm the other."""
    assert upload(client, trainer, "team/reviews").status_code == 201
    refused = upload(client, trainer, "team__reviews", b'{"a": 1}\n')
    assert refused.status_code == 422
    shown = client.get("/api/datasets/team/reviews", headers=trainer.headers)
    assert shown.status_code == 200, shown.text
    assert shown.json()["num_rows"] == 40


def test_upload_with_a_bad_name_or_suffix_is_422(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    for name in ("../evil", "a/b/c", "-dash", ""):
        response = upload(client, trainer, name)
        assert response.status_code == 422, (name, response.text)
        assert "name" in response.json()["detail"]
    response = upload(client, trainer, "ok-name", filename="payload.exe")
    assert_error(response, 422, "file: unsupported type '.exe'", ".jsonl")
    response = upload(client, trainer, "ok-name", filename="noext")
    assert_error(response, 422, "unsupported type '(none)'")
    assert files_under(service.settings.home / "datasets") == []
    assert stray_uploads(service) == []


def test_upload_needs_the_trainer_role(client: TestClient, viewer: Caller) -> None:
    response = upload(client, viewer, "mine")
    assert_error(response, 403, "Your role 'viewer' may not do this; it needs 'trainer'")
    assert_error(client.get("/api/datasets/mine", headers=viewer.headers), 404)


# -- models ----------------------------------------------------------------------------


def test_models_lists_the_builtins(client: TestClient, viewer: Caller) -> None:
    response = client.get("/api/models", headers=viewer.headers)
    assert response.status_code == 200, response.text
    entries = response.json()
    assert {e["model_id"]: e["description"] for e in entries} == ModelResolver.builtins()
    assert {e["source"] for e in entries} == {"builtin"}


def test_models_include_a_trained_model_for_those_who_may_see_it(trained: Trained) -> None:
    for caller in (trained.trainer, trained.viewer, trained.admin):
        response = trained.client.get("/api/models", headers=caller.headers)
        assert response.status_code == 200, response.text
        mine = [e for e in response.json() if e["source"] == "trained"]
        assert len(mine) == 1, caller
        entry = mine[0]
        assert entry["job_id"] == trained.job_id
        assert entry["path"] == trained.job["model_path"]
        assert Path(entry["path"], "config.json").is_file()
        assert entry["description"] == "fine_tuning of flextrain/tiny-llama on demo/text"
    others = trained.client.get("/api/models", headers=trained.other_trainer.headers).json()
    assert [e for e in others if e["source"] == "trained"] == []


def test_upload_with_a_column_map_and_shape(client: TestClient, trainer: Caller) -> None:
    body = b"".join(
        json.dumps({"body": f"item {i}", "tag": "a" if i % 2 else "b"}).encode() + b"\n"
        for i in range(6)
    )
    response = client.post(
        "/api/datasets",
        files={"file": ("items.jsonl", body, "application/octet-stream")},
        data={"name": "mapped", "columns": '{"text": "body", "label": "tag"}'},
        headers=trainer.headers,
    )
    assert response.status_code == 201, response.text
    assert response.json()["shape"] == "classification"
    assert response.json()["labels"] == ["a", "b"]
    bad = client.post(
        "/api/datasets",
        files={"file": ("items.jsonl", body, "application/octet-stream")},
        data={"name": "mapped2", "columns": '{"txt": "body"}'},
        headers=trainer.headers,
    )
    assert_error(bad, 422, "columns: unknown part(s) txt")
    shape = client.post(
        "/api/datasets",
        files={"file": ("items.jsonl", body, "application/octet-stream")},
        data={"name": "mapped3", "shape": "poem"},
        headers=trainer.headers,
    )
    assert_error(shape, 422, "shape: 'poem' is not known")
