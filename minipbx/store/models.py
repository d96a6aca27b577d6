"""SQLAlchemy 2 declarative models: the schema of the PBX database.

The schema is created and changed only by the Alembic migrations in
``minipbx/store/migrations/versions``; a model change needs a new migration (the tests
compare the two). Conventions for new tables (trunks, dial plans, rates, cards, voicemail,
CDRs, admins):

- integer surrogate primary key ``id``; ``tenant_id`` foreign key for per-tenant data;
- bounded ``String(n)`` for anything indexed (MySQL needs a length), ``Text`` otherwise;
- timestamps are :class:`~minipbx.store.coltypes.UTCDateTime` (aware UTC in Python);
- constraint names come from :data:`NAMING_CONVENTION`, so migrations can address them;
- data that a memory cache serves bumps a :class:`Meta` version in the same transaction.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Text,
    UniqueConstraint,
    false,
    true,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from minipbx.store.coltypes import UTCDateTime, utcnow

# Shared with the migrations: explicit, portable constraint names (<= 64 characters).
# Primary keys stay unnamed: MySQL ignores (and warns about) their names.
NAMING_CONVENTION: dict[str, str] = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
}

# Lengths shared by the models, the migrations and input validation.
DOMAIN_LEN = 255
EXTENSION_LEN = 64
NAME_LEN = 255
EMAIL_LEN = 255

NUMBER_LEN = 64  # phone numbers as dialed or routed
PREFIX_LEN = 32  # rate prefixes
CARD_NUMBER_LEN = 32
# Money: 6 decimals cover sub-cent per-second rates; 16 digits in all.
MONEY = Numeric(16, 6)

# Meta rows: change counters for the memory caches (see minipbx.store.directory).
USERS_VERSION = "users_version"


class Base(DeclarativeBase):
    """Declarative base of every minipbx table."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Meta(Base):
    """Named change counters: ``version`` is bumped in the same transaction as a change.

    Another process (the CLI) changes data; the server polls the counter (one primary-key
    read) and reloads its memory cache only when it moved.
    """

    __tablename__ = "meta"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Tenant(Base):
    """A SIP domain and everything in it. The default tenant answers for unknown hosts."""

    __tablename__ = "tenants"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(NAME_LEN), default="")
    # The SIP domain (host part of AORs), stored lower-case.
    domain: Mapped[str] = mapped_column(String(DOMAIN_LEN), unique=True)
    # The digest realm, fixed at creation: the stored HA1s depend on it, so renaming the
    # domain must not invalidate every password.
    realm: Mapped[str] = mapped_column(String(DOMAIN_LEN))
    is_default: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # The tenant's default dial plan (migration 0003). dial_plans refers back to tenants:
    # use_alter breaks the cycle for create_all/drop_all ordering.
    dial_plan_id: Mapped[int | None] = mapped_column(
        ForeignKey("dial_plans.id", ondelete="SET NULL", use_alter=True)
    )
    # Quotas of a hosted tenant (migration 0004); NULL: no limit.
    max_users: Mapped[int | None] = mapped_column(Integer)
    max_concurrent_calls: Mapped[int | None] = mapped_column(Integer)
    max_call_seconds: Mapped[int | None] = mapped_column(Integer)
    # The free tier: every call of the tenant is cut after the free-call length.
    free_account: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class User(Base):
    """An extension of a tenant, with its digest credentials (HA1s, never the password)."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("tenant_id", "extension"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    extension: Mapped[str] = mapped_column(String(EXTENSION_LEN))
    display_name: Mapped[str] = mapped_column(String(NAME_LEN), default="")
    email: Mapped[str | None] = mapped_column(String(EMAIL_LEN))
    # HA1 = H(extension ":" realm ":" password), RFC 7616 3.4.2, lower-case hex.
    ha1_md5: Mapped[str] = mapped_column(String(32))
    ha1_sha256: Mapped[str] = mapped_column(String(64))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)

    # Service settings (migration 0003), read through SqlUserSettingsRepo, not UserRecord.
    # Every column has a server default so that existing rows migrate.
    dial_plan_id: Mapped[int | None] = mapped_column(
        ForeignKey("dial_plans.id", ondelete="SET NULL")
    )
    call_level: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    max_call_seconds: Mapped[int | None] = mapped_column(Integer)
    free_account: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    max_concurrent_calls: Mapped[int | None] = mapped_column(Integer)
    voicemail_enabled: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    voicemail_pin: Mapped[str | None] = mapped_column(String(16))
    voicemail_email_attach: Mapped[bool] = mapped_column(
        Boolean, default=True, server_default=true()
    )
    voicemail_delete_after_mail: Mapped[bool] = mapped_column(
        Boolean, default=False, server_default=false()
    )
    forward_unconditional: Mapped[str | None] = mapped_column(String(NUMBER_LEN))
    forward_busy: Mapped[str | None] = mapped_column(String(NUMBER_LEN))
    forward_no_answer: Mapped[str | None] = mapped_column(String(NUMBER_LEN))
    forward_unreachable: Mapped[str | None] = mapped_column(String(NUMBER_LEN))
    no_answer_seconds: Mapped[int] = mapped_column(Integer, default=20, server_default="20")
    prepaid: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    balance: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0), server_default="0")
    credit_limit: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0), server_default="0")
    currency: Mapped[str] = mapped_column(String(3), default="", server_default="")
    rate_table_id: Mapped[int | None] = mapped_column(
        ForeignKey("rate_tables.id", ondelete="SET NULL")
    )
    media_relay: Mapped[str] = mapped_column(String(8), default="auto", server_default="auto")
    # Follow-me (migration 0006): "number:seconds, ..." and how it rings (pbx/followme.py).
    followme: Mapped[str] = mapped_column(Text, default="", server_default="")
    followme_mode: Mapped[str] = mapped_column(String(16), default="off", server_default="off")
    followme_own_first: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    # Longest voicemail message in seconds (migration 0007); NULL: the tenant's setting.
    voicemail_max_seconds: Mapped[int | None] = mapped_column(Integer)


class Registration(Base):
    """One registered contact (binding) of an AOR, persisted so a restart keeps it."""

    __tablename__ = "registrations"
    __table_args__ = (Index(None, "aor"), Index(None, "expires_at"), Index(None, "user_id"))

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    aor: Mapped[str] = mapped_column(String(512))
    contact: Mapped[str] = mapped_column(Text)  # the Contact URI as received
    params: Mapped[str] = mapped_column(Text, default="")  # Contact header params as received
    # Where the REGISTER came from (RFC 3261 18.2.1, RFC 3581), and the listener it hit.
    received_transport: Mapped[str] = mapped_column(String(8))
    received_host: Mapped[str] = mapped_column(String(255))
    received_port: Mapped[int] = mapped_column(Integer)
    local: Mapped[str] = mapped_column(Text, default="")
    nat: Mapped[bool] = mapped_column(Boolean, default=False)  # contact behind NAT
    path: Mapped[str] = mapped_column(Text, default="")  # Path header values, RFC 3327
    call_id: Mapped[str] = mapped_column(String(255))
    cseq: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    user_agent: Mapped[str] = mapped_column(Text, default="")
    instance_id: Mapped[str | None] = mapped_column(String(255))  # +sip.instance, RFC 5626
    reg_id: Mapped[int | None] = mapped_column(Integer)  # RFC 5626 4.2
    q: Mapped[float | None] = mapped_column(Double)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Cdr(Base):
    """One call detail record per call attempt, answered or not, written when it ends.

    ``id`` orders the records as they were committed: CDR shipping (to MySQL) follows it.
    ``uuid`` names the record everywhere it is copied, so a copy is made exactly once.
    ``tenant_id`` is not a foreign key: records outlive the tenants and users they name.
    Times are UTC with microsecond storage (millisecond precision from the PBX clock);
    ``duration`` is start to end, ``billable_seconds`` answer to end to the nearest second.
    """

    __tablename__ = "cdrs"
    __table_args__ = (
        Index(None, "end_time"),
        Index(None, "tenant_id", "end_time"),
        Index(None, "call_id"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    uuid: Mapped[str] = mapped_column(String(36), unique=True)
    call_id: Mapped[str] = mapped_column(String(255))
    tenant_id: Mapped[int | None] = mapped_column(Integer)
    tenant: Mapped[str] = mapped_column(String(DOMAIN_LEN), default="")
    caller_number: Mapped[str] = mapped_column(String(NUMBER_LEN), default="")
    caller_name: Mapped[str] = mapped_column(String(NAME_LEN), default="")
    called_number: Mapped[str] = mapped_column(String(NUMBER_LEN), default="")
    routed_number: Mapped[str] = mapped_column(String(NUMBER_LEN), default="")
    route_type: Mapped[str] = mapped_column(String(16), default="")
    trunk: Mapped[str | None] = mapped_column(String(NAME_LEN))
    start_time: Mapped[datetime] = mapped_column(UTCDateTime)
    answer_time: Mapped[datetime | None] = mapped_column(UTCDateTime)
    end_time: Mapped[datetime] = mapped_column(UTCDateTime)
    duration: Mapped[Decimal] = mapped_column(Numeric(12, 3))
    billable_seconds: Mapped[int] = mapped_column(Integer, default=0)
    disposition: Mapped[str] = mapped_column(String(16))
    sip_status: Mapped[int] = mapped_column(Integer)
    reason_cause: Mapped[str] = mapped_column(String(255), default="")
    hangup_by: Mapped[str] = mapped_column(String(16), default="")
    cost: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    currency: Mapped[str] = mapped_column(String(3), default="")
    source_ip: Mapped[str] = mapped_column(String(64), default="")
    user_agent: Mapped[str] = mapped_column(String(255), default="")
    # Billing details (migration 0007); NULL when the call was not priced.
    rate_prefix: Mapped[str | None] = mapped_column(String(PREFIX_LEN))
    connection_fee: Mapped[Decimal | None] = mapped_column(MONEY)
    price_per_minute: Mapped[Decimal | None] = mapped_column(MONEY)
    billed_seconds: Mapped[int | None] = mapped_column(Integer)
    card_number: Mapped[str | None] = mapped_column(String(CARD_NUMBER_LEN))


class CdrShipment(Base):
    """How far CDRs have been copied to one external database (``target``: host/db).

    Every ``cdrs`` row with ``id <= last_id`` is in the target. Advanced in the same step as
    a batch lands there; a crash in between re-sends the batch, which the target ignores
    (its ``cdr_uuid`` is unique), so each CDR arrives exactly once.
    """

    __tablename__ = "cdr_shipments"

    target: Mapped[str] = mapped_column(String(255), primary_key=True)
    last_id: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    shipped: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# --- PBX data (migration 0003) -------------------------------------------------------------

LABEL_LEN = 64  # names typed by operators and unique per tenant (trunks, dial plans, ...)
PATTERN_LEN = 64  # dial plan patterns
PIN_LEN = 16
HASH_LEN = 128  # token hashes (SHA-256 hex today)

TRUNKS_VERSION = "trunks_version"
DIAL_PLANS_VERSION = "dial_plans_version"
RATES_VERSION = "rates_version"
SETTINGS_VERSION = "settings_version"


class Admin(Base):
    """A login of the web console and REST API; ``tenant_id`` None means a system admin.

    ``password_hash`` is a PHC string (argon2) made by the caller; the store never sees a
    password.
    """

    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    username: Mapped[str] = mapped_column(String(LABEL_LEN), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_login_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class ApiToken(Base):
    """A REST API token of an admin; only its SHA-256 (hex) is stored."""

    __tablename__ = "api_tokens"
    __table_args__ = (Index(None, "admin_id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(NAME_LEN), default="")
    token_hash: Mapped[str] = mapped_column(String(HASH_LEN), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Trunk(Base):
    """A SIP trunk to a carrier: registration/digest credentials or IP authentication.

    ``allowed_ips`` is a comma-separated list of CIDRs (IP-authenticated trunks),
    ``codecs`` a comma-separated preference list, ``options`` a JSON object for later flags.
    """

    __tablename__ = "trunks"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(LABEL_LEN))
    host: Mapped[str] = mapped_column(String(DOMAIN_LEN), default="")
    port: Mapped[int | None] = mapped_column(Integer)
    transport: Mapped[str] = mapped_column(String(8), default="udp")
    username: Mapped[str] = mapped_column(String(NAME_LEN), default="")
    auth_username: Mapped[str] = mapped_column(String(NAME_LEN), default="")
    password: Mapped[str] = mapped_column(Text, default="")  # plain: digest needs it
    register: Mapped[bool] = mapped_column(Boolean, default=False)
    register_expires: Mapped[int] = mapped_column(Integer, default=3600)
    from_domain: Mapped[str] = mapped_column(String(DOMAIN_LEN), default="")
    allowed_ips: Mapped[str] = mapped_column(Text, default="")
    max_calls_in: Mapped[int | None] = mapped_column(Integer)
    max_calls_out: Mapped[int | None] = mapped_column(Integer)
    caller_id: Mapped[str | None] = mapped_column(String(NUMBER_LEN))
    codecs: Mapped[str] = mapped_column(String(255), default="PCMU,PCMA")
    options: Mapped[str] = mapped_column(Text, default="{}")
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DialPlan(Base):
    """A named, ordered list of routing rules of a tenant (see :class:`DialPlanRule`)."""

    __tablename__ = "dial_plans"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(LABEL_LEN))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class DialPlanRule(Base):
    """One rule of a dial plan, tried in ``position`` order.

    ``action``: local | followme | trunk | service | reject; ``target`` names the trunk,
    service or number; ``strip`` digits are removed and ``prepend`` added before routing.
    """

    __tablename__ = "dial_plan_rules"
    __table_args__ = (UniqueConstraint("dial_plan_id", "position"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dial_plan_id: Mapped[int] = mapped_column(ForeignKey("dial_plans.id", ondelete="CASCADE"))
    position: Mapped[int] = mapped_column(Integer)
    pattern: Mapped[str] = mapped_column(String(PATTERN_LEN))
    caller_pattern: Mapped[str | None] = mapped_column(String(PATTERN_LEN))
    min_level: Mapped[int] = mapped_column(Integer, default=1)
    time_condition: Mapped[str] = mapped_column(Text, default="")
    action: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(255), default="")
    failover_target: Mapped[str | None] = mapped_column(String(255))
    strip: Mapped[int] = mapped_column(Integer, default=0)
    prepend: Mapped[str] = mapped_column(String(32), default="")
    caller_id: Mapped[str | None] = mapped_column(String(NUMBER_LEN))
    reject_status: Mapped[int | None] = mapped_column(Integer)
    max_seconds: Mapped[int | None] = mapped_column(Integer)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)


class RateTable(Base):
    """A named set of per-prefix rates in one currency."""

    __tablename__ = "rate_tables"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(LABEL_LEN))
    currency: Mapped[str] = mapped_column(String(3), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Rate(Base):
    """The price of calls to numbers starting with ``prefix`` (longest prefix wins).

    Charged: ``connection_fee`` once, then ``first_increment`` seconds, then blocks of
    ``next_increment`` seconds at ``price_per_minute``; ``free_seconds`` are not charged and
    calls shorter than ``min_duration`` seconds are billed as that long. ``valid_from`` /
    ``valid_until`` (None: open-ended) let a new price list be loaded ahead of time.
    """

    __tablename__ = "rates"
    __table_args__ = (UniqueConstraint("rate_table_id", "prefix", "valid_from"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    rate_table_id: Mapped[int] = mapped_column(ForeignKey("rate_tables.id", ondelete="CASCADE"))
    prefix: Mapped[str] = mapped_column(String(PREFIX_LEN))
    description: Mapped[str] = mapped_column(String(NAME_LEN), default="")
    connection_fee: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    price_per_minute: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    first_increment: Mapped[int] = mapped_column(Integer, default=60)
    next_increment: Mapped[int] = mapped_column(Integer, default=60)
    min_duration: Mapped[int] = mapped_column(Integer, default=0)
    free_seconds: Mapped[int] = mapped_column(Integer, default=0)
    valid_from: Mapped[datetime | None] = mapped_column(UTCDateTime)
    valid_until: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Card(Base):
    """A calling card: a number and PIN with its own balance (status active by default)."""

    __tablename__ = "cards"
    __table_args__ = (UniqueConstraint("tenant_id", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    number: Mapped[str] = mapped_column(String(CARD_NUMBER_LEN))
    pin: Mapped[str] = mapped_column(String(PIN_LEN))
    balance: Mapped[Decimal] = mapped_column(MONEY, default=Decimal(0))
    currency: Mapped[str] = mapped_column(String(3), default="")
    rate_table_id: Mapped[int | None] = mapped_column(
        ForeignKey("rate_tables.id", ondelete="SET NULL")
    )
    dial_plan_id: Mapped[int | None] = mapped_column(
        ForeignKey("dial_plans.id", ondelete="SET NULL")
    )
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    status: Mapped[str] = mapped_column(String(16), default="active")
    failed_pins: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LedgerEntry(Base):
    """One change of a user's or a card's balance; ``balance_after`` is the new balance.

    ``amount`` is signed (what was added to the balance); ``kind`` says why: topup, charge,
    refund, reserve (funds held for a call) or release (held funds given back).
    """

    __tablename__ = "ledger"
    __table_args__ = (
        Index(None, "user_id"),
        Index(None, "card_id"),
        Index(None, "tenant_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))
    card_id: Mapped[int | None] = mapped_column(ForeignKey("cards.id", ondelete="SET NULL"))
    kind: Mapped[str] = mapped_column(String(16))
    amount: Mapped[Decimal] = mapped_column(MONEY)
    balance_after: Mapped[Decimal] = mapped_column(MONEY)
    cdr_uuid: Mapped[str | None] = mapped_column(String(36))
    note: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class VoicemailMessage(Base):
    """A voicemail message; the audio is a WAV file at ``path`` (relative to the data dir)."""

    __tablename__ = "voicemail_messages"
    __table_args__ = (Index(None, "user_id", "folder"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    folder: Mapped[str] = mapped_column(String(16), default="new")
    caller_number: Mapped[str] = mapped_column(String(NUMBER_LEN), default="")
    caller_name: Mapped[str] = mapped_column(String(NAME_LEN), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime)
    duration_ms: Mapped[int] = mapped_column(Integer, default=0)
    path: Mapped[str] = mapped_column(Text)
    emailed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    email_attempts: Mapped[int] = mapped_column(Integer, default=0)
    email_error: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Setting(Base):
    """A key/value setting of a tenant, or system-wide when ``tenant_id`` is None (SMTP...)."""

    __tablename__ = "settings"
    __table_args__ = (UniqueConstraint("tenant_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int | None] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(64))
    value: Mapped[str] = mapped_column(Text, default="")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


# --- auto attendant (migration 0005) -------------------------------------------------------

PROMPT_NAME_LEN = 64


class IvrMenu(Base):
    """A menu of a tenant's auto attendant (IVR); its keys are :class:`IvrOption` rows.

    ``greeting`` is a comma-separated list of prompt names; ``hours`` a time condition as
    dial plan rules write it ("" for always), with ``after_hours_menu`` the menu that runs
    outside them; ``timeout_action``/``timeout_target`` say what happens when the retries
    are used up. Menus refer to each other by name. Writes bump ``dial_plans_version``.
    """

    __tablename__ = "ivr_menus"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tenant_id: Mapped[int] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(LABEL_LEN))
    greeting: Mapped[str] = mapped_column(Text, default="")
    dial_by_extension: Mapped[bool] = mapped_column(Boolean, default=False)
    max_digits: Mapped[int] = mapped_column(Integer, default=4)
    timeout_seconds: Mapped[float] = mapped_column(Double, default=5.0)
    digit_timeout_seconds: Mapped[float] = mapped_column(Double, default=3.0)
    retries: Mapped[int] = mapped_column(Integer, default=2)
    invalid_prompt: Mapped[str] = mapped_column(String(PROMPT_NAME_LEN), default="")
    timeout_action: Mapped[str] = mapped_column(String(16), default="hangup")
    timeout_target: Mapped[str] = mapped_column(String(255), default="")
    hours: Mapped[str] = mapped_column(Text, default="")
    after_hours_menu: Mapped[str | None] = mapped_column(String(LABEL_LEN))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class IvrOption(Base):
    """What one key (0-9 * #) of a menu does: ``action`` (user, followme, voicemail, menu,
    number, hangup, repeat) with its ``target``."""

    __tablename__ = "ivr_options"
    __table_args__ = (UniqueConstraint("menu_id", "key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    menu_id: Mapped[int] = mapped_column(ForeignKey("ivr_menus.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(1))
    action: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(255), default="")
