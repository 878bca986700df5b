"""Immutable dataset versions: canonical content on disk, named by its SHA-256.

A registered file is read, mapped to its shape's canonical fields and written
once as JSON lines (sorted keys, UTF-8, one record per line). The version is
the SHA-256 of exactly those bytes, so identical content is the same version
whatever the source format or column names, and changed content is a new one.
The file is written to a temporary name and renamed into place: a version
folder is either complete or absent.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sqlalchemy import DateTime, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from flextrain.db import Base

CANONICAL_FILE = "data.jsonl"
MANIFEST_FILE = "manifest.json"


class DatasetVersionRecord(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (UniqueConstraint("dataset_id", "version", name="uq_dataset_version"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    dataset_id: Mapped[str] = mapped_column(
        String(200), ForeignKey("datasets.name", ondelete="CASCADE"), index=True
    )
    version: Mapped[str] = mapped_column(String(64))
    shape: Mapped[str] = mapped_column(String(16))
    source_format: Mapped[str] = mapped_column(String(16))
    source_name: Mapped[str] = mapped_column(String(500))
    path: Mapped[str] = mapped_column(String(2000))
    columns_json: Mapped[str] = mapped_column(Text)
    mapping_json: Mapped[str] = mapped_column(Text)
    num_rows: Mapped[int] = mapped_column(Integer)
    size_bytes: Mapped[int] = mapped_column(Integer)
    owner: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), default=lambda: datetime.now(UTC)
    )


def canonical_bytes(records: Iterable[dict[str, Any]]) -> bytes:
    """The one byte form of a dataset's content that its version hashes."""
    lines = (
        json.dumps(r, sort_keys=True, ensure_ascii=False, separators=(",", ":")) for r in records
    )
    return "".join(line + "\n" for line in lines).encode("utf-8")


def content_version(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def dataset_folder(root: Path, dataset_id: str) -> Path:
    """A folder per dataset id that no id can escape: '/' and '..' are quoted away."""
    return root / quote(dataset_id, safe="")


def write_version(folder: Path, content: bytes, manifest: dict[str, Any]) -> Path:
    """Write `content` as the version's canonical file (atomically); return its path.

    An existing version folder is left as it is: same name, same bytes.
    """
    target = folder / CANONICAL_FILE
    if target.is_file():
        return target
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder.parent))
    try:
        (staging / CANONICAL_FILE).write_bytes(content)
        (staging / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        try:
            os.replace(staging, folder)
        except OSError:  # another process stored the same version first
            if not target.is_file():
                raise
    finally:
        if staging.exists():
            for child in staging.iterdir():
                child.unlink()
            staging.rmdir()
    return target


def read_canonical(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
