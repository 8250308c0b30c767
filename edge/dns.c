#include "dns.h"

#include <ares.h>
#include <arpa/inet.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "htab.h"
#include "list.h"

/* A cached answer lives at most a day, whatever its TTL (as unbound's cache-max-ttl). */
#define TTL_MAX 86400u
#define ADDRS_PER_FAMILY (DNS_MAX_ADDRS / 2)


enum kind { KIND_SRV, KIND_ADDR };

/*
 * An answer: a cache entry, or what one query delivers. Reference counted,
 * because a query holds its answer from the moment it is found until its
 * callback returns, and the cache may drop it meanwhile. One allocation: the
 * records and the names follow the struct.
 */
struct answer {
	struct htab_node node;        /* in r->cache while cached */
	struct list_node lru;         /* in r->lru while cached: least recently used first */
	unsigned refs;
	enum kind kind;
	int status;                   /* DNS_OK or DNS_ENOTFOUND */
	uint32_t ttl;                 /* 0: not to be cached */
	double expires;               /* monotonic seconds */
	unsigned n;
	struct dns_srv_target *srv;   /* KIND_SRV: n targets, in answer order */
	struct dns_addr *addrs;       /* KIND_ADDR: n addresses without a port */
	char *name;                   /* the key, as first asked */
};

struct lookup;

/* One c-ares query of a lookup. */
struct request {
	struct lookup *l;
	int type;                     /* DNS_RR_SRV, DNS_RR_AAAA or DNS_RR_A */
	unsigned tries_left;
	int status;                   /* a dns_status, once called back */
	uint32_t ttl;                 /* of its records, or of its negative answer */
	unsigned n;                   /* addresses found, in l->addrs[this request] */
};

/* A network lookup, shared by the queries for the same name and kind. */
struct lookup {
	struct htab_node node;        /* in r->lookups, from creation to free */
	struct list_node waiters;     /* struct dns_query */
	struct dns_resolver *r;
	enum kind kind;
	unsigned outstanding;         /* requests that c-ares has not called back */
	struct request req[2];        /* SRV: req[0]; addresses: AAAA, A */
	struct answer *srv;           /* the parsed SRV answer, until finished */
	struct dns_addr addrs[2][ADDRS_PER_FAMILY];
	char name[];
};

struct dns_query {
	struct list_node link;        /* in a lookup's waiters, r->ready or r->batch */
	struct dns_resolver *r;
	enum kind kind;
	uint16_t port;
	int calling;                  /* its callback runs: dns_cancel() leaves it */
	union {
		dns_srv_cb srv;
		dns_addr_cb addr;
	} cb;
	void *arg;
	int status;
	struct answer *ans;           /* with DNS_OK: a reference */
};

/* The ev_io of a c-ares socket. Kept for reuse while the resolver lives:
 * c-ares may close a socket from inside that socket's own callback. */
struct sock_watch {
	ev_io io;
	struct sock_watch *next;
};

struct dns_resolver {
	struct ev_loop *loop;
	ares_channel channel;
	unsigned tries;
	unsigned cache_max;           /* records */
	unsigned cache_used;          /* records */
	struct htab cache;            /* struct answer, by kind and name */
	struct list_node lru;
	struct htab lookups;          /* struct lookup, by kind and name */
	struct list_node ready;       /* struct dns_query answered, to call back */
	struct list_node batch;       /* those ready_cb is calling back */
	ev_timer ready_timer;         /* zero delay: callbacks come from the loop */
	ev_timer ares_timer;          /* c-ares' next timeout */
	struct sock_watch *socks;
	uint64_t rng;
	int calling;                  /* ready_cb runs callbacks */
	int closing;                  /* freed from a callback: finish when it returns */
	struct dns_stats stats;
};

static void ready_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void ares_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

/* ---- small helpers ---- */

static uint32_t min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

static double now_mono(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static uint64_t random_seed(const void *salt)
{
	uint64_t seed;
	struct timespec ts;
	if (getrandom(&seed, sizeof(seed), GRND_NONBLOCK) == (ssize_t)sizeof(seed))
		return seed;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40) ^
	       (uint64_t)(uintptr_t)salt;
}

