#include "thr.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "htab.h"
#include "list.h"

/* Other nodes of the pool that report on one partner, at most. */
#define REMOTE_MAX 32

/* What another node saw of a partner in a period (thr_set_remote()). */
struct remote {
	char node[64];
	uint64_t period;
	struct thr_part part;
};

struct partner {
	struct htab_node by_name;
	struct list_node lru;        /* most recently seen last */
	char *domain;
	double period_start;
	double tokens;               /* the token bucket of the rate */
	double last;                 /* when tokens was last refilled */
	uint64_t *contacts;          /* open addressing set of contact hashes, 0 = empty */
	unsigned ncontacts, contacts_cap;
	unsigned responses, failures;
	int blocked, suspicious;
	struct remote remotes[REMOTE_MAX];
	unsigned nremotes;
	int dirty;                   /* our part changed since thr_take_changes() */
	struct list_node dirty_link;
};

struct thr_table {
	struct thr_limits lim;
	struct htab partners;
	struct list_node lru;
	struct list_node dirty;
	unsigned npartners;
	unsigned pool_size;          /* live nodes sharing the rate */
	unsigned long long rate_refused, contacts_refused;
};

static uint64_t name_hash(const char *domain)
{
	return htab_hash_nocase(HTAB_SEED, domain, strlen(domain));
}

static int name_eq(const struct htab_node *n, const void *key)
{
	const struct partner *p = (const struct partner *)(const void *)n;
	return strcasecmp(p->domain, key) == 0;
}

static void partner_free(struct thr_table *t, struct partner *p)
{
	htab_remove(&t->partners, &p->by_name);
	list_del(&p->lru);
	if (p->dirty)
		list_del(&p->dirty_link);
	t->npartners--;
	free(p->contacts);
	free(p->domain);
	free(p);
}

struct thr_table *thr_new(const struct thr_limits *lim)
{
	struct thr_table *t = calloc(1, sizeof(*t));
	if (!t)
		return NULL;
	t->lim = *lim;
	t->pool_size = 1;
	list_init(&t->lru);
	list_init(&t->dirty);
	return t;
}

void thr_free(struct thr_table *t)
{
	if (!t)
		return;
	while (!list_empty(&t->lru))
		partner_free(t, list_entry(t->lru.next, struct partner, lru));
	htab_free(&t->partners);
	free(t);
}

/* The pool shares the partner's rate: each of its nodes takes a part. */
static unsigned rate_of(const struct thr_table *t, const struct partner *p)
{
	if (p->suspicious)
		return 1;
	unsigned share = t->lim.rate / (t->pool_size ? t->pool_size : 1);
	return share ? share : 1;
}

/* Periods are aligned on the wall clock, so that every node of the pool counts the same one. */
static double period_of(double now, double period)
{
	return (double)(uint64_t)(now / period) * period;
}

static void mark_dirty(struct thr_table *t, struct partner *p)
{
	if (!p->dirty) {
		p->dirty = 1;
		list_add_tail(&t->dirty, &p->dirty_link);
	}
}

/* The pool's sums for the current period: ours and the other nodes'. */
static void pool_sums(const struct partner *p, uint64_t period, unsigned *contacts,
                      unsigned *responses, unsigned *failures)
{
	*contacts = p->ncontacts;
	*responses = p->responses;
	*failures = p->failures;
	for (unsigned i = 0; i < p->nremotes; i++)
		if (p->remotes[i].period == period) {
			*contacts += p->remotes[i].part.contacts;
			*responses += p->remotes[i].part.responses;
			*failures += p->remotes[i].part.failures;
		}
}

/* A new period forgets contacts, responses and the verdicts they led to. */
static void roll_period(struct partner *p, double now, double period)
{
	double start = period_of(now, period);
	if (start == p->period_start)
		return;
	p->period_start = start;
	free(p->contacts);
	p->contacts = NULL;
	p->ncontacts = p->contacts_cap = 0;
	p->responses = p->failures = 0;
	p->blocked = p->suspicious = 0;
}

