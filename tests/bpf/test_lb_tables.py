"""Service tables changed one service at a time (`LbDatapath.apply`, and `sync` with what it
remembers) through BPF_PROG_TEST_RUN: packets pick the new backends at once, the old table
is not written while a frontend may name it, a removed service's frontends are gone, a
second writer is noticed; and tables written through mmap when the inner template allows."""

from __future__ import annotations

import os
from pathlib import Path

import cffi
from netaddr import IPAddress
from scapy.layers.l2 import ARP, Ether

from pydp.datapath_lb import LbDatapath
from pydp.loader import BpfObject, Map, remove_root
from pydp.loader._libbpf import ffi
from pydp.maps import NatMap
from pydp.maps.lb import LbBackend, SvcKey

from .packets import TC_ACT_REDIRECT
from .test_lb import (
    BE1,
    BE1_MAC,
    BE2,
    BE2_MAC,
    CLI,
    CLI_MAC,
    GW_MAC,
    INDEX,
    SVC,
    VIP,
    Lb,
    frame,
    spec,
    tcp,
)
from .test_lb import lb as lb
from .test_lb import lbdp as lbdp
from .test_nat import nat_progs as nat_progs


def syn(sport: int) -> bytes:
    return frame(tcp(sport, 80), CLI, VIP, CLI_MAC, GW_MAC)


def to(backend: str, mac: str, sport: int) -> bytes:
    return frame(tcp(sport, 8080), CLI, backend, GW_MAC, mac)


def test_an_incremental_change_moves_new_connections_at_once(lb: Lb, lbdp: LbDatapath) -> None:
    """apply() with BE2 instead of BE1: the frontends name a new slot, the next SYN goes to
    BE2, the live connection keeps BE1 only if BE1 stays (here it left: purged)."""
    assert lbdp.apply([spec((BE1, 8080))]) == 1
    first = lbdp.slot(INDEX)
    assert first and lbdp.services[SVC].index == first
    lb.check("syn", syn(41000), TC_ACT_REDIRECT, "REASON_LB", to(BE1, BE1_MAC, 41000))
    assert lbdp.apply([spec((BE2, 8080))]) == 1
    second = lbdp.slot(INDEX)
    assert second != first and lbdp.services[SVC].index == second
    assert first in lbdp.tables.quarantine
    assert len(lb.maps.nat) == 0, "BE1 left the service: its connection purged"
    lb.check("new syn", syn(41001), TC_ACT_REDIRECT, "REASON_LB", to(BE2, BE2_MAC, 41001))
    assert lbdp.apply([spec((BE2, 8080))]) == 0, "nothing changed"


def test_the_old_table_is_not_reused_while_a_frontend_may_name_it(lb: Lb, lbdp: LbDatapath) -> None:
    """Changes keep taking spares, never the quarantined slot, whose table stays as it was
    until a grace period has passed (reclaim: an outer write), when it becomes a spare."""
    lbdp.apply([spec((BE1, 8080))])
    old = lbdp.slot(INDEX)
    lbdp.apply([spec((BE2, 8080))])
    seen = set()
    for i in range(5):
        weights = (1, i + 1)
        lbdp.apply([spec((BE1, 8080), (BE2, 8080), weights=weights)])
        seen.add(lbdp.slot(INDEX))
        assert lbdp.tables.backends(old) == {LbBackend(IPAddress(BE1), 8080)}
    assert old not in seen and len(seen) == 5
    assert lbdp.reclaim() >= 1
    assert old not in lbdp.tables.quarantine
    assert any(old in pool for pool in lbdp.tables.spare.values())
    lb.check("syn", syn(41002), TC_ACT_REDIRECT, "REASON_LB", None)


