"""SIP load benchmark of a running ``minipbx``, driven by SIPp, run by hand.

    .venv/bin/python bench/sip_load.py [--quick] [--profile]

Everything runs on loopback, every SIPp run is bounded (``-m`` and ``-timeout``) and every
process started here is stopped at the end, also on Ctrl-C or failure. Three parts, each
figure printed beside the same scenario played SIPp-to-SIPp directly in the same run:

1. Registrations: N users (20,000; ``--quick`` 2,000) do REGISTER, 401, REGISTER with
   credentials, 200 at the highest rate the server sustains: SIPp asks for a rate far above
   it (``-r``) with at most ``-l`` registrations in flight, so it sends the next one as soon
   as one finishes; achieved rate = successful / elapsed. Baseline: the same client against
   a SIPp registrar that challenges and checks the digest (``reg_uas.xml``).
2. Calls: a SIPp caller authenticates its INVITE (407) and hangs up at once; the callee is a
   SIPp UAS whose contact a REGISTER from another port bound. Same closed loop. Baseline:
   the caller against a SIPp UAS that challenges with 407 and answers.
3. Memory: resident memory (``VmRSS``) of a fresh server before and after M registrations
   (50,000; 5,000) and with K established calls (10,000; 1,000; long hold, limited call
   rate), each read once the server's transactions have ended (``--settle``, > 32 s of
   timers J/L). Baseline: SIPp keeping the same registrations and calls as open calls
   (registrar UAS; caller + callee UAS for a call, as the B2BUA holds both legs).
4. Soak: on a fresh server, S warm-up calls (100,000; ``--quick`` 10,000: RSS keeps the
   peak of what was alive at once, and the bounded tables, e.g. a digest nonce per call up
   to 100,000, must be full first), settle, then S calls more, settle: the server's state
   counts (``event=state``, logged on SIGUSR1: calls, transactions, timers...) must be the
   same ("no growth"); RSS and the live small allocations (``python_blocks``) are printed
   beside them. No SIPp baseline.

minipbx challenges with SHA-256 first and MD5 second (RFC 8760); SIPp 3.6.1 answers only the
first challenge and knows only MD5. ``scenarios/md5_only.c`` (built here with gcc, loaded
into the client SIPp with LD_PRELOAD, in both runs) drops the SHA-256 challenge line from
what SIPp receives, so it answers the MD5 one, as a phone that speaks only MD5 does.

Raw SIPp screen/error/count files, the server logs and a ``results.json`` stay in a
temporary directory whose path is printed. Exit status 1 when a run had failures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from scenarios import csvgen, materialize
from sipp_kit import (
    HOST,
    TIMER_SLACK,
    Bench,
    Procs,
    Run,
    Server,
    StopRequestedError,
    error_excerpt,
    established,
    free_port,
    hung_up,
    on_sigterm,
    parse_screen,
    rss,
    run_client,
    summarize_profile,
)

TARGETS = {"reg_rate": 3000.0, "call_rate": 600.0, "reg_bytes": 2048.0, "call_bytes": 20480.0}
TARGET_TEXT = {
    "registrations/s": ">= 3,000",
    "calls/s": ">= 600",
    "memory/registration": "< 2 KiB",
    "memory/call": "< 20 KiB",
}


# --- part 1: registrations ---------------------------------------------------------------------


def registrations(bench: Bench, target: int, users: Sequence[str], name: str) -> list[str]:
    """The command line of a client registering ``users`` at ``target`` as fast as served."""
    port = free_port()
    inj = bench.work / f"{name}.csv"
    csvgen.write_registrations(inj, users, port)
    argv = bench.sipp_argv(
        name,
        materialize("reg_uac.xml", bench.work),
        port=port,
        calls=len(users),
        timeout=bench.timeout_for(len(users)),
        target=target,
        extra=["-inf", str(inj), "-recv_timeout", "10000", *bench.closed_loop()],
    )
    return argv


def bench_registrations(bench: Bench, server: Server, users: Sequence[str]) -> tuple[Run, Run]:
    """Part 1: the server, then the SIPp registrar, each with ``users``."""
    argv = registrations(bench, server.port, users, "reg-minipbx")
    pbx = run_client(
        bench, "reg-minipbx", argv, len(users), watch={"minipbx": server.pid}, server=server
    )
    print("  " + pbx.summary(), flush=True)
    count = len(users)
    uas, port = bench.uas(
        "reg-sipp-uas",
        materialize("reg_uas.xml", bench.work),
        calls=count,
        timeout=bench.timeout_for(count),
    )
    argv = registrations(bench, port, users, "reg-sipp")
    base = run_client(
        bench,
        "reg-sipp",
        argv,
        count,
        watch={"sipp_uas": uas.pid},
        servers_done=[("reg-sipp-uas", uas)],
    )
    print("  " + base.summary(), flush=True)
    return pbx, base


# --- part 2: calls -----------------------------------------------------------------------------


def caller_argv(
    bench: Bench,
    name: str,
    target: int,
    count: int,
    *,
    hold_ms: int | None = None,
    rate: list[str],
    extra: Sequence[str] = (),
) -> list[str]:
    """A caller placing ``count`` authenticated calls to the callee at ``target``."""
    inj = bench.work / f"{name}.csv"
    csvgen.write_calls(inj, csvgen.extensions(min(count, bench.args.users)))
    scenario = materialize("call_uac.xml", bench.work, hold=hold_ms is not None)
    # SIPp puts sip:remote_ip:remote_port in the digest uri unless told (RFC 3261 22.4:
    # minipbx wants the Request-URI).
    auth_uri = f"{csvgen.CALLEE}@{HOST}:{target}"
    opts = ["-inf", str(inj), "-auth_uri", auth_uri, *rate, *extra]
    if hold_ms is not None:
        opts += ["-d", str(hold_ms)]
    timeout = bench.timeout_for(count, (hold_ms or 0) / 1000.0)
    return bench.sipp_argv(
        name, scenario, port=free_port(), calls=count, timeout=timeout, target=target, extra=opts
    )


def calls_through(bench: Bench, server: Server, name: str, count: int, *, watch: bool) -> Run:
    """``count`` closed-loop calls through ``server`` to a SIPp UAS (``name``-callee) that
    registered just before; ``watch``: sample the CPU of the server and the callee."""
    callee, callee_port = bench.uas(
        f"{name}-callee",
        materialize("call_uas_callee.xml", bench.work),
        calls=count,
        timeout=bench.timeout_for(count),
    )
    server.register_contact(csvgen.CALLEE, callee_port)
    argv = caller_argv(bench, name, server.port, count, rate=bench.closed_loop())
    return run_client(
        bench,
        name,
        argv,
        count,
        watch={"minipbx": server.pid, "sipp_callee": callee.pid} if watch else {},
        server=server,
        servers_done=[(f"{name}-callee", callee)],
    )


def bench_calls(bench: Bench, server: Server, count: int) -> tuple[Run, Run]:
    """Part 2: calls through the server to a registered SIPp UAS, then SIPp to SIPp."""
    timeout = bench.timeout_for(count)
    pbx = calls_through(bench, server, "call-minipbx", count, watch=True)
    print("  " + pbx.summary(), flush=True)
    uas, port = bench.uas(
        "call-sipp-uas",
        materialize("call_uas_challenge.xml", bench.work),
        calls=count,
        timeout=timeout,
    )
    argv = caller_argv(bench, "call-sipp", port, count, rate=bench.closed_loop())
    base = run_client(
        bench,
        "call-sipp",
        argv,
        count,
        watch={"sipp_uas": uas.pid},
        servers_done=[("call-sipp-uas", uas)],
    )
    print("  " + base.summary(), flush=True)
    return pbx, base


# --- part 3: memory ----------------------------------------------------------------------------


@dataclass
class Memory:
    """Resident memory figures of part 3 (bytes)."""

    regs: int
    calls: int
    server_start: int = 0  # fresh server, users loaded
    server_regs_peak: int = 0  # right after the registrations
    server_regs: int = 0  # after --settle seconds
    server_call_start: int = 0  # another fresh server, callee registered
    server_calls_up: int = 0  # when the last call was established
    server_calls: int = 0  # --settle seconds later, calls still up
    server_after_calls: int = 0  # once every call has ended
    sipp_reg_before: int = 0
    sipp_reg_after: int = 0
    sipp_uas_before: int = 0
    sipp_uas_after: int = 0
    sipp_uac_before: int = 0
    sipp_uac_after: int = 0
    runs: list[Run] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def per_reg(self) -> float:
        """Server bytes per registration."""
        return (self.server_regs - self.server_start) / self.regs

    @property
    def per_call(self) -> float:
        """Server bytes per established call."""
        return (self.server_calls - self.server_call_start) / self.calls

    @property
    def sipp_per_reg(self) -> float:
        """SIPp registrar bytes per registration kept as an open call."""
        return (self.sipp_reg_after - self.sipp_reg_before) / self.regs

    @property
    def sipp_per_call(self) -> float:
        """SIPp bytes per call, caller plus callee (the B2BUA holds both legs)."""
        both = self.sipp_uas_after - self.sipp_uas_before + self.sipp_uac_after
        return (both - self.sipp_uac_before) / self.calls


def counts_file(bench: Bench, scenario: Path, pid: int) -> Path:
    """Where SIPp's ``-trace_counts`` of process ``pid`` goes."""
    return bench.work / f"{scenario.stem}_{pid}_counts.csv"


