"""Helpers for the end-to-end tests: free ports, a raw OPTIONS probe, SIPp runs and traces.

Everything here talks to 127.0.0.1 only, and every message the tests send names 127.0.0.1
in Via, Contact and SDP (see ../shared/REAL-PEERS.md, "Keep test traffic at home").
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HOST = "127.0.0.1"
HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
DIGEST_HELPER = HERE / "sipp_digest.py"

# --- tools ---------------------------------------------------------------------------------


def require_tool(name: str, package: str) -> str:
    """The path of ``name``; skip the test when missing, but fail in CI (``CI=true``)."""
    path = shutil.which(name)
    if path is not None:
        return path
    message = f"{name} not installed (Debian package {package})"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{message}: CI must install it")
    pytest.skip(message)


# --- ports ---------------------------------------------------------------------------------

_handed_out: set[int] = set()


def _bindable(port: int, tcp: bool) -> bool:
    kinds = [socket.SOCK_DGRAM, socket.SOCK_STREAM] if tcp else [socket.SOCK_DGRAM]
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                return False
    return True


def free_port(*, tcp: bool = False, span: Sequence[int] = (0,)) -> int:
    """A port on 127.0.0.1 that is free now (UDP, and TCP too when ``tcp``).

    The kernel picks it (bind to port 0, then close); ``span`` lists offsets that must be free
    as well (e.g. ``(0, 2)`` for SIPp's media ports, ``(0, 1)`` for baresip's TLS port). A port
    is never handed out twice in one test session. Callers retry when a race takes it anyway.
    """
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((HOST, 0))
            base = int(sock.getsockname()[1])
        ports = [base + offset for offset in span]
        if max(ports) > 65535 or any(p in _handed_out for p in ports):
            continue
        if all(_bindable(p, tcp) for p in ports):
            _handed_out.update(ports)
            return base
    raise RuntimeError("no free port found on 127.0.0.1")


def udp_listening(port: int) -> bool:
    """True when a socket is bound to UDP ``port`` on 127.0.0.1 (read from /proc/net/udp,
    so probing never takes the port from the process about to bind it)."""
    wanted = f"0100007F:{port:04X}"
    try:
        table = Path("/proc/net/udp").read_text()
    except OSError:
        time.sleep(0.5)  # no procfs: give the process time instead
        return True
    return any(line.split()[1] == wanted for line in table.splitlines()[1:] if line.strip())


# --- a raw OPTIONS probe -----------------------------------------------------------------------


def options_ping(port: int, timeout: float = 0.5) -> str | None:
    """Send one OPTIONS to the server over UDP; return the response text, or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        sock.settimeout(timeout)
        local = sock.getsockname()[1]
        token = secrets.token_hex(6)
        request = (
            f"OPTIONS sip:{HOST}:{port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:{local};branch=z9hG4bK-e2e-{token};rport\r\n"
            "Max-Forwards: 70\r\n"
            f"From: <sip:probe@{HOST}>;tag={token}\r\n"
            f"To: <sip:{HOST}:{port}>\r\n"
            f"Call-ID: {token}@{HOST}\r\n"
            "CSeq: 1 OPTIONS\r\n"
            "Content-Length: 0\r\n\r\n"
        )
        sock.sendto(request.encode(), (HOST, port))
        try:
            data, _ = sock.recvfrom(65535)
        except OSError:
            return None
        return data.decode("utf-8", "replace")


# --- SIP messages from SIPp's -trace_msg file ------------------------------------------------

_COMPACT = {  # RFC 3261 7.3.3 compact header names
    "i": "call-id",
    "m": "contact",
    "v": "via",
    "f": "from",
    "t": "to",
    "l": "content-length",
    "c": "content-type",
}
_SEPARATOR = re.compile(r"^-{20,} .*$", re.MULTILINE)
_DIRECTION = re.compile(r"^\w+ message (sent|received)")


