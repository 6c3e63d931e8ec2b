"""Suite ``overlay``: containers on two hosts, through pydp's overlay, the kernel's own overlay
and the bare underlay; endpoint propagation across hosts; encap and decap per packet.

One topology, one fabric (a Linux bridge, MTU 1500) and three paths, each from a client on
one host to a server on another:

- ``pydp``: `pydp.testing.cluster.pydp_cluster`: hosts h1 and h2 (10.97.0.1, .2), an etcd
  (10.97.0.9), ``pydp agent`` on each; ``network create -d overlay --subnet 10.80.0.0/24
  ov``; the server container ``srv`` run on h2, the client ``cli`` on h1 (MTU 1450, as pydp
  sets: the uplink's 1500 - 50). from_container tunnels through h1's one flow-based VXLAN
  device, from_overlay on h2's delivers;
- ``kernel``: Docker's and flannel's overlay as the kernel has it, built by the bench on
  hosts k1 and k2 (10.97.0.21, .22): per host a bridge ``br0`` with a ``vxlan`` device
  ``vx0`` (VNI 4242, UDP 4789, ``local`` the host's underlay address, ``nolearning proxy``)
  enslaved to it, and Docker's static entries for the remote container: its MAC in the
  VXLAN device's FDB toward the other host (``bridge fdb add ... self permanent``) and its
  address in the device's neighbour table (the ARP proxy answers from it); the containers
  (10.81.0.2, .3, MTU 1450) on the bridge. ``bridge-nf-call-iptables`` stays as a new
  namespace has it (1) and is recorded; no iptables rule is loaded;
- ``underlay``: no overlay at all, the ceiling: the client and server processes in the host
  namespaces of u1 and u2 (10.97.0.31, .32), on the fabric's addresses (MTU 1500).

Every client and server is pinned to CPU 0 (``taskset -c 0``) on every path, and the paths
are alternated round by round (U K P U K P ...), the median of each taken (and, for pydp
against the kernel, the median of the per-round ratios too: other load on the machine comes
and goes between rounds):

- TCP request/response rate (1-byte request and response on one connection) by
  ``bench/tools/rr.c`` (built as the ``bridge`` suite builds it), after a dropped warm-up;
- iperf3 throughput, as is (GSO: 64 KB packets, encapsulated whole and segmented by the
  devices) and with ``-M 1400`` plus TSO/GSO off on the client's interface (every packet a
  real segment, 1,388 bytes of payload on every path).

Endpoint propagation (pydp only): on h2, ``pydp run --name eN --network ov --ip A -d --
sleep 600``; from before the command starts, a prober in ``cli`` on h1
(``bench/tools/reach.py``) sends a UDP datagram to A every PROBE_INTERVAL (a closed port),
until the ICMP port unreachable of A itself comes back: a full round trip through both
agents' tunnels. The delay is counted from the endpoint's write to the store (seen by a
watch of /endpoints/ from the bench; the command goes on wiring the container after it, so
its return is no start) -- and, beside it, from the command's start. PROP_SAMPLES samples:
p50, and p99 by linear interpolation (with 20 samples it is close to the maximum, which is
recorded too).

Per packet (``BPF_PROG_TEST_RUN``, in the packet tables' routed namespace, maps filled by
hand as in tests/netns/test_overlay_datapath.py: network 1 with VNI 4096, a local client
behind ``lo``, a local server, a remote one on node 10.97.0.2):

- encap: from_container to the remote endpoint (tunnel key set, redirected to the VXLAN
  device; REASON_TUNNEL_TX), beside from_container's same-host redirect (REASON_REDIRECT);
- decap: test_run gives the program no tunnel metadata, so from_overlay run alone drops
  every packet (DROP_NO_TUNNEL: checked and printed). What is measured instead is
  ``bench/tools/tunnel_key.bpf.c``: a program that sets the key the VXLAN device attaches
  on receive (the VNI, the sending node) and tail-calls from_overlay (REASON_TUNNEL_RX),
  beside the same wrapper tail-calling from_container's same-host redirect (like for like)
  and tail-calling tc_pass (the wrapper's own cost, recorded; subtracted, it gives
  from_overlay's cost alone, an estimate). That is the device's way; the receive fast path
  (from_netdev decapsulating a VXLAN frame itself, REASON_TUNNEL_DECAP) needs no metadata
  and is measured directly, beside the same-host redirect -- one run per test_run call for
  both (the path shortens the frame test_run would reuse), so the timer's cost is in both.
- live (``BPF_ENABLE_STATS``: run time and run count per program, machine-wide while the
  bench holds the fd; the accounting's own clock reads are in each run's time): during rr over pydp,
  from_container (both hosts: requests and responses encapsulated) and from_netdev on the
  uplinks (both hosts: decapsulated by the fast path), beside from_container on a same-host
  rr (cli to a container
  ``loc`` on h1: REASON_REDIRECT). These are real frames with real tunnel metadata; every
  packet of the window is averaged in (pure TCP ACKs too, if any). pydp loads
  a copy of from_container per endpoint, so each group is the programs on the veths used.

Nothing asserts a target: the asserts check each figure measured its path (every run
completed; pydp's REASON_TUNNEL_TX / RX+DECAP, the kernel path's vx0 counters grew by a packet a
transaction or segment; test_run counted exactly its path's reason once a run).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cffi
import pytest
from netaddr import EUI, IPAddress

from bench._packets import tcp4_frame, udp4_frame
from bench._results import Results, median
from bench.test_bridge_bench import (
    APT_PACKAGES,
    BR_NF_SYSCTL,
    IPERF_MSS,
    MAX_SEGMENT_BYTES,
    rr_tool_fixture,
)
from bench.test_nat_bench import (
    _counted_runs,
    _from_tests,
    _record,
    _rounds,
    _set_offload,
    _tx_stats,
)
from pydp.agent.host import netns_prefix
from pydp.control.model import ENDPOINTS
from pydp.loader import BpfObject, Program, tc_attached, tcx_prog_ids, test_run
from pydp.maps import (
    CONFIG_MAP,
    CONSTANTS,
    ENDPOINT_MAP,
    IFACE_MAP,
    METRICS_MAP,
    NETWORKS_MAP,
    ConfigMap,
    Endpoint,
    EndpointMap,
    HostConfig,
    Iface,
    IfaceMap,
    MetricsMap,
    NetworkInfo,
    NetworkMap,
)
from pydp.maps.config import VNIS_MAP, VniMap
from pydp.maps.endpoint import Scoped
from pydp.net.netns import entered
from pydp.store import open_store
from pydp.testing import Host, Topology
from pydp.testing._proc import Background, kill_netns_pids
from pydp.testing.cluster import Cluster, pydp_cluster, wait_for
from pydp.testing.nodes import Namespace

# The packet tables' namespace (session scope, needs root): lo (1) and nh0 (8) exist there.
routed_netns = _from_tests("tests.bpf.conftest").routed_netns

REPO = Path(__file__).resolve().parent.parent
TOOLS = REPO / "bench" / "tools"
TOOL_DIR = REPO / "build" / "bench"
REACH_TOOL = TOOLS / "reach.py"
TUNNEL_KEY_SOURCE = TOOLS / "tunnel_key.bpf.c"

PATHS = ("underlay", "kernel", "pydp")  # the order of every round
RATIOS = (("underlay", None), ("kernel", "underlay"), ("pydp", "kernel"), ("pydp", "underlay"))
RR_ROUNDS = 8  # measured rounds, after a dropped warm-up round
IPERF_ROUNDS = 5
RR_SECONDS = 1.5
WARMUP_SECONDS = 0.3
IPERF_SECONDS = 2  # iperf3 3.12 takes whole seconds
CPU = "0"  # every client and server of every path runs here
RR_PORT, IPERF_PORT = 7000, 5201
OVERLAY_MTU = 1450  # the fabric's 1500 - 50, as pydp sets its endpoints
REACH_SECONDS = 20  # bound on a path's first ping at set-up

OV_SUBNET, OV_NAME = "10.80.0.0/24", "ov"
KERNEL_VNI, KERNEL_PORT = 4242, 4789
KERNEL_HOSTS = {"k1": "10.97.0.21", "k2": "10.97.0.22"}
UNDERLAY_HOSTS = {"u1": "10.97.0.31", "u2": "10.97.0.32"}
KERNEL_CLIENT, KERNEL_SERVER = "10.81.0.2/24", "10.81.0.3/24"
KBRIDGE, KVXLAN = "br0", "vx0"

PROP_SAMPLES = 20
PROP_TIMEOUT = 5.0  # seconds a sample may take to become reachable
PROP_BUDGET = 150.0  # seconds for all samples: fewer are taken (and said) past it
PROBE_INTERVAL = 0.002  # seconds between the prober's datagrams
PROBE_LIMIT = 60  # seconds a prober runs at most (it is stopped after PROP_TIMEOUT anyway)
PROBE_PORT = 9  # nothing listens there: the new endpoint answers port unreachable
PROP_FIRST_HOST = 100  # eN gets 10.80.0.(100 + N)

TC_ACT_OK, TC_ACT_REDIRECT = 0, 7
PACKET_ROUNDS = 9  # measured rounds, after a dropped warm-up round
PACKET_CALLS, PACKET_REPEAT = 100, 1000  # a sample: 100,000 runs, the median call taken
ONCE_CALLS = 2000  # a sample of a path that changes its frame's length: one run a call
LO, NH0 = 1, 8  # ifindexes in routed_netns
UPLINK_IF, UPLINK_ADDR = 7, IPAddress("192.0.2.1")  # routed_netns's uplink (tests/bpf/conftest)
NEXT_HOP_MAC, UPLINK_MAC = EUI("02:00:00:00:01:02"), EUI("02:00:00:00:01:01")
PKT_VNI, PKT_NET = 4096, 1
ROUTER_MAC = EUI("02:42:ff:00:10:00")
LOCAL_A, LOCAL_B, REMOTE = IPAddress("10.80.0.2"), IPAddress("10.80.0.4"), IPAddress("10.80.0.3")
MAC_A, MAC_B, MAC_R = EUI("02:00:0a:50:00:02"), EUI("02:00:0a:50:00:04"), EUI("02:00:0a:50:00:03")
REMOTE_NODE = IPAddress("10.97.0.2")
ENDPOINT_F_REMOTE = CONSTANTS["ENDPOINT_F_REMOTE"]
IFACE_F_SCOPED = CONSTANTS["IFACE_F_SCOPED"]

BPF_STATS_RUN_TIME = 0
LIVE_ROUNDS = 4  # measured rounds of the live figure, alternated, after a warm-up
LIVE_SECONDS = 1.5

OVERLAY_APT_PACKAGES = APT_PACKAGES | {"bridge": "iproute2", "clang": "clang"}


def _percentile(samples: list[float], q: float) -> float:
    """The q-quantile (0..1) by linear interpolation between order statistics."""
    data = sorted(samples)
    pos = (len(data) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


@dataclass
class Case:
    """One path: the client (a container or a host namespace) and the server's address;
    ``counters`` gives what must grow by a packet a transaction on this path (none for the
    underlay)."""

    name: str
    client: Namespace
    client_if: str
    server_ip: str
    counters: Callable[[], dict[str, int]] = dict
    sending: tuple[str, ...] = ()  # counters that see the client's packets (iperf3's data)

    def check(
        self, before: dict[str, int], after: dict[str, int], at_least: int, what: str
    ) -> None:
        """Every counter of ``before`` grew by ``at_least`` (transactions, segments sent)."""
        for key in before:
            grown = after[key] - before[key]
            assert grown >= at_least, f"{self.name} {what}: {key} grew by {grown} < {at_least}"


@dataclass
class World:
    cluster: Cluster
    topology: Topology
    rr_tool: Path
    cases: dict[str, Case]
    pydp_client: Namespace
    local: Case  # cli to ``loc``, a container on h1 too: the same-host baseline
    kernel_host: Host  # k2, for its sysctl


def _pydp_counters(cluster: Cluster, node: str) -> dict[str, int]:
    return {name: c.packets for name, c in cluster.nodes[node].counters().items()}


def _sandbox(cluster: Cluster, topo: Topology, node: str, name: str) -> Namespace:
    netns = cluster.json(node, "sandbox", "inspect", name)[0]["Netns"]
    return Namespace(topo, f"{node}_{name}", netns)


def _start_servers(server: Namespace, rr_tool: Path, rr_running: bool = False) -> None:
    pin = ["taskset", "-c", CPU]
    if not rr_running:
        server.popen([*pin, str(rr_tool), "server", str(RR_PORT)]).wait_port(RR_PORT)
    server.popen([*pin, "iperf3", "-s", "-p", str(IPERF_PORT)]).wait_port(IPERF_PORT)


def _wait_listen(ns: Namespace, port: int) -> None:
    def listening() -> bool:
        out = ns.run(["ss", "-Hltn", "sport", "=", f":{port}"]).stdout
        return bool(out.strip())

    assert wait_for(listening, 10, 0.05), f"nothing listens on {port} in {ns.netns}"


def _reachable(client: Namespace, addr: str) -> None:
    def ping() -> bool:
        return client.run(["ping", "-c1", "-W1", addr], check=False).returncode == 0

    assert wait_for(ping, REACH_SECONDS, 0.2), f"{addr} unreachable from {client.netns}"


def _build_underlay(topo: Topology, rr_tool: Path) -> Case:
    (c, caddr), (s, saddr) = UNDERLAY_HOSTS.items()
    client, server = topo.add_host(c), topo.add_host(s)
    client.connect_fabric(f"{caddr}/24", ifname="eth0")
    server.connect_fabric(f"{saddr}/24", ifname="eth0")
    _start_servers(server, rr_tool)
    _reachable(client, saddr)
    return Case("underlay", client, "eth0", saddr)


def _kernel_host(topo: Topology, name: str, addr: str) -> Host:
    """A host with Docker's overlay plumbing: br0 holding vx0 (the VNI, nolearning, proxy)."""
    host = topo.add_host(name)
    host.connect_fabric(f"{addr}/24", ifname="eth0")
    host.ip_batch(
        [
            f"link add {KBRIDGE} type bridge",
            f"link add {KVXLAN} mtu {OVERLAY_MTU} type vxlan id {KERNEL_VNI}"
            f" dstport {KERNEL_PORT} local {addr} nolearning proxy",
            f"link set {KVXLAN} master {KBRIDGE}",
            f"link set {KVXLAN} up",
            f"link set {KBRIDGE} up",
        ]
    )
    return host


