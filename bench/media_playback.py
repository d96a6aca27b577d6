"""Concurrent prompt playbacks: pacing and loss of MediaEndpoint against a bare-bones sender.

Three processes per phase, all on loopback:

- a **receiver** that timestamps every RTP packet on arrival (``time.monotonic_ns`` right
  after ``recv_into``; only the 12-byte header is kept);
- a **sender**, one of:
  - ``baseline``: the same event loop (uvloop if importable) pacing N streams with one
    ``call_at`` timer each and a pre-built packet whose header is patched in place: the
    least work an asyncio sender can do per frame;
  - ``minipbx``: N :class:`~minipbx.transport.media_endpoint.MediaEndpoint` s made by
    ``MediaEndpoint.answer`` from an SDP offer naming the receiver, each playing a tone of
    ``--seconds`` (comfort silence before and after, as in a call).

Both senders start stream ``i`` at ``T0 + i * --start-interval`` (20.1 ms by default, so the
streams' 20 ms grids are spread evenly and all N overlap after the ramp). For each stream
the ideal arrival of packet ``k`` is ``first arrival + (seq_k - seq_first) * 20 ms``; the
pacing error is the arrival minus that. Loss is the sequence numbers never seen.

Run: ``.venv/bin/python bench/media_playback.py --playbacks 200 --seconds 20``.
Prints one row per sender and the ratio minipbx / baseline (DESIGN.md: benchmarks report
ratios against a baseline measured in the same run).
"""

from __future__ import annotations

import argparse
import array
import asyncio
import contextlib
import gc
import multiprocessing
import os
import resource
import socket
import struct
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

import numpy as np

PTIME = 0.02
HEADER = 12
EARLY = 0.001  # same tolerance as minipbx.transport.media_endpoint


def _new_loop() -> tuple[asyncio.AbstractEventLoop, str]:
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop(), "asyncio"
    return uvloop.new_event_loop(), "uvloop"


def _gc_probe(tune: bool) -> list[float]:
    """Collect the pause of every cyclic-GC pass; with ``tune``, first do what
    ``minipbx.app._tune_gc`` does at start-up (freeze what is alive, raise the thresholds)."""
    if tune:
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
    pauses: list[float] = []
    started = [0.0]

    def hook(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            started[0] = time.perf_counter()
        else:
            pauses.append(time.perf_counter() - started[0])

    gc.callbacks.append(hook)
    return pauses


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# -- receiver ----------------------------------------------------------------------------------


def receiver(conn: Connection, capacity: int) -> None:
    """Bind an RTP/RTCP pair on loopback, report the port, timestamp packets until told."""
    rtp = rtcp = None
    for port in range(38000, 39000, 2):
        try:
            rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtp.bind(("127.0.0.1", port))
            rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            rtcp.bind(("127.0.0.1", port + 1))  # RTCP lands here (ignored), no ICMP errors
            break
        except OSError:
            for sock in (rtp, rtcp):
                if sock is not None:
                    sock.close()
            rtp = rtcp = None
    assert rtp is not None and rtcp is not None, "no free port pair in 38000-38999"
    rtp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 * 1024 * 1024)
    rtp.settimeout(0.1)
    headers = bytearray(HEADER * capacity)
    view = memoryview(headers)
    times = array.array("q")
    clock = time.monotonic_ns
    conn.send(rtp.getsockname()[1])
    count = 0
    while count < capacity:
        try:
            rtp.recv_into(view[count * HEADER : (count + 1) * HEADER], HEADER)
        except TimeoutError:
            if conn.poll():
                break
            continue
        times.append(clock())
        count += 1
        if not count & 1023 and conn.poll():
            break
    conn.recv()
    conn.send((bytes(headers[: count * HEADER]), times.tobytes()))
    rtp.close()
    rtcp.close()


# -- senders -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """What every sender does: N streams, stream i starting at t0 + i * interval."""

    playbacks: int
    seconds: float
    interval: float
    port: int
    lead: float  # seconds from the sender being ready to stream 0's start
    tune_gc: bool

    def start(self) -> float:
        """time.monotonic() of stream 0's start, once the sender has imported and set up."""
        return time.monotonic() + self.lead


