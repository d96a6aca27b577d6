"""Per-source-IP rate limiting and temporary bans (the issue's "Security from day one").

:class:`Guard` answers "may this packet from IP x be processed?" (:meth:`Guard.allow`) and
counts authentication failures (:meth:`Guard.auth_failed`). A source that sends faster
than its token bucket allows is flooding: its excess requests are dropped, and after
``flood_ban_after`` drops in one flood it is banned. A source with ``max_auth_failures``
failures within ``failure_window`` seconds is banned too. Trusted networks (default:
loopback only) are never limited nor banned; they are still authenticated.

Each flood and each ban is logged once, as one line on the ``minipbx.security`` logger, with
the source IP first so fail2ban-style tools can act on it::

    event=flood src=192.0.2.7 rate=20 burst=100
    event=ban src=192.0.2.7 reason=auth_failures count=10 duration=600

Memory is bounded: an entry per source seen recently, dropped after ``idle_timeout``
seconds of silence, and at most ``max_sources`` entries (the least recently seen go first;
under a spoofed-source flood that may forget a real offender's failure count, never a ban).
Sans-IO: the caller passes ``now`` (any monotonic or wall clock, used consistently).
"""

from __future__ import annotations

import ipaddress
import json
import logging
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

log = logging.getLogger("minipbx.security")

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
_SAFE_LOG = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.:+@/[]%*!~")
_MAX_LOGGED = 64
_MAX_TRUSTED_CACHE = 4096


def log_value(text: str) -> str:
    """``text`` as a key=value log field: bare when safe, else JSON-quoted, at most 64 chars.

    Client-supplied values (usernames) never break the one-line, key=value format.
    """
    text = text[:_MAX_LOGGED]
    if text and all(ch in _SAFE_LOG for ch in text):
        return text
    return json.dumps(text)


@dataclass(frozen=True, slots=True)
class GuardConfig:
    """Settings of a :class:`Guard`.

    ``rate`` requests per second with bursts of ``burst`` per source IP; ``flood_ban_after``
    dropped requests in one flood ban the source (0: floods are only throttled);
    ``max_auth_failures`` failures within ``failure_window`` seconds ban it (0: never);
    bans last ``ban_duration`` seconds. ``trusted`` lists CIDRs never limited nor banned.
    Sources silent for ``idle_timeout`` seconds are forgotten; at most ``max_sources``
    sources and ``max_bans`` bans are tracked.
    """

    rate: float = 50.0
    burst: float = 200.0
    flood_ban_after: int = 1000
    max_auth_failures: int = 10
    failure_window: float = 60.0
    ban_duration: float = 600.0
    trusted: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    idle_timeout: float = 300.0
    max_sources: int = 100_000
    max_bans: int = 100_000

    def __post_init__(self) -> None:
        if not self.rate > 0 or self.burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        if self.flood_ban_after < 0 or self.max_auth_failures < 0:
            raise ValueError("flood_ban_after and max_auth_failures must not be negative")
        if not (self.failure_window > 0 and self.ban_duration > 0 and self.idle_timeout > 0):
            raise ValueError("failure_window, ban_duration and idle_timeout must be positive")
        if self.max_sources < 1 or self.max_bans < 1:
            raise ValueError("max_sources and max_bans must be at least 1")
        for cidr in self.trusted:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad one


class _Source:
    """What is remembered about one source IP."""

    __slots__ = ("dropped", "failures", "flooding", "seen", "tokens")

    def __init__(self, tokens: float, now: float) -> None:
        self.tokens = tokens
        self.seen = now  # last refill / activity
        self.flooding = False
        self.dropped = 0  # requests dropped in the current flood
        self.failures: list[float] | None = None  # times of recent auth failures


def _parse_networks(cidrs: Iterable[str]) -> tuple[IPNetwork, ...]:
    return tuple(ipaddress.ip_network(cidr, strict=False) for cidr in cidrs)