def wait_established(
    path: Path, count: int, proc: subprocess.Popen[bytes], timeout: float
) -> Iterator[int]:
    """Yield the established-call count about every 0.2 s until it reaches ``count``."""
    deadline = time.monotonic() + timeout
    while True:
        up = established(path)
        yield up
        if up >= count:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"caller exited with {proc.returncode} after {up} calls")
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {up} of {count} calls established after {timeout:.0f} s")
        time.sleep(0.2)


def memory_registrations(bench: Bench, server: Server, mem: Memory, users: list[str]) -> None:
    """Server and SIPp-registrar memory before and after ``users`` register."""
    time.sleep(2.0)
    mem.server_start = server.rss()
    argv = registrations(bench, server.port, users, "mem-reg-minipbx")
    run = run_client(
        bench, "mem-reg-minipbx", argv, len(users), watch={"minipbx": server.pid}, server=server
    )
    print("  " + run.summary(), flush=True)
    mem.runs.append(run)
    mem.server_regs_peak = server.rss()
    time.sleep(bench.args.settle)
    mem.server_regs = server.rss()
    hold = int(bench.timeout_for(len(users)) * 1000)
    uas, port = bench.uas(
        "mem-reg-sipp-uas",
        materialize("reg_uas.xml", bench.work, hold=True),
        calls=len(users),
        timeout=hold / 1000 + TIMER_SLACK,
        extra=["-d", str(hold), "-l", str(len(users) + 1000)],
    )
    time.sleep(0.5)
    mem.sipp_reg_before = rss(uas.pid)
    argv = registrations(bench, port, users, "mem-reg-sipp")
    run = run_client(bench, "mem-reg-sipp", argv, len(users), watch={"sipp_uas": uas.pid})
    print("  " + run.summary(), flush=True)
    mem.runs.append(run)
    mem.sipp_reg_after = rss(uas.pid)
    Procs.stop(uas)