/* ---- answers and the cache ---- */

static struct answer *answer_new(enum kind kind, const char *name, int status, unsigned n,
                                 size_t names_len)
{
	size_t arr = kind == KIND_SRV ? n * sizeof(struct dns_srv_target) : n * sizeof(struct dns_addr);
	size_t nlen = strlen(name) + 1;
	/* the struct's size keeps the records after it aligned */
	struct answer *a = calloc(1, sizeof(*a) + arr + nlen + names_len);
	char *p;

	if (!a)
		return NULL;
	p = (char *)(a + 1);
	if (kind == KIND_SRV)
		a->srv = (struct dns_srv_target *)(void *)p;
	else
		a->addrs = (struct dns_addr *)(void *)p;
	p += arr;
	a->name = p;
	memcpy(a->name, name, nlen);
	a->refs = 1;
	a->kind = kind;
	a->status = status;
	a->n = n;
	return a;
}

static void answer_unref(struct answer *a)
{
	if (a && --a->refs == 0)
		free(a);
}

/* An SRV answer from a parsed RRset (rr unused unless status is DNS_OK). */
static struct answer *answer_from_rrset(const char *name, int status, const struct dns_srv_rrset *rr)
{
	unsigned n = status == DNS_OK ? rr->n : 0;
	size_t names = 0;
	struct answer *a;
	char *p;

	if (n > DNS_MAX_SRV_TARGETS)
		n = DNS_MAX_SRV_TARGETS;
	for (unsigned i = 0; i < n; i++)
		names += strlen(rr->rr[i].name) + 1;
	if (!(a = answer_new(KIND_SRV, name, status, n, names)))
		return NULL;
	p = a->name + strlen(a->name) + 1;
	for (unsigned i = 0; i < n; i++) {
		size_t len = strlen(rr->rr[i].name) + 1;
		memcpy(p, rr->rr[i].name, len);
		a->srv[i].name = p;
		a->srv[i].priority = rr->rr[i].priority;
		a->srv[i].weight = rr->rr[i].weight;
		a->srv[i].port = rr->rr[i].port;
		p += len;
	}
	a->ttl = rr->ttl;
	return a;
}

/* What an entry counts against cache_records: a negative one counts one. */
static unsigned answer_cost(const struct answer *a)
{
	return a->n > 0 ? a->n : 1;
}

static uint64_t key_hash(enum kind kind, const char *name)
{
	unsigned char k = (unsigned char)kind;
	return htab_hash_nocase(htab_hash(HTAB_SEED, &k, 1), name, strlen(name));
}

struct key {
	enum kind kind;
	const char *name;
};

static int answer_eq(const struct htab_node *n, const void *key)
{
	const struct answer *a = (const struct answer *)(const void *)n;
	const struct key *k = key;
	return a->kind == k->kind && dns_name_eq(a->name, k->name);
}

static void cache_remove(struct dns_resolver *r, struct answer *a)
{
	htab_remove(&r->cache, &a->node);
	list_del(&a->lru);
	r->cache_used -= answer_cost(a);
	answer_unref(a);
}

/* A live cache entry for name, made the most recently used; an expired one is dropped. */
static struct answer *cache_get(struct dns_resolver *r, enum kind kind, const char *name)
{
	struct key k = { kind, name };
	struct answer *a = (struct answer *)(void *)htab_find(&r->cache, key_hash(kind, name),
	                                                      answer_eq, &k);
	if (!a)
		return NULL;
	if (a->expires <= now_mono()) {
		cache_remove(r, a);
		return NULL;
	}
	list_del(&a->lru);
	list_add_tail(&r->lru, &a->lru);
	return a;
}

