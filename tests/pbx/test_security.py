"""Guard: token-bucket rate limits, bans, trusted networks, bounded memory; fake clock."""

from __future__ import annotations

import logging

import pytest

from minipbx.pbx.security import Guard, GuardConfig, log_value

ATTACKER = "192.0.2.66"
OTHER = "192.0.2.67"


def messages(caplog: pytest.LogCaptureFixture, event: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(f"event={event}")]


def test_burst_then_rate() -> None:
    guard = Guard(GuardConfig(rate=10, burst=5, flood_ban_after=0))
    now = 0.0
    assert [guard.allow(ATTACKER, now) for _ in range(6)] == [True] * 5 + [False]
    assert guard.allow(OTHER, now)  # buckets are per source
    now += 0.1  # one token back at 10/s
    assert guard.allow(ATTACKER, now)
    assert not guard.allow(ATTACKER, now)
    now += 10.0  # refilled, but never beyond the burst
    assert [guard.allow(ATTACKER, now) for _ in range(6)] == [True] * 5 + [False]


def test_flood_is_logged_once_per_event(caplog: pytest.LogCaptureFixture) -> None:
    guard = Guard(GuardConfig(rate=10, burst=5, flood_ban_after=0))
    now = 0.0
    with caplog.at_level(logging.WARNING, logger="minipbx.security"):
        for _ in range(100):
            guard.allow(ATTACKER, now)
        assert messages(caplog, "flood") == [f"event=flood src={ATTACKER} rate=10 burst=5"]
        now += 60.0  # quiet: the flood is over once the bucket refills
        assert guard.allow(ATTACKER, now)
        for _ in range(100):
            guard.allow(ATTACKER, now)
    assert len(messages(caplog, "flood")) == 2
    assert not guard.is_banned(ATTACKER, now)  # flood_ban_after=0: throttled only


def test_flood_ban(caplog: pytest.LogCaptureFixture) -> None:
    guard = Guard(GuardConfig(rate=10, burst=5, flood_ban_after=20, ban_duration=30))
    with caplog.at_level(logging.WARNING, logger="minipbx.security"):
        for _ in range(5 + 20):
            guard.allow(ATTACKER, 0.0)
    assert guard.is_banned(ATTACKER, 0.0)
    assert messages(caplog, "ban") == [
        f"event=ban src={ATTACKER} reason=flood count=20 duration=30"
    ]
    assert not guard.allow(ATTACKER, 29.0)
    assert guard.allow(ATTACKER, 30.5)


def test_ban_after_failures_within_the_window(caplog: pytest.LogCaptureFixture) -> None:
    guard = Guard(GuardConfig(max_auth_failures=3, failure_window=60, ban_duration=600))
    with caplog.at_level(logging.WARNING, logger="minipbx.security"):
        assert not guard.auth_failed(ATTACKER, 0.0)
        assert not guard.auth_failed(ATTACKER, 10.0)
        assert guard.auth_failed(ATTACKER, 20.0)
    assert messages(caplog, "ban") == [
        f"event=ban src={ATTACKER} reason=auth_failures count=3 duration=600"
    ]
    assert guard.is_banned(ATTACKER, 20.0)
    assert not guard.allow(ATTACKER, 21.0)
    assert guard.allow(OTHER, 21.0)
    assert not guard.auth_failed(ATTACKER, 22.0)  # already banned: no second ban line
    assert len(messages(caplog, "ban")) == 1


def test_failures_outside_the_window_do_not_ban() -> None:
    guard = Guard(GuardConfig(max_auth_failures=3, failure_window=60))
    for t in (0.0, 40.0, 80.0, 120.0, 160.0):  # never three within 60 s
        assert not guard.auth_failed(ATTACKER, t)
    assert not guard.is_banned(ATTACKER, 160.0)


def test_ban_expires() -> None:
    guard = Guard(GuardConfig(max_auth_failures=1, ban_duration=100))
    assert guard.auth_failed(ATTACKER, 0.0)
    assert guard.is_banned(ATTACKER, 99.9)
    assert not guard.is_banned(ATTACKER, 100.0)
    assert guard.allow(ATTACKER, 100.0)
    assert guard.active_bans == 0
    # Counting starts afresh after the ban.
    assert guard.auth_failed(ATTACKER, 101.0)


def test_success_forgets_failures() -> None:
    guard = Guard(GuardConfig(max_auth_failures=3))
    guard.auth_failed(ATTACKER, 0.0)
    guard.auth_failed(ATTACKER, 1.0)
    guard.auth_succeeded(ATTACKER)
    assert not guard.auth_failed(ATTACKER, 2.0)
    assert not guard.auth_failed(ATTACKER, 3.0)
    assert guard.auth_failed(ATTACKER, 4.0)


def test_trusted_networks_are_never_limited_nor_banned() -> None:
    guard = Guard(GuardConfig(rate=1, burst=1, max_auth_failures=1, flood_ban_after=1))
    assert all(guard.allow("127.0.0.1", 0.0) for _ in range(1000))
    assert all(guard.allow("::1", 0.0) for _ in range(10))
    assert not any(guard.auth_failed("127.0.0.1", 0.0) for _ in range(100))
    assert not guard.is_banned("127.0.0.1", 0.0)
    assert guard.tracked_sources == 0
    # Outside the default loopback-only list: limited at once.
    assert guard.allow(ATTACKER, 0.0)
    assert not guard.allow(ATTACKER, 0.0)


def test_configured_trusted_network() -> None:
    guard = Guard(GuardConfig(trusted=("192.0.2.0/28",), max_auth_failures=1))
    assert guard.is_trusted("192.0.2.5")
    assert not guard.is_trusted("192.0.2.66")
    assert not guard.is_trusted("127.0.0.1")  # the setting replaces the default
    assert not guard.is_trusted("not an ip")
    assert not guard.auth_failed("192.0.2.5", 0.0)
    assert guard.auth_failed("192.0.2.66", 0.0)


def test_idle_sources_are_forgotten() -> None:
    guard = Guard(GuardConfig(idle_timeout=100))
    for i in range(200):
        guard.allow(f"192.0.2.{i}", 0.0)
    assert guard.tracked_sources == 200
    guard.allow(ATTACKER, 50.0)
    guard.allow(ATTACKER, 150.0)  # the periodic sweep runs inside allow()
    assert guard.tracked_sources == 1


def test_memory_is_bounded_under_spoofed_sources() -> None:
    guard = Guard(GuardConfig(max_sources=1000, max_bans=50, max_auth_failures=1))
    for i in range(20_000):
        ip = f"2001:db8::{i:x}"  # RFC 3849 documentation prefix
        guard.allow(ip, 0.0)
        guard.auth_failed(ip, 0.0)
    assert guard.tracked_sources <= 1000
    assert guard.active_bans <= 50


def test_unban_by_hand() -> None:
    guard = Guard(GuardConfig(max_auth_failures=1))
    guard.auth_failed(ATTACKER, 0.0)
    assert guard.unban(ATTACKER)
    assert not guard.is_banned(ATTACKER, 1.0)
    assert not guard.unban(ATTACKER)


def test_log_value_keeps_one_line() -> None:
    assert log_value("100") == "100"
    assert log_value("bad user\nevent=ban") == '"bad user\\nevent=ban"'
    assert len(log_value("x" * 1000)) == 64


@pytest.mark.parametrize(
    "kwargs",
    [{"rate": 0}, {"burst": 0.5}, {"max_auth_failures": -1}, {"trusted": ("nonsense",)}],
)
def test_config_is_validated(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        GuardConfig(**kwargs)  # type: ignore[arg-type]
