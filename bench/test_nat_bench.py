"""Suite ``nat``: published ports and egress masquerade through pydp, iptables and a proxy.

One topology: an outside host ``client`` (10.99.0.1 on the fabric) and, per path,
a server host whose uplink eth0 (10.99.0.N/24) holds a default route via the
client. Each server host runs one container with the rr server on port 80 and
an iperf3 server on 5201, published on the uplink as 8080 and 5201:

- ``pydp_tc``: ``pydp run -p 8080:80 -p 5201:5201`` (from_netdev on the uplink
  does the DNAT at TC; the container's replies are reverse-translated by
  from_container);
- ``pydp_xdp``: the same with ``pydp system config --xdp on`` (xdp_uplink on the
  uplink; ``pydp_tc`` sets ``--xdp off``); left out, with a printed note, while
  ``build/bpf/xdp_uplink.bpf.o`` is missing or XDP did not attach;
- ``iptables``: a plain Linux bridge ``docker0`` holding the container and
  Docker's own rules, loaded by ``iptables-restore`` (the DOCKER chain with its
  DNAT, MASQUERADE in POSTROUTING, the FORWARD chains; ``iptables`` if it works
  in a namespace, else ``iptables-legacy``);
- ``proxy``: the container on a plain bridge and socat forwarding each
  published port in the host namespace, standing in for docker-proxy (one
  process forked per connection, where docker-proxy has a goroutine).

Measured with every client, server and proxy pinned to CPU 0 (``taskset -c 0``),
the paths alternated round by round, medians of RR_ROUNDS / IPERF_ROUNDS:

- published port, client on the outside host: TCP request/response rate and
  connection rate (``bench/tools/rr.c``, as the ``bridge`` suite builds it),
  iperf3 throughput as is and with ``-M 1400`` plus TSO/GSO off on the client's
  uplink (so every packet is a real 1.4 KB segment);
- egress masquerade, pydp (``pydp_tc``'s container) against iptables
  MASQUERADE (``iptables``'s container): rr and crr from the container to a
  server on the outside host, and an iperf3 download (``-R``) as is and
  segmented;
- per packet (``BPF_PROG_TEST_RUN``), the SNAT and DNAT paths (established, and
  their reverse), each beside from_container's same-host redirect measured in
  the same rounds, with the packets and maps of tests/bpf/test_nat.py.

Nothing asserts a threshold: the asserts check correctness (every transfer
completed; REASON_DNAT (with REASON_XDP_DNAT, which must grow on ``pydp_xdp``) grew
by a packet a transaction during every published pydp run, REASON_SNAT likewise
during egress; iptables' DNAT rule matched;
offload really was off; the translated test_run packets were rewritten).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from bench._results import Results, median
from bench.test_bridge_bench import (
    APT_PACKAGES,
    IPERF_MSS,
    MAX_SEGMENT_BYTES,
    _install_missing,
    build_rr,
)
from pydp.agent.host import netns_prefix
from pydp.loader import BpfObject, Map, object_dir, test_run
from pydp.maps import METRICS_MAP, MetricsMap, reason_name
from pydp.testing import Host, Topology
from pydp.testing._proc import kill_netns_pids
from pydp.testing.nodes import Namespace

if TYPE_CHECKING:
    from tests.netns.conftest import PydpNode

REPO = Path(__file__).resolve().parent.parent

RR_ROUNDS = 4  # measured rounds of rr and crr, after a dropped warm-up round
IPERF_ROUNDS = 4
RR_SECONDS = 1.5
WARMUP_SECONDS = 0.3
IPERF_SECONDS = 2  # iperf3 3.12 takes whole seconds
PACKET_ROUNDS = 9
PACKET_REPEAT = 200_000  # test_run repeats per sample
CPU = "0"  # every client, server and proxy runs here

OUTSIDE = "10.99.0.1"
UPLINKS = {"pydp_tc": "10.99.0.2", "pydp_xdp": "10.99.0.3", "iptables": "10.99.0.4"}
UPLINKS["proxy"] = "10.99.0.5"
PUBLISHED = ("pydp_tc", "pydp_xdp", "iptables", "proxy")  # the order of every round
EGRESS = {"pydp": "pydp_tc", "iptables": "iptables"}  # egress case -> the host it uses
HOST_PORT, CONTAINER_PORT, IPERF_PORT = 8080, 80, 5201
OUTSIDE_RR_PORT, OUTSIDE_IPERF_PORT = 7000, 5202
BRIDGE, BRIDGE_NET, CONTAINER_NET = "docker0", "172.17.0.1/16", "172.17.0.2/16"
CONTAINER_IP = CONTAINER_NET.split("/")[0]

# pydp_xdp: the XDP object, and the environment the pydp CLI needs in that host to attach it
# (empty while the reconciler attaches it whenever the object exists; set e.g.
# {"PYDP_XDP": "1"} if it ends up behind a switch). The case runs when the program is seen
# on the uplink after `pydp system reconcile`; pydp_tc detaches it, to stay TC only.
XDP_OBJECT = "xdp_uplink.bpf.o"
XDP_ENV: dict[str, str] = {}
XDP_SWITCH = "PYDP_BENCH_NAT_XDP"  # set to 0 to leave pydp_xdp out even when it is attached
XDP_REASON = "REASON_XDP_DNAT"  # what xdp_uplink counts for a published port's packet
DNAT_REASONS = ("REASON_DNAT", XDP_REASON)  # a published port's packets, at TC or XDP
SNAT_REASONS = ("REASON_SNAT",)  # a masqueraded container's packets leaving

NAT_APT_PACKAGES = APT_PACKAGES | {"socat": "socat", "iptables": "iptables"}


def _docker_rules(ports: dict[int, int]) -> str:
    """Docker's iptables rules for one bridge network with ``ports`` (host -> container)
    published, as ``iptables-save`` shows them with the userland proxy off."""
    net = str(BRIDGE_NET).replace(".1/", ".0/")
    c = f"{CONTAINER_IP}/32"
    nat = [f"-A POSTROUTING -s {net} ! -o {BRIDGE} -j MASQUERADE"]
    nat += [
        f"-A POSTROUTING -s {c} -d {c} -p tcp -m tcp --dport {cp} -j MASQUERADE"
        for cp in ports.values()
    ]
    nat.append(f"-A DOCKER -i {BRIDGE} -j RETURN")
    nat += [
        f"-A DOCKER ! -i {BRIDGE} -p tcp -m tcp --dport {hp} -j DNAT"
        f" --to-destination {CONTAINER_IP}:{cp}"
        for hp, cp in ports.items()
    ]
    accept = [
        f"-A DOCKER -d {c} ! -i {BRIDGE} -o {BRIDGE} -p tcp -m tcp --dport {cp} -j ACCEPT"
        for cp in ports.values()
    ]
    return "\n".join(
        [
            "*nat",
            ":PREROUTING ACCEPT [0:0]",
            ":INPUT ACCEPT [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            ":POSTROUTING ACCEPT [0:0]",
            ":DOCKER - [0:0]",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER",
            *nat,
            "COMMIT",
            "*filter",
            ":INPUT ACCEPT [0:0]",
            ":FORWARD DROP [0:0]",
            ":OUTPUT ACCEPT [0:0]",
            ":DOCKER - [0:0]",
            ":DOCKER-ISOLATION-STAGE-1 - [0:0]",
            ":DOCKER-ISOLATION-STAGE-2 - [0:0]",
            ":DOCKER-USER - [0:0]",
            "-A FORWARD -j DOCKER-USER",
            "-A FORWARD -j DOCKER-ISOLATION-STAGE-1",
            f"-A FORWARD -o {BRIDGE} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
            f"-A FORWARD -o {BRIDGE} -j DOCKER",
            f"-A FORWARD -i {BRIDGE} ! -o {BRIDGE} -j ACCEPT",
            f"-A FORWARD -i {BRIDGE} -o {BRIDGE} -j ACCEPT",
            *accept,
            f"-A DOCKER-ISOLATION-STAGE-1 -i {BRIDGE} ! -o {BRIDGE} -j DOCKER-ISOLATION-STAGE-2",
            "-A DOCKER-ISOLATION-STAGE-1 -j RETURN",
            f"-A DOCKER-ISOLATION-STAGE-2 -o {BRIDGE} -j DROP",
            "-A DOCKER-ISOLATION-STAGE-2 -j RETURN",
            "-A DOCKER-USER -j RETURN",
            "COMMIT",
            "",
        ]
    )


@dataclass
class Case:
    """One server host: its uplink address and the container behind it."""

    name: str
    host: Host
    addr: str  # the uplink's address: published ports are reached here
    container: Namespace  # holds the rr and iperf3 servers; the egress client runs here
    node: PydpNode | None = None
    iptables: str | None = None  # the iptables command of the iptables case
    fast_reason: str | None = None  # pydp_xdp: its own counter, which must grow too

    def counters(self) -> dict[str, int]:
        """pydp's packets per reason so far (empty on the paths without pydp)."""
        if self.node is None:
            return {}
        with Map.open_pinned(METRICS_MAP, self.node.bpffs) as raw:
            snap = MetricsMap(raw).snapshot()
        return {reason_name(k): c.packets for k, c in snap.items()}


