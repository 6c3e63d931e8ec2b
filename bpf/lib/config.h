/* SPDX-License-Identifier: Apache-2.0 */
/* Compile-time features and loop bounds; load-time constants are declared where used. */
#ifndef PYDP_LIB_CONFIG_H
#define PYDP_LIB_CONFIG_H

/* Parse TCP/UDP/ICMP headers (later features read ports and identifiers). */
#ifndef ENABLE_L4_PARSE
#define ENABLE_L4_PARSE 1
#endif

#endif
