"""Root tests for pydp.testing topologies: connectivity, servers, teardown, cleanup."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import netaddr
import pytest

from pydp.testing import CommandError, Container, Host, Topology, TopologyError, cleanup_stale

pytestmark = [pytest.mark.root, pytest.mark.usefixtures("netns_ready")]

PING = ["ping"] if shutil.which("ping") else ["busybox", "ping"]


def _netns_list() -> set[str]:
    out = subprocess.run(["ip", "-j", "netns", "list"], capture_output=True, text=True, check=True)
    return {entry["name"] for entry in json.loads(out.stdout or "[]")}


def _root_links() -> set[tuple[int, str]]:
    out = subprocess.run(["ip", "-j", "link"], capture_output=True, text=True, check=True)
    return {(link["ifindex"], link["ifname"]) for link in json.loads(out.stdout)}


def _ping(src: Host | Container, dst: netaddr.IPAddress) -> subprocess.CompletedProcess[str]:
    return src.run([*PING, "-c", "1", "-W", "3", str(dst)], check=False, timeout=10)


def _bridged_pair(topo: Topology) -> tuple[Host, Container, Container]:
    host = topo.add_host("h1")
    a = host.add_container("a", "10.0.0.2/24")
    b = host.add_container("b", "10.0.0.3/24")
    host.ip_batch(
        [
            "link add br0 type bridge stp_state 0",
            "link set br0 up",
            f"link set {a.host_ifname} master br0",
            f"link set {b.host_ifname} master br0",
        ]
    )
    return host, a, b


def _netns_pids(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True, check=True)
    return [int(pid) for pid in out.stdout.split()]


def _wait_in_netns(pid: int, netns: str) -> None:
    deadline = time.monotonic() + 10
    while pid not in _netns_pids(netns):
        assert time.monotonic() < deadline, f"pid {pid} never entered {netns}"
        time.sleep(0.02)


def _pid_alive(pid: int) -> bool:
    """Return whether pid still runs after up to 5 s; a zombie counts as gone."""
    deadline = time.monotonic() + 5
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return False
        if state in ("Z", "X") or time.monotonic() >= deadline:
            return state not in ("Z", "X")
        time.sleep(0.02)


def test_container_ping_through_host_bridge(topology: Topology) -> None:
    """Two containers whose host veths share a bridge in the host ping each other."""
    _, a, b = _bridged_pair(topology)
    assert a.address is not None and b.address is not None
    assert _ping(a, b.address.ip).returncode == 0
    assert _ping(b, a.address.ip).returncode == 0


def test_container_links_match_kernel(topology: Topology) -> None:
    """A container's recorded names, ifindexes, MACs, MTU and address match the kernel's view."""
    host = topology.add_host("h1")
    c = host.add_container(
        "c", "10.0.0.2/24", gateway="10.0.0.1", mtu=1400, mac="02:00:00:0a:0b:0c"
    )
    assert c.ifname == "eth0"
    assert c.address == netaddr.IPNetwork("10.0.0.2/24")
    assert c.mac == netaddr.EUI("02:00:00:0a:0b:0c")
    assert len(c.host_ifname) <= 15
    seen = json.loads(host.ip("-j", "link", "show", "dev", c.host_ifname).stdout)[0]
    assert (seen["ifindex"], seen["mtu"]) == (c.host_ifindex, 1400)
    assert netaddr.EUI(seen["address"]) == c.host_mac
    inside = json.loads(c.ip("-4", "-j", "addr", "show", "dev", "eth0").stdout)[0]
    assert inside["ifindex"] == c.ifindex
    assert [(a["local"], a["prefixlen"]) for a in inside["addr_info"]] == [("10.0.0.2", 24)]
    route = json.loads(c.ip("-j", "route", "show", "default").stdout)
    assert [(r["gateway"], r["dev"]) for r in route] == [("10.0.0.1", "eth0")]
    assert host.run(["cat", "/proc/sys/net/ipv4/ip_forward"]).stdout.strip() == "1"


def test_host_connect_fabric_ping_underlay(topology: Topology) -> None:
    """Two hosts plugged into the fabric bridge reach each other on the underlay."""
    h1 = topology.add_host("h1")
    h2 = topology.add_host("h2")
    l1 = h1.connect_fabric("10.99.0.1/24")
    l2 = h2.connect_fabric("10.99.0.2/24", ifname="eth1")
    assert (l1.ifname, l2.ifname) == ("eth0", "eth1")
    assert l1 == h1.underlay["eth0"]
    assert h1.link("eth0").ifindex == l1.ifindex
    assert _ping(h1, netaddr.IPAddress("10.99.0.2")).returncode == 0
    assert _ping(h2, netaddr.IPAddress("10.99.0.1")).returncode == 0


def test_background_server_reached_from_container(topology: Topology, tmp_path: Path) -> None:
    """An HTTP server started with popen in one container serves a file to curl in another."""
    (tmp_path / "hello.txt").write_text("hello from b\n")
    _, a, b = _bridged_pair(topology)
    server = b.popen(["busybox", "httpd", "-f", "-p", "8080", "-h", str(tmp_path)])
    server.wait_port(8080)
    got = a.run(["curl", "-sS", "--max-time", "5", "http://10.0.0.3:8080/hello.txt"], timeout=10)
    assert got.stdout == "hello from b\n"
    server.stop()
    assert server.returncode is not None
    assert not _pid_alive(server.pid)


def test_background_wait_port_reports_early_exit(topology: Topology) -> None:
    """wait_port raises with the process's output when the server exits before listening."""
    host = topology.add_host("h1")
    bg = host.popen(["sh", "-c", "echo boom; exit 3"])
    with pytest.raises(TopologyError) as info:
        bg.wait_port(9, timeout=5)
    assert (
        str(info.value)
        == f"wait for tcp port 9 in {host.netns}: sh -c 'echo boom; exit 3' exited with 3: boom"
    )


