"""The bridge driver end to end, through the pydp CLI in a host namespace."""

from __future__ import annotations

import json

import pytest

from pydp.testing import Topology

from .conftest import PydpNode


def ip_of(node: PydpNode, sandbox: str, network: str) -> str:
    return str(node.json("sandbox", "inspect", sandbox)[0]["Networks"][network]["IPAddress"])


def in_sandbox(node: PydpNode, sandbox: str, *cmd: str, check: bool = True) -> int:
    return node("exec", sandbox, "--", *cmd, check=check).returncode


def metric(node: PydpNode, reason: str) -> int:
    rows = node.json("metrics", "--format", "json")
    return next((r["packets"] for r in rows if r["reason"] == reason), 0)


def test_bridge_default_network(pydp_node: PydpNode) -> None:
    """pydp run on the default network: pydp0 with 172.17.0.1/16, Docker's first addresses,
    a default route via the gateway, and container-to-container traffic redirected."""
    node = pydp_node
    node("run", "--name", "a", "-d", "--", "sleep", "60")
    node("run", "--name", "b", "-d", "--", "sleep", "60")
    assert ip_of(node, "a", "bridge") == "172.17.0.2"
    assert ip_of(node, "b", "bridge") == "172.17.0.3"
    assert "172.17.0.1/16" in node.host.run(["ip", "addr", "show", "pydp0"]).stdout
    route = node("exec", "a", "--", "ip", "route", "show", "default").stdout
    assert route.startswith("default via 172.17.0.1 dev eth0")
    before = metric(node, "REASON_REDIRECT")
    in_sandbox(node, "a", "ping", "-c", "2", "-W", "2", "172.17.0.3")
    assert metric(node, "REASON_REDIRECT") - before >= 4


def test_bridge_named_bridge(pydp_node: PydpNode) -> None:
    """-o com.docker.network.bridge.name=brnet names the bridge; its sandboxes talk."""
    node = pydp_node
    node("network", "create", "-d", "bridge", "-o", "com.docker.network.bridge.name=brnet", "brnet")
    link = json.loads(node.host.run(["ip", "-j", "-d", "link", "show", "brnet"]).stdout)[0]
    assert link["linkinfo"]["info_kind"] == "bridge" and link["ifalias"].startswith("pydp:net/")
    node("run", "--name", "a", "--network", "brnet", "-d", "--", "sleep", "60")
    node(
        "run",
        "--name",
        "b",
        "--network",
        "brnet",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        ip_of(node, "a", "brnet"),
    )


def test_bridge_underlay_without_nat(topology: Topology, pydp_node: PydpNode) -> None:
    """Docker's third case: a bridge on the underlay (-o parent), addresses from the
    --ip-range, DefaultGatewayIPv4 as the containers' gateway, reached from another host."""
    node = pydp_node
    node.host.connect_fabric("0.0.0.0/32", ifname="eth1")  # the underlay port, no address
    node.host.run(["ip", "addr", "flush", "dev", "eth1"])
    router = topology.add_host("router")
    router.connect_fabric("192.168.57.1/24")
    node(
        "network",
        "create",
        "-d",
        "bridge",
        "--subnet=192.168.57.0/24",
        "--ip-range=192.168.57.32/28",
        "--gateway=192.168.57.11",
        "--aux-address",
        "DefaultGatewayIPv4=192.168.57.1",
        "-o",
        "com.docker.network.bridge.name=brnet",
        "-o",
        "parent=eth1",
        "brnet",
    )
    node("run", "--name", "a", "--network", "brnet", "-d", "--", "sleep", "60")
    assert ip_of(node, "a", "brnet") == "192.168.57.32"
    route = node("exec", "a", "--", "ip", "route", "show", "default").stdout
    assert route.startswith("default via 192.168.57.1 dev eth0")
    router.run(["ping", "-c", "2", "-W", "2", "192.168.57.32"])
    in_sandbox(node, "a", "ping", "-c", "1", "-W", "2", "192.168.57.1")


def test_bridge_isolation_between_networks(pydp_node: PydpNode) -> None:
    """A sandbox cannot reach one on another network (counted as DROP_NET_ISOLATED) until
    it is connected to that network too; disconnected, it is isolated again."""
    node = pydp_node
    node("network", "create", "--subnet", "10.71.0.0/24", "n1")
    node("network", "create", "--subnet", "10.72.0.0/24", "n2")
    node("run", "--name", "a", "--network", "n1", "-d", "--", "sleep", "60")
    node("run", "--name", "b", "--network", "n2", "-d", "--", "sleep", "60")
    b_ip = ip_of(node, "b", "n2")
    before = metric(node, "DROP_NET_ISOLATED")
    assert in_sandbox(node, "a", "ping", "-c", "1", "-W", "1", b_ip, check=False) != 0
    assert metric(node, "DROP_NET_ISOLATED") > before

    node("network", "connect", "n2", "a")
    assert ip_of(node, "a", "n2") == "10.72.0.3"
    assert "eth1" in node("exec", "a", "--", "ip", "-o", "link").stdout
    in_sandbox(node, "a", "ping", "-c", "1", "-W", "2", b_ip)

    node("network", "disconnect", "n2", "a")
    assert "eth1" not in node("exec", "a", "--", "ip", "-o", "link").stdout
    assert in_sandbox(node, "a", "ping", "-c", "1", "-W", "1", b_ip, check=False) != 0


