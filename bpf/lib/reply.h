/* SPDX-License-Identifier: Apache-2.0 */
/* Replies built in TC from the packet they answer: the TCP reset and the ICMP destination
 * unreachable a host sends, for a service with no backends.
 *
 * Both turn the skb itself into the reply (swapped addresses, new headers, resized) for the
 * caller to send back where it came from (bpf_redirect(skb->ifindex, 0) from the ingress of
 * a container's host-side veth: the container receives it). Both refuse what RFC 1122 says
 * must not be answered, so two datapaths can never answer each other's replies forever.
 *
 * Checksums are computed in full, as if the skb were CHECKSUM_NONE, whatever state it
 * arrives in. A container's own stack sends CHECKSUM_PARTIAL (the field holds only the
 * pseudo-header seed; csum_start/csum_offset still point at the original L4 header, which
 * no BPF helper can move or clear): on a veth the receiver trusts a PARTIAL skb and does
 * not verify it, and nothing completes it on the way, so the full checksum we write is what
 * the container's stack reads, and it is right. (A host-side veth with tx checksumming
 * turned off completes the stale offload in skb_checksum_help and spoils the reply: the
 * container counts a checksum error and sees no RST nor ICMP error.) The quote of a PARTIAL
 * datagram holds the seed in its L4 checksum, as Linux's own icmp_send quotes it. A
 * CHECKSUM_COMPLETE skb becomes CHECKSUM_NONE as soon as bpf_skb_change_tail changes its
 * length; were the length to stay, the receiver would find skb->csum stale, count a "hw csum
 * failure" and verify in software, which our checksums pass. */
#ifndef PYDP_LIB_REPLY_H
#define PYDP_LIB_REPLY_H

#include "lib/common.h"
#include "lib/csum.h"
#include "lib/parse.h"


#define REPLY_TTL 64         /* Linux's net.ipv4.ip_default_ttl */
#define REPLY_ICMP_TOS 0xc0  /* IPTOS_PREC_INTERNETCONTROL, as icmp_send for errors */
#define REPLY_ICMP_QUOTE_L4 8 /* bytes of the offending datagram after its header (RFC 792) */
/* The longest ICMP error message built: header, a 60-byte IP header (options), 8 bytes. */
#define REPLY_ICMP_MSG_MAX (sizeof(struct icmp4hdr) + 60 + REPLY_ICMP_QUOTE_L4)

#ifndef TCP_F_FIN
#define TCP_F_FIN 0x01
#define TCP_F_SYN 0x02
#define TCP_F_RST 0x04
#define TCP_F_ACK 0x10
#endif
#ifndef IP_DF
#define IP_DF 0x4000 /* IPv4 frag_off: don't fragment */
#endif
#ifndef ICMP_DEST_UNREACH
#define ICMP_DEST_UNREACH 3
#endif

/* Whether addr (network order) names a single host a reply may go to or come from: not
 * 0.0.0.0/8, loopback, multicast, class E or the limited broadcast (RFC 1122 3.2.2). A
 * subnet's directed broadcast cannot be told here; the caller only answers a VIP. */
static __always_inline int reply4_addr_is_host(__be32 addr)
{
	__u8 first = bpf_ntohl(addr) >> 24;

	return first != 0 && first != 127 && first < 224;
}

/* Whether p may be answered at all (RFC 1122 3.2.2 for ICMP, 4.2.3.10 for TCP): sent to
 * one station's MAC, from a single host, to a unicast address, and no non-first fragment
 * (its transport header is elsewhere). */
static __always_inline int reply4_may_answer(const struct pkt *p)
{
	const struct iphdr *ip4 = p->ip4;

	if (p->eth->h_dest[0] & 1)
		return 0; /* link-layer broadcast or multicast */
	if (!reply4_addr_is_host(ip4->saddr) || !reply4_addr_is_host(ip4->daddr))
		return 0;
	return !(ip4->frag_off & bpf_htons(IP_OFFSET_MASK));
}

