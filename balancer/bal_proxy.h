/*
 * bal_proxy: the L4 proxy on the VIP, for legacy partners that reach the
 * pool through one address and never resolve it again.
 *
 * It listens on every VIP address and forwarded port, bound before the
 * address is ours (IP_FREEBIND), so keepalived can move the VIP to this
 * node at any time. Each accepted connection goes to one usable edge
 * (bal_health.h): the one the source address used last (affinity, forgotten
 * after affinity_idle_s), else the one with the fewest connections from
 * this balancer. When a connect fails or times out, the next edge is tried
 * while the partner waits. With proxy_protocol, a PROXY v2 header carrying
 * the partner's address and the VIP goes first (common/ppv2.h); then bytes
 * are relayed both ways untouched, half-closes included.
 *
 * Affinity lives in the cluster store when the balancer is in a cluster
 * (keys "aff/<IPv4 address or IPv6 /64>", the edge's name as value, a TTL of
 * the idle time), so the other balancer knows it when the VIP moves;
 * otherwise in a store of its own. It is written once the edge has sent
 * something back, so that bare connects do not fill the store.
 */
#ifndef BALANCER_BAL_PROXY_H
#define BALANCER_BAL_PROXY_H

#include <ev.h>
#include <stddef.h>

#include "bal_cfg.h"
#include "bal_health.h"
#include "clu_node.h"

#define BAL_AFFINITY_PREFIX "aff/"

struct bal_proxy_stats {
	unsigned long long accepted, refused; /* refused: past max_connections, or out of files */
	unsigned long long no_edge;           /* closed: no usable edge answered */
	unsigned long long connect_failures;  /* edges that failed a connect (then the next was tried) */
	unsigned long long affinity_hits;     /* went to the edge of the source's affinity */
	unsigned long long accept_pauses;     /* out of file descriptors: accepting paused */
	unsigned long long bytes_in, bytes_out; /* from partners, from edges */
	unsigned active;
};

struct bal_proxy;

/*
 * Listens as cfg->vip says (cfg, health and cluster outlive the proxy;
 * cluster may be NULL). Returns NULL with err set on failure.
 */
struct bal_proxy *bal_proxy_new(struct ev_loop *loop, const struct bal_cfg *cfg,
                                const struct bal_health *health, struct clu_node *cluster,
                                char *err, size_t errlen);
/* Closes the listeners and every connection. NULL is fine. */
void bal_proxy_free(struct bal_proxy *p);

void bal_proxy_get_stats(const struct bal_proxy *p, struct bal_proxy_stats *out);
/* Connections per edge from this balancer, in cfg->edges order. */
unsigned bal_proxy_edge_connections(const struct bal_proxy *p, unsigned edge);
/* The proxy as one JSON object. Returns the length. */
size_t bal_proxy_status_json(const struct bal_proxy *p, char *buf, size_t len);

#endif
