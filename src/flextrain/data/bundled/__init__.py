"""Datasets shipped inside the package (demo/sentiment, demo/text, demo/instructions)."""

from __future__ import annotations

from pathlib import Path

_HERE = Path(__file__).parent


def bundled_path(name: str) -> Path:
    return _HERE / name
