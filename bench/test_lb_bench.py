"""Suite ``lb``: service load balancing at N services: pydp, iptables chains, an nftables
verdict map.

Issue 5's service benchmark, each way of balancing a *kind* (see `LbKind` and
`KIND_BUILDERS`); pydp's per-packet cost, Maglev tables and the parts of its programming
time are the ``lb_datapath`` suite's.

Topology of the netfilter kinds, one per kind, built with pydp.testing: a ``node`` namespace routing
between two pods, a ``client`` (10.244.0.2/24, gateway 10.244.0.1 on the node)
and a ``server`` (10.244.1.2/24, gateway 10.244.1.1) holding the ten backend
addresses 10.244.1.10-19 as aliases on its eth0, all served by one
``rr server`` on port 8080 (bound to the wildcard address). So every service's
every backend is the same process and the rates isolate the cost of finding
the service. Service i has the VIP ``vip(i)`` (10.96.0.16 + i, as in
10.96.0.0/12), port 80/tcp, and all ten backends at port 8080 (the target
port). The rules live in the node namespace, where a pod's packets are routed
on a Kubernetes node; they die with it, nothing touches the root namespace.

The kinds:

- ``iptables``: kube-proxy's iptables mode as ``iptables-save`` shows it, in
  legacy iptables (``iptables-legacy-restore``): the nat table's PREROUTING and
  OUTPUT jump to KUBE-SERVICES, which holds one ``-d VIP/32 -p tcp --dport 80
  -j KUBE-SVC-...`` rule per service (a linear scan: the point) and the
  KUBE-NODEPORTS rule last; each KUBE-SVC chain marks non-pod sources for
  masquerade and picks a KUBE-SEP chain with ``-m statistic --mode random
  --probability 1/k``; each KUBE-SEP marks hairpin traffic and DNATs; KUBE-
  POSTROUTING masquerades marked connections; the filter table has
  KUBE-FORWARD. Chain names are kube-proxy's (``sha256`` of the service port
  name, base32, 16 characters), every rule carries kube-proxy's comment.
  Legacy, not Debian 12's default ``iptables`` (iptables-nft 1.8.9), whose
  ``iptables-nft-restore`` of this ruleset took 20 s at 1,000 services and
  more than 20 minutes at 10,000 here: out of reach of a bench run.
- ``nft``: one ``ip`` table whose prerouting chain does ``ip daddr . tcp dport
  vmap @services``, a map of ``VIP . port : goto CHAIN``, one chain per service
  doing ``dnat ip addr . port to numgen random mod 10 map {...}`` (the brief's
  shape; kube-proxy's nftables mode has one more chain per endpoint), the same
  masquerade mark and postrouting, and a forward filter chain like
  KUBE-FORWARD.
- ``pydp``: a pydp host of its own (see `PydpKind`): the client and the ten
  backends are pydp sandboxes on one bridge network, each backend its own
  ``rr server`` (ten processes, all on CPU 0), the VIPs are addresses of the
  network, and from_container at the client's veth translates and delivers each
  connection straight into the backend. Its N services are programmed in process
  with one `LbDatapath.sync` (the agent's datapath call; the N are not stored),
  one more with a sync of N + 1; the CLI's path is timed on its own
  (`test_pydp_cli_services`: ``pydp service create`` beside ``pydp system
  reconcile``, a few services, before the rest). Left out, with the reason
  printed, when build/bpf lacks its objects.

Measured for N in SERVICE_COUNTS, the kinds side by side in one run:

- programming: the time to install N services x 10 backends into empty tables,
  one ``iptables-restore --noflush --counters`` (as kube-proxy calls it) or
  one ``nft -f``, from the command's start to its exit (building the text in
  Python is not counted); then the time of one more service at N, one such
  command with the new chains, the new KUBE-SERVICES rule inserted before the
  KUBE-NODEPORTS rule (``-I``) or the new map element, the median of
  ADD_ROUNDS, the kinds alternated. The commands run from a thread moved into
  the node namespace, so no ``ip netns exec`` is timed; kube-proxy's real
  incremental sync rewrites all of KUBE-SERVICES, so this is iptables' floor;
  pydp: the `LbDatapath.sync` call (the specs built beforehand, not counted);
- rates, with ``bench/tools/rr.c`` (built as the ``bridge`` suite builds it)
  client and server pinned to CPU 0 (``taskset -c 0``) in every case: the
  connection rate (TCP_CRR: connect, 1-byte request and response, close with
  a reset) and the request/response rate (TCP_RR, one connection) to the
  first service (0), to the last (N - 1) and ``direct`` to backend 0's own
  address (no VIP: a pod-to-pod connection, which iptables still walks all of
  KUBE-SERVICES for, and the ceiling of any balancer: pydp's direct rate over
  iptables' last service bounds what pydp's LB path could reach). Each round runs crr then rr on
  every (kind, service) case, the case order reversed every other round
  (A B C D, D C B A, ...); a short warm-up round is dropped; medians of
  RR_ROUNDS. Only a connection's first packet walks the rules (conntrack
  carries the rest), so rr should barely move with N: it is the control.
  Before each of pydp's runs its conntrack map is emptied (`PydpKind.before_run`,
  untimed), so that its connections take the LB path as the netfilter kinds'
  take the rules.

Rows: each kind's rate to the first service (absolute), its rate to the last
against its own first (the last-vs-first ratio), and each kind against each
baseline kind before it in BASELINE_KINDS (nft against iptables; pydp, when
it is built, against both) for the first and for the last service and for the
programming times.

Nothing asserts a threshold: the asserts check correctness. After the warm-up,
the node's conntrack table (``/proc/net/nf_conntrack``) must hold connections
to the first and the last VIP translated to backends, every one of the ten
backends among them, for every kind that has a `LbKind.check`; for pydp,
REASON_LB must have grown and its conntrack map (pydp_nat) must have sent the
connections to each VIP to all ten backends.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import netaddr
import pytest

from bench._results import Results, median
from bench.test_bridge_bench import rr_tool_fixture
from bench.test_nat_bench import _cleanup_pydp, _from_tests, _wait_listen
from pydp.agent.reconcile import Desired
from pydp.control.model import Network, ServiceBackend, ServicePort
from pydp.control.model import Service as PydpService
from pydp.control.nodes import node_name
from pydp.datapath_lb import LbDatapath, ServiceSpec
from pydp.loader import Map, object_dir
from pydp.maps import CONSTANTS, METRICS_MAP, NAT_MAP, MetricsMap, NatMap
from pydp.maps.lb import LB_TABLES_MAP, SERVICES_MAP
from pydp.store import open_store
from pydp.testing import Container, Host, Namespace, Topology

if TYPE_CHECKING:
    from tests.netns.conftest import PydpNode

SERVICE_COUNTS = (10, 1_000, 10_000)
BACKENDS_PER_SERVICE = 10
RR_ROUNDS = 5  # measured rounds of crr and rr, after a dropped warm-up round
RR_SECONDS = 1.0  # per rr client run
WARMUP_SECONDS = 0.3
ADD_ROUNDS = 5  # one more service, this many times at each N (each adds one more)
CPU = "0"  # every rr client and server runs here
MODES = {"crr": ("crr", "connections/s", "cps"), "rr": ("client", "transactions/s", "tps")}
TARGETS = ("first", "last")
DIRECT = "direct"  # a connection to backend 0 itself, no VIP: no balancer can beat it

SERVICE_NET = netaddr.IPNetwork("10.96.0.0/12")
VIP_OFFSET = 16  # vip(0) is 10.96.0.16
SERVICE_PORT, TARGET_PORT = 80, 8080
CLUSTER_CIDR = "10.244.0.0/16"  # pods: sources outside it get masqueraded
CLIENT_NET, CLIENT_GW = "10.244.0.2/24", "10.244.0.1/24"
SERVER_NET, SERVER_GW = "10.244.1.2/24", "10.244.1.1/24"
BACKENDS = tuple(netaddr.IPAddress(f"10.244.1.{10 + i}") for i in range(BACKENDS_PER_SERVICE))
MASQ_MARK = 0x4000  # kube-proxy's masquerade bit

IPTABLES_RESTORE = "iptables-legacy-restore"
NFT = "nft"
NFT_TABLE = "kube_bench"
LB_APT_PACKAGES = {
    "cc": "gcc",
    "taskset": "util-linux",
    IPTABLES_RESTORE: "iptables",
    NFT: "nftables",
}
BASELINE_KINDS = ("iptables", "nft")  # each kind is compared with the ones before it here


def vip(i: int) -> netaddr.IPAddress:
    """The cluster IP of service i (the same for every kind)."""
    return netaddr.IPAddress(int(SERVICE_NET.first) + VIP_OFFSET + i)


@dataclass(frozen=True, slots=True)
class Service:
    """Service ``bench/svc-<index>``: VIP:port/tcp balanced over backends at target_port."""

    index: int
    vip: netaddr.IPAddress
    backends: tuple[netaddr.IPAddress, ...]
    port: int = SERVICE_PORT
    target_port: int = TARGET_PORT

    @property
    def name(self) -> str:
        """kube-proxy's service port name, ``namespace/name:port``."""
        return f"bench/svc-{self.index}:http"


