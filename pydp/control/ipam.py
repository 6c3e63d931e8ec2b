"""IP address management: Docker's default pools, subnet validation, address allocation.

Pure functions over netaddr objects: no store and no kernel. The addresses in
use come from the store's endpoints and service VIPs, so an address returns to
its pool the moment its endpoint or service goes.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netaddr import AddrFormatError, IPAddress, IPNetwork

from pydp.errors import ConfigError, ConflictError

__all__ = [
    "AUX_DEFAULT_GATEWAY",
    "GLOBAL_POOL",
    "GLOBAL_POOL_SIZE",
    "Pool",
    "default_global_pools",
    "default_pools",
    "parse_address",
    "parse_pool",
]

AUX_DEFAULT_GATEWAY = "DefaultGatewayIPv4"  # aux name Docker reads as the containers' gateway
GLOBAL_POOL = IPNetwork("10.0.0.0/8")  # Docker's default address pool for swarm scope ...
GLOBAL_POOL_SIZE = 24  # ... handed out as /24s


def default_pools() -> Iterator[IPNetwork]:
    """Docker's default local pools: 172.17-31.0.0/16, then the /20s of 192.168.0.0/16."""
    for second in range(17, 32):
        yield IPNetwork(f"172.{second}.0.0/16")
    yield from IPNetwork("192.168.0.0/16").subnet(20)


def default_global_pools() -> Iterator[IPNetwork]:
    """Docker's default pools for global (swarm) scope: the /24s of 10.0.0.0/8."""
    yield from GLOBAL_POOL.subnet(GLOBAL_POOL_SIZE)


def _net(flag: str, text: str) -> IPNetwork:
    try:
        net = IPNetwork(text)
    except (AddrFormatError, ValueError, TypeError):
        raise ConfigError(f'{flag}: invalid CIDR "{text}"') from None
    if net.version != 4:
        raise ConfigError(f'{flag}: only IPv4 is supported, got "{text}"')
    if "/" not in text:
        raise ConfigError(f'{flag}: expected a CIDR such as 10.1.0.0/24, got "{text}"')
    return net


def parse_address(flag: str, text: str) -> IPAddress:
    """An IPv4 address given to ``flag``; ConfigError naming the flag otherwise."""
    try:
        addr = IPAddress(text)
    except (AddrFormatError, ValueError, TypeError):
        raise ConfigError(f'{flag}: invalid IPv4 address "{text}"') from None
    if addr.version != 4:
        raise ConfigError(f'{flag}: only IPv4 is supported, got "{text}"')
    return addr


