"""CDR billing details; a per-user longest voicemail message.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None

# Lengths as in minipbx.store.models (PREFIX_LEN, CARD_NUMBER_LEN) when this was written.
_PREFIX_LEN = 32
_CARD_NUMBER_LEN = 32


def upgrade() -> None:
    """Add the rate, fee, price, billed seconds and card of a priced call to ``cdrs`` and
    ``voicemail_max_seconds`` to ``users`` (all NULL for existing rows)."""
    with op.batch_alter_table("cdrs") as batch:
        batch.add_column(sa.Column("rate_prefix", sa.String(_PREFIX_LEN), nullable=True))
        batch.add_column(sa.Column("connection_fee", sa.Numeric(16, 6), nullable=True))
        batch.add_column(sa.Column("price_per_minute", sa.Numeric(16, 6), nullable=True))
        batch.add_column(sa.Column("billed_seconds", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("card_number", sa.String(_CARD_NUMBER_LEN), nullable=True))
    with op.batch_alter_table("users") as batch:
        batch.add_column(sa.Column("voicemail_max_seconds", sa.Integer(), nullable=True))


def downgrade() -> None:
    """Drop the columns again."""
    with op.batch_alter_table("users") as batch:
        batch.drop_column("voicemail_max_seconds")
    with op.batch_alter_table("cdrs") as batch:
        batch.drop_column("card_number")
        batch.drop_column("billed_seconds")
        batch.drop_column("price_per_minute")
        batch.drop_column("connection_fee")
        batch.drop_column("rate_prefix")
