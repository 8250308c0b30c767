#include "xmpp_proxy.h"

#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accept.h"
#include "clu_node.h"
#include "clu_settings.h"
#include "dns.h"
#include "domain.h"
#include "list.h"
#include "log.h"
#include "sockaddr.h"
#include "tls.h"
#include "xmpp_s2s.h"
#include "xmpp_sub.h"

#define XMPP_PORT 5269
#define MAX_TARGETS 16           /* addresses tried for one partner */
#define MAX_SRV 8                /* SRV targets resolved for one partner */
#define MAX_QUEUED 1000          /* stanzas waiting for one outbound stream */
#define MAX_QUEUED_BYTES (4u << 20)
/*
 * A stream is given stanzas while less than this waits in it unwritten;
 * past it they wait in the pair's queue (bounded above) and their senders
 * for their answers. So a peer that reads slower than we are fed pushes
 * back on the SIP side (503 when the queue is full) instead of filling the
 * stream until it fails with stanzas already answered.
 */
#define STREAM_HIGH_WATER (256u << 10)
#define HOLD_TTL_MS (3600ull * 1000)  /* a stream holder record */
#define STATUS_STREAMS 100       /* streams listed in the status, at most */

struct listener {
	struct xmpp_proxy *px;
	int fd;
	ev_io io;
	struct accept_rest rest;
};

/* How a partner is reached: the resolution of its domain into addresses. */
struct resolve {
	struct xmpp_proxy *px;
	const struct cfg_xmpp_partner *partner;
	char domain[254];
	struct dns_query *q;
	char srv_names[MAX_SRV][254];
	uint16_t srv_ports[MAX_SRV];
	unsigned nsrv, next_srv;
	struct xmpp_s2s_target targets[MAX_TARGETS];
	unsigned ntargets;
	void (*done)(struct resolve *r, const char *error); /* error NULL: targets found */
};

/* A stanza waiting for the outbound stream of its pair. */
struct queued {
	struct list_node link;
	struct xmpp_xml_elem *stanza;     /* owned */
	size_t bytes;
	xmpp_proxy_sent_fn done;          /* NULL: nobody waits for it */
	void *arg;
};

/* Our outbound stanza stream for one pair: local (ours) -> remote (theirs). */
struct out_pair {
	struct list_node link;
	struct xmpp_proxy *px;
	char local[254], remote[254];
	const struct cfg_xmpp_partner *partner;
	struct resolve res;
	struct xmpp_s2s *s;               /* NULL while resolving */
	struct list_node queue;           /* struct queued */
	unsigned nqueued;
	size_t queued_bytes;
};

/* A dialback key being checked with the sender's authoritative server. */
struct db_check {
	struct list_node link;
	struct xmpp_proxy *px;
	struct xmpp_s2s *in;              /* the stream that got the key; NULL once gone */
	struct xmpp_s2s *v;               /* the verify stream; NULL while resolving */
	char local[254], remote[254], id[128], key[XMPP_S2S_DB_KEY_MAX + 1];
	struct resolve res;
};

/* What the gateway keeps of each stream (its user pointer). */
struct stream_link {
	struct list_node link;
	struct xmpp_s2s *s;
	const struct cfg_xmpp_partner *partner;  /* NULL until known */
	struct out_pair *out;             /* an outbound stanza stream's pair */
	struct db_check *check;           /* a verify stream's check */
};


struct proxy_stats {
	unsigned long long streams_in, streams_out;   /* accepted / opened, ever */
	unsigned long long streams_failed;
	unsigned long long dialback_checks;           /* keys checked with an authoritative server */
	unsigned long long stanzas_out, stanzas_in;
};

struct xmpp_proxy {
	struct ev_loop *loop;
	const struct edge_cfg *cfg;
	const struct cfg_xmpp *x;
	struct dns_resolver *dns;
	struct xmpp_sub_store *holders;
	char node[64];                     /* this node's cluster name, or "self" */
	xmpp_proxy_stanza_fn on_stanza;
	void *arg;
	struct tls_ctx *tls_server, *tls_client;
	struct xmpp_s2s_env env;
	struct xmpp_s2s_policy *policies;  /* one per partner, in configuration order */
	struct listener *listeners;
	unsigned nlisteners;
	struct list_node streams;          /* struct stream_link */
	struct list_node outs;             /* struct out_pair */
	struct list_node checks;           /* struct db_check */
	struct proxy_stats stats;
	int closing;                       /* quiesced: nothing is answered */
};

