"""A minimal dataset registry: names for JSONL/CSV/text files.

The full data manager (formats, versions, provenance) is its own piece of
work; this gives jobs a stable `dataset_id` and lets the service check, before
a worker starts, that the data can serve the requested training type.
"""

from __future__ import annotations

import csv
import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Boolean, DateTime, String, select, true
from sqlalchemy.orm import Mapped, mapped_column, sessionmaker

from flextrain.config.validation import DatasetFacts
from flextrain.data.bundled import bundled_path
from flextrain.data.errors import DatasetFormatError, FieldAndFix
from flextrain.data.shapes import PREFERENCE_SHAPES, detect_shape
from flextrain.db import Base
from flextrain.errors import NotFoundError

DataFormat = Literal["jsonl", "json", "csv", "text"]
_SUFFIXES: dict[str, DataFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".txt": "text",
    ".text": "text",
}
TEXT_COLUMNS = ("text", "content", "sentence", "document")
LABEL_COLUMNS = ("label", "labels", "class", "category")
# Instruction pairs are rendered to one text for language-model objectives.
PROMPT_PAIRS = (("prompt", "response"), ("instruction", "output"), ("question", "answer"))

# id: (file, description, shape); a shape of None is read from the columns as for any file.
BUNDLED: dict[str, tuple[str, str, str | None]] = {
    "demo/sentiment": (
        "sentiment.jsonl",
        "Short reviews labelled positive/negative (480 rows)",
        None,
    ),
    "demo/text": (
        "text.txt",
        "Everyday English prose, one passage a line (for pre-training)",
        None,
    ),
    "demo/instructions": (
        "instructions.jsonl",
        "Alpaca-style instructions of 38-235 tokens made from demo/text (2,000 rows)",
        "instruction",
    ),
    "demo/preferences": (
        "preferences.jsonl",
        "Preference pairs: right sums over wrong ones, descriptions over refusals (304 rows)",
        "preference",
    ),
}


# What a data file is called: an id ending so (or starting with /, ~ or .) is read as a
# file path; any other unregistered id is "not registered", whatever files lie around.
DATA_FILE_SUFFIXES = (
    ".jsonl",
    ".ndjson",
    ".json",
    ".csv",
    ".tsv",
    ".parquet",
    ".txt",
    ".text",
    ".md",
)


class DatasetNotFoundError(FieldAndFix, NotFoundError, LookupError):
    """The dataset id names no registered dataset or readable file.

    `field` names the input at fault (default: the dataset id) and `fix` says what
    to do; both travel to the REST error's `errors` list.
    """

    code = "dataset_not_found"


def looks_like_path(dataset_id: str) -> bool:
    """Whether an id is written as a file path rather than a dataset name."""
    text = dataset_id.strip()
    return (
        text.startswith(("/", "~", "."))
        or "\\" in text
        or Path(text).suffix.lower() in DATA_FILE_SUFFIXES
    )


def close_names(wanted: str, names: list[str], n: int = 3) -> list[str]:
    """The names most like `wanted` (difflib), also by their last part, so 'reviews'
    finds 'team/reviews'."""
    close = difflib.get_close_matches(wanted, names, n=n, cutoff=0.75)
    tail = wanted.rsplit("/", 1)[-1]
    for name in names:
        if name not in close and difflib.get_close_matches(tail, [name.rsplit("/", 1)[-1]]):
            close.append(name)
    return close[:n]


def not_registered(
    dataset_id: str,
    known: Iterable[str],
    *,
    field: str = "dataset_id",
    paths_allowed: bool = True,
) -> DatasetNotFoundError:
    """The error for an id that names no dataset: the names closest to it first, then
    the way out. `known` are the names the caller may use."""
    names = list(known)
    close = close_names(dataset_id, names)
    message = f"Dataset '{dataset_id}' is not registered"
    if paths_allowed and looks_like_path(dataset_id):
        message += ", and there is no file at that path"
    message += "."
    if close:
        message += " Did you mean " + " or ".join(f"'{c}'" for c in close) + "?"
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    fix = (
        f"use a registered dataset ({shown or 'none yet'}; `flextrain datasets list`), or "
        "register the file first (`flextrain datasets add FILE --name NAME`, or upload it "
        "with POST /api/datasets)"
    )
    fix += "." if paths_allowed else "; file paths are for admins only."
    return DatasetNotFoundError(f"{message} Fix: {fix}", field=field, fix=fix)


