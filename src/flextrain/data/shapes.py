"""What a dataset's records are for (their shape), and their canonical form.

Datasets in the wild name the same thing many ways (`text`, `content`,
`sentence`; Alpaca, prompt/completion, OpenAI messages, ShareGPT
conversations; preference pairs, KTO's marked answers, GRPO's bare prompts).
Detection maps the usual names onto eight shapes, and users
override it per column (`--text-column` ...) when the names are unusual, so
the rest of flextrain only ever sees the canonical fields of one shape.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from flextrain.config.enums import DATA_SHAPES, DataShape
from flextrain.data.errors import DatasetFormatError

Shape = DataShape
SHAPES = DATA_SHAPES
# Shapes for preference and reward training: their parts may be plain text or
# conversational messages, as TRL reads them.
PREFERENCE_SHAPES = frozenset({"preference", "unpaired", "prompt"})


@dataclass(frozen=True)
class ColumnMap:
    """Which source column plays which canonical part; None means "detect it"."""

    text: str | None = None
    label: str | None = None
    instruction: str | None = None
    input: str | None = None
    output: str | None = None
    prompt: str | None = None
    completion: str | None = None
    messages: str | None = None
    chosen: str | None = None
    rejected: str | None = None

    def given(self) -> dict[str, str]:
        """The parts that name a column, as {part: column}."""
        return {f.name: v for f in fields(self) if (v := getattr(self, f.name)) is not None}


CANONICAL_FIELDS: dict[Shape, tuple[str, ...]] = {
    "text": ("text",),
    "classification": ("text", "label"),
    "instruction": ("instruction", "input", "output"),
    "chat": ("messages",),
    "completion": ("prompt", "completion"),
    # A prompt with a better and a worse answer (DPO, ORPO, SimPO); without a prompt
    # the answers are whole conversations sharing their start (an implicit prompt).
    "preference": ("prompt", "chosen", "rejected"),
    # One answer marked desirable (true) or not (false): KTO.
    "unpaired": ("prompt", "completion", "label"),
    # Prompts alone, answered by the policy itself: GRPO.
    "prompt": ("prompt",),
}
# Parts a record may lack: Alpaca's `input` is often absent or empty, and a preference
# pair's prompt may be implicit in its conversations.
OPTIONAL_PARTS: dict[Shape, frozenset[str]] = {
    "instruction": frozenset({"input"}),
    "preference": frozenset({"prompt"}),
}
# Most specific first: a chat set often also carries a `text` rendering, and an
# instruction set a `category`, so the richer shape must win; prompts alone are what
# is left of almost any set, so last.
SHAPE_PRIORITY: tuple[Shape, ...] = (
    "preference",
    "chat",
    "instruction",
    "unpaired",
    "completion",
    "classification",
    "text",
    "prompt",
)

# The usual names of each part, in preference order.
COLUMN_VARIANTS: dict[str, tuple[str, ...]] = {
    "text": ("text", "content", "sentence", "document", "body"),
    "label": ("label", "labels", "class", "category", "target"),
    "instruction": ("instruction",),
    "input": ("input", "context"),
    "output": ("output", "response"),
    "prompt": ("prompt", "question"),
    "completion": ("completion", "response", "answer"),
    "messages": ("messages", "conversations"),
    "chosen": ("chosen", "preferred", "accepted"),
    "rejected": ("rejected", "dispreferred"),
}

CHAT_ROLES = ("system", "user", "assistant", "tool")
ROLE_ALIASES: dict[str, str] = {
    "system": "system",
    "user": "user",
    "human": "user",
    "assistant": "assistant",
    "gpt": "assistant",
    "bot": "assistant",
    "model": "assistant",
    "chatbot": "assistant",
    "tool": "tool",
    "function": "tool",
}


def detect_shape(records: list[dict[str, Any]], columns: ColumnMap = ColumnMap()) -> Shape:
    """The first shape, by priority, whose required parts all have a column.

    Overrides narrow the candidates to shapes that have every overridden part:
    a user who names a label column means classification even if the data also
    holds `messages`.
    """
    seen = seen_columns(records)
    if not records:
        raise DatasetFormatError("There are no records to detect a shape from.")
    _check_overrides_exist(columns, seen)
    given = set(columns.given())
    candidates = [s for s in SHAPE_PRIORITY if given <= set(CANONICAL_FIELDS[s])]
    if not candidates:
        flags = ", ".join(_flag(part) for part in sorted(given))
        raise DatasetFormatError(
            f"The column options {flags} belong to different shapes. Fix: give only the "
            "columns of one shape: " + _shape_hint() + ".",
            field="columns",
        )
    filled = _filled_columns(records)
    for shape in candidates:
        if all(
            _pick(part, columns, filled) is not None
            for part in CANONICAL_FIELDS[shape]
            if part not in OPTIONAL_PARTS.get(shape, ())
        ) and _fits(shape, records, columns, filled):
            return shape
    if given:
        wanted = " or ".join(candidates)
        raise DatasetFormatError(
            f"With {', '.join(_flag(p) for p in sorted(given))}, the data should be {wanted}, "
            f"but the other parts have no column among {seen}. Fix: name them too: "
            + _shape_hint(candidates)
            + ".",
            field="columns",
        )
    raise DatasetFormatError(
        f"No training shape fits the columns {seen}. Fix: rename them to the usual names "
        "or map them: " + _shape_hint() + ".",
        field="columns",
    )


def resolve_columns(
    records: list[dict[str, Any]], shape: Shape, columns: ColumnMap = ColumnMap()
) -> ColumnMap:
    """The concrete column used for each part of `shape` (others None), to show and store."""
    _check_overrides_exist(columns, seen_columns(records))
    filled = _filled_columns(records)
    chosen: dict[str, str | None] = {}
    missing = []
    for part in CANONICAL_FIELDS[shape]:
        column = _pick(part, columns, filled)
        if column is None and part not in OPTIONAL_PARTS.get(shape, ()):
            missing.append(part)
        chosen[part] = column
    if missing:
        raise DatasetFormatError(
            f"For {shape} data, no column holds {', '.join(missing)} (columns seen: "
            f"{seen_columns(records)}). Fix: "
            + ", ".join(f"{_flag(p)} NAME" for p in missing)
            + ".",
            field="columns",
        )
    return replace(ColumnMap(), **chosen)


def to_canonical(record: dict[str, Any], shape: Shape, columns: ColumnMap) -> dict[str, Any]:
    """The record with exactly the canonical fields of `shape`.

    Values are kept as given (no stripping, no str()), and a missing part is
    None, so the checks can report wrong types and gaps rather than training on
    a silently coerced value. A part `columns` leaves None is looked up by its
    usual names in this record.
    """
    out: dict[str, Any] = {}
    for part in CANONICAL_FIELDS[shape]:
        column = getattr(columns, part) or next(
            (c for c in COLUMN_VARIANTS[part] if c in record), None
        )
        value = record.get(column) if column is not None else None
        if part == "input" and value is None:
            value = ""
        elif part == "messages" or (shape in PREFERENCE_SHAPES and isinstance(value, list)):
            value = normalise_messages(value)
        elif shape == "unpaired" and part == "label":
            value = as_bool(value)
        out[part] = value
    return out


def as_bool(value: Any) -> Any:
    """KTO's desirable flag from what files hold: JSON booleans, and the strings and
    numbers CSV gives for them; anything else is kept for the checks to report."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[value.strip().lower()]
    return value


