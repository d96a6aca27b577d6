"""PBX data: admins, API tokens, trunks, dial plans, rates, cards, ledger, voicemail,
settings; user service settings and a tenant's default dial plan.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from alembic import op

from minipbx.store.coltypes import UTCDateTime

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_MONEY = sa.Numeric(16, 6)
_COUNTERS = ("trunks_version", "dial_plans_version", "rates_version", "settings_version")
_META = sa.table(
    "meta",
    sa.column("name", sa.String()),
    sa.column("version", sa.BigInteger()),
    sa.column("updated_at", UTCDateTime()),
)


def _id() -> sa.Column[int]:
    return sa.Column("id", sa.Integer(), nullable=False)


def _tenant_id(*, nullable: bool = False) -> sa.Column[int]:
    return sa.Column("tenant_id", sa.Integer(), nullable=nullable)


def _fk(table: str, column: str, referred: str, ondelete: str) -> sa.ForeignKeyConstraint:
    """A foreign key to ``referred.id``, named as models.NAMING_CONVENTION names it."""
    return sa.ForeignKeyConstraint(
        [column],
        [f"{referred}.id"],
        name=op.f(f"fk_{table}_{column}_{referred}"),
        ondelete=ondelete,
    )


def _stamp(name: str, *, nullable: bool = False) -> sa.Column[datetime]:
    return sa.Column(name, UTCDateTime(), nullable=nullable)


def upgrade() -> None:
    """Create the new tables, then add the new columns of ``users`` and ``tenants``."""
    _create_routing_tables()
    _create_billing_tables()
    _create_other_tables()
    _alter_users()
    with op.batch_alter_table("tenants") as batch:
        batch.add_column(sa.Column("dial_plan_id", sa.Integer(), nullable=True))
        batch.create_foreign_key(
            op.f("fk_tenants_dial_plan_id_dial_plans"),
            "dial_plans",
            ["dial_plan_id"],
            ["id"],
            ondelete="SET NULL",
        )
    now = datetime.now(UTC)
    op.bulk_insert(_META, [{"name": n, "version": 0, "updated_at": now} for n in _COUNTERS])


def _create_routing_tables() -> None:
    op.create_table(
        "dial_plans",
        _id(),
        _tenant_id(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        _stamp("created_at"),
        _stamp("updated_at"),
        _fk("dial_plans", "tenant_id", "tenants", "CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_dial_plans_tenant_id_name")),
    )
    op.create_table(
        "dial_plan_rules",
        _id(),
        sa.Column("dial_plan_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("pattern", sa.String(64), nullable=False),
        sa.Column("caller_pattern", sa.String(64), nullable=True),
        sa.Column("min_level", sa.Integer(), nullable=False),
        sa.Column("time_condition", sa.Text(), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("target", sa.String(255), nullable=False),
        sa.Column("failover_target", sa.String(255), nullable=True),
        sa.Column("strip", sa.Integer(), nullable=False),
        sa.Column("prepend", sa.String(32), nullable=False),
        sa.Column("caller_id", sa.String(64), nullable=True),
        sa.Column("reject_status", sa.Integer(), nullable=True),
        sa.Column("max_seconds", sa.Integer(), nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _fk("dial_plan_rules", "dial_plan_id", "dial_plans", "CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "dial_plan_id", "position", name=op.f("uq_dial_plan_rules_dial_plan_id_position")
        ),
    )
    op.create_table(
        "trunks",
        _id(),
        _tenant_id(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("host", sa.String(255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=True),
        sa.Column("transport", sa.String(8), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("auth_username", sa.String(255), nullable=False),
        sa.Column("password", sa.Text(), nullable=False),
        sa.Column("register", sa.Boolean(), nullable=False),
        sa.Column("register_expires", sa.Integer(), nullable=False),
        sa.Column("from_domain", sa.String(255), nullable=False),
        sa.Column("allowed_ips", sa.Text(), nullable=False),
        sa.Column("max_calls_in", sa.Integer(), nullable=True),
        sa.Column("max_calls_out", sa.Integer(), nullable=True),
        sa.Column("caller_id", sa.String(64), nullable=True),
        sa.Column("codecs", sa.String(255), nullable=False),
        sa.Column("options", sa.Text(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _stamp("created_at"),
        _stamp("updated_at"),
        _fk("trunks", "tenant_id", "tenants", "CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_trunks_tenant_id_name")),
    )


def _create_billing_tables() -> None:
    op.create_table(
        "rate_tables",
        _id(),
        _tenant_id(),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        _stamp("created_at"),
        _stamp("updated_at"),
        _fk("rate_tables", "tenant_id", "tenants", "CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_rate_tables_tenant_id_name")),
    )
    op.create_table(
        "rates",
        _id(),
        sa.Column("rate_table_id", sa.Integer(), nullable=False),
        sa.Column("prefix", sa.String(32), nullable=False),
        sa.Column("description", sa.String(255), nullable=False),
        sa.Column("connection_fee", _MONEY, nullable=False),
        sa.Column("price_per_minute", _MONEY, nullable=False),
        sa.Column("first_increment", sa.Integer(), nullable=False),
        sa.Column("next_increment", sa.Integer(), nullable=False),
        sa.Column("min_duration", sa.Integer(), nullable=False),
        sa.Column("free_seconds", sa.Integer(), nullable=False),
        _stamp("valid_from", nullable=True),
        _stamp("valid_until", nullable=True),
        _fk("rates", "rate_table_id", "rate_tables", "CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "rate_table_id",
            "prefix",
            "valid_from",
            name=op.f("uq_rates_rate_table_id_prefix_valid_from"),
        ),
    )
    op.create_table(
        "cards",
        _id(),
        _tenant_id(),
        sa.Column("number", sa.String(32), nullable=False),
        sa.Column("pin", sa.String(16), nullable=False),
        sa.Column("balance", _MONEY, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("rate_table_id", sa.Integer(), nullable=True),
        sa.Column("dial_plan_id", sa.Integer(), nullable=True),
        _stamp("expires_at", nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failed_pins", sa.Integer(), nullable=False),
        _stamp("created_at"),
        _stamp("last_used_at", nullable=True),
        _fk("cards", "tenant_id", "tenants", "CASCADE"),
        _fk("cards", "rate_table_id", "rate_tables", "SET NULL"),
        _fk("cards", "dial_plan_id", "dial_plans", "SET NULL"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "number", name=op.f("uq_cards_tenant_id_number")),
    )
    op.create_table(
        "ledger",
        _id(),
        _tenant_id(),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("card_id", sa.Integer(), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", _MONEY, nullable=False),
        sa.Column("balance_after", _MONEY, nullable=False),
        sa.Column("cdr_uuid", sa.String(36), nullable=True),
        sa.Column("note", sa.Text(), nullable=False),
        _stamp("created_at"),
        _fk("ledger", "tenant_id", "tenants", "CASCADE"),
        _fk("ledger", "user_id", "users", "SET NULL"),
        _fk("ledger", "card_id", "cards", "SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_ledger_user_id"), "ledger", ["user_id"])
    op.create_index(op.f("ix_ledger_card_id"), "ledger", ["card_id"])
    op.create_index(op.f("ix_ledger_tenant_id_created_at"), "ledger", ["tenant_id", "created_at"])


def _create_other_tables() -> None:
    op.create_table(
        "admins",
        _id(),
        sa.Column("username", sa.String(64), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=False),
        _tenant_id(nullable=True),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        _stamp("created_at"),
        _stamp("last_login_at", nullable=True),
        _fk("admins", "tenant_id", "tenants", "CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("username", name=op.f("uq_admins_username")),
    )
    op.create_table(
        "api_tokens",
        _id(),
        sa.Column("admin_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("token_hash", sa.String(128), nullable=False),
        _stamp("created_at"),
        _stamp("last_used_at", nullable=True),
        _fk("api_tokens", "admin_id", "admins", "CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )
    op.create_index(op.f("ix_api_tokens_admin_id"), "api_tokens", ["admin_id"])
    op.create_table(
        "voicemail_messages",
        _id(),
        _tenant_id(),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("folder", sa.String(16), nullable=False),
        sa.Column("caller_number", sa.String(64), nullable=False),
        sa.Column("caller_name", sa.String(255), nullable=False),
        _stamp("received_at"),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        _stamp("emailed_at", nullable=True),
        sa.Column("email_attempts", sa.Integer(), nullable=False),
        sa.Column("email_error", sa.Text(), nullable=False),
        _stamp("created_at"),
        _fk("voicemail_messages", "tenant_id", "tenants", "CASCADE"),
        _fk("voicemail_messages", "user_id", "users", "CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        op.f("ix_voicemail_messages_user_id_folder"), "voicemail_messages", ["user_id", "folder"]
    )
    op.create_table(
        "settings",
        _id(),
        _tenant_id(nullable=True),
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        _stamp("updated_at"),
        _fk("settings", "tenant_id", "tenants", "CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("tenant_id", "key", name=op.f("uq_settings_tenant_id_key")),
    )


def _user_columns() -> list[sa.Column[Any]]:
    """Service settings of users; server defaults give existing rows their values."""

    def flag(name: str, value: bool) -> sa.Column[bool]:
        default = sa.true() if value else sa.false()
        return sa.Column(name, sa.Boolean(), server_default=default, nullable=False)

    def number(name: str) -> sa.Column[str]:
        return sa.Column(name, sa.String(64), nullable=True)

    return [
        sa.Column("dial_plan_id", sa.Integer(), nullable=True),
        sa.Column("call_level", sa.Integer(), server_default="1", nullable=False),
        sa.Column("max_call_seconds", sa.Integer(), nullable=True),
        flag("free_account", False),
        sa.Column("max_concurrent_calls", sa.Integer(), nullable=True),
        flag("voicemail_enabled", True),
        sa.Column("voicemail_pin", sa.String(16), nullable=True),
        flag("voicemail_email_attach", True),
        flag("voicemail_delete_after_mail", False),
        number("forward_unconditional"),
        number("forward_busy"),
        number("forward_no_answer"),
        number("forward_unreachable"),
        sa.Column("no_answer_seconds", sa.Integer(), server_default="20", nullable=False),
        flag("prepaid", False),
        sa.Column("balance", _MONEY, server_default="0", nullable=False),
        sa.Column("credit_limit", _MONEY, server_default="0", nullable=False),
        sa.Column("currency", sa.String(3), server_default="", nullable=False),
        sa.Column("rate_table_id", sa.Integer(), nullable=True),
        sa.Column("media_relay", sa.String(8), server_default="auto", nullable=False),
    ]


_USER_FKS = (("dial_plan_id", "dial_plans"), ("rate_table_id", "rate_tables"))


def _alter_users() -> None:
    with op.batch_alter_table("users") as batch:
        for column in _user_columns():
            batch.add_column(column)
        for name, referred in _USER_FKS:
            batch.create_foreign_key(
                op.f(f"fk_users_{name}_{referred}"),
                referred,
                [name],
                ["id"],
                ondelete="SET NULL",
            )


def downgrade() -> None:
    """Drop what ``upgrade`` added."""
    op.execute(_META.delete().where(_META.c.name.in_(_COUNTERS)))
    with op.batch_alter_table("tenants") as batch:
        batch.drop_constraint(op.f("fk_tenants_dial_plan_id_dial_plans"), type_="foreignkey")
        batch.drop_column("dial_plan_id")
    with op.batch_alter_table("users") as batch:
        for name, referred in _USER_FKS:
            batch.drop_constraint(op.f(f"fk_users_{name}_{referred}"), type_="foreignkey")
        for column in _user_columns():
            batch.drop_column(column.name)
    for table in (
        "settings",
        "voicemail_messages",
        "api_tokens",
        "admins",
        "ledger",
        "cards",
        "rates",
        "rate_tables",
        "trunks",
        "dial_plan_rules",
        "dial_plans",
    ):
        op.drop_table(table)