def test_namespace_run_failure_raises_command_error(topology: Topology) -> None:
    """A failing command raises CommandError naming the command, namespace and status."""
    host = topology.add_host("h1")
    with pytest.raises(CommandError) as info:
        host.run(["sh", "-c", "echo nope >&2; exit 2"])
    assert info.value.returncode == 2
    assert (
        str(info.value) == f"run sh -c 'echo nope >&2; exit 2' in {host.netns}: exit status 2: nope"
    )
    assert host.run(["false"], check=False).returncode == 1


def test_topology_duplicate_name_raises(topology: Topology) -> None:
    """A second namespace with the same name in one topology is refused."""
    host = topology.add_host("h1")
    with pytest.raises(TopologyError) as info:
        host.add_container("h1")
    assert str(info.value) == f"add h1 to topology {topology.prefix}: name already used"


def test_namespace_enter_moves_only_calling_thread(topology: Topology) -> None:
    """enter() puts the calling thread in the container's namespace and brings it back."""
    c = topology.add_host("h1").add_container("c")
    own = os.readlink("/proc/thread-self/ns/net")
    target = os.stat(f"/run/netns/{c.netns}").st_ino
    other: list[str] = []
    go, done = threading.Event(), threading.Event()

    def look() -> None:
        go.wait(timeout=5)
        other.append(os.readlink("/proc/thread-self/ns/net"))
        done.set()

    worker = threading.Thread(target=look)  # started outside, so it stays outside
    worker.start()
    with c.enter():
        assert os.stat("/proc/thread-self/ns/net").st_ino == target
        assert socket.if_nametoindex("eth0") == c.ifindex
        go.set()
        assert done.wait(timeout=5)
    worker.join(timeout=5)
    assert other == [own]
    assert os.readlink("/proc/thread-self/ns/net") == own


def test_namespace_ipr_lists_container_links(topology: Topology) -> None:
    """ipr() gives a pyroute2 handle that sees the container's own links."""
    c = topology.add_host("h1").add_container("c")
    names = {link.get("ifname") for link in c.ipr().get_links()}
    assert names == {"lo", "eth0"}


def test_topology_close_removes_namespaces_and_processes() -> None:
    """Leaving the with block deletes all namespaces and processes; close is idempotent."""
    with Topology() as topo:
        _, a, _ = _bridged_pair(topo)
        topo.add_host("h2").connect_fabric("10.99.0.2/24")
        sleeper = a.popen(["sleep", "60"])
        made = set(topo.namespaces)
        assert len(made) == 5
        assert made <= _netns_list()
    assert topo.closed
    assert not made & _netns_list()
    assert not _pid_alive(sleeper.pid)
    topo.close()