/* ---- configuration look-ups ---- */

static const struct cfg_xmpp_partner *find_partner(const struct xmpp_proxy *px, const char *d,
                                                   size_t len)
{
	for (unsigned i = 0; i < px->x->npartners; i++) {
		const struct cfg_xmpp_partner *p = &px->x->partners[i];
		if (dom_eq(d, len, p->domain))
			return p;
		for (unsigned k = 0; k < p->nadditional_domains; k++)
			if (dom_eq(d, len, p->additional_domains[k]))
				return p;
	}
	return NULL;
}

static int is_our_domain(const struct xmpp_proxy *px, const char *d, size_t len)
{
	for (unsigned i = 0; i < px->x->ndomains; i++)
		if (dom_eq(d, len, px->x->domains[i]))
			return 1;
	return 0;
}

static const struct xmpp_s2s_policy *policy_of(const struct xmpp_proxy *px,
                                               const struct cfg_xmpp_partner *p)
{
	return &px->policies[p - px->x->partners];
}

/* The partner's streams into us that are still up (ours to it do not count). */
static unsigned streams_from(const struct xmpp_proxy *px, const struct cfg_xmpp_partner *p)
{
	unsigned n = 0;
	struct list_node *it, *tmp;
	list_for_each_safe(it, tmp, &px->streams) {
		struct stream_link *l = list_entry(it, struct stream_link, link);
		n += l->partner == p && !xmpp_s2s_is_outbound(l->s) && !xmpp_s2s_is_closing(l->s);
	}
	return n;
}

const struct cfg_xmpp_partner *xmpp_proxy_partner(const struct xmpp_proxy *px, const char *domain,
                                                  size_t len)
{
	return find_partner(px, domain, len);
}

int xmpp_proxy_serves(const struct xmpp_proxy *px, const char *domain, size_t len)
{
	return is_our_domain(px, domain, len);
}

/* ---- resolving a partner's servers ---- */

static void resolve_next_srv(struct resolve *r);

static void add_addrs(struct resolve *r, const struct dns_addr_answer *ans)
{
	for (unsigned i = 0; i < ans->n && r->ntargets < MAX_TARGETS; i++) {
		memcpy(&r->targets[r->ntargets].addr, &ans->addrs[i].sa, ans->addrs[i].salen);
		r->targets[r->ntargets].addrlen = ans->addrs[i].salen;
		r->ntargets++;
	}
}

static void addr_cb(void *arg, int status, const struct dns_addr_answer *ans)
{
	struct resolve *r = arg;
	r->q = NULL;
	if (status == DNS_OK)
		add_addrs(r, ans);
	if (r->next_srv < r->nsrv) {
		resolve_next_srv(r);
		return;
	}
	if (r->ntargets)
		r->done(r, NULL);
	else
		r->done(r, status == DNS_OK ? "no address" : dns_strerror(status));
}

static void resolve_next_srv(struct resolve *r)
{
	unsigned i = r->next_srv++;
	r->q = dns_resolve_addr(r->px->dns, r->srv_names[i], r->srv_ports[i], addr_cb, r);
	if (!r->q)
		r->done(r, "out of memory");
}

static void srv_cb(void *arg, int status, const struct dns_srv_answer *ans)
{
	struct resolve *r = arg;
	r->q = NULL;
	if (status == DNS_ENOTFOUND) {
		/* RFC 6120 3.2.2: no SRV records, the domain itself on 5269. */
		r->q = dns_resolve_addr(r->px->dns, r->domain, XMPP_PORT, addr_cb, r);
		if (!r->q)
			r->done(r, "out of memory");
		return;
	}
	if (status != DNS_OK) {
		r->done(r, dns_strerror(status));
		return;
	}
	for (unsigned i = 0; i < ans->n && r->nsrv < MAX_SRV; i++) {
		snprintf(r->srv_names[r->nsrv], sizeof(r->srv_names[0]), "%s", ans->targets[i].name);
		r->srv_ports[r->nsrv++] = ans->targets[i].port;
	}
	resolve_next_srv(r);
}

