/* SPDX-License-Identifier: Apache-2.0 */
/* The endpoint map: which local container holds an IPv4 address, and how to reach it. */
#ifndef PYDP_MAPS_ENDPOINT_H
#define PYDP_MAPS_ENDPOINT_H

#define PYDP_ENDPOINTS_MAX 65536 /* max_entries of pydp_endpoints */

/* Key of pydp_endpoints. */
struct endpoint_key {
	__be32 addr; /* endpoint IPv4 address, network order */
};

/* Value of pydp_endpoints. */
struct endpoint_info {
	__u32 ifindex;     /* host-side veth ifindex; the container side is its peer */
	__u32 network;     /* index of the endpoint's network: networks are isolated */
	__u8 mac[6];       /* container interface MAC: destination of redirected frames */
	__u16 flags;       /* ENDPOINT_F_* */
};

#define ENDPOINT_F_NONE 0

#endif
