"""Suite ``lb_datapath``: pydp's service datapath alone -- the LB path's cost per packet at N
services, a Maglev table's compute and install, programming N services.

The half of issue 5's service benchmark that has no netfilter counterpart (the ``lb`` suite
has the rates and programming times beside iptables and nftables). Three figures:

- **Per packet vs N** (N in PACKET_COUNTS: 1 to 100,000 services, each with its own Maglev
  table of the default size for ten backends, M = 1021), from the kernel's own
  ``BPF_PROG_TEST_RUN`` duration of ``from_container``. One ``endpoint.bpf.o`` is loaded per
  N, with pins of its own, so the four cases sit side by side and are alternated round by
  round (the order reversed every other round; round 0 warms up and is dropped). Each
  object's ``pydp_services`` and ``pydp_lb_tables`` are enlarged before load (PACKET_SIZES,
  the same for every N, so every N sees the same maps but for their contents): as built,
  they hold 65,536 entries, two a service (its frontend and its VIP's mark), so pydp holds
  at most 32,768 single-port services -- 100,000 do not fit (and the control layer's
  service indexes stop at 65,535). The services are written by the bench: the frontends
  as `LbDatapath.sync` writes them, and the table `build_table` makes, into one new inner
  array per service, swapped into ``pydp_lb_tables`` in batches (one outer update each,
  since one per service would wait out an RCU grace period, 5-15 ms here, each: see the
  programming figures). The client 10.0.0.5 sits behind ``lo`` (ifindex 1), the ten
  backends behind ``nh0`` (ifindex 8) of the packet tables' routed namespace
  (tests/bpf/conftest.py), as in tests/bpf/test_lb.py; service i has the VIP
  10.96.0.16 + i, port 80/tcp, backends 10.0.1.10-19:8080.

  test_run repeats a call on one buffer, each run on the packet the last one left: after
  the first, the packet already goes to the backend and takes the local redirect, not the
  LB path. So:

  (a) ``lb_new``: a new connection (conntrack miss, frontend lookup, Maglev slot, backend
      endpoint lookup, the pair of conntrack entries written, translation, delivery): one
      run a call (repeat = 1), NEW_CALLS calls a sample, each a SYN from another source
      port (a fresh flow), pydp_nat emptied before each sample; the sample is the median
      call minus the median of the same calls, in the same slot, on the floor program
      ``tc_pass`` (build/bpf/floor.bpf.o: the test_run timer's own cost, the same for
      every N). To the last service (N - 1), and ``spread``: each call to another service,
      strided over all N (so large N also pays the cache misses of many frontends and
      tables);
  (b) ``lb_tracked``: a packet of an established connection to the last service (a
      conntrack hit: the backend rewritten, delivered; the frontend is not looked up
      again), with the NAT suite's device (``_counted_runs``): after a handshake through the
      datapath (SYN, the backend's SYN-ACK, ACK), the connection's entry is copied under the
      translated tuple and the backend's endpoint entry removed for the sample (so the
      translated packet, like the VIP, misses the endpoint lookup): every repeat after the
      first takes the same tracked path.

  Every sample asserts its reason (REASON_LB) grew by exactly one a run and every verdict was
  TC_ACT_REDIRECT: a figure cannot measure another path. Rows: each N against N = 1.

- **A Maglev table** (M = 16381 and 65537, the latter prime and accepted by
  ``--maglev-size``; 10 and 1,000 backends): `build_table` (the C fill of
  `pydp.control.maglev.maglev_table` plus packing the slots; the ``maglev`` suite times the
  fill alone against the pure-Python reference) and `LbTables.install` (a new inner array,
  filled in one batch, swapped in with one update of ``pydp_lb_tables``), each table
  replacing the previous one, medians of MAGLEV_ROUNDS. Beside: the install of a one-slot
  table (``lb_tables_swap_ms``): what any table change costs before its slots, the outer
  map's update waiting out an RCU grace period.

- **Programming N services** (N = 10, 1,000, 10,000, ten backends each, Maglev tables of
  M = 1021) into empty maps: one `LbDatapath.sync` (pydp as it is), then a sync of the same
  N (nothing changed), then one more service ADD_ROUNDS times: a sync of the N + i + 1
  specs, beside the same service made by hand with pydp's pieces (`build_table`,
  `LbTables.install`, its two frontend entries) -- the floor of a one-service call, which
  pydp does not have. Beside the first sync, in fresh maps: the same work with the inner
  maps swapped in with one batch update of ``pydp_lb_tables`` a chunk (``sync_batched``:
  a bench re-implementation of sync's empty-state path, checked to leave what sync
  leaves: a sync after it installs no table).

Nothing asserts a threshold: the asserts check the paths and contents.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

import cffi
import numpy as np
import pytest
from netaddr import EUI, IPAddress

from bench._packets import ip4_checksum
from bench._results import Results, median
from bench.test_nat_bench import _counted_runs, _from_tests
from pydp.control.maglev import default_size
from pydp.datapath_lb import LbDatapath, ServiceSpec, build_table, live_size, spec_sig
from pydp.loader import BpfObject, Map, Program, remove_root, test_run
from pydp.loader._libbpf import ffi
from pydp.maps import (
    CONSTANTS,
    ENDPOINT_MAP,
    IFACE_MAP,
    METRICS_MAP,
    NAT_MAP,
    NETWORKS_MAP,
    Endpoint,
    EndpointMap,
    Iface,
    IfaceMap,
    MetricsMap,
    NatKey,
    NatMap,
    NetworkInfo,
    NetworkMap,
)
from pydp.maps.base import sync_entries
from pydp.maps.lb import (
    LB_TABLES_MAP,
    SERVICES_MAP,
    SVC_F_MAGLEV,
    LbBackend,
    LbTables,
    ServiceMap,
    SvcInfo,
    SvcKey,
)
from pydp.net.netns import entered

# The packet tables' namespace (session scope, needs root): lo (1) and nh0 (8) exist there.
routed_netns = _from_tests("tests.bpf.conftest").routed_netns

PACKET_COUNTS = (1, 100, 10_000, 100_000)
PACKET_SIZES = {SERVICES_MAP: 262_144, LB_TABLES_MAP: 131_072}  # max_entries, every N
PACKET_ROUNDS = 9  # measured rounds, after a dropped warm-up round
NEW_CALLS = 4000  # test_run calls (one run each) a new-connection sample
TRACKED_CALLS, TRACKED_REPEAT = 200, 1000  # a tracked sample: 200,000 runs
SPREAD_STRIDE = 7919  # prime: call j of a spread sample goes to service j * 7919 mod N
INSTALL_CHUNK = 4096  # inner maps swapped in by one batch update of pydp_lb_tables
MAGLEV_CASES = ((16381, 10), (16381, 1000), (65537, 10), (65537, 1000))
MAGLEV_ROUNDS = 7
PROGRAM_COUNTS = (10, 1_000, 10_000)
ADD_ROUNDS = 5
UNCHANGED_ROUNDS = 3

LO, BE_IF = 1, 8  # ifindexes in routed_netns: the client's interface, the backends'
NET = 1
CLI, CLI_MAC = IPAddress("10.0.0.5"), EUI("02:00:00:00:00:05")
GW_MAC = EUI("02:00:00:00:00:fe")
BACKENDS = tuple(IPAddress(f"10.0.1.{10 + i}") for i in range(10))
FIRST_VIP = IPAddress("10.96.0.16")
SERVICE_PORT, TARGET_PORT = 80, 8080
NEW_SPORT = 10000  # call j of a new-connection sample: source port 10000 + j
TRACK_SPORT = 40000
IPPROTO_TCP = 6
TCP_SYN, TCP_ACK = 0x02, 0x10
TC_ACT_REDIRECT = 7
SKB_SIZE, SKB_IFINDEX = 192, 40  # struct __sk_buff, offsetof(ifindex): UAPI
BPF_MAP_TYPE_ARRAY, BPF_F_INNER_MAP, BPF_F_MMAPABLE = 2, 1 << 12, 1 << 10
INNER_FLAGS = BPF_F_INNER_MAP | BPF_F_MMAPABLE  # as bpf/lib/maps.h's template (they must match)
SLOT = 8  # sizeof(struct lb_backend)
ENDPOINT_F_LB_BACKEND = CONSTANTS["ENDPOINT_F_LB_BACKEND"]
IFACE_F_LB_BACKEND = CONSTANTS["IFACE_F_LB_BACKEND"]

# pydp.loader cannot resize a map before load: a cffi of the bench's own reaches libbpf
# (the same library, dlopen'ed again) through the object's handle.
_ffi = cffi.FFI()
_ffi.cdef(
    """