def memory_calls(bench: Bench, server: Server, mem: Memory) -> None:
    """Server memory with ``mem.calls`` calls up (after --settle), then after they end."""
    count, rate = mem.calls, bench.args.mem_call_rate
    ramp = count / rate
    hold_ms = int((ramp + bench.args.settle + 20.0) * 1000)
    callee, callee_port = bench.uas(
        "mem-call-minipbx-callee",
        materialize("call_uas_callee.xml", bench.work),
        calls=count,
        timeout=bench.timeout_for(count, 2 * hold_ms / 1000),
        extra=["-l", str(count + 1000), "-recv_timeout", str(hold_ms + 60_000)],
    )
    server.register_contact(csvgen.CALLEE, callee_port)
    time.sleep(2.0)
    mem.server_call_start = server.rss()
    name = "mem-call-minipbx"
    limit = ["-r", str(rate), "-l", str(count + 1000), "-trace_counts", "-fd", "1"]
    argv = caller_argv(bench, name, server.port, count, hold_ms=hold_ms, rate=limit)
    mark, start = server.log_mark(), time.monotonic()
    caller = bench.procs.start(name, argv, cwd=bench.work, env=bench.client_env())
    counts = counts_file(bench, materialize("call_uac.xml", bench.work, hold=True), caller.pid)
    for _ in wait_established(counts, count, caller, ramp * 3 + 60):
        pass
    mem.server_calls_up = server.rss()
    print(f"  {count} calls up after {time.monotonic() - start:.1f} s", flush=True)
    time.sleep(bench.args.settle)
    if hung_up(counts) or caller.poll() is not None:
        mem.notes.append("some calls ended before the settled measurement: raise the hold")
    mem.server_calls = server.rss()
    caller.wait(bench.timeout_for(count, 2 * hold_ms / 1000))
    with contextlib.suppress(subprocess.TimeoutExpired):
        callee.wait(10.0)
    Procs.stop(callee)
    mem.server_after_calls = server.rss()
    run = Run(name, count, parse_screen(bench.work / f"{name}.screen"), caller.returncode, 0.0)
    run.wall = time.monotonic() - start
    run.held = True
    run.peers_failed[f"{name}-callee"] = parse_screen(bench.work / f"{name}-callee.screen").failed
    run.errors = error_excerpt(bench.work / f"{name}.errors")
    run.server_log = server.log_levels(mark)
    print("  " + run.summary(), flush=True)
    mem.runs.append(run)


