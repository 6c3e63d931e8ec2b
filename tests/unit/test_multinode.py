"""Several nodes on one store: node identity and registration, network scope, the overlay
driver's VNIs and pools, sandboxes and services across nodes (two Controllers, h1 and
h2, on one SQLite store: the interface etcd's store implements too)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
from netaddr import IPAddress, IPNetwork

from pydp.control import nodes
from pydp.control.controller import Controller
from pydp.control.driver import VXLANID_LIST, driver_for, overlay_mtu
from pydp.control.model import (
    ENDPOINTS,
    MESH_SANDBOX,
    NETWORKS,
    SANDBOXES,
    VNIS,
    Endpoint,
    Network,
    Node,
    Sandbox,
)
from pydp.control.ports import parse_publish
from pydp.errors import ConfigError, ConflictError, NotFoundError, PydpError
from pydp.store import TXN_ATTEMPTS, Entry, SQLiteStore, Txn, TxnConflictError, open_store

VNI_OPT = "com.docker.network.driver.overlay.vxlanid_list"


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """Function scope: the state dir both nodes' stores open (one SQLite file)."""
    return tmp_path / "state"


@pytest.fixture
def h1(db: Path) -> Controller:
    """Function scope: the controller of node h1."""
    return Controller(open_store(db), netns_prefix="pdu1-", node="h1")


@pytest.fixture
def h2(db: Path, h1: Controller) -> Controller:
    """Function scope, after h1: the controller of node h2, its own store object on the
    same file."""
    return Controller(open_store(db), netns_prefix="pdu2-", node="h2")


def names(ctl: Controller) -> list[tuple[str, str]]:
    return [(n.name, n.scope) for n in ctl.networks()]