/* Caches a, taking a reference, and drops the least recently used entries to make room. */
static void cache_put(struct dns_resolver *r, struct answer *a)
{
	struct key k = { a->kind, a->name };
	unsigned cost = answer_cost(a);
	struct htab_node *old;

	if (a->ttl == 0 || cost > r->cache_max)
		return;
	if ((old = htab_find(&r->cache, key_hash(a->kind, a->name), answer_eq, &k)))
		cache_remove(r, (struct answer *)(void *)old);
	while (r->cache_used + cost > r->cache_max && !list_empty(&r->lru))
		cache_remove(r, list_entry(r->lru.next, struct answer, lru));
	if (htab_insert(&r->cache, &a->node, key_hash(a->kind, a->name)) < 0 && r->cache.nbuckets == 0)
		return; /* no memory for the table: just not cached */
	list_add_tail(&r->lru, &a->lru);
	r->cache_used += cost;
	a->expires = now_mono() + min32(a->ttl, TTL_MAX);
	a->refs++;
}

static void cache_drop_one(struct htab_node *n, void *arg)
{
	cache_remove(arg, (struct answer *)(void *)n);
}

int dns_cache_put_srv(struct dns_resolver *r, const char *name, int status,
                      const struct dns_srv_rrset *rr)
{
	char key[DNS_NAME_MAX + 1];
	struct answer *a;

	if (dns_name_key(key, name) < 0 || (status != DNS_OK && status != DNS_ENOTFOUND) ||
	    (status == DNS_OK && rr->n == 0))
		return 0;
	if (!(a = answer_from_rrset(key, status, rr)))
		return DNS_ENOMEM;
	cache_put(r, a);
	answer_unref(a);
	return 0;
}

int dns_cache_put_addr(struct dns_resolver *r, const char *host, int status,
                       const struct dns_addr *addrs, unsigned n, uint32_t ttl)
{
	char key[DNS_NAME_MAX + 1];
	struct answer *a;

	if (status != DNS_OK)
		n = 0;
	if (n > DNS_MAX_ADDRS)
		n = DNS_MAX_ADDRS;
	if (dns_name_key(key, host) < 0 || (status != DNS_OK && status != DNS_ENOTFOUND) ||
	    (status == DNS_OK && n == 0))
		return 0;
	if (!(a = answer_new(KIND_ADDR, key, status, n, 0)))
		return DNS_ENOMEM;
	if (n > 0)
		memcpy(a->addrs, addrs, n * sizeof(*addrs));
	a->ttl = ttl;
	cache_put(r, a);
	answer_unref(a);
	return 0;
}

/* ---- queries and their callbacks ---- */

static void query_free(struct dns_query *q)
{
	answer_unref(q->ans);
	free(q);
}

static void ready_arm(struct dns_resolver *r)
{
	if (!ev_is_active(&r->ready_timer)) {
		ev_timer_set(&r->ready_timer, 0., 0.);
		ev_timer_start(r->loop, &r->ready_timer);
	}
}

/* Queues q's callback for the loop, with a reference to a when it is an answer. */
static void query_ready(struct dns_query *q, int status, struct answer *a)
{
	q->status = status;
	if (status == DNS_OK) {
		q->ans = a;
		a->refs++;
	}
	list_add_tail(&q->r->ready, &q->link);
	ready_arm(q->r);
}

static void set_port(struct dns_addr *a, uint16_t port)
{
	if (a->sa.ss_family == AF_INET6)
		((struct sockaddr_in6 *)(void *)&a->sa)->sin6_port = htons(port);
	else
		((struct sockaddr_in *)(void *)&a->sa)->sin_port = htons(port);
}

static void query_call(struct dns_query *q)
{
	const struct answer *a = q->status == DNS_OK ? q->ans : NULL;

	if (q->kind == KIND_SRV) {
		struct dns_srv_target t[DNS_MAX_SRV_TARGETS];
		struct dns_srv_answer ans = { 0, t };
		if (a) {
			dns_srv_order(&q->r->rng, a->srv, a->n, t);
			ans.n = a->n;
		}
		q->cb.srv(q->arg, q->status, &ans);
	} else {
		struct dns_addr v[DNS_MAX_ADDRS];
		struct dns_addr_answer ans = { 0, v };
		for (unsigned i = 0; a && i < a->n; i++) {
			v[i] = a->addrs[i];
			set_port(&v[i], q->port);
		}
		ans.n = a ? a->n : 0;
		q->cb.addr(q->arg, q->status, &ans);
	}
}

