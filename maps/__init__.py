"""pydp.maps: the kernel/user contract (maps/*.h) and typed views of the maps."""

from __future__ import annotations

from pydp.maps._cdef import HEADERS, ffi, struct_names
from pydp.maps._codec import Layout
from pydp.maps.base import BPF_ANY, BPF_EXIST, BPF_NOEXIST, RawMap, TypedMap
from pydp.maps.endpoint import ENDPOINT_MAP, Endpoint, EndpointMap
from pydp.maps.metrics import DROP_BASE, METRICS_MAP, REASONS, Counter, MetricsMap, reason_name

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "DROP_BASE",
    "ENDPOINT_MAP",
    "HEADERS",
    "METRICS_MAP",
    "REASONS",
    "Counter",
    "Endpoint",
    "EndpointMap",
    "Layout",
    "MetricsMap",
    "RawMap",
    "TypedMap",
    "ffi",
    "reason_name",
    "struct_names",
]