struct bpf_object; struct bpf_map;
struct bpf_map *bpf_object__find_map_by_name(const struct bpf_object *obj, const char *name);
int bpf_map__set_max_entries(struct bpf_map *map, uint32_t max_entries);
"""
)
_libbpf: Any = _ffi.dlopen("libbpf.so.1")


def _set_max_entries(obj: BpfObject, sizes: dict[str, int]) -> None:
    """max_entries of obj's maps, between open and load."""
    handle = _ffi.cast("struct bpf_object *", int(ffi.cast("uintptr_t", obj._obj)))
    for name, size in sizes.items():
        m = _libbpf.bpf_object__find_map_by_name(handle, name.encode())
        assert m != _ffi.NULL, f"{obj.path.name}: no map {name}"
        assert _libbpf.bpf_map__set_max_entries(m, size) == 0, f"resize {name} to {size}"


def vip_of(i: int) -> IPAddress:
    """Service i's VIP (its index in pydp is i + 1)."""
    return IPAddress(int(FIRST_VIP) + i)


def service_spec(
    i: int, backends: Sequence[IPAddress] = BACKENDS, size: int | None = None
) -> ServiceSpec:
    """Service i as the reconciler's ``Desired.service_specs`` makes it: port 80/tcp over
    backends at 8080, Maglev, weights 1, the default size unless given."""
    return ServiceSpec(
        index=i + 1,
        vip=vip_of(i),
        network=NET,
        frontends=((SERVICE_PORT, IPPROTO_TCP),),
        backends=tuple(LbBackend(b, TARGET_PORT) for b in backends),
        identities=tuple(f"{b}:{TARGET_PORT}" for b in backends),
        weights=(1,) * len(backends),
        size=size or default_size(len(backends)),
    )


