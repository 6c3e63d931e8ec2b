"""Published ports: Docker's ``-p [IP:][HOST_PORT[-END]:]CONTAINER_PORT[-END][/PROTO]``.

Pure parsing and validation; choosing free random host ports and checking that
no host process holds a port are the reconciler's (they look at the kernel).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from netaddr import IPAddress

from pydp.errors import ConfigError, ConflictError

__all__ = ["PROTOCOLS", "PortMapping", "check_conflicts", "parse_publish", "parse_publish_all"]

PROTOCOLS = ("tcp", "udp")
_FORM = "[IP:]HOST_PORT:CONTAINER_PORT[/PROTO]"
_SPEC = re.compile(
    r"^(?:(?P<ip>\d{1,3}(?:\.\d{1,3}){3}):)?"  # IPv4 host address
    r"(?:(?P<host>\d*(?:-\d+)?):)?"  # host port or range; empty: random
    r"(?P<ctr>\d+(?:-\d+)?)"  # container port or range
    r"(?:/(?P<proto>[a-z]+))?$"
)


@dataclass(frozen=True, slots=True)
class PortMapping:
    """One published port: host address (None: every address) and port -> container port.
    ``host_port`` 0 means "pick a free one" (Docker's -P and ``-p CONTAINER_PORT``)."""

    host_ip: IPAddress | None
    host_port: int
    container_port: int
    proto: str = "tcp"

    def __str__(self) -> str:
        ip = "" if self.host_ip is None else f"{self.host_ip}:"
        return f"{ip}{self.host_port}:{self.container_port}/{self.proto}"

    def to_json(self) -> dict[str, Any]:
        return {
            "host_ip": None if self.host_ip is None else str(self.host_ip),
            "host_port": self.host_port,
            "container_port": self.container_port,
            "proto": self.proto,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PortMapping:
        ip = d["host_ip"]
        return cls(
            None if ip is None else IPAddress(ip), d["host_port"], d["container_port"], d["proto"]
        )


def _range(text: str, spec: str) -> range:
    first, _, last = text.partition("-")
    lo, hi = int(first), int(last or first)
    if not (1 <= lo <= 65535 and 1 <= hi <= 65535):
        raise ConfigError(f'--publish: ports are 1-65535, got "{spec}"')
    if hi < lo:
        raise ConfigError(f'--publish: a range runs upwards, got "{spec}"')
    return range(lo, hi + 1)


def parse_publish(spec: str) -> list[PortMapping]:
    """One ``-p`` value as its port mappings (a range gives one mapping per port)."""
    m = _SPEC.match(spec)
    if m is None or spec.endswith(":"):
        raise ConfigError(f'--publish: expected {_FORM}, got "{spec}"')
    proto = m["proto"] or "tcp"
    if proto not in PROTOCOLS:
        raise ConfigError(f'--publish: protocol must be tcp or udp, got "{spec}"')
    host_ip = None
    if m["ip"]:
        try:
            host_ip = IPAddress(m["ip"], 4)
        except Exception:
            raise ConfigError(f'--publish: invalid host address in "{spec}"') from None
        if host_ip == IPAddress("0.0.0.0"):
            host_ip = None
    ctr = _range(m["ctr"], spec)
    if not m["host"]:
        return [PortMapping(host_ip, 0, p, proto) for p in ctr]
    host = _range(m["host"], spec)
    if len(host) != len(ctr):
        if len(ctr) == 1 and len(host) > 1:  # Docker: one container port, a host range to pick from
            raise ConfigError(
                f'--publish: a host port range needs an equal container range, got "{spec}"'
            )
        raise ConfigError(f'--publish: host and container ranges differ in size in "{spec}"')
    return [PortMapping(host_ip, h, c, proto) for h, c in zip(host, ctr, strict=True)]


def parse_publish_all(specs: Sequence[str]) -> list[PortMapping]:
    """Every ``-p`` of one command, refusing a host port given twice."""
    out = [pm for spec in specs for pm in parse_publish(spec)]
    check_conflicts(out, [])
    return out


def _clash(a: PortMapping, b: PortMapping) -> bool:
    if a.proto != b.proto or 0 in (a.host_port, b.host_port) or a.host_port != b.host_port:
        return False
    return a.host_ip is None or b.host_ip is None or a.host_ip == b.host_ip


def check_conflicts(new: Iterable[PortMapping], published: Iterable[PortMapping]) -> None:
    """ConflictError if a new mapping takes a host port already published (or twice)."""
    seen = list(published)
    for pm in new:
        for other in seen:
            if _clash(pm, other):
                raise ConflictError(
                    f"--publish: host port {pm.host_port}/{pm.proto} is already published ({other})"
                )
        seen.append(pm)
