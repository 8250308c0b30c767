#include "route.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clu_node.h"
#include "dns.h"
#include "domain.h"
#include "list.h"
#include "pol.h"
#include "thr.h"

#define SRV_PREFIX "_sipfederationtls._tcp."

/* A source verified by DNS, shared with the pool: "ver/<domain>" = the SRV target. */
#define VERIFIED_KEY "ver/"
#define VERIFIED_TTL_MS (600 * 1000)

struct router {
	struct ev_loop *loop;
	struct clu_node *cluster;
	const struct edge_cfg *cfg;
	struct thr_table *thr;
	struct tls_ctx *client_tls;
	struct dns_resolver *dns;
	const struct conn_limits *internal_lim;
	const struct conn_limits *external_lim;
	struct list_node pending;
	unsigned npending;
	struct rt_monitor *monitors;        /* one per allowed domain; domain NULL: not monitored */
};

/* A decision waiting for DNS. */
struct rt_pending {
	struct list_node link;
	struct router *r;
	rt_done_fn done;
	void *arg;
	struct dns_query *q;                /* the lookup under way */
	struct rt_decision d;               /* being built */
	char domain[256];                   /* the partner domain */
	const struct cfg_access_policy *policy; /* outbound: the sender's */
	struct { char name[256]; uint16_t port; } srv[RT_MAX_TARGETS];
	unsigned nsrv, next_srv;
	char skipped[240];                  /* why SRV targets were refused, for the reason */
	/* inbound */
	char **names;                       /* the peer's certificate names (copies) */
	unsigned nnames;
	enum cfg_verification verification;
	int discovered;                     /* the From domain is a discovered partner */
	int marked;                         /* the request was marked verifiable */
	char contact[300];                  /* the recipient, user@host, for the contacts limit */
};

#define SPAN(str) (int)(str).len, (str).s

/* ---- decisions ---- */

void rt_decision_clear(struct rt_decision *d)
{
	free(d->targets);
	memset(d, 0, sizeof(*d));
}

void rt_decision_dest(const struct rt_decision *d, unsigned i, struct conn_dest *out)
{
	*out = (struct conn_dest){
		.name = d->targets[i].name,
		.addr = (const struct sockaddr *)&d->targets[i].addr,
		.addrlen = d->targets[i].addrlen,
		.side = d->side,
		.tls = d->tls,
		.max_conns = d->max_conns,
		.lim = d->lim,
	};
}

__attribute__((format(printf, 3, 4)))
static void reject(struct rt_decision *d, unsigned status, const char *fmt, ...)
{
	va_list ap;
	free(d->targets);
	d->targets = NULL;
	d->ntargets = 0;
	d->action = RT_REJECT;
	d->status = status;
	va_start(ap, fmt);
	vsnprintf(d->reason, sizeof(d->reason), fmt, ap);
	va_end(ap);
}

static int add_target(struct rt_decision *d, const char *name, const struct sockaddr *sa,
                      socklen_t len)
{
	if (d->ntargets >= RT_MAX_TARGETS || len > sizeof(struct sockaddr_storage))
		return 0;
	/* One target is the common case (a configured server, the next hop):
	 * room for the others only once a second one comes. */
	if (d->ntargets <= 1) {
		size_t cap = d->ntargets == 0 ? 1 : RT_MAX_TARGETS;
		struct rt_target *grown = realloc(d->targets, cap * sizeof(*grown));
		if (!grown)
			return -1;
		d->targets = grown;
	}
	struct rt_target *t = &d->targets[d->ntargets++];
	snprintf(t->name, sizeof(t->name), "%s", name);
	memcpy(&t->addr, sa, len);
	t->addrlen = len;
	return 0;
}

static void forward_external(struct router *r, struct rt_decision *d)
{
	d->action = RT_FORWARD;
	d->side = CONN_EXTERNAL;
	d->tls = r->client_tls;
	d->max_conns = r->cfg->edge.outgoing_tls_count;
	d->lim = r->external_lim;
}

