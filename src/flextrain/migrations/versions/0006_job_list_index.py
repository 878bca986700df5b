"""Index on jobs (created_at, job_id): the order of every job list.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_jobs_created_at_job_id", "jobs", ["created_at", "job_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_created_at_job_id", table_name="jobs")
