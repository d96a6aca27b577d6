"""Does CDR shipping to MySQL slow calls down? Run by hand.

    .venv/bin/python bench/cdr_load.py [--quick] [--rounds 2] [--mysql-url URL]

The call part of ``sip_load.py`` (a SIPp caller authenticating its INVITE with 407 and
hanging up at once; a registered SIPp UAS as callee; closed loop) against fresh servers,
alternately without and with ``--cdr-mysql-url`` (``--rounds`` times each, so drift of the
machine hits both alike), each run beside SIPp-to-SIPp in the same run. With shipping on,
it then waits until every local CDR is in MySQL and reports how long that took after the
last call. Target (issue 4): calls/s with shipping within 10% of calls/s without.

MySQL: a scratch database ``minipbx_bench_<hex>_<round>`` per shipping run on
``--mysql-url``'s server (default ``mysql+asyncmy://root@127.0.0.1:3306``), dropped at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from scenarios import csvgen
from sip_load import bench_calls, parse_args
from sipp_kit import Bench, Procs, Run, Server
from sqlalchemy.ext.asyncio import create_async_engine

from minipbx.store import Database, default_url
from minipbx.store.cdrs import SqlCdrRepo


async def _sql(url: str, statement: str) -> int:
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as conn:
            result = await conn.exec_driver_sql(statement)
            return int(result.scalar() or 0) if result.returns_rows else 0
    finally:
        await engine.dispose()


async def _local_count(data: Path) -> int:
    db = Database(default_url(data))
    try:
        return await SqlCdrRepo(db).count()
    finally:
        await db.close()


def wait_shipped(server_data: Path, db_url: str, timeout: float) -> tuple[int, int, float]:
    """Wait until MySQL holds as many CDRs as the local database: (local, mysql, seconds)."""
    start = time.monotonic()
    local = asyncio.run(_local_count(server_data))
    remote = 0
    while time.monotonic() - start < timeout:
        remote = asyncio.run(_sql(db_url, "SELECT COUNT(*) FROM cdr"))
        if remote >= local:
            break
        time.sleep(0.2)
    return local, remote, time.monotonic() - start


def main() -> int:
    """Alternate runs without and with MySQL shipping; print both rates and their ratio."""
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--rounds", type=int, default=2)
    own.add_argument("--mysql-url", default="mysql+asyncmy://root@127.0.0.1:3306")
    mine, rest = own.parse_known_args()
    args = parse_args([*rest, "--parts", "call"])
    prefix = f"minipbx_bench_{uuid.uuid4().hex[:10]}"
    server_url = mine.mysql_url.rstrip("/")
    names = [f"{prefix}_{n}" for n in range(mine.rounds)]  # one per shipping run
    for name in names:
        asyncio.run(_sql(f"{server_url}/mysql", f"CREATE DATABASE {name}"))
    work = Path(tempfile.mkdtemp(prefix="minipbx-cdr-bench-"))
    print(f"raw files: {work}; MySQL databases {prefix}_*", flush=True)
    procs = Procs()
    rates: dict[str, list[float]] = {"off": [], "on": []}
    base_rates: list[float] = []
    failed: list[Run] = []
    try:
        bench = Bench(work, procs, args)
        users = [*csvgen.extensions(args.users), csvgen.CALLEE]
        for round_no in range(mine.rounds):
            db_url = f"{server_url}/{names[round_no]}"
            for mode in ("off", "on"):
                if mode == "on":
                    os.environ["MINIPBX_CDR_MYSQL_URL"] = db_url
                else:
                    os.environ.pop("MINIPBX_CDR_MYSQL_URL", None)
                server = Server(bench, f"cdr-{mode}-{round_no}", users)
                server.start()
                print(f"round {round_no + 1}, shipping {mode}: {args.calls:,} calls", flush=True)
                pbx, base = bench_calls(bench, server, args.calls)
                rates[mode].append(pbx.rate)
                base_rates.append(base.rate)
                failed += [r for r in (pbx, base) if not r.ok]
                if mode == "on":
                    local, remote, waited = wait_shipped(server.data, db_url, 120.0)
                    print(
                        f"  shipped: {remote:,} of {local:,} local CDRs in MySQL "
                        f"{waited:.1f} s after the last call",
                        flush=True,
                    )
                    if remote != local:
                        print("  MISMATCH: not every CDR reached MySQL", flush=True)
                        return 1
                server.stop()
    finally:
        procs.stop_all()
        os.environ.pop("MINIPBX_CDR_MYSQL_URL", None)
        for name in names:
            asyncio.run(_sql(f"{server_url}/mysql", f"DROP DATABASE IF EXISTS {name}"))
    off, on, sipp = (statistics.median(v) for v in (rates["off"], rates["on"], base_rates))
    print()
    print(f"calls/s, median of {mine.rounds} run(s) each ({args.calls:,} calls per run):")
    print(f"  shipping off {off:,.0f}  (runs: {', '.join(f'{r:,.0f}' for r in rates['off'])})")
    print(f"  shipping on  {on:,.0f}  (runs: {', '.join(f'{r:,.0f}' for r in rates['on'])})")
    print(f"  on / off = {on / off:.3f} (target >= 0.90)")
    print(f"  SIPp-SIPp baseline {sipp:,.0f}: off/SIPp {off / sipp:.3f}, on/SIPp {on / sipp:.3f}")
    for run in failed:
        print("  FAIL " + run.summary())
    return 0 if not failed and on / off >= 0.9 else 1


if __name__ == "__main__":
    sys.exit(main())