static void to_next_hop(struct router *r, struct rt_decision *d)
{
	const struct cfg_next_hop *hop = &r->cfg->next_hop;
	d->action = RT_FORWARD;
	d->side = CONN_INTERNAL;
	d->tls = hop->tls ? r->client_tls : NULL;
	d->max_conns = r->cfg->edge.outgoing_tls_count;
	d->lim = r->internal_lim;
	if (add_target(d, hop->fqdn, (const struct sockaddr *)&hop->addr.sa, hop->addr.salen) < 0)
		reject(d, 500, "out of memory");
}

void rt_next_hop(struct router *r, struct rt_decision *d)
{
	memset(d, 0, sizeof(*d));
	to_next_hop(r, d);
}

/* ---- pending decisions ---- */

/* A pending decision, or NULL with out a rejection (too many, or no memory). */
static struct rt_pending *pending_new(struct router *r, rt_done_fn done, void *arg,
                                      struct rt_decision *out)
{
	/* Past the bound, a flood of unknown domains gets 503, not our memory. */
	if (r->npending >= r->cfg->dns.max_pending) {
		reject(out, 503, "too many DNS lookups in progress");
		out->retry_after = 1;
		out->quiet = 1;
		return NULL;
	}
	struct rt_pending *p = calloc(1, sizeof(*p));
	if (!p) {
		reject(out, 500, "out of memory");
		return NULL;
	}
	r->npending++;
	p->r = r;
	p->done = done;
	p->arg = arg;
	p->d = *out;
	list_add_tail(&r->pending, &p->link);
	return p;
}

static void pending_free(struct rt_pending *p)
{
	list_del(&p->link);
	p->r->npending--;
	if (p->q)
		dns_cancel(p->q);
	for (unsigned i = 0; i < p->nnames; i++)
		free(p->names[i]);
	free(p->names);
	rt_decision_clear(&p->d);
	free(p);
}

/* Hands the decision over and frees the pending request. */
static void pending_finish(struct rt_pending *p)
{
	struct rt_decision d = p->d;
	rt_done_fn done = p->done;
	void *arg = p->arg;
	p->q = NULL;
	memset(&p->d, 0, sizeof(p->d));
	pending_free(p);
	done(arg, &d);
}

void rt_cancel(struct rt_pending *p)
{
	if (p)
		pending_free(p);
}

/* ---- outbound ---- */

static void out_next_addr(struct rt_pending *p);

static void on_out_addr(void *arg, int status, const struct dns_addr_answer *ans)
{
	struct rt_pending *p = arg;
	p->q = NULL;
	const char *name = p->srv[p->next_srv - 1].name;
	if (status == DNS_OK)
		for (unsigned i = 0; i < ans->n; i++)
			if (add_target(&p->d, name, (const struct sockaddr *)&ans->addrs[i].sa,
			               ans->addrs[i].salen) < 0) {
				reject(&p->d, 500, "out of memory");
				pending_finish(p);
				return;
			}
	if (status != DNS_OK && !p->skipped[0])
		snprintf(p->skipped, sizeof(p->skipped), "%.120s: %s", name, dns_strerror(status));
	out_next_addr(p);
}

/* Resolves the next SRV target (or the server), or finishes. */
static void out_next_addr(struct rt_pending *p)
{
	if (p->next_srv < p->nsrv && p->d.ntargets < RT_MAX_TARGETS) {
		unsigned i = p->next_srv++;
		p->q = dns_resolve_addr(p->r->dns, p->srv[i].name, p->srv[i].port, on_out_addr, p);
		if (!p->q) {
			reject(&p->d, 500, "out of memory");
			pending_finish(p);
		}
		return;
	}
	if (p->d.ntargets == 0)
		reject(&p->d, 504, "no usable server for %s%s%s", p->domain,
		       p->skipped[0] ? ": " : "", p->skipped);
	pending_finish(p);
}

