"""Maglev consistent hashing (Eisenbud et al., NSDI'16): the table a service's VIP uses
to pick a backend from a flow hash, so that a change in the backend set moves few flows.

A table has M slots (M prime), each holding the index of a backend. Backend i
walks the slots ``offset[i], offset[i] + skip[i], ...`` (mod M) and, round by
round, takes the first one still empty. Weighted: each round backend i earns
``weight[i]`` credit and takes one slot per ``max(weight)`` of credit, so the
heaviest takes one a round and a weight of 0 takes none.

The cluster-wide contract. Every host must compute the same table from the
same backends, or a flow would reach different backends through different
hosts; so all of this is fixed, and a change to any of it is a new version of
the keys below, never a silent one:

- a backend's identity is its bytes (a ``str`` in UTF-8);
- ``h1`` and ``h2`` are BLAKE2b of the identity with an 8-byte digest, keyed
  with `MAGLEV_OFFSET_KEY` and `MAGLEV_SKIP_KEY`, read as little-endian
  unsigned 64-bit integers (never Python's ``hash()``, which is salted per
  process); ``offset = h1 % M`` and ``skip = h2 % (M - 1) + 1``;
- the table is filled with the backends in the order of their identities'
  bytes, whatever order the caller lists them in, and the indexes in the
  result are then mapped back to the caller's list.

The fill loop, the one sequential part, is C (``native/maglev.c``, built by
``make native``, called through cffi in ABI mode); hashing, weights and
validation are numpy and Python. `maglev_table_py` is the same algorithm in
pure Python, the reference the tests hold the C code to.
"""

from __future__ import annotations

import errno
import functools
import hashlib
import math
import operator
import os
from array import array
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cffi
import numpy as np
import numpy.typing as npt

from pydp.errors import ConfigError, DatapathError

__all__ = [
    "MAGLEV_OFFSET_KEY",
    "MAGLEV_SIZES",
    "MAGLEV_SKIP_KEY",
    "MAX_WEIGHT",
    "NATIVE_LIBRARY",
    "backend_hashes",
    "check_size",
    "default_size",
    "maglev_slots",
    "maglev_table",
    "maglev_table_py",
]

# Table sizes: primes near powers of two. The default for a service is the smallest
# that is at least SLOTS_PER_BACKEND times its backends, so that 10,000 small
# services stay small; --maglev-size accepts any prime from the first to the last.
MAGLEV_SIZES = (251, 509, 1021, 2039, 4093, 8191, 16381, 32749, 65521, 131071)
SLOTS_PER_BACKEND = 100  # Maglev's rule for at most 1% imbalance between backends
MAX_WEIGHT = 0xFFFF_FFFF  # the C loop's uint32_t

# Part of the cluster-wide contract (see the module docstring): BLAKE2b keys of h1, h2.
MAGLEV_OFFSET_KEY = b"pydp.maglev.offset.v1"
MAGLEV_SKIP_KEY = b"pydp.maglev.skip.v1"

NATIVE_LIBRARY = "libpydp_native.so"  # in build/native, built by `make native`
_DEFAULT_NATIVE_DIR = Path(__file__).resolve().parent.parent.parent / "build" / "native"

Identity = str | bytes
Table = npt.NDArray[np.int32]
U32Array = npt.NDArray[np.uint32]

_ffi = cffi.FFI()
_ffi.cdef(
    """
int pydp_maglev_fill(uint32_t m, uint32_t n, const uint32_t *offset, const uint32_t *skip,
                     const uint32_t *weight, int32_t *table);
int pydp_maglev_slots(uint32_t m, uint32_t n, const uint32_t *offset, const uint32_t *skip,
                      const uint32_t *weight, const uint32_t *addr, const uint16_t *port,
                      int32_t *scratch, uint8_t *out);
"""
)


def default_size(n_backends: int) -> int:
    """The smallest of `MAGLEV_SIZES` with at least 100 slots per backend (the largest
    when none has)."""
    want = SLOTS_PER_BACKEND * n_backends
    return next((m for m in MAGLEV_SIZES if m >= want), MAGLEV_SIZES[-1])


@functools.cache
def _is_prime(m: int) -> bool:
    if m < 2:
        return False
    return all(m % d for d in range(2, math.isqrt(m) + 1))


def check_size(m: int) -> int:
    """m itself if it is a prime from 251 to 131071; ConfigError otherwise.

    Prime, so that every skip in [1, m - 1] walks all m slots.
    """
    accepted = f"accepted: a prime from {MAGLEV_SIZES[0]} to {MAGLEV_SIZES[-1]}"
    if not MAGLEV_SIZES[0] <= m <= MAGLEV_SIZES[-1]:
        raise ConfigError(f"maglev size {m} is out of range: {accepted}")
    if not _is_prime(m):
        raise ConfigError(f"maglev size {m} is not prime: {accepted}")
    return m


