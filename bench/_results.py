"""The result format every pydp benchmark suite writes, and the table people read.

A suite writes ``bench/results/<suite>.json``: a JSON list of rows

    {"metric", "value", "unit", "baseline", "baseline_value", "ratio"}

where ``value`` and ``baseline_value`` were measured side by side in the same
run and ``ratio`` is ``value / baseline_value``. A metric may appear once per
baseline (the pair ``(metric, baseline)`` is unique); an absolute figure with
nothing fair to compare against has ``baseline``, ``baseline_value`` and
``ratio`` set to null.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = ["Results", "Row", "format_table", "load_rows", "median", "suite_name"]

HEADERS = ("METRIC", "VALUE", "UNIT", "BASELINE", "BASELINE_VALUE", "RATIO")


@dataclass(frozen=True, slots=True)
class Row:
    """One figure, with the baseline it was measured beside (or none)."""

    metric: str
    value: float
    unit: str
    baseline: str | None = None
    baseline_value: float | None = None
    ratio: float | None = None


def median(samples: Iterable[float]) -> float:
    """The median of samples (rounds alternate cases, so each case gets one sample a round)."""
    data = list(samples)
    if not data:
        raise ValueError("median of no samples")
    return float(statistics.median(data))


def suite_name(module_file: str | Path) -> str:
    """``foundation`` for ``bench/test_foundation_bench.py``."""
    return Path(module_file).stem.removeprefix("test_").removesuffix("_bench")


class Results:
    """The rows of one suite, collected while it runs and written when it ends."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.rows: list[Row] = []

    def add(
        self,
        metric: str,
        value: float,
        unit: str,
        baseline: str | None = None,
        baseline_value: float | None = None,
    ) -> Row:
        """Record metric; with a baseline, its value must come from the same run."""
        if (baseline is None) != (baseline_value is None):
            raise ValueError(f"{metric}: give both baseline and baseline_value, or neither")
        if any(r.metric == metric and r.baseline == baseline for r in self.rows):
            raise ValueError(f"{metric}: recorded twice against baseline {baseline}")
        ratio = None
        if baseline_value is not None:
            if baseline_value <= 0:
                raise ValueError(f"{metric}: baseline {baseline} is {baseline_value}")
            ratio = round(value / baseline_value, 4)
            baseline_value = _round(baseline_value)
        row = Row(metric, _round(value), unit, baseline, baseline_value, ratio)
        self.rows.append(row)
        return row

    def write(self, directory: Path) -> Path:
        """Write ``<directory>/<suite>.json`` and return its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{self.suite}.json"
        text = json.dumps([asdict(r) for r in self.rows], indent=2)
        path.write_text(text + "\n")
        return path


def _round(value: float) -> float:
    return float(f"{value:.6g}")


def load_rows(path: Path) -> list[Row]:
    """The rows of one results file."""
    data = json.loads(path.read_text())
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of rows")
    return [Row(**item) for item in data]


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}"


def format_table(rows: Sequence[Row]) -> str:
    """Rows as an aligned table with UPPERCASE headers; numbers right-aligned."""
    cells = [HEADERS] + [
        (
            r.metric,
            _num(r.value),
            r.unit,
            r.baseline or "-",
            _num(r.baseline_value),
            "-" if r.ratio is None else f"{r.ratio:.3f}",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(HEADERS))]
    right = {1, 4, 5}
    lines = []
    for row in cells:
        parts = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)
