"""Free disk space, read in one place.

Every decision about disk space (refusing a job that cannot fit its checkpoints,
pausing a run before a checkpoint that would not fit, a pull into the model cache)
reads it here, so that they agree on what "free" means: the space of the filesystem
that holds `path`, or, for a folder not created yet, of its nearest existing parent.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

_MIB = 1024**2
_GIB = 1024**3


def existing_parent(path: Path) -> Path:
    """`path` or its nearest ancestor that exists: where a folder about to be created
    will take its space from."""
    probe = Path(path)
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    return probe


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`."""
    return shutil.disk_usage(existing_parent(path)).free


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under `folder` (0 when it does not exist)."""
    total = 0
    for root, _dirs, files in os.walk(folder):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue  # removed while walking (a rotation)
    return total


def files_bytes(folder: Path, patterns: tuple[str, ...]) -> int:
    """Bytes of the files directly in `folder` that match any of `patterns` (globs)."""
    found = {p for pattern in patterns for p in Path(folder).glob(pattern) if p.is_file()}
    return sum(p.stat().st_size for p in found)


def describe_bytes(n: float) -> str:
    """Bytes as a reader wants them: GB above one, MB below."""
    return f"{n / _GIB:.2f} GB" if n >= _GIB else f"{n / _MIB:.1f} MB"
