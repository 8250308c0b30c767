/*
 * dlg: the dialogs and subscriptions that cross the edge, kept in the
 * pool's replicated store (cluster/clu_node.h), or in this node's own store
 * for a pool of one, so that any node of the pool can tell an in-dialog
 * request from a partner that belongs to a dialog from one that does not,
 * even after the node that saw the dialog begin has died.
 *
 * A dialog is known by its Call-ID and the tag of its internal party (the
 * From tag of a request from the internal side, the To tag of one from a
 * partner): both directions of a dialog find the same record. Its value is
 * the partner's domain: only that partner may send in the dialog.
 */
#ifndef EDGE_DLG_H
#define EDGE_DLG_H

#include <stdint.h>

#include "sip_msg.h"

struct clu_node;
struct dlg_registry;

/* A registry over the cluster's store (not owned), or, cluster NULL, its own. */
struct dlg_registry *dlg_new(struct clu_node *cluster);
void dlg_free(struct dlg_registry *r);

/* Records (or refreshes) a dialog for ttl_ms. Returns 0, or -1 when the store refuses. */
int dlg_note(struct dlg_registry *r, struct sip_str call_id, struct sip_str internal_tag,
             struct sip_str partner_domain, uint64_t ttl_ms);

/*
 * As dlg_note(), and done(arg, status) once another node of the pool holds
 * the dialog (status 0) or none did in time (-1). Returns a handle for
 * dlg_cancel(), or NULL when there is no pool (or the store refuses): then
 * the dialog is noted as dlg_note() does, and done is not called.
 */
struct clu_confirm;
struct clu_confirm *dlg_note_confirmed(struct dlg_registry *r, struct sip_str call_id,
                                       struct sip_str internal_tag, struct sip_str partner_domain,
                                       uint64_t ttl_ms, double timeout,
                                       void (*done)(void *arg, int status), void *arg);
void dlg_cancel(struct clu_confirm *c);

enum dlg_verdict {
	DLG_UNKNOWN,        /* no such dialog (never, ended, or expired) */
	DLG_KNOWN,
	DLG_OTHER_PARTNER,  /* a dialog of another partner's */
};
enum dlg_verdict dlg_check(const struct dlg_registry *r, struct sip_str call_id,
                           struct sip_str internal_tag, struct sip_str partner_domain);

/* The dialog is over (a BYE answered 2xx). */
void dlg_end(struct dlg_registry *r, struct sip_str call_id, struct sip_str internal_tag);

#endif
