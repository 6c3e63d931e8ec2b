"""``pydp agent``: one host's long-running loop in a cluster that shares a store.

It registers its node (name, underlay address) under a lease the store ends if the agent
stops renewing it (etcd: TTL 10 s), reconciles, then watches the whole store and
reconciles again after every change -- another node's endpoints, a node's lease ending
(its endpoints leave this host's maps and every backend set), networks, services. Pinned
maps and attached programs are adopted at start, and the lease outlives a restart, so
restarting the agent does not interrupt traffic.
"""

from __future__ import annotations

import logging
import threading
import time

from netaddr import IPAddress

from pydp.agent.host import PydpHost
from pydp.agent.uplink import find_uplink
from pydp.errors import NotFoundError
from pydp.net import NetHost
from pydp.store import CompactedError
from pydp.store.etcd import Leases

__all__ = ["NODE_TTL", "Agent"]

log = logging.getLogger(__name__)

NODE_TTL = 10  # seconds a node's key outlives its agent's last renewal
QUIET = 0.02  # seconds without a change that end a burst of changes: then reconcile


class Agent:
    """The loop of one node; ``stop`` ends it (the CLI sets it on SIGTERM and SIGINT)."""

    def __init__(
        self, host: PydpHost, address: IPAddress | None = None, ttl: int = NODE_TTL
    ) -> None:
        self.host = host
        self.address = address
        self.ttl = ttl
        self.stop = threading.Event()
        store = host.store
        self.leases: Leases | None = store if isinstance(store, Leases) else None
        self.lease: int | None = None

    def _address(self) -> IPAddress | None:
        """--advertise-addr, else the uplink's address: where other nodes tunnel to."""
        if self.address is not None:
            return self.address
        try:
            with NetHost() as net:
                return IPAddress(find_uplink(net, self.host.reconciler.uplink).address.ip)
        except NotFoundError:
            return None

    def register(self) -> None:
        """(Re)register this node, under a fresh lease where the store has leases."""
        if self.leases is not None:
            self.lease = self.leases.lease_grant(self.ttl)
        node = self.host.controller.register_node(address=self._address(), lease=self.lease)
        log.info("registered node %s at %s (lease %s)", node.name, node.address, self.lease)

    def _apply(self) -> None:
        """Claim (or give back) this node's routing-mesh addresses, then reconcile."""
        added, removed = self.host.controller.ensure_mesh()
        for ep in added:
            log.info("mesh address %s on network %s", ep.address, ep.network_id[:12])
        for ep in removed:
            log.info("mesh address %s released", ep.address)
        self.host.apply()

    def _renew(self) -> None:
        if self.leases is None or self.lease is None:
            return
        try:
            self.leases.lease_keepalive(self.lease)
        except NotFoundError:  # it ended (the agent was stalled past the TTL): start over
            log.warning("lease %d ended: registering again", self.lease)
            self.register()

    def run(self) -> None:
        """Register, reconcile, then watch and reconcile until ``stop`` is set. The lease is
        not revoked on the way out: an agent restarted within the TTL registers again
        before the other nodes notice (its maps and programs stay pinned and attached, so
        traffic never stops); one that stays down is dropped when the lease ends."""
        self.register()
        self._apply()
        revision = self.host.store.revision()
        period = max(self.ttl / 3, 0.5)  # renewals: three per TTL
        while not self.stop.is_set():
            deadline = time.monotonic() + period
            try:
                revision, changed = self._changes(revision, period, deadline)
            except CompactedError:
                revision, changed = self.host.store.revision(), True
            self._renew()
            if changed and not self.stop.is_set():
                self._apply()

    def _changes(self, revision: int, period: float, deadline: float) -> tuple[int, bool]:
        """Wait up to ``period`` for a change after ``revision``; after the first, take the
        rest of its burst (until QUIET s pass without one, or ``deadline``: the lease
        wants renewing). Returns the last revision seen and whether anything changed."""
        store = self.host.store
        changed = False
        for event in store.watch("/", since=revision, timeout=period, stop=self.stop):
            revision, changed = max(revision, event.revision), True
            break
        while changed and time.monotonic() < deadline and not self.stop.is_set():
            more = False
            for event in store.watch("/", since=revision, timeout=QUIET, stop=self.stop):
                revision, more = max(revision, event.revision), True
                if time.monotonic() >= deadline:
                    break
            if not more:
                break
        return revision, changed
