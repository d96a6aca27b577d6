"""Voicemail and calling cards end to end: SIPp phones, a real SMTP server (aiosmtpd) and a
``minipbx run`` of this module's own.

- A busy extension's caller lands in its voice mailbox, speaks (SIPp's ``g711a.pcap``) and
  hangs up: the message is on disk and in the database, the owner's subscribed phone gets
  an MWI NOTIFY, and the message reaches the SMTP server with the WAV attached.
- The owner dials ``*97`` and hears its messages (RFC 4733 keys from a pcap this module
  writes); an unanswered call goes to the mailbox after the no-answer time.
- A calling card: the access number answers, card number, PIN and destination arrive as
  RFC 4733 events, the destination (a SIPp provider on a trunk) answers and the PBX hands
  the media back; the call is cut when the card's money runs out, to the second, and the
  ledger holds the charge.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from email import message_from_bytes
from email.message import Message
from pathlib import Path
from typing import Any

import pytest

from minipbx.store import (
    Database,
    SqlSettingsRepo,
    SqlTenantRepo,
    SqlUserRepo,
    SqlVoicemailRepo,
)
from minipbx.store.billing import SqlCardRepo, SqlLedgerRepo, SqlRateRepo
from minipbx.store.pbxrecords import DialPlanRule
from minipbx.store.pbxrepos import SqlDialPlanRepo, SqlTrunkRepo, SqlUserSettingsRepo
from tests.e2e.conftest import Pbx, RegisterFn, SippFactory, start_pbx
from tests.e2e.dtmf_pcap import write_dtmf_pcap
from tests.e2e.support import HOST, free_port, require_tool, stop, tail, wait_for
from tests.e2e.test_trunks import in_db

pytestmark = pytest.mark.slow

BOX, CALLER, OWNER_PHONE, CARD_CALLER, NO_ANSWER = "600", "601", "602", "603", "604"
# Follow-me and forwarding: who forwards (and how) -> the extension it reaches.
SEQUENTIAL, SIMULTANEOUS = "605", "607"  # follow-me to 606 / 608 (this one ends in voicemail)
FORWARDS = {  # user: (setting, target)
    "609": ("forward_unconditional", "610"),
    "611": ("forward_busy", "612"),
    "613": ("forward_unreachable", "614"),
    "615": ("forward_no_answer", "616"),
}
USERS = (
    BOX,
    CALLER,
    OWNER_PHONE,
    CARD_CALLER,
    NO_ANSWER,
    *(str(n) for n in range(605, 617)),
)
CARD_ACCESS = "700"
CARD_NUMBER, CARD_PIN = "5550001", "4321"
RETURN_CARD, RETURN_PIN = "5550002", "8765"  # money for several calls
CARD_BALANCE = Decimal("0.20")
PRICE = Decimal("3.00")  # per minute: 0.05 a second, so the card pays for 4 s
WARNING_LEAD = 2  # seconds: a card call is warned this long before its cut
PAID_SECONDS = 4
DESTINATION = "0123456"
RTP_LOW = 26000
AUDIO_PCAP = "/usr/share/sip-tester/g711a.pcap"  # 7 s of PCMA speech


@dataclass
class Smtp:
    """An aiosmtpd server on 127.0.0.1 keeping what it receives."""

    port: int
    messages: list[Message] = field(default_factory=list)


@pytest.fixture(scope="module")
def smtp() -> Iterator[Smtp]:
    aiosmtpd = pytest.importorskip("aiosmtpd.controller")
    server = Smtp(free_port(tcp=True))

    class Handler:
        async def handle_DATA(self, srv: object, session: object, envelope: object) -> str:
            server.messages.append(message_from_bytes(envelope.content))  # type: ignore[attr-defined]
            return "250 OK"

    controller = aiosmtpd.Controller(Handler(), hostname=HOST, port=server.port)
    controller.start()
    try:
        yield server
    finally:
        controller.stop()


async def _configure(db: Database, users: dict[str, str], smtp_port: int, trunk: int) -> None:
    await db.upgrade()
    tenant = await SqlTenantRepo(db).ensure_default()
    settings = SqlUserSettingsRepo(db)
    for extension, password in users.items():
        email = f"vm{extension}@example.test" if extension == BOX else None
        user = await SqlUserRepo(db).add(extension, password, email=email)
        await settings.update_settings(
            user.id, voicemail_enabled=extension in (BOX, NO_ANSWER, SIMULTANEOUS)
        )
    special: dict[str, dict[str, object]] = {
        NO_ANSWER: {"no_answer_seconds": 2},
        SEQUENTIAL: {"followme_mode": "sequential", "followme": "606:5", "no_answer_seconds": 2},
        # Its own phone rings 2 s, 608 5 s: longer than the server's ring timeout (3 s).
        SIMULTANEOUS: {
            "followme_mode": "simultaneous",
            "followme": "608:5",
            "no_answer_seconds": 2,
        },
        **{user: {setting: target} for user, (setting, target) in FORWARDS.items()},
        "615": {"forward_no_answer": "616", "no_answer_seconds": 2},
    }
    for extension, values in special.items():
        found = await SqlUserRepo(db).get(extension)
        assert found is not None
        await settings.update_settings(found.id, **values)
    store = SqlSettingsRepo(db)
    for key, value in {
        "smtp.host": HOST,
        "smtp.port": str(smtp_port),
        "smtp.security": "none",
        "smtp.require_secure": "no",
        "smtp.from": "pbx@example.test",
    }.items():
        await store.set(key, value)
    await SqlTrunkRepo(db).add(tenant.id, "provider", host=HOST, port=trunk, register=False)
    rates = SqlRateRepo(db)
    table = await rates.add(tenant.id, "cards", currency="USD")
    await rates.add_rate(table.id, "0", PRICE, first_increment=1, next_increment=1)
    await SqlCardRepo(db).add(
        tenant.id, CARD_NUMBER, CARD_PIN, balance=CARD_BALANCE, rate_table_id=table.id
    )
    await SqlCardRepo(db).add(
        tenant.id, RETURN_CARD, RETURN_PIN, balance=Decimal("1.00"), rate_table_id=table.id
    )
    plans = SqlDialPlanRepo(db)
    plan = await plans.add(tenant.id, "services")
    await plans.replace_rules(
        plan.id,
        [
            DialPlanRule(pattern=CARD_ACCESS, action="service", target="card:main"),
            DialPlanRule(pattern="0", action="trunk", target="provider"),
            DialPlanRule(pattern="6", action="local"),
        ],
    )
    await plans.set_tenant_plan(tenant.id, plan.id)


@dataclass
class Lab:
    pbx: Pbx
    passwords: dict[str, str]
    trunk_port: int
    smtp: Smtp

    def db(self, action):  # type: ignore[no-untyped-def]
        return in_db(self.pbx.data_dir, action)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory, smtp: Smtp) -> Iterator[Lab]:
    require_tool("sipp", "sip-tester")
    root = tmp_path_factory.mktemp("minipbx-vm")
    passwords = {ext: f"pw{ext}-{os.urandom(4).hex()}" for ext in USERS}
    trunk_port = free_port()
    in_db(root / "data", lambda db: _configure(db, passwords, smtp.port, trunk_port))
    pbx = start_pbx(
        root,
        passwords,
        create_users=False,
        config=(
            f"[media]\nrtp_port_min = {RTP_LOW}\nrtp_port_max = {RTP_LOW + 200}\n"
            f"[billing]\nwarning_lead = {WARNING_LEAD}\n"
        ),
    )
    try:
        yield Lab(pbx, passwords, trunk_port, smtp)
    finally:
        alive = pbx.process.poll() is None
        code = stop(pbx.process, 5.0)
    assert alive and code == 0, tail(pbx.log())


@pytest.fixture
def pbx(lab: Lab) -> Iterator[Pbx]:
    server = lab.pbx
    server.mark = len(server.log())
    yield server
    new = server.log_since_mark()
    assert server.process.poll() is None, f"minipbx died:\n{tail(new)}"
    assert "Traceback" not in new, f"minipbx logged a traceback:\n{new}"


# --- a caller scenario, written per test (SIPp reads pcap paths when it loads a scenario) ---

_INVITE = """
  <send retrans="500">
    <![CDATA[

      INVITE sip:[field2]@[remote_ip]:[remote_port] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      Max-Forwards: 70
      From: <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field2]@[remote_ip]>
      Call-ID: [call_id]
      CSeq: @CSEQ@ INVITE
      Contact: <sip:[field0]@[local_ip]:[local_port]>@AUTH@
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 1 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000
      a=fmtp:101 0-16

    ]]>
  </send>