@dataclass(frozen=True, slots=True)
class Pool:
    """A network's addresses: its subnet, the range endpoints get addresses from, the
    gateway (on the bridge) and auxiliary addresses that are never handed out."""

    subnet: IPNetwork
    gateway: IPAddress
    ip_range: IPNetwork | None = None
    aux: Mapping[str, IPAddress] = field(default_factory=dict)

    @property
    def container_gateway(self) -> IPAddress:
        """The containers' default gateway: aux DefaultGatewayIPv4 if given, else the gateway."""
        return self.aux.get(AUX_DEFAULT_GATEWAY, self.gateway)

    def reserved(self) -> set[IPAddress]:
        """Addresses never handed out: network, broadcast, gateway, aux."""
        out = {self.gateway, *self.aux.values()}
        if self.subnet.prefixlen <= 30:
            out |= {IPAddress(self.subnet.first), IPAddress(self.subnet.last)}
        return out

    def allocate(self, used: Collection[IPAddress], owner: str) -> IPAddress:
        """The lowest free address of the range (or subnet); ConflictError when none is left."""
        taken = self.reserved() | set(used)
        for addr in self.ip_range or self.subnet:
            if addr not in taken:
                return IPAddress(addr)
        where = self.ip_range or self.subnet
        raise ConflictError(f"{owner}: no free address left in {where} (the pool is exhausted)")

    def check_static(
        self, addr: IPAddress, used: Collection[IPAddress], owner: str, flag: str = "--ip"
    ) -> IPAddress:
        """A requested address (--ip, --vip): inside the subnet, not reserved, not in use."""
        if addr not in self.subnet:
            raise ConfigError(f"{flag}: {addr} is outside the subnet {self.subnet} of {owner}")
        if addr in self.reserved():
            raise ConfigError(f"{flag}: {addr} is reserved in {owner} (network, gateway or aux)")
        if addr in used:
            raise ConflictError(f"{flag}: {addr} is already in use in {owner}")
        return addr

    def to_json(self) -> dict[str, Any]:
        return {
            "subnet": str(self.subnet),
            "gateway": str(self.gateway),
            "ip_range": None if self.ip_range is None else str(self.ip_range),
            "aux": {k: str(v) for k, v in self.aux.items()},
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Pool:
        rng = d.get("ip_range")
        return cls(
            IPNetwork(d["subnet"]),
            IPAddress(d["gateway"]),
            None if rng is None else IPNetwork(rng),
            {k: IPAddress(v) for k, v in d.get("aux", {}).items()},
        )


def _overlap(subnet: IPNetwork, taken: Mapping[str, IPNetwork]) -> str | None:
    for name, other in taken.items():
        if subnet.first <= other.last and other.first <= subnet.last:
            return f'network "{name}" ({other})'
    return None


def _choose_subnet(taken: Mapping[str, IPNetwork], pools: Iterable[IPNetwork]) -> IPNetwork:
    for pool in pools:
        if _overlap(pool, taken) is None:
            return pool
    raise ConflictError("--subnet: every default address pool is in use; give --subnet")


def _parse_aux(items: Sequence[str], subnet: IPNetwork) -> dict[str, IPAddress]:
    aux: dict[str, IPAddress] = {}
    for item in items:
        name, sep, text = item.partition("=")
        if not sep or not name:
            raise ConfigError(f'--aux-address: expected NAME=IP, got "{item}"')
        addr = parse_address("--aux-address", text)
        if addr not in subnet:
            raise ConfigError(f"--aux-address: {name}={addr} is outside the subnet {subnet}")
        if name in aux:
            raise ConfigError(f"--aux-address: {name} is given twice")
        aux[name] = addr
    return aux


def parse_pool(
    subnet: str | None,
    ip_range: str | None = None,
    gateway: str | None = None,
    aux: Sequence[str] = (),
    taken: Mapping[str, IPNetwork] | None = None,
    pools: Iterable[IPNetwork] | None = None,
) -> Pool:
    """Validate ``--subnet --ip-range --gateway --aux-address`` against the subnets other
    networks hold (``taken``: name -> subnet); without --subnet, take the first free
    subnet of ``pools`` (default: Docker's local pools, `default_pools`)."""
    taken = taken or {}
    if subnet is None:
        for flag, value in (("--ip-range", ip_range), ("--gateway", gateway)):
            if value is not None:
                raise ConfigError(f"{flag}: needs --subnet")
        if aux:
            raise ConfigError("--aux-address: needs --subnet")
        net = _choose_subnet(taken, default_pools() if pools is None else pools)
    else:
        net = _net("--subnet", subnet)
        if net.network != net.ip:
            raise ConfigError(f'--subnet: "{subnet}" has host bits set (did you mean {net.cidr}?)')
        clash = _overlap(net, taken)
        if clash:
            raise ConflictError(f"--subnet: {net} overlaps {clash}")
    rng = None
    if ip_range is not None:
        rng = _net("--ip-range", ip_range)
        if rng.first < net.first or rng.last > net.last:
            raise ConfigError(f"--ip-range: {rng} is outside the subnet {net}")
    if gateway is not None:
        gw = parse_address("--gateway", gateway)
        if gw not in net or (gw in (net.network, net.broadcast) and net.prefixlen <= 30):
            raise ConfigError(f"--gateway: {gw} is not a host address of the subnet {net}")
    else:
        gw = IPAddress(net.first + 1)
    aux_map = _parse_aux(aux, net)
    if gw in aux_map.values():
        raise ConfigError(f"--aux-address: {gw} is the gateway")
    return Pool(net.cidr, gw, rng, aux_map)
