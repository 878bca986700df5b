"""Where a cluster executor placed a job: the executor's name and the cluster's job id.

A job handed to Slurm or Ray waits in that cluster's queue; the id is what `squeue`,
`scancel` or the Ray Jobs API know it by, and what keeps flextrain's own scheduler
from starting it a second time.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("executor", sa.String(32), nullable=True))
        batch.add_column(sa.Column("cluster_job_id", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("cluster_job_id")
        batch.drop_column("executor")