static struct partner *find(struct thr_table *t, const char *domain)
{
	return (struct partner *)(void *)htab_find(&t->partners, name_hash(domain), name_eq, domain);
}

static struct partner *lookup(struct thr_table *t, const char *domain, double now)
{
	struct partner *p = find(t, domain);
	if (p) {
		list_del(&p->lru);
		list_add_tail(&t->lru, &p->lru);
		return p;
	}
	if (t->npartners >= THR_MAX_PARTNERS)
		partner_free(t, list_entry(t->lru.next, struct partner, lru));
	p = calloc(1, sizeof(*p));
	if (!p || !(p->domain = strdup(domain))) {
		free(p);
		return NULL;
	}
	p->period_start = period_of(now, t->lim.period_s);
	p->tokens = rate_of(t, p);
	p->last = now;
	htab_insert(&t->partners, &p->by_name, name_hash(domain));
	list_add_tail(&t->lru, &p->lru);
	t->npartners++;
	return p;
}

/* Adds a contact's hash; returns 1 when it was new, -1 when out of memory. */
static int contact_add(struct partner *p, uint64_t h)
{
	if (h == 0)
		h = 1;
	if (2 * (p->ncontacts + 1) > p->contacts_cap) {
		unsigned ncap = p->contacts_cap ? 2 * p->contacts_cap : 64;
		uint64_t *n = calloc(ncap, sizeof(*n));
		if (!n)
			return -1;
		for (unsigned i = 0; i < p->contacts_cap; i++) {
			if (!p->contacts[i])
				continue;
			unsigned j = (unsigned)(p->contacts[i] & (ncap - 1));
			while (n[j])
				j = (j + 1) & (ncap - 1);
			n[j] = p->contacts[i];
		}
		free(p->contacts);
		p->contacts = n;
		p->contacts_cap = ncap;
	}
	unsigned j = (unsigned)(h & (p->contacts_cap - 1));
	while (p->contacts[j]) {
		if (p->contacts[j] == h)
			return 0;
		j = (j + 1) & (p->contacts_cap - 1);
	}
	p->contacts[j] = h;
	p->ncontacts++;
	return 1;
}

static unsigned period_left(const struct thr_table *t, const struct partner *p, double now)
{
	double left = t->lim.period_s - (now - p->period_start);
	return left < 1 ? 1 : (unsigned)(left + 0.5);
}

void thr_admit(struct thr_table *t, const char *domain, const char *contact, size_t contact_len,
               double now, struct thr_result *out)
{
	memset(out, 0, sizeof(*out));
	struct partner *p = lookup(t, domain, now);
	if (!p) {
		out->rate = t->lim.rate;
		return; /* out of memory: no state, no protection, but no outage either */
	}
	roll_period(p, now, t->lim.period_s);
	unsigned rate = rate_of(t, p);
	out->rate = rate;
	out->suspicious = p->suspicious;
	if (p->blocked) {
		out->verdict = THR_BLOCKED;
		out->retry_after = period_left(t, p, now);
		t->contacts_refused++;
		return;
	}
	/* Lowercase host, user as given: bob@Fabrikam.test is bob@fabrikam.test. */
	const char *at = memchr(contact, '@', contact_len);
	size_t ulen = at ? (size_t)(at - contact) : contact_len;
	uint64_t h = htab_hash(HTAB_SEED, contact, ulen);
	h = htab_hash_nocase(h, contact + ulen, contact_len - ulen);
	unsigned contacts, responses, failures;
	int added = t->lim.contacts_limit ? contact_add(p, h) : 0;
	if (added == 1)
		mark_dirty(t, p);
	pool_sums(p, (uint64_t)(p->period_start / t->lim.period_s), &contacts, &responses, &failures);
	if (added == 1 && contacts > t->lim.max_contacts) {
		p->blocked = 1;
		out->changed = 1;
		out->verdict = THR_BLOCKED;
		out->retry_after = period_left(t, p, now);
		t->contacts_refused++;
		return;
	}
	p->tokens += (now - p->last) * rate;
	if (p->tokens > rate)
		p->tokens = rate;
	p->last = now;
	if (p->tokens < 1) {
		out->verdict = THR_RATE;
		out->retry_after = (unsigned)((1 - p->tokens) / rate) + 1;
		t->rate_refused++;
		return;
	}
	p->tokens -= 1;
}