@dataclass
class World:
    client: Host  # the outside host
    rr_tool: Path
    cases: dict[str, Case]  # published-port paths that run, in round order
    notes: list[str] = field(default_factory=list)

    def egress(self) -> dict[str, Case]:
        return {name: self.cases[host] for name, host in EGRESS.items()}


def _from_tests(module: str) -> ModuleType:
    """A module of tests/ whose helpers are reused here (pytest's importlib mode leaves the
    repository off sys.path, so it is appended)."""
    if str(REPO) not in sys.path:
        sys.path.append(str(REPO))
    return importlib.import_module(module)


def _grown(before: dict[str, int], after: dict[str, int], reason: str) -> int:
    return after.get(reason, 0) - before.get(reason, 0)


def _check_counted(
    case: Case,
    before: dict[str, int],
    after: dict[str, int],
    reasons: tuple[str, ...],
    at_least: int,
    what: str,
) -> None:
    """On a pydp case, the translation counters (summed over ``reasons``) grew by at least
    ``at_least`` (one a transaction), and the case's fast-path counter grew too."""
    if case.node is None:
        return
    grown = sum(_grown(before, after, r) for r in reasons)
    assert grown >= max(at_least, 1), f"{case.name} {what}: {reasons} grew by {grown}"
    if case.fast_reason is not None and case.fast_reason in reasons:
        fast = _grown(before, after, case.fast_reason)
        assert fast > 0, f"{case.name} {what}: {case.fast_reason} did not grow"


