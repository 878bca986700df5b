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
    """Temporary upload files (or their folders) left in the home folder."""
    home = service.settings.home
    return [
        p
        for p in home.iterdir()
        if (p.is_file() and not p.name.startswith("flextrain.db")) or p.name.startswith(".upload-")
    ]


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
    assert data["version"]
    assert len(data["version"]) == 64
    assert data["version"] in str(stored)
    assert data["shape"] == "classification"
    assert stored.read_bytes() != REVIEWS
    assert len(stored.read_text().splitlines()) == 40
    assert stray_uploads(service) == []

    listed = client.get("/api/datasets", headers=trainer.headers).json()
    assert "team/reviews" in [d["dataset_id"] for d in listed]
    shown = client.get("/api/datasets/team/reviews", headers=trainer.headers)
    assert shown.status_code == 200
    assert shown.json()["num_rows"] == 40

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
    assert again.json()["num_rows"] == 1
    assert again.json()["version"] != first["version"]
    versions = client.get("/api/datasets/team/reviews/versions", headers=trainer.headers)
    assert versions.status_code == 200, versions.text
    assert [v["version"] for v in versions.json()] == [first["version"], again.json()["version"]]
    assert [v["num_rows"] for v in versions.json()] == [40, 1]
    pinned = client.get(
        f"/api/datasets/team/reviews@{first['version'][:12]}", headers=trainer.headers
    )
    assert pinned.status_code == 200
    assert pinned.json()["num_rows"] == 40


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


# -- issue 19 --------------------------------------------------------------------------

LINTED = (
    b'{"text": "fine", "label": "pos"}\n'
    b'{"text": "broken", "label": "pos",}\n'
    b'{"text": "also fine", "label": "pos"}\n'
    b'{"label": "neg"}\n'
    b'{"text": "ok", "label": "neg"}\n'
    b"{not json\n"
    b'{"text": "last", "label": "neg"}\n'
)
ROW_FIX = "correct or remove this row, then send the file again."


