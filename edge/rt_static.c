#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "route.h"

struct rt_static {
	struct router super;
	const struct edge_cfg *cfg;
	struct tls_ctx *client_tls;
	const struct conn_limits *internal_lim;
	const struct conn_limits *external_lim;
};

static int host_is(struct sip_str host, const char *name)
{
	return sip_str_caseeq(host, name);
}

static int is_own_domain(const struct edge_cfg *cfg, struct sip_str host)
{
	for (unsigned i = 0; i < cfg->nsip_domains; i++)
		if (host_is(host, cfg->sip_domains[i]))
			return 1;
	return 0;
}

/*
 * The partner serving a domain, or whose edge this is: by FQDN, or by the
 * configured address, which is what a Record-Route of Kamailio and others
 * carries.
 */
static const struct cfg_partner *partner_for_host(const struct edge_cfg *cfg, struct sip_str host)
{
	for (unsigned i = 0; i < cfg->npartners; i++) {
		const struct cfg_partner *p = &cfg->partners[i];
		if (host_is(host, p->fqdn) || (*p->address && host_is(host, p->address)))
			return p;
		for (unsigned d = 0; d < p->ndomains; d++)
			if (host_is(host, p->domains[d]))
				return p;
	}
	return NULL;
}

static const struct cfg_partner *partner_for_peer(const struct edge_cfg *cfg,
                                                  const char *const *names, unsigned n)
{
	for (unsigned i = 0; i < cfg->npartners; i++)
		for (unsigned k = 0; k < n; k++)
			if (strcasecmp(names[k], cfg->partners[i].fqdn) == 0)
				return &cfg->partners[i];
	return NULL;
}

static int partner_serves(const struct cfg_partner *p, struct sip_str domain)
{
	for (unsigned d = 0; d < p->ndomains; d++)
		if (host_is(domain, p->domains[d]))
			return 1;
	return 0;
}

__attribute__((format(printf, 3, 4)))
static void reject(struct rt_decision *out, unsigned status, const char *fmt, ...)
{
	va_list ap;
	out->action = RT_REJECT;
	out->status = status;
	va_start(ap, fmt);
	vsnprintf(out->reason, sizeof(out->reason), fmt, ap);
	va_end(ap);
}

static void to_partner(struct rt_static *rt, const struct cfg_partner *p, struct rt_decision *out)
{
	out->action = RT_FORWARD;
	out->dest = (struct conn_dest){
		.name = p->fqdn,
		.addr = (const struct sockaddr *)&p->addr.sa,
		.addrlen = p->addr.salen,
		.side = CONN_EXTERNAL,
		.tls = rt->client_tls,
		.max_conns = rt->cfg->outgoing_tls_count,
		.lim = rt->external_lim,
	};
}

static void to_next_hop(struct rt_static *rt, struct rt_decision *out)
{
	const struct cfg_next_hop *hop = &rt->cfg->next_hop;
	out->action = RT_FORWARD;
	out->dest = (struct conn_dest){
		.name = hop->fqdn,
		.addr = (const struct sockaddr *)&hop->addr.sa,
		.addrlen = hop->addr.salen,
		.side = CONN_INTERNAL,
		.tls = hop->tls ? rt->client_tls : NULL,
		.max_conns = rt->cfg->outgoing_tls_count,
		.lim = rt->internal_lim,
	};
}

#define SPAN(str) (int)(str).len, (str).s

static void decide_outbound(struct rt_static *rt, const struct rt_request *req,
                            struct rt_decision *out)
{
	const struct edge_cfg *cfg = rt->cfg;
	struct sip_str from_host = { 0 };
	int i = sip_msg_find(req->msg, SIP_HDR_FROM, 0);
	if (i < 0 || sip_uri_host_of(req->msg->hdrs[i].value, &from_host) < 0)
		return reject(out, 400, "the From header has no SIP URI");
	if (!is_own_domain(cfg, from_host))
		return reject(out, 403, "sender domain %.*s is not a domain of this organization",
		              SPAN(from_host));

	const struct cfg_partner *p = partner_for_host(cfg, req->target_host);
	if (p)
		return to_partner(rt, p, out);
	if (req->target_from_route)
		return reject(out, 404, "no route to %.*s: not a configured partner server",
		              SPAN(req->target_host));
	if (is_own_domain(cfg, req->target_host))
		return reject(out, 404, "%.*s is a domain of this organization: "
		              "internal traffic does not cross the edge", SPAN(req->target_host));
	reject(out, 403, "domain %.*s is not an allowed federation partner",
	       SPAN(req->target_host));
}

static void decide_inbound(struct rt_static *rt, const struct rt_request *req,
                           struct rt_decision *out)
{
	const struct edge_cfg *cfg = rt->cfg;
	const struct cfg_partner *p = partner_for_peer(cfg, req->peer_names, req->npeer_names);
	if (!p) {
		char names[160] = "";
		size_t at = 0;
		for (unsigned k = 0; k < req->npeer_names && at < sizeof(names); k++)
			at += (size_t)snprintf(names + at, sizeof(names) - at, "%s%s",
			                       k ? ", " : "", req->peer_names[k]);
		return reject(out, 403, "peer certificate names (%s) are not an allowed partner server",
		              req->npeer_names ? names : "none");
	}
	struct sip_str from_host = { 0 };
	int i = sip_msg_find(req->msg, SIP_HDR_FROM, 0);
	if (i < 0 || sip_uri_host_of(req->msg->hdrs[i].value, &from_host) < 0)
		return reject(out, 400, "the From header has no SIP URI");
	if (!partner_serves(p, from_host))
		return reject(out, 403, "sender domain %.*s is not served by partner %s",
		              SPAN(from_host), p->fqdn);
	/* In-dialog requests target an internal user's contact, not a domain. A
	 * Route on an initial request proves nothing: it is the sender's choice. */
	if (req->msg->to_tag.len > 0 || is_own_domain(cfg, req->target_host))
		return to_next_hop(rt, out);
	reject(out, 403, "relay denied: %.*s is not a domain of this organization",
	       SPAN(req->target_host));
}

static void rt_static_decide(struct router *r, const struct rt_request *req,
                             struct rt_decision *out)
{
	struct rt_static *rt = (struct rt_static *)r;
	if (req->from_side == CONN_INTERNAL)
		decide_outbound(rt, req, out);
	else
		decide_inbound(rt, req, out);
}

static void rt_static_destroy(struct router *r)
{
	free(r);
}

static const struct router_ops rt_static_ops = {
	.name = "static",
	.decide = rt_static_decide,
	.destroy = rt_static_destroy,
};

struct router *rt_static_new(const struct edge_cfg *cfg, struct tls_ctx *client_tls,
                             const struct conn_limits *internal_lim,
                             const struct conn_limits *external_lim)
{
	struct rt_static *rt = calloc(1, sizeof(*rt));
	if (!rt)
		return NULL;
	rt->super.ops = &rt_static_ops;
	rt->cfg = cfg;
	rt->client_tls = client_tls;
	rt->internal_lim = internal_lim;
	rt->external_lim = external_lim;
	return &rt->super;
}
