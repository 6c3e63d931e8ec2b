"""Network-namespace test topologies for pydp and the projects that use it.

Build hosts and containers as network namespaces joined by veths, run
commands and servers inside them, and tear everything down afterwards::

    from pydp.testing import Topology

    with Topology() as topo:
        host = topo.add_host("h1")
        a = host.add_container("a", "10.0.0.2/24")
        a.run(["ip", "-br", "addr"])

The pytest plugin `pydp.testing.plugin` (registered as ``pydp``) provides the
``topology`` and ``topology_module`` fixtures. Everything here needs root.
"""

from __future__ import annotations

from pydp.testing._proc import Background
from pydp.testing.errors import CommandError, TopologyError
from pydp.testing.nodes import Container, Fabric, Host, LinkInfo, Namespace
from pydp.testing.topology import Topology, cleanup_stale, pid_alive

__all__ = [
    "Background",
    "CommandError",
    "Container",
    "Fabric",
    "Host",
    "LinkInfo",
    "Namespace",
    "Topology",
    "TopologyError",
    "cleanup_stale",
    "pid_alive",
]