_BOOL_WORDS = {"true": True, "false": False, "1": True, "0": False, "yes": True, "no": False}


def _fits(
    shape: Shape, records: list[dict[str, Any]], columns: ColumnMap, filled: set[str]
) -> bool:
    """Beyond having the columns: KTO's label is a yes/no flag, so a completion set with a
    `category` or a numeric `label` column is not read as unpaired preferences."""
    if shape != "unpaired":
        return True
    column = _pick("label", columns, filled)
    if column is None:
        return False
    values = [r.get(column) for r in records if r.get(column) is not None]
    return bool(values) and all(isinstance(as_bool(v), bool) for v in values)


def normalise_messages(value: Any) -> Any:
    """OpenAI or ShareGPT turns as [{"role", "content"}], roles mapped to CHAT_ROLES.

    Anything malformed (not a list, a turn that is not an object, an unknown
    role) is passed through so validation can say exactly what is wrong.
    """
    if not isinstance(value, list):
        return value
    messages: list[Any] = []
    for turn in value:
        if not isinstance(turn, dict):
            messages.append(turn)
            continue
        role = turn["role"] if "role" in turn else turn.get("from")
        content = turn["content"] if "content" in turn else turn.get("value")
        if isinstance(role, str):
            role = ROLE_ALIASES.get(role.strip().lower(), role)
        messages.append({"role": role, "content": content})
    return messages


def seen_columns(records: list[dict[str, Any]]) -> list[str]:
    """Every key of every record, in first-seen order."""
    seen: dict[str, None] = {}
    for record in records:
        seen.update(dict.fromkeys(record))
    return list(seen)


def _filled_columns(records: list[dict[str, Any]]) -> set[str]:
    """Columns with a value in at least one record: a Parquet or CSV column that is
    empty everywhere (say, a `label` nobody filled in) must not decide the shape."""
    filled: set[str] = set()
    for record in records:
        for key, value in record.items():
            if value is not None and not (isinstance(value, str) and not value.strip()):
                filled.add(key)
    return filled


def _pick(part: str, columns: ColumnMap, filled: set[str]) -> str | None:
    override: str | None = getattr(columns, part)
    if override is not None:
        return override
    return next((c for c in COLUMN_VARIANTS[part] if c in filled), None)


def _check_overrides_exist(columns: ColumnMap, seen: list[str]) -> None:
    absent = {part: col for part, col in columns.given().items() if col not in seen}
    if absent:
        named = ", ".join(f"{_flag(part)} {col!r}" for part, col in absent.items())
        raise DatasetFormatError(
            f"{named}: no such column in the data (columns seen: {seen}). "
            "Fix: use one of the columns seen.",
            field="columns",
        )


def _flag(part: str) -> str:
    return f"--{part}-column"


def _shape_hint(shapes: list[Shape] | None = None) -> str:
    hints: dict[Shape, str] = {
        "text": "--text-column (plain text)",
        "classification": "--text-column with --label-column (classification)",
        "instruction": "--instruction-column with --output-column and optional --input-column "
        "(instruction)",
        "completion": "--prompt-column with --completion-column (completion)",
        "chat": "--messages-column (chat)",
        "preference": "--chosen-column with --rejected-column and optional --prompt-column "
        "(preference pairs)",
        "unpaired": "--prompt-column, --completion-column and a true/false --label-column "
        "(unpaired preferences, KTO)",
        "prompt": "--prompt-column alone (prompts, GRPO)",
    }
    return "; ".join(hints[s] for s in (shapes or list(SHAPE_PRIORITY)))
