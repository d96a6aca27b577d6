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
    ``duration`` is start to end, ``billable_seconds`` answer to end rounded up.
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
