/* SPDX-License-Identifier: Apache-2.0 */
/* Every map pydp's programs share, declared once; pinned by name under the bpffs root. */
#ifndef PYDP_LIB_MAPS_H
#define PYDP_LIB_MAPS_H

#include "lib/common.h"

/* Written by the agent (one entry per local endpoint); read by from_container. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__type(key, struct endpoint_key);
	__type(value, struct endpoint_info);
	__uint(max_entries, PYDP_ENDPOINTS_MAX); /* preallocated: no allocation on update */
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_endpoints SEC(".maps");

/* Written by the agent (the endpoint behind each host ifindex below PYDP_IFACES_MAX);
 * read by from_container to check a packet's source with one array lookup. */
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__type(key, __u32);
	__type(value, struct iface_info);
	__uint(max_entries, PYDP_IFACES_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_ifaces SEC(".maps");

/* Written by every program (one count per packet and reason); read by the CLI. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__type(key, __u32);
	__type(value, struct metrics_value);
	__uint(max_entries, PYDP_METRICS_MAX);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} pydp_metrics SEC(".maps");

#endif
