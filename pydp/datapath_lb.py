"""The load-balancing half of a host's datapath: service frontends and backend tables
(Maglev or random) kept equal to what the store wants, conntrack of removed backends purged.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field

from netaddr import IPAddress

from pydp.loader import Map
from pydp.maps.config import NetworkMap
from pydp.maps.lb import (
    SVC_F_MAGLEV,
    SVC_F_RANDOM,
    LbBackend,
    LbTables,
    ServiceMap,
    SvcInfo,
    SvcKey,
    new_map,
    pack_table,
)
from pydp.maps.nat import NatEntry, NatKey, NatMap

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
    computed from, so that a process that did not write a table recognises it unchanged
    without computing it. 0 means no table."""
    if not spec.draining and not any(w > 0 for w in spec.weights):
        return 0
    text = repr(
        (
            spec.lb,
            spec.size,
            spec.identities,
            spec.weights,
            [(int(b.address), b.port) for b in spec.backends],
            sorted((int(a), p) for a, p in spec.draining),
        )
    )
    return zlib.crc32(text.encode()) or 1


def build_table(spec: ServiceSpec) -> bytes:
    """The service's table bytes: its Maglev (or random) slots, then one slot per draining
    backend past them -- never picked (a packet's slot is taken modulo the live size) but
    recorded, so that the agent purges their connections once they stop draining. Empty
    when the service has neither."""
    live = [i for i, w in enumerate(spec.weights) if w > 0]
    drained = [LbBackend(a, p) for a, p in sorted(spec.draining)]
    if live and spec.lb == "maglev":
        from pydp.control.maglev import maglev_slots

        addrs = [int(b.address) for b in spec.backends]
        ports = [b.port for b in spec.backends]
        table = maglev_slots(spec.identities, spec.size, spec.weights, addrs, ports)
        if drained:
            table += pack_table(drained, range(len(drained)))
        return table
    import numpy as np  # only when a table is built: numpy costs every CLI command ~0.1 s

    backends = list(spec.backends) + drained
    extra = np.arange(len(spec.backends), len(backends), dtype=np.int64)
    if live:
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


@dataclass(slots=True)
class _Service:
    """A service as the maps hold it."""

    vip: IPAddress
    slot: int  # its table's slot in pydp_lb_tables (0: none)
    sig: int  # what its frontends carry (0: no table)
    keys: frozenset[SvcKey]  # its frontends (the VIP's mark aside)
    info: SvcInfo | None  # what every frontend holds (None: not the same in all)
    network: int
    spec: ServiceSpec | None = None  # as this process wrote it (None: read from the maps)
    backends: frozenset[LbBackend] | None = None  # its table's backends (None: not read)


def _svc_info(spec: ServiceSpec, slot: int, sig: int) -> SvcInfo:
    flags = SVC_F_MAGLEV if spec.lb == "maglev" else SVC_F_RANDOM
    return SvcInfo(slot, live_size(spec), spec.network, sig, flags)


