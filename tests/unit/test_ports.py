"""-p/--publish parsing: Docker's forms, ranges, random host ports, conflicts."""

from __future__ import annotations

import pytest
from netaddr import IPAddress

from pydp.control.ports import PortMapping, check_conflicts, parse_publish, parse_publish_all
from pydp.errors import ConfigError, ConflictError


@pytest.mark.parametrize(
    ("spec", "want"),
    [
        ("8080:80", [PortMapping(None, 8080, 80, "tcp")]),
        ("8080:80/udp", [PortMapping(None, 8080, 80, "udp")]),
        ("127.0.0.1:8080:80", [PortMapping(IPAddress("127.0.0.1"), 8080, 80, "tcp")]),
        ("0.0.0.0:8080:80", [PortMapping(None, 8080, 80, "tcp")]),
        ("80", [PortMapping(None, 0, 80, "tcp")]),
        ("10.0.0.1::53/udp", [PortMapping(IPAddress("10.0.0.1"), 0, 53, "udp")]),
        ("8000-8002:9000-9002", [PortMapping(None, 8000 + i, 9000 + i, "tcp") for i in range(3)]),
    ],
)
def test_parse_publish_forms(spec: str, want: list[PortMapping]) -> None:
    """Docker's -p forms give one mapping per port; 0 asks for a free host port."""
    assert parse_publish(spec) == want


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("80:", '--publish: expected [IP:]HOST_PORT:CONTAINER_PORT[/PROTO], got "80:"'),
        ("web", '--publish: expected [IP:]HOST_PORT:CONTAINER_PORT[/PROTO], got "web"'),
        ("8080:80/sctp", '--publish: protocol must be tcp or udp, got "8080:80/sctp"'),
        ("70000:80", '--publish: ports are 1-65535, got "70000:80"'),
        ("0:80", '--publish: ports are 1-65535, got "0:80"'),
        ("9-8:9-8", '--publish: a range runs upwards, got "9-8:9-8"'),
        (
            "8000-8002:80-81",
            '--publish: host and container ranges differ in size in "8000-8002:80-81"',
        ),
        ("300.1.1.1:80:80", '--publish: invalid host address in "300.1.1.1:80:80"'),
    ],
)
def test_parse_publish_bad(spec: str, message: str) -> None:
    """A malformed -p names the flag and the accepted form."""
    with pytest.raises(ConfigError) as e:
        parse_publish(spec)
    assert str(e.value) == message


def test_publish_conflicts() -> None:
    """A host port published twice (any address overlaps a specific one) is refused;
    other protocols, other addresses and random ports never clash."""
    published = [
        PortMapping(None, 8080, 80, "tcp"),
        PortMapping(IPAddress("10.0.0.1"), 53, 53, "udp"),
    ]
    check_conflicts([PortMapping(None, 8080, 80, "udp")], published)
    check_conflicts([PortMapping(IPAddress("10.0.0.2"), 53, 53, "udp")], published)
    check_conflicts([PortMapping(None, 0, 80, "tcp")], published)
    with pytest.raises(ConflictError) as e:
        check_conflicts([PortMapping(IPAddress("10.0.0.9"), 8080, 81, "tcp")], published)
    assert str(e.value) == "--publish: host port 8080/tcp is already published (8080:80/tcp)"
    with pytest.raises(ConflictError, match="host port 53/udp is already published"):
        check_conflicts([PortMapping(None, 53, 5353, "udp")], published)
    with pytest.raises(ConflictError, match="host port 9000/tcp is already published"):
        parse_publish_all(["9000:80", "9000:81"])


def test_port_mapping_json_round_trip() -> None:
    """A mapping survives its JSON form."""
    pm = PortMapping(IPAddress("10.0.0.1"), 8080, 80, "udp")
    assert PortMapping.from_json(pm.to_json()) == pm and str(pm) == "10.0.0.1:8080:80/udp"
