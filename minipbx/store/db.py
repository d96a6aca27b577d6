"""The database handle: URL checks, engine set-up, migrations, transactions.

One :class:`Database` per process (the server and each CLI command build their own). SQLite
is the default, in the data directory, in WAL mode so that the CLI can write while the server
runs; MySQL/MariaDB (asyncmy or aiomysql) and PostgreSQL (asyncpg) work through a URL. Every
failure surfaces as a :class:`~minipbx.store.errors.StoreError` with a one-line message.

SQLite transactions: Python's sqlite3 (under aiosqlite) does not emit BEGIN for reads or DDL,
so we turn its transaction handling off and emit BEGIN ourselves: plain (deferred) BEGIN for
:meth:`Database.read`, ``BEGIN IMMEDIATE`` for :meth:`Database.write`. Taking the write lock at
BEGIN lets the busy timeout do its job; a deferred transaction that reads then writes would
fail at once with SQLITE_BUSY when another process committed in between.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.pool import NullPool

from minipbx.store.errors import ConflictError, StoreError

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")
DB_FILENAME = "minipbx.db"

# Execution option that marks a write transaction (SQLite: BEGIN IMMEDIATE).
_WRITE_OPTION = "minipbx_write"
# Arbitrary constant naming the advisory lock that serialises concurrent upgrades.
_PG_MIGRATION_LOCK = 0x6D696E69  # "mini"
_MYSQL_MIGRATION_LOCK = "minipbx_migrations"
# Exceptions raised by drivers outside SQLAlchemy's wrapping (mostly while connecting).
_DRIVER_MODULES = frozenset({"asyncpg", "asyncmy", "aiomysql", "pymysql", "sqlite3", "aiosqlite"})


@dataclass(frozen=True, slots=True)
class _Driver:
    module: str  # what must be importable
    package: str  # the PyPI package that provides it
    extra: str  # the minipbx extra that installs it ("" if a base dependency)


_DRIVERS: dict[str, _Driver] = {
    "aiosqlite": _Driver("aiosqlite", "aiosqlite", ""),
    "asyncmy": _Driver("asyncmy", "asyncmy", "mysql"),
    "aiomysql": _Driver("aiomysql", "aiomysql", ""),
    "asyncpg": _Driver("asyncpg", "asyncpg", "postgres"),
}
# Back end -> accepted async drivers, the first being the default.
_BACKENDS: dict[str, tuple[str, ...]] = {
    "sqlite": ("aiosqlite",),
    "mysql": ("asyncmy", "aiomysql"),
    "mariadb": ("asyncmy", "aiomysql"),
    "postgresql": ("asyncpg",),
}
_ALIASES = {"postgres": "postgresql"}


def default_url(data_dir: str | os.PathLike[str]) -> str:
    """The default database URL: ``sqlite+aiosqlite:///<data_dir>/minipbx.db`` (absolute)."""
    path = Path(data_dir).expanduser().absolute() / DB_FILENAME
    return URL.create("sqlite+aiosqlite", database=str(path)).render_as_string()


