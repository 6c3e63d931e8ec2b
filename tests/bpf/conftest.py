"""Fixtures of the packet-table tests: the namespace their packets are routed in."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pydp.testing import Topology

# The uplink of the packet tables, in a namespace of their own: a veth with a fixed ifindex
# and MAC, the host's address, a default route via a next hop whose MAC is a permanent
# neighbour entry. bpf_fib_lookup from a program run by test_run inside that namespace
# resolves every outside address through it, so the tables see the whole routed frame.
UPLINK_IF, UPLINK_NAME = 7, "up0"
HOST, UPLINK_MAC = "192.0.2.1", "02:00:00:00:01:01"
NEXT_HOP, NEXT_HOP_MAC = "192.0.2.254", "02:00:00:00:01:02"


@pytest.fixture(scope="session")
def routed_netns() -> Iterator[str]:
    """Session scope, needs root: the name of a namespace with the packet tables' uplink
    (UPLINK_IF, HOST/24, default route via NEXT_HOP); test_run there to route."""
    with Topology("tables") as topo:
        host = topo.add_host("uplink")
        host.ip_batch(
            [
                f"link add {UPLINK_NAME} index {UPLINK_IF} address {UPLINK_MAC} type veth "
                "peer name nh0 index 8",
                f"link set {UPLINK_NAME} up",
                "link set nh0 up",
                f"addr add {HOST}/24 dev {UPLINK_NAME}",
                f"route add default via {NEXT_HOP} dev {UPLINK_NAME}",
                f"neigh replace {NEXT_HOP} lladdr {NEXT_HOP_MAC} dev {UPLINK_NAME} nud permanent",
            ]
        )
        yield host.netns
