/*
 * proxy: edged's SIP core, a transaction-stateful proxy per RFC 3261
 * section 16 for reliable transports, between the internal side and the
 * federation side.
 *
 * For each request it validates (Max-Forwards, loop detection,
 * Proxy-Require), answers what is addressed to the edge itself (OPTIONS),
 * removes its own Route entries (loose routing), asks the router where the
 * request goes, and forwards it with its own Via and, on dialog-creating
 * requests, two Record-Route entries: the pool FQDN for the federation side
 * and the internal listener for the internal side, so that in-dialog
 * requests from either side come back through the pool.
 *
 * One server transaction and one client transaction form a proxied
 * transaction (no forking: every request has exactly one target). Timers
 * are those of reliable transports: B, F, H, L, M of 64*T1 and C of 3 min.
 */
#ifndef EDGE_PROXY_H
#define EDGE_PROXY_H

#include <ev.h>
#include <stddef.h>

#include "cfg.h"
#include "sip_msg.h"

struct proxy;

struct proxy_stats {
	unsigned long long requests_in;
	unsigned long long requests_forwarded;
	unsigned long long responses_forwarded;
	unsigned long long rejected;          /* answered with a final error by the edge */
	unsigned long long malformed;         /* 400 and 513 */
	unsigned long long connection_failures; /* TLS, I/O, framing, timeouts */
	unsigned long long transactions;      /* in progress now */
	unsigned long long connections;       /* open now */
};

struct clu_node;

/*
 * Sets up TLS, the router and the connection manager, and starts listening.
 * cluster is the pool's gossip cluster, where dialogs are kept, or NULL for
 * a pool of one. The proxy keeps pointers to cfg and cluster, which must
 * outlive it. Returns NULL with err set on failure.
 */
struct proxy *proxy_new(struct ev_loop *loop, const struct edge_cfg *cfg, struct clu_node *cluster,
                        char *err, size_t errlen);
void proxy_free(struct proxy *px);

/*
 * Drains: requests that would begin a dialog get 503 (so partners and
 * front ends try another node of the pool); everything else is served.
 * proxy_busy() says whether transactions are still under way.
 */
void proxy_drain(struct proxy *px);
int proxy_busy(const struct proxy *px);
void proxy_get_stats(const struct proxy *px, struct proxy_stats *out);

/* The final answer to a request the edge sent itself (proxy_originate()):
 * resp is the next hop's response, or NULL for the edge's own error status. */
typedef void (*proxy_origin_fn)(void *arg, unsigned status, const struct sip_msg *resp);

/*
 * Sends req, a request the edge makes itself (the XMPP gateway's), to the
 * internal next hop, with trust as its ms-edge-proxy-message-trust value
 * (NULL: none). Takes over req, which carries one Via to be replaced by
 * ours. done(arg, status) comes once with the final status: the next
 * hop's, or the edge's own 408, 500 or 504; it may come before this call
 * returns (the next hop cannot be reached), and during proxy_free().
 * Returns 0, or -1 when out of memory (req freed, done not called).
 */
int proxy_originate(struct proxy *px, struct sip_msg *req, const char *trust,
                    proxy_origin_fn done, void *arg);

/* Writes the proxy's state as one JSON object; returns its length. */
size_t proxy_status_json(const struct proxy *px, char *buf, size_t len);

/* Loads the TLS material of cfg without listening: for `edged -t`. */
int proxy_check(const struct edge_cfg *cfg, char *err, size_t errlen);

#endif