def test_a_removed_service_has_no_frontend_left(lb: Lb, lbdp: LbDatapath) -> None:
    """apply(removed=...): frontends and the VIP's mark gone, the VIP's ARP no longer
    answered, a SYN to it no longer balanced; its slot quarantined."""
    lbdp.apply([spec((BE1, 8080))])
    slot = lbdp.slot(INDEX)
    assert lbdp.apply(removed=[INDEX]) == 0
    assert SVC not in lbdp.services and SvcKey(IPAddress(VIP)) not in lbdp.services
    assert slot in lbdp.tables.quarantine and lbdp.slot(INDEX) == 0
    before = lb.maps.metrics.counter("REASON_LB").packets
    lb.run(syn(41003))
    assert lb.maps.metrics.counter("REASON_LB").packets == before
    req = bytes(
        Ether(src=CLI_MAC, dst="ff:ff:ff:ff:ff:ff")
        / ARP(op=1, hwsrc=CLI_MAC, psrc=CLI, hwdst="00:00:00:00:00:00", pdst=VIP)
    )
    arp_before = lb.maps.metrics.counter("REASON_ARP_VIP").packets
    lb.run(req)
    assert lb.maps.metrics.counter("REASON_ARP_VIP").packets == arp_before


def test_another_writer_is_noticed(lb: Lb, lbdp: LbDatapath) -> None:
    """A second LbDatapath (a CLI command beside the agent) changes the service: the first
    one's next sync reads the maps again instead of trusting what it remembers."""
    lbdp.sync([spec((BE1, 8080))])
    other = LbDatapath(
        Map.open_pinned("pydp_services"), Map.open_pinned("pydp_lb_tables"), lb.maps.nat
    )
    assert other.sync([spec((BE1, 8080))]) == 0, "the first writer's tables recognised"
    assert other.sync([spec((BE2, 8080))]) == 1
    assert other.slot(INDEX) != 0
    lb.check("syn", syn(41004), TC_ACT_REDIRECT, "REASON_LB", to(BE2, BE2_MAC, 41004))
    assert lbdp.sync([spec((BE1, 8080))]) == 1, "the change by the other writer was seen"
    assert lbdp.slot(INDEX) != other.slot(INDEX) or other.slot(INDEX) == lbdp.slot(INDEX)
    lb.check("syn", syn(41005), TC_ACT_REDIRECT, "REASON_LB", to(BE1, BE1_MAC, 41005))
    assert lbdp.backends(INDEX) == {LbBackend(IPAddress(BE1), 8080)}


_ffi = cffi.FFI()
_ffi.cdef(
    """
struct bpf_object; struct bpf_map;
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
struct bpf_map *bpf_map__inner_map(struct bpf_map *map);
int bpf_map__set_map_flags(struct bpf_map *map, uint32_t flags);
"""
)
_libbpf = _ffi.dlopen("libbpf.so.1")


def test_tables_are_written_through_mmap_when_the_template_allows() -> None:
    """endpoint.bpf.o with pydp_lb_tables' inner template BPF_F_MMAPABLE: the tables are
    found mmap-able and written through mmap, a spare's tail past a smaller table zeroed."""
    root = Path(f"/sys/fs/bpf/pydp-test-lbmm-{os.getpid()}")
    try:
        with BpfObject("endpoint.bpf.o", pin_root=root) as obj:
            handle = _ffi.cast("struct bpf_object *", int(ffi.cast("uintptr_t", obj._obj)))
            outer = _libbpf.bpf_object__find_map_by_name(handle, b"pydp_lb_tables")
            inner = _libbpf.bpf_map__inner_map(outer)
            assert _libbpf.bpf_map__set_map_flags(inner, (1 << 12) | (1 << 10)) == 0
            obj.load()
            dp = LbDatapath(
                obj.map("pydp_services"), obj.map("pydp_lb_tables"), NatMap(obj.map("pydp_nat"))
            )
            dp.apply([spec((BE1, 8080), (BE2, 8080))])
            assert dp.tables.mmapable is True
            assert dp.backends(INDEX) == {
                LbBackend(IPAddress(BE1), 8080),
                LbBackend(IPAddress(BE2), 8080),
            }
            dp.apply([spec((BE2, 8080), weights=(0,))])  # no live backend: no table
            assert dp.slot(INDEX) == 0 and dp.services[SVC].size == 0
            dp.apply([spec((BE2, 8080))])
            assert dp.backends(INDEX) == {LbBackend(IPAddress(BE2), 8080)}
            fresh = LbDatapath(
                obj.map("pydp_services"), obj.map("pydp_lb_tables"), NatMap(obj.map("pydp_nat"))
            )
            assert fresh.sync([spec((BE2, 8080))]) == 0
            assert fresh.tables.mmapable is True
    finally:
        remove_root(root)
