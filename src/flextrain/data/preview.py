"""The first rows of a dataset, for showing: bounded in rows and in characters.

A registered version is read line by line from its canonical JSON lines, so a
preview costs `limit` lines however large the data; a bundled demo or an older
unversioned file is read as training reads it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from itertools import islice
from typing import Any

from flextrain.data.registry import DatasetInfo, read_rows

# A preview shows rows, not documents: longer strings are cut, and counted.
MAX_VALUE_CHARS = 1000


@dataclass(frozen=True)
class Preview:
    rows: list[dict[str, Any]]
    truncated_values: int


def first_rows(info: DatasetInfo, limit: int) -> Preview:
    """Up to `limit` rows of the dataset `info` describes, long strings cut short."""
    if info.format == "jsonl":
        with info.path.open(encoding="utf-8-sig") as fh:
            lines = (line for line in fh if line.strip())
            records = [_record(line) for line in islice(lines, limit)]
    else:
        records = read_rows(info.path, info.format)[:limit]
    cut = [0]
    rows = [
        _shorten(r, cut) if isinstance(r, dict) else {"value": _shorten(r, cut)} for r in records
    ]
    return Preview(rows=rows, truncated_values=cut[0])


def _record(line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return {"unreadable line": line[:MAX_VALUE_CHARS]}


def _shorten(value: Any, cut: list[int]) -> Any:
    if isinstance(value, str) and len(value) > MAX_VALUE_CHARS:
        cut[0] += 1
        return value[:MAX_VALUE_CHARS] + "…"
    if isinstance(value, dict):
        return {k: _shorten(v, cut) for k, v in value.items()}
    if isinstance(value, list):
        return [_shorten(v, cut) for v in value]
    return value
