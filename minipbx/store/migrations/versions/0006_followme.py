"""Follow-me: a list of destinations per user and how it rings.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Add ``followme`` (the list as text), ``followme_mode`` and ``followme_own_first``."""
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("followme", sa.Text(), server_default="", nullable=False))
        batch.add_column(
            sa.Column("followme_mode", sa.String(16), server_default="off", nullable=False)
        )
        batch.add_column(
            sa.Column("followme_own_first", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    """Drop the follow-me columns."""
    with op.batch_alter_table("users") as batch:
        batch.drop_column("followme_own_first")
        batch.drop_column("followme_mode")
        batch.drop_column("followme")
