"""Service load balancing: frontends (``pydp_services``) and backend tables
(``pydp_lb_tables``, an array of maps: one inner array per service, swapped whole)."""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from netaddr import IPAddress

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

    def lookup(self, key: bytes) -> bytes | None: ...
    def update(self, key: bytes, value: bytes, flags: int = 0) -> None: ...
    def update_batch(self, keys: bytes, values: bytes, count: int, flags: int = 0) -> None: ...
    def delete(self, key: bytes) -> bool: ...


class InnerMap(Protocol):
    fd: int

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


class LbTables:
    """``pydp_lb_tables``: service index -> its backend table. A table is never written in
    place: `install` fills a new inner array in one batch and swaps it in with one update,
    so a packet sees the old table or the new one, never a mix."""

    def __init__(self, outer: OuterMap, create: MapFactory, by_id: MapOpener) -> None:
        self.outer = outer
        self._create = create
        self._by_id = by_id

    def backends(self, index: int) -> set[LbBackend]:
        """The distinct backends of service index's table as installed (empty: none)."""
        ref = self.outer.lookup(index.to_bytes(4, "little"))
        if ref is None:
            return set()
        inner = self._by_id(int.from_bytes(ref[:4], "little"))
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

    def install(self, index: int, table: bytes) -> None:
        """Make ``table`` (``pack_table``'s bytes, at least one slot) service index's."""
        self.install_many({index: table})

    def install_many(self, tables: Mapping[int, bytes]) -> None:
        """Install several tables, swapped in by batches of ``SWAP_BATCH``: every update of
        an array of maps from user space waits for an RCU grace period (~7 ms here), and a
        batch waits once, not once per table (10,000 tables: minutes -> seconds)."""
        items = list(tables.items())
        for start in range(0, len(items), SWAP_BATCH):
            chunk = items[start : start + SWAP_BATCH]
            inners: list[InnerMap] = []
            try:
                for index, table in chunk:
                    inners.append(self._filled(index, table))
                keys = struct.pack(f"<{len(chunk)}I", *(i for i, _ in chunk))
                fds = struct.pack(f"<{len(chunk)}I", *(m.fd for m in inners))
                self.outer.update_batch(keys, fds, len(chunk))
            finally:
                for inner in inners:
                    inner.close()  # the outer map holds its own reference

    def _filled(self, index: int, table: bytes) -> InnerMap:
        n = len(table) // _SLOT.size
        if n < 1 or n * _SLOT.size != len(table):
            raise ValueError(f"table of service {index}: {len(table)} bytes is no slot array")
        inner = self._create(
            _BPF_MAP_TYPE_ARRAY, f"pydp_lb_{index}", 4, _SLOT.size, n, _BPF_F_INNER_MAP
        )
        try:
            inner.update_batch(struct.pack(f"<{n}I", *range(n)), table, n)
        except BaseException:
            inner.close()
            raise
        return inner

    def remove(self, index: int) -> bool:
        """Drop service index's table (False when it had none)."""
        return self.outer.delete(index.to_bytes(4, "little"))
