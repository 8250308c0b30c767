/*
 * clu_store: the pool's replicated key-value store (dialogs, subscriptions,
 * partner verifications, counters), one copy per node.
 *
 * Every record carries a version from a hybrid logical clock (wall-clock
 * milliseconds << 16 | a counter) and the node that wrote it: the higher
 * (version, origin) wins, everywhere, whatever the order news arrives in.
 * A delete is a tombstone, kept for tombstone_ms so that an older write
 * arriving late cannot resurrect the record; a record may also expire at a
 * wall-clock time of its own. The store is bounded in records and bytes: a
 * write past the bound is refused, not made room for by dropping others.
 *
 * No I/O and no clock: time is passed in (wall-clock ms). cluster/clu_node.c
 * gossips the writes and repairs differences by push-pull digests: records
 * fall into buckets by a hash of their key, and peers compare bucket hashes.
 */
#ifndef CLUSTER_CLU_STORE_H
#define CLUSTER_CLU_STORE_H

#include <stddef.h>
#include <stdint.h>

/* A remote version more than this ahead of our wall clock is refused (a broken clock). */
#define CLU_HLC_MAX_DRIFT_MS 60000

struct clu_rec {
	const char *key;
	const uint8_t *value;      /* NULL for a tombstone */
	size_t len;
	uint64_t version;          /* HLC: wall ms << 16 | counter */
	const char *origin;
	uint64_t expires_ms;       /* 0: never (tombstones: when they may be dropped) */
	int tombstone;
};

struct clu_store_limits {
	size_t max_records;
	size_t max_bytes;          /* keys and values */
	uint64_t tombstone_ms;     /* how long a delete is remembered */
};

struct clu_store_stats {
	size_t records, tombstones, bytes;
	unsigned long long applied, stale, refused_full, refused_clock, expired;
};

struct clu_store;

/* Called for every record that a write or a merge changes (after the change). */
typedef void (*clu_store_fn)(void *arg, const struct clu_rec *r);

/* The store of node self. Returns NULL when out of memory. */
struct clu_store *clu_store_new(const char *self, const struct clu_store_limits *lim);
void clu_store_free(struct clu_store *s);
void clu_store_on_change(struct clu_store *s, clu_store_fn fn, void *arg);

/*
 * Writes key locally: value (len bytes), expiring ttl_ms from now (0:
 * never). Returns the record as stored (to be gossiped), or NULL when the
 * store is full or out of memory. Valid until the store changes.
 */
const struct clu_rec *clu_store_put(struct clu_store *s, const char *key, const void *value,
                                    size_t len, uint64_t ttl_ms, uint64_t now_ms);
/* Deletes key locally: a tombstone. Returns it as clu_store_put() does. */
const struct clu_rec *clu_store_delete(struct clu_store *s, const char *key, uint64_t now_ms);
/* The live record of key, or NULL (absent, deleted or expired). */
const struct clu_rec *clu_store_get(const struct clu_store *s, const char *key, uint64_t now_ms);

/*
 * Merges a record from another node. Returns 1 when it won and was stored,
 * 0 when ours is as new or newer, -1 when refused (store full, a version
 * too far ahead of our clock, or out of memory).
 */
int clu_store_apply(struct clu_store *s, const struct clu_rec *r, uint64_t now_ms);

/* Drops what has expired: records past their time, tombstones past tombstone_ms. */
void clu_store_expire(struct clu_store *s, uint64_t now_ms);

/* Every record, tombstones included, in no particular order. fn must not change the store. */
void clu_store_foreach(const struct clu_store *s, clu_store_fn fn, void *arg);

/*
 * The digest of the store in nbuckets buckets (a power of two): each
 * bucket's hash combines its records' (key, version, origin).
 */
void clu_store_digest(const struct clu_store *s, unsigned nbuckets, uint64_t *hashes);
unsigned clu_store_bucket(const char *key, unsigned nbuckets);

void clu_store_get_stats(const struct clu_store *s, struct clu_store_stats *out);

#endif
