#include "clu_store.h"

#include <stdlib.h>
#include <string.h>

#include "clu_msg.h"
#include "htab.h"

/* One allocation: the struct, then the key, then the value. */
struct rec {
	struct htab_node by_key;
	struct clu_rec pub;
	size_t keylen;
	char data[];
};

/* Node names, kept once: every record points at its origin's. */
struct origin {
	struct origin *next;
	char name[];
};

struct clu_store {
	struct clu_store_limits lim;
	const char *self;
	struct htab recs;
	struct origin *origins;
	uint64_t hlc;              /* the last version given or seen */
	struct clu_store_stats stats;
	clu_store_fn on_change;
	void *change_arg;
};

#define HLC_WALL(v) ((v) >> 16)
#define HLC_COUNT(v) ((v) & 0xffff)

static uint64_t key_hash(const char *key)
{
	return htab_hash(HTAB_SEED, key, strlen(key));
}

static int key_eq(const struct htab_node *n, const void *key)
{
	return strcmp(((const struct rec *)(const void *)n)->pub.key, key) == 0;
}

static struct rec *find(const struct clu_store *s, const char *key)
{
	return (struct rec *)(void *)htab_find(&s->recs, key_hash(key), key_eq, key);
}

static const char *intern(struct clu_store *s, const char *name)
{
	for (struct origin *o = s->origins; o; o = o->next)
		if (strcmp(o->name, name) == 0)
			return o->name;
	size_t len = strlen(name);
	struct origin *o = malloc(sizeof(*o) + len + 1);
	if (!o)
		return NULL;
	memcpy(o->name, name, len + 1);
	o->next = s->origins;
	s->origins = o;
	return o->name;
}

struct clu_store *clu_store_new(const char *self, const struct clu_store_limits *lim)
{
	struct clu_store *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->lim = *lim;
	s->self = intern(s, self);
	if (!s->self) {
		free(s);
		return NULL;
	}
	return s;
}

static void drop(struct clu_store *s, struct rec *r)
{
	htab_remove(&s->recs, &r->by_key);
	s->stats.bytes -= r->keylen + r->pub.len;
	if (r->pub.tombstone)
		s->stats.tombstones--;
	else
		s->stats.records--;
	free(r);
}

static void free_one(struct htab_node *n, void *arg)
{
	free(n);
}

void clu_store_free(struct clu_store *s)
{
	if (!s)
		return;
	htab_foreach(&s->recs, free_one, NULL);
	htab_free(&s->recs);
	while (s->origins) {
		struct origin *o = s->origins;
		s->origins = o->next;
		free(o);
	}
	free(s);
}

void clu_store_on_change(struct clu_store *s, clu_store_fn fn, void *arg)
{
	s->on_change = fn;
	s->change_arg = arg;
}

/* ---- the hybrid logical clock (Kulkarni et al., 2014) ---- */

/* A version for a local write: after everything seen, at least the wall clock. */
static uint64_t hlc_tick(struct clu_store *s, uint64_t now_ms)
{
	uint64_t wall = now_ms << 16;
	s->hlc = wall > s->hlc ? wall : s->hlc + 1; /* a full counter carries into the ms */
	return s->hlc;
}

/* Seeing a remote version: ours will be later than it. */
static void hlc_see(struct clu_store *s, uint64_t v)
{
	if (v > s->hlc)
		s->hlc = v;
}

/* ---- writes ---- */

static int newer(uint64_t v1, const char *o1, uint64_t v2, const char *o2)
{
	return v1 != v2 ? v1 > v2 : strcmp(o1, o2) > 0;
}

/* Stores the record (replacing old, if any). Returns it, or NULL when full or out of memory. */
static struct rec *store(struct clu_store *s, struct rec *old, const char *key, const void *value,
                         size_t len, uint64_t version, const char *origin, uint64_t expires_ms,
                         int tombstone)
{
	size_t keylen = strlen(key);
	size_t freed = old ? old->keylen + old->pub.len : 0;
	if (s->stats.bytes - freed + keylen + len > s->lim.max_bytes ||
	    (!old && s->stats.records + s->stats.tombstones >= s->lim.max_records)) {
		s->stats.refused_full++;
		return NULL;
	}
	const char *org = intern(s, origin);
	struct rec *r = malloc(sizeof(*r) + keylen + 1 + len);
	if (!org || !r) {
		free(r);
		return NULL;
	}
	if (old)
		drop(s, old);
	memcpy(r->data, key, keylen + 1);
	if (len)
		memcpy(r->data + keylen + 1, value, len);
	r->keylen = keylen;
	r->pub = (struct clu_rec){
		.key = r->data,
		.value = tombstone ? NULL : (const uint8_t *)r->data + keylen + 1,
		.len = tombstone ? 0 : len,
		.version = version,
		.origin = org,
		.expires_ms = expires_ms,
		.tombstone = tombstone,
	};
	htab_insert(&s->recs, &r->by_key, key_hash(key));
	s->stats.bytes += keylen + r->pub.len;
	if (tombstone)
		s->stats.tombstones++;
	else
		s->stats.records++;
	if (s->on_change)
		s->on_change(s->change_arg, &r->pub);
	return r;
}

