"""A private "internet" in network namespaces: a public segment with the PBX, and two phones
each behind its own NAT router (see ../shared/REAL-PEERS.md, "NAT in network namespaces").

    pub     br0 198.18.0.1/24 (the PBX); the routers' WAN ends are ports of br0
    r1      wan 198.18.0.11/24, lan 10.1.0.1/24       MASQUERADE (port-preserving)
    ph1     eth0 10.1.0.2/24, default via 10.1.0.1
    r2      wan 198.18.0.12/24, lan 192.168.2.1/24    MASQUERADE --random-fully (symmetric)
    ph2     eth0 192.168.2.2/24, default via 192.168.2.1

198.18.0.0/15 is the benchmarking range (RFC 2544), the LANs are RFC 1918 ranges: nothing
here is routable outside the machine, and the public namespace does not forward, so a packet
for a phone's private address (end-to-end media without a relay) dies there, as on the
internet. Linux conntrack lets into a LAN only replies from the exact address and port a
flow was opened to.

:func:`nat_lab` builds it and always tears it down (processes first, then the namespaces),
also when the test fails; namespaces left by a killed run (their creator's pid is in the
name) are removed at the next start. It skips the test, saying why, when not root or
``ip``/``iptables`` are missing.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.e2e.baresip_kit import RATE, read_samples, write_config
from tests.e2e.support import stop, tail

PREFIX = "mpxnat"
PUBLIC_NET = "198.18.0"  # RFC 2544 benchmarking range: never a real address
PBX_IP = f"{PUBLIC_NET}.1"


@dataclass(frozen=True)
class Site:
    """A phone's LAN behind its NAT router."""

    name: str  # "1", "2"
    router: str  # namespace names
    phone: str
    wan_ip: str
    lan_gateway: str
    phone_ip: str
    random_fully: bool

    @property
    def nat(self) -> str:
        return "symmetric (--random-fully)" if self.random_fully else "port-preserving"