"""

_ANSWER_REINVITE = """
  <recv request="INVITE" timeout="20000"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Contact: <sip:[field0]@[local_ip]:[local_port]>
      Content-Type: application/sdp
      Content-Length: [len]

      v=0
      o=caller 1 2 IN IP4 [local_ip]
      s=-
      c=IN IP4 [media_ip]
      t=0 0
      m=audio [media_port] RTP/AVP 8 101
      a=rtpmap:8 PCMA/8000
      a=rtpmap:101 telephone-event/8000

    ]]>
  </send>
  <recv request="ACK"/>
"""

_WAIT_BYE = """
  <recv request="BYE" timeout="@BYE_TIMEOUT@"/>
  <send>
    <![CDATA[

      SIP/2.0 200 OK
      [last_Via:]
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      [last_CSeq:]
      Content-Length: 0

    ]]>
  </send>
"""


def _in_dialog(method: str, cseq: int, retrans: str = "") -> str:
    """A SIPp ``<send>`` of the caller's ``method`` in its dialog (after the 200 of the INVITE)."""
    return f"""
  <send{retrans}>
    <![CDATA[

      {method} [next_url] SIP/2.0
      Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch];rport
      [routes]
      Max-Forwards: 70
      From: <sip:[field0]@[remote_ip]>;tag=[pid]SIPpTag00[call_number]
      To: <sip:[field2]@[remote_ip]>[peer_tag_param]
      Call-ID: [call_id]
      CSeq: {cseq} {method}
      Content-Length: 0

    ]]>
  </send>
"""


