"""Suite ``bridge``: container to container on one host: a direct veth pair, a Linux bridge, pydp.

Three paths, each in its own host namespace of one topology, with the same
addresses (client 10.0.0.2, server 10.0.0.3):

- ``direct``: the two containers joined by one veth pair (the ceiling);
- ``bridge``: both containers' veths on a plain Linux bridge, as Docker has it
  without iptables rules; ``bridge-nf-call-iptables`` is left as a new
  namespace has it (1: br_netfilter is built in) and recorded as a row;
- ``pydp``: the bridge topology plus ``Datapath.plug`` of both containers, so
  from_container redirects each packet into the peer container
  (``bpf_redirect_peer``) and the bridge is skipped.

Measured, with every client and server pinned to the same CPU (``taskset -c
0``) on every path, the paths alternated round by round (A B C A B C ...;
rr and crr after a short warm-up round that is dropped), the median of each
taken:

- TCP request/response rate (1-byte request and response on one connection)
  and TCP_CRR-style connection rate (connect, 1-byte request and response,
  close with a reset), by the project's own ``bench/tools/rr.c``, compiled
  here with ``cc -O2`` into ``build/bench/rr``;
- iperf3 throughput, as is (GSO hands the veth 64 KB packets, so it hardly
  separates the paths), and with ``-M 1400`` and TSO/GSO off on the sending
  container's interface, so every packet is a real 1.4 KB segment. ``-M``
  alone does not do that: GSO still builds 60 KB packets of 1,400-byte
  segments, which the veth carries unsegmented.

Nothing here asserts a threshold: the asserts check correctness (each run
completed, pydp's REASON_REDIRECT counter grew by at least two packets a
transaction during every pydp run, offload really was off).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bench._results import Results, median
from pydp.datapath import Datapath
from pydp.testing import Container, Host, Topology

PATHS = ("direct", "bridge", "pydp")  # the order of every round
RR_ROUNDS = 6  # measured rounds of rr and crr, after a warm-up round (~12 s each)
IPERF_ROUNDS = 4  # measured rounds of both iperf3 runs (~15 s each)
RR_SECONDS = 2.0  # per request/response or connection-rate run
WARMUP_SECONDS = 0.5
IPERF_SECONDS = 2
IPERF_MSS = 1400
CPU = "0"  # client and server of every path run here
CLIENT_NET, SERVER_NET, GATEWAY_NET = "10.0.0.2/24", "10.0.0.3/24", "10.0.0.1/24"
SERVER_IP = SERVER_NET.split("/")[0]
RR_PORT, IPERF_PORT = 7000, 5201
BRIDGE = "br0"
DIRECT_IF = "eth1"  # the direct veth pair's ends, one in each container
BR_NF_SYSCTL = "/proc/sys/net/bridge/bridge-nf-call-iptables"
MAX_SEGMENT_BYTES = 1600  # larger average packets mean GSO was still on

REPO = Path(__file__).resolve().parent.parent
RR_SOURCE = REPO / "bench" / "tools" / "rr.c"
TOOL_DIR = REPO / "build" / "bench"
APT_PACKAGES = {"iperf3": "iperf3", "cc": "gcc", "taskset": "util-linux", "ethtool": "ethtool"}


def _install_missing(commands: dict[str, str]) -> None:
    """apt-get install the packages of the commands that are not on PATH (none when all are)."""
    missing = sorted({pkg for cmd, pkg in commands.items() if shutil.which(cmd) is None})
    if not missing:
        return
    env = os.environ | {"DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=300)
    subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env=env,
        timeout=600,
    )


def rr_tool_fixture(packages: dict[str, str]) -> Any:
    """A module-scoped ``rr_tool`` fixture: the request/response tool built for the
    session once ``packages`` (command -> Debian package) are installed. Depends on: cc."""

    @pytest.fixture(scope="module")
    def rr_tool() -> Path:
        _install_missing(packages)
        return build_rr()

    return rr_tool


def build_rr(out_dir: Path = TOOL_DIR) -> Path:
    """Compile bench/tools/rr.c with ``cc -O2`` into ``out_dir/rr`` and return its path.

    Compiled every session (a fraction of a second) into a private name, then
    renamed into place, so concurrent runs never see half a binary.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    out, tmp = out_dir / "rr", out_dir / f".rr.{os.getpid()}"
    cmd = ["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(tmp), str(RR_SOURCE)]
    built = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
    if built.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise RuntimeError(f"build {RR_SOURCE.name}: {built.stderr.strip()}")
    os.replace(tmp, out)
    return out


@dataclass
class Path_:
    """One container-to-container path: a client and a server container in one host."""

    name: str
    host: Host
    client: Container
    server: Container
    client_if: str  # the client container's interface towards the server
    dp: Datapath | None = None

    def redirects(self) -> int:
        """pydp's REASON_REDIRECT packets so far (0 on the paths without pydp)."""
        return 0 if self.dp is None else self.dp.metrics.counter("REASON_REDIRECT").packets


def _build_direct(topo: Topology) -> Path_:
    host = topo.add_host("direct")
    client = host.add_container("direct_client", None)  # its host veth stays unused
    server = host.add_container("direct_server", None)
    client.ip(
        "link", "add", DIRECT_IF, "type", "veth", "peer", "name", DIRECT_IF, "netns", server.netns
    )
    client.ip_batch([f"addr add {CLIENT_NET} dev {DIRECT_IF}", f"link set {DIRECT_IF} up"])
    server.ip_batch([f"addr add {SERVER_NET} dev {DIRECT_IF}", f"link set {DIRECT_IF} up"])
    return Path_("direct", host, client, server, DIRECT_IF)


def _build_bridged(topo: Topology, name: str) -> Path_:
    host = topo.add_host(name)
    host.add_bridge(BRIDGE, GATEWAY_NET)
    gw = GATEWAY_NET.split("/")[0]
    client = host.add_container(f"{name}_client", CLIENT_NET, gateway=gw, bridge=BRIDGE)
    server = host.add_container(f"{name}_server", SERVER_NET, gateway=gw, bridge=BRIDGE)
    return Path_(name, host, client, server, client.ifname)


def _plug(path: Path_, root: Path) -> None:
    path.dp = Datapath(root=root)
    with path.host.enter():
        for c in (path.client, path.server):
            assert c.address is not None
            path.dp.plug(c.address.ip, c.host_ifindex, c.mac)


rr_tool = rr_tool_fixture(APT_PACKAGES)  # the rr tool, built for this module


@pytest.fixture(scope="module")
def paths(topology_module: Topology, bpffs_root: Path, rr_tool: Path) -> Iterator[list[Path_]]:
    """The three paths, each with an rr and an iperf3 server running pinned in its server.

    Scope: module. Depends on: topology_module (namespaces, servers stopped at
    its teardown), bpffs_root (pydp's pins under ``<root>/bridge``, removed
    after), rr_tool.
    """
    built = [_build_direct(topology_module)]
    built += [_build_bridged(topology_module, name) for name in PATHS[1:]]
    pydp_path = built[PATHS.index("pydp")]
    try:
        _plug(pydp_path, bpffs_root / "bridge")
        for p in built:
            rr = p.server.popen(["taskset", "-c", CPU, str(rr_tool), "server", str(RR_PORT)])
            iperf = p.server.popen(["taskset", "-c", CPU, "iperf3", "-s", "-p", str(IPERF_PORT)])
            rr.wait_port(RR_PORT)
            iperf.wait_port(IPERF_PORT)
        yield built
    finally:
        if pydp_path.dp is not None:
            pydp_path.dp.destroy()


def _rr_run(path: Path_, tool: Path, mode: str, seconds: float) -> float:
    """Transactions per second of one rr client run (mode ``client`` or ``crr``)."""
    cmd = ["taskset", "-c", CPU, str(tool), mode, SERVER_IP, str(RR_PORT), str(seconds)]
    before = path.redirects()
    out = path.client.run(cmd, timeout=seconds + 30).stdout
    redirected = path.redirects() - before
    data = json.loads(out)
    assert data["transactions"] > 0, f"{path.name} {mode}: no transaction: {out}"
    if path.dp is not None:  # a request and a response at least, each redirected
        assert redirected >= 2 * data["transactions"], (
            f"{path.name} {mode}: {redirected} redirects for {data['transactions']} transactions"
        )
    return float(data["rate"])


def _tx_stats(c: Container, ifname: str) -> tuple[int, int]:
    """(packets, bytes) sent so far by ifname in container c."""
    info = json.loads(c.run(["ip", "-j", "-s", "link", "show", "dev", ifname]).stdout)[0]
    tx = info["stats64"]["tx"]
    return int(tx["packets"]), int(tx["bytes"])


def _set_offload(path: Path_, on: bool) -> None:
    """TSO and GSO on or off on the client's interface (the sender's in iperf3's default)."""
    state = "on" if on else "off"
    path.client.run(["ethtool", "-K", path.client_if, "tso", state, "gso", state])


def _iperf_run(path: Path_, segmented: bool) -> float:
    """Gbit/s received by one iperf3 run; ``segmented``: ``-M 1400`` with TSO/GSO off."""
    cmd = ["taskset", "-c", CPU, "iperf3", "-c", SERVER_IP, "-p", str(IPERF_PORT)]
    cmd += ["-t", str(IPERF_SECONDS), "-J"]
    if segmented:
        cmd += ["-M", str(IPERF_MSS)]
        _set_offload(path, on=False)
    try:
        packets, nbytes = _tx_stats(path.client, path.client_if)
        before = path.redirects()
        r = path.client.run(cmd, timeout=IPERF_SECONDS + 30, check=False)
        redirected = path.redirects() - before
        packets_after, nbytes_after = _tx_stats(path.client, path.client_if)
    finally:
        if segmented:
            _set_offload(path, on=True)
    data = json.loads(r.stdout)
    assert "error" not in data, f"{path.name} iperf3: {data.get('error')}"
    received = data["end"]["sum_received"]
    assert received["bytes"] > 0, f"{path.name} iperf3: nothing received"
    sent_packets = packets_after - packets
    if segmented:
        average = (nbytes_after - nbytes) / sent_packets
        assert average < MAX_SEGMENT_BYTES, f"{path.name}: {average:.0f}-byte packets: GSO on"
    if path.dp is not None:
        assert redirected >= sent_packets, f"{path.name}: {redirected} of {sent_packets} redirected"
    return float(received["bits_per_second"]) / 1e9


Sampler = Callable[[Path_], float]


def _rounds(
    paths: list[Path_], rounds: int, cases: dict[str, Sampler], warmup: dict[str, Sampler]
) -> dict[str, dict[str, list[float]]]:
    """Samples per case and path: each round runs every case on A B C; the warm-up is dropped."""
    samples: dict[str, dict[str, list[float]]] = {c: {p.name: [] for p in paths} for c in cases}
    for p in paths:
        for fn in warmup.values():
            fn(p)
    for _ in range(rounds):
        for case, fn in cases.items():
            for p in paths:
                samples[case][p.name].append(fn(p))
    return samples


def _record(results: Results, metric: str, unit: str, per_path: dict[str, list[float]]) -> None:
    """Rows: direct absolute, bridge vs direct, pydp vs bridge and vs direct (medians)."""
    m = {name: median(values) for name, values in per_path.items()}
    name = metric.format
    results.add(name("direct"), m["direct"], unit)
    results.add(name("bridge"), m["bridge"], unit, name("direct"), m["direct"])
    results.add(name("pydp"), m["pydp"], unit, name("bridge"), m["bridge"])
    results.add(name("pydp"), m["pydp"], unit, name("direct"), m["direct"])
    print(f"{metric.format('*')}: samples by round {per_path}")  # shown with pytest -s


def test_request_response(results: Results, paths: list[Path_], rr_tool: Path) -> None:
    """TCP request/response and connection rates of the three paths, client and server on CPU 0."""
    samples = _rounds(
        paths,
        RR_ROUNDS,
        {
            "rr": lambda p: _rr_run(p, rr_tool, "client", RR_SECONDS),
            "crr": lambda p: _rr_run(p, rr_tool, "crr", RR_SECONDS),
        },
        {
            "rr": lambda p: _rr_run(p, rr_tool, "client", WARMUP_SECONDS),
            "crr": lambda p: _rr_run(p, rr_tool, "crr", WARMUP_SECONDS),
        },
    )
    _record(results, "rr_{}_tps", "transactions/s", samples["rr"])
    _record(results, "crr_{}_cps", "connections/s", samples["crr"])


def test_throughput(results: Results, paths: list[Path_]) -> None:
    """iperf3 throughput of the three paths, with offload and with 1,400-byte segments."""
    samples = _rounds(
        paths,
        IPERF_ROUNDS,
        {
            "gso": lambda p: _iperf_run(p, segmented=False),
            "segmented": lambda p: _iperf_run(p, segmented=True),
        },
        {},
    )
    _record(results, "iperf3_{}_gbps", "Gbit/s", samples["gso"])
    _record(results, "iperf3_mss1400_nogso_{}_gbps", "Gbit/s", samples["segmented"])


def test_bridge_netfilter(results: Results, paths: list[Path_]) -> None:
    """Records bridge-nf-call-iptables as the bridge path's host has it (left as Docker would)."""
    for p in paths:
        if p.name == "bridge":
            value = int(p.host.run(["cat", BR_NF_SYSCTL]).stdout)
            results.add("bridge_nf_call_iptables", value, "sysctl")
