"""Records of the PBX data (trunks, dial plans, rates, cards, ...) and their field checks.

Like :mod:`minipbx.store.records`: frozen dataclasses detached from any session, so the PBX
can cache them. Field names are the column names. Each ``*_CHECKS`` table maps the fields a
caller may set to the check (:mod:`minipbx.store.checks`) its value must pass; the
repositories (:mod:`minipbx.store.pbxrepos`) apply them and name the field on error.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from minipbx.pbx.followme import FOLLOWME_MODES, format_followme, parse_followme
from minipbx.store.checks import (
    DIGITS,
    LABEL,
    NUMBER,
    Check,
    choice,
    cidr_list,
    currency,
    flag,
    integer,
    invalid,
    json_object,
    moment,
    money,
    name_list,
    text,
)
from minipbx.store.models import (
    CARD_NUMBER_LEN,
    DOMAIN_LEN,
    LABEL_LEN,
    NAME_LEN,
    NUMBER_LEN,
    PATTERN_LEN,
    PIN_LEN,
    PREFIX_LEN,
)

TRANSPORTS = ("udp", "tcp", "tls")
RULE_ACTIONS = ("local", "followme", "trunk", "service", "reject")
MEDIA_RELAY_MODES = ("auto", "always", "never")
CARD_STATUSES = ("active", "locked", "expired", "used")
LEDGER_KINDS = ("topup", "charge", "refund", "reserve", "release")
# The sign an amount must have for each kind (amounts are what is added to the balance).
LEDGER_CREDITS = frozenset({"topup", "refund", "release"})
VOICEMAIL_FOLDERS = ("new", "old", "saved")
DESCRIPTION_MAX = 4000

_HOST = re.compile(r"[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\]|[0-9A-Fa-f:.]+")
_PIN = re.compile(r"[0-9]{4,16}")
_NO_SPACE = re.compile(r"\S+")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_UUID = re.compile(r"[0-9A-Fa-f\-]{1,36}")
_SETTING_KEY = re.compile(r"[a-z0-9][a-z0-9_.\-]*")
_DIALABLE = re.compile(r"[0-9*#+]+")


def _relative_path(field_name: str, value: Any) -> str:
    path = text(4096, required=True)(field_name, value)
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or ".." in parts or "" in parts:
        raise invalid(field_name, f"{path!r} must be a plain relative path (a/b.wav)")
    return str(path)


def hash_token(token: str) -> str:
    """The SHA-256 (lower-case hex) of an API token: what ``api_tokens`` stores."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random API token (43 URL-safe characters, 256 bits)."""
    return secrets.token_urlsafe(32)


# --- users ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserSettings:
    """A user's service settings (call limits, voicemail, forwarding, billing, media).

    ``balance`` changes only through the ledger (:class:`~minipbx.store.pbxrepos.SqlLedgerRepo`).
    """

    user_id: int
    dial_plan_id: int | None
    call_level: int
    max_call_seconds: int | None
    free_account: bool
    max_concurrent_calls: int | None
    voicemail_enabled: bool
    voicemail_pin: str | None = field(repr=False)
    voicemail_email_attach: bool
    voicemail_delete_after_mail: bool
    voicemail_max_seconds: int | None  # longest message (s); None: the tenant's setting
    forward_unconditional: str | None
    forward_busy: str | None
    forward_no_answer: str | None
    forward_unreachable: str | None
    no_answer_seconds: int
    prepaid: bool
    balance: Decimal
    credit_limit: Decimal
    currency: str
    rate_table_id: int | None
    media_relay: str
    followme: str
    followme_mode: str
    followme_own_first: bool


def _followme(field: str, value: Any) -> str:
    """A follow-me list (pbx/followme.py), stored in its canonical form."""
    if value is None:
        return ""
    if not isinstance(value, str):
        raise invalid(field, f"expected text like '102:20, 0044201234567:30', got {value!r}")
    try:
        return format_followme(parse_followme(value))
    except ValueError as exc:
        raise invalid(field, str(exc)) from None


def _forward() -> Check:
    return text(NUMBER_LEN, nullable=True, pattern=NUMBER, hint="a number or extension")


