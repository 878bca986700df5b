"""Shape detection over the usual column names, user overrides, and canonical records."""

from __future__ import annotations

from typing import Any

import pytest

from flextrain.data.registry import DatasetFormatError
from flextrain.data.shapes import (
    CANONICAL_FIELDS,
    ColumnMap,
    detect_shape,
    resolve_columns,
    to_canonical,
)

Records = list[dict[str, Any]]


# -- detection by key variants ---------------------------------------------------------


@pytest.mark.parametrize("key", ["text", "content", "sentence", "document", "body"])
def test_text_variants(key: str) -> None:
    records = [{key: "some words", "id": 1}]
    assert detect_shape(records) == "text"
    assert resolve_columns(records, "text") == ColumnMap(text=key)


@pytest.mark.parametrize("key", ["label", "labels", "class", "category", "target"])
def test_classification_variants(key: str) -> None:
    records: Records = [{"sentence": "fine", key: "pos"}, {"sentence": "bad", key: 0}]
    assert detect_shape(records) == "classification"
    assert resolve_columns(records, "classification") == ColumnMap(text="sentence", label=key)


@pytest.mark.parametrize(
    ("keys", "expected"),
    [
        (
            ("instruction", "input", "output"),
            ColumnMap(instruction="instruction", input="input", output="output"),
        ),
        (("instruction", "output"), ColumnMap(instruction="instruction", output="output")),
        (
            ("instruction", "context", "response"),
            ColumnMap(instruction="instruction", input="context", output="response"),
        ),
    ],
    ids=["alpaca", "alpaca-no-input", "dolly"],
)
def test_instruction_variants(keys: tuple[str, ...], expected: ColumnMap) -> None:
    records = [dict.fromkeys(keys, "x")]
    assert detect_shape(records) == "instruction"
    assert resolve_columns(records, "instruction") == expected


@pytest.mark.parametrize(
    ("prompt", "completion"),
    [
        ("prompt", "completion"),
        ("prompt", "response"),
        ("prompt", "answer"),
        ("question", "answer"),
    ],
)
def test_completion_variants(prompt: str, completion: str) -> None:
    records = [{prompt: "2+2?", completion: "4"}]
    assert detect_shape(records) == "completion"
    assert resolve_columns(records, "completion") == ColumnMap(prompt=prompt, completion=completion)


@pytest.mark.parametrize("key", ["messages", "conversations"])
def test_chat_variants(key: str) -> None:
    records = [{key: [{"role": "user", "content": "hi"}]}]
    assert detect_shape(records) == "chat"
    assert resolve_columns(records, "chat") == ColumnMap(messages=key)


def test_priority_chat_over_instruction_over_completion_over_classification() -> None:
    row: dict[str, Any] = {
        "messages": [],
        "instruction": "i",
        "output": "o",
        "prompt": "p",
        "completion": "c",
        "text": "t",
        "label": "l",
    }
    assert detect_shape([row]) == "chat"
    del row["messages"]
    assert detect_shape([row]) == "instruction"
    del row["instruction"]
    assert detect_shape([row]) == "completion"
    del row["prompt"]
    assert detect_shape([row]) == "classification"
    del row["label"]
    assert detect_shape([row]) == "text"


def test_looks_at_every_record_not_just_the_first() -> None:
    records = [{"text": "a"}, {"text": "b"}, {"text": "c", "label": "x"}]
    assert detect_shape(records) == "classification"


def test_a_column_empty_everywhere_does_not_decide_the_shape() -> None:
    records: Records = [{"text": "a", "label": None}, {"text": "b", "label": " "}]
    assert detect_shape(records) == "text"


def test_no_shape_lists_columns_and_the_options() -> None:
    with pytest.raises(DatasetFormatError) as info:
        detect_shape([{"review": "nice", "stars": 5}])
    message = str(info.value)
    assert "['review', 'stars']" in message
    assert "--text-column" in message
    assert "--label-column" in message
    assert "--messages-column" in message


def test_no_records() -> None:
    with pytest.raises(DatasetFormatError, match="no records"):
        detect_shape([])


# -- overrides -------------------------------------------------------------------------


def test_override_text_and_label_columns() -> None:
    records = [{"review": "nice", "stars": 5}]
    columns = ColumnMap(text="review", label="stars")
    assert detect_shape(records, columns) == "classification"
    assert resolve_columns(records, "classification", columns) == columns
    assert to_canonical(records[0], "classification", columns) == {"text": "nice", "label": 5}


def test_override_text_alone_picks_up_a_usual_label() -> None:
    records = [{"review": "nice", "label": "pos"}]
    assert detect_shape(records, ColumnMap(text="review")) == "classification"


def test_override_wins_over_a_richer_shape() -> None:
    records = [{"messages": [{"role": "user", "content": "x"}], "summary": "s"}]
    assert detect_shape(records) == "chat"
    assert detect_shape(records, ColumnMap(text="summary")) == "text"