def _wait_listen(ns: Namespace, port: int, timeout: float = 10) -> None:
    """Wait until something listens on TCP ``port`` in ``ns`` (a process not started by us)."""
    script = (
        f"i=0; while [ $i -lt {int(timeout * 10)} ]; do"
        f" ss -Hltn 'sport = :{port}' | grep -q . && exit 0; sleep 0.1; i=$((i+1)); done; exit 1"
    )
    ns.run(["sh", "-c", script], timeout=timeout + 5)


def _iptables_command(host: Host) -> str:
    """``iptables`` if its default backend works in a namespace here, else iptables-legacy."""
    for cmd in ("iptables", "iptables-legacy"):
        if shutil.which(cmd) and host.run([cmd, "-t", "nat", "-S"], check=False).returncode == 0:
            return cmd
    raise RuntimeError("neither iptables nor iptables-legacy works in a namespace")


def _xdp_attached(host: Host, ifname: str = "eth0") -> bool:
    info = json.loads(host.run(["ip", "-j", "link", "show", "dev", ifname]).stdout)[0]
    return "xdp" in info


def _uplinked(topo: Topology, name: str) -> Host:
    host = topo.add_host(name)
    host.connect_fabric(f"{UPLINKS[name]}/24", ifname="eth0")
    host.ip("route", "add", "default", "via", OUTSIDE)
    return host