def test_reconcile_twice_changes_nothing(pydp_node: PydpNode) -> None:
    """A second reconcile of an unchanged store leaves links, addresses, routes, namespaces,
    pins, the store and the attached programs exactly as they were."""
    node = pydp_node
    node("network", "create", "--subnet", "10.73.0.0/24", "n1")
    node("run", "--name", "a", "--network", "n1", "-d", "--", "sleep", "60")
    first = node.snapshot()
    assert len(first["programs"]) == 1 and all(first["programs"].values())
    node("system", "reconcile")
    assert node.snapshot() == first


def test_teardown_leaves_nothing(pydp_node: PydpNode) -> None:
    """network rm, sandbox rm and system reset remove every link, namespace, pin and route."""
    node = pydp_node
    empty = node.snapshot()
    node("network", "create", "--subnet", "10.74.0.0/24", "n1")
    node("sandbox", "create", "s1")
    node("network", "connect", "n1", "s1")
    node("sandbox", "rm", "s1")
    node("network", "rm", "n1")
    after = node.snapshot()
    assert [x[0] for x in after["links"] if x not in empty["links"]] == ["pydp0"]
    assert after["netns"] == []
    assert all('"pydp0"' in r for r in after["routes"] if r not in empty["routes"])
    node("system", "reset")
    final = node.snapshot()
    assert final["links"] == empty["links"] and final["netns"] == [] and final["pins"] == []
    assert final["addrs"] == empty["addrs"] and final["routes"] == empty["routes"]
    assert not node.state_dir.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["network", "create", "--subnet", "10.0.0/33", "x"],
            'Error: --subnet: invalid CIDR "10.0.0/33"',
        ),
        (
            ["network", "create", "--subnet", "10.80.0.0/24", "--gateway", "10.81.0.1", "x"],
            "Error: --gateway: 10.81.0.1 is not a host address of the subnet 10.80.0.0/24",
        ),
        (
            ["network", "create", "--subnet", "10.80.0.0/24", "--ip-range", "10.81.0.0/28", "x"],
            "Error: --ip-range: 10.81.0.0/28 is outside the subnet 10.80.0.0/24",
        ),
        (
            ["network", "create", "--subnet", "10.80.0.0/24", "--aux-address", "g=10.81.0.1", "x"],
            "Error: --aux-address: g=10.81.0.1 is outside the subnet 10.80.0.0/24",
        ),
        (
            ["network", "create", "--subnet", "10.90.1.0/24", "y"],
            'Error: --subnet: 10.90.1.0/24 overlaps network "base" (10.90.0.0/16)',
        ),
        (["network", "create", "base"], "Error: network with name base already exists"),
        (
            ["network", "create", "-o", "com.docker.network.bridge.name=hostbr", "z"],
            "Error: -o com.docker.network.bridge.name: hostbr is a link pydp does not own;"
            " choose another name",
        ),
        (
            ["network", "create", "-o", "frob=1", "z"],
            "Error: -o frob: not an option of the bridge driver (known: com.docker.network.bridge"
            ".enable_ip_masquerade, com.docker.network.bridge.name, com.docker.network.driver.mtu,"
            " parent)",
        ),
        (
            ["network", "create", "-d", "nope", "z"],
            'Error: -d/--driver: unknown driver "nope" (known: bridge, host, null, overlay)',
        ),
        (["network", "rm", "ghost"], "Error: network ghost not found"),
        (["network", "rm", "base"], "Error: network base has active endpoints (s1)"),
        (["network", "connect", "base", "ghost"], "Error: sandbox ghost not found"),
        (
            ["network", "connect", "--ip", "10.90.0.2", "base", "s2"],
            "Error: --ip: 10.90.0.2 is already in use in network base",
        ),
        (
            ["network", "connect", "tiny", "s2"],
            "Error: network tiny: no free address left in 10.91.0.0/30 (the pool is exhausted)",
        ),
        (["sandbox", "create", "s1"], "Error: sandbox s1 already exists"),
        (["sandbox", "rm", "ghost"], "Error: sandbox ghost not found"),
        (["run", "--network", "ghost", "--", "true"], "Error: network ghost not found"),
        (
            ["run", "--network", "base", "--ip", "10.90.0.2", "--", "true"],
            "Error: --ip: 10.90.0.2 is already in use in network base",
        ),
    ],
)
def test_bad_input_changes_nothing(pydp_node: PydpNode, args: list[str], message: str) -> None:
    """Each bad input is one line naming the flag or object, exit 1, and the store and the
    kernel are exactly as they were."""
    node = pydp_node
    node.host.run(["ip", "link", "add", "hostbr", "type", "bridge"])
    node("network", "create", "--subnet", "10.90.0.0/16", "base")
    node("network", "create", "--subnet", "10.91.0.0/30", "tiny")
    node("sandbox", "create", "s1")
    node("sandbox", "create", "s2")
    node("network", "connect", "base", "s1")
    node("network", "connect", "tiny", "s1")
    before = node.snapshot()
    r = node(*args, check=False)
    assert (r.returncode, r.stderr) == (1, message + "\n")
    assert node.snapshot() == before