def memory_calls_baseline(bench: Bench, mem: Memory) -> None:
    """SIPp caller and SIPp UAS holding the same number of calls: their memory per call."""
    count = mem.calls
    rate = max(bench.args.mem_call_rate, 1000)
    hold_ms = int((count / rate + 60.0) * 1000)  # stopped once measured
    uas, port = bench.uas(
        "mem-call-sipp-uas",
        materialize("call_uas_challenge.xml", bench.work),
        calls=count,
        timeout=bench.timeout_for(count, 2 * hold_ms / 1000),
        extra=["-l", str(count + 1000), "-recv_timeout", str(hold_ms + 60_000)],
    )
    name = "mem-call-sipp"
    control = free_port()
    # The caller starts idle (-r 0) so its memory can be read before any call; the rate is
    # then set through its control port (what typing ":set rate N" in its screen does).
    limit = ["-r", "0", "-l", str(count + 1000), "-trace_counts", "-fd", "1", "-cp", str(control)]
    argv = caller_argv(bench, name, port, count, hold_ms=hold_ms, rate=limit)
    caller = bench.procs.start(name, argv, cwd=bench.work, env=bench.client_env())
    time.sleep(1.0)
    mem.sipp_uas_before = rss(uas.pid)
    mem.sipp_uac_before = rss(caller.pid)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.sendto(f"cset rate {rate}\n".encode(), (HOST, control))
    counts = counts_file(bench, materialize("call_uac.xml", bench.work, hold=True), caller.pid)
    for _ in wait_established(counts, count, caller, count / rate * 3 + 60):
        pass
    time.sleep(1.0)
    mem.sipp_uas_after = rss(uas.pid)
    mem.sipp_uac_after = rss(caller.pid)
    print(f"  SIPp-SIPp: {established(counts)} calls up, caller and callee measured", flush=True)
    Procs.stop(caller)
    Procs.stop(uas)


