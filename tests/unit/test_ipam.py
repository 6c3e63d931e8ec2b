"""IPAM: Docker's default pools, --subnet/--ip-range/--gateway/--aux-address, allocation."""

from __future__ import annotations

import pytest
from netaddr import IPAddress, IPNetwork

from pydp.control.ipam import Pool, default_global_pools, default_pools, parse_pool
from pydp.errors import ConfigError, ConflictError


def test_default_pools_are_dockers() -> None:
    """172.17.0.0/16 .. 172.31.0.0/16, then the /20s of 192.168.0.0/16, in that order."""
    pools = list(default_pools())
    assert pools[0] == IPNetwork("172.17.0.0/16") and pools[14] == IPNetwork("172.31.0.0/16")
    assert pools[15] == IPNetwork("192.168.0.0/20") and pools[-1] == IPNetwork("192.168.240.0/20")
    assert len(pools) == 15 + 16


def test_default_global_pools_are_swarms() -> None:
    """Global (overlay) pools: the /24s of 10.0.0.0/8 in order, as Docker's swarm default;
    parse_pool takes the first clear of every network given."""
    pools = default_global_pools()
    assert [next(pools) for _ in range(2)] == [IPNetwork("10.0.0.0/24"), IPNetwork("10.0.1.0/24")]
    assert sum(1 for _ in pools) == 65536 - 2
    taken = {"a": IPNetwork("10.0.0.0/23"), "b": IPNetwork("10.0.2.128/25")}
    pool = parse_pool(None, taken=taken, pools=default_global_pools())
    assert pool.subnet == IPNetwork("10.0.3.0/24") and pool.gateway == IPAddress("10.0.3.1")


def test_parse_pool_without_subnet_takes_first_free_default() -> None:
    """No --subnet: the first default pool that overlaps no network; gateway is its .1."""
    pool = parse_pool(None, taken={"bridge": IPNetwork("172.17.0.0/16")})
    assert pool.subnet == IPNetwork("172.18.0.0/16") and pool.gateway == IPAddress("172.18.0.1")


def test_parse_pool_docker_underlay_case() -> None:
    """The third bridge case: range, gateway and DefaultGatewayIPv4 aux address."""
    pool = parse_pool(
        "192.168.57.0/24",
        "192.168.57.32/28",
        "192.168.57.11",
        ["DefaultGatewayIPv4=192.168.57.1"],
    )
    assert pool.gateway == IPAddress("192.168.57.11")
    assert pool.container_gateway == IPAddress("192.168.57.1")
    assert pool.allocate([], "network brnet") == IPAddress("192.168.57.32")
    assert IPAddress("192.168.57.1") in pool.reserved()


@pytest.mark.parametrize(
    ("args", "error", "message"),
    [
        (("10.0.0/33",), ConfigError, '--subnet: invalid CIDR "10.0.0/33"'),
        (("bogus",), ConfigError, '--subnet: invalid CIDR "bogus"'),
        (
            ("10.1.0.0",),
            ConfigError,
            '--subnet: expected a CIDR such as 10.1.0.0/24, got "10.1.0.0"',
        ),
        (
            ("10.1.0.5/24",),
            ConfigError,
            '--subnet: "10.1.0.5/24" has host bits set (did you mean 10.1.0.0/24?)',
        ),
        (("fd00::/64",), ConfigError, '--subnet: only IPv4 is supported, got "fd00::/64"'),
        (
            ("10.1.0.0/24", "10.2.0.0/28"),
            ConfigError,
            "--ip-range: 10.2.0.0/28 is outside the subnet 10.1.0.0/24",
        ),
        (
            ("10.1.0.0/24", None, "10.2.0.1"),
            ConfigError,
            "--gateway: 10.2.0.1 is not a host address of the subnet 10.1.0.0/24",
        ),
        (
            ("10.1.0.0/24", None, "10.1.0.255"),
            ConfigError,
            "--gateway: 10.1.0.255 is not a host address of the subnet 10.1.0.0/24",
        ),
        (("10.1.0.0/24", None, "x"), ConfigError, '--gateway: invalid IPv4 address "x"'),
        (
            ("10.1.0.0/24", None, None, ["a=10.2.0.1"]),
            ConfigError,
            "--aux-address: a=10.2.0.1 is outside the subnet 10.1.0.0/24",
        ),
        (
            ("10.1.0.0/24", None, None, ["nonsense"]),
            ConfigError,
            '--aux-address: expected NAME=IP, got "nonsense"',
        ),
        (
            ("10.1.0.0/24", None, None, ["a=10.1.0.1"]),
            ConfigError,
            "--aux-address: 10.1.0.1 is the gateway",
        ),
        ((None, "10.1.0.0/28"), ConfigError, "--ip-range: needs --subnet"),
        ((None, None, "10.1.0.1"), ConfigError, "--gateway: needs --subnet"),
    ],
)
def test_parse_pool_bad_input(args: tuple, error: type[Exception], message: str) -> None:  # type: ignore[type-arg]
    """Each bad flag gives one message naming the flag and what is accepted."""
    with pytest.raises(error) as e:
        parse_pool(*args)
    assert str(e.value) == message


