/*
 * bal_health: whether each edge of the pool may take new traffic.
 *
 * Three sources, all required:
 * - the gossip cluster's view of the member named as the edge (the
 *   balancer joins the pool as an observer): a member known to be dead or
 *   gone is out, within the cluster's detection time (milliseconds for a
 *   killed process, through the lifelines);
 * - an active check of our own: a mutual-TLS connection to the edge's
 *   external SIP listener kept open, with a SIP OPTIONS (Max-Forwards: 0,
 *   so the edge itself answers) every interval. A 200 is a success; a
 *   failed connect or handshake, a timeout, any other answer is a failure;
 *   `rise` successes in a row make a down edge up, `fall` failures in a row
 *   make an up edge down. The first check decides at once. When the kept
 *   connection breaks, the edge is checked again at once rather than at the
 *   next interval, so a closed port is known in two round trips;
 * - draining: an edge that answers the OPTIONS with 503 is being drained
 *   (SIGUSR1): it is out at once, without waiting for `fall`.
 */
#ifndef BALANCER_BAL_HEALTH_H
#define BALANCER_BAL_HEALTH_H

#include <ev.h>
#include <stddef.h>

#include "bal_cfg.h"

enum bal_member_view {
	BAL_MEMBER_UNKNOWN = 0,   /* no cluster, or the edge never joined it */
	BAL_MEMBER_ALIVE,         /* alive or suspect: still counted */
	BAL_MEMBER_GONE,          /* dead or left */
};

struct bal_health;

/* Called for every change of bal_health_usable(h, edge); never from inside a bal_health_ call. */
typedef void (*bal_health_fn)(void *arg, unsigned edge, int usable);

/*
 * Checks cfg's edges (cfg must outlive it). The TLS client context comes
 * from cfg's tls files. Returns NULL with err set on failure.
 */
struct bal_health *bal_health_new(struct ev_loop *loop, const struct bal_cfg *cfg,
                                  bal_health_fn on_change, void *arg, char *err, size_t errlen);
void bal_health_free(struct bal_health *h);

/* The cluster's view of the member `name`; names that are not edges are ignored. */
void bal_health_set_member(struct bal_health *h, const char *name, enum bal_member_view view);

int bal_health_usable(const struct bal_health *h, unsigned edge);
unsigned bal_health_usable_count(const struct bal_health *h);

/* The edges as a JSON array (state of each source, counters). Returns the length. */
size_t bal_health_status_json(const struct bal_health *h, char *buf, size_t len);

#endif