def baseline(conn: Connection, plan: Plan) -> None:
    """N streams paced by call_at on the same kind of loop, minimal work per packet."""
    loop, name = _new_loop()
    asyncio.set_event_loop(loop)
    destination = ("127.0.0.1", plan.port)
    frames = round(plan.seconds / PTIME)
    pending = plan.playbacks
    done = loop.create_future()
    offset = time.monotonic() - loop.time()  # loop clock -> time.monotonic()
    t0 = plan.start()

    def stream(i: int) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind(("127.0.0.1", 0))
        sock.setblocking(False)
        packet = bytearray(HEADER + 160)
        packet[HEADER:] = b"\x55" * 160
        anchor = t0 + i * plan.interval - offset
        k = 0

        def tick() -> None:
            nonlocal k, pending
            now = loop.time() + EARLY
            while k < frames and anchor + k * PTIME <= now:
                struct.pack_into("!BBHII", packet, 0, 0x80, 0, k & 0xFFFF, 160 * k, 1000 + i)
                with contextlib.suppress(BlockingIOError):
                    sock.sendto(packet, destination)
                k += 1
            if k < frames:
                loop.call_at(anchor + k * PTIME, tick)
            else:
                sock.close()
                pending -= 1
                if not pending:
                    done.set_result(None)

        loop.call_at(anchor, tick)

    for i in range(plan.playbacks):
        stream(i)
    pauses = _gc_probe(plan.tune_gc)
    cpu = _cpu_seconds()
    wall = time.monotonic()
    loop.run_until_complete(done)
    conn.send(
        {
            "loop": name,
            "cpu": _cpu_seconds() - cpu,
            "wall": time.monotonic() - wall,
            "gc_max_ms": 1000 * max(pauses, default=0.0),
        }
    )
    loop.close()


def minipbx(conn: Connection, plan: Plan) -> None:
    """N MediaEndpoints answering an offer that names the receiver, each playing a tone."""
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from minipbx.media.player import tone
    from minipbx.transport.media_endpoint import MediaEndpoint
    from minipbx.transport.rtp import RtpPortPool

    loop, name = _new_loop()
    asyncio.set_event_loop(loop)
    pool = RtpPortPool("127.0.0.1", 30000, 37998)
    prompt = tone(440, plan.seconds, level=-12)
    offer = (
        "v=0\r\no=bench 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
        f"m=audio {plan.port} RTP/AVP 0 101\r\na=rtpmap:101 telephone-event/8000\r\n"
    ).encode()
    offset = time.monotonic() - loop.time()
    t0 = plan.start()
    skipped = 0
    answer_cost: list[float] = []

    async def run(i: int) -> None:
        nonlocal skipped
        await asyncio.sleep(t0 + i * plan.interval - offset - loop.time())
        started = time.perf_counter()
        endpoint, _ = await MediaEndpoint.answer(
            offer, address="127.0.0.1", ports=pool, session_id=i, name=f"bench-{i}"
        )
        answer_cost.append(time.perf_counter() - started)
        try:
            await endpoint.play(prompt)
        finally:
            skipped += endpoint.session.player.skipped
            endpoint.close()

    async def main() -> None:
        await asyncio.gather(*(run(i) for i in range(plan.playbacks)))

    pauses = _gc_probe(plan.tune_gc)
    cpu = _cpu_seconds()
    wall = time.monotonic()
    loop.run_until_complete(main())
    conn.send(
        {
            "loop": name,
            "cpu": _cpu_seconds() - cpu,
            "wall": time.monotonic() - wall,
            "gc_max_ms": 1000 * max(pauses, default=0.0),
            "skipped": skipped,
            "answer_ms": 1000 * float(np.mean(answer_cost)),
        }
    )
    loop.close()


# -- orchestration and analysis ------------------------------------------------------------------


@dataclass
class Result:
    name: str
    packets: int
    lost: int
    streams: int
    errors_ms: np.ndarray  # |arrival - ideal| of every packet
    cpu_percent: float
    info: dict[str, Any]


def analyse(name: str, headers: bytes, times: bytes, info: dict[str, Any]) -> Result:
    raw = np.frombuffer(headers, dtype=np.uint8).reshape(-1, HEADER)
    seqs = raw[:, 2].astype(np.int64) << 8 | raw[:, 3]
    ssrcs = np.frombuffer(raw[:, 8:12].tobytes(), dtype=">u4")
    arrivals = np.frombuffer(times, dtype=np.int64) / 1e9
    errors, lost = [], 0
    streams = np.unique(ssrcs)
    for ssrc in streams:
        mine = ssrcs == ssrc
        seq, arrival = seqs[mine], arrivals[mine]
        step = (np.diff(seq) + 0x8000) % 0x10000 - 0x8000  # unwrap 16-bit sequence numbers
        extended = np.concatenate([[0], np.cumsum(step)])
        ideal = arrival[0] + extended * PTIME
        errors.append(arrival - ideal)
        lost += int(extended.max() - extended.min() + 1) - len(np.unique(extended))
    all_errors = np.abs(np.concatenate(errors)) * 1000 if errors else np.zeros(1)
    cpu = 100 * info["cpu"] / info["wall"] if info["wall"] else 0.0
    return Result(name, len(arrivals), lost, len(streams), all_errors, cpu, info)


