/* SPDX-License-Identifier: Apache-2.0 */
/* Forwarding steps on an IPv4 header that pydp routes itself: the TTL decrement. */
#ifndef PYDP_LIB_IP4_H
#define PYDP_LIB_IP4_H

#include "lib/common.h"
#include "lib/csum.h"

/* A hop of routing (every NAT path that redirects: SNAT out of the uplink, DNAT into a
 * container, reverse paths, hairpin): decrement the TTL, fixing the header checksum
 * incrementally (TTL is the high byte of the 16-bit word it shares with the protocol).
 * TTL <= 1 is -DROP_TTL_EXCEEDED: counted and dropped. Packets leaving containers never get
 * here with it (nat4_from_container hands them to the stack, which sends time exceeded);
 * those routed in from the uplink do, and no ICMP error is generated for them. */
static __always_inline int ip4_ttl_dec(struct iphdr *ip4)
{
	__be16 *word = (__be16 *)&ip4->ttl;
	__be16 old = *word;

	if (ip4->ttl <= 1)
		return -DROP_TTL_EXCEEDED;
	ip4->ttl--;
	csum_replace2(&ip4->check, old, *word);
	return 0;
}

#endif
