"""The load-balancing half of a host's datapath: service frontends and backend tables
(Maglev or random) kept equal to what the store wants, conntrack of removed backends purged.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from netaddr import IPAddress

from pydp.loader import Map
from pydp.maps.base import sync_entries
from pydp.maps.lb import (
    SVC_F_MAGLEV,
    SVC_F_RANDOM,
    LbBackend,
    LbTables,
    ServiceMap,
    SvcInfo,
    SvcKey,
    pack_table,
)
from pydp.maps.nat import NatMap

__all__ = ["LbDatapath", "ServiceSpec", "build_table", "spec_sig"]

log = logging.getLogger(__name__)

_NAT_F_DNAT, _NAT_F_SVC = 2, 8


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One service as the datapath needs it: its index, VIP, network, frontends and the
    backends that take new connections (draining ones are not here)."""

    index: int
    vip: IPAddress
    network: int  # the service's network index
    frontends: tuple[tuple[int, int], ...]  # (port, IPPROTO_*)
    backends: tuple[LbBackend, ...] = ()
    identities: tuple[str, ...] = ()  # the Maglev hash input of each backend
    weights: tuple[int, ...] = ()
    lb: str = "maglev"  # maglev | random
    size: int = 0  # Maglev M (random: unused)
    draining: frozenset[tuple[IPAddress, int]] = field(default_factory=frozenset)


def spec_sig(spec: ServiceSpec) -> int:
    """The signature a service's frontends carry (SvcInfo.sig): crc32 of what its table is
    computed from, so an unchanged service is recognised without computing its table (a
    Maglev table costs ~0.1 ms: 1 s at 10,000 services). 0 means no table."""
    if not spec.draining and not any(w > 0 for w in spec.weights):
        return 0
    text = repr(
        (spec.lb, spec.size, spec.identities, spec.weights, spec.backends, sorted(spec.draining))
    )
    return zlib.crc32(text.encode()) or 1


def build_table(spec: ServiceSpec) -> bytes:
    """The service's table bytes: its Maglev (or random) slots, then one slot per draining
    backend past them -- never picked (a packet's slot is taken modulo the live size) but
    recorded, so that the agent purges their connections once they stop draining. Empty
    when the service has neither."""
    import numpy as np  # only when a table is built: numpy costs every CLI command ~0.1 s

    from pydp.control.maglev import maglev_table

    live = [i for i, w in enumerate(spec.weights) if w > 0]
    backends = list(spec.backends) + [LbBackend(a, p) for a, p in sorted(spec.draining)]
    extra = np.arange(len(spec.backends), len(backends), dtype=np.int64)
    if live and spec.lb == "maglev":
        table = maglev_table(list(spec.identities), spec.size, list(spec.weights))
        slots = np.concatenate([table, extra])
    elif live:
        slots = np.concatenate([np.repeat(live, [spec.weights[i] for i in live]), extra])
    else:
        slots = extra
    return pack_table(backends, slots) if len(slots) else b""


def live_size(spec: ServiceSpec) -> int:
    """The slots a packet picks from (SvcInfo.size): Maglev's M, the weights' sum for
    random, 0 when no backend takes connections."""
    if not any(w > 0 for w in spec.weights):
        return 0
    return spec.size if spec.lb == "maglev" else sum(w for w in spec.weights if w > 0)


class LbDatapath:
    """The service maps of a loaded object (pins shared by name with every program)."""

    def __init__(self, services: Map, tables: Map, nat: NatMap) -> None:
        self.services = ServiceMap(services)
        self.tables = LbTables(tables, Map.create, Map.by_id)
        self.nat = nat

    def sync(self, specs: Sequence[ServiceSpec]) -> int:
        """Make the frontends and tables hold exactly ``specs``. A table is rebuilt only when
        its bytes changed (the signature its frontends carry says), and installed before the
        frontends that name it. The connections of backends that left a table (not as
        draining) are purged, so their clients' next packets pick a live backend. Returns
        how many tables were installed."""
        had: dict[int, int] = {}
        old_ports: dict[int, set[int]] = {}
        for key, info in self.services.snapshot().items():
            if key.port:
                had[info.index] = info.sig
                old_ports.setdefault(info.index, set()).add(key.port)
        want: dict[SvcKey, SvcInfo] = {}
        gone: set[tuple[IPAddress, int]] = set()
        new_tables: dict[int, bytes] = {}
        for spec in specs:
            sig = spec_sig(spec)
            table = b""
            if had.get(spec.index, 0) != sig:
                table = build_table(spec)
                before = self.tables.backends(spec.index) if spec.index in had else set()
                if table:
                    new_tables[spec.index] = table
                else:
                    self.tables.remove(spec.index)
                left = before - set(spec.backends)  # draining ones are excluded below
                ports = [port for port, _ in spec.frontends]
                gone |= {
                    (b.address, p)
                    for b in left
                    for p in ([b.port] if b.port else ports)
                    if (b.address, p) not in spec.draining
                }
            flags = SVC_F_MAGLEV if spec.lb == "maglev" else SVC_F_RANDOM
            info = SvcInfo(spec.index, live_size(spec), spec.network, sig, flags)
            for port, proto in spec.frontends:
                want[SvcKey(spec.vip, port, proto)] = info
            want[SvcKey(spec.vip)] = SvcInfo(spec.index, 0, spec.network)
        self.tables.install_many(new_tables)  # before the frontends that name them
        packed = {self.services.key_bytes(k): self.services.value_bytes(v) for k, v in want.items()}
        sync_entries(self.services, packed)
        for index in set(had) - {spec.index for spec in specs}:
            before = self.tables.backends(index)
            self.tables.remove(index)
            ports = sorted(old_ports.get(index, ()))
            gone |= {(b.address, p) for b in before for p in ([b.port] if b.port else ports)}
        if gone:
            self.purge_backends(gone)
        return len(new_tables)

    def purge_backends(self, backends: Collection[tuple[IPAddress, int]]) -> int:
        """Delete the conntrack entries of connections through a service or a published port
        to these (address, port) backends, both directions: the client's entry holds the
        backend, the backend's reply entry is keyed by it. Returns how many went."""
        pairs = set(backends)
        doomed = [
            k
            for k, e in self.nat.items()
            if e.flags & (_NAT_F_DNAT | _NAT_F_SVC)
            and ((e.address, e.port) in pairs or (k.saddr, k.sport) in pairs)
        ]
        for k in doomed:
            self.nat.discard(k)
        if doomed:
            log.info("purged %d conntrack entries of removed backends", len(doomed))
        return len(doomed)
