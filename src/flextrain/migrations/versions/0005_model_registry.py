"""Model registry: names for local model folders, and the lineage of trained models.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "models",
        sa.Column("name", sa.String(length=200), nullable=False),
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
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_index("ix_models_job_id", "models", ["job_id"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_models_job_id", table_name="models")
    op.drop_table("models")
