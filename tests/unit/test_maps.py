"""pydp.maps: layouts, byte order and the MutableMapping views, over a dict-backed map."""

from __future__ import annotations

import importlib

import pytest
from netaddr import EUI, IPAddress

import pydp.maps
from pydp.maps import Counter, Endpoint, EndpointMap, Layout, MetricsMap, reason_name
from pydp.maps._codec import be16, be32, from_be, percpu_stride
from pydp.maps.endpoint import Scoped

from .fake_map import DictMap


def endpoint_map() -> EndpointMap:
    return EndpointMap(DictMap("pydp_endpoints", 8, 20))


def isort_key(name: str) -> tuple[int, str]:
    """ruff's __all__ order (RUF022): CONSTANTS, then Classes, then functions."""
    return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)


@pytest.mark.parametrize("module", ["pydp.maps", "pydp.loader", "pydp.errors", "pydp.testing"])
def test_public_all_is_sorted_and_complete(module: str) -> None:
    """Each public module re-exports its API with a sorted __all__ naming real attributes."""
    mod = importlib.import_module(module)
    assert list(mod.__all__) == sorted(mod.__all__, key=isort_key)
    for name in mod.__all__:
        assert hasattr(mod, name), name


def test_layout_endpoint_info_bytes() -> None:
    """endpoint_info packs ifindex, network and flags little-endian, the MAC as is and the
    node's address in network order."""
    lay = Layout("struct endpoint_info")
    raw = lay.pack(7, 3, bytes.fromhex("020000000002"), 1, 0x0A620002)
    assert raw == bytes.fromhex("070000000300000002000000000201000a620002")
    assert lay.unpack(raw) == (7, 3, bytes.fromhex("020000000002"), 1, 0x0A620002)


def test_layout_wire_field_is_network_order() -> None:
    """A __be32 field holds its host integer big-endian, and reads back the same."""
    lay = Layout("struct endpoint_key")
    wire = bytes([10, 0, 0, 2]) + (7).to_bytes(4, "little")  # the scope: a host-order __u32
    assert lay.pack(0x0A000002, 7) == wire
    assert lay.unpack(wire) == (0x0A000002, 7)
    assert lay.pack_raw(bytes([10, 0, 0, 2]), 7) == wire


def test_codec_byte_order_helpers() -> None:
    """be16/be32/from_be convert host integers to and from network order."""
    assert be16(0x1234) == b"\x12\x34"
    assert be32(0x0A000001) == b"\x0a\x00\x00\x01"
    assert from_be(b"\x01\x00") == 256
    assert percpu_stride(12) == 16 and percpu_stride(16) == 16


def test_endpoint_map_mutable_mapping() -> None:
    """Set, get, contains, len, iterate, delete and discard behave as on a dict."""
    em = endpoint_map()
    a, b = IPAddress("10.0.0.2"), IPAddress("10.0.0.3")
    em[a] = Endpoint(5, EUI("02:00:00:00:00:02"))
    em[b] = Endpoint(6, EUI("02:00:00:00:00:03"), flags=0)
    assert em[a] == Endpoint(5, EUI("02:00:00:00:00:02"))
    assert a in em and IPAddress("10.0.0.4") not in em
    assert len(em) == 2 and set(em) == {a, b}
    del em[a]
    with pytest.raises(KeyError):
        del em[a]
    assert em.discard(a) is False and em.discard(b) is True
    assert len(em) == 0


def test_endpoint_map_refuses_ipv6() -> None:
    """The endpoint map is IPv4: an IPv6 key is refused with a message naming it."""
    em = endpoint_map()
    with pytest.raises(ValueError, match="expected an IPv4 address, got fd00::1"):
        em[IPAddress("fd00::1")] = Endpoint(1, EUI("02:00:00:00:00:01"))


def test_endpoint_map_batch() -> None:
    """update_batch writes every pair at once; delete_batch ignores absent keys."""
    em = endpoint_map()
    pairs = {
        IPAddress(f"10.0.1.{i}"): Endpoint(i, EUI(f"02:00:00:00:01:{i:02x}")) for i in range(8)
    }
    assert em.update_batch(pairs) == 8
    assert em.snapshot() == pairs
    assert em.delete_batch([IPAddress("10.0.1.1"), IPAddress("10.9.9.9")]) == 1
    assert len(em) == 7
    assert em.update_batch([]) == 0


def test_endpoint_map_scopes_keep_overlapping_addresses_apart() -> None:
    """One address in two overlay networks (Scoped) and on a bridge (plain): three entries,
    each read back under its own key."""
    em = endpoint_map()
    ip = IPAddress("10.80.0.2")
    mac = EUI("02:00:00:00:00:01")
    want = {
        ip: Endpoint(1, mac),
        Scoped(ip, 3): Endpoint(2, mac, 3),
        Scoped(ip, 4): Endpoint(0, mac, 4),
    }
    assert em.update_batch(want) == 3
    assert em.snapshot() == want
    assert em[Scoped(ip, 4)].network == 4 and em[ip].ifindex == 1
    assert Scoped(ip, 5) not in em


def test_iteration_tolerates_concurrent_delete() -> None:
    """Deleting entries while iterating neither raises nor yields a deleted key twice."""
    em = endpoint_map()
    em.update_batch(
        {IPAddress(f"10.0.2.{i}"): Endpoint(i, EUI("02:00:00:00:00:01")) for i in range(6)}
    )
    seen = []
    for key in em:
        seen.append(key)
        em.discard(IPAddress("10.0.2.5"))
    assert len(seen) == len(set(seen)) == 6
    assert [k for k, _ in em.items()] == [IPAddress(f"10.0.2.{i}") for i in range(5)]


def test_map_shape_mismatch_refused() -> None:
    """A typed view refuses a map whose key or value size is not its struct's."""
    with pytest.raises(TypeError, match="key is 4 bytes"):
        EndpointMap(DictMap("pydp_endpoints", 4, 20))
    with pytest.raises(TypeError, match="value is 16 bytes"):
        EndpointMap(DictMap("pydp_endpoints", 8, 16))


def test_metrics_percpu_summed() -> None:
    """Per-CPU counters are summed over every CPU on read."""
    raw = DictMap("pydp_metrics", 4, 16 * 3, max_entries=256, percpu=True, ncpus=3)
    mm = MetricsMap(raw)
    lay = Layout("struct metrics_value")
    raw.update((1).to_bytes(4, "little"), lay.pack(2, 100) + lay.pack(3, 50) + lay.pack(0, 0))
    assert mm[1] == Counter(5, 150)
    assert mm.counter("REASON_REDIRECT") == Counter(5, 150)
    assert mm.counter("DROP_INVALID_IP") == Counter(0, 0)
    assert mm.nonzero() == {"REASON_REDIRECT": Counter(5, 150)}


def test_reason_names_from_the_header() -> None:
    """Reasons are named from enum pydp_reason; unknown numbers still print."""
    assert reason_name(130) == "DROP_INVALID_IP"
    assert reason_name(1) == "REASON_REDIRECT"
    assert reason_name(250) == "REASON_250"
    assert pydp.maps.REASONS["DROP_BASE"] == pydp.maps.DROP_BASE == 128