def _build_kernel(topo: Topology, rr_tool: Path) -> tuple[Case, Host]:
    (c, caddr), (s, saddr) = KERNEL_HOSTS.items()
    k1, k2 = _kernel_host(topo, c, caddr), _kernel_host(topo, s, saddr)
    client = k1.add_container("kcli", KERNEL_CLIENT, mtu=OVERLAY_MTU, bridge=KBRIDGE)
    server = k2.add_container("ksrv", KERNEL_SERVER, mtu=OVERLAY_MTU, bridge=KBRIDGE)
    for host, peer, peer_underlay in ((k1, server, saddr), (k2, client, caddr)):
        assert peer.address is not None
        mac = str(peer.mac)
        host.run(
            ["bridge", "fdb", "add", mac, "dev", KVXLAN, "dst", peer_underlay, "self", "permanent"]
        )
        host.ip(
            "neigh", "add", str(peer.address.ip), "lladdr", mac, "dev", KVXLAN, "nud", "permanent"
        )
    _start_servers(server, rr_tool)
    server_ip = KERNEL_SERVER.split("/")[0]
    _reachable(client, server_ip)

    def counters() -> dict[str, int]:
        return {f"{h.name} {KVXLAN} tx": _tx_stats(h, KVXLAN)[0] for h in (k1, k2)}

    return Case("kernel", client, "eth0", server_ip, counters, (f"k1 {KVXLAN} tx",)), k2


