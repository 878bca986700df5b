"""TrainingDataManager: versions named by content, pinning, refusal without residue, deletion."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from flextrain.config.schemas import BasicTrainingConfig
from flextrain.data.bundled import bundled_path
from flextrain.data.manager import DatasetInUseError, DatasetValidationError, split_ref
from flextrain.data.registry import DatasetFormatError, DatasetNotFoundError
from flextrain.data.versions import canonical_bytes, content_version
from flextrain.service import TrainingService


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _instructions(n: int) -> list[dict[str, object]]:
    return [{"instruction": f"repeat {i}", "output": f"{i} {i}"} for i in range(n)]


def test_same_content_is_the_same_version_whatever_the_file(
    service: TrainingService, tmp_path: Path
) -> None:
    rows = [{"text": f"line {i}"} for i in range(5)]
    first = service.datasets.add(_jsonl(tmp_path / "a.jsonl", rows), name="notes")
    csv = tmp_path / "b.csv"
    csv.write_text("text\n" + "".join(f"line {i}\n" for i in range(5)))
    again = service.datasets.add(csv, name="notes")
    assert again.version == first.version
    assert [v.version for v in service.datasets.versions("notes")] == [first.version]
    # The version is the SHA-256 of the canonical content it stores.
    assert first.version == content_version(canonical_bytes(rows))
    assert first.path.read_bytes() == canonical_bytes(rows)


def test_changed_content_is_a_new_latest_version_and_old_ones_stay_pinnable(
    service: TrainingService, tmp_path: Path
) -> None:
    v1 = service.datasets.add(_jsonl(tmp_path / "a.jsonl", _instructions(4)), name="team/instr")
    v2 = service.datasets.add(_jsonl(tmp_path / "a.jsonl", _instructions(6)), name="team/instr")
    assert v1.version != v2.version
    assert service.datasets.get("team/instr").num_rows == 6
    assert service.datasets.get("team/instr").version == v2.version
    pinned = service.datasets.get(f"team/instr@{v1.version[:10]}")
    assert (pinned.num_rows, pinned.version, pinned.shape) == (4, v1.version, "instruction")
    with pytest.raises(DatasetNotFoundError, match="no single version 'ffff'"):
        service.datasets.get("team/instr@ffff")
    assert split_ref("team/instr@abc") == ("team/instr", "abc")
    assert split_ref("team/instr") == ("team/instr", None)


def test_data_with_errors_is_not_registered_and_nothing_is_written(
    service: TrainingService, tmp_path: Path
) -> None:
    bad = _jsonl(
        tmp_path / "bad.jsonl",
        [{"instruction": "a", "output": "b"}, {"instruction": "", "output": "c"}, {"x": 1}],
    )
    with pytest.raises(DatasetValidationError) as caught:
        service.datasets.add(bad, name="bad")
    message = str(caught.value)
    assert "row 2, instruction: is empty" in message
    assert "row 3" in message
    assert caught.value.report.error_count >= 2
    assert "bad" not in service.datasets.names()
    root = service.settings.home / "datasets"
    assert not root.exists() or list(root.iterdir()) == []


@pytest.mark.parametrize(
    "name", ["../../etc/evil", "/etc/passwd", "team/../x", "a//b", "~/x", "a\\b", "./a"]
)
def test_path_like_names_are_refused(service: TrainingService, tmp_path: Path, name: str) -> None:
    source = _jsonl(tmp_path / "a.jsonl", [{"text": "hello"}])
    with pytest.raises(ValueError, match="looks like a path"):
        service.datasets.add(source, name=name)
    root = service.settings.home / "datasets"
    assert not root.exists() or list(root.iterdir()) == []


def test_names_stay_inside_the_data_folder(service: TrainingService, tmp_path: Path) -> None:
    source = _jsonl(tmp_path / "a.jsonl", [{"text": "hello"}])
    version = service.datasets.add(source, name="team/a..b")
    root = (service.settings.home / "datasets").resolve()
    assert version.path.resolve().is_relative_to(root)
    assert len(version.path.resolve().relative_to(root).parts) == 3  # name / version / file
    with pytest.raises(ValueError, match="'@'"):
        service.datasets.add(source, name="a@b")


def test_a_job_records_and_trains_on_its_version(service: TrainingService, tmp_path: Path) -> None:
    v1 = service.datasets.add(_jsonl(tmp_path / "d.jsonl", _instructions(24)), name="pinned")
    job = service.create_job(
        BasicTrainingConfig(
            model_id="flextrain/tiny-llama",
            dataset_id="pinned",
            training_type="fine_tuning",
            num_epochs=1,
            max_length=32,
            batch_size=8,
        )
    )
    assert job.dataset_version == v1.version
    # A new version registered before the job starts does not change what it trains on.
    service.datasets.add(_jsonl(tmp_path / "d.jsonl", _instructions(40)), name="pinned")
    service.start_job(job.job_id)
    done = service.wait(job.job_id, timeout=180)
    assert done.status == "completed", done.error_message
    assert service.store.jobs_using("pinned", v1.version) == [job.job_id]
    spec = json.loads(service.environment(job.job_id).config_file.read_text())
    assert spec["data"]["path"] == str(v1.path)
    assert spec["data"]["shape"] == "instruction"

    with pytest.raises(DatasetInUseError, match=f"used by job\\(s\\) {job.job_id}"):
        service.datasets.delete("pinned", v1.version, used_by=service.store.jobs_using)
    assert v1.path.is_file()
    deleted = service.datasets.delete(
        "pinned", v1.version, used_by=service.store.jobs_using, force=True
    )
    assert deleted == [v1.version]
    assert not v1.path.exists()
    assert len(service.datasets.versions("pinned")) == 1


def test_a_missing_eval_file_is_refused_when_the_job_is_created(
    service: TrainingService, tmp_path: Path
) -> None:
    from flextrain.config.schemas import AdvancedTrainingConfig

    service.datasets.add(_jsonl(tmp_path / "d.jsonl", _instructions(8)), name="train-set")
    config = AdvancedTrainingConfig(
        model_id="flextrain/tiny-llama",
        dataset_id="train-set",
        training_type="fine_tuning",
        eval_file="no-such-eval-set",
    )
    with pytest.raises(DatasetNotFoundError, match="'no-such-eval-set' is not registered"):
        service.create_job(config)
    assert service.list_jobs() == []


def test_list_returns_every_readable_dataset(service: TrainingService, tmp_path: Path) -> None:
    service.datasets.add(_jsonl(tmp_path / "d.jsonl", _instructions(3)), name="listed")
    by_id = {d.dataset_id: d for d in service.datasets.list()}
    assert {"demo/sentiment", "demo/text", "listed"} <= set(by_id)
    assert by_id["listed"].shape == "instruction"
    assert by_id["listed"].version


# -- issue 19 --------------------------------------------------------------------------

# Bad JSON on lines 2 and 6, a row without text on line 4, a list on line 7.
LINTED = (
    '{"text": "fine", "label": "pos"}\n'
    '{"text": "broken", "label": "pos",}\n'
    '{"text": "also fine", "label": "pos"}\n'
    '{"label": "neg"}\n'
    '{"text": "ok", "label": "neg"}\n'
    "{not json\n"
    '["a list"]\n'
    '{"text": "last", "label": "neg"}\n'
)
LINTED_ERRORS = [
    "line 2 is not valid JSON (Expecting property name enclosed in double quotes, "
    "column 35). Fix: one complete JSON object per line.",
    "row 3 (line 4), text: is missing",
    "line 6 is not valid JSON (Expecting property name enclosed in double quotes, "
    "column 2). Fix: one complete JSON object per line.",
    'line 7 is a list, not an object. Fix: one JSON object per line, like {"text": "..."}.',
]


def test_validate_lists_every_unreadable_line_and_row_error_in_file_order(
    service: TrainingService, tmp_path: Path
) -> None:
    path = tmp_path / "linted.jsonl"
    path.write_text(LINTED)
    report = service.datasets.validate(path)
    assert [str(i) for i in report.errors] == LINTED_ERRORS
    assert (report.num_rows, report.error_count, report.ok) == (5, 4, False)


def test_add_refuses_with_the_same_full_list(service: TrainingService, tmp_path: Path) -> None:
    path = tmp_path / "linted.jsonl"
    path.write_text(LINTED)
    with pytest.raises(DatasetValidationError) as caught:
        service.datasets.add(path, name="linted")
    assert str(caught.value).splitlines() == [
        "'linted.jsonl' was not registered: 4 errors in the data (classification shape):",
        *(f"  - {e}" for e in LINTED_ERRORS),
        "Fix: correct the rows listed (`flextrain datasets validate FILE` lists every problem "
        "in one pass), then register the file again.",
    ]
    assert (caught.value.field, caught.value.fix) == (
        "file",
        "correct the rows listed (`flextrain datasets validate FILE` lists every problem in "
        "one pass), then register the file again.",
    )
    assert "linted" not in service.datasets.names()


def test_a_file_with_no_readable_line_lists_them_all(
    service: TrainingService, tmp_path: Path
) -> None:
    path = tmp_path / "junk.jsonl"
    path.write_text("[1]\n{bad\n")
    with pytest.raises(DatasetFormatError) as caught:
        service.datasets.validate(path)
    lines = str(caught.value).splitlines()
    assert lines[0] == "'junk.jsonl' has 2 lines that are not records:"
    assert lines[1].startswith("  - line 1 is a list, not an object.")
    assert lines[2].startswith("  - line 2 is not valid JSON")
    assert lines[3] == "Nothing in it could be read as a record."
    assert caught.value.field == "file"


def test_add_returns_the_mixed_label_warning(service: TrainingService, tmp_path: Path) -> None:
    labels: list[object] = [0, 1, 0, 1, "positive", "positive"]
    rows: list[dict[str, object]] = [{"text": f"t{i}", "label": x} for i, x in enumerate(labels)]
    version = service.datasets.add(_jsonl(tmp_path / "mixed.jsonl", rows), name="mixed")
    assert version.report is not None
    assert version.report.ok
    assert [str(w) for w in version.report.warnings] == [
        "label: column 'label' mixes integer labels (like 0 in row 1 and 1 in row 2) with "
        "string labels (like 'positive' in row 5); every distinct value becomes its own "
        "class, here 3: '0', '1', 'positive'. Fix: use one kind of label throughout, all "
        "strings (like 'negative', 'positive') or all integers (like 0, 1)."
    ]
    assert "report" not in version.to_dict()
    assert service.datasets.get("mixed").labels == ["0", "1", "positive"]


def test_an_unknown_id_is_not_registered_with_close_names_never_a_server_path(
    service: TrainingService, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    service.datasets.add(_jsonl(tmp_path / "r.jsonl", _instructions(3)), name="team/reviews")
    # A file in the working directory with the id's name must not be read as the dataset.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "reveiws").write_text("not data")
    (tmp_path / "reviews").write_text("not data")
    for wrong in ("team/reveiws", "reviews"):
        with pytest.raises(DatasetNotFoundError) as caught:
            service.datasets.get(wrong)
        message = str(caught.value)
        assert message.startswith(
            f"Dataset '{wrong}' is not registered. Did you mean 'team/reviews'? Fix: use a "
            "registered dataset (demo/sentiment, demo/text, demo/instructions, demo/preferences, "
            "team/reviews;"
        ), message
        assert "extension" not in message
        assert caught.value.field == "dataset_id"
        assert caught.value.fix
    with pytest.raises(DatasetNotFoundError, match="Dataset 'gone' is not registered"):
        service.datasets.get("gone@abc")
    # A path is still a path (admins may name files), and says so when it is missing.
    with pytest.raises(DatasetNotFoundError, match="not registered, and there is no file"):
        service.datasets.get("./missing.jsonl")


def test_bundled_datasets_are_described_with_their_shape_and_version(
    service: TrainingService,
) -> None:
    by_id = {d["dataset_id"]: d for d in service.datasets.describe_all()}
    shapes = {name: by_id[name]["shape"] for name in ("demo/sentiment", "demo/text")}
    assert shapes == {"demo/sentiment": "classification", "demo/text": "text"}
    assert by_id["demo/instructions"]["shape"] == "instruction"
    # The version is what registering the same file would give.
    version = by_id["demo/sentiment"]["version"]
    registered = service.datasets.add(bundled_path("sentiment.jsonl"), name="copy")
    assert version == registered.version
    # ... and it pins the demo like a registered dataset; training reads it as before.
    assert service.datasets.get(f"demo/sentiment@{version[:12]}").num_rows == 480
    assert service.datasets.get("demo/sentiment").version is None
    with pytest.raises(DatasetNotFoundError, match=f"has one, {version[:12]}"):
        service.datasets.get("demo/sentiment@ffff")
