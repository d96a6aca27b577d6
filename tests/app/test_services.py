"""The service runner (the B2BUA's ServiceHost) with real RTP endpoints on loopback."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from minipbx.pbx.call import CallState, ServiceError
from minipbx.pbx.channel import Channel, TransferKind
from minipbx.services import CallChannel, ServiceRunner
from minipbx.sip.sdp import SessionDescription
from minipbx.transport.media_endpoint import MediaEndpoint
from minipbx.transport.rtp import RtpPortPool

OFFER = (
    b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 101\r\na=rtpmap:0 PCMU/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\n"
)


class Script:
    """A service that records what it saw: one collected key, then a transfer."""

    def __init__(self) -> None:
        self.seen: list[object] = []
        self.done = asyncio.Event()

    def accepts(self, tenant_id: int, arg: str) -> bool:
        return arg == "known"

    async def run(self, channel: Channel, arg: str) -> str:
        try:
            collected = await channel.collect(max_digits=1, first_digit_timeout=5)
            self.seen.append(collected.digits)
            self.seen.append(await channel.transfer(TransferKind.USER, "101"))
            return "done"
        finally:
            self.done.set()


class Control:
    def __init__(self) -> None:
        self.transfers: list[tuple[str, str]] = []
        self.come_back: list[bool] = []
        self.hangups: list[str] = []

    def transfer(
        self, call: Any, kind: str, target: str, now: float, come_back: bool = False
    ) -> None:
        self.transfers.append((kind, target))
        self.come_back.append(come_back)

    def hangup(
        self, call: Any, now: float, reason: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None:
        self.hangups.append(reason)
        call.state = CallState.ENDED


def _call(call_id: str = "c1") -> Any:
    return SimpleNamespace(
        id=call_id,
        tenant_id=1,
        caller="100",
        callee="500",
        service="test:known",
        state=CallState.ANSWERED,
        source=SimpleNamespace(host="127.0.0.1"),
        returned_at=None,
    )


class ComeBackScript(Script):
    """Transfers asking to come back, then collects a key on the new media."""

    async def run(self, channel: Channel, arg: str) -> str:
        assert isinstance(channel, CallChannel)
        try:
            status = await channel.transfer(TransferKind.NUMBER, "0123", come_back=True)
            self.seen.append(status)
            self.seen.append(await channel.returned())
            collected = await channel.collect(max_digits=1, first_digit_timeout=5)
            self.seen.append(collected.digits)
            return "done"
        finally:
            self.done.set()


def _runner(pool: RtpPortPool, control: Control, script: Script, tmp: Path) -> ServiceRunner:
    loop = asyncio.get_running_loop()
    return ServiceRunner(
        loop=loop,
        control=lambda: control,
        flush=lambda: None,
        open_media=lambda call, offer: MediaEndpoint.negotiate(
            offer, address="127.0.0.1", ports=pool, session_id=7, name=call.id
        ),
        services={"test": script},
        data_dir=tmp,
    )


def _info(body: bytes, ctype: str = "application/dtmf-relay") -> Any:
    return SimpleNamespace(body=body, headers={"Content-Type": ctype})


def _free_even_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port - port % 2 if port < 64000 else 30000


def _pool(last: int = 9) -> RtpPortPool:
    """An RTP pool on loopback from a free even port to ``last`` ports above it."""
    low = _free_even_port()
    return RtpPortPool("127.0.0.1", low, low + last)


async def test_refusals_before_answering(tmp_path: Path) -> None:
    pool = _pool(3)  # room for exactly two pairs
    runner = _runner(pool, Control(), Script(), tmp_path)
    for service, offer, status in (
        ("nope:known", OFFER, 501),  # no such kind of service
        ("test:unknown", OFFER, 404),  # the service has nothing by that name
        ("test:known", OFFER.replace(b"RTP/AVP 0 101", b"RTP/AVP 18"), 488),  # no G.711
    ):
        with pytest.raises(ServiceError) as caught:
            runner.start(_call(), service, offer)
        assert caught.value.status == status, service
    runner.start(_call("a"), "test:known", OFFER)
    runner.start(_call("b"), "test:known", OFFER)
    with pytest.raises(ServiceError) as caught:  # the RTP range is used up
        runner.start(_call("c"), "test:known", OFFER)
    assert caught.value.status == 503
    for key in ("a", "b"):
        runner.stop(_call(key))
    assert runner.count == 0


async def test_info_dtmf_reaches_the_service_and_transfer_completes(tmp_path: Path) -> None:
    pool = _pool()
    control, script = Control(), Script()
    runner = _runner(pool, control, script, tmp_path)
    call = _call()
    answer = SessionDescription.parse(runner.start(call, "test:known", OFFER))
    assert answer.media[0].port == pool.low and answer.media[0].formats == ("0", "101")
    assert runner.info(call, _info(b"Signal=7\r\nDuration=160\r\n")) == 200
    assert runner.info(call, _info(b"Signal=x\r\n")) == 400
    assert runner.info(call, _info(b"7", "text/plain")) == 415
    assert runner.info(_call("other"), _info(b"Signal=7\r\n")) == 481
    await _transfer_asked(control)
    assert control.transfers == [("user", "101")]
    runner.transferred(call, 486)  # busy: the service is told, carries on
    await asyncio.wait_for(script.done.wait(), 2)
    assert script.seen == ["7", 486]
    await asyncio.sleep(0.05)
    assert control.hangups == ["service_done"]  # it ended without handing the call on


async def test_a_caller_without_an_offer_gets_ours_and_answers_in_the_ack(
    tmp_path: Path,
) -> None:
    """RFC 3264 5 / RFC 3261 13.2.1: an INVITE without SDP gets our offer in the 2xx; the
    service waits for the ACK's answer, then speaks the codec the caller chose."""
    pool = _pool()
    control, script = Control(), Script()
    runner = _runner(pool, control, script, tmp_path)
    call = _call()
    offer = SessionDescription.parse(runner.start(call, "test:known", b""))
    (media,) = offer.media
    assert media.port == pool.low and media.formats == ("0", "8", "101")
    assert runner.info(call, _info(b"Signal=5\r\nDuration=160\r\n")) == 200
    await asyncio.sleep(0.1)
    assert script.seen == [] and not control.transfers  # not started before the answer
    endpoint = runner._running[call.id].channel.endpoint
    with pytest.raises(ServiceError) as caught:
        runner.acked(call, b"")  # RFC 3264 5: the answer belongs in the ACK
    assert caught.value.status == 400 and endpoint.awaiting_answer
    with pytest.raises(ServiceError) as caught:  # answers with a codec we did not offer
        runner.acked(call, OFFER.replace(b"RTP/AVP 0 101", b"RTP/AVP 18"))
    assert caught.value.status == 488 and endpoint.awaiting_answer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.1", 0))
        phone.setblocking(False)
        port = phone.getsockname()[1]
        answer = OFFER.replace(b"40000 RTP/AVP 0 101", f"{port} RTP/AVP 8 101".encode())
        answer = answer.replace(b"a=rtpmap:0 PCMU/8000", b"a=rtpmap:8 PCMA/8000")
        runner.acked(call, answer)
        assert endpoint.session.codec.name == "PCMA" and not endpoint.awaiting_answer
        await _transfer_asked(control)  # the digit typed early was kept; the script ran
        assert script.seen == ["5"]
        loop = asyncio.get_running_loop()
        packet = await asyncio.wait_for(loop.sock_recv(phone, 2048), 2)
        assert packet[1] & 0x7F == 8  # PCMA, the answer's payload type
    runner.acked(call, answer)  # a repeated ACK's SDP answers nothing now: ignored
    call.state = CallState.ENDED
    runner.stop(call)
    await asyncio.wait_for(script.done.wait(), 2)