/* Starts resolving; r->done is called from the loop (DNS answers always come later). */
static void resolve_start(struct resolve *r)
{
	const struct cfg_server *srv = &r->partner->server;
	r->ntargets = r->nsrv = r->next_srv = 0;
	if (srv->fqdn || (srv->address && srv->address[0])) {
		/* A numeric address goes through the resolver too: done() comes from the loop. */
		snprintf(r->srv_names[0], sizeof(r->srv_names[0]), "%s",
		         srv->address && srv->address[0] ? srv->address : srv->fqdn);
		r->srv_ports[0] = srv->port ? srv->port : XMPP_PORT;
		r->nsrv = 1;
		resolve_next_srv(r);
		return;
	}
	char name[300];
	snprintf(name, sizeof(name), "_xmpp-server._tcp.%s", r->domain);
	r->q = dns_resolve_srv(r->px->dns, name, srv_cb, r);
	if (!r->q)
		r->done(r, "out of memory");
}

static void resolve_cancel(struct resolve *r)
{
	if (r->q)
		dns_cancel(r->q);
	r->q = NULL;
}

/* ---- stream bookkeeping ---- */

static struct stream_link *link_stream(struct xmpp_proxy *px, struct xmpp_s2s *s,
                                       const struct cfg_xmpp_partner *p)
{
	struct stream_link *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->s = s;
	l->partner = p;
	list_add_tail(&px->streams, &l->link);
	xmpp_s2s_set_user(s, l);
	return l;
}

/* ---- outbound pairs ---- */

/* Tells whoever waits for q (once), and frees q. */
static void queued_done(struct xmpp_proxy *px, struct queued *q, const char *error)
{
	list_del(&q->link);
	if (q->done && !px->closing)
		q->done(q->arg, error);
	xmpp_xml_free(q->stanza);
	free(q);
}

static void out_fail_all(struct out_pair *o, const char *why)
{
	while (!list_empty(&o->queue))
		queued_done(o->px, list_entry(o->queue.next, struct queued, link), why);
	o->nqueued = 0;
	o->queued_bytes = 0;
}

static void out_free(struct out_pair *o)
{
	resolve_cancel(&o->res);
	out_fail_all(o, "the edge is stopping");
	list_del(&o->link);
	free(o);
}

/* Whether the pair's stream takes a stanza now. */
static int out_open(const struct out_pair *o)
{
	return o->s && xmpp_s2s_is_ready(o->s) && xmpp_s2s_unsent(o->s) < STREAM_HIGH_WATER;
}

static void out_flush(struct out_pair *o)
{
	while (!list_empty(&o->queue) && out_open(o)) {
		struct queued *q = list_entry(o->queue.next, struct queued, link);
		int rc = xmpp_s2s_send(o->s, q->stanza);
		if (rc == 0)
			o->px->stats.stanzas_out++;
		o->nqueued--;
		o->queued_bytes -= q->bytes;
		queued_done(o->px, q, rc == 0 ? NULL : "the stanza could not be written to the stream");
	}
}

static void out_resolved(struct resolve *r, const char *error)
{
	struct out_pair *o = (struct out_pair *)((char *)r - offsetof(struct out_pair, res));
	struct xmpp_proxy *px = o->px;
	char err[256], why[700];
	if (error) {
		snprintf(why, sizeof(why), "cannot find the XMPP server of %s: %s", o->remote, error);
		log_warning("xmpp: %s", why);
		out_fail_all(o, why);
		out_free(o);
		return;
	}
	o->s = xmpp_s2s_connect(&px->env, o->local, o->remote, r->targets, r->ntargets,
	                        policy_of(px, o->partner), XMPP_S2S_STANZAS, err, sizeof(err));
	struct stream_link *l = o->s ? link_stream(px, o->s, o->partner) : NULL;
	if (!l) {
		snprintf(why, sizeof(why), "cannot connect to the XMPP server of %s: %s", o->remote,
		         o->s ? "out of memory" : err);
		if (o->s)
			xmpp_s2s_close(o->s, XMPP_XML_COND_NONE, "out of memory");
		o->s = NULL;
		log_warning("xmpp: %s", why);
		out_fail_all(o, why);
		out_free(o);
		return;
	}
	l->out = o;
	px->stats.streams_out++;
	xmpp_sub_hold(px->holders, o->local, o->remote, px->node, HOLD_TTL_MS);
	log_info("xmpp: connecting %s -> %s (%s)", o->local, o->remote, xmpp_s2s_peer(o->s));
}