def _build_pydp(cluster: Cluster, topo: Topology, rr_tool: Path) -> tuple[Case, Case]:
    """The overlay network, ``srv`` on h2 (rr server as its command, iperf3 beside), ``cli``
    and ``loc`` (an rr server, the same-host baseline of the live figure) on h1."""
    cluster("h1", "network", "create", "-d", "overlay", "--subnet", OV_SUBNET, OV_NAME)
    rr = ["taskset", "-c", CPU, str(rr_tool), "server", str(RR_PORT)]
    cluster("h2", "run", "--name", "srv", "--network", OV_NAME, "-d", "--", *rr)
    cluster("h1", "run", "--name", "loc", "--network", OV_NAME, "-d", "--", *rr)
    cluster("h1", "run", "--name", "cli", "--network", OV_NAME, "-d", "--", "sleep", "3600")
    server = _sandbox(cluster, topo, "h2", "srv")
    client = _sandbox(cluster, topo, "h1", "cli")
    local = _sandbox(cluster, topo, "h1", "loc")
    _wait_listen(server, RR_PORT)
    _wait_listen(local, RR_PORT)
    _start_servers(server, rr_tool, rr_running=True)
    server_ip, local_ip = cluster.ip_of("srv"), cluster.ip_of("loc")
    mtu = json.loads(client.run(["ip", "-j", "link", "show", "dev", "eth0"]).stdout)[0]["mtu"]
    assert mtu == OVERLAY_MTU, f"pydp's client eth0 has MTU {mtu}"
    _reachable(client, server_ip)
    _reachable(client, local_ip)

    def counters() -> dict[str, int]:
        h1, h2 = _pydp_counters(cluster, "h1"), _pydp_counters(cluster, "h2")

        def rx(c: dict[str, int]) -> int:  # the device's way, or the uplink's fast path
            return c.get("REASON_TUNNEL_RX", 0) + c.get("REASON_TUNNEL_DECAP", 0)

        return {
            "h1 REASON_TUNNEL_TX": h1.get("REASON_TUNNEL_TX", 0),
            "h2 tunnel rx": rx(h2),
            "h2 REASON_TUNNEL_TX": h2.get("REASON_TUNNEL_TX", 0),
            "h1 tunnel rx": rx(h1),
        }

    def redirects() -> dict[str, int]:
        return {"h1 REASON_REDIRECT": _pydp_counters(cluster, "h1").get("REASON_REDIRECT", 0)}

    case = Case("pydp", client, "eth0", server_ip, counters, ("h1 REASON_TUNNEL_TX",))
    return case, Case("pydp_same_host", client, "eth0", local_ip, redirects)