static void resolver_destroy(struct dns_resolver *r);

static void ready_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dns_resolver *r = w->data;
	struct list_node *n, *tmp;

	/* What the callbacks queue waits for the next iteration: a callback that
	 * asks again for a cached name cannot hold the loop here. */
	list_for_each_safe(n, tmp, &r->ready) {
		list_del(n);
		list_add_tail(&r->batch, n);
	}
	r->calling = 1;
	while (!r->closing && !list_empty(&r->batch)) {
		struct dns_query *q = list_entry(r->batch.next, struct dns_query, link);
		list_del(&q->link);
		q->calling = 1;
		query_call(q);
		query_free(q);
	}
	r->calling = 0;
	if (r->closing)
		resolver_destroy(r);
	else if (!list_empty(&r->ready))
		ready_arm(r);
}

static void free_queries(struct list_node *head)
{
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, head) {
		list_del(n);
		query_free(list_entry(n, struct dns_query, link));
	}
}

/* ---- c-ares on libev ---- */

static void ares_timer_update(struct dns_resolver *r)
{
	struct timeval tv, *tvp = ares_timeout(r->channel, NULL, &tv);
	ev_timer_stop(r->loop, &r->ares_timer);
	if (tvp) {
		ev_timer_set(&r->ares_timer, (double)tvp->tv_sec + (double)tvp->tv_usec / 1e6, 0.);
		ev_timer_start(r->loop, &r->ares_timer);
	}
}

static void ares_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct dns_resolver *r = w->data;
	ares_process_fd(r->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
	ares_timer_update(r);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct dns_resolver *r = w->data;
	ares_socket_t fd = w->fd;
	/* w may be stopped in here: not touched after */
	ares_process_fd(r->channel, (revents & EV_READ) ? fd : ARES_SOCKET_BAD,
	                (revents & EV_WRITE) ? fd : ARES_SOCKET_BAD);
	ares_timer_update(r);
}

static void sock_state_cb(void *data, ares_socket_t fd, int readable, int writable)
{
	struct dns_resolver *r = data;
	struct sock_watch *w, *idle = NULL;
	int events = (readable ? EV_READ : 0) | (writable ? EV_WRITE : 0);

	for (w = r->socks; w; w = w->next) {
		if (ev_is_active(&w->io) && w->io.fd == fd)
			break;
		if (!ev_is_active(&w->io) && !idle)
			idle = w;
	}
	if (w)
		ev_io_stop(r->loop, &w->io);
	if (!events)
		return;
	if (!w && !(w = idle)) {
		if (!(w = calloc(1, sizeof(*w))))
			return; /* unwatched, its request times out through ares_timer */
		ev_init(&w->io, io_cb);
		w->io.data = r;
		w->next = r->socks;
		r->socks = w;
	}
	ev_io_set(&w->io, fd, events);
	ev_io_start(r->loop, &w->io);
}

/* ---- network lookups ---- */

static int lookup_eq(const struct htab_node *n, const void *key)
{
	const struct lookup *l = (const struct lookup *)(const void *)n;
	const struct key *k = key;
	return l->kind == k->kind && dns_name_eq(l->name, k->name);
}

static struct lookup *lookup_new(struct dns_resolver *r, enum kind kind, const char *name)
{
	size_t len = strlen(name) + 1;
	struct lookup *l = calloc(1, sizeof(*l) + len);

	if (!l)
		return NULL;
	memcpy(l->name, name, len);
	l->r = r;
	l->kind = kind;
	list_init(&l->waiters);
	for (unsigned i = 0; i < 2; i++) {
		l->req[i].l = l;
		l->req[i].tries_left = r->tries;
	}
	l->req[0].type = kind == KIND_SRV ? DNS_RR_SRV : DNS_RR_AAAA;
	l->req[1].type = DNS_RR_A;
	if (htab_insert(&r->lookups, &l->node, key_hash(kind, name)) < 0 && r->lookups.nbuckets == 0) {
		free(l);
		return NULL;
	}
	return l;
}

