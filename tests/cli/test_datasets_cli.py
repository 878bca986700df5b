"""`flextrain datasets add | validate | show | list | delete`, through Typer's CliRunner."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from flextrain.cli.main import app


@pytest.fixture
def home(tmp_path: Path, models_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    monkeypatch.setenv("FLEXTRAIN_HOME", str(home))
    monkeypatch.setenv("FLEXTRAIN_MODELS_CACHE", str(models_cache))
    monkeypatch.setenv("COLUMNS", "300")
    return home


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def chats(path: Path, n: int = 3) -> Path:
    rows = [
        {"conversations": [{"from": "human", "value": f"hi {i}"}, {"from": "gpt", "value": "hey"}]}
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_add_prints_the_version_and_same_content_keeps_it(home: Path, tmp_path: Path) -> None:
    code, out = run("datasets", "add", str(chats(tmp_path / "talk.jsonl")))
    assert code == 0, out
    version = re.search(r"talk@([0-9a-f]{64})", out)
    assert version, out
    assert "3 rows of chat data" in out
    code, again = run("datasets", "add", str(chats(tmp_path / "copy.jsonl")), "--name", "talk")
    assert code == 0
    assert version.group(1) in again
    code, changed = run("datasets", "add", str(chats(tmp_path / "more.jsonl", 5)), "--name", "talk")
    assert code == 0
    assert version.group(1) not in changed

    code, shown = run("datasets", "show", "talk")
    assert code == 0, shown
    assert shown.count("talk.jsonl") + shown.count("more.jsonl") == 2  # two versions listed
    code, listed = run("datasets", "list")
    assert code == 0
    assert "talk" in listed
    assert "chat" in listed


def test_validate_reports_rows_and_exits_1_on_errors(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps({"instruction": "a", "output": "b"})
        + "\n"
        + json.dumps({"instruction": "c", "output": ""})
        + "\n"
    )
    code, out = run("datasets", "validate", str(bad))
    assert code == 1
    assert "row 2, output: is empty" in out
    code, out = run("datasets", "add", str(bad))
    assert code == 2
    assert "was not registered" in out
    assert "row 2, output" in out
    code, listed = run("datasets", "list")
    assert "bad" not in listed.split()


def test_validate_with_a_model_counts_tokens(home: Path, tmp_path: Path) -> None:
    text = tmp_path / "t.txt"
    text.write_text("short line\n" + "a much longer line of several words here\n")
    code, out = run(
        "datasets", "validate", str(text), "--model", "flextrain/tiny-llama", "--max-length", "8"
    )
    assert code == 0, out
    assert re.search(r"tokens: min \d+, median \d+, p95 \d+, max \d+; 1 over max_length 8", out)
    assert "row 2, text: is" in out
    assert "over max_length 8" in out


def test_bad_choices_and_delete(home: Path, tmp_path: Path) -> None:
    code, out = run("datasets", "validate", str(tmp_path / "x.jsonl"), "--shape", "poem")
    assert code == 2
    assert "--shape 'poem' is not known" in out
    path = chats(tmp_path / "gone.jsonl")
    assert run("datasets", "add", str(path))[0] == 0
    code, out = run("datasets", "delete", "gone")
    assert code == 0
    assert "Deleted 1 version(s) of 'gone'" in out
    code, out = run("datasets", "show", "gone")
    assert code == 2
    assert "not registered" in out


# -- issue 19 --------------------------------------------------------------------------

LINTED = (
    '{"text": "fine", "label": "pos"}\n'
    '{"text": "broken", "label": "pos",}\n'
    '{"text": "also fine", "label": "pos"}\n'
    '{"label": "neg"}\n'
    '{"text": "ok", "label": "neg"}\n'
    "{not json\n"
    '{"text": "last", "label": "neg"}\n'
)
LINTED_ERRORS = [
    "line 2 is not valid JSON (Expecting property name enclosed in double quotes, "
    "column 35). Fix: one complete JSON object per line.",
    "row 3 (line 4), text: is missing",
    "line 6 is not valid JSON (Expecting property name enclosed in double quotes, "
    "column 2). Fix: one complete JSON object per line.",
]


def test_validate_lists_every_bad_line_and_row_in_file_order(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "linted.jsonl"
    path.write_text(LINTED)
    code, out = run("datasets", "validate", str(path))
    assert code == 1, out
    assert "3 errors, 0 warnings " + " ".join(f"error: {e}" for e in LINTED_ERRORS) in out


def test_add_of_a_file_with_bad_rows_lists_them_all(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "linted.jsonl"
    path.write_text(LINTED)
    code, out = run("datasets", "add", str(path))
    assert code == 2, out
    assert (
        "'linted.jsonl' was not registered: 3 errors in the data (classification shape): "
        + " ".join(f"- {e}" for e in LINTED_ERRORS)
    ) in out
    assert "linted" not in run("datasets", "list")[1].split()


def test_validate_caps_the_list_at_50_and_counts_the_rest(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "many.jsonl"
    path.write_text('{"text": "ok"}\n' + "[1]\n" * 60)
    code, out = run("datasets", "validate", str(path))
    assert code == 1, out
    assert "error: line 51 is a list" in out
    assert "line 52 is" not in out
    assert "... and 10 more (10 errors, 0 warnings not shown)" in out


MIXED_WARNING = (
    "warning: label: column 'label' mixes integer labels (like 0 in row 1 and 1 in row 2) "
    "with string labels (like 'positive' in row 5); every distinct value becomes its own "
    "class, here 3: '0', '1', 'positive'. Fix: use one kind of label throughout, all "
    "strings (like 'negative', 'positive') or all integers (like 0, 1)."
)


def test_mixed_label_kinds_warn_in_validate_add_and_register(home: Path, tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    labels: list[object] = [0, 1, 0, 1, "positive", "positive"]
    path.write_text(
        "".join(json.dumps({"text": f"t{i}", "label": x}) + "\n" for i, x in enumerate(labels))
    )
    code, out = run("datasets", "validate", str(path))
    assert code == 0, out
    assert "0 errors, 1 warning" in out, out
    assert MIXED_WARNING in out, out
    code, out = run("datasets", "add", str(path))
    assert code == 0, out
    assert "6 rows of classification data" in out, out
    assert MIXED_WARNING in out, out
    code, out = run("datasets", "register", "again", str(path))
    assert code == 0, out
    assert "Registered 'again'" in out, out
    assert MIXED_WARNING in out, out


def test_list_shows_a_bundled_datasets_shape_and_version(home: Path) -> None:
    from flextrain.data.manager import bundled_shape_and_version

    code, out = run("datasets", "list")
    assert code == 0, out
    for name, shape in [
        ("demo/sentiment", "classification"),
        ("demo/text", "text"),
        ("demo/instructions", "instruction"),
    ]:
        version = bundled_shape_and_version(name)[1]
        assert f"{name} │ {shape} │ {version[:12]} │" in out, out
    code, out = run("datasets", "list", "--json")
    rows = {r["dataset_id"]: r for r in json.loads(out)}
    assert rows["demo/sentiment"]["shape"] == "classification"
    assert rows["demo/sentiment"]["version"] == bundled_shape_and_version("demo/sentiment")[1]
    code, out = run("datasets", "show", "demo/text")
    assert code == 0, out
    assert "shape text, 600 rows" in out, out


def test_an_unknown_dataset_is_not_registered_with_close_names(home: Path) -> None:
    code, out = run("datasets", "show", "demo/sentimnt")
    assert code == 2
    assert "Dataset 'demo/sentimnt' is not registered. Did you mean 'demo/sentiment'? Fix:" in out