def _sweep_sandboxes(cluster: Cluster) -> None:
    """Sandbox namespaces of the cluster's hosts still there after its reset: their
    processes killed and the namespaces deleted (a failed reset leaks nothing)."""
    listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False)
    names = re.findall(r"^(\S+)", listed.stdout, re.M)
    for node in cluster.nodes.values():
        prefix = netns_prefix(node.state_dir)
        for name in (n for n in names if n.startswith(prefix)):
            print(f"\nWARNING: sandbox {name} left after reset: removed")
            kill_netns_pids(name)
            subprocess.run(["ip", "netns", "delete", name], check=False)


rr_tool = rr_tool_fixture(OVERLAY_APT_PACKAGES)  # the rr tool, built for this module


@pytest.fixture(scope="module")
def world(
    topology_module: Topology,
    bpffs_root: Path,
    rr_tool: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[World]:
    """The three paths with their servers running, pinned.

    Scope: module. Depends on: topology_module (every namespace, and the servers started
    through it, removed at its teardown), bpffs_root (the pydp hosts' pins), rr_tool. The
    pydp cluster's agents are stopped and each host ``pydp system reset`` after the module,
    even on failure; sandboxes a failed reset left are removed after that.
    """
    tmp = tmp_path_factory.mktemp("overlay")
    cluster: Cluster | None = None
    try:
        with pydp_cluster(topology_module, bpffs_root, tmp, hosts=("h1", "h2")) as cluster:
            pydp_case, local = _build_pydp(cluster, topology_module, rr_tool)
            kernel_case, k2 = _build_kernel(topology_module, rr_tool)
            built = {
                "underlay": _build_underlay(topology_module, rr_tool),
                "kernel": kernel_case,
                "pydp": pydp_case,
            }
            cases = {name: built[name] for name in PATHS}  # a round's order
            yield World(cluster, topology_module, rr_tool, cases, pydp_case.client, local, k2)
    finally:
        if cluster is not None:
            _sweep_sandboxes(cluster)


def _rr_run(case: Case, rr_tool: Path, seconds: float) -> float:
    """Transactions per second of one rr client run; the path's counters must grow by one
    a transaction (each request and each response went through the overlay)."""
    target = case.server_ip
    cmd = ["taskset", "-c", CPU, str(rr_tool), "client", target, str(RR_PORT), str(seconds)]
    before = case.counters()
    out = case.client.run(cmd, timeout=seconds + 30).stdout
    after = case.counters()
    data = json.loads(out)
    assert data["transactions"] > 0, f"{case.name} rr: no transaction: {out}"
    case.check(before, after, int(data["transactions"]), "rr")
    return float(data["rate"])


def _iperf_run(case: Case, segmented: bool) -> float:
    """Gbit/s received by one iperf3 run; ``segmented``: ``-M 1400`` with TSO/GSO off on the
    client's interface. The path's counters grow by a packet a packet the client sent
    (apart from a few non-TCP ones: 95% is required)."""
    cmd = ["taskset", "-c", CPU, "iperf3", "-c", case.server_ip, "-p", str(IPERF_PORT)]
    cmd += ["-t", str(IPERF_SECONDS), "-J"]
    if segmented:
        cmd += ["-M", str(IPERF_MSS)]
        _set_offload(case.client, case.client_if, on=False)
    try:
        packets, nbytes = _tx_stats(case.client, case.client_if)
        before = case.counters()
        r = case.client.run(cmd, timeout=IPERF_SECONDS + 30, check=False)
        after = case.counters()
        packets_after, nbytes_after = _tx_stats(case.client, case.client_if)
    finally:
        if segmented:
            _set_offload(case.client, case.client_if, on=True)
    data = json.loads(r.stdout)
    assert "error" not in data, f"{case.name} iperf3: {data.get('error')}"
    received = data["end"]["sum_received"]
    assert received["bytes"] > 0, f"{case.name} iperf3: nothing received"
    sent = packets_after - packets
    if segmented:
        average = (nbytes_after - nbytes) / sent
        assert average < MAX_SEGMENT_BYTES, f"{case.name}: {average:.0f}-byte packets: GSO on"
    sending = {k: v for k, v in before.items() if k in case.sending}
    case.check(sending, after, int(sent * 0.95), "iperf3")
    return float(received["bits_per_second"]) / 1e9


def _record_paired(results: Results, metric: str, per_case: dict[str, list[float]]) -> None:
    """pydp / kernel round by round (the two ran seconds apart), the median of those ratios:
    a paired figure beside the ratio of medians, less moved by load that comes and goes."""
    ratios = [p / k for p, k in zip(per_case["pydp"], per_case["kernel"], strict=True)]
    print(f"{metric}: pydp / kernel by round {[round(r, 3) for r in ratios]}")
    results.add(metric, median(ratios), "ratio")


def test_request_response(results: Results, world: World) -> None:
    """TCP request/response rate across hosts: underlay, kernel overlay, pydp, client and
    server on CPU 0, alternated round by round."""
    tool = world.rr_tool
    samples = _rounds(
        world.cases,  # type: ignore[arg-type]
        RR_ROUNDS,
        {"rr": lambda c: _rr_run(c, tool, RR_SECONDS)},  # type: ignore[arg-type]
        {"rr": lambda c: _rr_run(c, tool, WARMUP_SECONDS)},  # type: ignore[arg-type]
    )
    _record(results, "cross_host_rr_{}_tps", "transactions/s", samples["rr"], RATIOS)
    _record_paired(results, "cross_host_rr_pydp_over_kernel_by_round", samples["rr"])


def test_throughput(results: Results, world: World) -> None:
    """iperf3 across hosts, with offload and with 1,400-byte segments, paths alternated."""
    samples = _rounds(
        world.cases,  # type: ignore[arg-type]
        IPERF_ROUNDS,
        {
            "gso": lambda c: _iperf_run(c, segmented=False),  # type: ignore[arg-type]
            "segmented": lambda c: _iperf_run(c, segmented=True),  # type: ignore[arg-type]
        },
        {},
    )
    _record(results, "cross_host_iperf3_{}_gbps", "Gbit/s", samples["gso"], RATIOS)
    _record(
        results,
        "cross_host_iperf3_mss1400_nogso_{}_gbps",
        "Gbit/s",
        samples["segmented"],
        RATIOS,
    )
    _record_paired(results, "cross_host_iperf3_pydp_over_kernel_by_round", samples["gso"])
    _record_paired(
        results, "cross_host_iperf3_mss1400_nogso_pydp_over_kernel_by_round", samples["segmented"]
    )


def test_kernel_overlay_bridge_netfilter(results: Results, world: World) -> None:
    """Records bridge-nf-call-iptables as the kernel overlay's hosts have it (1: bridged
    frames pass the IPv4 netfilter hooks, as on a Docker host; no rule is loaded)."""
    value = int(world.kernel_host.run(["cat", BR_NF_SYSCTL]).stdout)
    results.add("kernel_overlay_bridge_nf_call_iptables", value, "sysctl")


# --- endpoint propagation ---


def _probe(client: Namespace, addr: str) -> Background:
    """The prober, started in ``client`` and sending to ``addr`` when this returns."""
    cmd = [sys.executable, str(REACH_TOOL), addr, str(PROBE_PORT)]
    proc = client.popen([*cmd, str(PROBE_LIMIT), str(PROBE_INTERVAL)])
    assert wait_for(lambda: "sending" in proc.output(), 10, 0.01), proc.output()
    return proc


class StoreWrites:
    """When (CLOCK_MONOTONIC) each endpoint address was written to the store: a watch of
    /endpoints/ from a thread in host ``node``'s namespace (where etcd is reachable)."""

    def __init__(self, cluster: Cluster, node: str) -> None:
        self.at: dict[str, float] = {}
        self.stop = threading.Event()
        with cluster.host(node).enter():
            self.store = open_store(cluster.url)
            since = self.store.revision()
            self.thread = threading.Thread(target=self._run, args=(since,), daemon=True)
            self.thread.start()  # a thread inherits the namespace it was started from

    def _run(self, since: int) -> None:
        for event in self.store.watch(ENDPOINTS, since=since, stop=self.stop):
            if event.value is not None:
                addr = json.loads(event.value).get("address")
                self.at.setdefault(str(addr), time.monotonic())

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)
        self.store.close()


