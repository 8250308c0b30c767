#include "xmpp_sub.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clu_node.h"
#include "clu_store.h"

/* A pool of one keeps this much at most. */
#define OWN_RECORDS 200000
#define OWN_BYTES (128u << 20)
#define GRACE_MS 60000ull   /* a watch outlives its expiry by this: a late refresh still finds it */
#define NFIELDS 13

struct xmpp_sub_store {
	struct clu_node *cluster;  /* not owned */
	struct clu_store *own;     /* without a cluster */
};

uint64_t xmpp_sub_now_ms(void)
{
	return (uint64_t)(ev_time() * 1000.0);
}

struct xmpp_sub_store *xmpp_sub_store_new(struct clu_node *cluster)
{
	struct xmpp_sub_store *st = calloc(1, sizeof(*st));
	if (!st)
		return NULL;
	st->cluster = cluster;
	if (!cluster) {
		struct clu_store_limits lim = { .max_records = OWN_RECORDS, .max_bytes = OWN_BYTES,
		                                .tombstone_ms = 1000 };
		st->own = clu_store_new("self", &lim);
		if (!st->own) {
			free(st);
			return NULL;
		}
	}
	return st;
}

void xmpp_sub_store_free(struct xmpp_sub_store *st)
{
	if (!st)
		return;
	clu_store_free(st->own);
	free(st);
}

static const struct clu_store *store_of(const struct xmpp_sub_store *st)
{
	return st->cluster ? clu_node_store(st->cluster) : st->own;
}

static int put(struct xmpp_sub_store *st, const char *key, const void *value, size_t len,
               uint64_t ttl_ms)
{
	if (st->cluster)
		return clu_node_put(st->cluster, key, value, len, ttl_ms);
	uint64_t now = xmpp_sub_now_ms();
	clu_store_expire(st->own, now);
	return clu_store_put(st->own, key, value, len, ttl_ms, now) ? 0 : -1;
}

static void del(struct xmpp_sub_store *st, const char *key)
{
	if (st->cluster)
		clu_node_delete(st->cluster, key);
	else
		clu_store_delete(st->own, key, xmpp_sub_now_ms());
}

static const struct clu_rec *get(const struct xmpp_sub_store *st, const char *key)
{
	if (st->cluster)
		return clu_node_get(st->cluster, key);
	return clu_store_get(st->own, key, xmpp_sub_now_ms());
}

static int key_of(char *key, size_t len, const char *fmt, const char *a, const char *b)
{
	int n = snprintf(key, len, fmt, a, b);
	return n < 0 || (size_t)n >= len ? -1 : 0;
}

/* ---- the text of a watch ---- */

size_t xmpp_sub_encode(const struct xmpp_sub *s, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%d\n%s\n%s\n%s\n%s\n%s\n%s\n%s\n%u\n%d\n%llu\n%s\n%llu",
	                 (int)s->kind, s->sip_user, s->jid, s->call_id, s->local_tag, s->remote_tag,
	                 s->target, s->route, (unsigned)s->cseq, s->active ? 1 : 0,
	                 (unsigned long long)s->expires_ms, s->holder, (unsigned long long)s->last_doc);
	return n < 0 || (size_t)n >= len ? 0 : (size_t)n;
}

/* Copies field i of the record into out (outsz bytes); -1 when it does not fit. */
static int field(const char *start, size_t n, char *out, size_t outsz)
{
	if (n >= outsz || memchr(start, '\0', n))
		return -1;
	memcpy(out, start, n);
	out[n] = '\0';
	return 0;
}

