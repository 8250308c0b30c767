#include "xmpp_gw.h"

#include <ctype.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clu_node.h"
#include "list.h"
#include "log.h"
#include "pol.h"
#include "proxy.h"
#include "xmpp_map.h"
#include "xmpp_presence.h"
#include "xmpp_proxy.h"
#include "xmpp_sub.h"

#define SPAN(str) (int)(str).len, (str).s

#define XMPP_GW_USER "xmpp-gw"   /* the user part of the gateway's Contact */
#define XMPP_SUB_EXPIRES 3600u   /* seconds a presence subscription lasts at most */
#define XMPP_SUB_REFRESH_MS (600ull * 1000)   /* refreshed this long before its end */
#define XMPP_PERMIT_TTL_MS (30ull * 86400 * 1000) /* "our user subscribed first" */
#define MAINT_INTERVAL 1.0       /* seconds between refresh and takeover checks */
/* Addresses in subscriptions: their store keys hold two (CLU_KEY_MAX is 512). */
#define XMPP_ADDR_MAX 240

/* A SIP MESSAGE whose stanza waits for its stream: the answer goes to done. */
struct xmpp_gw_pending {
	struct xmpp_gw *gw;
	xmpp_gw_answer_fn done;           /* NULL once cancelled */
	void *arg;
};

struct gw_stats {
	unsigned long long messages_out, messages_in; /* SIP -> XMPP, XMPP -> SIP */
	unsigned long long errors_out;                /* error stanzas we sent */
	unsigned long long sip_refused;               /* SIP requests answered with an error */
	unsigned long long presence_out, presence_in;   /* presence stanzas */
	unsigned long long notifies_out, notifies_in;   /* SIP NOTIFYs sent, received */
	unsigned long long subscribes_out;              /* SIP SUBSCRIBEs sent */
	unsigned long long xmpp_refused;                /* stanzas refused by policy */
	unsigned long long takeovers;                   /* work taken from dead nodes */
	unsigned long long presence_unchanged;          /* presence equal to the last NOTIFY's */
};

struct xmpp_gw {
	struct ev_loop *loop;
	const struct edge_cfg *cfg;
	struct proxy *proxy;              /* where the gateway's SIP requests go */
	struct xmpp_proxy *xp;            /* the streams to the partners */
	struct clu_node *cluster;
	struct xmpp_sub_store *subs;       /* subscriptions and holders, pool-wide */
	char node[64];                     /* this node's cluster name, or "self" */
	char contact[400];                 /* the gateway's Contact: <sip:xmpp-gw@...> */
	char contact_host[256];            /* its host, to know its dialogs' requests */
	char warning[400];                 /* an answer's text, until the next call */
	char to_tag[64];                   /* an answer's tag, likewise */
	struct list_node deferred;         /* struct deferred: NOTIFYs after answers */
	struct list_node notifiers;        /* struct notifier: dialogs with a NOTIFY under way */
	ev_timer defer_timer;
	ev_timer maint_timer;
	struct gw_stats stats;
	int closing;                       /* quiesced or being freed: nothing sent, nobody answered */
};

static void handle_presence(struct xmpp_gw *gw, struct xmpp_xml_elem *st);

/* The domain of a bare JID or user@domain ("u@d/r" -> "d"), lower-cased; -1 without one. */
static int bare_domain(const char *addr, char *out, size_t len)
{
	const char *at = addr ? strchr(addr, '@') : NULL;
	const char *d = at ? at + 1 : addr;
	if (!d)
		return -1;
	size_t n = strcspn(d, "/");
	if (n == 0 || n >= len)
		return -1;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)d[i]);
	out[n] = '\0';
	return 0;
}

/* ---- stanzas and SIP requests of the gateway's own ---- */

/* An error stanza answering a stanza (from -> to swapped), RFC 6120 8.3. */
static void send_error(struct xmpp_gw *gw, const char *name, const char *from, const char *to,
                       const char *id, const char *condition)
{
	char local[254], remote[254];
	if (bare_domain(to, local, sizeof(local)) < 0 || bare_domain(from, remote, sizeof(remote)) < 0)
		return;
	struct xmpp_xml_elem *e = xmpp_xml_new(name, XMPP_XML_NS_SERVER);
	struct xmpp_xml_elem *err = e ? xmpp_xml_add(e, "error", NULL) : NULL;
	if (!err || xmpp_xml_set_attr(e, "from", NULL, to) < 0 ||
	    xmpp_xml_set_attr(e, "to", NULL, from) < 0 || xmpp_xml_set_attr(e, "type", NULL, "error") < 0 ||
	    (id && xmpp_xml_set_attr(e, "id", NULL, id) < 0) ||
	    xmpp_xml_set_attr(err, "type", NULL, xmpp_map_condition_type(condition)) < 0 ||
	    !xmpp_xml_add(err, condition, XMPP_XML_NS_STANZA_ERRORS)) {
		xmpp_xml_free(e);
		return;
	}
	gw->stats.errors_out++;
	xmpp_proxy_send(gw->xp, local, remote, e, NULL, NULL, NULL);
}

/* <presence type=... from to/> from our user (a bare JID) to theirs. */
static void send_presence_type(struct xmpp_gw *gw, const char *from, const char *to,
                               const char *type)
{
	char local[254], remote[254];
	if (bare_domain(from, local, sizeof(local)) < 0 || bare_domain(to, remote, sizeof(remote)) < 0)
		return;
	struct xmpp_xml_elem *e = xmpp_xml_new("presence", XMPP_XML_NS_SERVER);
	if (!e || xmpp_xml_set_attr(e, "from", NULL, from) < 0 ||
	    xmpp_xml_set_attr(e, "to", NULL, to) < 0 ||
	    (type && xmpp_xml_set_attr(e, "type", NULL, type) < 0)) {
		xmpp_xml_free(e);
		return;
	}
	gw->stats.presence_out++;
	xmpp_proxy_send(gw->xp, local, remote, e, NULL, NULL, NULL);
}

/* The Lync trust header for what comes from an XMPP partner (pol.h has the SIP ones). */
static void xmpp_trust(const struct xmpp_gw *gw, const struct cfg_xmpp_partner *p,
                       const char *remote, char *buf, size_t len)
{
	snprintf(buf, len, "ms-source-type=XmppPartner;ms-ep-fqdn=%s;ms-source-verified-user=%s;"
	         "ms-source-network=xmpp;ms-remote-fqdn=%s", gw->cfg->pool_fqdn,
	         p && p->type == CFG_XMPP_PUBLIC_UNVERIFIED ? "unverified" : "verified", remote);
}

/* What a request of the gateway's says; strings may be "" but not NULL unless noted. */
struct own_request {
	const char *method;
	const char *ruri;
	const char *from_uri, *from_tag;
	const char *to_uri, *to_tag;       /* to_tag "" outside a dialog */
	const char *call_id;
	uint32_t cseq;
	const char *route;                 /* the route set, "" for none */
	const char *extra;                 /* more header lines, each ending in CRLF */
	const char *content_type;          /* NULL: no body */
	const char *body;
	size_t body_len;
};