def _propagation_sample(world: World, writes: StoreWrites, i: int) -> tuple[float, float, float]:
    """(delay from the endpoint's write to the store to the first answer, from ``pydp
    run``'s start, the command's own time) in ms."""
    addr = f"{OV_SUBNET.rsplit('.', 1)[0]}.{PROP_FIRST_HOST + i}"
    proc = _probe(world.pydp_client, addr)
    try:
        argv = ["run", "--name", f"e{i}", "--network", OV_NAME, "--ip", addr, "-d", "--"]
        start = time.monotonic()
        world.cluster("h2", *argv, "sleep", "600")
        returned = time.monotonic()
        proc.wait(timeout=PROP_TIMEOUT)  # raises, the prober still running, past it
        output = proc.output()  # stop() discards it
    finally:
        proc.stop()
    data = json.loads(output.strip().splitlines()[-1])
    assert data["reached"] is not None, f"{addr}: not reached in {PROP_TIMEOUT} s: {data}"
    assert wait_for(lambda: addr in writes.at, 5), f"{addr}: no store write seen"
    stored = writes.at[addr]
    reached = float(data["reached"])
    return (reached - stored) * 1e3, (reached - start) * 1e3, (returned - start) * 1e3


def test_endpoint_propagation(results: Results, world: World) -> None:
    """Delay from an endpoint's creation on h2 (its write to the store, seen by a watch) to
    its first answer to a client on h1 through pydp (etcd store, both agents),
    PROP_SAMPLES samples: p50 and p99."""
    after_write: list[float] = []
    after_start: list[float] = []
    command: list[float] = []
    deadline = time.monotonic() + PROP_BUDGET
    writes = StoreWrites(world.cluster, "h1")
    try:
        for i in range(PROP_SAMPLES):
            if time.monotonic() > deadline:
                print(f"\nNOTE: propagation: {i} samples in the {PROP_BUDGET} s budget")
                break
            stored, start, cmd = _propagation_sample(world, writes, i)
            after_write.append(stored)
            after_start.append(start)
            command.append(cmd)
    finally:
        writes.close()
    print(f"\npropagation after the store write (ms): {[round(x, 1) for x in after_write]}")
    print(f"propagation after `pydp run` started (ms): {[round(x, 1) for x in after_start]}")
    print(f"`pydp run` itself (ms): {[round(x, 1) for x in command]}")
    n = float(len(after_write))
    results.add("propagation_samples", n, "samples")
    figures = (
        ("after_store_write", after_write),
        ("after_run_started", after_start),
    )
    for name, data in figures:
        results.add(f"propagation_{name}_p50_ms", _percentile(data, 0.5), "ms")
        results.add(f"propagation_{name}_p99_ms", _percentile(data, 0.99), "ms")
        results.add(f"propagation_{name}_max_ms", max(data), "ms")
    results.add("pydp_run_command_p50_ms", _percentile(command, 0.5), "ms")


