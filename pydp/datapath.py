"""The kernel half of one pydp host: its programs, pinned maps and attachments.

This is the one place where addresses and interfaces become map entries and
attached programs; callers work with netaddr objects and ifindexes. Call it
from inside the host's network namespace: attachments are made by ifindex.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

from netaddr import EUI, IPAddress

from pydp.loader import (
    Attachment,
    SharedObject,
    attach_tc,
    bpffs_root,
    detach_tc,
    prog_tag,
    remove_root,
    tc_attached,
    tcx_prog_ids,
)
from pydp.maps import (
    CONSTANTS,
    ENDPOINT_MAP,
    IFACE_MAP,
    METRICS_MAP,
    Counter,
    Endpoint,
    EndpointMap,
    Iface,
    IfaceMap,
    MetricsMap,
)
from pydp.maps.endpoint import EndpointKey, Scoped, address_of

__all__ = ["ENDPOINT_OBJECT", "Datapath"]

log = logging.getLogger(__name__)

ENDPOINT_OBJECT = "endpoint.bpf.o"
IFACES_MAX = CONSTANTS["PYDP_IFACES_MAX"]  # the ifindexes pydp_ifaces can index
ENDPOINT_F_LB_BACKEND = CONSTANTS["ENDPOINT_F_LB_BACKEND"]
ENDPOINT_F_REMOTE = CONSTANTS["ENDPOINT_F_REMOTE"]
ENDPOINT_F_MESH = CONSTANTS["ENDPOINT_F_MESH"]
IFACE_F_LB_BACKEND = CONSTANTS["IFACE_F_LB_BACKEND"]
IFACE_F_SCOPED = CONSTANTS["IFACE_F_SCOPED"]


def _ifindex(endpoint_info: bytes) -> int:
    """The ifindex of a packed struct endpoint_info (its first field)."""
    return int.from_bytes(endpoint_info[:4], "little")


class Datapath:
    """Loads the endpoint program (maps pinned under ``root``) and plugs endpoints in.

    Loading reuses maps already pinned under ``root``, so a restart keeps every
    entry; attaching replaces the running program atomically. The program itself is
    loaded once per root and build (`SharedObject`): every container's veth runs the
    same one.
    """

    def __init__(self, root: Path | None = None, redirect_peer: bool = True) -> None:
        self.root = root or bpffs_root()
        self._obj = SharedObject(
            ENDPOINT_OBJECT,
            ("from_container",),
            self.root,
            {"CFG_REDIRECT_PEER": int(redirect_peer)},
        )
        self.from_container = self._obj.program("from_container")
        self._tag = self.from_container.tag
        self._ours: dict[int, bool] = {}  # program id -> runs the same code as ours
        self.endpoints = EndpointMap(self._obj.map(ENDPOINT_MAP))
        self.ifaces = IfaceMap(self._obj.map(IFACE_MAP))
        self.metrics = MetricsMap(self._obj.map(METRICS_MAP))

    def plug(self, address: IPAddress, host_ifindex: int, mac: EUI, network: int = 0) -> Attachment:
        """Deliver ``address`` into the container behind ``host_ifindex``, and run
        from_container on that veth's ingress; endpoints of different ``network``
        indexes cannot reach each other."""
        att = attach_tc(self.from_container, host_ifindex, "ingress", root=self.root)
        if host_ifindex < IFACES_MAX:
            self.ifaces[host_ifindex] = Iface(address, network)
        self.endpoints[address] = Endpoint(host_ifindex, mac, network)
        log.info("plugged endpoint %s (ifindex %d, %s)", address, host_ifindex, mac)
        return att

    def ensure_attached(self, host_ifindex: int) -> bool:
        """Run from_container on the veth's ingress unless the same code runs there already
        (compared by the kernel's tag), so reconciling twice changes nothing. True if it
        attached."""
        ids = tcx_prog_ids(host_ifindex, "ingress")
        if ids is None:  # no tcx: ask for pydp's clsact filter
            att = tc_attached(host_ifindex, "ingress", root=self.root)
            ids = [] if att is None else [att.prog_id]
        if any(self._runs_our_code(i) for i in ids):
            return False
        attach_tc(self.from_container, host_ifindex, "ingress", root=self.root)
        return True

    def _runs_our_code(self, prog_id: int) -> bool:
        if prog_id not in self._ours:
            self._ours[prog_id] = prog_tag(prog_id) == self._tag
        return self._ours[prog_id]

    def sync_endpoints(self, desired: Mapping[EndpointKey, Endpoint]) -> list[EndpointKey]:
        """Make the endpoint map hold exactly ``desired``, and pydp_ifaces its interfaces:
        write what differs in one batch, delete what is not desired, and return the
        keys removed. An overlay network's endpoints are keyed ``Scoped`` (their interface
        marked IFACE_F_SCOPED: what they reach is looked up in their network's scope).
        pydp_ifaces is written first, so a crash between the two leaves the endpoint map
        showing the difference the next call repairs."""
        em = self.endpoints
        current = dict(em.raw.lookup_all())  # compared as bytes: no decoding
        want = {em.key_bytes(k): em.value_bytes(v) for k, v in desired.items()}
        changed = {k: v for k, v in want.items() if current.get(k) != v}
        stale = [k for k in current if k not in want]
        left = [k for k in stale + list(changed) if k in current]  # gone, or moved
        ifaces = {_ifindex(current[k]): IfaceMap.EMPTY for k in left}
        by_key = dict(zip(want, desired.items(), strict=True))
        for k in changed:
            key, ep = by_key[k]
            flags = IFACE_F_LB_BACKEND if ep.flags & ENDPOINT_F_LB_BACKEND else 0
            if isinstance(key, Scoped):
                flags |= IFACE_F_SCOPED
            if ep.ifindex:  # remote and mesh endpoints have no interface here
                ifaces[ep.ifindex] = Iface(address_of(key), ep.network, flags)
        self.ifaces.update_batch({i: e for i, e in ifaces.items() if i < IFACES_MAX})
        if changed:
            em.raw.update_batch(b"".join(changed), b"".join(changed.values()), len(changed))
        if stale:
            em.raw.delete_batch(b"".join(stale), len(stale))
        return [em.decode_key(em.key_layout.unpack(k)) for k in stale]

    def unplug(self, address: IPAddress, host_ifindex: int) -> None:
        """Undo ``plug``; an endpoint already gone is fine."""
        self.endpoints.discard(address)
        if host_ifindex < IFACES_MAX:
            self.ifaces.discard(host_ifindex)
        detach_tc(host_ifindex, "ingress", root=self.root)
        log.info("unplugged endpoint %s (ifindex %d)", address, host_ifindex)

    def counters(self) -> dict[str, Counter]:
        """Reasons counted so far, by name, summed over CPUs."""
        return dict(self.metrics.nonzero())

    def close(self) -> None:
        """Let go of the object; pinned maps and attached programs stay in the kernel."""
        self._obj.close()

    def destroy(self) -> None:
        """Close and remove every pin under the root: maps go, pinned links detach."""
        self.close()
        remove_root(self.root)

    def __enter__(self) -> Datapath:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
