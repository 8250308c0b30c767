#include "clu_member.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "clu_msg.h"
#include "htab.h"

struct node {
	struct htab_node by_name;
	struct clu_member pub;
	char name[CLU_NAME_MAX + 1];
	double suspect_start;          /* when the suspicion began */
	unsigned confirmations;        /* independent suspicions since */
	char accusers[8][CLU_NAME_MAX + 1]; /* who suspected it: the first, then confirmations */
	unsigned naccusers;
};

/* A piece of news: a packed Gossip message about one thing (a node, a record). */
struct news {
	char *about;
	uint8_t *bytes;
	size_t len;
	unsigned sent;
	uint64_t seq;                  /* queue order among equals */
};

struct clu_members {
	struct clu_timing t;
	struct node **nodes;           /* nodes[0] is ourselves */
	unsigned n, cap;
	struct htab by_name;
	unsigned awareness;
	int leaving;
	uint64_t rng;
	struct node **order;           /* this probe round's order */
	unsigned norder, next;
	int order_stale;               /* a node was forgotten: rebuild */
	struct news *news;
	unsigned nnews, news_cap;
	uint64_t news_seq;
	clu_change_fn on_change;
	void *change_arg;
};

const char *clu_state_name(enum clu_state s)
{
	switch (s) {
	case CLU_ALIVE: return "alive";
	case CLU_SUSPECT: return "suspect";
	case CLU_DEAD: return "dead";
	case CLU_LEFT: return "left";
	}
	return "?";
}

void clu_timing_lan(struct clu_timing *t)
{
	*t = (struct clu_timing){
		.probe_interval = 1.0,
		.probe_timeout = 0.5,
		.indirect_checks = 3,
		.retransmit_mult = 4,
		.suspicion_mult = 4,
		.suspicion_max_mult = 6,
		.awareness_max = 8,
		.dead_forget = 86400,   /* serf's reconnect_timeout */
		.left_forget = 30,
	};
}

/* ---- small helpers ---- */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

static unsigned rng_below(uint64_t *s, unsigned bound)
{
	return bound ? (unsigned)(rng_next(s) % bound) : 0;
}

static uint64_t name_hash(const char *name)
{
	return htab_hash(HTAB_SEED, name, strlen(name));
}

static int name_eq(const struct htab_node *n, const void *key)
{
	return strcmp(((const struct node *)(const void *)n)->name, key) == 0;
}

static struct node *lookup(const struct clu_members *m, const char *name)
{
	return (struct node *)(void *)htab_find(&m->by_name, name_hash(name), name_eq, name);
}

static void notify(struct clu_members *m, struct node *n, enum clu_state old)
{
	if (m->on_change)
		m->on_change(m->change_arg, &n->pub, old);
}

static void set_state(struct clu_members *m, struct node *n, enum clu_state st, double now)
{
	enum clu_state old = n->pub.state;
	n->pub.state = st;
	n->pub.since = now;
	if (st != CLU_SUSPECT)
		n->naccusers = n->confirmations = 0;
	notify(m, n, old);
}

/* ---- the news queue ---- */

static unsigned retransmit_limit(const struct clu_members *m)
{
	double n = clu_alive_count(m);
	return m->t.retransmit_mult * (unsigned)ceil(log10(n + 1));
}

static void news_drop(struct clu_members *m, unsigned i)
{
	free(m->news[i].bytes);
	free(m->news[i].about);
	m->news[i] = m->news[--m->nnews];
}

int clu_queue_news(struct clu_members *m, const char *about, const clu_gossip *g)
{
	for (unsigned i = 0; i < m->nnews; i++)
		if (strcmp(m->news[i].about, about) == 0) {
			news_drop(m, i);
			break;
		}
	if (m->nnews == m->news_cap) {
		unsigned cap = m->news_cap ? 2 * m->news_cap : 16;
		struct news *grown = realloc(m->news, cap * sizeof(*grown));
		if (!grown)
			return -1;
		m->news = grown;
		m->news_cap = cap;
	}
	size_t len = edgepool__cluster__v1__gossip__get_packed_size(g);
	uint8_t *bytes = malloc(len ? len : 1);
	char *copy = strdup(about);
	if (!bytes || !copy) {
		free(bytes);
		free(copy);
		return -1;
	}
	edgepool__cluster__v1__gossip__pack(g, bytes);
	struct news *nw = &m->news[m->nnews++];
	memset(nw, 0, sizeof(*nw));
	nw->about = copy;
	nw->bytes = bytes;
	nw->len = len;
	nw->seq = m->news_seq++;
	return 0;
}

