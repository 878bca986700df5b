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
    assert code == 0 and version.group(1) in again
    code, changed = run("datasets", "add", str(chats(tmp_path / "more.jsonl", 5)), "--name", "talk")
    assert code == 0 and version.group(1) not in changed

    code, shown = run("datasets", "show", "talk")
    assert code == 0, shown
    assert shown.count("talk.jsonl") + shown.count("more.jsonl") == 2  # two versions listed
    code, listed = run("datasets", "list")
    assert code == 0 and "talk" in listed and "chat" in listed


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
    assert code == 2 and "was not registered" in out and "row 2, output" in out
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
    assert "row 2, text: is" in out and "over max_length 8" in out


def test_bad_choices_and_delete(home: Path, tmp_path: Path) -> None:
    code, out = run("datasets", "validate", str(tmp_path / "x.jsonl"), "--shape", "poem")
    assert code == 2 and "--shape 'poem' is not known" in out
    path = chats(tmp_path / "gone.jsonl")
    assert run("datasets", "add", str(path))[0] == 0
    code, out = run("datasets", "delete", "gone")
    assert code == 0 and "Deleted 1 version(s) of 'gone'" in out
    code, out = run("datasets", "show", "gone")
    assert code == 2 and "not registered" in out
