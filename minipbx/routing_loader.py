"""Keeps the router's memory snapshot, trunk registrations and trusted trunk addresses in
step with the database (asyncio glue, like ``app.py``).

Every second :meth:`RoutingLoader.watch` reads the change counters; when one moved it loads
the routing data, resolves trunk hosts (DNS off the call path), compiles a new
:class:`~minipbx.pbx.dialplan_router.RoutingConfig` and swaps it in, reconfigures the trunk
registrations and rebuilds the map of addresses whose INVITEs are trusted as a trunk's:

- a trunk's own host and port (a registering trunk's provider sends calls from there);
- each entry of its ``allowed_ips``: an address, ``address:port`` or a CIDR network
  (IP-authenticated trunks).

Nothing else is trusted: every other INVITE is challenged.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass

from minipbx.pbx.call import InboundTrunk
from minipbx.pbx.dialplan_router import DialPlanRouter, compile_routing
from minipbx.pbx.ivr import IvrMenu
from minipbx.pbx.trunk_registration import TrunkAccount
from minipbx.store import Database, StoreError
from minipbx.store.checks import IpNetwork, parse_source
from minipbx.store.ivr import SqlIvrRepo
from minipbx.store.pbxrecords import TrunkRecord
from minipbx.store.routing_data import RoutingData, load_routing_data, routing_versions
from minipbx.transport.address import Address

log = logging.getLogger("minipbx.routing")

RESOLVE_EVERY = 300.0  # seconds between DNS refreshes of trunk hosts
_DEFAULT_PORT = {"udp": 5060, "tcp": 5060, "tls": 5061}

Network = IpNetwork


@dataclass(frozen=True, slots=True)
class TrustedSources:
    """Addresses whose INVITEs are a trunk's: exact (ip, port) pairs, then networks."""

    exact: dict[tuple[str, int], InboundTrunk]
    hosts: dict[str, InboundTrunk]
    networks: tuple[tuple[Network, InboundTrunk], ...]

    def trunk_of(self, source: Address) -> InboundTrunk | None:
        """The trunk ``source`` belongs to, or None."""
        found = self.exact.get((source.host, source.port)) or self.hosts.get(source.host)
        if found is not None or not self.networks:
            return found
        try:
            ip = ipaddress.ip_address(source.host)
        except ValueError:
            return None
        for network, trunk in self.networks:
            if ip in network:
                return trunk
        return None


def trusted_sources(
    data: RoutingData, resolved: dict[int, Address], domains: dict[int, str]
) -> TrustedSources:
    """Build the trusted-address map of the enabled trunks (bad entries are logged)."""
    exact: dict[tuple[str, int], InboundTrunk] = {}
    hosts: dict[str, InboundTrunk] = {}
    networks: list[tuple[Network, InboundTrunk]] = []
    for trunk in data.trunks:
        if not trunk.enabled:
            continue
        inbound = InboundTrunk(trunk.name, trunk.tenant_id, domains.get(trunk.tenant_id, ""))
        address = resolved.get(trunk.id)
        if address is not None:
            exact[(address.host, address.port)] = inbound
        for entry in (e.strip() for e in trunk.allowed_ips.replace(";", ",").split(",")):
            if not entry:
                continue
            try:
                _add_entry(entry, inbound, exact, hosts, networks)
            except ValueError:
                log.error("event=trunk_bad_allowed_ip trunk=%s entry=%r", trunk.name, entry)
    return TrustedSources(exact, hosts, tuple(networks))


def _add_entry(
    entry: str,
    inbound: InboundTrunk,
    exact: dict[tuple[str, int], InboundTrunk],
    hosts: dict[str, InboundTrunk],
    networks: list[tuple[Network, InboundTrunk]],
) -> None:
    source = parse_source(entry)  # the store's own parser (entries were checked there)
    if isinstance(source, tuple):
        exact[source] = inbound
    elif source.num_addresses == 1:  # one address: a dictionary lookup, any port
        hosts[str(source.network_address)] = inbound
    else:
        networks.append((source, inbound))


