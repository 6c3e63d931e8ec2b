"""Typed views over BPF maps: a ``MutableMapping`` of Python values over raw bytes.

The views never make a syscall themselves: they pack and unpack with the
contract's layouts and hand bytes to a ``RawMap``, which ``pydp.loader``
implements over a map file descriptor (and a test may implement over a dict).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import Any, Generic, Protocol, TypeVar

from pydp.maps._codec import Layout, percpu_stride

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "ArrayMap",
    "RawMap",
    "TypedMap",
    "sync_entries",
]

BPF_ANY = 0  # create or update
BPF_NOEXIST = 1  # create only
BPF_EXIST = 2  # update only

K = TypeVar("K")
V = TypeVar("V")


class RawMap(Protocol):
    """A map as bytes in, bytes out. Per-CPU maps exchange ``ncpus`` strided values."""

    name: str
    key_size: int
    value_size: int
    max_entries: int
    percpu: bool
    ncpus: int

    def lookup(self, key: bytes) -> bytes | None: ...
    def update(self, key: bytes, value: bytes, flags: int = BPF_ANY) -> None: ...
    def delete(self, key: bytes) -> bool: ...
    def next_key(self, key: bytes | None) -> bytes | None: ...
    def lookup_all(self) -> list[tuple[bytes, bytes]]: ...
    def update_batch(
        self, keys: bytes, values: bytes, count: int, flags: int = BPF_ANY
    ) -> None: ...
    def delete_batch(self, keys: bytes, count: int) -> None: ...


class TypedMap(MutableMapping[K, V], Generic[K, V]):
    """A BPF map as a ``MutableMapping[K, V]``; subclasses say how K and V map to C.

    Iteration works on a snapshot taken with batch lookups, so entries deleted
    concurrently (by the kernel's LRU or another process) never break it.
    """

    key_type = ""  # C type of keys, e.g. "struct endpoint_key"
    value_type = ""  # C type of values

    def __init__(self, raw: RawMap) -> None:
        self.raw = raw
        self.key_layout = Layout(self.key_type)
        self.value_layout = Layout(self.value_type)
        if self.key_layout.size != raw.key_size:
            raise TypeError(
                f"map {raw.name}: key is {raw.key_size} bytes, {self.key_type} is "
                f"{self.key_layout.size}"
            )
        stride = percpu_stride(self.value_layout.size)
        want = stride * raw.ncpus if raw.percpu else self.value_layout.size
        if want != raw.value_size:
            raise TypeError(
                f"map {raw.name}: value is {raw.value_size} bytes, {self.value_type} needs {want}"
            )

    # How K and V become field tuples and back: the subclasses' part.
    def encode_key(self, key: K) -> tuple[Any, ...]:
        raise NotImplementedError

    def decode_key(self, fields: tuple[Any, ...]) -> K:
        raise NotImplementedError

    def encode_value(self, value: V) -> tuple[Any, ...]:
        raise NotImplementedError

    def decode_value(self, fields: tuple[Any, ...]) -> V:
        raise NotImplementedError

    # The bytes of a key and a value; a family may override these with a
    # direct pack when the generic encode + pack shows up in its update rate.
    def key_bytes(self, key: K) -> bytes:
        return self.key_layout.pack(*self.encode_key(key))

    def _value(self, raw: bytes) -> V:
        if self.raw.percpu:
            return self.decode_value(self.value_layout.sum_percpu(raw, self.raw.ncpus))
        return self.decode_value(self.value_layout.unpack(raw))

    def value_bytes(self, value: V) -> bytes:
        return self.value_layout.pack(*self.encode_value(value))

    def _value_bytes(self, value: V) -> bytes:
        packed = self.value_bytes(value)
        if self.raw.percpu:  # the same value on every CPU
            pad = b"\0" * (percpu_stride(len(packed)) - len(packed))
            return (packed + pad) * self.raw.ncpus
        return packed

    def __getitem__(self, key: K) -> V:
        raw = self.raw.lookup(self.key_bytes(key))
        if raw is None:
            raise KeyError(key)
        return self._value(raw)

    def __setitem__(self, key: K, value: V) -> None:
        self.raw.update(self.key_bytes(key), self._value_bytes(value))

    def __delitem__(self, key: K) -> None:
        if not self.raw.delete(self.key_bytes(key)):
            raise KeyError(key)

    def discard(self, key: K) -> bool:
        """Delete key if present; True when it was there (deleting what is gone succeeds)."""
        return self.raw.delete(self.key_bytes(key))

    def snapshot(self) -> dict[K, V]:
        """Every entry at once, read with batch lookups."""
        klay = self.key_layout
        return {self.decode_key(klay.unpack(k)): self._value(v) for k, v in self.raw.lookup_all()}

    def __iter__(self) -> Iterator[K]:
        return iter(self.snapshot())

    def items(self) -> Any:  # a snapshot: keys and values read together
        return self.snapshot().items()

    def values(self) -> Any:
        return self.snapshot().values()

    def __len__(self) -> int:
        return len(self.raw.lookup_all())

    def update_batch(self, entries: Mapping[K, V] | Iterable[tuple[K, V]]) -> int:
        """Write many entries with one batch syscall; returns how many."""
        pairs = list(entries.items() if isinstance(entries, Mapping) else entries)
        if not pairs:
            return 0
        keys = self.pack_keys([k for k, _ in pairs])
        values = self.pack_values([v for _, v in pairs])
        self.raw.update_batch(keys, values, len(pairs))
        return len(pairs)

    def pack_keys(self, keys: Sequence[K]) -> bytes:
        """Keys laid end to end for a batch call; a family may vectorize this."""
        return b"".join(map(self.key_bytes, keys))

    def pack_values(self, values: Sequence[V]) -> bytes:
        """Values laid end to end for a batch call; a family may vectorize this."""
        return b"".join(map(self._value_bytes, values))

    def delete_batch(self, keys: Iterable[K]) -> int:
        """Delete many entries with one batch syscall; absent keys are ignored."""
        present = [k for k in keys if self.raw.lookup(self.key_bytes(k)) is not None]
        if present:
            self.raw.delete_batch(self.pack_keys(present), len(present))
        return len(present)

    def clear(self) -> None:
        """Remove every entry."""
        for k, _ in self.raw.lookup_all():
            self.raw.delete(k)


class ArrayMap(TypedMap[K, V]):
    """A BPF array: every index exists, so "deleting" writes the family's EMPTY value."""

    EMPTY: V

    def __delitem__(self, key: K) -> None:
        self[key] = self.EMPTY

    def discard(self, key: K) -> bool:
        had = self.get(key, self.EMPTY) != self.EMPTY
        self[key] = self.EMPTY
        return had


def sync_entries(
    view: TypedMap[Any, Any],
    want: Mapping[bytes, bytes],
    batch: bool = True,
    empty: bytes | None = None,
) -> tuple[int, int]:
    """Make a map hold exactly ``want`` (packed keys -> packed values), compared as bytes:
    write what differs, remove the rest (an array's entries are overwritten with ``empty``).
    Returns (written, removed)."""
    current = dict(view.raw.lookup_all())
    changed = {k: v for k, v in want.items() if current.get(k) != v}
    stale = [k for k, v in current.items() if k not in want and v != empty]
    if empty is not None:
        changed.update({k: empty for k in stale})
        stale = []
    if batch and changed:
        view.raw.update_batch(b"".join(changed), b"".join(changed.values()), len(changed))
    elif changed:
        for k, v in changed.items():
            view.raw.update(k, v)
    if batch and stale:
        view.raw.delete_batch(b"".join(stale), len(stale))
    else:
        for k in stale:
            view.raw.delete(k)
    return len(changed), len(stale)