def bench_memory(bench: Bench, regs: int, calls: int) -> Memory:
    """Part 3: registrations and calls each on a fresh server.

    One server for both would hide the calls: they reuse the memory the registrations'
    transactions freed (the allocator keeps it), and RSS would hardly move.
    """
    mem = Memory(regs=regs, calls=calls)
    users = csvgen.extensions(regs)
    for name, part in (("memory-reg", "reg"), ("memory-call", "call")):
        if part == "call":
            users = csvgen.extensions(min(calls, bench.args.users))
        server = Server(bench, name, [*users, csvgen.CALLEE])
        server.start()
        if part == "reg":
            memory_registrations(bench, server, mem, users)
        else:
            memory_calls(bench, server, mem)
        status = server.stop()
        if status not in (0, None):
            mem.notes.append(f"server {name} exited with status {status}")
    memory_calls_baseline(bench, mem)
    return mem


# --- part 4: soak ------------------------------------------------------------------------------


# Counts reported but not compared: each run's SIPp callee registers from its own port (one
# more binding), the digest nonces are a bounded table (100,000, 300 s each), and the live
# small allocations (python_blocks) move with both and with the caches.
SOAK_OTHER = ("bindings", "digest_nonces", "python_blocks")


@dataclass
class Soak:
    """Part 4: the server's state and memory before and after a long run of calls."""

    warmup: int
    calls: int
    rss_before: int = 0
    rss_after: int = 0
    state_before: dict[str, int] = field(default_factory=dict)
    state_after: dict[str, int] = field(default_factory=dict)
    runs: list[Run] = field(default_factory=list)

    @property
    def per_call(self) -> float:
        """RSS growth per call of the long run (bytes)."""
        return (self.rss_after - self.rss_before) / self.calls

    @property
    def grown(self) -> dict[str, tuple[int, int]]:
        """State counts that differ after the long run: name -> (before, after)."""
        names = sorted((set(self.state_before) | set(self.state_after)) - set(SOAK_OTHER))
        pairs = {n: (self.state_before.get(n, 0), self.state_after.get(n, 0)) for n in names}
        return {n: pair for n, pair in pairs.items() if pair[0] != pair[1]}

    @property
    def met(self) -> bool:
        """No growth: every call-state count is back where it was. RSS is reported, not
        judged: CPython's allocator keeps arenas that still hold a few live objects, so it
        is not a count of what is live (``python_blocks`` is)."""
        return bool(self.state_after) and not self.grown


def bench_soak(bench: Bench, warmup: int, count: int) -> Soak:
    """Part 4 on a fresh server: ``warmup`` calls, settle, read state and RSS; ``count``
    calls more, settle, read them again (issue: no growth after 100,000 calls)."""
    soak = Soak(warmup, count)
    users = csvgen.extensions(min(max(warmup, count), bench.args.users))
    server = Server(bench, "soak-server", [*users, csvgen.CALLEE])
    server.start()
    try:
        for name, calls in (("soak-warmup", warmup), ("soak", count)):
            run = calls_through(bench, server, name, calls, watch=True)
            print("  " + run.summary(), flush=True)
            soak.runs.append(run)
            time.sleep(bench.args.settle)
            state, memory = server.state(), server.rss()
            if name == "soak-warmup":
                soak.state_before, soak.rss_before = state, memory
            else:
                soak.state_after, soak.rss_after = state, memory
            print(f"  settled: RSS {memory / 1024 / 1024:.1f} MiB, state {state}", flush=True)
    finally:
        status = server.stop()
        if status not in (0, None):
            print(f"  server soak-server exited with status {status}", flush=True)
    return soak


def soak_details(soak: Soak) -> list[str]:
    """The soak part's outcome, in words."""
    mib = 1024 * 1024
    grown = ", ".join(f"{n} {a} -> {b}" for n, (a, b) in soak.grown.items()) or "none"
    other = ", ".join(
        f"{n} {soak.state_before.get(n, 0)} -> {soak.state_after.get(n, 0)}" for n in SOAK_OTHER
    )
    return [
        f"soak: {soak.calls:,} calls after {soak.warmup:,} warm-up, each read once settled: "
        f"RSS {soak.rss_before / mib:.1f} -> {soak.rss_after / mib:.1f} MiB "
        f"({_kib(soak.per_call)} per call); call-state counts that changed: {grown} "
        f"(not compared: {other}); no growth: {'yes' if soak.met else 'no'}",
    ]


# --- profile -----------------------------------------------------------------------------------