USER_SETTINGS_CHECKS: dict[str, Check] = {
    "dial_plan_id": integer(1, nullable=True),
    "call_level": integer(0, 99),
    "max_call_seconds": integer(1, nullable=True),
    "free_account": flag(),
    "max_concurrent_calls": integer(0, nullable=True),
    "voicemail_enabled": flag(),
    "voicemail_pin": text(PIN_LEN, nullable=True, pattern=_PIN, hint="4 to 16 digits"),
    "voicemail_email_attach": flag(),
    "voicemail_delete_after_mail": flag(),
    "voicemail_max_seconds": integer(5, 3600, nullable=True),
    "forward_unconditional": _forward(),
    "forward_busy": _forward(),
    "forward_no_answer": _forward(),
    "forward_unreachable": _forward(),
    "no_answer_seconds": integer(1, 600),
    "prepaid": flag(),
    "credit_limit": money(lo=Decimal(0)),
    "currency": currency(),
    "rate_table_id": integer(1, nullable=True),
    "media_relay": choice(*MEDIA_RELAY_MODES),
    "followme": _followme,
    "followme_mode": choice(*FOLLOWME_MODES),
    "followme_own_first": flag(),
}


# --- admins --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AdminRecord:
    """A console/API login; ``tenant_id`` None for a system admin."""

    id: int
    username: str
    password_hash: str = field(repr=False)
    tenant_id: int | None
    enabled: bool
    created_at: datetime
    last_login_at: datetime | None


@dataclass(frozen=True, slots=True)
class ApiTokenRecord:
    """An API token of an admin (only the SHA-256 of the token is kept)."""

    id: int
    admin_id: int
    name: str
    token_hash: str = field(repr=False)
    created_at: datetime
    last_used_at: datetime | None


ADMIN_CHECKS: dict[str, Check] = {
    "username": text(LABEL_LEN, required=True, pattern=LABEL, hint="letters, digits, . _ @ + -"),
    "password_hash": text(
        1024, required=True, pattern=re.compile(r"\$\S+"), hint="a PHC string like $argon2id$..."
    ),
    "tenant_id": integer(1, nullable=True),
    "enabled": flag(),
}
TOKEN_CHECKS: dict[str, Check] = {
    "name": text(NAME_LEN),
    "token_hash": text(
        64, required=True, pattern=_HEX64, hint="the SHA-256 of the token, see hash_token()"
    ),
}


# --- trunks --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrunkRecord:
    """A SIP trunk (see :class:`minipbx.store.models.Trunk` for the fields)."""

    id: int
    tenant_id: int
    name: str
    host: str
    port: int | None
    transport: str
    username: str
    auth_username: str
    password: str = field(repr=False)
    register: bool
    register_expires: int
    from_domain: str
    allowed_ips: str
    max_calls_in: int | None
    max_calls_out: int | None
    caller_id: str | None
    codecs: str
    options: str
    enabled: bool
    created_at: datetime
    updated_at: datetime


def _label() -> Check:
    return text(LABEL_LEN, required=True, pattern=LABEL, hint="letters, digits, . _ @ + -")


def _host() -> Check:
    return text(DOMAIN_LEN, pattern=_HOST, hint="a host name or IP address")


TRUNK_CHECKS: dict[str, Check] = {
    "name": _label(),
    "host": _host(),
    "port": integer(1, 65535, nullable=True),
    "transport": choice(*TRANSPORTS),
    "username": text(NAME_LEN),
    "auth_username": text(NAME_LEN),
    "password": text(128, strip=False),
    "register": flag(),
    "register_expires": integer(60, 86400),
    "from_domain": _host(),
    "allowed_ips": cidr_list(),
    "max_calls_in": integer(0, nullable=True),
    "max_calls_out": integer(0, nullable=True),
    "caller_id": text(NUMBER_LEN, nullable=True, pattern=NUMBER, hint="a number"),
    "codecs": name_list(255),
    "options": json_object(),
    "enabled": flag(),
}


# --- dial plans ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DialPlanRecord:
    """A tenant's named dial plan (its rules: :class:`DialPlanRule`)."""

    id: int
    tenant_id: int
    name: str
    description: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class DialPlanRule:
    """One dial plan rule, as given to ``replace_rules`` and returned by ``list_rules``.

    ``pattern`` matches the dialed number, ``caller_pattern`` (None: any) the caller;
    ``min_level`` is the caller's call level needed; ``action`` is one of
    :data:`RULE_ACTIONS` with its ``target`` (trunk name, service, number);
    ``failover_target`` is tried when the target fails. ``id``, ``dial_plan_id`` and
    ``position`` are set by the repository (order in the list = position).
    """

    pattern: str
    action: str
    target: str = ""
    caller_pattern: str | None = None
    min_level: int = 1
    time_condition: str = ""
    failover_target: str | None = None
    strip: int = 0
    prepend: str = ""
    caller_id: str | None = None
    reject_status: int | None = None
    max_seconds: int | None = None
    enabled: bool = True
    id: int | None = None
    dial_plan_id: int | None = None
    position: int = 0


