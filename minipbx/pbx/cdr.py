"""The call detail record of an ended call (pure: no I/O, no clock of its own).

The B2BUA times calls on its monotonic clock; records carry UTC wall-clock times, so the
caller passes ``wall_offset`` (wall clock minus monotonic clock, read when the call ended)
and the record's uuid.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal

from minipbx.pbx.call import Call, Disposition
from minipbx.pbx.routing import called_number
from minipbx.store.cdrs import CDR_LIMITS, CdrRecord

_MS = Decimal("0.001")


def _utc(monotonic: float, wall_offset: float) -> datetime:
    # Millisecond precision: what the clocks can promise and the records document.
    return datetime.fromtimestamp(round(monotonic + wall_offset, 3), UTC)


def _cut(name: str, value: str) -> str:
    return value[: CDR_LIMITS[name]]


def record_of(call: Call, wall_offset: float, uuid: str) -> CdrRecord:
    """The CDR of an ended ``call``.

    ``duration`` runs from the INVITE's arrival to the end; ``billable_seconds`` from the
    answer to the end, to the nearest second, half up (a call cut at its 30 s limit a
    millisecond late is 30 s; billing applies its rate's increments to the exact times).
    Cost and the billing details (rate, fee, billed seconds, card) are left unset here:
    billing fills them (``PrepaidGate.price``) when it prices the call.
    """
    invite = call.invite
    ended = call.ended if call.ended is not None else call.started
    answered = call.answered
    billable = 0
    if answered is not None:  # nearest second, half up (as Asterisk's billsec)
        billable = math.floor(round(ended - answered, 3) + 0.5)
    disposition = call.disposition or (
        Disposition.ANSWERED if answered is not None else Disposition.FAILED
    )
    status = call.final_status or (200 if answered is not None else 0)
    return CdrRecord(
        uuid=uuid,
        call_id=_cut("call_id", invite.call_id),
        tenant_id=call.tenant_id,
        tenant=_cut("tenant", call.domain),
        caller_number=_cut("caller_number", call.caller),
        caller_name=_cut("caller_name", invite.from_.display or ""),
        called_number=_cut("called_number", called_number(call)),
        routed_number=_cut("routed_number", call.callee),
        route_type=_cut("route_type", call.route_kind),
        trunk=_cut("trunk", call.trunk) if call.trunk is not None else None,
        start_time=_utc(call.started, wall_offset),
        answer_time=_utc(answered, wall_offset) if answered is not None else None,
        end_time=_utc(ended, wall_offset),
        duration=Decimal(max(ended - call.started, 0.0)).quantize(_MS),
        billable_seconds=billable,
        disposition=disposition.value,
        sip_status=status,
        reason_cause=_cut("reason_cause", call.reason),
        hangup_by=_cut("hangup_by", call.hangup_by),
        cost=Decimal(0),
        currency="",
        source_ip=_cut("source_ip", call.source.host),
        user_agent=_cut("user_agent", call.user_agent),
    )