class DatasetRecord(Base):
    __tablename__ = "datasets"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)
    path: Mapped[str] = mapped_column(String(2000))
    format: Mapped[str] = mapped_column(String(16))
    description: Mapped[str] = mapped_column(String(1000), default="")
    owner: Mapped[str | None] = mapped_column(String(64))
    latest_version: Mapped[str | None] = mapped_column(String(64))
    # Visible to every user, or only to its owner (and admins); see the REST API.
    shared: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )


@dataclass(frozen=True)
class DatasetInfo:
    """What a dataset is and what it can train, read from the file itself."""

    dataset_id: str
    path: Path
    format: DataFormat
    num_rows: int
    columns: list[str]
    text_column: str | None
    label_column: str | None
    labels: list[str] = field(default_factory=list)
    prompt_columns: tuple[str, str] | None = None
    description: str = ""
    version: str | None = None  # content SHA-256 of a registered version
    shape: str | None = None  # text, classification, instruction, chat, completion
    owner: str | None = None

    @property
    def has_labels(self) -> bool:
        return self.label_column is not None

    def facts(self) -> DatasetFacts:
        return DatasetFacts(self.num_rows, self.has_labels, len(self.labels), self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset_id": self.dataset_id,
            "path": str(self.path),
            "format": self.format,
            "num_rows": self.num_rows,
            "columns": self.columns,
            "text_column": self.text_column,
            "label_column": self.label_column,
            "labels": self.labels,
            "description": self.description,
            "version": self.version,
            "shape": self.shape,
        }


def detect_format(path: Path) -> DataFormat:
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        raise DatasetFormatError(
            f"'{path.name}' has an unsupported extension. "
            f"Fix: use one of {', '.join(sorted(_SUFFIXES))}."
        ) from None


def read_rows(path: Path, fmt: DataFormat) -> list[dict[str, Any]]:
    """All rows as dicts; plain text gives one {'text': line} per non-empty line."""
    if fmt == "text":
        return [
            {"text": ln} for ln in path.read_text(encoding="utf-8-sig").splitlines() if ln.strip()
        ]
    if fmt == "csv":
        with path.open(newline="", encoding="utf-8-sig") as fh:
            return list(csv.DictReader(fh))
    if fmt == "json":
        data = json.loads(path.read_text(encoding="utf-8-sig"))
        if isinstance(data, dict) and isinstance(data.get("data"), list):
            data = data["data"]
        if not isinstance(data, list):
            raise DatasetFormatError(f"'{path.name}' must hold a JSON list of objects.")
        return data
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DatasetFormatError(
                f"'{path.name}' line {number} is not valid JSON ({exc.msg}). Fix: one JSON "
                "object per line."
            ) from None
    return rows


def inspect_file(path: Path, dataset_id: str | None = None, description: str = "") -> DatasetInfo:
    """Read the file and work out its text, label and prompt columns."""
    if not path.is_file():
        raise DatasetNotFoundError(f"Dataset file '{path}' does not exist.")
    fmt = detect_format(path)
    try:
        rows = read_rows(path, fmt)
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(
            f"'{path.name}' is not UTF-8 text (byte {exc.start}). Fix: save it as UTF-8."
        ) from None
    except json.JSONDecodeError as exc:
        raise DatasetFormatError(
            f"'{path.name}' is not valid JSON (line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg}). Fix: a JSON list of objects, or use .jsonl with one object per line."
        ) from None
    except csv.Error as exc:
        raise DatasetFormatError(f"'{path.name}' is not valid CSV ({exc}).") from None
    if not rows or not all(isinstance(r, dict) for r in rows):
        raise DatasetFormatError(f"'{path.name}' has no rows of named fields.")
    columns = list(rows[0].keys())
    text_col = next((c for c in TEXT_COLUMNS if c in columns), None)
    pair = next((p for p in PROMPT_PAIRS if p[0] in columns and p[1] in columns), None)
    shape = _preference_shape(rows)
    plain_completion = {"prompt", "completion"} <= set(columns)
    if shape is None and text_col is None and pair is None and plain_completion:
        # Prompt/completion rows under their canonical names: GRPO's prompts with
        # reference answers, or completion data for supervised training, read as is.
        shape = "completion"
    if shape in PREFERENCE_SHAPES:
        # Pairs, marked answers or bare prompts: read through their shape, never as text.
        text_col, pair = None, None
    elif shape is None and text_col is None and pair is None:
        raise DatasetFormatError(
            f"'{path.name}' has columns {columns} but no text. Fix: add a 'text' column "
            "(or prompt/response, instruction/output)."
        )
    label_col = next((c for c in LABEL_COLUMNS if c in columns), None)
    labels: list[str] = []
    if shape is not None:
        label_col = None  # KTO's desirable flag is not a class label
    if label_col is not None:
        labels = sorted({str(r[label_col]) for r in rows if r.get(label_col) not in (None, "")})
        if not labels:
            label_col = None
    return DatasetInfo(
        dataset_id=dataset_id or str(path),
        path=path.resolve(),
        format=fmt,
        num_rows=len(rows),
        columns=columns,
        text_column=text_col,
        label_column=label_col,
        labels=labels if label_col else [],
        prompt_columns=pair,
        description=description,
        shape=shape,
    )


