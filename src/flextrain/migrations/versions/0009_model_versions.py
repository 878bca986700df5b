"""Model versions: a registered name keeps numbered versions, each with a config hash.

The models table's key becomes (name, version). The table is rebuilt rather than
altered, since SQLite cannot change a primary key in place; every registration
made before becomes version 1 of its name.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns both layouts share, in order.
_SHARED = (
    "name, path, source, adapter, architecture, model_type, num_parameters, size_bytes, "
    "training_types, base_model, job_id, dataset_id, dataset_version, config, metrics, "
    "owner, description, created_at"
)


def _models_table(name: str, *, versioned: bool) -> None:
    extra: list[sa.Column[object]] = []
    key = ["name"]
    if versioned:
        extra = [
            sa.Column("version", sa.Integer(), nullable=False),
            sa.Column("config_hash", sa.String(length=64), nullable=True),
        ]
        key = ["name", "version"]
    op.create_table(
        name,
        sa.Column("name", sa.String(length=200), nullable=False),
        *extra,
        sa.Column("path", sa.String(length=2000), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("adapter", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("architecture", sa.String(length=200), nullable=True),
        sa.Column("model_type", sa.String(length=64), nullable=True),
        sa.Column("num_parameters", sa.BigInteger(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("training_types", sa.JSON(), nullable=False),
        sa.Column("base_model", sa.String(length=500), nullable=True),
        sa.Column("job_id", sa.String(length=32), nullable=True),
        sa.Column("dataset_id", sa.String(length=500), nullable=True),
        sa.Column("dataset_version", sa.String(length=64), nullable=True),
        sa.Column("config", sa.JSON(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        # Named by layout, not by the table's passing name: PostgreSQL keeps a key's name
        # through a rename, and a name used twice would clash on the way back.
        sa.PrimaryKeyConstraint(*key, name="pk_model_versions" if versioned else "pk_models"),
    )


def _swap(*, versioned: bool, copy: str) -> None:
    """Build the other layout beside the table, copy the rows, and put it in its place."""
    _models_table("models_next", versioned=versioned)
    op.execute(copy)
    op.drop_index("ix_models_job_id", table_name="models")
    op.drop_table("models")
    op.rename_table("models_next", "models")
    op.create_index("ix_models_job_id", "models", ["job_id"], unique=False)


def upgrade() -> None:
    _swap(
        versioned=True,
        copy=(f"INSERT INTO models_next (version, {_SHARED}) SELECT 1, {_SHARED} FROM models"),
    )


def downgrade() -> None:
    # Only the latest version of each name fits the old layout.
    _swap(
        versioned=False,
        copy=(
            f"INSERT INTO models_next ({_SHARED}) SELECT {_SHARED} FROM models AS m "
            "WHERE m.version = (SELECT max(v.version) FROM models AS v WHERE v.name = m.name)"
        ),
    )
