#include "xmpp_gw.h"

#include <ctype.h>
#include <errno.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdarg.h>
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
#include "pol.h"
#include "proxy.h"
#include "sockaddr.h"
#include "tls.h"
#include "xmpp_map.h"
#include "xmpp_s2s.h"

#define XMPP_PORT 5269
#define MAX_TARGETS 16           /* addresses tried for one partner */
#define MAX_SRV 8                /* SRV targets resolved for one partner */
#define MAX_QUEUED 1000          /* stanzas waiting for one outbound stream */
#define MAX_QUEUED_BYTES (4u << 20)
#define SPAN(str) (int)(str).len, (str).s

struct listener {
	struct xmpp_gw *gw;
	int fd;
	ev_io io;
	struct accept_rest rest;
};

/* How a partner is reached: the resolution of its domain into addresses. */
struct resolve {
	struct xmpp_gw *gw;
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
	xmpp_gw_answer_fn done;           /* NULL: nobody waits for it */
	void *arg;
};

/* Our outbound stanza stream for one pair: local (ours) -> remote (theirs). */
struct out_pair {
	struct list_node link;
	struct xmpp_gw *gw;
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
	struct xmpp_gw *gw;
	struct xmpp_s2s *in;              /* the stream that got the key; NULL once gone */
	struct xmpp_s2s *v;               /* the verify stream; NULL while resolving */
	char local[254], remote[254], id[128], key[XMPP_S2S_DB_KEY_LEN + 1];
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

struct xmpp_gw_pending {
	struct queued q;                  /* SIP -> XMPP: the stanza and its answer */
};

/* An XMPP stanza gone to SIP, waiting for the SIP answer. */
struct to_sip {
	struct xmpp_gw *gw;
	char from[XMPP_MAP_JID_MAX], to[XMPP_MAP_JID_MAX], id[256];
	int has_id;
};

struct gw_stats {
	unsigned long long streams_in, streams_out;   /* accepted / opened, ever */
	unsigned long long streams_failed;
	unsigned long long streams_refused;
	unsigned long long messages_out, messages_in; /* SIP -> XMPP, XMPP -> SIP */
	unsigned long long errors_out;                /* error stanzas we sent */
	unsigned long long sip_refused;               /* SIP requests answered with an error */
	unsigned long long dialback_checks;
};

struct xmpp_gw {
	struct ev_loop *loop;
	const struct edge_cfg *cfg;
	const struct cfg_xmpp *x;
	struct proxy *proxy;
	struct dns_resolver *dns;
	struct clu_node *cluster;
	struct tls_ctx *tls_server, *tls_client;
	struct xmpp_s2s_env env;
	struct xmpp_s2s_policy *policies;  /* one per partner, in configuration order */
	struct listener *listeners;
	unsigned nlisteners;
	struct list_node streams;          /* struct stream_link */
	struct list_node outs;             /* struct out_pair */
	struct list_node checks;           /* struct db_check */
	struct gw_stats stats;
	int closing;                       /* xmpp_gw_free() under way: no callbacks out */
};

/* ---- configuration look-ups ---- */

static int eq_domain(const char *a, size_t alen, const char *b)
{
	return dom_eq(a, alen, b);
}

static const struct cfg_xmpp_partner *find_partner(const struct xmpp_gw *gw, const char *d,
                                                   size_t len)
{
	for (unsigned i = 0; i < gw->x->npartners; i++) {
		const struct cfg_xmpp_partner *p = &gw->x->partners[i];
		if (eq_domain(d, len, p->domain))
			return p;
		for (unsigned k = 0; k < p->nadditional_domains; k++)
			if (eq_domain(d, len, p->additional_domains[k]))
				return p;
	}
	return NULL;
}

static int is_our_domain(const struct xmpp_gw *gw, const char *d, size_t len)
{
	for (unsigned i = 0; i < gw->x->ndomains; i++)
		if (eq_domain(d, len, gw->x->domains[i]))
			return 1;
	return 0;
}

static const struct xmpp_s2s_policy *policy_of(const struct xmpp_gw *gw,
                                               const struct cfg_xmpp_partner *p)
{
	return &gw->policies[p - gw->x->partners];
}

static unsigned streams_with(const struct xmpp_gw *gw, const struct cfg_xmpp_partner *p)
{
	unsigned n = 0;
	struct list_node *it, *tmp;
	list_for_each_safe(it, tmp, &gw->streams) {
		struct stream_link *l = list_entry(it, struct stream_link, link);
		n += l->partner == p;
	}
	return n;
}

int xmpp_gw_is_partner_domain(const struct xmpp_gw *gw, const char *domain, size_t len)
{
	return find_partner(gw, domain, len) != NULL;
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
	r->q = dns_resolve_addr(r->gw->dns, r->srv_names[i], r->srv_ports[i], addr_cb, r);
	if (!r->q)
		r->done(r, "out of memory");
}

static void srv_cb(void *arg, int status, const struct dns_srv_answer *ans)
{
	struct resolve *r = arg;
	r->q = NULL;
	if (status == DNS_ENOTFOUND) {
		/* RFC 6120 3.2.2: no SRV records, the domain itself on 5269. */
		r->q = dns_resolve_addr(r->gw->dns, r->domain, XMPP_PORT, addr_cb, r);
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
	r->q = dns_resolve_srv(r->gw->dns, name, srv_cb, r);
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

static struct stream_link *link_stream(struct xmpp_gw *gw, struct xmpp_s2s *s,
                                       const struct cfg_xmpp_partner *p)
{
	struct stream_link *l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->s = s;
	l->partner = p;
	list_add_tail(&gw->streams, &l->link);
	xmpp_s2s_set_user(s, l);
	return l;
}

/* ---- outbound pairs ---- */

static void queued_answer(struct queued *q, unsigned status, const char *warning)
{
	if (q->done)
		q->done(q->arg, status, warning);
	q->done = NULL;
}

/* Frees a queued stanza (a pending SIP request's handle too: q is its first member). */
static void queued_free(struct queued *q)
{
	list_del(&q->link);
	xmpp_xml_free(q->stanza);
	free(q);
}

static void out_fail_all(struct out_pair *o, unsigned status, const char *why)
{
	while (!list_empty(&o->queue)) {
		struct queued *q = list_entry(o->queue.next, struct queued, link);
		if (!o->gw->closing)
			queued_answer(q, status, why);
		queued_free(q);
	}
	o->nqueued = 0;
	o->queued_bytes = 0;
}

static void out_free(struct out_pair *o)
{
	resolve_cancel(&o->res);
	out_fail_all(o, 504, "the gateway stopped");
	list_del(&o->link);
	free(o);
}

static void out_flush(struct out_pair *o)
{
	while (!list_empty(&o->queue) && o->s && xmpp_s2s_is_ready(o->s)) {
		struct queued *q = list_entry(o->queue.next, struct queued, link);
		int rc = xmpp_s2s_send(o->s, q->stanza);
		if (rc == 0 && !strcmp(q->stanza->name, "message"))
			o->gw->stats.messages_out++;
		queued_answer(q, rc == 0 ? 200 : 500, rc == 0 ? NULL
		              : "the message could not be written to the XMPP stream");
		o->nqueued--;
		o->queued_bytes -= q->bytes;
		queued_free(q);
	}
}

static void out_resolved(struct resolve *r, const char *error)
{
	struct out_pair *o = (struct out_pair *)((char *)r - offsetof(struct out_pair, res));
	struct xmpp_gw *gw = o->gw;
	char err[256], why[700];
	if (error) {
		snprintf(why, sizeof(why), "cannot find the XMPP server of %s: %s", o->remote, error);
		log_warning("xmpp: %s", why);
		out_fail_all(o, 504, why);
		out_free(o);
		return;
	}
	o->s = xmpp_s2s_connect(&gw->env, o->local, o->remote, r->targets, r->ntargets,
	                        policy_of(gw, o->partner), XMPP_S2S_STANZAS, err, sizeof(err));
	struct stream_link *l = o->s ? link_stream(gw, o->s, o->partner) : NULL;
	if (!l) {
		snprintf(why, sizeof(why), "cannot connect to the XMPP server of %s: %s", o->remote,
		         o->s ? "out of memory" : err);
		if (o->s)
			xmpp_s2s_close(o->s, XMPP_XML_COND_NONE, "out of memory");
		o->s = NULL;
		log_warning("xmpp: %s", why);
		out_fail_all(o, 504, why);
		out_free(o);
		return;
	}
	l->out = o;
	gw->stats.streams_out++;
	log_info("xmpp: connecting %s -> %s (%s)", o->local, o->remote, xmpp_s2s_peer(o->s));
}

static struct out_pair *out_find(struct xmpp_gw *gw, const char *local, const char *remote)
{
	struct list_node *it, *tmp;
	list_for_each_safe(it, tmp, &gw->outs) {
		struct out_pair *o = list_entry(it, struct out_pair, link);
		if (!strcasecmp(o->local, local) && !strcasecmp(o->remote, remote))
			return o;
	}
	return NULL;
}

/* The pair's outbound stream, opened when there is none. NULL: out of memory. */
static struct out_pair *out_get(struct xmpp_gw *gw, const char *local, const char *remote,
                                const struct cfg_xmpp_partner *p)
{
	struct out_pair *o = out_find(gw, local, remote);
	if (o)
		return o;
	o = calloc(1, sizeof(*o));
	if (!o)
		return NULL;
	o->gw = gw;
	o->partner = p;
	for (size_t i = 0; local[i] && i < sizeof(o->local) - 1; i++)
		o->local[i] = (char)tolower((unsigned char)local[i]);
	for (size_t i = 0; remote[i] && i < sizeof(o->remote) - 1; i++)
		o->remote[i] = (char)tolower((unsigned char)remote[i]);
	list_init(&o->queue);
	list_add_tail(&gw->outs, &o->link);
	o->res.gw = gw;
	o->res.partner = p;
	snprintf(o->res.domain, sizeof(o->res.domain), "%s", o->remote);
	o->res.done = out_resolved;
	resolve_start(&o->res);
	return o;
}

/*
 * Queues stanza (taken over) for local -> remote; done, when not NULL, is
 * answered once it is written or has failed. Returns the entry, or NULL
 * when out of memory or over the queue's bounds (stanza freed).
 */
static struct queued *out_send(struct xmpp_gw *gw, const char *local, const char *remote,
                               const struct cfg_xmpp_partner *p, struct xmpp_xml_elem *stanza,
                               struct queued *q)
{
	struct out_pair *o = out_get(gw, local, remote, p);
	struct xmpp_xml_buf sized = { 0 };
	if (!o || xmpp_xml_write_elem(&sized, stanza, NULL) < 0 || o->nqueued >= MAX_QUEUED ||
	    o->queued_bytes + sized.len > MAX_QUEUED_BYTES) {
		xmpp_xml_buf_free(&sized);
		xmpp_xml_free(stanza);
		free(q);
		return NULL;
	}
	q->stanza = stanza;
	q->bytes = sized.len;
	xmpp_xml_buf_free(&sized);
	list_add_tail(&o->queue, &q->link);
	o->nqueued++;
	o->queued_bytes += q->bytes;
	out_flush(o);
	return q;
}

/* A stanza of the gateway's own (an error): nobody waits for it. */
static void out_send_own(struct xmpp_gw *gw, const char *local, const char *remote,
                         struct xmpp_xml_elem *stanza)
{
	const struct cfg_xmpp_partner *p = find_partner(gw, remote, strlen(remote));
	struct queued *q = calloc(1, sizeof(*q));
	if (!p || !q) {
		free(q);
		xmpp_xml_free(stanza);
		return;
	}
	out_send(gw, local, remote, p, stanza, q);
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
	struct xmpp_gw *gw = c->gw;
	char err[256];
	if (error) {
		check_verdict(c, 0, error);
		return;
	}
	c->v = xmpp_s2s_connect(&gw->env, c->local, c->remote, r->targets, r->ntargets,
	                        policy_of(gw, r->partner), XMPP_S2S_VERIFY, err, sizeof(err));
	struct stream_link *l = c->v ? link_stream(gw, c->v, r->partner) : NULL;
	if (!l || xmpp_s2s_verify_key(c->v, c->id, c->key) < 0) {
		if (c->v && !l)
			xmpp_s2s_close(c->v, XMPP_XML_COND_NONE, "out of memory");
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
	struct xmpp_gw *gw = arg;
	struct stream_link *l = xmpp_s2s_user(s);
	if (!is_our_domain(gw, local, strlen(local))) {
		*cond = XMPP_XML_COND_HOST_UNKNOWN;
		return NULL;
	}
	const struct cfg_xmpp_partner *p = find_partner(gw, remote, strlen(remote));
	if (!p) {
		*cond = XMPP_XML_COND_NOT_AUTHORIZED;
		return NULL;
	}
	if (l && !l->partner) {
		if (streams_with(gw, p) >= p->connection_limit) {
			log_notice("xmpp: stream from %s (%s) refused: its connection limit (%u) is reached",
			           remote, xmpp_s2s_peer(s), p->connection_limit);
			*cond = XMPP_XML_COND_POLICY_VIOLATION;
			return NULL;
		}
		l->partner = p;
	}
	return policy_of(gw, p);
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
	struct xmpp_gw *gw = arg;
	const struct cfg_xmpp_partner *p = find_partner(gw, remote, strlen(remote));
	struct db_check *c = p ? calloc(1, sizeof(*c)) : NULL;
	if (!c) {
		xmpp_s2s_dialback_verdict(s, local, remote, 0);
		return;
	}
	gw->stats.dialback_checks++;
	c->gw = gw;
	c->in = s;
	snprintf(c->local, sizeof(c->local), "%s", local);
	snprintf(c->remote, sizeof(c->remote), "%s", remote);
	snprintf(c->id, sizeof(c->id), "%s", id);
	snprintf(c->key, sizeof(c->key), "%.*s", XMPP_S2S_DB_KEY_LEN, key);
	list_add_tail(&gw->checks, &c->link);
	c->res.gw = gw;
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

static void handle_message(struct xmpp_gw *gw, struct xmpp_s2s *s, struct xmpp_xml_elem *st);

static void on_stanza(void *arg, struct xmpp_s2s *s, struct xmpp_xml_elem *st)
{
	struct xmpp_gw *gw = arg;
	if (strcmp(st->name, "message") == 0)
		handle_message(gw, s, st);
	/* Presence and iq: not carried yet. */
}

static void on_down(void *arg, struct xmpp_s2s *s, int failed, const char *why)
{
	struct xmpp_gw *gw = arg;
	struct stream_link *l = xmpp_s2s_user(s);
	const char *local = xmpp_s2s_local(s), *remote = xmpp_s2s_remote(s);
	if (failed)
		gw->stats.streams_failed++;
	if (!gw->closing)
		log_msg(failed ? LOG_LVL_WARNING : LOG_LVL_INFO, "xmpp: %s stream %s %s %s (%s) %s: %s",
		        xmpp_s2s_is_outbound(s) ? "outbound" : "inbound",
		        remote ? remote : "?", xmpp_s2s_is_outbound(s) ? "from" : "to",
		        local ? local : "?", xmpp_s2s_peer(s), failed ? "failed" : "closed", why);
	/* Dialback checks that came in on it, or went out on it. */
	struct list_node *it, *tmp;
	list_for_each_safe(it, tmp, &gw->checks) {
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
		out_fail_all(o, failed ? 504 : 503, warning);
		out_free(o);
	}
	list_del(&l->link);
	free(l);
	xmpp_s2s_set_user(s, NULL);
}

static const struct xmpp_s2s_cbs s2s_cbs = {
	.partner = on_partner,
	.on_ready = on_ready,
	.verify = on_verify,
	.on_verified = on_verified,
	.on_stanza = on_stanza,
	.on_down = on_down,
};

/* ---- XMPP -> SIP ---- */

/* An error stanza answering st (from -> to swapped), RFC 6120 8.3. */
static void send_error(struct xmpp_gw *gw, const char *name, const char *from, const char *to,
                       const char *id, const char *condition)
{
	char local[254], remote[254];
	const char *at;
	/* Our domain is the stanza's to, theirs its from. */
	at = strchr(to, '@');
	snprintf(local, sizeof(local), "%.*s", (int)strcspn(at ? at + 1 : to, "/"), at ? at + 1 : to);
	at = strchr(from, '@');
	snprintf(remote, sizeof(remote), "%.*s", (int)strcspn(at ? at + 1 : from, "/"),
	         at ? at + 1 : from);
	struct xmpp_xml_elem *e = xmpp_xml_new(name, XMPP_XML_NS_SERVER);
	struct xmpp_xml_elem *err = e ? xmpp_xml_add(e, "error", NULL) : NULL;
	if (!err || xmpp_xml_set_attr(e, "from", NULL, to) < 0 ||
	    xmpp_xml_set_attr(e, "to", NULL, from) < 0 || xmpp_xml_set_attr(e, "type", NULL, "error") < 0 ||
	    (id && xmpp_xml_set_attr(e, "id", NULL, id) < 0) ||
	    xmpp_xml_set_attr(err, "type", NULL, xmpp_map_condition_type(condition)) < 0 ||
	    !xmpp_xml_add(err, condition, XMPP_XML_NS_STANZA_ERRORS)) {
		xmpp_xml_free(e);
		return;
	}
	gw->stats.errors_out++;
	out_send_own(gw, local, remote, e);
}

static void to_sip_answered(void *arg, unsigned status)
{
	struct to_sip *ts = arg;
	struct xmpp_gw *gw = ts->gw;
	if (status >= 300 && !gw->closing) {
		const char *cond = xmpp_map_condition(status);
		log_info("xmpp: message from %s to %s refused by SIP with %u: %s", ts->from, ts->to,
		         status, cond);
		send_error(gw, "message", ts->from, ts->to, ts->has_id ? ts->id : NULL, cond);
	} else if (status < 300) {
		gw->stats.messages_in++;
	}
	free(ts);
}

/* The Lync trust header for what comes from an XMPP partner (pol.h has the SIP ones). */
static void xmpp_trust(const struct xmpp_gw *gw, const struct cfg_xmpp_partner *p,
                       const char *remote, char *buf, size_t len)
{
	snprintf(buf, len, "ms-source-type=XmppPartner;ms-ep-fqdn=%s;ms-source-verified-user=%s;"
	         "ms-source-network=xmpp;ms-remote-fqdn=%s", gw->cfg->pool_fqdn,
	         p->type == CFG_XMPP_PUBLIC_UNVERIFIED ? "unverified" : "verified", remote);
}

/* Whether our user may hear from this partner's user at all (policy, PartnerType). */
static const char *refusal_of(struct xmpp_gw *gw, const struct cfg_xmpp_partner *p,
                              const char *user_uri)
{
	struct sip_uri u;
	struct sip_str s = { user_uri, strlen(user_uri) };
	if (sip_uri_parse(s, &u) < 0)
		return "not a SIP address";
	const struct cfg_access_policy *pol = pol_user_policy(gw->cfg, u.user.s, u.user.len,
	                                                      u.host.s, u.host.len);
	if (!pol->xmpp)
		return "the user's external access policy does not permit XMPP";
	if (p->type == CFG_XMPP_PUBLIC_UNVERIFIED)
		return "the partner is PublicUnverified and the user has not subscribed to the sender";
	return NULL;
}

static void handle_message(struct xmpp_gw *gw, struct xmpp_s2s *s, struct xmpp_xml_elem *st)
{
	struct xmpp_map_sip_im im;
	const char *cond = NULL;
	const char *from = xmpp_xml_attr(st, "from"), *to = xmpp_xml_attr(st, "to");
	const char *id = xmpp_xml_attr(st, "id");
	int rc = xmpp_map_message_to_sip(st, &im, &cond);
	if (rc < 0) {
		if (cond)
			send_error(gw, "message", from, to, id, cond);
		log_debug("xmpp: message from %s to %s not carried: %s", from, to,
		          xmpp_map_strerror(rc));
		return;
	}
	struct sip_uri fu;
	struct sip_str fs = { im.from, strlen(im.from) };
	if (sip_uri_parse(fs, &fu) < 0)
		return;
	const struct cfg_xmpp_partner *p = find_partner(gw, fu.host.s, fu.host.len);
	const char *refusal = p ? refusal_of(gw, p, im.to) : "not a partner";
	if (refusal) {
		log_info("xmpp: message from %s to %s refused: %s", from, to, refusal);
		send_error(gw, "message", from, to, id, "service-unavailable");
		return;
	}
	/* The request, as a front end would send it: one Via (ours replaces it). */
	char callid[40], tag[20], trust[600];
	unsigned char rnd[16];
	RAND_bytes(rnd, sizeof(rnd));
	snprintf(callid, sizeof(callid), "%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x%02x-xmpp",
	         rnd[0], rnd[1], rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7], rnd[8], rnd[9],
	         rnd[10], rnd[11]);
	snprintf(tag, sizeof(tag), "%02x%02x%02x%02x", rnd[12], rnd[13], rnd[14], rnd[15]);
	size_t cap = strlen(im.ruri) * 2 + strlen(im.from) + strlen(im.to) + im.body_len + 512;
	char *text = malloc(cap);
	struct to_sip *ts = calloc(1, sizeof(*ts));
	if (!text || !ts) {
		free(text);
		free(ts);
		send_error(gw, "message", from, to, id, "internal-server-error");
		return;
	}
	int n = snprintf(text, cap, "MESSAGE %s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bK%s\r\n"
	                 "Max-Forwards: 70\r\nFrom: <%s>;tag=%s\r\nTo: <%s>\r\nCall-ID: %s\r\n"
	                 "CSeq: 1 MESSAGE\r\nContent-Type: %s\r\nContent-Length: %zu\r\n\r\n",
	                 im.ruri, gw->cfg->pool_fqdn, callid, im.from, tag, im.to, callid,
	                 im.content_type, im.body_len);
	struct sip_msg *m = NULL;
	struct sip_limits lim = { .max_msg_bytes = cap + im.body_len, .max_line_bytes = 8192,
	                          .max_headers = 32 };
	if (n > 0 && (size_t)n + im.body_len < cap) {
		memcpy(text + n, im.body, im.body_len);
		if (sip_msg_parse(text, (size_t)n + im.body_len, &lim, &m) < 0) {
			sip_msg_free(m);
			m = NULL;
		}
	}
	free(text);
	if (!m) {
		free(ts);
		send_error(gw, "message", from, to, id, "internal-server-error");
		return;
	}
	ts->gw = gw;
	snprintf(ts->from, sizeof(ts->from), "%s", from);
	snprintf(ts->to, sizeof(ts->to), "%s", to);
	if (id) {
		ts->has_id = 1;
		snprintf(ts->id, sizeof(ts->id), "%s", id);
	}
	char domain[254];
	snprintf(domain, sizeof(domain), "%.*s", SPAN(fu.host));
	xmpp_trust(gw, p, domain, trust, sizeof(trust));
	log_debug("xmpp: message from %s to %s -> SIP call-id=%s", from, to, callid);
	if (proxy_originate(gw->proxy, m, trust, to_sip_answered, ts) < 0) {
		free(ts);
		send_error(gw, "message", from, to, id, "internal-server-error");
	}
}

/* ---- SIP -> XMPP ---- */

/* The addr-spec of a From or To header, into out. */
static int header_uri(const struct sip_msg *m, enum sip_hdr_id id, char *out, size_t outsz)
{
	struct sip_nameaddr na;
	int i = sip_msg_find(m, id, 0);
	if (i < 0 || sip_nameaddr_parse(m->hdrs[i].value, &na) < 0 || na.uri.len >= outsz)
		return -1;
	memcpy(out, na.uri.s, na.uri.len);
	out[na.uri.len] = '\0';
	return 0;
}

static enum xmpp_gw_take answer_now(struct xmpp_gw *gw, unsigned *status, char *warning,
                                    size_t warnlen, unsigned code, const char *fmt, ...)
	__attribute__((format(printf, 6, 7)));

static enum xmpp_gw_take answer_now(struct xmpp_gw *gw, unsigned *status, char *warning,
                                    size_t warnlen, unsigned code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(warning, warnlen, fmt, ap);
	va_end(ap);
	*status = code;
	if (code >= 300)
		gw->stats.sip_refused++;
	return XMPP_GW_ANSWERED;
}

enum xmpp_gw_take xmpp_gw_sip_request(struct xmpp_gw *gw, const struct sip_msg *req,
                                      xmpp_gw_answer_fn done, void *arg,
                                      struct xmpp_gw_pending **pending, unsigned *status,
                                      char *warning, size_t warnlen)
{
	struct sip_uri ruri, from;
	char from_uri[XMPP_MAP_URI_MAX], to_uri[XMPP_MAP_URI_MAX];
	*pending = NULL;
	warning[0] = '\0';
	if (sip_uri_parse(req->ruri, &ruri) < 0)
		return XMPP_GW_NOT_MINE;
	const struct cfg_xmpp_partner *p = find_partner(gw, ruri.host.s, ruri.host.len);
	if (!p)
		return XMPP_GW_NOT_MINE;
	if (req->method != SIP_MESSAGE)
		return answer_now(gw, status, warning, warnlen, 488, "XMPP partner %.*s takes instant "
		                  "messages only", SPAN(ruri.host));
	if (header_uri(req, SIP_HDR_FROM, from_uri, sizeof(from_uri)) < 0 ||
	    header_uri(req, SIP_HDR_TO, to_uri, sizeof(to_uri)) < 0) {
		return answer_now(gw, status, warning, warnlen, 400, "From or To is not a SIP URI");
	}
	struct sip_str fs = { from_uri, strlen(from_uri) };
	if (sip_uri_parse(fs, &from) < 0 || !is_our_domain(gw, from.host.s, from.host.len))
		return answer_now(gw, status, warning, warnlen, 403, "the sender is not a user of an "
		                  "XMPP domain of this organization");
	const struct cfg_access_policy *pol = pol_user_policy(gw->cfg, from.user.s, from.user.len,
	                                                      from.host.s, from.host.len);
	if (!pol->xmpp)
		return answer_now(gw, status, warning, warnlen, 403, "external access policy '%s' of "
		                  "%.*s@%.*s does not permit XMPP access", pol->identity,
		                  SPAN(from.user), SPAN(from.host));
	/* RFC 7572 maps From and To; the Request-URI decided the partner. */
	char ct[128] = "";
	int cti = sip_msg_find(req, SIP_HDR_CONTENT_TYPE, 0);
	if (cti >= 0)
		snprintf(ct, sizeof(ct), "%.*s", SPAN(req->hdrs[cti].value));
	char ruri_text[XMPP_MAP_URI_MAX], callid[256];
	snprintf(ruri_text, sizeof(ruri_text), "%.*s", SPAN(req->ruri));
	snprintf(callid, sizeof(callid), "%.*s", SPAN(req->call_id));
	struct xmpp_map_sip_in in = {
		.from = from_uri,
		.to = ruri_text,
		.content_type = cti >= 0 ? ct : NULL,
		.body = req->body.s,
		.body_len = req->body.len,
		.id = callid,
	};
	struct xmpp_xml_elem *stanza = NULL;
	int rc = xmpp_map_sip_to_message(&in, &stanza);
	if (rc < 0)
		return answer_now(gw, status, warning, warnlen, xmpp_map_err_sip_status(rc),
		                  "cannot carry this MESSAGE to XMPP: %s", xmpp_map_strerror(rc));
	char local[254], remote[254];
	snprintf(local, sizeof(local), "%.*s", SPAN(from.host));
	snprintf(remote, sizeof(remote), "%.*s", SPAN(ruri.host));
	struct out_pair *o = out_get(gw, local, remote, p);
	if (o && o->s && xmpp_s2s_is_ready(o->s) && list_empty(&o->queue)) {
		/* The stream is up: written now, answered now. */
		int sent = xmpp_s2s_send(o->s, stanza);
		xmpp_xml_free(stanza);
		if (sent < 0)
			return answer_now(gw, status, warning, warnlen, 500, "the message could not be "
			                  "written to the XMPP stream to %s", remote);
		gw->stats.messages_out++;
		*status = 200;
		return XMPP_GW_ANSWERED;
	}
	struct xmpp_gw_pending *h = o ? calloc(1, sizeof(*h)) : NULL;
	if (!h) {
		xmpp_xml_free(stanza);
		return answer_now(gw, status, warning, warnlen, 500, "out of memory");
	}
	h->q.done = done;
	h->q.arg = arg;
	/* The stream is not up: the answer comes from the loop when it is (or fails). */
	if (!out_send(gw, local, remote, p, stanza, &h->q))
		return answer_now(gw, status, warning, warnlen, 503, "too many messages wait for the "
		                  "XMPP stream to %s", remote);
	*pending = h;
	return XMPP_GW_PENDING;
}

void xmpp_gw_cancel(struct xmpp_gw_pending *p)
{
	if (p)
		p->q.done = NULL;
}

/* ---- listeners ---- */

static void listener_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *ls = w->data;
	struct xmpp_gw *gw = ls->gw;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t sl = sizeof(ss);
		int fd = accept_next(loop, &ls->rest, (struct sockaddr *)&ss, &sl);
		if (fd < 0)
			return;
		char peer[64];
		sa_str(&ss, peer, sizeof(peer));
		struct xmpp_s2s *s = xmpp_s2s_accept(&gw->env, fd, peer);
		if (!s)
			continue;
		if (!link_stream(gw, s, NULL)) {
			xmpp_s2s_close(s, XMPP_XML_COND_RESOURCE_CONSTRAINT, "out of memory");
			continue;
		}
		gw->stats.streams_in++;
		log_debug("xmpp: connection from %s", peer);
	}
}

static int listen_on(struct xmpp_gw *gw, const struct cfgu_listen *l, struct listener *ls,
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
	ls->gw = gw;
	ls->fd = fd;
	ev_io_init(&ls->io, listener_cb, fd, EV_READ);
	ls->io.data = ls;
	accept_init(&ls->rest, &ls->io);
	ev_io_start(gw->loop, &ls->io);
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

int xmpp_gw_check(const struct edge_cfg *cfg, char *err, size_t errlen)
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

struct xmpp_gw *xmpp_gw_new(struct ev_loop *loop, const struct edge_cfg *cfg, struct proxy *proxy,
                            struct dns_resolver *dns, struct clu_node *cluster,
                            char *err, size_t errlen)
{
	struct xmpp_gw *gw = calloc(1, sizeof(*gw));
	if (!gw) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	gw->loop = loop;
	gw->cfg = cfg;
	gw->x = cfg->xmpp;
	gw->proxy = proxy;
	gw->dns = dns;
	gw->cluster = cluster;
	list_init(&gw->streams);
	list_init(&gw->outs);
	list_init(&gw->checks);
	if (make_tls(cfg, &gw->tls_server, &gw->tls_client, err, errlen) < 0)
		goto fail;
	gw->policies = calloc(gw->x->npartners ? gw->x->npartners : 1, sizeof(*gw->policies));
	gw->listeners = calloc(gw->x->nlisten ? gw->x->nlisten : 1, sizeof(*gw->listeners));
	if (!gw->policies || !gw->listeners) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (unsigned i = 0; i < gw->x->npartners; i++) {
		const struct cfg_xmpp_partner *p = &gw->x->partners[i];
		gw->policies[i] = (struct xmpp_s2s_policy){ .tls = p->tls, .sasl = p->sasl,
		                                            .dialback = p->dialback,
		                                            .keepalive = p->keepalive };
	}
	struct xmpp_s2s_env *e = &gw->env;
	e->loop = loop;
	e->tls_server = gw->tls_server;
	e->tls_client = gw->tls_client;
	e->xml.max_stanza_bytes = gw->x->max_stanza_bytes;
	dialback_secret(cfg, e->db_secret);
	e->negotiate_timeout = cfg->connect_timeout_ms / 1000.0 * 2;
	e->keepalive = gw->x->keepalive_s;
	e->idle_timeout = gw->x->idle_timeout_s;
	e->max_queued_bytes = 4u << 20;
	e->cbs = &s2s_cbs;
	e->arg = gw;
	xmpp_s2s_env_init(e);
	for (unsigned i = 0; i < gw->x->nlisten; i++) {
		if (listen_on(gw, &gw->x->listen[i], &gw->listeners[i], err, errlen) < 0)
			goto fail;
		gw->nlisteners++;
		log_info("listening on XMPP %s port %u (server-to-server)", gw->x->listen[i].address,
		         gw->x->listen[i].port);
	}
	return gw;
fail:
	xmpp_gw_free(gw);
	return NULL;
}

void xmpp_gw_free(struct xmpp_gw *gw)
{
	if (!gw)
		return;
	gw->closing = 1;
	for (unsigned i = 0; i < gw->nlisteners; i++) {
		ev_io_stop(gw->loop, &gw->listeners[i].io);
		accept_stop(gw->loop, &gw->listeners[i].rest);
		close(gw->listeners[i].fd);
	}
	while (!list_empty(&gw->checks))
		check_free(list_entry(gw->checks.next, struct db_check, link));
	while (!list_empty(&gw->outs)) {
		struct out_pair *o = list_entry(gw->outs.next, struct out_pair, link);
		if (o->s) {
			struct stream_link *l = xmpp_s2s_user(o->s);
			if (l)
				l->out = NULL;
		}
		out_free(o);
	}
	while (!list_empty(&gw->streams)) {
		struct stream_link *l = list_entry(gw->streams.next, struct stream_link, link);
		list_del(&l->link);
		free(l);
	}
	if (gw->env.cbs)
		xmpp_s2s_shutdown(&gw->env);
	free(gw->listeners);
	free(gw->policies);
	tls_ctx_free(gw->tls_server);
	tls_ctx_free(gw->tls_client);
	free(gw);
}

size_t xmpp_gw_status_json(const struct xmpp_gw *gw, char *buf, size_t len)
{
	const struct gw_stats *st = &gw->stats;
	size_t at = 0;
	int n = snprintf(buf, len, "{\"streams_in\": %llu, \"streams_out\": %llu, "
	                 "\"streams_failed\": %llu, \"messages_out\": %llu, \"messages_in\": %llu, "
	                 "\"errors_out\": %llu, \"sip_refused\": %llu, \"dialback_checks\": %llu, "
	                 "\"streams\": [", st->streams_in, st->streams_out, st->streams_failed,
	                 st->messages_out, st->messages_in, st->errors_out, st->sip_refused,
	                 st->dialback_checks);
	if (n < 0 || (size_t)n >= len)
		return len ? len - 1 : 0;
	at = (size_t)n;
	const char *sep = "";
	struct list_node *it, *tmp;
	list_for_each_safe(it, tmp, &gw->streams) {
		const struct stream_link *l = list_entry(it, struct stream_link, link);
		const struct xmpp_s2s *s = l->s;
		const char *local = xmpp_s2s_local(s), *remote = xmpp_s2s_remote(s);
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
	n = snprintf(buf + at, len - at, "]}");
	if (n < 0 || (size_t)n >= len - at)
		return len - 1;
	return at + (size_t)n;
}
