/*
 * xmpp_sub: the gateway's presence subscriptions and stream holders, kept
 * in the pool's replicated store (cluster/clu_node.h), or in a store of its
 * own for a pool of one, so that any node can carry them on: a NOTIFY or a
 * subscription refresh reaches whichever node, and when a node dies another
 * takes over what it held (its SIP subscriptions to refresh, its streams).
 *
 * Records, all under "xp/":
 * - a watch: one SIP dialog of the gateway's, either a SIP user watching an
 *   XMPP contact (the gateway is the notifier: XMPP_SUB_SIP_WATCHES) or an
 *   XMPP user watching a SIP user (the gateway subscribes:
 *   XMPP_SUB_XMPP_WATCHES); keyed by both parties, and indexed by Call-ID;
 * - a permission: our SIP user subscribed to an XMPP contact, which lets a
 *   PublicUnverified partner's user write to ours (Lync's rule);
 * - a holder: the node whose stream carries our traffic to a partner.
 *
 * Addresses are bare: "user@domain" for both sides. Nothing here logs.
 */
#ifndef EDGE_XMPP_SUB_H
#define EDGE_XMPP_SUB_H

#include <stddef.h>
#include <stdint.h>

struct clu_node;
struct xmpp_sub_store;

enum xmpp_sub_kind {
	XMPP_SUB_SIP_WATCHES = 0,   /* sip user -> XMPP contact; we NOTIFY */
	XMPP_SUB_XMPP_WATCHES,      /* XMPP user -> sip user; we SUBSCRIBE */
};

/* One SIP dialog of the gateway's. Strings are NUL-terminated. */
struct xmpp_sub {
	enum xmpp_sub_kind kind;
	char sip_user[320];         /* user@domain of ours */
	char jid[320];              /* the XMPP party's bare JID */
	char call_id[256];
	char local_tag[64];         /* the gateway's tag */
	char remote_tag[128];       /* the SIP party's tag; "" until it answered */
	char target[512];           /* the SIP party's Contact URI: where requests go */
	char route[1024];           /* the route set toward it, as Route values ("" none) */
	uint32_t cseq;              /* the last CSeq the gateway sent in it */
	int active;                 /* authorized (XMPP subscribed / SIP active) */
	uint64_t expires_ms;        /* wall clock */
	char holder[64];            /* the node that refreshes it (XMPP_WATCHES) */
	uint64_t last_doc;          /* hash of the last presence document sent in it (0: none) */
};

/* Over the cluster's store (not owned), or, cluster NULL, a store of its own. */
struct xmpp_sub_store *xmpp_sub_store_new(struct clu_node *cluster);
void xmpp_sub_store_free(struct xmpp_sub_store *st);

/* Writes a watch (both keys and the Call-ID index), kept until
 * expires_ms plus a grace. Returns 0, or -1 when the store refuses. */
int xmpp_sub_put(struct xmpp_sub_store *st, const struct xmpp_sub *s);
/* Looks a watch up by its parties; 0 with *out, or -1. */
int xmpp_sub_get(const struct xmpp_sub_store *st, enum xmpp_sub_kind kind, const char *sip_user,
                 const char *jid, struct xmpp_sub *out);
/* By the dialog's Call-ID; 0 with *out, or -1. */
int xmpp_sub_by_call_id(const struct xmpp_sub_store *st, const char *call_id,
                        struct xmpp_sub *out);
void xmpp_sub_delete(struct xmpp_sub_store *st, const struct xmpp_sub *s);
/* Calls fn for every watch in the store, live ones only. */
void xmpp_sub_foreach(const struct xmpp_sub_store *st,
                      void (*fn)(void *arg, const struct xmpp_sub *s), void *arg);

/* The permission (our sip_user subscribed to jid), for ttl_ms; cleared by unsubscribing. */
int xmpp_sub_allow(struct xmpp_sub_store *st, const char *sip_user, const char *jid,
                   uint64_t ttl_ms);
void xmpp_sub_disallow(struct xmpp_sub_store *st, const char *sip_user, const char *jid);
int xmpp_sub_allowed(const struct xmpp_sub_store *st, const char *sip_user, const char *jid);

/* The node holding the stream local -> remote: written, read. */
int xmpp_sub_hold(struct xmpp_sub_store *st, const char *local, const char *remote,
                  const char *node, uint64_t ttl_ms);
/* Calls fn for each holder record: (local, remote, node). */
void xmpp_sub_foreach_holder(const struct xmpp_sub_store *st,
                             void (*fn)(void *arg, const char *local, const char *remote,
                                        const char *node), void *arg);

/* The wall clock in ms, as the store's records use it. */
uint64_t xmpp_sub_now_ms(void);

/* A watch as its record's text, and back (for tests and the fuzzer). */
size_t xmpp_sub_encode(const struct xmpp_sub *s, char *buf, size_t len);
int xmpp_sub_decode(const char *buf, size_t len, struct xmpp_sub *out);

#endif
