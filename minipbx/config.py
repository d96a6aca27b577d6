"""Process settings: defaults, then ``minipbx.toml``, then ``MINIPBX_*`` variables, then flags.

Everything has a default, so ``minipbx run`` works with no file at all. Every problem is a
:class:`ConfigError` with one line that names the setting and what is wrong with it.
PBX data (users, trunks, dial plans...) is not here: it lives in the database.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A setting that cannot be used; the message is one line for the administrator."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Settings of one minipbx process (DESIGN.md: configuration as a dataclass)."""

    data_dir: Path = Path("minipbx-data")
    """Where the SQLite database, recordings and prompts live."""
    bind: str = "0.0.0.0"
    """Address the SIP and HTTP listeners bind to."""
    sip_port: int = 5060
    """SIP over UDP and TCP."""
    tls_port: int = 5061
    """SIP over TLS, when ``tls_cert`` and ``tls_key`` are set."""
    http_port: int = 8080
    """Web console and REST API (0: any free port, shown in the start banner)."""
    http_tls: bool = False
    """Serve the web console and REST API over HTTPS with ``tls_cert`` and ``tls_key``."""
    stun_port: int | None = 3478
    """STUN Binding server (UDP) for phones to learn their public address; 0 disables it."""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    public_address: str | None = None
    """Address to put in Via/Contact when the PBX is behind NAT (default: the bound one)."""
    database_url: str | None = None
    """SQLAlchemy URL; default ``sqlite+aiosqlite:///<data_dir>/minipbx.db``."""
    cdr_mysql_url: str | None = None
    """When set, every call record is also written to this MySQL/MariaDB database."""
    cdr_retry_max: float = 30.0
    """Longest wait (seconds) between tries to reach ``cdr_mysql_url`` while it fails; the
    waits double from 1 s up to this."""
    trusted_networks: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    """Sources never rate-limited or banned (still authenticated)."""
    digest_algorithms: tuple[str, ...] = ("MD5",)
    """Challenges offered, preferred first. Many phones (and SIPp, baresip 1.0) give up
    at a challenge that is not MD5, so SHA-256 is opt-in: ``["SHA-256", "MD5"]``."""
    min_expires: int = 60
    max_expires: int = 3600
    ring_timeout: float = 60.0
    media_relay: str = "auto"
    """``auto``: relay RTP for calls with a party behind NAT; ``always``; ``never``."""
    rtp_port_min: int = 10000
    """First UDP port of the RTP range (relay and the PBX's own media); even."""
    rtp_port_max: int = 20000
    """Last UDP port of the RTP range."""
    media_address: str | None = None
    """Address put in SDP for the PBX's own media (default: public_address, else the one
    facing each party)."""
    log_level: str = "INFO"
    warning_lead: int = 60
    """Prepaid calls (users and calling cards): warn the caller this many seconds before
    the money runs out and the call is cut."""
    min_call_seconds: int = 0
    """Refuse a prepaid call whose money cannot keep it up this long."""
    longest_call: int | None = None
    """Cap each prepaid reservation, and so each prepaid call, at this many seconds."""

    @property
    def db_url(self) -> str:
        """The database URL to use."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'minipbx.db').resolve()}"


# TOML layout: [section] key -> field name.
_TOML_KEYS = {
    ("server", "data_dir"): "data_dir",
    ("server", "bind"): "bind",
    ("server", "sip_port"): "sip_port",
    ("server", "tls_port"): "tls_port",
    ("server", "http_port"): "http_port",
    ("server", "http_tls"): "http_tls",
    ("server", "stun_port"): "stun_port",
    ("server", "public_address"): "public_address",
    ("server", "log_level"): "log_level",
    ("tls", "cert"): "tls_cert",
    ("tls", "key"): "tls_key",
    ("database", "url"): "database_url",
    ("cdr", "mysql_url"): "cdr_mysql_url",
    ("cdr", "retry_max"): "cdr_retry_max",
    ("security", "trusted_networks"): "trusted_networks",
    ("security", "digest_algorithms"): "digest_algorithms",
    ("registrar", "min_expires"): "min_expires",
    ("registrar", "max_expires"): "max_expires",
    ("calls", "ring_timeout"): "ring_timeout",
    ("media", "relay"): "media_relay",
    ("media", "rtp_port_min"): "rtp_port_min",
    ("media", "rtp_port_max"): "rtp_port_max",
    ("media", "address"): "media_address",
    ("billing", "warning_lead"): "warning_lead",
    ("billing", "min_call_seconds"): "min_call_seconds",
    ("billing", "longest_call"): "longest_call",
}
_FIELDS = {f.name: f for f in fields(Settings)}


def _convert(name: str, value: Any, origin: str) -> Any:
    """Turn a TOML, environment or flag value into the field's type, or explain why not."""
    kind = str(_FIELDS[name].type)
    try:
        if "Path" in kind:
            return None if value in (None, "") else Path(str(value)).expanduser()
        if kind.startswith("int"):
            if value in (None, "") and "None" in kind:
                return None
            if isinstance(value, bool):
                raise ValueError
            return int(value)
        if kind.startswith("float"):
            return float(value)
        if kind.startswith("bool"):
            return _flag(value)
        if kind.startswith("tuple"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(str(item).strip() for item in items if str(item).strip())
        return None if value in (None, "") and "None" in kind else str(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{origin}: {name} must be {kind}, not {value!r}") from None


def _flag(value: Any) -> bool:
    """A bool from TOML, or from the text of a variable or flag (1/0, true/false...)."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("1", "true", "yes", "on"):
        return True
    if text in ("0", "false", "no", "off"):
        return False
    raise ValueError(text)


def _from_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    out: dict[str, Any] = {}
    for section, table in data.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: top-level key {section!r} must be a [section]")
        for key, value in table.items():
            name = _TOML_KEYS.get((section, key))
            if name is None:
                raise ConfigError(f"{path}: unknown setting [{section}] {key}")
            out[name] = _convert(name, value, str(path))
    return out


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _FIELDS:
        key = f"MINIPBX_{name.upper()}"
        if key in env:
            out[name] = _convert(name, env[key], f"environment {key}")
    return out


def load(
    config_file: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Settings from the defaults, the file, the environment and the flags, in that order."""
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    if config_file is None and "MINIPBX_CONFIG" in env:
        config_file = Path(env["MINIPBX_CONFIG"])
    if config_file is not None:
        values.update(_from_toml(config_file))
    values.update(_from_env(env))
    for name, value in (flags or {}).items():
        if value is not None:
            values[name] = _convert(name, value, f"--{name.replace('_', '-')}")
    settings = replace(Settings(), **values)
    validate(settings)
    return settings


def validate(settings: Settings) -> None:
    """Raise :class:`ConfigError` for a setting that cannot work."""
    for name in ("sip_port", "tls_port", "http_port", "stun_port"):
        port = getattr(settings, name)
        if port is not None and not 0 <= port <= 65535:
            raise ConfigError(f"{name} must be a port number (0-65535), not {port}")
    for name in ("bind", "public_address", "media_address"):
        value = getattr(settings, name)
        if value is None:
            continue
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise ConfigError(f"{name} must be an IP address, not {value!r}") from None
    for network in settings.trusted_networks:
        try:
            ipaddress.ip_network(network, strict=False)
        except ValueError:
            raise ConfigError(f"trusted_networks: {network!r} is not a network") from None
    known = ("MD5", "SHA-256", "MD5-sess", "SHA-256-sess")
    if not settings.digest_algorithms or any(a not in known for a in settings.digest_algorithms):
        raise ConfigError(f"digest_algorithms must be a list of {', '.join(known)}")
    if (settings.tls_cert is None) != (settings.tls_key is None):
        raise ConfigError("tls_cert and tls_key must be set together")
    if settings.http_tls and settings.tls_cert is None:
        raise ConfigError("http_tls needs [tls] cert and key")
    if not 1 <= settings.min_expires <= settings.max_expires:
        raise ConfigError("registrar expires: need 1 <= min_expires <= max_expires")
    if settings.ring_timeout <= 0:
        raise ConfigError("ring_timeout must be positive")
    if not 1 <= settings.cdr_retry_max <= 3600:
        raise ConfigError(
            f"cdr retry_max must be 1 to 3600 seconds, not {settings.cdr_retry_max!r}"
        )
    if settings.media_relay not in ("auto", "always", "never"):
        raise ConfigError(
            f"media relay must be auto, always or never, not {settings.media_relay!r}"
        )
    low, high = settings.rtp_port_min, settings.rtp_port_max
    if not (1024 <= low < high <= 65535) or low % 2:
        raise ConfigError(
            f"RTP ports: need an even rtp_port_min and 1024 <= rtp_port_min < rtp_port_max"
            f" <= 65535, not {low}-{high}"
        )
    if not 0 <= settings.warning_lead <= 3600:
        raise ConfigError(f"billing warning_lead must be 0 to 3600 s, not {settings.warning_lead}")
    if settings.min_call_seconds < 0:
        raise ConfigError(
            f"billing min_call_seconds must be 0 or more, not {settings.min_call_seconds}"
        )
    if settings.longest_call is not None and settings.longest_call < 1:
        raise ConfigError(f"billing longest_call must be 1 s or more, not {settings.longest_call}")
    if settings.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
        raise ConfigError(
            f"log_level must be DEBUG, INFO, WARNING or ERROR, not {settings.log_level!r}"
        )