static struct out_pair *out_find(struct xmpp_proxy *px, const char *local, const char *remote)
{
	struct list_node *it, *tmp;
	list_for_each_safe(it, tmp, &px->outs) {
		struct out_pair *o = list_entry(it, struct out_pair, link);
		if (!strcasecmp(o->local, local) && !strcasecmp(o->remote, remote))
			return o;
	}
	return NULL;
}

/* The pair's outbound stream, opened when there is none. NULL: out of memory. */
static struct out_pair *out_get(struct xmpp_proxy *px, const char *local, const char *remote,
                                const struct cfg_xmpp_partner *p)
{
	struct out_pair *o = out_find(px, local, remote);
	if (o)
		return o;
	o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->px = px;
	o->partner = p;
	for (size_t i = 0; local[i] && i < sizeof(o->local) - 1; i++)
		o->local[i] = (char)tolower((unsigned char)local[i]);
	for (size_t i = 0; remote[i] && i < sizeof(o->remote) - 1; i++)
		o->remote[i] = (char)tolower((unsigned char)remote[i]);
	list_init(&o->queue);
	list_add_tail(&px->outs, &o->link);
	o->res.px = px;
	o->res.partner = p;
	snprintf(o->res.domain, sizeof(o->res.domain), "%s", o->remote);
	o->res.done = out_resolved;
	resolve_start(&o->res);
	return o;
}

enum xmpp_proxy_send_result xmpp_proxy_send(struct xmpp_proxy *px, const char *local,
                                            const char *remote, struct xmpp_xml_elem *stanza,
                                            xmpp_proxy_sent_fn done, void *arg,
                                            struct xmpp_proxy_pending **pending)
{
	const struct cfg_xmpp_partner *p = find_partner(px, remote, strlen(remote));
	struct out_pair *o = p && !px->closing ? out_get(px, local, remote, p) : NULL;
	if (pending)
		*pending = NULL;
	if (o && list_empty(&o->queue) && out_open(o)) {
		int rc = xmpp_s2s_send(o->s, stanza);
		xmpp_xml_free(stanza);
		if (rc < 0)
			return XMPP_PROXY_REFUSED;
		px->stats.stanzas_out++;
		return XMPP_PROXY_SENT;
	}
	struct xmpp_xml_buf sized = { 0 };
	struct queued *q = o ? calloc(1, sizeof(*q)) : NULL;
	if (!q || xmpp_xml_write_elem(&sized, stanza, NULL) < 0 || o->nqueued >= MAX_QUEUED ||
	    o->queued_bytes + sized.len > MAX_QUEUED_BYTES) {
		xmpp_xml_buf_free(&sized);
		xmpp_xml_free(stanza);
		free(q);
		return XMPP_PROXY_REFUSED;
	}
	q->stanza = stanza;
	q->bytes = sized.len;
	q->done = done;
	q->arg = arg;
	xmpp_xml_buf_free(&sized);
	/* Not ready, or backlogged (the open case went above): the answer comes from the loop. */
	list_add_tail(&o->queue, &q->link);
	o->nqueued++;
	o->queued_bytes += q->bytes;
	if (pending)
		*pending = (struct xmpp_proxy_pending *)q;
	return XMPP_PROXY_QUEUED;
}

void xmpp_proxy_cancel(struct xmpp_proxy_pending *h)
{
	if (h)
		((struct queued *)h)->done = NULL;
}

void xmpp_proxy_open(struct xmpp_proxy *px, const char *local, const char *remote)
{
	const struct cfg_xmpp_partner *p = find_partner(px, remote, strlen(remote));
	if (p && !px->closing && xmpp_proxy_serves(px, local, strlen(local))) {
		xmpp_sub_hold(px->holders, local, remote, px->node, HOLD_TTL_MS);
		out_get(px, local, remote, p);
	}
}

/* ---- dialback checks (receiving role) ---- */

static void check_free(struct db_check *c)
{
	resolve_cancel(&c->res);
	list_del(&c->link);
	if (c->v) {
		struct stream_link *l = xmpp_s2s_user(c->v);
		if (l)
			l->check = NULL;
		xmpp_s2s_close(c->v, XMPP_XML_COND_NONE, "dialback verification done");
	}
	free(c);
}