/* The request as a parsed message, with one placeholder Via for proxy_originate(). */
static struct sip_msg *build_request(struct xmpp_gw *gw, const struct own_request *r)
{
	size_t cap = strlen(r->ruri) + strlen(r->from_uri) + strlen(r->to_uri) + strlen(r->route) +
	             strlen(r->extra) + strlen(r->call_id) + strlen(gw->contact) + r->body_len + 1024;
	char *text = malloc(cap);
	struct sip_msg *m = NULL;
	if (!text)
		return NULL;
	int n = snprintf(text, cap, "%s %s SIP/2.0\r\nVia: SIP/2.0/TCP %s;branch=z9hG4bKgw%s%u\r\n"
	                 "Max-Forwards: 70\r\n%s%s%sFrom: <%s>;tag=%s\r\nTo: <%s>%s%s\r\n"
	                 "Call-ID: %s\r\nCSeq: %u %s\r\nContact: %s\r\n%s",
	                 r->method, r->ruri, gw->cfg->pool_fqdn, r->call_id, (unsigned)r->cseq,
	                 r->route[0] ? "Route: " : "", r->route, r->route[0] ? "\r\n" : "",
	                 r->from_uri, r->from_tag, r->to_uri, r->to_tag[0] ? ";tag=" : "", r->to_tag,
	                 r->call_id, (unsigned)r->cseq, r->method, gw->contact, r->extra);
	if (n > 0 && (size_t)n < cap) {
		int m2 = r->content_type
		       ? snprintf(text + n, cap - (size_t)n, "Content-Type: %s\r\nContent-Length: %zu\r\n\r\n",
		                  r->content_type, r->body_len)
		       : snprintf(text + n, cap - (size_t)n, "Content-Length: 0\r\n\r\n");
		if (m2 > 0 && (size_t)n + (size_t)m2 + r->body_len < cap) {
			n += m2;
			if (r->content_type)
				memcpy(text + n, r->body, r->body_len);
			struct sip_limits lim = { .max_msg_bytes = cap, .max_line_bytes = 8192,
			                          .max_headers = 64 };
			if (sip_msg_parse(text, (size_t)n + (r->content_type ? r->body_len : 0), &lim, &m) < 0) {
				sip_msg_free(m);
				m = NULL;
			}
		}
	}
	free(text);
	return m;
}

static void random_hex(char *out, size_t bytes)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char raw[32];
	if (bytes > sizeof(raw))
		bytes = sizeof(raw);
	if (RAND_bytes(raw, (int)bytes) != 1)
		memset(raw, 0, bytes);
	for (size_t i = 0; i < bytes; i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[2 * bytes] = '\0';
}

/* ---- XMPP -> SIP: messages ---- */

/* An XMPP message gone to SIP, waiting for the SIP answer. */
struct to_sip {
	struct xmpp_gw *gw;
	char from[XMPP_MAP_JID_MAX], to[XMPP_MAP_JID_MAX], id[256];
	int has_id;
};

static void to_sip_answered(void *arg, unsigned status, const struct sip_msg *resp)
{
	struct to_sip *ts = arg;
	struct xmpp_gw *gw = ts->gw;
	if (status >= 300 && !gw->closing) {
		const char *cond = xmpp_map_condition(status);
		log_info("xmpp: message from %s to %s refused by SIP with %u: %s", ts->from, ts->to,
		         status, cond);
		send_error(gw, "message", ts->from, ts->to, ts->has_id ? ts->id : NULL, cond);
	} else if (status < 300) {
		gw->stats.messages_in++;
	}
	free(ts);
}

/* Why our user may not hear from this partner's user, or NULL (policy, PartnerType). */
static const char *refusal_of(struct xmpp_gw *gw, const struct cfg_xmpp_partner *p,
                              const char *sip_user, const char *jid)
{
	const char *at = strchr(sip_user, '@');
	if (!at)
		return "not a user address";
	const struct cfg_access_policy *pol = pol_user_policy(gw->cfg, sip_user,
	                                                      (size_t)(at - sip_user), at + 1,
	                                                      strlen(at + 1));
	if (!pol->xmpp)
		return "the user's external access policy does not permit XMPP";
	if (p->type == CFG_XMPP_PUBLIC_UNVERIFIED && !xmpp_sub_allowed(gw->subs, sip_user, jid))
		return "the partner is PublicUnverified and the user has not subscribed to the sender";
	return NULL;
}

/* "sip:u@d" -> "u@d" (the gateway's URIs are its own: no parameters). */
static const char *uri_user(const char *uri)
{
	return strncmp(uri, "sip:", 4) == 0 ? uri + 4 : uri;
}

static void handle_message(struct xmpp_gw *gw, struct xmpp_xml_elem *st)
{
	struct xmpp_map_sip_im im;
	const char *cond = NULL;
	const char *from = xmpp_xml_attr(st, "from"), *to = xmpp_xml_attr(st, "to");
	const char *id = xmpp_xml_attr(st, "id");
	int rc = xmpp_map_message_to_sip(st, &im, &cond);
	if (rc < 0) {
		if (cond)
			send_error(gw, "message", from, to, id, cond);
		log_debug("xmpp: message from %s to %s not carried: %s", from, to,
		          xmpp_map_strerror(rc));
		return;
	}
	char domain[254];
	const char *sender = uri_user(im.from);
	const struct cfg_xmpp_partner *p = bare_domain(sender, domain, sizeof(domain)) == 0
	                                 ? xmpp_proxy_partner(gw->xp, domain, strlen(domain)) : NULL;
	const char *refusal = p ? refusal_of(gw, p, uri_user(im.to), sender) : "not a partner";
	if (refusal) {
		log_info("xmpp: message from %s to %s refused: %s", from, to, refusal);
		gw->stats.xmpp_refused++;
		send_error(gw, "message", from, to, id, "service-unavailable");
		return;
	}
	char callid[40], tag[20], trust[600];
	random_hex(callid, 12);
	random_hex(tag, 6);
	struct own_request r = {
		.method = "MESSAGE", .ruri = im.ruri, .from_uri = im.from, .from_tag = tag,
		.to_uri = im.to, .to_tag = "", .call_id = callid, .cseq = 1, .route = "", .extra = "",
		.content_type = im.content_type, .body = im.body, .body_len = im.body_len,
	};
	struct sip_msg *m = build_request(gw, &r);
	struct to_sip *ts = m ? calloc(1, sizeof(*ts)) : NULL;
	if (!ts) {
		sip_msg_free(m);
		send_error(gw, "message", from, to, id, "internal-server-error");
		return;
	}
	ts->gw = gw;
	snprintf(ts->from, sizeof(ts->from), "%s", from);
	snprintf(ts->to, sizeof(ts->to), "%s", to);
	if (id) {
		ts->has_id = 1;
		snprintf(ts->id, sizeof(ts->id), "%s", id);
	}
	xmpp_trust(gw, p, domain, trust, sizeof(trust));
	log_debug("xmpp: message from %s to %s -> SIP call-id=%s", from, to, callid);
	if (proxy_originate(gw->proxy, m, trust, to_sip_answered, ts) < 0) {
		free(ts);
		send_error(gw, "message", from, to, id, "internal-server-error");
	}
}

/* ---- presence: the gateway as notifier (a SIP user watches an XMPP contact) ---- */

/* The next CSeq of the gateway in a dialog: never below one a dead node may have sent. */
static uint32_t next_cseq(const struct xmpp_sub *sub)
{
	uint32_t by_time = (uint32_t)((xmpp_sub_now_ms() / 1000) % 0x7fffffff);
	return sub->cseq + 1 > by_time ? sub->cseq + 1 : by_time;
}

/*
 * A dialog with a NOTIFY under way. RFC 6665 4.2.2: no new NOTIFY before
 * the last one is answered; meanwhile only the latest state waits (a
 * subscriber wants the present, not the history).
 */
struct notifier {
	struct list_node link;
	struct xmpp_gw *gw;
	char call_id[256];
	int sending;                  /* inside proxy_originate(): an answer waits for its return */
	int answered;                 /* ... and came: status holds it */
	unsigned status;
	int has_next;
	char next_state[64];
	struct xmpp_xml_buf next_body;
	int next_has_body;
};

static void notifier_send(struct notifier *nf, struct xmpp_sub *sub, const char *state,
                          const struct xmpp_xml_buf *pidf);

static struct notifier *notifier_find(struct xmpp_gw *gw, const char *call_id)
{
	struct list_node *it, *tmp;
	list_for_each_safe(it, tmp, &gw->notifiers) {
		struct notifier *nf = list_entry(it, struct notifier, link);
		if (strcmp(nf->call_id, call_id) == 0)
			return nf;
	}
	return NULL;
}

static void notifier_free(struct notifier *nf)
{
	list_del(&nf->link);
	xmpp_xml_buf_free(&nf->next_body);
	free(nf);
}

