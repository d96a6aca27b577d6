"""Tenant quotas: users, concurrent calls, call length, free tier.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

_COLUMNS = ("max_users", "max_concurrent_calls", "max_call_seconds")


def upgrade() -> None:
    """Add the quota columns to ``tenants`` (no limit for existing tenants)."""
    with op.batch_alter_table("tenants") as batch:
        for name in _COLUMNS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch.add_column(
            sa.Column("free_account", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    """Drop the quota columns."""
    with op.batch_alter_table("tenants") as batch:
        batch.drop_column("free_account")
        for name in reversed(_COLUMNS):
            batch.drop_column(name)
