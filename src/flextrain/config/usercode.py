"""References to user code (`module:name` in a folder the user names), checked without
running them.

Validation runs in the API server and the CLI, where importing a user's module would
execute it; so a reference is checked by reading the file: it exists under code_dir,
parses, and defines the name at top level. Only the training worker imports it. The
digest of the referenced files goes into the audit log, so what ran can be told apart
from what was edited later.
"""

from __future__ import annotations

import ast
import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

_REF = re.compile(r"^(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)(?::|\.)(?P<name>[A-Za-z_]\w*)$")


@dataclass(frozen=True)
class Reference:
    """`module:name` split, with the file it lives in under code_dir."""

    text: str
    module: str
    name: str

    def file_in(self, code_dir: Path) -> Path:
        base = code_dir.joinpath(*self.module.split("."))
        package = base / "__init__.py"
        return package if package.is_file() else base.with_suffix(".py")


def parse_reference(text: str) -> Reference:
    """`pkg.module:name` (or `pkg.module.name`); ValueError saying the expected form."""
    if ":" in text:
        module, _, name = text.partition(":")
        text_norm = f"{module}:{name}"
    else:
        module, _, name = text.rpartition(".")
        text_norm = text
    if not module or not _REF.match(f"{module}:{name}"):
        raise ValueError(
            f"'{text}' is not a reference to user code; write it as module:name, e.g. "
            "my_losses:focal_plus (the file my_losses.py in code_dir)."
        )
    return Reference(text=text_norm, module=module, name=name)


def check_reference(text: str, code_dir: str | Path | None) -> str | None:
    """What is wrong with this reference, in words, or None when it looks loadable."""
    try:
        ref = parse_reference(text)
    except ValueError as exc:
        return str(exc)
    if code_dir is None:
        return f"'{text}' names user code but code_dir is not set (the folder it is in)."
    folder = Path(code_dir).expanduser()
    if not folder.is_dir():
        return f"code_dir '{code_dir}' is not a folder."
    path = ref.file_in(folder)
    if not path.is_file():
        return f"'{text}': no file {path.relative_to(folder)} in code_dir {folder}."
    try:
        tree = ast.parse(path.read_text(), filename=str(path))
    except SyntaxError as exc:
        return f"'{text}': {path.name} line {exc.lineno}: syntax error: {exc.msg}."
    if ref.name not in _top_level_names(tree):
        return f"'{text}': {path.name} defines no top-level '{ref.name}'."
    return None


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.ImportFrom | ast.Import):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return names


def code_digest(refs: list[str], code_dir: str | Path | None) -> dict[str, str]:
    """SHA-256 of each referenced file (relative path -> hex), for the audit log."""
    if code_dir is None:
        return {}
    folder = Path(code_dir).expanduser()
    out: dict[str, str] = {}
    for text in refs:
        try:
            path = parse_reference(text).file_in(folder)
            out[str(path.relative_to(folder))] = hashlib.sha256(path.read_bytes()).hexdigest()
        except (ValueError, OSError):
            continue
    return dict(sorted(out.items()))