async def test_an_offerless_reinvite_gets_our_offer_with_the_same_m_lines(
    tmp_path: Path,
) -> None:
    pool = _pool()
    runner = _runner(pool, Control(), Script(), tmp_path)
    call = _call()
    two = OFFER + b"m=video 40002 RTP/AVP 96\r\na=rtpmap:96 H264/90000\r\n"
    first = SessionDescription.parse(runner.start(call, "test:known", two))
    assert [m.port for m in first.media] == [pool.low, 0]
    offer = SessionDescription.parse(runner.media_update(call, b"") or b"")
    assert [(m.media, m.port) for m in offer.media] == [("audio", pool.low), ("video", 0)]
    assert offer.origin.sess_version > first.origin.sess_version  # RFC 3264 8: a new version
    endpoint = runner._running[call.id].channel.endpoint
    assert endpoint.awaiting_answer
    answer = two.replace(b"m=video 40002", b"m=video 0")
    runner.acked(call, answer)
    assert not endpoint.awaiting_answer
    call.state = CallState.ENDED
    runner.stop(call)
    await asyncio.wait_for(_all_ended(runner), 2)


async def _all_ended(runner: ServiceRunner) -> None:
    while runner.count:
        await asyncio.sleep(0.01)


async def test_caller_hanging_up_ends_the_service(tmp_path: Path) -> None:
    pool = _pool()
    control, script = Control(), Script()
    runner = _runner(pool, control, script, tmp_path)
    call = _call()
    runner.start(call, "test:known", OFFER)
    await asyncio.sleep(0.05)
    call.state = CallState.ENDED
    runner.stop(call)
    await asyncio.wait_for(script.done.wait(), 2)
    assert script.seen == [] and control.hangups == [] and pool.in_use == 0


