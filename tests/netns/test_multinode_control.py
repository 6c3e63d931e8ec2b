"""Several nodes in one store, through the pydp CLI: ``node ls``, the SCOPE of networks,
sandboxes of other nodes, overlay networks and their VNIs, and every bad input refused in
one line with nothing changed (control only: no traffic, no tunnels here).

One pydp host (one namespace, one state dir) runs the CLI as node h1 (``--node h1``);
the other nodes' state is written to the same store from Python, as their agents would,
and holds nothing the reconciler of h1 acts on (registrations, sandboxes without
endpoints, global networks without endpoints)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from pydp.agent.host import netns_prefix
from pydp.control.controller import Controller
from pydp.store import SQLiteStore
from pydp.testing import Topology

from .conftest import PydpNode

VNI = "com.docker.network.driver.overlay.vxlanid_list"
MTU = "com.docker.network.driver.mtu"
NAME_FORM = "expected 1-64 characters of [a-zA-Z0-9_.-], starting with a letter or digit"


def as_node(world: PydpNode, node: str, *args: str, check: bool = True) -> list[str]:
    return world("--node", node, *args, check=check).stdout.splitlines()


def controller(world: PydpNode, node: str) -> Controller:
    """Node ``node``'s controller on world's store, as its agent has it."""
    store = SQLiteStore(world.state_dir / "state.db")
    return Controller(store, netns_prefix(world.state_dir), node=node)


@pytest.fixture(scope="module")
def world(
    topology_module: Topology, bpffs: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PydpNode]:
    """Module scope, depends on topology_module and bpffs: one pydp host acting as node h1
    (registered, 192.0.2.1) with n1 10.64.0.0/24 (sandbox a on it), overlays ov (chosen:
    VNI 4096, 10.0.0.0/24) and ov2 (10.65.0.0/24, VNI 5000); node h2 registered
    (192.0.2.2) with sandbox w2; node h3 unregistered with sandbox w3; `system reset` at
    the end."""
    tmp = tmp_path_factory.mktemp("mn")
    node = PydpNode(topology_module.add_host("mn"), tmp / "state", bpffs / tmp.name)
    try:

        def h1(*args: str) -> None:
            node("--node", "h1", *args)

        h1("network", "create", "--subnet", "10.64.0.0/24", "n1")
        h1("sandbox", "create", "a")
        h1("network", "connect", "n1", "a")
        h1("network", "create", "-d", "overlay", "ov")
        h1(
            "network",
            "create",
            "-d",
            "overlay",
            "--subnet",
            "10.65.0.0/24",
            "-o",
            f"{VNI}=5000",
            "ov2",
        )
        controller(node, "h1").register_node(address="192.0.2.1")
        h2 = controller(node, "h2")
        h2.register_node(address="192.0.2.2")
        h2.create_sandbox("w2")
        controller(node, "h3").create_sandbox("w3")
        h1("system", "reconcile")
        yield node
    finally:
        node("system", "reset", check=False)


def test_node_ls(world: PydpNode) -> None:
    """node ls lists every node the store knows: ready while registered, down when only
    its state is left; SELF marks the node the CLI acts for (--node, else $PYDP_NODE)."""
    assert as_node(world, "h1", "node", "ls") == [
        "NAME  ADDRESS    STATE  SELF",
        "h1    192.0.2.1  ready  *",
        "h2    192.0.2.2  ready",
        "h3               down",
    ]
    rows = json.loads(world("node", "ls", "--format", "json", env={"PYDP_NODE": "h2"}).stdout)
    assert rows == [
        {"name": "h1", "address": "192.0.2.1", "state": "ready", "self": False},
        {"name": "h2", "address": "192.0.2.2", "state": "ready", "self": True},
        {"name": "h3", "address": "", "state": "down", "self": False},
    ]
    assert as_node(world, "h1", "node", "ls", "-q") == ["h1", "h2", "h3"]


def test_network_ls_scope(world: PydpNode) -> None:
    """network ls has Docker's SCOPE column: the node's own networks local, overlays
    global; inspect shows the scope, the node of a local network and an overlay's VNI."""
    lines = as_node(world, "h1", "network", "ls")
    assert lines[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE", "SUBNET"]
    rows = {r[1]: r[2:] for r in (line.split() for line in lines[1:])}
    assert rows == {
        "bridge": ["bridge", "local", "172.17.0.0/16"],
        "host": ["host", "local"],
        "n1": ["bridge", "local", "10.64.0.0/24"],
        "none": ["null", "local"],
        "ov": ["overlay", "global", "10.0.0.0/24"],
        "ov2": ["overlay", "global", "10.65.0.0/24"],
    }
    listed = json.loads(world("--node", "h1", "network", "ls", "--format", "json").stdout)
    assert {r["name"]: r["scope"] for r in listed}["ov"] == "global"
    [ov, n1] = json.loads(world("--node", "h1", "network", "inspect", "ov", "n1").stdout)
    assert (ov["Driver"], ov["Scope"], ov["Node"], ov["Options"]) == (
        "overlay",
        "global",
        "",
        {VNI: "4096"},
    )
    assert (n1["Scope"], n1["Node"], n1["Containers"].popitem()[1]["Node"]) == (
        "local",
        "h1",
        "h1",
    )


def test_sandboxes_of_other_nodes(world: PydpNode) -> None:
    """sandbox ls lists the sandboxes of every node with their NODE; inspect names it."""
    lines = as_node(world, "h1", "sandbox", "ls")
    assert lines[0].split() == ["NAME", "ID", "NODE", "NETNS", "NETWORKS"]
    rows = {r[0]: r for r in (line.split() for line in lines[1:])}
    assert (rows["a"][2], rows["a"][4], rows["w2"][2], rows["w3"][2]) == ("h1", "n1", "h2", "h3")
    [w2] = json.loads(world("--node", "h1", "sandbox", "inspect", "w2").stdout)
    assert (w2["Node"], w2["Networks"]) == ("h2", {})


def test_overlay_create_and_rm_through_the_cli(world: PydpNode) -> None:
    """An overlay takes the next free VNI and /24; rm gives both back; -o mtu is kept."""
    before = world.snapshot()
    h1 = ["--node", "h1", "network"]
    world(*h1, "create", "-d", "overlay", "-o", f"{MTU}=1400", "ov3")
    [ov3] = json.loads(world(*h1, "inspect", "ov3").stdout)
    assert ov3["Options"] == {MTU: "1400", VNI: "4097"}
    assert ov3["IPAM"]["Config"][0]["Subnet"] == "10.0.1.0/24"
    assert world(*h1, "rm", "ov3").stdout == "ov3\n"
    assert world.snapshot()["store"] == before["store"]


BAD: list[tuple[str, list[str], dict[str, str], str]] = [
    (
        "vni-zero",
        ["network", "create", "-d", "overlay", "-o", f"{VNI}=0", "x"],
        {},
        f'-o {VNI}: expected one VNI from 1 to 16777215, got "0"',
    ),
    (
        "vni-too-big",
        ["network", "create", "-d", "overlay", "-o", f"{VNI}=16777216", "x"],
        {},
        f'-o {VNI}: expected one VNI from 1 to 16777215, got "16777216"',
    ),
    (
        "vni-list",
        ["network", "create", "-d", "overlay", "-o", f"{VNI}=4100,4101", "x"],
        {},
        f'-o {VNI}: expected one VNI from 1 to 16777215, got "4100,4101"',
    ),
    (
        "vni-taken",
        ["network", "create", "-d", "overlay", "-o", f"{VNI}=5000", "x"],
        {},
        f"-o {VNI}: VNI 5000 is used by network ov2",
    ),
    (
        "vni-taken-chosen",
        ["network", "create", "-d", "overlay", "-o", f"{VNI}=4096", "x"],
        {},
        f"-o {VNI}: VNI 4096 is used by network ov",
    ),
    (
        "overlay-ipv6",
        ["network", "create", "-d", "overlay", "--subnet", "fd00::/64", "x"],
        {},
        '--subnet: only IPv4 is supported, got "fd00::/64"',
    ),
    (
        "overlay-too-small",
        ["network", "create", "-d", "overlay", "--subnet", "10.66.0.0/30", "x"],
        {},
        "--subnet: an overlay network needs a /29 or larger (a gateway and containers on"
        ' several nodes), got "10.66.0.0/30"',
    ),
    (
        "overlay-overlaps-local",
        ["network", "create", "-d", "overlay", "--subnet", "10.64.0.0/25", "x"],
        {},
        '--subnet: 10.64.0.0/25 overlaps network "n1" (10.64.0.0/24) on node h1',
    ),
    (
        "overlay-ip-range-alone",
        ["network", "create", "-d", "overlay", "--ip-range", "10.0.9.0/25", "x"],
        {},
        "--ip-range: needs --subnet",
    ),
    (
        "overlay-mtu",
        ["network", "create", "-d", "overlay", "-o", f"{MTU}=9", "x"],
        {},
        f'-o {MTU}: expected an MTU from 68 to 65535, got "9"',
    ),
    (
        "overlay-bridge-option",
        ["network", "create", "-d", "overlay", "-o", "com.docker.network.bridge.name=b", "x"],
        {},
        "-o com.docker.network.bridge.name: not an option of the overlay driver (known:"
        f" {MTU}, {VNI})",
    ),
    (
        "overlay-name-local",
        ["network", "create", "-d", "overlay", "n1"],
        {},
        "network with name n1 already exists",
    ),
    (
        "local-name-global",
        ["network", "create", "ov"],
        {},
        "network with name ov already exists",
    ),
    (
        "driver-unknown",
        ["network", "create", "-d", "vxlan", "x"],
        {},
        '-d/--driver: unknown driver "vxlan" (known: bridge, host, null, overlay)',
    ),
    (
        "node-flag",
        ["--node", "a/b", "network", "ls"],
        {},
        f'--node: {NAME_FORM}, got "a/b"',
    ),
    (
        "node-env",
        ["network", "ls"],
        {"PYDP_NODE": "-x"},
        f'PYDP_NODE: {NAME_FORM}, got "-x"',
    ),
    (
        "exec-other-node",
        ["exec", "w2", "--", "true"],
        {},
        "sandbox w2 runs on node h2",
    ),
    (
        "run-name-other-node",
        ["run", "--name", "w2", "--network", "n1", "--", "true"],
        {},
        "sandbox w2 exists on node h2",
    ),
    (
        "run-mesh-name",
        ["run", "--name", "ingress-sbox", "--network", "n1", "--", "true"],
        {},
        "sandbox name ingress-sbox is reserved for the routing mesh",
    ),
    (
        "sandbox-create-mesh-name",
        ["sandbox", "create", "ingress-sbox"],
        {},
        "sandbox name ingress-sbox is reserved for the routing mesh",
    ),
    (
        "connect-local-network-other-node",
        ["network", "connect", "n1", "w3"],
        {},
        "network n1 is local to node h1; sandbox w3 runs on node h3",
    ),
]


@pytest.mark.parametrize(("args", "env", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_input_changes_nothing(
    world: PydpNode, args: list[str], env: dict[str, str], message: str
) -> None:
    """Each bad input is one 'Error:' line naming the flag or object, exit 1, and the store
    and the kernel are exactly as they were."""
    before = world.snapshot()
    argv = args if args[0] == "--node" or env else ["--node", "h1", *args]
    r = world(*argv, check=False, env=env)
    assert (r.returncode, r.stderr) == (1, f"Error: {message}\n")
    assert world.snapshot() == before
