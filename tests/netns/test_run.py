"""pydp run and exec: networks host and none, --rm, exit codes."""

from __future__ import annotations

import time

from .conftest import PydpNode


def test_run_host_network_shares_host_namespace(pydp_node: PydpNode) -> None:
    """--network host runs the command in the host's own namespace (its links)."""
    node = pydp_node
    node.host.run(["ip", "link", "add", "pdmark0", "type", "veth", "peer", "name", "pdmark1"])
    out = node("run", "--name", "h", "--network", "host", "--", "ip", "-o", "link").stdout
    assert "pdmark0" in out
    assert node.json("sandbox", "inspect", "h")[0]["Netns"] is None


def test_run_none_network_has_loopback_only(pydp_node: PydpNode) -> None:
    """--network none gives a namespace with lo up and no other interface."""
    out = pydp_node("run", "--network", "none", "--", "ip", "-o", "link").stdout
    names = [line.split(":")[1].strip() for line in out.splitlines()]
    assert names == ["lo"] and "UP" in out


def test_run_rm_removes_sandbox_and_passes_exit_code(pydp_node: PydpNode) -> None:
    """run --rm removes the sandbox and its namespace after CMD, and exits with CMD's code."""
    node = pydp_node
    r = node("run", "--rm", "--name", "t", "--", "sh", "-c", "exit 3", check=False)
    assert r.returncode == 3
    assert node.json("sandbox", "ls", "--format", "json") == []
    assert node.snapshot()["netns"] == []


def test_exec_runs_in_sandbox(pydp_node: PydpNode) -> None:
    """exec runs a command in an existing sandbox; its exit code is pydp's."""
    node = pydp_node
    node("sandbox", "create", "s")
    node("network", "connect", "bridge", "s")
    assert "172.17.0.2/16" in node("exec", "s", "--", "ip", "-o", "addr", "show", "eth0").stdout
    assert node("exec", "s", "--", "false", check=False).returncode == 1
    r = node("exec", "ghost", "--", "true", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: sandbox ghost not found\n")


def test_run_usage_errors(pydp_node: PydpNode) -> None:
    """A missing command or --rm with -d are refused before anything is made."""
    node = pydp_node
    before = node.snapshot()
    r = node("run", check=False)
    assert (r.returncode, r.stderr) == (1, "Error: CMD: expected a command after --\n")
    r = node("run", "--rm", "-d", "--", "true", check=False)
    assert r.returncode == 1 and r.stderr.startswith("Error: --rm: cannot be combined with -d")
    r = node("run", "--bogus", check=False)
    assert r.returncode == 2 and r.stderr.startswith("Error: unrecognized arguments: --bogus")
    assert node.snapshot() == before


def test_sandbox_rm_kills_its_processes(pydp_node: PydpNode) -> None:
    """Removing a sandbox kills what runs in it, as docker rm -f does: nothing lives on in an
    anonymous namespace; system reset does the same for every sandbox."""
    node = pydp_node
    node("run", "--name", "s1", "-d", "--", "sleep", "600")
    node("run", "--name", "s2", "-d", "--", "sleep", "601")
    pids = {}
    for name in ("s1", "s2"):
        netns = node.json("sandbox", "inspect", name)[0]["Netns"]
        for _ in range(50):  # -d: the command may take a moment to start
            out = node.host.run(["ip", "netns", "pids", netns]).stdout.split()
            if out:
                break
            time.sleep(0.05)
        pids[name] = [int(p) for p in out]
        assert pids[name], name
    node("sandbox", "rm", "s1")
    assert not any(map(alive, pids["s1"]))
    assert all(map(alive, pids["s2"]))
    node("system", "reset")
    assert not any(map(alive, pids["s2"]))


def alive(pid: int) -> bool:
    """Running (a killed process may linger as a zombie until its new parent reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