def _start_servers(container: Namespace, rr_tool: Path, rr_running: bool = False) -> None:
    pin = ["taskset", "-c", CPU]
    if not rr_running:
        container.popen([*pin, str(rr_tool), "server", str(CONTAINER_PORT)])
    iperf = container.popen([*pin, "iperf3", "-s", "-p", str(IPERF_PORT)])
    _wait_listen(container, CONTAINER_PORT)
    iperf.wait_port(IPERF_PORT)


def _setup_pydp(case: Case, rr_tool: Path, env: dict[str, str], xdp: bool) -> None:
    """Load the datapath (from_netdev on the uplink, and xdp_uplink with ``xdp``: the
    uplink is a veth, where pydp's default, auto, leaves XDP off) and run the published
    container."""
    node = case.node
    assert node is not None
    node("system", "config", "--xdp", "on" if xdp else "off", env=env)
    node(
        *("run", "--name", "web", "-d"),
        *("-p", f"{HOST_PORT}:{CONTAINER_PORT}", "-p", f"{IPERF_PORT}:{IPERF_PORT}"),
        *("--", "taskset", "-c", CPU, str(rr_tool), "server", str(CONTAINER_PORT)),
        env=env,
    )
    netns = node.json("sandbox", "inspect", "web")[0]["Netns"]
    case.container = Namespace(case.host.topology, f"{case.name}_web", netns)
    _start_servers(case.container, rr_tool, rr_running=True)
    assert _xdp_attached(case.host) == xdp, f"{case.name}: XDP on the uplink is not {xdp}"


def _build_bridged(topo: Topology, name: str, rr_tool: Path) -> Case:
    host = _uplinked(topo, name)
    host.add_bridge(BRIDGE, BRIDGE_NET)
    gw = BRIDGE_NET.split("/")[0]
    container = host.add_container(f"{name}_web", CONTAINER_NET, gateway=gw, bridge=BRIDGE)
    _start_servers(container, rr_tool)
    return Case(name, host, UPLINKS[name], container)


def _build_iptables(topo: Topology, rr_tool: Path) -> Case:
    case = _build_bridged(topo, "iptables", rr_tool)
    cmd = _iptables_command(case.host)
    rules = _docker_rules({HOST_PORT: CONTAINER_PORT, IPERF_PORT: IPERF_PORT})
    case.host.run([f"{cmd}-restore"], input=rules)
    case.iptables = cmd
    print(f"\niptables path: {case.host.run([cmd, '--version']).stdout.strip()}")
    return case


def _build_proxy(topo: Topology, rr_tool: Path) -> Case:
    case = _build_bridged(topo, "proxy", rr_tool)
    for hp, cp in ((HOST_PORT, CONTAINER_PORT), (IPERF_PORT, IPERF_PORT)):
        cmd = ["taskset", "-c", CPU, "socat", f"TCP-LISTEN:{hp},fork,reuseaddr"]
        case.host.popen([*cmd, f"TCP:{CONTAINER_IP}:{cp}"]).wait_port(hp)
    return case