static void on_out_srv(void *arg, int status, const struct dns_srv_answer *ans)
{
	struct rt_pending *p = arg;
	const struct edge_cfg *cfg = p->r->cfg;
	p->q = NULL;
	if (status != DNS_OK) {
		if (status == DNS_ENOTFOUND)
			reject(&p->d, 404, "no DNS SRV record %s%s", SRV_PREFIX, p->domain);
		else
			reject(&p->d, 504, "DNS SRV lookup of %s%s failed: %s", SRV_PREFIX, p->domain,
			       dns_strerror(status));
		pending_finish(p);
		return;
	}
	for (unsigned i = 0; i < ans->n && p->nsrv < RT_MAX_TARGETS; i++) {
		const struct dns_srv_target *t = &ans->targets[i];
		const struct cfg_provider *provider;
		if (!pol_srv_target_ok(cfg, p->domain, strlen(p->domain), t->name, &provider)) {
			snprintf(p->skipped, sizeof(p->skipped), "SRV target %.120s is outside %.60s",
			         t->name, p->domain);
			continue;
		}
		/* A domain hosted by a provider is that provider's: its policy flag applies. */
		if (provider && p->nsrv == 0) {
			enum pol_network net = provider->kind == CFG_PUBLIC_PROVIDER ? POL_NET_PUBLIC_CLOUD
			                                                            : POL_NET_FEDERATION;
			if (!pol_policy_permits(p->policy, net)) {
				reject(&p->d, 403, "external access policy '%s' of the sender does not "
				       "permit %s access (%s is hosted by %s)", p->policy->identity,
				       net == POL_NET_PUBLIC_CLOUD ? "public cloud" : "federation",
				       p->domain, provider->identity);
				pending_finish(p);
				return;
			}
		}
		snprintf(p->srv[p->nsrv].name, sizeof(p->srv[p->nsrv].name), "%s", t->name);
		p->srv[p->nsrv].port = t->port;
		p->nsrv++;
	}
	out_next_addr(p);
}

/* Where an outbound request goes once its domain is classified. */
static int route_to_domain(struct router *r, const struct pol_domain *dom, const char *domain,
                           const struct cfg_access_policy *policy, struct rt_decision *out,
                           rt_done_fn done, void *arg, struct rt_pending **pending)
{
	forward_external(r, out);
	const struct cfg_server *s = dom->server;
	if (dom->kind == POL_DOM_SERVER && *s->address) {
		if (add_target(out, s->fqdn, (const struct sockaddr *)&s->addr.sa, s->addr.salen) < 0)
			reject(out, 500, "out of memory");
		return 0;
	}
	if (!r->dns) {
		reject(out, 504, "%s needs DNS, and no resolver is configured",
		       dom->kind == POL_DOM_SERVER ? s->fqdn : domain);
		return 0;
	}
	struct rt_pending *p = pending_new(r, done, arg, out);
	if (!p)
		return 0;
	memset(out, 0, sizeof(*out));
	snprintf(p->domain, sizeof(p->domain), "%s", domain);
	p->policy = policy;
	if (dom->kind == POL_DOM_SERVER) {
		snprintf(p->srv[0].name, sizeof(p->srv[0].name), "%s", s->fqdn);
		p->srv[0].port = s->port;
		p->nsrv = p->next_srv = 1;
		p->q = dns_resolve_addr(r->dns, s->fqdn, s->port, on_out_addr, p);
	} else {
		char qname[300];
		snprintf(qname, sizeof(qname), SRV_PREFIX "%s", domain);
		p->q = dns_resolve_srv(r->dns, qname, on_out_srv, p);
	}
	if (!p->q) {
		pending_free(p);
		reject(out, 500, "out of memory");
		return 0;
	}
	*pending = p;
	return 1;
}

/* Counts a request to (inbound 0) or from (1) an allowed domain marked for monitoring. */
static void count_monitored(struct router *r, const struct pol_domain *dom, int inbound)
{
	if (!dom->allowed || !dom->allowed->mark_for_monitoring || !r->monitors)
		return;
	struct rt_monitor *m = &r->monitors[dom->allowed - r->cfg->allowed];
	if (inbound)
		m->in++;
	else
		m->out++;
}