# --- per packet: BPF_PROG_TEST_RUN ---


def _build_tunnel_key() -> Path:
    """Compile bench/tools/tunnel_key.bpf.c into build/bench (a private name renamed into
    place, as build_rr does)."""
    TOOL_DIR.mkdir(parents=True, exist_ok=True)
    out, tmp = TOOL_DIR / "tunnel_key.bpf.o", TOOL_DIR / f".tunnel_key.{os.getpid()}.o"
    cmd = ["clang", "-O2", "-g", "-target", "bpf", "-Wall", "-Werror"]
    cmd += ["-idirafter", "/usr/include/x86_64-linux-gnu", "-c", str(TUNNEL_KEY_SOURCE)]
    built = subprocess.run([*cmd, "-o", str(tmp)], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"build {TUNNEL_KEY_SOURCE.name}: {built.stderr.strip()}")
    tmp.replace(out)
    return out


@dataclass(frozen=True)
class PacketPath:
    """One per-packet figure: the program run (or tail-called by the wrapper), its packet,
    the verdict and the reason every run must count (None: tc_pass, which counts none)."""

    metric: str
    program: str
    packet: bytes
    verdict: int
    reason: str | None
    via_wrapper: bool
    once: bool = False  # one run a test_run call: the path resizes the frame test_run reuses


def _packet_paths() -> list[PacketPath]:
    a_to_r = tcp4_frame(MAC_A, ROUTER_MAC, LOCAL_A, REMOTE, 40000, 80)  # leaves for node 2
    a_to_b = tcp4_frame(MAC_A, ROUTER_MAC, LOCAL_A, LOCAL_B, 40000, 80)  # same host
    r_to_a = tcp4_frame(ROUTER_MAC, MAC_A, REMOTE, LOCAL_A, 80, 40000)  # out of the tunnel
    vxlan = struct.pack("!II", 0x08000000, PKT_VNI << 8)  # the I flag, the VNI
    inner = tcp4_frame(MAC_R, ROUTER_MAC, REMOTE, LOCAL_A, 80, 40000)
    on_wire = udp4_frame(NEXT_HOP_MAC, UPLINK_MAC, REMOTE_NODE, UPLINK_ADDR, 50123, 4789,
                         vxlan + inner)  # fmt: skip
    redirect = TC_ACT_REDIRECT
    return [
        PacketPath("from_container_redirect_ns", "from_container", a_to_b, redirect,
                   "REASON_REDIRECT", False),
        PacketPath("encap_from_container_tunnel_tx_ns", "from_container", a_to_r, redirect,
                   "REASON_TUNNEL_TX", False),
        PacketPath("wrapper_tc_pass_ns", "tc_pass", r_to_a, TC_ACT_OK, None, True),
        PacketPath("wrapper_from_container_redirect_ns", "from_container", a_to_b, redirect,
                   "REASON_REDIRECT", True),
        PacketPath("decap_wrapper_from_overlay_tunnel_rx_ns", "from_overlay", r_to_a, redirect,
                   "REASON_TUNNEL_RX", True),
        PacketPath("decap_from_netdev_fast_ns", "from_netdev", on_wire, redirect,
                   "REASON_TUNNEL_DECAP", False, once=True),
        PacketPath("from_container_redirect_once_ns", "from_container", a_to_b, redirect,
                   "REASON_REDIRECT", False, once=True),
    ]  # fmt: skip


def _fill_packet_maps(ep: BpfObject) -> MetricsMap:
    """Network 1 (VNI PKT_VNI), the VXLAN device NH0, A behind lo, B local, R on node 2."""
    ConfigMap(ep.map(CONFIG_MAP))[0] = HostConfig(UPLINK_IF, UPLINK_ADDR, vxlan_ifindex=NH0)
    NetworkMap(ep.map(NETWORKS_MAP))[PKT_NET] = NetworkInfo(False, ROUTER_MAC, PKT_VNI)
    VniMap(ep.map(VNIS_MAP))[PKT_VNI] = PKT_NET
    endpoints = EndpointMap(ep.map(ENDPOINT_MAP))  # an overlay's: keyed in its scope
    endpoints[Scoped(LOCAL_A, PKT_NET)] = Endpoint(LO, MAC_A, PKT_NET)
    endpoints[Scoped(LOCAL_B, PKT_NET)] = Endpoint(NH0, MAC_B, PKT_NET)
    remote = Endpoint(0, MAC_R, PKT_NET, ENDPOINT_F_REMOTE, REMOTE_NODE)
    endpoints[Scoped(REMOTE, PKT_NET)] = remote
    IfaceMap(ep.map(IFACE_MAP))[LO] = Iface(LOCAL_A, PKT_NET, IFACE_F_SCOPED)
    return MetricsMap(ep.map(METRICS_MAP))