static int number(const char *start, size_t n, unsigned long long max, unsigned long long *out)
{
	unsigned long long v = 0;
	if (n == 0 || n > 20)
		return -1;
	for (size_t i = 0; i < n; i++) {
		if (start[i] < '0' || start[i] > '9')
			return -1;
		unsigned d = (unsigned)(start[i] - '0');
		if (d > max || v > (max - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int xmpp_sub_decode(const char *buf, size_t len, struct xmpp_sub *out)
{
	const char *f[NFIELDS];
	size_t flen[NFIELDS];
	unsigned nf = 0;
	const char *p = buf, *end = buf + len;
	while (nf < NFIELDS) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		f[nf] = p;
		flen[nf] = (size_t)((nl ? nl : end) - p);
		nf++;
		if (!nl)
			break;
		p = nl + 1;
	}
	if (nf != NFIELDS || f[NFIELDS - 1] + flen[NFIELDS - 1] != end)
		return -1;
	unsigned long long kind, cseq, active, expires, last_doc;
	memset(out, 0, sizeof(*out));
	if (number(f[0], flen[0], 1, &kind) < 0 || number(f[8], flen[8], UINT32_MAX, &cseq) < 0 ||
	    number(f[9], flen[9], 1, &active) < 0 || number(f[10], flen[10], UINT64_MAX, &expires) < 0 ||
	    number(f[12], flen[12], UINT64_MAX, &last_doc) < 0 ||
	    field(f[1], flen[1], out->sip_user, sizeof(out->sip_user)) < 0 || flen[1] == 0 ||
	    field(f[2], flen[2], out->jid, sizeof(out->jid)) < 0 || flen[2] == 0 ||
	    field(f[3], flen[3], out->call_id, sizeof(out->call_id)) < 0 || flen[3] == 0 ||
	    field(f[4], flen[4], out->local_tag, sizeof(out->local_tag)) < 0 ||
	    field(f[5], flen[5], out->remote_tag, sizeof(out->remote_tag)) < 0 ||
	    field(f[6], flen[6], out->target, sizeof(out->target)) < 0 ||
	    field(f[7], flen[7], out->route, sizeof(out->route)) < 0 ||
	    field(f[11], flen[11], out->holder, sizeof(out->holder)) < 0)
		return -1;
	out->kind = (enum xmpp_sub_kind)kind;
	out->cseq = (uint32_t)cseq;
	out->active = (int)active;
	out->expires_ms = expires;
	out->last_doc = last_doc;
	return 0;
}

/* ---- watches ---- */

static int watch_key(char *key, size_t len, enum xmpp_sub_kind kind, const char *sip_user,
                     const char *jid)
{
	return key_of(key, len, kind == XMPP_SUB_SIP_WATCHES ? "xp/s/%s/%s" : "xp/x/%s/%s",
	              sip_user, jid);
}

int xmpp_sub_put(struct xmpp_sub_store *st, const struct xmpp_sub *s)
{
	char key[700], index_key[300], value[2600], index[700];
	uint64_t now = xmpp_sub_now_ms();
	uint64_t ttl = (s->expires_ms > now ? s->expires_ms - now : 0) + GRACE_MS;
	size_t n = xmpp_sub_encode(s, value, sizeof(value));
	int in = snprintf(index, sizeof(index), "%d\n%s\n%s", (int)s->kind, s->sip_user, s->jid);
	if (n == 0 || in < 0 || (size_t)in >= sizeof(index) ||
	    watch_key(key, sizeof(key), s->kind, s->sip_user, s->jid) < 0 ||
	    key_of(index_key, sizeof(index_key), "xp/c/%s%s", s->call_id, "") < 0)
		return -1;
	if (put(st, key, value, n, ttl) < 0)
		return -1;
	return put(st, index_key, index, (size_t)in, ttl);
}

static int decode_rec(const struct clu_rec *r, struct xmpp_sub *out)
{
	return r && !r->tombstone ? xmpp_sub_decode((const char *)r->value, r->len, out) : -1;
}

int xmpp_sub_get(const struct xmpp_sub_store *st, enum xmpp_sub_kind kind, const char *sip_user,
                 const char *jid, struct xmpp_sub *out)
{
	char key[700];
	if (watch_key(key, sizeof(key), kind, sip_user, jid) < 0)
		return -1;
	return decode_rec(get(st, key), out);
}

int xmpp_sub_by_call_id(const struct xmpp_sub_store *st, const char *call_id,
                        struct xmpp_sub *out)
{
	char key[300], sip_user[320], jid[320];
	if (key_of(key, sizeof(key), "xp/c/%s%s", call_id, "") < 0)
		return -1;
	const struct clu_rec *r = get(st, key);
	if (!r || r->tombstone || r->len < 3 || (r->value[0] != '0' && r->value[0] != '1') ||
	    r->value[1] != '\n')
		return -1;
	const char *p = (const char *)r->value + 2, *end = (const char *)r->value + r->len;
	const char *nl = memchr(p, '\n', (size_t)(end - p));
	if (!nl || field(p, (size_t)(nl - p), sip_user, sizeof(sip_user)) < 0 ||
	    field(nl + 1, (size_t)(end - nl - 1), jid, sizeof(jid)) < 0)
		return -1;
	enum xmpp_sub_kind kind = r->value[0] == '0' ? XMPP_SUB_SIP_WATCHES : XMPP_SUB_XMPP_WATCHES;
	if (xmpp_sub_get(st, kind, sip_user, jid, out) < 0 || strcmp(out->call_id, call_id) != 0)
		return -1;
	return 0;
}

void xmpp_sub_delete(struct xmpp_sub_store *st, const struct xmpp_sub *s)
{
	char key[700];
	if (watch_key(key, sizeof(key), s->kind, s->sip_user, s->jid) == 0)
		del(st, key);
	if (key_of(key, sizeof(key), "xp/c/%s%s", s->call_id, "") == 0)
		del(st, key);
}

struct each {
	void (*fn)(void *arg, const struct xmpp_sub *s);
	void (*holder_fn)(void *arg, const char *local, const char *remote, const char *node);
	void *arg;
	uint64_t now;
};

static void each_watch(void *arg, const struct clu_rec *r)
{
	struct each *e = arg;
	struct xmpp_sub s;
	if (r->tombstone || (r->expires_ms && r->expires_ms <= e->now) ||
	    (strncmp(r->key, "xp/s/", 5) != 0 && strncmp(r->key, "xp/x/", 5) != 0) ||
	    decode_rec(r, &s) < 0)
		return;
	e->fn(e->arg, &s);
}

void xmpp_sub_foreach(const struct xmpp_sub_store *st,
                      void (*fn)(void *arg, const struct xmpp_sub *s), void *arg)
{
	struct each e = { .fn = fn, .arg = arg, .now = xmpp_sub_now_ms() };
	clu_store_foreach(store_of(st), each_watch, &e);
}

/* ---- permissions and holders ---- */

int xmpp_sub_allow(struct xmpp_sub_store *st, const char *sip_user, const char *jid,
                   uint64_t ttl_ms)
{
	char key[700];
	if (key_of(key, sizeof(key), "xp/ok/%s/%s", sip_user, jid) < 0)
		return -1;
	return put(st, key, "1", 1, ttl_ms);
}

void xmpp_sub_disallow(struct xmpp_sub_store *st, const char *sip_user, const char *jid)
{
	char key[700];
	if (key_of(key, sizeof(key), "xp/ok/%s/%s", sip_user, jid) == 0)
		del(st, key);
}

int xmpp_sub_allowed(const struct xmpp_sub_store *st, const char *sip_user, const char *jid)
{
	char key[700];
	const struct clu_rec *r;
	return key_of(key, sizeof(key), "xp/ok/%s/%s", sip_user, jid) == 0 &&
	       (r = get(st, key)) && !r->tombstone;
}

int xmpp_sub_hold(struct xmpp_sub_store *st, const char *local, const char *remote,
                  const char *node, uint64_t ttl_ms)
{
	char key[600];
	if (key_of(key, sizeof(key), "xp/h/%s/%s", local, remote) < 0)
		return -1;
	return put(st, key, node, strlen(node), ttl_ms);
}

static void each_holder(void *arg, const struct clu_rec *r)
{
	struct each *e = arg;
	char local[300], node[128];
	if (r->tombstone || (r->expires_ms && r->expires_ms <= e->now) ||
	    strncmp(r->key, "xp/h/", 5) != 0 || r->len >= sizeof(node))
		return;
	const char *rest = r->key + 5, *slash = strchr(rest, '/');
	if (!slash || (size_t)(slash - rest) >= sizeof(local))
		return;
	memcpy(local, rest, (size_t)(slash - rest));
	local[slash - rest] = '\0';
	memcpy(node, r->value, r->len);
	node[r->len] = '\0';
	e->holder_fn(e->arg, local, slash + 1, node);
}

void xmpp_sub_foreach_holder(const struct xmpp_sub_store *st,
                             void (*fn)(void *arg, const char *local, const char *remote,
                                        const char *node), void *arg)
{
	struct each e = { .holder_fn = fn, .arg = arg, .now = xmpp_sub_now_ms() };
	clu_store_foreach(store_of(st), each_holder, &e);
}
