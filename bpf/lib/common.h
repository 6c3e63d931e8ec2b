/* SPDX-License-Identifier: Apache-2.0 */
/* Headers every pydp program includes: UAPI, libbpf's helpers, the map contract. */
#ifndef PYDP_LIB_COMMON_H
#define PYDP_LIB_COMMON_H

#include <linux/types.h>
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/tcp.h>
#include <linux/udp.h>
#include <linux/pkt_cls.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "maps/metrics.h"
#include "maps/endpoint.h"
#include "maps/sock.h"

#endif