def run_phase(name: str, target: Callable[..., None], args: argparse.Namespace) -> Result:
    ctx = multiprocessing.get_context("spawn")
    capacity = int(
        args.playbacks * (args.seconds + args.playbacks * args.start_interval + 5) / PTIME
    )
    ours, theirs = ctx.Pipe()
    receiving = ctx.Process(target=receiver, args=(theirs, capacity), daemon=True)
    receiving.start()
    port = ours.recv()
    plan = Plan(args.playbacks, args.seconds, args.start_interval, port, 0.5, not args.default_gc)
    sender_end, sender_conn = ctx.Pipe()
    sending = ctx.Process(target=target, args=(sender_conn, plan), daemon=True)
    sending.start()
    deadline = time.monotonic() + args.seconds + args.playbacks * args.start_interval + 60
    if not sender_end.poll(max(deadline - time.monotonic(), 1)):
        sending.kill()
        raise SystemExit(f"{name}: sender did not finish in time")
    info = sender_end.recv()
    sending.join()
    time.sleep(0.3)  # the last packets in flight
    ours.send("stop")
    headers, times = ours.recv()
    receiving.join()
    return analyse(name, headers, times, info)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--playbacks", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0, help="prompt length")
    parser.add_argument(
        "--start-interval",
        type=float,
        default=0.0201,
        help="seconds between stream starts (20 ms + 20 ms/N spreads the grids evenly)",
    )
    parser.add_argument("--only", choices=("baseline", "minipbx"), help="run one sender")
    parser.add_argument(
        "--default-gc",
        action="store_true",
        help="leave CPython's GC settings alone (the app freezes and raises them at start-up)",
    )
    args = parser.parse_args()
    if args.playbacks < 1 or args.seconds <= 0 or args.seconds > 600 or args.playbacks > 2000:
        parser.error("1-2000 playbacks of at most 600 s")
    phases = [("baseline", baseline), ("minipbx", minipbx)]
    results = [run_phase(n, t, args) for n, t in phases if args.only in (None, n)]
    print(
        f"media_playback: {args.playbacks} playbacks x {args.seconds:g} s,"
        f" loop={results[0].info['loop']}, cpus={os.cpu_count()},"
        f" start interval {args.start_interval * 1000:g} ms,"
        f" gc {'default' if args.default_gc else 'tuned as the app'}"
    )
    print(
        f"{'sender':<10}{'streams':>8}{'packets':>10}{'lost':>7}"
        f"{'p50 ms':>9}{'p99 ms':>9}{'p99.9 ms':>10}{'max ms':>9}{'cpu %':>8}{'gc max ms':>11}"
    )
    for r in results:
        p50, p99, p999 = np.percentile(r.errors_ms, [50, 99, 99.9])
        print(
            f"{r.name:<10}{r.streams:>8}{r.packets:>10}{r.lost:>7}"
            f"{p50:>9.2f}{p99:>9.2f}{p999:>10.2f}{r.errors_ms.max():>9.2f}{r.cpu_percent:>8.1f}"
            f"{r.info['gc_max_ms']:>11.1f}"
        )
    if len(results) == 2:
        base, ours = results
        b99, o99 = (np.percentile(r.errors_ms, 99) for r in results)
        print(
            f"ratio minipbx/baseline: p99 x{o99 / b99:.2f},"
            f" cpu x{ours.cpu_percent / max(base.cpu_percent, 1e-9):.2f};"
            f" frames skipped (>200 ms late): {ours.info['skipped']};"
            f" answer() {ours.info['answer_ms']:.2f} ms each"
        )
        verdict = "met" if o99 < 5.0 and ours.lost == 0 else "MISSED"
        print(f"target p99 < 5 ms with no loss at {args.playbacks} playbacks: {verdict}")


if __name__ == "__main__":
    main()
