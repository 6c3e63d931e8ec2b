"""A BPF map by file descriptor: the ``RawMap`` that pydp.maps' typed views sit on."""

from __future__ import annotations

import errno as E
import os
from pathlib import Path
from typing import Any

from pydp.errors import DatapathError, MapFullError, NotFoundError
from pydp.loader._libbpf import ffi, lib
from pydp.loader.pin import bpffs_root
from pydp.maps._codec import percpu_stride

__all__ = ["Map", "num_possible_cpus"]

# enum bpf_map_type values whose lookups return one value per possible CPU.
_PERCPU_TYPES = frozenset({5, 6, 10, 21})
_BATCH_CHUNK = 4096

_NCPUS = 0


def num_possible_cpus() -> int:
    """Possible CPUs, as per-CPU maps size their values."""
    global _NCPUS
    if not _NCPUS:
        _NCPUS = lib.libbpf_num_possible_cpus()
        if _NCPUS <= 0:
            raise DatapathError.from_errno("count possible CPUs", -_NCPUS or E.EINVAL)
    return _NCPUS


def _batch_opts(elem_flags: int = 0) -> Any:
    size = ffi.sizeof("struct bpf_map_batch_opts")
    return ffi.new("struct bpf_map_batch_opts *", {"sz": size, "elem_flags": elem_flags})


