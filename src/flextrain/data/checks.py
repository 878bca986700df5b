"""Check every record of a dataset before training, and report all problems at once.

A training run that fails on row 31,402 after twenty minutes, or silently
learns from empty answers, costs far more than reading the data twice. So the
check walks every record, keeps going after a problem, and gives each one its
row and field; the caller decides whether warnings block.

Pure: no tokenizer import. Token lengths come from a `token_length` callable
the caller builds from the model's tokenizer.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from flextrain.data.shapes import (
    CHAT_ROLES,
    ColumnMap,
    Shape,
    resolve_columns,
    seen_columns,
    to_canonical,
)

Severity = Literal["error", "warning"]
_SUMMARY_ISSUES = 5


@dataclass(frozen=True)
class RowIssue:
    """One problem in one record; `row` is 1-based, as a user counts records."""

    row: int
    field: str
    message: str
    severity: Severity

    def __str__(self) -> str:
        return f"row {self.row}, {self.field}: {self.message}"


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
        shown = self.errors[:_SUMMARY_ISSUES] or self.warnings[:_SUMMARY_ISSUES]
        lines.extend(f"  {issue.severity}: {issue}" for issue in shown)
        hidden = self.error_count + self.warning_count - len(shown)
        if hidden > 0:
            lines.append(f"  ... and {hidden} more")
        return "\n".join(lines)


class _IssueLog:
    """Keeps up to `cap` issues, errors first, and counts all of them."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.errors: list[RowIssue] = []
        self.warnings: list[RowIssue] = []
        self.error_count = 0
        self.warning_count = 0

    def add(self, row: int, part: str, message: str, severity: Severity = "error") -> None:
        issue = RowIssue(row, part, message, severity)
        if severity == "error":
            self.error_count += 1
            if len(self.errors) < self.cap:
                self.errors.append(issue)
        else:
            self.warning_count += 1
            if len(self.warnings) < self.cap:
                self.warnings.append(issue)

    def kept(self) -> list[RowIssue]:
        kept = self.errors[: self.cap] + self.warnings[: max(0, self.cap - len(self.errors))]
        return sorted(kept, key=lambda i: i.row)


def check_records(
    records: list[dict[str, Any]],
    shape: Shape,
    columns: ColumnMap = ColumnMap(),  # noqa: B008 (frozen, so safe to share)
    *,
    token_length: Callable[[str], int] | None = None,
    max_length: int | None = None,
    max_issues: int = 200,
) -> DataReport:
    """Check every record as `shape`; see the module docstring for why all at once.

    Rows with an error are left out of the duplicate count and the length
    statistics: they are reported already, and what they would render to is
    not what the user meant.
    """
    mapping = resolve_columns(records, shape, columns)
    log = _IssueLog(max_issues)
    first_seen: dict[bytes, int] = {}
    label_rows: dict[str, list[int]] = {}
    lengths: list[int] = []
    over_limit = 0
    duplicates = 0
    for row, record in enumerate(records, 1):
        canonical = to_canonical(record, shape, mapping)
        before = log.error_count
        _check_fields(canonical, shape, row, log)
        label = canonical.get("label")
        if shape == "classification" and _valid_label(label):
            label_rows.setdefault(str(label), []).append(row)
        if log.error_count > before:
            continue
        key = hashlib.blake2b(
            json.dumps(canonical, sort_keys=True, ensure_ascii=False, default=repr).encode(),
            digest_size=16,
        ).digest()
        if key in first_seen:
            duplicates += 1
            log.add(row, "record", f"duplicates row {first_seen[key]}", "warning")
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
                )
    for label, rows in label_rows.items():
        if len(rows) == 1:
            log.add(
                rows[0],
                "label",
                f"{label!r} appears only once in the whole set: it cannot be both "
                "trained and evaluated, or learned from one example. Fix: add examples "
                "of it or drop the row.",
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
}


def render_for_length(canonical: dict[str, Any], shape: Shape) -> str:
    """The text whose tokens are counted. No chat template or prompt format is
    applied, so this slightly undercounts what the model will see."""
    if shape in ("text", "classification"):
        return str(canonical["text"])
    if shape == "chat":
        parts = [str(m["content"]) for m in canonical["messages"]]
    else:
        parts = [str(canonical[part]) for part in _LENGTH_PARTS[shape]]
    return "\n".join(p for p in parts if p)


_LENGTH_PARTS: dict[Shape, tuple[str, ...]] = {
    "instruction": ("instruction", "input", "output"),
    "completion": ("prompt", "completion"),
}


def _check_fields(canonical: dict[str, Any], shape: Shape, row: int, log: _IssueLog) -> None:
    if shape == "chat":
        _check_messages(canonical["messages"], row, log)
        return
    for part, value in canonical.items():
        if part == "label":
            if value is None:
                log.add(row, part, "is missing")
            elif not _valid_label(value) and not isinstance(value, str):
                log.add(row, part, f"must be a string or an integer, got {_type_name(value)}")
            elif isinstance(value, str) and not value.strip():
                log.add(row, part, "is empty")
        elif value is None:
            log.add(row, part, "is missing")
        elif not isinstance(value, str):
            log.add(row, part, f"must be a string, got {_type_name(value)}")
        elif part != "input" and not value.strip():
            log.add(row, part, "is empty")


def _check_messages(messages: Any, row: int, log: _IssueLog) -> None:
    if messages is None:
        log.add(row, "messages", "is missing")
        return
    if not isinstance(messages, list):
        log.add(row, "messages", f"must be a list of messages, got {_type_name(messages)}")
        return
    if not messages:
        log.add(row, "messages", "has no messages")
        return
    roles: list[str] = []
    for number, message in enumerate(messages, 1):
        where = f"message {number}"
        if not isinstance(message, dict):
            log.add(
                row,
                "messages",
                f"{where} must be an object with role and content, got {_type_name(message)}",
            )
            continue
        role, content = message.get("role"), message.get("content")
        if role is None:
            log.add(row, "messages", f"{where} has no role")
        elif not isinstance(role, str):
            log.add(row, "messages", f"{where} role must be a string, got {_type_name(role)}")
        else:
            roles.append(role)
            if role not in CHAT_ROLES:
                log.add(
                    row,
                    "messages",
                    f"{where} has unknown role {role!r} (allowed: {', '.join(CHAT_ROLES)})",
                )
        if content is None:
            log.add(row, "messages", f"{where} has no content")
        elif not isinstance(content, str):
            log.add(row, "messages", f"{where} content must be a string, got {_type_name(content)}")
        elif not content.strip():
            log.add(row, "messages", f"{where} content is empty", "warning")
    if roles and "user" not in roles:
        log.add(row, "messages", "has no user message")
    last = messages[-1]
    last_role = last.get("role") if isinstance(last, dict) else None
    if last_role != "assistant":
        log.add(
            row,
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