def profile_server(bench: Bench, server: Server, calls: int) -> None:
    """Extra runs with py-spy sampling the server (figures of these runs are not reported)."""
    pyspy = Path(sys.executable).with_name("py-spy")
    if not pyspy.exists():
        print("  py-spy is not installed in the venv: no profile", flush=True)
        return
    for part in ("reg", "call"):
        raw = bench.work / f"profile-{part}.txt"
        argv = [str(pyspy), "record", "--pid", str(server.pid), "-f", "raw", "-o", str(raw)]
        spy = bench.procs.start(f"py-spy-{part}", [*argv, "-r", "250"], cwd=bench.work)
        time.sleep(1.0)
        name = f"profile-{part}"
        if part == "reg":
            users = csvgen.extensions(min(bench.args.users, 5000))
            client = registrations(bench, server.port, users, name)
            run = run_client(bench, name, client, len(users), watch={}, server=server)
        else:
            run = calls_through(bench, server, name, calls, watch=False)
        print("  (profiled) " + run.summary(), flush=True)
        os.kill(spy.pid, signal.SIGINT)  # py-spy writes its output on SIGINT
        with contextlib.suppress(subprocess.TimeoutExpired):
            spy.wait(30.0)
        Procs.stop(spy)
        if raw.exists():
            summary = summarize_profile(raw)
            (bench.work / f"profile-{part}-summary.txt").write_text(summary + "\n")
            print(f"  profile of the server under {part} load:\n" + _indent(summary, 4))


def _indent(text: str, width: int) -> str:
    return "\n".join(" " * width + line for line in text.splitlines())


# --- report ------------------------------------------------------------------------------------


def _kib(value: float) -> str:
    return f"{value / 1024:,.2f} KiB"


def _ratio(ours: float, theirs: float) -> str:
    return f"{ours / theirs:.2f}" if theirs > 0 else "-"


def _row(cells: Sequence[str]) -> str:
    widths = (38, 13, 13, 7, 11, 4)
    return "  ".join(
        c.ljust(w) if i == 0 else c.rjust(w)
        for i, (c, w) in enumerate(zip(cells, widths, strict=True))
    )


def table(results: dict[str, object]) -> list[str]:
    """The final table: each figure beside SIPp-to-SIPp and their ratio."""
    lines = [_row(["figure", "minipbx", "SIPp-SIPp", "ratio", "target", "met"])]

    def add(label: str, ours: float, theirs: float, text: tuple[str, str], met: bool) -> None:
        lines.append(
            _row(
                [
                    label,
                    text[0],
                    text[1],
                    _ratio(ours, theirs),
                    TARGET_TEXT[label.split(" (")[0]],
                    "yes" if met else "no",
                ]
            )
        )

    for key, label, target in (
        ("registrations", "registrations/s ({:,}, digest)", "reg_rate"),
        ("calls", "calls/s ({:,}, 407, no hold)", "call_rate"),
    ):
        pair = results.get(key)
        if isinstance(pair, tuple):
            pbx, base = pair
            add(
                label.format(pbx.expected),
                pbx.rate,
                base.rate,
                (f"{pbx.rate:,.0f}", f"{base.rate:,.0f}"),
                pbx.ok and pbx.rate >= TARGETS[target],
            )
    mem = results.get("memory")
    if isinstance(mem, Memory):
        for label, ours, theirs, target in (
            (f"memory/registration ({mem.regs:,})", mem.per_reg, mem.sipp_per_reg, "reg_bytes"),
            (f"memory/call ({mem.calls:,} up)", mem.per_call, mem.sipp_per_call, "call_bytes"),
        ):
            add(label, ours, theirs, (_kib(ours), _kib(theirs)), ours < TARGETS[target])
    return lines


def all_runs(results: dict[str, object]) -> list[Run]:
    """Every SIPp run whose zero-failure outcome counts."""
    runs: list[Run] = []
    for value in results.values():
        if isinstance(value, tuple):
            runs += [r for r in value if isinstance(r, Run)]
        elif isinstance(value, Memory | Soak):
            runs += value.runs
    return runs


