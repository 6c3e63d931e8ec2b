"""Root tests for pydp.net: bridges, veths into sandboxes, addresses, routes, ownership.

Every test acts inside a host namespace of a `Topology` (never the root
namespace); sandbox namespaces are named with the topology's prefix and
deleted by the ``sandboxes`` fixture even when the test fails.
"""

from __future__ import annotations

import importlib
import json
import shutil
import threading
import time
from collections.abc import Callable, Iterator

import netaddr
import pytest

from pydp.errors import ConfigError, ConflictError, DatapathError, NotFoundError
from pydp.net import NetHost, netns_create, netns_delete, netns_exists, netns_list, veth_name
from pydp.testing import Host, Topology

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("netns_ready")]

PING = ["ping"] if shutil.which("ping") else ["busybox", "ping"]
NET_OWNER = "pydp:net/3f2a9c"
GW = netaddr.IPNetwork("10.7.0.1/24")
MAC = netaddr.EUI("02:42:0a:07:00:02")


def _isort_key(name: str) -> tuple[int, str]:
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.fixture
def host(topology: Topology) -> Host:
    """Function scope, depends on ``topology``: one host namespace."""
    return topology.add_host("h")


@pytest.fixture
def sandboxes(topology: Topology) -> Iterator[Callable[[str], str]]:
    """Function scope, depends on ``topology``: makes named sandbox namespaces
    ``<topology prefix>-sb-<name>`` and deletes them all afterwards."""
    made: list[str] = []

    def make(name: str) -> str:
        netns = f"{topology.prefix}-sb-{name}"
        made.append(netns)
        netns_create(netns)
        return netns

    try:
        yield make
    finally:
        for netns in made:
            netns_delete(netns)


def _link_json(host: Host, name: str) -> object:
    return json.loads(host.ip("-j", "-d", "link", "show", "dev", name).stdout)


def test_net_all_sorted_and_complete() -> None:
    """pydp.net and its modules export a ruff-sorted __all__ of real attributes."""
    for name in ("pydp.net", "pydp.net.host", "pydp.net.links", "pydp.net.netns"):
        mod = importlib.import_module(name)
        assert list(mod.__all__) == sorted(mod.__all__, key=_isort_key), name
        assert all(hasattr(mod, attr) for attr in mod.__all__), name


def test_veth_name_short_and_stable() -> None:
    """veth_name keeps a hex id's prefix, hashes other ids, and fits in 15 characters."""
    assert veth_name("3f2a9c0b1d2e3f4a5b6c") == "pd3f2a9c0b1d2"
    assert veth_name("web.1") == veth_name("web.1") != veth_name("web.2")
    assert len(veth_name("web.1")) == 13 and veth_name("web.1").startswith("pd")
    with pytest.raises(ConfigError, match=r"^endpoint id: expected a non-empty string, got ''$"):
        veth_name("")


def test_ensure_bridge_creates_then_changes_nothing(host: Host) -> None:
    """ensure_bridge makes an owned, up bridge with the mtu; a second call changes nothing."""
    with host.enter(), NetHost() as net:
        first = net.ensure_bridge("brnet", NET_OWNER, mtu=1400)
        before = net.links()
        second = net.ensure_bridge("brnet", NET_OWNER, mtu=1400)
        assert net.links() == before
    assert first == second
    assert (first.kind, first.alias, first.owner, first.up, first.mtu) == (
        "bridge",
        NET_OWNER,
        NET_OWNER,
        True,
        1400,
    )
    info = _link_json(host, "brnet")[0]  # type: ignore[index]
    assert info["linkinfo"]["info_data"]["mcast_snooping"] == 0


def test_ensure_bridge_brings_up_and_sets_mtu(host: Host) -> None:
    """A bridge of ours that is down or has another mtu is fixed in place."""
    with host.enter(), NetHost() as net:
        made = net.ensure_bridge("brnet", NET_OWNER)
        host.ip("link", "set", "brnet", "down", "mtu", "1300")
        fixed = net.ensure_bridge("brnet", NET_OWNER, mtu=1450)
    assert (fixed.ifindex, fixed.up, fixed.mtu) == (made.ifindex, True, 1450)


