"""Record checks: every problem at once, each with its row and field."""

from __future__ import annotations

from typing import Any

import pytest

from flextrain.data.checks import DataReport, LengthStats, RowIssue, check_records
from flextrain.data.registry import DatasetFormatError
from flextrain.data.shapes import ColumnMap

Records = list[dict[str, Any]]


def words(text: str) -> int:
    return len(text.split())


def messages(*turns: tuple[str, str]) -> list[dict[str, str]]:
    return [{"role": role, "content": content} for role, content in turns]


def strs(report: DataReport) -> list[str]:
    return [str(issue) for issue in report.issues]


# -- the report types ------------------------------------------------------------------


def test_row_issue_str() -> None:
    assert str(RowIssue(12, "output", "is empty", "error")) == "row 12, output: is empty"


def test_clean_data_is_ok() -> None:
    records = [{"text": "a b", "label": "x"}, {"text": "c", "label": "x"}]
    report = check_records(records, "classification")
    assert report.ok
    assert report.issues == []
    assert report.errors == []
    assert report.warnings == []
    assert report.num_rows == 2
    assert report.columns == ["text", "label"]
    assert report.mapping == ColumnMap(text="text", label="label")
    assert report.label_counts == {"x": 2}
    assert report.lengths is None


def test_missing_required_column_for_the_shape_is_a_format_error() -> None:
    with pytest.raises(DatasetFormatError, match="no column holds messages"):
        check_records([{"text": "a"}], "chat")


# -- per-field problems ----------------------------------------------------------------


def test_text_missing_empty_and_wrong_type() -> None:
    records: Records = [{"text": "fine"}, {"text": "  "}, {"other": 1}, {"text": 42}]
    report = check_records(records, "text")
    assert not report.ok
    assert strs(report) == [
        "row 2, text: is empty",
        "row 3, text: is missing",
        "row 4, text: must be a string, got int",
    ]
    assert all(i.severity == "error" for i in report.issues)


def test_instruction_fields() -> None:
    records: Records = [
        {"instruction": "Add", "input": "2 2", "output": "4"},
        {"instruction": "Say hi", "output": ""},  # input absent: fine
        {"instruction": "", "input": 3, "output": "x"},
        {"instruction": "Add", "input": "", "output": None},
    ]
    report = check_records(records, "instruction")
    assert strs(report) == [
        "row 2, output: is empty",
        "row 3, instruction: is empty",
        "row 3, input: must be a string, got int",
        "row 4, output: is missing",
    ]


def test_completion_fields_with_overrides() -> None:
    records: Records = [{"q": "2+2?", "a": "4"}, {"q": "3+3?", "a": ["6"]}]
    report = check_records(records, "completion", ColumnMap(prompt="q", completion="a"))
    assert report.mapping == ColumnMap(prompt="q", completion="a")
    assert strs(report) == ["row 2, completion: must be a string, got list"]


def test_label_types() -> None:
    records: Records = [
        {"text": "a", "label": "x"},
        {"text": "b", "label": "x"},
        {"text": "c", "label": 1.5},
        {"text": "d", "label": True},
        {"text": "e", "label": ""},
        {"text": "f"},
        {"text": "g", "label": 0},
        {"text": "h", "label": 0},
    ]
    report = check_records(records, "classification")
    assert [str(i) for i in report.errors] == [
        "row 3, label: must be a string or an integer, got float",
        "row 4, label: must be a string or an integer, got bool",
        "row 5, label: is empty",
        "row 6, label: is missing",
    ]
    assert report.label_counts == {"x": 2, "0": 2}
    # 'x' and 0 are two kinds of label: see test_mixed_integer_and_string_labels_warn.
    assert [i.field for i in report.warnings] == ["label"]


def test_a_label_seen_once_is_an_error_on_its_row() -> None:
    records = [{"text": str(i), "label": "common"} for i in range(3)]
    records.insert(1, {"text": "odd one", "label": "rare"})
    report = check_records(records, "classification")
    assert not report.ok
    (issue,) = report.errors
    assert issue.row == 2
    assert issue.field == "label"
    assert "'rare' appears only once" in issue.message
    assert report.label_counts == {"common": 3, "rare": 1}


# -- chat ------------------------------------------------------------------------------