static void fill_address(Edgepool__Cluster__V1__Address *a, const struct clu_member *p,
                         uint8_t ip[16])
{
	if (p->addr.ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)&p->addr;
		memcpy(ip, &s6->sin6_addr, 16);
		a->ip.len = 16;
		a->port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)&p->addr;
		memcpy(ip, &s4->sin_addr, 4);
		a->ip.len = 4;
		a->port = ntohs(s4->sin_port);
	}
	a->ip.data = ip;
}

static int queue_alive(struct clu_members *m, const struct node *n)
{
	clu_gossip g = EDGEPOOL__CLUSTER__V1__GOSSIP__INIT;
	Edgepool__Cluster__V1__Alive a = EDGEPOOL__CLUSTER__V1__ALIVE__INIT;
	Edgepool__Cluster__V1__Address addr = EDGEPOOL__CLUSTER__V1__ADDRESS__INIT;
	Edgepool__Cluster__V1__Alive__MetaEntry role = EDGEPOOL__CLUSTER__V1__ALIVE__META_ENTRY__INIT;
	Edgepool__Cluster__V1__Alive__MetaEntry *meta = &role;
	uint8_t ip[16];
	fill_address(&addr, &n->pub, ip);
	a.node = (char *)n->name;
	a.incarnation = n->pub.incarnation;
	a.addr = &addr;
	if (n->pub.observer) {
		role.key = CLU_ROLE_KEY;
		role.value = CLU_ROLE_OBSERVER;
		a.n_meta = 1;
		a.meta = &meta;
	}
	g.item_case = EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_ALIVE;
	g.alive = &a;
	return clu_queue_news(m, n->name, &g);
}

static int queue_suspect(struct clu_members *m, const struct node *n, const char *from)
{
	clu_gossip g = EDGEPOOL__CLUSTER__V1__GOSSIP__INIT;
	Edgepool__Cluster__V1__Suspect s = EDGEPOOL__CLUSTER__V1__SUSPECT__INIT;
	s.node = (char *)n->name;
	s.incarnation = n->pub.incarnation;
	s.from = (char *)from;
	g.item_case = EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_SUSPECT;
	g.suspect = &s;
	return clu_queue_news(m, n->name, &g);
}

static int queue_dead(struct clu_members *m, const struct node *n, const char *from)
{
	clu_gossip g = EDGEPOOL__CLUSTER__V1__GOSSIP__INIT;
	Edgepool__Cluster__V1__Dead d = EDGEPOOL__CLUSTER__V1__DEAD__INIT;
	d.node = (char *)n->name;
	d.incarnation = n->pub.incarnation;
	d.from = (char *)from;
	g.item_case = EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_DEAD;
	g.dead = &d;
	return clu_queue_news(m, n->name, &g);
}