def make_services(start: int, count: int, backends: Sequence[netaddr.IPAddress]) -> list[Service]:
    """Services start .. start + count - 1, each over every backend."""
    return [Service(i, vip(i), tuple(backends)) for i in range(start, start + count)]


class LbKind(Protocol):
    """One way of balancing services, built in its own namespaces.

    ``client`` is where the rr client runs (it connects to ``vip(i)``:80);
    ``backends`` are the BACKENDS_PER_SERVICE addresses the kind's rr server
    answers on at TARGET_PORT. ``program`` and ``add_one`` return the seconds
    the change took to apply (the kind says what it times: the command or call
    that applies it, not the building of its input).
    """

    name: str
    client: Namespace
    backends: tuple[netaddr.IPAddress, ...]

    def clear(self) -> None:
        """Remove every service (not timed)."""
        ...

    def program(self, services: Sequence[Service]) -> float:
        """Install services into an empty state at once; the seconds it took."""
        ...

    def add_one(self, service: Service) -> float:
        """Add one more service to those installed; the seconds it took."""
        ...

    def check(self, service: Service) -> None:
        """Assert that the recent connections to service went to its every backend."""
        ...


class KindUnavailable(Exception):
    """A kind cannot be built here (the case is left out with the reason printed)."""


KindBuilder = Callable[[Topology, Path], LbKind]