/* The answer to a NOTIFY: the dialog may be over; the waiting state goes next. */
static void notifier_done(struct notifier *nf)
{
	struct xmpp_gw *gw = nf->gw;
	struct xmpp_sub sub;
	int known = xmpp_sub_by_call_id(gw->subs, nf->call_id, &sub) == 0;
	/* 481: the subscriber forgot the dialog; the watch is over. */
	if (known && (nf->status == 481 || nf->status == 404 || nf->status == 410)) {
		log_info("xmpp: %s no longer watches %s (NOTIFY answered %u)", sub.sip_user, sub.jid,
		         nf->status);
		xmpp_sub_delete(gw->subs, &sub);
		known = 0;
		nf->has_next = 0;
	}
	if (!nf->has_next || gw->closing) {
		notifier_free(nf);
		return;
	}
	nf->has_next = 0;
	if (!known) {
		/* Ended meanwhile: only a final terminated NOTIFY still has a dialog to go in. */
		notifier_free(nf);
		return;
	}
	struct xmpp_xml_buf body = nf->next_body;
	int has_body = nf->next_has_body;
	char state[64];
	snprintf(state, sizeof(state), "%s", nf->next_state);
	memset(&nf->next_body, 0, sizeof(nf->next_body));
	notifier_send(nf, &sub, state, has_body ? &body : NULL);
	xmpp_xml_buf_free(&body);
}

static void notify_answered(void *arg, unsigned status, const struct sip_msg *resp)
{
	struct notifier *nf = arg;
	nf->status = status;
	nf->answered = 1;
	if (!nf->sending)
		notifier_done(nf);
}

/* Sends one NOTIFY in nf's dialog now. nf may be freed on return. */
static void notifier_send(struct notifier *nf, struct xmpp_sub *sub, const char *state,
                          const struct xmpp_xml_buf *pidf)
{
	struct xmpp_gw *gw = nf->gw;
	char from_uri[400], to_uri[400], trust[600], extra[200], domain[254];
	snprintf(from_uri, sizeof(from_uri), "sip:%s", sub->jid);
	snprintf(to_uri, sizeof(to_uri), "sip:%s", sub->sip_user);
	snprintf(extra, sizeof(extra), "Event: presence\r\nSubscription-State: %s\r\n", state);
	sub->cseq = next_cseq(sub);
	struct own_request r = {
		.method = "NOTIFY", .ruri = sub->target, .from_uri = from_uri, .from_tag = sub->local_tag,
		.to_uri = to_uri, .to_tag = sub->remote_tag, .call_id = sub->call_id, .cseq = sub->cseq,
		.route = sub->route, .extra = extra,
		.content_type = pidf ? XMPP_PRESENCE_PIDF_TYPE : NULL,
		.body = pidf ? pidf->data : NULL, .body_len = pidf ? pidf->len : 0,
	};
	struct sip_msg *m = build_request(gw, &r);
	if (!m) {
		notifier_free(nf);
		return;
	}
	if (strncmp(state, "terminated", 10) != 0)
		xmpp_sub_put(gw->subs, sub);
	bare_domain(sub->jid, domain, sizeof(domain));
	xmpp_trust(gw, xmpp_proxy_partner(gw->xp, domain, strlen(domain)), domain, trust, sizeof(trust));
	gw->stats.notifies_out++;
	nf->sending = 1;
	nf->answered = 0;
	int rc = proxy_originate(gw->proxy, m, trust, notify_answered, nf);
	nf->sending = 0;
	if (rc < 0)
		notifier_free(nf);
	else if (nf->answered)
		notifier_done(nf);
}

/*
 * A NOTIFY in a SIP_WATCHES dialog: state is the Subscription-State value;
 * pidf, when not NULL, the body. Sent now, or once the one under way in
 * the dialog is answered. Stores the dialog's new CSeq.
 */
static void send_notify(struct xmpp_gw *gw, struct xmpp_sub *sub, const char *state,
                        const struct xmpp_xml_buf *pidf)
{
	struct notifier *nf = notifier_find(gw, sub->call_id);
	if (nf) {
		nf->has_next = 1;
		snprintf(nf->next_state, sizeof(nf->next_state), "%s", state);
		nf->next_body.len = 0;
		nf->next_has_body = 0;
		if (pidf) {
			char *grown = realloc(nf->next_body.data, pidf->len ? pidf->len : 1);
			if (!grown)
				return;
			nf->next_body.data = grown;
			nf->next_body.cap = pidf->len ? pidf->len : 1;
			memcpy(grown, pidf->data, pidf->len);
			nf->next_body.len = pidf->len;
			nf->next_has_body = 1;
		}
		return;
	}
	nf = calloc(1, sizeof(*nf));
	if (!nf)
		return;
	nf->gw = gw;
	snprintf(nf->call_id, sizeof(nf->call_id), "%s", sub->call_id);
	list_add_tail(&gw->notifiers, &nf->link);
	notifier_send(nf, sub, state, pidf);
}

static void active_state(const struct xmpp_sub *sub, char *out, size_t len)
{
	uint64_t now = xmpp_sub_now_ms();
	unsigned left = sub->expires_ms > now ? (unsigned)((sub->expires_ms - now) / 1000) : 0;
	snprintf(out, len, "%s;expires=%u", sub->active ? "active" : "pending", left);
}

/* NOTIFYs that follow the answer to a SUBSCRIBE: sent from the loop, after it. */
struct deferred {
	struct list_node link;
	struct xmpp_sub sub;
	char state[64];
};

static void defer_notify(struct xmpp_gw *gw, const struct xmpp_sub *sub, const char *state)
{
	struct deferred *d = calloc(1, sizeof(*d));
	if (!d)
		return;
	d->sub = *sub;
	snprintf(d->state, sizeof(d->state), "%s", state);
	list_add_tail(&gw->deferred, &d->link);
	if (!ev_is_active(&gw->defer_timer)) {
		ev_timer_set(&gw->defer_timer, 0, 0);
		ev_timer_start(gw->loop, &gw->defer_timer);
	}
}

static void defer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct xmpp_gw *gw = w->data;
	while (!list_empty(&gw->deferred)) {
		struct deferred *d = list_entry(gw->deferred.next, struct deferred, link);
		list_del(&d->link);
		struct xmpp_sub cur;
		/* The store may have moved on (a CSeq, a state) since the answer. */
		if (strncmp(d->state, "terminated", 10) != 0 &&
		    xmpp_sub_by_call_id(gw->subs, d->sub.call_id, &cur) == 0)
			d->sub = cur;
		send_notify(gw, &d->sub, d->state, NULL);
		free(d);
	}
}

/* ---- presence: the gateway as subscriber (an XMPP user watches a SIP user) ---- */

struct subscribe_ctx {
	struct xmpp_gw *gw;
	char sip_user[320], jid[320], call_id[256];
	int ending;                  /* Expires: 0 */
};

/* The route set of a 2xx to our SUBSCRIBE: its Record-Route, last first (RFC 3261 12.1.2). */
static void route_from_response(const struct sip_msg *resp, char *out, size_t len)
{
	int idx[32];
	unsigned n = 0;
	size_t at = 0;
	out[0] = '\0';
	for (int i = sip_msg_find(resp, SIP_HDR_RECORD_ROUTE, 0); i >= 0 && n < 32;
	     i = sip_msg_find(resp, SIP_HDR_RECORD_ROUTE, i + 1))
		idx[n++] = i;
	while (n-- > 0) {
		int w = snprintf(out + at, len - at, "%s%.*s", at ? ", " : "",
		                 SPAN(resp->hdrs[idx[n]].value));
		if (w < 0 || (size_t)w >= len - at) {
			out[at] = '\0';
			return;
		}
		at += (size_t)w;
	}
}

static int header_uri(const struct sip_msg *m, enum sip_hdr_id id, char *out, size_t outsz);
static unsigned expires_of(const struct sip_msg *m, unsigned def);