def test_foreign_bridge_refused_and_left_alone(host: Host) -> None:
    """A bridge made by hand is refused by ensure_bridge and delete_link, and not touched."""
    host.ip("link", "add", "brx", "type", "bridge")
    before = _link_json(host, "brx")
    with host.enter(), NetHost() as net:
        index = net.require("brx", "test").ifindex
        message = (
            f"link brx (ifindex {index}) exists and is not pydp's (alias none): "
            "choose another bridge name, or remove that link"
        )
        with pytest.raises(ConflictError) as exc:
            net.ensure_bridge("brx", NET_OWNER, mtu=1400)
        assert str(exc.value) == message
        with pytest.raises(ConflictError, match=r"exists and is not pydp's \(alias none\)"):
            net.delete_link("brx")
        with pytest.raises(ConflictError, match=r"exists and is not pydp's \(alias none\)"):
            net.set_master("brx", None)
    assert _link_json(host, "brx") == before


def test_bridge_of_another_network_refused(host: Host) -> None:
    """A bridge owned by another network is refused, naming its owner."""
    with host.enter(), NetHost() as net:
        other = net.ensure_bridge("brnet", "pydp:net/other")
        with pytest.raises(ConflictError) as exc:
            net.ensure_bridge("brnet", NET_OWNER)
        with pytest.raises(ConflictError):
            net.delete_link("brnet", owner_prefix=NET_OWNER)
        assert net.link("brnet") == other
    assert str(exc.value) == (
        f"link brnet (ifindex {other.ifindex}) belongs to pydp:net/other, not {NET_OWNER}: "
        "choose another bridge name"
    )


def test_owner_must_be_pydp_alias(host: Host) -> None:
    """An owner that is not a pydp: alias is a ConfigError, before anything changes."""
    with host.enter(), NetHost() as net:
        with pytest.raises(ConfigError, match=r"^owner: expected pydp:<kind>/<id>, got 'net/1'$"):
            net.ensure_bridge("brnet", "net/1")
        assert net.link("brnet") is None


def test_delete_link_absent_succeeds_and_deletes_ours(host: Host) -> None:
    """delete_link of an absent link succeeds; of ours removes it, twice is fine."""
    with host.enter(), NetHost() as net:
        net.delete_link("nosuchlink")
        net.ensure_bridge("brnet", NET_OWNER)
        net.delete_link("brnet")
        net.delete_link("brnet")
        assert net.link("brnet") is None


def test_ensure_address_idempotent_leaves_others(host: Host) -> None:
    """ensure_address adds once and keeps other addresses; remove_address is idempotent."""
    other = netaddr.IPNetwork("10.8.0.1/16")
    with host.enter(), NetHost() as net:
        net.ensure_bridge("brnet", NET_OWNER)
        host.ip("addr", "add", str(other), "dev", "brnet")
        net.ensure_address("brnet", GW)
        net.ensure_address("brnet", GW)
        v4 = [a for a in net.addresses("brnet") if a.version == 4]
        assert [(a.ip, a.prefixlen) for a in v4] == [(GW.ip, 24), (other.ip, 16)]
        net.remove_address("brnet", GW)
        net.remove_address("brnet", GW)
        net.remove_address("nosuchlink", GW)
        assert [a for a in net.addresses("brnet") if a.version == 4] == [other]
    out = host.ip("-4", "-j", "addr", "show", "dev", "brnet").stdout
    assert [a["local"] for a in json.loads(out)[0]["addr_info"]] == ["10.8.0.1"]


def test_netns_create_delete_idempotent(topology: Topology) -> None:
    """netns_create and netns_delete succeed when repeated; list and exists follow them."""
    name = f"{topology.prefix}-sb-idem"
    try:
        netns_create(name)
        netns_create(name)
        assert netns_exists(name)
        assert netns_list(f"{topology.prefix}-sb-") == [name]
        with NetHost(name) as sandbox:
            assert [link.name for link in sandbox.links()] == ["lo"]
    finally:
        netns_delete(name)
        netns_delete(name)
    assert not netns_exists(name)
    assert netns_list(f"{topology.prefix}-sb-") == []
    with pytest.raises(NotFoundError, match=f"^open netns {name}: No such file or directory$"):
        NetHost(name)


def _plug(net: NetHost, sandbox: NetHost, ep: str) -> None:
    """The reconciler's steps for one endpoint on brnet, through an open sandbox handle."""
    net.ensure_veth(
        veth_name(ep), f"pydp:ep/{ep}", "eth0", sandbox, peer_mac=MAC, mtu=1400, master="brnet"
    )
    sandbox.set_up("lo")
    sandbox.ensure_address("eth0", netaddr.IPNetwork("10.7.0.2/24"))
    sandbox.ensure_default_route(GW.ip, "eth0")