def _sh(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return done


def require_netns() -> None:
    """Skip unless we may build namespaces: root, ``ip`` and ``iptables``."""
    if os.geteuid() != 0:
        pytest.skip("network namespaces need root")
    for tool, package in (("ip", "iproute2"), ("iptables", "iptables")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} not installed (Debian package {package})")


def _remove_stale() -> None:
    """Namespaces of earlier runs whose process is gone (a killed pytest)."""
    listing = _sh("ip", "netns", "list", check=False).stdout
    for name in re.findall(rf"^({PREFIX}(\d+)-\S+)", listing, re.MULTILINE):
        full, pid = name
        if not Path(f"/proc/{pid}").exists():
            _sh("ip", "netns", "del", full, check=False)
            shutil.rmtree(f"/etc/netns/{full}", ignore_errors=True)


@dataclass
class NatLab:
    """The namespaces, and the processes started in them (stopped by :meth:`close`)."""

    public: str
    sites: tuple[Site, Site]
    namespaces: list[str] = field(default_factory=list)
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def run(self, namespace: str, *args: str, check: bool = True) -> str:
        """Run a command in ``namespace`` to the end; its stdout."""
        return _sh("ip", "netns", "exec", namespace, *args, check=check).stdout

    def popen(
        self, namespace: str, args: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``args`` in ``namespace`` (stdout and stderr to ``log``); stopped at close."""
        with log.open("wb") as out:
            process = subprocess.Popen(
                ["ip", "netns", "exec", namespace, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        self.processes.append(process)
        return process

    def packets(self, namespace: str, interface: str) -> tuple[int, int]:
        """(received, sent) packets of ``interface`` in ``namespace`` so far."""
        out = _sh("ip", "-n", namespace, "-j", "-s", "link", "show", "dev", interface).stdout
        stats = json.loads(out)[0]["stats64"]
        return int(stats["rx"]["packets"]), int(stats["tx"]["packets"])

    def conntrack_udp(self, site: Site) -> str:
        """The router's NAT table (UDP flows), for failure reports."""
        path = "/proc/net/nf_conntrack"
        text = self.run(site.router, "cat", path, check=False) if Path(path).exists() else ""
        return "\n".join(line for line in text.splitlines() if " udp " in line) or "(none)"

    def describe(self) -> str:
        """Interface counters of every router: for failure messages."""
        lines = []
        for site in self.sites:
            wan, lan = self.packets(site.router, "wan"), self.packets(site.router, "lan")
            lines.append(
                f"r{site.name} ({site.nat}): wan rx/tx {wan[0]}/{wan[1]}, lan rx/tx {lan[0]}/{lan[1]}"
            )
        return "\n".join(lines)

    def close(self) -> None:
        for process in reversed(self.processes):  # phones first: they unregister
            with contextlib.suppress(OSError):
                stop(process)
        for namespace in reversed(self.namespaces):
            _sh("ip", "netns", "del", namespace, check=False)
            shutil.rmtree(f"/etc/netns/{namespace}", ignore_errors=True)


def _add_namespace(lab: NatLab, name: str) -> None:
    _sh("ip", "netns", "add", name)
    lab.namespaces.append(name)
    _sh("ip", "-n", name, "link", "set", "lo", "up")
    # name lookups stay inside (REAL-PEERS.md, "Keep test traffic at home")
    folder = Path("/etc/netns") / name
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "resolv.conf").write_text("nameserver 127.0.0.1\n")


def _build_site(lab: NatLab, site: Site) -> None:
    r, ph, pub = site.router, site.phone, lab.public
    _add_namespace(lab, r)
    _add_namespace(lab, ph)
    port = f"r{site.name}"  # the router's port on the public bridge
    steps = [
        ["ip", "-n", r, "link", "add", "wan", "type", "veth", "peer", "name", port, "netns", pub],
        ["ip", "-n", pub, "link", "set", port, "master", "br0", "up"],
        ["ip", "-n", r, "addr", "add", f"{site.wan_ip}/24", "dev", "wan"],
        ["ip", "-n", r, "link", "set", "wan", "up"],
        ["ip", "-n", r, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", ph],
        ["ip", "-n", r, "addr", "add", f"{site.lan_gateway}/24", "dev", "lan"],
        ["ip", "-n", r, "link", "set", "lan", "up"],
        ["ip", "-n", ph, "addr", "add", f"{site.phone_ip}/24", "dev", "eth0"],
        ["ip", "-n", ph, "link", "set", "eth0", "up"],
        ["ip", "-n", ph, "route", "add", "default", "via", site.lan_gateway],
        ["ip", "-n", r, "route", "add", "default", "via", PBX_IP],
        ["ip", "netns", "exec", r, "sysctl", "-qw", "net.ipv4.ip_forward=1"],
        ["ip", "netns", "exec", r, "iptables", "-t", "nat", "-A", "POSTROUTING", "-o", "wan",
         "-j", "MASQUERADE", *(["--random-fully"] if site.random_fully else [])],
    ]  # fmt: skip
    for step in steps:
        _sh(*step)


@contextlib.contextmanager
def nat_lab() -> Iterator[NatLab]:
    """Build the namespaces above; tear everything down on exit, whatever happened."""
    require_netns()
    _remove_stale()
    tag = f"{PREFIX}{os.getpid()}"
    sites = (
        Site("1", f"{tag}-r1", f"{tag}-ph1", f"{PUBLIC_NET}.11", "10.1.0.1", "10.1.0.2", False),
        Site(
            "2", f"{tag}-r2", f"{tag}-ph2", f"{PUBLIC_NET}.12", "192.168.2.1", "192.168.2.2", True
        ),
    )
    lab = NatLab(f"{tag}-pub", sites)
    try:
        _add_namespace(lab, lab.public)
        for step in (
            ["link", "add", "br0", "type", "bridge"],
            ["addr", "add", f"{PBX_IP}/24", "dev", "br0"],
            ["link", "set", "br0", "up"],
        ):
            _sh("ip", "-n", lab.public, *step)
        for site in sites:
            _build_site(lab, site)
        _check_nat(lab)
        yield lab
    finally:
        lab.close()


_ECHO_SERVER = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 9))
s.settimeout(10)
print("ready", flush=True)
for _ in range(int(sys.argv[2])):
    data, source = s.recvfrom(100)
    s.sendto(("%s %d" % source).encode(), source)
"""
_ECHO_CLIENT = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(5)
s.sendto(b"who am i", (sys.argv[1], 9))
print(s.recvfrom(100)[0].decode())
"""


