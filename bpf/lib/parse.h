/* SPDX-License-Identifier: Apache-2.0 */
/* Bounds-checked parsing of Ethernet, IPv4, TCP, UDP and ICMP. */
#ifndef PYDP_LIB_PARSE_H
#define PYDP_LIB_PARSE_H

#include "lib/common.h"
#include "lib/config.h"

#define IP_OFFSET_MASK 0x1fff /* IPv4 frag_off: the fragment offset bits */
#define IP_MF 0x2000          /* IPv4 frag_off: more fragments */

/* ICMPv4 header (echo layout). <linux/icmp.h> drags in libc's socket headers,
 * which a BPF target cannot build, so the wire format is spelt out here. */
struct icmp4hdr {
	__u8 type;
	__u8 code;
	__sum16 checksum;
	__be16 id;       /* echo identifier, network order */
	__be16 sequence; /* echo sequence, network order */
};

/* What parsing found; pointers are valid until the packet's size changes. */
struct pkt {
	struct ethhdr *eth;
	struct iphdr *ip4; /* NULL unless eth_proto is IPv4 */
	void *l4;          /* NULL for non-first fragments and other protocols */
	__be16 eth_proto;  /* EtherType, network order */
	__u8 l4_proto;     /* IPPROTO_*, when ip4 is set */
	__u8 pad;
};

/* Parse the Ethernet header. */
static __always_inline int parse_eth(void *data, void *data_end, struct pkt *p)
{
	struct ethhdr *eth = data;

	if ((void *)(eth + 1) > data_end)
		return -DROP_INVALID_ETH;
	p->eth = eth;
	p->eth_proto = eth->h_proto;
	return 0;
}

/* The size of the L4 header that must be present for proto, 0 if not parsed. */
static __always_inline __u32 parse_l4_min_len(__u8 proto)
{
	switch (proto) {
	case IPPROTO_TCP:
		return sizeof(struct tcphdr);
	case IPPROTO_UDP:
		return sizeof(struct udphdr);
	case IPPROTO_ICMP:
		return sizeof(struct icmp4hdr);
	default:
		return 0;
	}
}

/* Parse the IPv4 header after p->eth, honouring options (ihl > 5), then the L4 header. */
static __always_inline int parse_ip4(void *data_end, struct pkt *p)
{
	struct iphdr *ip4 = (void *)(p->eth + 1);
	__u32 ihl_len, l4_len;
	void *l4;

	if ((void *)(ip4 + 1) > data_end)
		return -DROP_INVALID_IP;
	ihl_len = ip4->ihl * 4;
	if (ip4->version != 4 || ihl_len < sizeof(*ip4))
		return -DROP_INVALID_IP;
	l4 = (void *)ip4 + ihl_len;
	if (l4 > data_end)
		return -DROP_INVALID_IP;
	p->ip4 = ip4;
	p->l4_proto = ip4->protocol;
	if (!ENABLE_L4_PARSE || (ip4->frag_off & bpf_htons(IP_OFFSET_MASK)))
		return 0; /* a non-first fragment carries no L4 header */
	l4_len = parse_l4_min_len(ip4->protocol);
	if (!l4_len)
		return 0;
	if (l4 + l4_len > data_end)
		return -DROP_INVALID_L4;
	p->l4 = l4;
	return 0;
}

/* Parse Ethernet and, for IPv4, the network and transport headers. */
static __always_inline int parse_pkt(void *data, void *data_end, struct pkt *p)
{
	int ret = parse_eth(data, data_end, p);

	if (ret < 0)
		return ret;
	if (p->eth_proto != bpf_htons(ETH_P_IP))
		return 0;
	return parse_ip4(data_end, p);
}

#endif