def _identity_bytes(identity: Identity) -> bytes:
    if isinstance(identity, str):
        return identity.encode()
    if isinstance(identity, bytes):
        return identity
    raise ConfigError(f"maglev table: backend identity {identity!r} is not str or bytes")


def _show(key: bytes) -> str:
    return key.decode(errors="backslashreplace")


# BLAKE2b states already keyed: a copy of one hashes like blake2b(key=...), and faster.
_OFFSET_STATE = hashlib.blake2b(digest_size=8, key=MAGLEV_OFFSET_KEY)
_SKIP_STATE = hashlib.blake2b(digest_size=8, key=MAGLEV_SKIP_KEY)


def _hash64(keys: Sequence[bytes], keyed: Any) -> list[int]:
    """BLAKE2b-64 of each key from the keyed state, as little-endian integers."""
    out = []
    for key in keys:
        h = keyed.copy()
        h.update(key)
        out.append(int.from_bytes(h.digest(), "little"))
    return out


def _offsets_skips_list(keys: Sequence[bytes], m: int) -> tuple[list[int], list[int]]:
    """Each key's (offset, skip) as Python integers: numpy costs more than it saves for
    the few backends of a table (a table is computed per service: 10,000 at a time)."""
    offset = [h % m for h in _hash64(keys, _OFFSET_STATE)]
    skip = [h % (m - 1) + 1 for h in _hash64(keys, _SKIP_STATE)]
    return offset, skip


def _offsets_skips(keys: Sequence[bytes], m: int) -> tuple[U32Array, U32Array]:
    offset, skip = _offsets_skips_list(keys, m)
    return np.array(offset, dtype=np.uint32), np.array(skip, dtype=np.uint32)


def backend_hashes(identities: Sequence[Identity], m: int) -> tuple[U32Array, U32Array]:
    """Each backend's (offset, skip) for a table of m slots, in the order given.

    Derived from two keyed hashes of the identity only, so every host gets the
    same; see the module docstring for the exact contract.
    """
    check_size(m)
    return _offsets_skips([_identity_bytes(i) for i in identities], m)


def _weights(keys: Sequence[bytes], weights: Sequence[int] | None) -> list[int]:
    if weights is None:
        return [1] * len(keys)
    if len(weights) == len(keys) and all(type(w) is int and 0 <= w <= MAX_WEIGHT for w in weights):
        return list(weights)  # the common case, checked at once
    if len(weights) != len(keys):
        raise ConfigError(f"maglev table: {len(weights)} weights for {len(keys)} backends")
    out = []
    for key, w in zip(keys, weights, strict=True):
        try:
            value = operator.index(w)
        except TypeError:
            value = -1
        if not 0 <= value <= MAX_WEIGHT:
            raise ConfigError(
                f"maglev table: backend {_show(key)} has weight {w}: "
                f"accepted: an integer from 0 to {MAX_WEIGHT}"
            )
        out.append(value)
    return out


@dataclass(frozen=True, slots=True)
class _Inputs:
    """What the fill loop takes: backends in identity order, and the way back."""

    order: list[int]  # order[j]: the caller's index of the j-th backend by identity
    offset: list[int]
    skip: list[int]
    weight: list[int]


def _inputs(identities: Sequence[Identity], m: int, weights: Sequence[int] | None) -> _Inputs:
    """Validate, sort by identity and hash: everything but the fill loop."""
    check_size(m)
    keys = [i.encode() if type(i) is str else _identity_bytes(i) for i in identities]
    if len(set(keys)) != len(keys):
        seen: set[bytes] = set()
        for key in keys:
            if key in seen:
                raise ConfigError(f"maglev table: backend {_show(key)} is listed twice")
            seen.add(key)
    ws = _weights(keys, weights)
    weighted = sum(1 for w in ws if w)
    if weighted > m:
        raise ConfigError(
            f"maglev size {m} is too small for {weighted} backends: "
            "accepted: a size at least the number of backends"
        )
    order = sorted(range(len(keys)), key=keys.__getitem__)
    offset, skip = _offsets_skips_list([keys[j] for j in order], m)
    return _Inputs(order, offset, skip, [ws[j] for j in order])


def _unsort(table: Table, order: list[int]) -> Table:
    """Indexes in identity order to the caller's indexes. The fill leaves either no
    slot empty or every slot (-1), so there is nothing to map in the second case."""
    if not order or table[0] < 0 or order == list(range(len(order))):
        return table
    return np.array(order, dtype=np.int32)[table]