def _check_once(prog: Program, path: PacketPath, ctx: bytes, metrics: MetricsMap) -> None:
    """One run: the verdict, one count of the reason, the frame's MACs as delivered."""
    before = metrics.counter(path.reason).packets if path.reason else 0
    r = test_run(prog, path.packet, ctx=ctx)
    assert r.verdict == path.verdict, f"{path.metric}: verdict {r.verdict}"
    if path.reason:
        grown = metrics.counter(path.reason).packets - before
        assert grown == 1, f"{path.metric}: {path.reason} grew by {grown}"
    if path.metric.startswith("encap"):
        assert r.packet[:12] == MAC_R.packed + ROUTER_MAC.packed, f"encap: {r.packet[:12].hex()}"
    if path.metric.startswith("decap"):  # delivered into A, from the router MAC
        assert r.packet[:12] == MAC_A.packed + ROUTER_MAC.packed, f"decap: {r.packet[:12].hex()}"


def test_encap_decap_per_packet(results: Results, bpffs_root: Path, routed_netns: str) -> None:
    """ns per packet of the encap path (from_container to a remote endpoint) and the decap
    path (from_overlay, given its tunnel key by the wrapper), each beside the same-host
    redirect measured the same way, alternated round by round."""
    wrapper_obj = _build_tunnel_key()
    packets = _from_tests("tests.bpf.packets")
    root = bpffs_root / "overlay-packets"
    paths = _packet_paths()
    samples: dict[str, list[float]] = {p.metric: [] for p in paths}
    with (
        BpfObject("endpoint.bpf.o", pin_root=root) as ep,
        BpfObject("overlay.bpf.o", pin_root=root) as ov,
        BpfObject("uplink.bpf.o", pin_root=root) as up,
        BpfObject("floor.bpf.o", pin_root=root) as floor,
        BpfObject(wrapper_obj, pin_root=root) as wrapper,
    ):
        ep.load()
        ov.load()
        up.load()
        floor.load()
        wrapper.set_rodata("TUN_VNI", PKT_VNI)
        wrapper.set_rodata("TUN_NODE", int(REMOTE_NODE))
        wrapper.load()
        progs = {
            "from_container": ep.program("from_container"),
            "from_overlay": ov.program("from_overlay"),
            "from_netdev": up.program("from_netdev"),
            "tc_pass": floor.program("tc_pass"),
        }
        with_key = wrapper.program("with_tunnel_key")
        slot = wrapper.map("bench_next")
        metrics = _fill_packet_maps(ep)
        ctx = packets.skb_ctx(LO)
        with entered(routed_netns):
            bare = test_run(progs["from_overlay"], paths[-2].packet, ctx=ctx)
            no_tunnel = metrics.counter("DROP_NO_TUNNEL").packets
            print(f"\nfrom_overlay alone under test_run: verdict {bare.verdict}, "
                  f"DROP_NO_TUNNEL {no_tunnel} (no tunnel metadata)")  # fmt: skip
            assert bare.verdict != TC_ACT_REDIRECT and no_tunnel >= 1
            for rnd in range(PACKET_ROUNDS + 1):  # round 0 checks, warms up, is dropped
                order = paths if rnd % 2 else paths[::-1]
                for path in order:
                    target = progs[path.program]
                    prog = with_key if path.via_wrapper else target
                    if path.via_wrapper:
                        slot.update(struct.pack("<I", 0), struct.pack("<I", target.fd))
                    if rnd == 0:
                        _check_once(prog, path, ctx, metrics)
                    ns = _sample(prog, path, ctx, metrics)
                    if rnd:
                        samples[path.metric].append(median(ns))
    print(f"per packet: samples by round {samples}")
    m = {k: median(v) for k, v in samples.items()}
    base, wbase = "from_container_redirect_ns", "wrapper_from_container_redirect_ns"
    results.add(base, m[base], "ns")
    results.add("encap_from_container_tunnel_tx_ns", m["encap_from_container_tunnel_tx_ns"],
                "ns", base, m[base])  # fmt: skip
    results.add("wrapper_tc_pass_ns", m["wrapper_tc_pass_ns"], "ns")
    results.add(wbase, m[wbase], "ns")
    decap = "decap_wrapper_from_overlay_tunnel_rx_ns"
    results.add(decap, m[decap], "ns", wbase, m[wbase])
    floor_ns = m["wrapper_tc_pass_ns"]
    results.add("decap_from_overlay_net_of_wrapper_ns", m[decap] - floor_ns, "ns",
                "from_container_redirect_net_of_wrapper_ns", m[wbase] - floor_ns)  # fmt: skip
    fast, once = "decap_from_netdev_fast_ns", "from_container_redirect_once_ns"
    results.add(once, m[once], "ns")  # one run a call: the timer's own cost in both
    results.add(fast, m[fast], "ns", once, m[once])


