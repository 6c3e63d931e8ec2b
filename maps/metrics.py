"""Verdict and drop-reason counters (``pydp_metrics``), per-CPU and summed on read."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from pydp.maps._cdef import ffi
from pydp.maps.base import TypedMap

__all__ = ["DROP_BASE", "METRICS_MAP", "REASONS", "Counter", "MetricsMap", "reason_name"]

METRICS_MAP = "pydp_metrics"

# enum pydp_reason from maps/metrics.h, name -> value.
REASONS: Mapping[str, int] = MappingProxyType(
    {name: value for value, name in sorted(ffi.typeof("enum pydp_reason").elements.items())}
)
DROP_BASE = REASONS["DROP_BASE"]
_NAMES = {v: k for k, v in REASONS.items()}


def reason_name(value: int) -> str:
    """``DROP_INVALID_IP`` for 130; ``REASON_<n>`` for a number the contract does not name."""
    return _NAMES.get(value, f"REASON_{value}")


@dataclass(frozen=True, slots=True)
class Counter:
    """Packets and bytes counted under one reason, summed over CPUs."""

    packets: int
    bytes: int


class MetricsMap(TypedMap[int, Counter]):
    """``pydp_metrics``: reason (enum pydp_reason) -> Counter."""

    key_type = "uint32_t"
    value_type = "struct metrics_value"

    def encode_key(self, key: int) -> tuple[Any, ...]:
        return (key,)

    def decode_key(self, fields: tuple[Any, ...]) -> int:
        return int(fields[0])

    def encode_value(self, value: Counter) -> tuple[Any, ...]:
        return (value.packets, value.bytes)

    def decode_value(self, fields: tuple[Any, ...]) -> Counter:
        return Counter(fields[0], fields[1])

    def counter(self, reason: str | int) -> Counter:
        """The summed counter of one reason, by name (``DROP_INVALID_IP``) or number."""
        key = REASONS[reason] if isinstance(reason, str) else reason
        return self.get(key, Counter(0, 0))

    def nonzero(self) -> dict[str, Counter]:
        """Reasons with at least one packet, by name."""
        return {reason_name(k): c for k, c in sorted(self.snapshot().items()) if c.packets}