int thr_response(struct thr_table *t, const char *domain, unsigned status, double now)
{
	struct partner *p = find(t, domain);
	if (!p || status < 200)
		return 0;
	roll_period(p, now, t->lim.period_s);
	p->responses++;
	p->failures += status >= 400;
	mark_dirty(t, p);
	unsigned contacts, responses, failures;
	pool_sums(p, (uint64_t)(p->period_start / t->lim.period_s), &contacts, &responses, &failures);
	if (p->suspicious || responses < THR_SUSPICIOUS_MIN_RESPONSES ||
	    100u * failures <= THR_SUSPICIOUS_FAILED_PERCENT * responses)
		return 0;
	p->suspicious = 1;
	if (p->tokens > 1)
		p->tokens = 1;
	return 1;
}

void thr_set_pool_size(struct thr_table *t, unsigned nodes)
{
	t->pool_size = nodes ? nodes : 1;
}

void thr_set_remote(struct thr_table *t, const char *domain, const char *node, uint64_t period,
                    const struct thr_part *part, double now)
{
	struct partner *p = lookup(t, domain, now);
	if (!p || strlen(node) >= sizeof(p->remotes[0].node))
		return;
	roll_period(p, now, t->lim.period_s);
	struct remote *r = NULL;
	for (unsigned i = 0; i < p->nremotes && !r; i++)
		if (strcmp(p->remotes[i].node, node) == 0)
			r = &p->remotes[i];
	if (!r && p->nremotes < REMOTE_MAX)
		r = &p->remotes[p->nremotes++];
	if (!r)
		return;
	strcpy(r->node, node);
	r->period = period;
	r->part = *part;
	/* The pool's sums may have crossed a limit: the next request will see it. */
	unsigned contacts, responses, failures;
	pool_sums(p, (uint64_t)(p->period_start / t->lim.period_s), &contacts, &responses, &failures);
	if (t->lim.contacts_limit && contacts > t->lim.max_contacts)
		p->blocked = 1;
	if (!p->suspicious && responses >= THR_SUSPICIOUS_MIN_RESPONSES &&
	    100u * failures > THR_SUSPICIOUS_FAILED_PERCENT * responses) {
		p->suspicious = 1;
		if (p->tokens > 1)
			p->tokens = 1;
	}
}

void thr_take_changes(struct thr_table *t, thr_part_fn fn, void *arg)
{
	while (!list_empty(&t->dirty)) {
		struct partner *p = list_entry(t->dirty.next, struct partner, dirty_link);
		struct thr_part part = { p->ncontacts, p->responses, p->failures };
		list_del(&p->dirty_link);
		p->dirty = 0;
		fn(arg, p->domain, (uint64_t)(p->period_start / t->lim.period_s), &part);
	}
}

void thr_get_stats(const struct thr_table *t, double now, struct thr_stats *out)
{
	memset(out, 0, sizeof(*out));
	out->partners = t->npartners;
	const struct list_node *n;
	for (n = t->lru.next; n != &t->lru; n = n->next) {
		const struct partner *p = list_entry(n, struct partner, lru);
		int current = period_of(now, t->lim.period_s) == p->period_start;
		out->blocked += current && p->blocked;
		out->suspicious += current && p->suspicious;
		if (current) {
			unsigned contacts, responses, failures;
			pool_sums(p, (uint64_t)(p->period_start / t->lim.period_s), &contacts, &responses,
			          &failures);
			out->pool_contacts += contacts;
		}
	}
	out->rate_refused = t->rate_refused;
	out->contacts_refused = t->contacts_refused;
}