# ---- the routed lab the netfilter kinds share --------------------------------------------


@dataclass(frozen=True)
class RoutedLab:
    """A node routing between a client pod and a server pod that answers on every backend."""

    node: Host
    client: Container
    server: Container


def routed_lab(topo: Topology, name: str, rr_tool: Path) -> RoutedLab:
    """The node, the client and the server of kind ``name``, with the rr server running."""
    node = topo.add_host(f"{name}_node")
    client = node.add_container(f"{name}_client", CLIENT_NET, gateway=CLIENT_GW.split("/")[0])
    server = node.add_container(f"{name}_server", SERVER_NET, gateway=SERVER_GW.split("/")[0])
    node.ip_batch(
        [
            f"addr add {CLIENT_GW} dev {client.host_ifname}",
            f"addr add {SERVER_GW} dev {server.host_ifname}",
        ]
    )
    server.ip_batch([f"addr add {b}/24 dev {server.ifname}" for b in BACKENDS])
    rr = server.popen(["taskset", "-c", CPU, str(rr_tool), "server", str(TARGET_PORT)])
    rr.wait_port(TARGET_PORT)
    return RoutedLab(node, client, server)


def timed_run(ns: Namespace, argv: Sequence[str], text: str) -> float:
    """Seconds ``argv`` took with ``text`` on stdin, run from this thread moved into ns."""
    with ns.enter():
        start = time.perf_counter()
        r = subprocess.run(argv, input=text, capture_output=True, text=True, check=False)
        elapsed = time.perf_counter() - start
    if r.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} in {ns.netns}: {r.stderr.strip()[:2000]}")
    return elapsed


def check_conntrack(node: Namespace, service: Service) -> None:
    """The node's conntrack entries to service's VIP were translated to its backends, all."""
    listed = node.run(["grep", "-F", f" dst={service.vip} ", "/proc/net/nf_conntrack"], check=False)
    pattern = rf"dst={re.escape(str(service.vip))} sport=\d+ dport={service.port} src=(\S+) "
    replies = re.findall(pattern, listed.stdout)
    assert replies, f"{node.name}: no connection to {service.vip} in conntrack"
    seen = {netaddr.IPAddress(a) for a in replies}
    assert seen == set(service.backends), f"{node.name}: {service.vip} went to {sorted(seen)}"


# ---- iptables: kube-proxy's rules ---------------------------------------------------------


def _kube_hash(text: str) -> str:
    """kube-proxy's chain suffix: sha256, base32, the first 16 characters."""
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def _svc_chain(svc: Service) -> str:
    return "KUBE-SVC-" + _kube_hash(svc.name + "tcp")


def _sep_chain(svc: Service, backend: netaddr.IPAddress) -> str:
    return "KUBE-SEP-" + _kube_hash(f"{svc.name}tcp{backend}:{svc.target_port}")


def _service_rule(svc: Service, op: str = "-A KUBE-SERVICES") -> str:
    return (
        f'{op} -d {svc.vip}/32 -p tcp -m comment --comment "{svc.name} cluster IP"'
        f" -m tcp --dport {svc.port} -j {_svc_chain(svc)}"
    )


def _service_chains(svc: Service) -> tuple[list[str], list[str]]:
    """(chain declarations, rules) of one service's KUBE-SVC and KUBE-SEP chains."""
    svc_chain = _svc_chain(svc)
    decls, rules = [f":{svc_chain} - [0:0]"], []
    rules.append(
        f"-A {svc_chain} ! -s {CLUSTER_CIDR} -d {svc.vip}/32 -p tcp"
        f' -m comment --comment "{svc.name} cluster IP" -m tcp --dport {svc.port}'
        " -j KUBE-MARK-MASQ"
    )
    n = len(svc.backends)
    for i, b in enumerate(svc.backends):
        sep = _sep_chain(svc, b)
        decls.append(f":{sep} - [0:0]")
        pick = "" if i == n - 1 else f" -m statistic --mode random --probability {1 / (n - i):.11f}"
        rules.append(
            f'-A {svc_chain} -m comment --comment "{svc.name} -> {b}:{svc.target_port}"{pick}'
            f" -j {sep}"
        )
        rules.append(f'-A {sep} -s {b}/32 -m comment --comment "{svc.name}" -j KUBE-MARK-MASQ')
        rules.append(
            f'-A {sep} -p tcp -m comment --comment "{svc.name}" -m tcp'
            f" -j DNAT --to-destination {b}:{svc.target_port}"
        )
    return decls, rules


