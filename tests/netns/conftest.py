"""pydp hosts inside namespaces: the CLI run as a user would, and snapshots of what it owns."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pydp.agent.host import netns_prefix
from pydp.loader import tc_attached
from pydp.testing import Topology
from pydp.testing.cluster import PydpNode as _PydpNode


class PydpNode(_PydpNode):
    """A pydp host (pydp.testing.cluster), with snapshots of what it owns."""

    def snapshot(self) -> dict[str, Any]:
        """What the host holds: links, addresses, routes, pydp's namespaces, pins, the store."""

        def ip(*a: str) -> Any:
            return json.loads(self.host.run(["ip", "-j", *a], own_sysfs=False).stdout or "[]")

        links = sorted(
            (x["ifname"], x.get("link_type"), x.get("ifalias", ""), x.get("master", ""))
            for x in ip("link", "show")
        )
        addrs = sorted(
            (x["ifname"], a["local"], a["prefixlen"])
            for x in ip("addr", "show")
            for a in x.get("addr_info", [])
        )
        routes = sorted(json.dumps(r, sort_keys=True) for r in ip("route", "show"))
        prefix = netns_prefix(self.state_dir)
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
        netns = sorted(n for n in listed.split() if n.startswith(prefix))
        pins = (
            sorted(str(p.relative_to(self.bpffs)) for p in self.bpffs.rglob("*"))
            if self.bpffs.exists()
            else []
        )
        store = {}
        db = self.state_dir / "state.db"
        if db.exists():
            import sqlite3

            with sqlite3.connect(db) as c:
                store = dict(c.execute("select key, value from kv").fetchall())
        return {
            "links": links,
            "addrs": addrs,
            "routes": routes,
            "netns": netns,
            "pins": pins,
            "store": store,
            "programs": self.programs(),
        }

    def programs(self) -> dict[str, int]:
        """The id of the program pydp attached at each pydp-owned link's TC ingress."""
        out = {}
        with self.host.enter():
            for link in json.loads(self.host.run(["ip", "-j", "link"]).stdout):
                if link.get("ifalias", "").startswith("pydp:ep/"):
                    att = tc_attached(link["ifindex"], root=self.bpffs)
                    out[link["ifname"]] = 0 if att is None else att.prog_id
        return out


@pytest.fixture
def pydp_node(topology: Topology, bpffs: Path, tmp_path: Path) -> Iterator[PydpNode]:
    """Function scope, depends on topology and bpffs: a pydp host in a fresh namespace;
    `pydp system reset` at the end removes what it made even when the test failed."""
    node = PydpNode(topology.add_host("pd"), tmp_path / "state", bpffs / tmp_path.name)
    try:
        yield node
    finally:
        node("system", "reset", check=False)
