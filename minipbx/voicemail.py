"""Voicemail in the app: mailboxes over the database and WAV files, the services, e-mail.

Wiring (in ``App.start``, after ``db.upgrade()``)::

    from minipbx.mail import Mailer, smtp_settings_loader
    from minipbx.store import SqlSettingsRepo
    from minipbx.voicemail import SqlMailboxes, voicemail_services

    self.mailboxes = SqlMailboxes(self.db, data_dir, on_change=mwi_changed)  # (tenant_id, ext)
    await self.mailboxes.load()              # also files messages a crash left unfiled
    self.mailer = Mailer(self.mailboxes, smtp_settings_loader(SqlSettingsRepo(self.db)))
    tasks: self.mailboxes.watch(1.0), self.mailer.run()
    ServiceRunner(..., services={"ivr": ..., **voicemail_services(self.mailboxes)})
    # = {"voicemail": VoicemailDeposit, "vm-main": VoicemailMain, "vm-any": VoicemailAny}

Dial plan targets: ``voicemail:<ext>`` (``voicemail:<ext>:busy`` for the busy greeting),
``vm-main:`` (feature code ``*97``, own box), ``vm-any:`` (``*98``, any box). Message waiting
(RFC 3842) reads ``SqlMailboxes.counts(tenant_id, ext)`` (async, from the database) or
``SqlMailboxes.cached_counts(tenant_id, ext)`` (sync, the memory copy, up to date when
``on_change`` is called).

Storage of a message: ``<data_dir>/voicemail/<tenant_id>/<extension>/<uuid>.wav``. Saving
writes, each atomically (temporary file, fsync, rename, fsync of the directory), first
``<uuid>.json`` (who, caller, time, length), then the WAV, then the database row, and only
then removes the JSON. When the database refuses the row, the message stays on disk with
its JSON and is filed by :meth:`SqlMailboxes.recover` (at load, then every few seconds
from :meth:`SqlMailboxes.watch`); a crash anywhere leaves either nothing (before the WAV's
rename) or a message that will be filed: a message the caller was told was recorded is
never lost. With the database down a call still gets the box from the memory copy
(:meth:`SqlMailboxes.open_for_deposit`), so messages are taken during an outage too.
Greetings: ``greeting-<user id>-<creation time>.wav`` in the same directory, so that a user
created later with the extension of a deleted one never plays its greeting. When the boxes
are loaded (at start and after every change of users), the directories of users that no
longer exist are removed with what they hold.

``on_change(tenant_id, extension)`` is called after every change of a box made here (new
message, heard, saved, deleted, deleted after e-mail) and for changes made elsewhere (the
console, the CLI) when :meth:`SqlMailboxes.watch` notices the counts moved (it counts
every box again every 10 s, one query).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import logging
import os
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, tzinfo
from pathlib import Path
from typing import Any

from sqlalchemy import func, select

from minipbx.mail import Delivery
from minipbx.pbx.channel import Channel
from minipbx.pbx.voicemail import (
    DEFAULT_MAX_SECONDS,
    Counts,
    Message,
    PinCheck,
    PinGuard,
    deposit,
    is_valid_pin,
    parse_target,
    retrieve,
)
from minipbx.store import (
    Database,
    NotFoundError,
    SqlUserSettingsRepo,
    SqlVoicemailRepo,
    StoreError,
    VoicemailRecord,
)
from minipbx.store.models import (
    NAME_LEN,
    NUMBER_LEN,
    SETTINGS_VERSION,
    USERS_VERSION,
    Setting,
    User,
    VoicemailMessage,
)
from minipbx.store.repos import read_version
from minipbx.store.webrepos import SqlWebRepo

log = logging.getLogger("minipbx.voicemail")

VOICEMAIL_DIR = "voicemail"
LEGACY_GREETING = "greeting.wav"  # before greetings were named by user id
MAX_SECONDS_KEY = "voicemail.max_seconds"
MAX_MESSAGES_KEY = "voicemail.max_messages"
DEFAULT_MAX_MESSAGES = 100
STALE_TEMP_SECONDS = 3600.0
_EXTENSION = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+\-]{0,63}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

OnChange = Callable[[int, str], object]
"""``(tenant_id, extension)``; may return an awaitable (then awaited)."""


@dataclass(frozen=True, slots=True)
class BoxInfo:
    """What the memory copy knows of a user's box (the PIN is always read fresh)."""

    user_id: int
    tenant_id: int
    extension: str
    display_name: str
    enabled: bool  # the user
    voicemail_enabled: bool
    max_seconds: int | None = None  # the user's longest message (None: the tenant's)
    # When the user was made: with the id, names the user across deletions (SQLite may
    # give a deleted user's id to the next one).
    created_at: datetime | None = None

    @property
    def greeting_file(self) -> str:
        """The name of this user's greeting in its box directory."""
        stamp = "" if self.created_at is None else f"-{int(self.created_at.timestamp() * 1e6)}"
        return f"greeting-{int(self.user_id)}{stamp}.wav"

    @property
    def usable(self) -> bool:
        """True when calls may leave messages here."""
        return self.enabled and self.voicemail_enabled


