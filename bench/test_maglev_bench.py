"""Suite ``maglev``: what a service's Maglev table costs to compute, C fill against Python.

`maglev_table` (hashing, weights and validation in Python and numpy, the fill
loop in C through cffi) is timed against `maglev_table_py`, the pure-Python
reference of the same algorithm, on the same backends, the two alternated
round by round and the median of each taken. Wall time, in-process, no kernel:
the figures are what the control plane pays before it writes a table to a map.

Cases: one table of M = 16381 or 65537 slots for 10 or 1,000 backends; and the
issue's scale target, 10,000 services of 10 backends with M = 1021 each (the
default size for 10 backends), whose reference baseline is 100 tables timed
and multiplied by 100 (the metric name says so): 10,000 in pure Python would
take half a minute a round. Nothing here asserts a threshold: the asserts
check that both implementations give the same tables.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable

import numpy as np

from bench._results import Results, median
from pydp.control.maglev import maglev_table, maglev_table_py

ROUNDS = 7  # rounds of (C, Python) per single-table case
SINGLE_CASES = ((16381, 10), (16381, 1000), (65537, 10), (65537, 1000))
MANY_TABLES, MANY_SIZE, MANY_BACKENDS = 10_000, 1021, 10
MANY_PY_TABLES = 100  # the reference's sample of the 10,000, scaled up
MANY_ROUNDS = 3


def _backends(n: int, service: int = 0) -> list[str]:
    """n backend identities ADDRESS:PORT for a service (distinct across services)."""
    first = service * n
    port = 8000 + service % 1000
    return [f"10.{a >> 16 & 255}.{a >> 8 & 255}.{a & 255}:{port}" for a in range(first, first + n)]


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - start) / 1e9


def test_maglev_single_table(results: Results) -> None:
    """ms to compute one table at M = 16381 and 65537 for 10 and 1,000 backends."""
    samples: dict[str, list[float]] = {}
    for m, n in SINGLE_CASES:
        ids = _backends(n)
        assert np.array_equal(maglev_table(ids, m), maglev_table_py(ids, m))
    for rnd in range(ROUNDS + 1):  # round 0 warms up and is dropped
        if rnd == 1:
            samples.clear()
        for m, n in SINGLE_CASES:
            ids = _backends(n)
            for name, fn in (("maglev_table", maglev_table), ("maglev_table_py", maglev_table_py)):
                ms = _seconds(functools.partial(fn, ids, m)) * 1e3
                samples.setdefault(f"{name}_m{m}_n{n}_ms", []).append(ms)
    for m, n in SINGLE_CASES:
        metric, base = f"maglev_table_m{m}_n{n}_ms", f"maglev_table_py_m{m}_n{n}_ms"
        results.add(metric, median(samples[metric]), "ms", base, median(samples[base]))


def test_maglev_many_tables(results: Results) -> None:
    """s to compute 10,000 tables of M = 1021 for 10 backends each, beside the reference's
    time for 100 of them scaled to 10,000."""
    services = [_backends(MANY_BACKENDS, s) for s in range(MANY_TABLES)]
    sample = services[:: MANY_TABLES // MANY_PY_TABLES]
    for ids in sample[:10]:
        assert np.array_equal(maglev_table(ids, MANY_SIZE), maglev_table_py(ids, MANY_SIZE))
    c_s: list[float] = []
    py_s: list[float] = []
    for rnd in range(MANY_ROUNDS + 1):  # round 0 warms up and is dropped
        c = _seconds(lambda: [maglev_table(ids, MANY_SIZE) for ids in services])
        py = _seconds(lambda: [maglev_table_py(ids, MANY_SIZE) for ids in sample])
        if rnd:
            c_s.append(c)
            py_s.append(py * MANY_TABLES / MANY_PY_TABLES)
    tag = f"m{MANY_SIZE}_n{MANY_BACKENDS}"
    metric = f"maglev_{MANY_TABLES}_tables_{tag}_s"
    base = f"maglev_py_{MANY_PY_TABLES}_tables_x{MANY_TABLES // MANY_PY_TABLES}_{tag}_s"
    results.add(metric, median(c_s), "s", base, median(py_s))
    per_table_us = median(c_s) / MANY_TABLES * 1e6
    results.add(f"maglev_per_table_{tag}_us", per_table_us, "us")
