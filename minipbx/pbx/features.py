"""Feature codes users dial from their phones (miniSipServer's defaults).

| code | what |
|---|---|
| ``*90*N#`` / ``*90#`` | forward on busy to N / cancel |
| ``*91*N#`` / ``*91#`` | forward when unreachable (not registered) |
| ``*92*N#`` / ``*92#`` | forward on no answer |
| ``*93*N#`` / ``*93#`` | forward every call (unconditional) |
| ``*97`` | own voice mailbox |
| ``*98`` | any voice mailbox (asks for its number) |
| ``*900`` | prepaid balance |

The trailing ``#`` is optional (phones send it as ``%23`` in the Request-URI, which the URI
parser decodes). Codes are for the tenant's own users: calls from trunks never reach them.
Each maps to a PBX service target (``<kind>:<arg>``) the B2BUA answers itself.
"""

from __future__ import annotations

import re

FORWARD_KINDS = {"0": "busy", "1": "unreachable", "2": "no_answer", "3": "unconditional"}
_FORWARD = re.compile(r"\*9([0-3])(?:\*(\+?[0-9*]{1,32}))?#?")
_FIXED = {"*97": "vm-main:", "*98": "vm-any:", "*900": "balance:"}


def feature_service(number: str) -> str | None:
    """The service target a dialled number asks for, or None when it is no feature code.

    ``*92*105#`` gives ``forward:no_answer=105``, ``*92#`` ``forward:no_answer=`` (cancel).
    """
    if not number.startswith("*"):
        return None
    fixed = _FIXED.get(number.rstrip("#"))
    if fixed is not None:
        return fixed
    match = _FORWARD.fullmatch(number)
    if match is None:
        return None
    return f"forward:{FORWARD_KINDS[match.group(1)]}={match.group(2) or ''}"


def parse_forward(arg: str) -> tuple[str, str]:
    """``no_answer=105`` as (the user setting to change, the number; "" cancels)."""
    kind, _, number = arg.partition("=")
    if kind not in FORWARD_KINDS.values():
        raise ValueError(f"unknown forward kind {kind!r}")
    return f"forward_{kind}", number


__all__ = ["FORWARD_KINDS", "feature_service", "parse_forward"]
