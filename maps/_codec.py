"""Byte layouts of the contract's structs, and every byte-order conversion pydp makes.

A ``Layout`` is derived from cffi's view of a struct in ``maps/*.h`` (offsets,
sizes, padding), so Python packs exactly what the C side reads. Fields declared
``__be*`` travel as big-endian integers; fields named ``pad*`` are always zero.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from typing import Any

from netaddr import EUI, IPAddress

from pydp.maps._cdef import ffi, wire_fields

__all__ = [
    "Layout",
    "be16",
    "be32",
    "from_be",
    "ip4_array",
    "ip4_bytes",
    "mac_bytes",
    "percpu_stride",
]

_INT_CODES = {
    ("uint8_t", 1): "B",
    ("uint16_t", 2): "H",
    ("uint32_t", 4): "I",
    ("uint64_t", 8): "Q",
    ("int8_t", 1): "b",
    ("int16_t", 2): "h",
    ("int32_t", 4): "i",
    ("int64_t", 8): "q",
}
_WIRE = wire_fields()


def be16(value: int) -> bytes:
    """A 16-bit host integer in network byte order."""
    return value.to_bytes(2, "big")


def be32(value: int) -> bytes:
    """A 32-bit host integer in network byte order."""
    return value.to_bytes(4, "big")


def ip4_bytes(addr: IPAddress) -> bytes:
    """An IPv4 address as the 4 network-order bytes a ``__be32`` field holds."""
    if addr.version != 4:
        raise ValueError(f"expected an IPv4 address, got {addr}")
    return bytes(addr.packed)


def ip4_array(addrs: Sequence[IPAddress]) -> bytes:
    """IPv4 addresses as consecutive 4-byte network-order fields (one batch of keys)."""
    ints = [int(a) for a in addrs]
    if any(a.version != 4 for a in addrs):
        bad = next(a for a in addrs if a.version != 4)
        raise ValueError(f"expected an IPv4 address, got {bad}")
    return struct.pack(f">{len(ints)}I", *ints)


def mac_bytes(mac: EUI) -> bytes:
    """A MAC address as its 6 wire bytes."""
    return int(mac).to_bytes(6, "big")


def from_be(raw: bytes) -> int:
    """A network-order byte string as a host integer."""
    return int.from_bytes(raw, "big")


def percpu_stride(size: int) -> int:
    """Bytes one CPU's value takes in a per-CPU map buffer (the kernel rounds to 8)."""
    return (size + 7) & ~7


def _field_code(ctype: Any, size: int) -> str:
    if ctype.kind == "array" and ctype.item.cname == "uint8_t":
        return f"{size}s"
    if ctype.kind == "primitive" and (ctype.cname, size) in _INT_CODES:
        return _INT_CODES[(ctype.cname, size)]
    raise TypeError(f"layout: unsupported field type {ctype.cname}")


class Layout:
    """Pack and unpack one contract struct; values are tuples in field order, pads left out."""

    def __init__(self, ctype: str) -> None:
        t = ffi.typeof(ctype)
        self.ctype = ctype
        self.size: int = ffi.sizeof(t)
        wire = _WIRE.get(ctype.removeprefix("struct "), frozenset())
        fmt, pos, names = "<", 0, []
        converters: list[tuple[int, Callable[[int], bytes], int]] = []
        fields = t.fields if t.kind == "struct" else []
        if t.kind != "struct":
            fmt, pos, names = "<" + _field_code(t, self.size), self.size, ["value"]
        for name, field in fields:
            if field.offset > pos:
                fmt += f"{field.offset - pos}x"
            size = ffi.sizeof(field.type)
            pos = field.offset + size
            if name.startswith("pad"):
                fmt += f"{size}x"
                continue
            if name in wire:
                converters.append((len(names), _to_be(size), size))
                fmt += f"{size}s"
            else:
                fmt += _field_code(field.type, size)
            names.append(name)
        if self.size > pos:
            fmt += f"{self.size - pos}x"
        self.names: tuple[str, ...] = tuple(names)
        self.struct = struct.Struct(fmt)
        self._converters = tuple(converters)
        if self.struct.size != self.size:
            raise TypeError(
                f"layout: {ctype} packs to {self.struct.size} bytes, C says {self.size}"
            )

    def pack_raw(self, *values: Any) -> bytes:
        """The struct's bytes, wire fields given as network-order bytes (the fast path)."""
        return self.struct.pack(*values)

    def pack(self, *values: Any) -> bytes:
        """The struct's bytes from its field values (wire fields as host integers)."""
        if self._converters:
            vals = list(values)
            for i, conv, _ in self._converters:
                vals[i] = conv(vals[i])
            values = tuple(vals)
        return self.struct.pack(*values)

    def unpack(self, buf: bytes | memoryview, offset: int = 0) -> tuple[Any, ...]:
        """Field values from the struct's bytes at offset (wire fields as host integers)."""
        values = self.struct.unpack_from(buf, offset)
        if not self._converters:
            return values
        vals = list(values)
        for i, _, _ in self._converters:
            vals[i] = from_be(vals[i])
        return tuple(vals)

    def unpack_percpu(self, buf: bytes | memoryview, ncpus: int) -> list[tuple[Any, ...]]:
        """One tuple per possible CPU from a per-CPU map value buffer."""
        stride = percpu_stride(self.size)
        return [self.unpack(buf, cpu * stride) for cpu in range(ncpus)]

    def sum_percpu(self, buf: bytes | memoryview, ncpus: int) -> tuple[int, ...]:
        """The per-CPU values of an all-integer struct, summed field by field."""
        rows = self.unpack_percpu(buf, ncpus)
        return tuple(sum(col) for col in zip(*rows, strict=True))

    def pack_many(self, rows: Sequence[Sequence[Any]]) -> bytes:
        """Structs laid end to end, as batch map operations take them."""
        return b"".join(self.pack(*row) for row in rows)


def _to_be(size: int) -> Callable[[int], bytes]:
    return lambda v: v.to_bytes(size, "big")
