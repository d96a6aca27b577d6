"""Composition root: builds the PBX from :class:`Settings` and runs it on one event loop.

This is the asyncio glue around the sans-IO :class:`PbxCore` (DESIGN.md, like aioquic's
asyncio/protocol.py): messages from the :class:`TransportManager` go into the core with the
loop's monotonic clock; what the core queues is sent; one timer handle follows
``core.get_timer()``. Storage work (user directory refresh, registration write-behind,
expiry) runs in small periodic tasks that never block the call path.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import secrets
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from minipbx import sip
from minipbx.billing_runtime import BillingRuntime, BillingSettings
from minipbx.config import Settings
from minipbx.mail import Mailer, smtp_settings_loader
from minipbx.pbx.auth import RequestAuthenticator
from minipbx.pbx.call import Call, CallSettings, InboundTrunk
from minipbx.pbx.cdr_writer import CdrRecorder, CdrShipper, CdrSpool, CdrWriter
from minipbx.pbx.core import CoreSettings, PbxCore
from minipbx.pbx.dialplan_router import DialPlanRouter
from minipbx.pbx.location import Aor, Binding, MemoryLocation
from minipbx.pbx.media_anchor import RelayAnchor
from minipbx.pbx.ports import User
from minipbx.pbx.registrar import Registrar, RegistrarConfig
from minipbx.pbx.routing import LocalRouter
from minipbx.pbx.security import Guard, GuardConfig
from minipbx.pbx.trunk_registration import TrunkAccount
from minipbx.randomness import EntropyPool
from minipbx.routing_loader import RoutingLoader
from minipbx.services import Attendant, ForwardCodes, ServiceRunner
from minipbx.sip.digest import Algorithm, DigestAuthenticator
from minipbx.sip.headers import NameAddr, Via
from minipbx.sip.uri import SipUri
from minipbx.store import (
    DEFAULT_REALM,
    Database,
    RegistrationRecord,
    SqlRegistrationRepo,
    SqlSettingsRepo,
    SqlTenantRepo,
    SqlUserRepo,
    StoreError,
    UserDirectory,
)
from minipbx.store.cdr_mirror import CdrMirror
from minipbx.store.cdrs import SqlCdrRepo
from minipbx.store.pbxrepos import SqlUserSettingsRepo
from minipbx.transport.address import Address
from minipbx.transport.config import TransportConfig, TransportError
from minipbx.transport.events import Inbound
from minipbx.transport.manager import TransportManager
from minipbx.transport.media_endpoint import MediaEndpoint
from minipbx.transport.rtp import RelayManager, RtpPortPool
from minipbx.transport.stun import StunListener
from minipbx.voicemail import SqlMailboxes, voicemail_services
from minipbx.web.accounts import FIRST_ADMIN
from minipbx.web.live import start_web
from minipbx.web.server import WebServer

log = logging.getLogger("minipbx")
# What the server holds, logged when an operator sends SIGUSR1: written at any log level.
state_log = logging.getLogger("minipbx.state")

SAMPLE_EXTENSIONS = ("100", "101", "102")
KEEPALIVE_INTERVAL = 30.0  # OPTIONS to NATed UDP contacts keep their NAT mapping open
CDR_SPOOL = "cdr-spool.jsonl"  # CDRs the database refused, imported when it is back


class DirectoryUsers:
    """The store's :class:`UserDirectory` as the PBX's ``UserLookup``."""

    def __init__(self, directory: UserDirectory) -> None:
        self.directory = directory

    def lookup(self, domain: str, extension: str) -> User | None:
        """The user of the tenant serving ``domain`` (default tenant for unknown hosts)."""
        return self.directory.lookup(domain, extension)

    def realm_for(self, domain: str) -> str:
        """The digest realm of the tenant serving ``domain``."""
        tenant = self.directory.tenant_for(domain)
        return tenant.realm if tenant is not None else DEFAULT_REALM


class Network:
    """Our Via and Contact for a destination (the B2BUA's ``Network``)."""

    def __init__(self, transports: TransportManager, public_address: str | None) -> None:
        self.transports = transports
        self.public_address = public_address
        self._local_ip: dict[str, str] = {}

    def _local(self, destination: Address) -> tuple[str, int]:
        local = self.transports.local_address(destination.transport, destination)
        host = self.public_address or local.host
        if host in ("0.0.0.0", "::"):
            host = self._local_ip_for(destination.host)
        return (f"[{host}]" if ":" in host else host), local.port

    def _local_ip_for(self, remote: str) -> str:
        """The source address the kernel picks toward ``remote`` (no packet is sent)."""
        cached = self._local_ip.get(remote)
        if cached is None:
            family = socket.AF_INET6 if ":" in remote else socket.AF_INET
            with socket.socket(family, socket.SOCK_DGRAM) as probe:
                try:
                    probe.connect((remote, 9))
                    cached = probe.getsockname()[0]
                except OSError:
                    cached = "127.0.0.1" if family == socket.AF_INET else "::1"
            self._local_ip[remote] = cached
        return cached

    def media_ip_for(self, remote: str) -> str:
        """Our address as ``remote`` sees it, for SDP (public address, bound one, or the
        interface the kernel would use toward it)."""
        return self._local(Address("udp", remote, 5060))[0].strip("[]")

    def via(self, destination: Address, branch: str) -> Via:
        """A top Via for a request to ``destination`` (RFC 3261 8.1.1.7, RFC 3581 rport)."""
        host, port = self._local(destination)
        return Via(destination.via_transport, host, port, {"branch": branch, "rport": None})

    def contact(self, destination: Address) -> NameAddr:
        """Our Contact toward ``destination``."""
        host, port = self._local(destination)
        params: dict[str, str | None] = {}
        if destination.transport != "udp":
            params["transport"] = destination.transport
        return NameAddr(SipUri(host, "minipbx", None, port, "sip", params))

    def reliable(self, destination: Address) -> bool:
        """True for TCP and TLS."""
        return destination.reliable

    def is_self(self, source: Address) -> bool:
        """True when ``source`` is one of our own listeners (the PBX sent it to itself)."""
        for local in self.transports.listeners:
            if local.port == source.port and local.transport == source.transport:
                host = local.host
                if host == source.host or (
                    host in ("0.0.0.0", "::") and source.host in self._local_ip.values()
                ):
                    return True
        return False


@dataclass(slots=True)
class RegistrationStore:
    """Write-behind of registrations: the registrar changes memory, this saves it.

    A flush builds the rows of at most ``FLUSH_BATCH`` AORs at once (one database
    transaction each; the repository inserts them in chunks): after a registration storm
    thousands are dirty at once, and building every row in one go made the process grow
    by that peak for good (the allocator keeps what it got). For a minute after a storm's
    flushes, free pages of the C heap are handed back to the system every few seconds
    (``malloc_trim``): the storm's transactions end over the 32 s of Timer J that follow,
    and glibc keeps what they freed below live blocks (write batches, big tables)
    otherwise.
    """

    FLUSH_BATCH = 5000  # AORs per write transaction (a few seconds of a storm)
    STORM = 1000  # AORs changed in one flush that make it a storm
    TRIM_FOR = 60.0  # s after a storm's last big flush during which free heap is trimmed
    TRIM_EVERY = 2.0  # s between two trims

    repo: SqlRegistrationRepo
    directory: UserDirectory
    dirty: dict[Aor, tuple[Binding, ...]]
    ids: dict[int, dict[str, int]] = field(default_factory=dict)  # tenant -> ext -> user id
    ids_version: int | None = None
    trim_until: float = 0.0  # monotonic time; see TRIM_FOR
    trimmed_at: float = 0.0
    # glibc's malloc_trim, looked up at the first trim (False where the C library has
    # none); a test passes its own.
    malloc_trim: object = None

    def changed(self, aor: Aor, bindings: tuple[Binding, ...]) -> None:
        """Registrar hook: remember the latest bindings of ``aor`` to save."""
        self.dirty[aor] = bindings

    def _user_ids(self) -> dict[int, dict[str, int]]:
        """Tenant -> extension -> user id, rebuilt only when the directory reloaded (not on
        every flush); keyed by the users' own strings, so it costs one table slot a user."""
        version = self.directory.version
        if version != self.ids_version:
            ids: dict[int, dict[str, int]] = {}
            for u in self.directory.users():
                ids.setdefault(u.tenant_id, {})[u.extension] = u.id
            self.ids, self.ids_version = ids, version
        return self.ids

    async def flush(self) -> None:
        """Save every changed AOR, ``FLUSH_BATCH`` per transaction."""
        if not self.dirty:
            self._trim()
            return
        batch, self.dirty = self.dirty, {}
        ids = self._user_ids()
        aors = list(batch)
        for start in range(0, len(aors), self.FLUSH_BATCH):
            rows: dict[str, list[RegistrationRecord]] = {}
            for aor in aors[start : start + self.FLUSH_BATCH]:
                user_id = ids.get(aor[0], {}).get(aor[1])
                if user_id is not None:
                    rows[f"{aor[0]}:{aor[1]}"] = [_record(user_id, b) for b in batch[aor]]
            try:
                await self.repo.replace_many(rows)
            except StoreError as exc:
                log.error("event=registrations_not_saved count=%d error=%s", len(rows), exc)
                for aor in aors[start:]:  # keep them for the next try (newer changes win)
                    self.dirty.setdefault(aor, batch[aor])
                break
        if len(aors) >= self.STORM:
            self.trim_until = time.monotonic() + self.TRIM_FOR
        self._trim()

    def _trim(self) -> None:
        """After a storm, give the C heap's free pages back now and then (see the class)."""
        now = time.monotonic()
        if now < self.trim_until and now - self.trimmed_at >= self.TRIM_EVERY:
            self.trimmed_at = now
            trim = self.malloc_trim
            if trim is None:
                import ctypes  # the app's only use of it

                trim = self.malloc_trim = getattr(ctypes.CDLL(None), "malloc_trim", False)
            if callable(trim):
                trim(0)  # about 1 ms after a storm of 20,000 registrations

    async def load(self, now: float) -> list[Binding]:
        """Bindings saved before a restart that have not expired."""
        out = []
        for rec in await self.repo.load_active():
            user = self.directory.get_by_id(rec.user_id)
            if user is not None:
                out.append(_binding((user.tenant_id, user.extension), rec))
        return [b for b in out if b.expires_at > now]


def _record(user_id: int, b: Binding) -> RegistrationRecord:
    return RegistrationRecord(
        user_id=user_id,
        aor=f"{b.aor[0]}:{b.aor[1]}",
        contact=b.contact,
        expires_at=datetime.fromtimestamp(b.expires_at, UTC),
        received_transport=b.received.transport,
        received_host=b.received.host,
        received_port=b.received.port,
        params=b.params,
        path="\n".join(b.path),
        call_id=b.call_id,
        cseq=b.cseq,
        user_agent=b.user_agent,
        instance_id=b.instance_id,
        reg_id=b.reg_id,
        q=b.q,
        local=str(b.local) if b.local is not None else "",
        nat=b.nat,
    )


def _binding(aor: Aor, rec: RegistrationRecord) -> Binding:
    return Binding(
        aor=aor,
        contact=rec.contact,
        expires_at=rec.expires_at.timestamp(),
        received=Address(rec.received_transport, rec.received_host, rec.received_port),
        params=rec.params,
        nat=rec.nat,
        path=tuple(p for p in rec.path.split("\n") if p),
        call_id=rec.call_id,
        cseq=rec.cseq,
        user_agent=rec.user_agent,
        instance_id=rec.instance_id,
        reg_id=rec.reg_id,
        q=rec.q,
        registered_at=rec.expires_at.timestamp(),
    )


def _secret(data_dir: Path) -> bytes:
    """The nonce secret, kept in the data dir so nonces survive a restart."""
    path = data_dir / "secret.key"
    try:
        return bytes.fromhex(path.read_text().strip())
    except (OSError, ValueError):
        secret = secrets.token_bytes(32)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secret.hex())
        return secret


