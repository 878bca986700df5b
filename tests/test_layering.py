"""Layering: the front ends and the pure layers never need torch or transformers.

Importing torch takes seconds and (with CUDA) hundreds of MB; the CLI, the
service and the API must start without it, and only the worker trains. What the
CLI's `--help` and `jobs list` load as a whole is checked in tests/test_startup.py.
"""

from __future__ import annotations

import os
import shutil
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
    "flextrain.public",
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


REPO = SRC.parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter on the package under `root`/src, with the repository's contracts."""
    return subprocess.run(
        [str(LINT_IMPORTS), "--config", str(REPO / "pyproject.toml"), "--no-cache"],
        cwd=REPO,  # where tools/ (the custom contract) is found
        env={**os.environ, "PYTHONPATH": str(root / "src")},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_layering_contracts_hold() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("file", "line", "broken"),
    [
        # The pure core reaching into the service layer.
        ("config/enums.py", "import flextrain.jobs.store", "The pure core"),
        # A cycle: the store imports db, and now db the store (even inside a function).
        (
            "db.py",
            "def _late():\n    import flextrain.jobs.store",
            "No module takes part in an import cycle",
        ),
        # One front end importing another.
        ("cli/queue.py", "import flextrain.api.app", "The front ends never import each other"),
        # A service module importing the facade.
        ("models/resolve.py", "import flextrain.service", "Below the facade"),
        # A front end reaching past the facade into the service layer.
        (
            "api/routes/admin.py",
            "import flextrain.jobs.store",
            "Front ends use the service layer only through the facade",
        ),
    ],
    ids=["pure-core", "cycle", "front-ends", "facade", "past-the-facade"],
)
def test_a_forbidden_import_breaks_the_contracts(
    tmp_path: Path, file: str, line: str, broken: str
) -> None:
    """In a copy of the package with one forbidden import added, lint-imports fails and
    names the contract (so `make lint` fails)."""
    copy = tmp_path / "src" / "flextrain"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "static"))
    target = copy / file
    target.write_text(target.read_text() + "\n\n" + line + "\n")
    result = _lint_imports(tmp_path)
    assert result.returncode != 0, result.stdout
    assert f"{broken}" in result.stdout, result.stdout
    assert "BROKEN" in result.stdout, result.stdout
