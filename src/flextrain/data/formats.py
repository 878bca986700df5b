"""Read a dataset source (a file or a folder) into plain records.

Every format ends as `list[dict]`, so shape detection and checks never care
where the data came from. A line-based source (JSONL, CSV) is read to the end:
every line that cannot be a record is kept as an unreadable line with its
number and the fix, and the checks list them with the row errors in one pass.
An error that leaves nothing to read on (bad UTF-8, broken CSV quoting, a JSON
document that does not parse) names the line or byte where reading stopped: a
user with 50,000 rows cannot hunt for the one bad line by eye.

`datasets`/`pyarrow` are imported only inside the Parquet and saved-folder
readers: they are heavy, and most sources are JSONL or CSV.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from flextrain.data.registry import DatasetFormatError, DatasetNotFoundError

SourceFormat = Literal["jsonl", "json", "csv", "parquet", "text", "text_folder", "hf_disk"]
SOURCE_FORMATS: tuple[SourceFormat, ...] = get_args(SourceFormat)

_SUFFIXES: dict[str, SourceFormat] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "csv",
    ".parquet": "parquet",
    ".txt": "text",
    ".text": "text",
    ".md": "text",
}
TEXT_FOLDER_SUFFIXES = (".txt", ".text", ".md")
# Files `Dataset.save_to_disk` / `DatasetDict.save_to_disk` always write.
_HF_DATASET_MARKERS = ("dataset_info.json", "state.json")
_HF_DICT_MARKER = "dataset_dict.json"
_BOM = b"\xef\xbb\xbf"


def detect_source_format(path: Path) -> SourceFormat:
    """The format of `path`: by suffix for a file, by contents for a folder."""
    if path.is_dir():
        if _is_hf_save(path):
            return "hf_disk"
        return "text_folder"
    try:
        return _SUFFIXES[path.suffix.lower()]
    except KeyError:
        suffix = path.suffix or "(no suffix)"
        raise DatasetFormatError(
            f"'{path.name}' has an unsupported suffix {suffix}. Fix: use one of "
            f"{', '.join(_SUFFIXES)}, a folder of .txt/.md files, or a folder saved "
            "with datasets' save_to_disk."
        ) from None


@dataclass(frozen=True)
class UnreadableLine:
    """A line of a line-based source that is not a record; `message` follows
    "line N", e.g. "is not valid JSON (...). Fix: ..."."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line} {self.message}"


@dataclass
class SourceRecords:
    """What a source holds: its records, the source line of each (JSONL, CSV and text;
    None for other formats), and the lines that could not be read as records."""

    records: list[dict[str, Any]]
    lines: list[int] | None = None
    unreadable: list[UnreadableLine] = field(default_factory=list)


SHOWN_LINES = 50


def unreadable_message(name: str, unreadable: list[UnreadableLine]) -> str:
    """Every unreadable line (the first SHOWN_LINES), for an error."""
    if len(unreadable) == 1:
        return f"'{name}' {unreadable[0]}"
    shown = "\n".join(f"  - {u}" for u in unreadable[:SHOWN_LINES])
    more = len(unreadable) - SHOWN_LINES
    tail = f"\n  … and {more} more" if more > 0 else ""
    return f"'{name}' has {len(unreadable)} lines that are not records:\n{shown}{tail}"


def read_records(path: Path, fmt: SourceFormat | None = None) -> list[dict[str, Any]]:
    """Every record of the source as a dict; `fmt` overrides detection. Any unreadable
    line is an error (listing every one); `read_source` returns them instead."""
    source = read_source(path, fmt)
    if source.unreadable:
        raise DatasetFormatError(unreadable_message(path.name, source.unreadable))
    return source.records