static void subscribe_answered(void *arg, unsigned status, const struct sip_msg *resp)
{
	struct subscribe_ctx *sc = arg;
	struct xmpp_gw *gw = sc->gw;
	struct xmpp_sub sub;
	if (gw->closing || sc->ending ||
	    xmpp_sub_get(gw->subs, XMPP_SUB_XMPP_WATCHES, sc->sip_user, sc->jid, &sub) < 0 ||
	    strcmp(sub.call_id, sc->call_id) != 0) {
		free(sc);
		return;
	}
	enum xmpp_presence_sub ev = xmpp_presence_sub_from_sip("SUBSCRIBE", status, "presence",
	                                                       resp ? (long)expires_of(resp, 1) : 1,
	                                                       NULL);
	if (ev == XMPP_PRESENCE_SUB_ACCEPTED && resp) {
		char contact[512];
		if (!sub.remote_tag[0] && resp->to_tag.len < sizeof(sub.remote_tag))
			snprintf(sub.remote_tag, sizeof(sub.remote_tag), "%.*s", SPAN(resp->to_tag));
		if (header_uri(resp, SIP_HDR_CONTACT, contact, sizeof(contact)) == 0)
			snprintf(sub.target, sizeof(sub.target), "%s", contact);
		route_from_response(resp, sub.route, sizeof(sub.route));
		unsigned granted = expires_of(resp, XMPP_SUB_EXPIRES);
		sub.expires_ms = xmpp_sub_now_ms() + (uint64_t)granted * 1000;
		int was_active = sub.active;
		sub.active = 1;
		xmpp_sub_put(gw->subs, &sub);
		if (!was_active) {
			log_info("xmpp: %s now watches %s (SUBSCRIBE answered %u)", sub.jid, sub.sip_user,
			         status);
			send_presence_type(gw, sub.sip_user, sub.jid, "subscribed");
		}
	} else if (status == 481 || (ev == XMPP_PRESENCE_SUB_TERMINATED && status != 408 &&
	                             status != 503 && status != 504 && status != 500)) {
		/* Refused (or the dialog is gone): the XMPP user is told. A timeout is retried. */
		log_info("xmpp: %s may not watch %s (SUBSCRIBE answered %u)", sub.jid, sub.sip_user,
		         status);
		xmpp_sub_delete(gw->subs, &sub);
		send_presence_type(gw, sub.sip_user, sub.jid, "unsubscribed");
	}
	free(sc);
}

/* Sends SUBSCRIBE in (or to begin) an XMPP_WATCHES dialog; expires 0 ends it. */
static void send_subscribe(struct xmpp_gw *gw, struct xmpp_sub *sub, unsigned expires)
{
	char from_uri[400], to_uri[400], trust[600], extra[200], domain[254];
	struct subscribe_ctx *sc = calloc(1, sizeof(*sc));
	if (!sc)
		return;
	snprintf(from_uri, sizeof(from_uri), "sip:%s", sub->jid);
	snprintf(to_uri, sizeof(to_uri), "sip:%s", sub->sip_user);
	snprintf(extra, sizeof(extra), "Event: presence\r\nAccept: " XMPP_PRESENCE_PIDF_TYPE
	         "\r\nExpires: %u\r\n", expires);
	sub->cseq = next_cseq(sub);
	struct own_request r = {
		.method = "SUBSCRIBE", .ruri = sub->target, .from_uri = from_uri,
		.from_tag = sub->local_tag, .to_uri = to_uri, .to_tag = sub->remote_tag,
		.call_id = sub->call_id, .cseq = sub->cseq, .route = sub->route, .extra = extra,
	};
	struct sip_msg *m = build_request(gw, &r);
	if (!m) {
		free(sc);
		return;
	}
	sc->gw = gw;
	sc->ending = expires == 0;
	snprintf(sc->sip_user, sizeof(sc->sip_user), "%s", sub->sip_user);
	snprintf(sc->jid, sizeof(sc->jid), "%s", sub->jid);
	snprintf(sc->call_id, sizeof(sc->call_id), "%s", sub->call_id);
	if (expires)
		xmpp_sub_put(gw->subs, sub);
	bare_domain(sub->jid, domain, sizeof(domain));
	xmpp_trust(gw, xmpp_proxy_partner(gw->xp, domain, strlen(domain)), domain, trust, sizeof(trust));
	gw->stats.subscribes_out++;
	if (proxy_originate(gw->proxy, m, trust, subscribe_answered, sc) < 0)
		free(sc);
}

/* ---- XMPP -> SIP: presence stanzas ---- */

/* FNV-1a, to tell a presence document from the last one sent (never 0). */
static uint64_t doc_hash(const char *p, size_t n)
{
	uint64_t h = 14695981039346656037ull;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
	return h ? h : 1;
}

static void handle_presence(struct xmpp_gw *gw, struct xmpp_xml_elem *st)
{
	char jid[XMPP_MAP_JID_MAX], user[XMPP_MAP_JID_MAX], domain[254];
	const char *from = xmpp_xml_attr(st, "from"), *to = xmpp_xml_attr(st, "to");
	const char *type = xmpp_xml_attr(st, "type");
	struct xmpp_sub sub;
	if (!from || !to || xmpp_map_jid_bare(from, strlen(from), jid, sizeof(jid)) < 0 ||
	    xmpp_map_jid_bare(to, strlen(to), user, sizeof(user)) < 0 ||
	    bare_domain(jid, domain, sizeof(domain)) < 0)
		return; /* presence errors are not answered (RFC 6121 4.3.2) */
	const struct cfg_xmpp_partner *p = xmpp_proxy_partner(gw->xp, domain, strlen(domain));
	if (!p || strlen(jid) > XMPP_ADDR_MAX || strlen(user) > XMPP_ADDR_MAX)
		return;
	gw->stats.presence_in++;
	enum xmpp_presence_sub ev = xmpp_presence_sub_from_xmpp(type);
	if (ev == XMPP_PRESENCE_SUB_SUBSCRIBE) {
		const char *refusal = refusal_of(gw, p, user, jid);
		if (refusal) {
			log_info("xmpp: subscription of %s to %s refused: %s", jid, user, refusal);
			gw->stats.xmpp_refused++;
			send_presence_type(gw, user, jid, "unsubscribed");
			return;
		}
		if (xmpp_sub_get(gw->subs, XMPP_SUB_XMPP_WATCHES, user, jid, &sub) == 0) {
			/* Known already: a refresh, and the answer again if it is granted. */
			if (sub.active)
				send_presence_type(gw, user, jid, "subscribed");
			send_subscribe(gw, &sub, XMPP_SUB_EXPIRES);
			return;
		}
		memset(&sub, 0, sizeof(sub));
		sub.kind = XMPP_SUB_XMPP_WATCHES;
		snprintf(sub.sip_user, sizeof(sub.sip_user), "%.*s", XMPP_ADDR_MAX, user);
		snprintf(sub.jid, sizeof(sub.jid), "%.*s", XMPP_ADDR_MAX, jid);
		random_hex(sub.call_id, 12);
		strcat(sub.call_id, "-xmpp");
		random_hex(sub.local_tag, 6);
		snprintf(sub.target, sizeof(sub.target), "sip:%.*s", XMPP_ADDR_MAX, user);
		snprintf(sub.holder, sizeof(sub.holder), "%s", gw->node);
		sub.expires_ms = xmpp_sub_now_ms() + (uint64_t)XMPP_SUB_EXPIRES * 1000;
		log_info("xmpp: %s asks to watch %s: SUBSCRIBE call-id=%s", jid, user, sub.call_id);
		send_subscribe(gw, &sub, XMPP_SUB_EXPIRES);
		return;
	}
	if (ev == XMPP_PRESENCE_SUB_UNSUBSCRIBE) {
		if (xmpp_sub_get(gw->subs, XMPP_SUB_XMPP_WATCHES, user, jid, &sub) == 0) {
			log_info("xmpp: %s stops watching %s", jid, user);
			send_subscribe(gw, &sub, 0);
			xmpp_sub_delete(gw->subs, &sub);
		}
		return;
	}
	if (ev == XMPP_PRESENCE_SUB_ACCEPTED || ev == XMPP_PRESENCE_SUB_TERMINATED) {
		if (xmpp_sub_get(gw->subs, XMPP_SUB_SIP_WATCHES, user, jid, &sub) < 0)
			return;
		if (ev == XMPP_PRESENCE_SUB_TERMINATED) {
			log_info("xmpp: %s refused or ended %s's subscription", jid, user);
			xmpp_sub_delete(gw->subs, &sub);
			xmpp_sub_disallow(gw->subs, user, jid);
			send_notify(gw, &sub, "terminated;reason=rejected", NULL);
			return;
		}
		if (!sub.active)
			log_info("xmpp: %s allowed %s to watch it", jid, user);
		sub.active = 1;
		char state[64];
		active_state(&sub, state, sizeof(state));
		send_notify(gw, &sub, state, NULL);
		/* RFC 6121 4.3: the contact's server answers a probe with its presence. */
		send_presence_type(gw, user, jid, "probe");
		return;
	}
	if (type && strcmp(type, "probe") == 0) {
		if (xmpp_sub_get(gw->subs, XMPP_SUB_XMPP_WATCHES, user, jid, &sub) == 0 && sub.active)
			send_subscribe(gw, &sub, XMPP_SUB_EXPIRES); /* its NOTIFY brings the presence */
		return;
	}
	if (type && strcmp(type, "unavailable") != 0)
		return; /* error, or a type RFC 6121 does not know */
	if (xmpp_sub_get(gw->subs, XMPP_SUB_SIP_WATCHES, user, jid, &sub) < 0 || !sub.active)
		return; /* nobody on the SIP side watches it */
	struct xmpp_presence_pidf pidf = { 0 };
	int rc = xmpp_presence_to_pidf(st, &pidf);
	uint64_t doc = rc == 0 ? doc_hash(pidf.doc.data, pidf.doc.len) : 0;
	if (rc == 0 && doc == sub.last_doc) {
		/* The same presence again (a probe's answer, a broadcast): nothing new to tell. */
		gw->stats.presence_unchanged++;
	} else if (rc == 0) {
		char state[64];
		sub.last_doc = doc;
		xmpp_sub_put(gw->subs, &sub); /* the next presence compares with this one */
		active_state(&sub, state, sizeof(state));
		send_notify(gw, &sub, state, &pidf.doc);
	} else {
		log_debug("xmpp: presence of %s for %s not carried: %s", jid, user,
		          xmpp_presence_strerror(rc));
	}
	xmpp_presence_pidf_free(&pidf);
}

