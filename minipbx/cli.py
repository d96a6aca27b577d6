"""The ``minipbx`` command line.

``minipbx run`` starts the PBX; ``minipbx user ...`` manages extensions (also while the
server runs: it sees the change within a couple of seconds); ``minipbx admin ...`` and
``minipbx token create`` manage web console / REST API logins; ``minipbx db upgrade`` runs the
migrations; ``minipbx sip-check`` parses SIP messages from files. Every failure is one
clear line on stderr and a non-zero exit.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from minipbx import __version__
from minipbx.config import ConfigError, Settings, load
from minipbx.sip import ParseError, parse

EXIT_USAGE = 2
EXIT_FAILED = 1


class CliError(Exception):
    """A failure to report as one line."""


def _settings(args: argparse.Namespace) -> Settings:
    flags = {
        name: getattr(args, name, None)
        for name in (
            "data_dir",
            "bind",
            "sip_port",
            "http_port",
            "database_url",
            "cdr_mysql_url",
        )
    }
    return load(args.config, flags=flags)


async def _with_store(args: argparse.Namespace, action: Callable[[Any], Awaitable[int]]) -> int:
    from minipbx.store import Database, SqlTenantRepo, SqlUserRepo

    settings = _settings(args)
    db = Database(settings.db_url)
    try:
        await db.upgrade()
        await SqlTenantRepo(db).ensure_default()
        return await action(SqlUserRepo(db))
    finally:
        await db.close()


def _user_add(args: argparse.Namespace) -> Callable[[Any], Awaitable[int]]:
    async def run(users: Any) -> int:
        await users.add(
            args.extension,
            args.password,
            name=args.name or "",
            email=args.email,
            domain=args.domain,
        )
        print(f"added user {args.extension}")
        return 0

    return run


def _user_remove(args: argparse.Namespace) -> Callable[[Any], Awaitable[int]]:
    async def run(users: Any) -> int:
        await users.remove(args.extension, domain=args.domain)
        print(f"removed user {args.extension}")
        return 0

    return run


def _user_list(args: argparse.Namespace) -> Callable[[Any], Awaitable[int]]:
    async def run(users: Any) -> int:
        rows = await users.list_users(domain=args.domain)
        print(f"{'extension':<12} {'domain':<24} {'name':<24} email")
        for user in rows:
            print(
                f"{user.extension:<12} {user.domain:<24} {user.display_name:<24} {user.email or ''}"
            )
        return 0

    return run


def _user_import(args: argparse.Namespace) -> Callable[[Any], Awaitable[int]]:
    async def run(users: Any) -> int:
        from minipbx.store import CsvImportError

        try:
            text = Path(args.file).read_text(encoding="utf-8-sig")
        except OSError as exc:
            raise CliError(f"cannot read {args.file}: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise CliError(f"{args.file} is not UTF-8 text") from None
        try:
            result = await users.import_csv(text, source=str(args.file))
        except CsvImportError as exc:
            for line in exc.details():
                print(line, file=sys.stderr)
            raise CliError(f"nothing imported: {len(exc.problems)} bad row(s)") from None
        print(f"imported {result.created} new and {result.updated} updated user(s)")
        return 0

    return run


def _admin_command(args: argparse.Namespace) -> int:
    """``minipbx admin ...`` and ``minipbx token create`` (see minipbx.web.admincli)."""

    async def run() -> int:
        from minipbx.store import Database, SqlTenantRepo
        from minipbx.web.admincli import run_admin_command

        db = Database(_settings(args).db_url)
        try:
            await db.upgrade()
            await SqlTenantRepo(db).ensure_default()
            return await run_admin_command(db, args)
        finally:
            await db.close()

    return asyncio.run(run())


def _store_command(make: Callable[[argparse.Namespace], Callable[[Any], Awaitable[int]]]) -> Any:
    def command(args: argparse.Namespace) -> int:
        return asyncio.run(_with_store(args, make(args)))

    return command


def _db_upgrade(args: argparse.Namespace) -> int:
    async def run() -> int:
        from minipbx.store import Database

        db = Database(_settings(args).db_url)
        try:
            await db.upgrade()
            print(f"database at revision {await db.current_revision()}")
        finally:
            await db.close()
        return 0

    return asyncio.run(run())


def _parse_time(text: str | None, flag: str) -> datetime | None:
    """An ISO 8601 date or date-time; without an offset it is UTC."""
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise CliError(
            f"{flag}: not an ISO 8601 time: {text!r} (e.g. 2026-11-26 or 2026-11-26T08:00+01:00)"
        ) from None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _cdr_export(args: argparse.Namespace) -> int:
    since = _parse_time(args.since, "--since")
    until = _parse_time(args.until, "--until")
    if since and until and since >= until:
        raise CliError("--since must be before --until")

    async def run() -> int:
        from minipbx.store import Database
        from minipbx.store.cdrs import SqlCdrRepo
        from minipbx.store.cdrs_export import write_cdrs

        db = Database(_settings(args).db_url)
        try:
            await db.upgrade()
            count = await write_cdrs(SqlCdrRepo(db), sys.stdout, args.format, since, until)
        finally:
            await db.close()
        print(f"exported {count} call record(s)", file=sys.stderr)
        return 0

    return asyncio.run(run())


def _route_test(args: argparse.Namespace) -> int:
    at = _parse_time(args.at, "--at")

    async def run() -> int:
        from minipbx.pbx.dialplan_router import compile_routing, explain
        from minipbx.routing_loader import resolve_trunks
        from minipbx.store import Database, SqlTenantRepo, SqlUserRepo
        from minipbx.store.routing_data import load_routing_data

        db = Database(_settings(args).db_url)
        try:
            await db.upgrade()
            await SqlTenantRepo(db).ensure_default()
            user = await SqlUserRepo(db).get(args.caller, domain=args.domain)
            if user is None:
                raise CliError(
                    f"no user {args.caller!r}" + (f" in {args.domain}" if args.domain else "")
                )
            data = await load_routing_data(db)
            resolved = await resolve_trunks(data.trunks)
        finally:
            await db.close()
        config = compile_routing(data, lambda t: resolved.get(t.id))
        for problem in config.problems:
            print(f"warning: {problem}")
        wall = at.timestamp() if at is not None else time.time()
        for line in explain(config, user.tenant_id, user.extension, args.to, wall):
            print(line)
        return 0

    return asyncio.run(run())


def _run(args: argparse.Namespace) -> int:
    from minipbx.app import run_server

    return run_server(_settings(args))


def _check(args: argparse.Namespace) -> int:
    """Parse SIP messages from files and print what they are, or why they are rejected."""
    status = 0
    for path in args.files:
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise CliError(f"cannot read {path}: {exc.strerror}") from None
        try:
            msg = parse(data)
        except ParseError as exc:
            action = f"answer {exc.status}" if exc.answerable else "drop"
            print(f"{path}: invalid ({action}): {exc.reason}")
            status = EXIT_FAILED
            continue
        print(f"{path}: ok: {msg!r} Call-ID={msg.call_id} CSeq={msg.cseq}")
    return status


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, help="data directory (default ./minipbx-data)")
    parser.add_argument("--config", type=Path, help="minipbx.toml settings file")
    parser.add_argument("--database-url", help="SQLAlchemy database URL (default: SQLite)")


def _admin_parsers(sub: Any) -> None:
    """``admin add|list|remove|password`` and ``token create``."""
    admin = sub.add_parser("admin", help="manage web console / REST API admins")
    admins = admin.add_subparsers(dest="admin_command", required=True, metavar="ACTION")
    add = admins.add_parser("add", help="add an admin (system admin without --tenant)")
    add.add_argument("name")
    add.add_argument("--password", required=True)
    add.add_argument("--tenant", help="SIP domain of the tenant it manages")
    listing = admins.add_parser("list", help="list admins")
    remove = admins.add_parser("remove", help="remove an admin and its API tokens")
    remove.add_argument("name")
    password = admins.add_parser("password", help="set an admin's password")
    password.add_argument("name")
    password.add_argument("--password", required=True)
    token = sub.add_parser("token", help="REST API tokens")
    tokens = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = tokens.add_parser("create", help="create an API token of an admin (printed once)")
    create.add_argument("name", help="the admin's username")
    create.add_argument("--label", default="", help="what the token is for")
    for parser in (add, listing, remove, password, create):
        _common(parser)
        parser.set_defaults(func=_admin_command)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests)."""
    ap = argparse.ArgumentParser(prog="minipbx", description="minipbx IP-PBX")
    ap.add_argument("--version", action="version", version=f"minipbx {__version__}")
    sub = ap.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser("run", help="run the PBX")
    _common(run)
    run.add_argument("--bind", help="address to listen on (default 0.0.0.0)")
    run.add_argument("--sip-port", type=int, help="SIP UDP/TCP port (default 5060)")
    run.add_argument("--http-port", type=int, help="web console port (default 8080)")
    run.add_argument(
        "--cdr-mysql-url", help="also write every CDR to table cdr of this MySQL/MariaDB database"
    )
    run.set_defaults(func=_run)

    user = sub.add_parser("user", help="manage users (extensions)")
    users = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = users.add_parser("add", help="add a user")
    add.add_argument("extension")
    add.add_argument("--password", required=True)
    add.add_argument("--name")
    add.add_argument("--email")
    add.add_argument("--domain", help="tenant SIP domain (default tenant when omitted)")
    add.set_defaults(func=_store_command(_user_add))
    remove = users.add_parser("remove", help="remove a user")
    remove.add_argument("extension")
    remove.add_argument("--domain")
    remove.set_defaults(func=_store_command(_user_remove))
    listing = users.add_parser("list", help="list users")
    listing.add_argument("--domain")
    listing.set_defaults(func=_store_command(_user_list))
    imp = users.add_parser(
        "import", help="import users from CSV (extension,password[,name,email,domain])"
    )
    imp.add_argument("file", type=Path)
    imp.set_defaults(func=_store_command(_user_import))
    for p in (add, remove, listing, imp):
        _common(p)

    _admin_parsers(sub)

    db = sub.add_parser("db", help="database maintenance")
    dbs = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    upgrade = dbs.add_parser("upgrade", help="run the database migrations")
    _common(upgrade)
    upgrade.set_defaults(func=_db_upgrade)

    route = sub.add_parser("route", help="dial plan tools")
    routes = route.add_subparsers(dest="route_command", required=True, metavar="ACTION")
    rtest = routes.add_parser("test", help="show how a call would be routed (no call placed)")
    rtest.add_argument("--from", dest="caller", required=True, help="calling extension")
    rtest.add_argument("--to", required=True, help="number dialled")
    rtest.add_argument("--at", help="at this time (ISO 8601; default now; UTC without offset)")
    rtest.add_argument("--domain", help="tenant SIP domain of the caller")
    _common(rtest)
    rtest.set_defaults(func=_route_test)

    cdr = sub.add_parser("cdr", help="call detail records")
    cdrs = cdr.add_subparsers(dest="cdr_command", required=True, metavar="ACTION")
    export = cdrs.add_parser("export", help="print CDRs that ended in a time range")
    export.add_argument("--since", help="from this UTC time on (ISO 8601, inclusive)")
    export.add_argument("--until", help="before this UTC time (ISO 8601, exclusive)")
    export.add_argument("--format", choices=("csv", "json"), default="csv")
    _common(export)
    export.set_defaults(func=_cdr_export)

    check = sub.add_parser("sip-check", help="parse SIP messages from files and report")
    check.add_argument("files", nargs="+", help="files holding one SIP message each")
    check.set_defaults(func=_check)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``minipbx`` console script."""
    args = build_parser().parse_args(argv)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    try:
        result: int = args.func(args)
        return result
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # one clear line for every known failure
        from minipbx.store import StoreError
        from minipbx.transport.config import TransportError
        from minipbx.web.server import WebServerError

        if isinstance(exc, CliError | ConfigError | StoreError | TransportError | WebServerError):
            print(f"minipbx: {exc}", file=sys.stderr)
            return EXIT_FAILED
        raise


if __name__ == "__main__":
    sys.exit(main())
