"""Several nodes on one etcd: registration under a lease, and VNIs, indexes and names
kept unique while nodes create networks at the same moment (etcd's transactions are
optimistic: a conflicting commit is run again)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest
from netaddr import IPAddress

from pydp.control.controller import Controller
from pydp.store import EtcdStore
from pydp.testing.etcd import EtcdServer


@pytest.fixture
def url(etcd_module: EtcdServer, request: pytest.FixtureRequest) -> str:
    """Function scope: a store URL on the module's etcd under a key prefix of this test."""
    return etcd_module.url(f"/{request.node.name.replace('[', '-').rstrip(']')}")


@pytest.fixture
def stores(url: str) -> Iterator[list[EtcdStore]]:
    """Function scope: two store connections to one etcd prefix, one per node."""
    with EtcdStore(url) as s1, EtcdStore(url) as s2:
        yield [s1, s2]


def test_node_registered_under_a_lease(stores: list[EtcdStore]) -> None:
    """A node registered with a lease is listed while the lease lives and gone once it
    ends, its sandboxes then showing it as a node without registration."""
    h1 = Controller(stores[0], node="h1")
    lease = stores[0].lease_grant(10)
    node = h1.register_node(address="192.0.2.1", lease=lease)
    h2 = Controller(stores[1], node="h2")
    assert h2.nodes() == [node] and node.address == IPAddress("192.0.2.1")
    h1.create_sandbox("a")
    stores[0].lease_revoke(lease)
    assert h2.nodes() == [] and h2.node_names() == ["h1", "h2"]


def test_nodes_creating_overlays_at_once(stores: list[EtcdStore]) -> None:
    """Two nodes creating overlay and local networks at once from two threads: every
    create succeeds (conflicting commits run again), VNIs from 4096 and global indexes
    are distinct, each node's local networks avoid the global indexes."""
    ctls = [Controller(s, node=f"h{i + 1}") for i, s in enumerate(stores)]
    for c in ctls:
        c.networks()
    errors: list[BaseException] = []

    def make(ctl: Controller) -> None:
        try:
            for i in range(5):
                ctl.create_network(f"{ctl.node}-ov{i}", "overlay")
                ctl.create_network(f"{ctl.node}-br{i}", subnet=f"10.{100 + i}.0.0/24")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=make, args=(c,)) for c in ctls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    nets = ctls[0].networks(all_nodes=True)
    overlays = [n for n in nets if n.driver == "overlay"]
    assert sorted(n.vni or 0 for n in overlays) == list(range(4096, 4106))
    global_indexes = {n.index for n in overlays}
    assert len(global_indexes) == 10
    for c in ctls:
        local = [n for n in nets if n.node == c.node]
        assert len(local) == 3 + 5 and not {n.index for n in local} & global_indexes
        assert len({n.index for n in local}) == 8