_SEND_BYE = (
    _in_dialog("BYE", 3, ' retrans="500"')
    + """  <recv response="200"/>
"""
)


def caller_scenario(
    path: Path,
    *,
    pcap: str | None = None,
    pause_ms: int = 1500,
    after_ms: int = 0,
    reinvite: bool = False,
    hang_up: bool = True,
    bye_timeout_ms: int = 30000,
    extra: tuple[str, ...] = (),
) -> str:
    """A caller: INVITE (PCMA + telephone-event), 407, INVITE with credentials, 200, ACK,
    a pause, ``pcap`` played (keys or speech), then the hand-back re-INVITE answered if
    ``reinvite``, then its own BYE after ``after_ms`` or (``hang_up=False``) the PBX's."""
    challenge = """
  <recv response="100" optional="true"/>
  <recv response="407">
    <action>
      <ereg regexp="Proxy-Authenticate: *Digest [^[:cntrl:]]*algorithm=MD5[^[:cntrl:]]*"
            search_in="msg" check_it="true" assign_to="challenge"/>
      <exec command="'[$py]' -I '[$helper]' auth.txt Proxy-Authorization INVITE 'sip:[field2]@[remote_ip]:[remote_port]' '[field0]' '[field1]' '[$challenge]'"/>
    </action>
  </recv>
  <send>
    <![CDATA[

      ACK sip:[field2]@[remote_ip]:[remote_port] SIP/2.0
      [last_Via:]
      Max-Forwards: 70
      [last_From:]
      [last_To:]
      [last_Call-ID:]
      CSeq: 1 ACK
      Content-Length: 0

    ]]>
  </send>
  <pause milliseconds="400"/>
"""
    answered = """
  <recv response="100" optional="true"/>
  <recv response="180" optional="true"/>
  <recv response="181" optional="true"/>
  <recv response="183" optional="true"/>
  <recv response="200" rrs="true"/>""" + _in_dialog("ACK", 2)
    body = [
        '<?xml version="1.0" encoding="ISO-8859-1" ?>',
        '<!DOCTYPE scenario SYSTEM "sipp.dtd">',
        '<scenario name="service caller">',
        '  <Global variables="py,helper"/>',
        _INVITE.replace("@CSEQ@", "1").replace("@AUTH@", ""),
        challenge,
        _INVITE.replace("@CSEQ@", "2").replace("@AUTH@", "\n      [file name=auth.txt]"),
        answered,
        f'  <pause milliseconds="{pause_ms}"/>',
    ]
    if pcap is not None:
        body.append(f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>')
    if reinvite:
        body.append(_ANSWER_REINVITE)
    body += extra
    if after_ms:
        body.append(f'  <pause milliseconds="{after_ms}"/>')
    body.append(_SEND_BYE if hang_up else _WAIT_BYE.replace("@BYE_TIMEOUT@", str(bye_timeout_ms)))
    body.append("</scenario>")
    path.write_text("\n".join(body))
    return str(path)


def _stamp(log: str, needle: str) -> float:
    """The time (seconds in the day) of the first log line with ``needle``."""
    line = next(line for line in log.splitlines() if needle in line)
    clock = line.split()[1].replace(",", ".")
    hours, minutes, seconds = clock.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _row(lab: Lab, ext: str, dialled: str) -> tuple[str, str, str]:
    return (ext, lab.passwords[ext], dialled)


async def _messages(db: Database, extension: str) -> list[object]:
    user = await SqlUserRepo(db).get(extension)
    assert user is not None
    return list(await SqlVoicemailRepo(db).list_messages(user.id))


def test_busy_extension_takes_a_message_notifies_and_mails_it(
    lab: Lab, pbx: Pbx, sipp: SippFactory, register: RegisterFn, tmp_path: Path
) -> None:
    box_port = free_port()
    register(BOX, lab.passwords[BOX], box_port)
    busy = sipp("uas_busy.xml", name="busy-box", port=box_port).start()
    mwi = sipp("mwi_wait_change.xml", name="mwi", rows=[(BOX, lab.passwords[BOX])], auth=True)
    mwi.timeout = 45.0
    mwi.start()
    assert wait_for(lambda: "event=mwi_subscribed" in pbx.log_since_mark(), 8.0)
    scenario = caller_scenario(
        tmp_path / "caller.xml", pcap=AUDIO_PCAP, pause_ms=6000, after_ms=7500
    )
    result = sipp(
        scenario, name="caller", rows=[_row(lab, CALLER, BOX)], auth=True, recv_timeout=30
    )
    result.timeout = 40.0
    done = result.run()
    assert done.returncode == 0, done.describe()
    assert busy.wait(10).returncode == 0
    log = pbx.log_since_mark()
    assert "service=voicemail:600:busy" in log, log
    messages = lab.db(lambda db: _messages(db, BOX))
    assert len(messages) == 1, log
    message = messages[0]
    assert message.caller_number == CALLER and message.duration_ms >= 3000  # type: ignore[attr-defined]
    wav = lab.pbx.data_dir / message.path  # type: ignore[attr-defined]
    assert wav.exists() or Path(message.path).exists()  # type: ignore[attr-defined]
    notified = mwi.wait(40)
    assert notified.returncode == 0, notified.describe()
    assert wait_for(lambda: bool(lab.smtp.messages), 20.0), pbx.log_since_mark()
    mail = lab.smtp.messages[-1]
    assert mail["To"] == f"vm{BOX}@example.test" and CALLER in (mail["Subject"] or "")
    attachments = [p for p in mail.walk() if p.get_content_type() in ("audio/wav", "audio/x-wav")]
    assert attachments and len(attachments[0].get_payload(decode=True) or b"") > 20000


def test_owner_listens_with_star_97(lab: Lab, pbx: Pbx, sipp: SippFactory, tmp_path: Path) -> None:
    if not lab.db(lambda db: _messages(db, BOX)):
        pytest.skip("needs the message of the previous test")
    keys = write_dtmf_pcap(tmp_path / "keys.pcap", "2")  # skip to the next after the first
    scenario = caller_scenario(tmp_path / "owner.xml", pcap=str(keys), pause_ms=9000, after_ms=3000)
    done = sipp(scenario, name="owner", rows=[_row(lab, BOX, "*97")], auth=True, recv_timeout=30)
    done.timeout = 40.0
    result = done.run()
    assert result.returncode == 0, result.describe()
    log = pbx.log_since_mark()
    assert "service=vm-main:" in log and "event=dtmf" in log, log


def test_unanswered_call_goes_to_voicemail(
    lab: Lab, pbx: Pbx, sipp: SippFactory, register: RegisterFn, tmp_path: Path
) -> None:
    port = free_port()
    register(NO_ANSWER, lab.passwords[NO_ANSWER], port)
    ringing = sipp("uas_ring.xml", name="ringing", port=port, recv_timeout=20).start()
    scenario = caller_scenario(tmp_path / "c.xml", pcap=AUDIO_PCAP, pause_ms=5000, after_ms=7500)
    done = sipp(scenario, name="caller", rows=[_row(lab, CALLER, NO_ANSWER)], auth=True)
    done.timeout = 40.0
    result = done.run()
    assert result.returncode == 0, result.describe()
    ringing.kill()
    log = pbx.log_since_mark()
    assert "why=no_answer to=voicemail:604" in log, log
    assert len(lab.db(lambda db: _messages(db, NO_ANSWER))) == 1, log


async def _card_state(db: Database, number: str = CARD_NUMBER) -> tuple[Decimal, list[object]]:
    card = await SqlCardRepo(db).find(1, number)
    assert card is not None
    entries = await SqlLedgerRepo(db).list_entries(card_id=card.id)
    return card.balance, list(entries)


def test_calling_card_call_is_cut_when_the_money_runs_out(
    lab: Lab, pbx: Pbx, sipp: SippFactory, tmp_path: Path
) -> None:
    provider = sipp(
        "uas_late_offer.xml", name="provider", port=lab.trunk_port, recv_timeout=30
    ).start()
    keys = write_dtmf_pcap(tmp_path / "card.pcap", f"{CARD_NUMBER}#{CARD_PIN}#{DESTINATION}#")
    scenario = caller_scenario(
        tmp_path / "card.xml", pcap=str(keys), pause_ms=1000, reinvite=True, hang_up=False
    )
    caller = sipp(scenario, name="card", rows=[_row(lab, CARD_CALLER, CARD_ACCESS)], auth=True)
    caller.timeout = 60.0
    caller.recv_timeout = 40.0
    started = time.monotonic()
    result = caller.run()
    assert result.returncode == 0, result.describe()
    assert provider.wait(10).returncode == 0
    log = pbx.log_since_mark()
    assert "event=call_handed_back" in log, log
    connected, ended = _stamp(log, "event=call_handed_back"), _stamp(log, "event=call_end")
    assert PAID_SECONDS - 0.3 <= ended - connected <= PAID_SECONDS + 0.5, log  # to the second
    # The caller heard the warning tone, injected by the relay the warning opened, counted
    # from the callee's answer (not from the card service's).
    assert "event=relay_open" in log and "why=warning" in log, log
    warned = _stamp(log, "event=call_warned")
    assert "played=1" in log, log
    lead = PAID_SECONDS - WARNING_LEAD
    assert lead - 0.3 <= warned - connected <= lead + 0.5, (warned - connected, log)
    balance, entries = lab.db(_card_state)
    assert balance == Decimal(0), (balance, entries, log)
    charges = [e for e in entries if e.kind == "charge"]  # type: ignore[attr-defined]
    assert len(charges) == 1 and -charges[0].amount == CARD_BALANCE  # type: ignore[attr-defined]
    assert time.monotonic() - started < 50


# --- follow-me and forwarding -------------------------------------------------------------------


def _phone(lab: Lab, sipp: SippFactory, register: RegisterFn, ext: str, scenario: str) -> Any:
    port = free_port()
    register(ext, lab.passwords[ext], port)
    return sipp(scenario, name=f"phone-{ext}", port=port, recv_timeout=20).start()


def _call(lab: Lab, sipp: SippFactory, callee: str) -> Any:
    caller = sipp("uac_call.xml", name="caller", rows=[_row(lab, CALLER, callee)], auth=True)
    caller.recv_timeout = 20.0
    caller.timeout = 30.0
    return caller.run()


def test_sequential_followme_rings_own_phone_then_the_next(
    lab: Lab, pbx: Pbx, sipp: SippFactory, register: RegisterFn
) -> None:
    own = _phone(lab, sipp, register, SEQUENTIAL, "uas_ring.xml")
    other = _phone(lab, sipp, register, "606", "uas_answer.xml")
    result = _call(lab, sipp, SEQUENTIAL)
    assert result.returncode == 0, result.describe()
    assert own.wait(10).returncode == 0 and other.wait(10).returncode == 0  # CANCEL, answer
    log = pbx.log_since_mark()
    assert "why=no_answer to=606" in log, log


def test_simultaneous_followme_ends_in_voicemail(
    lab: Lab, pbx: Pbx, sipp: SippFactory, register: RegisterFn, tmp_path: Path
) -> None:
    own = _phone(lab, sipp, register, SIMULTANEOUS, "uas_ring.xml")
    other = _phone(lab, sipp, register, "608", "uas_ring.xml")
    scenario = caller_scenario(tmp_path / "c.xml", pcap=AUDIO_PCAP, pause_ms=5000, after_ms=7500)
    caller = sipp(scenario, name="caller", rows=[_row(lab, CALLER, SIMULTANEOUS)], auth=True)
    caller.timeout = 40.0
    result = caller.run()
    assert result.returncode == 0, result.describe()
    assert own.wait(10).returncode == 0 and other.wait(10).returncode == 0  # both rang, CANCEL
    log = pbx.log_since_mark()
    assert f"to=voicemail:{SIMULTANEOUS}" in log, log
    assert len(lab.db(lambda db: _messages(db, SIMULTANEOUS))) == 1, log


@pytest.mark.parametrize("user", sorted(FORWARDS))
def test_forwarding_of_each_kind(
    lab: Lab, pbx: Pbx, sipp: SippFactory, register: RegisterFn, user: str
) -> None:
    setting, target = FORWARDS[user]
    behaviour = {
        "forward_unconditional": None,  # never rung
        "forward_busy": "uas_busy.xml",
        "forward_unreachable": None,  # not registered
        "forward_no_answer": "uas_ring.xml",
    }[setting]
    first = _phone(lab, sipp, register, user, behaviour) if behaviour else None
    answering = _phone(lab, sipp, register, target, "uas_answer.xml")
    result = _call(lab, sipp, user)
    assert result.returncode == 0, result.describe()
    assert answering.wait(10).returncode == 0
    if first is not None:
        assert first.wait(10).returncode == 0
    assert 181 in result.responses("INVITE"), result.describe()  # RFC 3261 21.1.3


def _play(pcap: Path) -> str:
    return f'  <nop><action><exec play_pcap_audio="{pcap}"/></action></nop>'


def test_calling_card_caller_comes_back_for_the_next_call(
    lab: Lab, pbx: Pbx, sipp: SippFactory, tmp_path: Path
) -> None:
    """The destination hangs up: the caller is re-INVITEd without SDP, offers, and is back
    at "enter number"; a second call, then ``#`` alone ends the session."""
    provider = sipp(
        "uas_late_offer_hangs_up.xml", name="provider", port=lab.trunk_port, recv_timeout=30
    )
    provider.calls = 2
    provider.start()
    login = write_dtmf_pcap(tmp_path / "login.pcap", f"{RETURN_CARD}#{RETURN_PIN}#{DESTINATION}#")
    again = write_dtmf_pcap(tmp_path / "again.pcap", f"{DESTINATION}#")
    done = write_dtmf_pcap(tmp_path / "done.pcap", "#")
    back = (_ANSWER_REINVITE, _ANSWER_REINVITE)  # the hand-back, then the way back
    scenario = caller_scenario(
        tmp_path / "card.xml",
        pcap=str(login),
        pause_ms=1000,
        extra=(*back, _play(again), *back, _play(done)),
        hang_up=False,
    )
    caller = sipp(scenario, name="card", rows=[_row(lab, CARD_CALLER, CARD_ACCESS)], auth=True)
    caller.timeout = 80.0
    caller.recv_timeout = 40.0
    result = caller.run()
    assert result.returncode == 0, result.describe()
    assert provider.wait(10).returncode == 0
    log = pbx.log_since_mark()
    assert log.count("event=call_came_back") == 2, log
    balance, entries = lab.db(lambda db: _card_state(db, RETURN_CARD))
    charges = [e for e in entries if e.kind == "charge"]  # type: ignore[attr-defined]
    assert len(charges) == 2, (entries, log)
    spent = -sum(e.amount for e in charges)  # type: ignore[attr-defined]
    assert Decimal("0.05") <= spent / 2 <= Decimal("0.20")  # about 1.5 s each at 0.05/s
    assert balance == Decimal("1.00") - spent