def _frontends(spec: ServiceSpec) -> dict[SvcKey, SvcInfo]:
    """The pydp_services entries `LbDatapath.sync` writes for spec."""
    info = SvcInfo(spec.index, live_size(spec), spec.network, spec_sig(spec), SVC_F_MAGLEV)
    out = {SvcKey(spec.vip, port, proto): info for port, proto in spec.frontends}
    out[SvcKey(spec.vip)] = SvcInfo(spec.index, 0, spec.network)
    return out


def _install_tables(outer: Map, items: Sequence[tuple[int, bytes]]) -> None:
    """Each (index, table) as a new inner array, swapped in by one batch update a chunk."""
    for start in range(0, len(items), INSTALL_CHUNK):
        chunk = items[start : start + INSTALL_CHUNK]
        inners: list[Map] = []
        try:
            for index, table in chunk:
                n = len(table) // SLOT
                inner = Map.create(BPF_MAP_TYPE_ARRAY, f"pydp_lb_{index}", 4, SLOT, n, INNER_FLAGS)
                inners.append(inner)
                inner.update_batch(np.arange(n, dtype="<u4").tobytes(), table, n)
            keys = b"".join(index.to_bytes(4, "little") for index, _ in chunk)
            fds = b"".join(m.fd.to_bytes(4, "little") for m in inners)
            outer.update_batch(keys, fds, len(chunk))
        finally:
            for m in inners:
                m.close()


