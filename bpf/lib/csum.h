/* SPDX-License-Identifier: Apache-2.0 */
/* Incremental Internet checksum updates (RFC 1624, eqn. 3) on packet memory, no helpers,
 * so the same code serves TC and XDP. Values are compared and summed in network order:
 * the one's-complement sum does not care about byte order as long as it is consistent. */
#ifndef PYDP_LIB_CSUM_H
#define PYDP_LIB_CSUM_H

#include "lib/common.h"

/* Fold a 32-bit one's-complement accumulator to 16 bits. */
static __always_inline __u16 csum_fold32(__u32 s)
{
	s = (s & 0xffff) + (s >> 16);
	s = (s & 0xffff) + (s >> 16);
	return (__u16)s;
}

/* *sum covered the 16-bit value from; it now covers to: HC' = ~(~HC + ~m + m'). */
static __always_inline void csum_replace2(__sum16 *sum, __be16 from, __be16 to)
{
	__u32 s = (__u16)~*sum;

	s += (__u16)~from + (__u32)to;
	*sum = (__sum16)~csum_fold32(s);
}

/* *sum covered the 32-bit value from; it now covers to. */
static __always_inline void csum_replace4(__sum16 *sum, __be32 from, __be32 to)
{
	__u32 s = (__u16)~*sum;

	s += (~from >> 16) + (~from & 0xffff) + (to >> 16) + (to & 0xffff);
	*sum = (__sum16)~csum_fold32(s);
}

#endif
