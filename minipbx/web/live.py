"""The running PBX as a :class:`~minipbx.web.context.LiveState`, and starting the web
server inside it (called by ``App.start``)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable
from typing import Protocol

from minipbx.config import Settings
from minipbx.pbx.call import Call
from minipbx.pbx.cdr_writer import CdrShipper, ShippingStatus
from minipbx.pbx.core import PbxCore
from minipbx.pbx.location import Binding, MemoryLocation
from minipbx.store import Database
from minipbx.web.accounts import ensure_first_admin
from minipbx.web.app import create_app
from minipbx.web.context import CallView, TrunkView, WebContext, trunk_view
from minipbx.web.server import WebServer


class PbxApp(Protocol):
    """What the web layer reads of ``minipbx.app.App``."""

    settings: Settings
    db: Database
    location: MemoryLocation
    core: PbxCore | None
    cdr_shipper: CdrShipper | None
    started_at: float

    def hangup_call(self, call_id: str) -> bool:
        """End a call from the PBX side and send what that queued; False if unknown."""
        ...


def _wall_offset() -> float:
    """Wall clock minus the loop's clock (the PBX's call times are loop times)."""
    try:
        return time.time() - asyncio.get_running_loop().time()
    except RuntimeError:
        return time.time() - time.monotonic()


def call_view(call: Call, offset: float) -> CallView:
    """A snapshot of ``call`` with wall-clock times."""
    callee = call.callee or str(getattr(call.invite.uri, "user", "") or "")
    return CallView(
        id=call.id,
        tenant_id=call.tenant_id,
        domain=call.domain,
        caller=call.caller,
        callee=callee,
        state=call.state.value,
        started_at=call.started + offset,
        answered_at=None if call.answered is None else call.answered + offset,
        route_kind=call.route_kind,
        trunk=call.trunk,
        inbound_trunk=call.inbound_trunk,
        source=call.source.hostport,
        user_agent=call.user_agent,
    )


class AppLiveState:
    """:class:`~minipbx.web.context.LiveState` over the objects of a running ``App``."""

    def __init__(self, app: PbxApp) -> None:
        self.app = app
        self.started_at = app.started_at

    def bindings(self) -> Iterable[Binding]:
        """The registrar's bindings."""
        return self.app.location.bindings()

    def calls(self) -> list[CallView]:
        """The B2BUA's calls."""
        core = self.app.core
        offset = _wall_offset()
        return [] if core is None else [call_view(c, offset) for c in core.calls]

    def hangup(self, call_id: str) -> bool:
        """Hang up through the app (which sends the BYEs at once)."""
        return self.app.hangup_call(call_id)

    def trunks(self) -> list[TrunkView]:
        """The trunk registrations."""
        core = self.app.core
        offset = _wall_offset()
        return [] if core is None else [trunk_view(s, offset) for s in core.trunks.statuses()]

    async def cdr_shipping(self) -> ShippingStatus | None:
        """The CDR shipper's status (None without a MySQL mirror)."""
        shipper = self.app.cdr_shipper
        return None if shipper is None else await shipper.status()


async def start_web(app: PbxApp, secret: bytes) -> tuple[WebServer, str | None]:
    """Create the first admin if there is none, then serve the web application on
    ``settings.bind``:``settings.http_port``. Returns the server and the first admin's
    password (None when admins existed). WebServerError when the port cannot be bound."""
    settings = app.settings
    ctx = WebContext(db=app.db, live=AppLiveState(app), secret=secret, data_dir=settings.data_dir)
    password = await ensure_first_admin(ctx.admins, ctx.passwords)
    tls = settings.http_tls
    server = WebServer(
        create_app(ctx),
        settings.bind,
        settings.http_port,
        certfile=settings.tls_cert if tls else None,
        keyfile=settings.tls_key if tls else None,
    )
    await server.start()
    return server, password