def _tcp_frame(
    saddr: IPAddress, daddr: IPAddress, sport: int, dport: int, flags: int, src: EUI, dst: EUI
) -> bytes:
    """Ethernet / IPv4 / TCP (no payload, TTL 64, valid IP checksum)."""
    eth = dst.packed + src.packed + b"\x08\x00"
    tcp = sport.to_bytes(2, "big") + dport.to_bytes(2, "big") + (1000).to_bytes(4, "big")
    tcp += (0 if flags == TCP_SYN else 1).to_bytes(4, "big") + bytes([5 << 4, flags])
    tcp += (65535).to_bytes(2, "big") + bytes(4)
    ip = bytearray(b"\x45\x00" + (40).to_bytes(2, "big") + b"\x00\x01\x40\x00\x40\x06\x00\x00")
    ip += saddr.packed + daddr.packed
    ip[10:12] = ip4_checksum(bytes(ip)).to_bytes(2, "big")
    return eth + bytes(ip) + tcp


def _syn(vip: IPAddress, sport: int) -> bytes:
    return _tcp_frame(CLI, vip, sport, SERVICE_PORT, TCP_SYN, CLI_MAC, GW_MAC)


def _skb_ctx(ifindex: int) -> bytes:
    ctx = bytearray(SKB_SIZE)
    ctx[SKB_IFINDEX : SKB_IFINDEX + 4] = ifindex.to_bytes(4, "little")
    return bytes(ctx)


CTX_LO, CTX_BE = _skb_ctx(LO), _skb_ctx(BE_IF)


# ---- per packet vs N ------------------------------------------------------------------------


@dataclass
class PacketCase:
    """One endpoint.bpf.o holding n services, and the frames its samples run."""

    n: int
    obj: BpfObject
    prog: Program
    nat: NatMap
    endpoints: EndpointMap
    ifaces: IfaceMap
    metrics: MetricsMap
    last: list[bytes]  # NEW_CALLS SYNs to service n - 1, each from another port
    spread: list[bytes]  # NEW_CALLS SYNs, call j to service j * SPREAD_STRIDE mod n

    def lb_count(self) -> int:
        return int(self.metrics.counter("REASON_LB").packets)

    def forget(self) -> None:
        """Empty pydp_nat (a batch delete of every key)."""
        keys = [k for k, _ in self.nat.raw.lookup_all()]
        if keys:
            self.nat.raw.delete_batch(b"".join(keys), len(keys))


def _packet_case(n: int, root: Path) -> PacketCase:
    """endpoint.bpf.o under root with the enlarged service maps, n services, a client and
    the ten backends."""
    obj = BpfObject("endpoint.bpf.o", pin_root=root)
    _set_max_entries(obj, PACKET_SIZES)
    obj.load()
    c = PacketCase(
        n,
        obj,
        obj.program("from_container"),
        NatMap(obj.map(NAT_MAP)),
        EndpointMap(obj.map(ENDPOINT_MAP)),
        IfaceMap(obj.map(IFACE_MAP)),
        MetricsMap(obj.map(METRICS_MAP)),
        [_syn(vip_of(n - 1), NEW_SPORT + j) for j in range(NEW_CALLS)],
        [_syn(vip_of(j * SPREAD_STRIDE % n), NEW_SPORT + j) for j in range(NEW_CALLS)],
    )
    NetworkMap(obj.map(NETWORKS_MAP))[NET] = NetworkInfo(masquerade=True, gateway_mac=GW_MAC)
    c.endpoints[CLI] = Endpoint(ifindex=LO, mac=CLI_MAC, network=NET)
    for i, b in enumerate(BACKENDS):
        mac = EUI(f"02:00:00:00:01:{10 + i:02x}")
        c.endpoints[b] = Endpoint(BE_IF, mac, NET, ENDPOINT_F_LB_BACKEND)
    c.ifaces[LO] = Iface(CLI, NET)
    table = build_table(service_spec(0))  # the same ten backends: the same table for all
    _install_tables(obj.map(LB_TABLES_MAP), [(i + 1, table) for i in range(n)])
    services = ServiceMap(obj.map(SERVICES_MAP))
    entries: dict[SvcKey, SvcInfo] = {}
    for i in range(n):
        entries.update(_frontends(service_spec(i)))
    services.update_batch(entries)
    assert len(services) == 2 * n, f"n={n}: {len(services)} frontends"
    return c