def kube_proxy_ruleset(services: Sequence[Service]) -> str:
    """kube-proxy's iptables-restore input for services (cluster IPs only, all with endpoints)."""
    decls, rules = [], []
    for svc in services:
        d, r = _service_chains(svc)
        decls += d
        rules += r
    mark = f"0x{MASQ_MARK:x}"
    nat = [
        "*nat",
        *(f":{c} - [0:0]" for c in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING")),
        ":KUBE-MARK-MASQ - [0:0]",
        *decls,
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        '-A POSTROUTING -m comment --comment "kubernetes postrouting rules" -j KUBE-POSTROUTING',
        f"-A KUBE-POSTROUTING -m mark ! --mark {mark}/{mark} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {mark}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT"'
        " -j MASQUERADE --random-fully",
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {mark}",
        *(_service_rule(svc) for svc in services),
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be'
        ' the last rule in this chain" -m addrtype --dst-type LOCAL -j KUBE-NODEPORTS',
        *rules,
        "COMMIT",
    ]
    new = "-m conntrack --ctstate NEW"
    filt = [
        "*filter",
        ":KUBE-SERVICES - [0:0]",
        ":KUBE-FORWARD - [0:0]",
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD',
        f'-A FORWARD {new} -m comment --comment "kubernetes service portals" -j KUBE-SERVICES',
        "-A KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules"'
        f" -m mark --mark {mark}/{mark} -j ACCEPT",
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule"'
        " -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT",
        "COMMIT",
    ]
    return "\n".join(nat + filt) + "\n"


class IptablesKind:
    """kube-proxy's iptables mode in legacy iptables, in the node namespace."""

    name = "iptables"
    backends = BACKENDS

    def __init__(self, lab: RoutedLab) -> None:
        self.lab = lab
        self.client: Namespace = lab.client
        self._services = 0  # rules in KUBE-SERVICES before the KUBE-NODEPORTS one

    @classmethod
    def build(cls, topo: Topology, rr_tool: Path) -> IptablesKind:
        return cls(routed_lab(topo, "ipt", rr_tool))

    def _restore(self, text: str, noflush: bool = True) -> float:
        flags = ["--noflush", "--counters"] if noflush else []
        return timed_run(self.lab.node, [IPTABLES_RESTORE, "-w", *flags], text)

    def clear(self) -> None:
        self._restore("*nat\nCOMMIT\n*filter\nCOMMIT\n", noflush=False)
        self._services = 0

    def program(self, services: Sequence[Service]) -> float:
        elapsed = self._restore(kube_proxy_ruleset(services))
        self._services = len(services)
        return elapsed

    def add_one(self, service: Service) -> float:
        decls, rules = _service_chains(service)
        insert = _service_rule(service, f"-I KUBE-SERVICES {self._services + 1}")
        elapsed = self._restore("\n".join(["*nat", *decls, insert, *rules, "COMMIT"]) + "\n")
        self._services += 1
        return elapsed

    def check(self, service: Service) -> None:
        check_conntrack(self.lab.node, service)


# ---- nftables: a verdict map ---------------------------------------------------------------


def _nft_chain(svc: Service) -> str:
    return f"service-{svc.index}"


def _nft_service_chain(svc: Service) -> list[str]:
    """The body of one service's chain: masquerade mark, then a random backend."""
    picks = ", ".join(f"{i} : {b} . {svc.target_port}" for i, b in enumerate(svc.backends))
    return [
        f"ip saddr != {CLUSTER_CIDR} jump mark-for-masquerade",
        f"meta l4proto tcp dnat ip addr . port to numgen random mod {len(svc.backends)}"
        f" map {{ {picks} }}",
    ]


def _nft_element(svc: Service) -> str:
    return f"{svc.vip} . {svc.port} : goto {_nft_chain(svc)}"


def nft_ruleset(services: Sequence[Service]) -> str:
    """One ``nft -f`` input: the table with every service's chain and the verdict map."""
    mark = f"0x{MASQ_MARK:x}"
    lines = [f"table ip {NFT_TABLE} {{", "  map services {"]
    lines.append("    type ipv4_addr . inet_service : verdict")
    if services:
        lines.append(f"    elements = {{ {', '.join(_nft_element(s) for s in services)} }}")
    lines += [
        "  }",
        "  chain mark-for-masquerade {",
        f"    meta mark set meta mark | {mark}",
        "  }",
        "  chain nat-prerouting {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        "    ip daddr . tcp dport vmap @services",
        "  }",
        "  chain nat-output {",
        "    type nat hook output priority -100; policy accept;",
        "    ip daddr . tcp dport vmap @services",
        "  }",
        "  chain nat-postrouting {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        f"    meta mark & {mark} == 0 return",
        f"    meta mark set meta mark ^ {mark}",
        "    masquerade fully-random",
        "  }",
        "  chain filter-forward {",
        "    type filter hook forward priority filter; policy accept;",
        "    ct state invalid drop",
        f"    meta mark & {mark} == {mark} accept",
        "    ct state related,established accept",
        "  }",
    ]
    for svc in services:
        body = "\n".join(f"    {r}" for r in _nft_service_chain(svc))
        lines.append(f"  chain {_nft_chain(svc)} {{\n{body}\n  }}")
    lines.append("}")
    return "\n".join(lines) + "\n"


class NftKind:
    """An nftables verdict map of VIP . port to one chain per service, in the node namespace."""

    name = "nft"
    backends = BACKENDS

    def __init__(self, lab: RoutedLab) -> None:
        self.lab = lab
        self.client: Namespace = lab.client

    @classmethod
    def build(cls, topo: Topology, rr_tool: Path) -> NftKind:
        return cls(routed_lab(topo, "nft", rr_tool))

    def clear(self) -> None:
        timed_run(self.lab.node, [NFT, "-f", "-"], "flush ruleset\n")

    def program(self, services: Sequence[Service]) -> float:
        return timed_run(self.lab.node, [NFT, "-f", "-"], nft_ruleset(services))

    def add_one(self, service: Service) -> float:
        chain = f"ip {NFT_TABLE} {_nft_chain(service)}"
        text = [f"add chain {chain}"]
        text += [f"add rule {chain} {r}" for r in _nft_service_chain(service)]
        text.append(f"add element ip {NFT_TABLE} services {{ {_nft_element(service)} }}")
        return timed_run(self.lab.node, [NFT, "-f", "-"], "\n".join(text) + "\n")

    def check(self, service: Service) -> None:
        check_conntrack(self.lab.node, service)


# ---- pydp: its service datapath -------------------------------------------------------------

PYDP_NET = "lb"
PYDP_SUBNET = "10.96.0.0/16"  # the VIPs vip(i) and the seed's: outside the containers' range
PYDP_IP_RANGE = "10.96.255.0/24"  # the sandboxes' addresses
PYDP_BACKEND_NAMES = tuple(f"b{i}" for i in range(BACKENDS_PER_SERVICE))
PYDP_CLIENT = "client"
SEED_NAME, SEED_VIP = "seed", "10.96.254.1"
PYDP_INDEX_OFFSET = 2  # Service i is pydp's service index i + 2 (the seed, stored first, has 1)
CLI_SERVICES = 8  # `pydp service create` calls timed, each beside a `pydp system reconcile`
CLI_VIP_FIRST = netaddr.IPAddress("10.96.250.1")  # their VIPs, clear of vip(i) and the seed's
NAT_F_SNAT, NAT_F_SVC = CONSTANTS["NAT_F_SNAT"], CONSTANTS["NAT_F_SVC"]


class PydpKind:
    """pydp's service datapath: a pydp host namespace (``pydp_node``) with its own state
    directory (a temporary one) and pin root (``<bench bpffs root>/lb-pydp``).

    Built through the CLI (``nsenter --net`` + ``python -m pydp.cli``, as the ``nat`` suite
    drives a pydp host): the bridge network ``lb`` (PYDP_SUBNET, containers from
    PYDP_IP_RANGE, so the VIPs vip(i) are free addresses of the network, answered by ARP
    from from_container), ten sandboxes ``b0`` .. ``b9`` each running ``taskset -c 0 rr
    server 8080`` (the backends: ten processes, where the netfilter kinds have one answering
    ten addresses), the sandbox ``client`` (``sleep``; the rr client runs in its netns), and
    one service created with the CLI, ``seed`` (SEED_VIP:80 over all ten backends), whose
    reconcile marks the ten endpoints as service backends (ENDPOINT_F_LB_BACKEND and
    IFACE_F_LB_BACKEND: their replies get the VIP back as source).

    The N services are programmed the way pydp's agent programs its datapath, in process:
    `program` builds the agent's `ServiceSpec` of every service with the reconciler's own
    `Desired.service_specs` (the stored services plus the N as model `Service` objects,
    not timed) and times one `LbDatapath.sync` over the host's pinned maps -- every Maglev
    table computed (in C) and installed as a new inner map of ``pydp_lb_tables``, the
    frontends written in one batch. `add_one` times one more `sync` with N + 1 specs (the
    unchanged N recognised by their signature, not rebuilt): pydp has no one-service
    datapath call, every change is a whole `sync`. The N services are NOT stored: a
    reconcile (any CLI change) would make the datapath equal the store again and drop them,
    so after `program` no CLI change is made in this host (`test_pydp_cli_services`, the
    control plane's path timed through the CLI, runs first and removes what it created).
    `clear` syncs back to the stored services (the seed) and empties pydp_nat, untimed.
    `check` asserts that REASON_LB grew since the last check and that pydp_nat's client
    entries (NAT_F_SVC, not NAT_F_SNAT) to the service's VIP, noted before each run and at
    the check, name every one of its ten backends at TARGET_PORT: the connections went
    through pydp's translation to them all.

    `before_run` empties pydp_nat before each rr client run. Without it, crr hangs within
    a few runs: a SYN whose tuple an earlier, closed connection used finds that
    connection's entry (CT_CLOSED, kept until it expires) and takes lb4_tracked, which does
    not rewrite the backend's reply entry -- keyed (backend:8080 -> client:port), so shared
    by every VIP that has the backend; when a connection to the other target service from
    the same port and to the same backend overwrote it meanwhile, the SYN-ACK leaves with
    the other VIP as source, and the client retransmits its SYN for ever.
    """

    name = "pydp"

    def __init__(self, node: PydpNode, client: Namespace, sandboxes: dict[str, str]) -> None:
        self.node = node
        self.client = client
        self._sandbox = {netaddr.IPAddress(a): name for name, a in sandboxes.items()}
        self.backends = tuple(netaddr.IPAddress(sandboxes[n]) for n in PYDP_BACKEND_NAMES)
        store = open_store(node.state_dir)
        try:
            self._desired = Desired.read(store, node_name())  # the CLI's node: the host name
        finally:
            store.close()
        self._net: Network = next(n for n in self._desired.networks.values() if n.name == PYDP_NET)
        root = node.bpffs
        self._maps = [Map.open_pinned(n, root) for n in (SERVICES_MAP, LB_TABLES_MAP, NAT_MAP)]
        self.lb = LbDatapath(self._maps[0], self._maps[1], NatMap(self._maps[2]))
        self._metrics = Map.open_pinned(METRICS_MAP, root)
        self._specs = self._specs_for([])
        self._lb_packets = self._lb_count()
        self._went: dict[tuple[netaddr.IPAddress, int], set[tuple[netaddr.IPAddress, int]]] = {}

    @classmethod
    def build(cls, topo: Topology, rr_tool: Path) -> PydpKind:
        missing = [o for o in ("endpoint.bpf.o", "uplink.bpf.o") if not (object_dir() / o).exists()]
        if missing:
            raise KindUnavailable(f"build/bpf/{missing[0]} does not exist (make bpf)")
        if importlib.util.find_spec("pydp.cli.service") is None:
            raise KindUnavailable("pydp has no `service` command")
        host = topo.add_host("pydp_node")
        state = Path(tempfile.mkdtemp(prefix="pydp-lb-bench-")) / "state"
        bpffs = Path(os.environ.get("PYDP_BPFFS") or "/sys/fs/bpf/pydp") / "lb-pydp"
        node: PydpNode = _from_tests("tests.netns.conftest").PydpNode(host, state, bpffs)
        try:
            return cls._set_up(topo, node, rr_tool)
        except BaseException:
            _cleanup_pydp(node)
            shutil.rmtree(state.parent, ignore_errors=True)
            raise

    @classmethod
    def _set_up(cls, topo: Topology, node: PydpNode, rr_tool: Path) -> PydpKind:
        node("network", "create", "--subnet", PYDP_SUBNET, "--ip-range", PYDP_IP_RANGE, PYDP_NET)
        serve = ["taskset", "-c", CPU, str(rr_tool), "server", str(TARGET_PORT)]
        for name in PYDP_BACKEND_NAMES:
            node("run", "--name", name, "--network", PYDP_NET, "-d", "--", *serve)
        node("run", "--name", PYDP_CLIENT, "--network", PYDP_NET, "-d", "--", "sleep", "86400")
        for name in PYDP_BACKEND_NAMES:
            _wait_listen(_sandbox_ns(topo, node, name), TARGET_PORT)
        backends = [a for n in PYDP_BACKEND_NAMES for a in ("--backend", f"{n}:{TARGET_PORT}")]
        node(
            *("service", "create", SEED_NAME, "--network", PYDP_NET, "--vip", SEED_VIP),
            *("--port", f"{SERVICE_PORT}/tcp", *backends),
        )
        seed = node.json("service", "inspect", SEED_NAME)[0]
        sandboxes = {b["Sandbox"]: b["Address"] for b in seed["Backends"]}
        return cls(node, _sandbox_ns(topo, node, PYDP_CLIENT), sandboxes)

    def close(self) -> None:
        """Close the maps, kill the sandboxes' processes and ``pydp system reset`` the host."""
        for m in [*self._maps, self._metrics]:
            m.close()
        _cleanup_pydp(self.node)
        shutil.rmtree(self.node.state_dir.parent, ignore_errors=True)

    def _model(self, svc: Service) -> PydpService:
        """svc as pydp's store would hold it (``service create`` with explicit --vip)."""
        backends = tuple(
            ServiceBackend(b, svc.target_port, sandbox=self._sandbox[b]) for b in svc.backends
        )
        return PydpService(
            f"bench-{svc.index}",
            f"svc-{svc.index}",
            self._net.id,
            svc.index + PYDP_INDEX_OFFSET,
            svc.vip,
            (ServicePort(svc.port, "tcp"),),
            backends=backends,
        )

    def _specs_for(self, services: Sequence[Service]) -> list[ServiceSpec]:
        """The datapath specs of the stored services plus services, as the reconciler makes them."""
        stored = self._desired.services
        desired = dataclasses.replace(
            self._desired, services=[*stored, *(self._model(s) for s in services)]
        )
        return desired.service_specs()

    def _lb_count(self) -> int:
        return int(MetricsMap(self._metrics).counter("REASON_LB").packets)

    def clear(self) -> None:
        self._specs = self._specs_for([])
        self.lb.sync(self._specs)
        self.lb.nat.clear()
        self._lb_packets = self._lb_count()
        self._went.clear()

    def program(self, services: Sequence[Service]) -> float:
        specs = self._specs_for(services)
        start = time.perf_counter()
        self.lb.sync(specs)
        elapsed = time.perf_counter() - start
        self._specs = specs
        return elapsed

    def add_one(self, service: Service) -> float:
        specs = [*self._specs, self._specs_for([service])[-1]]
        start = time.perf_counter()
        self.lb.sync(specs)
        elapsed = time.perf_counter() - start
        self._specs = specs
        return elapsed

    def before_run(self) -> None:
        """Before each rr client run (untimed): note where the connections so far went, then
        forget them (empty pydp_nat). Linux conntrack kills a closed connection's entry when
        a SYN reuses its tuple, so every new connection of the netfilter kinds takes the
        rules again; pydp keeps the entry (CT_CLOSED) and sends a reused tuple down the
        tracked path without looking the service up -- and with the old reply entry, which
        another VIP sharing the backend may have overwritten (see `PydpKind`). Emptied
        before each run (a run opens fewer connections than there are ephemeral ports), every
        connection of a run is a new one through the LB path."""
        self._note_backends()
        self.lb.nat.clear()

    def _note_backends(self) -> None:
        for k, e in self.lb.nat.items():
            if e.flags & NAT_F_SVC and not e.flags & NAT_F_SNAT:  # a client's entry
                self._went.setdefault((k.daddr, k.dport), set()).add((e.address, e.port))

    def check(self, service: Service) -> None:
        grown = self._lb_count() - self._lb_packets
        assert grown > 0, f"pydp: REASON_LB did not grow with connections to {service.vip}"
        self._lb_packets += grown
        self._note_backends()
        went = self._went.pop((service.vip, service.port), set())
        want = {(b, service.target_port) for b in service.backends}
        assert went == want, f"pydp: {service.vip} went to {sorted(went)}"

    # The control plane's path, timed by test_pydp_cli_services (before any `program`).

    def _cli_seconds(self, *args: str) -> float:
        env = [f"PYDP_STATE_DIR={self.node.state_dir}", f"PYDP_BPFFS={self.node.bpffs}"]
        argv = ["env", *env, sys.executable, "-m", "pydp.cli", *args]
        return timed_run(self.node.host, argv, "")

    def cli_create(self, i: int) -> float:
        """Seconds of ``pydp service create`` of CLI service i (ten backends, --vip given)."""
        vip = CLI_VIP_FIRST + i
        backends = [a for n in PYDP_BACKEND_NAMES for a in ("--backend", f"{n}:{TARGET_PORT}")]
        return self._cli_seconds(
            *("service", "create", f"cli-{i}", "--network", PYDP_NET, "--vip", str(vip)),
            *("--port", f"{SERVICE_PORT}/tcp", *backends),
        )

    def cli_reconcile(self) -> float:
        """Seconds of ``pydp system reconcile`` (the same state: nothing to change)."""
        return self._cli_seconds("system", "reconcile")

    def cli_remove(self, count: int) -> None:
        """``pydp service rm`` the CLI services 0 .. count - 1 (not timed)."""
        self.node("service", "rm", *(f"cli-{i}" for i in range(count)), timeout=300)


def _sandbox_ns(topo: Topology, node: PydpNode, name: str) -> Namespace:
    """pydp sandbox name's network namespace, to run commands in."""
    netns = node.json("sandbox", "inspect", name)[0]["Netns"]
    return Namespace(topo, f"pydp_{name}", netns)


KIND_BUILDERS: dict[str, KindBuilder] = {
    "iptables": IptablesKind.build,
    "nft": NftKind.build,
    "pydp": PydpKind.build,
}


# ---- the measurement ----------------------------------------------------------------------


rr_tool = rr_tool_fixture(LB_APT_PACKAGES)  # the rr tool, built for this module


@pytest.fixture(scope="module")
def kinds(topology_module: Topology, rr_tool: Path) -> Iterator[dict[str, LbKind]]:
    """Every kind that builds here, each with its rr server running, by name.

    Scope: module. Depends on: topology_module (the namespaces, with every rule
    in them, and the servers are removed at its teardown), rr_tool. A kind with a
    ``close`` method (pydp: its sandboxes and pins) is closed after the module, even on
    failure.
    """
    built: dict[str, LbKind] = {}
    try:
        for name, build in KIND_BUILDERS.items():
            try:
                built[name] = build(topology_module, rr_tool)
            except KindUnavailable as exc:
                print(f"\nNOTE: {name} left out: {exc}")
        yield built
    finally:
        for kind in built.values():
            close = getattr(kind, "close", None)
            if close is not None:
                close()


def _rate(kind: LbKind, rr_tool: Path, mode: str, service: Service, seconds: float) -> float:
    """Transactions (or connections) per second of one rr client run to service's VIP."""
    arg = MODES[mode][0]
    cmd = ["taskset", "-c", CPU, str(rr_tool), arg, str(service.vip), str(service.port)]
    before_run = getattr(kind, "before_run", None)  # optional: pydp's, untimed
    if before_run is not None:
        before_run()
    out = kind.client.run([*cmd, str(seconds)], timeout=seconds + 30).stdout
    data = json.loads(out)
    assert data["transactions"] > 0, f"{kind.name} {mode} to {service.vip}: {out}"
    return float(data["rate"])


Case = tuple[str, str]  # (kind, target)


def _measure_rates(
    kinds: dict[str, LbKind], rr_tool: Path, targets: dict[Case, Service]
) -> dict[str, dict[Case, list[float]]]:
    """Samples per mode and (kind, target) case, the case order reversed every other round."""
    cases = list(targets)
    for kind, target in cases:  # warm-up, dropped; then the translation is checked
        for mode in MODES:
            _rate(kinds[kind], rr_tool, mode, targets[(kind, target)], WARMUP_SECONDS)
        if target != DIRECT:
            kinds[kind].check(targets[(kind, target)])
    samples: dict[str, dict[Case, list[float]]] = {m: {c: [] for c in cases} for m in MODES}
    for rnd in range(RR_ROUNDS):
        order = cases if rnd % 2 == 0 else cases[::-1]
        for mode in MODES:
            for kind, target in order:
                rate = _rate(kinds[kind], rr_tool, mode, targets[(kind, target)], RR_SECONDS)
                samples[mode][(kind, target)].append(rate)
    return samples


def _comparisons(kinds: Sequence[str]) -> list[tuple[str, str]]:
    """(kind, baseline kind): every kind against each baseline kind listed before it."""
    rank = {
        k: BASELINE_KINDS.index(k) if k in BASELINE_KINDS else len(BASELINE_KINDS) for k in kinds
    }
    return [(k, b) for k in kinds for b in BASELINE_KINDS if b in kinds and rank[b] < rank[k]]


def _record_rates(
    results: Results, n: int, names: Sequence[str], samples: dict[str, dict[Case, list[float]]]
) -> None:
    for mode, (_arg, unit, suffix) in MODES.items():
        m = {case: median(v) for case, v in samples[mode].items()}

        def metric(kind: str, target: str, mode: str = mode, suffix: str = suffix) -> str:
            return f"{mode}_{kind}_n{n}_{target}_{suffix}"

        for k in names:
            results.add(metric(k, "first"), m[(k, "first")], unit)
            for t in ("last", DIRECT):
                results.add(metric(k, t), m[(k, t)], unit, metric(k, "first"), m[(k, "first")])
        for k, b in _comparisons(names):
            for t in (*TARGETS, DIRECT):
                results.add(metric(k, t), m[(k, t)], unit, metric(b, t), m[(b, t)])
            # the ceiling of k against b's last service: k's connection that needs no balancing
            results.add(metric(k, DIRECT), m[(k, DIRECT)], unit, metric(b, "last"), m[(b, "last")])
        print(f"\n{mode} n={n}: samples by round {samples[mode]}")  # shown with pytest -s


def _record_times(
    results: Results, metric: str, unit: str, scale: float, values: dict[str, float]
) -> None:
    """Rows: absolute for the kinds compared with none, else against each baseline kind."""
    comparisons = _comparisons(list(values))
    for k, v in values.items():
        if all(k != kk for kk, _ in comparisons):
            results.add(metric.format(k), v * scale, unit)
    for k, b in comparisons:
        results.add(metric.format(k), values[k] * scale, unit, metric.format(b), values[b] * scale)


def test_pydp_cli_services(results: Results, kinds: dict[str, LbKind]) -> None:
    """ms of one ``pydp service create`` (ten backends) through the CLI -- a process, a store
    transaction and a reconcile -- beside ``pydp system reconcile`` of the same state, the
    two alternated: the control plane's path, which the datapath figures of test_services
    leave out. Runs before them: its services are removed after, untimed."""
    kind = kinds.get("pydp")
    if not isinstance(kind, PydpKind):
        pytest.skip("the pydp kind is left out")
    create: list[float] = []
    reconcile: list[float] = []
    try:
        for i in range(CLI_SERVICES):
            create.append(kind.cli_create(i))
            reconcile.append(kind.cli_reconcile())
    finally:
        kind.cli_remove(len(create))
    print(f"\npydp CLI: service create {create}, system reconcile {reconcile}")
    base = "cli_system_reconcile_pydp_ms"
    results.add(
        "cli_service_create_pydp_ms", median(create) * 1e3, "ms", base, median(reconcile) * 1e3
    )


@pytest.mark.timeout(1800)  # n=10,000: ~5 minutes here (pydp's sync alone ~2), more loaded
@pytest.mark.parametrize("n", SERVICE_COUNTS)
def test_services(results: Results, kinds: dict[str, LbKind], rr_tool: Path, n: int) -> None:
    """At n services x 10 backends: the time to program them, crr and rr to the first and
    the last service (kinds and targets alternated), then the time of one more service."""
    assert kinds, "no kind could be built"
    programmed: dict[str, float] = {}
    for name, kind in kinds.items():
        kind.clear()
        programmed[name] = kind.program(make_services(0, n, kind.backends))
        print(f"\n{name}: {n} services programmed in {programmed[name]:.3f} s")
    _record_times(results, f"program_{{}}_n{n}_s", "s", 1.0, programmed)

    index = {"first": 0, "last": n - 1}
    targets = {
        (k, t): make_services(index[t], 1, kind.backends)[0]
        for k, kind in kinds.items()
        for t in TARGETS
    }
    for k, kind in kinds.items():  # no VIP: pod to pod, each kind's rules or maps missed
        targets[(k, DIRECT)] = Service(-1, kind.backends[0], (), port=TARGET_PORT)
    samples = _measure_rates(kinds, rr_tool, targets)
    _record_rates(results, n, list(kinds), samples)

    added: dict[str, list[float]] = {k: [] for k in kinds}
    for i in range(ADD_ROUNDS):
        order = list(kinds) if i % 2 == 0 else list(kinds)[::-1]
        for name in order:
            service = make_services(n + i, 1, kinds[name].backends)[0]
            added[name].append(kinds[name].add_one(service))
    print(f"\nadd one at n={n}: samples {added}")
    _record_times(
        results, f"add_one_{{}}_n{n}_ms", "ms", 1000.0, {k: median(v) for k, v in added.items()}
    )