def test_upload_with_bad_rows_lists_every_one_in_file_order(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    response = upload(client, trainer, "linted", LINTED, filename="linted.jsonl")
    body = assert_error(response, 422, "'linted.jsonl' was not registered: 3 errors in the data")
    json_fix = "one complete JSON object per line."
    assert body["errors"] == [
        {
            "field": "file",
            "message": "line 2 is not valid JSON (Expecting property name enclosed in double "
            "quotes, column 35).",
            "fix": json_fix,
        },
        {"field": "file", "message": "row 3 (line 4), text: is missing", "fix": ROW_FIX},
        {
            "field": "file",
            "message": "line 6 is not valid JSON (Expecting property name enclosed in double "
            "quotes, column 2).",
            "fix": json_fix,
        },
    ]
    assert service.datasets.access("linted") is None
    assert stray_uploads(service) == []


def test_upload_errors_past_50_are_counted(client: TestClient, trainer: Caller) -> None:
    response = upload(client, trainer, "many", b'{"text": "ok"}\n' + b"[1]\n" * 60)
    errors = assert_error(response, 422, "60 errors")["errors"]
    assert len(errors) == 51
    assert errors[49]["message"] == "line 51 is a list, not an object."
    assert errors[50]["message"] == "... and 10 more"
    assert all(e["field"] == "file" and e["fix"] for e in errors)


def test_upload_with_mixed_label_kinds_is_registered_with_a_warning(
    client: TestClient, trainer: Caller
) -> None:
    labels: list[object] = [0, 1, 0, 1, "positive", "positive"]
    content = "".join(
        json.dumps({"text": f"t{i}", "label": x}) + "\n" for i, x in enumerate(labels)
    )
    response = upload(client, trainer, "mixed", content.encode(), filename="mixed.jsonl")
    assert response.status_code == 201, response.text
    data = response.json()
    assert data["labels"] == ["0", "1", "positive"]
    assert data["warnings"] == [
        {
            "field": "file",
            "message": "label: column 'label' mixes integer labels (like 0 in row 1 and 1 in "
            "row 2) with string labels (like 'positive' in row 5); every distinct value "
            "becomes its own class, here 3: '0', '1', 'positive'.",
            "fix": "use one kind of label throughout, all strings (like 'negative', "
            "'positive') or all integers (like 0, 1).",
        }
    ]
    clean = "".join(json.dumps({"text": f"t{i}", "label": i % 2}) + "\n" for i in range(6))
    assert upload(client, trainer, "clean", clean.encode()).json()["warnings"] == []


def test_an_empty_upload_names_the_uploaded_file(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    response = upload(client, trainer, "empty", b"", filename="my data.jsonl")
    body = assert_error(response, 422, "'my data.jsonl' has no records.")
    assert body["errors"] == [
        {
            "field": "file",
            "message": "'my data.jsonl' has no records.",
            "fix": "add at least one example, or check that this is the right file.",
        }
    ]
    assert stray_uploads(service) == []


def test_an_upload_keeps_the_uploaded_files_name(
    client: TestClient, trainer: Caller, service: TrainingService
) -> None:
    assert upload(client, trainer, "named", filename="soup reviews.jsonl").status_code == 201
    (version,) = service.datasets.versions("named")
    assert version.source_name == "soup reviews.jsonl"


def test_bad_shape_and_columns_name_their_field_and_fix(
    client: TestClient, trainer: Caller
) -> None:
    def post(**data: str) -> Any:
        return client.post(
            "/api/datasets",
            files={"file": ("r.jsonl", REVIEWS, "application/octet-stream")},
            data={"name": "x", **data},
            headers=trainer.headers,
        )

    shape = assert_error(post(shape="poem"), 422, "shape: 'poem' is not known")
    assert shape["errors"] == [
        {
            "field": "shape",
            "message": "shape: 'poem' is not known.",
            "fix": "use one of text, classification, instruction, chat, completion, "
            "preference, unpaired, prompt, or leave shape out to detect it.",
        }
    ]
    columns = assert_error(post(columns="[1]"), 422, "columns: must be a JSON object")
    assert [(e["field"], e["fix"]) for e in columns["errors"]] == [
        ("columns", 'send a JSON object of part names to column names, e.g. {"text": "body"}.')
    ]
    unknown = assert_error(post(columns='{"txt": "body"}'), 422, "unknown part(s) txt")
    assert [e["field"] for e in unknown["errors"]] == ["columns"]
    assert unknown["errors"][0]["fix"].startswith("use only these parts: chosen, completion,")
    missing = assert_error(post(columns='{"text": "nope"}'), 422, "no such column")
    assert [e["field"] for e in missing["errors"]] == ["columns"]


def test_an_unknown_dataset_is_not_registered_with_close_names(
    client: TestClient, admin: Caller, viewer: Caller, tmp_path: Path, monkeypatch: Any
) -> None:
    # A file named like the id in the server's working folder is not the dataset.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "sentimnt").write_text("not data")
    for caller in (admin, viewer):
        response = client.get("/api/datasets/demo/sentimnt", headers=caller.headers)
        body = assert_error(
            response,
            404,
            "Dataset 'demo/sentimnt' is not registered. Did you mean "
            "'demo/sentiment'? Fix: use a registered dataset (demo/sentiment, demo/text",
        )
        assert "extension" not in body["detail"]
        (error,) = body["errors"]
        assert error["field"] == "dataset_id"
        assert error["message"] == (
            "Dataset 'demo/sentimnt' is not registered. Did you mean 'demo/sentiment'?"
        )
        assert error["fix"].startswith("use a registered dataset (demo/sentiment, demo/text")


def test_a_trainers_eval_file_that_is_unknown_names_eval_file(
    client: TestClient, trainer: Caller
) -> None:
    response = client.post(
        "/api/training/jobs/advanced",
        json={**BASIC_JOB, "eval_file": "demo/txt"},
        headers=trainer.headers,
    )
    body = assert_error(response, 404, "Dataset 'demo/txt' is not registered")
    assert [e["field"] for e in body["errors"]] == ["eval_file"]
    assert "Did you mean 'demo/text'?" in body["errors"][0]["message"]


def test_bundled_datasets_show_their_shape_and_version(client: TestClient, viewer: Caller) -> None:
    from flextrain.data.manager import bundled_shape_and_version

    listed = {
        d["dataset_id"]: d for d in client.get("/api/datasets", headers=viewer.headers).json()
    }
    for name, shape in [("demo/sentiment", "classification"), ("demo/text", "text")]:
        assert listed[name]["shape"] == shape
        assert listed[name]["version"] == bundled_shape_and_version(name)[1]
        shown = client.get(f"/api/datasets/{name}", headers=viewer.headers).json()
        assert (shown["shape"], shown["version"]) == (shape, listed[name]["version"])
