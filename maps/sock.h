/* SPDX-License-Identifier: Apache-2.0 */
/* Socket-level translation of published ports for the host's own processes. */
#ifndef PYDP_MAPS_SOCK_H
#define PYDP_MAPS_SOCK_H

#define PYDP_SOCK_REV_MAX 65536 /* max_entries of pydp_sock_rev (LRU) */

/* Key of pydp_sock_rev: a host UDP socket and the endpoint it was sent to instead. */
struct sock_rev_key {
	__u64 cookie; /* the socket's cookie (bpf_get_socket_cookie) */
	__be32 addr;  /* the endpoint address the datagram went to, network order */
	__be16 port;  /* the endpoint port, network order */
	__u16 pad;
};

/* Value of pydp_sock_rev: the published address and port the socket asked for. */
struct sock_rev_value {
	__be32 addr; /* published address (what the application sent to), network order */
	__be16 port; /* published port, network order */
	__u16 pad;
};

#endif