/* ---- SIP -> XMPP ---- */

/* The addr-spec of a From, To or Contact header, into out. */
static int header_uri(const struct sip_msg *m, enum sip_hdr_id id, char *out, size_t outsz)
{
	struct sip_nameaddr na;
	int i = sip_msg_find(m, id, 0);
	if (i < 0 || sip_nameaddr_parse(m->hdrs[i].value, &na) < 0 || na.uri.len >= outsz)
		return -1;
	memcpy(out, na.uri.s, na.uri.len);
	out[na.uri.len] = '\0';
	return 0;
}

/* The Expires header's value, or def; never more than a subscription lasts here. */
static unsigned expires_of(const struct sip_msg *m, unsigned def)
{
	unsigned v = sip_msg_expires(m, def);
	return v < XMPP_SUB_EXPIRES ? v : XMPP_SUB_EXPIRES;
}

/* A header's value, NUL-terminated into out ("" when absent). */
static void header_text(const struct sip_msg *m, enum sip_hdr_id id, const char *name, char *out,
                        size_t len)
{
	int i = id != SIP_HDR_OTHER ? sip_msg_find(m, id, 0) : sip_msg_find_name(m, name, 0);
	out[0] = '\0';
	if (i >= 0)
		snprintf(out, len, "%.*s", SPAN(m->hdrs[i].value));
}

/* "user@domain" of a SIP URI's user and host, lower-cased domain; -1 when it has no user. */
static int uri_bare(const struct sip_uri *u, char *out, size_t len)
{
	if (u->user.len == 0 || u->user.len + u->host.len + 2 > len)
		return -1;
	int n = snprintf(out, len, "%.*s@", SPAN(u->user));
	for (size_t i = 0; i < u->host.len; i++)
		out[n + (int)i] = (char)tolower((unsigned char)u->host.s[i]);
	out[n + (int)u->host.len] = '\0';
	return 0;
}

