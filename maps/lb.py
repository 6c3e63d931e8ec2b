"""Service load balancing: frontends (``pydp_services``) and backend tables
(``pydp_lb_tables``, an array of maps: one inner array per service, swapped whole)."""

from __future__ import annotations

import errno
import heapq
import mmap
import os
from array import array
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import cffi
from netaddr import IPAddress

from pydp.errors import DatapathError, MapFullError, NotFoundError
from pydp.maps._cdef import constants
from pydp.maps._codec import Layout, be16, ip4_bytes
from pydp.maps.base import TypedMap

__all__ = [
    "LB_TABLES_MAP",
    "SERVICES_MAP",
    "LbBackend",
    "LbTables",
    "ServiceMap",
    "SvcInfo",
    "SvcKey",
    "capacity",
    "new_map",
    "pack_table",
]

_C = constants()
SERVICES_MAP = "pydp_services"
LB_TABLES_MAP = "pydp_lb_tables"
SVC_F_MAGLEV = _C["SVC_F_MAGLEV"]
SVC_F_RANDOM = _C["SVC_F_RANDOM"]
_BPF_MAP_TYPE_ARRAY = 2
_BPF_F_INNER_MAP = 1 << 12
SWAP_BATCH = 512  # tables swapped into pydp_lb_tables per batch (inner map fds held open)


@dataclass(frozen=True, slots=True)
class SvcKey:
    """A service frontend; port 0 and proto 0 make the VIP's mark (ARP is answered)."""

    vip: IPAddress
    port: int = 0
    proto: int = 0  # IPPROTO_TCP or IPPROTO_UDP; 0 in the mark


@dataclass(frozen=True, slots=True)
class SvcInfo:
    """Which table serves a frontend, its size, and how a backend is picked from it."""

    index: int  # the service's index: its table in pydp_lb_tables
    size: int  # slots in the table; 0: no backend
    network: int  # the service's network index
    sig: int = 0  # the agent's signature of what the table is computed from (0: none)
    flags: int = 0  # SVC_F_MAGLEV or SVC_F_RANDOM


class ServiceMap(TypedMap[SvcKey, SvcInfo]):
    """``pydp_services``: SvcKey -> SvcInfo."""

    key_type = "struct svc_key"
    value_type = "struct svc_info"

    def encode_key(self, key: SvcKey) -> tuple[Any, ...]:
        return (int(key.vip), key.port, key.proto)

    def key_bytes(self, key: SvcKey) -> bytes:
        return self.key_layout.pack_raw(ip4_bytes(key.vip), be16(key.port), key.proto)

    def decode_key(self, fields: tuple[Any, ...]) -> SvcKey:
        vip, port, proto = fields
        return SvcKey(IPAddress(vip, 4), port, proto)

    def encode_value(self, value: SvcInfo) -> tuple[Any, ...]:
        return (value.index, value.size, value.network, value.sig, value.flags)

    def decode_value(self, fields: tuple[Any, ...]) -> SvcInfo:
        index, size, network, sig, flags = fields
        return SvcInfo(index, size, network, sig, flags)


@dataclass(frozen=True, slots=True)
class LbBackend:
    """A slot of a service's table: the backend's address and port (0: the frontend's)."""

    address: IPAddress
    port: int = 0


_SLOT = Layout("struct lb_backend")


def pack_table(backends: Sequence[LbBackend], slots: Sequence[int] | Any) -> bytes:
    """The table's bytes: slot i holds backends[slots[i]] (a Maglev table's indexes, or
    one index per backend for random, a sequence or a numpy array); a negative index is
    an empty slot."""
    import numpy as np  # only when a table is built: numpy costs every CLI command ~0.1 s

    packed = np.frombuffer(
        b"".join(_SLOT.pack_raw(ip4_bytes(b.address), be16(b.port)) for b in backends)
        + b"\0" * _SLOT.size,  # index -1: the empty slot
        dtype=f"V{_SLOT.size}",
    )
    index = np.asarray(slots, dtype=np.int64)
    index = np.where(index < 0, len(backends), index)
    return packed[index].tobytes()


class OuterMap(Protocol):
    """The loader's ``Map`` as LbTables uses it."""

    fd: int
    max_entries: int

    def lookup(self, key: bytes) -> bytes | None: ...
    def update(self, key: bytes, value: bytes, flags: int = 0) -> None: ...
    def update_batch(self, keys: bytes, values: bytes, count: int, flags: int = 0) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def delete_batch(self, keys: bytes, count: int) -> None: ...
    def lookup_all(self) -> list[tuple[bytes, bytes]]: ...


