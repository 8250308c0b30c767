/*
 * bal_health: whether each edge of the pool may take new traffic, and on
 * which path.
 *
 * Three sources, all required:
 * - the gossip cluster's view of the member named as the edge (the
 *   balancer joins the pool as an observer): a member known to be dead or
 *   gone is out, within the cluster's detection time (milliseconds for a
 *   killed process, through the lifelines). An edge the cluster has not
 *   (yet) seen is judged by its checks alone, and says so in the status;
 * - active checks of our own, one per path a partner takes: a mutual-TLS
 *   connection kept open to the edge's external SIP listener (the path of
 *   partners that resolve the pool by DNS), and one to each port the VIP
 *   forwards to with the PROXY protocol, opened with a LOCAL header (the
 *   path of the legacy partners: it fails if this balancer is not in the
 *   edge's proxy_from). On each, a SIP OPTIONS (Max-Forwards: 0, so the
 *   edge itself answers) every interval: 200 is a success; a failed
 *   connect or handshake, a timeout, any other answer a failure. `rise`
 *   successes in a row make a down check up, `fall` failures in a row make
 *   an up check down; the first check decides at once. When a kept
 *   connection breaks, the check runs again at once (at most once per
 *   interval), so a closed port is known in two round trips;
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

/*
 * Called for every change of bal_health_usable(h, edge): from the loop, or
 * from inside bal_health_set_member().
 */
typedef void (*bal_health_fn)(void *arg, unsigned edge, int usable);

/*
 * Checks cfg's edges, on their SIP port and on each port cfg->vip forwards
 * to with the PROXY protocol (cfg must outlive it). The TLS client context
 * comes from cfg's tls files. Returns NULL with err set on failure.
 */
struct bal_health *bal_health_new(struct ev_loop *loop, const struct bal_cfg *cfg,
                                  bal_health_fn on_change, void *arg, char *err, size_t errlen);
void bal_health_free(struct bal_health *h);

/* The cluster's view of the member `name`; names that are not edges are ignored. */
void bal_health_set_member(struct bal_health *h, const char *name, enum bal_member_view view);

/* Usable on the DNS path (its SIP port). */
int bal_health_usable(const struct bal_health *h, unsigned edge);
unsigned bal_health_usable_count(const struct bal_health *h);
/* Usable on the path of cfg->vip->forwards[forward]. */
int bal_health_usable_via(const struct bal_health *h, unsigned edge, unsigned forward);
/* Whether the cluster ever saw the edge (a name in the configuration that no edge uses is a typo). */
int bal_health_member_known(const struct bal_health *h, unsigned edge);

/* The edges as a JSON array (each source, each check's counters). Returns the length. */
size_t bal_health_status_json(const struct bal_health *h, char *buf, size_t len);

#endif