# node identity and registration --------------------------------------------------------
def test_node_name_from_flag_env_or_host(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The node is --node, else $PYDP_NODE, else the host name; each is checked and a bad
    one is refused naming where it came from."""
    monkeypatch.setattr(nodes, "_host", lambda: "box1")
    monkeypatch.delenv("PYDP_NODE", raising=False)
    assert nodes.node_name() == "box1"
    monkeypatch.setenv("PYDP_NODE", "envnode")
    assert nodes.node_name() == "envnode"
    assert nodes.node_name("flag.node-1") == "flag.node-1"
    form = "expected 1-64 characters of [a-zA-Z0-9_.-], starting with a letter or digit"
    with pytest.raises(ConfigError) as e:
        nodes.node_name("a/b")
    assert str(e.value) == f'--node: {form}, got "a/b"'
    monkeypatch.setenv("PYDP_NODE", "-x")
    with pytest.raises(ConfigError) as e:
        Controller(open_store(tmp_path / "s"))
    assert str(e.value) == f'PYDP_NODE: {form}, got "-x"'
    monkeypatch.delenv("PYDP_NODE")
    monkeypatch.setattr(nodes, "_host", lambda: "bad host")
    with pytest.raises(ConfigError, match=r"^node name \(the host name; give --node or \$PYDP"):
        nodes.node_name()


def test_register_and_list_nodes(h1: Controller, h2: Controller) -> None:
    """register_node writes /nodes/NAME (address, labels); registering again keeps the
    creation time; nodes() lists them by name; node_names() adds nodes known only by
    their state, and this one."""
    n2 = h2.register_node(address="192.0.2.2", labels={"zone": "b"})
    assert (n2.name, n2.address, dict(n2.labels)) == ("h2", IPAddress("192.0.2.2"), {"zone": "b"})
    again = h2.register_node(address=IPAddress("192.0.2.22"))
    assert again.created == n2.created and again.address == IPAddress("192.0.2.22")
    h1.register_node("h1")
    assert [n.name for n in h1.nodes()] == ["h1", "h2"]
    assert Node.from_json(again.to_json()) == again
    h1.store.delete("/nodes/h1")  # the lease ended
    h1.run_sandbox("a", "bridge")
    h3 = Controller(h1.store, node="h3")
    assert h3.node_names() == ["h1", "h2", "h3"]
    with pytest.raises(ConfigError, match=r'^--address: invalid IPv4 address "x"$'):
        h1.register_node(address="x")
    with pytest.raises(ConfigError, match=r"^node: expected 1-64 characters"):
        h1.register_node("a/b")


def test_register_with_lease(h1: Controller, db: Path) -> None:
    """A lease goes to a store whose put takes one; a store without leases refuses it
    (and writes nothing)."""
    with pytest.raises(ConfigError) as e:
        h1.register_node(lease=7)
    assert str(e.value).startswith("register node at /nodes/h1: store SQLiteStore(")
    assert str(e.value).endswith("has no leases")
    assert h1.nodes() == []

    class LeaseStore(SQLiteStore):
        leases: ClassVar[dict[str, int]] = {}

        def put(
            self, key: str, value: str, expect: int | None = None, lease: int | None = None
        ) -> int:
            if lease is not None:
                self.leases[key] = lease
            return super().put(key, value, expect)

    store = LeaseStore(db / "state.db")
    Controller(store, node="h9").register_node(address="192.0.2.9", lease=42)
    assert store.leases == {"/nodes/h9": 42}
    assert [n.name for n in h1.nodes()] == ["h9"]


# scope, defaults and names ---------------------------------------------------------------
def test_each_node_has_its_defaults(h1: Controller, h2: Controller) -> None:
    """bridge, host and none exist per node, local, same subnet on each; a node sees its
    own and not the other's; indexes are per node."""
    assert names(h1) == [("bridge", "local"), ("host", "local"), ("none", "local")]
    assert names(h2) == names(h1)
    b1, b2 = h1.network("bridge"), h2.network("bridge")
    assert b1.id != b2.id and (b1.node, b2.node) == ("h1", "h2")
    assert b1.pool == b2.pool and b1.index == b2.index == 1
    assert len(h1.networks(all_nodes=True)) == 6
    with pytest.raises(NotFoundError, match=rf"^network {b2.id[:12]} not found$"):
        h1.network(b2.id[:12])


def test_local_names_per_node_global_names_everywhere(h1: Controller, h2: Controller) -> None:
    """Two nodes may each have a local network of a name; a global network's name must be
    free on every node, and a local one may not take a global one's."""
    n1 = h1.create_network("web", subnet="10.7.0.0/24")
    n2 = h2.create_network("web", subnet="10.7.0.0/24")  # another node: no clash
    assert (n1.node, n2.node, n1.scope) == ("h1", "h2", "local")
    with pytest.raises(ConflictError) as e:
        h1.create_network("web", "overlay")
    assert str(e.value) == "network with name web already exists"
    h3 = Controller(h1.store, node="h3")
    with pytest.raises(ConflictError) as e:
        h3.create_network("web", "overlay")
    assert str(e.value) == (
        "network with name web already exists on nodes h1, h2 (a global network's name must"
        " be free on every node)"
    )
    h1.create_network("ov", "overlay")
    with pytest.raises(ConflictError, match=r"^network with name ov already exists$"):
        h2.create_network("ov")
    assert ("ov", "global") in names(h2) and ("web", "local") in names(h2)
    assert h2.network("web") == n2


def test_local_network_lookups_stay_on_their_node(h1: Controller, h2: Controller) -> None:
    """Another node's local network is not found by inspect, rm, connect, run or
    service create; a subnet may repeat across nodes' local networks but not overlap a
    global one."""
    h1.create_network("only1", subnet="10.7.0.0/24")
    h2.create_sandbox("s")
    for call in (
        lambda: h2.network("only1"),
        lambda: h2.remove_network("only1"),
        lambda: h2.connect("only1", "s"),
        lambda: h2.run_sandbox("x", "only1"),
        lambda: h2.create_service("svc", "only1", ["80"]),
    ):
        with pytest.raises(NotFoundError, match=r"^network only1 not found$"):
            call()
    assert h2.create_network("n", subnet="10.7.0.0/24").pool is not None
    h1.create_network("ov", "overlay", subnet="10.9.0.0/24")
    with pytest.raises(ConflictError) as e:
        h2.create_network("m", subnet="10.9.0.128/25")
    assert str(e.value) == '--subnet: 10.9.0.128/25 overlaps network "ov" (10.9.0.0/24)'


# the overlay driver ----------------------------------------------------------------------
def test_overlay_vnis_from_4096_released_on_rm(h1: Controller, h2: Controller) -> None:
    """VNIs are the smallest free from 4096, across nodes, each claimed at /vnis/VNI;
    rm and prune release them for reuse."""
    a = h1.create_network("a", "overlay")
    b = h2.create_network("b", "overlay")
    c = h1.create_network("c", "overlay", options={VNI_OPT: "4098"})
    assert (a.vni, b.vni, c.vni) == (4096, 4097, 4098)
    assert (a.scope, a.node, a.driver) == ("global", None, "overlay")
    entry = h1.store.get(f"{VNIS}4096")
    assert entry is not None
    claim = json.loads(entry.value)
    assert claim == {"name": "a", "network_id": a.id}
    h2.remove_network("a")
    assert h1.store.get(f"{VNIS}4096") is None
    assert h2.create_network("d", "overlay").vni == 4096
    assert sorted(n.name for n in h1.prune()) == ["b", "c", "d"]
    assert h1.store.list(VNIS) == []


def test_overlay_explicit_vni(h1: Controller, h2: Controller) -> None:
    """-o vxlanid_list=VNI takes any free VNI of 1..16777215 (below 4096 too); a taken
    one or one out of range is one line, nothing stored."""
    assert h1.create_network("low", "overlay", options={VNI_OPT: "7"}).vni == 7
    assert h1.create_network("top", "overlay", options={VNI_OPT: "16777215"}).vni == 16777215
    assert h2.create_network("auto", "overlay").vni == 4096
    rev = h1.store.revision()
    for value, message in [
        ("7", f"-o {VNI_OPT}: VNI 7 is used by network low"),
        ("4096", f"-o {VNI_OPT}: VNI 4096 is used by network auto"),
        ("0", f'-o {VNI_OPT}: expected one VNI from 1 to 16777215, got "0"'),
        ("16777216", f'-o {VNI_OPT}: expected one VNI from 1 to 16777215, got "16777216"'),
        ("4096,4097", f'-o {VNI_OPT}: expected one VNI from 1 to 16777215, got "4096,4097"'),
    ]:
        with pytest.raises(PydpError) as e:
            h2.create_network("x", "overlay", options={VNI_OPT: value})
        assert str(e.value) == message
    assert h1.store.revision() == rev


class RacingStore(SQLiteStore):
    """A store whose first read of /vnis/ lets a rival node run right after it: the
    interleaving of two nodes creating overlay networks at the same moment."""

    def __init__(self, path: Path, rival: Callable[[], object]) -> None:
        super().__init__(path)
        self.rival: Callable[[], object] | None = rival
        self.vni_reads = 0

    def list(self, prefix: str) -> list[Entry]:
        out = super().list(prefix)
        if prefix == VNIS:
            self.vni_reads += 1
            if self.rival is not None:
                rival, self.rival = self.rival, None
                rival()
        return out


def test_overlay_vni_race_one_wins_other_retries(db: Path, h2: Controller) -> None:
    """h1 chooses VNI 4096; before its transaction h2 claims 4096; h1's transaction finds
    the claim, rolls back, and its next attempt takes 4097: both networks stored, one VNI
    each."""
    h2.networks()
    won: list[Network] = []
    store = RacingStore(db / "state.db", lambda: won.append(h2.create_network("b", "overlay")))
    h1 = Controller(store, node="h1")
    h1.networks()
    a = h1.create_network("a", "overlay")
    assert (won[0].vni, a.vni, store.vni_reads) == (4096, 4097, 2)
    assert won[0].pool is not None and a.pool is not None
    assert (won[0].pool.subnet, a.pool.subnet) == (
        IPNetwork("10.0.0.0/24"),
        IPNetwork("10.0.1.0/24"),
    )
    assert sorted(e.key for e in store.list(VNIS)) == [f"{VNIS}4096", f"{VNIS}4097"]


class ConflictingStore(SQLiteStore):
    """A store whose next ``conflicts`` transactions fail at commit, rolled back, as an
    optimistic store's (etcd) do when another node changed what they read."""

    conflicts = 0

    @contextlib.contextmanager
    def _conflicting(self) -> Iterator[Txn]:
        with super().transaction() as t:
            yield t
            if self.conflicts:
                self.conflicts -= 1
                raise TxnConflictError("transaction: /vnis/4096 changed; retry the transaction")

    def transaction(self) -> contextlib.AbstractContextManager[Txn]:
        return self._conflicting()


def test_commit_conflicts_run_the_operation_again(tmp_path: Path) -> None:
    """An operation whose commit conflicts is run again, reading afresh (the store shows
    nothing of the failed run); past TXN_ATTEMPTS runs the conflict is reported."""
    store = ConflictingStore(tmp_path / "state.db")
    h1 = Controller(store, node="h1")
    h1.networks()
    store.conflicts = 2
    a = h1.create_network("a", "overlay")
    assert (a.vni, store.conflicts, [n.name for n in h1.networks() if n.scope == "global"]) == (
        4096,
        0,
        ["a"],
    )
    store.conflicts = TXN_ATTEMPTS
    rev = store.revision()
    with pytest.raises(TxnConflictError):
        h1.run_sandbox("s", "a")
    assert store.revision() == rev and h1.sandboxes() == []


def test_overlay_vnis_unique_under_concurrency(db: Path, h1: Controller, h2: Controller) -> None:
    """Two nodes creating 8 overlay networks each at once, from two threads with their own
    store connections: 16 networks, 16 distinct VNIs from 4096, 16 distinct subnets."""
    h1.networks()
    h2.networks()
    errors: list[BaseException] = []

    def make(node: str) -> None:
        ctl = Controller(open_store(db), node=node)
        try:
            for i in range(8):
                ctl.create_network(f"{node}-{i}", "overlay")
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=make, args=(n,)) for n in ("h1", "h2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    overlays = [n for n in h1.networks() if n.driver == "overlay"]
    assert sorted(n.vni or 0 for n in overlays) == list(range(4096, 4112))
    assert len({n.pool.subnet for n in overlays if n.pool is not None}) == 16
    assert len({n.index for n in h1.networks(all_nodes=True) if n.scope == "global"}) == 16


def test_overlay_pools(h1: Controller, h2: Controller) -> None:
    """Without --subnet an overlay gets the next /24 of 10.0.0.0/8 clear of every network
    of every node; a given subnet may overlap another overlay (the VNI isolates them) but
    no node's local network; gateway and ranges as for a bridge."""
    h2.create_network("l2", subnet="10.0.0.0/23")  # h2's only: still avoided
    a = h1.create_network("a", "overlay")
    assert a.pool is not None and a.pool.subnet == IPNetwork("10.0.2.0/24")
    assert a.pool.gateway == IPAddress("10.0.2.1")
    b = h1.create_network("b", "overlay", subnet="10.0.2.0/24", gateway="10.0.2.254")
    assert b.pool is not None and b.pool.gateway == IPAddress("10.0.2.254")
    c = h2.create_network("c", "overlay")
    assert c.pool is not None and c.pool.subnet == IPNetwork("10.0.3.0/24")
    with pytest.raises(ConflictError) as e:
        h1.create_network("d", "overlay", subnet="10.0.1.0/24")
    assert str(e.value) == '--subnet: 10.0.1.0/24 overlaps network "l2" (10.0.0.0/23) on node h2'


def test_overlay_bad_input_changes_nothing(h1: Controller) -> None:
    """Bad overlay input is one line naming the flag, and stores nothing."""
    h1.networks()
    rev = h1.store.revision()
    cases: list[tuple[dict[str, Any], str]] = [
        ({"subnet": "fd00::/64"}, '--subnet: only IPv4 is supported, got "fd00::/64"'),
        (
            {"subnet": "10.5.0.0/30"},
            "--subnet: an overlay network needs a /29 or larger (a gateway and containers on"
            ' several nodes), got "10.5.0.0/30"',
        ),
        ({"subnet": "10.5.0.1/24"}, '--subnet: "10.5.0.1/24" has host bits set (did you mean'),
        ({"subnet": "172.17.0.0/16"}, '--subnet: 172.17.0.0/16 overlaps network "bridge"'),
        ({"gateway": "10.5.0.1"}, "--gateway: needs --subnet"),
        ({"options": {"x": "1"}}, "-o x: not an option of the overlay driver (known:"),
        (
            {"options": {"com.docker.network.driver.mtu": "9"}},
            '-o com.docker.network.driver.mtu: expected an MTU from 68 to 65535, got "9"',
        ),
        ({"driver": "vxlan"}, '-d/--driver: unknown driver "vxlan" (known: bridge, host, null,'),
    ]
    for kwargs, message in cases:
        args: dict[str, Any] = {"driver": "overlay", **kwargs}
        with pytest.raises(PydpError) as e:
            h1.create_network("x", **args)
        assert str(e.value).startswith(message), str(e.value)
    assert h1.store.revision() == rev


def test_overlay_mtu_and_driver() -> None:
    """An overlay endpoint's MTU is the option, else the uplink's less 50; the overlay
    driver is global with IPAM and interfaces."""
    drv = driver_for("overlay")
    assert (drv.scope, drv.uses_ipam, drv.has_interfaces) == ("global", True, True)
    net = Network("i" * 64, "ov", "overlay", 4, None, scope="global", vni=4096)
    assert overlay_mtu(net, 1500) == 1450 and overlay_mtu(net, 9000) == 8950
    net = Network("i" * 64, "ov", "overlay", 4, None, {"com.docker.network.driver.mtu": "1400"})
    assert overlay_mtu(net, 1500) == 1400
    assert VXLANID_LIST == VNI_OPT


# sandboxes and endpoints across nodes -----------------------------------------------------
def test_sandbox_names_are_cluster_wide(h1: Controller, h2: Controller) -> None:
    """A sandbox runs on the node that made it; its name is taken on every node; exec
    (local_sandbox) refuses another node's; ls lists every node's."""
    sb, ep = h1.run_sandbox("web", "bridge")
    assert (sb.node, ep.node, sb.netns) == ("h1", "h1", "pdu1-web")
    with pytest.raises(ConflictError, match=r"^sandbox web exists on node h1$"):
        h2.run_sandbox("web", "bridge")
    with pytest.raises(ConflictError, match=r"^sandbox web exists on node h1$"):
        h2.create_sandbox("web")
    with pytest.raises(ConflictError, match=r"^sandbox web already exists$"):
        h1.create_sandbox("web")
    assert h1.local_sandbox("web") == sb == h2.sandbox("web")
    with pytest.raises(ConflictError, match=r"^sandbox web runs on node h1$"):
        h2.local_sandbox("web")
    h2.create_sandbox("api")
    assert [(s.name, s.node) for s in h1.sandboxes()] == [("api", "h2"), ("web", "h1")]


def test_overlay_endpoints_across_nodes(h1: Controller, h2: Controller) -> None:
    """Sandboxes of two nodes on one overlay take addresses from one pool; endpoints carry
    their node; a remote sandbox joins global networks only; rm of a remote sandbox
    takes it and its endpoints out of the store."""
    h1.create_network("ov", "overlay", subnet="10.20.0.0/24")
    _, e1 = h1.run_sandbox("a", "ov")
    _, e2 = h2.run_sandbox("b", "ov")
    assert (e1.address, e1.node, e2.address, e2.node) == (
        IPAddress("10.20.0.2"),
        "h1",
        IPAddress("10.20.0.3"),
        "h2",
    )
    assert sorted((e.sandbox, e.node, e.local_to("h1")) for e in h2.endpoints("ov")) == [
        ("a", "h1", True),
        ("b", "h2", False),
    ]
    h1.create_network("ov2", "overlay")
    e3 = h1.connect("ov2", "b")  # b runs on h2: its endpoint is h2's
    assert (e3.node, e3.ifname) == ("h2", "eth1")
    h1.create_network("l1", subnet="10.30.0.0/24")
    with pytest.raises(ConflictError) as e:
        h1.connect("l1", "b")
    assert str(e.value) == "network l1 is local to node h1; sandbox b runs on node h2"
    h1.remove_sandbox("b")
    assert [e.sandbox for e in h2.endpoints()] == ["a"]
    assert h2.sandboxes()[0].name == "a"


# services ----------------------------------------------------------------------------------
def test_overlay_services_are_global(h1: Controller, h2: Controller) -> None:
    """A service on an overlay is seen by every node; SANDBOX backends resolve on any
    node and keep it; bridge services stay on their node; names are cluster-wide; the
    index and published ports of a global service are clear of every node's."""
    h1.create_network("ov", "overlay", subnet="10.20.0.0/24")
    h1.run_sandbox("a", "ov")
    h2.run_sandbox("b", "ov")
    h2.run_sandbox("c", "bridge", ports=parse_publish("8080:80"))
    local = h1.create_service("loc", "bridge", ["80"], publish=["9090:80"])
    assert local.index == 1
    h2.create_service("loc2", "bridge", ["80"])  # index 1 on h2 too
    with pytest.raises(ConflictError, match=r"^--publish: host port 8080/tcp is already"):
        h1.create_service("web", "ov", ["80"], publish=["8080:80"])  # c's, on h2
    web = h1.create_service("web", "ov", ["80"], publish=["8081:80"], backends=["a", "b:8080"])
    assert web.index == 2  # clear of h1's 1 and h2's 1
    assert [(b.spec, str(b.address), b.node) for b in web.backends] == [
        ("a", "10.20.0.2", "h1"),
        ("b:8080", "10.20.0.3", "h2"),
    ]
    assert [s.name for s in h2.services()] == ["loc2", "web"]
    assert [s.name for s in h1.services()] == ["loc", "web"]
    with pytest.raises(ConflictError, match=r"^service loc exists on node h1$"):
        h2.create_service("loc", "bridge", ["80"])
    with pytest.raises(ConflictError, match=r"^service web already exists$"):
        h2.create_service("web", "bridge", ["80"])
    with pytest.raises(NotFoundError, match=r"^service loc not found$"):
        h2.service("loc")
    with pytest.raises(ConflictError, match=r"^--publish: host port 8081/tcp is already"):
        h2.run_sandbox("d", "bridge", ports=parse_publish("8081:80"))
    h1.run_sandbox("e", "bridge", ports=parse_publish("8080:80"))  # h1's 8080 is free
    h2.remove_sandbox("a")  # h1's sandbox, removed from h2: its backend goes
    assert [b.spec for b in h1.service("web").backends] == ["b:8080"]
    with pytest.raises(ConfigError, match=r"^--backend-add: sandbox e is not connected to"):
        h2.update_service("web", add=["e"])
    with pytest.raises(ConflictError, match=r"^network ov has active endpoints \(b\)$"):
        h1.remove_network("ov")  # b's endpoint, on h2
    h1.remove_sandbox("b")
    with pytest.raises(ConflictError, match=r"^network ov has services \(web\)$"):
        h2.remove_network("ov")


def test_vips_are_unique_across_overlapping_overlays(h1: Controller, h2: Controller) -> None:
    """Two overlays with one subnet: an endpoint address may repeat (the VNI scopes it), a
    VIP may not -- the datapath keys a service by its VIP alone. A VIP skips the other
    network's endpoints and VIPs, an endpoint skips its VIPs; --vip on one is refused with
    the network named, storing nothing; a bridge subnet elsewhere does not count."""
    h1.create_network("red", "overlay", subnet="10.21.0.0/24")
    h1.create_network("blue", "overlay", subnet="10.21.0.0/24")
    _, r = h1.run_sandbox("r", "red")
    _, b = h2.run_sandbox("b", "blue")
    assert r.address == b.address == IPAddress("10.21.0.2")
    red_web = h1.create_service("red-web", "red", ["80"])
    assert red_web.vip == IPAddress("10.21.0.3")
    blue_web = h2.create_service("blue-web", "blue", ["80"])
    assert blue_web.vip == IPAddress("10.21.0.4")  # .3 is red's VIP
    _, b2 = h2.run_sandbox("b2", "blue")
    assert b2.address == IPAddress("10.21.0.5")  # .3 and .4 are VIPs
    _, r2 = h1.run_sandbox("r2", "red")
    assert r2.address == IPAddress("10.21.0.5")  # red's own: the VNI keeps it apart
    rev = h1.store.revision()
    with pytest.raises(ConflictError) as e:
        h1.create_service("x", "red", ["80"], vip="10.21.0.2")
    assert str(e.value) == "--vip: 10.21.0.2 is already in use in network red"
    with pytest.raises(ConflictError) as e:
        h1.create_service("x", "blue", ["80"], vip="10.21.0.5")
    assert str(e.value) == "--vip: 10.21.0.5 is already in use in network blue"
    with pytest.raises(ConflictError) as e:
        h1.create_service("x", "red", ["80"], vip="10.21.0.4")  # blue's VIP
    assert str(e.value) == (
        "--vip: 10.21.0.4 is in use in network blue, whose subnet overlaps red's:"
        " a VIP must be free in both"
    )
    h1.remove_sandbox("r2")
    with pytest.raises(ConflictError) as e:
        h1.create_service("x", "red", ["80"], vip="10.21.0.5")  # b2's, in blue
    assert str(e.value) == (
        "--vip: 10.21.0.5 is in use in network blue, whose subnet overlaps red's:"
        " a VIP must be free in both"
    )
    assert h1.store.revision() == rev + 1  # r2's removal only
    h2.create_network("l2", subnet="10.22.0.0/24")
    h1.create_network("l1", subnet="10.22.0.0/24")  # another node's bridge subnet
    h2.create_service("l2-web", "l2", ["80"])
    assert h1.create_service("l1-web", "l1", ["80"]).vip == IPAddress("10.22.0.2")


def mesh_of(ctl: Controller, net: str) -> dict[str, str]:
    """The routing mesh's addresses on a network, by node."""
    eps = ctl.endpoints(ctl.network(net).id)
    return {str(e.node): str(e.address) for e in eps if e.sandbox == MESH_SANDBOX}


def test_mesh_addresses_follow_published_services(h1: Controller, h2: Controller) -> None:
    """Each node claims one address of its own on an overlay with a published service (from
    the network's pool, counted by IPAM), none elsewhere; the last published service gone,
    each gives its own back; a network removed takes a dead node's with it."""
    h1.create_network("ov", "overlay", subnet="10.21.0.0/24")
    h1.create_network("ov2", "overlay", subnet="10.22.0.0/24")
    h1.run_sandbox("a", "ov")
    assert h1.ensure_mesh() == ([], [])  # no published service yet
    h1.create_service("plain", "ov", ["80"], backends=["a"])
    h1.create_service("web", "ov", ["80"], publish=["8080:80"], backends=["a"])
    added, removed = h1.ensure_mesh()
    assert [str(e.address) for e in added] == ["10.21.0.5"] and removed == []  # .2-.4 taken
    h2.ensure_mesh()
    assert mesh_of(h1, "ov") == {"h1": "10.21.0.5", "h2": "10.21.0.6"}
    assert mesh_of(h1, "ov2") == {}
    assert h1.ensure_mesh() == h2.ensure_mesh() == ([], [])  # once only
    assert str(h2.run_sandbox("b", "ov")[1].address) == "10.21.0.7"  # IPAM skips them
    h1.remove_service("web")
    _, gone = h1.ensure_mesh()
    assert [str(e.address) for e in gone] == ["10.21.0.5"]
    assert mesh_of(h1, "ov") == {"h2": "10.21.0.6"}  # h2's until its agent lets go
    h1.remove_service("plain")
    h1.remove_sandbox("a")
    h2.remove_sandbox("b")
    assert [n.name for n in h1.prune()] == ["ov", "ov2"]  # h2's mesh address goes with ov
    assert h1.endpoints() == []


def test_mesh_sandbox_name_is_reserved(h1: Controller) -> None:
    """A sandbox cannot take the mesh's name; nothing is stored."""
    before = h1.sandboxes()
    with pytest.raises(ConfigError, match=r"^sandbox name ingress-sbox is reserved for the"):
        h1.create_sandbox("ingress-sbox")
    assert h1.sandboxes() == before


# stores written before nodes ------------------------------------------------------------
def test_single_host_store_reads_as_the_readers(tmp_path: Path) -> None:
    """Networks, sandboxes and endpoints stored without scope and node (before nodes)
    read as local to the node reading them: its defaults are not made again and its
    sandboxes are its own."""
    store = open_store(tmp_path / "s")
    old = Controller(store, node="old")
    old.create_network("n1", subnet="10.7.0.0/24")
    old.run_sandbox("a", "n1")
    with store.transaction() as t:  # strip what nodes added, as an old store holds it
        for prefix in (NETWORKS, SANDBOXES, ENDPOINTS):
            for e in t.list(prefix):
                d = json.loads(e.value)
                for k in ("scope", "node", "vni"):
                    d.pop(k, None)
                t.put(e.key, json.dumps(d))
    new = Controller(store, node="box")
    nets = new.networks()
    assert [(n.name, n.scope, n.node) for n in nets] == [
        ("bridge", "local", None),
        ("host", "local", None),
        ("n1", "local", None),
        ("none", "local", None),
    ]
    entry = store.get(f"{SANDBOXES}a")
    assert entry is not None and Sandbox.from_json(entry.value).node is None
    assert new.local_sandbox("a").name == "a"
    [ep] = new.endpoints("n1")
    assert isinstance(ep, Endpoint) and ep.local_to("box")
    _, ep2 = new.run_sandbox("b", "n1")
    assert (ep2.address, ep2.node) == (IPAddress("10.7.0.3"), "box")
    assert len(new.networks()) == 4


def test_backends_of_a_down_node_leave_the_table() -> None:
    """Desired.service_specs keeps backends of this node, of live (registered) nodes and
    IP:PORT ones, and drops those of a node whose lease ended."""
    from netaddr import IPAddress

    from pydp.agent.reconcile import Desired
    from pydp.control.model import Network, Node, Service, ServiceBackend, ServicePort

    net = Network("n" * 64, "ov", "overlay", 5, None)
    backends = tuple(
        ServiceBackend(IPAddress(f"10.70.0.{i}"), 80, node=node)
        for i, node in ((2, "h1"), (3, "h2"), (4, "h3"), (5, None))
    )
    svc = Service("s" * 64, "web", net.id, 1, IPAddress("10.70.0.100"), (ServicePort(80),),
                  backends=backends)  # fmt: skip
    d = Desired({net.id: net}, services=[svc], node="h1", nodes={"h2": Node("h2", None)})
    (spec,) = d.service_specs()
    assert {str(b.address) for b in spec.backends} == {"10.70.0.2", "10.70.0.3", "10.70.0.5"}
