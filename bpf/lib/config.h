/* SPDX-License-Identifier: Apache-2.0 */
/* Compile-time features and loop bounds; load-time constants are declared where used. */
#ifndef PYDP_LIB_CONFIG_H
#define PYDP_LIB_CONFIG_H

/* Parse TCP/UDP/ICMP headers (later features read ports and identifiers). */
#ifndef ENABLE_L4_PARSE
#define ENABLE_L4_PARSE 1
#endif

/* Masquerade: ports tried for a new connection (the original one, then from a start
 * derived from the tuple's hash) before DROP_NAT_NO_PORT. */
#define NAT_PORT_TRIES 32

/* Conntrack timeouts in seconds, checked on lookup (an expired entry is a miss).
 * Linux's defaults (nf_conntrack_tcp_timeout_*) are kept where an LRU map can afford
 * them; its 5-day ESTABLISHED is not: dead connections would fill the map. */
#define CT_TIMEOUT_TCP_SYN 60       /* SYN seen, no answer yet (Linux: SYN_RECV 60 s) */
#define CT_TIMEOUT_TCP_EST 7440     /* > tcp_keepalive_time (7200 s): keepalive-only flows live */
#define CT_TIMEOUT_TCP_CLOSE 10     /* after FIN or RST (Linux: CLOSE 10 s) */
#define CT_TIMEOUT_UDP 30           /* UDP seen one way (Linux: udp_timeout 30 s) */
#define CT_TIMEOUT_UDP_STREAM 120   /* UDP seen both ways (Linux: udp_timeout_stream 120 s) */
#define CT_TIMEOUT_ICMP 30          /* ICMP echo (Linux: icmp_timeout 30 s) */
#define CT_REFRESH_SLACK 1          /* seconds: an entry's deadline is rewritten only when it
				     * moves by more, so most packets do not dirty the entry */

#endif
