"""Loading and calling user code in the training worker.

A reference `module:name` is imported from the job's code_dir (put first on sys.path,
so the user's module wins over an installed one of the same name). An exception
raised inside user code becomes UserCodeError whose message names the reference and
the user's own file and line: the job fails with something the user can act on, and
the full traceback stays in the job's log.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from flextrain.config.usercode import parse_reference
from flextrain.errors import InvalidInputError

T = TypeVar("T")


class UserCodeError(InvalidInputError, RuntimeError):
    """User code failed to load or raised; the message points into the user's file."""

    code = "user_code"


def load(text: str, code_dir: str | Path | None) -> Any:
    """The object `module:name` refers to, imported from code_dir."""
    ref = parse_reference(text)
    if code_dir is not None:
        folder = str(Path(code_dir).expanduser().resolve())
        if folder not in sys.path:
            sys.path.insert(0, folder)
    try:
        module = importlib.import_module(ref.module)
    except Exception as exc:
        raise UserCodeError(
            f"{text}: importing {ref.module} failed: {describe(exc, code_dir)}"
        ) from exc
    try:
        return getattr(module, ref.name)
    except AttributeError:
        raise UserCodeError(f"{text}: module {ref.module} has no '{ref.name}'.") from None


def call(text: str, code_dir: str | Path | None, fn: Callable[..., T], *args: Any, **kw: Any) -> T:
    """fn(*args, **kw), with an exception raised in user code told as UserCodeError."""
    try:
        return fn(*args, **kw)
    except UserCodeError:
        raise
    except Exception as exc:
        raise UserCodeError(f"{text} raised {describe(exc, code_dir)}") from exc


def describe(exc: BaseException, code_dir: str | Path | None) -> str:
    """`Type: message (file.py line N, in function)` at the deepest frame of user code."""
    frames = traceback.extract_tb(exc.__traceback__)
    folder = str(Path(code_dir).expanduser().resolve()) if code_dir is not None else None
    mine = [f for f in frames if folder and str(Path(f.filename).resolve()).startswith(folder)]
    detail = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, SyntaxError) and exc.filename:
        return f"{detail} ({Path(exc.filename).name} line {exc.lineno})"
    if mine:
        last = mine[-1]
        return f"{detail} ({Path(last.filename).name} line {last.lineno}, in {last.name})"
    return detail