/* Frees l and the queries still waiting on it, without calling them back. */
static void lookup_free(struct lookup *l)
{
	free_queries(&l->waiters);
	htab_remove(&l->r->lookups, &l->node);
	answer_unref(l->srv);
	free(l);
}

static void ares_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen);

/* Sends q. c-ares may call back before this returns, and l may then be gone. */
static void request_send(struct request *q)
{
	struct dns_resolver *r = q->l->r;
	r->stats.queries++;
	ares_query(r->channel, q->l->name, DNS_CLASS_IN, q->type, ares_cb, q);
}

static int ares_status(int status)
{
	switch (status) {
	case ARES_ENODATA:
	case ARES_ENOTFOUND:
	case ARES_EBADNAME:       /* a name that cannot be encoded cannot exist */
		return DNS_ENOTFOUND;
	case ARES_ETIMEOUT:
		return DNS_ETIMEOUT;
	case ARES_ENOMEM:
		return DNS_ENOMEM;
	default:
		/* ESERVFAIL, EREFUSED, EFORMERR, ENOTIMP, EBADRESP, EOF, and
		 * ECONNREFUSED: besides an unreachable port, c-ares 1.18 ends with it
		 * when every try was answered SERVFAIL or REFUSED. */
		return DNS_ESERVFAIL;
	}
}

static void request_srv_done(struct request *q, const unsigned char *abuf, size_t len)
{
	struct dns_srv_rrset rr;
	struct lookup *l = q->l;

	q->status = dns_parse_srv_answer(abuf, len, l->name, &rr);
	if (q->status == DNS_OK || q->status == DNS_ENOTFOUND) {
		if (!(l->srv = answer_from_rrset(l->name, q->status, &rr)))
			q->status = DNS_ENOMEM;
	}
}

static uint32_t ttl_of(int ttl)
{
	return ttl > 0 ? (uint32_t)ttl : 0;
}

static void request_addr_done(struct request *q, int status, const unsigned char *abuf, size_t len)
{
	unsigned fam = q->type == DNS_RR_AAAA ? 0 : 1;
	struct dns_addr *out = q->l->addrs[fam];
	int rc = ARES_ENODATA, n = ADDRS_PER_FAMILY;

	q->ttl = UINT32_MAX; /* the smallest of the addresses' */
	if (status == ARES_SUCCESS && q->type == DNS_RR_AAAA) {
		struct ares_addr6ttl t[ADDRS_PER_FAMILY];
		rc = ares_parse_aaaa_reply(abuf, (int)len, NULL, t, &n);
		for (int i = 0; rc == ARES_SUCCESS && i < n; i++) {
			struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&out[i].sa;
			memset(&out[i], 0, sizeof(out[i]));
			s6->sin6_family = AF_INET6;
			memcpy(&s6->sin6_addr, &t[i].ip6addr, sizeof(s6->sin6_addr));
			out[i].salen = sizeof(*s6);
			q->ttl = min32(q->ttl, ttl_of(t[i].ttl));
		}
	} else if (status == ARES_SUCCESS) {
		struct ares_addrttl t[ADDRS_PER_FAMILY];
		rc = ares_parse_a_reply(abuf, (int)len, NULL, t, &n);
		for (int i = 0; rc == ARES_SUCCESS && i < n; i++) {
			struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&out[i].sa;
			memset(&out[i], 0, sizeof(out[i]));
			s4->sin_family = AF_INET;
			s4->sin_addr = t[i].ipaddr;
			out[i].salen = sizeof(*s4);
			q->ttl = min32(q->ttl, ttl_of(t[i].ttl));
		}
	}
	if (rc == ARES_SUCCESS && n > 0) {
		q->n = (unsigned)n;
		q->status = DNS_OK;
	} else if (rc == ARES_SUCCESS || rc == ARES_ENODATA) {
		q->status = DNS_ENOTFOUND; /* NXDOMAIN, no records, or only a CNAME */
		q->ttl = dns_negative_ttl(abuf, len);
	} else {
		q->status = ares_status(rc);
	}
}