def _preference_shape(rows: list[dict[str, Any]]) -> str | None:
    """The preference shape of rows that have one (pairs, KTO's marked answers, prompts
    alone), else None: those rows are read by their shape's columns, not as text."""
    try:
        shape = detect_shape(rows)
    except DatasetFormatError:
        return None
    return shape if shape in PREFERENCE_SHAPES else None


class DatasetRegistry:
    """Named datasets: the bundled demos plus files a user registers."""

    def __init__(self, sessions: sessionmaker[Any]) -> None:
        self._sessions = sessions

    def register(self, name: str, path: str | Path, description: str = "") -> DatasetInfo:
        """Record `name` for `path` after checking the file is usable training data."""
        name = name.strip()
        if not name:
            raise ValueError("dataset name is empty. Fix: give a short name.")
        if name in BUNDLED:
            raise ValueError(f"'{name}' is a bundled dataset. Fix: choose another name.")
        if len(name) > 200:
            raise ValueError("dataset name is over 200 characters. Fix: use a shorter name.")
        if len(description) > 1000:
            raise ValueError("description is over 1000 characters. Fix: shorten it.")
        info = inspect_file(Path(path).expanduser(), name, description)
        with self._sessions.begin() as session:
            session.merge(
                DatasetRecord(
                    name=name, path=str(info.path), format=info.format, description=description
                )
            )
        return info

    def get(self, dataset_id: str) -> DatasetInfo:
        """Info for a registered name, a bundled demo, or a direct file path."""
        if dataset_id in BUNDLED:
            filename, description, shape = BUNDLED[dataset_id]
            info = inspect_file(bundled_path(filename), dataset_id, description)
            # Without a shape, instruction/input/output would be read as a prompt/response
            # pair and the input dropped; the chat-template rendering needs "instruction".
            return replace(info, shape=shape) if shape else info
        with self._sessions() as session:
            record = session.get(DatasetRecord, dataset_id)
        if record is not None:
            if not Path(record.path).is_file():
                raise DatasetNotFoundError(
                    f"Dataset '{dataset_id}' is registered for {record.path}, which does not "
                    f"exist any more. Fix: put the file back, or register it again "
                    f"(`flextrain datasets add FILE --name {dataset_id}`)."
                )
            return inspect_file(Path(record.path), dataset_id, record.description)
        path = Path(dataset_id).expanduser()
        if looks_like_path(dataset_id) and path.is_file():
            return inspect_file(path, dataset_id)
        raise not_registered(dataset_id, self.names())

    def names(self) -> list[str]:
        with self._sessions() as session:
            registered = session.scalars(select(DatasetRecord.name)).all()
        return [*BUNDLED, *sorted(registered)]

    def describe_all(self) -> list[dict[str, Any]]:
        out = []
        for name in self.names():
            try:
                out.append(self.get(name).to_dict())
            except (DatasetNotFoundError, DatasetFormatError) as exc:
                out.append({"dataset_id": name, "error": str(exc)})
        return out
