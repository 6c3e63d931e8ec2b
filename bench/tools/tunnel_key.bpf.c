// SPDX-License-Identifier: Apache-2.0
/* with_tunnel_key: the receive side's tunnel metadata for BPF_PROG_TEST_RUN.
 *
 * test_run builds a bare skb: no metadata dst, so a program that reads the tunnel key
 * (from_overlay, on the host's flow-based VXLAN device) drops every packet there. This
 * program sets the key that the VXLAN device would have attached on receive (the VNI and,
 * as the outer source, the sending node: bpf_skb_get_tunnel_key reports the key's
 * local_ipv4 as remote_ipv4) and tail-calls the program in slot 0 of bench_next, so the
 * program measured sees what it sees on a real frame. The cost of this program and of the
 * tail call is measured by putting a trivial program (tc_pass) in the slot.
 *
 * Built by the overlay benchmark (bench/test_overlay_bench.py) with clang into
 * build/bench; its map is not pinned. Returns TUNNEL_KEY_REFUSED or TAIL_CALL_FAILED
 * (values no TC verdict has) when it could not hand the packet on.
 */
#include <linux/bpf.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>

#define TUNNEL_KEY_REFUSED 100
#define TAIL_CALL_FAILED 101

const volatile __u32 TUN_VNI = 0;  /* the VNI the frame came with */
const volatile __u32 TUN_NODE = 0; /* the sending node's underlay IPv4, host byte order */

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u32);
} bench_next SEC(".maps");

SEC("tc")
int with_tunnel_key(struct __sk_buff *skb)
{
	struct bpf_tunnel_key key = {};

	key.tunnel_id = TUN_VNI;
	key.local_ipv4 = TUN_NODE; /* read back as remote_ipv4 (the outer source) */
	key.tunnel_ttl = 64;
	if (bpf_skb_set_tunnel_key(skb, &key, sizeof(key), 0))
		return TUNNEL_KEY_REFUSED;
	bpf_tail_call(skb, &bench_next, 0);
	return TAIL_CALL_FAILED;
}

char LICENSE[] SEC("license") = "GPL";
