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
- per packet (``BPF_PROG_TEST_RUN``), the SNAT and DNAT paths of established
  connections (and their reverse), each beside from_container's same-host redirect
  measured in the same rounds, with the packets and maps of tests/bpf/test_nat.py, run
  in its routed namespace (tests/bpf/conftest.py) so translated packets leave through
  the uplink; every run must count its path's reason (see "Per packet" below);
- on a host of their own (``natfigures``, 10.99.0.6, XDP on), with no traffic:
  the memory of publishing a range of 1,000 ports (pydp_ports entries times the hash
  map's element size, and the preallocated map whole as a ceiling; no process added)
  beside 1,000 socat proxies, one a port as docker-proxy would run, summed by PSS;
  and the XDP fast path's packet rate, frames to a published UDP port run live through
  the attached xdp_uplink (BPF_F_TEST_XDP_LIVE_FRAMES: translated and redirected into
  the container for real), beside the same frame's established path through xdp_uplink
  and from_netdev by plain test_run (translated, not redirected).

Nothing asserts a threshold: the asserts check correctness (every transfer
completed; REASON_DNAT (with REASON_XDP_DNAT, which must grow on ``pydp_xdp``) grew
by a packet a transaction during every published pydp run, REASON_SNAT likewise
during egress; iptables' DNAT rule matched;
offload really was off; every test_run run counted the reason of the path it measures).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import importlib
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import pytest
from netaddr import EUI, IPAddress

from bench._packets import ip4_checksum, udp4_frame
from bench._results import Results, load_rows, median
from bench.test_bridge_bench import (
    APT_PACKAGES,
    IPERF_MSS,
    MAX_SEGMENT_BYTES,
    _install_missing,
    rr_tool_fixture,
)
from pydp.agent.host import netns_prefix
from pydp.errors import DatapathError
from pydp.loader import (
    BpfObject,
    Map,
    Program,
    object_dir,
    tc_attached,
    test_run,
    xdp_attached,
)
from pydp.loader._libbpf import ffi, lib
from pydp.maps import (
    CONSTANTS,
    METRICS_MAP,
    NAT_MAP,
    PORTS_MAP,
    MetricsMap,
    NatKey,
    NatMap,
    monotonic_ns,
    reason_name,
)
from pydp.net.netns import entered
from pydp.testing import Host, Topology
from pydp.testing._proc import exec_argv, kill_netns_pids
from pydp.testing._proc import run as run_cmd
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


# The packet tables' namespace (session scope, needs root): an uplink (ifindex 7, 192.0.2.1/24)
# with a default route via a permanent neighbour, so test_run inside it routes SNAT and replies
# out of the uplink as tests/bpf does (outside it, every SNAT is a FIB miss).
routed_netns = _from_tests("tests.bpf.conftest").routed_netns


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


rr_tool = rr_tool_fixture(NAT_APT_PACKAGES)  # the rr tool, built for this module


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


# Per packet. test_run with repeat runs the program again and again on one buffer, each run on
# the packet as the last left it: translated, TTL one lower. So each path gets an entry for its
# translated tuple that maps it onto itself (a copy of the connection's entry under the output's
# key: the next run finds it and takes the same established path: lookup, route, rewrite, TTL,
# MACs, redirect), its packet TTL PACKET_TTL and at most PACKET_REPEAT runs a call (TTL <= 1
# takes another path); every run must count the path's reason, exactly.
PACKET_BASELINE = "from_container_redirect_ns"
PACKET_TTL = 255
PACKET_REPEAT = PACKET_TTL - 5  # runs a test_run call: the TTL stays > 1 to the last
PACKET_CALLS = 800  # calls a sample (~200,000 runs); a sample is their median
TC_ACT_REDIRECT = 7
IPPROTO_TCP = 6


@dataclass(frozen=True)
class PacketPath:
    """One per-packet figure: the packet, the program and verdict, the reason every run counts,
    and the tuple it leaves with ((src, sport, dst, dport); None: not translated)."""

    metric: str
    program: str  # from_container (at the container's veth: lo) or from_netdev (the uplink)
    packet: bytes
    verdict: int
    reason: str
    translated: tuple[str, int, str, int] | None


def _with_ttl(frame: bytes, ttl: int) -> bytes:
    """An Ethernet/IPv4 frame with another TTL, its IP checksum computed anew."""
    ihl = (frame[14] & 0x0F) * 4
    header = bytearray(frame[14 : 14 + ihl])
    header[8], header[10:12] = ttl, b"\x00\x00"
    header[10:12] = struct.pack("!H", ip4_checksum(bytes(header)))
    return frame[:14] + bytes(header) + frame[14 + ihl :]


def _tuple(frame: bytes) -> tuple[IPAddress, int, IPAddress, int]:
    """(source, source port, destination, destination port) of an Ethernet/IPv4/TCP frame."""
    l4 = 14 + (frame[14] & 0x0F) * 4
    sport, dport = struct.unpack("!HH", frame[l4 : l4 + 4])
    saddr, daddr = (IPAddress(int.from_bytes(frame[o : o + 4], "big")) for o in (26, 30))
    return saddr, sport, daddr, dport


def _nat_key(frame: bytes, program: str) -> NatKey:
    saddr, sport, daddr, dport = _tuple(frame)
    return NatKey(saddr, daddr, sport, dport, IPPROTO_TCP, ingress=program == "from_netdev")


def _packet_paths(t: ModuleType) -> tuple[list[tuple[str, bytes]], list[PacketPath]]:
    """The handshakes that establish a masqueraded and a published TCP connection, and the
    paths measured on them, with tests/bpf/test_nat.py's packets and addresses."""
    tcp, out_of, into, cont, remote, client, host = (
        t.tcp,
        t.out_of,
        t.into,
        t.CONT,
        t.REMOTE,
        t.CLIENT,
        t.HOST,
    )
    handshakes = [
        ("from_container", out_of(tcp(40000, 80))),  # masquerade: SYN out,
        ("from_netdev", into(tcp(80, 40000, "SA"))),  # SYN-ACK in,
        ("from_container", out_of(tcp(40000, 80, "A"))),  # ACK out: established
        ("from_netdev", into(tcp(50000, 8080), src=client)),  # published port: SYN in,
        ("from_container", out_of(tcp(80, 50000, "SA"), dst=client)),  # SYN-ACK out,
        ("from_netdev", into(tcp(50000, 8080, "A"), src=client)),  # ACK in: established
    ]
    redirect, ttl = TC_ACT_REDIRECT, PACKET_TTL
    paths = [
        PacketPath(
            PACKET_BASELINE,  # same-host redirect: the destination MAC rewritten, no TTL
            "from_container",
            _with_ttl(out_of(tcp(40000, 80), dst=cont), ttl),
            redirect,
            "REASON_REDIRECT",
            None,
        ),
        PacketPath(
            "snat_established_ns",
            "from_container",
            _with_ttl(out_of(tcp(40000, 80, "A")), ttl),
            redirect,
            "REASON_SNAT",
            (host, 40000, remote, 80),
        ),
        PacketPath(
            "snat_reply_ns",
            "from_netdev",
            _with_ttl(into(tcp(80, 40000, "A")), ttl),
            redirect,
            "REASON_REV_NAT",
            (remote, 80, cont, 40000),
        ),
        PacketPath(
            "dnat_established_ns",
            "from_netdev",
            _with_ttl(into(tcp(50000, 8080, "A"), src=client), ttl),
            redirect,
            "REASON_DNAT",
            (client, 50000, cont, 80),
        ),
        PacketPath(
            "dnat_reply_ns",
            "from_container",
            _with_ttl(out_of(tcp(80, 50000, "A"), dst=client), ttl),
            redirect,
            "REASON_REV_NAT",
            (host, 8080, client, 50000),
        ),
    ]
    return handshakes, paths


def _counted_runs(
    prog: Program,
    packet: bytes,
    ctx: bytes,
    calls: int,
    repeat: int,
    counted: Callable[[], int],
    what: str,
) -> list[int]:
    """The kernel's ns per run of ``calls`` test_run calls of ``repeat`` runs each, asserting
    that ``counted`` (the path's reason counter) grew by exactly one a run: a figure can never
    silently measure another path."""
    before = counted()
    durations = [test_run(prog, packet, repeat, ctx=ctx).duration_ns for _ in range(calls)]
    grown = counted() - before
    assert grown == calls * repeat, f"{what}: its reason grew by {grown} in {calls * repeat} runs"
    return durations


def _reason_count(maps: Any, reason: str) -> Callable[[], int]:
    """The packets ``reason`` has counted so far, read from the NAT maps' pydp_metrics."""
    return lambda: int(maps.metrics.counter(reason).packets)


def _prime_path(maps: Any, prog: Program, path: PacketPath, ctx: bytes) -> None:
    """Run ``path``'s packet once: its verdict, one count of its reason, the tuple it leaves
    with; then copy its connection's entry (CT_ESTABLISHED) under that tuple, so the runs
    after the first (on their own output) take the same path."""
    before = maps.metrics.counter(path.reason).packets
    r = test_run(prog, path.packet, ctx=ctx)
    assert r.verdict == path.verdict, f"{path.metric}: verdict {r.verdict}"
    grown = maps.metrics.counter(path.reason).packets - before
    assert grown == 1, f"{path.metric}: {path.reason} grew by {grown}"
    if path.translated is None:
        return
    src, sport, dst, dport = path.translated
    left = _tuple(r.packet)
    assert left == (IPAddress(src), sport, IPAddress(dst), dport), f"{path.metric}: left as {left}"
    assert r.packet[22] == PACKET_TTL - 1, f"{path.metric}: TTL {r.packet[22]}, not routed"
    entry = maps.nat[_nat_key(path.packet, path.program)]
    assert entry.state_name == "CT_ESTABLISHED", f"{path.metric}: {entry}"
    maps.nat[_nat_key(r.packet, path.program)] = entry


def test_nat_per_packet(results: Results, bpffs_root: Path, routed_netns: str) -> None:
    """ns per packet of the SNAT and DNAT paths of established connections (and their replies)
    from BPF_PROG_TEST_RUN, each beside from_container's same-host redirect in the same rounds;
    every run counted its path's reason."""
    packets, table = _from_tests("tests.bpf.packets"), _from_tests("tests.bpf.test_nat")
    handshakes, paths = _packet_paths(table)
    root = bpffs_root / "nat-packets"
    with (
        BpfObject("endpoint.bpf.o", pin_root=root) as ep,
        BpfObject("uplink.bpf.o", pin_root=root) as up,
    ):
        ep.load()
        up.load()
        maps = table.Maps(up)
        progs = {
            "from_container": ep.program("from_container"),
            "from_netdev": up.program("from_netdev"),
        }
        ctx = packets.skb_ctx(table.LO)
        samples: dict[str, list[float]] = {p.metric: [] for p in paths}
        try:
            maps.reset(table.BASE)
            with entered(routed_netns):  # the uplink's route: SNAT and replies leave through it
                for name, pkt in handshakes:
                    verdict = test_run(progs[name], pkt, ctx=ctx).verdict
                    assert verdict == TC_ACT_REDIRECT, f"handshake: {name} verdict {verdict}"
                for path in paths:
                    _prime_path(maps, progs[path.program], path, ctx)
                for rnd in range(PACKET_ROUNDS + 1):  # round 0 warms up and is dropped
                    for path in paths:
                        ns = _counted_runs(
                            progs[path.program],
                            path.packet,
                            ctx,
                            PACKET_CALLS,
                            PACKET_REPEAT,
                            _reason_count(maps, path.reason),
                            path.metric,
                        )
                        if rnd:
                            samples[path.metric].append(median(ns))
        finally:
            maps.reset()
    m = {k: median(v) for k, v in samples.items()}
    for metric, value in m.items():
        if metric != PACKET_BASELINE:
            results.add(metric, value, "ns", PACKET_BASELINE, m[PACKET_BASELINE])
    print(f"per packet: samples by round {samples}")


# --- issue 4's last two figures: memory of a 1,000-port range, XDP live-frame packet rate ---

RANGE = (20000, 20999)  # the published range: one pydp_ports entry per port, one proxy each
RANGE_PORTS = RANGE[1] - RANGE[0] + 1
PROXY_BACKEND = CONTAINER_IP  # socat connects there only on accept: never, here
PROXY_START_SECONDS = 120  # bound on 1,000 socat processes all listening
PROXY_STOP_SECONDS = 10  # SIGTERM grace for all of them together, then SIGKILL
BPF_F_NO_PREALLOC = 1
HTAB_ELEM_HEADER = 48  # sizeof(struct htab_elem), x86-64 (its union holds a bpf_lru_node)
NAT_HOST = "10.99.0.6/24"  # the uplink of the pydp host of these two figures
FAST_PORT = 9999  # published UDP port of the live-frame run (-p 9999:9999/udp)
FAST_SPORT = 40000
FAST_TTL = 255  # the frame's TTL: each pass of a recycled page decrements it (see below)
LIVE_BATCH = 64  # frames a batch (NAPI's budget); every frame of a batch has its own page
LIVE_PASSES = 250  # passes a page may take before its TTL nears 1: frames a call / batch
LIVE_CALL = LIVE_BATCH * LIVE_PASSES  # frames a BPF_PROG_RUN call (a fresh page pool each)
LIVE_ROUNDS = 5  # measured rounds, after one dropped warm-up round
LIVE_ROUND_FRAMES = LIVE_CALL * 13  # ~208,000 frames a round, ~1e6 measured in all
TEST_RUN_REPEAT = FAST_TTL - 2  # plain test_run: repeats a call (the TTL bounds them too)
TEST_RUN_CALLS = 800  # calls a round: ~200,000 packets
BPF_F_TEST_XDP_LIVE_FRAMES = 1 << 1
ENOTSUPP = 524  # the kernel's internal "operation not supported", as BPF returns it
XDP_REDIRECT = 4
XDP_MD_SIZE = 24  # struct xdp_md: data, data_end, data_meta, ingress_ifindex, rx_queue, egress
IPPROTO_UDP = 17


def _results_file() -> Path:
    """The suite's file (bench/conftest.py's rule: ``$PYDP_BENCH_RESULTS`` or bench/results)."""
    return Path(os.environ.get("PYDP_BENCH_RESULTS") or REPO / "bench" / "results") / "nat.json"


@pytest.fixture(scope="module", autouse=True)
def _keep_unmeasured_rows(request: pytest.FixtureRequest, results: Results) -> Iterator[None]:
    """On a run of only some of this module's tests (``-k``), the rows the others wrote last
    time are kept in nat.json (the results fixture rewrites the whole file): re-measured rows
    replace theirs in place, new ones are appended. A run of the whole module writes only
    what it measured. Scope: module. Depends on: results (its teardown writes after this)."""
    yield
    module = request.module
    every = {n for n, f in vars(module).items() if n.startswith("test_") and callable(f)}
    ran = {i.name.split("[")[0] for i in request.session.items if i.path == request.path}
    path = _results_file()
    if every <= ran or not results.rows or not path.exists():
        return
    fresh = {(r.metric, r.baseline): r for r in results.rows}
    kept = [fresh.pop((r.metric, r.baseline), r) for r in load_rows(path)]
    results.rows[:] = kept + list(fresh.values())


def _pydp_node(topo: Topology, bpffs_root: Path, tmp: pytest.TempPathFactory) -> PydpNode:
    host = topo.add_host("natfigures")
    host.connect_fabric(NAT_HOST, ifname="eth0")
    host.ip("route", "add", "default", "via", OUTSIDE)
    node: PydpNode = _from_tests("tests.netns.conftest").PydpNode(
        host, tmp.mktemp("nat-figures") / "state", bpffs_root / "nat-figures"
    )
    return node


@pytest.fixture(scope="module")
def figures_node(
    topology_module: Topology, bpffs_root: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PydpNode]:
    """A pydp host (uplink eth0 10.99.0.6/24, XDP on) with no container yet.

    Scope: module. Depends on: topology_module, bpffs_root (pins under
    ``<root>/nat-figures``). Its containers are killed and the host ``pydp system reset``
    after the module, even on failure.
    """
    _install_missing(NAT_APT_PACKAGES)
    node = _pydp_node(topology_module, bpffs_root, tmp_path_factory)
    try:
        node("system", "config", "--xdp", "on")
        yield node
    finally:
        _cleanup_pydp(node)


def _netns_pids(netns: str) -> list[int]:
    """The processes whose network namespace is ``netns``."""
    listed = run_cmd(["ip", "netns", "pids", netns], timeout=10).stdout
    return [int(word) for word in listed.split() if word.isdigit()]


MAP_FDINFO = ("map_type", "key_size", "value_size", "max_entries", "map_flags", "memlock")


def _map_fdinfo(name: str, root: Path) -> dict[str, int]:
    """The kernel's view of a pinned map, as ``bpftool map show`` gives it: the MAP_FDINFO
    fields of /proc/self/fdinfo/FD for an fd on it."""
    with Map.open_pinned(name, root) as m:
        text = Path(f"/proc/self/fdinfo/{m.fd}").read_text()
    fields = dict(re.findall(r"^(\w+):\s+(\S+)$", text, re.M))
    return {k: int(fields[k], 0) for k in MAP_FDINFO}


def _htab_elem_size(key_size: int, value_size: int) -> int:
    """Bytes of one preallocated element of a BPF hash map (kernel/bpf/hashtab.c:
    sizeof(struct htab_elem) + round_up(key_size, 8) + round_up(value_size, 8))."""
    return HTAB_ELEM_HEADER + -(-key_size // 8) * 8 + -(-value_size // 8) * 8


@dataclass
class PydpRange:
    """What publishing the range cost pydp."""

    entries: int  # pydp_ports entries written
    processes: int  # processes started besides the container's own
    elem_bytes: int  # one element, by the hash map's element-size formula
    memlock: int  # the whole pydp_ports map (preallocated at load: a fixed ceiling)
    max_entries: int


def _publish_range(node: PydpNode) -> PydpRange:
    """``pydp run -p 20000-20999:20000-20999`` on one container: the pydp_ports entries it
    wrote (counted before and after) and the processes it started in the host namespace and
    the container's (only the container's own command may appear)."""
    with Map.open_pinned(PORTS_MAP, node.bpffs) as m:
        before = len(m.lookup_all())
    host_pids = set(_netns_pids(node.host.netns))
    spec = f"{RANGE[0]}-{RANGE[1]}:{RANGE[0]}-{RANGE[1]}"
    node("run", "--name", "range", "-d", "-p", spec, "--", "sleep", "3600", timeout=120)
    with Map.open_pinned(PORTS_MAP, node.bpffs) as m:
        entries = len(m.lookup_all()) - before
    new_host = set(_netns_pids(node.host.netns)) - host_pids
    sandbox = node.json("sandbox", "inspect", "range")[0]["Netns"]
    in_sandbox = _netns_pids(sandbox)
    assert not new_host, f"pydp left processes in the host namespace: {sorted(new_host)}"
    assert len(in_sandbox) == 1, f"the container holds {in_sandbox}, not its command alone"
    info = _map_fdinfo(PORTS_MAP, node.bpffs)
    assert not info["map_flags"] & BPF_F_NO_PREALLOC, f"pydp_ports is not preallocated: {info}"
    elem = _htab_elem_size(info["key_size"], info["value_size"])
    print(f"\npydp_ports: {info}, element {elem} bytes")
    return PydpRange(
        entries, len(new_host) + len(in_sandbox) - 1, elem, info["memlock"], info["max_entries"]
    )


def _start_proxies(ns: Namespace, ports: range) -> list[subprocess.Popen[bytes]]:
    """One socat per port (docker-proxy's shape: a process a published port), each its own
    session; started through ``nsenter --net`` (no fork: the pid is socat's)."""
    procs: list[subprocess.Popen[bytes]] = []
    for port in ports:
        cmd = ["socat", f"TCP-LISTEN:{port},fork,reuseaddr", f"TCP:{PROXY_BACKEND}:{port}"]
        procs.append(
            subprocess.Popen(
                exec_argv(cmd, ns.netns, own_sysfs=False),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        )
    return procs


def _wait_listening(ns: Namespace, count: int, procs: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + PROXY_START_SECONDS
    while True:
        listening = len(ns.run(["ss", "-Hltn"], timeout=30).stdout.splitlines())
        if listening >= count:
            return
        dead = [p.pid for p in procs if p.poll() is not None]
        assert not dead, f"{len(dead)} socat proxies exited, e.g. pid {dead[0]}"
        assert time.monotonic() < deadline, f"{listening}/{count} proxies listening"
        time.sleep(0.2)


def _stop_proxies(procs: list[subprocess.Popen[bytes]], ns: Namespace) -> None:
    """SIGTERM every proxy, wait PROXY_STOP_SECONDS for all, SIGKILL the rest and reap
    them; then SIGKILL anything still in the proxy namespace (bounded throughout)."""
    for p in procs:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
    deadline = time.monotonic() + PROXY_STOP_SECONDS
    for p in procs:
        try:
            p.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
    deadline = time.monotonic() + PROXY_STOP_SECONDS
    for p in procs:  # reap the killed ones
        with contextlib.suppress(subprocess.TimeoutExpired):
            p.wait(max(0.0, deadline - time.monotonic()))
    kill_netns_pids(ns.netns)


def _pss_bytes(pid: int) -> tuple[int, int]:
    """(PSS, RSS) of one process in bytes, from /proc/PID/smaps_rollup."""
    text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    kb = {k: int(v) for k, v in re.findall(r"^(Pss|Rss):\s+(\d+) kB$", text, re.M)}
    return kb["Pss"] * 1024, kb["Rss"] * 1024


def _proxy_range(topo: Topology) -> tuple[int, int]:
    """Summed PSS and RSS of 1,000 listening socat proxies, one a port of the range, in a
    namespace of their own; every one is stopped before returning, even on failure."""
    ns = topo.add_host("natproxies")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs = _start_proxies(ns, range(RANGE[0], RANGE[1] + 1))
        _wait_listening(ns, RANGE_PORTS, procs)
        assert sorted(_netns_pids(ns.netns)) == sorted(p.pid for p in procs)
        sizes = [_pss_bytes(p.pid) for p in procs]
    finally:
        _stop_proxies(procs, ns)
    return sum(s[0] for s in sizes), sum(s[1] for s in sizes)


def test_published_range_memory(
    results: Results, figures_node: PydpNode, topology_module: Topology
) -> None:
    """Memory of a published range of 1,000 ports: the kernel memory of pydp's pydp_ports
    entries (per element, and the map's preallocated whole as a ceiling), no process added,
    beside 1,000 userland proxies (socat, one a port as docker-proxy runs) summed by PSS."""
    pydp = _publish_range(figures_node)
    assert pydp.entries == RANGE_PORTS, f"pydp_ports grew by {pydp.entries}"
    pss, rss = _proxy_range(topology_module)
    print(f"\n{RANGE_PORTS} socat proxies: PSS {pss} bytes, RSS {rss} bytes")
    share = pydp.memlock / pydp.max_entries  # the map's memlock spread over its slots
    results.add("ports_1000_pydp_map_entries", pydp.entries, "entries")
    results.add("ports_1000_pydp_processes", pydp.processes, "processes")
    results.add("ports_1000_socat_proxy_processes", RANGE_PORTS, "processes")
    base = {
        "ports_1000_pydp_htab_elem_bytes": pydp.entries * pydp.elem_bytes,
        "ports_1000_pydp_memlock_share_bytes": pydp.entries * share,
        "pydp_ports_map_memlock_bytes_ceiling": float(pydp.memlock),
    }
    for metric, value in base.items():
        results.add(metric, value, "bytes")
    for metric, value in base.items():
        results.add("ports_1000_socat_proxy_pss_bytes", pss, "bytes", metric, value)


# XDP live frames. BPF_PROG_RUN with BPF_F_TEST_XDP_LIVE_FRAMES runs the uplink's attached
# xdp_uplink on a frame as though eth0 received it, and really performs the verdict: the
# XDP_REDIRECT into the container's veth is queued on its peer and delivered by veth's NAPI
# (which runs when the batch ends, inside the timed loop). The kernel feeds each run a page
# from a pool made per call, and a page that comes back after delivery is reused with its
# content as the program left it (Documentation/bpf/bpf_prog_run.rst): already translated,
# TTL one lower. So each call is bounded to LIVE_PASSES uses of a page (TTL stays > 1), and
# a second conntrack entry, for the translated tuple, makes a reused frame take the same
# established path (lookup, rewrite, TTL, MACs, redirect) as a fresh one.


@dataclass
class FastPath:
    """The published UDP port's frame and the programs attached on the pydp host."""

    node: PydpNode
    container: Namespace  # the sandbox behind FAST_PORT (nothing listens there)
    container_ip: IPAddress
    container_mac: EUI
    frame: bytes  # outside client -> uplink:FAST_PORT, valid IP and UDP checksums
    xdp: Program  # xdp_uplink as attached on eth0
    tc: Program  # from_netdev as attached on eth0's TC ingress
    xdp_ctx: bytes
    skb_ctx: bytes

    def counters(self) -> dict[str, int]:
        """pydp's packets per reason so far."""
        with Map.open_pinned(METRICS_MAP, self.node.bpffs) as raw:
            return {reason_name(k): c.packets for k, c in MetricsMap(raw).snapshot().items()}


def _xdp_md(ifindex: int, size: int) -> bytes:
    """struct xdp_md for BPF_PROG_RUN: the frame as received on ``ifindex``, queue 0."""
    return struct.pack("<6I", 0, size, 0, ifindex, 0, 0)


def _attached_program(prog_id: int, name: str, prog_type: int, stack: ExitStack) -> Program:
    fd = lib.bpf_prog_get_fd_by_id(prog_id)
    if fd < 0:
        raise DatapathError.from_errno(f"open program {name} (id {prog_id})", ffi.errno)
    stack.callback(os.close, fd)
    return Program(name, fd, prog_type, name)


def _xdp_live_run(prog: Program, frame: bytes, ctx: bytes, repeat: int) -> int:
    """One BPF_PROG_RUN of ``prog`` in live-frame mode (the loader's test_run has no flags
    or batch_size; libbpf 1.1's bpf_test_run_opts does): the kernel's ns per frame."""
    opts = ffi.new("struct bpf_test_run_opts *")
    opts.sz = ffi.sizeof("struct bpf_test_run_opts")
    data, ctx_in = ffi.from_buffer(frame), ffi.from_buffer(ctx)
    opts.data_in, opts.data_size_in = data, len(frame)
    opts.ctx_in, opts.ctx_size_in = ctx_in, len(ctx)
    opts.repeat, opts.batch_size = repeat, LIVE_BATCH
    opts.flags = BPF_F_TEST_XDP_LIVE_FRAMES
    ret = lib.bpf_prog_test_run_opts(prog.fd, opts)
    if ret != 0:
        raise DatapathError.from_errno(f"live-frame run of {prog.name} x{repeat}", -ret)
    return int(opts.duration)


def _run_fast_container(node: PydpNode) -> tuple[Namespace, IPAddress, EUI]:
    node("run", "--name", "fast", "-d", "-p", f"{FAST_PORT}:{FAST_PORT}/udp", "--", "sleep", "3600")
    info = node.json("sandbox", "inspect", "fast")[0]
    net = info["Networks"]["bridge"]
    ns = Namespace(node.host.topology, "natfigures_fast", info["Netns"])
    return ns, IPAddress(net["IPAddress"]), EUI(net["MacAddress"])


def _fast_path(node: PydpNode, stack: ExitStack) -> FastPath:
    """Run the published container and find the programs pydp attached on the uplink (the
    caller is inside the host namespace: ifindexes, XDP and TC queries are resolved there)."""
    container, ip, mac = _run_fast_container(node)
    uplink = node.host.link("eth0")
    frame = udp4_frame(
        EUI("02:00:0a:63:00:01"),
        uplink.mac,
        IPAddress(OUTSIDE),
        IPAddress(NAT_HOST.split("/")[0]),
        FAST_SPORT,
        FAST_PORT,
        bytes(18),  # a 60-byte frame, the Ethernet minimum
        FAST_TTL,
    )
    xdp_id = xdp_attached(uplink.ifindex)
    tc = tc_attached(uplink.ifindex, root=node.bpffs)
    if not xdp_id or tc is None:
        pytest.skip(f"xdp_uplink ({xdp_id}) or from_netdev ({tc}) is not attached on eth0")
    skb = _from_tests("tests.bpf.packets").skb_ctx(uplink.ifindex)
    return FastPath(
        node,
        container,
        ip,
        mac,
        frame,
        _attached_program(xdp_id, "xdp_uplink", 6, stack),  # BPF_PROG_TYPE_XDP
        _attached_program(tc.prog_id, "from_netdev", 3, stack),  # BPF_PROG_TYPE_SCHED_CLS
        _xdp_md(uplink.ifindex, len(frame)),
        skb,
    )


def _check_translated(fp: FastPath, out: bytes, what: str) -> None:
    """``out`` goes to the container: its MAC, its address, the container port."""
    assert out[:6] == fp.container_mac.packed, f"{what}: destination MAC {out[:6].hex()}"
    assert out[30:34] == fp.container_ip.packed, f"{what}: destination {out[30:34].hex()}"
    assert struct.unpack("!H", out[36:38])[0] == FAST_PORT, f"{what}: port {out[36:38].hex()}"


def _prime(fp: FastPath) -> None:
    """One frame through xdp_uplink (not live) opens the connection (the DNAT new path);
    its ingress entry is copied to the translated tuple, for reused pages (see above); the
    established path then translates both frames, at XDP and at TC."""
    r = test_run(fp.xdp, fp.frame, ctx=fp.xdp_ctx)
    assert r.verdict == XDP_REDIRECT, f"xdp_uplink: verdict {r.verdict}"
    _check_translated(fp, r.packet, "xdp_uplink, new connection")
    client, uplink = IPAddress(OUTSIDE), IPAddress(NAT_HOST.split("/")[0])
    with Map.open_pinned(NAT_MAP, fp.node.bpffs) as raw:
        nat = NatMap(raw)
        entry = nat[NatKey(client, uplink, FAST_SPORT, FAST_PORT, IPPROTO_UDP, True)]
        assert entry.flags & CONSTANTS["NAT_F_DNAT"], f"not a DNAT entry: {entry}"
        key = NatKey(client, fp.container_ip, FAST_SPORT, FAST_PORT, IPPROTO_UDP, True)
        nat[key] = dataclasses.replace(entry, expires=monotonic_ns() + 3600 * 10**9)
    for frame, what in ((fp.frame, "established"), (r.packet, "a reused page's frame")):
        again = test_run(fp.xdp, frame, ctx=fp.xdp_ctx)
        assert again.verdict == XDP_REDIRECT, f"xdp_uplink, {what}: verdict {again.verdict}"
        _check_translated(fp, again.packet, f"xdp_uplink, {what}")
    tc = test_run(fp.tc, fp.frame, ctx=fp.skb_ctx)
    assert tc.verdict == 7, f"from_netdev, established: verdict {tc.verdict}"  # REDIRECT
    _check_translated(fp, tc.packet, "from_netdev, established")


def _live_evidence(fp: FastPath) -> dict[str, int]:
    """What shows that live frames were translated and delivered: REASON_XDP_DNAT (and every
    other XDP reason), the container eth0's rx counters, and its UDP counters (nothing
    listens on the port: a good datagram counts NoPorts, a bad checksum InCsumErrors)."""
    snap = fp.counters()
    link = json.loads(fp.container.run(["ip", "-j", "-s", "link", "show", "dev", "eth0"]).stdout)
    rx = link[0]["stats64"]["rx"]
    snmp = [ln.split() for ln in fp.container.run(["cat", "/proc/net/snmp"]).stdout.splitlines()]
    names, values = (row[1:] for row in snmp if row[0] == "Udp:")
    udp = dict(zip(names, map(int, values), strict=True))
    other = sum(n for r, n in snap.items() if r.startswith("REASON_XDP") and r != XDP_REASON)
    return {
        "xdp_dnat": snap.get(XDP_REASON, 0),
        "xdp_other": other,
        "rx": int(rx["packets"]),
        "rx_dropped": int(rx["dropped"]),
        "udp_noports": udp["NoPorts"],
        "udp_csum_errors": udp["InCsumErrors"],
    }


def _live_round(fp: FastPath) -> tuple[float, float, float, dict[str, int]]:
    """LIVE_ROUND_FRAMES live frames in calls of LIVE_CALL: frames/s by the kernel's clock,
    veth-delivered frames/s by the same clock, frames/s by the wall clock (the page-pool
    set-up of each call included), and what the evidence counters grew by."""
    before = _live_evidence(fp)
    kernel_ns = 0
    start = time.perf_counter()
    for _ in range(LIVE_ROUND_FRAMES // LIVE_CALL):
        kernel_ns += _xdp_live_run(fp.xdp, fp.frame, fp.xdp_ctx, LIVE_CALL) * LIVE_CALL
    wall = time.perf_counter() - start
    after = _live_evidence(fp)
    grown = {k: after[k] - before[k] for k in after}
    pps = LIVE_ROUND_FRAMES * 1e9 / kernel_ns
    return pps, grown["rx"] * 1e9 / kernel_ns, LIVE_ROUND_FRAMES / wall, grown


def _skip_without_live_frames(fp: FastPath) -> None:
    """Skip, with the kernel's answer, where BPF_PROG_RUN has no live-frame mode (< 5.18)."""
    try:
        _xdp_live_run(fp.xdp, fp.frame, fp.xdp_ctx, LIVE_BATCH)
    except DatapathError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP, ENOTSUPP):
            pytest.skip(f"no XDP live frames on kernel {os.uname().release}: {exc}")
        raise


def _established_ns(fp: FastPath, prog: Program, ctx: bytes, reason: str) -> float:
    """Mean ns per packet of the established path by plain test_run, in TEST_RUN_CALLS calls
    of TEST_RUN_REPEAT: the kernel runs the repeats on one buffer, each on the packet as
    the last left it (translated, TTL one lower), so a call stops before the TTL runs out;
    every run must count ``reason`` (the copied entry translates the translated frame)."""
    durations = _counted_runs(
        prog,
        fp.frame,
        ctx,
        TEST_RUN_CALLS,
        TEST_RUN_REPEAT,
        lambda: fp.counters().get(reason, 0),
        f"{prog.name} {reason}",
    )
    return float(sum(durations)) / len(durations)


def _check_live(grown: dict[str, int]) -> None:
    """Every live frame was translated and redirected by xdp_uplink (xdp_other counts the
    uplink's background, ARP and IPv6, which takes XDP_PASS), and frames arrived in the
    container with a valid UDP checksum."""
    assert grown["xdp_dnat"] == LIVE_ROUND_FRAMES, f"live frames: {grown}"
    assert grown["udp_noports"] > 0, f"nothing reached the container: {grown}"
    assert grown["udp_csum_errors"] == 0, f"bad UDP checksums in the container: {grown}"


def test_xdp_live_frames_rate(results: Results, figures_node: PydpNode) -> None:
    """Frames to a published UDP port run live through the uplink's xdp_uplink, which DNATs
    and redirects them into the container for real (BPF_F_TEST_XDP_LIVE_FRAMES): packets/s,
    beside the same frame's established path at XDP and at TC by plain test_run (translated,
    not redirected), alternated round by round."""
    if not (object_dir() / XDP_OBJECT).exists():
        pytest.skip(f"build/bpf/{XDP_OBJECT} does not exist")
    names = ("live_pps", "rx_pps", "wall_pps", "xdp_ns", "tc_ns")
    samples: dict[str, list[float]] = {n: [] for n in names}
    total: dict[str, int] = {}
    with ExitStack() as stack:
        stack.enter_context(figures_node.host.enter())
        fp = _fast_path(figures_node, stack)
        _prime(fp)
        _skip_without_live_frames(fp)
        for rnd in range(LIVE_ROUNDS + 1):  # round 0 warms up and is dropped
            pps, rx_pps, wall_pps, grown = _live_round(fp)
            _check_live(grown)
            xdp = _established_ns(fp, fp.xdp, fp.xdp_ctx, XDP_REASON)
            tc = _established_ns(fp, fp.tc, fp.skb_ctx, "REASON_DNAT")
            if rnd:
                values = (pps, rx_pps, wall_pps, xdp, tc)
                for name, v in zip(names, values, strict=True):
                    samples[name].append(float(v))
                total = {k: total.get(k, 0) + n for k, n in grown.items()}
    print(f"\nlive frames, samples by round: {samples}\nevidence over the rounds: {total}")
    m = {name: median(v) for name, v in samples.items()}
    live, tc_ns = "published_udp_xdp_live_redirect_pps", "published_udp_tc_test_run_established_ns"
    results.add(live, m["live_pps"], "packets/s")
    results.add("published_udp_xdp_live_veth_rx_pps", m["rx_pps"], "packets/s", live, m["live_pps"])
    results.add(
        "published_udp_xdp_live_wallclock_pps", m["wall_pps"], "packets/s", live, m["live_pps"]
    )
    results.add(tc_ns, m["tc_ns"], "ns")
    results.add("published_udp_xdp_test_run_established_ns", m["xdp_ns"], "ns", tc_ns, m["tc_ns"])
    results.add("published_udp_xdp_live_redirect_ns", 1e9 / m["live_pps"], "ns", tc_ns, m["tc_ns"])