static enum xmpp_gw_take answer_now(struct xmpp_gw *gw, struct xmpp_gw_answer *a, unsigned code,
                                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static enum xmpp_gw_take answer_now(struct xmpp_gw *gw, struct xmpp_gw_answer *a, unsigned code,
                                    const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(gw->warning, sizeof(gw->warning), fmt, ap);
	va_end(ap);
	a->status = code;
	a->warning = gw->warning;
	if (code >= 300)
		gw->stats.sip_refused++;
	return XMPP_GW_ANSWERED;
}

/* A SIP SUBSCRIBE in one of our SIP_WATCHES dialogs: a refresh, or its end. */
static enum xmpp_gw_take resubscribed(struct xmpp_gw *gw, struct xmpp_sub *sub,
                                      const struct sip_msg *req, struct xmpp_gw_answer *a)
{
	unsigned expires = expires_of(req, XMPP_SUB_EXPIRES);
	a->status = 200;
	a->contact = gw->contact;
	if (expires == 0) {
		log_info("xmpp: %s stops watching %s", sub->sip_user, sub->jid);
		a->expires = 0;
		xmpp_sub_delete(gw->subs, sub);
		xmpp_sub_disallow(gw->subs, sub->sip_user, sub->jid);
		send_presence_type(gw, sub->sip_user, sub->jid, "unsubscribe");
		defer_notify(gw, sub, "terminated;reason=timeout");
		return XMPP_GW_ANSWERED;
	}
	a->expires = (int)expires;
	sub->expires_ms = xmpp_sub_now_ms() + (uint64_t)expires * 1000;
	sub->last_doc = 0; /* the probe's answer is the full state the refresh asks for */
	xmpp_sub_put(gw->subs, sub);
	char state[64];
	active_state(sub, state, sizeof(state));
	defer_notify(gw, sub, state);
	if (sub->active)
		send_presence_type(gw, sub->sip_user, sub->jid, "probe");
	return XMPP_GW_ANSWERED;
}

/* A NOTIFY in one of our XMPP_WATCHES dialogs: presence for the XMPP user. */
static enum xmpp_gw_take notified(struct xmpp_gw *gw, struct xmpp_sub *sub,
                                  const struct sip_msg *req, struct xmpp_gw_answer *a)
{
	char state[128], ct[128], from[XMPP_MAP_URI_MAX], to[XMPP_MAP_URI_MAX];
	header_text(req, SIP_HDR_OTHER, "Subscription-State", state, sizeof(state));
	header_text(req, SIP_HDR_CONTENT_TYPE, NULL, ct, sizeof(ct));
	a->status = 200;
	gw->stats.notifies_in++;
	if (!sub->remote_tag[0] && req->from_tag.len < sizeof(sub->remote_tag)) {
		/* A NOTIFY may come before the 2xx: its From tag is the notifier's. */
		snprintf(sub->remote_tag, sizeof(sub->remote_tag), "%.*s", SPAN(req->from_tag));
		xmpp_sub_put(gw->subs, sub);
	}
	enum xmpp_presence_sub ev = xmpp_presence_sub_from_sip("NOTIFY", 0, "presence", -1, state);
	if (ev == XMPP_PRESENCE_SUB_TERMINATED) {
		log_info("xmpp: %s's watch of %s ended by the SIP side (%s)", sub->jid, sub->sip_user,
		         state);
		xmpp_sub_delete(gw->subs, sub);
		send_presence_type(gw, sub->sip_user, sub->jid, "unsubscribed");
		return XMPP_GW_ANSWERED;
	}
	if (req->body.len == 0 || strncasecmp(ct, XMPP_PRESENCE_PIDF_TYPE,
	                                      strlen(XMPP_PRESENCE_PIDF_TYPE)) != 0)
		return XMPP_GW_ANSWERED; /* pending, or no document: nothing to tell */
	snprintf(from, sizeof(from), "sip:%s", sub->sip_user);
	snprintf(to, sizeof(to), "sip:%s", sub->jid);
	struct xmpp_xml_elem *pres = NULL;
	int rc = xmpp_presence_from_pidf(from, to, req->body.s, req->body.len, &pres);
	if (rc < 0) {
		xmpp_xml_free(pres);
		return answer_now(gw, a, 400, "the presence document cannot be read: %s",
		                  xmpp_presence_strerror(rc));
	}
	char local[254], remote[254];
	if (bare_domain(sub->sip_user, local, sizeof(local)) == 0 &&
	    bare_domain(sub->jid, remote, sizeof(remote)) == 0) {
		gw->stats.presence_out++;
		xmpp_proxy_send(gw->xp, local, remote, pres, NULL, NULL, NULL);
	} else {
		xmpp_xml_free(pres);
	}
	return XMPP_GW_ANSWERED;
}

/* A request in a dialog of the gateway's (its Contact as the Request-URI). */
static enum xmpp_gw_take in_dialog(struct xmpp_gw *gw, const struct sip_msg *req,
                                   struct xmpp_gw_answer *a)
{
	char call_id[256];
	struct xmpp_sub sub;
	snprintf(call_id, sizeof(call_id), "%.*s", SPAN(req->call_id));
	if (req->call_id.len >= sizeof(call_id) || xmpp_sub_by_call_id(gw->subs, call_id, &sub) < 0 ||
	    !sip_str_eq(req->to_tag, sub.local_tag))
		return answer_now(gw, a, 481, "no such subscription at the XMPP gateway");
	if (req->method == SIP_SUBSCRIBE && sub.kind == XMPP_SUB_SIP_WATCHES)
		return resubscribed(gw, &sub, req, a);
	if (req->method == SIP_NOTIFY && sub.kind == XMPP_SUB_XMPP_WATCHES)
		return notified(gw, &sub, req, a);
	a->expires = -1;
	return answer_now(gw, a, 405, "the XMPP gateway takes only SUBSCRIBE and NOTIFY in its "
	                  "subscriptions");
}

/* A SIP SUBSCRIBE to an XMPP contact: the gateway becomes the notifier. */
static enum xmpp_gw_take subscribe_to_xmpp(struct xmpp_gw *gw, const struct sip_msg *req,
                                           const char *sip_user, const char *jid,
                                           struct xmpp_gw_answer *a)
{
	char event[64], contact[512];
	header_text(req, SIP_HDR_EVENT, NULL, event, sizeof(event));
	if (strncasecmp(event, "presence", 8) != 0 || (event[8] && event[8] != ';' && event[8] != ' '))
		return answer_now(gw, a, 489, "the XMPP gateway carries the presence event package only");
	if (header_uri(req, SIP_HDR_CONTACT, contact, sizeof(contact)) < 0)
		return answer_now(gw, a, 400, "a SUBSCRIBE needs a Contact");
	unsigned expires = expires_of(req, XMPP_SUB_EXPIRES);
	struct xmpp_sub sub;
	memset(&sub, 0, sizeof(sub));
	if (xmpp_sub_get(gw->subs, XMPP_SUB_SIP_WATCHES, sip_user, jid, &sub) == 0)
		xmpp_sub_delete(gw->subs, &sub); /* a new dialog replaces the old one */
	int active = sub.active;
	memset(&sub, 0, sizeof(sub));
	sub.kind = XMPP_SUB_SIP_WATCHES;
	sub.active = active;
	snprintf(sub.sip_user, sizeof(sub.sip_user), "%.*s", XMPP_ADDR_MAX, sip_user);
	snprintf(sub.jid, sizeof(sub.jid), "%.*s", XMPP_ADDR_MAX, jid);
	if (req->call_id.len >= sizeof(sub.call_id) || req->from_tag.len >= sizeof(sub.remote_tag))
		return answer_now(gw, a, 400, "Call-ID or From tag too long");
	snprintf(sub.call_id, sizeof(sub.call_id), "%.*s", SPAN(req->call_id));
	snprintf(sub.remote_tag, sizeof(sub.remote_tag), "%.*s", SPAN(req->from_tag));
	random_hex(sub.local_tag, 6);
	snprintf(sub.target, sizeof(sub.target), "%s", contact);
	size_t at = 0;
	for (int i = sip_msg_find(req, SIP_HDR_RECORD_ROUTE, 0); i >= 0;
	     i = sip_msg_find(req, SIP_HDR_RECORD_ROUTE, i + 1)) {
		int w = snprintf(sub.route + at, sizeof(sub.route) - at, "%s%.*s", at ? ", " : "",
		                 SPAN(req->hdrs[i].value));
		if (w < 0 || (size_t)w >= sizeof(sub.route) - at)
			return answer_now(gw, a, 500, "the route set is too long");
		at += (size_t)w;
	}
	snprintf(sub.holder, sizeof(sub.holder), "%s", gw->node);
	sub.expires_ms = xmpp_sub_now_ms() + (uint64_t)expires * 1000;
	if (xmpp_sub_put(gw->subs, &sub) < 0)
		return answer_now(gw, a, 503, "the subscription cannot be stored (store full)");
	xmpp_sub_allow(gw->subs, sip_user, jid, XMPP_PERMIT_TTL_MS);
	log_info("xmpp: %s asks to watch %s (call-id=%s)", sip_user, jid, sub.call_id);
	send_presence_type(gw, sip_user, jid, "subscribe");
	snprintf(gw->to_tag, sizeof(gw->to_tag), "%s", sub.local_tag);
	a->status = 202;
	a->to_tag = gw->to_tag;
	a->contact = gw->contact;
	a->expires = (int)expires;
	char state[64];
	active_state(&sub, state, sizeof(state));
	defer_notify(gw, &sub, state);
	return XMPP_GW_ANSWERED;
}

/* A queued MESSAGE's stanza went, or its stream failed: the SIP answer. */
static void message_sent(void *arg, const char *error)
{
	struct xmpp_gw_pending *h = arg;
	struct xmpp_gw_answer a = { .status = error ? 504 : 200, .warning = error, .expires = -1 };
	if (!error)
		h->gw->stats.messages_out++;
	if (h->done)
		h->done(h->arg, &a);
	free(h);
}

/* A SIP MESSAGE to an XMPP user. */
static enum xmpp_gw_take message_to_xmpp(struct xmpp_gw *gw, const struct sip_msg *req,
                                         const struct cfg_xmpp_partner *p, const char *from_uri,
                                         const char *local, const char *remote,
                                         xmpp_gw_answer_fn done, void *arg,
                                         struct xmpp_gw_pending **pending,
                                         struct xmpp_gw_answer *a)
{
	char ct[128] = "", ruri_text[XMPP_MAP_URI_MAX], callid[256];
	int cti = sip_msg_find(req, SIP_HDR_CONTENT_TYPE, 0);
	if (cti >= 0)
		snprintf(ct, sizeof(ct), "%.*s", SPAN(req->hdrs[cti].value));
	snprintf(ruri_text, sizeof(ruri_text), "%.*s", SPAN(req->ruri));
	snprintf(callid, sizeof(callid), "%.*s", SPAN(req->call_id));
	/* RFC 7572 maps From and To; the Request-URI decided the partner and is the addressee. */
	struct xmpp_map_sip_in in = {
		.from = from_uri,
		.to = ruri_text,
		.content_type = cti >= 0 ? ct : NULL,
		.body = req->body.s,
		.body_len = req->body.len,
		.id = callid,
	};
	struct xmpp_xml_elem *stanza = NULL;
	int rc = xmpp_map_sip_to_message(&in, &stanza);
	if (rc < 0)
		return answer_now(gw, a, xmpp_map_err_sip_status(rc),
		                  "cannot carry this MESSAGE to XMPP: %s", xmpp_map_strerror(rc));
	struct xmpp_gw_pending *h = calloc(1, sizeof(*h));
	if (!h) {
		xmpp_xml_free(stanza);
		return answer_now(gw, a, 500, "out of memory");
	}
	h->gw = gw;
	h->done = done;
	h->arg = arg;
	struct xmpp_proxy_pending *ph;
	switch (xmpp_proxy_send(gw->xp, local, remote, stanza, message_sent, h, &ph)) {
	case XMPP_PROXY_SENT:
		free(h);
		gw->stats.messages_out++;
		a->status = 200;
		return XMPP_GW_ANSWERED;
	case XMPP_PROXY_QUEUED:
		/* The stream is not up: the answer comes from the loop when it is (or fails). */
		*pending = h;
		return XMPP_GW_PENDING;
	case XMPP_PROXY_REFUSED:
		break;
	}
	free(h);
	return answer_now(gw, a, 503, "the XMPP stream to %s takes no more messages now", remote);
}

enum xmpp_gw_take xmpp_gw_sip_request(struct xmpp_gw *gw, const struct sip_msg *req,
                                      xmpp_gw_answer_fn done, void *arg,
                                      struct xmpp_gw_pending **pending,
                                      struct xmpp_gw_answer *a)
{
	struct sip_uri ruri, from;
	char from_uri[XMPP_MAP_URI_MAX], sip_user[XMPP_MAP_JID_MAX], jid[XMPP_MAP_JID_MAX];
	*pending = NULL;
	memset(a, 0, sizeof(*a));
	a->expires = -1;
	if (sip_uri_parse(req->ruri, &ruri) < 0)
		return XMPP_GW_NOT_MINE;
	if (sip_str_eq(ruri.user, XMPP_GW_USER) && sip_str_caseeq(ruri.host, gw->contact_host))
		return in_dialog(gw, req, a);
	const struct cfg_xmpp_partner *p = xmpp_proxy_partner(gw->xp, ruri.host.s, ruri.host.len);
	if (!p)
		return XMPP_GW_NOT_MINE;
	if (req->method == SIP_OPTIONS) {
		a->status = 200;
		return XMPP_GW_ANSWERED;
	}
	if (req->method != SIP_MESSAGE && req->method != SIP_SUBSCRIBE)
		return answer_now(gw, a, 488, "XMPP partner %.*s takes instant messages and presence "
		                  "only", SPAN(ruri.host));
	if (req->to_tag.len)
		return answer_now(gw, a, 481, "no such dialog with XMPP partner %.*s", SPAN(ruri.host));
	if (header_uri(req, SIP_HDR_FROM, from_uri, sizeof(from_uri)) < 0)
		return answer_now(gw, a, 400, "From is not a SIP URI");
	struct sip_str fs = { from_uri, strlen(from_uri) };
	if (sip_uri_parse(fs, &from) < 0 || !xmpp_proxy_serves(gw->xp, from.host.s, from.host.len) ||
	    uri_bare(&from, sip_user, sizeof(sip_user)) < 0)
		return answer_now(gw, a, 403, "the sender is not a user of an XMPP domain of this "
		                  "organization");
	if (xmpp_map_sip_to_jid(req->ruri.s, req->ruri.len, jid, sizeof(jid)) < 0)
		return answer_now(gw, a, 404, "%.*s cannot be an XMPP address", SPAN(req->ruri));
	if (strlen(jid) > XMPP_ADDR_MAX || strlen(sip_user) > XMPP_ADDR_MAX)
		return answer_now(gw, a, 414, "addresses longer than %d bytes are not carried",
		                  XMPP_ADDR_MAX);
	const struct cfg_access_policy *pol = pol_user_policy(gw->cfg, from.user.s, from.user.len,
	                                                      from.host.s, from.host.len);
	if (!pol->xmpp)
		return answer_now(gw, a, 403, "external access policy '%s' of %s does not permit XMPP "
		                  "access", pol->identity, sip_user);
	if (req->method == SIP_SUBSCRIBE)
		return subscribe_to_xmpp(gw, req, sip_user, jid, a);
	char local[254], remote[254];
	snprintf(local, sizeof(local), "%.*s", SPAN(from.host));
	snprintf(remote, sizeof(remote), "%.*s", SPAN(ruri.host));
	return message_to_xmpp(gw, req, p, from_uri, local, remote, done, arg, pending, a);
}

void xmpp_gw_cancel(struct xmpp_gw_pending *p)
{
	if (p)
		p->done = NULL; /* freed when the proxy is done with it */
}

/* ---- the pool: refreshes, and what a dead node held ---- */

/* The node that takes over a dead node's work: the live edge with the lowest name. */
static int we_take_over(struct xmpp_gw *gw, const char *holder)
{
	if (!gw->cluster || strcmp(holder, gw->node) == 0)
		return 0;
	const struct clu_members *ms = clu_node_members(gw->cluster);
	const struct clu_member *h = clu_find(ms, holder);
	if (h && (h->state == CLU_ALIVE || h->state == CLU_SUSPECT))
		return 0;
	const char *lowest = gw->node;
	for (unsigned i = 0; i < clu_count(ms); i++) {
		const struct clu_member *m = clu_member_at(ms, i);
		if (m->state == CLU_ALIVE && !m->observer && strcmp(m->name, lowest) < 0)
			lowest = m->name;
	}
	return strcmp(lowest, gw->node) == 0;
}

struct maint {
	struct xmpp_gw *gw;
	struct xmpp_sub *work;         /* watches to refresh or take over */
	unsigned n, cap;
	char (*streams)[2][254];       /* streams to open again */
	unsigned nstreams, stream_cap;
};

static void maint_watch(void *arg, const struct xmpp_sub *s)
{
	struct maint *m = arg;
	uint64_t now = xmpp_sub_now_ms();
	int mine = strcmp(s->holder, m->gw->node) == 0;
	int due = s->kind == XMPP_SUB_XMPP_WATCHES && s->expires_ms < now + XMPP_SUB_REFRESH_MS;
	int orphan = we_take_over(m->gw, s->holder);
	if (!((mine && due) || orphan) || m->n >= 1000)
		return;
	if (m->n == m->cap) {
		unsigned cap = m->cap ? 2 * m->cap : 16;
		struct xmpp_sub *grown = realloc(m->work, cap * sizeof(*grown));
		if (!grown)
			return;
		m->work = grown;
		m->cap = cap;
	}
	m->work[m->n++] = *s;
}

static void maint_holder(void *arg, const char *local, const char *remote, const char *node)
{
	struct maint *m = arg;
	if (!we_take_over(m->gw, node) || m->nstreams >= 256)
		return;
	if (m->nstreams == m->stream_cap) {
		unsigned cap = m->stream_cap ? 2 * m->stream_cap : 8;
		char (*grown)[2][254] = realloc(m->streams, cap * sizeof(*grown));
		if (!grown)
			return;
		m->streams = grown;
		m->stream_cap = cap;
	}
	snprintf(m->streams[m->nstreams][0], 254, "%s", local);
	snprintf(m->streams[m->nstreams][1], 254, "%s", remote);
	m->nstreams++;
}

/*
 * Every MAINT_INTERVAL: refreshes the SIP subscriptions this node holds
 * that near their end, and takes over those (and the streams) of nodes the
 * pool knows dead. The store is read first, then changed.
 */
static void maint_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct xmpp_gw *gw = w->data;
	struct maint m = { .gw = gw };
	xmpp_sub_foreach(gw->subs, maint_watch, &m);
	xmpp_sub_foreach_holder(gw->subs, maint_holder, &m);
	for (unsigned i = 0; i < m.n; i++) {
		struct xmpp_sub *s = &m.work[i];
		if (strcmp(s->holder, gw->node) != 0) {
			log_notice("xmpp: taking over %s's %s of %s from %s, which is gone",
			           s->kind == XMPP_SUB_XMPP_WATCHES ? s->jid : s->sip_user,
			           "subscription", s->kind == XMPP_SUB_XMPP_WATCHES ? s->sip_user : s->jid,
			           s->holder);
			snprintf(s->holder, sizeof(s->holder), "%s", gw->node);
			gw->stats.takeovers++;
		}
		if (s->kind == XMPP_SUB_XMPP_WATCHES)
			send_subscribe(gw, s, XMPP_SUB_EXPIRES);
		else
			xmpp_sub_put(gw->subs, s);
	}
	for (unsigned i = 0; i < m.nstreams; i++) {
		const char *local = m.streams[i][0], *remote = m.streams[i][1];
		if (!xmpp_proxy_partner(gw->xp, remote, strlen(remote)))
			continue;
		log_notice("xmpp: opening the stream %s -> %s again: its node is gone", local, remote);
		gw->stats.takeovers++;
		xmpp_proxy_open(gw->xp, local, remote);
	}
	free(m.work);
	free(m.streams);
}

