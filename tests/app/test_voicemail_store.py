"""Mailboxes over SQLite and WAV files (minipbx.voicemail): saving durably, filing after a
database failure or a crash, message changes reported to message waiting, the services."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from minipbx.pbx.voicemail import NEW, OLD, SAVED, Counts, PinCheck, PinGuard
from minipbx.store import (
    Database,
    NotFoundError,
    SqlSettingsRepo,
    SqlTenantRepo,
    SqlUserRepo,
    SqlUserSettingsRepo,
    SqlVoicemailRepo,
    StoreError,
)
from minipbx.voicemail import (
    Limits,
    SqlMailbox,
    SqlMailboxes,
    VoicemailAny,
    VoicemailDeposit,
    VoicemailMain,
    atomic_write,
    for_user,
    limits_of,
    voicemail_services,
)
from tests.pbx.test_voicemail import GREETING, NOW, SPEECH, FakeChannel, rec

RECEIVED = 1_900_000_000.0


@dataclass
class Env:
    db: Database
    data: Path
    tenant_id: int
    alice: int  # user 100 (PIN 1234, e-mail)
    bob: int  # user 200 (no PIN)
    boxes: SqlMailboxes
    changes: list[tuple[int, str]]


@pytest.fixture
async def env(tmp_path: Path) -> AsyncIterator[Env]:
    data = tmp_path / "data"
    db = Database.for_data_dir(data)
    await db.upgrade()
    tenant = await SqlTenantRepo(db).ensure_default()
    users = SqlUserRepo(db)
    alice = await users.add("100", "pw", email="alice@example.com")
    bob = await users.add("200", "pw")
    await SqlUserSettingsRepo(db).update_settings(alice.id, voicemail_pin="1234")
    changes: list[tuple[int, str]] = []
    boxes = SqlMailboxes(db, data, on_change=lambda t, e: changes.append((t, e)))
    await boxes.load()
    yield Env(db, data, tenant.id, alice.id, bob.id, boxes, changes)
    await db.close()


async def box_of(env: Env, extension: str = "100") -> SqlMailbox:
    box = await env.boxes.open(env.tenant_id, extension)
    assert box is not None
    return box


def alice_greeting(env: Env) -> str:
    info = env.boxes.box_info(env.tenant_id, "100")
    assert info is not None and info.user_id == env.alice and info.created_at is not None
    return info.greeting_file


def files(env: Env, extension: str = "100") -> list[str]:
    directory = env.boxes.box_dir(env.tenant_id, extension)
    return sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []


# --- saving --------------------------------------------------------------------------------


async def test_save_writes_wav_then_row(env: Env) -> None:
    box = await box_of(env)
    woken: list[bool] = []
    env.boxes.add_listener(lambda: woken.append(True))
    message_id = await box.save(SPEECH, "0612345678", 3.25, RECEIVED)
    assert message_id is not None
    record = await SqlVoicemailRepo(env.db).get(message_id)
    assert record.path.startswith(f"voicemail/{env.tenant_id}/100/") and record.path.endswith(
        ".wav"
    )
    assert (env.data / record.path).read_bytes() == SPEECH
    assert files(env) == [Path(record.path).name]  # no marker, no temporary file left
    assert record.caller_number == "0612345678" and record.duration_ms == 3250
    assert record.received_at.timestamp() == RECEIVED and record.folder == NEW
    assert env.changes == [(env.tenant_id, "100")]
    assert env.boxes.cached_counts(env.tenant_id, "100") == Counts(1, 0)
    assert woken == [True]


async def test_caller_with_control_characters_is_cleaned(env: Env) -> None:
    box = await box_of(env)
    message_id = await box.save(SPEECH, "06\r\n12", 2.0, RECEIVED)
    assert message_id is not None
    assert (await SqlVoicemailRepo(env.db).get(message_id)).caller_number == "0612"


async def test_database_failure_keeps_the_message_and_files_it_later(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = await box_of(env)
    repo = env.boxes.repo
    real_add = repo.add

    async def refuse(*args: Any, **kw: Any) -> Any:
        raise StoreError("add voicemail failed on sqlite: database is locked")

    monkeypatch.setattr(repo, "add", refuse)
    assert await box.save(SPEECH, "101", 4.0, RECEIVED) is None
    names = files(env)
    assert len(names) == 2 and {Path(n).suffix for n in names} == {".json", ".wav"}
    assert env.boxes.recovery_due
    assert await env.boxes.recover() == 0  # still down: kept for later
    assert len(files(env)) == 2 and env.boxes.recovery_due
    monkeypatch.setattr(repo, "add", real_add)
    assert await env.boxes.recover() == 1
    (record,) = await repo.list_messages(env.alice)
    assert (record.caller_number, record.duration_ms) == ("101", 4000)
    assert record.received_at.timestamp() == RECEIVED
    assert files(env) == [Path(record.path).name]
    assert not env.boxes.recovery_due
    assert env.changes == [(env.tenant_id, "100")]
    assert await env.boxes.recover() == 0  # nothing twice


async def test_recovery_after_crashes(env: Env) -> None:
    directory = env.boxes.box_dir(env.tenant_id, "100")
    directory.mkdir(parents=True)
    rel = f"voicemail/{env.tenant_id}/100"
    marker = {
        "user_id": env.alice,
        "tenant_id": env.tenant_id,
        "extension": "100",
        "caller": "101",
        "received": "2030-01-01T10:00:00+00:00",
        "duration_ms": 2000,
    }
    # crash before the WAV was renamed into place: nothing was promised, the marker goes
    (directory / "a.json").write_text(json.dumps({**marker, "path": f"{rel}/a.wav"}))
    # crash after the row was committed, before the marker went: no second row
    (directory / "b.wav").write_bytes(SPEECH)
    await SqlVoicemailRepo(env.db).add(env.alice, f"{rel}/b.wav", datetime.now(UTC))
    (directory / "b.json").write_text(json.dumps({**marker, "path": f"{rel}/b.wav"}))
    # crash before the row: filed now
    (directory / "c.wav").write_bytes(SPEECH)
    (directory / "c.json").write_text(json.dumps({**marker, "path": f"{rel}/c.wav"}))
    # a broken marker is left for a human, and does not stop the others
    (directory / "d.json").write_text("{not json")
    (directory / "g.wav").write_bytes(SPEECH)  # as are markers with bad fields
    (directory / "g.json").write_text(json.dumps({**marker, "user_id": "x"}))
    (directory / "h.wav").write_bytes(SPEECH)
    (directory / "h.json").write_text(json.dumps({**marker, "received": "2030-01-01T10:00"}))
    # an old temporary file of an interrupted write is cleaned up; a fresh one is not
    stale = directory / ".e.wav.x.tmp"
    stale.write_bytes(b"partial")
    os.utime(stale, (time.time() - 7200, time.time() - 7200))
    fresh = directory / ".f.wav.y.tmp"
    fresh.write_bytes(b"partial")
    assert await env.boxes.recover() == 1
    assert files(env) == [
        ".f.wav.y.tmp",
        "b.wav",
        "c.wav",
        "d.json",
        "g.json",
        "g.wav",
        "h.json",
        "h.wav",
    ]
    paths = sorted(m.path for m in await SqlVoicemailRepo(env.db).list_messages(env.alice))
    assert paths == [f"{rel}/b.wav", f"{rel}/c.wav"]


async def test_messages_of_a_deleted_user_are_dropped(env: Env) -> None:
    box = await box_of(env, "200")
    await SqlUserRepo(env.db).remove("200")
    assert await box.save(SPEECH, "101", 2.0, RECEIVED) is None
    assert files(env, "200") == []
    assert not env.boxes.recovery_due


async def test_boxes_of_deleted_users_are_removed_on_reload(env: Env) -> None:
    bob = await box_of(env, "200")
    assert await bob.save(SPEECH, "101", 2.0, RECEIVED) is not None
    await bob.save_greeting(GREETING)
    await (await box_of(env)).save_greeting(GREETING)
    stray = env.boxes.root / "notes"  # not a tenant: left alone
    stray.mkdir()
    await SqlUserRepo(env.db).remove("200")
    assert await env.boxes.refresh_if_changed()
    assert files(env, "200") == [] and not env.boxes.box_dir(env.tenant_id, "200").exists()
    assert files(env) == [alice_greeting(env)] and stray.is_dir()


async def test_a_new_user_on_a_deleted_users_extension_starts_clean(env: Env) -> None:
    await (await box_of(env, "200")).save_greeting(GREETING)
    users = SqlUserRepo(env.db)
    await users.remove("200")
    await users.add("200", "pw")  # before the boxes were loaded again (SQLite: same id)
    assert await env.boxes.refresh_if_changed()
    assert await (await box_of(env, "200")).greeting() is None
    assert files(env, "200") == []  # the old greeting is gone
    box = await box_of(env, "200")
    await box.save_greeting(GREETING)
    assert files(env, "200") == [box.info.greeting_file]


async def test_a_pending_message_of_a_deleted_user_is_not_filed_for_its_successor(
    env: Env,
) -> None:
    users = SqlUserRepo(env.db)
    await users.remove("200")
    successor = await users.add("200", "pw")
    assert successor.id == env.bob  # SQLite gives the id again
    await env.boxes.load()
    directory = env.boxes.box_dir(env.tenant_id, "200")
    directory.mkdir(parents=True)
    (directory / "old.wav").write_bytes(SPEECH)
    marker = {
        "user_id": env.bob,
        "tenant_id": env.tenant_id,
        "extension": "200",
        "path": f"voicemail/{env.tenant_id}/200/old.wav",
        "caller": "101",
        "received": "2020-01-01T10:00:00+00:00",  # before the successor was made
        "duration_ms": 2000,
    }
    (directory / "old.json").write_text(json.dumps(marker))
    assert await env.boxes.recover() == 0
    assert files(env, "200") == []
    assert await SqlVoicemailRepo(env.db).list_messages(env.bob) == []


async def test_a_greeting_from_before_ids_is_kept(env: Env) -> None:
    directory = env.boxes.box_dir(env.tenant_id, "100")
    directory.mkdir(parents=True)
    (directory / "greeting.wav").write_bytes(GREETING)
    await env.boxes.load()
    assert await (await box_of(env)).greeting() == GREETING
    assert files(env) == [alice_greeting(env)]


async def test_cancelled_call_still_files_its_message(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    box = await box_of(env)
    repo = env.boxes.repo
    real_add = repo.add
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_add(*args: Any, **kw: Any) -> Any:
        entered.set()
        await release.wait()
        return await real_add(*args, **kw)

    monkeypatch.setattr(repo, "add", slow_add)
    task = asyncio.create_task(box.save(SPEECH, "101", 2.0, RECEIVED))
    await entered.wait()
    task.cancel()  # e.g. the service task cancelled at shutdown
    with pytest.raises(asyncio.CancelledError):
        await task
    release.set()
    for _ in range(100):
        if await repo.list_messages(env.alice):
            break
        await asyncio.sleep(0.01)
    assert len(await repo.list_messages(env.alice)) == 1
    assert not any(n.endswith(".json") for n in files(env))


def test_atomic_write_replaces_whole_or_not_at_all(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "box" / "greeting.wav"
    atomic_write(target, b"first")
    atomic_write(target, b"second")
    assert target.read_bytes() == b"second"

    def broken_fsync(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        atomic_write(target, b"third, half written")
    monkeypatch.undo()
    assert target.read_bytes() == b"second"
    assert [p.name for p in target.parent.iterdir()] == ["greeting.wav"]


# --- the box -------------------------------------------------------------------------------


async def test_list_move_delete_and_counts(env: Env) -> None:
    box = await box_of(env)
    first = await box.save(SPEECH, "101", 2.0, RECEIVED)
    second = await box.save(GREETING, "", 3.0, RECEIVED + 60)
    assert first is not None and second is not None
    listed = await box.messages()
    assert [(m.id, m.folder, m.caller, m.received, m.seconds) for m in listed] == [
        (first, NEW, "101", RECEIVED, 2.0),
        (second, NEW, "", RECEIVED + 60, 3.0),
    ]
    assert await box.audio(second) == GREETING
    env.changes.clear()
    await box.move(first, OLD)
    await box.move(second, SAVED)
    assert await env.boxes.counts(env.tenant_id, "100") == Counts(0, 2)
    assert env.changes == [(env.tenant_id, "100")] * 2
    path = env.data / (await SqlVoicemailRepo(env.db).get(first)).path
    await box.delete(first)
    assert not path.exists()
    assert [m.id for m in await box.messages()] == [second]
    assert env.boxes.cached_counts(env.tenant_id, "100") == Counts(0, 1)
    other = await box_of(env, "200")
    with pytest.raises(NotFoundError):  # not a message of this box
        await other.audio(second)
    with pytest.raises(NotFoundError):
        await other.delete(second)
    path.parent.joinpath(Path((await SqlVoicemailRepo(env.db).get(second)).path).name).unlink()
    assert await box.audio(second) is None  # the file vanished: said, not a crash


async def test_pin_greeting_and_limits(env: Env) -> None:
    box = await box_of(env)
    assert box.has_pin and not (await box_of(env, "200")).has_pin
    assert await box.check_pin("1234", 0.0) is PinCheck.OK
    assert await box.check_pin("9999", 1.0) is PinCheck.WRONG
    await box.set_pin("55555")
    assert (await SqlUserSettingsRepo(env.db).get_settings(env.alice)).voicemail_pin == "55555"
    assert await (await box_of(env)).check_pin("55555", 2.0) is PinCheck.OK
    with pytest.raises(ValueError):
        await box.set_pin("12")
    assert await box.greeting() is None
    await box.save_greeting(GREETING)
    assert await (await box_of(env)).greeting() == GREETING
    assert (box.max_seconds, box.max_messages) == (120.0, 100)
    settings = SqlSettingsRepo(env.db)
    await settings.set("voicemail.max_messages", "5")
    await settings.set("voicemail.max_seconds", "30", tenant_id=env.tenant_id)
    assert await env.boxes.refresh_if_changed()
    box = await box_of(env)
    assert (box.max_seconds, box.max_messages) == (30.0, 5)
    assert not await env.boxes.refresh_if_changed()


async def test_a_users_own_message_length(env: Env) -> None:
    settings = SqlSettingsRepo(env.db)
    await settings.set("voicemail.max_seconds", "30", tenant_id=env.tenant_id)
    await settings.set("voicemail.max_messages", "7")
    await SqlUserSettingsRepo(env.db).update_settings(env.alice, voicemail_max_seconds=45)
    assert await env.boxes.refresh_if_changed()
    alice, bob = await box_of(env), await box_of(env, "200")
    assert (alice.max_seconds, alice.max_messages) == (45.0, 7)  # her own length
    assert (bob.max_seconds, bob.max_messages) == (30.0, 7)  # the tenant's
    box_info = env.boxes.box_info(env.tenant_id, "100")
    assert box_info is not None and box_info.max_seconds == 45
    assert env.boxes.limits(env.tenant_id).max_seconds == 30.0  # the tenant's, unchanged
    # a longer one than the tenant's is allowed too; read fresh when a call opens the box
    await SqlUserSettingsRepo(env.db).update_settings(env.alice, voicemail_max_seconds=600)
    assert (await box_of(env)).max_seconds == 600.0
    await SqlUserSettingsRepo(env.db).update_settings(env.alice, voicemail_max_seconds=None)
    assert (await box_of(env)).max_seconds == 30.0  # NULL: the tenant's again


async def test_deposit_records_up_to_the_users_length(
    env: Env, monkeypatch: pytest.MonkeyPatch
) -> None:
    await SqlUserSettingsRepo(env.db).update_settings(env.alice, voicemail_max_seconds=20)
    await env.boxes.refresh_if_changed()
    channel = FakeChannel(recordings=[rec()], caller="0699")
    assert await VoicemailDeposit(env.boxes).run(channel, "100") == "saved"
    assert [kind[0] for kind in channel.kinds("record")] == [20.0]
    channel = FakeChannel(recordings=[rec()], caller="0699")
    assert await VoicemailDeposit(env.boxes).run(channel, "200") == "saved"
    assert [kind[0] for kind in channel.kinds("record")] == [120.0]  # the default

    async def down(*args: Any, **kw: Any) -> Any:
        raise StoreError("database is unreachable")

    monkeypatch.setattr(env.boxes.user_settings, "get_settings", down)
    box = await env.boxes.open_for_deposit(env.tenant_id, "100")  # from the memory copy
    assert box is not None and box.max_seconds == 20.0


def test_for_user_overrides_only_usable_lengths() -> None:
    tenant = limits_of({"voicemail.max_seconds": "30", "voicemail.max_messages": "9"})
    assert for_user(tenant, None) == tenant
    assert for_user(tenant, 3600) == Limits(3600.0, 9)
    assert for_user(tenant, 5) == Limits(5.0, 9)
    assert for_user(tenant, 4) == for_user(tenant, 3601) == tenant  # not through the checks


def test_limits_of_bad_values() -> None:
    assert limits_of({}) == limits_of({"voicemail.max_seconds": "x"})
    assert limits_of({"voicemail.max_seconds": "2"}).max_seconds == 120.0  # under 5: default
    assert limits_of({"voicemail.max_messages": "0"}).max_messages is None  # 0: no limit


async def test_lockout_is_shared_by_calls(env: Env) -> None:
    boxes = SqlMailboxes(env.db, env.data, pin_guard=PinGuard(max_failures=2, lockout=60.0))
    await boxes.load()
    for now in (0.0, 1.0):
        box = await boxes.open(env.tenant_id, "100")
        assert box is not None and await box.check_pin("0000", now) is PinCheck.WRONG
    box = await boxes.open(env.tenant_id, "100")
    assert box is not None and await box.check_pin("1234", 2.0) is PinCheck.LOCKED


async def test_which_boxes_exist(env: Env) -> None:
    boxes = env.boxes
    assert boxes.accepts(env.tenant_id, "100") and boxes.accepts(env.tenant_id, "200")
    assert not boxes.accepts(env.tenant_id, "300") and not boxes.accepts(env.tenant_id + 1, "100")
    await SqlUserSettingsRepo(env.db).update_settings(env.bob, voicemail_enabled=False)
    assert boxes.accepts(env.tenant_id, "200")  # until the reload
    assert await boxes.open(env.tenant_id, "200") is None  # open() reads fresh
    assert await boxes.refresh_if_changed()
    assert not boxes.accepts(env.tenant_id, "200")


async def test_recount_notices_changes_made_elsewhere(env: Env) -> None:
    box = await box_of(env)
    message_id = await box.save(SPEECH, "101", 2.0, RECEIVED)
    assert message_id is not None
    env.changes.clear()
    assert await env.boxes.recount() == []
    await SqlVoicemailRepo(env.db).move(message_id, OLD)  # the console
    assert await env.boxes.recount() == [(env.tenant_id, "100")]
    assert env.changes == [(env.tenant_id, "100")]
    assert env.boxes.cached_counts(env.tenant_id, "100") == Counts(0, 1)


async def test_recount_notices_a_box_emptied_elsewhere(env: Env) -> None:
    box = await box_of(env)
    message_id = await box.save(SPEECH, "101", 2.0, RECEIVED)
    assert message_id is not None
    assert await env.boxes.recount() == []
    assert env.boxes._counts.keys() == {(env.tenant_id, "100")}  # empty boxes: no entry
    await SqlVoicemailRepo(env.db).remove(message_id)  # the console
    assert await env.boxes.recount() == [(env.tenant_id, "100")]
    assert env.boxes.cached_counts(env.tenant_id, "100") == Counts(0, 0)
    assert await env.boxes.recount() == []


async def test_async_on_change_and_a_failing_one(env: Env) -> None:
    seen: list[str] = []

    async def later(tenant_id: int, extension: str) -> None:
        seen.append(extension)

    env.boxes.on_change = later
    await env.boxes.changed(env.tenant_id, "100")

    def broken(tenant_id: int, extension: str) -> None:
        raise RuntimeError("MWI bug")

    env.boxes.on_change = broken
    await env.boxes.changed(env.tenant_id, "200")  # logged, not raised
    assert seen == ["100"]


# --- the mail queue ------------------------------------------------------------------------


async def test_mail_queue(env: Env) -> None:
    box = await box_of(env)
    bob_box = await box_of(env, "200")
    message_id = await box.save(SPEECH, "101", 2.0, RECEIVED)
    await bob_box.save(SPEECH, "101", 2.0, RECEIVED)  # bob has no address: not mailed
    (delivery,) = await env.boxes.pending(10)
    assert (delivery.message_id, delivery.to, delivery.extension) == (
        message_id,
        "alice@example.com",
        "100",
    )
    assert delivery.attach and not delivery.delete_after and delivery.seconds == 2.0
    assert await env.boxes.audio_of(delivery.message_id) == SPEECH
    assert await env.boxes.mail_failed(delivery.message_id, "cannot connect") == 1
    assert await env.boxes.mail_failed(delivery.message_id, "cannot connect") == 2
    assert await env.boxes.mail_failed(999, "x") == 0
    (again,) = await env.boxes.pending(10)
    assert again.attempts == 2
    await env.boxes.mailed(again)
    assert await env.boxes.pending(10) == []
    assert (await SqlVoicemailRepo(env.db).get(delivery.message_id)).emailed_at is not None


async def test_delete_after_mail(env: Env) -> None:
    await SqlUserSettingsRepo(env.db).update_settings(env.alice, voicemail_delete_after_mail=True)
    box = await box_of(env)
    message_id = await box.save(SPEECH, "101", 2.0, RECEIVED)
    assert message_id is not None
    (delivery,) = await env.boxes.pending(10)
    assert delivery.delete_after
    env.changes.clear()
    await env.boxes.mailed(delivery)
    assert await box.messages() == [] and files(env) == []
    assert env.changes == [(env.tenant_id, "100")]
    await env.boxes.mailed(delivery)  # already gone: nothing happens


# --- the services --------------------------------------------------------------------------


async def test_deposit_service_end_to_end(env: Env) -> None:
    services = voicemail_services(env.boxes)
    deposit = services["voicemail"]
    assert isinstance(deposit, VoicemailDeposit)
    assert deposit.accepts(env.tenant_id, "100") and deposit.accepts(env.tenant_id, "100:busy")
    assert not deposit.accepts(env.tenant_id, "300")
    assert env.tenant_id == 1  # the fake channel's tenant
    channel = FakeChannel(recordings=[rec(reason="hangup")], caller="0699")
    assert await deposit.run(channel, "100:busy") == "saved"
    assert channel.played()[0] == "vm_busy"
    (message,) = await (await box_of(env)).messages()
    assert message.caller == "0699" and message.received == NOW + 5.0  # greeting, beep, 3 s


async def test_retrieval_services(env: Env) -> None:
    main, any_box = (
        voicemail_services(env.boxes)["vm-main"],
        voicemail_services(env.boxes)["vm-any"],
    )
    assert isinstance(main, VoicemailMain) and isinstance(any_box, VoicemailAny)
    assert main.accepts(env.tenant_id, "") and any_box.accepts(env.tenant_id, "")
    box = await box_of(env)
    await box.save(SPEECH, "101", 2.0, NOW - 60)
    channel = FakeChannel(["1234", "1", "3", "*"], caller="100")
    assert await main.run(channel, "") == "goodbye"
    assert "vm_message_deleted" in channel.played()
    assert await box.messages() == []
    channel = FakeChannel(["100", "1234", "*"], caller="555")
    assert await any_box.run(channel, "") == "goodbye"
    channel = FakeChannel(["200", "", "200", "", "200", ""], caller="555")
    assert await any_box.run(channel, "") == "login_failed"  # no PIN: not from *98


async def test_deposit_service_when_voicemail_was_turned_off(env: Env) -> None:
    await SqlUserSettingsRepo(env.db).update_settings(env.alice, voicemail_enabled=False)
    channel = FakeChannel()
    assert await VoicemailDeposit(env.boxes).run(channel, "100") == "no_mailbox"
    assert channel.played() == ["call_unavailable"] and channel.kinds("hangup")


async def test_deposit_with_the_database_down(env: Env, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = env.boxes.repo

    async def down(*args: Any, **kw: Any) -> Any:
        raise StoreError("database is unreachable")

    real_add = repo.add
    monkeypatch.setattr(env.boxes.user_settings, "get_settings", down)
    monkeypatch.setattr(repo, "list_messages", down)
    monkeypatch.setattr(repo, "add", down)
    channel = FakeChannel(recordings=[rec()], caller="0699")
    assert await VoicemailDeposit(env.boxes).run(channel, "100") == "saved"
    assert channel.played()[-2:] == ["vm_message_recorded", "goodbye"]
    assert sorted(Path(n).suffix for n in files(env)) == [".json", ".wav"]
    monkeypatch.undo()
    assert repo.add == real_add
    assert await env.boxes.recover() == 1
    (message,) = await (await box_of(env)).messages()
    assert message.caller == "0699"