const struct rt_monitor *rt_monitors(const struct router *r, unsigned *n)
{
	*n = r->monitors ? r->cfg->nallowed : 0;
	return r->monitors;
}

/* A host off the wire as a domain name, without the root's dot; -1 when it is none. */
static int domain_copy(struct sip_str host, char *out, size_t len)
{
	if (host.len > 1 && host.s[host.len - 1] == '.')
		host.len--;
	if (host.len >= len || !dom_valid(host.s, host.len))
		return -1;
	memcpy(out, host.s, host.len);
	out[host.len] = '\0';
	return 0;
}

/* The configured server whose FQDN or address host is: in-dialog Routes name them. */
static const struct cfg_server *server_for_host(const struct edge_cfg *cfg, struct sip_str host)
{
	for (unsigned i = 0; i < cfg->nallowed; i++) {
		const struct cfg_server *s = &cfg->allowed[i].server;
		if (s->fqdn && (sip_str_caseeq(host, s->fqdn) ||
		                (*s->address && sip_str_caseeq(host, s->address))))
			return s;
	}
	for (unsigned i = 0; i < cfg->nproviders; i++) {
		const struct cfg_server *s = &cfg->providers[i].server;
		if (cfg->providers[i].enabled && (sip_str_caseeq(host, s->fqdn) ||
		                                  (*s->address && sip_str_caseeq(host, s->address))))
			return s;
	}
	const struct cfg_server *s = &cfg->edge.default_route;
	if (cfg->edge.use_default_route && (sip_str_caseeq(host, s->fqdn) ||
	                                    (*s->address && sip_str_caseeq(host, s->address))))
		return s;
	return NULL;
}

/* user and host of the URI in header id; -1 when there is none. */
static int header_aor(const struct sip_msg *m, enum sip_hdr_id id, struct sip_uri *uri)
{
	struct sip_nameaddr na;
	int i = sip_msg_find(m, id, 0);
	if (i < 0 || sip_nameaddr_parse(m->hdrs[i].value, &na) < 0)
		return -1;
	return sip_uri_parse(na.uri, uri);
}