def test_override_partial_instruction() -> None:
    records = [{"task": "add", "input": "2 2", "output": "4"}]
    columns = ColumnMap(instruction="task")
    assert detect_shape(records, columns) == "instruction"
    assert resolve_columns(records, "instruction", columns) == ColumnMap(
        instruction="task", input="input", output="output"
    )


def test_override_of_a_missing_column() -> None:
    with pytest.raises(DatasetFormatError, match=r"--text-column 'body2': no such column.*'x'"):
        detect_shape([{"x": "a"}], ColumnMap(text="body2"))


def test_overrides_from_different_shapes() -> None:
    records = [{"a": "x", "b": []}]
    with pytest.raises(DatasetFormatError, match="--messages-column, --text-column belong to"):
        detect_shape(records, ColumnMap(text="a", messages="b"))


def test_override_with_other_parts_missing() -> None:
    with pytest.raises(DatasetFormatError, match=r"--label-column.*classification.*--text-column"):
        detect_shape([{"stars": 5, "x": 1}], ColumnMap(label="stars"))


def test_resolve_columns_reports_missing_parts() -> None:
    with pytest.raises(DatasetFormatError, match=r"no column holds output.*--output-column NAME"):
        resolve_columns([{"instruction": "i"}], "instruction")


# -- canonical records -----------------------------------------------------------------


def test_canonical_fields_table() -> None:
    assert CANONICAL_FIELDS == {
        "text": ("text",),
        "classification": ("text", "label"),
        "instruction": ("instruction", "input", "output"),
        "chat": ("messages",),
        "completion": ("prompt", "completion"),
        "preference": ("prompt", "chosen", "rejected"),
        "unpaired": ("prompt", "completion", "label"),
        "prompt": ("prompt",),
    }


def test_to_canonical_text_keeps_the_text_as_is() -> None:
    record = {"content": "  spaced out \n", "id": 7}
    columns = resolve_columns([record], "text")
    assert to_canonical(record, "text", columns) == {"text": "  spaced out \n"}


def test_to_canonical_classification_keeps_label_type() -> None:
    columns = ColumnMap(text="text", label="label")
    assert to_canonical({"text": "a", "label": 3}, "classification", columns) == {
        "text": "a",
        "label": 3,
    }
    assert to_canonical({"text": "a", "label": "pos"}, "classification", columns)["label"] == "pos"


def test_to_canonical_instruction_defaults_input() -> None:
    records: Records = [{"instruction": "Say hi", "output": "hi", "extra": 1}]
    columns = resolve_columns(records, "instruction")
    assert to_canonical(records[0], "instruction", columns) == {
        "instruction": "Say hi",
        "input": "",
        "output": "hi",
    }
    # A null input is the same as none.
    record = {"instruction": "a", "input": None, "output": "b"}
    assert to_canonical(record, "instruction", ColumnMap())["input"] == ""


def test_to_canonical_completion() -> None:
    record = {"question": "2+2?", "answer": "4", "source": "quiz"}
    columns = resolve_columns([record], "completion")
    assert to_canonical(record, "completion", columns) == {"prompt": "2+2?", "completion": "4"}


def test_to_canonical_missing_part_is_none() -> None:
    columns = ColumnMap(prompt="prompt", completion="completion")
    assert to_canonical({"prompt": "p"}, "completion", columns) == {
        "prompt": "p",
        "completion": None,
    }


def test_to_canonical_openai_messages_drop_extra_keys_and_normalise_case() -> None:
    record = {
        "messages": [
            {"role": "System", "content": "be brief"},
            {"role": "user", "content": "hi", "name": "ann"},
            {"role": "assistant", "content": "hello", "weight": 1},
        ]
    }
    assert to_canonical(record, "chat", ColumnMap(messages="messages")) == {
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
        ]
    }


def test_to_canonical_sharegpt_maps_from_value_and_roles() -> None:
    turns = [
        {"from": "system", "value": "s"},
        {"from": "human", "value": "q"},
        {"from": "gpt", "value": "a1"},
        {"from": "function", "value": "{}"},
        {"from": "bot", "value": "a2"},
        {"from": "model", "value": "a3"},
        {"from": "chatbot", "value": "a4"},
        {"from": "tool", "value": "t"},
        {"from": "narrator", "value": "n"},
    ]
    record = {"conversations": turns}
    columns = resolve_columns([record], "chat")
    messages = to_canonical(record, "chat", columns)["messages"]
    assert [m["role"] for m in messages] == [
        "system",
        "user",
        "assistant",
        "tool",
        "assistant",
        "assistant",
        "assistant",
        "tool",
        "narrator",
    ]
    assert [m["content"] for m in messages] == [t["value"] for t in turns]
    assert all(set(m) == {"role", "content"} for m in messages)


def test_to_canonical_passes_malformed_messages_through() -> None:
    columns = ColumnMap(messages="messages")
    assert to_canonical({"messages": "hi"}, "chat", columns) == {"messages": "hi"}
    assert to_canonical({"messages": ["hi", {"content": "x"}]}, "chat", columns) == {
        "messages": ["hi", {"role": None, "content": "x"}]
    }
