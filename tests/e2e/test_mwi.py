"""Message waiting indication (RFC 3842) against a live ``minipbx run``, with SIPp phones.

A SIPp UAC subscribes to its own mailbox (answering the digest challenge), gets the
current state at once, and unsubscribes. The change test adds a voicemail message through
the store (from this process, as the CLI or another node would) and expects a NOTIFY with
the new count.
"""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime

import pytest

from minipbx.store import Database, SqlUserRepo, SqlVoicemailRepo
from tests.e2e.conftest import Pbx, SippFactory
from tests.e2e.support import SipMessage, SippRun, wait_for

pytestmark = pytest.mark.slow

EVENT = "message-summary"
CONTENT_TYPE = "application/simple-message-summary"


def _notifies(run: SippRun) -> list[SipMessage]:
    notifies = run.requests_received("NOTIFY")
    for notify in notifies:
        assert notify.get("Event") == EVENT, run.describe()
        assert (notify.get("Content-Type") or "").startswith(CONTENT_TYPE), run.describe()
    return notifies


def _voice(body: str) -> tuple[str, str]:
    """(Messages-Waiting, Voice-Message) of a message-summary body (RFC 3842 5.2)."""
    waiting = re.search(r"^Messages-Waiting: *(\S+)", body, re.MULTILINE)
    voice = re.search(r"^Voice-Message: *(.+?)\s*$", body, re.MULTILINE)
    assert waiting and voice, f"not a message summary: {body!r}"
    return waiting.group(1), voice.group(1)


def test_subscribe_gets_the_current_state_then_unsubscribes(sipp: SippFactory, pbx: Pbx) -> None:
    extension, password = pbx.take_user()
    run = sipp(
        "mwi_subscribe.xml", name=f"mwi-{extension}", rows=[(extension, password)], auth=True
    ).run()
    assert run.returncode == 0, run.describe()
    assert run.responses("SUBSCRIBE") == [401, 200, 200], run.describe()
    accepted = [m for m in run.received if m.status == 200 and m.cseq_method == "SUBSCRIBE"]
    assert accepted[0].get("Expires") == "600", run.describe()
    assert accepted[0].get("Contact"), run.describe()
    first, last = _notifies(run)
    assert first.get("Call-ID") == accepted[0].get("Call-ID"), run.describe()
    assert (first.get("Subscription-State") or "").startswith("active;expires="), run.describe()
    assert _voice(first.body) == ("no", "0/0 (0/0)"), run.describe()
    assert f"Message-Account: sip:{extension}@" in first.body, run.describe()
    assert last.get("Subscription-State") == "terminated;reason=timeout", run.describe()
    log = pbx.log_since_mark()
    assert "event=mwi_subscribed" in log and f"ext={extension}" in log, log


async def _add_voicemail(pbx: Pbx, extension: str) -> None:
    """A new message in ``extension``'s box, written to the server's database."""
    db = Database(f"sqlite+aiosqlite:///{(pbx.data_dir / 'minipbx.db').resolve()}")
    await db.open()
    try:
        user = await SqlUserRepo(db).get(extension)
        assert user is not None, f"no user {extension}"
        await SqlVoicemailRepo(db).add(
            user.id, f"voicemail/mwi-{extension}.wav", datetime.now(UTC), caller_number="999"
        )
    finally:
        await db.close()


def test_a_new_voicemail_is_notified(sipp: SippFactory, pbx: Pbx) -> None:
    extension, password = pbx.take_user()
    phone = sipp(
        "mwi_wait_change.xml", name=f"mwi-{extension}", rows=[(extension, password)], auth=True
    )
    phone.timeout = 45.0  # the scenario waits up to 25 s for the change
    phone.start()
    subscribed = wait_for(
        lambda: (
            "event=mwi_subscribed" in pbx.log_since_mark()
            and f"ext={extension} " in pbx.log_since_mark()
        ),
        8.0,
    )
    assert subscribed, pbx.log_since_mark()
    asyncio.run(_add_voicemail(pbx, extension))
    run = phone.wait()
    assert run.returncode == 0, run.describe()
    initial, change, last = _notifies(run)
    assert _voice(initial.body) == ("no", "0/0 (0/0)"), run.describe()
    assert _voice(change.body) == ("yes", "1/0 (0/0)"), run.describe()
    assert change.get("Call-ID") == initial.get("Call-ID"), run.describe()
    assert last.get("Subscription-State") == "terminated;reason=timeout", run.describe()