const struct clu_rec *clu_store_put(struct clu_store *s, const char *key, const void *value,
                                    size_t len, uint64_t ttl_ms, uint64_t now_ms)
{
	if (!*key || strlen(key) > CLU_KEY_MAX || len > CLU_VALUE_MAX)
		return NULL;
	struct rec *r = store(s, find(s, key), key, value, len, hlc_tick(s, now_ms), s->self,
	                      ttl_ms ? now_ms + ttl_ms : 0, 0);
	return r ? &r->pub : NULL;
}

const struct clu_rec *clu_store_delete(struct clu_store *s, const char *key, uint64_t now_ms)
{
	if (!*key || strlen(key) > CLU_KEY_MAX)
		return NULL;
	struct rec *r = store(s, find(s, key), key, NULL, 0, hlc_tick(s, now_ms), s->self,
	                      now_ms + s->lim.tombstone_ms, 1);
	return r ? &r->pub : NULL;
}

const struct clu_rec *clu_store_get(const struct clu_store *s, const char *key, uint64_t now_ms)
{
	const struct rec *r = find(s, key);
	if (!r || r->pub.tombstone || (r->pub.expires_ms && r->pub.expires_ms <= now_ms))
		return NULL;
	return &r->pub;
}

int clu_store_apply(struct clu_store *s, const struct clu_rec *in, uint64_t now_ms)
{
	if (HLC_WALL(in->version) > now_ms + CLU_HLC_MAX_DRIFT_MS) {
		s->stats.refused_clock++;
		return -1;
	}
	hlc_see(s, in->version);
	struct rec *old = find(s, in->key);
	if (old && !newer(in->version, in->origin, old->pub.version, old->pub.origin)) {
		s->stats.stale++;
		return 0;
	}
	/* Already expired: nothing to keep, but what it replaces is outdated too. */
	if (in->expires_ms && in->expires_ms <= now_ms) {
		if (old)
			drop(s, old);
		s->stats.expired++;
		return 0;
	}
	if (!store(s, old, in->key, in->value, in->len, in->version, in->origin, in->expires_ms,
	           in->tombstone))
		return -1;
	s->stats.applied++;
	return 1;
}

struct expire_ctx {
	struct clu_store *s;
	uint64_t now;
};

static void expire_one(struct htab_node *n, void *arg)
{
	struct expire_ctx *x = arg;
	struct rec *r = (struct rec *)(void *)n;
	if (r->pub.expires_ms && r->pub.expires_ms <= x->now) {
		drop(x->s, r);
		x->s->stats.expired++;
	}
}

void clu_store_expire(struct clu_store *s, uint64_t now_ms)
{
	struct expire_ctx x = { s, now_ms };
	htab_foreach(&s->recs, expire_one, &x);
}

struct foreach_ctx {
	clu_store_fn fn;
	void *arg;
};

static void foreach_one(struct htab_node *n, void *arg)
{
	struct foreach_ctx *x = arg;
	x->fn(x->arg, &((struct rec *)(void *)n)->pub);
}

void clu_store_foreach(const struct clu_store *s, clu_store_fn fn, void *arg)
{
	struct foreach_ctx x = { fn, arg };
	htab_foreach(&s->recs, foreach_one, &x);
}

unsigned clu_store_bucket(const char *key, unsigned nbuckets)
{
	/* The top bits: htab uses the low ones, and FNV's low bits mix worse. */
	return (unsigned)(key_hash(key) >> 32) & (nbuckets - 1);
}

struct digest_ctx {
	unsigned nbuckets;
	uint64_t *hashes;
};

static void digest_one(void *arg, const struct clu_rec *r)
{
	struct digest_ctx *x = arg;
	uint64_t h = htab_hash(HTAB_SEED, r->key, strlen(r->key) + 1);
	h = htab_hash(h, &r->version, sizeof(r->version));
	h = htab_hash(h, r->origin, strlen(r->origin));
	/* XOR: the order records are visited in does not matter. */
	x->hashes[clu_store_bucket(r->key, x->nbuckets)] ^= h;
}

void clu_store_digest(const struct clu_store *s, unsigned nbuckets, uint64_t *hashes)
{
	struct digest_ctx x = { nbuckets, hashes };
	memset(hashes, 0, nbuckets * sizeof(*hashes));
	clu_store_foreach(s, digest_one, &x);
}

void clu_store_get_stats(const struct clu_store *s, struct clu_store_stats *out)
{
	*out = s->stats;
}
