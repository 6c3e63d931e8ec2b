"""pydp.maps: the kernel/user contract (maps/*.h) and typed views of the maps."""

from __future__ import annotations

from types import MappingProxyType

from pydp.maps._cdef import HEADERS, constants, ffi, struct_names
from pydp.maps._codec import Layout
from pydp.maps.base import BPF_ANY, BPF_EXIST, BPF_NOEXIST, RawMap, TypedMap
from pydp.maps.endpoint import (
    ENDPOINT_MAP,
    IFACE_MAP,
    Endpoint,
    EndpointMap,
    Iface,
    IfaceMap,
)
from pydp.maps.metrics import DROP_BASE, METRICS_MAP, REASONS, Counter, MetricsMap, reason_name

CONSTANTS = MappingProxyType(constants())  # the contract's integer #defines, by name

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "CONSTANTS",
    "DROP_BASE",
    "ENDPOINT_MAP",
    "HEADERS",
    "IFACE_MAP",
    "METRICS_MAP",
    "REASONS",
    "Counter",
    "Endpoint",
    "EndpointMap",
    "Iface",
    "IfaceMap",
    "Layout",
    "MetricsMap",
    "RawMap",
    "TypedMap",
    "ffi",
    "reason_name",
    "struct_names",
]
