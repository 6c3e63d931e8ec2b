"""Finding the uplink: the default route's interface, or the one named."""

from __future__ import annotations

import pytest
from netaddr import IPAddress, IPNetwork

from pydp.agent.uplink import find_uplink
from pydp.errors import NotFoundError
from pydp.net import NetHost
from pydp.testing import Topology


def test_uplink_is_default_route_interface(
    topology: Topology, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a name the uplink is the default route's interface; a name or PYDP_UPLINK
    picks another; a host without a default route gets an error saying what to do."""
    monkeypatch.delenv("PYDP_UPLINK", raising=False)
    host = topology.add_host("h")
    host.connect_fabric("10.99.0.2/24", ifname="eth0")
    host.connect_fabric("10.98.0.2/24", ifname="eth1")
    with host.enter(), NetHost() as net:
        with pytest.raises(NotFoundError, match="no interface holds a default route"):
            find_uplink(net)
        host.ip("route", "add", "default", "via", "10.99.0.1")
        up = find_uplink(net)
        assert (up.name, up.address, up.gateway) == (
            "eth0",
            IPNetwork("10.99.0.2/24"),
            IPAddress("10.99.0.1"),
        )
        assert find_uplink(net, "eth1").address == IPNetwork("10.98.0.2/24")
        monkeypatch.setenv("PYDP_UPLINK", "eth1")
        assert find_uplink(net).name == "eth1"
        with pytest.raises(NotFoundError, match="--uplink: no interface eth9 on this host"):
            find_uplink(net, "eth9")
