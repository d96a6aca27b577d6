"""Two real softphones (baresip) register with the PBX and call each other, with audio.

Each phone plays its own tone (``aufile`` source): the caller 440 Hz, the callee 880 Hz.
Media stays end to end, so each phone must hear the other's tone (its ``sndfile`` dump of
decoded audio) and report received RTP packets in its statistics.
"""

from __future__ import annotations

import math
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.baresip_kit import RATE, read_samples, write_config
from tests.e2e.conftest import Pbx
from tests.e2e.support import HOST, free_port, require_tool, stop, tail, wait_for

pytestmark = pytest.mark.slow

CALL_SECONDS = 4  # the caller quits (hangs up) after this
TONE_SECONDS = 30  # aufile reads the file once: longer than any call here
MIN_PACKETS = 50  # 20 ms packets: one second of audio
_REGISTERED = re.compile(r"\{0/UDP/v4\} 200 OK")
_REGISTER_FAILED = re.compile(r"reg: |\{0/UDP/v4\} [3-6]\d\d")
_PACKETS = re.compile(r"packets:\s+(\d+)\s+(\d+)")


def _power(samples: list[int], frequency: float) -> float:
    """Goertzel: the energy of ``samples`` at ``frequency``."""
    coeff = 2 * math.cos(2 * math.pi * frequency / RATE)
    s1 = s2 = 0.0
    for x in samples:
        s1, s2 = x + coeff * s1 - s2, s1
    return s1 * s1 + s2 * s2 - coeff * s1 * s2


@dataclass
class Phone:
    """One baresip with its own config directory, port and tone."""

    name: str
    extension: str
    directory: Path
    tone: float
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(cls, root: Path, name: str, user: tuple[str, str], pbx: Pbx, tone: float) -> Phone:
        extension, password = user
        directory = root / name
        port = free_port(tcp=True, span=(0, 1))  # UDP+TCP on port, TLS on port + 1
        write_config(
            directory,
            listen_ip=HOST,
            listen_port=port,
            account=f"{extension}@{HOST}:{pbx.port}",
            password=password,
            tone=tone,
            tone_seconds=TONE_SECONDS,
        )
        return cls(name, extension, directory, tone)

    def start(self, seconds: int, *commands: str) -> None:
        """Run baresip for at most ``seconds``, executing ``commands`` at start."""
        args = ["baresip", "-f", str(self.directory), "-t", str(seconds)]
        for command in commands:
            args += ["-e", command]
        with (self.directory / "output.log").open("wb") as out:
            self.process = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
            )

    def output(self) -> str:
        """What baresip printed so far."""
        path = self.directory / "output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def packets(self) -> tuple[int, int]:
        """RTP packets (sent, received) from the statistics printed when the call ended."""
        found = _PACKETS.findall(self.output())
        assert found, f"{self.name}: no RTP statistics:\n{tail(self.output())}"
        sent, received = found[-1]
        return int(sent), int(received)

    def heard(self) -> list[int]:
        """Samples of the decoded audio (the ``*-dec.wav`` dump of the call)."""
        dumps = sorted((self.directory / "snd").glob("*-dec.wav"))
        assert dumps, f"{self.name}: no decoded-audio dump"
        return read_samples(dumps[-1])

    def registration_settled(self) -> bool:
        """True once baresip printed the outcome of its first REGISTER."""
        output = self.output()
        return bool(_REGISTERED.search(output) or _REGISTER_FAILED.search(output))

    def describe(self) -> str:
        return f"--- {self.name} ({self.extension}) output:\n{tail(self.output(), 80)}"

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)


def _why_not_registered(phone: Phone) -> str:
    hint = ""
    if "Function not implemented" in phone.output():
        # libre 1.1 (Debian's baresip 1.0.0) fails with ENOSYS on any challenge whose
        # algorithm is not MD5, even when an MD5 challenge is offered beside it.
        hint = "baresip rejected a non-MD5 digest challenge (ENOSYS)\n"
    return f"{phone.name} did not register\n{hint}{phone.describe()}"


def test_two_baresip_phones_call_each_other_with_audio(pbx: Pbx, tmp_path: Path) -> None:
    require_tool("baresip", "baresip")
    caller = Phone.create(tmp_path, "caller", pbx.take_user(), pbx, tone=440.0)
    callee = Phone.create(tmp_path, "callee", pbx.take_user(), pbx, tone=880.0)
    try:
        callee.start(30)
        wait_for(callee.registration_settled, 10.0)
        assert _REGISTERED.search(callee.output()), _why_not_registered(callee)

        caller.start(CALL_SECONDS, f"/dial sip:{callee.extension}@{HOST}:{pbx.port}")
        assert caller.process is not None
        caller.process.wait(CALL_SECONDS + 15)
        wait_for(lambda: bool(_PACKETS.search(callee.output())), 5.0)
    finally:
        caller.stop()
        callee.stop()
    both = caller.describe() + "\n" + callee.describe()
    assert "Call established" in caller.output(), both
    assert "Call established" in callee.output(), both
    for phone in (caller, callee):
        sent, received = phone.packets()
        assert sent >= MIN_PACKETS and received >= MIN_PACKETS, (
            f"{phone.name}: RTP sent {sent}, received {received}\n{both}"
        )
    for phone, other in ((caller, callee), (callee, caller)):
        samples = phone.heard()
        mine, theirs = _power(samples, phone.tone), _power(samples, other.tone)
        assert theirs > 10 * mine, f"{phone.name} did not hear {other.name}'s tone"