/* Whether an ICMP message of this type is an error, which no ICMP error may answer; types
 * Linux does not know count as errors too (icmp_pointers[].error, __icmp_send). Only echo,
 * timestamp, information and address mask requests and replies are not. */
static __always_inline int reply4_icmp_type_is_error(__u8 type)
{
	return !(type == 0 || type == 8 || (type >= 13 && type <= 18));
}

/* Exchange the Ethernet source and destination: the reply goes back to the sender. */
static __always_inline void reply4_eth_swap(struct ethhdr *eth)
{
	__u8 mac[ETH_ALEN];

	__builtin_memcpy(mac, eth->h_dest, ETH_ALEN);
	__builtin_memcpy(eth->h_dest, eth->h_source, ETH_ALEN);
	__builtin_memcpy(eth->h_source, mac, ETH_ALEN);
}

/* The unfolded one's-complement sum of the n 16-bit words at w; n is a compile-time
 * constant and the caller has bounds-checked all of them. */
static __always_inline __u32 __reply_sum_words(const __u16 *w, const int n)
{
	__u32 s = 0;
	int i;

#pragma unroll
	for (i = 0; i < n; i++)
		s += w[i];
	return s;
}

/* Write an option-less IPv4 header at ip4 and its checksum. */
static __always_inline void reply4_ip_hdr(struct iphdr *ip4, __u8 tos, __u16 tot_len,
					  __be16 frag_off, __u8 proto, __be32 saddr, __be32 daddr)
{
	*(__u8 *)ip4 = 0x45; /* version 4, ihl 5 */
	ip4->tos = tos;
	ip4->tot_len = bpf_htons(tot_len);
	ip4->id = 0;
	ip4->frag_off = frag_off;
	ip4->ttl = REPLY_TTL;
	ip4->protocol = proto;
	ip4->check = 0;
	ip4->saddr = saddr;
	ip4->daddr = daddr;
	ip4->check = (__sum16)~csum_fold32(__reply_sum_words((const __u16 *)ip4, 10));
}

/* Add to *sum the len bytes from pos, an odd last byte as the high half of a word padded
 * with zero (RFC 1071). Returns 0, or -1 when they are not all before data_end or len is
 * over REPLY_ICMP_MSG_MAX. Words one at a time with a check each: the length varies, and
 * the verifier cannot prove a variable-size bpf_csum_diff over packet memory in bounds. */
static __always_inline int __reply_sum_bytes(const __u8 *pos, const void *data_end, __u32 len,
					     __u32 *sum)
{
	__u32 s = *sum;
	int i;

	if (len > REPLY_ICMP_MSG_MAX)
		return -1;
	for (i = 0; i < REPLY_ICMP_MSG_MAX / 2; i++) {
		if (len < 2)
			break;
		/* keep clang from turning the check into arithmetic on data_end */
		asm volatile("" : "+r"(pos));
		if (pos + 2 > (const __u8 *)data_end)
			return -1;
		s += *(const __u16 *)pos;
		pos += 2;
		len -= 2;
	}
	if (len) {
		if (pos + 1 > (const __u8 *)data_end)
			return -1;
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
		s += *pos;
#else
		s += (__u32)*pos << 8;
#endif
	}
	*sum = s;
	return 0;
}

/* Parse the reply just written into p for the caller. */
static __always_inline int reply4_reparse(struct __sk_buff *skb, struct pkt *p)
{
	__builtin_memset(p, 0, sizeof(*p));
	if (parse_pkt((void *)(long)skb->data, (void *)(long)skb->data_end, p) || !p->l4)
		return -DROP_INVALID_L4;
	return 0;
}

