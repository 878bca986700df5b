"""The unversioned dataset registry: bundled demos, files read as they are, clear errors."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from flextrain.data.bundled import bundled_path
from flextrain.data.registry import (
    DatasetFormatError,
    DatasetNotFoundError,
    DatasetRegistry,
    detect_format,
)
from flextrain.db import make_sessionmaker
from flextrain.jobs.spec import DataSpec
from flextrain.migrations import make_engine
from flextrain.service import TrainingService
from flextrain.settings import Settings


def _write_jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture
def registry(service: TrainingService) -> DatasetRegistry:
    """The unversioned registry (bundled demos, files read as they are). The service
    now registers through TrainingDataManager: see test_manager.py."""
    return DatasetRegistry(make_sessionmaker(service.engine))


# -- bundled ---------------------------------------------------------------------------


def test_demo_sentiment(registry: DatasetRegistry) -> None:
    info = registry.get("demo/sentiment")
    assert info.dataset_id == "demo/sentiment"
    assert info.format == "jsonl"
    assert info.num_rows == 480
    assert info.labels == ["negative", "positive"]
    assert info.text_column == "text"
    assert info.label_column == "label"
    assert info.has_labels
    assert info.path.is_file()
    facts = info.facts()
    assert (facts.num_rows, facts.has_labels, facts.num_labels) == (480, True, 2)


def test_demo_text(registry: DatasetRegistry) -> None:
    info = registry.get("demo/text")
    assert info.format == "text"
    assert info.text_column == "text"
    assert info.columns == ["text"]
    assert info.label_column is None
    assert info.labels == []
    assert not info.has_labels
    non_empty = [ln for ln in info.path.read_text().splitlines() if ln.strip()]
    assert info.num_rows == len(non_empty) > 100


def test_demo_instructions(registry: DatasetRegistry) -> None:
    info = registry.get("demo/instructions")
    assert info.format == "jsonl"
    assert info.num_rows == 2000
    assert info.columns == ["instruction", "input", "output"]
    # Rendered with the chat template, the input kept: not read as a prompt/response pair.
    assert info.shape == "instruction"
    assert DataSpec.from_info(info).shape == "instruction"


def test_demo_instructions_is_what_its_generator_makes() -> None:
    script = Path(__file__).parents[2] / "scripts" / "make_instructions.py"
    spec = importlib.util.spec_from_file_location("make_instructions", script)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    lines = [ln for ln in bundled_path("text.txt").read_text().splitlines() if ln.strip()]
    shipped = [json.loads(ln) for ln in bundled_path("instructions.jsonl").read_text().splitlines()]
    assert module.make_rows(lines) == shipped


def test_names_start_with_the_bundled(registry: DatasetRegistry) -> None:
    assert registry.names() == [
        "demo/sentiment",
        "demo/text",
        "demo/instructions",
        "demo/preferences",
    ]


# -- registering -----------------------------------------------------------------------


def test_register_jsonl(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "reviews.jsonl",
        [
            {"text": "great soup", "label": "pos"},
            {"text": "cold tea", "label": "neg"},
            {"text": "fine bread", "label": "pos"},
        ],
    )
    info = registry.register("reviews", path, "three reviews")
    assert info.dataset_id == "reviews"
    assert info.num_rows == 3
    assert info.labels == ["neg", "pos"]
    assert info.description == "three reviews"
    got = registry.get("reviews")
    assert got == info
    assert "reviews" in registry.names()


def test_register_csv(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_text('sentence,category\n"hello, world",a\nbye,b\nagain,a\nnone,\n')
    info = registry.register("csvdata", path)
    assert info.format == "csv"
    assert info.num_rows == 4
    assert info.text_column == "sentence"
    assert info.label_column == "category"
    assert info.labels == ["a", "b"]  # empty labels are not a class
    assert registry.get("csvdata").columns == ["sentence", "category"]


def test_register_text(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = tmp_path / "prose.txt"
    path.write_text("first line\n\n   \nsecond line\nthird line\n")
    info = registry.register("prose", path)
    assert info.format == "text"
    assert info.num_rows == 3
    assert info.text_column == "text"
    assert not info.has_labels


def test_register_json_list(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"data": [{"content": "a"}, {"content": "b"}]}))
    info = registry.register("jsonrows", path)
    assert info.format == "json"
    assert info.num_rows == 2
    assert info.text_column == "content"


def test_register_stores_an_absolute_path(
    registry: DatasetRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write_jsonl(tmp_path / "rel.jsonl", [{"text": "x"}])
    monkeypatch.chdir(tmp_path)
    registry.register("rel", "rel.jsonl")
    monkeypatch.chdir("/")
    assert registry.get("rel").path == (tmp_path / "rel.jsonl").resolve()


def test_registered_datasets_persist(settings: Settings, tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "kept.jsonl", [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}]
    )
    first = TrainingService(settings)
    try:
        first.datasets.register("kept", path, "persisted")
    finally:
        first.engine.dispose()

    second = TrainingService(settings)
    try:
        info = second.datasets.get("kept")
        assert info.path.is_file()
        assert info.path.is_relative_to(settings.home / "datasets")
        assert info.version is not None
        assert info.version in str(info.path)
        assert info.description == "persisted"
        assert info.labels == ["x"]
    finally:
        second.engine.dispose()

    # A bare registry on the same database sees it too.
    engine = make_engine(settings.resolved_database_url)
    try:
        assert "kept" in DatasetRegistry(make_sessionmaker(engine)).names()
    finally:
        engine.dispose()


def test_register_again_replaces(registry: DatasetRegistry, tmp_path: Path) -> None:
    a = _write_jsonl(tmp_path / "a.jsonl", [{"text": "a"}])
    b = _write_jsonl(tmp_path / "b.jsonl", [{"text": "b"}, {"text": "c"}])
    registry.register("same", a)
    registry.register("same", b)
    assert registry.get("same").num_rows == 2
    assert registry.names().count("same") == 1


def test_instruction_pairs(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = _write_jsonl(
        tmp_path / "instruct.jsonl",
        [
            {"prompt": "Say hi", "response": "hi"},
            {"prompt": "Count to two", "response": "one two"},
        ],
    )
    info = registry.register("instruct", path)
    assert info.prompt_columns == ("prompt", "response")
    assert info.text_column is None
    assert info.num_rows == 2


def test_a_direct_file_path_works_unregistered(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "direct.jsonl", [{"text": "a"}])
    info = registry.get(str(path))
    assert info.dataset_id == str(path)
    assert info.num_rows == 1
    assert str(path) not in registry.names()


def test_describe_all_reports_a_vanished_file(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "gone.jsonl", [{"text": "a"}])
    registry.register("gone", path)
    path.unlink()
    rows = {r["dataset_id"]: r for r in registry.describe_all()}
    assert rows["demo/sentiment"]["num_rows"] == 480
    assert "does not exist" in rows["gone"]["error"]


# -- errors ----------------------------------------------------------------------------


def test_unknown_id(registry: DatasetRegistry) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        registry.get("no/such")
    message = str(info.value)
    assert "'no/such' is not registered" in message
    assert "Fix:" in message
    assert "demo/sentiment" in message  # the way out lists what exists


def test_unsupported_extension(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    path.write_bytes(b"PAR1")
    with pytest.raises(DatasetFormatError) as info:
        registry.register("pq", path)
    message = str(info.value)
    assert "unsupported extension" in message
    for ext in (".csv", ".json", ".jsonl", ".txt"):
        assert ext in message
    assert "pq" not in registry.names()


@pytest.mark.parametrize(
    ("name", "fmt"),
    [("a.JSONL", "jsonl"), ("a.ndjson", "jsonl"), ("a.CSV", "csv"), ("a.text", "text")],
)
def test_detect_format(name: str, fmt: str) -> None:
    assert detect_format(Path(name)) == fmt


def test_invalid_json_line_names_the_line(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = tmp_path / "broken.jsonl"
    path.write_text('{"text": "ok"}\n\n{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(DatasetFormatError) as info:
        registry.register("broken", path)
    message = str(info.value)
    assert "line 4" in message
    assert "broken.jsonl" in message
    assert "Fix:" in message
    assert "broken" not in registry.names()


def test_no_text_column_names_the_columns(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "numbers.jsonl", [{"x": 1, "y": 2}])
    with pytest.raises(DatasetFormatError) as info:
        registry.register("numbers", path)
    message = str(info.value)
    assert "'x'" in message
    assert "'y'" in message
    assert "no text" in message
    assert "Fix:" in message


def test_empty_file(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = tmp_path / "empty.txt"
    path.write_text("\n\n")
    with pytest.raises(DatasetFormatError, match="no rows"):
        registry.register("empty", path)


def test_json_that_is_not_a_list(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = tmp_path / "obj.json"
    path.write_text('{"text": "a"}')
    with pytest.raises(DatasetFormatError, match="JSON list"):
        registry.register("obj", path)


def test_missing_file(registry: DatasetRegistry, tmp_path: Path) -> None:
    with pytest.raises(DatasetNotFoundError, match="does not exist"):
        registry.register("missing", tmp_path / "nope.jsonl")


@pytest.mark.parametrize("name", ["demo/sentiment", "demo/text"])
def test_bundled_names_are_reserved(registry: DatasetRegistry, tmp_path: Path, name: str) -> None:
    path = _write_jsonl(tmp_path / "mine.jsonl", [{"text": "a"}])
    with pytest.raises(ValueError, match="bundled") as info:
        registry.register(name, path)
    assert "Fix:" in str(info.value)
    assert registry.get(name).path != path.resolve()


def test_empty_name(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = _write_jsonl(tmp_path / "mine.jsonl", [{"text": "a"}])
    with pytest.raises(ValueError, match="empty"):
        registry.register("  ", path)


def test_csv_with_byte_order_mark(registry: DatasetRegistry, tmp_path: Path) -> None:
    path = tmp_path / "excel.csv"
    path.write_bytes("text,label\nhello,pos\nbye,neg\n".encode("utf-8-sig"))
    info = registry.register("excel", path)
    assert info.text_column == "text"
    assert info.labels == ["neg", "pos"]