static void check_verdict(struct db_check *c, int valid, const char *why)
{
	if (c->in) {
		log_info("xmpp: dialback key of %s for %s %s%s%s", c->remote, c->local,
		         valid ? "confirmed" : "refused", why ? ": " : "", why ? why : "");
		xmpp_s2s_dialback_verdict(c->in, c->local, c->remote, valid);
	}
	check_free(c);
}

static void check_resolved(struct resolve *r, const char *error)
{
	struct db_check *c = (struct db_check *)((char *)r - offsetof(struct db_check, res));
	struct xmpp_proxy *px = c->px;
	char err[256];
	if (error) {
		check_verdict(c, 0, error);
		return;
	}
	c->v = xmpp_s2s_connect(&px->env, c->local, c->remote, r->targets, r->ntargets,
	                        policy_of(px, r->partner), XMPP_S2S_VERIFY, err, sizeof(err));
	struct stream_link *l = c->v ? link_stream(px, c->v, r->partner) : NULL;
	if (!l || xmpp_s2s_verify_key(c->v, c->id, c->key) < 0) {
		if (c->v) {
			if (l)
				l->check = NULL;
			xmpp_s2s_close(c->v, XMPP_XML_COND_NONE, "out of memory");
		}
		c->v = NULL;
		check_verdict(c, 0, l ? "out of memory" : err);
		return;
	}
	l->check = c;
}

/* ---- stream callbacks ---- */

static const struct xmpp_s2s_policy *on_partner(void *arg, struct xmpp_s2s *s, const char *local,
                                                const char *remote, enum xmpp_xml_cond *cond)
{
	struct xmpp_proxy *px = arg;
	struct stream_link *l = xmpp_s2s_user(s);
	if (!is_our_domain(px, local, strlen(local))) {
		*cond = XMPP_XML_COND_HOST_UNKNOWN;
		return NULL;
	}
	const struct cfg_xmpp_partner *p = find_partner(px, remote, strlen(remote));
	if (!p) {
		*cond = XMPP_XML_COND_NOT_AUTHORIZED;
		return NULL;
	}
	if (l && !l->partner) {
		if (streams_from(px, p) >= p->connection_limit) {
			log_notice("xmpp: stream from %s (%s) refused: its connection limit (%u) is reached",
			           remote, xmpp_s2s_peer(s), p->connection_limit);
			*cond = XMPP_XML_COND_POLICY_VIOLATION;
			return NULL;
		}
		l->partner = p;
	}
	return policy_of(px, p);
}

static void on_ready(void *arg, struct xmpp_s2s *s, const char *local, const char *remote)
{
	struct stream_link *l = xmpp_s2s_user(s);
	int out = xmpp_s2s_is_outbound(s);
	log_info("xmpp: %s stream %s -> %s authenticated (%s, %s, %s)", out ? "outbound" : "inbound",
	         out ? local : remote, out ? remote : local, xmpp_s2s_peer(s),
	         xmpp_s2s_is_tls(s) ? "TLS" : "no TLS", xmpp_s2s_auth_name(xmpp_s2s_auth(s)));
	if (l && l->out)
		out_flush(l->out);
}

static void on_verify(void *arg, struct xmpp_s2s *s, const char *local, const char *remote,
                      const char *id, const char *key)
{
	struct xmpp_proxy *px = arg;
	const struct cfg_xmpp_partner *p = find_partner(px, remote, strlen(remote));
	struct db_check *c = p ? calloc(1, sizeof(*c)) : NULL;
	if (!c) {
		xmpp_s2s_dialback_verdict(s, local, remote, 0);
		return;
	}
	px->stats.dialback_checks++;
	c->px = px;
	c->in = s;
	snprintf(c->local, sizeof(c->local), "%s", local);
	snprintf(c->remote, sizeof(c->remote), "%s", remote);
	snprintf(c->id, sizeof(c->id), "%s", id);
	snprintf(c->key, sizeof(c->key), "%.*s", XMPP_S2S_DB_KEY_MAX, key);
	list_add_tail(&px->checks, &c->link);
	c->res.px = px;
	c->res.partner = p;
	snprintf(c->res.domain, sizeof(c->res.domain), "%s", remote);
	c->res.done = check_resolved;
	resolve_start(&c->res);
}