@dataclass
class SipMessage:
    """One message SIPp sent or received."""

    direction: str  # "sent" or "received"
    start_line: str
    headers: list[tuple[str, str]]
    body: str

    @property
    def status(self) -> int | None:
        """The status code of a response, None for a request."""
        if self.start_line.startswith("SIP/2.0 "):
            return int(self.start_line.split()[1])
        return None

    @property
    def method(self) -> str | None:
        """The method of a request, None for a response."""
        return None if self.status is not None else self.start_line.split()[0]

    def all(self, name: str) -> list[str]:
        """Every value of header ``name`` (compact forms understood)."""
        wanted = name.lower()
        return [v for n, v in self.headers if _COMPACT.get(n.lower(), n.lower()) == wanted]

    def get(self, name: str) -> str | None:
        """The first value of header ``name``."""
        values = self.all(name)
        return values[0] if values else None

    @property
    def cseq_method(self) -> str:
        """The method named in CSeq."""
        parts = (self.get("CSeq") or "").split()
        return parts[-1] if parts else ""

    def __str__(self) -> str:
        lines = [self.start_line, *(f"{n}: {v}" for n, v in self.headers), "", self.body]
        return "\n".join(lines)


def parse_trace(text: str) -> list[SipMessage]:
    """The messages of a SIPp ``-message_file``, in order."""
    out = []
    for chunk in _SEPARATOR.split(text):
        lines = chunk.strip("\n").split("\n")
        match = _DIRECTION.match(lines[0]) if lines else None
        if match is None:
            continue
        rest = [line.rstrip("\r") for line in lines[1:]]
        while rest and not rest[0]:
            rest.pop(0)
        if not rest:
            continue
        headers: list[tuple[str, str]] = []
        index = 1
        while index < len(rest) and rest[index]:
            name, _, value = rest[index].partition(":")
            headers.append((name.strip(), value.strip()))
            index += 1
        body_lines = rest[index + 1 :]
        message = SipMessage(match.group(1), rest[0], headers, "")
        length = int(message.get("Content-Length") or "0")
        body = "\r\n".join(body_lines)[:length] if length else ""
        message.body = body
        out.append(message)
    return out


def sdp_lines(body: str) -> list[str]:
    """SDP lines without line-ending differences."""
    return [line.strip() for line in body.splitlines() if line.strip()]


# --- SIPp ----------------------------------------------------------------------------------


@dataclass
class SippRun:
    """A finished SIPp process and what it left behind."""

    name: str
    returncode: int
    workdir: Path
    messages: list[SipMessage]
    errors: str
    screen: str
    output: str

    @property
    def received(self) -> list[SipMessage]:
        """Messages SIPp received."""
        return [m for m in self.messages if m.direction == "received"]

    @property
    def sent(self) -> list[SipMessage]:
        """Messages SIPp sent."""
        return [m for m in self.messages if m.direction == "sent"]

    def responses(self, method: str | None = None) -> list[int]:
        """Status codes received, optionally only those for ``method`` (by CSeq)."""
        return [
            m.status
            for m in self.received
            if m.status is not None and (method is None or m.cseq_method == method)
        ]

    def requests_received(self, method: str) -> list[SipMessage]:
        """Requests of ``method`` SIPp received."""
        return [m for m in self.received if m.method == method]

    def describe(self) -> str:
        """Everything useful for an assertion message."""
        trace = "\n-----\n".join(f"[{m.direction}]\n{m}" for m in self.messages)
        return (
            f"sipp {self.name} exited {self.returncode} (workdir {self.workdir})\n"
            f"errors:\n{self.errors or '(none)'}\nstatistics:\n{_stats(self.screen)}\n"
            f"output:\n{self.output[-2000:]}\nmessages:\n{trace}"
        )


def _stats(screen: str) -> str:
    rows = [
        line for line in screen.splitlines() if "Successful call" in line or "Failed call" in line
    ]
    return "\n".join(rows) or "(no statistics)"