def _sample(prog: Program, path: PacketPath, ctx: bytes, metrics: MetricsMap) -> list[int]:
    """The kernel's ns per run of PACKET_CALLS calls of PACKET_REPEAT runs: every run counted
    the path's reason once (tc_pass counts none: each call's verdict is checked instead)."""
    reason = path.reason
    if reason is None:
        calls = [test_run(prog, path.packet, PACKET_REPEAT, ctx=ctx) for _ in range(PACKET_CALLS)]
        assert all(r.verdict == path.verdict for r in calls), f"{path.metric}: verdicts"
        return [r.duration_ns for r in calls]
    calls, repeat = (ONCE_CALLS, 1) if path.once else (PACKET_CALLS, PACKET_REPEAT)
    return _counted_runs(
        prog, path.packet, ctx, calls, repeat, lambda: metrics.counter(reason).packets, path.metric
    )


# --- per packet, live: BPF_ENABLE_STATS during rr ---

_ffi = cffi.FFI()
_ffi.cdef("int bpf_enable_stats(int type);")
_libbpf: Any = _ffi.dlopen("libbpf.so.1")


@contextlib.contextmanager
def _bpf_stats() -> Iterator[None]:
    """Run-time statistics of every BPF program on, while the block runs (the kernel counts
    them while any such fd is open; the sysctl kernel.bpf_stats_enabled is left alone)."""
    fd = _libbpf.bpf_enable_stats(BPF_STATS_RUN_TIME)
    if fd < 0:
        pytest.skip(f"BPF_ENABLE_STATS refused: {fd}")
    try:
        yield
    finally:
        os.close(fd)


def _prog_stats(prog_ids: list[int]) -> tuple[int, int]:
    """(run_time_ns, run_cnt) summed over the programs."""
    total_ns = total_cnt = 0
    for pid in sorted(set(prog_ids)):
        out = subprocess.run(
            ["bpftool", "-j", "prog", "show", "id", str(pid)],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        info = json.loads(out)
        total_ns += int(info.get("run_time_ns", 0))
        total_cnt += int(info.get("run_cnt", 0))
    return total_ns, total_cnt


def _attached_ids(host: Host, ifname: str, root: Path) -> list[int]:
    """The TC ingress programs on ``ifname`` of ``host``."""
    with host.enter():
        ifindex = host.link(ifname).ifindex
        att = tc_attached(ifindex, root=root)
        ids = tcx_prog_ids(ifindex, "ingress") or []
    return [*ids, *([att.prog_id] if att is not None else [])]


def _host_ifname_of(ns: Namespace, host: Host) -> str:
    """The host-side veth of the sandbox ``ns`` (eth0's peer), found by its ifindex."""
    link = json.loads(ns.run(["ip", "-j", "link", "show", "dev", "eth0"]).stdout)[0]
    peer = int(link["link_index"])
    links = json.loads(host.run(["ip", "-j", "link", "show"]).stdout)
    return str(next(li["ifname"] for li in links if int(li["ifindex"]) == peer))


def _round_stats(ids: dict[str, list[int]], run: Callable[[], float]) -> dict[str, float]:
    """Mean ns per run of each program group over one ``run``."""
    before = {k: _prog_stats(v) for k, v in ids.items()}
    run()
    after = {k: _prog_stats(v) for k, v in ids.items()}
    out = {}
    for k in ids:
        runs = after[k][1] - before[k][1]
        assert runs > 0, f"live: the {k} programs {ids[k]} never ran"
        out[k] = (after[k][0] - before[k][0]) / runs
    return out


def test_live_per_packet(results: Results, world: World) -> None:
    """ns per packet of from_container and from_netdev (decap) on real frames during rr over pydp
    (the kernel's BPF run-time stats), beside from_container during a same-host rr on h1,
    alternated round by round."""
    cluster = world.cluster
    h1, h2 = cluster.host("h1"), cluster.host("h2")
    roots = {"h1": cluster.nodes["h1"].bpffs, "h2": cluster.nodes["h2"].bpffs}
    cli_if = _host_ifname_of(world.pydp_client, h1)
    srv_if = _host_ifname_of(_sandbox(cluster, world.topology, "h2", "srv"), h2)
    loc = _sandbox(cluster, world.topology, "h1", "loc")
    loc_if = _host_ifname_of(loc, h1)
    cross = {
        "encap": _attached_ids(h1, cli_if, roots["h1"]) + _attached_ids(h2, srv_if, roots["h2"]),
        # received frames are decapsulated by from_netdev at the uplink (the fast path)
        "decap": _attached_ids(h1, "eth0", roots["h1"]) + _attached_ids(h2, "eth0", roots["h2"]),
    }
    local = {
        "local": _attached_ids(h1, cli_if, roots["h1"]) + _attached_ids(h1, loc_if, roots["h1"])
    }
    print(f"\nlive: program ids {cross} {local}")
    samples: dict[str, list[float]] = {"encap": [], "decap": [], "local": []}
    with _bpf_stats():
        for rnd in range(LIVE_ROUNDS + 1):  # round 0 warms up and is dropped
            seconds = LIVE_SECONDS if rnd else WARMUP_SECONDS
            got = _round_stats(
                cross, lambda s=seconds: _rr_run(world.cases["pydp"], world.rr_tool, s)
            )
            got |= _round_stats(local, lambda s=seconds: _rr_run(world.local, world.rr_tool, s))
            if rnd:
                for k, v in got.items():
                    samples[k].append(v)
    print(f"live per packet (ns), by round: {samples}")
    m = {k: median(v) for k, v in samples.items()}
    base = "live_from_container_same_host_redirect_ns"
    results.add(base, m["local"], "ns")
    results.add("live_encap_from_container_tunnel_tx_ns", m["encap"], "ns", base, m["local"])
    results.add("live_decap_from_netdev_tunnel_rx_ns", m["decap"], "ns", base, m["local"])