/* The addresses of both requests: DNS_OK when either family has one. It is
 * cached only when neither failed, so that a family that timed out is asked
 * again next time. */
static int addr_result(struct lookup *l, struct answer **out)
{
	struct request *q6 = &l->req[0], *q4 = &l->req[1];
	struct answer *a;

	*out = NULL;
	if (q6->n + q4->n == 0) {
		if (q6->status != DNS_ENOTFOUND || q4->status != DNS_ENOTFOUND)
			return q4->status != DNS_ENOTFOUND ? q4->status : q6->status;
		if ((a = answer_new(KIND_ADDR, l->name, DNS_ENOTFOUND, 0, 0)))
			a->ttl = min32(q6->ttl, q4->ttl);
		*out = a;
		return DNS_ENOTFOUND;
	}
	if (!(a = answer_new(KIND_ADDR, l->name, DNS_OK, q6->n + q4->n, 0)))
		return DNS_ENOMEM;
	memcpy(a->addrs, l->addrs[0], q6->n * sizeof(struct dns_addr));
	memcpy(a->addrs + q6->n, l->addrs[1], q4->n * sizeof(struct dns_addr));
	if (q6->status == DNS_OK && q4->status == DNS_OK)
		a->ttl = min32(q6->ttl, q4->ttl);
	else if (q6->status == DNS_ENOTFOUND || q4->status == DNS_ENOTFOUND)
		a->ttl = q6->n ? q6->ttl : q4->ttl;
	*out = a;
	return DNS_OK;
}

/* Every request is in: cache the answer, queue the callbacks, free l. */
static void lookup_finish(struct lookup *l)
{
	struct dns_resolver *r = l->r;
	struct answer *a;
	int status;

	if (l->kind == KIND_SRV) {
		status = l->req[0].status;
		a = l->srv;
		l->srv = NULL;
	} else {
		status = addr_result(l, &a);
	}
	if (a)
		cache_put(r, a);
	if (status != DNS_OK && status != DNS_ENOTFOUND)
		r->stats.failures++;
	while (!list_empty(&l->waiters)) {
		struct dns_query *q = list_entry(l->waiters.next, struct dns_query, link);
		list_del(&q->link);
		query_ready(q, status, a);
	}
	answer_unref(a);
	lookup_free(l);
}

static void ares_cb(void *arg, int status, int timeouts, unsigned char *abuf, int alen)
{
	struct request *q = arg;
	struct lookup *l = q->l;
	size_t len = abuf && alen > 0 ? (size_t)alen : 0;

	if (status == ARES_EDESTRUCTION || l->r->closing) {
		if (--l->outstanding == 0)
			lookup_free(l);
		return;
	}
	if (status == ARES_ETIMEOUT && q->tries_left > 1) {
		/* Our own rounds: c-ares would double its wait on each one. */
		q->tries_left--;
		request_send(q);
		return;
	}
	if ((status == ARES_SUCCESS || status == ARES_ENODATA || status == ARES_ENOTFOUND) && len) {
		if (q->type == DNS_RR_SRV)
			request_srv_done(q, abuf, len);
		else
			request_addr_done(q, status, abuf, len);
	} else {
		q->status = ares_status(status == ARES_SUCCESS ? ARES_EBADRESP : status);
		q->ttl = DNS_NEG_TTL_DEFAULT;
	}
	if (--l->outstanding == 0)
		lookup_finish(l);
}

/* ---- the interface ---- */

static struct dns_query *query_new(struct dns_resolver *r, enum kind kind, uint16_t port, void *arg)
{
	struct dns_query *q = calloc(1, sizeof(*q));
	if (!q)
		return NULL;
	q->r = r;
	q->kind = kind;
	q->port = port;
	q->arg = arg;
	return q;
}

/* Answers q from the cache, joins it to a lookup, or starts one. Returns 0,
 * or -1 when out of memory (q not linked anywhere). */