@dataclass
class Sipp:
    """One SIPp process: a scenario file from ``scenarios/`` run against the PBX."""

    name: str
    scenario: str
    pbx_port: int
    workdir: Path
    port: int
    rows: Sequence[Sequence[str]] = ()
    recv_timeout: float = 8.0
    timeout: float = 20.0
    variables: Mapping[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    calls: int = 1  # -m: calls to make (a UAS: to take); 0 = no limit (a UAS serving a load)
    trace_messages: bool = True  # -trace_msg: every message in messages.log (not for loads)
    extra_args: Sequence[str] = ()  # more options, e.g. ("-r", "50", "-l", "100")

    def command(self) -> list[str]:
        """The SIPp command line (UDP, loopback only, bounded in calls and time)."""
        media = free_port(span=(0, 2))
        control = free_port()
        cmd = [
            "sipp",
            f"{HOST}:{self.pbx_port}",
            "-sf",
            str(SCENARIOS / self.scenario),
            *(["-m", str(self.calls)] if self.calls else []),
            "-i",
            HOST,
            "-p",
            str(self.port),
            "-bind_local",
            "-mi",
            HOST,
            "-mp",
            str(media),
            "-ci",
            HOST,
            "-cp",
            str(control),
            "-nostdin",
            "-timeout",
            f"{int(self.timeout)}s",
            "-timeout_error",
            "-recv_timeout",
            str(int(self.recv_timeout * 1000)),
            "-trace_err",
            "-error_file",
            "errors.log",
            *(["-trace_msg", "-message_file", "messages.log"] if self.trace_messages else []),
            "-trace_screen",
            "-screen_file",
            "screen.log",
            *self.extra_args,
        ]
        if self.rows:
            (self.workdir / "injection.csv").write_text(
                "SEQUENTIAL\n" + "".join(";".join(row) + ";\n" for row in self.rows)
            )
            cmd += ["-inf", "injection.csv"]
        for key, value in self.variables.items():
            cmd += ["-set", key, value]
        return cmd

    def start(self) -> Sipp:
        """Start SIPp in the background (its files go to ``workdir``)."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        with (self.workdir / "output.log").open("wb") as out:
            self.process = subprocess.Popen(
                self.command(),
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    def wait(self, timeout: float | None = None) -> SippRun:
        """Wait for SIPp to finish (killed after ``timeout``: returncode -9) and collect."""
        assert self.process is not None, "start() first"
        try:
            code = self.process.wait(self.timeout + 5 if timeout is None else timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            code = self.process.wait()
        return SippRun(
            name=f"{self.name} ({self.scenario})",
            returncode=code,
            workdir=self.workdir,
            messages=parse_trace(_read(self.workdir / "messages.log")),
            errors=_read(self.workdir / "errors.log"),
            screen=_read(self.workdir / "screen.log"),
            output=_read(self.workdir / "output.log"),
        )

    def run(self) -> SippRun:
        """Start and wait."""
        return self.start().wait()

    def kill(self) -> None:
        """Stop SIPp if it still runs (this process only)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except FileNotFoundError:
        return ""


def digest_variables() -> dict[str, str]:
    """SIPp ``-set`` variables for scenarios that answer a digest challenge."""
    return {"py": sys.executable, "helper": str(DIGEST_HELPER)}


# --- processes -----------------------------------------------------------------------------


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.05) -> bool:
    """Poll ``predicate()`` until it is true or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


def stop(process: subprocess.Popen[bytes], timeout: float = 5.0) -> int:
    """SIGTERM ``process``, then SIGKILL after ``timeout``; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def tail(text: str, lines: int = 60) -> str:
    """The last ``lines`` lines of ``text``."""
    return "\n".join(text.splitlines()[-lines:])


def lines_with(text: str, needles: Iterable[str]) -> list[str]:
    """Lines of ``text`` containing any of ``needles``."""
    wanted = tuple(needles)
    return [line for line in text.splitlines() if any(n in line for n in wanted)]