static int decide_outbound(struct router *r, const struct rt_request *req, struct rt_decision *out,
                           rt_done_fn done, void *arg, struct rt_pending **pending)
{
	const struct edge_cfg *cfg = r->cfg;
	struct sip_uri from, to;
	if (header_aor(req->msg, SIP_HDR_FROM, &from) < 0)
		return reject(out, 400, "the From header has no SIP URI"), 0;
	struct pol_domain sender;
	pol_classify_domain(cfg, from.host.s, from.host.len, &sender);
	if (sender.kind != POL_DOM_OWN)
		return reject(out, 403, "sender domain %.*s is not a domain of this organization",
		              SPAN(from.host)), 0;
	if (!cfg->edge.allow_federated_users)
		return reject(out, 403, "federation is disabled (access_edge.allow_federated_users)"), 0;

	/* In dialog, or along a pre-loaded Route: a configured server named by the Route. */
	const struct cfg_server *via = req->target_from_route ? server_for_host(cfg, req->target_host)
	                                                      : NULL;
	struct sip_str domain = req->target_host;
	if (req->target_from_route && !via) {
		if (req->msg->to_tag.len == 0)
			return reject(out, 404, "no route to %.*s: not a configured partner server",
			              SPAN(req->target_host)), 0;
		/* In dialog with a discovered partner: the To domain is the partner's. */
		if (header_aor(req->msg, SIP_HDR_TO, &to) < 0)
			return reject(out, 400, "the To header has no SIP URI"), 0;
		domain = to.host;
	}
	struct pol_domain dom;
	if (via) {
		/* The Route names the server: the remote party is the To domain's. */
		if (header_aor(req->msg, SIP_HDR_TO, &to) < 0)
			return reject(out, 400, "the To header has no SIP URI"), 0;
		pol_classify_domain(cfg, to.host.s, to.host.len, &dom);
		if (dom.kind == POL_DOM_BLOCKED)
			return reject(out, 403, "domain %.*s is blocked", SPAN(to.host)), 0;
		dom.kind = POL_DOM_SERVER;
		dom.server = via;
		domain = to.host;
	} else {
		pol_classify_domain(cfg, domain.s, domain.len, &dom);
	}
	count_monitored(r, &dom, 0);

	const struct cfg_access_policy *policy =
		pol_user_policy(cfg, from.user.s, from.user.len, from.host.s, from.host.len);
	if (dom.kind != POL_DOM_OWN && !pol_policy_permits(policy, dom.network))
		return reject(out, 403, "external access policy '%s' of %.*s@%.*s does not permit "
		              "%s access", policy->identity, SPAN(from.user), SPAN(from.host),
		              dom.network == POL_NET_PUBLIC_CLOUD ? "public cloud" : "federation"), 0;
	switch (dom.kind) {
	case POL_DOM_OWN:
		return reject(out, 404, "%.*s is a domain of this organization: internal traffic "
		              "does not cross the edge", SPAN(domain)), 0;
	case POL_DOM_BLOCKED:
		return reject(out, 403, "domain %.*s is blocked%s%s", SPAN(domain),
		              *dom.blocked->comment ? ": " : "", dom.blocked->comment), 0;
	case POL_DOM_DENIED:
		return reject(out, 403, "domain %.*s is not an allowed federation partner "
		              "(partner discovery is off)", SPAN(domain)), 0;
	case POL_DOM_SERVER:
	case POL_DOM_SRV:
		break;
	}
	char name[256];
	if (domain_copy(domain, name, sizeof(name)) < 0)
		return reject(out, 416, "%.*s is not a domain name", SPAN(domain)), 0;
	return route_to_domain(r, &dom, name, policy, out, done, arg, pending);
}

/* ---- inbound ---- */

/* Whether the sender's edge marked the request verifiable (its MarkSourceVerifiableOnOutgoingMessages). */
static int marked_verifiable(const struct sip_msg *m)
{
	int i = sip_msg_find_name(m, POL_VERIFIED_HEADER, 0);
	return i >= 0 && sip_str_caseeq(m->hdrs[i].value, "verified");
}

/*
 * Finishes an inbound decision: the next hop, and the trust header. Under
 * UseSourceVerification a request is verified when its source is (the
 * peer may speak for the From domain) and its edge marked it verifiable.
 */
static void inbound_accept(struct router *r, struct rt_decision *d, enum pol_source source,
                           enum pol_network net, enum cfg_verification level,
                           int source_verified, const char *remote_fqdn)
{
	to_next_hop(r, d);
	if (d->action == RT_FORWARD)
		pol_trust_value(d->trust, sizeof(d->trust), source, r->cfg->pool_fqdn,
		                pol_is_verified(level, source_verified), net, remote_fqdn);
}

/*
 * Holds a discovered partner to its limits (thr.h). Returns 1 when the
 * request may pass, else 0 with d a rejection.
 */
static int admit_discovered(struct router *r, struct rt_decision *d, const char *domain,
                            const char *contact)
{
	struct thr_result res;
	if (!r->thr)
		return 1;
	thr_admit(r->thr, domain, contact, strlen(contact), ev_now(r->loop), &res);
	d->discovered = 1;
	switch (res.verdict) {
	case THR_PASS:
		return 1;
	case THR_RATE:
		reject(d, 503, "discovered partner %s is over %u requests per second%s", domain,
		       res.rate, res.suspicious ? " (suspicious: too many failed requests)" : "");
		d->quiet = 1;
		break;
	case THR_BLOCKED:
		reject(d, 403, "discovered partner %s is blocked: it addressed more than %u users "
		       "in %u minutes", domain, r->cfg->edge.discovered_max_contacts,
		       r->cfg->edge.discovered_report_period_min);
		d->quiet = !res.changed;
		break;
	}
	d->retry_after = res.retry_after;
	return 0;
}