def read_source(path: Path, fmt: SourceFormat | None = None) -> SourceRecords:
    """The records of the source and its unreadable lines; `fmt` overrides detection."""
    if not path.exists():
        raise DatasetNotFoundError(f"Dataset source '{path}' does not exist.")
    fmt = fmt or detect_source_format(path)
    if fmt not in SOURCE_FORMATS:
        raise DatasetFormatError(
            f"Unknown format '{fmt}'. Fix: use one of {', '.join(SOURCE_FORMATS)}."
        )
    is_folder_format = fmt in ("text_folder", "hf_disk")
    if is_folder_format != path.is_dir():
        kind = "a folder" if is_folder_format else "a file"
        raise DatasetFormatError(
            f"Format '{fmt}' needs {kind}, but '{path}' is not one. "
            "Fix: leave the format out so it is detected, or point at the right path."
        )
    if fmt == "text_folder":
        source = SourceRecords(_read_text_folder(path))
    elif fmt == "hf_disk":
        source = SourceRecords(_read_hf_disk(path))
    elif fmt == "parquet":
        source = SourceRecords(_read_parquet(path))
    else:
        text = _decode(path)
        if fmt == "text":
            numbered = [(n, line) for n, line in enumerate(text.splitlines(), 1) if line.strip()]
            source = SourceRecords(
                [{"text": line} for _, line in numbered], [n for n, _ in numbered]
            )
        elif fmt == "jsonl":
            source = _parse_jsonl(text)
        elif fmt == "json":
            source = SourceRecords(_parse_json(text, path.name))
        else:
            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            source = _parse_csv(text, path.name, delimiter)
    if not source.records and not source.unreadable:
        thing = "folder" if path.is_dir() else "file"
        raise DatasetFormatError(
            f"'{path.name}' has no records. Fix: add at least one example, or check that "
            f"this is the right {thing}.",
            field="file",
            fix=f"add at least one example, or check that this is the right {thing}.",
        )
    return source


def _decode(path: Path) -> str:
    """UTF-8 text (a leading BOM dropped), or an error naming the first bad byte."""
    data = path.read_bytes()
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = exc.start + skip
        line = data.count(b"\n", 0, offset) + 1
        raise DatasetFormatError(
            f"'{path.name}' is not UTF-8 text: byte offset {offset} (line {line}) is "
            f"{data[offset : offset + 1]!r}. Fix: re-save the file as UTF-8 (for example "
            "'iconv -f latin1 -t utf-8')."
        ) from None


class _BadJSON(ValueError):
    """Parsable JSON that cannot be records; the message follows the file's name."""


def _loads(text: str) -> Any:
    """`json.loads`, refusing two things it lets through that fail later as a crash:
    nesting deeper than the parser's recursion limit (RecursionError) and a lone
    \\uD800-\\uDFFF escape, which decodes to a str UTF-8 cannot encode."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise _BadJSON(
            "nests lists or objects too deeply to read. Fix: records are flat objects, "
            'like {"text": "..."}.'
        ) from None
    if "\\u" in text and has_unencodable_text(value):
        raise _BadJSON(
            "holds a \\uD800-\\uDFFF escape that is not part of a surrogate pair (not "
            "valid Unicode). Fix: re-save the file as UTF-8 text; a character outside the "
            "basic plane is written as a pair, like \\ud83d\\ude00."
        )
    return value


def has_unencodable_text(value: Any) -> bool:
    """Whether a str anywhere in decoded JSON (keys included) cannot be UTF-8 encoded: a
    lone surrogate escape, which would fail later at a database or a file write."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            try:
                item.encode("utf-8")
            except UnicodeEncodeError:
                return True
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


def _parse_jsonl(text: str) -> SourceRecords:
    """Every line, to the end: a bad line is noted and reading goes on."""
    source = SourceRecords([], [])
    assert source.lines is not None
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            value = _loads(line)
        except json.JSONDecodeError as exc:
            source.unreadable.append(
                UnreadableLine(
                    number,
                    f"is not valid JSON ({exc.msg}, column {exc.colno}). "
                    "Fix: one complete JSON object per line.",
                )
            )
            continue
        except _BadJSON as exc:
            source.unreadable.append(UnreadableLine(number, str(exc)))
            continue
        if not isinstance(value, dict):
            source.unreadable.append(
                UnreadableLine(
                    number,
                    f"is a {_json_type(value)}, not an object. Fix: one JSON object per "
                    'line, like {"text": "..."}.',
                )
            )
            continue
        source.records.append(value)
        source.lines.append(number)
    return source


def _parse_json(text: str, name: str) -> list[dict[str, Any]]:
    try:
        data = _loads(text)
    except _BadJSON as exc:
        raise DatasetFormatError(f"'{name}' {exc}") from None
    except json.JSONDecodeError as exc:
        fix = "Fix: a JSON list of objects."
        if exc.msg == "Extra data":
            fix = "Fix: it looks like one object per line; rename the file to .jsonl."
        raise DatasetFormatError(
            f"'{name}' is not valid JSON (line {exc.lineno}, column {exc.colno}: {exc.msg}). {fix}"
        ) from None
    if isinstance(data, dict):
        data = _unwrap_json_object(data, name)
    if not isinstance(data, list):
        raise DatasetFormatError(
            f"'{name}' holds a {_json_type(data)}. Fix: a JSON list of objects, "
            '{"data": [...]}, or an object of equal-length column lists.'
        )
    for number, value in enumerate(data, 1):
        if not isinstance(value, dict):
            raise DatasetFormatError(
                f"'{name}' record {number} is a {_json_type(value)}, not an object. "
                'Fix: every record an object, like {"text": "..."}.'
            )
    return data


