"""Two pydp hosts sharing one etcd store, through the CLI as a user runs it."""

from __future__ import annotations

import json
from pathlib import Path

from pydp.testing import Topology
from pydp.testing.etcd import etcd_server

from .conftest import PydpNode


def test_etcd_store_is_shared_by_two_hosts(topology: Topology, bpffs: Path, tmp_path: Path) -> None:
    """A network created on one host with --store etcd://... is listed by another host (its
    own state dir, $PYDP_STORE) through an etcd reached over the fabric; no state.db is made."""
    h1, h2 = topology.add_host("e1"), topology.add_host("e2")
    h1.connect_fabric("10.98.0.1/24")
    h2.connect_fabric("10.98.0.2/24")
    with etcd_server(tmp_path, netns=h1.netns, host="10.98.0.1") as etcd:
        url = etcd.url("/cli")
        one = PydpNode(h1, tmp_path / "state1", bpffs / f"{tmp_path.name}-1")
        two = PydpNode(h2, tmp_path / "state2", bpffs / f"{tmp_path.name}-2")
        try:
            one("--store", url, "network", "create", "--subnet", "10.50.0.0/24", "shared")
            listed = two("network", "ls", "--format", "json", env={"PYDP_STORE": url})
            rows = json.loads(listed.stdout)
            assert {r["name"]: r["subnet"] for r in rows}["shared"] == "10.50.0.0/24"
            ids = {
                r["name"]: r["network id"]
                for r in one.json("--store", url, "network", "ls", "--format", "json")
            }
            assert {r["name"]: r["network id"] for r in rows} == ids
            assert not (tmp_path / "state1" / "state.db").exists()
            assert not (tmp_path / "state2" / "state.db").exists()
            out = two("network", "create", "shared", check=False, env={"PYDP_STORE": url})
            assert out.returncode == 1
            assert out.stderr == "Error: network with name shared already exists\n"
        finally:
            for node in (one, two):
                node("--store", url, "system", "reset", check=False)
