"""Check every record of a dataset before training, and report all problems at once.

A training run that fails on row 31,402 after twenty minutes, or silently
learns from empty answers, costs far more than reading the data twice. So the
check walks every record, keeps going after a problem, and gives each one its
row (and source line) and field; lines the reader could not turn into records
are listed with them, in file order, like a linter. The caller decides whether
warnings block.

Pure: no tokenizer import. Token lengths come from a `token_length` callable
the caller builds from the model's tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from flextrain.data.shapes import (
    CHAT_ROLES,
    PREFERENCE_SHAPES,
    ColumnMap,
    Shape,
    resolve_columns,
    seen_columns,
    to_canonical,
)

Severity = Literal["error", "warning"]
# How many issues a report or an error shows; the rest are counted ("... and N more").
SHOWN_ISSUES = 50


@dataclass(frozen=True)
class RowIssue:
    """One problem in one record.

    `row` is 1-based among the records read, as a user counts records; `line` is
    the source line where the format has lines (JSONL, CSV, text). A line that
    could not be read as a record has a line and no row; a problem of a whole
    column (say, mixed label kinds) has neither.
    """

    row: int | None
    field: str
    message: str
    severity: Severity
    line: int | None = None

    def __str__(self) -> str:
        if self.row is None and self.line is not None:
            return f"line {self.line} {self.message}"
        if self.row is None:
            return f"{self.field}: {self.message}"
        return f"{where(self.row, self.line)}, {self.field}: {self.message}"

    @property
    def position(self) -> float:
        """Where in the file: issues sort by it (whole-column issues last)."""
        if self.line is not None:
            return self.line
        return self.row if self.row is not None else math.inf


def where(row: int, line: int | None) -> str:
    """'row 3', or 'row 3 (line 5)' when blank or unreadable lines put them apart."""
    return f"row {row}" if line is None or line == row else f"row {row} (line {line})"


@dataclass(frozen=True)
class LengthStats:
    """Token lengths of the rendered examples (nearest-rank percentiles)."""

    min: int
    median: int
    p95: int
    max: int
    max_length: int | None
    over_limit: int


@dataclass
class DataReport:
    """What a dataset holds and everything wrong with it.

    `issues` is capped (errors kept first); `error_count`/`warning_count` count
    every issue, so `ok` is right even when the list is cut short.
    """

    shape: Shape
    num_rows: int
    columns: list[str]
    mapping: ColumnMap
    issues: list[RowIssue]
    label_counts: dict[str, int]
    duplicate_rows: int
    lengths: LengthStats | None
    error_count: int = 0
    warning_count: int = 0

    def __post_init__(self) -> None:
        # A report built by hand with only `issues` still counts them.
        self.error_count = max(self.error_count, len(self.errors))
        self.warning_count = max(self.warning_count, len(self.warnings))

    @property
    def errors(self) -> list[RowIssue]:
        return [i for i in self.issues if i.severity == "error"]

    @property
    def warnings(self) -> list[RowIssue]:
        return [i for i in self.issues if i.severity == "warning"]

    @property
    def ok(self) -> bool:
        """No errors: the data can be trained on (warnings are the user's call)."""
        return self.error_count == 0

    @property
    def truncated(self) -> bool:
        return self.error_count + self.warning_count > len(self.issues)

    def shown_issues(self, cap: int = SHOWN_ISSUES) -> list[RowIssue]:
        """What a report shows: errors in file order, then warnings, `cap` in all;
        a whole-column warning is always shown (there are few, and they matter)."""
        column_wide = [i for i in self.warnings if i.row is None and i.line is None]
        room = max(0, cap - len(column_wide))
        errors = self.errors[:room]
        rows = [i for i in self.warnings if i not in column_wide]
        return errors + rows[: max(0, room - len(errors))] + column_wide

    def issue_lines(self, cap: int = SHOWN_ISSUES) -> list[str]:
        """One line an issue, as `shown_issues`, then how many more there are."""
        shown = self.shown_issues(cap)
        lines = [f"{issue.severity}: {issue}" for issue in shown]
        hidden_errors = self.error_count - sum(i.severity == "error" for i in shown)
        hidden_warnings = self.warning_count - sum(i.severity == "warning" for i in shown)
        if hidden_errors + hidden_warnings > 0:
            lines.append(
                f"... and {hidden_errors + hidden_warnings} more "
                f"({_plural(hidden_errors, 'error')}, {_plural(hidden_warnings, 'warning')} "
                "not shown)"
            )
        return lines

    def summary(self) -> str:
        """A few lines for a terminal: size, mapping, labels, lengths, issues."""
        used = ", ".join(f"{part}={col}" for part, col in self.mapping.given().items())
        lines = [f"{_plural(self.num_rows, 'row')} of {self.shape} data ({used or 'no columns'})"]
        if self.label_counts:
            counts = ", ".join(
                f"{label} {n}"
                for label, n in sorted(self.label_counts.items(), key=lambda kv: -kv[1])
            )
            lines.append(f"labels: {counts}")
        if self.lengths is not None:
            s = self.lengths
            line = f"tokens: min {s.min}, median {s.median}, p95 {s.p95}, max {s.max}"
            if s.max_length is not None:
                line += f"; {s.over_limit} over max_length {s.max_length}"
            lines.append(line)
        if self.duplicate_rows:
            rows = _plural(self.duplicate_rows, "row")
            lines.append(
                f"duplicates: {rows} repeat{'s' * (self.duplicate_rows == 1)} an earlier one"
            )
        lines.append(
            f"{_plural(self.error_count, 'error')}, {_plural(self.warning_count, 'warning')}"
        )
        lines.extend(f"  {line}" for line in self.issue_lines())
        return "\n".join(lines)


class _IssueLog:
    """Keeps up to `cap` issues, errors first, and counts all of them. Whole-column
    issues are always kept."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.errors: list[RowIssue] = []
        self.warnings: list[RowIssue] = []
        self.column_wide: list[RowIssue] = []
        self.error_count = 0
        self.warning_count = 0

    def add(
        self,
        row: int | None,
        part: str,
        message: str,
        severity: Severity = "error",
        line: int | None = None,
    ) -> None:
        issue = RowIssue(row, part, message, severity, line)
        if severity == "error":
            self.error_count += 1
        else:
            self.warning_count += 1
        if row is None and line is None:
            self.column_wide.append(issue)
            return
        kept = self.errors if severity == "error" else self.warnings
        if len(kept) < self.cap:
            kept.append(issue)

    def kept(self) -> list[RowIssue]:
        kept = self.errors[: self.cap] + self.warnings[: max(0, self.cap - len(self.errors))]
        return sorted(kept, key=lambda i: i.position) + self.column_wide


def check_records(
    records: list[dict[str, Any]],
    shape: Shape,
    columns: ColumnMap = ColumnMap(),  # noqa: B008 (frozen, so safe to share)
    *,
    token_length: Callable[[str], int] | None = None,
    max_length: int | None = None,
    max_issues: int = 200,
    lines: Sequence[int] | None = None,
    unreadable: Sequence[tuple[int, str]] = (),
) -> DataReport:
    """Check every record as `shape`; see the module docstring for why all at once.

    `lines` gives each record's source line, and `unreadable` the (line, message)
    of each line the reader could not turn into a record: those are errors, listed
    in file order with the rest.

    Rows with an error are left out of the duplicate count and the length
    statistics: they are reported already, and what they would render to is
    not what the user meant.
    """
    mapping = resolve_columns(records, shape, columns)
    log = _IssueLog(max_issues)
    pending = deque(sorted(unreadable))
    first_seen: dict[bytes, int] = {}
    label_rows: dict[str, list[int]] = {}
    label_kinds: dict[str, dict[str, str]] = {"integer": {}, "string": {}}
    lengths: list[int] = []
    over_limit = 0
    duplicates = 0
    for row, record in enumerate(records, 1):
        line = lines[row - 1] if lines is not None else None
        # Unreadable lines before this record go first, so what is kept is in file order.
        while pending and line is not None and pending[0][0] < line:
            bad_line, message = pending.popleft()
            log.add(None, "record", message, line=bad_line)
        canonical = to_canonical(record, shape, mapping)
        before = log.error_count
        _check_fields(canonical, shape, row, log, line)
        label = canonical.get("label")
        if shape == "classification" and _valid_label(label):
            label_rows.setdefault(str(label), []).append(row)
            kind = label_kinds["string" if isinstance(label, str) else "integer"]
            if len(kind) < 3:
                kind.setdefault(repr(label), where(row, line))
        if log.error_count > before:
            continue
        key = hashlib.blake2b(
            json.dumps(canonical, sort_keys=True, ensure_ascii=False, default=repr).encode(),
            digest_size=16,
        ).digest()
        if key in first_seen:
            duplicates += 1
            log.add(row, "record", f"duplicates row {first_seen[key]}", "warning", line)
            continue
        first_seen[key] = row
        if token_length is not None:
            n = token_length(render_for_length(canonical, shape))
            lengths.append(n)
            if max_length is not None and n > max_length:
                over_limit += 1
                log.add(
                    row,
                    _RENDERED_FIELD[shape],
                    f"is {n} tokens, over max_length {max_length} (it will be truncated)",
                    "warning",
                    line,
                )
    for bad_line, message in pending:
        log.add(None, "record", message, line=bad_line)
    for label, rows in label_rows.items():
        if len(rows) == 1:
            log.add(
                rows[0],
                "label",
                f"{label!r} appears only once in the whole set: it cannot be both "
                "trained and evaluated, or learned from one example. Fix: add examples "
                "of it or drop the row.",
                line=lines[rows[0] - 1] if lines is not None else None,
            )
    if label_kinds["integer"] and label_kinds["string"]:
        log.add(
            None,
            "label",
            _mixed_labels_message(mapping.label or "label", label_kinds, list(label_rows)),
            "warning",
        )
    return DataReport(
        shape=shape,
        num_rows=len(records),
        columns=seen_columns(records),
        mapping=mapping,
        issues=log.kept(),
        label_counts={label: len(rows) for label, rows in label_rows.items()},
        duplicate_rows=duplicates,
        lengths=_length_stats(lengths, max_length, over_limit),
        error_count=log.error_count,
        warning_count=log.warning_count,
    )


_RENDERED_FIELD: dict[Shape, str] = {
    "text": "text",
    "classification": "text",
    "instruction": "instruction+input+output",
    "completion": "prompt+completion",
    "chat": "messages",
    "preference": "prompt+chosen/rejected",
    "unpaired": "prompt+completion",
    "prompt": "prompt",
}


def render_for_length(canonical: dict[str, Any], shape: Shape) -> str:
    """The text whose tokens are counted. No chat template or prompt format is
    applied, so this slightly undercounts what the model will see."""
    if shape in ("text", "classification"):
        return str(canonical["text"])
    if shape == "chat":
        parts = [str(m["content"]) for m in canonical["messages"]]
    elif shape == "preference":
        # Each answer is a sequence of its own after the prompt: the longer one counts.
        answers = [_flat(canonical["chosen"]), _flat(canonical["rejected"])]
        parts = [_flat(canonical["prompt"]), max(answers, key=len)]
    elif shape in PREFERENCE_SHAPES:
        parts = [_flat(canonical[part]) for part in ("prompt", "completion") if part in canonical]
    else:
        parts = [str(canonical[part]) for part in _LENGTH_PARTS[shape]]
    return "\n".join(p for p in parts if p)


_LENGTH_PARTS: dict[Shape, tuple[str, ...]] = {
    "instruction": ("instruction", "input", "output"),
    "completion": ("prompt", "completion"),
}


IDENTICAL_PAIR = "is identical to chosen"


def identical_pairs(report: DataReport) -> int:
    """Pairs whose chosen and rejected answers are the same (warned about per row)."""
    return sum(1 for issue in report.warnings if issue.message.startswith(IDENTICAL_PAIR))


def _flat(value: Any) -> str:
    """Plain text, or a conversation's turns joined (for counting tokens)."""
    if value is None:
        return ""
    if isinstance(value, list):
        return "\n".join(str(m.get("content", "")) for m in value if isinstance(m, dict))
    return str(value)


def _mixed_labels_message(column: str, kinds: dict[str, dict[str, str]], classes: list[str]) -> str:
    """Column `column` holds integer and string labels: every distinct value becomes
    its own class, so 1 and "positive" are two classes where one was likely meant."""

    def examples(kind: str) -> str:
        return " and ".join(f"{value} in {at}" for value, at in kinds[kind].items())

    shown = ", ".join(repr(c) for c in sorted(classes)[:10])
    more = f" and {len(classes) - 10} more" if len(classes) > 10 else ""
    return (
        f"column '{column}' mixes integer labels (like {examples('integer')}) with string "
        f"labels (like {examples('string')}); every distinct value becomes its own class, "
        f"here {len(classes)}: {shown}{more}. Fix: use one kind of label throughout, all "
        "strings (like 'negative', 'positive') or all integers (like 0, 1)."
    )


def _check_fields(
    canonical: dict[str, Any], shape: Shape, row: int, log: _IssueLog, line: int | None = None
) -> None:
    def add(part: str, message: str, severity: Severity = "error") -> None:
        log.add(row, part, message, severity, line)

    if shape == "chat":
        _check_messages(canonical["messages"], add)
        return
    if shape in PREFERENCE_SHAPES:
        _check_preference(canonical, shape, add)
        return
    for part, value in canonical.items():
        if part == "label":
            if value is None:
                add(part, "is missing")
            elif not _valid_label(value) and not isinstance(value, str):
                add(part, f"must be a string or an integer, got {_type_name(value)}")
            elif isinstance(value, str) and not value.strip():
                add(part, "is empty")
        elif value is None:
            add(part, "is missing")
        elif not isinstance(value, str):
            add(part, f"must be a string, got {_type_name(value)}")
        elif part != "input" and not value.strip():
            add(part, "is empty")


def _check_preference(canonical: dict[str, Any], shape: Shape, add: Callable[..., None]) -> None:
    """Preference, unpaired and prompt rows: each part plain text or a list of messages
    (TRL reads both), a yes/no label for KTO, and a pair whose answers differ."""
    for part, value in canonical.items():
        if part == "label":
            if value is None:
                add(part, "is missing")
            elif not isinstance(value, bool):
                add(part, f"must be true or false (desirable or not), got {value!r}")
        elif value is None:
            if not (shape == "preference" and part == "prompt"):
                add(part, "is missing")
        elif isinstance(value, list):
            _check_turns(part, value, add)
        elif not isinstance(value, str):
            add(part, f"must be text or a list of messages, got {_type_name(value)}")
        elif not value.strip():
            add(part, "is empty")
    if shape == "preference":
        chosen, rejected = canonical.get("chosen"), canonical.get("rejected")
        conversations = isinstance(chosen, list) and isinstance(rejected, list)
        both = chosen is not None and rejected is not None
        if canonical.get("prompt") is None and both and not conversations:
            add(
                "prompt",
                "is missing and the answers are not conversations, so no prompt can be "
                "read from them. Fix: add a prompt column, or give chosen and rejected as "
                "message lists that start with the same user turn",
            )
        if chosen is not None and chosen == rejected:
            add(
                "rejected",
                f"{IDENTICAL_PAIR}: the pair teaches nothing (it is kept, its loss is constant)",
                "warning",
            )


def _check_turns(part: str, turns: list[Any], add: Callable[..., None]) -> None:
    if not turns:
        add(part, "has no messages")
        return
    for number, turn in enumerate(turns, 1):
        if not isinstance(turn, dict):
            add(part, f"message {number} must be an object with role and content")
        elif turn.get("role") not in CHAT_ROLES:
            add(part, f"message {number} has unknown role {turn.get('role')!r}")
        elif not isinstance(turn.get("content"), str):
            add(part, f"message {number} content must be a string")


def _check_messages(messages: Any, add: Callable[..., None]) -> None:
    if messages is None:
        add("messages", "is missing")
        return
    if not isinstance(messages, list):
        add("messages", f"must be a list of messages, got {_type_name(messages)}")
        return
    if not messages:
        add("messages", "has no messages")
        return
    roles: list[str] = []
    for number, message in enumerate(messages, 1):
        which = f"message {number}"
        if not isinstance(message, dict):
            add(
                "messages",
                f"{which} must be an object with role and content, got {_type_name(message)}",
            )
            continue
        role, content = message.get("role"), message.get("content")
        if role is None:
            add("messages", f"{which} has no role")
        elif not isinstance(role, str):
            add("messages", f"{which} role must be a string, got {_type_name(role)}")
        else:
            roles.append(role)
            if role not in CHAT_ROLES:
                add(
                    "messages",
                    f"{which} has unknown role {role!r} (allowed: {', '.join(CHAT_ROLES)})",
                )
        if content is None:
            add("messages", f"{which} has no content")
        elif not isinstance(content, str):
            add("messages", f"{which} content must be a string, got {_type_name(content)}")
        elif not content.strip():
            add("messages", f"{which} content is empty", "warning")
    if roles and "user" not in roles:
        add("messages", "has no user message")
    last = messages[-1]
    last_role = last.get("role") if isinstance(last, dict) else None
    if last_role != "assistant":
        add(
            "messages",
            f"does not end with an assistant message (the last is {last_role!r}): "
            "there is no answer to learn",
        )


def _valid_label(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    return isinstance(value, int) or (isinstance(value, str) and bool(value.strip()))


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _length_stats(lengths: list[int], max_length: int | None, over: int) -> LengthStats | None:
    if not lengths:
        return None
    ordered = sorted(lengths)

    def rank(q: float) -> int:
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return LengthStats(
        min=ordered[0],
        median=rank(0.5),
        p95=rank(0.95),
        max=ordered[-1],
        max_length=max_length,
        over_limit=over,
    )