@dataclass(frozen=True, slots=True)
class Limits:
    """A tenant's voicemail limits (settings ``voicemail.max_seconds`` and
    ``voicemail.max_messages``: the tenant's value, else the system-wide one); a box's
    ``max_seconds`` is its user's own ``voicemail_max_seconds`` when set (:func:`for_user`)."""

    max_seconds: float = DEFAULT_MAX_SECONDS
    max_messages: int | None = DEFAULT_MAX_MESSAGES


def _number(text: str | None, low: int, high: int) -> int | None:
    if text is None or not text.strip().isdigit():
        return None
    value = int(text.strip())
    return value if low <= value <= high else None


def limits_of(values: Mapping[str, str]) -> Limits:
    """Limits from settings values by key (unusable values: the defaults)."""
    seconds = _number(values.get(MAX_SECONDS_KEY), 5, 3600)
    messages = _number(values.get(MAX_MESSAGES_KEY), 0, 100_000)
    return Limits(
        float(seconds) if seconds is not None else DEFAULT_MAX_SECONDS,
        (messages or None) if messages is not None else DEFAULT_MAX_MESSAGES,
    )


def for_user(limits: Limits, max_seconds: int | None) -> Limits:
    """``limits`` with a user's own longest message (``users.voicemail_max_seconds``);
    None or a value outside 5..3600 (not written through the checks): unchanged."""
    if max_seconds is None or not 5 <= max_seconds <= 3600:
        return limits
    return replace(limits, max_seconds=float(max_seconds))


def _clean(text: str, limit: int) -> str:
    return _CONTROL.sub("", text).strip()[:limit]


