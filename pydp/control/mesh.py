"""The routing mesh's addresses: on every overlay network with a published service, each
node holds one address of its own (Docker's ingress-endpoint in its ingress-sbox). The
node that receives a connection to a published port and tunnels it to a backend on another
node gives it this address as the source, so the backend's reply comes back to it through
the tunnel, as to any endpoint of that node.

A mesh address is stored as an endpoint of sandbox ``MESH_SANDBOX`` (a reserved name: no
sandbox holds it) with its node, so IPAM counts it and every other node learns it as one
of that node's endpoints. Each agent claims its own (`ensure`); they go with the last
published service of the network, or with the network."""

from __future__ import annotations

import time

from pydp.control._reads import endpoints, services, used_addresses, visible_networks
from pydp.control.model import MESH_SANDBOX, Endpoint, endpoint_key, mac_for, new_id
from pydp.store import Txn

__all__ = ["MESH_SANDBOX", "ensure", "is_mesh"]


def is_mesh(ep: Endpoint) -> bool:
    return ep.sandbox == MESH_SANDBOX


def ensure(t: Txn, node: str) -> tuple[list[Endpoint], list[Endpoint]]:
    """Give ``node`` an address on every overlay network that has a service with a
    published port, and take back the ones on networks that have none. Returns the
    endpoints (added, removed); writes nothing when both are empty."""
    nets = {n.id: n for n in visible_networks(t, node) if n.driver == "overlay"}
    want = {s.network_id for s in services(t) if s.publish and s.network_id in nets}
    have = {e.network_id: e for e in endpoints(t) if is_mesh(e) and e.node == node}
    added, removed = [], []
    for nid in sorted(want - set(have)):
        net = nets[nid]
        if net.pool is None:
            continue
        addr = net.pool.allocate(used_addresses(t, net), f"network {net.name}")
        ep = Endpoint(new_id(), nid, MESH_SANDBOX, "", addr, mac_for(addr), time.time(), node=node)
        t.put(endpoint_key(nid, ep.id), ep.to_json())
        added.append(ep)
    for nid in sorted(set(have) - want):
        t.delete(endpoint_key(nid, have[nid].id))
        removed.append(have[nid])
    return added, removed