DIAL_PLAN_CHECKS: dict[str, Check] = {
    "name": _label(),
    "description": text(DESCRIPTION_MAX, multiline=True),
}
RULE_CHECKS: dict[str, Check] = {
    "pattern": text(PATTERN_LEN, required=True, pattern=_NO_SPACE, hint="no spaces"),
    "action": choice(*RULE_ACTIONS),
    "target": text(255),
    "caller_pattern": text(PATTERN_LEN, nullable=True, pattern=_NO_SPACE, hint="no spaces"),
    "min_level": integer(0, 99),
    "time_condition": text(1000),
    "failover_target": text(255, nullable=True),
    "strip": integer(0, PATTERN_LEN),
    "prepend": text(32, pattern=_DIALABLE, hint="digits or + * #"),
    "caller_id": text(NUMBER_LEN, nullable=True, pattern=NUMBER, hint="a number"),
    "reject_status": integer(400, 699, nullable=True),
    "max_seconds": integer(1, nullable=True),
    "enabled": flag(),
}
# Actions that route nowhere without a target (as minipbx.pbx.dialplan.make_rule checks).
RULE_TARGET_REQUIRED = frozenset({"trunk", "service", "followme"})


# --- rates ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RateTableRecord:
    """A named price list in one currency."""

    id: int
    tenant_id: int
    name: str
    currency: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class RateRecord:
    """The price of calls to one prefix (see :class:`minipbx.store.models.Rate`)."""

    id: int
    rate_table_id: int
    prefix: str
    description: str
    connection_fee: Decimal
    price_per_minute: Decimal
    first_increment: int
    next_increment: int
    min_duration: int
    free_seconds: int
    valid_from: datetime | None
    valid_until: datetime | None


RATE_TABLE_CHECKS: dict[str, Check] = {"name": _label(), "currency": currency()}
RATE_CHECKS: dict[str, Check] = {
    "prefix": text(PREFIX_LEN, pattern=DIGITS, hint="digits only; empty matches every number"),
    "description": text(NAME_LEN),
    "connection_fee": money(lo=Decimal(0)),
    "price_per_minute": money(lo=Decimal(0)),
    "first_increment": integer(1, 3600),
    "next_increment": integer(1, 3600),
    "min_duration": integer(0, 3600),
    "free_seconds": integer(0, 86400),
    "valid_from": moment(),
    "valid_until": moment(),
}


# --- cards and the ledger ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CardRecord:
    """A calling card (``status``: one of :data:`CARD_STATUSES`)."""

    id: int
    tenant_id: int
    number: str
    pin: str = field(repr=False)
    balance: Decimal
    currency: str
    rate_table_id: int | None
    dial_plan_id: int | None
    expires_at: datetime | None
    status: str
    failed_pins: int
    created_at: datetime
    last_used_at: datetime | None


@dataclass(frozen=True, slots=True)
class LedgerRecord:
    """One balance change of a user or a card; ``amount`` is what was added (signed)."""

    id: int
    tenant_id: int
    user_id: int | None
    card_id: int | None
    kind: str
    amount: Decimal
    balance_after: Decimal
    cdr_uuid: str | None
    note: str
    created_at: datetime


CARD_CHECKS: dict[str, Check] = {
    "number": text(
        CARD_NUMBER_LEN, required=True, pattern=re.compile(r"[0-9]{4,32}"), hint="4-32 digits"
    ),
    "pin": text(PIN_LEN, required=True, pattern=_PIN, hint="4 to 16 digits"),
    "balance": money(),
    "currency": currency(),
    "rate_table_id": integer(1, nullable=True),
    "dial_plan_id": integer(1, nullable=True),
    "expires_at": moment(),
    "status": choice(*CARD_STATUSES),
}
LEDGER_CHECKS: dict[str, Check] = {
    "kind": choice(*LEDGER_KINDS),
    "amount": money(),
    "cdr_uuid": text(36, nullable=True, pattern=_UUID, hint="a UUID"),
    "note": text(1000, multiline=True),
}


# --- voicemail and settings ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoicemailRecord:
    """A voicemail message; ``path`` is relative to the data directory."""

    id: int
    tenant_id: int
    user_id: int
    folder: str
    caller_number: str
    caller_name: str
    received_at: datetime
    duration_ms: int
    path: str
    emailed_at: datetime | None
    email_attempts: int
    email_error: str
    created_at: datetime


VOICEMAIL_CHECKS: dict[str, Check] = {
    "folder": choice(*VOICEMAIL_FOLDERS),
    "caller_number": text(NUMBER_LEN),
    "caller_name": text(NAME_LEN),
    "received_at": moment(nullable=False),
    "duration_ms": integer(0),
    "path": _relative_path,
}
SETTING_CHECKS: dict[str, Check] = {
    "key": text(64, required=True, pattern=_SETTING_KEY, hint="lower-case letters, digits, _.-"),
    "value": text(None, multiline=True, strip=False),
}