/*
 * An iq: the gateway carries no iq to SIP (IM and presence only, as Lync's),
 * but a get or set is always answered (RFC 6120 8.2.3): a ping of one of our
 * domains (XEP-0199, which servers use to check a stream) with a result,
 * anything else with service-unavailable. Results and errors are dropped.
 */
static void handle_iq(struct xmpp_gw *gw, struct xmpp_xml_elem *st)
{
	const char *type = xmpp_xml_attr(st, "type"), *from = xmpp_xml_attr(st, "from");
	const char *to = xmpp_xml_attr(st, "to"), *id = xmpp_xml_attr(st, "id");
	char local[254], remote[254];
	if (!type || (strcmp(type, "get") != 0 && strcmp(type, "set") != 0) || !id ||
	    bare_domain(to, local, sizeof(local)) < 0 || bare_domain(from, remote, sizeof(remote)) < 0)
		return;
	if (strcmp(type, "get") == 0 && !strchr(to, '@') &&
	    xmpp_xml_child(st, NULL, "ping", "urn:xmpp:ping")) {
		struct xmpp_xml_elem *r = xmpp_xml_new("iq", XMPP_XML_NS_SERVER);
		if (!r || xmpp_xml_set_attr(r, "from", NULL, to) < 0 ||
		    xmpp_xml_set_attr(r, "to", NULL, from) < 0 ||
		    xmpp_xml_set_attr(r, "id", NULL, id) < 0 ||
		    xmpp_xml_set_attr(r, "type", NULL, "result") < 0) {
			xmpp_xml_free(r);
			return;
		}
		xmpp_proxy_send(gw->xp, local, remote, r, NULL, NULL, NULL);
		return;
	}
	send_error(gw, "iq", from, to, id, "service-unavailable");
}