def _unwrap_json_object(data: dict[str, Any], name: str) -> list[Any]:
    """Records from {"data": [...]} or from columns {"text": [...], "label": [...]}."""
    inner = data.get("data")
    if isinstance(inner, list) and (len(data) == 1 or all(isinstance(r, dict) for r in inner)):
        return inner
    if not data or not all(isinstance(v, list) for v in data.values()):
        raise DatasetFormatError(
            f"'{name}' holds a single object, not records. Fix: a JSON list of objects, "
            '{"data": [...]}, or an object whose values are equal-length column lists.'
        )
    lengths = {column: len(values) for column, values in data.items()}
    if len(set(lengths.values())) > 1:
        raise DatasetFormatError(
            f"'{name}' has columns of different lengths ({lengths}). Fix: give every "
            "column one value per record."
        )
    columns = list(data)
    return [dict(zip(columns, values, strict=True)) for values in zip(*data.values(), strict=True)]


def _parse_csv(text: str, name: str, delimiter: str) -> SourceRecords:
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    source = SourceRecords([], [])
    assert source.lines is not None
    try:
        header = next(reader, None)
        if header is None:
            return source
        repeated = sorted({c for c in header if header.count(c) > 1})
        if repeated:
            raise DatasetFormatError(
                f"'{name}' header repeats column(s) {repeated}. Fix: give every column "
                "its own name."
            )
        start = reader.line_num + 1  # a quoted value may span lines: a row's first line
        for values in reader:
            number, start = start, reader.line_num + 1
            if not values:
                continue  # csv yields [] for a blank line
            if len(values) > len(header):
                source.unreadable.append(
                    UnreadableLine(
                        number,
                        f"has {len(values)} fields but the header has {len(header)}. Fix: "
                        'quote values that contain the delimiter ("a, b") or remove the '
                        "extra fields.",
                    )
                )
                continue
            # A short row leaves the missing columns None, which the checks report.
            source.records.append(dict(zip(header, [*values, *[None] * len(header)], strict=False)))
            source.lines.append(number)
        return source
    except csv.Error as exc:
        raise DatasetFormatError(
            f"'{name}' is not valid CSV at line {reader.line_num} ({exc}). Fix: check the "
            "quoting there; very long texts are easier as JSONL."
        ) from None


def _read_text_folder(path: Path) -> list[dict[str, Any]]:
    files = sorted(
        p
        for p in path.iterdir()
        if p.is_file() and p.suffix.lower() in TEXT_FOLDER_SUFFIXES and not p.name.startswith(".")
    )
    return [{"text": _decode(file), "source": file.name} for file in files]


def _is_hf_save(path: Path) -> bool:
    return any((path / marker).is_file() for marker in (*_HF_DATASET_MARKERS, _HF_DICT_MARKER))


def _read_hf_disk(path: Path) -> list[dict[str, Any]]:
    """A folder from `save_to_disk`; of a DatasetDict, its train split."""
    if not _is_hf_save(path):
        raise DatasetFormatError(
            f"'{path}' is not a saved `datasets` folder (no dataset_info.json, state.json "
            "or dataset_dict.json). Fix: save it with Dataset.save_to_disk, or use a "
            "folder of .txt/.md files."
        )
    from datasets import DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(str(path))
    except (OSError, ValueError) as exc:
        raise DatasetFormatError(
            f"'{path}' could not be loaded as a saved `datasets` folder ({exc}). "
            "Fix: save it again with save_to_disk."
        ) from None
    if isinstance(loaded, DatasetDict):
        splits = list(loaded)
        if "train" in loaded:
            loaded = loaded["train"]
        elif len(splits) == 1:
            loaded = loaded[splits[0]]
        else:
            raise DatasetFormatError(
                f"'{path}' is a DatasetDict with splits {splits} and no 'train'. "
                "Fix: point at one split's folder, or name a split 'train'."
            )
    records: list[dict[str, Any]] = loaded.to_list()
    return records


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    # pyarrow ships no type information.
    import pyarrow as pa  # type: ignore[import-untyped]
    import pyarrow.parquet as pq  # type: ignore[import-untyped]

    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError) as exc:
        raise DatasetFormatError(
            f"'{path.name}' is not a readable Parquet file ({exc}). Fix: write it again "
            "with pandas.to_parquet or Dataset.to_parquet."
        ) from None
    records: list[dict[str, Any]] = table.to_pylist()
    return records


def _json_type(value: Any) -> str:
    names = {list: "list", dict: "object", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")