static void on_verified(void *arg, struct xmpp_s2s *s, const char *local, const char *remote,
                        const char *id, int valid)
{
	struct stream_link *l = xmpp_s2s_user(s);
	struct db_check *c = l ? l->check : NULL;
	if (!c || strcmp(c->id, id) != 0)
		return;
	l->check = NULL;
	c->v = NULL;
	xmpp_s2s_close(s, XMPP_XML_COND_NONE, "dialback verification done");
	check_verdict(c, valid, valid ? NULL : "the authoritative server says the key is invalid");
}


static void on_stanza(void *arg, struct xmpp_s2s *s, struct xmpp_xml_elem *st)
{
	struct xmpp_proxy *px = arg;
	px->stats.stanzas_in++;
	if (!px->closing)
		px->on_stanza(px->arg, st);
}

static void on_down(void *arg, struct xmpp_s2s *s, int failed, const char *why)
{
	struct xmpp_proxy *px = arg;
	struct stream_link *l = xmpp_s2s_user(s);
	const char *local = xmpp_s2s_local(s), *remote = xmpp_s2s_remote(s);
	if (failed)
		px->stats.streams_failed++;
	if (!px->closing)
		log_msg(failed ? LOG_LVL_WARNING : LOG_LVL_INFO, "xmpp: %s stream %s %s %s (%s) %s: %s",
		        xmpp_s2s_is_outbound(s) ? "outbound" : "inbound",
		        remote ? remote : "?", xmpp_s2s_is_outbound(s) ? "from" : "to",
		        local ? local : "?", xmpp_s2s_peer(s), failed ? "failed" : "closed", why);
	/* Dialback checks that came in on it, or went out on it. */
	struct list_node *it, *tmp;
	list_for_each_safe(it, tmp, &px->checks) {
		struct db_check *c = list_entry(it, struct db_check, link);
		if (c->in == s)
			c->in = NULL;
		if (c->v == s) {
			c->v = NULL;
			check_verdict(c, 0, why);
		} else if (!c->in && !c->v) {
			check_free(c);
		}
	}
	if (!l)
		return;
	if (l->out) {
		struct out_pair *o = l->out;
		char warning[400];
		o->s = NULL;
		snprintf(warning, sizeof(warning), "the XMPP stream to %s ended: %s", o->remote, why);
		out_fail_all(o, warning);
		out_free(o);
	}
	list_del(&l->link);
	free(l);
	xmpp_s2s_set_user(s, NULL);
}

static void on_drained(void *arg, struct xmpp_s2s *s)
{
	struct stream_link *l = xmpp_s2s_user(s);
	if (l && l->out)
		out_flush(l->out);
}

static const struct xmpp_s2s_cbs s2s_cbs = {
	.on_drained = on_drained,
	.partner = on_partner,
	.on_ready = on_ready,
	.verify = on_verify,
	.on_verified = on_verified,
	.on_stanza = on_stanza,
	.on_down = on_down,
};

/* ---- listeners ---- */

static void listener_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *ls = w->data;
	struct xmpp_proxy *px = ls->px;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept_next(loop, &ls->rest, (struct sockaddr *)&ss, &sl);
		if (fd < 0)
			return;
		char peer[64];
		sa_str(&ss, peer, sizeof(peer));
		struct xmpp_s2s *s = xmpp_s2s_accept(&px->env, fd, peer);
		if (!s)
			continue;
		if (!link_stream(px, s, NULL)) {
			xmpp_s2s_close(s, XMPP_XML_COND_RESOURCE_CONSTRAINT, "out of memory");
			continue;
		}
		px->stats.streams_in++;
		log_debug("xmpp: connection from %s", peer);
	}
}

static int listen_on(struct xmpp_proxy *px, const struct cfgu_listen *l, struct listener *ls,
                     char *err, size_t errlen)
{
	const struct sockaddr *sa = (const struct sockaddr *)&l->addr.sa;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return -1;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (sa->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, sa, l->addr.salen) < 0 || listen(fd, 1024) < 0) {
		snprintf(err, errlen, "XMPP listen on %s port %u: %s", l->address, l->port,
		         strerror(errno));
		close(fd);
		return -1;
	}
	ls->px = px;
	ls->fd = fd;
	ev_io_init(&ls->io, listener_cb, fd, EV_READ);
	ls->io.data = ls;
	accept_init(&ls->rest, &ls->io);
	ev_io_start(px->loop, &ls->io);
	return 0;
}

