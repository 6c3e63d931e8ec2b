"""pydp.maps: the kernel/user contract (maps/*.h) and typed views of the maps."""

from __future__ import annotations

from types import MappingProxyType

from pydp.maps._cdef import HEADERS, constants, ffi, struct_names
from pydp.maps._codec import Layout
from pydp.maps.base import BPF_ANY, BPF_EXIST, BPF_NOEXIST, RawMap, TypedMap
from pydp.maps.config import (
    CONFIG_MAP,
    NETWORKS_MAP,
    SUBNETS_MAP,
    VNIS_MAP,
    ConfigMap,
    HostConfig,
    NetworkInfo,
    NetworkMap,
    SubnetInfo,
    SubnetMap,
    VniMap,
)
from pydp.maps.endpoint import (
    ENDPOINT_MAP,
    IFACE_MAP,
    Endpoint,
    EndpointMap,
    Iface,
    IfaceMap,
)
from pydp.maps.metrics import DROP_BASE, METRICS_MAP, REASONS, Counter, MetricsMap, reason_name
from pydp.maps.nat import (
    CT_STATES,
    NAT_MAP,
    PORTS_MAP,
    NatEntry,
    NatKey,
    NatMap,
    PortKey,
    PortMap,
    PortTarget,
    monotonic_ns,
)

CONSTANTS = MappingProxyType(constants())  # the contract's integer #defines, by name

__all__ = [
    "BPF_ANY",
    "BPF_EXIST",
    "BPF_NOEXIST",
    "CONFIG_MAP",
    "CONSTANTS",
    "CT_STATES",
    "DROP_BASE",
    "ENDPOINT_MAP",
    "HEADERS",
    "IFACE_MAP",
    "METRICS_MAP",
    "NAT_MAP",
    "NETWORKS_MAP",
    "PORTS_MAP",
    "REASONS",
    "SUBNETS_MAP",
    "VNIS_MAP",
    "ConfigMap",
    "Counter",
    "Endpoint",
    "EndpointMap",
    "HostConfig",
    "Iface",
    "IfaceMap",
    "Layout",
    "MetricsMap",
    "NatEntry",
    "NatKey",
    "NatMap",
    "NetworkInfo",
    "NetworkMap",
    "PortKey",
    "PortMap",
    "PortTarget",
    "RawMap",
    "SubnetInfo",
    "SubnetMap",
    "TypedMap",
    "VniMap",
    "ffi",
    "monotonic_ns",
    "reason_name",
    "struct_names",
]
