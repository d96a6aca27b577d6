"""Settings precedence and validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from minipbx.config import ConfigError, Settings, load


def test_defaults_need_no_file() -> None:
    settings = load(env={})
    assert settings == Settings()
    assert settings.db_url.startswith("sqlite+aiosqlite:///")
    assert settings.db_url.endswith("minipbx-data/minipbx.db")


def test_file_then_env_then_flags(tmp_path: Path) -> None:
    cfg = tmp_path / "minipbx.toml"
    cfg.write_text('[server]\nsip_port = 5070\nbind = "127.0.0.1"\n[calls]\nring_timeout = 20\n')
    settings = load(cfg, env={"MINIPBX_SIP_PORT": "5080"}, flags={"sip_port": 5090})
    assert settings.sip_port == 5090
    assert settings.bind == "127.0.0.1"
    assert settings.ring_timeout == 20.0
    assert load(cfg, env={"MINIPBX_SIP_PORT": "5080"}).sip_port == 5080
    assert load(cfg, env={}).sip_port == 5070


def test_config_file_from_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "x.toml"
    cfg.write_text('[database]\nurl = "sqlite+aiosqlite:////tmp/x.db"\n')
    assert load(env={"MINIPBX_CONFIG": str(cfg)}).db_url == "sqlite+aiosqlite:////tmp/x.db"


def test_media_settings_from_file_and_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "minipbx.toml"
    cfg.write_text("[media]\nrtp_port_min = 30000\nrtp_port_max = 30100\naddress = '127.0.0.5'\n")
    settings = load(cfg, env={"MINIPBX_MEDIA_RELAY": "always"})
    assert (settings.rtp_port_min, settings.rtp_port_max) == (30000, 30100)
    assert settings.media_address == "127.0.0.5" and settings.media_relay == "always"
    assert load(env={}).media_relay == "auto"


def test_billing_settings_from_file_and_environment(tmp_path: Path) -> None:
    cfg = tmp_path / "minipbx.toml"
    cfg.write_text("[billing]\nwarning_lead = 30\nlongest_call = 7200\n")
    settings = load(cfg, env={"MINIPBX_MIN_CALL_SECONDS": "10"})
    assert (settings.warning_lead, settings.min_call_seconds) == (30, 10)
    assert settings.longest_call == 7200
    defaults = load(env={})
    assert (defaults.warning_lead, defaults.min_call_seconds, defaults.longest_call) == (
        60,
        0,
        None,
    )


def test_trusted_networks_from_env_list() -> None:
    settings = load(env={"MINIPBX_TRUSTED_NETWORKS": "10.0.0.0/8, 127.0.0.1/32"})
    assert settings.trusted_networks == ("10.0.0.0/8", "127.0.0.1/32")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[server]\nsip_port = 70000\n", "sip_port must be a port number"),
        ("[server]\nsip_port = 'x'\n", "sip_port must be int"),
        ("[server]\nbind = 'pbx.example.com'\n", "bind must be an IP address"),
        ("[server]\nnope = 1\n", "unknown setting [server] nope"),
        ("sip_port = 5060\n", "must be a [section]"),
        ("[server\n", "not valid TOML"),
        ("[tls]\ncert = '/a.pem'\n", "tls_cert and tls_key must be set together"),
        ("[security]\ntrusted_networks = ['nonsense']\n", "is not a network"),
        ("[registrar]\nmin_expires = 100\nmax_expires = 50\n", "min_expires <= max_expires"),
        ("[server]\nlog_level = 'LOUD'\n", "log_level must be"),
        ("[media]\nrelay = 'sometimes'\n", "media relay must be auto, always or never"),
        ("[media]\nrtp_port_min = 10001\n", "need an even rtp_port_min"),
        ("[media]\nrtp_port_min = 30000\nrtp_port_max = 20000\n", "not 30000-20000"),
        ("[media]\naddress = 'pbx.example.com'\n", "media_address must be an IP address"),
        ("[billing]\nwarning_lead = -1\n", "warning_lead must be 0 to 3600 s"),
        ("[billing]\nmin_call_seconds = -5\n", "min_call_seconds must be 0 or more"),
        ("[billing]\nlongest_call = 0\n", "longest_call must be 1 s or more"),
        ("[billing]\nlongest_call = 'long'\n", "longest_call must be int"),
    ],
)
def test_bad_settings_are_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "minipbx.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError) as info:
        load(cfg, env={})
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load(tmp_path / "absent.toml", env={})
