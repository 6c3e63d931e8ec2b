"""pydp hosts in namespaces: the CLI run as a user runs it, and several hosts sharing an
etcd on a fabric, each running ``pydp agent``::

    from pydp.testing import Topology
    from pydp.testing.cluster import pydp_cluster

    with Topology() as topo, pydp_cluster(topo, bpffs_root, tmp_path) as c:
        c("h1", "network", "create", "-d", "overlay", "--subnet", "10.70.0.0/24", "ov")
        c("h2", "run", "--name", "web", "--network", "ov", "-d", "--", "sleep", "60")

Every host's state dir and pin root are its own; `pydp system reset` runs on each at the
end, even when the block failed, and the topology removes the namespaces.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydp.loader import Map
from pydp.maps import METRICS_MAP, Counter, MetricsMap
from pydp.testing._proc import Background
from pydp.testing.etcd import etcd_server
from pydp.testing.nodes import Host
from pydp.testing.topology import Topology

__all__ = ["Cluster", "PydpNode", "pydp_cluster", "start_agent", "wait_for"]

FABRIC_NET = "10.97.0"  # hosts are .1, .2, ...; etcd is .9
ETCD_ADDR = f"{FABRIC_NET}.9"


@dataclass
class PydpNode:
    """A pydp host: a namespace with its own state dir and pin root."""

    host: Host
    state_dir: Path
    bpffs: Path
    env: dict[str, str] = field(default_factory=dict)  # PYDP_* every command of it gets

    def command(self, *args: str, env: dict[str, str] | None = None) -> list[str]:
        """The argv of ``pydp ARGS`` for this host (its state dir, pin root and env)."""
        extra = [f"{k}={v}" for k, v in {**self.env, **(env or {})}.items()]
        return [
            "env", f"PYDP_STATE_DIR={self.state_dir}", f"PYDP_BPFFS={self.bpffs}", *extra,
            sys.executable, "-m", "pydp.cli", *args,
        ]  # fmt: skip

    def __call__(
        self, *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run ``pydp ARGS`` in the host (nsenter: /sys/fs/bpf stays the machine's)."""
        cmd = self.command(*args, env=env)
        return self.host.run(cmd, check=check, timeout=timeout, own_sysfs=False)

    def json(self, *args: str) -> Any:
        return json.loads(self(*args).stdout)

    def counters(self) -> dict[str, Counter]:
        """The host's datapath counters with a packet counted, by reason name (its pinned
        metrics map: every program of the host counts there)."""
        with Map.open_pinned(METRICS_MAP, self.bpffs) as raw:
            return MetricsMap(raw).nonzero()


def start_agent(node: PydpNode) -> Background:
    """``pydp agent`` in the node's host, stopped at the topology's teardown at the latest."""
    return node.host.popen(node.command("agent"), own_sysfs=False)


def wait_for(predicate: Callable[[], object], timeout: float = 10, step: float = 0.1) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout`` seconds passed (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return bool(predicate())


@dataclass
class Cluster:
    """pydp hosts sharing one etcd; ``cluster("h1", "network", "ls")`` runs the CLI on h1."""

    nodes: dict[str, PydpNode]
    agents: dict[str, Background]
    url: str

    def __call__(
        self, node: str, *args: str, check: bool = True, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        return self.nodes[node](*args, check=check, timeout=timeout)

    def json(self, node: str, *args: str) -> Any:
        return self.nodes[node].json(*args)

    def host(self, node: str) -> Host:
        return self.nodes[node].host

    def address(self, node: str) -> str:
        """The node's underlay address on the fabric."""
        return f"{FABRIC_NET}.{list(self.nodes).index(node) + 1}"

    def ip_of(self, sandbox: str, node: str | None = None) -> str:
        """The address of a sandbox on its (first) network."""
        info = self.json(node or next(iter(self.nodes)), "sandbox", "inspect", sandbox)[0]
        return str(next(iter(info["Networks"].values()))["IPAddress"])

    def reaches(self, node: str, sandbox: str, addr: str) -> bool:
        """Whether sandbox (on node) gets an answer to one ping of addr within a second."""
        ping = ("exec", sandbox, "--", "ping", "-c1", "-W1", addr)
        return self(node, *ping, check=False).returncode == 0

    def restart_agent(self, node: str) -> None:
        self.agents[node].stop()
        self.agents[node] = start_agent(self.nodes[node])

    def ready(self) -> set[str]:
        first = next(iter(self.nodes))
        rows = self.json(first, "node", "ls", "--format", "json")
        return {r["name"] for r in rows if r["state"] == "ready"}


@contextlib.contextmanager
def pydp_cluster(
    topology: Topology,
    bpffs_root: Path,
    tmp_path: Path,
    hosts: Sequence[str] = ("h1", "h2", "h3"),
    prefix: str = "/pydp",
) -> Iterator[Cluster]:
    """Hosts (underlay 10.97.0.1, .2, ... on ``eth0``, default route through the fabric)
    and an etcd in host "db" (10.97.0.9), each host running ``pydp agent`` with its own
    state dir and pins under ``bpffs_root``. Yields once every agent's node is ready."""
    db = topology.add_host("db")
    db.connect_fabric(f"{ETCD_ADDR}/24")
    made: dict[str, Host] = {}
    for i, name in enumerate(hosts, start=1):
        h = topology.add_host(name)
        h.connect_fabric(f"{FABRIC_NET}.{i}/24", ifname="eth0")
        h.ip("route", "add", "default", "via", ETCD_ADDR)
        made[name] = h
    with etcd_server(tmp_path, netns=db.netns, host=ETCD_ADDR) as etcd:
        url = etcd.url(prefix)
        tag = tmp_path.name
        nodes = {
            n: PydpNode(
                h, tmp_path / f"state-{n}", bpffs_root / f"{tag}-{n}",
                {"PYDP_STORE": url, "PYDP_NODE": n},
            )
            for n, h in made.items()
        }  # fmt: skip
        agents: dict[str, Background] = {}
        cluster = Cluster(nodes, agents, url)
        try:
            for n, node in nodes.items():
                agents[n] = start_agent(node)
            if not wait_for(lambda: set(hosts) <= cluster.ready(), 30, 0.2):
                raise RuntimeError(f"agents not ready in 30 s: {sorted(cluster.ready())}")
            yield cluster
        finally:
            for a in agents.values():
                a.stop()
            for node in nodes.values():
                node("system", "reset", check=False)
