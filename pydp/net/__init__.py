"""The kernel's links, network namespaces, addresses and routes, through pyroute2.

A small, typed, idempotent layer for the reconciler::

    from pydp.net import NetHost, netns_create, veth_name

    netns_create("sb1")
    with NetHost() as host, NetHost("sb1") as sandbox:
        host.ensure_bridge("brnet", "pydp:net/3f2a9c")
        host.ensure_address("brnet", IPNetwork("10.0.0.1/24"))
        host.ensure_veth(veth_name(ep_id), f"pydp:ep/{ep_id}", "eth0", sandbox, master="brnet")
        sandbox.ensure_address("eth0", IPNetwork("10.0.0.2/24"))
        sandbox.ensure_default_route(IPAddress("10.0.0.1"), "eth0")

`NetHost()` acts on the calling thread's current namespace (pydp's host);
`NetHost(name)` on a named one. Links pydp creates carry the alias
``pydp:<owner>``; links without it are never changed or deleted.
"""

from __future__ import annotations

from pydp.net.ethtool import enable_gro
from pydp.net.host import NetHost
from pydp.net.links import OWNER_PREFIX, Link, Route, veth_name
from pydp.net.netns import netns_create, netns_delete, netns_exists, netns_list, sysctl

__all__ = [
    "OWNER_PREFIX",
    "Link",
    "NetHost",
    "Route",
    "enable_gro",
    "netns_create",
    "netns_delete",
    "netns_exists",
    "netns_list",
    "sysctl",
    "veth_name",
]
