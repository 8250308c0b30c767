/*
 * route: where a request goes, behind an interface that the federation
 * policy engine replaces later (a const table of callbacks, as h2o's
 * balancers).
 *
 * rt_static implements the foundation's rules:
 *  - from the internal side, the request's target domain must be a
 *    configured partner's (Lync: an allowed partner server), and the
 *    sender's domain one of ours;
 *  - from the external side, the peer's certificate must name a configured
 *    partner, the sender's domain must be one of that partner's, and the
 *    target must be one of our domains (or the request in-dialog): it goes
 *    to the internal next hop;
 *  - anything else is refused with a status and a reason for the Warning.
 */
#ifndef EDGE_ROUTE_H
#define EDGE_ROUTE_H

#include "cfg.h"
#include "conn.h"
#include "sip_msg.h"

struct rt_request {
	const struct sip_msg *msg;          /* after our own Route entries are removed */
	enum conn_side from_side;
	const char *const *peer_names;      /* verified TLS peer names, or NULL */
	unsigned npeer_names;
	struct sip_str target_host;         /* host of the top Route, else of the R-URI */
	int target_from_route;              /* target_host came from a Route */
};

enum rt_action {
	RT_FORWARD,
	RT_REJECT,
};

struct rt_decision {
	enum rt_action action;
	struct conn_dest dest;              /* RT_FORWARD: points into the router */
	unsigned status;                    /* RT_REJECT: 403, 404, ... */
	char reason[256];                   /* RT_REJECT: for the Warning header */
};

struct router;

struct router_ops {
	const char *name;
	/* Fills *out. Never fails: a request it cannot place is a rejection. */
	void (*decide)(struct router *r, const struct rt_request *req, struct rt_decision *out);
	void (*destroy)(struct router *r);
};

struct router {
	const struct router_ops *ops;
};

/*
 * The static router. It keeps pointers to cfg, client_tls and the limits,
 * which must outlive it. Returns NULL when out of memory.
 */
struct router *rt_static_new(const struct edge_cfg *cfg, struct tls_ctx *client_tls,
                             const struct conn_limits *internal_lim,
                             const struct conn_limits *external_lim);

static inline void rt_decide(struct router *r, const struct rt_request *req,
                             struct rt_decision *out)
{
	r->ops->decide(r, req, out);
}

static inline void rt_destroy(struct router *r)
{
	if (r)
		r->ops->destroy(r);
}

#endif
