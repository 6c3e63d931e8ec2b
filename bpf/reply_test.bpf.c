// SPDX-License-Identifier: Apache-2.0
/* TEST ONLY, never attached: lib/reply.h's reply builders behind two TC programs, for
 * BPF_PROG_TEST_RUN in tests/bpf/test_reply.py. */
#include "lib/common.h"
#include "lib/parse.h"
#include "lib/reply.h"

/* The source address of the ICMP errors test_unreach builds (the VIP's), network order. */
const volatile __be32 CFG_REPLY_SRC = 0;

/* The code of those errors (3: port unreachable). */
const volatile __u8 CFG_REPLY_CODE = 3;

/* The DROP_* of the last packet refused, 0 after a reply: the test reads it from .bss. */
__u32 reply_reason;

/* The verdict a packet leaves with: TC_ACT_OK with the reply in it, or TC_ACT_SHOT. */
static __always_inline int reply_test_exit(int ret)
{
	reply_reason = ret < 0 ? -ret : 0;
	return ret < 0 ? TC_ACT_SHOT : TC_ACT_OK;
}

/* A TCP segment in, the reset that answers it out (reply4_tcp_rst). */
SEC("tc")
int test_tcp_rst(struct __sk_buff *skb)
{
	struct pkt p = {};
	int ret;

	ret = parse_pkt((void *)(long)skb->data, (void *)(long)skb->data_end, &p);
	if (!ret)
		ret = reply4_tcp_rst(skb, &p);
	return reply_test_exit(ret);
}

/* An IPv4 datagram in, the ICMP destination unreachable that answers it out
 * (reply4_icmp_unreach). Named within the kernel's 15 characters. */
SEC("tc")
int test_unreach(struct __sk_buff *skb)
{
	struct pkt p = {};
	int ret;

	ret = parse_pkt((void *)(long)skb->data, (void *)(long)skb->data_end, &p);
	if (!ret)
		ret = reply4_icmp_unreach(skb, &p, CFG_REPLY_CODE, CFG_REPLY_SRC);
	return reply_test_exit(ret);
}

char LICENSE[] SEC("license") = "GPL";
