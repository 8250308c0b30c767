/*
 * sip_txn: how messages find their transaction (RFC 3261 17.1.3, 17.2.3),
 * the branch a proxy puts in its Via, and loop detection (16.3 item 4).
 *
 * A key is a string built from the message; the table maps keys to
 * struct sip_txn_link nodes that the caller embeds in its own transaction
 * object, so this module allocates nothing but key copies.
 */
#ifndef EDGE_SIP_TXN_H
#define EDGE_SIP_TXN_H

#include <stddef.h>
#include <stdint.h>

#include "htab.h"
#include "sip_msg.h"

#define SIP_TXN_KEY_MAX 512
/* "z9hG4bK" + 16 hex digits of loop hash + "." + 16 hex digits */
#define SIP_TXN_BRANCH_LEN (7 + 16 + 1 + 16)

/*
 * The server transaction key of a request: top Via branch, sent-by and
 * method, where ACK counts as INVITE (an ACK for a non-2xx belongs to the
 * INVITE's transaction). as_method, when not SIP_METHOD_UNKNOWN, replaces
 * the method: a CANCEL finds its INVITE with as_method = SIP_INVITE.
 * Requests without the RFC 3261 magic cookie are keyed by the RFC 2543
 * fields instead. Returns the key length, or -1 if it does not fit.
 */
int sip_txn_server_key(const struct sip_msg *req, enum sip_method as_method,
                       char *key, size_t len);

/* The client transaction key of a response: top Via branch + CSeq method. */
int sip_txn_client_key(const struct sip_msg *resp, char *key, size_t len);
/* The client transaction key of a request sent with this branch. */
int sip_txn_client_key_of(const char *branch, const struct sip_msg *req, char *key, size_t len);

/*
 * The loop-detection hash of a request: Request-URI, From tag, To tag,
 * Call-ID, CSeq number, Route and Proxy-Require. A request that comes back
 * unchanged has the same hash; a spiral (a changed Request-URI or Route)
 * does not.
 */
uint64_t sip_txn_loop_hash(const struct sip_msg *req);

/*
 * The branch for forwarding req: the magic cookie, the loop hash and a hash
 * of the request's top Via and method, so that a retransmission or an ACK
 * for a 2xx forwarded statelessly gets the same branch again. out has room
 * for SIP_TXN_BRANCH_LEN + 1 bytes.
 */
void sip_txn_branch(const struct sip_msg *req, char *out);

/* Whether a Via branch that we wrote carries this loop hash. */
int sip_txn_branch_has_loop(struct sip_str branch, uint64_t loop_hash);

struct sip_txn_link {
	struct htab_node node;
	char *key; /* owned by the table while linked */
};

struct sip_txn_table {
	struct htab by_key;
};

/* Links n under key (copied). Returns 0, or -1 when out of memory. */
int sip_txn_add(struct sip_txn_table *t, struct sip_txn_link *n, const char *key);
struct sip_txn_link *sip_txn_find(const struct sip_txn_table *t, const char *key);
/* Unlinks n if linked, and frees its key copy. */
void sip_txn_del(struct sip_txn_table *t, struct sip_txn_link *n);
size_t sip_txn_count(const struct sip_txn_table *t);
void sip_txn_table_free(struct sip_txn_table *t); /* the table, not the links */

#endif
