// SPDX-License-Identifier: Apache-2.0
/* Programs on the host's uplink: from_netdev at TC ingress (NAT replies, published ports). */
#include "lib/common.h"
#include "lib/maps.h"
#include "lib/metrics.h"
#include "lib/parse.h"
#include "lib/nat.h"

/* Traffic entering the host: replies of masqueraded connections, ICMP errors about them
 * and connections to published ports are translated and delivered to the endpoint; the
 * host's own traffic goes to the stack untouched. */
SEC("tc")
int from_netdev(struct __sk_buff *skb)
{
	void *data = (void *)(long)skb->data;
	void *data_end = (void *)(long)skb->data_end;
	struct pkt p = {};
	__u32 reason;
	int ret;

	ret = parse_pkt(data, data_end, &p);
	if (ret < 0)
		return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
	if (!p.ip4)
		return metrics_tc_exit(skb, TC_ACT_OK, REASON_PASS_NON_IP);
	ret = nat4_from_netdev(skb, &p, &reason);
	if (ret < 0)
		return metrics_tc_exit(skb, TC_ACT_SHOT, -ret);
	return metrics_tc_exit(skb, ret, reason);
}

char LICENSE[] SEC("license") = "GPL";