/* The pool learns that domain's edge is `name` (an SRV target inside it). */
static void share_verified(struct router *r, const char *domain, const char *name)
{
	char key[300];
	if (!r->cluster)
		return;
	snprintf(key, sizeof(key), VERIFIED_KEY "%s", domain);
	const struct clu_rec *known = clu_node_get(r->cluster, key);
	if (known && known->len == strlen(name) && memcmp(known->value, name, known->len) == 0)
		return; /* the pool knows */
	clu_node_put(r->cluster, key, name, strlen(name), VERIFIED_TTL_MS);
}

/*
 * Whether a node of the pool verified by DNS, lately, that domain's edge is
 * one of the peer's certificate names: then no lookup is needed. Fills name.
 */
static int verified_by_pool(const struct router *r, const char *domain,
                            const struct rt_request *req, char *name, size_t len)
{
	char key[300];
	if (!r->cluster)
		return 0;
	snprintf(key, sizeof(key), VERIFIED_KEY "%s", domain);
	const struct clu_rec *rec = clu_node_get(r->cluster, key);
	if (!rec || rec->len >= len)
		return 0;
	memcpy(name, rec->value, rec->len);
	name[rec->len] = '\0';
	return dom_within(name, rec->len, domain) &&
	       pol_names_have(req->peer_names, req->npeer_names, name);
}

static void on_in_srv(void *arg, int status, const struct dns_srv_answer *ans)
{
	struct rt_pending *p = arg;
	p->q = NULL;
	if (status != DNS_OK) {
		if (status == DNS_ENOTFOUND)
			reject(&p->d, 403, "source not verified: %s has no %s record", p->domain,
			       SRV_PREFIX);
		else
			reject(&p->d, 504, "source not verified: DNS SRV of %s: %s", p->domain,
			       dns_strerror(status));
		pending_finish(p);
		return;
	}
	for (unsigned i = 0; i < ans->n; i++) {
		const char *t = ans->targets[i].name;
		if (dom_within(t, strlen(t), p->domain) &&
		    pol_names_have((const char *const *)p->names, p->nnames, t)) {
			share_verified(p->r, p->domain, t);
			if (!p->discovered || admit_discovered(p->r, &p->d, p->domain, p->contact))
				inbound_accept(p->r, &p->d, POL_SRC_AUTO_FEDERATION, POL_NET_FEDERATION,
				               p->verification, p->marked, t);
			pending_finish(p);
			return;
		}
	}
	reject(&p->d, 403, "spoofed source: no SRV target of %s inside it is named by the peer's "
	       "certificate (%s)", p->domain, p->nnames ? p->names[0] : "no names");
	pending_finish(p);
}

/* Verifies by DNS SRV that the peer may speak for domain (AutoFederation). */
static int verify_by_srv(struct router *r, const struct rt_request *req, const char *domain,
                         const struct pol_domain *dom, const struct sip_uri *rcpt,
                         struct rt_decision *out, rt_done_fn done, void *arg,
                         struct rt_pending **pending)
{
	if (!r->dns)
		return reject(out, 504, "verifying %s needs DNS, and no resolver is configured",
		              domain), 0;
	struct rt_pending *p = pending_new(r, done, arg, out);
	char qname[300];
	if (!p)
		return 0;
	snprintf(p->domain, sizeof(p->domain), "%s", domain);
	p->verification = dom->verification;
	p->discovered = dom->discovered;
	p->marked = marked_verifiable(req->msg);
	snprintf(p->contact, sizeof(p->contact), "%.*s@%.*s", SPAN(rcpt->user), SPAN(rcpt->host));
	p->names = calloc(req->npeer_names + 1, sizeof(*p->names));
	for (unsigned i = 0; p->names && i < req->npeer_names; i++)
		if ((p->names[p->nnames] = strdup(req->peer_names[i])) != NULL)
			p->nnames++;
	snprintf(qname, sizeof(qname), SRV_PREFIX "%s", domain);
	if (p->names)
		p->q = dns_resolve_srv(r->dns, qname, on_in_srv, p);
	if (!p->q) {
		pending_free(p);
		return reject(out, 500, "out of memory"), 0;
	}
	memset(out, 0, sizeof(*out));
	*pending = p;
	return 1;
}