def test_ensure_veth_into_sandbox_pings_gateway(
    host: Host, sandboxes: Callable[[str], str]
) -> None:
    """A veth into a sandbox gets eth0, MAC, mtu, address, default route; ping works;
    doing it all again changes nothing on either side."""
    sb = sandboxes("a")
    with host.enter(), NetHost() as net, NetHost(sb) as sandbox:
        bridge = net.ensure_bridge("brnet", NET_OWNER)
        net.ensure_address("brnet", GW)
        _plug(net, sandbox, "a1")
        before = (net.links(), sandbox.links(), sandbox.routes())
        _plug(net, sandbox, "a1")
        assert (net.links(), sandbox.links(), sandbox.routes()) == before
        hostend = net.require(veth_name("a1"), "test")
        eth0 = sandbox.require("eth0", "test")
    assert (hostend.owner, hostend.master, hostend.up, hostend.mtu) == (
        "pydp:ep/a1",
        bridge.ifindex,
        True,
        1400,
    )
    assert (eth0.mac, eth0.mtu, eth0.up, eth0.owner) == (MAC, 1400, True, "pydp:ep/a1")
    assert (hostend.peer_ifindex, eth0.peer_ifindex) == (eth0.ifindex, hostend.ifindex)
    ping = host.run(["ip", "netns", "exec", sb, *PING, "-c1", "-W1", str(GW.ip)], check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr


def test_ensure_veth_by_name_adjusts_in_place(host: Host, sandboxes: Callable[[str], str]) -> None:
    """ensure_veth given a netns name fixes mtu, MAC, master and state, keeping ifindexes."""
    sb = sandboxes("b")
    name = veth_name("b1")
    with host.enter(), NetHost() as net:
        net.ensure_bridge("brnet", NET_OWNER)
        made = net.ensure_veth(name, "pydp:ep/b1", "eth0", sb)
        assert made.master is None
        host.ip("link", "set", name, "down", "mtu", "1300")
        host.run(["ip", "-n", sb, "link", "set", "eth0", "down", "address", "02:00:00:00:00:09"])
        fixed = net.ensure_veth(name, "pydp:ep/b1", "eth0", sb, MAC, 1450, "brnet")
        with NetHost(sb) as sandbox:
            eth0 = sandbox.require("eth0", "test")
    assert (fixed.ifindex, fixed.up, fixed.mtu, fixed.master) == (made.ifindex, True, 1450, 2)
    assert (eth0.ifindex, eth0.up, eth0.mtu, eth0.mac) == (made.peer_ifindex, True, 1450, MAC)


def test_ensure_veth_replaces_broken_pair(host: Host, sandboxes: Callable[[str], str]) -> None:
    """A host end of ours whose peer is no longer eth0 in the sandbox is replaced."""
    sb = sandboxes("c")
    name = veth_name("c1")
    with host.enter(), NetHost() as net:
        made = net.ensure_veth(name, "pydp:ep/c1", "eth0", sb)
        host.run(["ip", "-n", sb, "link", "set", "eth0", "name", "old0"])
        again = net.ensure_veth(name, "pydp:ep/c1", "eth0", sb)
        with NetHost(sb) as sandbox:
            assert sorted(link.name for link in sandbox.links()) == ["eth0", "lo"]
    assert again.ifindex != made.ifindex and again.owner == "pydp:ep/c1"


def test_ensure_veth_conflicts(host: Host, sandboxes: Callable[[str], str]) -> None:
    """A foreign host end, or an eth0 already in the sandbox, is a ConflictError."""
    sb = sandboxes("d")
    host.ip("link", "add", "pdforeign", "type", "veth", "peer", "name", "pdforeign1")
    with host.enter(), NetHost() as net:
        foreign = r"^link pdforeign \(ifindex \d+\) exists and is not pydp's \(alias none\)"
        with pytest.raises(ConflictError, match=foreign):
            net.ensure_veth("pdforeign", "pydp:ep/d1", "eth0", sb)
        net.ensure_veth(veth_name("d1"), "pydp:ep/d1", "eth0", sb)
        with pytest.raises(ConflictError) as exc:
            net.ensure_veth(veth_name("d2"), "pydp:ep/d2", "eth0", sb)
        assert net.link(veth_name("d2")) is None
        with pytest.raises(NotFoundError, match=r"^create veth pdx: no link brnope$"):
            net.ensure_veth("pdx", "pydp:ep/x", "eth0", sb, master="brnope")
    assert str(exc.value) == (
        f"create veth {veth_name('d2')} with peer eth0 in netns {sb}: File exists"
    )


def test_owned_links_lists_exactly_ours(host: Host, sandboxes: Callable[[str], str]) -> None:
    """owned_links lists the links pydp made and nothing else; a prefix narrows it."""
    sb = sandboxes("e")
    host.ip("link", "add", "brx", "type", "bridge")
    host.ip("link", "add", "bry", "type", "bridge")
    host.ip("link", "set", "bry", "alias", "someone-else")
    with host.enter(), NetHost() as net:
        net.ensure_bridge("brnet", NET_OWNER)
        net.ensure_veth(veth_name("e1"), "pydp:ep/e1", "eth0", sb, master="brnet")
        owned = {link.name: link.owner for link in net.owned_links()}
        endpoints = [link.name for link in net.owned_links("pydp:ep/")]
        master = net.require(veth_name("e1"), "test").master
        net.set_master(veth_name("e1"), None)
        freed = net.require(veth_name("e1"), "test").master
    assert owned == {"brnet": NET_OWNER, veth_name("e1"): "pydp:ep/e1"}
    assert endpoints == [veth_name("e1")]
    assert master is not None and freed is None


def test_ensure_default_route_replaces_another(host: Host, sandboxes: Callable[[str], str]) -> None:
    """ensure_default_route replaces a default route via another gateway, then keeps it."""
    sb = sandboxes("f")
    with host.enter(), NetHost() as net, NetHost(sb) as sandbox:
        net.ensure_veth(veth_name("f1"), "pydp:ep/f1", "eth0", sandbox)
        sandbox.ensure_address("eth0", netaddr.IPNetwork("10.7.0.2/24"))
        host.run(["ip", "-n", sb, "route", "add", "default", "via", "10.7.0.254"])
        sandbox.ensure_default_route(GW.ip, "eth0")
        routes = sandbox.routes()
        sandbox.ensure_default_route(GW.ip, "eth0")
        assert sandbox.routes() == routes
        eth0 = sandbox.require("eth0", "test").ifindex
        with pytest.raises(NotFoundError) as exc:
            sandbox.ensure_default_route(GW.ip, "nosuchlink")
    defaults = [r for r in routes if r.dst.prefixlen == 0]
    assert [(r.gateway, r.ifindex) for r in defaults] == [(GW.ip, eth0)]
    assert str(exc.value) == (
        f"set default route via {GW.ip} dev nosuchlink in netns {sb}: no link nosuchlink"
    )


def test_nethost_refuses_other_threads(host: Host) -> None:
    """A NetHost used from another thread refuses, instead of acting in that thread's netns."""
    errors: list[BaseException] = []
    with host.enter(), NetHost() as net:
        thread = threading.Thread(target=lambda: _catch(errors, net.links))
        thread.start()
        thread.join()
    assert [str(e) for e in errors] == ["list links: netlink socket used from another thread"]


def _catch(errors: list[BaseException], fn: Callable[[], object]) -> None:
    try:
        fn()
    except DatapathError as exc:
        errors.append(exc)


def test_ensure_veth_timing_50(
    host: Host, sandboxes: Callable[[str], str], capsys: pytest.CaptureFixture[str]
) -> None:
    """Prints the per-endpoint cost of netns_create, ensure_veth and a whole plug (no limit)."""
    count = 50
    t0 = time.perf_counter()
    names = [sandboxes(f"t{i}") for i in range(count)]
    t_netns = time.perf_counter() - t0
    with host.enter(), NetHost() as net:
        net.ensure_bridge("brnet", NET_OWNER)
        net.ensure_address("brnet", GW)
        t0 = time.perf_counter()
        for i, sb in enumerate(names[:25]):
            net.ensure_veth(veth_name(f"t{i}"), f"pydp:ep/t{i}", "eth0", sb, MAC, 1400, "brnet")
        t_by_name = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, sb in enumerate(names[25:], start=25):
            with NetHost(sb) as sandbox:
                _plug(net, sandbox, f"t{i}")
        t_plug = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i, sb in enumerate(names[25:], start=25):
            with NetHost(sb) as sandbox:
                _plug(net, sandbox, f"t{i}")
        t_again = time.perf_counter() - t0
        t0 = time.perf_counter()
        links = net.links()
        t_dump = time.perf_counter() - t0
    with capsys.disabled():
        print(
            f"\npydp.net per endpoint: netns_create {t_netns / count * 1e3:.2f} ms, "
            f"ensure_veth(netns name) {t_by_name / 25 * 1e3:.2f} ms, "
            f"open sandbox + veth + lo + address + route {t_plug / 25 * 1e3:.2f} ms, "
            f"same again (no change) {t_again / 25 * 1e3:.2f} ms; "
            f"links() of {len(links)} links {t_dump * 1e3:.2f} ms"
        )