/* Turn the TCP segment p into the reset its destination answers it with (RFC 793, "Reset
 * Generation"; Linux's tcp_v4_send_reset): Ethernet and IP addresses and ports swapped, a
 * new 20-byte IP header (tos kept, id 0, DF, TTL 64) and a 20-byte TCP header, no options,
 * no payload, window 0. A segment with ACK gets seq = its ack and RST alone; one without
 * gets seq 0, RST|ACK and ack = its seq + payload length + SYN + FIN. A RST is never
 * answered (two resets would answer each other forever), nor a fragment (its length is the
 * reassembled datagram's). IP options are cut with bpf_skb_adjust_room, which leaves the
 * TCP header where it is in the buffer, so a CHECKSUM_PARTIAL skb's csum_start still points
 * at it and bpf_skb_change_tail accepts trimming up to its checksum field. p is parsed
 * again (the helpers move the packet). Returns 0 or a negative DROP_*: after a failed
 * helper the skb is no reply and must be dropped. */
static __always_inline int reply4_tcp_rst(struct __sk_buff *skb, struct pkt *p)
{
	struct iphdr *ip4 = p->ip4;
	const __u8 *th = p->l4;
	__u32 ihl_len, doff_len, tot_len, opt_len, sum;
	__be32 saddr, daddr, seq, ack_seq;
	__be16 sport, dport;
	__u8 tos, flags, rflags;
	struct tcphdr *tcp;
	struct iphdr *rip;
	struct ethhdr *eth;
	void *data_end;

	if (!ip4 || p->l4_proto != IPPROTO_TCP || !th)
		return -DROP_INVALID_L4;
	flags = th[13];
	if (flags & TCP_F_RST)
		return -DROP_NO_REPLY;
	if (!reply4_may_answer(p) || (ip4->frag_off & bpf_htons(IP_MF)))
		return -DROP_NO_REPLY;
	ihl_len = ip4->ihl * 4;
	doff_len = (th[12] >> 4) * 4;
	tot_len = bpf_ntohs(ip4->tot_len);
	/* what tcp_v4_rcv drops sends no reset: a short data offset, a datagram shorter than
	 * its headers or longer than the frame */
	if (doff_len < sizeof(struct tcphdr) || tot_len < ihl_len + doff_len)
		return -DROP_INVALID_L4;
	if (tot_len + ETH_HLEN > skb->len)
		return -DROP_INVALID_IP;

	tos = ip4->tos;
	saddr = ip4->saddr;
	daddr = ip4->daddr;
	sport = ((const struct tcphdr *)th)->source;
	dport = ((const struct tcphdr *)th)->dest;
	if (flags & TCP_F_ACK) {
		seq = ((const struct tcphdr *)th)->ack_seq;
		ack_seq = 0;
		rflags = TCP_F_RST;
	} else {
		/* what the segment occupies of the sequence space: payload, SYN, FIN */
		sum = tot_len - ihl_len - doff_len + !!(flags & TCP_F_SYN) + !!(flags & TCP_F_FIN);
		seq = 0;
		ack_seq = bpf_htonl(bpf_ntohl(((const struct tcphdr *)th)->seq) + sum);
		rflags = TCP_F_RST | TCP_F_ACK;
	}

	opt_len = ihl_len - sizeof(struct iphdr);
	if (opt_len && bpf_skb_adjust_room(skb, -(__s32)opt_len, BPF_ADJ_ROOM_NET, 0))
		return -DROP_NO_REPLY;
	if (bpf_skb_change_tail(skb, ETH_HLEN + sizeof(*rip) + sizeof(*tcp), 0))
		return -DROP_NO_REPLY;

	eth = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	rip = (void *)(eth + 1);
	tcp = (void *)(rip + 1);
	if ((void *)(tcp + 1) > data_end)
		return -DROP_INVALID_L4;
	reply4_eth_swap(eth);
	reply4_ip_hdr(rip, tos, sizeof(*rip) + sizeof(*tcp), bpf_htons(IP_DF), IPPROTO_TCP, daddr,
		      saddr);
	tcp->source = dport;
	tcp->dest = sport;
	tcp->seq = seq;
	tcp->ack_seq = ack_seq;
	((__be16 *)tcp)[6] = bpf_htons(0x5000 | rflags); /* doff 5, then the flags */
	tcp->window = 0;
	tcp->check = 0;
	tcp->urg_ptr = 0;
	/* pseudo-header (RFC 793): both addresses, zero and protocol, TCP length */
	sum = (saddr & 0xffff) + (saddr >> 16) + (daddr & 0xffff) + (daddr >> 16) +
	      bpf_htons(IPPROTO_TCP) + bpf_htons(sizeof(*tcp));
	sum += __reply_sum_words((const __u16 *)tcp, sizeof(*tcp) / 2);
	tcp->check = (__sum16)~csum_fold32(sum);
	return reply4_reparse(skb, p);
}