/* ---- setup ---- */

static int make_tls(const struct edge_cfg *cfg, struct tls_ctx **server, struct tls_ctx **client,
                    char *err, size_t errlen)
{
	const char *cert = cfg->xmpp->cert_file ? cfg->xmpp->cert_file : cfg->cert_file;
	const char *key = cfg->xmpp->key_file ? cfg->xmpp->key_file : cfg->key_file;
	*server = tls_ctx_new_optional(TLS_SERVER, cfg->ca_file, cert, key, err, errlen);
	*client = *server ? tls_ctx_new_optional(TLS_CLIENT, cfg->ca_file, cert, key, err, errlen)
	                  : NULL;
	return *server && *client ? 0 : -1;
}

int xmpp_proxy_check(const struct edge_cfg *cfg, char *err, size_t errlen)
{
	struct tls_ctx *s = NULL, *c = NULL;
	int rc = cfg->xmpp ? make_tls(cfg, &s, &c, err, errlen) : 0;
	tls_ctx_free(s);
	tls_ctx_free(c);
	return rc;
}

/*
 * The dialback secret: configured, else derived from the cluster key so
 * that any node of the pool answers for another's keys, else random.
 */
static void dialback_secret(const struct edge_cfg *cfg, unsigned char out[32])
{
	const char *label = "edgepool xmpp dialback";
	unsigned len = 0;
	if (cfg->xmpp->dialback_secret) {
		EVP_Digest(cfg->xmpp->dialback_secret, strlen(cfg->xmpp->dialback_secret), out, &len,
		           EVP_sha256(), NULL);
	} else if (cfg->cluster && cfg->cluster->nkeys) {
		unsigned char buf[64 + CLU_KEY_LEN];
		size_t n = strlen(label);
		memcpy(buf, label, n);
		memcpy(buf + n, cfg->cluster->keys[0], CLU_KEY_LEN);
		EVP_Digest(buf, n + CLU_KEY_LEN, out, &len, EVP_sha256(), NULL);
		OPENSSL_cleanse(buf, sizeof(buf));
	} else if (RAND_bytes(out, 32) != 1) {
		memset(out, 0, 32);
	}
}

struct xmpp_proxy *xmpp_proxy_new(struct ev_loop *loop, const struct edge_cfg *cfg,
                                  struct dns_resolver *dns, struct clu_node *cluster,
                                  struct xmpp_sub_store *holders, xmpp_proxy_stanza_fn stanza_fn,
                                  void *arg, char *err, size_t errlen)
{
	struct xmpp_proxy *px = calloc(1, sizeof(*px));
	if (!px) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	px->loop = loop;
	px->cfg = cfg;
	px->x = cfg->xmpp;
	px->dns = dns;
	px->holders = holders;
	px->on_stanza = stanza_fn;
	px->arg = arg;
	snprintf(px->node, sizeof(px->node), "%s", cluster ? clu_node_name(cluster) : "self");
	list_init(&px->streams);
	list_init(&px->outs);
	list_init(&px->checks);
	struct xmpp_s2s_env *e = &px->env;
	xmpp_s2s_env_init(e);
	if (make_tls(cfg, &px->tls_server, &px->tls_client, err, errlen) < 0)
		goto fail;
	px->policies = calloc(px->x->npartners ? px->x->npartners : 1, sizeof(*px->policies));
	px->listeners = calloc(px->x->nlisten ? px->x->nlisten : 1, sizeof(*px->listeners));
	if (!px->policies || !px->listeners) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < px->x->npartners; i++) {
		const struct cfg_xmpp_partner *p = &px->x->partners[i];
		px->policies[i] = (struct xmpp_s2s_policy){ .tls = p->tls, .sasl = p->sasl,
		                                            .dialback = p->dialback,
		                                            .keepalive = p->keepalive };
	}
	e->loop = loop;
	e->tls_server = px->tls_server;
	e->tls_client = px->tls_client;
	e->xml.max_stanza_bytes = px->x->max_stanza_bytes;
	dialback_secret(cfg, e->db_secret);
	e->negotiate_timeout = cfg->connect_timeout_ms / 1000.0 * 2;
	e->keepalive = px->x->keepalive_s;
	e->idle_timeout = px->x->idle_timeout_s;
	e->max_queued_bytes = MAX_QUEUED_BYTES;
	e->cbs = &s2s_cbs;
	e->arg = px;
	for (unsigned i = 0; i < px->x->nlisten; i++) {
		if (listen_on(px, &px->x->listen[i], &px->listeners[i], err, errlen) < 0)
			goto fail;
		px->nlisteners++;
		log_info("listening on XMPP %s port %u (server-to-server)", px->x->listen[i].address,
		         px->x->listen[i].port);
	}
	return px;