class App:
    """One running PBX: storage, transports, the core, and the tasks that tie them."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.db = Database(settings.db_url)
        self.directory = UserDirectory.for_database(self.db)
        self.users = DirectoryUsers(self.directory)
        self.guard = Guard(GuardConfig(trusted=settings.trusted_networks))
        self.location = MemoryLocation()
        self.registrations = RegistrationStore(SqlRegistrationRepo(self.db), self.directory, {})
        self.transports = TransportManager(
            TransportConfig(
                bind_hosts=(settings.bind,),
                udp_port=settings.sip_port,
                tcp_port=settings.sip_port,
                tls_port=settings.tls_port,
                tls_cert=settings.tls_cert,
                tls_key=settings.tls_key,
            ),
            self._on_message,
            source_filter=self._source_allowed,
        )
        self.cdrs = SqlCdrRepo(self.db, threaded_sqlite=True)
        # A malformed cdr.mysql_url is a start-up error (StoreError); an unreachable one is not.
        self.cdr_mirror = CdrMirror(settings.cdr_mysql_url) if settings.cdr_mysql_url else None
        self.cdr_shipper = (
            CdrShipper(self.cdrs, self.cdr_mirror, max_retry=settings.cdr_retry_max)
            if self.cdr_mirror
            else None
        )
        self.cdr_writer = CdrWriter(
            self.cdrs,
            CdrSpool(settings.data_dir / CDR_SPOOL),
            self._records_durable,
            on_committed=self.cdr_shipper.wake if self.cdr_shipper else lambda: None,
        )
        self.core: PbxCore | None = None
        self.services: ServiceRunner | None = None
        self.billing: BillingRuntime | None = None
        self.routing: RoutingLoader | None = None
        self._timer: asyncio.Handle | None = None
        self._timer_when = 0.0
        self._flush_soon = False
        self._tasks: list[asyncio.Task[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self.sample_passwords: dict[str, str] = {}
        self.started_at = time.time()
        self.web: WebServer | None = None  # the web console and REST API (minipbx.web)
        self.admin_password: str | None = None  # of the first web admin, for the banner
        self.stun = StunListener(settings.bind, settings.stun_port) if settings.stun_port else None
        # RTP: the relay for calls with a party behind NAT (ports bound only when used).
        self.media_address = settings.media_address or settings.public_address
        pool = RtpPortPool(settings.bind, settings.rtp_port_min, settings.rtp_port_max)
        fixed = self.media_address or (None if _wildcard(settings.bind) else settings.bind)
        # The anchor picks the address facing each party when none is fixed.
        self.relays = RelayManager(pool, fixed or "127.0.0.1")

    # -- start and stop --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the database, load users and registrations, bind the listeners."""
        self._loop = asyncio.get_running_loop()
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        await self.db.upgrade()
        await SqlTenantRepo(self.db).ensure_default()
        await self._create_samples()
        await self.directory.load()
        algorithms = [Algorithm.from_name(a) for a in self.settings.digest_algorithms]
        secret = _secret(self.settings.data_dir)
        entropy = EntropyPool()
        digest = DigestAuthenticator(
            secret, algorithms=[a for a in algorithms if a], entropy=entropy
        )
        authenticator = RequestAuthenticator(digest, self.users, guard=self.guard, entropy=entropy)
        registrar = Registrar(
            self.location,
            self.users,
            authenticator,
            config=RegistrarConfig(
                min_expires=self.settings.min_expires,
                max_expires=self.settings.max_expires,
                default_expires=self.settings.max_expires,
            ),
            on_change=self.registrations.changed,
            entropy=entropy,
        )
        restored = registrar.restore(await self.registrations.load(time.time()), time.time())
        network = Network(self.transports, self.settings.public_address)
        router = DialPlanRouter(LocalRouter(self.users, registrar, time.time), time.time)
        listener = CdrRecorder(self.cdr_writer, self._wall_offset)
        self.core = PbxCore(
            network=network,
            router=router,
            listener=listener,
            authenticator=authenticator,
            registrar=registrar,
            guard=self.guard,
            wall_clock=time.time,
            settings=CoreSettings(calls=CallSettings(ring_timeout=self.settings.ring_timeout)),
            entropy=entropy,
            is_self=network.is_self,
            trunk_of=self._trunk_of,
        )
        router.counts = self.core.b2bua.counts
        fixed = self.media_address
        self.core.b2bua.media = RelayAnchor(
            self.relays,
            (lambda remote: fixed) if fixed else network.media_ip_for,
            self.settings.media_relay,
            lambda tenant, ext: _relay_mode(router, tenant, ext),
        )
        self.routing = RoutingLoader(self.db, router, self._configure_trunks)
        routing = self.routing
        # Voicemail: boxes in memory for the call path, messages on disk + rows, e-mail.
        self.mailboxes = SqlMailboxes(self.db, self.settings.data_dir, on_change=self._mwi_changed)
        await self.mailboxes.load()
        self.mailer = Mailer(self.mailboxes, smtp_settings_loader(SqlSettingsRepo(self.db)))
        self.core.mwi.counts = self.mailboxes
        # Billing: rates and prepaid balances in memory; charges to the ledger.
        settings = self.settings
        self.billing = BillingRuntime(
            self.db,
            BillingSettings(
                warning_lead=settings.warning_lead,
                min_seconds=settings.min_call_seconds,
                longest_call=settings.longest_call,
            ),
            data_dir=settings.data_dir,
        )
        await self.billing.load()
        router.billing = self.billing.gate
        self.billing.rating_number = router.routed_number
        listener.price = self.billing.gate.price_record
        self.services = ServiceRunner(
            loop=self._loop,
            control=lambda: self.core.b2bua if self.core is not None else None,
            flush=self._flush,
            open_media=lambda call, offer: self._open_media(network, call, offer),
            services={
                "ivr": Attendant(lambda tenant_id: routing.menus.get(tenant_id, {})),
                "forward": ForwardCodes(
                    lambda tenant, ext: _user_id(router, tenant, ext),
                    SqlUserSettingsRepo(self.db).update_settings,
                ),
                **voicemail_services(self.mailboxes),
                **self.billing.services(),
            },
            data_dir=self.settings.data_dir,
        )
        self.core.b2bua.services = self.services
        await self.routing.load()
        await self._start_cdrs()
        await self._start_stun()  # before SIP: an answer to OPTIONS is taken as "started"
        # The web server before SIP too: a port in use stops the start before any call.
        self.web, self.admin_password = await start_web(self, secret)
        await self.transports.start()
        self._tasks += [
            asyncio.create_task(self.directory.watch(1.0)),
            asyncio.create_task(self.routing.watch(1.0)),
            asyncio.create_task(self._housekeeping()),
            asyncio.create_task(self._keepalives()),
            asyncio.create_task(self.mailboxes.watch(1.0)),
            asyncio.create_task(self.mailer.run()),
            asyncio.create_task(self.billing.run()),
        ]
        _tune_gc()
        log.info(
            "event=started users=%d registrations=%d sip_core=%s",
            len(self.directory),
            restored,
            "compiled" if sip.COMPILED else "python",
        )

    async def _start_stun(self) -> None:
        """The STUN server is an aid for phones, not needed for calls: a port that is taken
        (another PBX or a TURN server on this box) is one error line, not a failed start."""
        if self.stun is not None:
            try:
                await self.stun.start()
            except TransportError as exc:
                log.error("event=stun_unavailable error=%s", exc)

    async def _start_cdrs(self) -> None:
        """Import spooled CDRs; check the MySQL mirror (an error is logged, not fatal)."""
        try:
            await self.cdr_writer.retry_spool()
        except StoreError as exc:
            log.error("event=cdr_spool_not_imported error=%s", exc)
        if self.cdr_mirror is None or self.cdr_shipper is None:
            return
        try:
            await asyncio.wait_for(self.cdr_mirror.insert([]), 10.0)
            log.info("event=cdr_mirror_ready target=%s", self.cdr_mirror.display_url)
        except (StoreError, TimeoutError) as exc:
            log.error(
                "event=cdr_mirror_unavailable target=%s error=%s "
                "(serving calls; CDRs are kept locally and shipped when it is reachable)",
                self.cdr_mirror.display_url,
                exc or "timed out",
            )
        self._tasks.append(asyncio.create_task(self.cdr_shipper.run()))

    def _mwi_changed(self, tenant_id: int, extension: str) -> None:
        """A voice mailbox changed: NOTIFY its subscribers (and phones, unsolicited)."""
        core, loop = self.core, self._loop
        if core is None or loop is None:
            return
        core.mwi.mailbox_changed(tenant_id, extension, loop.time())
        self._flush()

    def _open_media(
        self, network: Network, call: Call, offer: bytes
    ) -> tuple[MediaEndpoint, bytes]:
        """Our own RTP stream answering ``offer`` (a service's leg), on the RTP range; our
        offer when the caller sent none."""
        address = self.media_address or network.media_ip_for(call.source.host)
        return MediaEndpoint.negotiate(
            offer,
            address=address,
            ports=self.relays.pool,
            session_id=int(time.time() * 1000),
            name=call.id,
        )

    def _trunk_of(self, source: Address) -> InboundTrunk | None:
        routing = self.routing
        return routing.trunk_of(source) if routing is not None else None

    def _configure_trunks(self, accounts: list[TrunkAccount]) -> None:
        """The loader's trunk list: start, refresh or drop registrations (sent at once)."""
        if self.core is not None and self._loop is not None:
            self.core.trunks.configure(accounts, self._loop.time())
            self._flush()

    @property
    def http_port(self) -> int:
        """The port the web console and REST API listen on (0 before start)."""
        return self.web.port if self.web is not None else 0

    def hangup_call(self, call_id: str) -> bool:
        """End a call from the PBX side (an admin's hang-up); False if there is no such call."""
        core, loop = self.core, self._loop
        call = core.b2bua.calls.get(call_id) if core is not None else None
        if core is None or loop is None or call is None:
            return False
        core.b2bua.hangup(call, loop.time(), "admin")
        core.handle_timer(loop.time())  # process what the hang-up queued
        self._flush()
        return True

    def _wall_offset(self) -> float:
        """Wall clock minus the loop's monotonic clock (CDR times are wall-clock UTC)."""
        loop = self._loop
        return time.time() - (loop.time() if loop is not None else time.monotonic())

    def _records_durable(self, calls: list[Call]) -> None:
        """The CDR writer made these calls' records durable: release their held answers."""
        core = self.core
        if core is None or self._loop is None or not calls:
            return
        now = self._loop.time()
        for call in calls:
            core.b2bua.recorded(call, now)
        self._flush()

    async def _create_samples(self) -> None:
        """First start with no users: the default tenant and extensions 100-102."""
        users = SqlUserRepo(self.db)
        if await users.count():
            return
        for ext in SAMPLE_EXTENSIONS:
            password = secrets.token_urlsafe(9)
            await users.add(ext, password, name=f"Extension {ext}")
            self.sample_passwords[ext] = password

    async def stop(self) -> None:
        """End calls with BYE, save registrations, close everything."""
        core = self.core
        if core is not None and self._loop is not None:
            core.hangup_all(self._loop.time())
            core.trunks.stop_all(self._loop.time())  # unregister from providers
            core.mwi.stop_all(self._loop.time())  # phones subscribe again to the next run
            self._flush()
            if core.b2bua.calls or core.layer.transaction_count or core.trunks.trunks:
                await asyncio.sleep(0.5)  # let BYEs out and their answers in
        if self.web is not None:
            await self.web.stop()
        await self.cdr_writer.close()
        if self.billing is not None:
            await self.billing.close()  # charges of the calls just ended reach the ledger
        self.relays.close_all()
        await self.relays.wait_closed()
        if self._timer is not None:
            self._timer.cancel()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.registrations.flush()
        await self.transports.stop()
        if self.stun is not None:
            await self.stun.stop()
        if self.cdr_mirror is not None:
            await self.cdr_mirror.close()
        self.cdrs.close()
        await self.db.close()
        log.info("event=stopped")

    def log_state(self) -> None:
        """One ``event=state`` line: how many calls, transactions, timers, bindings,
        tracked digest nonces, connections, relays and services the server holds
        (``kill -USR1``). A count that keeps growing while traffic is steady is a leak;
        the nonces are bounded (``max_tracked_nonces``, 300 s each)."""
        core = self.core
        if core is None:
            return
        sizes = core.sizes()
        sizes["connections"] = self.transports.connection_count
        sizes["relays"] = self.relays.count
        sizes["services"] = self.services.count if self.services is not None else 0
        sizes["python_blocks"] = sys.getallocatedblocks()  # every live small allocation
        state_log.info("event=state %s", " ".join(f"{k}={v}" for k, v in sizes.items()))

    # -- the glue ----------------------------------------------------------------------------

    def _source_allowed(self, ip: str) -> bool:
        return not self.guard.is_banned(ip, time.time())

    def _on_message(self, inbound: Inbound) -> None:
        core = self.core
        if core is None:
            return
        core.receive(inbound.message, inbound.source, inbound.arrived)
        # Sent once the loop has handled every datagram it had ready: the answers then go
        # out in a burst, and a peer's process is woken once for many of them instead of
        # once each (the wake-up cost a sixth of the registration throughput on loopback).
        if not self._flush_soon and self._loop is not None:
            self._flush_soon = True
            self._loop.call_soon(self._flush_now)

    def _flush_now(self) -> None:
        self._flush_soon = False
        self._flush()

    def _flush(self) -> None:
        core = self.core
        if core is None or self._loop is None:
            return
        send = self.transports.send
        for data, destination in core.datagrams_to_send():
            send(data, destination)
        self._arm()

    def _arm(self) -> None:
        core = self.core
        loop = self._loop
        if core is None or loop is None:
            return
        when = core.get_timer()
        if when is None:
            return
        if self._timer is not None:
            if self._timer_when <= when:
                return
            self._timer.cancel()
        # uvloop returns a plain Handle (no when()) for a time already past: keep our own.
        self._timer = loop.call_at(when, self._on_timer)
        self._timer_when = when

    def _on_timer(self) -> None:
        self._timer = None
        if self.core is not None and self._loop is not None:
            self.core.handle_timer(self._loop.time())
            self._flush()

    async def _housekeeping(self) -> None:
        """Every second: expire registrations, save changed ones."""
        while True:
            await asyncio.sleep(1.0)
            if self.core is not None:
                self.core.registrar.expire(time.time())
                self.guard.sweep(time.time())
            await self.registrations.flush()
            await self._retry_cdr_spool()

    async def _retry_cdr_spool(self) -> None:
        try:
            await self.cdr_writer.retry_spool()
        except StoreError as exc:
            log.debug("event=cdr_spool_retry_failed error=%s", exc)

    async def _keepalives(self) -> None:
        """OPTIONS to NATed UDP contacts so their NAT mappings stay open."""
        while True:
            await asyncio.sleep(KEEPALIVE_INTERVAL)
            core = self.core
            if core is not None and self._loop is not None:
                core.keepalive(core.registrar.nated_udp_bindings(time.time()), self._loop.time())
                self._flush()


