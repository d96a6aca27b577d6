"""Media benchmarks, run by hand.

    .venv/bin/python bench/media.py relay [--calls 300[,500...]] [--seconds 20] [--no-rtpengine]

``relay``: the RTP relay (``minipbx.transport.rtp``) under N concurrent calls, both ways,
beside the same traffic sent straight from phone to phone ("direct", no relay) and through
rtpengine in user space (Debian ``rtpengine-daemon``, set up over its ng control protocol)
in the same run. For each target and call count:

- a relay process: ``RelayManager`` on 127.0.0.1 on uvloop (when importable), alone on its
  loop, sessions opened and ``expect``-ed from the phones' addresses as the B2BUA will; or
  ``rtpengine --table=-1`` (user space), calls set up with ng ``offer``/``answer``;
- a separate generator process plays 2 x N phones (one UDP socket each): every stream sends
  a 172-byte RTP packet (12-byte header + 160 bytes of PCMU) every 20 ms, paced from the
  monotonic clock with the streams' phases spread over the 20 ms; each packet carries its
  stream, sequence number and the monotonic time it was sent. Receivers count what arrives
  (loss) and its transit time; "added jitter" is a packet's transit minus the smallest
  transit of its stream (what the path added on top of its best case), reported as p50,
  p99 and max over all packets of a direction (after a warm-up second);
- CPU: user + system time of the relay process (all threads) over the measured window, in
  % of one core, from /proc/PID/stat; the generator's own CPU and how late it sent (p99
  of send time minus schedule) say whether the generator, not the relay, was the limit.

The direct row is the floor (the generator and the kernel alone); compare the relay rows to
it. Every run is bounded: ``--seconds`` of traffic plus a one-second drain, the control
steps have timeouts, and every process started here is stopped at the end, also on failure.
Everything stays on 127.0.0.1.

Exit status 1 when a minipbx row misses the target (< 0.1 % loss, p99 added jitter < 5 ms).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import math
import multiprocessing
import multiprocessing.connection
import os
import re
import resource
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # run as a script from anywhere: import minipbx

HOST = "127.0.0.1"
PTIME = 0.02
PACKET_SIZE = 172  # RTP header 12 + 160 bytes of 20 ms PCMU
WARMUP = 1.0  # seconds of each run left out of the jitter figures
DRAIN = 1.0  # seconds to receive after the last send
MINIPBX_PORTS = (20000, 29999)
RTPENGINE_PORTS = (12000, 19999)
TARGET_LOSS = 0.1  # %
TARGET_P99 = 5.0  # ms
CONTROL_TIMEOUT = 60.0

_RTP = struct.Struct("!BBHII")  # V/P/X/CC, M/PT, sequence, timestamp, SSRC (= stream id)
_STAMP = struct.Struct("!Id")  # sequence (32 bit), monotonic send time
_TICKS = os.sysconf("SC_CLK_TCK")


def raise_fd_limit() -> None:
    """Thousands of sockets: lift the soft limit on open files to the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` (all its threads) so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (nearest rank) of sorted ``values``; NaN when empty."""
    if not values:
        return math.nan
    rank = min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))
    return values[rank]


# -- the generator: 2 x N phones in one process ------------------------------------------------


@dataclass
class Direction:
    """What the receivers saw of one direction (a->b or b->a), all calls together."""

    sent: int = 0
    received: int = 0
    misrouted: int = 0  # arrived at a phone that is not the stream's receiver
    jitter_ms: tuple[float, float, float] = (math.nan, math.nan, math.nan)  # p50, p99, max

    @property
    def loss(self) -> float:
        """Lost packets in % of those sent."""
        return 100.0 * (self.sent - self.received) / self.sent if self.sent else math.nan


@dataclass
class Traffic:
    """A generator run's results."""

    directions: dict[str, Direction]
    late_p99_ms: float  # sends behind their schedule (the generator's own lag)
    generator_cpu: float  # % of one core


class Phones:
    """The sockets and counters of 2 x ``calls`` phones: stream ``2c`` goes from phone a of
    call ``c`` to its phone b, stream ``2c + 1`` back."""

    def __init__(self, calls: int) -> None:
        self.calls = calls
        self.sockets: list[socket.socket] = []
        for _ in range(2 * calls):
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
            sock.bind((HOST, 0))
            sock.setblocking(False)
            self.sockets.append(sock)

    def ports(self) -> list[tuple[int, int]]:
        """(port of phone a, port of phone b) per call."""
        s = self.sockets
        return [
            (s[2 * c].getsockname()[1], s[2 * c + 1].getsockname()[1]) for c in range(self.calls)
        ]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()


def generate(conn: multiprocessing.connection.Connection, calls: int, seconds: float) -> None:
    """The generator process: bind, report the ports, wait for destinations, play, report."""
    raise_fd_limit()
    phones = Phones(calls)
    try:
        conn.send(phones.ports())
        if not conn.poll(CONTROL_TIMEOUT):
            return
        destinations: list[tuple[int, int]] = conn.recv()  # (a sends to, b sends to)
        cpu0 = time.process_time()
        started = time.monotonic()
        result = play(phones, destinations, seconds)
        elapsed = time.monotonic() - started
        result.generator_cpu = 100.0 * (time.process_time() - cpu0) / elapsed
        conn.send(result)
    finally:
        phones.close()


def play(phones: Phones, destinations: list[tuple[int, int]], seconds: float) -> Traffic:
    """Send every stream's packets on time for ``seconds``, receive until DRAIN after."""
    streams = 2 * phones.calls
    socks = phones.sockets
    targets = [(HOST, port) for pair in destinations for port in pair]  # stream -> destination
    buffers = [bytearray(PACKET_SIZE) for _ in range(streams)]
    start = time.monotonic() + 0.05
    due = [start + PTIME * i / streams for i in range(streams)]
    seqs = [0] * streams
    sent = [0] * streams
    late: array.array[float] = array.array("d")
    got_stream: array.array[int] = array.array("I")
    got_transit: array.array[float] = array.array("d")
    got_sent: array.array[float] = array.array("d")
    misrouted = 0
    by_fd = {sock.fileno(): (index, sock) for index, sock in enumerate(socks)}
    poller = select.epoll()
    for sock in socks:
        poller.register(sock.fileno(), select.EPOLLIN)
    receive_buffer = bytearray(2048)
    view = memoryview(receive_buffer)
    stop_sending = start + seconds
    stop = stop_sending + DRAIN
    cursor = 0
    monotonic = time.monotonic
    pack_rtp, pack_stamp = _RTP.pack_into, _STAMP.pack_into
    unpack_rtp, unpack_stamp = _RTP.unpack_from, _STAMP.unpack_from
    now = monotonic()
    while now < stop:
        while now < stop_sending and due[cursor] <= now:  # send what is due, in phase order
            stream = cursor
            seq = seqs[stream]
            buffer = buffers[stream]
            pack_rtp(buffer, 0, 0x80, 0, seq & 0xFFFF, (seq * 160) & 0xFFFFFFFF, stream)
            sent_at = monotonic()
            pack_stamp(buffer, 12, seq, sent_at)
            try:  # noqa: SIM105 (suppress() costs an object per packet)
                socks[stream].sendto(buffer, targets[stream])
            except BlockingIOError:
                pass  # a full buffer: counted as lost
            late.append(sent_at - due[stream])
            seqs[stream] = seq + 1
            sent[stream] += 1
            due[stream] += PTIME
            cursor = cursor + 1 if cursor + 1 < streams else 0
            now = monotonic()
        wait = (due[cursor] if now < stop_sending else stop) - monotonic()
        for fd, _ in poller.poll(max(0.0, wait)):
            index, sock = by_fd[fd]
            while True:
                try:
                    size = sock.recv_into(receive_buffer)
                except BlockingIOError:
                    break
                arrived = monotonic()
                if size != PACKET_SIZE:
                    misrouted += 1
                    continue
                stream = unpack_rtp(view)[4]
                if stream >= streams or stream ^ 1 != index:
                    misrouted += 1
                    continue
                _, sent_at = unpack_stamp(view, 12)
                got_stream.append(stream)
                got_transit.append(arrived - sent_at)
                got_sent.append(sent_at)
        now = monotonic()
    poller.close()
    directions = summarize(streams, sent, got_stream, got_transit, got_sent, start + WARMUP)
    for d in directions.values():
        d.misrouted = misrouted  # not attributable to a direction; reported on both
    late_sorted = sorted(late)
    return Traffic(directions, 1000 * percentile(late_sorted, 99), math.nan)


def summarize(
    streams: int,
    sent: list[int],
    got_stream: array.array[int],
    got_transit: array.array[float],
    got_sent: array.array[float],
    counted_from: float,
) -> dict[str, Direction]:
    """Loss and added jitter (transit minus the stream's best transit) per direction."""
    best = [math.inf] * streams
    received = [0] * streams
    for stream, transit in zip(got_stream, got_transit, strict=True):
        received[stream] += 1
        if transit < best[stream]:
            best[stream] = transit
    added: dict[str, list[float]] = {"a->b": [], "b->a": []}
    for stream, transit, sent_at in zip(got_stream, got_transit, got_sent, strict=True):
        if sent_at >= counted_from:
            added["a->b" if stream % 2 == 0 else "b->a"].append(transit - best[stream])
    out = {}
    for name, parity in (("a->b", 0), ("b->a", 1)):
        values = sorted(added[name])
        out[name] = Direction(
            sent=sum(sent[parity::2]),
            received=sum(received[parity::2]),
            jitter_ms=(
                1000 * percentile(values, 50),
                1000 * percentile(values, 99),
                1000 * (values[-1] if values else math.nan),
            ),
        )
    return out


# -- the minipbx relay process -----------------------------------------------------------------


def minipbx_relay(conn: multiprocessing.connection.Connection, use_uvloop: bool) -> None:
    """The relay process: a RelayManager alone on its loop, driven over ``conn``.

    ``("open", [(port a, port b), ...])`` opens one session per call (sides expecting the
    phones' addresses) and answers ``[(relay port a, relay port b), ...]``; ``("stats",)``
    answers the summed counters; ``("stop",)`` closes everything and ends the process.
    """
    raise_fd_limit()
    from minipbx.transport.rtp import RelayManager, RtpPortPool

    async def serve() -> None:
        relays = RelayManager(RtpPortPool(HOST, *MINIPBX_PORTS))
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def control() -> None:
            message = conn.recv()
            if message[0] == "open":
                answer = []
                for call, (a, b) in enumerate(message[1]):
                    session = relays.open(f"call-{call}")
                    session.expect("a", HOST, a)
                    session.expect("b", HOST, b)
                    answer.append((session.port("a"), session.port("b")))
                conn.send(answer)
            elif message[0] == "stats":
                stats = [s.stats() for s in relays.sessions()]
                conn.send(
                    {
                        "relayed": sum(s.packets for s in stats),
                        "dropped": sum(s.dropped for s in stats),
                        "unroutable": sum(s.a_to_b.unroutable + s.b_to_a.unroutable for s in stats),
                    }
                )
            elif not done.done():
                done.set_result(None)

        loop.add_reader(conn.fileno(), control)
        await done
        loop.remove_reader(conn.fileno())
        relays.close_all()
        await relays.wait_closed()

    if use_uvloop:
        import uvloop

        uvloop.run(serve())
    else:
        asyncio.run(serve())


# -- rtpengine over its ng protocol ------------------------------------------------------------


def bencode(value: Any) -> bytes:
    """Bencoding (BitTorrent BEP 3), what the ng protocol speaks."""
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, str):
        value = value.encode()
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, list):
        return b"l" + b"".join(bencode(v) for v in value) + b"e"
    if isinstance(value, dict):
        items = sorted((k.encode() if isinstance(k, str) else k, v) for k, v in value.items())
        return b"d" + b"".join(bencode(k) + bencode(v) for k, v in items) + b"e"
    raise TypeError(f"cannot bencode {type(value).__name__}")


def bdecode(data: bytes) -> Any:
    """The value bencoded in ``data`` (strings come back as str)."""
    value, end = _bdecode(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the bencoded value")
    return value


def _bdecode(data: bytes, at: int) -> tuple[Any, int]:
    kind = data[at : at + 1]
    if kind == b"i":
        end = data.index(b"e", at)
        return int(data[at + 1 : end]), end + 1
    if kind in (b"l", b"d"):
        items, at = [], at + 1
        while data[at : at + 1] != b"e":
            item, at = _bdecode(data, at)
            items.append(item)
        if kind == b"l":
            return items, at + 1
        return dict(zip(items[::2], items[1::2], strict=True)), at + 1
    colon = data.index(b":", at)
    length = int(data[at:colon])
    text = data[colon + 1 : colon + 1 + length]
    return text.decode("utf-8", "replace"), colon + 1 + length


class NgClient:
    """Requests to rtpengine's ng control port (UDP): ``cookie bencoded-dict``."""

    def __init__(self, port: int) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.connect((HOST, port))
        self.sock.settimeout(2.0)
        self.counter = 0

    def request(self, command: dict[str, Any]) -> dict[str, Any]:
        self.counter += 1
        cookie = b"%d_%d" % (os.getpid(), self.counter)
        self.sock.send(cookie + b" " + bencode(command))
        while True:
            data = self.sock.recv(65535)
            got, _, body = data.partition(b" ")
            if got == cookie:
                answer: dict[str, Any] = bdecode(body)
                return answer

    def close(self) -> None:
        self.sock.close()


def _sdp(port: int, session: int) -> str:
    return (
        f"v=0\r\no=- {session} 1 IN IP4 {HOST}\r\ns=bench\r\nc=IN IP4 {HOST}\r\nt=0 0\r\n"
        f"m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=sendrecv\r\n"
    )


def _sdp_port(sdp: str) -> int:
    match = re.search(r"^m=audio (\d+) ", sdp, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"no m=audio line in rtpengine's SDP:\n{sdp}")
    return int(match.group(1))


def rtpengine_calls(ng: NgClient, phones: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Set up one call per phone pair with offer (A's SDP) and answer (B's SDP); return the
    ports A and B must send to."""
    out = []
    for call, (a, b) in enumerate(phones):
        common = {"call-id": f"bench-{call}", "from-tag": f"a{call}", "replace": ["origin"]}
        offer = ng.request({"command": "offer", "sdp": _sdp(a, call), **common})
        if offer.get("result") != "ok":
            raise RuntimeError(f"rtpengine refused offer {call}: {offer}")
        answer = ng.request(
            {"command": "answer", "sdp": _sdp(b, call), "to-tag": f"b{call}", **common}
        )
        if answer.get("result") != "ok":
            raise RuntimeError(f"rtpengine refused answer {call}: {answer}")
        # the offer's SDP goes to B (B sends there), the answer's to A
        out.append((_sdp_port(answer["sdp"]), _sdp_port(offer["sdp"])))
    return out


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def rtpengine(work: Path) -> Iterator[tuple[subprocess.Popen[bytes], NgClient]]:
    """rtpengine in user space on 127.0.0.1, stopped on exit."""
    binary = shutil.which("rtpengine")
    if binary is None:
        raise RuntimeError("rtpengine not installed (Debian package rtpengine-daemon)")
    port = free_udp_port()
    log = (work / "rtpengine.log").open("wb")
    process = subprocess.Popen(
        [
            binary,
            "--config-file=none",
            "--table=-1",
            "--foreground",
            "--log-stderr",
            "--log-level=4",
            f"--interface={HOST}",
            f"--listen-ng={HOST}:{port}",
            f"--port-min={RTPENGINE_PORTS[0]}",
            f"--port-max={RTPENGINE_PORTS[1]}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    ng = NgClient(port)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                if ng.request({"command": "ping"}).get("result") == "pong":
                    break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"rtpengine did not start: see {work / 'rtpengine.log'}")
            time.sleep(0.1)
        yield process, ng
    finally:
        ng.close()
        stop_process(process)
        log.close()


def stop_process(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# -- a trial: one target, one call count --------------------------------------------------------


@dataclass
class Trial:
    target: str
    calls: int
    traffic: Traffic | None = None
    relay_cpu: float = math.nan  # % of one core
    relay_stats: dict[str, int] = field(default_factory=dict)
    error: str = ""

    @property
    def loss(self) -> float:
        if self.traffic is None:
            return math.nan
        ds = self.traffic.directions.values()
        sent = sum(d.sent for d in ds)
        return 100.0 * (sent - sum(d.received for d in ds)) / sent if sent else math.nan

    def p99(self) -> float:
        if self.traffic is None:
            return math.nan
        return max(d.jitter_ms[1] for d in self.traffic.directions.values())

    def meets_target(self) -> bool:
        return self.loss < TARGET_LOSS and self.p99() < TARGET_P99


def _recv(conn: multiprocessing.connection.Connection, timeout: float, what: str) -> Any:
    if not conn.poll(timeout):
        raise RuntimeError(f"no {what} within {timeout:.0f} s")
    return conn.recv()


def run_trial(
    target: str,
    calls: int,
    seconds: float,
    work: Path,
    use_uvloop: bool,
    profile: bool,
) -> Trial:
    """Start the generator, set up the target's calls, play, measure."""
    trial = Trial(target, calls)
    ctx = multiprocessing.get_context("fork")
    gen_end, gen_conn = ctx.Pipe()
    generator = ctx.Process(target=generate, args=(gen_end, calls, seconds), daemon=True)
    generator.start()
    relay: Any = None
    cleanup: list[Callable[[], None]] = []
    try:
        phones: list[tuple[int, int]] = _recv(gen_conn, CONTROL_TIMEOUT, "generator ports")
        pid: int | None = None
        if target == "direct":
            destinations = [(b, a) for a, b in phones]
        elif target == "minipbx":
            relay_end, relay_conn = ctx.Pipe()
            relay = ctx.Process(target=minipbx_relay, args=(relay_end, use_uvloop), daemon=True)
            relay.start()
            cleanup.append(lambda: _stop_minipbx(relay, relay_conn))
            relay_conn.send(("open", phones))
            destinations = _recv(relay_conn, CONTROL_TIMEOUT, "relay ports")
            pid = relay.pid
        else:
            stack = contextlib.ExitStack()
            cleanup.append(stack.close)
            process, ng = stack.enter_context(rtpengine(work))
            destinations = rtpengine_calls(ng, phones)
            pid = process.pid
        profiler = start_profiler(pid, seconds, work, target) if profile and pid else None
        cpu0 = cpu_seconds(pid) if pid else 0.0
        wall0 = time.monotonic()
        gen_conn.send(destinations)
        trial.traffic = _recv(gen_conn, seconds + DRAIN + CONTROL_TIMEOUT, "generator results")
        if pid:
            trial.relay_cpu = 100.0 * (cpu_seconds(pid) - cpu0) / (time.monotonic() - wall0)
        if target == "minipbx":
            relay_conn.send(("stats",))
            trial.relay_stats = _recv(relay_conn, CONTROL_TIMEOUT, "relay stats")
        if profiler is not None:
            profiler.wait(30)
    except (RuntimeError, OSError) as exc:
        trial.error = str(exc)
    finally:
        for step in reversed(cleanup):
            with contextlib.suppress(Exception):
                step()
        generator.join(5)
        if generator.is_alive():
            generator.kill()
    return trial


def _stop_minipbx(relay: Any, conn: multiprocessing.connection.Connection) -> None:
    with contextlib.suppress(OSError):
        conn.send(("stop",))
    relay.join(5)
    if relay.is_alive():
        relay.kill()
        relay.join(5)


def start_profiler(
    pid: int, seconds: float, work: Path, target: str
) -> subprocess.Popen[bytes] | None:
    """py-spy on the relay process for the run (``pip install py-spy`` into the venv)."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if target != "minipbx" or not Path(spy).exists():
        print(f"(no profile of {target}: py-spy missing or not a Python relay)")
        return None
    out = work / f"profile-{target}.txt"
    print(f"profiling {target} into {out}")
    return subprocess.Popen(
        [
            spy,
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


# -- report ---------------------------------------------------------------------------------------


def _f(value: float, digits: int = 2) -> str:
    return "-" if math.isnan(value) else f"{value:.{digits}f}"


def table(trials: Sequence[Trial]) -> list[str]:
    head = (
        f"{'target':<10} {'calls':>5} {'loss %':>8} {'p99 ms':>7} {'p50 ms':>7} {'max ms':>7}"
        f" {'a->b p99':>8} {'b->a p99':>8} {'relay CPU %':>11} {'gen CPU %':>9} {'gen late p99':>12}"
    )
    lines = [head, "-" * len(head)]
    for t in trials:
        if t.traffic is None:
            lines.append(f"{t.target:<10} {t.calls:>5}  failed: {t.error}")
            continue
        ab, ba = t.traffic.directions["a->b"], t.traffic.directions["b->a"]
        p50 = max(ab.jitter_ms[0], ba.jitter_ms[0])
        worst = max(ab.jitter_ms[2], ba.jitter_ms[2])
        lines.append(
            f"{t.target:<10} {t.calls:>5} {t.loss:>8.3f} {_f(t.p99()):>7} {_f(p50):>7}"
            f" {_f(worst):>7} {_f(ab.jitter_ms[1]):>8} {_f(ba.jitter_ms[1]):>8}"
            f" {_f(t.relay_cpu, 1):>11} {_f(t.traffic.generator_cpu, 1):>9}"
            f" {_f(t.traffic.late_p99_ms):>9} ms"
        )
        if ab.misrouted or t.error:
            lines.append(f"{'':<10}   misrouted {ab.misrouted} {t.error}")
    return lines


def ratios(trials: Sequence[Trial]) -> list[str]:
    """minipbx against rtpengine and direct, per call count."""
    lines = []
    by = {(t.target, t.calls): t for t in trials if t.traffic is not None}
    for calls in sorted({t.calls for t in trials}):
        ours, theirs, floor = (by.get((name, calls)) for name in ("minipbx", "rtpengine", "direct"))
        if ours is None:
            continue
        parts = [f"{calls} calls:"]
        if theirs is not None and theirs.relay_cpu > 0:
            parts.append(f"minipbx CPU = {ours.relay_cpu / theirs.relay_cpu:.1f} x rtpengine's;")
        if floor is not None:
            parts.append(f"p99 above direct: minipbx {ours.p99() - floor.p99():+.2f} ms")
            if theirs is not None:
                parts.append(f"rtpengine {theirs.p99() - floor.p99():+.2f} ms")
        lines.append(" ".join(parts))
    return lines


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description="media benchmarks (run by hand)")
    sub = p.add_subparsers(dest="command", required=True)
    relay = sub.add_parser("relay", help="the RTP relay against rtpengine and direct")
    relay.add_argument(
        "--calls", default="300", help="concurrent calls; a list runs each (300,500)"
    )
    relay.add_argument("--seconds", type=float, default=20.0, help="traffic per run (max 120)")
    relay.add_argument("--targets", default="direct,minipbx,rtpengine")
    relay.add_argument("--no-rtpengine", action="store_true", help="leave rtpengine out")
    relay.add_argument("--no-uvloop", action="store_true", help="minipbx on asyncio's own loop")
    relay.add_argument("--profile", action="store_true", help="py-spy the minipbx relay")
    args = p.parse_args(argv)
    return args


def bench_relay(args: argparse.Namespace) -> int:
    calls = [int(c) for c in str(args.calls).split(",")]
    if any(not 1 <= c <= 2000 for c in calls):
        raise SystemExit("--calls: 1..2000 each (4 relay ports per call)")
    seconds = min(max(args.seconds, 2.0), 120.0)
    targets = [t for t in args.targets.split(",") if t]
    if args.no_rtpengine:
        targets = [t for t in targets if t != "rtpengine"]
    use_uvloop = not args.no_uvloop
    if use_uvloop:
        try:
            import uvloop  # noqa: F401
        except ImportError:
            use_uvloop = False
    raise_fd_limit()
    work = Path(tempfile.mkdtemp(prefix="minipbx-media-bench-"))
    print(
        f"relay bench: {seconds:.0f} s per run, 20 ms packets of {PACKET_SIZE} bytes both ways,"
        f" minipbx on {'uvloop' if use_uvloop else 'asyncio'}; files in {work}",
        flush=True,
    )
    trials = []
    for count in calls:
        for target in targets:
            print(f"  {target} x {count} calls ...", flush=True)
            trials.append(run_trial(target, count, seconds, work, use_uvloop, args.profile))
    print()
    print("\n".join(table(trials)))
    print()
    print("\n".join(ratios(trials)))
    missed = [t for t in trials if t.target == "minipbx" and not t.meets_target()]
    for t in missed:
        print(
            f"minipbx misses the target at {t.calls} calls (loss < {TARGET_LOSS} %, p99 < {TARGET_P99} ms)"
        )
    for t in trials:
        if t.relay_stats:
            print(f"minipbx relay counters at {t.calls} calls: {t.relay_stats}")
    return 1 if missed else 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.command == "relay":
        return bench_relay(args)
    raise SystemExit(f"unknown command {args.command}")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