class LbDatapath:
    """The service maps of a loaded object (pins shared by name with every program).

    ``pydp_services`` holds each frontend (VIP, port, proto) -> svc_info naming a *table
    slot* of ``pydp_lb_tables`` (see `LbTables`), and each VIP's mark (port 0, proto 0)
    -> svc_info whose index is the *service's* index: how a process that did not write the
    maps tells which service a frontend belongs to.

    What the maps hold is remembered between calls, so a call that changes one service
    touches that service only: `apply` (the incremental API) and `sync` (the whole set,
    compared with what is remembered). The memory is trusted only while the stamp in
    ``pydp_lb_tables``' slot 0 is the one this object left: another process that wrote the
    maps since (a CLI command beside a long-lived agent) makes the next call read them
    again. Callers serialise writers (the agent's reconcile lock)."""

    def __init__(
        self, services: Map, tables: Map, nat: NatMap, networks: NetworkMap | None = None
    ) -> None:
        self.services = ServiceMap(services)
        self.tables = LbTables(tables, new_map, Map.by_id)
        self.nat = nat
        self.networks = networks  # for the conntrack scope of a network's backends
        self._svcs: dict[int, _Service] | None = None
        self._orphans: set[SvcKey] = set()  # frontends of no service: removed next time
        self._stamp = b""

    # ---- what the maps hold -------------------------------------------------------------

    def _state(self) -> dict[int, _Service]:
        """The services as the maps hold them: remembered, or read when another writer
        came between (or first)."""
        if self._svcs is not None and self._stamp and self.tables.read_stamp() == self._stamp:
            return self._svcs
        marks: dict[IPAddress, tuple[int, int]] = {}
        fronts: dict[IPAddress, dict[SvcKey, SvcInfo]] = {}
        for key, info in self.services.snapshot().items():
            if key.port or key.proto:
                fronts.setdefault(key.vip, {})[key] = info
            else:
                marks[key.vip] = (info.index, info.network)
        svcs: dict[int, _Service] = {}
        self._orphans = set()
        for vip, (index, network) in marks.items():
            keys = fronts.pop(vip, {})
            infos = set(keys.values())
            common = next(iter(infos)) if len(infos) == 1 else None
            slot = max((i.index for i in infos if i.sig), default=0)
            sig = common.sig if common is not None else -1 if keys else 0  # -1: rewrite
            svcs[index] = _Service(vip, slot, sig, frozenset(keys), common, network)
        for keys in fronts.values():
            self._orphans.update(keys)
        self.tables.load({s.slot for s in svcs.values() if s.slot})
        self._svcs = svcs
        return svcs

    def _stamp_it(self) -> None:
        self._stamp = os.urandom(16)
        self.tables.write_stamp(self._stamp)

    # ---- writing ------------------------------------------------------------------------

    def sync(self, specs: Sequence[ServiceSpec]) -> int:
        """Make the frontends and tables hold exactly ``specs``. A table is rebuilt only when
        what it is computed from changed, and put in a slot no frontend names before the
        frontends move to it. The connections of backends that left a table (not as
        draining) are purged, so their clients' next packets pick a live backend. Returns
        how many tables were installed."""
        svcs = self._state()
        changed = []
        for spec in specs:
            have = svcs.get(spec.index)
            if have is None or not self._same(have, spec):
                changed.append(spec)
        gone = set(svcs) - {spec.index for spec in specs}
        if not changed and not gone and not self._orphans:
            return 0
        return self._apply(svcs, changed, gone)

    def apply(self, specs: Sequence[ServiceSpec] = (), removed: Collection[int] = ()) -> int:
        """The incremental API: make each of ``specs`` hold (added or changed), and remove
        the services of the ``removed`` indexes; every other service is left as it is, and
        not looked at. Returns how many tables were installed."""
        svcs = self._state()
        changed = [s for s in specs if s.index not in svcs or not self._same(svcs[s.index], s)]
        gone = {i for i in removed if i in svcs}
        if not changed and not gone and not self._orphans:
            return 0
        return self._apply(svcs, changed, gone)

    def slot(self, index: int) -> int:
        """The table slot service index's frontends name (0: no table, or no service)."""
        have = self._state().get(index)
        return have.slot if have is not None else 0

    def backends(self, index: int) -> set[LbBackend]:
        """The distinct backends of service index's table as installed (empty: none)."""
        slot = self.slot(index)
        return self.tables.backends(slot) if slot else set()

    def reclaim(self) -> int:
        """Let the tables given back since the last outer-map write become spares (waits for
        one RCU grace period: for an agent with nothing else to do)."""
        self._state()
        return self.tables.reclaim()

    @staticmethod
    def _same(have: _Service, spec: ServiceSpec) -> bool:
        if have.spec is not None:
            return have.spec == spec
        sig = spec_sig(spec) if spec.frontends else 0
        if have.sig != sig or have.vip != spec.vip or have.network != spec.network:
            return False
        want = {SvcKey(spec.vip, port, proto) for port, proto in spec.frontends}
        return (
            have.keys == want and have.info == _svc_info(spec, have.slot, sig)
            if want
            else not have.keys
        )

    def _old_backends(self, have: _Service) -> frozenset[LbBackend]:
        if have.backends is None:
            have.backends = frozenset(self.tables.backends(have.slot) if have.slot else ())
        return have.backends

    def _apply(
        self, svcs: dict[int, _Service], changed: Sequence[ServiceSpec], removed: Collection[int]
    ) -> int:
        gone: set[tuple[IPAddress, int, int]] = set()
        # the new tables, in slots no frontend names
        builds: list[tuple[ServiceSpec, int, bytes]] = []
        sigs: dict[int, int] = {}
        for spec in changed:
            sig = spec_sig(spec) if spec.frontends else 0  # no frontend: no table
            sigs[spec.index] = sig
            have = svcs.get(spec.index)
            if have is not None and have.sig == sig and have.slot:
                continue  # the same table: the frontends alone changed
            table = build_table(spec) if sig else b""
            if table:
                builds.append((spec, sig, table))
        slots = self.tables.place([t for _, _, t in builds])
        new_slot = {spec.index: slot for (spec, _, _), slot in zip(builds, slots, strict=True)}
        # the frontends, then the old slots given back
        put: dict[bytes, bytes] = {}
        drop: set[SvcKey] = set(self._orphans)
        freed: list[int] = []
        for spec in changed:
            have = svcs.get(spec.index)
            sig = sigs[spec.index]
            slot = new_slot.get(spec.index, have.slot if have is not None and sig else 0)
            info = _svc_info(spec, slot, sig)
            keys = frozenset(SvcKey(spec.vip, port, proto) for port, proto in spec.frontends)
            for key in keys:
                if have is None or have.info != info or key not in have.keys:
                    put[self.services.key_bytes(key)] = self.services.value_bytes(info)
            mark = SvcKey(spec.vip)
            if have is None or have.vip != spec.vip or have.network != spec.network:
                put[self.services.key_bytes(mark)] = self.services.value_bytes(
                    SvcInfo(spec.index, 0, spec.network)
                )
            backends = frozenset(  # what the table holds: live backends, draining ones
                [b for b, w in zip(spec.backends, spec.weights, strict=False) if w > 0]
                + [LbBackend(a, p) for a, p in spec.draining]
            )
            if have is not None:
                drop |= have.keys - keys
                if have.vip != spec.vip:
                    drop.add(SvcKey(have.vip))
                if have.slot != slot:
                    old_ports = sorted({key.port for key in have.keys})
                    scope = self._scope(have.network)
                    left = self._left(self._old_backends(have), spec, old_ports)
                    gone |= {(a, p, scope) for a, p in left}
                    freed.append(have.slot)
            svcs[spec.index] = _Service(
                spec.vip, slot, sig, keys, info if keys else None, spec.network, spec,
                backends if slot else frozenset(),
            )  # fmt: skip
        for index in removed:
            have = svcs.pop(index)
            drop |= have.keys | {SvcKey(have.vip)}
            before = self._old_backends(have)
            ports = sorted({key.port for key in have.keys})
            scope = self._scope(have.network)
            gone |= {(b.address, p, scope) for b in before for p in ([b.port] if b.port else ports)}
            freed.append(have.slot)
        drop = {k for k in drop if self.services.key_bytes(k) not in put}
        self._write_frontends(put, drop)
        self._orphans = set()
        self.tables.release(s for s in freed if s)
        self._stamp_it()
        if gone:
            self.purge_backends(gone)
        return len(builds)

    @staticmethod
    def _left(
        before: Collection[LbBackend], spec: ServiceSpec, old_ports: Sequence[int]
    ) -> set[tuple[IPAddress, int]]:
        """The (address, port)s of backends in ``before`` that left spec's table for good
        (draining ones stay)."""
        left = set(before) - set(spec.backends)
        ports = [port for port, _ in spec.frontends] or list(old_ports)
        return {
            (b.address, p)
            for b in left
            for p in ([b.port] if b.port else ports)
            if (b.address, p) not in spec.draining
        }

    def _write_frontends(self, put: dict[bytes, bytes], drop: Collection[SvcKey]) -> None:
        raw = self.services.raw
        if len(put) > 8:
            raw.update_batch(b"".join(put), b"".join(put.values()), len(put))
        else:
            for k, v in put.items():
                raw.update(k, v)
        for key in drop:
            raw.delete(self.services.key_bytes(key))

    def _scope(self, network: int) -> int:
        """The conntrack key scope of network's containers: its index on an overlay (two
        may share a subnet), 0 on a bridge network."""
        if self.networks is None or not network:
            return 0
        return network if self.networks[network].vni else 0

    def purge_backends(self, backends: Collection[tuple[IPAddress, int, int]]) -> int:
        """Delete the conntrack entries of connections through a service or a published port
        to these (address, port, scope) backends, both directions: the client's entry holds
        the backend, the backend's reply entry is keyed by it. A key a container's packet
        makes carries that container's scope (its network's, the backend's), so another
        overlay network's backend with the same address and port keeps its connections; a
        key from the uplink (scope 0) leads to a published port's one endpoint. Returns how
        many went."""
        exact = set(backends)
        loose = {(a, p) for a, p, _ in exact}

        def doomed_entry(k: NatKey, e: NatEntry) -> bool:
            if k.ingress:
                return (e.address, e.port) in loose
            return (e.address, e.port, k.scope) in exact or (k.saddr, k.sport, k.scope) in exact

        doomed = [
            k
            for k, e in self.nat.items()
            if e.flags & (_NAT_F_DNAT | _NAT_F_SVC) and doomed_entry(k, e)
        ]
        for k in doomed:
            self.nat.discard(k)
        if doomed:
            log.info("purged %d conntrack entries of removed backends", len(doomed))
        return len(doomed)