class Map:
    """A map fd with its shape; bytes in, bytes out (see ``pydp.maps.RawMap``)."""

    def __init__(self, fd: int, owned: bool = False) -> None:
        info = ffi.new("struct pydp_map_info *")
        size = ffi.new("uint32_t *", ffi.sizeof("struct pydp_map_info"))
        if lib.bpf_obj_get_info_by_fd(fd, info, size) != 0:
            raise DatapathError.from_errno(f"read info of map fd {fd}", ffi.errno)
        self.fd = fd
        self._owned = owned
        self.name: str = ffi.string(info.name).decode()
        self.id: int = info.id
        self.map_type: int = info.type
        self.key_size: int = info.key_size
        self.max_entries: int = info.max_entries
        self.percpu = info.type in _PERCPU_TYPES
        self.ncpus = num_possible_cpus() if self.percpu else 1
        stride = percpu_stride(info.value_size) if self.percpu else info.value_size
        self.value_size: int = stride * self.ncpus
        self._val = ffi.new("char[]", self.value_size)
        self._key = ffi.new("char[]", max(self.key_size, 1))

    @classmethod
    def open_pinned(cls, name: str, root: Path | None = None) -> Map:
        """The map pinned as root/name (NotFoundError when nothing is pinned there)."""
        path = (root or bpffs_root()) / name
        fd = lib.bpf_obj_get(str(path).encode())
        if fd < 0:
            err = ffi.errno
            cls_ = NotFoundError if err == E.ENOENT else DatapathError
            raise cls_.from_errno(f"open pinned map {path}", err)
        return cls(fd, owned=True)

    @classmethod
    def create(
        cls,
        map_type: int,
        name: str,
        key_size: int,
        value_size: int,
        max_entries: int,
        flags: int = 0,
    ) -> Map:
        """A new unpinned map, owned by the returned object (an inner map before it is put
        in an outer one, which then holds its own reference)."""
        size = ffi.sizeof("struct bpf_map_create_opts")
        opts = ffi.new("struct bpf_map_create_opts *", {"sz": size, "map_flags": flags})
        fd = lib.bpf_map_create(
            map_type, name.encode()[:15], key_size, value_size, max_entries, opts
        )
        if fd < 0:
            raise DatapathError.from_errno(f"create map {name}", -fd)  # libbpf: -errno
        return cls(fd, owned=True)

    @classmethod
    def by_id(cls, map_id: int) -> Map:
        """The map with kernel id ``map_id`` (an outer map's lookup returns inner maps' ids)."""
        fd = lib.bpf_map_get_fd_by_id(map_id)
        if fd < 0:
            err = -fd
            cls_ = NotFoundError if err == E.ENOENT else DatapathError
            raise cls_.from_errno(f"open map id {map_id}", err)
        return cls(fd, owned=True)

    def close(self) -> None:
        if self._owned and self.fd >= 0:
            os.close(self.fd)
        self.fd = -1

    def __repr__(self) -> str:
        return f"Map({self.name!r}, id={self.id}, fd={self.fd})"

    def lookup(self, key: bytes) -> bytes | None:
        if lib.bpf_map_lookup_elem(self.fd, key, self._val) != 0:
            err = ffi.errno
            if err == E.ENOENT:
                return None
            raise DatapathError.from_errno(f"lookup in map {self.name}", err)
        return bytes(ffi.buffer(self._val, self.value_size))

    def update(self, key: bytes, value: bytes, flags: int = 0) -> None:
        if lib.bpf_map_update_elem(self.fd, key, value, flags) != 0:
            raise self._write_error("update", ffi.errno)

    def _write_error(self, op: str, err: int) -> DatapathError:
        if err == E.E2BIG:  # a hash map at max_entries
            return MapFullError(f"{op} map {self.name}: full ({self.max_entries} entries)", err)
        return DatapathError(f"{op} map {self.name}: {os.strerror(err)}", err)

    def delete(self, key: bytes) -> bool:
        if lib.bpf_map_delete_elem(self.fd, key) != 0:
            err = ffi.errno
            if err == E.ENOENT:
                return False
            raise DatapathError.from_errno(f"delete from map {self.name}", err)
        return True

    def next_key(self, key: bytes | None) -> bytes | None:
        if lib.bpf_map_get_next_key(self.fd, key if key is not None else ffi.NULL, self._key):
            err = ffi.errno
            if err == E.ENOENT:
                return None
            raise DatapathError.from_errno(f"iterate map {self.name}", err)
        return bytes(ffi.buffer(self._key, self.key_size))

    def lookup_all(self) -> list[tuple[bytes, bytes]]:
        """Every (key, value) pair, read in batches; falls back to key-by-key iteration."""
        chunk = min(self.max_entries, _BATCH_CHUNK) or 1
        keys = ffi.new("char[]", chunk * self.key_size)
        vals = ffi.new("char[]", chunk * self.value_size)
        token_in = ffi.new("char[]", max(self.key_size, 8))
        token_out = ffi.new("char[]", max(self.key_size, 8))
        count = ffi.new("uint32_t *")
        opts = _batch_opts()
        out: list[tuple[bytes, bytes]] = []
        first = True
        while True:
            count[0] = chunk
            ret = lib.bpf_map_lookup_batch(
                self.fd, ffi.NULL if first else token_in, token_out, keys, vals, count, opts
            )
            err = ffi.errno if ret else 0
            if ret and err not in (E.ENOENT,):
                if first and err in (E.EINVAL, E.EOPNOTSUPP, 524):  # 524: ENOTSUPP
                    return self._lookup_all_slow()
                raise DatapathError.from_errno(f"batch lookup in map {self.name}", err)
            kb = ffi.buffer(keys, count[0] * self.key_size)[:]
            vb = ffi.buffer(vals, count[0] * self.value_size)[:]
            ks, vs = self.key_size, self.value_size
            out.extend(
                (kb[i * ks : (i + 1) * ks], vb[i * vs : (i + 1) * vs]) for i in range(count[0])
            )
            if err == E.ENOENT:
                return out
            ffi.memmove(token_in, token_out, len(token_in))
            first = False

    def _lookup_all_slow(self) -> list[tuple[bytes, bytes]]:
        seen: dict[bytes, bytes] = {}
        key = self.next_key(None)
        for _ in range(2 * self.max_entries + 1):  # a concurrent delete may restart the walk
            if key is None:
                break
            value = self.lookup(key)
            if value is not None:
                seen[key] = value
            nxt = self.next_key(key)
            key = None if nxt in seen else nxt
        return list(seen.items())

    def update_batch(self, keys: bytes, values: bytes, count: int, flags: int = 0) -> None:
        n = ffi.new("uint32_t *", count)
        opts = _batch_opts(flags)
        if lib.bpf_map_update_batch(self.fd, keys, values, n, opts) != 0:
            raise self._write_error(f"batch update ({n[0]} of {count} written)", ffi.errno)

    def delete_batch(self, keys: bytes, count: int) -> None:
        n = ffi.new("uint32_t *", count)
        opts = _batch_opts()
        if lib.bpf_map_delete_batch(self.fd, keys, n, opts) != 0:
            raise DatapathError.from_errno(f"batch delete from map {self.name}", ffi.errno)

    def __enter__(self) -> Map:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