def _new_sample(c: PacketCase, prog: Program, frames: list[bytes], what: str) -> float:
    """The median kernel ns of one run of each frame (repeat 1); on from_container, every
    call counted REASON_LB once and was redirected (pydp_nat emptied first)."""
    c.forget()
    before = c.lb_count()
    runs = [test_run(prog, f, 1, ctx=CTX_LO) for f in frames]
    if prog is c.prog:
        grown = c.lb_count() - before
        assert grown == len(frames), f"{what}: REASON_LB grew by {grown} in {len(frames)} runs"
        verdicts = {r.verdict for r in runs}
        assert verdicts == {TC_ACT_REDIRECT}, f"{what}: verdicts {verdicts}"
    return median(r.duration_ns for r in runs)


def _run_counted(c: PacketCase, frame: bytes, ctx: bytes, reason: str) -> bytes:
    """Run frame once: redirected, reason counted once; the packet it leaves as."""
    before = c.metrics.counter(reason).packets
    r = test_run(c.prog, frame, ctx=ctx)
    assert r.verdict == TC_ACT_REDIRECT, f"n={c.n} handshake: verdict {r.verdict}"
    assert c.metrics.counter(reason).packets == before + 1, f"n={c.n} handshake: {reason}"
    return r.packet


def _tracked_sample(c: PacketCase) -> float:
    """The kernel's ns per run of an established connection's packet to service n - 1."""
    c.forget()
    vip = vip_of(c.n - 1)
    _run_counted(c, _syn(vip, TRACK_SPORT), CTX_LO, "REASON_LB")
    key = NatKey(CLI, vip, TRACK_SPORT, SERVICE_PORT, IPPROTO_TCP)
    backend = c.nat[key].address
    c.ifaces[BE_IF] = Iface(backend, NET, IFACE_F_LB_BACKEND)
    synack = _tcp_frame(backend, CLI, TARGET_PORT, TRACK_SPORT, TCP_SYN | TCP_ACK, CLI_MAC, GW_MAC)
    _run_counted(c, synack, CTX_BE, "REASON_LB_REPLY")
    ack = _tcp_frame(CLI, vip, TRACK_SPORT, SERVICE_PORT, TCP_ACK, CLI_MAC, GW_MAC)
    out = _run_counted(c, ack, CTX_LO, "REASON_LB")
    assert out[30:34] == backend.packed, f"n={c.n}: the ACK left for {out[30:34].hex()}"
    entry = c.nat[key]
    assert entry.state_name == "CT_ESTABLISHED", f"n={c.n}: {entry}"
    c.nat[NatKey(CLI, backend, TRACK_SPORT, TARGET_PORT, IPPROTO_TCP)] = entry
    held = c.endpoints[backend]
    del c.endpoints[backend]
    try:
        ns = _counted_runs(
            c.prog,
            ack,
            CTX_LO,
            TRACKED_CALLS,
            TRACKED_REPEAT,
            c.lb_count,
            f"lb_tracked n={c.n}",
        )
    finally:
        c.endpoints[backend] = held
    return median(ns)


@contextmanager
def _packet_cases(root: Path) -> Iterator[dict[int, PacketCase]]:
    """A PacketCase per N in PACKET_COUNTS, each under root/n<N>, unpinned after."""
    cases: dict[int, PacketCase] = {}
    try:
        for n in PACKET_COUNTS:
            start = time.perf_counter()
            cases[n] = _packet_case(n, root / f"n{n}")
            print(f"\nper packet: {n} services set up in {time.perf_counter() - start:.1f} s")
        yield cases
    finally:
        for c in cases.values():
            c.obj.close()
        remove_root(root)