def test_crash_mid_change_is_repaired(pydp_node: PydpNode) -> None:
    """A command killed halfway through reconciling leaves state the next command repairs."""
    node = pydp_node
    node("network", "create", "--subnet", "10.75.0.0/24", "n1")
    r = node(
        "run",
        "--name",
        "a",
        "--network",
        "n1",
        "-d",
        "--",
        "sleep",
        "60",
        check=False,
        env={"PYDP_CRASH_AT": "reconcile:after-bridges"},
    )
    assert r.returncode in (-9, 137)
    assert "pd" not in node.host.run(["ip", "-o", "link", "show", "type", "veth"]).stdout
    node("network", "ls")  # any next command repairs
    veths = node.host.run(["ip", "-o", "link", "show", "type", "veth"]).stdout
    assert veths.count("pydp:ep/") == 1
    node(
        "run",
        "--name",
        "b",
        "--network",
        "n1",
        "--",
        "ping",
        "-c",
        "1",
        "-W",
        "2",
        ip_of(node, "a", "n1"),
    )


def test_bridge_mtu_option_and_ipv4_only(pydp_node: PydpNode) -> None:
    """-o com.docker.network.driver.mtu sets the bridge's and the endpoints' MTU; sandboxes
    and host-side veths of an IPv4 network carry no IPv6 address."""
    node = pydp_node
    node(
        "network",
        "create",
        "--subnet",
        "10.76.0.0/24",
        "-o",
        "com.docker.network.driver.mtu=1400",
        "-o",
        "com.docker.network.bridge.name=brmtu",
        "n1",
    )
    node("run", "--name", "a", "--network", "n1", "-d", "--", "sleep", "60")
    bridge = json.loads(node.host.run(["ip", "-j", "link", "show", "brmtu"]).stdout)[0]
    eth0 = json.loads(node("exec", "a", "--", "ip", "-j", "link", "show", "eth0").stdout)[0]
    assert bridge["mtu"] == 1400 and eth0["mtu"] == 1400
    assert "inet6" not in node("exec", "a", "--", "ip", "addr").stdout
    host_veths = node.host.run(["ip", "-o", "addr", "show", "master", "brmtu"]).stdout
    assert "inet6" not in host_veths


def test_network_inspect_ls_and_prune(pydp_node: PydpNode) -> None:
    """inspect shows Docker's fields; ls lists in table and JSON; prune removes only the
    unused user networks and their bridges."""
    node = pydp_node
    node(
        "network",
        "create",
        "--subnet",
        "10.77.0.0/24",
        "--ip-range",
        "10.77.0.128/25",
        "--gateway",
        "10.77.0.254",
        "--aux-address",
        "x=10.77.0.200",
        "-o",
        "com.docker.network.bridge.name=brused",
        "used",
    )
    node(
        "network",
        "create",
        "--subnet",
        "10.78.0.0/24",
        "-o",
        "com.docker.network.bridge.name=bridle",
        "idle",
    )
    node("run", "--name", "a", "--network", "used", "-d", "--", "sleep", "60")
    [net] = node.json("network", "inspect", "used")
    assert net["IPAM"]["Config"] == [
        {
            "Subnet": "10.77.0.0/24",
            "IPRange": "10.77.0.128/25",
            "Gateway": "10.77.0.254",
            "AuxiliaryAddresses": {"x": "10.77.0.200"},
        }
    ]
    [ep] = net["Containers"].values()
    assert (ep["Name"], ep["IPv4Address"], ep["Interface"]) == ("a", "10.77.0.128/24", "eth0")
    rows = node.json("network", "ls", "--format", "json")
    assert sorted(r["name"] for r in rows) == ["bridge", "host", "idle", "none", "used"]
    table = node("network", "ls").stdout.splitlines()
    assert table[0].split() == ["NETWORK", "ID", "NAME", "DRIVER", "SCOPE", "SUBNET"]
    assert node("network", "prune", "-f").stdout == "Deleted Networks:\nidle\n"
    assert node.host.run(["ip", "link", "show", "bridle"], check=False).returncode != 0
    assert node.host.run(["ip", "link", "show", "brused"]).returncode == 0
