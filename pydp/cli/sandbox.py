"""``pydp sandbox create|ls|inspect|rm``, ``pydp run`` and ``pydp exec``."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from pydp.agent import PydpHost
from pydp.cli._output import add_object_verbs, emit
from pydp.control.model import Sandbox
from pydp.control.ports import parse_publish_all
from pydp.errors import ConfigError

__all__ = ["add_parser", "exec_argv"]


def exec_argv(sb: Sandbox, cmd: list[str]) -> list[str]:
    """The argv that runs cmd inside the sandbox (iproute2 also gives it the netns's /sys)."""
    if not cmd:
        raise ConfigError("CMD: expected a command after --")
    return cmd if sb.netns is None else ["ip", "netns", "exec", sb.netns, *cmd]


def _command(a: argparse.Namespace) -> list[str]:
    cmd = list(a.cmd)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    return cmd


def _sandbox_json(host: PydpHost, sb: Sandbox) -> dict[str, Any]:
    nets = {n.id: n for n in host.controller.networks(all_nodes=True)}
    eps = [e for e in host.controller.endpoints() if e.sandbox == sb.name]
    return {
        "Name": sb.name,
        "Id": sb.id,
        "Node": sb.node or host.controller.node,
        "Netns": sb.netns,
        "Networks": {
            nets[e.network_id].name: {
                "EndpointID": e.id,
                "Interface": e.ifname,
                "IPAddress": "" if e.address is None else str(e.address),
                "MacAddress": "" if e.mac is None else str(e.mac),
            }
            for e in sorted(eps, key=lambda e: e.ifname)
        },
        "Ports": [str(p) for e in eps for p in e.ports],
    }


def _create(host: PydpHost, a: argparse.Namespace) -> int:
    sb = host.controller.create_sandbox(a.name)
    host.apply()
    print(sb.name)
    return 0


def _ls(host: PydpHost, a: argparse.Namespace) -> int:
    rows = []
    for sb in host.controller.sandboxes():
        d = _sandbox_json(host, sb)
        rows.append(
            {
                "name": sb.name,
                "id": sb.id[:12] if a.format == "table" else sb.id,
                "node": d["Node"],
                "netns": sb.netns or "(host)",
                "networks": ",".join(sorted(d["Networks"])),
            }
        )
    emit(a.format, rows, ["name", "id", "node", "netns", "networks"])
    return 0


def _inspect(host: PydpHost, a: argparse.Namespace) -> int:
    sbs = [host.controller.sandbox(name) for name in a.sandbox]
    print(json.dumps([_sandbox_json(host, sb) for sb in sbs], indent=2))
    return 0


def _rm(host: PydpHost, a: argparse.Namespace) -> int:
    for name in a.sandbox:
        host.controller.remove_sandbox(name)
        host.apply()
        print(name)
    return 0


def _run(host: PydpHost, a: argparse.Namespace) -> int:
    cmd = _command(a)
    if not cmd:
        raise ConfigError("CMD: expected a command after --")
    if a.rm and a.detach:
        raise ConfigError("--rm: cannot be combined with -d (pydp runs no daemon to clean up)")
    ports = parse_publish_all(a.publish or [])
    host.reconciler.check_ports(ports)
    sb, _ = host.controller.run_sandbox(a.name, a.network, a.ip, ports)
    try:
        host.apply()
        if a.detach:
            log = host.state_dir / "logs" / f"{sb.name}.log"
            log.parent.mkdir(parents=True, exist_ok=True)
            with Path(log).open("ab") as out:
                subprocess.Popen(
                    exec_argv(sb, cmd),
                    stdout=out,
                    stderr=out,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            print(sb.name)
            return 0
        return subprocess.run(exec_argv(sb, cmd), check=False).returncode
    finally:
        if a.rm:
            host.controller.remove_sandbox(sb.name)
            host.apply()


def _exec(host: PydpHost, a: argparse.Namespace) -> int:
    sb = host.controller.local_sandbox(a.sandbox)  # another node's: refused, naming it
    sys.stdout.flush()
    return subprocess.run(exec_argv(sb, _command(a)), check=False).returncode


def add_parser(sub: Any) -> None:
    verbs = sub.add_parser("sandbox", help="manage sandboxes").add_subparsers(
        dest="verb", metavar="VERB", required=True
    )
    c = verbs.add_parser("create", help="create a sandbox (a named network namespace)")
    c.add_argument("name", metavar="NAME", nargs="?")
    c.set_defaults(func=_create)
    add_object_verbs(
        verbs,
        "sandbox",
        (_ls, _inspect, _rm),
        quiet=False,
        rm_help="remove sandboxes and their endpoints (another node's: from the store, its"
        " agent removes the rest)",
    )

    r = sub.add_parser("run", help="create a sandbox, connect it, run a command in it")
    r.add_argument("--name", help="the sandbox's name (default: generated)")
    r.add_argument("--network", default="bridge", help="network to connect (default: bridge)")
    r.add_argument("--ip", help="a static IPv4 address on that network")
    r.add_argument(
        "-p",
        "--publish",
        action="append",
        metavar="[IP:]HOST_PORT:CONTAINER_PORT[/PROTO]",
        help="publish a port on the uplink (ranges: 8000-8009:8000-8009; CONTAINER_PORT alone"
        " picks a free host port)",
    )
    r.add_argument("--rm", action="store_true", help="remove the sandbox when CMD exits")
    r.add_argument("-d", "--detach", action="store_true", help="run CMD in the background")
    r.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...")
    r.set_defaults(func=_run)

    e = sub.add_parser("exec", help="run a command in a sandbox")
    e.add_argument("sandbox", metavar="SANDBOX")
    e.add_argument("cmd", nargs=argparse.REMAINDER, metavar="-- CMD...")
    e.set_defaults(func=_exec)