@pytest.mark.timeout(1200)  # ~3 minutes here: 110,101 tables set up
def test_lb_per_packet(results: Results, bpffs_root: Path, routed_netns: str) -> None:
    """ns per packet of the LB path at N = 1 to 100,000 services: a new connection (net of
    the test_run floor) to the last service and spread over all, and a tracked packet; every
    N against N = 1, the Ns alternated round by round."""
    samples: dict[str, list[float]] = {}
    root = bpffs_root / "lb-packet"
    with (
        BpfObject("floor.bpf.o", pin_root=root / "floor") as floor_obj,
        _packet_cases(root) as cases,
        entered(routed_netns),
    ):
        floor = floor_obj.load().program("tc_pass")
        for rnd in range(PACKET_ROUNDS + 1):  # round 0 warms up and is dropped
            order = list(cases.values()) if rnd % 2 == 0 else list(cases.values())[::-1]
            for c in order:
                base = _new_sample(c, floor, c.last, "tc_pass")
                got = {
                    "tc_pass_repeat1": base,
                    "lb_new": _new_sample(c, c.prog, c.last, f"lb_new n={c.n}") - base,
                    "lb_new_spread": _new_sample(c, c.prog, c.spread, f"spread n={c.n}") - base,
                    "lb_tracked": _tracked_sample(c),
                }
                if rnd:
                    for name, value in got.items():
                        samples.setdefault(f"{name}_n{c.n}_ns", []).append(value)
    print(f"\nper packet: samples by round {samples}")
    m = {k: median(v) for k, v in samples.items()}
    floors = [v for n in PACKET_COUNTS for v in samples[f"tc_pass_repeat1_n{n}_ns"]]
    results.add("tc_pass_repeat1_ns", median(floors), "ns")
    for path in ("lb_new", "lb_tracked"):
        one = f"{path}_n1_ns"
        results.add(one, m[one], "ns")
        for n in PACKET_COUNTS[1:]:
            results.add(f"{path}_n{n}_ns", m[f"{path}_n{n}_ns"], "ns", one, m[one])
    for n in PACKET_COUNTS[1:]:
        results.add(
            f"lb_new_spread_n{n}_ns",
            m[f"lb_new_spread_n{n}_ns"],
            "ns",
            "lb_new_n1_ns",
            m["lb_new_n1_ns"],
        )


# ---- a Maglev table ------------------------------------------------------------------------


def _backends(n: int) -> list[IPAddress]:
    return [IPAddress(int(IPAddress("10.1.0.0")) + i) for i in range(n)]


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def test_maglev_install(results: Results, bpffs_root: Path) -> None:
    """ms to compute (`build_table`) and install (`LbTables.install`) one Maglev table, M =
    16381 and 65537 for 10 and 1,000 backends, beside the compute alone and a one-slot
    table's install (the outer map's swap)."""
    root = bpffs_root / "lb-maglev"
    specs = {(m, n): service_spec(i, _backends(n), m) for i, (m, n) in enumerate(MAGLEV_CASES)}
    swap_spec = service_spec(len(specs))
    one_slot = build_table(swap_spec)[:SLOT]
    samples: dict[str, list[float]] = {}
    try:
        with BpfObject("endpoint.bpf.o", pin_root=root) as obj:
            obj.load()
            tables = LbTables(obj.map(LB_TABLES_MAP), Map.create, Map.by_id)
            for rnd in range(MAGLEV_ROUNDS + 1):  # round 0 warms up and is dropped
                got: dict[str, float] = {}
                for (m, n), spec in specs.items() if rnd % 2 == 0 else list(specs.items())[::-1]:
                    start = time.perf_counter()
                    table = build_table(spec)
                    got[f"maglev_build_m{m}_n{n}_ms"] = _ms(start)
                    start = time.perf_counter()
                    tables.install(spec.index, table)
                    got[f"maglev_install_m{m}_n{n}_ms"] = _ms(start)
                    assert len(tables.backends(spec.index)) == n, f"m={m} n={n}: backends"
                    start = time.perf_counter()
                    tables.install(swap_spec.index, one_slot)
                    got.setdefault("lb_tables_swap_ms", _ms(start))
                if rnd:
                    for k, v in got.items():
                        samples.setdefault(k, []).append(v)
    finally:
        remove_root(root)
    print(f"\nmaglev tables: samples by round {samples}")
    med = {k: median(v) for k, v in samples.items()}
    swap = med["lb_tables_swap_ms"]
    results.add("lb_tables_swap_ms", swap, "ms")
    for m, n in MAGLEV_CASES:
        build, install = med[f"maglev_build_m{m}_n{n}_ms"], med[f"maglev_install_m{m}_n{n}_ms"]
        both = [
            b + i
            for b, i in zip(
                samples[f"maglev_build_m{m}_n{n}_ms"],
                samples[f"maglev_install_m{m}_n{n}_ms"],
                strict=True,
            )
        ]
        results.add(
            f"maglev_build_install_m{m}_n{n}_ms",
            median(both),
            "ms",
            f"maglev_build_m{m}_n{n}_ms",
            build,
        )
        results.add(f"maglev_install_m{m}_n{n}_ms", install, "ms", "lb_tables_swap_ms", swap)