class RoutingLoader:
    """Loads routing data into the router and the trunk registrations (see module doc)."""

    def __init__(
        self,
        db: Database,
        router: DialPlanRouter,
        configure_trunks: Callable[[list[TrunkAccount]], None],
    ) -> None:
        self._db = db
        self._router = router
        self._configure_trunks = configure_trunks
        self.sources = TrustedSources({}, {}, ())
        # Auto attendant menus by tenant (they change with the dial plans' counter).
        self.menus: dict[int, dict[str, IvrMenu]] = {}
        self._versions: tuple[int, ...] | None = None
        self._resolved_at = 0.0

    def trunk_of(self, source: Address) -> InboundTrunk | None:
        """The trunk an INVITE from ``source`` belongs to (the core's ``trunk_of``)."""
        return self.sources.trunk_of(source)

    async def load(self) -> None:
        """Load, resolve, compile and swap in (StoreError if the database fails)."""
        data = await load_routing_data(self._db)
        menus = await SqlIvrRepo(self._db).load_all_menus()
        resolved = await resolve_trunks(data.trunks)
        self._router.config = compile_routing(data, lambda t: resolved.get(t.id))
        self.sources = trusted_sources(data, resolved, data.tenant_domains)
        self.menus = menus
        self._configure_trunks(
            [_account(t, resolved[t.id]) for t in data.trunks if _registers(t, resolved)]
        )
        self._versions = data.versions
        self._resolved_at = asyncio.get_running_loop().time()
        log.info(
            "event=routing_loaded plans=%d trunks=%d ivr_menus=%d problems=%d",
            len(data.plans),
            len(data.trunks),
            sum(map(len, menus.values())),
            len(self._router.config.problems),
        )

    async def watch(self, interval: float = 1.0) -> None:
        """Reload when the data changed (and re-resolve trunk hosts every few minutes)."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval)
            try:
                stale = loop.time() - self._resolved_at > RESOLVE_EVERY
                if stale or await routing_versions(self._db) != self._versions:
                    await self.load()
            except StoreError as exc:
                log.error("event=routing_reload_failed error=%s", exc)


async def resolve_trunks(trunks: tuple[TrunkRecord, ...]) -> dict[int, Address]:
    """Trunk id -> address of every enabled trunk whose host resolves."""
    found: dict[int, Address] = {}
    for trunk in trunks:
        if trunk.enabled and trunk.host:
            address = await _resolve(trunk)
            if address is not None:
                found[trunk.id] = address
    return found


def _registers(trunk: TrunkRecord, resolved: dict[int, Address]) -> bool:
    return trunk.enabled and trunk.register and trunk.id in resolved and bool(trunk.username)


def _account(trunk: TrunkRecord, address: Address) -> TrunkAccount:
    return TrunkAccount(
        name=f"{trunk.tenant_id}/{trunk.name}",
        registrar=address,
        domain=trunk.from_domain or trunk.host,
        username=trunk.username,
        password=trunk.password,
        auth_username=trunk.auth_username,
        expires=trunk.register_expires,
    )


async def _resolve(trunk: TrunkRecord) -> Address | None:
    """The trunk's address: an IP literal as is, a name through DNS (A/AAAA)."""
    transport = trunk.transport.lower() if trunk.transport else "udp"
    port = trunk.port or _DEFAULT_PORT.get(transport, 5060)
    host = trunk.host.strip("[]")
    try:
        return Address(transport, str(ipaddress.ip_address(host)), port)
    except ValueError:
        pass
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, port, type=socket.SOCK_DGRAM), timeout=5.0
        )
    except (OSError, TimeoutError) as exc:
        log.error("event=trunk_unresolved trunk=%s host=%s error=%s", trunk.name, host, exc)
        return None
    if not infos:
        return None
    return Address(transport, str(infos[0][4][0]), port)
