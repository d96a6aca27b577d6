"""The benchmark's users, as a ``minipbx user import`` CSV and as SIPp injection files.

Every user is a number from :data:`FIRST_EXTENSION` on with password ``pw<number>``; the
baseline SIPp registrar (``reg_uas.xml``) derives the same password from the username.
SIPp wants the whole ``[authentication ...]`` keyword in a field (REAL-PEERS.md: nesting
``[field0]`` inside it does not work).
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from pathlib import Path

FIRST_EXTENSION = 100_000
CALLEE = "900000"  # the SIPp UAS that answers every call through the PBX


def password(extension: str) -> str:
    """The password of a benchmark user."""
    return f"pw{extension}"


def extensions(count: int) -> list[str]:
    """``count`` user numbers from :data:`FIRST_EXTENSION` on."""
    return [str(FIRST_EXTENSION + i) for i in range(count)]


def _auth(extension: str) -> str:
    return f"[authentication username={extension} password={password(extension)}]"


def write_users(path: Path, users: Iterable[str]) -> int:
    """Write a ``minipbx user import`` file (header ``extension,password``); how many rows."""
    count = 0
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["extension", "password"])
        for extension in users:
            writer.writerow([extension, password(extension)])
            count += 1
    return count


def _write_injection(path: Path, rows: Iterable[Sequence[str]]) -> None:
    """A SIPp ``-inf`` file read in order (fields end with ``;``)."""
    with path.open("w", encoding="ascii") as fh:
        fh.write("SEQUENTIAL\n")
        for row in rows:
            fh.write("".join(f"{field};" for field in row) + "\n")


def write_registrations(path: Path, users: Iterable[str], contact_port: int) -> None:
    """Rows for ``reg_uac.xml``: user, credentials, port of the Contact to bind."""
    _write_injection(path, ((u, _auth(u), str(contact_port)) for u in users))


def write_calls(path: Path, callers: Iterable[str], callee: str = CALLEE) -> None:
    """Rows for ``call_uac.xml``: caller, its credentials, called number."""
    _write_injection(path, ((u, _auth(u), callee) for u in callers))
