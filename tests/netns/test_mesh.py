"""The routing mesh across three hosts: a service's published port answers on every node,
the node that receives a connection picks a backend on any node, tunnels it there and
sends the reply back itself; overlay containers leave from their own node, masqueraded; a
node's failure leaves its backends out."""

from __future__ import annotations

import os
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydp.testing import Host, Topology
from pydp.testing.cluster import Cluster, pydp_cluster, wait_for

CONNECTIONS = 24


@pytest.fixture
def cluster(topology: Topology, bpffs: Path, tmp_path: Path) -> Iterator[Cluster]:
    """Function scope: an etcd and three pydp hosts h1..h3 running agents."""
    with pydp_cluster(topology, bpffs, tmp_path) as c:
        yield c


def answers(client: Host, addr: str, port: int, n: int = CONNECTIONS) -> Counter[str]:
    """What n connections from client to addr:port get back (one line each; "failed")."""
    loop = (
        f"for i in $(seq {n}); do socat -T2 - TCP:{addr}:{port},connect-timeout=2 </dev/null"
        " || echo failed; done"
    )
    return Counter(client.run(["sh", "-c", loop], timeout=60).stdout.split())


def test_published_service_port_answers_on_every_node(cluster: Cluster, topology: Topology) -> None:
    """Backends on h2 and h3, none on h1: a client outside reaches the published port at
    each node's address, every connection answered, both backends sharing the load from
    every entry node (h1 tunnels them all; h2 and h3 their share to the other). The
    node's mesh address is the source the backends see. Each backend reaches the client
    host from its own node's address (masquerade, no gateway bridge); a container of h1
    reaches the port at its own host's address through the mesh too. h3's agent killed:
    within its lease's TTL + 1 s the service answers from h2 alone, through every node
    left."""
    cluster("h1", "network", "create", "-d", "overlay", "--subnet", "10.76.0.0/24", "ov")
    for node, name in (("h2", "w2"), ("h3", "w3")):
        cluster(node, "run", "--name", name, "--network", "ov", "-d", "--",
                "socat", "TCP-LISTEN:80,reuseaddr,fork",
                f"SYSTEM:echo {name} $SOCAT_PEERADDR")  # fmt: skip
    cluster("h1", "service", "create", "web", "--network", "ov", "--port", "80/tcp",
            "--publish", "8080:80/tcp", "--backend", "w2", "--backend", "w3")  # fmt: skip
    client = topology.add_host("ext")
    client.connect_fabric("10.97.0.50/24", ifname="eth0")

    def mesh_addresses() -> dict[str, str]:
        eps = cluster.json("h1", "network", "inspect", "ov")[0]["Containers"].values()
        return {
            e["Node"]: e["IPv4Address"].split("/")[0] for e in eps if e["Name"] == "ingress-sbox"
        }

    assert wait_for(lambda: set(mesh_addresses()) == {"h1", "h2", "h3"}, 15), mesh_addresses()
    meshes = mesh_addresses()
    for node in ("h1", "h2", "h3"):
        addr = cluster.address(node)
        assert wait_for(lambda a=addr: "failed" not in answers(client, a, 8080, 2), 20), node
        got = answers(client, addr, 8080)
        names = Counter({k: v for k, v in got.items() if k in ("w2", "w3")})
        assert sum(names.values()) == CONNECTIONS, (node, got)
        assert set(names) == {"w2", "w3"}, (node, got)
        # a backend on another node than the entry sees that node's mesh address
        seen = {k for k in got if k not in ("w2", "w3")}
        if node == "h1":
            assert seen == {meshes["h1"]}, (seen, meshes)
        else:
            assert meshes[node] in seen, (node, seen, meshes)

    # a container of h1 (default bridge network) to its own host's published port: the
    # backends are on other nodes, reached through the mesh and answered back to it
    cluster("h1", "run", "--name", "local", "-d", "--", "sleep", "300")
    loop = (
        f"for i in $(seq 12); do socat -T2 - TCP:{cluster.address('h1')}:8080,connect-timeout=2"
        " </dev/null || echo failed; done"
    )
    got = Counter(cluster("h1", "exec", "local", "--", "sh", "-c", loop).stdout.split())
    assert got["w2"] + got["w3"] == 12 and got[meshes["h1"]] == 12, got

    # egress: each overlay container leaves from its own node, masqueraded to its address
    client.popen(["socat", "TCP-LISTEN:9000,reuseaddr,fork", "SYSTEM:echo $SOCAT_PEERADDR"])
    assert wait_for(lambda: "9000" in client.run(["ss", "-Hltn"]).stdout, 5)
    for node, name in (("h2", "w2"), ("h3", "w3")):
        out = cluster(node, "exec", name, "--", "socat", "-T2", "-", "TCP:10.97.0.50:9000")
        assert out.stdout.strip() == cluster.address(node), (node, out.stdout)

    os.killpg(cluster.agents["h3"].pid, signal.SIGKILL)
    killed = time.monotonic()

    def only_w2(node: str) -> bool:
        got = answers(client, cluster.address(node), 8080, 6)
        return {k for k in got if k in ("w2", "w3", "failed")} == {"w2"}

    assert wait_for(lambda: only_w2("h1") and only_w2("h2"), 15)
    assert time.monotonic() - killed < 10 + 1 + 5  # TTL + 1 s, and the clients' own time
    for node in ("h1", "h2"):
        got = answers(client, cluster.address(node), 8080, 12)
        assert got["w2"] == 12 and "failed" not in got and "w3" not in got, (node, got)
