"""SIPp scenarios and injection files of ``bench/sip_load.py``.

- ``reg_uac.xml``: REGISTER, 401, REGISTER with credentials, 200 (the client in both runs).
- ``reg_uas.xml``: SIPp as a registrar that challenges and checks (the baseline).
- ``call_uac.xml``: INVITE, 407, ACK, INVITE with credentials, 100/180/200, ACK, BYE.
- ``call_uas_callee.xml``: the called phone behind minipbx.
- ``call_uas_challenge.xml``: SIPp answering the caller directly, with a 407 first (baseline).
- ``md5_only.c``: LD_PRELOAD shim so SIPp answers minipbx's MD5 challenge (see its header).

A ``<!-- hold -->`` comment in a scenario becomes ``<pause/>`` (duration from ``-d``) when
:func:`materialize` is asked for the holding variant.
"""

from __future__ import annotations

from pathlib import Path

DIR = Path(__file__).resolve().parent
HOLD_MARK = "<!-- hold -->"


def materialize(name: str, out_dir: Path, *, hold: bool = False) -> Path:
    """Copy scenario ``name`` into ``out_dir`` (with the hold pause when ``hold``); its path."""
    text = (DIR / name).read_text(encoding="ascii")
    if hold:
        if HOLD_MARK not in text:
            raise ValueError(f"{name} has no {HOLD_MARK} marker")
        text = text.replace(HOLD_MARK, "<pause/>")
        name = name.replace(".xml", "_hold.xml")
    path = out_dir / name
    path.write_text(text, encoding="ascii")
    return path
