"""The PBX's own services on calls it answers (the B2BUA's ``ServiceHost``), in asyncio.

A dial plan rule ``service ivr:<menu>`` makes the B2BUA answer the caller itself: the
:class:`ServiceRunner` opens a :class:`~minipbx.transport.media_endpoint.MediaEndpoint`
(our own RTP port, PCMU/PCMA and RFC 4733 events), wraps it and the B2BUA in a
:class:`CallChannel` (the :class:`~minipbx.pbx.channel.Channel` services are written
against) and runs the service as a task. A transfer rings the new party with no offer; its
offer reaches the caller in a re-INVITE and the endpoint closes: the two phones then talk
end to end (or through the relay), as in miniSipServer's media model.

A transfer may ask to come back (``CallChannel.transfer(..., come_back=True)``, the calling
card): when its callee hangs up, the B2BUA re-INVITEs the caller without an offer and
:meth:`ServiceRunner.resume` answers the caller's offer with a new endpoint; the service,
waiting in :meth:`CallChannel.returned`, carries on.

Every B2BUA action from a task is followed by ``flush`` (the app sends what it queued).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, TypeVar

import numpy as np

from minipbx.media.dtmf import Collected, parse_dtmf_info
from minipbx.media.g711 import Pcm
from minipbx.media.player import tone
from minipbx.media.prompts import PromptError, PromptSet, override_dir
from minipbx.media.relay import MediaError
from minipbx.pbx.call import Call, CallState, ServiceError
from minipbx.pbx.channel import Channel, ChannelClosedError, Recording, TransferKind
from minipbx.pbx.features import parse_forward
from minipbx.pbx.ivr import IvrMenu, run_ivr
from minipbx.sip.message import Request
from minipbx.store.errors import StoreError
from minipbx.transport.media_endpoint import MediaClosedError, MediaEndpoint, OfferError

log = logging.getLogger("minipbx.services")

DTMF_RELAY = "application/dtmf-relay"
_REFUSALS = {501: "Service Not Available", 404: "No Such Service"}


class Service(Protocol):
    """One kind of service (``ivr``, ``voicemail``...): dial plan targets ``<kind>:<arg>``."""

    def accepts(self, tenant_id: int, arg: str) -> bool:
        """Whether ``arg`` names something this service has for the tenant (checked
        before the call is answered: False gives the caller 404)."""
        ...

    async def run(self, channel: Channel, arg: str) -> str:
        """Serve the call; returns a short outcome for the log. Raises ChannelClosedError
        when the caller hangs up (also fine to return)."""
        ...


class Attendant:
    """The auto attendant as a :class:`Service` (``ivr:<menu>``)."""

    def __init__(self, menus: Callable[[int], Mapping[str, IvrMenu]]) -> None:
        self.menus = menus

    def accepts(self, tenant_id: int, arg: str) -> bool:
        return arg in self.menus(tenant_id)

    async def run(self, channel: Channel, arg: str) -> str:
        return await run_ivr(channel, self.menus(channel.tenant_id), arg)


class ForwardCodes:
    """Feature codes ``*90``-``*93`` (``forward:<kind>=<number>``): the caller sets or
    cancels one of its own forwards, hears "call forwarding activated/deactivated"."""

    def __init__(
        self,
        user_id_of: Callable[[int, str], int | None],
        update: Callable[..., Awaitable[object]],
    ) -> None:
        """``user_id_of(tenant_id, extension)``; ``update(user_id, **settings)`` stores
        (``SqlUserSettingsRepo.update_settings``: it validates the number)."""
        self.user_id_of = user_id_of
        self.update = update

    def accepts(self, tenant_id: int, arg: str) -> bool:
        try:
            parse_forward(arg)
        except ValueError:
            return False
        return True

    async def run(self, channel: Channel, arg: str) -> str:
        setting, number = parse_forward(arg)
        user_id = self.user_id_of(channel.tenant_id, channel.caller)
        if user_id is None:
            return await _refuse(channel, "not a user")
        try:
            await self.update(user_id, **{setting: number or None})
        except (StoreError, ValueError) as exc:
            log.info("event=feature_refused call=%s error=%s", channel.call_id, exc)
            return await _refuse(channel, "refused")
        log.info("event=forward_set user=%s %s=%s", channel.caller, setting, number or "-")
        await channel.play(["call_forwarding", "activated" if number else "deactivated"])
        await channel.hangup("feature_done")
        return f"{setting}={number}"


async def _refuse(channel: Channel, outcome: str) -> str:
    """Say the code cannot be used, hang up; ``outcome`` for the log."""
    await channel.play(["invalid_option", "goodbye"], barge_in=False)
    await channel.hangup("feature_refused")
    return outcome


class CallControl(Protocol):
    """What services need of the B2BUA (``minipbx.pbx.b2bua.B2BUA``)."""

    def transfer(
        self, call: Call, kind: str, target: str, now: float, come_back: bool = False
    ) -> None: ...

    def hangup(
        self, call: Call, now: float, reason: str, headers: Sequence[tuple[str, str]] = ()
    ) -> None: ...


_T = TypeVar("_T")

OpenMedia = Callable[[Call, bytes], tuple[MediaEndpoint, bytes]]


@functools.cache
def ringback() -> Pcm:
    """Ringing as callers expect it while a transfer rings (ITU-T E.180: 425 Hz, 1 s on,
    4 s off), one cycle."""
    return np.concatenate([tone(425.0, 1.0, -16.0), tone(425.0, 4.0, -120.0)])


class CallChannel:
    """A :class:`~minipbx.pbx.channel.Channel` over a media endpoint and the B2BUA."""

    def __init__(self, runner: ServiceRunner, call: Call, endpoint: MediaEndpoint) -> None:
        self._runner = runner
        self._call = call
        self.endpoint = endpoint
        self.transfer_result: asyncio.Future[int] | None = None
        # A transfer that comes back: resolved by ServiceRunner.resume with the seconds its
        # callee was connected (from ``connected_at``, loop time of its answer).
        self.come_back: asyncio.Future[float] | None = None
        self.connected_at: float | None = None

    @property
    def call_id(self) -> str:
        return self._call.id

    @property
    def caller(self) -> str:
        return self._call.caller

    @property
    def callee(self) -> str:
        return self._call.callee

    @property
    def tenant_id(self) -> int:
        return self._call.tenant_id

    def now(self) -> float:
        return self._runner.loop.time()

    def wall(self) -> float:
        return time.time()

    async def play(self, prompts: Sequence[str], *, barge_in: bool = True) -> str | None:
        try:
            audio = self._runner.prompts(self._call.tenant_id).concat(prompts)
        except PromptError as exc:  # a missing prompt must not end the call
            log.error("event=prompt_missing call=%s error=%s", self._call.id, exc)
            return None
        return await self._media(self.endpoint.play(audio, barge_in=barge_in))

    async def play_audio(self, wav: bytes, *, barge_in: bool = True) -> str | None:
        return await self._media(self.endpoint.play(wav, barge_in=barge_in))

    async def collect(
        self,
        *,
        max_digits: int | None = None,
        terminators: str = "#",
        first_digit_timeout: float | None = 5.0,
        inter_digit_timeout: float | None = 3.0,
    ) -> Collected:
        return await self._media(
            self.endpoint.collect(
                max_digits=max_digits,
                terminators=terminators,
                first_digit_timeout=first_digit_timeout,
                inter_digit_timeout=inter_digit_timeout,
            )
        )

    def flush_digits(self) -> None:
        self.endpoint.flush_digits()

    async def record(
        self, *, max_seconds: float, silence_seconds: float = 5.0, terminators: str = "#"
    ) -> Recording:
        result = await self._media(self.endpoint.record(max_seconds, silence_seconds, terminators))
        return Recording(result.wav, result.seconds, result.reason)

    async def transfer(self, kind: TransferKind, target: str, *, come_back: bool = False) -> int:
        """Hand the caller to ``target``; the status (200: answered). ``come_back``: when
        the callee hangs up the caller returns to this service (await :meth:`returned`)."""
        if kind is TransferKind.VOICEMAIL:  # the caller is on our media already: stay
            return await self._runner.serve_in_place(self, "voicemail", target)
        loop = self._runner.loop
        self.transfer_result = result = loop.create_future()
        self.come_back = loop.create_future() if come_back else None
        self.connected_at = None
        self._runner.control_transfer(self._call, kind.value, target, come_back)
        if not result.done():  # ringing: the caller hears ringback meanwhile
            ringing = loop.create_task(self._ring())
            try:
                await asyncio.wait([result])
            finally:
                ringing.cancel()
        try:
            status: int = result.result()  # ChannelClosedError when the call ended meanwhile
        except ChannelClosedError:
            self.come_back = None
            raise
        if status != 200:
            self.come_back = None
        return status

    async def returned(self) -> float:
        """After an answered ``come_back`` transfer: wait until its callee hung up and the
        caller is back with the service (new media); the seconds the callee was connected.
        Raises ChannelClosedError when the whole call ended instead."""
        waiting = self.come_back
        if waiting is None:
            raise RuntimeError("no transfer to come back from")
        try:
            return await waiting
        finally:
            self.come_back = None

    async def _ring(self) -> None:
        tone_ = ringback()
        while not self.endpoint.closed:
            try:
                await self.endpoint.play(tone_, barge_in=False)
            except MediaClosedError:
                return

    async def hangup(self, reason: str = "service") -> None:
        self._runner.hangup(self._call, reason)

    @staticmethod
    async def _media(waiting: Awaitable[_T]) -> _T:
        try:
            return await waiting
        except MediaClosedError:
            raise ChannelClosedError("the call ended") from None


@dataclass(eq=False)
class _Running:
    channel: CallChannel
    task: asyncio.Task[None] | None = None
    outcome: str = ""


@dataclass
class ServiceRunner:
    """Runs services on calls the B2BUA answered itself (the ``ServiceHost`` seam)."""

    loop: asyncio.AbstractEventLoop
    control: Callable[[], CallControl | None]
    flush: Callable[[], None]
    open_media: OpenMedia
    services: Mapping[str, Service]  # by kind: the part of the target before ":"
    data_dir: Path
    language: str = "en"
    _running: dict[str, _Running] = field(default_factory=dict)
    _prompts: dict[int, PromptSet] = field(default_factory=dict)

    def prompts(self, tenant_id: int) -> PromptSet:
        """The prompt set of a tenant (its uploads over the shipped ones), loaded once."""
        found = self._prompts.get(tenant_id)
        if found is None:
            overrides = override_dir(self.data_dir, tenant_id, self.language)
            found = PromptSet(self.language, overrides)
            self._prompts[tenant_id] = found
        return found

    @property
    def count(self) -> int:
        """Calls in a service now."""
        return len(self._running)

    # -- the ServiceHost seam (called by the B2BUA, synchronously) -------------------------

    def start(self, call: Call, service: str, offer: bytes) -> bytes:
        kind, _, arg = service.partition(":")
        handler = self._handler(call.tenant_id, kind, arg)
        if isinstance(handler, int):
            log.warning("event=service_unknown call=%s service=%s", call.id, service)
            raise ServiceError(handler, _REFUSALS[handler])
        endpoint, answer = self._open(call, offer)
        running = _Running(CallChannel(self, call, endpoint))
        self._running[call.id] = running
        running.task = self.loop.create_task(self._run(call, running, handler, service, arg))
        return answer

    def _handler(self, tenant_id: int, kind: str, arg: str) -> Service | int:
        """The service for ``kind:arg``, or the status saying why not (501: no such kind,
        404: it has nothing by that name for the tenant)."""
        handler = self.services.get(kind)
        if handler is None:
            return 501
        return handler if handler.accepts(tenant_id, arg) else 404

    def _open(self, call: Call, offer: bytes) -> tuple[MediaEndpoint, bytes]:
        """A media endpoint answering the caller's ``offer``, and the answer; or, when the
        caller sent none, offering ours (its answer comes in the ACK: :meth:`acked`)."""
        try:
            return self.open_media(call, offer)
        except OfferError as exc:
            raise ServiceError(exc.status, str(exc)) from None
        except (MediaError, OSError) as exc:  # no free RTP port
            log.error("event=service_no_media call=%s error=%s", call.id, exc)
            raise ServiceError(503, "Service Unavailable") from None

    def resume(self, call: Call, offer: bytes) -> bytes:
        """The caller of a transfer that asked to come back is back (its callee hung up):
        new media answering the caller's ``offer`` (from its 2xx to the B2BUA's offerless
        re-INVITE, RFC 3264 5), and the service waiting in :meth:`CallChannel.returned`
        carries on."""
        running = self._running.get(call.id)
        channel = running.channel if running is not None else None
        waiting = channel.come_back if channel is not None else None
        if channel is None or waiting is None or waiting.done():
            raise ServiceError(481, "Call/Transaction Does Not Exist")
        if not offer:  # RFC 3264 5: the 2xx to an offerless INVITE must carry the offer
            raise ServiceError(488, "Not Acceptable Here (the 2xx carries no SDP offer)")
        endpoint, answer = self._open(call, offer)
        channel.endpoint.close("replaced")  # closed at the transfer already
        channel.endpoint = endpoint
        ended = call.returned_at if call.returned_at is not None else self.loop.time()
        connected = channel.connected_at if channel.connected_at is not None else ended
        waiting.set_result(max(ended - connected, 0.0))
        log.info("event=service_resumed call=%s", call.id)
        return answer

    def media_update(self, call: Call, body: bytes) -> bytes | None:
        running = self._running.get(call.id)
        if running is None:
            raise ServiceError(481, "Call/Transaction Does Not Exist")
        endpoint = running.channel.endpoint
        try:
            if not body:  # RFC 3264 5: an offerless re-INVITE gets our offer in the 2xx
                return endpoint.offer_again()
            return endpoint.update_remote(body)
        except OfferError as exc:
            raise ServiceError(exc.status, str(exc)) from None
        except MediaClosedError:
            raise ServiceError(481, "Call/Transaction Does Not Exist") from None

    def acked(self, call: Call, body: bytes) -> None:
        running = self._running.get(call.id)
        if running is None:
            return
        endpoint = running.channel.endpoint
        if not endpoint.awaiting_answer:
            if body:  # RFC 3261 13.2.1: no new offer in an ACK; nothing to answer
                log.info("event=ack_sdp_ignored call=%s", call.id)
            return
        if not body:  # RFC 3264 5: the answer to the offer in our 2xx belongs in the ACK
            raise ServiceError(400, "Bad Request (the ACK carries no SDP answer)")
        try:
            endpoint.take_answer(body)
        except (OfferError, MediaClosedError) as exc:
            status = exc.status if isinstance(exc, OfferError) else 481
            raise ServiceError(status, str(exc)) from None

    def info(self, call: Call, request: Request) -> int:
        running = self._running.get(call.id)
        ctype = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
        if running is None:
            return 481
        if ctype != DTMF_RELAY:
            return 415
        try:
            relay = parse_dtmf_info(ctype, request.body.decode("utf-8", "replace"))
            running.channel.endpoint.inject_digit(relay.digit)
        except ValueError:
            return 400
        return 200

    def transferred(self, call: Call, status: int) -> None:
        running = self._running.get(call.id)
        if running is None:
            return
        result = running.channel.transfer_result
        if result is not None and not result.done():
            result.set_result(status)
        if status == 200:  # the phones talk to each other now: our media leg is over
            running.channel.connected_at = self.loop.time()
            running.channel.endpoint.close("transferred")

    def stop(self, call: Call) -> None:
        running = self._running.pop(call.id, None)
        if running is None:
            return
        result = running.channel.transfer_result
        if result is not None and not result.done():  # still ringing: transfer() raises
            result.set_exception(ChannelClosedError("the call ended"))
        elif (waiting := running.channel.come_back) is not None and not waiting.done():
            waiting.set_exception(ChannelClosedError("the call ended"))  # for returned()
        running.channel.endpoint.close("call ended")

    # -- from the service task ---------------------------------------------------------------

    async def serve_in_place(self, channel: CallChannel, kind: str, arg: str) -> int:
        """Another service on the same call and media (an attendant's voicemail key): 200
        once it ran, 404 when it has nothing for ``arg``, 501 when there is no such kind."""
        handler = self._handler(channel.tenant_id, kind, arg)
        if isinstance(handler, int):
            return handler
        outcome = await handler.run(channel, arg)
        log.info(
            "event=service_chained call=%s service=%s:%s outcome=%s",
            channel.call_id,
            kind,
            arg,
            outcome,
        )
        return 200

    def control_transfer(self, call: Call, kind: str, target: str, come_back: bool = False) -> None:
        control = self.control()
        if control is None:
            self.transferred(call, 503)
            return
        control.transfer(call, kind, target, self.loop.time(), come_back)
        self.flush()

    def hangup(self, call: Call, reason: str) -> None:
        control = self.control()
        if control is not None and call.state is not CallState.ENDED:
            control.hangup(call, self.loop.time(), reason)
            self.flush()

    async def _run(
        self, call: Call, running: _Running, handler: Service, service: str, arg: str
    ) -> None:
        try:
            await running.channel.endpoint.answered()  # a late offer: its answer first
            running.outcome = await handler.run(running.channel, arg)
        except (ChannelClosedError, MediaClosedError):
            running.outcome = "caller_hung_up"
        except Exception:  # a bug in a service must not leave the caller in silence
            log.exception("event=service_failed call=%s", call.id)
            running.outcome = "error"
        outcome = running.outcome
        log.info("event=service_end call=%s service=%s outcome=%s", call.id, service, outcome)
        if call.service is not None and call.state is not CallState.ENDED:
            self.hangup(call, "service_done")  # the service ended without handing the call on
        self._running.pop(call.id, None)
