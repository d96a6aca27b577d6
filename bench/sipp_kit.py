"""Plumbing of ``bench/sip_load.py``: processes started and stopped by their id, /proc
readings, SIPp command lines and their screen, error and ``-trace_counts`` files, one
client run (:func:`run_client`), a ``minipbx run`` under test (:class:`Server`), and a
summary of py-spy samples.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from scenarios import DIR as SCENARIO_DIR
from scenarios import csvgen, materialize

HOST = "127.0.0.1"
SIPP_BUFFER = 4 * 1024 * 1024  # -buff_size: socket buffers of SIPp
TIMER_SLACK = 30.0  # seconds added to every SIPp -timeout
FLOOR_RATE = 50.0  # a run slower than this per second hits its -timeout


# --- processes and /proc --------------------------------------------------------------------------


class StopRequestedError(Exception):
    """SIGTERM received: unwind and stop everything."""


def on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Signal handler: turn SIGTERM into :class:`StopRequestedError`."""
    raise StopRequestedError(f"signal {signum}")


class Procs:
    """Every process this script starts, each in its own session; stopped by its id."""

    def __init__(self) -> None:
        self.started: list[tuple[str, subprocess.Popen[bytes]]] = []

    def start(
        self, name: str, argv: Sequence[str], *, cwd: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` with stdout to ``cwd/name.stdout`` and stderr to ``name.stderr``."""
        with (cwd / f"{name}.stdout").open("wb") as out, (cwd / f"{name}.stderr").open("wb") as err:
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,  # Ctrl-C reaches only this script, which stops them
            )
        self.started.append((name, proc))
        return proc

    @staticmethod
    def stop(proc: subprocess.Popen[bytes], grace: float = 10.0) -> int:
        """SIGTERM the process group of ``proc`` (its own id), SIGKILL after ``grace`` s."""
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        return proc.returncode

    def stop_all(self) -> None:
        """Stop whatever is still running, newest first."""
        for _, proc in reversed(self.started):
            self.stop(proc, grace=5.0)


def proc_status(pid: int, key: str) -> int | None:
    """A ``kB`` field of /proc/PID/status in bytes (None when the process is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    return int(match.group(1)) * 1024 if match else None


def rss(pid: int) -> int:
    """Resident memory of ``pid`` in bytes."""
    value = proc_status(pid, "VmRSS")
    if value is None:
        raise RuntimeError(f"process {pid} is gone")
    return value


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of ``pid`` so far (None when it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def udp_drops(port: int) -> int:
    """Datagrams the kernel dropped on the UDP socket bound to ``port`` (0 if none)."""
    total = 0
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        parts = line.split()
        if int(parts[1].rpartition(":")[2], 16) == port:
            total += int(parts[-1])
    return total


def udp_bound(port: int) -> bool:
    """True when some socket is bound to UDP ``port``."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        if int(line.split()[1].rpartition(":")[2], 16) == port:
            return True
    return False


def free_port() -> int:
    """A port free for both UDP and TCP on loopback (the server binds both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            udp.bind((HOST, 0))
            port = int(udp.getsockname()[1])
            if port < 10000 or port > 60000:
                continue
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
                try:
                    tcp.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise RuntimeError("no free port found")


def wait_for(
    what: str, check: Callable[[], bool], timeout: float, proc: subprocess.Popen[bytes]
) -> None:
    """Poll ``check()`` until true; fail when ``proc`` exits or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with status {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {timeout:.0f} s")
        time.sleep(0.05)


# --- SIPp's files ---------------------------------------------------------------------------------


@dataclass
class Screen:
    """What SIPp's final screen (``-trace_screen``) says about a run."""

    successful: int = 0
    failed: int = 0
    total_time: float = 0.0  # seconds, "Total-time" of the scenario screen
    sent_retrans: int = 0  # our requests/responses SIPp had to send again
    recv_retrans: int = 0  # retransmissions (or duplicates) SIPp received
    timeouts: int = 0
    unexpected: int = 0
    found: bool = False


_MSG_LINE = re.compile(
    r"^\s*(?:(?P<a1>-+>|<-+)\s+(?P<n1>\S+)|(?P<n2>\S+)\s+(?P<a2>-+>|<-+))\s+(?P<nums>[\d ]+)$"
)


def parse_screen(path: Path) -> Screen:
    """Counters of the last screens in ``path`` (an empty :class:`Screen` when missing)."""
    screen = Screen()
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return screen
    scenario = text.rfind("Scenario Screen")
    if scenario < 0:
        return screen
    screen.found = True
    block = text[scenario:]
    match = re.search(r"([\d.]+) s\s+\d+\s", block)
    if match:
        screen.total_time = float(match.group(1))
    for name, attr in (("Successful call", "successful"), ("Failed call", "failed")):
        found = re.findall(rf"{name}\s+\|\s+\d+\s+\|\s+(\d+)", text)
        if found:
            setattr(screen, attr, int(found[-1]))
    _count_messages(block.split("Statistics Screen")[0], screen)
    return screen


def _count_messages(block: str, screen: Screen) -> None:
    """Add the Retrans/Timeout/Unexpected columns of the message table to ``screen``."""
    for line in block.splitlines():
        match = _MSG_LINE.match(line)
        if match is None:
            continue
        nums = [int(n) for n in match.group("nums").split()]
        arrow = match.group("a1") or match.group("a2")
        # Client screens put the message first ("INVITE ---->": sent); server screens put
        # the arrow first ("----> INVITE": received).
        sent = arrow.endswith(">") == (match.group("a2") is not None)
        if len(nums) > 1:
            if sent:
                screen.sent_retrans += nums[1]
            else:
                screen.recv_retrans += nums[1]
        if len(nums) > 2:
            screen.timeouts += nums[2]
        if len(nums) > 3:
            screen.unexpected += nums[3]


def error_excerpt(path: Path, limit: int = 6) -> list[str]:
    """The first few events of a SIPp error file, one line each."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    events = re.split(r"(?=\d{4}-\d\d-\d\d\t[\d:.]+\t[\d.]+: )", text)
    out = []
    for event in events:
        event = " ".join(event.split())
        if event and not event.startswith("The following events"):
            out.append(event[:300])
    return out[:limit]


@dataclass
class Watch:
    """Processes whose CPU use is sampled during a run (name -> pid)."""

    pids: dict[str, int]
    first: dict[str, float] = field(default_factory=dict)
    last: dict[str, float] = field(default_factory=dict)

    def sample(self) -> None:
        """Read the CPU time of every process still alive."""
        for name, pid in self.pids.items():
            value = cpu_seconds(pid)
            if value is not None:
                self.first.setdefault(name, value)
                self.last[name] = value

    def used(self) -> dict[str, float]:
        """CPU seconds used by each process between the first and the last sample."""
        return {name: self.last[name] - self.first[name] for name in self.last}


def _count(path: Path, suffix: str, pick: Callable[[list[int]], int]) -> int:
    """The latest value of a ``-trace_counts`` column ending in ``suffix`` (0 when none)."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return 0
    if len(lines) < 2:
        return 0
    columns = [i for i, name in enumerate(lines[0].split(";")) if name.endswith(suffix)]
    values = lines[-1].split(";")
    column = pick(columns) if columns else len(values)
    return int(values[column]) if column < len(values) and values[column].isdigit() else 0


def established(path: Path) -> int:
    """Calls whose 2xx the caller acknowledged so far (the last ``*_ACK_Sent`` column)."""
    return _count(path, "_ACK_Sent", max)


def hung_up(path: Path) -> int:
    """Calls the caller sent a BYE for so far."""
    return _count(path, "_BYE_Sent", min)


# --- py-spy samples -------------------------------------------------------------------------------


def summarize_profile(raw: Path, top: int = 25) -> str:
    """Self and inclusive sample shares per function of the event-loop thread.

    Reads py-spy's ``-f raw`` output; stacks of other threads (aiosqlite's worker, which
    py-spy counts as busy while it waits on its queue) are left out.
    """
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit() or "run_server (" not in stack:
            continue
        n = int(count)
        total += n
        frames = [_frame(f) for f in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += n
        own[frames[-1]] += n
    if not total:
        return "no samples of the event-loop thread"
    out = [f"{total} samples of the event-loop thread", "inclusive:"]
    out += [f"  {100 * n / total:5.1f}% {f}" for f, n in inclusive.most_common(top)]
    out += ["self:"] + [f"  {100 * n / total:5.1f}% {f}" for f, n in own.most_common(top)]
    return "\n".join(out)


def _frame(text: str) -> str:
    """``func (path/file.py:12)`` -> ``func (file.py)``."""
    func, _, where = text.partition(" (")
    return f"{func} ({where.split(':')[0].rsplit('/', 1)[-1]})" if where else func


# --- runs, the benchmark, the server -----------------------------------------------------------


@dataclass
class Run:
    """One SIPp run and what was seen while it ran."""

    name: str
    expected: int
    screen: Screen
    rc: int | None
    wall: float
    cpu: dict[str, float] = field(default_factory=dict)  # process name -> CPU seconds used
    server_drops: int = 0
    server_log: dict[str, int] = field(default_factory=dict)  # log level -> lines
    errors: list[str] = field(default_factory=list)
    held: bool = False  # calls were held: a rate means nothing
    peers_failed: dict[str, int] = field(default_factory=dict)  # failed calls of each UAS

    @property
    def elapsed(self) -> float:
        """Seconds from SIPp's start to its last call (its own clock when it printed it)."""
        return self.screen.total_time or self.wall

    @property
    def rate(self) -> float:
        """Successful calls per second."""
        return self.screen.successful / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def ok(self) -> bool:
        """Every call succeeded: nothing failed, timed out or came unexpected."""
        s = self.screen
        return (
            self.rc == 0
            and s.successful == self.expected
            and s.failed == 0
            and s.timeouts == 0
            and s.unexpected == 0
            and not any(self.peers_failed.values())
        )

    def summary(self) -> str:
        """One line: counts, rate, retransmissions, CPU."""
        s = self.screen
        cpu = " ".join(
            f"{name}={100 * sec / self.elapsed:.0f}%" for name, sec in self.cpu.items() if sec
        )
        cpu = f"; cpu {cpu}" if cpu else ""
        extra = f" server_udp_drops={self.server_drops}" if self.server_drops else ""
        extra += "".join(f" {peer}_failed={n}" for peer, n in self.peers_failed.items() if n)
        if self.server_log:
            extra += " server_log=" + ",".join(f"{k}:{v}" for k, v in self.server_log.items())
        rate = "held" if self.held else f"{self.rate:,.0f}/s"
        return (
            f"{self.name}: {s.successful}/{self.expected} ok, {s.failed} failed, "
            f"{self.elapsed:.2f} s, {rate}; retrans sent={s.sent_retrans} "
            f"received={s.recv_retrans}, timeouts={s.timeouts}, unexpected={s.unexpected}"
            f"{cpu}{extra}"
        )


class Bench:
    """Shared state of one benchmark run: work directory, processes, tools."""

    def __init__(self, work: Path, procs: Procs, args: argparse.Namespace) -> None:
        self.work = work
        self.procs = procs
        self.args = args
        self.sipp = shutil.which("sipp") or "sipp"
        self.shim = self._build_shim()

    def _build_shim(self) -> Path:
        out = self.work / "md5_only.so"
        cmd = ["gcc", "-O2", "-shared", "-fPIC", "-o", str(out)]
        cmd += [str(SCENARIO_DIR / "md5_only.c"), "-ldl"]
        subprocess.run(cmd, check=True, timeout=60)
        return out

    def client_env(self) -> dict[str, str]:
        """Environment of a client SIPp: the MD5-challenge shim preloaded."""
        return {**os.environ, "LD_PRELOAD": str(self.shim)}

    def sipp_argv(
        self,
        name: str,
        scenario: Path,
        *,
        port: int,
        calls: int,
        timeout: float,
        target: int | None = None,
        extra: Sequence[str] = (),
    ) -> list[str]:
        """A bounded, headless SIPp command line writing ``name.screen``/``name.errors``."""
        argv = [self.sipp] + ([f"{HOST}:{target}"] if target is not None else [])
        argv += ["-sf", str(scenario), "-i", HOST, "-p", str(port), "-m", str(calls)]
        argv += ["-timeout", f"{int(timeout)}s", "-nostdin", "-buff_size", str(SIPP_BUFFER)]
        argv += ["-trace_screen", "-screen_file", str(self.work / f"{name}.screen")]
        argv += ["-trace_err", "-error_file", str(self.work / f"{name}.errors")]
        argv += ["-max_log_size", str(20_000_000)]
        return argv + list(extra)

    def uas(
        self, name: str, scenario: Path, *, calls: int, timeout: float, extra: Sequence[str] = ()
    ) -> tuple[subprocess.Popen[bytes], int]:
        """Start a SIPp server scenario on a free port; wait until it listens."""
        port = free_port()
        argv = self.sipp_argv(name, scenario, port=port, calls=calls, timeout=timeout, extra=extra)
        proc = self.procs.start(name, argv, cwd=self.work)
        wait_for(f"SIPp {name}", lambda: udp_bound(port), 10.0, proc)
        return proc, port

    def timeout_for(self, count: int, extra: float = 0.0) -> float:
        """A -timeout for ``count`` calls: they fail it only below ``FLOOR_RATE`` per second."""
        return count / FLOOR_RATE + TIMER_SLACK + extra

    def closed_loop(self) -> list[str]:
        """Rate far above what can be served, ``--in-flight`` at most: as fast as served."""
        return ["-r", str(self.args.max_rate), "-l", str(self.args.in_flight)]


def run_client(
    bench: Bench,
    name: str,
    argv: list[str],
    expected: int,
    *,
    watch: dict[str, int] | None = None,
    server: Server | None = None,
    servers_done: Sequence[tuple[str, subprocess.Popen[bytes]]] = (),
) -> Run:
    """Run a client SIPp to its end, sampling CPU of ``watch``; then let the UAS finish."""
    mark = server.log_mark() if server is not None else 0
    drops = udp_drops(server.port) if server is not None else 0
    start = time.monotonic()
    proc = bench.procs.start(name, argv, cwd=bench.work, env=bench.client_env())
    cpu = Watch({name: proc.pid, **(watch or {})})
    while proc.poll() is None:
        cpu.sample()
        time.sleep(0.1)
    wall = time.monotonic() - start
    run = Run(name, expected, parse_screen(bench.work / f"{name}.screen"), proc.returncode, wall)
    for peer, uas in servers_done:  # a server scenario ends by itself once it saw -m calls
        try:
            uas.wait(10.0)
        except subprocess.TimeoutExpired:
            Procs.stop(uas)
        run.peers_failed[peer] = parse_screen(bench.work / f"{peer}.screen").failed
    run.cpu = cpu.used()
    run.errors = error_excerpt(bench.work / f"{name}.errors")
    if server is not None:
        run.server_drops = udp_drops(server.port) - drops
        run.server_log = server.log_levels(mark)
    return run


class Server:
    """A ``minipbx run`` with its own data directory and users."""

    def __init__(self, bench: Bench, name: str, users: Sequence[str]) -> None:
        self.bench = bench
        self.name = name
        self.port = free_port()
        self.data = bench.work / f"{name}-data"
        self.log = bench.work / f"{name}.stderr"
        self.proc: subprocess.Popen[bytes] | None = None
        exe = Path(sys.executable).with_name("minipbx")
        self.exe = str(exe) if exe.exists() else (shutil.which("minipbx") or "minipbx")
        csv_path = bench.work / f"{name}-users.csv"
        csvgen.write_users(csv_path, users)
        cmd = [self.exe, "user", "import", str(csv_path), "--data-dir", str(self.data)]
        subprocess.run(cmd, check=True, timeout=600, capture_output=True)

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        """Start the server (quiet log) and wait until it answers OPTIONS."""
        argv = [self.exe, "run", "--data-dir", str(self.data), "--bind", HOST]
        argv += ["--sip-port", str(self.port), "--http-port", "0"]
        env = {**os.environ, "MINIPBX_LOG_LEVEL": self.bench.args.server_log_level}
        env["MINIPBX_STUN_PORT"] = "0"  # no STUN listener: several servers may run
        self.proc = self.bench.procs.start(self.name, argv, cwd=self.bench.work, env=env)
        wait_for(f"minipbx {self.name}", self._answers, 60.0, self.proc)

    def _answers(self) -> bool:
        request = (
            f"OPTIONS sip:{HOST}:{self.port} SIP/2.0\r\n"
            f"Via: SIP/2.0/UDP {HOST}:9;branch=z9hG4bK-bench-{time.monotonic_ns()};rport\r\n"
            f"Max-Forwards: 70\r\nFrom: <sip:bench@{HOST}>;tag=bench\r\n"
            f"To: <sip:{HOST}:{self.port}>\r\nCall-ID: bench-{time.monotonic_ns()}@{HOST}\r\n"
            "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n"
        ).encode()
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.3)
            sock.bind((HOST, 0))
            sock.sendto(request, (HOST, self.port))
            try:
                return sock.recv(65535).startswith(b"SIP/2.0 ")
            except OSError:
                return False

    def rss(self) -> int:
        """The server's resident memory in bytes."""
        return rss(self.pid)

    def state(self, timeout: float = 10.0) -> dict[str, int]:
        """What the server holds (calls, transactions, timers...): the counts of the
        ``event=state`` line it logs on SIGUSR1."""
        mark = self.log_mark()
        os.kill(self.pid, signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.log.open("rb") as fh:
                fh.seek(mark)
                text = fh.read().decode("utf-8", "replace")
            for line in text.splitlines():
                if "event=state " in line:
                    pairs = (
                        item.split("=", 1) for item in line.split("event=state ", 1)[1].split()
                    )
                    return {key: int(value) for key, value in pairs}
            time.sleep(0.1)
        raise RuntimeError(f"minipbx {self.name} logged no event=state line after SIGUSR1")

    def log_mark(self) -> int:
        """Current size of the server log (to count lines written after it)."""
        return self.log.stat().st_size if self.log.exists() else 0

    def log_levels(self, mark: int) -> dict[str, int]:
        """Log lines per level (WARNING, ERROR, CRITICAL) written since ``mark``."""
        with self.log.open("rb") as fh:
            fh.seek(mark)
            text = fh.read().decode(errors="replace")
        found = re.findall(r"^\S+ \S+ (WARNING|ERROR|CRITICAL) ", text, re.MULTILINE)
        return dict(Counter(found))

    def log_lines(self, mark: int, limit: int = 5) -> list[str]:
        """The first ``limit`` WARNING-or-worse lines since ``mark`` (tracebacks included)."""
        with self.log.open("rb") as fh:
            fh.seek(mark)
            lines = fh.read().decode(errors="replace").splitlines()
        picked = [ln for ln in lines if not re.match(r"^\S+ \S+ (INFO|DEBUG) ", ln)]
        return [ln[:300] for ln in picked[:limit]]

    def stop(self) -> int | None:
        """SIGTERM and wait; the exit status."""
        if self.proc is None:
            return None
        return Procs.stop(self.proc, grace=30.0)

    def register_contact(self, extension: str, contact_port: int) -> Run:
        """Bind ``extension`` to ``HOST:contact_port`` with one REGISTER from another port."""
        csv_path = self.bench.work / f"{self.name}-bind-{extension}.csv"
        csvgen.write_registrations(csv_path, [extension], contact_port)
        name = f"{self.name}-bind-{extension}"
        argv = self.bench.sipp_argv(
            name,
            materialize("reg_uac.xml", self.bench.work),
            port=free_port(),
            calls=1,
            timeout=30,
            target=self.port,
            extra=["-inf", str(csv_path), "-recv_timeout", "5000"],
        )
        run = run_client(self.bench, name, argv, 1)
        if not run.ok:
            raise RuntimeError(f"could not register {extension}: {run.summary()} {run.errors}")
        return run
