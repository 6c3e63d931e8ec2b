"""pydp metrics and pydp endpoint ls read the pinned maps of a running datapath."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from netaddr import EUI, IPAddress

from pydp.datapath import Datapath
from pydp.loader import test_run


def pydp(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pydp.cli", *args], capture_output=True, text=True, timeout=30
    )


@pytest.fixture
def datapath(bpffs: Path) -> Datapath:
    """Function scope, depends on bpffs: a datapath with one endpoint and one counted packet."""
    dp = Datapath(root=bpffs / "cli")
    dp.endpoints[IPAddress("10.0.0.2")] = __import__("pydp.maps").maps.Endpoint(
        7, EUI("02:00:00:00:00:02")
    )
    pkt = bytes.fromhex("0200000000fe0200000000010806") + b"\0" * 28  # ARP: passed, non-IP
    test_run(dp.from_container, pkt)
    return dp


def test_cli_metrics_table_and_json(datapath: Datapath) -> None:
    """metrics prints the counted reasons as a table and as JSON."""
    r = pydp("--bpffs", str(datapath.root), "metrics")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].split() == ["REASON", "PACKETS", "BYTES"]
    assert r.stdout.splitlines()[1].split() == ["REASON_PASS_NON_IP", "1", "42"]
    r = pydp("--bpffs", str(datapath.root), "metrics", "--format", "json")
    assert json.loads(r.stdout) == [{"reason": "REASON_PASS_NON_IP", "packets": 1, "bytes": 42}]


def test_cli_endpoint_ls(datapath: Datapath) -> None:
    """endpoint ls lists the endpoint map."""
    r = pydp("--bpffs", str(datapath.root), "endpoint", "ls", "--format", "json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout) == [
        {"address": "10.0.0.2", "ifindex": 7, "mac": "02:00:00:00:00:02", "network": 0, "scope": 0}
    ]


def test_cli_nothing_pinned_is_one_line_exit_1(bpffs: Path) -> None:
    """With no datapath under the root, the error is one line naming the pin, and exit 1."""
    r = pydp("--bpffs", str(bpffs / "none"), "metrics")
    assert r.returncode == 1 and r.stdout == ""
    assert (
        r.stderr == f"Error: open pinned map {bpffs}/none/pydp_metrics: No such file or directory\n"
    )
