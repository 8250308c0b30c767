/* Unit tests for cluster/clu_store.c: last writer wins, tombstones, expiry, bounds, digests. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "clu_store.h"

static const struct clu_store_limits LIM = { .max_records = 100, .max_bytes = 4096,
                                             .tombstone_ms = 60000 };
#define T0 1764000000000ull   /* a wall clock in ms */

static int changes;
static void count_change(void *arg, const struct clu_rec *r)
{
	changes++;
}

static struct clu_rec remote(const char *key, const char *value, uint64_t version,
                             const char *origin)
{
	return (struct clu_rec){ .key = key, .value = (const uint8_t *)value,
	                         .len = value ? strlen(value) : 0, .version = version,
	                         .origin = origin, .tombstone = value == NULL };
}

static void test_put_get_expire(void **state)
{
	struct clu_store *s = clu_store_new("edge-1", &LIM);
	const struct clu_rec *r = clu_store_put(s, "dialog/1", "route-a", 7, 0, T0);
	assert_non_null(r);
	assert_string_equal(r->origin, "edge-1");
	assert_true(r->version >= T0 << 16);
	r = clu_store_get(s, "dialog/1", T0);
	assert_memory_equal(r->value, "route-a", 7);
	/* With a TTL: gone when it is up, and dropped by expire. */
	clu_store_put(s, "sub/1", "x", 1, 500, T0);
	assert_non_null(clu_store_get(s, "sub/1", T0 + 499));
	assert_null(clu_store_get(s, "sub/1", T0 + 500));
	clu_store_expire(s, T0 + 500);
	struct clu_store_stats st;
	clu_store_get_stats(s, &st);
	assert_int_equal(st.records, 1);
	assert_int_equal(st.expired, 1);
	clu_store_free(s);
}

static void test_versions_increase(void **state)
{
	struct clu_store *s = clu_store_new("edge-1", &LIM);
	uint64_t v1 = clu_store_put(s, "k", "1", 1, 0, T0)->version;
	uint64_t v2 = clu_store_put(s, "k", "2", 1, 0, T0)->version;      /* the same ms */
	uint64_t v3 = clu_store_put(s, "k", "3", 1, 0, T0 - 1000)->version; /* the clock went back */
	assert_true(v1 < v2 && v2 < v3);
	/* Having seen a remote write 10 s ahead, our next write comes after it. */
	struct clu_rec ahead = remote("other", "x", (T0 + 10000) << 16, "edge-2");
	assert_int_equal(clu_store_apply(s, &ahead, T0), 1);
	assert_true(clu_store_put(s, "k", "4", 1, 0, T0)->version > ahead.version);
	/* A version beyond the allowed drift is a broken clock: refused. */
	struct clu_rec broken = remote("k", "x", (T0 + CLU_HLC_MAX_DRIFT_MS + 1) << 16, "edge-3");
	assert_int_equal(clu_store_apply(s, &broken, T0), -1);
	struct clu_store_stats st;
	clu_store_get_stats(s, &st);
	assert_int_equal(st.refused_clock, 1);
	clu_store_free(s);
}

static void test_last_writer_wins(void **state)
{
	struct clu_store *s = clu_store_new("edge-1", &LIM);
	changes = 0;
	clu_store_on_change(s, count_change, NULL);
	struct clu_rec a = remote("k", "a", 100, "edge-2"), b = remote("k", "b", 200, "edge-3");
	assert_int_equal(clu_store_apply(s, &b, T0), 1);
	assert_int_equal(clu_store_apply(s, &a, T0), 0); /* older: stale */
	assert_memory_equal(clu_store_get(s, "k", T0)->value, "b", 1);
	/* The same version: the greater origin wins, on every node alike. */
	struct clu_rec c = remote("k", "c", 200, "edge-4"), d = remote("k", "d", 200, "edge-0");
	assert_int_equal(clu_store_apply(s, &c, T0), 1);
	assert_int_equal(clu_store_apply(s, &d, T0), 0);
	assert_int_equal(clu_store_apply(s, &c, T0), 0); /* again: nothing */
	assert_int_equal(changes, 2);
	clu_store_free(s);
}

