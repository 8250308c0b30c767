/*
 * route: where a request goes, under the federation policy of Lync's
 * Access Edge (pol.h), with DNS SRV discovery and source verification
 * (dns.h).
 *
 * From the internal side: the sender must be one of our users whose
 * external access policy permits the route; the target domain decides the
 * next hop (allowed partner server, provider, default route, or the SRV
 * targets of _sipfederationtls._tcp.<domain>).
 *
 * From the federation side: the peer is classified from its verified
 * certificate (DirectPartner, AutoFederation, AuthorizedServer), the From
 * domain must be one it may speak for (its configured ProxyFqdn, or the
 * SRV target of that domain, named in its certificate and inside the
 * domain), the recipient's policy must permit it, and the request goes to
 * the internal next hop with the trust header the front ends expect.
 *
 * A decision may need DNS: rt_route() then answers later, from the loop.
 */
#ifndef EDGE_ROUTE_H
#define EDGE_ROUTE_H

#include <ev.h>

#include "cfg.h"
#include "conn.h"
#include "sip_msg.h"

struct rt_request {
	const struct sip_msg *msg;          /* after our own Route entries are removed */
	enum conn_side from_side;
	const char *const *peer_names;      /* verified TLS peer names, or NULL */
	unsigned npeer_names;
	const char *peer_str;               /* "ip:port", for logs */
	struct sip_str target_host;         /* host of the top Route, else of the R-URI */
	int target_from_route;              /* target_host came from a Route */
};

enum rt_action {
	RT_FORWARD,
	RT_REJECT,
};

/* Failover candidates kept per request: SRV targets times their addresses. */
#define RT_MAX_TARGETS 8

/* One place to try, in order; failover goes to the next on connect or TLS failure. */
struct rt_target {
	char name[256];                     /* the name the certificate must carry */
	struct sockaddr_storage addr;
	socklen_t addrlen;
};

struct rt_decision {
	enum rt_action action;
	/* RT_FORWARD */
	enum conn_side side;                /* where it goes */
	struct tls_ctx *tls;                /* NULL: TCP */
	unsigned max_conns;
	const struct conn_limits *lim;
	struct rt_target *targets;          /* owned: rt_decision_clear() frees them */
	unsigned ntargets;
	char trust[512];                    /* ms-edge-proxy-message-trust value, or "" */
	int discovered;                     /* from a discovered partner: note its responses */
	/* RT_REJECT */
	unsigned status;                    /* 403, 404, 503, 504 ... */
	unsigned retry_after;               /* seconds, for a 503; 0: none */
	char reason[256];                   /* for the Warning header */
	int quiet;                          /* one of many alike (throttling): log at debug */
};

/* Frees what d owns and empties it. */
void rt_decision_clear(struct rt_decision *d);
/* The conn_dest of target i of a forward decision; valid while d is. */
void rt_decision_dest(const struct rt_decision *d, unsigned i, struct conn_dest *out);

struct router;
struct dns_resolver;
struct thr_table;
struct rt_pending;

/*
 * Called once with the decision of a request that needed DNS. The callee
 * takes over what the decision owns.
 */
typedef void (*rt_done_fn)(void *arg, struct rt_decision *d);

struct clu_node;

/*
 * A router over cfg, sending TLS with client_tls, looking names up with
 * dns (NULL: no DNS; a decision that would need it is a 504), holding
 * discovered partners to the limits of thr, and sharing the sources it
 * verified by DNS with the pool through cluster (NULL: a pool of one). It
 * keeps the pointers, which must outlive it. Returns NULL when out of memory.
 */
struct router *rt_new(struct ev_loop *loop, const struct edge_cfg *cfg, struct tls_ctx *client_tls,
                      struct dns_resolver *dns, struct thr_table *thr, struct clu_node *cluster,
                      const struct conn_limits *internal_lim,
                      const struct conn_limits *external_lim);
/* Frees the router; pending decisions are dropped without their callbacks. */
void rt_free(struct router *r);

/* A forward decision to the internal next hop, into d (for requests the edge makes itself). */
void rt_next_hop(struct router *r, struct rt_decision *d);

/*
 * Decides where req goes. Returns 0 with *out filled (the caller owns it)
 * when it could decide at once. Returns 1 when it needs DNS: done(arg, d)
 * is called later, from the loop, unless rt_cancel(*pending) is called
 * first. req need not outlive the call.
 */
int rt_route(struct router *r, const struct rt_request *req, struct rt_decision *out,
             rt_done_fn done, void *arg, struct rt_pending **pending);
void rt_cancel(struct rt_pending *p);

/*
 * Requests naming each allowed domain marked for monitoring (Lync's
 * MarkForMonitoring): out, to it; in, from it. One entry per allowed
 * domain, in configuration order; domain NULL for those not monitored.
 * *n entries; valid while r is.
 */
struct rt_monitor {
	const char *domain;
	unsigned long long in, out;
};
const struct rt_monitor *rt_monitors(const struct router *r, unsigned *n);

#endif