static void names_list(const struct rt_request *req, char *buf, size_t len)
{
	size_t at = 0;
	buf[0] = '\0';
	for (unsigned k = 0; k < req->npeer_names && at < len; k++)
		at += (size_t)snprintf(buf + at, len - at, "%s%s", k ? ", " : "", req->peer_names[k]);
	if (req->npeer_names == 0)
		snprintf(buf, len, "none");
}

static int decide_inbound(struct router *r, const struct rt_request *req, struct rt_decision *out,
                          rt_done_fn done, void *arg, struct rt_pending **pending)
{
	const struct edge_cfg *cfg = r->cfg;
	const struct sip_msg *m = req->msg;
	char names[160];
	names_list(req, names, sizeof(names));
	if (!cfg->edge.allow_federated_users)
		return reject(out, 403, "federation is disabled"), 0;
	struct sip_uri from, to;
	if (header_aor(m, SIP_HDR_FROM, &from) < 0)
		return reject(out, 400, "the From header has no SIP URI"), 0;
	if (header_aor(m, SIP_HDR_TO, &to) < 0)
		return reject(out, 400, "the To header has no SIP URI"), 0;

	/* The recipient: one of ours, or the request is in a dialog. */
	struct pol_domain target;
	pol_classify_domain(cfg, req->target_host.s, req->target_host.len, &target);
	if (m->to_tag.len == 0 && target.kind != POL_DOM_OWN)
		return reject(out, 403, "relay denied: %.*s is not a domain of this organization",
		              SPAN(req->target_host)), 0;

	struct pol_peer peer;
	struct pol_domain dom;
	pol_classify_peer(cfg, req->peer_names, req->npeer_names, &peer);
	pol_classify_domain(cfg, from.host.s, from.host.len, &dom);
	count_monitored(r, &dom, 1);
	if (dom.kind == POL_DOM_BLOCKED)
		return reject(out, 403, "sender domain %.*s is blocked", SPAN(from.host)), 0;

	enum pol_network net = POL_NET_FEDERATION;
	if (peer.source == POL_SRC_AUTHORIZED_SERVER && peer.provider)
		net = peer.provider->kind == CFG_PUBLIC_PROVIDER ? POL_NET_PUBLIC_CLOUD
		                                                 : POL_NET_FEDERATION;
	else if (peer.source == POL_SRC_AUTHORIZED_SERVER && cfg->edge.default_route_is_public_provider)
		net = POL_NET_PUBLIC_CLOUD;
	/* The recipient: the Request-URI names it outside a dialog (the To is
	 * the sender's to choose); inside one the Request-URI is a contact. */
	struct sip_uri rcpt, ruri;
	struct pol_domain ruri_dom;
	rcpt = to;
	if (sip_uri_parse(m->ruri, &ruri) == 0) {
		pol_classify_domain(cfg, ruri.host.s, ruri.host.len, &ruri_dom);
		if (ruri_dom.kind == POL_DOM_OWN)
			rcpt = ruri;
	}
	const struct cfg_access_policy *policy =
		pol_user_policy(cfg, rcpt.user.s, rcpt.user.len, rcpt.host.s, rcpt.host.len);
	if (!pol_policy_permits(policy, net))
		return reject(out, 403, "external access policy '%s' of the recipient does not permit "
		              "%s access", policy->identity,
		              net == POL_NET_PUBLIC_CLOUD ? "public cloud" : "federation"), 0;

	if (peer.source == POL_SRC_AUTHORIZED_SERVER) {
		/* A provider speaks for the domains it hosts; ours only in a shared address space. */
		const struct cfg_provider *pv = peer.provider;
		if (dom.kind == POL_DOM_OWN && !(pv && pv->kind == CFG_HOSTING_PROVIDER &&
		                                 pv->shared_address_space))
			return reject(out, 403, "spoofed source: %s may not speak for our domain %.*s",
			              peer.fqdn, SPAN(from.host)), 0;
		enum cfg_verification level = pv ? pv->verification
		                                 : cfg->edge.default_route_verification;
		inbound_accept(r, out, POL_SRC_AUTHORIZED_SERVER, net, level, marked_verifiable(m),
		               peer.fqdn);
		return 0;
	}
	switch (dom.kind) {
	case POL_DOM_SERVER:
		if (dom.source == POL_SRC_DIRECT_PARTNER &&
		    pol_names_have(req->peer_names, req->npeer_names, dom.server->fqdn)) {
			inbound_accept(r, out, POL_SRC_DIRECT_PARTNER, POL_NET_FEDERATION,
			               dom.verification, marked_verifiable(m), dom.server->fqdn);
			return 0;
		}
		return reject(out, 403, "spoofed source: %.*s is served by %s, not by the peer (%s)",
		              SPAN(from.host), dom.server->fqdn, names), 0;
	case POL_DOM_SRV: {
		char domain[256];
		if (domain_copy(from.host, domain, sizeof(domain)) < 0)
			return reject(out, 403, "sender domain %.*s is not a domain name",
			              SPAN(from.host)), 0;
		char name[256], contact[300];
		if (verified_by_pool(r, domain, req, name, sizeof(name))) {
			snprintf(contact, sizeof(contact), "%.*s@%.*s", SPAN(rcpt.user), SPAN(rcpt.host));
			if (!dom.discovered || admit_discovered(r, out, domain, contact))
				inbound_accept(r, out, POL_SRC_AUTO_FEDERATION, POL_NET_FEDERATION,
				               dom.verification, marked_verifiable(m), name);
			return 0;
		}
		return verify_by_srv(r, req, domain, &dom, &rcpt, out, done, arg, pending);
	}
	case POL_DOM_OWN:
		return reject(out, 403, "spoofed source: the peer (%s) sends as our domain %.*s",
		              names, SPAN(from.host)), 0;
	case POL_DOM_BLOCKED:
	case POL_DOM_DENIED:
		break;
	}
	return reject(out, 403, "sender domain %.*s is not an allowed federation partner "
	              "(peer certificate names: %s)", SPAN(from.host), names), 0;
}