def test_parse_pool_overlap_refused() -> None:
    """A subnet overlapping another network's is refused, naming that network."""
    with pytest.raises(ConflictError) as e:
        parse_pool("10.0.1.0/24", taken={"big": IPNetwork("10.0.0.0/16")})
    assert str(e.value) == '--subnet: 10.0.1.0/24 overlaps network "big" (10.0.0.0/16)'


def test_allocate_skips_reserved_and_used_and_reuses_freed() -> None:
    """Network, broadcast, gateway and aux are never handed out; a freed address returns."""
    pool = parse_pool("10.9.0.0/29", aux=["x=10.9.0.3"])
    used: set[IPAddress] = set()
    got = []
    for _ in range(4):
        addr = pool.allocate(used, "network n")
        used.add(addr)
        got.append(str(addr))
    assert got == ["10.9.0.2", "10.9.0.4", "10.9.0.5", "10.9.0.6"]
    with pytest.raises(ConflictError) as e:
        pool.allocate(used, "network n")
    assert str(e.value) == "network n: no free address left in 10.9.0.0/29 (the pool is exhausted)"
    used.remove(IPAddress("10.9.0.4"))
    assert pool.allocate(used, "network n") == IPAddress("10.9.0.4")


def test_allocate_only_inside_ip_range() -> None:
    """With --ip-range every allocation comes from the range."""
    pool = parse_pool("10.9.0.0/24", "10.9.0.128/30")
    used: set[IPAddress] = set()
    for _ in range(4):
        used.add(pool.allocate(used, "network n"))
    assert all(a in IPNetwork("10.9.0.128/30") for a in used)
    with pytest.raises(ConflictError, match=r"no free address left in 10\.9\.0\.128/30"):
        pool.allocate(used, "network n")


def test_check_static_ip() -> None:
    """A static --ip must be a free, unreserved address of the subnet."""
    pool = parse_pool("10.9.0.0/24", "10.9.0.128/25")
    assert pool.check_static(IPAddress("10.9.0.7"), set(), "network n") == IPAddress("10.9.0.7")
    with pytest.raises(ConfigError, match=r"^--ip: 10.8.0.7 is outside the subnet 10.9.0.0/24"):
        pool.check_static(IPAddress("10.8.0.7"), set(), "network n")
    with pytest.raises(ConfigError, match=r"^--ip: 10.9.0.1 is reserved in network n"):
        pool.check_static(IPAddress("10.9.0.1"), set(), "network n")
    with pytest.raises(ConflictError, match=r"^--ip: 10.9.0.7 is already in use in network n$"):
        pool.check_static(IPAddress("10.9.0.7"), {IPAddress("10.9.0.7")}, "network n")


def test_pool_json_round_trip() -> None:
    """A pool survives its JSON form."""
    pool = parse_pool("10.9.0.0/24", "10.9.0.128/25", "10.9.0.254", ["DefaultGatewayIPv4=10.9.0.1"])
    assert Pool.from_json(pool.to_json()) == pool