class InnerMap(Protocol):
    fd: int
    max_entries: int

    def lookup(self, key: bytes) -> bytes | None: ...
    def update_batch(self, keys: bytes, values: bytes, count: int, flags: int = 0) -> None: ...
    def lookup_all(self) -> list[tuple[bytes, bytes]]: ...
    def close(self) -> None: ...


class MapFactory(Protocol):
    """Map.create: a new map."""

    def __call__(
        self,
        map_type: int,
        name: str,
        key_size: int,
        value_size: int,
        max_entries: int,
        flags: int = 0,
    ) -> InnerMap: ...


class MapOpener(Protocol):
    """Map.by_id: an existing map by its kernel id."""

    def __call__(self, map_id: int) -> InnerMap: ...


_BPF_F_MMAPABLE = 1 << 10
MIN_CAPACITY = 16  # the smallest inner array (slots)
RESERVE = 32  # spares of a size class made beside the tables that found none
GROW_CHUNK = 4096  # new inner maps put in pydp_lb_tables by one batch update (fds held open)
TRIM_AT = 1024  # quarantined tables beyond which they are deleted, not kept as spares
STAMP_SLOT = 0  # slot 0 names no table: its inner array holds the writers' stamp

_mm = cffi.FFI()
_mm.cdef(
    """
void *mmap(void *addr, size_t length, int prot, int flags, int fd, long offset);
int munmap(void *addr, size_t length);
void *memset(void *s, int c, size_t n);
"""
)
_libc: Any = _mm.dlopen(None)
_PROT_RW, _MAP_SHARED = 3, 1
_PAGE = mmap.PAGESIZE


class _NewMap:
    """A map fd from `new_map`: what LbTables needs of a new inner array, without the
    loader's Map (whose info read and buffers cost as much as the map's creation)."""

    def __init__(self, fd: int, max_entries: int) -> None:
        self.fd = fd
        self.max_entries = max_entries

    def lookup(self, key: bytes) -> bytes | None:
        raise NotImplementedError  # LbTables never reads a map it has just made

    def lookup_all(self) -> list[tuple[bytes, bytes]]:
        raise NotImplementedError

    def update_batch(self, keys: bytes, values: bytes, count: int, flags: int = 0) -> None:
        from pydp.loader import Map

        with Map(os.dup(self.fd), owned=True) as m:
            m.update_batch(keys, values, count, flags)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
        self.fd = -1


def new_map(
    map_type: int, name: str, key_size: int, value_size: int, max_entries: int, flags: int = 0
) -> InnerMap:
    """Map.create for LbTables: a new unpinned map (BPF_MAP_CREATE), owned by the result."""
    from pydp.loader._libbpf import ffi, lib

    size = ffi.sizeof("struct bpf_map_create_opts")
    opts = ffi.new("struct bpf_map_create_opts *", {"sz": size, "map_flags": flags})
    fd = lib.bpf_map_create(map_type, name.encode()[:15], key_size, value_size, max_entries, opts)
    if fd < 0:
        raise DatapathError.from_errno(f"create map {name}", -fd)  # libbpf: -errno
    return _NewMap(fd, max_entries)


def capacity(slots: int) -> int:
    """The size class of a table of ``slots`` slots: the inner array it is written into
    (a power of two, at least MIN_CAPACITY; past the table the slots are zero)."""
    return max(MIN_CAPACITY, 1 << (max(slots, 1) - 1).bit_length())


def _u32s(values: Iterable[int]) -> bytes:
    return array("I", values).tobytes()