/* ---- the router ---- */

int rt_route(struct router *r, const struct rt_request *req, struct rt_decision *out,
             rt_done_fn done, void *arg, struct rt_pending **pending)
{
	memset(out, 0, sizeof(*out));
	*pending = NULL;
	if (req->from_side == CONN_INTERNAL)
		return decide_outbound(r, req, out, done, arg, pending);
	return decide_inbound(r, req, out, done, arg, pending);
}

struct router *rt_new(struct ev_loop *loop, const struct edge_cfg *cfg, struct tls_ctx *client_tls,
                      struct dns_resolver *dns, struct thr_table *thr, struct clu_node *cluster,
                      const struct conn_limits *internal_lim,
                      const struct conn_limits *external_lim)
{
	struct router *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->loop = loop;
	r->cluster = cluster;
	r->thr = thr;
	r->cfg = cfg;
	r->client_tls = client_tls;
	r->dns = dns;
	r->internal_lim = internal_lim;
	r->external_lim = external_lim;
	list_init(&r->pending);
	if (cfg->nallowed) {
		r->monitors = calloc(cfg->nallowed, sizeof(*r->monitors));
		if (!r->monitors) {
			free(r);
			return NULL;
		}
		for (unsigned i = 0; i < cfg->nallowed; i++)
			if (cfg->allowed[i].mark_for_monitoring)
				r->monitors[i].domain = cfg->allowed[i].domain;
	}
	return r;
}

void rt_free(struct router *r)
{
	if (!r)
		return;
	while (!list_empty(&r->pending))
		pending_free(list_entry(r->pending.next, struct rt_pending, link));
	free(r->monitors);
	free(r);
}
