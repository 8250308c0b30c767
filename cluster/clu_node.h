/*
 * clu_node: one member of the gossip cluster on a libev loop. It drives
 * clu_member (the membership rules) with a UDP socket for failure detection
 * and gossip, and TCP on the same port for push-pull anti-entropy: a node
 * joins by exchanging member lists with a seed, and every member does the
 * same with a random other now and then, so that partitions heal.
 *
 * Every datagram and stream frame is sealed under the cluster keyring
 * (clu_crypt.h) and checked when it arrives (clu_msg.h); what fails to open,
 * decode or check is dropped and counted.
 *
 * A probe round (SWIM): ping one member; if no ack within the probe timeout,
 * ask indirect_checks others to ping it (and to nack if it stays silent);
 * without an ack by the end of the interval, the member is suspect.
 */
#ifndef CLUSTER_CLU_NODE_H
#define CLUSTER_CLU_NODE_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "clu_crypt.h"
#include "clu_member.h"
#include "clu_store.h"

struct clu_config {
	const char *name;                 /* unique in the cluster */
	struct sockaddr_storage bind;     /* UDP and TCP */
	socklen_t bindlen;
	struct clu_timing timing;
	double gossip_interval;           /* seconds between gossip rounds (LAN: 0.2) */
	unsigned gossip_nodes;            /* members each round gossips to (LAN: 3) */
	double pushpull_interval;         /* seconds between anti-entropy exchanges (LAN: 30) */
	double stream_timeout;            /* a push-pull exchange must end within it (10) */
	size_t packet_max;                /* sealed UDP payload (1400, safe under any MTU) */
	const uint8_t (*keys)[CLU_KEY_LEN]; /* keys[0] seals; all open */
	unsigned nkeys;
	const struct sockaddr_storage *seeds; /* members to join through; may be empty */
	unsigned nseeds;
	clu_change_fn on_change;          /* every change of a member's state, or NULL */
	void *change_arg;
	struct clu_store_limits store;    /* the replicated store's bounds */
	clu_store_fn on_record;           /* every record a write or a merge changes, or NULL */
	void *record_arg;
	int observer;                     /* not one of the pool's nodes (a balancer): others do
	                                     not count it in clu_alive_nodes() nor ask it to hold
	                                     confirmed writes */
};

/* The LAN defaults for everything but name, bind, keys and seeds. */
void clu_config_lan(struct clu_config *c);

struct clu_node_stats {
	unsigned long long packets_in, packets_out, bytes_in, bytes_out;
	unsigned long long dropped;       /* failed to open, decode or check */
	unsigned long long streams_in, streams_out, stream_failures;
	unsigned long long streams_refused; /* accepted past the bound on streams, closed at once */
	unsigned long long lifelines_ended, deaths_seen; /* lifelines that ended; deaths they proved */
};

struct clu_node;

/*
 * Starts the node: binds, and joins through the seeds. The node keeps no
 * pointer into cfg. Returns NULL with err set on failure.
 */
struct clu_node *clu_node_new(struct ev_loop *loop, const struct clu_config *cfg, char *err,
                              size_t errlen);
/* Leaves: tells a few members we go, then stops; frees the node. NULL is fine. */
void clu_node_leave_and_free(struct clu_node *n);

const struct clu_members *clu_node_members(const struct clu_node *n);

/*
 * The replicated store: a write is stored here and gossiped to the pool;
 * push-pull repairs what gossip missed. Time is the loop's wall clock.
 * put and delete return 0, or -1 when the store is full or out of memory.
 */
int clu_node_put(struct clu_node *n, const char *key, const void *value, size_t len,
                 uint64_t ttl_ms);
int clu_node_delete(struct clu_node *n, const char *key);
const struct clu_rec *clu_node_get(const struct clu_node *n, const char *key);
/*
 * Writes key as clu_node_put() does, then confirms that another member
 * holds it: the record goes to one live member with a ping, and its ack is
 * the proof (a member applies a packet's news before it answers). done(arg,
 * 0) when a member has it; done(arg, -1) when none did within timeout
 * seconds, or there is no other member. done comes from the loop, exactly
 * once, unless clu_node_cancel_confirm() comes first. Returns NULL when the
 * write itself failed (store full, out of memory): done is then not called.
 * Freeing the node drops pending confirmations without their callbacks.
 */
struct clu_confirm;
typedef void (*clu_confirm_fn)(void *arg, int status);
struct clu_confirm *clu_node_put_confirmed(struct clu_node *n, const char *key, const void *value,
                                           size_t len, uint64_t ttl_ms, double timeout,
                                           clu_confirm_fn done, void *arg);
void clu_node_cancel_confirm(struct clu_confirm *c);

/*
 * Hands this node's state to the pool before it goes: a push-pull exchange
 * with up to `peers` live nodes (not observers) now. clu_node_busy() says whether
 * exchanges are still under way.
 */
void clu_node_handoff(struct clu_node *n, unsigned peers);
int clu_node_busy(const struct clu_node *n);

/* Replaces the callback of clu_config.on_record. */
void clu_node_on_record(struct clu_node *n, clu_store_fn fn, void *arg);
/* This node's name. */
const char *clu_node_name(const struct clu_node *n);
const struct clu_store *clu_node_store(const struct clu_node *n);
void clu_node_get_stats(const struct clu_node *n, struct clu_node_stats *out);

/* The node as one JSON object: itself, its members, its counters. Returns the length. */
size_t clu_node_status_json(const struct clu_node *n, char *buf, size_t len);

#endif