def memory_details(mem: Memory) -> list[str]:
    """The raw resident-memory readings behind the two memory figures."""
    mib = 1024 * 1024
    return [
        f"server RSS: start {mem.server_start / mib:.1f} MiB; after {mem.regs:,} registrations "
        f"{mem.server_regs_peak / mib:.1f} MiB, settled {mem.server_regs / mib:.1f} MiB; "
        f"fresh server {mem.server_call_start / mib:.1f} MiB, "
        f"{mem.calls:,} calls up {mem.server_calls_up / mib:.1f} MiB, settled "
        f"{mem.server_calls / mib:.1f} MiB; after the calls ended "
        f"{mem.server_after_calls / mib:.1f} MiB",
        f"SIPp registrar RSS {mem.sipp_reg_before / mib:.1f} -> {mem.sipp_reg_after / mib:.1f} "
        f"MiB; SIPp callee RSS {mem.sipp_uas_before / mib:.1f} -> "
        f"{mem.sipp_uas_after / mib:.1f} MiB, SIPp caller {mem.sipp_uac_before / mib:.1f} -> "
        f"{mem.sipp_uac_after / mib:.1f} MiB",
        *mem.notes,
    ]


def code_state() -> dict[str, object]:
    """The commit measured and the files changed on top of it (read-only git queries)."""
    repo = Path(__file__).resolve().parent.parent
    state: dict[str, object] = {}
    for key, cmd in (("head", ["rev-parse", "HEAD"]), ("changed", ["status", "--porcelain"])):
        try:
            done = subprocess.run(
                ["git", "-C", str(repo), *cmd], capture_output=True, text=True, timeout=30
            )
        except (OSError, subprocess.SubprocessError):
            continue
        state[key] = done.stdout.strip().splitlines()
    return state


def save_results(work: Path, results: dict[str, object], args: argparse.Namespace) -> None:
    """Everything measured, as JSON, beside the raw files."""

    def plain(value: object) -> object:
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        if isinstance(value, Run):
            return {**asdict(value), "rate": value.rate, "ok": value.ok}
        if isinstance(value, Memory):
            extra = {"per_reg": value.per_reg, "per_call": value.per_call}
            extra |= {"sipp_per_reg": value.sipp_per_reg, "sipp_per_call": value.sipp_per_call}
            return {**asdict(value), **extra}
        if isinstance(value, Soak):
            return {**asdict(value), "per_call": value.per_call, "grown": value.grown}
        return value

    data = {"args": vars(args), "code": code_state(), **{k: plain(v) for k, v in results.items()}}
    (work / "results.json").write_text(json.dumps(data, indent=2, default=str) + "\n")


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command line; ``--quick`` shrinks the counts tenfold."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    p.add_argument("--quick", action="store_true", help="2,000 users/calls, 5,000/1,000 memory")
    p.add_argument("--users", type=int, help="registrations of part 1 (20,000)")
    p.add_argument("--calls", type=int, help="calls of part 2 (20,000)")
    p.add_argument("--mem-regs", type=int, help="registrations of part 3 (50,000)")
    p.add_argument("--mem-calls", type=int, help="simultaneous calls of part 3 (10,000)")
    p.add_argument("--mem-call-rate", type=int, default=200, help="calls/s while filling")
    p.add_argument("--soak-calls", type=int, help="calls of part 4 (100,000)")
    p.add_argument("--settle", type=float, default=35.0, help="s for transactions to end")
    p.add_argument("--max-rate", type=int, default=20000, help="SIPp -r of the closed loop")
    p.add_argument("--in-flight", type=int, default=200, help="SIPp -l of the closed loop")
    p.add_argument("--parts", default="reg,call,mem,soak", help="any of reg,call,mem,soak")
    p.add_argument("--profile", action="store_true", help="extra runs under py-spy")
    p.add_argument("--server-log-level", default="WARNING")
    args = p.parse_args(argv)
    scale = 10 if args.quick else 1
    args.users = args.users or 20000 // scale
    args.calls = args.calls or 20000 // scale
    args.mem_regs = args.mem_regs or 50000 // scale
    args.mem_calls = args.mem_calls or 10000 // scale
    args.soak_calls = args.soak_calls or 100000 // scale
    args.parts = {part.strip() for part in args.parts.split(",") if part.strip()}
    return args