# -- files (blocking: run in a worker thread) ---------------------------------------------------


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``path`` so that it holds either its old content or all of ``data``, durably
    (temporary file in the same directory, fsync, rename, fsync of the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


@dataclass(frozen=True, slots=True)
class Pending:
    """A message on disk not yet filed: what its ``<uuid>.json`` marker holds."""

    user_id: int
    tenant_id: int
    extension: str
    path: str  # the WAV, relative to the data directory
    caller: str
    received: datetime  # aware
    duration_ms: int

    def to_json(self) -> dict[str, Any]:
        """The marker's content."""
        return {
            "user_id": self.user_id,
            "tenant_id": self.tenant_id,
            "extension": self.extension,
            "path": self.path,
            "caller": self.caller,
            "received": self.received.isoformat(),
            "duration_ms": self.duration_ms,
        }

    @classmethod
    def from_json(cls, data: Any) -> Pending:
        """Read a marker's content; ValueError, KeyError or TypeError when malformed."""
        received = datetime.fromisoformat(str(data["received"]))
        if received.tzinfo is None:
            raise ValueError("received time without a time zone")
        return cls(
            user_id=int(data["user_id"]),
            tenant_id=int(data["tenant_id"]),
            extension=str(data["extension"]),
            path=str(data["path"]),
            caller=_clean(str(data["caller"]), NUMBER_LEN),
            received=received,
            duration_ms=int(data["duration_ms"]),
        )


def _write_message(wav_path: Path, pending: Pending, wav: bytes) -> None:
    atomic_write(wav_path.with_suffix(".json"), json.dumps(pending.to_json()).encode())
    atomic_write(wav_path, wav)


async def _drop_orphan(marker: Path, pending: Pending) -> None:
    """Remove a pending message whose user is gone (its messages went with it)."""
    log.warning("event=voicemail_user_gone path=%s", pending.path)
    await asyncio.to_thread(_unlink, marker.with_suffix(".wav"))
    await asyncio.to_thread(_unlink, marker)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        log.error("event=voicemail_file_unreadable path=%s error=%s", path, exc)
        return None


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        log.error("event=voicemail_file_not_removed path=%s error=%s", path, exc)


def _sweep(root: Path, boxes: dict[tuple[int, str], BoxInfo]) -> list[Path]:
    """Remove the box directories of users that no longer exist; returns them.

    In the others, greetings of earlier users of the extension are removed and a legacy
    ``greeting.wav`` becomes the current user's. Directories whose names are not a tenant
    id and an extension are left alone.
    """
    removed: list[Path] = []
    if not root.is_dir():
        return removed
    for tenant_dir in root.iterdir():
        if not (tenant_dir.is_dir() and tenant_dir.name.isdigit()):
            continue
        for box_dir in tenant_dir.iterdir():
            if not (box_dir.is_dir() and _EXTENSION.fullmatch(box_dir.name)):
                continue
            info = boxes.get((int(tenant_dir.name), box_dir.name))
            if info is None:
                try:
                    shutil.rmtree(box_dir)
                except OSError as exc:
                    log.error("event=voicemail_box_not_removed path=%s error=%s", box_dir, exc)
                    continue
                removed.append(box_dir)
                continue
            own = info.greeting_file
            for greeting in box_dir.glob("greeting-*.wav"):
                if greeting.name != own:
                    _unlink(greeting)
            legacy = box_dir / LEGACY_GREETING
            if legacy.is_file():
                with contextlib.suppress(OSError):
                    legacy.rename(box_dir / own)
    return removed


def _pending_files(root: Path) -> list[Path]:
    """The ``<uuid>.json`` of messages not yet filed; stale temporary files are removed."""
    if not root.is_dir():
        return []
    found = []
    for path in root.glob("*/*/*"):
        if path.suffix == ".json":
            found.append(path)
        elif path.suffix == ".tmp" and path.name.startswith("."):
            with contextlib.suppress(OSError):
                if time.time() - path.stat().st_mtime > STALE_TEMP_SECONDS:
                    path.unlink()
    return sorted(found)


# -- the boxes -------------------------------------------------------------------------------


class SqlMailboxes:
    """Every tenant's voice mailboxes (the :class:`~minipbx.pbx.voicemail.MailboxLookup`
    of the retrieval flow, and the :class:`~minipbx.mail.MailQueue` of the mailer).

    Keeps in memory, for synchronous questions from the call path: the boxes (user,
    voicemail on or off), the tenants' limits and each box's message counts. Reloaded when
    ``users_version`` or ``settings_version`` moves (:meth:`refresh_if_changed`).
    """

    def __init__(
        self,
        db: Database,
        data_dir: Path,
        *,
        on_change: OnChange | None = None,
        zone: tzinfo | None = None,
        pin_guard: PinGuard | None = None,
    ) -> None:
        self.db = db
        self.data_dir = Path(data_dir)
        self.on_change = on_change
        self.zone = zone
        self.pin_guard = pin_guard or PinGuard()
        self.repo = SqlVoicemailRepo(db)
        self.user_settings = SqlUserSettingsRepo(db)
        self.users = SqlWebRepo(db)
        self._boxes: dict[tuple[int, str], BoxInfo] = {}
        self._box_of_user: dict[int, tuple[int, str]] = {}  # user id -> key of _boxes
        self._limits: dict[int | None, Limits] = {}
        self._counts: dict[tuple[int, str], Counts] = {}
        self._versions: tuple[int, int] | None = None
        self._listeners: list[Callable[[], None]] = []
        self._filing: set[Path] = set()  # markers of messages being filed by _save
        self._recovering = asyncio.Lock()
        self.recovery_due = True

    @property
    def root(self) -> Path:
        """``<data_dir>/voicemail``."""
        return self.data_dir / VOICEMAIL_DIR

    def box_dir(self, tenant_id: int, extension: str) -> Path:
        """Where a box's files live."""
        if not _EXTENSION.fullmatch(extension):
            raise ValueError(f"{extension!r} cannot name a mailbox directory")
        return self.root / str(int(tenant_id)) / extension

    # -- the memory copy ----------------------------------------------------------------------

    async def load(self) -> None:
        """Read the boxes, limits and counts; file messages left unfiled. Raises StoreError."""
        async with self.db.read("load voicemail boxes") as session:
            versions = (
                await read_version(session, USERS_VERSION),
                await read_version(session, SETTINGS_VERSION),
            )
            rows = await session.execute(
                select(
                    User.id,
                    User.tenant_id,
                    User.extension,
                    User.display_name,
                    User.enabled,
                    User.voicemail_enabled,
                    User.voicemail_max_seconds,
                    User.created_at,
                )
            )
            boxes = {(r.tenant_id, r.extension): BoxInfo(*r) for r in rows}
            keys = (MAX_SECONDS_KEY, MAX_MESSAGES_KEY)
            stmt = select(Setting.tenant_id, Setting.key, Setting.value).where(
                Setting.key.in_(keys)
            )
            values: dict[int | None, dict[str, str]] = {}
            for tenant_id, key, value in await session.execute(stmt):
                values.setdefault(tenant_id, {})[key] = value
        system = values.get(None, {})
        self._limits = {t: limits_of({**system, **v}) for t, v in values.items()}
        self._limits[None] = limits_of(system)
        self._boxes, self._versions = boxes, versions
        self._box_of_user = {info.user_id: key for key, info in boxes.items()}
        await self.recount(notify=False)
        log.info("event=voicemail_loaded boxes=%d", len(boxes))
        await self.recover()
        try:
            gone = await asyncio.to_thread(_sweep, self.root, boxes)
        except OSError as exc:  # an unreadable directory: the boxes still work
            log.error("event=voicemail_sweep_failed error=%s", exc)
            gone = []
        for path in gone:
            log.info("event=voicemail_box_removed reason=user_deleted path=%s", path)

    async def refresh_if_changed(self) -> bool:
        """Reload when users or settings changed; True if it reloaded."""
        async with self.db.read("read voicemail versions") as session:
            versions = (
                await read_version(session, USERS_VERSION),
                await read_version(session, SETTINGS_VERSION),
            )
        if versions == self._versions:
            return False
        await self.load()
        return True

    async def recount(self, *, notify: bool = True) -> list[tuple[int, str]]:
        """Count every box's messages again (one query); with ``notify``, report the boxes
        whose counts moved (changes made by the console or another process)."""
        stmt = select(
            VoicemailMessage.user_id, VoicemailMessage.folder, func.count(VoicemailMessage.id)
        ).group_by(VoicemailMessage.user_id, VoicemailMessage.folder)
        async with self.db.read("count voicemail") as session:
            by_user: dict[int, list[int]] = {}
            for user_id, folder, number in await session.execute(stmt):
                slot = by_user.setdefault(user_id, [0, 0])
                slot[0 if folder == "new" else 1] += int(number)
        # Only boxes with messages get an entry (no entry: none), so that a recount costs
        # what the boxes with messages cost, not what every user of a large server does.
        counts: dict[tuple[int, str], Counts] = {}
        for user_id, (new, old) in by_user.items():
            key = self._box_of_user.get(user_id)
            if key is not None:
                counts[key] = Counts(new, old)
        zero = Counts(0, 0)
        moved = sorted(
            k
            for k in counts.keys() | self._counts.keys()
            if k in self._boxes and counts.get(k, zero) != self._counts.get(k, zero)
        )
        self._counts = counts
        if notify:
            for tenant_id, extension in moved:
                await self._notify(tenant_id, extension)
        return moved

    async def watch(self, interval: float = 1.0, recount_every: float = 10.0) -> None:
        """Until cancelled: reload on changes every ``interval`` seconds; recount (and
        tell message waiting) and file unfiled messages every ``recount_every`` seconds
        (at once after a failed filing). Database errors are logged and retried."""
        last = time.monotonic()
        while True:
            try:
                await self.refresh_if_changed()
                if time.monotonic() - last >= recount_every:
                    last = time.monotonic()
                    await self.recount()
                    self.recovery_due = True
                if self.recovery_due:
                    await self.recover()
            except StoreError as exc:
                log.warning("event=voicemail_refresh_failed error=%r", str(exc))
            await asyncio.sleep(interval)

    def box_info(self, tenant_id: int, extension: str) -> BoxInfo | None:
        """The memory copy of a box (None: no such user)."""
        return self._boxes.get((tenant_id, extension))

    def accepts(self, tenant_id: int, extension: str) -> bool:
        """True when ``extension`` is an enabled user with voicemail on (synchronous)."""
        info = self._boxes.get((tenant_id, extension))
        return info is not None and info.usable

    def limits(self, tenant_id: int) -> Limits:
        """The tenant's limits."""
        return self._limits.get(tenant_id) or self._limits.get(None) or Limits()

    def cached_counts(self, tenant_id: int, extension: str) -> Counts:
        """(new, old) messages of a box, from memory (synchronous)."""
        return self._counts.get((tenant_id, extension), Counts(0, 0))

    async def counts(self, tenant_id: int, extension: str) -> Counts:
        """(new, old) messages of a box, read from the database now (old: old + saved)."""
        info = self._boxes.get((tenant_id, extension))
        if info is None:
            return Counts(0, 0)
        found = await self.repo.counts(info.user_id)
        counts = Counts(found.get("new", 0), found.get("old", 0) + found.get("saved", 0))
        self._counts[(tenant_id, extension)] = counts
        return counts

    async def changed(self, tenant_id: int, extension: str) -> None:
        """A box changed: count it again and tell message waiting."""
        try:
            await self.counts(tenant_id, extension)
        except StoreError as exc:  # the next recount catches up
            log.warning("event=voicemail_count_failed box=%s error=%r", extension, str(exc))
        await self._notify(tenant_id, extension)

    async def _notify(self, tenant_id: int, extension: str) -> None:
        if self.on_change is None:
            return
        try:
            result = self.on_change(tenant_id, extension)
            if inspect.isawaitable(result):
                await result
        except Exception:  # message waiting must not break voicemail
            log.exception("event=voicemail_on_change_failed box=%s", extension)

    # -- MailboxLookup ----------------------------------------------------------------------

    async def open(self, tenant_id: int, extension: str) -> SqlMailbox | None:
        """The box of an enabled user with voicemail on (settings read fresh), else None."""
        info = self._boxes.get((tenant_id, extension))
        if info is None or not info.enabled:
            return None
        try:
            settings = await self.user_settings.get_settings(info.user_id)
        except NotFoundError:
            return None
        if not settings.voicemail_enabled:
            return None
        limits = for_user(self.limits(tenant_id), settings.voicemail_max_seconds)
        return SqlMailbox(self, info, settings.voicemail_pin, limits)

    async def open_for_deposit(self, tenant_id: int, extension: str) -> SqlMailbox | None:
        """Like :meth:`open`, but with the database down, the box as the memory copy knows
        it (a caller can still leave a message: it is filed once the database is back)."""
        try:
            return await self.open(tenant_id, extension)
        except StoreError as exc:
            info = self._boxes.get((tenant_id, extension))
            log.warning("event=voicemail_open_from_memory box=%s error=%r", extension, str(exc))
            if info is None or not info.usable:
                return None
            return SqlMailbox(self, info, None, for_user(self.limits(tenant_id), info.max_seconds))

    # -- messages -----------------------------------------------------------------------------

    def path_of(self, relative: str) -> Path | None:
        """The file of a stored ``path``, if it lies inside the data directory."""
        root = self.data_dir.resolve()
        path = (root / relative).resolve()
        return path if path.is_relative_to(root) else None

    async def read_audio(self, record: VoicemailRecord) -> bytes | None:
        """The recording of a message (None when the file is gone)."""
        path = self.path_of(record.path)
        return None if path is None else await asyncio.to_thread(_read, path)

    async def save(
        self, info: BoxInfo, wav: bytes, caller: str, seconds: float, received: float
    ) -> int | None:
        """Store a message durably (see the module doc); its id, or None when the
        database refused it for now (the message is on disk and filed later)."""
        # Shielded: a cancelled service task must not stop the filing half-way.
        return await asyncio.shield(self._save(info, wav, caller, seconds, received))

    async def _save(
        self, info: BoxInfo, wav: bytes, caller: str, seconds: float, received: float
    ) -> int | None:
        wav_path = self.box_dir(info.tenant_id, info.extension) / f"{uuid.uuid4().hex}.wav"
        pending = Pending(
            user_id=info.user_id,
            tenant_id=info.tenant_id,
            extension=info.extension,
            path=wav_path.relative_to(self.data_dir).as_posix(),
            caller=_clean(caller, NUMBER_LEN),
            received=datetime.fromtimestamp(received, UTC),
            duration_ms=max(0, round(seconds * 1000)),
        )
        marker = wav_path.with_suffix(".json")
        self._filing.add(marker)  # recover() leaves it alone meanwhile
        try:
            await asyncio.to_thread(_write_message, wav_path, pending, wav)
            log.info("event=voicemail_written box=%s path=%s", info.extension, pending.path)
            return await self._file(marker, pending)
        finally:
            self._filing.discard(marker)

    async def _file(self, marker: Path, pending: Pending) -> int | None:
        """Add the row of a message written to disk, then drop its JSON marker."""
        try:
            record = await self.repo.add(
                pending.user_id,
                pending.path,
                pending.received,
                duration_ms=pending.duration_ms,
                caller_number=pending.caller,
            )
        except NotFoundError:  # the user was deleted meanwhile: so are their messages
            await _drop_orphan(marker, pending)
            return None
        except StoreError as exc:
            self.recovery_due = True
            log.error(
                "event=voicemail_not_filed path=%s error=%r kept=on_disk", pending.path, str(exc)
            )
            return None
        await asyncio.to_thread(_unlink, marker)
        await self.changed(pending.tenant_id, pending.extension)
        for listener in list(self._listeners):
            listener()
        return record.id

    async def recover(self) -> int:
        """File the messages on disk whose row is missing (database down when they were
        saved, or a crash); returns how many. Stops at the first database error."""
        async with self._recovering:
            return await self._recover()

    async def _recover(self) -> int:
        filed = 0
        self.recovery_due = False  # set again by a failure to file
        for marker in await asyncio.to_thread(_pending_files, self.root):
            if marker in self._filing:
                continue
            try:
                pending = Pending.from_json(json.loads(marker.read_text("utf-8")))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("event=voicemail_bad_marker path=%s error=%s", marker, exc)
                continue
            if not marker.with_suffix(".wav").is_file():  # crashed before the WAV was in place
                await asyncio.to_thread(_unlink, marker)
                continue
            try:
                known = {m.path for m in await self.repo.list_messages(pending.user_id)}
            except StoreError as exc:
                self.recovery_due = True
                log.warning("event=voicemail_recovery_failed error=%r", str(exc))
                return filed
            if pending.path in known:  # filed, then the process stopped before the marker went
                await asyncio.to_thread(_unlink, marker)
                continue
            if self._predates_user(pending.user_id, pending.received):
                # The user was deleted and its id given to a newer user (SQLite does that):
                # the message is the deleted user's, gone with it.
                await _drop_orphan(marker, pending)
                continue
            if await self._file(marker, pending) is not None:
                filed += 1
                log.info("event=voicemail_recovered path=%s", pending.path)
            elif self.recovery_due:  # the database still refuses: later
                return filed
        return filed

    async def remove_record(self, record: VoicemailRecord) -> None:
        """Delete a message (row, then file) and tell message waiting."""
        await self.repo.remove(record.id)
        path = self.path_of(record.path)
        if path is not None:
            await asyncio.to_thread(_unlink, path)
        info = self._by_user(record.user_id)
        if info is not None:
            await self.changed(info.tenant_id, info.extension)

    def _predates_user(self, user_id: int, received: datetime) -> bool:
        """True when a message was recorded before the current user of ``user_id`` existed."""
        info = self._by_user(user_id)
        return info is not None and info.created_at is not None and received < info.created_at

    def _by_user(self, user_id: int) -> BoxInfo | None:
        key = self._box_of_user.get(user_id)
        return None if key is None else self._boxes.get(key)

    # -- MailQueue ------------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[], None]) -> None:
        """Call ``listener()`` after every new message is filed."""
        self._listeners.append(listener)

    async def pending(self, limit: int) -> list[Delivery]:
        """Messages to e-mail: not yet mailed, of users with an address (no attempt cap:
        a message is retried until it goes)."""
        records = await self.repo.pending_email(max_attempts=2**31 - 1, limit=limit)
        out = []
        for record in records:
            try:
                user = await self.users.get_user(record.user_id)
                settings = await self.user_settings.get_settings(record.user_id)
            except NotFoundError:
                continue
            if not user.email:
                continue
            out.append(
                Delivery(
                    message_id=record.id,
                    tenant_id=record.tenant_id,
                    extension=user.extension,
                    to=user.email,
                    attach=settings.voicemail_email_attach,
                    delete_after=settings.voicemail_delete_after_mail,
                    caller=record.caller_number,
                    caller_name=record.caller_name,
                    received=record.received_at,
                    seconds=record.duration_ms / 1000,
                    attempts=record.email_attempts,
                )
            )
        return out

    async def audio_of(self, message_id: int) -> bytes | None:
        """A message's recording."""
        try:
            return await self.read_audio(await self.repo.get(message_id))
        except NotFoundError:
            return None

    async def mail_failed(self, message_id: int, error: str) -> int:
        """Count a failed e-mail attempt (shown in the console); the attempts so far."""
        try:
            return (await self.repo.record_email_failure(message_id, error)).email_attempts
        except NotFoundError:
            return 0

    async def mailed(self, delivery: Delivery) -> None:
        """Mark the message e-mailed; delete it when its user wants that."""
        try:
            record = await self.repo.mark_emailed(delivery.message_id)
            if delivery.delete_after:
                await self.remove_record(record)
                log.info("event=voicemail_deleted_after_mail id=%s", record.id)
        except NotFoundError:  # deleted meanwhile (the console)
            pass


class SqlMailbox:
    """One box (the :class:`~minipbx.pbx.voicemail.Mailbox` the flows run against)."""

    def __init__(self, store: SqlMailboxes, info: BoxInfo, pin: str | None, limits: Limits) -> None:
        self.store = store
        self.info = info
        self._pin = pin or None
        self.limits = limits

    @property
    def tenant_id(self) -> int:
        return self.info.tenant_id

    @property
    def extension(self) -> str:
        return self.info.extension

    @property
    def has_pin(self) -> bool:
        return self._pin is not None

    @property
    def max_seconds(self) -> float:
        return self.limits.max_seconds

    @property
    def max_messages(self) -> int | None:
        return self.limits.max_messages

    @property
    def zone(self) -> tzinfo | None:
        return self.store.zone

    @property
    def _greeting_path(self) -> Path:
        return self.store.box_dir(self.tenant_id, self.extension) / self.info.greeting_file

    async def greeting(self) -> bytes | None:
        return await asyncio.to_thread(_read, self._greeting_path)

    async def save(self, wav: bytes, caller: str, seconds: float, received: float) -> int | None:
        return await self.store.save(self.info, wav, caller, seconds, received)

    async def messages(self) -> list[Message]:
        records = await self.store.repo.list_messages(self.info.user_id)
        return [
            Message(
                r.id,
                r.folder,
                r.caller_number,
                r.received_at.timestamp(),
                r.duration_ms / 1000,
                _clean(r.caller_name, NAME_LEN),
            )
            for r in records
        ]

    async def _own(self, message_id: int) -> VoicemailRecord:
        record = await self.store.repo.get(message_id)
        if record.user_id != self.info.user_id:
            raise NotFoundError(f"no voicemail message {message_id} in this box")
        return record

    async def audio(self, message_id: int) -> bytes | None:
        return await self.store.read_audio(await self._own(message_id))

    async def move(self, message_id: int, folder: str) -> None:
        await self._own(message_id)
        await self.store.repo.move(message_id, folder)
        await self.store.changed(self.tenant_id, self.extension)

    async def delete(self, message_id: int) -> None:
        await self.store.remove_record(await self._own(message_id))

    async def check_pin(self, pin: str, now: float) -> PinCheck:
        key = (self.tenant_id, self.extension)
        return self.store.pin_guard.check(key, self._pin, pin, now)

    async def set_pin(self, pin: str) -> None:
        if not is_valid_pin(pin):
            raise ValueError("a PIN is 4 to 16 digits")
        await self.store.user_settings.update_settings(self.info.user_id, voicemail_pin=pin)
        self._pin = pin

    async def save_greeting(self, wav: bytes) -> None:
        await asyncio.to_thread(atomic_write, self._greeting_path, wav)


# -- the services ----------------------------------------------------------------------------


class VoicemailDeposit:
    """Leaving a message: the :class:`~minipbx.services.Service` of ``voicemail:<ext>``
    (``voicemail:<ext>:busy`` plays the busy greeting)."""

    def __init__(self, mailboxes: SqlMailboxes) -> None:
        self.mailboxes = mailboxes

    def accepts(self, tenant_id: int, arg: str) -> bool:
        return self.mailboxes.accepts(tenant_id, parse_target(arg)[0])

    async def run(self, channel: Channel, arg: str) -> str:
        extension, busy = parse_target(arg)
        box = await self.mailboxes.open_for_deposit(channel.tenant_id, extension)
        if box is None:  # voicemail turned off since accepts()
            await channel.play(["call_unavailable"], barge_in=False)
            await channel.hangup("voicemail")
            return "no_mailbox"
        return await deposit(channel, box, busy=busy)


class VoicemailMain:
    """Listening to one's own box: the service of ``vm-main:`` (feature code ``*97``)."""

    own = True

    def __init__(self, mailboxes: SqlMailboxes) -> None:
        self.mailboxes = mailboxes

    def accepts(self, tenant_id: int, arg: str) -> bool:
        return True  # whether the caller has a box is told in the call

    async def run(self, channel: Channel, arg: str) -> str:
        return await retrieve(channel, self.mailboxes, own=self.own)


class VoicemailAny(VoicemailMain):
    """Listening to any box (number, then PIN): the service of ``vm-any:`` (``*98``)."""

    own = False


def voicemail_services(
    mailboxes: SqlMailboxes,
) -> dict[str, VoicemailDeposit | VoicemailMain]:
    """The services by kind, for ``ServiceRunner(services=...)``."""
    return {
        "voicemail": VoicemailDeposit(mailboxes),
        "vm-main": VoicemailMain(mailboxes),
        "vm-any": VoicemailAny(mailboxes),
    }


__all__ = [
    "BoxInfo",
    "Limits",
    "SqlMailbox",
    "SqlMailboxes",
    "VoicemailAny",
    "VoicemailDeposit",
    "VoicemailMain",
    "atomic_write",
    "for_user",
    "limits_of",
    "voicemail_services",
]