/* A stanza from a partner's authenticated stream. */
static void on_stanza(void *arg, struct xmpp_xml_elem *st)
{
	struct xmpp_gw *gw = arg;
	if (strcmp(st->name, "message") == 0)
		handle_message(gw, st);
	else if (strcmp(st->name, "presence") == 0)
		handle_presence(gw, st);
	else
		handle_iq(gw, st);
}

int xmpp_gw_check(const struct edge_cfg *cfg, char *err, size_t errlen)
{
	return cfg->xmpp ? xmpp_proxy_check(cfg, err, errlen) : 0;
}

struct xmpp_gw *xmpp_gw_new(struct ev_loop *loop, const struct edge_cfg *cfg, struct proxy *proxy,
                            struct dns_resolver *dns, struct clu_node *cluster,
                            char *err, size_t errlen)
{
	struct xmpp_gw *gw = calloc(1, sizeof(*gw));
	if (!gw) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	gw->loop = loop;
	gw->cfg = cfg;
	gw->proxy = proxy;
	gw->cluster = cluster;
	list_init(&gw->deferred);
	list_init(&gw->notifiers);
	ev_timer_init(&gw->defer_timer, defer_cb, 0, 0);
	gw->defer_timer.data = gw;
	ev_timer_init(&gw->maint_timer, maint_cb, MAINT_INTERVAL, MAINT_INTERVAL);
	gw->maint_timer.data = gw;
	snprintf(gw->node, sizeof(gw->node), "%s", cluster ? clu_node_name(cluster) : "self");
	/* The pool's internal name when there is one, so that any node takes the dialogs. */
	const struct cfgu_listen *in = &cfg->internal_listen[0];
	snprintf(gw->contact_host, sizeof(gw->contact_host), "%s",
	         cfg->internal_pool_fqdn ? cfg->internal_pool_fqdn : in->address);
	snprintf(gw->contact, sizeof(gw->contact),
	         strchr(gw->contact_host, ':') ? "<sip:" XMPP_GW_USER "@[%s]:%u;transport=%s>"
	                                       : "<sip:" XMPP_GW_USER "@%s:%u;transport=%s>",
	         gw->contact_host, in->port, in->tls ? "tls" : "tcp");
	gw->subs = xmpp_sub_store_new(cluster);
	if (!gw->subs) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	gw->xp = xmpp_proxy_new(loop, cfg, dns, cluster, gw->subs, on_stanza, gw, err, errlen);
	if (!gw->xp)
		goto fail;
	ev_timer_start(loop, &gw->maint_timer);
	return gw;
fail:
	xmpp_gw_free(gw);
	return NULL;
}

void xmpp_gw_quiesce(struct xmpp_gw *gw)
{
	if (!gw)
		return;
	gw->closing = 1;
	xmpp_proxy_quiesce(gw->xp);
}

void xmpp_gw_free(struct xmpp_gw *gw)
{
	if (!gw)
		return;
	gw->closing = 1;
	ev_timer_stop(gw->loop, &gw->defer_timer);
	ev_timer_stop(gw->loop, &gw->maint_timer);
	while (!list_empty(&gw->deferred)) {
		struct deferred *d = list_entry(gw->deferred.next, struct deferred, link);
		list_del(&d->link);
		free(d);
	}
	while (!list_empty(&gw->notifiers))
		notifier_free(list_entry(gw->notifiers.next, struct notifier, link));
	/* The proxy's pending sends still hold our handles: it ends them, then the store goes. */
	xmpp_proxy_free(gw->xp);
	xmpp_sub_store_free(gw->subs);
	free(gw);
}

static void count_watch(void *arg, const struct xmpp_sub *s)
{
	unsigned *n = arg;
	n[s->kind == XMPP_SUB_XMPP_WATCHES]++;
}

size_t xmpp_gw_status_json(const struct xmpp_gw *gw, char *buf, size_t len)
{
	const struct gw_stats *st = &gw->stats;
	unsigned watches[2] = { 0, 0 };
	if (len < 2)
		return 0;
	xmpp_sub_foreach(gw->subs, count_watch, watches);
	int n = snprintf(buf, len, "{\"messages_out\": %llu, \"messages_in\": %llu, "
	                 "\"errors_out\": %llu, \"sip_refused\": %llu, \"xmpp_refused\": %llu, "
	                 "\"presence_out\": %llu, \"presence_in\": %llu, "
	                 "\"presence_unchanged\": %llu, \"notifies_out\": %llu, "
	                 "\"notifies_in\": %llu, \"subscribes_out\": %llu, \"takeovers\": %llu, "
	                 "\"watches\": {\"sip\": %u, \"xmpp\": %u}, ",
	                 st->messages_out, st->messages_in, st->errors_out, st->sip_refused,
	                 st->xmpp_refused, st->presence_out, st->presence_in, st->presence_unchanged,
	                 st->notifies_out, st->notifies_in, st->subscribes_out, st->takeovers,
	                 watches[0], watches[1]);
	if (n < 0 || (size_t)n >= len - 1)
		return len - 1;
	size_t at = (size_t)n;
	at += xmpp_proxy_status_json(gw->xp, buf + at, len - at - 1);
	buf[at++] = '}';
	buf[at] = '\0';
	return at;
}