# ---- programming N services ------------------------------------------------------------------


_ffi.cdef(
    """
struct bpf_map *bpf_map__inner_map(struct bpf_map *map);
int bpf_map__set_map_flags(struct bpf_map *map, uint32_t flags);
"""
)


def _set_inner_flags(obj: BpfObject, flags: int) -> None:
    """map_flags of pydp_lb_tables' inner template, between open and load."""
    handle = _ffi.cast("struct bpf_object *", int(ffi.cast("uintptr_t", obj._obj)))
    outer = _libbpf.bpf_object__find_map_by_name(handle, LB_TABLES_MAP.encode())
    inner = _libbpf.bpf_map__inner_map(outer)
    assert inner != _ffi.NULL, "pydp_lb_tables has no inner template"
    assert _libbpf.bpf_map__set_map_flags(inner, flags) == 0


@contextmanager
def _lb_datapath(root: Path, batch_filled: bool = False) -> Iterator[LbDatapath]:
    """A fresh endpoint.bpf.o under root (built sizes), its service maps as LbDatapath;
    ``batch_filled``: the inner template's BPF_F_MMAPABLE taken off first, so the tables
    are written by batch updates, not through mmap (the comparison)."""
    try:
        with BpfObject("endpoint.bpf.o", pin_root=root) as obj:
            if batch_filled:
                _set_inner_flags(obj, BPF_F_INNER_MAP)
            obj.load()
            yield LbDatapath(
                obj.map(SERVICES_MAP), obj.map(LB_TABLES_MAP), NatMap(obj.map(NAT_MAP))
            )
    finally:
        remove_root(root)


def _seconds_of_sync(lb: LbDatapath, specs: Sequence[ServiceSpec]) -> float:
    start = time.perf_counter()
    lb.sync(specs)
    return time.perf_counter() - start


def _sync_batched(lb: LbDatapath, specs: Sequence[ServiceSpec]) -> float:
    """Seconds of sync's work from empty maps with the inner maps swapped in by batch."""
    start = time.perf_counter()
    outer = cast(Map, lb.tables.outer)  # LbTables keeps the loader's Map
    _install_tables(outer, [(s.index, build_table(s)) for s in specs])
    want: dict[SvcKey, SvcInfo] = {}
    for spec in specs:
        want.update(_frontends(spec))
    packed = {lb.services.key_bytes(k): lb.services.value_bytes(v) for k, v in want.items()}
    sync_entries(lb.services, packed)
    return time.perf_counter() - start


def _distinct(i: int) -> list[IPAddress]:
    """Service i's own ten backends (no two services share one: nothing computed for one
    service serves another)."""
    return [IPAddress(int(IPAddress("10.128.0.0")) + 10 * i + j) for j in range(10)]


def _programming_specs(n: int) -> list[ServiceSpec]:
    return [service_spec(i, _distinct(i)) for i in range(n + 2 * ADD_ROUNDS)]


def _changed(spec: ServiceSpec, rnd: int) -> ServiceSpec:
    """spec with its last backend replaced (a new table, the same size)."""
    b = [LbBackend(IPAddress(f"10.200.{rnd}.{spec.index % 250}"), TARGET_PORT)]
    backends = spec.backends[:-1] + tuple(b)
    return replace(
        spec,
        backends=backends,
        identities=tuple(f"{x.address}:{x.port}" for x in backends),
    )


def _ms_of(fn: Any, *args: Any) -> float:
    start = time.perf_counter()
    fn(*args)
    return (time.perf_counter() - start) * 1e3