def _check_nat(lab: NatLab) -> None:
    """Each phone reaches the PBX address, seen from the router's WAN address (the NAT is
    real), and the public side has no route to the private addresses."""
    python = sys.executable
    server = subprocess.Popen(
        ["ip", "netns", "exec", lab.public, python, "-c", _ECHO_SERVER, PBX_IP, "2"],
        stdout=subprocess.PIPE,
        text=True,
    )
    lab.processes.append(server)  # type: ignore[arg-type]
    assert server.stdout is not None
    if server.stdout.readline().strip() != "ready":
        raise RuntimeError("the NAT check's echo server did not start")
    for site in lab.sites:
        seen = lab.run(site.phone, python, "-c", _ECHO_CLIENT, PBX_IP).split()
        if not seen or seen[0] != site.wan_ip:
            raise RuntimeError(f"phone {site.name} seen from {seen}, not via NAT {site.wan_ip}")
        if not _sh("ip", "-n", lab.public, "route", "get", site.phone_ip, check=False).returncode:
            raise RuntimeError(f"the public side has a route to phone {site.name}'s address")


# -- audio ----------------------------------------------------------------------------------------


def dominant_frequency(samples: Sequence[int]) -> tuple[float, float]:
    """(frequency in Hz of the FFT peak, RMS level) of ``samples`` (8 kHz)."""
    import numpy as np

    if len(samples) < RATE // 10:
        return math.nan, 0.0
    signal = np.asarray(samples, dtype=np.float64)
    rms = float(np.sqrt(np.mean(signal**2)))
    spectrum = np.abs(np.fft.rfft(signal * np.hanning(len(signal))))
    spectrum[: max(1, int(50 * len(signal) / RATE))] = 0  # ignore DC and hum below 50 Hz
    peak = int(np.argmax(spectrum))
    return peak * RATE / len(signal), rms


# -- baresip in a namespace ------------------------------------------------------------------


_REGISTERED = re.compile(r"\{0/UDP/v4\} 200 OK")
_REGISTER_FAILED = re.compile(r"reg: |\{0/UDP/v4\} [3-6]\d\d")
_PACKETS = re.compile(r"packets:\s+(\d+)\s+(\d+)")


@dataclass
class NatPhone:
    """One baresip in its site's phone namespace, with its own directory and tone."""

    site: Site
    extension: str
    directory: Path
    tone: float
    process: subprocess.Popen[bytes] | None = None

    @classmethod
    def create(
        cls, root: Path, site: Site, extension: str, password: str, tone: float, seconds: int
    ) -> NatPhone:
        directory = root / f"phone{site.name}"
        write_config(
            directory,
            listen_ip=site.phone_ip,
            listen_port=5060,
            account=f"{extension}@{PBX_IP}:5060",
            password=password,
            tone=tone,
            tone_seconds=seconds,
        )
        return cls(site, extension, directory, tone)

    def start(self, lab: NatLab, seconds: int, *commands: str) -> None:
        """Run baresip for at most ``seconds``, executing ``commands`` at start."""
        args = ["baresip", "-f", str(self.directory), "-t", str(seconds)]
        for command in commands:
            args += ["-e", command]
        self.process = lab.popen(self.site.phone, args, self.directory / "output.log")

    @property
    def name(self) -> str:
        return f"phone{self.site.name} ({self.extension}, {self.site.nat} NAT)"

    def output(self) -> str:
        path = self.directory / "output.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def registration_settled(self) -> bool:
        output = self.output()
        return bool(_REGISTERED.search(output) or _REGISTER_FAILED.search(output))

    def registered(self) -> bool:
        return bool(_REGISTERED.search(self.output()))

    def packets(self) -> tuple[int, int] | None:
        """RTP (sent, received) from the statistics printed when the call ended."""
        found = _PACKETS.findall(self.output())
        if not found:
            return None
        sent, received = found[-1]
        return int(sent), int(received)

    def heard(self) -> tuple[float, float]:
        """(dominant frequency, RMS) of what the phone decoded (its ``*-dec.wav`` dump);
        (nan, 0) when there is no dump."""
        dumps = sorted((self.directory / "snd").glob("*-dec.wav"))
        if not dumps:
            return math.nan, 0.0
        return dominant_frequency(read_samples(dumps[-1]))

    def hears(self, frequency: float) -> bool:
        """True when the decoded audio is a tone at ``frequency`` (FFT peak, +-20 Hz)."""
        peak, rms = self.heard()
        return rms > 100 and abs(peak - frequency) <= 20

    def describe(self) -> str:
        peak, rms = self.heard()
        return (
            f"--- {self.name}: packets {self.packets()}, heard {peak:.0f} Hz at RMS {rms:.0f}\n"
            f"{tail(self.output(), 60)}"
        )