class Guard:
    """Rate limits and bans per source IP; see the module docstring."""

    def __init__(self, config: GuardConfig | None = None) -> None:
        """Guard with ``config`` (defaults when None)."""
        self.config = config or GuardConfig()
        self._trusted = _parse_networks(self.config.trusted)
        # ip text -> trusted? (parsing an address costs more than the rest of allow())
        self._trusted_ips: dict[str, bool] = {}
        self._sources: OrderedDict[str, _Source] = OrderedDict()
        self._bans: dict[str, float] = {}  # ip -> banned until
        self._next_sweep = float("-inf")

    # --- queries ---------------------------------------------------------------------------

    def is_trusted(self, ip: str) -> bool:
        """True when ``ip`` is in a trusted network (unparsable text is not trusted)."""
        known = self._trusted_ips.get(ip)
        if known is not None:
            return known
        trusted = self._check_trusted(ip)
        if len(self._trusted_ips) >= _MAX_TRUSTED_CACHE:
            self._trusted_ips.clear()
        self._trusted_ips[ip] = trusted
        return trusted

    def _check_trusted(self, ip: str) -> bool:
        if not self._trusted:
            return False
        try:
            address = ipaddress.ip_address(ip.strip("[]").partition("%")[0])
        except ValueError:
            return False
        return any(address in network for network in self._trusted)

    def is_banned(self, ip: str, now: float) -> bool:
        """True while ``ip`` is banned (an expired ban is forgotten here)."""
        until = self._bans.get(ip)
        if until is None:
            return False
        if until > now:
            return True
        del self._bans[ip]
        return False

    @property
    def tracked_sources(self) -> int:
        """How many sources have an entry (for metrics and tests)."""
        return len(self._sources)

    @property
    def active_bans(self) -> int:
        """How many bans are held (some may have expired and not been swept yet)."""
        return len(self._bans)

    # --- events ----------------------------------------------------------------------------

    def allow(self, ip: str, now: float) -> bool:
        """Take one token for a request from ``ip``: False to drop it (banned or flooding)."""
        self._maybe_sweep(now)
        if self.is_banned(ip, now):
            return False
        if self.is_trusted(ip):
            return True
        source = self._touch(ip, now)
        if source.tokens >= 1.0:
            source.tokens -= 1.0
            if source.flooding and source.tokens >= 1.0:
                source.flooding = False  # the flood is over once the bucket refills
                source.dropped = 0
            return True
        source.dropped += 1
        if not source.flooding:
            source.flooding = True
            log.warning(
                "event=flood src=%s rate=%g burst=%g", ip, self.config.rate, self.config.burst
            )
        limit = self.config.flood_ban_after
        if limit and source.dropped >= limit:
            self._ban(ip, now, "flood", source.dropped)
        return False

    def auth_failed(self, ip: str, now: float) -> bool:
        """Count an authentication failure from ``ip``; True when it bans the source."""
        limit = self.config.max_auth_failures
        if not limit or self.is_trusted(ip) or self.is_banned(ip, now):
            return False
        source = self._touch(ip, now)
        horizon = now - self.config.failure_window
        failures = [t for t in source.failures or () if t > horizon]
        failures.append(now)
        if len(failures) < limit:
            source.failures = failures
            return False
        source.failures = None
        self._ban(ip, now, "auth_failures", len(failures))
        return True

    def auth_succeeded(self, ip: str) -> None:
        """Forget the failures of ``ip`` (a phone that got its password right).

        Deliberate trade-off: one office behind one NAT address is not banned for one
        misconfigured phone while the others authenticate.
        """
        source = self._sources.get(ip)
        if source is not None:
            source.failures = None

    def unban(self, ip: str) -> bool:
        """Lift a ban by hand (console/CLI); True when there was one."""
        return self._bans.pop(ip, None) is not None

    def sweep(self, now: float) -> None:
        """Forget idle sources and expired bans (called by :meth:`allow` now and then)."""
        horizon = now - self.config.idle_timeout
        sources = self._sources
        while sources:
            ip, source = next(iter(sources.items()))
            if source.seen > horizon:
                break
            del sources[ip]
        expired = [ip for ip, until in self._bans.items() if until <= now]
        for ip in expired:
            del self._bans[ip]
        self._next_sweep = now + min(self.config.idle_timeout, 60.0)

    # --- internals -------------------------------------------------------------------------

    def _maybe_sweep(self, now: float) -> None:
        if now >= self._next_sweep:
            self.sweep(now)

    def _touch(self, ip: str, now: float) -> _Source:
        """The entry of ``ip``, refilled to ``now`` and moved to the most-recent end."""
        config = self.config
        source = self._sources.get(ip)
        if source is None:
            source = self._sources[ip] = _Source(config.burst, now)
            while len(self._sources) > config.max_sources:
                self._sources.popitem(last=False)
            return source
        self._sources.move_to_end(ip)
        elapsed = now - source.seen
        if elapsed > 0:
            source.tokens = min(config.burst, source.tokens + elapsed * config.rate)
            source.seen = now
        return source

    def _ban(self, ip: str, now: float, reason: str, count: int) -> None:
        duration = self.config.ban_duration
        if len(self._bans) >= self.config.max_bans:
            soonest = min(self._bans, key=self._bans.__getitem__)
            del self._bans[soonest]
        self._bans[ip] = now + duration
        self._sources.pop(ip, None)
        log.warning("event=ban src=%s reason=%s count=%d duration=%g", ip, reason, count, duration)