class LbTables:
    """``pydp_lb_tables``: table slot -> a backend table (an inner array). A packet reads
    the table its frontend's ``svc_info.index`` names; a table is never written while a
    frontend names it, so a packet sees the old table or the new one, never a mix.

    Two ways to change a table:

    - `place` (what LbDatapath uses): each table goes into a slot no frontend names --
      a *spare* of its size class (`capacity`), already in the outer map, written in place
      (through mmap when the inner arrays are BPF_F_MMAPABLE: one memcpy; else one batch
      update), or a new inner array put in the outer map with many others by one batch
      update. The caller then points the frontends at the slot (hash updates) and gives
      the old slot back with `release`: it is *quarantined* -- a packet may still be
      reading it -- until the outer map is written again (every write of an array of maps
      from user space waits for an RCU grace period, after which no program still holds
      what it read before), and only then becomes a spare. So a table change costs no
      grace period unless its size class has no spare left (then `RESERVE` more are made,
      one grace period for all).
    - `install` (the first design, kept for tests and benchmarks): a new inner array
      swapped into a given slot by one outer update (a grace period each batch).

    What is a spare is not stored: `load` reads which slots hold a table, and those no
    frontend names are quarantined (the process that released them may have ended within
    a grace period)."""

    def __init__(self, outer: OuterMap, create: MapFactory, by_id: MapOpener) -> None:
        self.outer = outer
        self._create = create
        self._by_id = by_id
        self.mmapable: bool | None = None  # the outer map's inner template: None, not known
        self.loaded = False
        self.capacity: dict[int, int] = {}  # every slot holding a table -> size (0: unread)
        self.spare: dict[int, list[int]] = {}  # size class -> spare slots
        self.quarantine: set[int] = set()
        self._free: list[int] = []  # a heap of empty slots below _next
        self._next = 1
        self._stamp = False  # slot 0 holds its array
        self._keys: dict[int, bytes] = {}  # slots -> 0..slots-1 as keys (batch writes)

    # ---- reading --------------------------------------------------------------------------

    def _open(self, slot: int) -> InnerMap | None:
        ref = self.outer.lookup(slot.to_bytes(4, "little"))
        if ref is None:
            return None
        return self._by_id(int.from_bytes(ref[:4], "little"))

    def backends(self, slot: int) -> set[LbBackend]:
        """The distinct backends of the table in slot as installed (empty: none)."""
        inner = self._open(slot)
        if inner is None:
            return set()
        try:
            values = {v for _, v in inner.lookup_all()}
        finally:
            inner.close()
        out = set()
        for v in values:
            addr, port = _SLOT.unpack(v)
            if addr:
                out.add(LbBackend(IPAddress(addr, 4), port))
        return out

    # ---- the slot pool --------------------------------------------------------------------

    def load(self, referenced: Collection[int]) -> None:
        """Read which slots hold a table; those not in ``referenced`` (slots some frontend
        names) are quarantined."""
        populated = {
            int.from_bytes(k, "little"): int.from_bytes(v[:4], "little")
            for k, v in self.outer.lookup_all()
        }
        self._stamp = populated.pop(STAMP_SLOT, None) is not None
        self.capacity = dict.fromkeys(populated, 0)
        self.spare = {}
        self.quarantine = set(populated) - set(referenced)
        self._next = max(populated, default=0) + 1
        self._free = sorted(set(range(1, self._next)) - set(populated))
        if self.mmapable is None and populated:
            self.mmapable = bool(
                _map_flags(next(iter(populated.values())), self._by_id) & _BPF_F_MMAPABLE
            )
        self.loaded = True

    def place(self, tables: Sequence[bytes]) -> list[int]:
        """A slot for each table (``pack_table``'s bytes, at least one slot), holding it and
        named by no frontend: the caller's to point frontends at."""
        slots = [0] * len(tables)
        grow: list[tuple[int, int, bytes]] = []
        for i, table in enumerate(tables):
            cap = capacity(_slots(table))
            pool = self.spare.get(cap)
            if pool:
                slot = pool.pop()
                self._fill(slot, cap, table)
                slots[i] = slot
            else:
                grow.append((i, cap, table))
        if grow:
            classes = sorted({cap for _, cap, _ in grow})
            items = [(cap, table) for _, cap, table in grow]
            items += [(cap, b"") for cap in classes for _ in range(RESERVE)]
            made = self._grow(items)
            for (i, _, _), slot in zip(grow, made, strict=False):
                slots[i] = slot
            for (cap, _), slot in zip(items[len(grow) :], made[len(grow) :], strict=True):
                self.spare.setdefault(cap, []).append(slot)
        return slots

    def release(self, slots: Iterable[int]) -> None:
        """Slots no frontend names any more: quarantined until a grace period has passed.
        Past TRIM_AT quarantined, they are deleted from the outer map instead (one batch:
        one grace period, which also frees every other quarantined one)."""
        self.quarantine.update(s for s in slots if s)
        if len(self.quarantine) > TRIM_AT:
            doomed = sorted(self.quarantine)
            self.outer.delete_batch(_u32s(doomed), len(doomed))
            for slot in doomed:
                self.capacity.pop(slot, None)
                heapq.heappush(self._free, slot)
            self.quarantine.clear()

    def reclaim(self) -> int:
        """Wait for a grace period (one outer write that changes nothing: a quarantined
        slot's own table written again) and make the quarantined slots spares. For an agent
        with time to spare; returns how many became spares."""
        if not self.quarantine:
            return 0
        pending = set(self.quarantine)
        slot = next(iter(pending))
        inner = self._open(slot)
        if inner is not None:
            try:
                self.outer.update(slot.to_bytes(4, "little"), inner.fd.to_bytes(4, "little"))
            finally:
                inner.close()
        self._graced(pending)
        return len(pending)

    def _graced(self, pending: Collection[int]) -> None:
        """A grace period has passed since ``pending`` were quarantined: spares now."""
        for slot in pending:
            if slot not in self.quarantine:
                continue
            self.quarantine.discard(slot)
            cap = self.capacity.get(slot) or self._read_capacity(slot)
            if cap:
                self.spare.setdefault(cap, []).append(slot)

    def _read_capacity(self, slot: int) -> int:
        inner = self._open(slot)
        if inner is None:
            self.capacity.pop(slot, None)
            return 0
        try:
            self.capacity[slot] = inner.max_entries
        finally:
            inner.close()
        return inner.max_entries

    def _take_free(self) -> int:
        if self._free:
            return heapq.heappop(self._free)
        if self._next >= self.outer.max_entries:
            raise MapFullError(
                f"{LB_TABLES_MAP}: every table slot is taken ({self.outer.max_entries})",
                errno.E2BIG,
            )
        self._next += 1
        return self._next - 1

    def _grow(self, items: Sequence[tuple[int, bytes]]) -> list[int]:
        """New inner arrays (size, table) in free slots, by batch updates of the outer map
        (GROW_CHUNK a batch: a grace period each, which frees the quarantined slots)."""
        pending = set(self.quarantine)
        slots = [self._take_free() for _ in items]
        todo = list(zip(slots, items, strict=True))
        if not self._stamp:
            todo.insert(0, (STAMP_SLOT, (MIN_CAPACITY, b"")))
        for start in range(0, len(todo), GROW_CHUNK):
            chunk = todo[start : start + GROW_CHUNK]
            self._insert(chunk)
            for slot, (cap, _) in chunk:
                if slot == STAMP_SLOT:
                    self._stamp = True
                else:
                    self.capacity[slot] = cap
        self._graced(pending)
        return slots

    def _insert(self, chunk: Sequence[tuple[int, tuple[int, bytes]]]) -> None:
        keys = _u32s(slot for slot, _ in chunk)
        while True:
            trial = self.mmapable is None
            inners: list[InnerMap] = []
            try:
                for _, (cap, table) in chunk:
                    inners.append(self._new(cap, table))
                fds = _u32s(m.fd for m in inners)
                try:
                    self.outer.update_batch(keys, fds, len(chunk))
                except DatapathError as e:
                    # the template is not BPF_F_MMAPABLE: the first insert fails, no other
                    if trial and e.errno == errno.EINVAL:
                        self.mmapable = False
                        continue
                    raise
                if trial:
                    self.mmapable = True
                return
            finally:
                for m in inners:
                    m.close()  # the outer map holds its own reference

    def _new(self, cap: int, table: bytes) -> InnerMap:
        flags = _BPF_F_INNER_MAP | (0 if self.mmapable is False else _BPF_F_MMAPABLE)
        inner = self._create(_BPF_MAP_TYPE_ARRAY, "pydp_lb_table", 4, _SLOT.size, cap, flags)
        try:
            if table:
                self._write(inner, cap, table, fresh=True)
        except BaseException:
            inner.close()
            raise
        return inner

    def _fill(self, slot: int, cap: int, table: bytes) -> None:
        inner = self._open(slot)
        if inner is None:
            raise NotFoundError(f"{LB_TABLES_MAP}: spare slot {slot} holds no table", errno.ENOENT)
        try:
            self._write(inner, cap, table, fresh=False)
        finally:
            inner.close()

    def _write(self, inner: InnerMap, cap: int, table: bytes, fresh: bool) -> None:
        """table into inner's first slots; the rest zeroed (a fresh array is zero)."""
        size = len(table)
        if size > cap * _SLOT.size:
            raise ValueError(f"a table of {size // _SLOT.size} slots in an array of {cap}")
        if self.mmapable is not False:  # None: a trial map, made BPF_F_MMAPABLE
            length = -(-cap * _SLOT.size // _PAGE) * _PAGE
            addr = _libc.mmap(_mm.NULL, length, _PROT_RW, _MAP_SHARED, inner.fd, 0)
            if int(_mm.cast("intptr_t", addr)) == -1:
                raise DatapathError.from_errno(f"mmap {LB_TABLES_MAP} table", _mm.errno)
            try:
                _mm.memmove(addr, table, size)
                if not fresh:
                    _libc.memset(_mm.cast("char *", addr) + size, 0, cap * _SLOT.size - size)
            finally:
                _libc.munmap(addr, length)
            return
        keys = self._keys.get(cap)
        if keys is None:
            keys = self._keys[cap] = _u32s(range(cap))
        n = cap if not fresh else _slots(table)
        values = table + bytes(n * _SLOT.size - size)
        inner.update_batch(keys[: 4 * n], values, n)

    # ---- the writers' stamp ---------------------------------------------------------------

    def read_stamp(self) -> bytes | None:
        """The 16 bytes the last writer left in slot 0 (None: no stamp)."""
        inner = self._open(STAMP_SLOT)
        if inner is None:
            return None
        try:
            got = [inner.lookup(i.to_bytes(4, "little")) for i in (0, 1)]
        finally:
            inner.close()
        return b"".join(v or b"" for v in got)

    def write_stamp(self, stamp: bytes) -> None:
        """Leave 16 bytes in slot 0: who wrote the tables and frontends last (LbDatapath
        trusts what it remembers only while the stamp is its own)."""
        if len(stamp) != 2 * _SLOT.size:
            raise ValueError("a stamp is 16 bytes")
        inner = self._open(STAMP_SLOT)
        if inner is None:
            self._grow([])
            inner = self._open(STAMP_SLOT)
            assert inner is not None
        try:
            inner.update_batch(_u32s((0, 1)), stamp, 2)
        finally:
            inner.close()

    # ---- direct swaps ---------------------------------------------------------------------

    def install(self, slot: int, table: bytes) -> None:
        """Make ``table`` (``pack_table``'s bytes, at least one slot) slot's, swapped in."""
        self.install_many({slot: table})

    def install_many(self, tables: Mapping[int, bytes]) -> None:
        """Install several tables, each a new inner array of its own size swapped into its
        slot, by batches of ``SWAP_BATCH`` (one grace period a batch)."""
        items = list(tables.items())
        for start in range(0, len(items), SWAP_BATCH):
            chunk = items[start : start + SWAP_BATCH]
            self._insert([(slot, (_slots(table), table)) for slot, table in chunk])
            for slot, table in chunk:
                self._forget(slot)
                if self.loaded:
                    self.capacity[slot] = _slots(table)

    def _forget(self, slot: int) -> None:
        """slot left the pool (a direct swap or removal)."""
        self.quarantine.discard(slot)
        for pool in self.spare.values():
            if slot in pool:
                pool.remove(slot)
        self.capacity.pop(slot, None)

    def remove(self, slot: int) -> bool:
        """Drop slot's table (False when it had none)."""
        self._forget(slot)
        return self.outer.delete(slot.to_bytes(4, "little"))


def _slots(table: bytes) -> int:
    n = len(table) // _SLOT.size
    if n < 1 or n * _SLOT.size != len(table):
        raise ValueError(f"{len(table)} bytes is no table of slots")
    return n


def _map_flags(map_id: int, by_id: MapOpener) -> int:
    """A map's map_flags (the loader's Map does not keep them)."""
    from pydp.loader._libbpf import ffi, lib

    inner = by_id(map_id)
    try:
        info = ffi.new("struct pydp_map_info *")
        size = ffi.new("uint32_t *", ffi.sizeof("struct pydp_map_info"))
        if lib.bpf_obj_get_info_by_fd(inner.fd, info, size) != 0:
            raise DatapathError.from_errno(f"read info of map id {map_id}", ffi.errno)
        return int(info.map_flags)
    finally:
        inner.close()
