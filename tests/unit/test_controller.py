"""The control layer over a real SQLite store, without the kernel."""

from __future__ import annotations

from pathlib import Path

import pytest
from netaddr import EUI, IPAddress, IPNetwork

from pydp.control.controller import Controller
from pydp.control.model import Network
from pydp.errors import ConfigError, ConflictError, NotFoundError
from pydp.store import open_store


@pytest.fixture
def ctl(tmp_path: Path) -> Controller:
    """Function scope: a controller over a fresh store in tmp_path."""
    return Controller(open_store(tmp_path / "state"), netns_prefix="pdu-")


def test_defaults_are_dockers_networks(ctl: Controller) -> None:
    """bridge (172.17.0.0/16), host and none exist from the first use."""
    nets = {n.name: n for n in ctl.networks()}
    assert sorted(nets) == ["bridge", "host", "none"]
    assert nets["bridge"].pool is not None and nets["bridge"].pool.subnet == IPNetwork(
        "172.17.0.0/16"
    )
    assert (nets["host"].driver, nets["none"].driver) == ("host", "null")
    assert len({n.index for n in nets.values()}) == 3


def test_create_network_takes_next_default_pool(ctl: Controller) -> None:
    """Without --subnet a network gets the next free Docker pool."""
    net = ctl.create_network("n1")
    assert net.pool is not None and net.pool.subnet == IPNetwork("172.18.0.0/16")
    assert ctl.network("n1") == net and ctl.network(net.id[:12]) == net


def test_connect_allocates_in_order_with_docker_macs(ctl: Controller) -> None:
    """Endpoints get the next free address, eth0/eth1 in order, and 02:42 + address MACs;
    a disconnected endpoint's address returns to the pool."""
    ctl.create_network("n1", subnet="10.7.0.0/24")
    ctl.create_network("n2", subnet="10.8.0.0/24")
    a, b = ctl.create_sandbox("a"), ctl.create_sandbox("b")
    assert a.netns == "pdu-a"
    e1 = ctl.connect("n1", "a")
    e2 = ctl.connect("n1", "b")
    e3 = ctl.connect("n2", "a")
    assert (e1.address, e2.address, e3.address) == (
        IPAddress("10.7.0.2"),
        IPAddress("10.7.0.3"),
        IPAddress("10.8.0.2"),
    )
    assert (e1.ifname, e3.ifname) == ("eth0", "eth1")
    assert e1.mac == EUI("02:42:0a:07:00:02")
    ctl.disconnect("n1", "a")
    assert ctl.connect("n1", "a", ip=None).address == IPAddress("10.7.0.2")
    assert b.name == "b"


def test_remove_network_refused_with_endpoints_and_for_predefined(ctl: Controller) -> None:
    """A network with endpoints, or a pre-defined one, is not removed."""
    ctl.create_network("n1", subnet="10.7.0.0/24")
    ctl.create_sandbox("a")
    ctl.connect("n1", "a")
    with pytest.raises(ConflictError, match=r"^network n1 has active endpoints \(a\)$"):
        ctl.remove_network("n1")
    with pytest.raises(ConflictError, match="pre-defined network and cannot be removed"):
        ctl.remove_network("bridge")
    ctl.remove_sandbox("a")
    assert ctl.endpoints("n1") == []
    assert ctl.remove_network("n1").name == "n1"
    with pytest.raises(NotFoundError, match=r"^network n1 not found$"):
        ctl.network("n1")


def test_prune_removes_unused_user_networks(ctl: Controller) -> None:
    """prune removes user networks without endpoints, nothing else."""
    ctl.create_network("used", subnet="10.7.0.0/24")
    ctl.create_network("idle", subnet="10.8.0.0/24")
    ctl.create_sandbox("a")
    ctl.connect("used", "a")
    assert [n.name for n in ctl.prune()] == ["idle"]
    assert sorted(n.name for n in ctl.networks()) == ["bridge", "host", "none", "used"]


def test_run_sandbox_is_all_or_nothing(ctl: Controller) -> None:
    """run_sandbox creates the sandbox and its endpoint together; a bad --ip leaves neither."""
    ctl.create_network("n1", subnet="10.7.0.0/24")
    with pytest.raises(ConfigError, match="outside the subnet"):
        ctl.run_sandbox("a", "n1", ip="10.9.0.5")
    assert ctl.sandboxes() == []
    sb, ep = ctl.run_sandbox("a", "n1", ip="10.7.0.50")
    assert (sb.name, ep.address) == ("a", IPAddress("10.7.0.50"))


def test_host_and_none_networks(ctl: Controller) -> None:
    """host sandboxes share the host's namespace and take no other network; none gives a
    namespace with loopback only and combines with nothing."""
    sb, ep = ctl.run_sandbox("h", "host")
    assert sb.netns is None and ep.address is None and ep.ifname == ""
    ctl.create_network("n1", subnet="10.7.0.0/24")
    with pytest.raises(ConflictError, match="host network and other networks cannot be combined"):
        ctl.connect("n1", "h")
    sb, ep = ctl.run_sandbox("z", "none")
    assert sb.netns == "pdu-z" and ep.address is None
    with pytest.raises(ConflictError, match="the none network cannot be combined"):
        ctl.connect("n1", "z")


def test_names_and_duplicates(ctl: Controller) -> None:
    """Bad names and duplicates are refused with one line naming them."""
    with pytest.raises(ConfigError, match=r'^network name "bad name"'):
        ctl.create_network("bad name")
    ctl.create_sandbox("a")
    with pytest.raises(ConflictError, match=r"^sandbox a already exists$"):
        ctl.create_sandbox("a")
    with pytest.raises(ConflictError, match=r"^-o com.docker.network.bridge.name: bridge pydp0"):
        ctl.create_network("x", options={"com.docker.network.bridge.name": "pydp0"})


def test_precheck_vetoes_before_storing(tmp_path: Path) -> None:
    """The kernel's precheck runs inside the transaction: a veto stores nothing."""

    def veto(net: Network) -> None:
        raise ConflictError(f"no {net.name}")

    ctl = Controller(open_store(tmp_path / "s"), precheck=veto)
    with pytest.raises(ConflictError, match="no bridge"):
        ctl.networks()
    assert ctl.store.list("/networks/") == []


def test_publish_ports_chosen_and_conflicts(ctl: Controller) -> None:
    """run_sandbox stores the published ports, picks free host ports from 49153 for
    CONTAINER_PORT-only mappings, and refuses a host port already published (storing
    nothing)."""
    from pydp.control.ports import parse_publish

    ctl.create_network("n1", subnet="10.7.0.0/24")
    _, ep = ctl.run_sandbox("a", "n1", ports=[*parse_publish("8080:80"), *parse_publish("53/udp")])
    assert [str(p) for p in ep.ports] == ["8080:80/tcp", "49153:53/udp"]
    assert ctl.endpoints("n1")[0].ports == ep.ports
    _, ep2 = ctl.run_sandbox("b", "n1", ports=parse_publish("80"))
    assert [str(p) for p in ep2.ports] == ["49153:80/tcp"]
    with pytest.raises(ConflictError, match="host port 8080/tcp is already published"):
        ctl.run_sandbox("c", "n1", ports=parse_publish("127.0.0.1:8080:81"))
    assert [s.name for s in ctl.sandboxes()] == ["a", "b"]
