"""``make demo``: two containers on one host talk through from_container's redirect.

Builds a host and two containers out of network namespaces (pydp.testing),
loads the endpoint program with its maps pinned under a bpffs root of its own,
plugs both containers in, pings and sends a TCP stream between them, prints the
counters that prove the redirect, and tears everything down.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pydp.datapath import Datapath
from pydp.testing import Container, Host, Topology

__all__ = ["main"]

BRIDGE = "pydp0"


def say(text: str) -> None:
    print(f"==> {text}", flush=True)


def build(topo: Topology) -> tuple[Host, Container, Container]:
    host = topo.add_host("host")
    say(f"host namespace {host.netns}: bridge {BRIDGE} with gateway 10.0.0.1/24")
    host.add_bridge(BRIDGE, "10.0.0.1/24")
    c1 = host.add_container("c1", "10.0.0.2/24", gateway="10.0.0.1", bridge=BRIDGE)
    c2 = host.add_container("c2", "10.0.0.3/24", gateway="10.0.0.1", bridge=BRIDGE)
    for c in (c1, c2):
        say(f"container {c.name} ({c.netns}): eth0 {c.address}, host side {c.host_ifname}")
    return host, c1, c2


def main() -> int:
    if os.geteuid() != 0:
        print("Error: the demo needs root (network namespaces, BPF)", file=sys.stderr)
        return 1
    root = Path(f"/sys/fs/bpf/pydp-demo-{os.getpid()}")
    with Topology(label="demo") as topo:
        host, c1, c2 = build(topo)
        dp = Datapath(root=root)
        try:
            with host.enter():
                for c in (c1, c2):
                    assert c.address is not None
                    att = dp.plug(c.address.ip, c.host_ifindex, c.mac)
                    say(
                        f"from_container on {c.host_ifname} ingress ({att.mode},"
                        f" prog id {att.prog_id}); endpoint {c.address.ip} -> ifindex"
                        f" {c.host_ifindex}"
                    )
            say(f"maps pinned under {root}")
            say("c1 pings c2")
            print(c1.run(["ping", "-c", "3", "-i", "0.2", "10.0.0.3"]).stdout.rstrip())
            say("c1 sends 50 MB over TCP to c2 (iperf3)")
            server = c2.popen(["iperf3", "-s", "-1", "-B", "10.0.0.3"])
            server.wait_port(5201)
            out = json.loads(
                c1.run(["iperf3", "-c", "10.0.0.3", "-n", "50M", "-J"], timeout=60).stdout
            )
            server.stop()
            sent = out["end"]["sum_sent"]  # TCP: every byte sent was acknowledged by c2
            gbps = sent["bits_per_second"] / 1e9
            print(f"    {sent['bytes']} bytes sent and acknowledged, {gbps:.2f} Gbit/s")
            say("counters (pydp_metrics, summed over CPUs)")
            for reason, n in dp.counters().items():
                print(f"    {reason:<20} {n.packets:>10} packets {n.bytes:>14} bytes")
            redirected = dp.metrics.counter("REASON_REDIRECT").packets
            say(
                f"{redirected} packets went container to container by bpf_redirect_peer,"
                " never through the host's bridge or IP stack"
            )
        finally:
            say("tearing down: pins, programs, namespaces")
            dp.destroy()
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
