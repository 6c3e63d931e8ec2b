// SPDX-License-Identifier: Apache-2.0
/* Cgroup socket hooks: the host's own processes reach published ports (127.0.0.1:8080,
 * the uplink's address) by having connect()/sendmsg() aimed at the endpoint directly --
 * no userland proxy, no per-packet NAT for them. */
#include "lib/common.h"
#include "lib/maps.h"

/* Load-time constant: the network namespace cookie of this pydp host. The hooks sit on
 * the root cgroup and see every process of the machine; they act only in this netns. */
const volatile __u64 CFG_NETNS_COOKIE = 0;

#define SOCK_ALLOW 1 /* cgroup sock_addr programs: 1 lets the call go on */

static __always_inline int sock4_is_loopback(__be32 addr)
{
	return (addr & bpf_htonl(0xff000000)) == bpf_htonl(0x7f000000);
}

/* The published port ctx's destination names, or NULL. Exact address first (a port
 * published on one address), then "any address" for loopback and the uplink's address. */
static __always_inline const struct port_target *sock4_lookup(struct bpf_sock_addr *ctx)
{
	struct port_key key = {
		.addr = ctx->user_ip4,
		.port = (__be16)ctx->user_port,
		.proto = (__u8)ctx->protocol,
	};
	const struct port_target *t;
	const struct host_config *cfg;
	__u32 zero = 0;

	if (bpf_get_netns_cookie(ctx) != CFG_NETNS_COOKIE)
		return NULL;
	if (key.proto != IPPROTO_TCP && key.proto != IPPROTO_UDP)
		return NULL;
	t = bpf_map_lookup_elem(&pydp_ports, &key);
	if (t)
		return t;
	cfg = bpf_map_lookup_elem(&pydp_config, &zero);
	if (!sock4_is_loopback(key.addr) && !(cfg && cfg->uplink_addr == key.addr))
		return NULL;
	key.addr = 0;
	return bpf_map_lookup_elem(&pydp_ports, &key);
}

/* Aim the call at the endpoint; UDP remembers the published address for replies. */
static __always_inline int sock4_translate(struct bpf_sock_addr *ctx)
{
	const struct port_target *t = sock4_lookup(ctx);
	struct sock_rev_value orig;
	struct sock_rev_key rev = {};

	if (!t)
		return SOCK_ALLOW;
	orig.addr = ctx->user_ip4;
	orig.port = (__be16)ctx->user_port;
	orig.pad = 0;
	ctx->user_ip4 = t->addr;
	ctx->user_port = t->port;
	if (ctx->protocol == IPPROTO_UDP) {
		rev.cookie = bpf_get_socket_cookie(ctx);
		rev.addr = t->addr;
		rev.port = t->port;
		bpf_map_update_elem(&pydp_sock_rev, &rev, &orig, BPF_ANY);
	}
	return SOCK_ALLOW;
}

SEC("cgroup/connect4")
int sock_connect4(struct bpf_sock_addr *ctx)
{
	return sock4_translate(ctx);
}

SEC("cgroup/sendmsg4")
int sock_sendmsg4(struct bpf_sock_addr *ctx)
{
	return sock4_translate(ctx);
}

/* A UDP reply from an endpoint a published address was translated to: the application
 * sees it come from the address it sent to. */
SEC("cgroup/recvmsg4")
int sock_recvmsg4(struct bpf_sock_addr *ctx)
{
	struct sock_rev_key rev = {};
	const struct sock_rev_value *orig;

	if (bpf_get_netns_cookie(ctx) != CFG_NETNS_COOKIE)
		return SOCK_ALLOW;
	rev.cookie = bpf_get_socket_cookie(ctx);
	rev.addr = ctx->user_ip4;
	rev.port = (__be16)ctx->user_port;
	orig = bpf_map_lookup_elem(&pydp_sock_rev, &rev);
	if (orig) {
		ctx->user_ip4 = orig->addr;
		ctx->user_port = orig->port;
	}
	return SOCK_ALLOW;
}

char LICENSE[] SEC("license") = "GPL";