def test_topology_close_after_exception() -> None:
    """An exception inside the with block still deletes the namespaces and kills strays."""
    made: set[str] = set()
    stray_pid = 0
    with pytest.raises(RuntimeError, match=r"^boom$"), Topology() as topo:
        host, _, _ = _bridged_pair(topo)
        made = set(topo.namespaces)
        # A daemon started with run() (not popen) is not tracked, yet dies with its netns.
        host.run(["sh", "-c", "sleep 60 >/dev/null 2>&1 &"])
        stray_pid = _netns_pids(host.netns)[0]
        raise RuntimeError("boom")
    assert made and not made & _netns_list()
    assert stray_pid and not _pid_alive(stray_pid)


def test_topology_leaves_no_link_in_root_netns() -> None:
    """Building and closing a topology never adds a link to the root namespace."""
    before = _root_links()
    with Topology() as topo:
        _bridged_pair(topo)
        topo.hosts["h1"].connect_fabric("10.99.0.1/24")
        topo.add_host("h2").connect_fabric("10.99.0.2/24")
        during = _root_links()
    assert during == before
    assert _root_links() == before


def test_topology_sigterm_closes_open_topology(tmp_path: Path) -> None:
    """A process killed by SIGTERM inside a topology deletes its namespaces on the way out."""
    script = tmp_path / "hold.py"
    script.write_text(
        textwrap.dedent(
            """
            import sys, time
            from pydp.testing import Topology
            topo = Topology()
            topo.add_host("h1").add_container("c")
            print(" ".join(topo.namespaces), flush=True)
            time.sleep(60)
            """
        )
    )
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        made = set(proc.stdout.readline().split())
        assert len(made) == 2 and made <= _netns_list()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == -signal.SIGTERM
    finally:
        proc.kill()
        proc.wait(timeout=20)
    assert not made & _netns_list()


def test_cleanup_stale_removes_only_dead_pid_namespaces() -> None:
    """cleanup_stale deletes a dead pid's namespaces and processes, keeping the others."""
    dead = subprocess.Popen(["true"])
    dead.wait(timeout=10)
    stale = f"pd{dead.pid}t0-stale"
    live = f"pd{os.getpid()}t99999-live"
    foreign = f"pdx{dead.pid}-foreign"
    made = [stale, live, foreign]
    try:
        for name in made:
            subprocess.run(["ip", "netns", "add", name], check=True)
        orphan = subprocess.Popen(["ip", "netns", "exec", stale, "sleep", "60"])
        _wait_in_netns(orphan.pid, stale)
        removed = cleanup_stale()
        assert orphan.wait(timeout=10) == -signal.SIGKILL
        assert stale in removed
        assert {live, foreign} & set(removed) == set()
        assert stale not in _netns_list()
        assert {live, foreign} <= _netns_list()
    finally:
        for name in made:
            subprocess.run(["ip", "netns", "delete", name], check=False, capture_output=True)


FIXTURE_TESTS = """
from pathlib import Path

NAMES = Path(__file__).with_name("names.txt")


def test_function_scope_fails(topology):
    topology.add_host("h1").add_container("c")
    NAMES.open("a").write(" ".join(topology.namespaces) + "\\n")
    raise AssertionError("deliberate")


def test_module_scope_first(topology_module):
    topology_module.add_host("m1")


def test_module_scope_second(topology_module):
    assert set(topology_module.hosts) == {"m1"}
    NAMES.open("a").write(" ".join(topology_module.namespaces) + "\\n")
"""


def test_plugin_topology_fixtures_close_after_failure(tmp_path: Path) -> None:
    """The entry-point fixtures delete their namespaces after the test, even a failing one."""
    (tmp_path / "test_fixtures.py").write_text(FIXTURE_TESTS)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_fixtures.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "1 failed, 2 passed" in result.stdout
    lines = (tmp_path / "names.txt").read_text().splitlines()
    made = {name for line in lines for name in line.split()}
    assert len(lines) == 2 and len(made) == 3
    assert not made & _netns_list()