def _cleanup_pydp(node: PydpNode) -> None:
    """Kill what runs in the pydp host's sandboxes, then ``pydp system reset`` it; should the
    CLI fail, its sandbox namespaces are deleted here (its links and pins go with the host
    namespace and the session's bpffs root)."""
    prefix = netns_prefix(node.state_dir)

    def sandboxes() -> list[str]:
        listed = node.host.run(["ip", "netns", "list"], check=False).stdout
        return [n for n in re.findall(r"^(\S+)", listed, re.M) if n.startswith(prefix)]

    for name in sandboxes():
        kill_netns_pids(name)
    reset = node("system", "reset", check=False)
    if reset.returncode != 0:
        print(f"\nWARNING: pydp system reset in {node.host.netns}: {reset.stderr.strip()}")
    for name in sandboxes():
        node.host.run(["ip", "netns", "delete", name], check=False)


@pytest.fixture(scope="module")
def rr_tool() -> Path:
    """The request/response tool, built for this session. Scope: module. Depends on: cc."""
    _install_missing(NAT_APT_PACKAGES)
    return build_rr()


@pytest.fixture(scope="module")
def world(
    topology_module: Topology,
    bpffs_root: Path,
    rr_tool: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """The outside host and every server host, with servers running and pinned.

    Scope: module. Depends on: topology_module (namespaces and the servers started
    through it stopped at its teardown), bpffs_root (pydp's pins under
    ``<root>/nat-<case>``), rr_tool. Each pydp host's container processes are killed
    and the host ``pydp system reset`` after the module, even on failure; the iptables
    rules go with their namespace.
    """
    client = topology_module.add_host("client")
    client.connect_fabric(f"{OUTSIDE}/24", ifname="eth0")
    pin = ["taskset", "-c", CPU]
    rr = client.popen([*pin, str(rr_tool), "server", str(OUTSIDE_RR_PORT)])
    iperf = client.popen([*pin, "iperf3", "-s", "-p", str(OUTSIDE_IPERF_PORT)])
    rr.wait_port(OUTSIDE_RR_PORT)
    iperf.wait_port(OUTSIDE_IPERF_PORT)

    built: dict[str, Case] = {}
    nodes: list[PydpNode] = []
    notes: list[str] = []

    def pydp_host(name: str, env: dict[str, str], xdp: bool) -> Case:
        host = _uplinked(topology_module, name)
        state = tmp_path_factory.mktemp(f"nat-{name}") / "state"
        node = _from_tests("tests.netns.conftest").PydpNode(host, state, bpffs_root / f"nat-{name}")
        nodes.append(node)  # cleaned up even if the set-up fails halfway
        case = Case(name, host, UPLINKS[name], client, node)  # container: set by _setup_pydp
        _setup_pydp(case, rr_tool, env, xdp)
        return case

    try:
        built["pydp_tc"] = pydp_host("pydp_tc", {}, xdp=False)
        if os.environ.get(XDP_SWITCH) == "0":
            notes.append(f"pydp_xdp left out: ${XDP_SWITCH}=0")
        elif not (object_dir() / XDP_OBJECT).exists():
            notes.append(f"pydp_xdp left out: build/bpf/{XDP_OBJECT} does not exist")
        else:
            case = pydp_host("pydp_xdp", XDP_ENV, xdp=True)
            if _xdp_attached(case.host):
                case.fast_reason = XDP_REASON
                built["pydp_xdp"] = case
            else:
                notes.append("pydp_xdp left out: the reconciler did not attach XDP on the uplink")
        built["iptables"] = _build_iptables(topology_module, rr_tool)
        built["proxy"] = _build_proxy(topology_module, rr_tool)
        for note in notes:
            print(f"\nNOTE: {note}")
        yield World(client, rr_tool, {n: built[n] for n in PUBLISHED if n in built}, notes)
    finally:
        for node in nodes:
            _cleanup_pydp(node)


def _rr_run(
    world: World,
    client: Namespace,
    target: str,
    port: int,
    mode: str,
    seconds: float,
    case: Case,
    reasons: tuple[str, ...],
) -> float:
    """Transactions per second of one rr client run (mode ``client`` or ``crr``) from
    ``client`` to target:port; on a pydp case, ``reasons`` grow by one a transaction."""
    cmd = ["taskset", "-c", CPU, str(world.rr_tool), mode, target, str(port), str(seconds)]
    before = case.counters()
    out = client.run(cmd, timeout=seconds + 30).stdout
    after = case.counters()
    data = json.loads(out)
    assert data["transactions"] > 0, f"{case.name} {mode}: no transaction: {out}"
    _check_counted(case, before, after, reasons, data["transactions"], f"{mode}")
    return float(data["rate"])


def _tx_stats(ns: Namespace, ifname: str) -> tuple[int, int]:
    info = json.loads(ns.run(["ip", "-j", "-s", "link", "show", "dev", ifname]).stdout)[0]
    tx = info["stats64"]["tx"]
    return int(tx["packets"]), int(tx["bytes"])


def _set_offload(ns: Namespace, ifname: str, on: bool) -> None:
    state = "on" if on else "off"
    ns.run(["ethtool", "-K", ifname, "tso", state, "gso", state])


def _iperf_run(
    world: World, case: Case, segmented: bool, egress: bool, reasons: tuple[str, ...] = ()
) -> float:
    """Gbit/s received by one iperf3 run. Published: the outside host sends to the uplink's
    port; egress: the container downloads (``-R``) from the outside host. ``segmented``:
    ``-M 1400`` and TSO/GSO off on the outside host's eth0, the sender either way."""
    if egress:
        client, target, port = case.container, OUTSIDE, OUTSIDE_IPERF_PORT
    else:
        client, target, port = world.client, case.addr, IPERF_PORT
    cmd = ["taskset", "-c", CPU, "iperf3", "-c", target, "-p", str(port)]
    cmd += ["-t", str(IPERF_SECONDS), "-J", *(["-R"] if egress else [])]
    if segmented:
        cmd += ["-M", str(IPERF_MSS)]
        _set_offload(world.client, "eth0", on=False)
    try:
        packets, nbytes = _tx_stats(world.client, "eth0")
        before = case.counters()
        r = client.run(cmd, timeout=IPERF_SECONDS + 30, check=False)
        after = case.counters()
        packets_after, nbytes_after = _tx_stats(world.client, "eth0")
    finally:
        if segmented:
            _set_offload(world.client, "eth0", on=True)
    data = json.loads(r.stdout)
    assert "error" not in data, f"{case.name} iperf3: {data.get('error')}"
    received = data["end"]["sum_received"]
    assert received["bytes"] > 0, f"{case.name} iperf3: nothing received"
    if segmented:
        average = (nbytes_after - nbytes) / (packets_after - packets)
        assert average < MAX_SEGMENT_BYTES, f"{case.name}: {average:.0f}-byte packets: GSO on"
    _check_counted(case, before, after, reasons or DNAT_REASONS, 1, "iperf3")
    return float(received["bits_per_second"]) / 1e9


Sampler = Callable[[Case], float]


def _rounds(
    cases: dict[str, Case], rounds: int, samplers: dict[str, Sampler], warmup: dict[str, Sampler]
) -> dict[str, dict[str, list[float]]]:
    """Samples per sampler and case: each round runs every sampler on A B C ...; the warm-up
    round is dropped."""
    samples: dict[str, dict[str, list[float]]] = {s: {c: [] for c in cases} for s in samplers}
    for case in cases.values():
        for fn in warmup.values():
            fn(case)
    for _ in range(rounds):
        for s, fn in samplers.items():
            for name, case in cases.items():
                samples[s][name].append(fn(case))
    return samples


PUBLISHED_RATIOS = (  # (case, baseline case or None for the absolute figure)
    ("iptables", None),
    ("pydp_tc", "iptables"),
    ("pydp_tc", "proxy"),
    ("proxy", "iptables"),
    ("pydp_xdp", "pydp_tc"),
    ("pydp_xdp", "iptables"),
)
EGRESS_RATIOS = (("iptables", None), ("pydp", "iptables"))


def _record(
    results: Results,
    metric: str,
    unit: str,
    per_case: dict[str, list[float]],
    ratios: tuple[tuple[str, str | None], ...],
) -> None:
    m = {name: median(values) for name, values in per_case.items()}
    for name, base in ratios:
        if name not in m or (base is not None and base not in m):
            continue  # pydp_xdp left out
        if base is None:
            results.add(metric.format(name), m[name], unit)
        else:
            results.add(metric.format(name), m[name], unit, metric.format(base), m[base])
    print(f"{metric.format('*')}: samples by round {per_case}")  # shown with pytest -s


def test_published_request_response(results: Results, world: World) -> None:
    """Request/response and connection rates to a published port from the outside host,
    every path pinned to CPU 0 and alternated round by round."""

    def run(mode: str, seconds: float) -> Sampler:
        return lambda c: _rr_run(
            world, world.client, c.addr, HOST_PORT, mode, seconds, c, DNAT_REASONS
        )

    samples = _rounds(
        world.cases,
        RR_ROUNDS,
        {"rr": run("client", RR_SECONDS), "crr": run("crr", RR_SECONDS)},
        {"rr": run("client", WARMUP_SECONDS), "crr": run("crr", WARMUP_SECONDS)},
    )
    ipt = world.cases["iptables"]
    assert ipt.iptables is not None
    listed = ipt.host.run([ipt.iptables, "-t", "nat", "-L", "DOCKER", "-v", "-x", "-n"]).stdout
    dnat = re.search(rf"^\s*(\d+)\s+\d+\s+DNAT\b.*dpt:{HOST_PORT}\b", listed, re.M)
    assert dnat is not None and int(dnat.group(1)) > 0, f"iptables DNAT never matched: {listed}"
    _record(results, "published_rr_{}_tps", "transactions/s", samples["rr"], PUBLISHED_RATIOS)
    _record(results, "published_crr_{}_cps", "connections/s", samples["crr"], PUBLISHED_RATIOS)


def test_published_throughput(results: Results, world: World) -> None:
    """iperf3 to a published port from the outside host, with offload and with 1,400-byte
    segments, the paths alternated."""
    samples = _rounds(
        world.cases,
        IPERF_ROUNDS,
        {
            "gso": lambda c: _iperf_run(world, c, segmented=False, egress=False),
            "segmented": lambda c: _iperf_run(world, c, segmented=True, egress=False),
        },
        {},
    )
    _record(results, "published_iperf3_{}_gbps", "Gbit/s", samples["gso"], PUBLISHED_RATIOS)
    _record(
        results,
        "published_iperf3_mss1400_nogso_{}_gbps",
        "Gbit/s",
        samples["segmented"],
        PUBLISHED_RATIOS,
    )


def test_egress_masquerade(results: Results, world: World) -> None:
    """A container's rr, crr and iperf3 download against the outside host: pydp's SNAT against
    Docker's POSTROUTING MASQUERADE, alternated."""

    def run(mode: str, seconds: float) -> Sampler:
        return lambda c: _rr_run(
            world, c.container, OUTSIDE, OUTSIDE_RR_PORT, mode, seconds, c, SNAT_REASONS
        )

    rounds = max(RR_ROUNDS, IPERF_ROUNDS)
    samples = _rounds(
        world.egress(),
        rounds,
        {
            "rr": run("client", RR_SECONDS),
            "crr": run("crr", RR_SECONDS),
            "gso": lambda c: _iperf_run(world, c, False, True, SNAT_REASONS),
            "segmented": lambda c: _iperf_run(world, c, True, True, SNAT_REASONS),
        },
        {"rr": run("client", WARMUP_SECONDS), "crr": run("crr", WARMUP_SECONDS)},
    )
    _record(results, "egress_rr_{}_tps", "transactions/s", samples["rr"], EGRESS_RATIOS)
    _record(results, "egress_crr_{}_cps", "connections/s", samples["crr"], EGRESS_RATIOS)
    _record(results, "egress_download_{}_gbps", "Gbit/s", samples["gso"], EGRESS_RATIOS)
    _record(
        results,
        "egress_download_mss1400_nogso_{}_gbps",
        "Gbit/s",
        samples["segmented"],
        EGRESS_RATIOS,
    )


# per-packet rows of tests/bpf/test_nat.py's PERF table -> metric names
PACKET_METRICS = {
    "same-host redirect (baseline)": "from_container_redirect_ns",
    "snat, established": "snat_established_ns",
    "reverse snat": "snat_reply_ns",
    "dnat, established": "dnat_established_ns",
    "reverse dnat": "dnat_reply_ns",
}
PACKET_BASELINE = "from_container_redirect_ns"
PerfRow = tuple[str, str, bytes, Sequence[tuple[str, bytes]]]


def _packet_metric(desc: str) -> str:
    return PACKET_METRICS.get(desc) or re.sub(r"[^a-z0-9]+", "_", desc.lower()).strip("_") + "_ns"


def test_nat_per_packet(results: Results, bpffs_root: Path) -> None:
    """ns per packet of the SNAT and DNAT paths (and their replies) from BPF_PROG_TEST_RUN,
    each beside from_container's same-host redirect in the same rounds."""
    packets, table = _from_tests("tests.bpf.packets"), _from_tests("tests.bpf.test_nat")
    TC_ACT_OK, TC_ACT_REDIRECT, skb_ctx = (
        packets.TC_ACT_OK,
        packets.TC_ACT_REDIRECT,
        packets.skb_ctx,
    )
    BASE, LO, PERF, Maps = table.BASE, table.LO, table.PERF, table.Maps

    root = bpffs_root / "nat-packets"
    with (
        BpfObject("endpoint.bpf.o", pin_root=root) as ep,
        BpfObject("uplink.bpf.o", pin_root=root) as up,
    ):
        ep.load()
        up.load()
        maps = Maps(up)
        progs = {
            "from_container": ep.program("from_container"),
            "from_netdev": up.program("from_netdev"),
        }
        ctx = skb_ctx(LO)
        try:

            def sample(row: PerfRow, repeat: int) -> tuple[int, int, bytes]:
                _desc, name, packet, setup = row
                maps.reset(BASE)
                for prog, pkt in setup:
                    test_run(progs[prog], pkt, ctx=ctx)
                r = test_run(progs[name], packet, repeat=repeat, ctx=ctx)
                return r.verdict, int(r.duration_ns), r.packet

            for row in PERF:  # correctness once: each path translates (or redirects)
                verdict, _, out = sample(row, 1)
                assert verdict in (TC_ACT_OK, TC_ACT_REDIRECT), f"{row[0]}: verdict {verdict}"
                if _packet_metric(row[0]) != PACKET_BASELINE:
                    assert out[14:] != row[2][14:], f"{row[0]}: the packet was not translated"
            samples: dict[str, list[int]] = {}
            for rnd in range(PACKET_ROUNDS + 1):  # round 0 warms up and is dropped
                for row in PERF:
                    ns = sample(row, PACKET_REPEAT)[1]
                    if rnd:
                        samples.setdefault(_packet_metric(row[0]), []).append(ns)
        finally:
            maps.reset()
    m = {k: median(v) for k, v in samples.items()}
    assert PACKET_BASELINE in m, "tests/bpf/test_nat.py's PERF lost its same-host baseline"
    for metric, value in m.items():
        if metric != PACKET_BASELINE:
            results.add(metric, value, "ns", PACKET_BASELINE, m[PACKET_BASELINE])
    print(f"per packet: samples by round {samples}")