static int query_start(struct dns_query *q, const char *name)
{
	struct dns_resolver *r = q->r;
	char key[DNS_NAME_MAX + 1];
	struct key k = { q->kind, key };
	struct answer *a;
	struct lookup *l;

	if (dns_name_key(key, name) < 0) {
		query_ready(q, DNS_ENOTFOUND, NULL);
		return 0;
	}
	if ((a = cache_get(r, q->kind, key))) {
		r->stats.cache_hits++;
		query_ready(q, a->status, a);
		return 0;
	}
	l = (struct lookup *)(void *)htab_find(&r->lookups, key_hash(q->kind, key), lookup_eq, &k);
	if (l) {
		list_add_tail(&l->waiters, &q->link);
		return 0;
	}
	if (!(l = lookup_new(r, q->kind, key)))
		return -1;
	list_add_tail(&l->waiters, &q->link);
	/* c-ares may answer inside ares_query(): count both requests first */
	l->outstanding = l->kind == KIND_SRV ? 1 : 2;
	if (l->kind == KIND_SRV) {
		request_send(&l->req[0]);
	} else {
		request_send(&l->req[0]);
		request_send(&l->req[1]);
	}
	ares_timer_update(r);
	return 0;
}

struct dns_query *dns_resolve_srv(struct dns_resolver *r, const char *name, dns_srv_cb cb,
                                  void *arg)
{
	struct dns_query *q = query_new(r, KIND_SRV, 0, arg);
	if (!q)
		return NULL;
	q->cb.srv = cb;
	if (query_start(q, name) < 0) {
		query_free(q);
		return NULL;
	}
	return q;
}

/* Parses an IPv4 or IPv6 literal, the latter bracketed or not. */
static int numeric_addr(const char *host, struct dns_addr *out)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&out->sa;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&out->sa;
	char buf[INET6_ADDRSTRLEN];
	size_t len = strlen(host);

	memset(out, 0, sizeof(*out));
	if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		out->salen = sizeof(*s4);
		return 1;
	}
	if (len >= 2 && host[0] == '[' && host[len - 1] == ']') {
		host++;
		len -= 2;
	}
	if (len >= sizeof(buf))
		return 0;
	memcpy(buf, host, len);
	buf[len] = '\0';
	if (inet_pton(AF_INET6, buf, &s6->sin6_addr) != 1)
		return 0;
	s6->sin6_family = AF_INET6;
	out->salen = sizeof(*s6);
	return 1;
}

struct dns_query *dns_resolve_addr(struct dns_resolver *r, const char *host, uint16_t port,
                                   dns_addr_cb cb, void *arg)
{
	struct dns_query *q = query_new(r, KIND_ADDR, port, arg);
	struct dns_addr lit;

	if (!q)
		return NULL;
	q->cb.addr = cb;
	if (numeric_addr(host, &lit)) {
		struct answer *a = answer_new(KIND_ADDR, "", DNS_OK, 1, 0);
		if (!a) {
			query_free(q);
			return NULL;
		}
		a->addrs[0] = lit;
		query_ready(q, DNS_OK, a);
		answer_unref(a);
		return q;
	}
	if (query_start(q, host) < 0) {
		query_free(q);
		return NULL;
	}
	return q;
}

void dns_cancel(struct dns_query *q)
{
	if (!q || q->calling)
		return;
	list_del(&q->link);
	query_free(q);
}

void dns_get_stats(const struct dns_resolver *r, struct dns_stats *out)
{
	*out = r->stats;
	out->cached = (unsigned)r->cache.count;
	out->cached_records = r->cache_used;
}

const char *dns_strerror(int status)
{
	switch (status) {
	case DNS_OK:
		return "no error";
	case DNS_ENOTFOUND:
		return "no such name or records";
	case DNS_ETIMEOUT:
		return "no answer from the DNS server";
	case DNS_ESERVFAIL:
		return "DNS server failure or bad answer";
	case DNS_ENOMEM:
		return "out of memory";
	}
	return "unknown DNS error";
}

