"""Feature codes to service targets."""

from __future__ import annotations

import pytest

from minipbx.pbx.features import feature_service, parse_forward


@pytest.mark.parametrize(
    ("number", "service"),
    [
        ("*97", "vm-main:"),
        ("*98#", "vm-any:"),
        ("*900", "balance:"),
        ("*90*105#", "forward:busy=105"),
        ("*91*+4420123", "forward:unreachable=+4420123"),
        ("*92#", "forward:no_answer="),
        ("*93", "forward:unconditional="),
        ("*94*1#", None),
        ("*90*abc#", None),
        ("105", None),
        ("*", None),
    ],
)
def test_codes(number: str, service: str | None) -> None:
    assert feature_service(number) == service


def test_parse_forward() -> None:
    assert parse_forward("busy=105") == ("forward_busy", "105")
    assert parse_forward("unconditional=") == ("forward_unconditional", "")
    with pytest.raises(ValueError, match="unknown forward kind"):
        parse_forward("sometimes=1")
