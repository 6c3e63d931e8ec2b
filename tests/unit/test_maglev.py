"""Maglev tables: the C fill against the Python reference, balance, disruption, weights,
sizes, the same table in every process, and the errors."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pydp.control import maglev
from pydp.control.maglev import (
    MAGLEV_SIZES,
    check_size,
    default_size,
    maglev_table,
    maglev_table_py,
)
from pydp.errors import ConfigError, DatapathError

SMALL_PRIMES = [p for p in range(251, 4100) if all(p % d for d in range(2, int(p**0.5) + 1))]
ACCEPTED = "accepted: a prime from 251 to 131071"


def _ids(n: int, prefix: str = "10.0") -> list[str]:
    """n backend identities shaped like ADDRESS:PORT."""
    return [f"{prefix}.{i // 256}.{i % 256}:8080" for i in range(n)]


def _random_case(rng: random.Random) -> tuple[int, list[str], list[int] | None]:
    """A table size, identities in a random order and weights (None, zeros, skewed)."""
    m = rng.choice(SMALL_PRIMES + list(MAGLEV_SIZES[:5]))
    n = rng.choice([1, 1, 2, 3, 7, 10, 33, 100, min(m, 250)])
    ids = _ids(n, f"10.{rng.randrange(256)}")
    rng.shuffle(ids)
    kind = rng.choice(["none", "ones", "small", "zeros", "all_zero", "skewed"])
    weights: list[int] | None = {
        "none": None,
        "ones": [1] * n,
        "small": [rng.randint(1, 5) for _ in range(n)],
        "zeros": [rng.choice([0, 0, 1, 3]) for _ in range(n)],
        "all_zero": [0] * n,
        "skewed": [rng.choice([1, 1000, 0xFFFF_FFFF]) for _ in range(n)],
    }[kind]
    return m, ids, weights


def test_maglev_table_c_equals_reference() -> None:
    """The C fill gives exactly the Python reference's table on 60 random cases, and every
    slot holds a backend with a weight (or every slot -1 when no backend has one)."""
    rng = random.Random(5)
    cases = [_random_case(rng) for _ in range(56)]
    cases += [(251, ["only"], None), (509, ["a", "b"], [0, 0]), (1021, [], None)]
    cases += [(MAGLEV_SIZES[-1], _ids(1000), None)]
    for m, ids, weights in cases:
        table = maglev_table(ids, m, weights)
        assert table.dtype == np.int32 and table.shape == (m,)
        assert np.array_equal(table, maglev_table_py(ids, m, weights)), (m, len(ids), weights)
        ws = weights if weights is not None else [1] * len(ids)
        if not any(ws):
            assert (table == -1).all()
        else:
            assert table.min() >= 0 and table.max() < len(ids)
            assert set(np.unique(table).tolist()) <= {i for i, w in enumerate(ws) if w}


def test_maglev_table_same_for_any_listing_order() -> None:
    """The table maps slots to the same identities whatever order the backends come in."""
    ids = _ids(40)
    shuffled = ids[:]
    random.Random(1).shuffle(shuffled)
    first, second = maglev_table(ids, 4093), maglev_table(shuffled, 4093)
    assert [ids[i] for i in first] == [shuffled[i] for i in second]


def test_maglev_table_same_in_every_process() -> None:
    """Another interpreter, with another PYTHONHASHSEED, computes the same table."""
    code = (
        "import hashlib, sys; from pydp.control.maglev import maglev_table; "
        "ids = [f'svc-{i}' for i in range(50)]; "
        "print(hashlib.sha256(maglev_table(ids, 8191, list(range(50))).tobytes()).hexdigest())"
    )
    here = maglev_table([f"svc-{i}" for i in range(50)], 8191, list(range(50)))
    for seed in ("1", "4242"):
        env = os.environ | {"PYTHONHASHSEED": seed}
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == hashlib.sha256(here.tobytes()).hexdigest()


def test_maglev_table_balance() -> None:
    """At M=65521 and 100 backends, no backend holds more than 1.01 times the mean."""
    counts = np.bincount(maglev_table(_ids(100), 65521), minlength=100)
    assert counts.max() / counts.mean() <= 1.01


def test_maglev_table_disruption() -> None:
    """Removing 1 of 100 backends at M=65521 moves at most 2% of the other 99's slots."""
    ids = _ids(100)
    before = np.array(ids)[maglev_table(ids, 65521)]
    for gone in (0, 37, 99):
        rest = ids[:gone] + ids[gone + 1 :]
        after = np.array(rest)[maglev_table(rest, 65521)]
        kept = before != ids[gone]
        assert (before[kept] != after[kept]).mean() <= 0.02, gone
        assert (after[~kept] != ids[gone]).all()


def test_maglev_table_weights_proportional() -> None:
    """A backend of weight 2 gets twice the slots of one of weight 1, within 2%; weight 0
    gets none."""
    weights = [1, 2, 0] * 30
    counts = np.bincount(maglev_table(_ids(90), 65521, weights), minlength=90)
    ones, twos = counts[0::3], counts[1::3]
    assert (counts[2::3] == 0).all()
    assert abs(twos.mean() / ones.mean() - 2) <= 0.04
    assert abs(twos.max() / ones.min() - 2) <= 0.04 and abs(twos.min() / ones.max() - 2) <= 0.04