def raise_fd_limit() -> str:
    """Lift the soft open-files limit to the hard one (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return f"open files {resource.getrlimit(resource.RLIMIT_NOFILE)[0]}"


def run_parts(bench: Bench, results: dict[str, object]) -> None:
    """Parts 1 and 2 on one server, part 3 on a fresh one."""
    args = bench.args
    if args.parts & {"reg", "call"} or args.profile:
        users = csvgen.extensions(args.users)
        server = Server(bench, "minipbx", [*users, csvgen.CALLEE])
        server.start()
        if "reg" in args.parts:
            print(f"part 1: {args.users:,} registrations", flush=True)
            results["registrations"] = bench_registrations(bench, server, users)
        if "call" in args.parts:
            print(f"part 2: {args.calls:,} calls", flush=True)
            results["calls"] = bench_calls(bench, server, args.calls)
        if args.profile:
            print("profile (py-spy)", flush=True)
            profile_server(bench, server, min(args.calls, 5000))
        status = server.stop()
        if status not in (0, None):
            print(f"  server exited with status {status}", flush=True)
    if "mem" in args.parts:
        print(f"part 3: memory, {args.mem_regs:,} registrations, {args.mem_calls:,} calls")
        results["memory"] = bench_memory(bench, args.mem_regs, args.mem_calls)
    if "soak" in args.parts:
        # The warm-up must reach the high-water mark first: RSS keeps the peak of what was
        # alive at once (32 s of transactions at full rate), and the bounded tables fill up
        # (a digest nonce per call, up to 100,000): as many calls as the measured run.
        warmup = args.soak_calls
        print(f"part 4: soak, {warmup:,} + {args.soak_calls:,} calls", flush=True)
        results["soak"] = bench_soak(bench, warmup, args.soak_calls)


def report(bench: Bench, results: dict[str, object]) -> bool:
    """Print the final table and failures; True when no run failed."""
    runs = all_runs(results)
    failed = [r for r in runs if not r.ok]
    print()
    print(
        f"minipbx SIP benchmark ({'quick' if bench.args.quick else 'full'}), loopback, "
        f"{os.cpu_count()} CPUs; ratio = minipbx / SIPp-SIPp"
    )
    for line in table(results):
        print("  " + line)
    mem = results.get("memory")
    if isinstance(mem, Memory):
        for line in memory_details(mem):
            print("  " + line)
    soak = results.get("soak")
    if isinstance(soak, Soak):
        for line in soak_details(soak):
            print("  " + line)
    print("runs:")
    for run in runs:
        print("  " + ("ok   " if run.ok else "FAIL ") + run.summary())
    for run in failed:
        print(f"  {run.name} errors ({bench.work / (run.name + '.errors')}):")
        for line in run.errors:
            print("    " + line)
    return not failed and (not isinstance(soak, Soak) or soak.met)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; 0 when every run had zero failures."""
    args = parse_args(argv)
    for tool in ("sipp", "gcc"):
        if shutil.which(tool) is None:
            print(f"sip_load: {tool} not found (apt-get install sip-tester gcc)", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, on_sigterm)
    # Started in the background by a shell, SIGINT is ignored: take it back for Ctrl-C/kill.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="minipbx-bench-"))
    print(f"raw files: {work} ({raise_fd_limit()})", flush=True)
    procs = Procs()
    results: dict[str, object] = {}
    ok = False
    try:
        bench = Bench(work, procs, args)
        try:
            run_parts(bench, results)
        except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
            print(f"sip_load: stopped: {exc}", file=sys.stderr)
            report(bench, results)
        else:
            ok = report(bench, results)
    except (KeyboardInterrupt, StopRequestedError):
        print("\ninterrupted: stopping everything", file=sys.stderr)
    finally:
        procs.stop_all()
        save_results(work, results, args)
        print(f"raw files: {work}", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