@functools.cache
def _open_native(env_dir: str) -> Any:
    """dlopen the library once per directory: ``$PYDP_NATIVE_DIR`` when set (as
    ``$PYDP_BPF_DIR`` for the BPF objects), else build/native in the source tree."""
    path = (Path(env_dir) if env_dir else _DEFAULT_NATIVE_DIR) / NATIVE_LIBRARY
    if not path.is_file():
        raise DatapathError(
            f"load {path}: {os.strerror(errno.ENOENT)}: run `make native`", errno.ENOENT
        )
    try:
        return _ffi.dlopen(str(path))
    except OSError as e:
        raise DatapathError(f"load {path}: {e}: run `make native`") from e


def maglev_table(
    identities: Sequence[Identity], m: int, weights: Sequence[int] | None = None
) -> Table:
    """The Maglev table of m slots for these backends: an int32 array of indexes into
    ``identities`` (all -1 when there is none, or every weight is 0).

    Identities must be unique; weights (default 1 each) are integers >= 0.
    ConfigError for bad input; DatapathError when the library is not built.
    """
    lib = _open_native(os.environ.get("PYDP_NATIVE_DIR", ""))
    inp = _inputs(identities, m, weights)
    table = np.empty(m, dtype=np.int32)
    n = len(inp.order)
    rc = lib.pydp_maglev_fill(
        m,
        n,
        _ffi.from_buffer("uint32_t[]", array("I", inp.offset)),
        _ffi.from_buffer("uint32_t[]", array("I", inp.skip)),
        _ffi.from_buffer("uint32_t[]", array("I", inp.weight)),
        _ffi.from_buffer("int32_t[]", table),
    )
    if rc != 0:
        raise DatapathError.from_errno(f"compute maglev table (size {m}, {n} backends)", -rc)
    return _unsort(table, inp.order)


def maglev_slots(
    identities: Sequence[Identity],
    m: int,
    weights: Sequence[int] | None,
    addrs: Sequence[int],
    ports: Sequence[int],
) -> bytes:
    """`maglev_table` written as the datapath's slots in one C call: slot s holds backend
    ``maglev_table(identities, m, weights)[s]``'s ``struct lb_backend`` (its IPv4 address
    ``addrs[i]`` and port ``ports[i]``, in network order; 8 bytes a slot), all zero where no
    backend is. The same validation and errors as `maglev_table`; what the service
    datapath builds its tables with."""
    lib = _open_native(os.environ.get("PYDP_NATIVE_DIR", ""))
    inp = _inputs(identities, m, weights)
    n = len(inp.order)
    if len(addrs) != n or len(ports) != n:
        raise ConfigError(f"maglev table: {len(addrs)} addresses, {len(ports)} ports for {n}")
    out = bytearray(8 * m)
    order = inp.order
    rc = lib.pydp_maglev_slots(
        m,
        n,
        _ffi.from_buffer("uint32_t[]", array("I", inp.offset)),
        _ffi.from_buffer("uint32_t[]", array("I", inp.skip)),
        _ffi.from_buffer("uint32_t[]", array("I", inp.weight)),
        _ffi.from_buffer("uint32_t[]", array("I", [addrs[j] for j in order])),
        _ffi.from_buffer("uint16_t[]", array("H", [ports[j] for j in order])),
        _ffi.from_buffer("int32_t[]", bytearray(4 * m)),
        _ffi.from_buffer("uint8_t[]", out),
    )
    if rc != 0:
        raise DatapathError.from_errno(f"compute maglev table (size {m}, {n} backends)", -rc)
    return bytes(out)


def _fill_py(m: int, offset: list[int], skip: list[int], weight: list[int]) -> list[int]:
    """pydp_maglev_fill in Python, step for step (see native/maglev.c for the why)."""
    table = [-1] * m
    max_weight = max(weight, default=0)
    if max_weight == 0:
        return table
    following = list(offset)  # following[i]: the next slot backend i tries
    filled, r = 0, 0
    while True:
        r += 1
        for i, w in enumerate(weight):
            if (r * w) // max_weight == ((r - 1) * w) // max_weight:
                continue  # not enough credit for a slot this round
            c = following[i]
            while table[c] >= 0:
                c = (c + skip[i]) % m
            table[c] = i
            following[i] = (c + skip[i]) % m
            filled += 1
            if filled == m:
                return table


def maglev_table_py(
    identities: Sequence[Identity], m: int, weights: Sequence[int] | None = None
) -> Table:
    """`maglev_table` in pure Python: the reference the C loop is tested against."""
    inp = _inputs(identities, m, weights)
    filled = _fill_py(m, inp.offset, inp.skip, inp.weight)
    return _unsort(np.array(filled, dtype=np.int32), inp.order)