@pytest.mark.parametrize(
    ("n", "size"),
    [
        (0, 251),
        (1, 251),
        (2, 251),
        (3, 509),
        (10, 1021),
        (11, 2039),
        (100, 16381),
        (655, 65521),
        (656, 131071),
        (1310, 131071),
        (5000, 131071),
    ],
)
def test_default_size(n: int, size: int) -> None:
    """The smallest listed prime with 100 slots per backend, else the largest."""
    assert default_size(n) == size


@pytest.mark.parametrize(
    ("m", "message"),
    [
        (250, f"maglev size 250 is out of range: {ACCEPTED}"),
        (131101, f"maglev size 131101 is out of range: {ACCEPTED}"),
        (1000, f"maglev size 1000 is not prime: {ACCEPTED}"),
        (0, f"maglev size 0 is out of range: {ACCEPTED}"),
        (-5, f"maglev size -5 is out of range: {ACCEPTED}"),
        (65535, f"maglev size 65535 is not prime: {ACCEPTED}"),
    ],
)
def test_check_size_rejects(m: int, message: str) -> None:
    """A size that is not a prime from 251 to 131071 names itself and what is accepted."""
    with pytest.raises(ConfigError) as e:
        check_size(m)
    assert str(e.value) == message
    with pytest.raises(ConfigError) as e:
        maglev_table(["a"], m)
    assert str(e.value) == message


@pytest.mark.parametrize("m", [251, 65537, 131071, *MAGLEV_SIZES])
def test_check_size_accepts(m: int) -> None:
    """Any prime in range is accepted, listed or not."""
    assert check_size(m) == m


@pytest.mark.parametrize(
    ("ids", "weights", "message"),
    [
        (["a", "b", "a"], None, "maglev table: backend a is listed twice"),
        (["a", b"a"], None, "maglev table: backend a is listed twice"),
        (
            ["a", "b"],
            [1, -1],
            "maglev table: backend b has weight -1: accepted: an integer from 0 to 4294967295",
        ),
        (
            ["a"],
            [1 << 32],
            "maglev table: backend a has weight 4294967296: "
            "accepted: an integer from 0 to 4294967295",
        ),
        (
            ["a"],
            [1.5],
            "maglev table: backend a has weight 1.5: accepted: an integer from 0 to 4294967295",
        ),
        (["a", "b"], [1], "maglev table: 1 weights for 2 backends"),
        (
            _ids(252),
            None,
            "maglev size 251 is too small for 252 backends: "
            "accepted: a size at least the number of backends",
        ),
    ],
)
def test_maglev_table_bad_input(ids: list[str], weights: list[int] | None, message: str) -> None:
    """Duplicate identities, bad weights and too many backends are refused by name."""
    for table in (maglev_table, maglev_table_py):
        with pytest.raises(ConfigError) as e:
            table(ids, 251, weights)
        assert str(e.value) == message


def test_maglev_table_missing_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Without the built library, the error says which file and to run `make native`."""
    monkeypatch.setenv("PYDP_NATIVE_DIR", str(tmp_path))
    with pytest.raises(DatapathError) as e:
        maglev_table(["a"], 251)
    assert str(e.value) == (
        f"load {tmp_path}/libpydp_native.so: No such file or directory: run `make native`"
    )
    assert e.value.errno == errno.ENOENT


def test_maglev_table_broken_library(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A file that is not a library is reported with dlopen's words and the same advice."""
    (tmp_path / "libpydp_native.so").write_bytes(b"not an ELF file")
    monkeypatch.setenv("PYDP_NATIVE_DIR", str(tmp_path))
    with pytest.raises(DatapathError) as e:
        maglev_table(["a"], 251)
    assert str(e.value).startswith(f"load {tmp_path}/libpydp_native.so: ")
    assert str(e.value).endswith(": run `make native`")


def test_maglev_fill_refuses_bad_arguments() -> None:
    """The C loop itself refuses a composite size and offsets or skips out of range with
    -EINVAL, rather than walking forever."""
    lib, ffi = maglev._open_native(""), maglev._ffi
    table = ffi.new("int32_t[]", 1000)

    def fill(m: int, offset: int, skip: int) -> int:
        return int(lib.pydp_maglev_fill(m, 1, [offset], [skip], [1], table))

    assert fill(1000, 0, 10) == -errno.EINVAL
    assert fill(251, 251, 1) == -errno.EINVAL
    assert fill(251, 0, 0) == -errno.EINVAL
    assert fill(251, 0, 251) == -errno.EINVAL
    assert fill(251, 250, 250) == 0 and list(table[0:251]) == [0] * 251


def test_all_sorted() -> None:
    """The module's public names are listed once, sorted."""
    assert maglev.__all__ == sorted(set(maglev.__all__))
