"""Pydantic's validation errors in the words of a config file: one line per field.

Pydantic locates an error in a union by the member that was tried, so a bad
`batch_size` comes back twice, as `batch_size.int` and `batch_size.literal['auto']`.
A user wrote `batch_size`; these helpers drop the member tags and join what each
member expected into one message for the field.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

# Union members and validator wrappers as pydantic names them inside a `loc`.
_MEMBER_TAG = re.compile(
    r"^(int|float|str|bool|bytes|none|list\[.*\]|dict\[.*\]|tuple\[.*\]|set\[.*\]"
    r"|literal\[.*\]|function-(after|before|wrap|plain)\[.*\]|is-instance\[.*\]"
    r"|json-or-python\[.*\]|lax-or-strict\[.*\]|chain\[.*\]|constrained-.*)$"
)
_SECTIONS = ("body", "query", "path", "header", "cookie")


def field_path(loc: Sequence[Any], default: str = "config") -> str:
    """`loss.class_weights.pos` from a pydantic `loc`, without union member tags (and
    without FastAPI's leading `body`); `default` for an error about the whole input."""
    parts = [str(p) for p in loc]
    if parts and parts[0] in _SECTIONS:
        parts = parts[1:]
    kept = [p for p in parts if not _MEMBER_TAG.match(p)]
    return ".".join(kept) or default


def _expected(error: Mapping[str, Any]) -> str:
    message = str(error.get("msg", "invalid")).partition(", unable to")[0]
    return message.removeprefix("Input should be ").removeprefix("Value error, ")


def field_messages(errors: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(field, message) per field in order of first appearance; a union's members are
    one message: "'foo' is not valid: a valid integer, or 'auto'"."""
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for error in errors:
        grouped.setdefault(field_path(error.get("loc", ())), []).append(error)
    result = []
    for field, group in grouped.items():
        if len(group) == 1:
            result.append((field, str(group[0].get("msg", "invalid"))))
            continue
        given = group[0].get("input")
        shown = repr(given) if isinstance(given, str | int | float | bool) else "the value"
        wanted = " or ".join(dict.fromkeys(_expected(e) for e in group))
        result.append((field, f"{shown} is not valid: it should be {wanted}."))
    return result
