// SPDX-License-Identifier: Apache-2.0
/* Maglev table population (Eisenbud et al., NSDI'16), weighted; called from Python via cffi. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Trial division is enough: m is at most 2^32 - 1, so at most 2^15 odd divisors
 * are tried, and the table sizes pydp uses (<= 131071) need a few hundred. */
static int maglev_is_prime(uint32_t m)
{
	uint32_t d;

	if (m < 2)
		return 0;
	if (m % 2 == 0)
		return m == 2;
	for (d = 3; (uint64_t)d * d <= m; d += 2)
		if (m % d == 0)
			return 0;
	return 1;
}

/* The slot after c in a walk of stride skip, mod m; written so that c + skip
 * never overflows, whatever m < 2^32 is. */
static uint32_t maglev_step(uint32_t c, uint32_t skip, uint32_t m)
{
	return c >= m - skip ? c - (m - skip) : c + skip;
}

/* Does backend i earn a slot in round r (r >= 1)? Credit accrues at weight[i] a
 * round and a slot costs max_weight, so after r rounds backend i has taken
 * floor(r * w / max_weight) slots: the difference between two rounds is 0 or 1.
 * Computing it from r needs no per-backend credit array, and r * w cannot
 * overflow: r <= m < 2^32 (see pydp_maglev_fill) and w < 2^32. */
static int maglev_takes_slot(uint64_t r, uint32_t w, uint32_t max_weight)
{
	if (w == max_weight)
		return 1;
	if (w == 0)
		return 0;
	return (r * w) / max_weight != ((r - 1) * w) / max_weight;
}

/* Fill table[0..m) with backend indexes 0..n-1 (or -1 everywhere when n == 0 or
 * every weight is 0).
 *
 * Backend i prefers the slots offset[i], offset[i] + skip[i], offset[i] + 2 *
 * skip[i], ... (mod m). Each round, every backend that earns a slot (see
 * maglev_takes_slot) takes the first slot of its preference list that is still
 * empty, in index order, until the table is full. The caller must pass the
 * backends in an order every host agrees on: the table depends on it.
 *
 * m must be prime and 1 <= skip[i] < m: then each preference list is a
 * permutation of all m slots, so a backend always finds an empty slot while one
 * is left, and the walks below terminate. Both are checked, since a composite m
 * could make a walk cycle forever.
 *
 * Cost: the backend with the largest weight takes exactly one slot per round, so
 * there are at most m rounds of n cheap checks; with equal weights there are
 * ceil(m / n) rounds. The walks themselves probe O(m log m) slots in all
 * (the coupon collector's bound the paper gives).
 *
 * Returns 0, -EINVAL for bad arguments (table untouched) or -ENOMEM. */
int pydp_maglev_fill(uint32_t m, uint32_t n, const uint32_t *offset, const uint32_t *skip,
		     const uint32_t *weight, int32_t *table)
{
	uint32_t *next; /* next[i]: the next slot backend i tries */
	uint32_t max_weight = 0, filled = 0, i, c;
	uint64_t r;

	if (!table || !maglev_is_prime(m))
		return -EINVAL;
	/* Indexes must fit the int32_t entries, where -1 means "no backend". */
	if (n > INT32_MAX || (n && (!offset || !skip || !weight)))
		return -EINVAL;
	for (i = 0; i < n; i++) {
		if (offset[i] >= m || skip[i] == 0 || skip[i] >= m)
			return -EINVAL;
		if (weight[i] > max_weight)
			max_weight = weight[i];
	}

	/* All bits set is -1 in every int32_t slot: the "no backend" value. */
	memset(table, 0xff, (size_t)m * sizeof(*table));
	if (max_weight == 0)
		return 0;

	next = malloc((size_t)n * sizeof(*next));
	if (!next)
		return -ENOMEM;
	memcpy(next, offset, (size_t)n * sizeof(*next));

	for (r = 1;; r++) {
		for (i = 0; i < n; i++) {
			if (!maglev_takes_slot(r, weight[i], max_weight))
				continue;
			/* Step rather than compute (offset + k * skip) % m: no
			 * multiplication or division in the inner loop. */
			c = next[i];
			while (table[c] >= 0)
				c = maglev_step(c, skip[i], m);
			table[c] = (int32_t)i;
			next[i] = maglev_step(c, skip[i], m);
			if (++filled == m)
				goto out;
		}
	}
out:
	free(next);
	return 0;
}

/* A Maglev table written as the datapath's slots: pydp_maglev_fill into scratch (m
 * int32_t), then slot s gets backend scratch[s]'s struct lb_backend (addr[i], port[i] in
 * host order, written in network order; 8 bytes a slot), all zero where no backend is.
 * One call per table: the fill and the packing without a Python step between. Returns as
 * pydp_maglev_fill. */
int pydp_maglev_slots(uint32_t m, uint32_t n, const uint32_t *offset, const uint32_t *skip,
		      const uint32_t *weight, const uint32_t *addr, const uint16_t *port,
		      int32_t *scratch, uint8_t *out)
{
	uint32_t s, a;
	uint16_t p;
	uint8_t *o;
	int rc;

	if (!out || (n && (!addr || !port)))
		return -EINVAL;
	rc = pydp_maglev_fill(m, n, offset, skip, weight, scratch);
	if (rc)
		return rc;
	memset(out, 0, (size_t)m * 8);
	for (s = 0; s < m; s++) {
		if (scratch[s] < 0)
			continue;
		a = addr[scratch[s]];
		p = port[scratch[s]];
		o = out + (size_t)s * 8;
		o[0] = a >> 24;
		o[1] = a >> 16;
		o[2] = a >> 8;
		o[3] = a;
		o[4] = p >> 8;
		o[5] = p;
	}
	return 0;
}