def parse_url(url: str | URL) -> URL:
    """Validate a database URL and fill in the default async driver.

    ``sqlite:///x.db`` becomes ``sqlite+aiosqlite``, ``mysql://`` / ``mariadb://`` become
    ``+asyncmy``, ``postgres://`` / ``postgresql://`` become ``postgresql+asyncpg``; MySQL
    URLs get ``charset=utf8mb4`` unless they name one. Raises :class:`StoreError` for a
    malformed URL, an unsupported back end or driver, or a driver that is not installed.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise StoreError(
            "bad database URL: cannot parse it "
            "(expected e.g. sqlite:///path/minipbx.db or postgresql://user:pw@host/db)"
        ) from exc
    backend, _, driver = parsed.drivername.partition("+")
    backend = _ALIASES.get(backend.lower(), backend.lower())
    drivers = _BACKENDS.get(backend)
    if drivers is None:
        raise StoreError(
            f"bad database URL: unsupported database {backend!r} "
            "(use sqlite, mysql, mariadb or postgresql)"
        )
    driver = driver.lower() or drivers[0]
    if driver not in drivers:
        raise StoreError(
            f"bad database URL: driver {driver!r} is not supported for {backend} "
            f"(use {' or '.join(drivers)}: minipbx needs an asyncio driver)"
        )
    parsed = parsed.set(drivername=f"{backend}+{driver}")
    _check_target(parsed, backend)
    if backend in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    _check_driver_installed(backend, _DRIVERS[driver])
    return parsed


def _check_target(url: URL, backend: str) -> None:
    if backend == "sqlite":
        if not url.database or ":memory:" in url.database or "mode=memory" in str(url):
            raise StoreError(
                "bad database URL: SQLite needs a file path, not an in-memory database"
            )
    elif not url.database:
        raise StoreError(f"bad database URL: no database name in {_display(url)}")


def _check_driver_installed(backend: str, driver: _Driver) -> None:
    if importlib.util.find_spec(driver.module) is not None:
        return
    hint = f"pip install {driver.package}"
    if driver.extra:
        hint += f" (or pip install 'minipbx[{driver.extra}]')"
    raise StoreError(
        f"{backend} database URLs need the Python package {driver.package!r}, "
        f"which is not installed: {hint}"
    )


def _display(url: URL) -> str:
    return url.render_as_string(hide_password=True)


def describe_error(exc: BaseException) -> str:
    """A one-line description of a database or driver exception (no SQL, no traceback)."""
    orig: BaseException = exc
    if isinstance(exc, DBAPIError) and exc.orig is not None:
        orig = exc.orig
    lines = str(orig).strip().splitlines()
    text = lines[0].strip() if lines else ""
    return text or type(orig).__name__


def _is_database_error(exc: BaseException) -> bool:
    if isinstance(exc, SQLAlchemyError | OSError):
        return True
    return type(exc).__module__.split(".", 1)[0] in _DRIVER_MODULES


def alembic_config(url: str | None = None) -> Config:
    """An Alembic config for the packaged migrations (no alembic.ini).

    ``url`` is needed only for offline SQL generation (``command.upgrade(cfg, "head",
    sql=True)``); :meth:`Database.upgrade` hands over a live connection instead. New
    revisions are written by hand in ``minipbx/store/migrations/versions`` (``NNNN_name.py``,
    ``revision = "NNNN"``), or started with ``command.revision(alembic_config(), "msg",
    rev_id="NNNN")``.
    """
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.set_main_option("path_separator", "os")
    if url is not None:
        cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return cfg


def head_revision() -> str | None:
    """The newest migration shipped with this version of minipbx."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class Database:
    """A database reached through one async SQLAlchemy engine.

    Build it from a URL (cheap, no I/O), then ``await open()`` (checks that the database is
    reachable and writable; :meth:`upgrade` does it too) and ``await upgrade()`` (applies the
    migrations). Use :meth:`read` and :meth:`write` for sessions, :meth:`close` at the end;
    ``async with Database(url) as db`` opens and closes.
    """

    def __init__(
        self,
        url: str | URL,
        *,
        busy_timeout: float = 5.0,
        connect_timeout: float = 10.0,
        sqlite_synchronous: str = "NORMAL",
        echo: bool = False,
    ) -> None:
        """Check ``url`` (see :func:`parse_url`) and build the engine; no connection yet.

        ``busy_timeout``: seconds a SQLite writer waits for another writer's lock.
        ``connect_timeout``: seconds to reach a MySQL/PostgreSQL server.
        ``sqlite_synchronous``: ``NORMAL`` (survives a process crash, WAL) or ``FULL`` (also
        survives a power cut, one fsync per commit).
        """
        if sqlite_synchronous.upper() not in ("NORMAL", "FULL"):
            raise StoreError(f"sqlite_synchronous must be NORMAL or FULL: {sqlite_synchronous!r}")
        self.url = parse_url(url)
        self.backend = self.url.get_backend_name()
        self._busy_timeout = busy_timeout
        self._connect_timeout = connect_timeout
        self._synchronous = sqlite_synchronous.upper()
        self._echo = echo
        self.engine = self._create_engine(migrating=False)
        write_engine = self.engine.execution_options(**{_WRITE_OPTION: True})
        self._reads = async_sessionmaker(self.engine, expire_on_commit=False, autoflush=False)
        self._writes = async_sessionmaker(write_engine, expire_on_commit=False)
        self._opened = False

    @classmethod
    def for_data_dir(
        cls, data_dir: str | os.PathLike[str], url: str | URL | None = None, **options: Any
    ) -> Database:
        """The database at ``url``, or the default SQLite file in ``data_dir``."""
        return cls(url if url is not None else default_url(data_dir), **options)

    @property
    def display_url(self) -> str:
        """The URL with the password hidden, for logs and messages."""
        return _display(self.url)

    @property
    def is_sqlite(self) -> bool:
        """True for the SQLite back end."""
        return self.backend == "sqlite"

    def __repr__(self) -> str:
        return f"Database({self.display_url!r})"

    async def __aenter__(self) -> Database:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- set-up --------------------------------------------------------------------------

    def _create_engine(self, *, migrating: bool) -> AsyncEngine:
        options: dict[str, Any] = {"echo": self._echo}
        if migrating:
            options["poolclass"] = NullPool
        if self.is_sqlite:
            options["connect_args"] = {"timeout": self._busy_timeout}
        else:
            options["pool_pre_ping"] = True
            options["pool_recycle"] = 3600  # under MySQL's default wait_timeout
            key = "timeout" if self.backend == "postgresql" else "connect_timeout"
            timeout = self._connect_timeout
            options["connect_args"] = {key: timeout if key == "timeout" else max(1, int(timeout))}
        engine = create_async_engine(self.url, **options)
        if self.is_sqlite:
            self._install_sqlite_hooks(engine, migrating=migrating)
        return engine

    def sqlite_connect(self) -> sqlite3.Connection:
        """A plain blocking ``sqlite3`` connection to this (SQLite) database, set up as the
        engine's are (busy timeout, synchronous mode, autocommit: emit BEGIN yourself).

        For hot write paths that run in a thread of their own (the CDR appender), where a
        trip through the async engine costs more than the write. StoreError on failure.
        """
        if not self.is_sqlite:
            raise StoreError(f"not a SQLite database: {self.display_url}")
        try:
            conn = sqlite3.connect(
                self.url.database or "",
                timeout=self._busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous = {self._synchronous}")
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open {self.display_url}: {describe_error(exc)}") from exc
        return conn

    def _install_sqlite_hooks(self, engine: AsyncEngine, *, migrating: bool) -> None:
        # Foreign keys stay off while migrating: SQLite "ALTER" rebuilds tables (batch mode),
        # and DROP TABLE with foreign keys on would fire ON DELETE CASCADE.
        pragmas = [
            f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}",
            f"PRAGMA synchronous = {self._synchronous}",
            f"PRAGMA foreign_keys = {'OFF' if migrating else 'ON'}",
        ]
        attempts = max(1, int(self._busy_timeout / 0.05))

        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
            cursor = dbapi_connection.cursor()
            try:
                for pragma in pragmas:
                    cursor.execute(pragma)
                _enable_wal(cursor, attempts)
            finally:
                cursor.close()

        def on_begin(conn: Connection) -> None:
            write = migrating or conn.get_execution_options().get(_WRITE_OPTION, False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        event.listen(engine.sync_engine, "connect", on_connect)
        event.listen(engine.sync_engine, "begin", on_begin)

    def _check_sqlite_dir(self) -> None:
        path = Path(self.url.database or "")
        directory = path.parent
        try:
            directory.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create data directory {directory}: {exc.strerror or exc}"
            ) from exc
        if not os.access(directory, os.W_OK | os.X_OK):
            raise StoreError(
                f"data directory {directory} is not writable "
                f"(SQLite needs to create {path.name} and its -wal and -shm files there)"
            )
        if path.exists() and not os.access(path, os.R_OK | os.W_OK):
            raise StoreError(f"database file {path} is not readable and writable")

    async def open(self) -> None:
        """Check that the database can be reached (and, for SQLite, written); idempotent.

        Creates the data directory for a SQLite file. Raises :class:`StoreError`.
        """
        if self._opened:
            return
        if self.is_sqlite:
            self._check_sqlite_dir()
        try:
            async with self.engine.connect() as conn:
                await conn.exec_driver_sql("SELECT 1")
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            raise StoreError(
                f"cannot open database {self.display_url}: {describe_error(exc)}"
            ) from exc
        self._opened = True
        log.info("store.open url=%s backend=%s", self.display_url, self.backend)

    async def close(self) -> None:
        """Close every pooled connection (the engine can still be used afterwards)."""
        await self.engine.dispose()
        self._opened = False

    # --- migrations ----------------------------------------------------------------------

    async def upgrade(self, revision: str = "head") -> None:
        """Apply the packaged Alembic migrations up to ``revision``; a no-op when current.

        Concurrent upgrades (two processes starting at once, several nodes) are serialised:
        SQLite by ``BEGIN IMMEDIATE``, PostgreSQL by an advisory lock, MySQL by ``GET_LOCK``.
        On MySQL, DDL is not transactional: a failed migration may leave it half-applied.
        """
        await self.open()
        engine = self._create_engine(migrating=True)
        try:
            with self.translate_errors("upgrade"):
                async with engine.connect() as conn:
                    await conn.begin()
                    await self._lock_migrations(conn)
                    before = await conn.run_sync(_current_revision)
                    await conn.run_sync(_run_upgrade, revision)
                    after = await conn.run_sync(_current_revision)
                    if self.is_sqlite:
                        await _check_foreign_keys(conn)
                    await conn.commit()
        finally:
            await engine.dispose()
        if before != after:
            log.info("store.upgrade url=%s from=%s to=%s", self.display_url, before, after)

    async def _lock_migrations(self, conn: AsyncConnection) -> None:
        if self.backend == "postgresql":  # released at commit
            await conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_PG_MIGRATION_LOCK})")
        elif self.backend in ("mysql", "mariadb"):  # released when the connection closes
            result = await conn.exec_driver_sql(
                f"SELECT GET_LOCK('{_MYSQL_MIGRATION_LOCK}', {int(self._connect_timeout * 6)})"
            )
            if result.scalar() != 1:
                raise StoreError(f"timed out waiting for another migration on {self.display_url}")

    async def current_revision(self) -> str | None:
        """The migration the database is at; None for an empty database."""
        with self.translate_errors("read revision"):
            async with self.engine.connect() as conn:
                return await conn.run_sync(_current_revision)

    # --- sessions ------------------------------------------------------------------------

    @contextmanager
    def translate_errors(self, action: str) -> Iterator[None]:
        """Turn database and driver exceptions raised inside into :class:`StoreError`.

        Unique-constraint violations become :class:`ConflictError`; StoreErrors pass through.
        """
        try:
            yield
        except StoreError:
            raise
        except IntegrityError as exc:
            raise ConflictError(f"{action}: conflicting write: {describe_error(exc)}") from exc
        except Exception as exc:
            if not _is_database_error(exc):
                raise
            raise StoreError(
                f"{action} failed on {self.display_url}: {describe_error(exc)}"
            ) from exc

    @asynccontextmanager
    async def read(self, action: str = "read") -> AsyncIterator[AsyncSession]:
        """A session for reads (SQLite: deferred BEGIN, never blocks a writer in WAL mode)."""
        with self.translate_errors(action):
            async with self._reads() as session:
                yield session

    @asynccontextmanager
    async def write(self, action: str = "write") -> AsyncIterator[AsyncSession]:
        """A session in a write transaction, committed when the block ends without error.

        SQLite takes the write lock at ``BEGIN IMMEDIATE`` and waits up to ``busy_timeout``
        for another writer (say the CLI while the server runs).
        """
        with self.translate_errors(action):
            async with self._writes() as session, session.begin():
                yield session


def _current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn).get_current_revision()


def _run_upgrade(conn: Connection, revision: str) -> None:
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, revision)


async def _check_foreign_keys(conn: AsyncConnection) -> None:
    result = await conn.exec_driver_sql("PRAGMA foreign_key_check")
    bad = result.first()
    if bad is not None:
        table, rowid = tuple(bad)[:2]
        raise StoreError(f"migration broke a foreign key: table {table} row {rowid}")


def _enable_wal(cursor: Any, attempts: int) -> None:
    """Switch a SQLite file to WAL (persistent, so usually already done).

    Changing the journal mode needs an exclusive lock and SQLite does not wait for it with
    the busy handler: two processes opening a new database at once (server and CLI) would
    see "database is locked". Retry for up to the busy timeout (this runs in the driver's
    thread, so sleeping does not block the event loop).
    """
    for attempt in range(attempts):
        try:
            cursor.execute("PRAGMA journal_mode")
            if str(cursor.fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except Exception as exc:  # sqlite3.OperationalError, from the driver's thread
            if "locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(0.05)