fail:
	xmpp_proxy_free(px);
	return NULL;
}

void xmpp_proxy_quiesce(struct xmpp_proxy *px)
{
	if (px)
		px->closing = 1;
}

void xmpp_proxy_free(struct xmpp_proxy *px)
{
	if (!px)
		return;
	px->closing = 1;
	for (unsigned i = 0; i < px->nlisteners; i++) {
		ev_io_stop(px->loop, &px->listeners[i].io);
		accept_stop(px->loop, &px->listeners[i].rest);
		close(px->listeners[i].fd);
	}
	while (!list_empty(&px->checks))
		check_free(list_entry(px->checks.next, struct db_check, link));
	while (!list_empty(&px->outs)) {
		struct out_pair *o = list_entry(px->outs.next, struct out_pair, link);
		if (o->s) {
			struct stream_link *l = xmpp_s2s_user(o->s);
			if (l)
				l->out = NULL;
		}
		out_free(o);
	}
	while (!list_empty(&px->streams)) {
		struct stream_link *l = list_entry(px->streams.next, struct stream_link, link);
		list_del(&l->link);
		free(l);
	}
	xmpp_s2s_shutdown(&px->env);
	free(px->listeners);
	free(px->policies);
	tls_ctx_free(px->tls_server);
	tls_ctx_free(px->tls_client);
	free(px);
}

size_t xmpp_proxy_status_json(const struct xmpp_proxy *px, char *buf, size_t len)
{
	const struct proxy_stats *st = &px->stats;
	if (len == 0)
		return 0;
	int n = snprintf(buf, len, "\"streams_in\": %llu, \"streams_out\": %llu, "
	                 "\"streams_failed\": %llu, \"dialback_checks\": %llu, "
	                 "\"stanzas_in\": %llu, \"stanzas_out\": %llu, \"streams\": [",
	                 st->streams_in, st->streams_out, st->streams_failed, st->dialback_checks,
	                 st->stanzas_in, st->stanzas_out);
	if (n < 0 || (size_t)n >= len)
		return len - 1;
	size_t at = (size_t)n;
	const char *sep = "";
	unsigned listed = 0, open = 0;
	struct list_node *it, *tmp;
	list_for_each_safe(it, tmp, &px->streams) {
		const struct stream_link *l = list_entry(it, struct stream_link, link);
		/* The status page has a size: the first streams, and how many there are. */
		if (open++ >= STATUS_STREAMS)
			continue;
		listed++;
		const struct xmpp_s2s *s = l->s;
		const char *local = xmpp_s2s_local(s), *remote = xmpp_s2s_remote(s);
		/* Domains are checked by the stream (dom_valid): nothing in them needs escaping. */
		n = snprintf(buf + at, len - at, "%s{\"direction\": \"%s\", \"local\": \"%s\", "
		             "\"remote\": \"%s\", \"peer\": \"%s\", \"mode\": \"%s\", \"ready\": %s, "
		             "\"tls\": %s, \"auth\": \"%s\"}", sep,
		             xmpp_s2s_is_outbound(s) ? "out" : "in", local ? local : "",
		             remote ? remote : "", xmpp_s2s_peer(s),
		             xmpp_s2s_mode(s) == XMPP_S2S_VERIFY ? "verify" : "stanzas",
		             xmpp_s2s_is_ready(s) ? "true" : "false", xmpp_s2s_is_tls(s) ? "true" : "false",
		             xmpp_s2s_auth_name(xmpp_s2s_auth(s)));
		if (n < 0 || (size_t)n >= len - at)
			return len - 1;
		at += (size_t)n;
		sep = ", ";
	}
	n = snprintf(buf + at, len - at, "], \"streams_open\": %u, \"streams_listed\": %u", open,
	             listed);
	if (n < 0 || (size_t)n >= len - at)
		return len - 1;
	return at + (size_t)n;
}