def test_chat_openai_and_sharegpt_are_ok() -> None:
    openai = [{"messages": messages(("system", "s"), ("user", "q"), ("assistant", "a"))}]
    sharegpt = [{"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}]
    assert check_records(openai, "chat").ok
    report = check_records(sharegpt, "chat")
    assert report.ok
    assert report.mapping == ColumnMap(messages="conversations")


def test_one_column_per_part_for_the_whole_set() -> None:
    records = [
        {"messages": messages(("user", "q"), ("assistant", "a"))},
        {"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    ]
    report = check_records(records, "chat")
    assert report.mapping == ColumnMap(messages="messages")
    assert strs(report) == ["row 2, messages: is missing"]


def test_chat_problems() -> None:
    records: Records = [
        {"messages": messages(("user", "q"), ("assistant", "a"))},
        {"messages": []},
        {"messages": "hello"},
        {"messages": messages(("user", "q"), ("assistant", "a"), ("user", "more"))},
        {"messages": messages(("system", "s"), ("assistant", "a"))},
        {"messages": [*messages(("user", "q"), ("narrator", "x")), {"role": "assistant"}]},
        {"messages": ["q", {"role": 3, "content": "x"}, {"role": "assistant", "content": 5}]},
        {"other": 1},
    ]
    report = check_records(records, "chat")
    assert strs(report) == [
        "row 2, messages: has no messages",
        "row 3, messages: must be a list of messages, got str",
        "row 4, messages: does not end with an assistant message (the last is 'user'): "
        "there is no answer to learn",
        "row 5, messages: has no user message",
        "row 6, messages: message 2 has unknown role 'narrator' "
        "(allowed: system, user, assistant, tool)",
        "row 6, messages: message 3 has no content",
        "row 7, messages: message 1 must be an object with role and content, got str",
        "row 7, messages: message 2 role must be a string, got int",
        "row 7, messages: message 3 content must be a string, got int",
        "row 7, messages: has no user message",
        "row 8, messages: is missing",
    ]


def test_chat_empty_content_is_a_warning() -> None:
    records = [{"messages": messages(("user", "q"), ("assistant", " "))}]
    report = check_records(records, "chat")
    assert report.ok
    assert [(str(i), i.severity) for i in report.issues] == [
        ("row 1, messages: message 2 content is empty", "warning")
    ]


# -- whole-set problems ----------------------------------------------------------------


def test_duplicates_are_warnings_on_the_later_row_naming_the_first() -> None:
    records: Records = [
        {"text": "same", "id": 1},
        {"text": "other", "id": 2},
        {"text": "same", "id": 3},  # other columns differ; training content does not
        {"text": "same", "id": 4},
        {"text": "", "id": 5},
        {"text": "", "id": 6},  # errors are not also counted as duplicates
    ]
    report = check_records(records, "text")
    assert report.duplicate_rows == 2
    assert [str(i) for i in report.warnings] == [
        "row 3, record: duplicates row 1",
        "row 4, record: duplicates row 1",
    ]
    assert [i.row for i in report.errors] == [5, 6]


def test_length_stats_and_over_limit() -> None:
    records = [{"text": " ".join(["w"] * n)} for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 20)]
    report = check_records(records, "text", token_length=words, max_length=8)
    assert report.lengths == LengthStats(
        min=1, median=5, p95=20, max=20, max_length=8, over_limit=2
    )
    assert [str(i) for i in report.warnings] == [
        "row 9, text: is 9 tokens, over max_length 8 (it will be truncated)",
        "row 10, text: is 20 tokens, over max_length 8 (it will be truncated)",
    ]
    assert report.ok


def test_length_stats_without_a_limit() -> None:
    report = check_records([{"text": "a b c"}], "text", token_length=words)
    assert report.lengths == LengthStats(3, 3, 3, 3, None, 0)
    assert report.warnings == []


@pytest.mark.parametrize(
    ("shape", "record", "tokens", "field"),
    [
        (
            "instruction",
            {"instruction": "a b", "input": "c", "output": "d e f"},
            6,
            "instruction+input+output",
        ),
        ("instruction", {"instruction": "a b", "output": "d e f"}, 5, "instruction+input+output"),
        ("completion", {"prompt": "a b", "completion": "c"}, 3, "prompt+completion"),
        (
            "chat",
            {"messages": messages(("system", "a"), ("user", "b c"), ("assistant", "d"))},
            4,
            "messages",
        ),
    ],
)
def test_lengths_count_the_rendered_example(
    shape: Any, record: dict[str, Any], tokens: int, field: str
) -> None:
    report = check_records([record], shape, token_length=words, max_length=tokens - 1)
    assert report.lengths is not None
    assert report.lengths.max == tokens
    assert [str(i) for i in report.warnings] == [
        f"row 1, {field}: is {tokens} tokens, over max_length {tokens - 1} (it will be truncated)"
    ]


def test_issue_cap_keeps_errors_first_and_counts_all() -> None:
    records = [{"text": "dup"} for _ in range(10)] + [{"text": ""} for _ in range(10)]
    report = check_records(records, "text", max_issues=5)
    assert report.error_count == 10
    assert report.warning_count == 9
    assert len(report.issues) == 5
    assert all(i.severity == "error" for i in report.issues)
    assert [i.row for i in report.issues] == [11, 12, 13, 14, 15]
    assert report.truncated
    assert not report.ok
    assert "10 errors, 9 warnings" in report.summary()
    assert "... and 14 more" in report.summary()


def test_issue_cap_fills_with_warnings_when_errors_are_few() -> None:
    records = [{"text": "dup"} for _ in range(6)] + [{"text": ""}]
    report = check_records(records, "text", max_issues=3)
    assert [(i.row, i.severity) for i in report.issues] == [
        (2, "warning"),
        (3, "warning"),
        (7, "error"),
    ]


def test_summary_lines() -> None:
    records = [
        {"text": "a b", "label": "pos"},
        {"text": "c d e", "label": "pos"},
        {"text": "c d e", "label": "pos"},
        {"text": "f", "label": "neg"},
    ]
    summary = check_records(records, "classification", token_length=words, max_length=2).summary()
    lines = summary.splitlines()
    assert lines[0] == "4 rows of classification data (text=text, label=label)"
    assert lines[1] == "labels: pos 3, neg 1"
    assert lines[2] == "tokens: min 1, median 2, p95 3, max 3; 1 over max_length 2"
    assert lines[3] == "duplicates: 1 row repeats an earlier one"
    assert lines[4] == "1 error, 2 warnings"
    assert lines[5].startswith("  error: row 4, label: 'neg' appears only once")


# -- issue 19: every problem in file order, mixed label kinds ---------------------------


def test_mixed_integer_and_string_labels_warn_naming_the_column_and_examples() -> None:
    labels: list[object] = [0, 1, 0, 1, "positive", "positive", 1, 0]
    records: Records = [{"review": f"t{i}", "sentiment": label} for i, label in enumerate(labels)]
    report = check_records(records, "classification", ColumnMap(text="review", label="sentiment"))
    assert report.ok  # a warning: the data still trains, as three classes
    assert report.error_count == 0
    assert report.warning_count == 1
    (warning,) = report.warnings
    assert (warning.row, warning.line, warning.field) == (None, None, "label")
    assert str(warning) == (
        "label: column 'sentiment' mixes integer labels (like 0 in row 1 and 1 in row 2) "
        "with string labels (like 'positive' in row 5); every distinct value becomes its "
        "own class, here 3: '0', '1', 'positive'. Fix: use one kind of label throughout, "
        "all strings (like 'negative', 'positive') or all integers (like 0, 1)."
    )
    assert "  warning: " + str(warning) in report.summary().splitlines()


def test_one_kind_of_label_does_not_warn() -> None:
    for labels in ([0, 1, 0, 1], ["a", "b", "a", "b"]):
        records: Records = [{"text": f"t{i}", "label": x} for i, x in enumerate(labels)]
        assert check_records(records, "classification").issues == []


def test_mixed_labels_warning_is_kept_past_the_issue_cap() -> None:
    records: Records = [{"text": "", "label": 0}, {"text": "", "label": 0}]
    records += [{"text": "a", "label": "x"}, {"text": "b", "label": "x"}]
    report = check_records(records, "classification", max_issues=1)
    assert [(i.row, i.field, i.severity) for i in report.issues] == [
        (1, "text", "error"),
        (None, "label", "warning"),
    ]
    assert report.error_count == 2
    assert report.warning_count == 1


def test_unreadable_lines_and_row_errors_are_listed_together_in_file_order() -> None:
    records: Records = [{"text": "a"}, {"text": ""}, {"text": "c"}, {"nope": 1}]
    report = check_records(
        records,
        "text",
        lines=[1, 3, 4, 7],
        unreadable=[(6, "is not valid JSON (x). Fix: y."), (2, "is a list, not an object.")],
    )
    assert strs(report) == [
        "line 2 is a list, not an object.",
        "row 2 (line 3), text: is empty",
        "line 6 is not valid JSON (x). Fix: y.",
        "row 4 (line 7), text: is missing",
    ]
    assert report.error_count == 4
    assert not report.ok


def test_the_summary_shows_the_first_50_issues_and_counts_the_rest() -> None:
    records: Records = [{"text": ""} for _ in range(70)]
    summary = check_records(records, "text", ColumnMap(text="text")).summary().splitlines()
    shown = [line for line in summary if line.startswith("  error: ")]
    assert len(shown) == 50
    assert shown[0] == "  error: row 1, text: is empty"
    assert shown[-1] == "  error: row 50, text: is empty"
    assert summary[-1] == "  ... and 20 more (20 errors, 0 warnings not shown)"
    assert "70 errors, 0 warnings" in summary