/* Parses opt->server into *node. Returns 0, or -1 when it is not numeric. */
static int server_node(const struct dns_options *opt, struct ares_addr_port_node *node)
{
	memset(node, 0, sizeof(*node));
	if (inet_pton(AF_INET, opt->server, &node->addr.addr4) == 1)
		node->family = AF_INET;
	else if (inet_pton(AF_INET6, opt->server, &node->addr.addr6) == 1)
		node->family = AF_INET6;
	else
		return -1;
	node->udp_port = node->tcp_port = opt->port ? opt->port : 53;
	return 0;
}

struct dns_resolver *dns_resolver_new(struct ev_loop *loop, const struct dns_options *opt,
                                      char *err, size_t errlen)
{
	static const struct dns_options defaults = { .cache_records = DNS_CACHE_RECORDS_DEFAULT };
	struct ares_addr_port_node server;
	struct ares_options ao;
	struct dns_resolver *r;
	int rc;

	if (!opt)
		opt = &defaults;
	if (opt->server && server_node(opt, &server) < 0) {
		snprintf(err, errlen, "DNS server \"%s\" is not a numeric IP address", opt->server);
		return NULL;
	}
	if (!(r = calloc(1, sizeof(*r)))) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if ((rc = ares_library_init(ARES_LIB_INIT_ALL)) != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
		free(r);
		return NULL;
	}
	r->loop = loop;
	r->tries = opt->tries ? opt->tries : 2;
	r->cache_max = opt->cache_records;
	r->rng = opt->seed ? opt->seed : random_seed(r);
	list_init(&r->lru);
	list_init(&r->ready);
	list_init(&r->batch);
	ev_init(&r->ready_timer, ready_cb);
	r->ready_timer.data = r;
	ev_init(&r->ares_timer, ares_timer_cb);
	r->ares_timer.data = r;

	memset(&ao, 0, sizeof(ao));
	/*
	 * Absolute names; SERVFAIL and REFUSED answers are not taken as answers
	 * (no NOCHECKRESP); no EDNS, so answers over 512 bytes come truncated and
	 * c-ares asks again over TCP, which every server supports. One try per
	 * c-ares query: ares_cb makes the rounds, at a constant timeout.
	 */
	ao.flags = ARES_FLAG_NOSEARCH | ARES_FLAG_NOALIASES;
	ao.timeout = opt->timeout_ms == 0 ? 2000 : opt->timeout_ms > INT_MAX ? INT_MAX : (int)opt->timeout_ms;
	ao.tries = 1;
	ao.sock_state_cb = sock_state_cb;
	ao.sock_state_cb_data = r;
	rc = ares_init_options(&r->channel, &ao,
	                       ARES_OPT_FLAGS | ARES_OPT_TIMEOUTMS | ARES_OPT_TRIES | ARES_OPT_SOCK_STATE_CB);
	if (rc != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: %s", ares_strerror(rc));
		ares_library_cleanup();
		free(r);
		return NULL;
	}
	if (opt->server && (rc = ares_set_servers_ports(r->channel, &server)) != ARES_SUCCESS) {
		snprintf(err, errlen, "c-ares: DNS server %s: %s", opt->server, ares_strerror(rc));
		resolver_destroy(r);
		return NULL;
	}
	return r;
}

static void resolver_destroy(struct dns_resolver *r)
{
	r->closing = 1;
	/* Calls back every request in flight with ARES_EDESTRUCTION, which frees
	 * their lookups and the queries waiting on them; closes the sockets. */
	ares_destroy(r->channel);
	free_queries(&r->ready);
	free_queries(&r->batch);
	htab_foreach(&r->cache, cache_drop_one, r);
	htab_free(&r->cache);
	htab_free(&r->lookups);
	while (r->socks) {
		struct sock_watch *w = r->socks;
		r->socks = w->next;
		ev_io_stop(r->loop, &w->io);
		free(w);
	}
	ev_timer_stop(r->loop, &r->ready_timer);
	ev_timer_stop(r->loop, &r->ares_timer);
	ares_library_cleanup();
	free(r);
}

void dns_resolver_free(struct dns_resolver *r)
{
	if (!r)
		return;
	if (r->calling) {
		r->closing = 1; /* ready_cb finishes it when the callback returns */
		return;
	}
	resolver_destroy(r);
}
