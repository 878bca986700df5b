"""YAML config text read safely: bounded in size and depth, and without aliases.

PyYAML composes nested collections recursively, so a few kilobytes of `[[[[...` raise
RecursionError deep in the parser (a 500 and thousands of log lines on the server);
and an alias (`*a`) repeats a collection without copying it, so a small document can
stand for billions of values once it is stored as JSON. The text is first scanned
token by token (the scanner does not recurse) to measure both, then loaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from flextrain.errors import InvalidInputError

MAX_DEPTH = 32
MAX_CHARS = 1_000_000


@dataclass
class YamlTextError(InvalidInputError, ValueError):
    """Why the text is not a config; `line`/`column` count from 1 (0: not known)."""

    code = "yaml_syntax"  # not a dataclass field: it has no annotation

    problem: str
    line: int = 0
    column: int = 0

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}: " if self.line else ""
        return f"{where}{self.problem}"

    @property
    def where(self) -> str:
        return f":{self.line}:{self.column}" if self.line else ""


_OPEN = (
    yaml.BlockMappingStartToken,
    yaml.BlockSequenceStartToken,
    yaml.FlowMappingStartToken,
    yaml.FlowSequenceStartToken,
)
_CLOSE = (yaml.BlockEndToken, yaml.FlowMappingEndToken, yaml.FlowSequenceEndToken)


def load_config_text(text: str, *, max_depth: int = MAX_DEPTH, max_chars: int = MAX_CHARS) -> Any:
    """The document in `text` (None when empty); YamlTextError for a syntax error, a
    document nested deeper than `max_depth`, longer than `max_chars`, or with aliases."""
    if len(text) > max_chars:
        raise YamlTextError(f"is {len(text):,} characters, over the limit of {max_chars:,}")
    depth = 0
    try:
        for token in yaml.scan(text, Loader=yaml.SafeLoader):
            if isinstance(token, _OPEN):
                depth += 1
                if depth > max_depth:
                    mark = token.start_mark
                    raise YamlTextError(
                        f"nests deeper than {max_depth} levels", mark.line + 1, mark.column + 1
                    )
            elif isinstance(token, _CLOSE):
                depth -= 1
            elif isinstance(token, yaml.AliasToken):
                mark = token.start_mark
                raise YamlTextError(
                    "uses an alias (*name); write the value out instead",
                    mark.line + 1,
                    mark.column + 1,
                )
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        if mark is None:
            raise YamlTextError(str(problem)) from None
        raise YamlTextError(str(problem), mark.line + 1, mark.column + 1) from None
    except RecursionError:  # the scan above should have refused it first
        raise YamlTextError(f"nests deeper than {max_depth} levels") from None