static int fewest_sent_first(const void *a, const void *b)
{
	const struct news *x = a, *y = b;
	if (x->sent != y->sent)
		return x->sent < y->sent ? -1 : 1;
	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Field 7 (gossip), wire type 2: the tag byte, then the length as a varint. */
static size_t frame_header(uint8_t *out, size_t len)
{
	size_t n = 0;
	out[n++] = (7 << 3) | 2;
	do {
		uint8_t b = len & 0x7f;
		len >>= 7;
		out[n++] = len ? (b | 0x80) : b;
	} while (len);
	return n;
}

size_t clu_take_news(struct clu_members *m, uint8_t *buf, size_t len)
{
	size_t used = 0;
	unsigned limit = retransmit_limit(m);
	qsort(m->news, m->nnews, sizeof(*m->news), fewest_sent_first);
	for (unsigned i = 0; i < m->nnews;) {
		struct news *nw = &m->news[i];
		uint8_t hdr[11];
		size_t h = frame_header(hdr, nw->len);
		if (used + h + nw->len > len) {
			i++;
			continue; /* a smaller item further on may still fit */
		}
		memcpy(buf + used, hdr, h);
		memcpy(buf + used + h, nw->bytes, nw->len);
		used += h + nw->len;
		if (++nw->sent >= limit)
			news_drop(m, i); /* the last item moves here: look at i again */
		else
			i++;
	}
	return used;
}

unsigned clu_news_count(const struct clu_members *m)
{
	return m->nnews;
}

/* ---- the table ---- */

static struct node *node_add(struct clu_members *m, const char *name, uint64_t inc,
                             const struct sockaddr *addr, socklen_t addrlen, double now)
{
	if (!clu_name_valid(name) || addrlen > sizeof(struct sockaddr_storage))
		return NULL;
	if (m->n == m->cap) {
		unsigned cap = m->cap ? 2 * m->cap : 16;
		struct node **grown = realloc(m->nodes, cap * sizeof(*grown));
		if (!grown)
			return NULL;
		m->nodes = grown;
		m->cap = cap;
	}
	struct node *n = calloc(1, sizeof(*n));
	if (!n)
		return NULL;
	strcpy(n->name, name);
	n->pub.name = n->name;
	memcpy(&n->pub.addr, addr, addrlen);
	n->pub.addrlen = addrlen;
	n->pub.incarnation = inc;
	n->pub.state = CLU_ALIVE;
	n->pub.since = now;
	htab_insert(&m->by_name, &n->by_name, name_hash(name));
	m->nodes[m->n++] = n;
	/* A newcomer joins this probe round at a random place still ahead; we never probe ourselves. */
	if (m->n == 1)
		return n;
	struct node **order = realloc(m->order, m->n * sizeof(*order));
	if (order) {
		m->order = order;
		unsigned at = m->next + rng_below(&m->rng, m->norder - m->next + 1);
		memmove(&order[at + 1], &order[at], (m->norder - at) * sizeof(*order));
		order[at] = n;
		m->norder++;
	} else {
		m->order_stale = 1;
	}
	return n;
}

static void node_forget(struct clu_members *m, unsigned i)
{
	struct node *n = m->nodes[i];
	htab_remove(&m->by_name, &n->by_name);
	m->nodes[i] = m->nodes[--m->n];
	free(n);
	m->order_stale = 1;
}

struct clu_members *clu_members_new(const char *self, const struct sockaddr *addr,
                                    socklen_t addrlen, const struct clu_timing *t,
                                    uint64_t seed, double now)
{
	struct clu_members *m = calloc(1, sizeof(*m));
	if (!m)
		return NULL;
	m->t = *t;
	if (!seed && getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
		seed = (uint64_t)time(NULL) ^ (uint64_t)(uintptr_t)m;
	m->rng = seed;
	struct node *me = node_add(m, self, 1, addr, addrlen, now);
	if (!me || queue_alive(m, me) < 0) {
		clu_members_free(m);
		return NULL;
	}
	return m;
}

void clu_members_free(struct clu_members *m)
{
	if (!m)
		return;
	for (unsigned i = 0; i < m->n; i++)
		free(m->nodes[i]);
	for (unsigned i = 0; i < m->nnews; i++) {
		free(m->news[i].bytes);
		free(m->news[i].about);
	}
	free(m->news);
	free(m->nodes);
	free(m->order);
	htab_free(&m->by_name);
	free(m);
}

void clu_members_on_change(struct clu_members *m, clu_change_fn fn, void *arg)
{
	m->on_change = fn;
	m->change_arg = arg;
}

const struct clu_member *clu_self(const struct clu_members *m)
{
	return &m->nodes[0]->pub;
}

const struct clu_member *clu_find(const struct clu_members *m, const char *name)
{
	struct node *n = lookup(m, name);
	return n ? &n->pub : NULL;
}

unsigned clu_alive_count(const struct clu_members *m)
{
	unsigned k = 0;
	for (unsigned i = 0; i < m->n; i++)
		k += m->nodes[i]->pub.state <= CLU_SUSPECT;
	return k;
}

unsigned clu_alive_nodes(const struct clu_members *m)
{
	unsigned k = 0;
	for (unsigned i = 0; i < m->n; i++)
		k += m->nodes[i]->pub.state <= CLU_SUSPECT && !m->nodes[i]->pub.observer;
	return k;
}

int clu_set_observer(struct clu_members *m)
{
	m->nodes[0]->pub.observer = 1;
	return queue_alive(m, m->nodes[0]);
}

unsigned clu_count(const struct clu_members *m)
{
	return m->n;
}

const struct clu_member *clu_member_at(const struct clu_members *m, unsigned i)
{
	return i < m->n ? &m->nodes[i]->pub : NULL;
}

/* Refutes news that we are suspect or dead: a higher incarnation, told to all. */
static int refute(struct clu_members *m, uint64_t accused_at)
{
	struct node *me = m->nodes[0];
	if (accused_at >= me->pub.incarnation)
		me->pub.incarnation = accused_at + 1;
	return queue_alive(m, me) < 0 ? -1 : 1;
}

int clu_on_alive(struct clu_members *m, const char *node, uint64_t inc,
                 const struct sockaddr *addr, socklen_t addrlen, int observer, double now)
{
	struct node *n = lookup(m, node);
	if (n == m->nodes[0]) {
		/* A restart left an older, higher incarnation of us in the cluster. */
		if (inc <= n->pub.incarnation || m->leaving)
			return 0;
		return refute(m, inc);
	}
	if (!n) {
		n = node_add(m, node, inc, addr, addrlen, now);
		if (!n)
			return -1;
		n->pub.observer = observer;
		notify(m, n, CLU_ALIVE);
		return queue_alive(m, n) < 0 ? -1 : 1;
	}
	if (inc <= n->pub.incarnation)
		return 0;
	n->pub.observer = observer;
	memcpy(&n->pub.addr, addr, addrlen);
	n->pub.addrlen = addrlen;
	n->pub.incarnation = inc;
	if (n->pub.state != CLU_ALIVE)
		set_state(m, n, CLU_ALIVE, now);
	return queue_alive(m, n) < 0 ? -1 : 1;
}

/* Lifeguard: the suspicion timeout, shrinking with independent confirmations. */
static double suspicion_timeout(const struct clu_members *m, const struct node *n)
{
	double alive = clu_alive_count(m);
	double min = m->t.suspicion_mult * fmax(1.0, log10(alive)) * m->t.probe_interval;
	double max = m->t.suspicion_max_mult * min;
	/* Confirmations we can expect: as memberlist, suspicion_mult - 2, if there are that many others. */
	double k = m->t.suspicion_mult - 2;
	if (alive - 2 < k)
		k = 0;
	if (k < 1)
		return min;
	double frac = log((double)n->confirmations + 1) / log(k + 1);
	return fmax(min, max - (max - min) * fmin(frac, 1.0));
}

static int accused_by(const struct node *n, const char *from)
{
	for (unsigned i = 0; i < n->naccusers; i++)
		if (strcmp(n->accusers[i], from) == 0)
			return 1;
	return 0;
}

int clu_on_suspect(struct clu_members *m, const char *node, uint64_t inc, const char *from,
                   double now)
{
	struct node *n = lookup(m, node);
	if (!n || inc < n->pub.incarnation)
		return 0;
	if (n == m->nodes[0]) {
		if (m->leaving)
			return 0;
		/* Lifeguard: being suspected says something about our own health too. */
		if (m->awareness < m->t.awareness_max)
			m->awareness++;
		return refute(m, inc);
	}
	if (n->pub.state == CLU_DEAD || n->pub.state == CLU_LEFT)
		return 0;
	if (n->pub.state == CLU_SUSPECT) {
		if (inc > n->pub.incarnation)
			n->pub.incarnation = inc;
		if (accused_by(n, from) || n->naccusers == 8)
			return 0;
		strcpy(n->accusers[n->naccusers++], from);
		n->confirmations++;
		return queue_suspect(m, n, from) < 0 ? -1 : 1;
	}
	n->pub.incarnation = inc;
	n->suspect_start = now;
	n->confirmations = 0;
	set_state(m, n, CLU_SUSPECT, now);
	strcpy(n->accusers[0], from);
	n->naccusers = 1;
	return queue_suspect(m, n, from) < 0 ? -1 : 1;
}

int clu_on_dead(struct clu_members *m, const char *node, uint64_t inc, const char *from,
                double now)
{
	struct node *n = lookup(m, node);
	if (!n || inc < n->pub.incarnation)
		return 0;
	if (n == m->nodes[0])
		return m->leaving ? 0 : refute(m, inc);
	/* A node's own word that it left wins over our finding it dead: the same end, said right. */
	if (n->pub.state == CLU_DEAD && strcmp(from, node) == 0 && inc == n->pub.incarnation) {
		set_state(m, n, CLU_LEFT, now);
		return queue_dead(m, n, from) < 0 ? -1 : 1;
	}
	if (n->pub.state == CLU_DEAD || n->pub.state == CLU_LEFT)
		return 0;
	n->pub.incarnation = inc;
	set_state(m, n, strcmp(from, node) == 0 ? CLU_LEFT : CLU_DEAD, now);
	return queue_dead(m, n, from) < 0 ? -1 : 1;
}

int clu_leave(struct clu_members *m, double now)
{
	struct node *me = m->nodes[0];
	m->leaving = 1;
	set_state(m, me, CLU_LEFT, now);
	return queue_dead(m, me, me->name) < 0 ? -1 : 0;
}

int clu_repeat_leave(struct clu_members *m)
{
	struct node *me = m->nodes[0];
	return m->leaving ? queue_dead(m, me, me->name) : -1;
}

/* ---- probing ---- */

static void shuffle_round(struct clu_members *m)
{
	struct node **order = realloc(m->order, (m->n ? m->n : 1) * sizeof(*order));
	if (!order)
		return;
	m->order = order;
	m->norder = 0;
	for (unsigned i = 1; i < m->n; i++)
		order[m->norder++] = m->nodes[i];
	for (unsigned i = m->norder; i > 1; i--) {
		unsigned j = rng_below(&m->rng, i);
		struct node *tmp = order[i - 1];
		order[i - 1] = order[j];
		order[j] = tmp;
	}
	m->next = 0;
	m->order_stale = 0;
}

const struct clu_member *clu_next_probe(struct clu_members *m)
{
	if (m->order_stale)
		shuffle_round(m);
	/* At most one fresh round: everyone else may be dead. */
	for (int rounds = 0; rounds < 2; rounds++) {
		while (m->next < m->norder) {
			struct node *n = m->order[m->next++];
			if (n->pub.state <= CLU_SUSPECT)
				return &n->pub;
		}
		shuffle_round(m);
	}
	return NULL;
}

const struct clu_member *clu_pick_dead(struct clu_members *m)
{
	const struct clu_member *pick = NULL;
	unsigned dead = 0;
	for (unsigned i = 1; i < m->n; i++)
		if (m->nodes[i]->pub.state == CLU_DEAD && rng_below(&m->rng, ++dead) == 0)
			pick = &m->nodes[i]->pub;
	return pick;
}

unsigned clu_pick_relays(struct clu_members *m, const char *target, const struct clu_member **out,
                         unsigned want)
{
	unsigned got = 0, live = 0;
	/* Reservoir sampling over the alive members other than us and the target. */
	for (unsigned i = 1; i < m->n; i++) {
		struct node *n = m->nodes[i];
		if (n->pub.state != CLU_ALIVE || strcmp(n->name, target) == 0)
			continue;
		live++;
		if (got < want)
			out[got++] = &n->pub;
		else {
			unsigned j = rng_below(&m->rng, live);
			if (j < want)
				out[j] = &n->pub;
		}
	}
	return got;
}

unsigned clu_pick_nodes(struct clu_members *m, const struct clu_member **out, unsigned want)
{
	unsigned got = 0, live = 0;
	/* Reservoir sampling over the alive nodes other than us. */
	for (unsigned i = 1; i < m->n; i++) {
		struct node *n = m->nodes[i];
		if (n->pub.state != CLU_ALIVE || n->pub.observer)
			continue;
		live++;
		if (got < want) {
			out[got++] = &n->pub;
		} else {
			unsigned j = rng_below(&m->rng, live);
			if (j < want)
				out[j] = &n->pub;
		}
	}
	return got;
}

double clu_probe_interval(const struct clu_members *m)
{
	return m->t.probe_interval * (m->awareness + 1);
}

double clu_probe_timeout(const struct clu_members *m)
{
	return m->t.probe_timeout * (m->awareness + 1);
}

unsigned clu_awareness(const struct clu_members *m)
{
	return m->awareness;
}

static void awareness_add(struct clu_members *m, int delta)
{
	int a = (int)m->awareness + delta;
	m->awareness = a < 0 ? 0 : (unsigned)a > m->t.awareness_max ? m->t.awareness_max : (unsigned)a;
}

int clu_probe_done(struct clu_members *m, const char *target, int acked, unsigned nacks_expected,
                   unsigned nacks_received, double now)
{
	if (acked == 2) {            /* answered directly: we are healthy */
		awareness_add(m, -1);
		return 0;
	}
	if (acked == 1)              /* answered through a relay: no news about us */
		return 0;
	/* Lifeguard: relays that did not even nack point at us, not at the target. */
	awareness_add(m, nacks_expected ? (int)(nacks_expected - nacks_received) : 1);
	struct node *n = lookup(m, target);
	if (!n || n == m->nodes[0])
		return 0;
	return clu_on_suspect(m, target, n->pub.incarnation, m->nodes[0]->name, now);
}

double clu_tick(struct clu_members *m, double now)
{
	double next = 0;
	for (unsigned i = 1; i < m->n;) {
		struct node *n = m->nodes[i];
		if (n->pub.state == CLU_SUSPECT) {
			double deadline = n->suspect_start + suspicion_timeout(m, n);
			if (deadline <= now) {
				set_state(m, n, CLU_DEAD, now);
				queue_dead(m, n, m->nodes[0]->name);
			} else if (!next || deadline < next) {
				next = deadline;
			}
		}
		if (n->pub.state >= CLU_DEAD) {
			double forget = n->pub.since + (n->pub.state == CLU_DEAD ? m->t.dead_forget
			                                                         : m->t.left_forget);
			if (forget <= now) {
				node_forget(m, i);
				continue;
			}
			if (!next || forget < next)
				next = forget;
		}
		i++;
	}
	return next;
}