def _wildcard(address: str) -> bool:
    return address in ("0.0.0.0", "::")


def _user_id(router: DialPlanRouter, tenant_id: int, extension: str) -> int | None:
    policy = router.config.policies.get((tenant_id, extension))
    return policy.user_id if policy is not None else None


def _relay_mode(router: DialPlanRouter, tenant_id: int, extension: str) -> str:
    """A user's own media relay setting (auto when not a user)."""
    policy = router.config.policies.get((tenant_id, extension))
    return policy.media_relay if policy is not None else "auto"


def _tune_gc() -> None:
    """Keep the cyclic garbage collector from stalling the event loop.

    Calls, transactions and messages are freed by reference counting (they hold no
    cycles once they leave the tables), yet with thousands of calls up CPython's full
    collections walked every live object for nothing: pauses past 1 s that made phones
    retransmit (bench/sip_load.py, GC hook). Objects alive after start-up are frozen out
    of collections and the thresholds raised, so collections are rarer and cheaper.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


def _print_banner(app: App) -> None:
    settings = app.settings
    out = [f"minipbx listening (data in {settings.data_dir.resolve()}):"]
    out += [f"  SIP {a.transport.upper()} {a.hostport}" for a in app.transports.listeners]
    if app.stun is not None and app.stun.listening:
        out.append(f"  STUN UDP {app.stun.hostport}")
    if app.sample_passwords:
        out.append("first start: created the default tenant and sample extensions:")
        out += [f"  extension {ext}  password {pw}" for ext, pw in app.sample_passwords.items()]
    if app.web is not None:
        out.append(f"  web console and REST API {app.web.url} (API: {app.web.url}api/v1)")
    if app.admin_password:
        out.append("first start: created the web admin (change its password in the console):")
        out.append(f"  admin {FIRST_ADMIN}  password {app.admin_password}")
    print("\n".join(out), flush=True)


async def _serve(settings: Settings) -> int:
    app = App(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR1, app.log_state)
    try:
        await app.start()
    except BaseException:
        await app.stop()
        raise
    _print_banner(app)
    await stop.wait()
    log.info("event=stopping")
    await app.stop()
    return 0


def run_server(settings: Settings) -> int:
    """``minipbx run``: serve until SIGINT/SIGTERM; errors are one line (raised to the CLI)."""
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    state_log.setLevel(logging.INFO)  # asked for by a signal: written at any level
    try:
        import uvloop

        runner: object = uvloop.run
    except ImportError:
        runner = asyncio.run
    return runner(_serve(settings))  # type: ignore[operator,no-any-return]


__all__ = ["App", "run_server"]
