"""Layering: the front ends and the pure layers never need torch or transformers.

Importing torch takes seconds and (with CUDA) hundreds of MB; the CLI, the
service and the API must start without it, and only the worker trains. What the
CLI's `--help` and `jobs list` load as a whole is checked in tests/test_startup.py.
"""

from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import flextrain

SRC = Path(flextrain.__file__).parent

_BLOCK = textwrap.dedent(
    """
    import sys

    class _Block:
        blocked = []

        def find_spec(self, name, path=None, target=None):
            root = name.split(".")[0]
            if root in ("torch", "transformers"):
                self.blocked.append(name)
                raise ImportError(f"blocked for this test: {name}")
            return None

    _block = _Block()
    sys.meta_path.insert(0, _block)
    for _name in list(sys.modules):
        if _name.split(".")[0] in ("torch", "transformers"):
            del sys.modules[_name]
    """
)

LIGHT_MODULES = [
    "flextrain",
    "flextrain.config",
    "flextrain.hardware",
    "flextrain.settings",
    "flextrain.jobs.store",
    "flextrain.jobs.process",
    "flextrain.data.registry",
    "flextrain.service",
    "flextrain.interface",
    "flextrain.cli.main",
    "flextrain.accounts.users",
    "flextrain.accounts.audit",
    "flextrain.api.app",
]


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_light_modules_import_without_torch_or_transformers() -> None:
    code = f"""
    import importlib
    for name in {LIGHT_MODULES!r}:
        importlib.import_module(name)
    from flextrain.hardware import HardwareConstraints
    hw = HardwareConstraints.detect_current()
    assert hw.cpu_cores >= 1 and hw.available_memory_gb > 0, hw
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "transformers"))
    assert not heavy, heavy
    print("OK", hw.recommended_precision)
    """
    result = _run(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("OK")


def test_the_block_really_blocks() -> None:
    """The trainer needs torch: under the block its import must fail."""
    result = _run(
        """
        try:
            import flextrain.train.runner
        except ImportError as exc:
            assert "blocked for this test" in str(exc), exc
            assert _block.blocked, "nothing was blocked"
            print("BLOCKED", _block.blocked[0])
        else:
            raise SystemExit("flextrain.train.runner imported without torch")
        """
    )
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert result.stdout.startswith("BLOCKED")
    assert result.stdout.split()[1].split(".")[0] in ("torch", "transformers")


def _flextrain_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every flextrain import in the file, relative ones made absolute."""
    # The package a relative import starts from (for __init__.py, the package itself).
    package = ".".join(path.relative_to(SRC.parent).parent.parts)
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            found.append((node.lineno, module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, m) for line, m in found if m == "flextrain" or m.startswith("flextrain.")]


@pytest.mark.parametrize("layer", ["config", "hardware"])
def test_pure_layers_import_only_themselves(layer: str) -> None:
    files = sorted((SRC / layer).rglob("*.py"))
    assert files, f"no sources found for flextrain.{layer}"
    own = f"flextrain.{layer}"
    outside = [
        f"{path.relative_to(SRC)}:{line}: {module}"
        for path in files
        for line, module in _flextrain_imports(path)
        if module != own and not module.startswith(own + ".")
    ]
    assert outside == [], outside


def test_the_import_scan_sees_imports() -> None:
    """The scan itself works: the service imports from several layers."""
    modules = {m for _, m in _flextrain_imports(SRC / "service.py")}
    assert {"flextrain.config.enums", "flextrain.hardware.detect", "flextrain.settings"} <= modules


@pytest.mark.parametrize(
    ("front_end", "forbidden"),
    [
        ("api", ("flextrain.cli", "flextrain.train", "flextrain.estimate.probe")),
        ("cli", ("flextrain.api.routes", "flextrain.train")),
        ("web", ("flextrain.",)),
    ],
)
def test_front_ends_stay_off_each_other_and_the_trainer(
    front_end: str, forbidden: tuple[str, ...]
) -> None:
    """The API and the CLI go through the service, never through each other or the
    worker's internals (`serve` builds the API app: that one import is the point)."""
    files = sorted((SRC / front_end).rglob("*.py"))
    assert files, f"no sources found for flextrain.{front_end}"
    allowed = {("cli/serve.py", "flextrain.api.app")}
    crossing = [
        f"{path.relative_to(SRC)}:{line}: {module}"
        for path in files
        for line, module in _flextrain_imports(path)
        if module.startswith(forbidden) and (str(path.relative_to(SRC)), module) not in allowed
    ]
    assert crossing == [], crossing