/* Turn the IPv4 datagram p into the ICMP destination unreachable (type 3, code; 3: port
 * unreachable) a host sends about it, from src (network order) to p's source: Ethernet
 * swapped, a new IP header (tos 0xc0, id 0, no DF, TTL 64), the ICMP header (the 4 unused
 * bytes 0) and the quote: p's IP header with its options and the first 8 bytes after it
 * (RFC 792), fewer when the datagram has fewer. Not answered (RFC 1122 3.2.2): an ICMP
 * error, a non-first fragment, a broadcast or multicast; nor a GSO skb (a super-packet:
 * the header says nothing of the datagrams it becomes), nor a datagram longer than the
 * frame (truncated: the stack would drop it, and the quote may not be there).
 * bpf_skb_adjust_room opens room for the new headers in front of p's IP header, which
 * becomes the quote where it lies; bpf_skb_change_tail cuts what follows the quote. p is
 * parsed again. Returns 0 or a negative DROP_*: after a failed helper the skb is no reply
 * and must be dropped. */
static __always_inline int reply4_icmp_unreach(struct __sk_buff *skb, struct pkt *p, __u8 code,
					       __be32 src)
{
	const __u32 hdrs = sizeof(struct iphdr) + sizeof(struct icmp4hdr);
	struct iphdr *ip4 = p->ip4;
	__u32 ihl_len, tot_len, qlen, sum = 0;
	struct icmp4hdr *ic;
	struct iphdr *rip;
	struct ethhdr *eth;
	void *data_end;
	__be32 dst;

	if (!ip4)
		return -DROP_INVALID_IP;
	if (skb->gso_segs > 1 || skb->gso_size)
		return -DROP_NO_REPLY;
	if (!reply4_may_answer(p))
		return -DROP_NO_REPLY;
	if (ip4->protocol == IPPROTO_ICMP &&
	    (!p->l4 || reply4_icmp_type_is_error(((const struct icmp4hdr *)p->l4)->type)))
		return -DROP_NO_REPLY;
	ihl_len = ip4->ihl * 4;
	tot_len = bpf_ntohs(ip4->tot_len);
	if (tot_len < ihl_len || tot_len + ETH_HLEN > skb->len)
		return -DROP_INVALID_IP;
	qlen = ihl_len + REPLY_ICMP_QUOTE_L4;
	if (qlen > tot_len)
		qlen = tot_len;
	dst = ip4->saddr;

	if (bpf_skb_adjust_room(skb, hdrs, BPF_ADJ_ROOM_MAC, 0))
		return -DROP_NO_REPLY;
	if (bpf_skb_change_tail(skb, ETH_HLEN + hdrs + qlen, 0))
		return -DROP_NO_REPLY;

	eth = (void *)(long)skb->data;
	data_end = (void *)(long)skb->data_end;
	rip = (void *)(eth + 1);
	ic = (void *)(rip + 1);
	if ((void *)(ic + 1) > data_end)
		return -DROP_INVALID_IP;
	reply4_eth_swap(eth);
	reply4_ip_hdr(rip, REPLY_ICMP_TOS, hdrs + qlen, 0, IPPROTO_ICMP, src, dst);
	ic->type = ICMP_DEST_UNREACH;
	ic->code = code;
	ic->checksum = 0;
	ic->id = 0; /* "unused" in a destination unreachable */
	ic->sequence = 0;
	if (__reply_sum_bytes((const __u8 *)ic, data_end, sizeof(*ic) + qlen, &sum))
		return -DROP_INVALID_IP;
	ic->checksum = (__sum16)~csum_fold32(sum);
	return reply4_reparse(skb, p);
}

#endif