static void test_tombstones(void **state)
{
	struct clu_store *s = clu_store_new("edge-1", &LIM);
	clu_store_put(s, "k", "v", 1, 0, T0);
	const struct clu_rec *t = clu_store_delete(s, "k", T0 + 1);
	assert_true(t->tombstone);
	assert_null(clu_store_get(s, "k", T0 + 1));
	/* An older write that arrives late does not bring it back. */
	struct clu_rec late = remote("k", "zombie", T0 << 16, "edge-2");
	assert_int_equal(clu_store_apply(s, &late, T0 + 2), 0);
	assert_null(clu_store_get(s, "k", T0 + 2));
	/* The tombstone is forgotten after tombstone_ms. */
	clu_store_expire(s, T0 + 1 + LIM.tombstone_ms - 1);
	struct clu_store_stats st;
	clu_store_get_stats(s, &st);
	assert_int_equal(st.tombstones, 1);
	clu_store_expire(s, T0 + 1 + LIM.tombstone_ms);
	clu_store_get_stats(s, &st);
	assert_int_equal(st.tombstones, 0);
	/* A remote delete is applied like any write. */
	clu_store_put(s, "j", "v", 1, 0, T0);
	struct clu_rec del = remote("j", NULL, (T0 + 5) << 16, "edge-2");
	del.expires_ms = T0 + 60000;
	assert_int_equal(clu_store_apply(s, &del, T0 + 5), 1);
	assert_null(clu_store_get(s, "j", T0 + 5));
	clu_store_free(s);
}

static void test_bounds(void **state)
{
	struct clu_store_limits lim = { .max_records = 3, .max_bytes = 40, .tombstone_ms = 1000 };
	struct clu_store *s = clu_store_new("edge-1", &lim);
	assert_non_null(clu_store_put(s, "a", "1234567890", 10, 0, T0));
	assert_non_null(clu_store_put(s, "b", "1234567890", 10, 0, T0));
	assert_null(clu_store_put(s, "c", "12345678901234567890", 20, 0, T0)); /* bytes */
	assert_non_null(clu_store_put(s, "c", "1", 1, 0, T0));
	assert_null(clu_store_put(s, "d", "1", 1, 0, T0));                    /* records */
	/* Replacing a record fits where a new one does not. */
	assert_non_null(clu_store_put(s, "a", "12345", 5, 0, T0));
	struct clu_rec r = remote("e", "x", 5, "edge-2");
	assert_int_equal(clu_store_apply(s, &r, T0), -1);
	struct clu_store_stats st;
	clu_store_get_stats(s, &st);
	assert_int_equal(st.refused_full, 3);
	assert_int_equal(st.bytes, 3 + 5 + 10 + 1);
	clu_store_free(s);
}

/* Two stores that see the same writes in opposite orders end up the same. */
static void test_convergence_and_digest(void **state)
{
	struct clu_store *x = clu_store_new("edge-1", &LIM), *y = clu_store_new("edge-2", &LIM);
	struct clu_rec w[40];
	char keys[40][16], vals[40][16];
	for (int i = 0; i < 40; i++) {
		snprintf(keys[i], sizeof(keys[i]), "k%d", i % 13);
		snprintf(vals[i], sizeof(vals[i]), "v%d", i);
		w[i] = remote(keys[i], i % 7 == 0 ? NULL : vals[i], (uint64_t)(1000 + (i * 37) % 29),
		              i % 2 ? "edge-3" : "edge-4");
		w[i].expires_ms = w[i].tombstone ? T0 + 60000 : 0;
	}
	for (int i = 0; i < 40; i++) {
		clu_store_apply(x, &w[i], T0);
		clu_store_apply(y, &w[39 - i], T0);
	}
	uint64_t dx[16], dy[16];
	clu_store_digest(x, 16, dx);
	clu_store_digest(y, 16, dy);
	assert_memory_equal(dx, dy, sizeof(dx));
	/* One more write on one side: exactly its bucket differs. */
	clu_store_put(x, "k3", "new", 3, 0, T0);
	clu_store_digest(x, 16, dx);
	unsigned differ = 0;
	for (int b = 0; b < 16; b++)
		differ += dx[b] != dy[b];
	assert_int_equal(differ, 1);
	assert_true(dx[clu_store_bucket("k3", 16)] != dy[clu_store_bucket("k3", 16)]);
	clu_store_free(x);
	clu_store_free(y);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_put_get_expire),
		cmocka_unit_test(test_versions_increase),
		cmocka_unit_test(test_last_writer_wins),
		cmocka_unit_test(test_tombstones),
		cmocka_unit_test(test_bounds),
		cmocka_unit_test(test_convergence_and_digest),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