@pytest.mark.timeout(1800)  # ~5 minutes here
def test_lb_programming(results: Results, bpffs_root: Path) -> None:
    """s to program N = 10, 1,000, 10,000 services x 10 backends (each its own) with
    `LbDatapath.sync` -- the agent's call -- into empty maps, the inner template as built
    (BPF_F_MMAPABLE) and without it (batch-filled), beside the first design
    (``sync_batched``: a table per service swapped into its own slot by batches); ms of a
    sync with nothing changed; ms of one more service and of one service's backends changed
    at N: by `LbDatapath.apply` (the incremental API), by sync (state remembered), beside
    the same by hand the first way (a table installed into its slot: one outer update, one
    RCU grace period)."""
    for n in PROGRAM_COUNTS:
        specs = _programming_specs(n)
        root = bpffs_root / f"lb-program-n{n}"
        with _lb_datapath(root / "batched") as lb:
            batched = _sync_batched(lb, specs[:n])
            assert lb.sync(specs[:n]) == 0, f"n={n}: the batched path left other tables"
        with _lb_datapath(root / "batch-filled", batch_filled=True) as lb:
            filled = _seconds_of_sync(lb, specs[:n])
            assert not lb.tables.mmapable, f"n={n}: the tables were written through mmap"
        row: dict[str, list[float]] = {}
        with _lb_datapath(root / "mmap") as lb:
            full = _seconds_of_sync(lb, specs[:n])
            assert lb.tables.mmapable, f"n={n}: the tables were not written through mmap"
            unchanged = [_seconds_of_sync(lb, specs[:n]) * 1e3 for _ in range(UNCHANGED_ROUNDS)]
            current = list(specs[:n])
            for i in range(ADD_ROUNDS):
                one, other = specs[n + 2 * i], specs[n + 2 * i + 1]
                row.setdefault("add_apply", []).append(_ms_of(lb.apply, [one]))
                current.append(one)
                current.append(other)
                row.setdefault("add_sync", []).append(_ms_of(lb.sync, current))
                row.setdefault("add_by_hand", []).append(_add_direct_slot(lb) * 1e3)
                k = (i * 7919) % n
                changed = _changed(current[k], i)
                row.setdefault("change_apply", []).append(_ms_of(lb.apply, [changed]))
                assert lb.backends(changed.index) == set(changed.backends), f"n={n}: change"
                current[k] = _changed(current[k], i + 100)
                row.setdefault("change_sync", []).append(_ms_of(lb.sync, current))
            assert lb.sync(current) == 0, f"n={n}: apply and sync disagree"
            row["grace"] = [_ms_of(lb.reclaim) for _ in range(3)]
        print(
            f"\nprogramming n={n}: sync {full:.3f} s, sync (batch-filled) {filled:.3f} s,"
            f" batched {batched:.3f} s, unchanged {unchanged} ms, {row}"
        )
        med = {k: median(v) for k, v in row.items()}
        results.add(f"sync_batched_n{n}_s", batched, "s")
        results.add(f"sync_batch_filled_n{n}_s", filled, "s", f"sync_batched_n{n}_s", batched)
        results.add(f"sync_n{n}_s", full, "s", f"sync_batched_n{n}_s", batched)
        results.add(f"sync_unchanged_n{n}_ms", median(unchanged), "ms")
        results.add(f"add_one_by_hand_n{n}_ms", med["add_by_hand"], "ms")
        results.add(f"lb_tables_grace_n{n}_ms", med["grace"], "ms")
        for what in ("add", "change"):
            base = f"add_one_by_hand_n{n}_ms"
            for how in ("apply", "sync"):
                results.add(
                    f"{what}_one_{how}_n{n}_ms",
                    med[f"{what}_{how}"],
                    "ms",
                    base,
                    med["add_by_hand"],
                )


def _add_direct_slot(lb: LbDatapath) -> float:
    """Seconds of the first design's table change, by hand: a table built and installed into
    a slot of its own (one outer update: an RCU grace period), then removed (another, not
    timed)."""
    spec = service_spec(0, _distinct(10**5))
    slot = lb.tables.outer.max_entries - 1
    start = time.perf_counter()
    lb.tables.install(slot, build_table(spec))
    took = time.perf_counter() - start
    lb.tables.remove(slot)
    return took
