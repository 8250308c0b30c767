/*
 * clu_member: the membership of one node as SWIM with the Lifeguard
 * refinements sees it, without I/O and without a clock of its own:
 *
 *  - the member table: name, address, incarnation, state (alive, suspect,
 *    dead, left), and the rules for news about them: a higher incarnation
 *    wins; at the same incarnation suspect beats alive and dead beats both;
 *    news about ourselves that says suspect or dead is refuted by a higher
 *    incarnation of our own;
 *  - suspicion (Lifeguard): a suspect becomes dead after a timeout that
 *    starts at max_mult times the minimum and shrinks toward the minimum
 *    (suspicion_mult * log10(N) * probe interval) as independent
 *    confirmations arrive;
 *  - local health (Lifeguard): an awareness score that grows when our own
 *    probes fail for lack of answers we should have had (missed nacks) and
 *    shrinks when probes succeed; the probe interval and timeout stretch
 *    with it, so a slow node does not accuse healthy ones;
 *  - the news queue: every change is queued once, piggybacked on packets,
 *    fewest-sent first, until sent retransmit_mult * ceil(log10(N + 1))
 *    times; newer news about a node replaces older;
 *  - whom to probe next: every member once per round, in a shuffled order.
 *
 * Time is passed in, in seconds (a monotonic clock). cluster/clu_node.c
 * drives this with sockets and timers. Names and addresses given are copied.
 */
#ifndef CLUSTER_CLU_MEMBER_H
#define CLUSTER_CLU_MEMBER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

enum clu_state { CLU_ALIVE, CLU_SUSPECT, CLU_DEAD, CLU_LEFT };
const char *clu_state_name(enum clu_state s);

struct clu_timing {
	double probe_interval;      /* seconds between probes (LAN: 1) */
	double probe_timeout;       /* an ack later than this is a miss (LAN: 0.5) */
	unsigned indirect_checks;   /* members asked to probe for us (LAN: 3) */
	unsigned retransmit_mult;   /* LAN: 4 */
	double suspicion_mult;      /* LAN: 4 */
	double suspicion_max_mult;  /* LAN: 6 */
	unsigned awareness_max;     /* LAN: 8 */
	double dead_forget;         /* a dead member is forgotten after this; until then push-pull
	                               tries to reach it, so that partitions heal (LAN: 86400) */
	double left_forget;         /* a member that left is forgotten after this (LAN: 30) */
};
/* The LAN defaults, as memberlist's DefaultLANConfig. */
void clu_timing_lan(struct clu_timing *t);

/* A member as the table holds it; valid until the next call that changes the table. */
struct clu_member {
	const char *name;
	struct sockaddr_storage addr;
	socklen_t addrlen;
	uint64_t incarnation;
	enum clu_state state;
	double since;               /* when it entered its state */
	int observer;               /* a member that is not one of the pool's nodes (a balancer) */
};

/* The metadata entry that says so, in alive news and member lists. */
#define CLU_ROLE_KEY "role"
#define CLU_ROLE_OBSERVER "observer"

struct clu_members;

/* Called for every change of a member's state (a new member: old == new == ALIVE). */
typedef void (*clu_change_fn)(void *arg, const struct clu_member *m, enum clu_state old);

/*
 * The table of node `self` at addr, alive at incarnation 1. seed feeds the
 * shuffles (0: from the system). Returns NULL when out of memory.
 */
struct clu_members *clu_members_new(const char *self, const struct sockaddr *addr,
                                    socklen_t addrlen, const struct clu_timing *t,
                                    uint64_t seed, double now);
void clu_members_free(struct clu_members *m);
void clu_members_on_change(struct clu_members *m, clu_change_fn fn, void *arg);

const struct clu_member *clu_self(const struct clu_members *m);
const struct clu_member *clu_find(const struct clu_members *m, const char *name);
/* Members that are alive or suspect, ourselves included. */
unsigned clu_alive_count(const struct clu_members *m);
/* The same without observers: the pool's nodes that are up. */
unsigned clu_alive_nodes(const struct clu_members *m);
/*
 * Makes us an observer: we take part in the cluster (probes, gossip, the
 * store) but are not one of the pool's nodes. Call it right after
 * clu_members_new(). Returns 0, or -1 when out of memory.
 */
int clu_set_observer(struct clu_members *m);
/* Every member known, dead and left ones until forgotten; i < clu_count(). */
unsigned clu_count(const struct clu_members *m);
const struct clu_member *clu_member_at(const struct clu_members *m, unsigned i);

/*
 * News from the cluster. Each returns 1 when it changed the table (the news
 * is then queued to be passed on), 0 when it was stale, -1 when out of
 * memory. News about ourselves that we are suspect or dead is refuted.
 */
int clu_on_alive(struct clu_members *m, const char *node, uint64_t incarnation,
                 const struct sockaddr *addr, socklen_t addrlen, int observer, double now);
int clu_on_suspect(struct clu_members *m, const char *node, uint64_t incarnation,
                   const char *from, double now);
int clu_on_dead(struct clu_members *m, const char *node, uint64_t incarnation,
                const char *from, double now);

/* We leave: dead at our own incarnation, from ourselves, queued. */
int clu_leave(struct clu_members *m, double now);
/* Queues our leave news afresh (its retransmit count anew), so that one
 * more member can be told directly. -1 unless clu_leave() came first. */
int clu_repeat_leave(struct clu_members *m);

/* ---- probing ---- */

/* The member to probe now (alive or suspect, not ourselves), or NULL when alone. */
const struct clu_member *clu_next_probe(struct clu_members *m);
/* A dead member, at random, or NULL: push-pull reaches out to them, so partitions heal. */
const struct clu_member *clu_pick_dead(struct clu_members *m);
/* Up to n live members other than us that are pool nodes (not observers), at random. */
unsigned clu_pick_nodes(struct clu_members *m, const struct clu_member **out, unsigned n);
/* Up to n other live members to ask for indirect probes of target. Returns how many. */
unsigned clu_pick_relays(struct clu_members *m, const char *target, const struct clu_member **out,
                         unsigned n);
/* The probe interval and timeout, stretched by local health. */
double clu_probe_interval(const struct clu_members *m);
double clu_probe_timeout(const struct clu_members *m);
unsigned clu_awareness(const struct clu_members *m);

/*
 * The outcome of a probe round of target: acked (directly or through a
 * relay), and of the nacks expected from relays how many came. Adjusts
 * local health; an unanswered probe makes target suspect.
 */
int clu_probe_done(struct clu_members *m, const char *target, int acked, unsigned nacks_expected,
                   unsigned nacks_received, double now);

/* Suspects whose time is up become dead. Returns the next deadline, or 0 when none. */
double clu_tick(struct clu_members *m, double now);

/* ---- the news queue ---- */

struct Edgepool__Cluster__V1__Gossip;
/*
 * Queues a gossip item about `about` (a node's name for membership news;
 * "record:" and the key for the store's), replacing older news about the
 * same. Returns 0, or -1 when out of memory.
 */
int clu_queue_news(struct clu_members *m, const char *about,
                   const struct Edgepool__Cluster__V1__Gossip *g);

/*
 * Appends to buf (room for len bytes) as many queued news items, each a
 * packed Gossip message framed as field 7 of a Packet, as fit, fewest-sent
 * first. Returns the bytes appended. Each item taken counts one send; an
 * item sent often enough leaves the queue.
 */
size_t clu_take_news(struct clu_members *m, uint8_t *buf, size_t len);
unsigned clu_news_count(const struct clu_members *m);

#endif
