"""Call detail records and the CDR shipping cursor.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from minipbx.store.coltypes import UTCDateTime

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    """Create ``cdrs`` and ``cdr_shipments``."""
    op.create_table(
        "cdrs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("uuid", sa.String(36), nullable=False),
        sa.Column("call_id", sa.String(255), nullable=False),
        sa.Column("tenant_id", sa.Integer(), nullable=True),
        sa.Column("tenant", sa.String(255), nullable=False),
        sa.Column("caller_number", sa.String(64), nullable=False),
        sa.Column("caller_name", sa.String(255), nullable=False),
        sa.Column("called_number", sa.String(64), nullable=False),
        sa.Column("routed_number", sa.String(64), nullable=False),
        sa.Column("route_type", sa.String(16), nullable=False),
        sa.Column("trunk", sa.String(255), nullable=True),
        sa.Column("start_time", UTCDateTime(), nullable=False),
        sa.Column("answer_time", UTCDateTime(), nullable=True),
        sa.Column("end_time", UTCDateTime(), nullable=False),
        sa.Column("duration", sa.Numeric(12, 3), nullable=False),
        sa.Column("billable_seconds", sa.Integer(), nullable=False),
        sa.Column("disposition", sa.String(16), nullable=False),
        sa.Column("sip_status", sa.Integer(), nullable=False),
        sa.Column("reason_cause", sa.String(255), nullable=False),
        sa.Column("hangup_by", sa.String(16), nullable=False),
        sa.Column("cost", sa.Numeric(16, 6), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("source_ip", sa.String(64), nullable=False),
        sa.Column("user_agent", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uuid", name=op.f("uq_cdrs_uuid")),
    )
    op.create_index(op.f("ix_cdrs_end_time"), "cdrs", ["end_time"])
    op.create_index(op.f("ix_cdrs_tenant_id_end_time"), "cdrs", ["tenant_id", "end_time"])
    op.create_index(op.f("ix_cdrs_call_id"), "cdrs", ["call_id"])
    op.create_table(
        "cdr_shipments",
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("last_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("shipped", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("target"),
    )


def downgrade() -> None:
    """Drop what ``upgrade`` created."""
    op.drop_table("cdr_shipments")
    op.drop_table("cdrs")
