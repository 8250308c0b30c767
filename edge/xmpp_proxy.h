/*
 * xmpp_proxy: the XMPP proxy of the edge, as Lync Server 2013's on the
 * Access Edge: the server-to-server streams (xmpp_s2s.h) between our XMPP
 * domains and the configured XMPP partners (cfg_xmpp_partner), on port 5269.
 *
 * - Inbound: listeners accept partners' streams; a stream is heard only
 *   from a configured partner, within its ConnectionLimit, authenticated as
 *   its TLS, SASL and dialback settings allow; dialback keys that no
 *   certificate vouches for are checked with the sender's authoritative
 *   server (a verify-mode stream). Stanzas of authenticated pairs go to the
 *   owner (the gateway) through on_stanza.
 * - Outbound: one stream per pair (our domain -> theirs), opened on demand:
 *   the partner's ProxyFqdn or address, else DNS SRV _xmpp-server._tcp.<domain>,
 *   else the domain itself on 5269; stanzas wait for it, within bounds.
 *   Which node holds each stream is written to the pool's store
 *   (xmpp_sub.h), so that another node can open it again when that one dies.
 *
 * Nothing here knows SIP. Errors are returned or given to callbacks; the
 * proxy logs stream events itself (streams are its business alone).
 */
#ifndef EDGE_XMPP_PROXY_H
#define EDGE_XMPP_PROXY_H

#include <ev.h>
#include <stddef.h>

#include "cfg.h"
#include "xmpp_xml.h"

struct xmpp_proxy;
struct xmpp_proxy_pending;
struct dns_resolver;
struct clu_node;
struct xmpp_sub_store;

/* A stanza (message, presence or iq) of an authenticated pair: its from
 * and to match the pair. The tree is the stream's: clone it to keep it. */
typedef void (*xmpp_proxy_stanza_fn)(void *arg, struct xmpp_xml_elem *stanza);

/*
 * Starts the proxy on cfg->xmpp (which must be set): TLS contexts, the
 * listeners. dns, cluster (NULL: a pool of one) and holders are shared;
 * every pointer must outlive the proxy. NULL with err set on failure.
 */
struct xmpp_proxy *xmpp_proxy_new(struct ev_loop *loop, const struct edge_cfg *cfg,
                                  struct dns_resolver *dns, struct clu_node *cluster,
                                  struct xmpp_sub_store *holders, xmpp_proxy_stanza_fn on_stanza,
                                  void *arg, char *err, size_t errlen);
/* From now on nothing is answered (sends' done callbacks are not called). */
void xmpp_proxy_quiesce(struct xmpp_proxy *p);
/* Closes every stream (a system-shutdown stream error) and frees the proxy. */
void xmpp_proxy_free(struct xmpp_proxy *p);

/* Loads the XMPP TLS material without listening: for `edged -t`. */
int xmpp_proxy_check(const struct edge_cfg *cfg, char *err, size_t errlen);

/* The partner serving domain (its domain or an AdditionalDomains entry), or NULL. */
const struct cfg_xmpp_partner *xmpp_proxy_partner(const struct xmpp_proxy *p, const char *domain,
                                                  size_t len);
/* Whether domain is one of our XMPP domains. */
int xmpp_proxy_serves(const struct xmpp_proxy *p, const char *domain, size_t len);

/* Whether a stanza went: error NULL, or why not. */
typedef void (*xmpp_proxy_sent_fn)(void *arg, const char *error);

enum xmpp_proxy_send_result {
	XMPP_PROXY_SENT = 0,     /* written on the pair's ready stream now */
	XMPP_PROXY_QUEUED,       /* waits for the stream: done comes later, from the loop */
	XMPP_PROXY_REFUSED,      /* not taken: no such partner, too much waiting, no memory */
};

/*
 * Sends stanza (taken over) from our domain local to the partner's domain
 * remote. For XMPP_PROXY_QUEUED, done(arg, error) comes exactly once: when
 * written, when the stream fails, or at xmpp_proxy_free() (done NULL: nobody
 * waits). *pending (may be NULL) gets a handle for xmpp_proxy_cancel().
 */
enum xmpp_proxy_send_result xmpp_proxy_send(struct xmpp_proxy *p, const char *local,
                                            const char *remote, struct xmpp_xml_elem *stanza,
                                            xmpp_proxy_sent_fn done, void *arg,
                                            struct xmpp_proxy_pending **pending);
/* done will not be called (the stanza still goes). */
void xmpp_proxy_cancel(struct xmpp_proxy_pending *h);

/* Opens the pair's outbound stream if there is none (a dead node's, taken over). */
void xmpp_proxy_open(struct xmpp_proxy *p, const char *local, const char *remote);

/*
 * Writes the proxy's counters and streams as JSON object members (no
 * braces: the gateway's object holds them); returns the length.
 */
size_t xmpp_proxy_status_json(const struct xmpp_proxy *p, char *buf, size_t len);

#endif