async def _transfer_asked(control: Control) -> None:
    for _ in range(50):
        if control.transfers:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("no transfer")


async def test_a_transfer_comes_back_with_new_media(tmp_path: Path) -> None:
    pool = _pool()
    control, script = Control(), ComeBackScript()
    runner = _runner(pool, control, script, tmp_path)
    call = _call()
    runner.start(call, "test:known", OFFER)
    await _transfer_asked(control)
    assert control.transfers == [("number", "0123")] and control.come_back == [True]
    runner.transferred(call, 200)  # the callee answered: our media leg closes
    await asyncio.sleep(0.05)
    assert pool.in_use == 0 and script.seen == [200]
    with pytest.raises(ServiceError):  # nothing to answer with
        runner.resume(call, b"")
    call.returned_at = runner.loop.time() + 0.5  # the callee hung up half a second later
    answer = SessionDescription.parse(runner.resume(call, OFFER))
    assert answer.media[0].formats == ("0", "101") and pool.in_use == 1
    with pytest.raises(ServiceError) as again:  # nobody waits to come back any more
        runner.resume(call, OFFER)
    assert again.value.status == 481
    assert runner.info(call, _info(b"Signal=4\r\nDuration=160\r\n")) == 200
    await asyncio.wait_for(script.done.wait(), 2)
    assert script.seen[0] == 200 and 0.45 <= script.seen[1] <= 0.6 and script.seen[2] == "4"  # type: ignore[operator]
    await asyncio.sleep(0.05)
    assert control.hangups == ["service_done"]


async def test_the_call_ending_while_transferred_ends_the_wait(tmp_path: Path) -> None:
    pool = _pool()
    control, script = Control(), ComeBackScript()
    runner = _runner(pool, control, script, tmp_path)
    call = _call()
    runner.start(call, "test:known", OFFER)
    await _transfer_asked(control)
    runner.transferred(call, 200)
    await asyncio.sleep(0.05)
    call.state = CallState.ENDED
    runner.stop(call)  # the caller hung up during the card call
    await asyncio.wait_for(script.done.wait(), 2)
    assert script.seen == [200] and control.hangups == [] and runner.count == 0


class Mailbox:
    """A voicemail service stand-in: records the boxes it served."""

    def __init__(self) -> None:
        self.served: list[str] = []

    def accepts(self, tenant_id: int, arg: str) -> bool:
        return arg == "101"

    async def run(self, channel: Channel, arg: str) -> str:
        self.served.append(arg)
        return "saved"


class ToVoicemail(Script):
    """An attendant whose key sends the caller to a voice mailbox."""

    async def run(self, channel: Channel, arg: str) -> str:
        try:
            self.seen.append(await channel.transfer(TransferKind.VOICEMAIL, "101"))
            self.seen.append(await channel.transfer(TransferKind.VOICEMAIL, "999"))
            return "done"
        finally:
            self.done.set()


async def test_voicemail_key_runs_the_mailbox_on_the_same_media(tmp_path: Path) -> None:
    pool = _pool()
    control, script, mailbox = Control(), ToVoicemail(), Mailbox()
    runner = _runner(pool, control, script, tmp_path)
    runner.services = {"test": script, "voicemail": mailbox}
    runner.start(_call(), "test:known", OFFER)
    await asyncio.wait_for(script.done.wait(), 2)
    assert script.seen == [200, 404] and mailbox.served == ["101"]
    assert control.transfers == []  # no SIP transfer: the caller stayed on our stream
