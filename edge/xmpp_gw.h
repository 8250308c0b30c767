/*
 * xmpp_gw: the SIP<->XMPP gateway of edged, as Lync Server 2013's XMPP
 * gateway: what crosses between the organization's SIP servers and the XMPP
 * partners (reached through xmpp_proxy.h) is translated, so that the
 * organization's own servers speak only SIP. Person-to-person IM and
 * presence, no multiparty (as Lync).
 *
 * - Messages, RFC 7572 (xmpp_map.h): a SIP MESSAGE to a partner's user
 *   becomes a <message type='chat'/> and is answered 200 once written on an
 *   authenticated stream, or with the error that stopped it; an XMPP
 *   message to one of our users goes to the internal next hop as a SIP
 *   MESSAGE (proxy_originate()), and a SIP error answer goes back as an
 *   XMPP error stanza (RFC 7247 section 6).
 * - Presence, RFC 8048 (xmpp_presence.h): a SIP user's SUBSCRIBE to an
 *   XMPP contact makes the gateway the notifier (202, NOTIFY pending, then
 *   active once the contact approves, then PIDF for each presence); an XMPP
 *   user's subscription request makes the gateway a SIP subscriber (its 200
 *   is 'subscribed', NOTIFYs become presence), refreshed before it ends.
 *   Both kinds of dialog live in the pool's store (xmpp_sub.h), with the
 *   gateway's Contact at the pool's internal name, so any node carries
 *   them on; a dead node's refreshes and streams are taken over.
 * - Policy: only configured XMPP partners (cfg_xmpp_partner) are heard or
 *   reached; our user must have EnableXmppAccess in their external access
 *   policy; a PublicUnverified partner's user may write to ours, or ask to
 *   watch them, only after ours subscribed to them; Federated and
 *   PublicVerified partners may start the conversation.
 */
#ifndef EDGE_XMPP_GW_H
#define EDGE_XMPP_GW_H

#include <ev.h>
#include <stddef.h>

#include "cfg.h"
#include "sip_msg.h"

struct xmpp_gw;
struct xmpp_gw_pending;
struct proxy;
struct dns_resolver;
struct clu_node;

/*
 * Starts the gateway on cfg->xmpp (which must be set): TLS contexts, the
 * listeners. proxy is where its SIP requests go (proxy_originate()); dns
 * and cluster (NULL: a pool of one) are shared with it. Every pointer
 * must outlive the gateway. NULL with err set on failure.
 */
struct xmpp_gw *xmpp_gw_new(struct ev_loop *loop, const struct edge_cfg *cfg, struct proxy *proxy,
                            struct dns_resolver *dns, struct clu_node *cluster,
                            char *err, size_t errlen);
/*
 * The proxy is shutting down: from now on the gateway starts nothing (no
 * SIP request, no stanza) and answers nobody; it only waits to be freed.
 */
void xmpp_gw_quiesce(struct xmpp_gw *gw);
/* Closes every stream and frees the gateway; pending answers are not called. */
void xmpp_gw_free(struct xmpp_gw *gw);

/* Loads the XMPP TLS material without listening: for `edged -t`. */
int xmpp_gw_check(const struct edge_cfg *cfg, char *err, size_t errlen);

/*
 * The answer to a SIP request the gateway took. Strings may be NULL and
 * live until the callback returns (for XMPP_GW_ANSWERED: until the next
 * call into the gateway).
 */
struct xmpp_gw_answer {
	unsigned status;
	const char *warning;      /* why, for an error */
	const char *to_tag;       /* the gateway's tag, for a dialog it begins */
	const char *contact;      /* a Contact value for the dialog ("<sip:...>") */
	int expires;              /* an Expires value; -1: none */
};
typedef void (*xmpp_gw_answer_fn)(void *arg, const struct xmpp_gw_answer *a);

enum xmpp_gw_take {
	XMPP_GW_NOT_MINE = 0,  /* not for an XMPP partner: route it as SIP */
	XMPP_GW_ANSWERED,      /* answer now with *status and warning */
	XMPP_GW_PENDING,       /* done(arg, ...) comes later, from the loop */
};

/*
 * Offers the gateway a request from the internal side (req is only read,
 * during the call): requests to an XMPP partner's users, and requests in
 * the gateway's own dialogs (Request-URI user "xmpp-gw" at the pool). For
 * XMPP_GW_ANSWERED the answer is in *now; for XMPP_GW_PENDING *pending is a
 * handle for xmpp_gw_cancel(), which the caller must call if it goes away
 * first. done is never called before this call returns.
 */
enum xmpp_gw_take xmpp_gw_sip_request(struct xmpp_gw *gw, const struct sip_msg *req,
                                      xmpp_gw_answer_fn done, void *arg,
                                      struct xmpp_gw_pending **pending,
                                      struct xmpp_gw_answer *now);
/* The answer of a pending request will not be given (what it sends still goes). */
void xmpp_gw_cancel(struct xmpp_gw_pending *p);

/* Whether domain is one of the configured XMPP partners' (any case). */
int xmpp_gw_is_partner_domain(const struct xmpp_gw *gw, const char *domain, size_t len);

/* Writes the gateway's state as one JSON object; returns its length. */
size_t xmpp_gw_status_json(const struct xmpp_gw *gw, char *buf, size_t len);

#endif
