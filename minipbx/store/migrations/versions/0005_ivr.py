"""Auto attendant (IVR): menus and their keys.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from minipbx.store.coltypes import UTCDateTime

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``ivr_menus`` and ``ivr_options`` (menus change with ``dial_plans_version``)."""
    op.create_table(
        "ivr_menus",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("greeting", sa.Text(), nullable=False),
        sa.Column("dial_by_extension", sa.Boolean(), nullable=False),
        sa.Column("max_digits", sa.Integer(), nullable=False),
        sa.Column("timeout_seconds", sa.Double(), nullable=False),
        sa.Column("digit_timeout_seconds", sa.Double(), nullable=False),
        sa.Column("retries", sa.Integer(), nullable=False),
        sa.Column("invalid_prompt", sa.String(64), nullable=False),
        sa.Column("timeout_action", sa.String(16), nullable=False),
        sa.Column("timeout_target", sa.String(255), nullable=False),
        sa.Column("hours", sa.Text(), nullable=False),
        sa.Column("after_hours_menu", sa.String(64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"],
            ["tenants.id"],
            name=op.f("fk_ivr_menus_tenant_id_tenants"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_ivr_menus_tenant_id_name")),
    )
    op.create_table(
        "ivr_options",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("menu_id", sa.Integer(), nullable=False),
        sa.Column("key", sa.String(1), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.ForeignKeyConstraint(
            ["menu_id"],
            ["ivr_menus.id"],
            name=op.f("fk_ivr_options_menu_id_ivr_menus"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("menu_id", "key", name=op.f("uq_ivr_options_menu_id_key")),
    )


def downgrade() -> None:
    """Drop the attendant's tables."""
    op.drop_table("ivr_options")
    op.drop_table("ivr_menus")
