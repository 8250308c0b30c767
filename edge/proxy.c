#include "proxy.h"

#include <arpa/inet.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clu_node.h"
#include "conn.h"
#include "dlg.h"
#include "dns.h"
#include "htab.h"
#include "list.h"
#include "log.h"
#include "pol.h"
#include "route.h"
#include "sip_msg.h"
#include "sip_txn.h"
#include "thr.h"
#include "tls.h"
#include "xmpp_gw.h"

/* RFC 3261 timers for reliable transports (A, D, E, G, I, J, K are 0). */
#define T1 0.5
#define TIMER_64T1 (64 * T1) /* B, F, H, L (RFC 6026), M (RFC 6026) */
#define TIMER_C 180.0        /* proxy INVITE timer, > 3 minutes per 16.6 item 11 */

#define SERVER_HEADER "EdgePool"
#define ALLOW_METHODS "INVITE, ACK, BYE, CANCEL, OPTIONS, MESSAGE, SUBSCRIBE, NOTIFY, INFO, " \
                      "UPDATE, PRACK, REFER"

enum srv_state {
	SRV_PROCEEDING, /* no final response sent yet */
	SRV_COMPLETED,  /* INVITE: non-2xx final sent, waiting for the ACK (Timer H) */
	SRV_ACCEPTED,   /* INVITE: 2xx sent, absorbing retransmissions (Timer L) */
	SRV_DONE,
};

enum cli_state {
	CLI_NONE,       /* the request was not forwarded */
	CLI_CALLING,    /* sent, no response yet (Timer B or F) */
	CLI_PROCEEDING, /* provisional received (INVITE: Timer C) */
	CLI_ACCEPTED,   /* INVITE: 2xx received, passing retransmissions (Timer M) */
	CLI_DONE,
};

struct proxy {
	struct ev_loop *loop;
	const struct edge_cfg *cfg;
	struct tls_ctx *tls_server;
	struct tls_ctx *tls_client;
	struct conn_limits lim_internal;
	struct conn_limits lim_external;
	struct conn_mgr *conns;
	struct dns_resolver *dns;
	struct thr_table *thr;       /* discovered partners' limits */
	struct router *router;
	struct list_node stateless;  /* stateless forwards waiting for a route */
	struct clu_node *cluster;    /* not owned; NULL: a pool of one */
	int draining;                /* no new dialogs: proxy_drain() */
	unsigned long long unanswered; /* transactions without a final response yet */
	ev_timer share_timer;        /* publishes our part of the partners' counts */
	struct dlg_registry *dialogs; /* in the cluster's store, or our own */
	struct xmpp_gw *gw;          /* the XMPP gateway, or NULL (no `xmpp` section) */
	struct sip_txn_table server_txns;
	struct sip_txn_table client_txns;
	struct proxy_stats stats;
};

/* A server transaction and the client transaction it forwarded to. */
struct ptx {
	struct sip_txn_link srv_link;
	struct sip_txn_link cli_link;
	struct list_node out_link;   /* in the outbound connection's pending list */
	struct proxy *px;
	struct sip_msg *req;         /* as received, with received/rport set */
	struct sip_msg *fwd;         /* as forwarded; NULL until then */
	uint64_t in_conn;            /* responses go back on this connection */
	enum conn_side in_side;
	uint64_t out_conn;
	struct rt_pending *routing;  /* the router is still deciding (DNS) */
	struct rt_decision route;    /* where fwd goes: the targets, in order */
	unsigned target;             /* the one tried now */
	const char *dest_name;       /* where fwd went, for Warnings */
	enum srv_state srv;
	enum cli_state cli;
	int cancel_pending;          /* CANCEL received before any provisional */
	char *last_resp;             /* answered to retransmissions of the request */
	size_t last_resp_len;
	struct sip_msg *held;        /* a 2xx waiting for the pool to hold its dialog */
	struct clu_confirm *confirm; /* that wait */
	proxy_origin_fn origin;      /* a request of the edge's own: its answer goes here */
	void *origin_arg;
	int own_error;               /* the response being sent is the edge's own */
	struct xmpp_gw_pending *gw_pending; /* the XMPP gateway is answering it */
	ev_timer srv_timer;
	ev_timer cli_timer;
	char branch[SIP_TXN_BRANCH_LEN + 1];
};

/* What the proxy keeps per outbound connection. */
struct link_state {
	struct list_node pending;    /* ptx waiting for a final response on it */
	int was_up;                  /* a failure before this is a failover, not a 504 */
};

/* An ACK or CANCEL forwarded without a transaction, waiting for its route. */
struct stateless_fwd {
	struct list_node link;
	struct proxy *px;
	struct sip_msg *msg;
	struct rt_pending *routing;
};

#define SPAN(str) (int)(str).len, (str).s

/* ---- who we are ---- */

static int listener_matches(const struct cfgu_listen *l, unsigned n, struct sip_str host,
                            uint16_t port)
{
	for (unsigned i = 0; i < n; i++)
		if (sip_str_caseeq(host, l[i].address) && (port == 0 || port == l[i].port))
			return 1;
	return 0;
}

/* Whether host:port (port 0: absent) names this edge: the pool or a listener. */
static int is_local(const struct proxy *px, struct sip_str host, uint16_t port)
{
	const struct edge_cfg *cfg = px->cfg;
	return sip_str_caseeq(host, cfg->pool_fqdn) ||
	       (cfg->internal_pool_fqdn && sip_str_caseeq(host, cfg->internal_pool_fqdn)) ||
	       listener_matches(cfg->internal_listen, cfg->ninternal_listen, host, port) ||
	       listener_matches(cfg->external_listen, cfg->nexternal_listen, host, port);
}

static const struct cfgu_listen *side_listener(const struct proxy *px, enum conn_side side)
{
	return side == CONN_EXTERNAL ? &px->cfg->external_listen[0] : &px->cfg->internal_listen[0];
}

/* "host:port" for a URI or Via, with IPv6 in brackets. */
static void hostport(char *out, size_t len, const char *host, uint16_t port)
{
	snprintf(out, len, strchr(host, ':') ? "[%s]:%u" : "%s:%u", host, port);
}

/* ---- building and sending responses ---- */

static void add_warning(struct proxy *px, struct sip_msg *resp, const char *text)
{
	char clean[300];
	size_t n = 0;
	/* The Warning text is a quoted string: keep it one. */
	for (const char *p = text; *p && n < sizeof(clean) - 1; p++)
		clean[n++] = (*p == '"' || *p == '\\' || *p == '\r' || *p == '\n') ? '\'' : *p;
	clean[n] = '\0';
	sip_msg_appendf(resp, SIP_HDR_WARNING, NULL, "399 %s \"%s\"", px->cfg->pool_fqdn, clean);
}

/* A response to req with our To tag, Server and an optional Warning; NULL on NOMEM. */
static struct sip_msg *make_response(struct proxy *px, const struct sip_msg *req,
                                     unsigned status, const char *reason, const char *warning)
{
	char tag[17];
	uint64_t h = htab_hash(HTAB_SEED, req->call_id.s, req->call_id.len);
	h = htab_hash(h, req->from_tag.s, req->from_tag.len);
	h = htab_hash(h, &req->cseq, sizeof(req->cseq));
	snprintf(tag, sizeof(tag), "%016llx", (unsigned long long)h);
	struct sip_msg *resp = sip_msg_response(req, status, reason, tag);
	if (!resp)
		return NULL;
	sip_msg_append(resp, SIP_HDR_SERVER, NULL, SERVER_HEADER, strlen(SERVER_HEADER));
	if (warning)
		add_warning(px, resp, warning);
	return resp;
}

/* Sends a response outside any transaction (400, 513, 200 to CANCEL). */
static void send_stateless(struct proxy *px, struct conn *c, const struct sip_msg *req,
                           unsigned status, const char *reason, const char *warning)
{
	struct sip_msg *resp = make_response(px, req, status, reason, warning);
	if (resp) {
		conn_send_msg(c, resp);
		sip_msg_free(resp);
	}
}

static void ptx_srv_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void ptx_cli_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);

static void ptx_free(struct ptx *t)
{
	struct proxy *px = t->px;
	ev_timer_stop(px->loop, &t->srv_timer);
	ev_timer_stop(px->loop, &t->cli_timer);
	sip_txn_del(&px->server_txns, &t->srv_link);
	sip_txn_del(&px->client_txns, &t->cli_link);
	list_del(&t->out_link);
	rt_cancel(t->routing);
	xmpp_gw_cancel(t->gw_pending);
	dlg_cancel(t->confirm);
	sip_msg_free(t->held);
	rt_decision_clear(&t->route);
	sip_msg_free(t->req);
	sip_msg_free(t->fwd);
	free(t->last_resp);
	if (t->srv == SRV_PROCEEDING)
		px->unanswered--;
	free(t);
	px->stats.transactions--;
}

/* Frees the transaction once both halves are over. Returns 1 when freed. */
static int ptx_settle(struct ptx *t)
{
	if (t->srv == SRV_DONE && (t->cli == CLI_NONE || t->cli == CLI_DONE)) {
		ptx_free(t);
		return 1;
	}
	return 0;
}

static void ptx_srv_done(struct ptx *t)
{
	t->srv = SRV_DONE;
	ev_timer_stop(t->px->loop, &t->srv_timer);
	/* A request with this key is a new transaction from now on. */
	sip_txn_del(&t->px->server_txns, &t->srv_link);
}

static void ptx_cli_done(struct ptx *t)
{
	t->cli = CLI_DONE;
	ev_timer_stop(t->px->loop, &t->cli_timer);
	sip_txn_del(&t->px->client_txns, &t->cli_link);
	list_del(&t->out_link);
}

static void ptx_srv_timer(struct ptx *t, ev_tstamp after)
{
	ev_timer_stop(t->px->loop, &t->srv_timer);
	ev_timer_set(&t->srv_timer, after, 0);
	ev_timer_start(t->px->loop, &t->srv_timer);
}

static void ptx_cli_timer(struct ptx *t, ev_tstamp after)
{
	ev_timer_stop(t->px->loop, &t->cli_timer);
	ev_timer_set(&t->cli_timer, after, 0);
	ev_timer_start(t->px->loop, &t->cli_timer);
}

/*
 * Sends a response upstream through the server transaction and moves it on
 * (17.2.1, 17.2.2, RFC 6026). Does not free the transaction.
 */
static void ptx_respond(struct ptx *t, const struct sip_msg *resp)
{
	struct proxy *px = t->px;
	if (t->srv == SRV_DONE || (t->srv != SRV_PROCEEDING &&
	    !(t->srv == SRV_ACCEPTED && resp->status / 100 == 2)))
		return;
	if (t->origin) {
		/* The edge's own request: nobody upstream, the final answer goes to its maker. */
		if (resp->status >= 200) {
			px->unanswered--;
			ptx_srv_done(t);
			t->origin(t->origin_arg, resp->status, t->own_error ? NULL : resp);
		}
		return;
	}
	size_t size = sip_msg_size(resp);
	char *wire = malloc(size);
	if (!wire)
		return;
	sip_msg_write(resp, wire);
	struct conn *c = conn_find(px->conns, t->in_conn);
	if (c)
		conn_send(c, wire, size);
	else
		log_debug("call-id=%.*s: the connection of the request is gone, response %u dropped",
		          SPAN(t->req->call_id), resp->status);
	free(t->last_resp);
	t->last_resp = wire;
	t->last_resp_len = size;

	if (resp->status < 200)
		return;
	if (t->srv == SRV_PROCEEDING)
		px->unanswered--; /* the first final response: the state leaves PROCEEDING below */
	int invite = t->req->method == SIP_INVITE;
	if (invite && resp->status < 300) {
		t->srv = SRV_ACCEPTED;
		ptx_srv_timer(t, TIMER_64T1);
	} else if (invite) {
		t->srv = SRV_COMPLETED;
		ptx_srv_timer(t, TIMER_64T1);
	} else {
		ptx_srv_done(t);
	}
}

/*
 * Answers the request of t with a final (or 100) response of the edge's
 * own, with Retry-After when retry_after is not 0.
 */
static void ptx_reply_after(struct ptx *t, unsigned status, const char *warning,
                            unsigned retry_after)
{
	struct sip_msg *resp = make_response(t->px, t->req, status, NULL, warning);
	if (!resp)
		return;
	if (retry_after)
		sip_msg_appendf(resp, SIP_HDR_RETRY_AFTER, NULL, "%u", retry_after);
	if (status >= 300)
		t->px->stats.rejected++;
	t->own_error = 1;
	ptx_respond(t, resp);
	t->own_error = 0;
	sip_msg_free(resp);
}

static void ptx_reply(struct ptx *t, unsigned status, const char *warning)
{
	ptx_reply_after(t, status, warning, 0);
}

/* ---- requests the edge sends on its own: CANCEL and ACK for non-2xx ---- */

struct text {
	char *buf;
	size_t cap, len;
	int truncated;
};

__attribute__((format(printf, 2, 3)))
static void text_add(struct text *t, const char *fmt, ...)
{
	if (t->truncated)
		return;
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(t->buf + t->len, t->cap - t->len, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= t->cap - t->len)
		t->truncated = 1;
	else
		t->len += (size_t)n;
}

/*
 * Builds a CANCEL (9.1) or an ACK for a non-2xx (17.1.1.3) of the forwarded
 * request: same Request-URI, Call-ID, From, CSeq number and Route, our Via
 * alone, and To from the response for an ACK. Sends it on the connection
 * the request went out on.
 */
static void send_hop_request(struct ptx *t, enum sip_method method, const struct sip_msg *resp)
{
	const struct sip_msg *f = t->fwd;
	struct conn *c = conn_find(t->px->conns, t->out_conn);
	if (!c || !f)
		return;
	struct text txt = { .cap = 512 + f->ruri.len };
	for (unsigned i = 0; i < f->nhdrs; i++)
		txt.cap += f->hdrs[i].name.len + f->hdrs[i].value.len + 4;
	for (unsigned i = 0; resp && i < resp->nhdrs; i++)
		txt.cap += resp->hdrs[i].value.len + 8;
	txt.buf = malloc(txt.cap);
	if (!txt.buf)
		return;
	const char *name = sip_method_name(method);
	text_add(&txt, "%s %.*s SIP/2.0\r\n", name, SPAN(f->ruri));
	text_add(&txt, "Via: %.*s\r\n", SPAN(f->hdrs[sip_msg_find(f, SIP_HDR_VIA, 0)].value));
	for (unsigned i = 0; i < f->nhdrs; i++) {
		const struct sip_hdr *h = &f->hdrs[i];
		if (h->id == SIP_HDR_ROUTE || h->id == SIP_HDR_FROM || h->id == SIP_HDR_CALL_ID ||
		    (h->id == SIP_HDR_TO && !resp))
			text_add(&txt, "%.*s: %.*s\r\n", SPAN(h->name), SPAN(h->value));
	}
	int to = resp ? sip_msg_find(resp, SIP_HDR_TO, 0) : -1;
	if (to >= 0)
		text_add(&txt, "To: %.*s\r\n", SPAN(resp->hdrs[to].value));
	text_add(&txt, "CSeq: %u %s\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
	         f->cseq, name);
	if (!txt.truncated)
		conn_send(c, txt.buf, txt.len);
	free(txt.buf);
}

/* ---- connections ---- */

static struct link_state *link_state_of(struct conn *c)
{
	struct link_state *ls = conn_user(c);
	if (!ls) {
		ls = calloc(1, sizeof(*ls));
		if (!ls)
			return NULL;
		list_init(&ls->pending);
		ls->was_up = conn_is_up(c);
		conn_set_user(c, ls);
	}
	return ls;
}

/*
 * The peer for a log line: "ip:port", and the balancer that relayed it
 * when a PROXY header named the peer (an operator looks for both).
 */
static const char *peer_label(const struct conn *c, char *buf, size_t len)
{
	const char *via = conn_via(c);
	if (!via)
		return conn_peer_str(c);
	snprintf(buf, len, "%s via balancer %s", conn_peer_str(c), via);
	return buf;
}

static void on_up(void *ctx, struct conn *c)
{
	const char *name = conn_dest_name(c);
	struct link_state *ls = conn_user(c);
	char peer[128];
	if (ls)
		ls->was_up = 1;
	if (conn_is_tls(c) && !conn_is_outbound(c)) {
		unsigned n;
		const char *const *names = conn_peer_names(c, &n);
		log_info("TLS connection from %s accepted, certificate names %s%s",
		         peer_label(c, peer, sizeof(peer)), n ? names[0] : "(none)", n > 1 ? ", ..." : "");
	} else if (name) {
		log_info("%s connection to %s (%s) established", conn_transport(c), name,
		         conn_peer_str(c));
	}
}

static void ptx_send(struct ptx *t, const char *last_error);

static void on_down(void *ctx, struct conn *c, int failed, const char *why)
{
	struct proxy *px = ctx;
	const char *name = conn_dest_name(c);
	char peer[128];
	if (failed)
		log_warning("%s connection %s %s%s%s (%s side) failed: %s", conn_transport(c),
		            conn_is_outbound(c) ? "to" : "from", peer_label(c, peer, sizeof(peer)),
		            name ? " " : "", name ? name : "",
		            conn_side(c) == CONN_EXTERNAL ? "external" : "internal", why);
	else
		log_debug("%s connection %s %s closed: %s", conn_transport(c),
		          conn_is_outbound(c) ? "to" : "from", peer_label(c, peer, sizeof(peer)), why);

	if (failed)
		px->stats.connection_failures++;
	struct link_state *ls = conn_user(c);
	if (!ls)
		return;
	/* Transactions waiting on this connection will get no response: a
	 * connection that never came up sent nothing, so the next target may
	 * take the request; else the transaction fails. */
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &ls->pending) {
		struct ptx *t = list_entry(n, struct ptx, out_link);
		char warning[300];
		snprintf(warning, sizeof(warning), "cannot reach %s: %s", t->dest_name, why);
		ptx_cli_done(t);
		if (t->srv == SRV_PROCEEDING && failed && !ls->was_up &&
		    t->target + 1 < t->route.ntargets) {
			log_info("call-id=%.*s: %s, trying the next target", SPAN(t->req->call_id), warning);
			t->target++;
			ptx_send(t, warning);
			continue;
		}
		if (t->srv == SRV_PROCEEDING)
			ptx_reply(t, 504, warning);
		ptx_settle(t);
	}
	conn_set_user(c, NULL);
	free(ls);
}

/* ---- requests ---- */

/*
 * 18.2.1: records where the request really came from in its top Via, so
 * that responses find their way back.
 */
static void via_set_received(struct sip_msg *m, struct conn *c)
{
	int i = sip_msg_find(m, SIP_HDR_VIA, 0);
	struct sip_via via;
	if (i < 0 || sip_via_parse(m->hdrs[i].value, &via) < 0)
		return;
	int need_received = !sip_str_eq(via.host, conn_peer_ip(c));
	if (!need_received && !via.has_rport)
		return;
	/* Rebuild: sent-protocol and sent-by, then parameters without the old ones. */
	char buf[1024];
	size_t prefix = via.params.len ? (size_t)(via.params.s - m->hdrs[i].value.s)
	                               : m->hdrs[i].value.len;
	if (prefix >= sizeof(buf) / 2)
		return;
	size_t n = (size_t)snprintf(buf, sizeof(buf), "%.*s", (int)prefix, m->hdrs[i].value.s);
	const char *p = via.params.s, *end = via.params.s + via.params.len;
	while (p && p < end && n < sizeof(buf)) {
		const char *q = p + 1;
		while (q < end && *q != ';')
			q++;
		struct sip_str param = { p + 1, (size_t)(q - p - 1) };
		while (param.len && (*param.s == ' ' || *param.s == '\t')) {
			param.s++;
			param.len--;
		}
		int is_rport = param.len >= 5 && strncasecmp(param.s, "rport", 5) == 0 &&
		               (param.len == 5 || param.s[5] == '=' || param.s[5] == ' ');
		int is_received = param.len >= 8 && strncasecmp(param.s, "received", 8) == 0;
		if (!is_rport && !is_received)
			n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%.*s", (int)(q - p), p);
		p = q;
	}
	if (need_received && n < sizeof(buf))
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ";received=%s", conn_peer_ip(c));
	if (via.has_rport && n < sizeof(buf))
		n += (size_t)snprintf(buf + n, sizeof(buf) - n, ";rport=%u", conn_peer_port(c));
	if (n < sizeof(buf))
		sip_msg_set_value(m, (unsigned)i, buf, n);
}

/* 16.3 item 4: one of our Vias with this request's loop hash means a loop. */
static int is_looping(const struct proxy *px, const struct sip_msg *m)
{
	uint64_t loop = sip_txn_loop_hash(m);
	for (int i = sip_msg_find(m, SIP_HDR_VIA, 0); i >= 0; i = sip_msg_find(m, SIP_HDR_VIA, i + 1)) {
		struct sip_via via;
		if (sip_via_parse(m->hdrs[i].value, &via) == 0 &&
		    is_local(px, via.host, via.port) && sip_txn_branch_has_loop(via.branch, loop))
			return 1;
	}
	return 0;
}

/* The URI inside a Route value, parsed; -1 when it is not a SIP URI. */
static int route_uri(const struct sip_msg *m, int idx, struct sip_uri *uri)
{
	struct sip_nameaddr na;
	if (sip_nameaddr_parse(m->hdrs[idx].value, &na) < 0)
		return -1;
	return sip_uri_parse(na.uri, uri);
}

/*
 * 16.4: undoes a strict router's rewrite (our Record-Route in the
 * Request-URI) and removes the Route entries that name us. Fills the target
 * of the request in rq. Returns 0, or -1 when the Request-URI is unusable.
 */
static int preprocess_route(struct proxy *px, struct sip_msg *m, struct rt_request *rq,
                            int *to_self)
{
	struct sip_uri ruri;
	if (sip_uri_parse(m->ruri, &ruri) < 0)
		return -1;
	int last = -1;
	for (int i = sip_msg_find(m, SIP_HDR_ROUTE, 0); i >= 0; i = sip_msg_find(m, SIP_HDR_ROUTE, i + 1))
		last = i;
	if (is_local(px, ruri.host, ruri.port) && last >= 0) {
		struct sip_nameaddr na;
		if (sip_nameaddr_parse(m->hdrs[last].value, &na) == 0 &&
		    sip_msg_set_ruri(m, na.uri.s, na.uri.len) == 0)
			sip_msg_remove(m, (unsigned)last);
		if (sip_uri_parse(m->ruri, &ruri) < 0)
			return -1;
	}
	int i;
	struct sip_uri ru;
	while ((i = sip_msg_find(m, SIP_HDR_ROUTE, 0)) >= 0 && route_uri(m, i, &ru) == 0 &&
	       is_local(px, ru.host, ru.port))
		sip_msg_remove(m, (unsigned)i);

	i = sip_msg_find(m, SIP_HDR_ROUTE, 0);
	if (i >= 0 && route_uri(m, i, &ru) == 0) {
		rq->target_host = ru.host;
		rq->target_from_route = 1;
	} else {
		rq->target_host = ruri.host;
		rq->target_from_route = 0;
	}
	*to_self = i < 0 && is_local(px, ruri.host, ruri.port);
	return 0;
}

static int creates_dialog(const struct sip_msg *m)
{
	return m->to_tag.len == 0 && (m->method == SIP_INVITE || m->method == SIP_SUBSCRIBE ||
	                              m->method == SIP_REFER || m->method == SIP_NOTIFY);
}

/* ---- dialogs in the pool's store (dlg.h) ---- */

/* A call is remembered this long (no session timer here), a request's dialog until its answer. */
#define CALL_TTL_MS (12ull * 3600 * 1000)
#define PENDING_TTL_MS (5ull * 60 * 1000)
#define SUBSCRIPTION_GRACE_MS 60000ull
#define SUBSCRIPTION_DEFAULT_S 3600u

static struct sip_str header_host(const struct sip_msg *m, enum sip_hdr_id id)
{
	struct sip_str host = { 0 };
	int i = sip_msg_find(m, id, 0);
	if (i >= 0)
		sip_uri_host_of(m->hdrs[i].value, &host);
	return host;
}

/*
 * The dialog of t's request, as the answer resp shows it: the internal
 * party's tag (its From tag when it sent the request, else the answer's To
 * tag) and the partner's domain.
 */
static void dialog_of(const struct ptx *t, const struct sip_msg *resp, struct sip_str *tag,
                      struct sip_str *partner)
{
	if (t->in_side == CONN_INTERNAL) {
		*tag = t->req->from_tag;
		*partner = header_host(t->req, SIP_HDR_TO);
	} else {
		*tag = resp ? resp->to_tag : t->req->to_tag;
		*partner = header_host(t->req, SIP_HDR_FROM);
	}
}

/* The pool holds the dialog of a held 2xx (status 0), or not in time: relay it now. */
static void dialog_confirmed(void *arg, int status)
{
	struct ptx *t = arg;
	struct sip_msg *resp = t->held;
	t->confirm = NULL;
	t->held = NULL;
	if (status < 0)
		log_warning("call-id=%.*s: no other node confirmed the dialog in time; relaying its 2xx",
		            SPAN(t->req->call_id));
	ptx_respond(t, resp);
	t->px->stats.responses_forwarded++;
	sip_msg_free(resp);
	ptx_settle(t);
}

/*
 * A 2xx to t's request: a dialog begins, is refreshed, or ends. With
 * synchronous replication, a dialog that begins is confirmed by the pool
 * first: returns 1 when it took over resp to relay it then.
 */
static int dialog_answered(struct proxy *px, struct ptx *t, struct sip_msg *resp)
{
	struct sip_str tag, partner;
	const struct sip_msg *req = t->req;
	uint64_t ttl;
	dialog_of(t, resp, &tag, &partner);
	switch (req->method) {
	case SIP_INVITE:
		ttl = CALL_TTL_MS;
		break;
	case SIP_SUBSCRIBE:
	case SIP_REFER:
		ttl = sip_msg_expires(resp, sip_msg_expires(req, SUBSCRIPTION_DEFAULT_S)) * 1000ull;
		if (ttl == 0) {
			dlg_end(px->dialogs, req->call_id, tag);
			return 0;
		}
		ttl += SUBSCRIPTION_GRACE_MS;
		break;
	case SIP_BYE:
		dlg_end(px->dialogs, req->call_id, tag);
		return 0;
	default:
		return 0;
	}
	if (px->cfg->cluster && px->cfg->sync_dialogs && creates_dialog(req)) {
		t->confirm = dlg_note_confirmed(px->dialogs, req->call_id, tag, partner, ttl,
		                                px->cfg->replication_timeout_ms / 1000.0, dialog_confirmed, t);
		if (t->confirm) {
			t->held = resp;
			return 1;
		}
	} else if (dlg_note(px->dialogs, req->call_id, tag, partner, ttl) < 0) {
		log_warning("call-id=%.*s: the dialog could not be stored (store full)",
		            SPAN(req->call_id));
	}
	return 0;
}

static void record_route_value(const struct proxy *px, enum conn_side side, char *out, size_t len)
{
	const struct cfgu_listen *l = side_listener(px, side);
	char hp[300];
	if (side == CONN_EXTERNAL)
		hostport(hp, sizeof(hp), px->cfg->pool_fqdn, l->port);
	else if (px->cfg->internal_pool_fqdn)
		hostport(hp, sizeof(hp), px->cfg->internal_pool_fqdn, l->port);
	else
		hostport(hp, sizeof(hp), l->address, l->port);
	snprintf(out, len, "<sip:%s;transport=%s;lr>", hp, l->tls ? "tls" : "tcp");
}

/*
 * 16.6: turns the received request into the one to forward, in place:
 * Max-Forwards, Record-Route (the entry facing the destination on top),
 * our Via, Content-Length. Returns 0 or -1 when out of memory.
 */
static int prepare_forward(struct proxy *px, struct sip_msg *m, const struct conn_dest *dest,
                           const char *branch)
{
	if (sip_msg_set_max_forwards(m, m->max_forwards < 0 ? 70 : m->max_forwards - 1) < 0)
		return -1;
	if (creates_dialog(m)) {
		/* Above the Record-Routes already there, else right below the Vias. */
		int pos = sip_msg_find(m, SIP_HDR_RECORD_ROUTE, 0);
		if (pos < 0) {
			pos = sip_msg_find(m, SIP_HDR_VIA, 0);
			if (pos < 0)
				pos = 0;
			while ((unsigned)pos < m->nhdrs && m->hdrs[pos].id == SIP_HDR_VIA)
				pos++;
		}
		char rr[400];
		enum conn_side from = dest->side == CONN_EXTERNAL ? CONN_INTERNAL : CONN_EXTERNAL;
		record_route_value(px, from, rr, sizeof(rr));
		if (sip_msg_insert(m, (unsigned)pos, SIP_HDR_RECORD_ROUTE, NULL, rr, strlen(rr)) < 0)
			return -1;
		record_route_value(px, dest->side, rr, sizeof(rr));
		if (sip_msg_insert(m, (unsigned)pos, SIP_HDR_RECORD_ROUTE, NULL, rr, strlen(rr)) < 0)
			return -1;
	}
	const struct cfgu_listen *l = side_listener(px, dest->side);
	char hp[300];
	hostport(hp, sizeof(hp), l->address, l->port);
	char via[400];
	int n = snprintf(via, sizeof(via), "SIP/2.0/%s %s;branch=%s", dest->tls ? "TLS" : "TCP",
	                 hp, branch);
	if (sip_msg_insert(m, 0, SIP_HDR_VIA, NULL, via, (size_t)n) < 0)
		return -1;
	if (sip_msg_find(m, SIP_HDR_CONTENT_LENGTH, 0) < 0 &&
	    sip_msg_appendf(m, SIP_HDR_CONTENT_LENGTH, NULL, "%zu", m->body.len) < 0)
		return -1;
	return 0;
}

static void answer_options(struct ptx *t)
{
	/* A draining node says so to whoever checks it: the balancer takes it
	 * out of new traffic at once (balancer/bal_health.h). */
	if (t->px->draining) {
		ptx_reply_after(t, 503, "this node is draining", 0);
		return;
	}
	struct sip_msg *resp = make_response(t->px, t->req, 200, NULL, NULL);
	if (!resp)
		return;
	sip_msg_append(resp, SIP_HDR_ALLOW, NULL, ALLOW_METHODS, strlen(ALLOW_METHODS));
	sip_msg_append(resp, SIP_HDR_OTHER, "Accept", "application/sdp", 15);
	ptx_respond(t, resp);
	sip_msg_free(resp);
}

/*
 * Prepares m for routing (16.4) and asks the router. Returns 0 with *d
 * filled, 1 when the router answers later through done(arg), or 0 with
 * *to_self set when the request is for the edge itself.
 */
static int route_request(struct proxy *px, struct conn *c, struct sip_msg *m,
                         struct rt_decision *d, int *to_self, rt_done_fn done, void *arg,
                         struct rt_pending **pending)
{
	struct rt_request rq = { .msg = m, .from_side = conn_side(c), .peer_str = conn_peer_str(c) };
	rq.peer_names = conn_peer_names(c, &rq.npeer_names);
	memset(d, 0, sizeof(*d));
	*pending = NULL;
	if (preprocess_route(px, m, &rq, to_self) < 0) {
		d->action = RT_REJECT;
		d->status = 416;
		snprintf(d->reason, sizeof(d->reason), "the Request-URI is not a SIP URI");
		return 0;
	}
	if (*to_self)
		return 0;
	return rt_route(px->router, &rq, d, done, arg, pending);
}

static void remove_named(struct sip_msg *m, const char *name)
{
	int i;
	while ((i = sip_msg_find_name(m, name, 0)) >= 0)
		sip_msg_remove(m, (unsigned)i);
}

/*
 * A request or response crossing from side `from` to side `to` loses the
 * headers that only this edge may set on that side (pol.h): a partner's
 * trust header or verifiable mark, once the router has read it; toward a
 * partner, the front ends' trust header and diagnostics, and whatever mark
 * the internal side put on.
 */
static void scrub_headers(struct sip_msg *m, enum conn_side from, enum conn_side to)
{
	if (from == CONN_EXTERNAL) {
		remove_named(m, POL_TRUST_HEADER);
		remove_named(m, POL_VERIFIED_HEADER);
	}
	if (to == CONN_EXTERNAL) {
		remove_named(m, POL_TRUST_HEADER);
		remove_named(m, POL_DIAGNOSTICS_HEADER);
		remove_named(m, POL_VERIFIED_HEADER);
		remove_named(m, POL_ARCHIVING_HEADER);
	}
}

/* The edge's own headers on a request routed with d. Returns -1 when out of memory. */
static int add_edge_headers(struct proxy *px, struct sip_msg *m, const struct rt_decision *d)
{
	const struct cfg_access_edge *e = &px->cfg->edge;
	if (d->trust[0] &&
	    sip_msg_append(m, SIP_HDR_OTHER, POL_TRUST_HEADER, d->trust, strlen(d->trust)) < 0)
		return -1;
	if (d->side != CONN_EXTERNAL)
		return 0;
	const char *mark = e->mark_source_verifiable ? "verified" : "unverified";
	if (sip_msg_append(m, SIP_HDR_OTHER, POL_VERIFIED_HEADER, mark, strlen(mark)) < 0)
		return -1;
	if (e->archiving_disclaimer && (m->method == SIP_MESSAGE || m->method == SIP_INVITE) &&
	    sip_msg_appendf(m, SIP_HDR_OTHER, POL_ARCHIVING_HEADER,
	                    "\"Instant messages with %s may be archived\"", px->cfg->pool_fqdn) < 0)
		return -1;
	return 0;
}

static void stateless_free(struct stateless_fwd *f)
{
	list_del(&f->link);
	rt_cancel(f->routing);
	sip_msg_free(f->msg);
	free(f);
}

/* Sends a stateless request along the first target of its route. */
static void stateless_send(struct proxy *px, struct sip_msg *m, struct rt_decision *d)
{
	char branch[SIP_TXN_BRANCH_LEN + 1], err[200];
	struct conn_dest dest;
	if (d->action != RT_FORWARD || d->ntargets == 0 || m->max_forwards == 0) {
		log_debug("call-id=%.*s: %s not forwarded: %s", SPAN(m->call_id),
		          sip_method_name(m->method), d->reason);
		return;
	}
	rt_decision_dest(d, 0, &dest);
	scrub_headers(m, dest.side == CONN_EXTERNAL ? CONN_INTERNAL : CONN_EXTERNAL, dest.side);
	sip_txn_branch(m, branch);
	if (add_edge_headers(px, m, d) < 0 || prepare_forward(px, m, &dest, branch) < 0) {
		log_debug("call-id=%.*s: %s not forwarded: out of memory", SPAN(m->call_id),
		          sip_method_name(m->method));
		return;
	}
	struct conn *out = conn_pool_get(px->conns, &dest, err, sizeof(err));
	if (!out) {
		log_debug("call-id=%.*s: %s not forwarded: %s", SPAN(m->call_id),
		          sip_method_name(m->method), err);
		return;
	}
	conn_send_msg(out, m);
	px->stats.requests_forwarded++;
}

static void stateless_routed(void *arg, struct rt_decision *d)
{
	struct stateless_fwd *f = arg;
	f->routing = NULL;
	stateless_send(f->px, f->msg, d);
	rt_decision_clear(d);
	stateless_free(f);
}

/*
 * Forwards without a transaction: ACK for a 2xx, a CANCEL we know nothing
 * of. Takes over m.
 */
static void forward_stateless(struct proxy *px, struct conn *c, struct sip_msg *m)
{
	struct rt_decision d;
	int to_self = 0;
	struct stateless_fwd *f = calloc(1, sizeof(*f));
	if (!f) {
		sip_msg_free(m);
		return;
	}
	f->px = px;
	f->msg = m;
	list_add_tail(&px->stateless, &f->link);
	if (route_request(px, c, m, &d, &to_self, stateless_routed, f, &f->routing) == 1)
		return;
	if (!to_self)
		stateless_send(px, m, &d);
	rt_decision_clear(&d);
	stateless_free(f);
}
static struct ptx *find_server(struct proxy *px, const struct sip_msg *m, enum sip_method as)
{
	char key[SIP_TXN_KEY_MAX];
	if (sip_txn_server_key(m, as, key, sizeof(key)) < 0)
		return NULL;
	struct sip_txn_link *l = sip_txn_find(&px->server_txns, key);
	return l ? list_entry(&l->node, struct ptx, srv_link.node) : NULL;
}

static void handle_cancel_of(struct proxy *px, struct conn *c, struct sip_msg *m, struct ptx *t);

/* A CANCEL: answered and passed on, or forwarded as it is. Takes over m. */
static void handle_cancel(struct proxy *px, struct conn *c, struct sip_msg *m)
{
	struct ptx *t = find_server(px, m, SIP_INVITE);
	if (!t) {
		forward_stateless(px, c, m);
		return;
	}
	handle_cancel_of(px, c, m, t);
	sip_msg_free(m);
}

/* 16.10 for a CANCEL whose INVITE transaction t we have. */
static void handle_cancel_of(struct proxy *px, struct conn *c, struct sip_msg *m, struct ptx *t)
{
	/* 16.10: answer the CANCEL, then cancel the pending client transaction. */
	send_stateless(px, c, m, 200, NULL, NULL);
	if (t->srv == SRV_PROCEEDING) {
		if (t->cli == CLI_PROCEEDING)
			send_hop_request(t, SIP_CANCEL, NULL);
		else if (t->cli == CLI_CALLING)
			t->cancel_pending = 1; /* 9.1: not before a provisional response */
		else if (t->cli == CLI_NONE)
			ptx_reply(t, 487, NULL);
	}
}

/*
 * 16.3: Max-Forwards, loops, Proxy-Require. Answers the request and
 * returns 1 when it must not be forwarded; the transaction may be freed.
 */
static int answer_invalid(struct ptx *t)
{
	const struct sip_msg *m = t->req;
	int pr = sip_msg_find(m, SIP_HDR_PROXY_REQUIRE, 0);
	if (m->max_forwards == 0) {
		if (m->method == SIP_OPTIONS)
			answer_options(t);
		else
			ptx_reply(t, 483, "Max-Forwards reached 0");
	} else if (is_looping(t->px, m)) {
		ptx_reply(t, 482, "the request came back to this edge unchanged");
	} else if (pr >= 0) {
		struct sip_msg *resp = make_response(t->px, m, 420, NULL, "no extension is supported");
		if (resp) {
			sip_msg_append(resp, SIP_HDR_UNSUPPORTED, NULL, m->hdrs[pr].value.s,
			               m->hdrs[pr].value.len);
			ptx_respond(t, resp);
			sip_msg_free(resp);
		}
	} else {
		return 0;
	}
	ptx_settle(t);
	return 1;
}

/*
 * Sends t->fwd to target t->target of its route, or on to the following
 * targets while no connection can be had; answers 504 when none is left.
 * The transaction may be freed on return.
 */
static void ptx_send(struct ptx *t, const char *last_error)
{
	struct proxy *px = t->px;
	char err[200], key[SIP_TXN_KEY_MAX];
	snprintf(err, sizeof(err), "%s", last_error ? last_error : "no target");
	for (; t->target < t->route.ntargets; t->target++) {
		struct conn_dest dest;
		rt_decision_dest(&t->route, t->target, &dest);
		struct conn *out = conn_pool_get(px->conns, &dest, err, sizeof(err));
		struct link_state *ls = out ? link_state_of(out) : NULL;
		if (!out) {
			log_info("call-id=%.*s: cannot reach %s: %s", SPAN(t->req->call_id), dest.name, err);
			continue;
		}
		if (!ls || sip_txn_client_key_of(t->branch, t->fwd, key, sizeof(key)) < 0 ||
		    sip_txn_add(&px->client_txns, &t->cli_link, key) < 0) {
			snprintf(err, sizeof(err), "out of memory");
			break;
		}
		t->dest_name = t->route.targets[t->target].name;
		t->out_conn = conn_id(out);
		t->cli = CLI_CALLING;
		list_add_tail(&ls->pending, &t->out_link);
		ptx_cli_timer(t, TIMER_64T1);
		log_debug("route %s call-id=%.*s (%s side) to %s (%s)", sip_method_name(t->req->method),
		          SPAN(t->req->call_id), t->in_side == CONN_EXTERNAL ? "external" : "internal",
		          dest.name, conn_peer_str(out));
		if (!last_error)
			px->stats.requests_forwarded++; /* once per request, not per target tried */
		conn_send_msg(out, t->fwd); /* may fail, and free, t through on_down */
		return;
	}
	char warning[600];
	snprintf(warning, sizeof(warning), "cannot reach %s: %s",
	         t->route.ntargets ? t->route.targets[t->route.ntargets - 1].name : "the target", err);
	ptx_reply(t, 504, warning);
	ptx_settle(t);
}

/*
 * Targets whose last connection failed before it came up go after the
 * others, in their order: a black-holed first SRV target costs one
 * connect timeout, not one per request.
 */
static void put_down_targets_last(struct proxy *px, struct rt_decision *d)
{
	struct rt_target up[RT_MAX_TARGETS], down[RT_MAX_TARGETS];
	unsigned nup = 0, ndown = 0;
	if (d->ntargets < 2 || d->ntargets > RT_MAX_TARGETS)
		return;
	for (unsigned i = 0; i < d->ntargets; i++) {
		struct conn_dest dest;
		rt_decision_dest(d, i, &dest);
		if (conn_dest_down(px->conns, &dest))
			down[ndown++] = d->targets[i];
		else
			up[nup++] = d->targets[i];
	}
	if (ndown == 0 || nup == 0)
		return;
	memcpy(d->targets, up, nup * sizeof(*up));
	memcpy(d->targets + nup, down, ndown * sizeof(*down));
}

/* Continues forward() once the router has decided; takes over d. */
static void ptx_routed(struct ptx *t, struct rt_decision *d)
{
	struct proxy *px = t->px;
	t->route = *d;
	memset(d, 0, sizeof(*d));
	if (t->route.action == RT_REJECT) {
		log_msg(t->route.quiet ? LOG_LVL_DEBUG : LOG_LVL_INFO,
		        "rejected %s call-id=%.*s (%s side): %u %s", sip_method_name(t->req->method),
		        SPAN(t->req->call_id), t->in_side == CONN_EXTERNAL ? "external" : "internal",
		        t->route.status, t->route.reason);
		ptx_reply_after(t, t->route.status, t->route.reason, t->route.retry_after);
		ptx_settle(t);
		return;
	}
	struct conn_dest dest;
	put_down_targets_last(px, &t->route);
	rt_decision_dest(&t->route, 0, &dest);
	scrub_headers(t->fwd, t->in_side, dest.side);
	if (add_edge_headers(px, t->fwd, &t->route) < 0 ||
	    prepare_forward(px, t->fwd, &dest, t->branch) < 0) {
		ptx_reply(t, 500, "out of memory");
		ptx_settle(t);
		return;
	}
	/* A dialog our user starts: its partner's answers and requests may come before our 2xx. */
	if (t->in_side == CONN_INTERNAL && dest.side == CONN_EXTERNAL && creates_dialog(t->req)) {
		struct sip_str tag, partner;
		dialog_of(t, NULL, &tag, &partner);
		dlg_note(px->dialogs, t->req->call_id, tag, partner, PENDING_TTL_MS);
	}
	t->target = 0;
	ptx_send(t, NULL);
}

static void ptx_route_done(void *arg, struct rt_decision *d)
{
	struct ptx *t = arg;
	t->routing = NULL;
	ptx_routed(t, d);
}

/* Answers t as the XMPP gateway says, and settles it. */
static void gw_answer(struct ptx *t, const struct xmpp_gw_answer *a)
{
	struct proxy *px = t->px;
	if (a->status >= 300)
		log_info("rejected %s call-id=%.*s to XMPP: %u %s", sip_method_name(t->req->method),
		         SPAN(t->req->call_id), a->status, a->warning ? a->warning : "");
	/* The gateway's tag for a dialog it begins, else ours as for any answer of the edge. */
	const char *warning = a->status >= 300 ? a->warning : NULL;
	struct sip_msg *resp = a->to_tag ? sip_msg_response(t->req, a->status, NULL, a->to_tag)
	                                 : make_response(px, t->req, a->status, NULL, warning);
	if (resp) {
		if (a->to_tag) {
			sip_msg_append(resp, SIP_HDR_SERVER, NULL, SERVER_HEADER, strlen(SERVER_HEADER));
			if (warning)
				add_warning(px, resp, warning);
		}
		if (a->contact)
			sip_msg_append(resp, SIP_HDR_CONTACT, NULL, a->contact, strlen(a->contact));
		if (a->expires >= 0)
			sip_msg_appendf(resp, SIP_HDR_OTHER, "Expires", "%d", a->expires);
		if (a->status >= 300)
			px->stats.rejected++;
		ptx_respond(t, resp);
		sip_msg_free(resp);
	}
	ptx_settle(t);
}

/* The XMPP gateway's answer to a request it took. */
static void gw_answered(void *arg, const struct xmpp_gw_answer *a)
{
	struct ptx *t = arg;
	t->gw_pending = NULL;
	gw_answer(t, a);
}

int proxy_originate(struct proxy *px, struct sip_msg *req, const char *trust,
                    proxy_origin_fn done, void *arg)
{
	struct ptx *t = calloc(1, sizeof(*t));
	int via = sip_msg_find(req, SIP_HDR_VIA, 0);
	if (!t || via < 0) {
		free(t);
		sip_msg_free(req);
		return -1;
	}
	sip_txn_branch(req, t->branch);
	sip_msg_remove(req, (unsigned)via);
	px->stats.transactions++;
	px->unanswered++;
	t->px = px;
	t->req = req;
	t->in_side = CONN_EXTERNAL; /* it stands for a partner's request */
	t->origin = done;
	t->origin_arg = arg;
	ev_init(&t->srv_timer, ptx_srv_timer_cb);
	t->srv_timer.data = t;
	ev_init(&t->cli_timer, ptx_cli_timer_cb);
	t->cli_timer.data = t;
	t->fwd = sip_msg_clone(req);
	if (!t->fwd) {
		t->origin = NULL;
		px->unanswered--;
		ptx_srv_done(t);
		ptx_settle(t);
		return -1;
	}
	struct rt_decision d;
	rt_next_hop(px->router, &d);
	if (trust)
		snprintf(d.trust, sizeof(d.trust), "%s", trust);
	ptx_routed(t, &d);
	return 0;
}

/*
 * 16.4 to 16.6: routes the request and sends it on, as the client half of
 * t, or answers why not. The transaction may be freed on return, or wait
 * for the router (DNS).
 */
static void forward(struct ptx *t, struct conn *c)
{
	struct proxy *px = t->px;
	const struct sip_msg *m = t->req;
	/* In a dialog, a partner may only send in one that crossed the pool, and is its own. */
	if (conn_side(c) == CONN_EXTERNAL && m->to_tag.len) {
		enum dlg_verdict v = dlg_check(px->dialogs, m->call_id, m->to_tag,
		                               header_host(m, SIP_HDR_FROM));
		if (v != DLG_KNOWN) {
			log_info("rejected %s call-id=%.*s from %s: %s", sip_method_name(m->method),
			         SPAN(m->call_id), conn_peer_str(c), v == DLG_UNKNOWN ? "no such dialog"
			         : "the dialog is another partner's");
			ptx_reply(t, 481, v == DLG_UNKNOWN ? "no such dialog crosses this pool"
			                                   : "the dialog is another partner's");
			ptx_settle(t);
			return;
		}
	}
	if (px->gw && conn_side(c) == CONN_INTERNAL) {
		struct xmpp_gw_answer now;
		switch (xmpp_gw_sip_request(px->gw, m, gw_answered, t, &t->gw_pending, &now)) {
		case XMPP_GW_PENDING:
			return;
		case XMPP_GW_ANSWERED:
			gw_answer(t, &now);
			return;
		case XMPP_GW_NOT_MINE:
			break;
		}
	}
	if (px->draining && creates_dialog(m)) {
		ptx_reply_after(t, 503, "this node is draining: another node of the pool takes new "
		                "dialogs", 0);
		ptx_settle(t);
		return;
	}
	t->fwd = sip_msg_clone(m);
	if (!t->fwd) {
		ptx_reply(t, 500, "out of memory");
		ptx_settle(t);
		return;
	}
	struct rt_decision d;
	int to_self = 0;
	if (route_request(px, c, t->fwd, &d, &to_self, ptx_route_done, t, &t->routing) == 1)
		return;
	if (to_self) {
		if (m->method == SIP_OPTIONS) {
			answer_options(t);
		} else {
			/* 21.4.6: a 405 lists what is allowed. */
			struct sip_msg *resp = make_response(px, m, 405, NULL,
			                                     "only OPTIONS may be addressed to the edge itself");
			if (resp) {
				sip_msg_append(resp, SIP_HDR_ALLOW, NULL, "OPTIONS", 7);
				px->stats.rejected++;
				ptx_respond(t, resp);
				sip_msg_free(resp);
			}
		}
		ptx_settle(t);
		return;
	}
	ptx_routed(t, &d);
}

static void handle_request(struct proxy *px, struct conn *c, struct sip_msg *m)
{
	px->stats.requests_in++;
	via_set_received(m, c);

	if (m->method == SIP_ACK) {
		struct ptx *t = find_server(px, m, SIP_INVITE);
		if (t && t->srv == SRV_COMPLETED) {
			/* The ACK for our non-2xx: Timer I is 0 on reliable transports. */
			ptx_srv_done(t);
			ptx_settle(t);
			sip_msg_free(m);
		} else {
			forward_stateless(px, c, m);
		}
		return;
	}
	if (m->method == SIP_CANCEL) {
		handle_cancel(px, c, m);
		return;
	}
	char key[SIP_TXN_KEY_MAX];
	if (sip_txn_server_key(m, SIP_METHOD_UNKNOWN, key, sizeof(key)) < 0) {
		px->stats.malformed++;
		send_stateless(px, c, m, 400, NULL, "the top Via is too long to name a transaction");
		sip_msg_free(m);
		return;
	}
	struct sip_txn_link *known = sip_txn_find(&px->server_txns, key);
	if (known) {
		/* A retransmission: the last response answers it again. */
		struct ptx *old = list_entry(&known->node, struct ptx, srv_link.node);
		if (old->last_resp)
			conn_send(c, old->last_resp, old->last_resp_len);
		sip_msg_free(m);
		return;
	}
	struct ptx *t = calloc(1, sizeof(*t));
	if (!t || sip_txn_add(&px->server_txns, &t->srv_link, key) < 0) {
		send_stateless(px, c, m, 500, NULL, "out of memory");
		free(t);
		sip_msg_free(m);
		return;
	}
	px->stats.transactions++;
	px->unanswered++;
	t->px = px;
	t->req = m;
	t->in_conn = conn_id(c);
	t->in_side = conn_side(c);
	ev_init(&t->srv_timer, ptx_srv_timer_cb);
	t->srv_timer.data = t;
	ev_init(&t->cli_timer, ptx_cli_timer_cb);
	t->cli_timer.data = t;
	sip_txn_branch(m, t->branch);

	if (m->method == SIP_INVITE)
		ptx_reply(t, 100, NULL);
	if (!answer_invalid(t))
		forward(t, c);
}

/* ---- responses ---- */

/* A final response to a discovered partner counts toward its suspicion (thr.h). */
static void note_discovered_response(struct proxy *px, struct ptx *t, unsigned status)
{
	struct sip_uri from;
	struct sip_nameaddr na;
	char domain[256];
	int i = sip_msg_find(t->req, SIP_HDR_FROM, 0);
	if (i < 0 || sip_nameaddr_parse(t->req->hdrs[i].value, &na) < 0 ||
	    sip_uri_parse(na.uri, &from) < 0 || from.host.len >= sizeof(domain))
		return;
	memcpy(domain, from.host.s, from.host.len);
	domain[from.host.len] = '\0';
	if (thr_response(px->thr, domain, status, ev_now(px->loop)))
		log_notice("discovered partner %s is suspicious: most of its requests fail; "
		           "held to 1 request per second for the rest of the report period", domain);
}

static void handle_response(struct proxy *px, struct conn *c, struct sip_msg *m)
{
	char key[SIP_TXN_KEY_MAX];
	struct sip_txn_link *l = NULL;
	if (sip_txn_client_key(m, key, sizeof(key)) >= 0)
		l = sip_txn_find(&px->client_txns, key);
	if (!l) {
		/* A 2xx retransmitted after Timer M, or a response to our CANCEL/ACK. */
		log_debug("call-id=%.*s: response %u matches no transaction, dropped",
		          SPAN(m->call_id), m->status);
		sip_msg_free(m);
		return;
	}
	struct ptx *t = list_entry(&l->node, struct ptx, cli_link.node);
	int invite = t->req->method == SIP_INVITE;
	scrub_headers(m, conn_side(c), t->in_side);
	if (t->route.discovered && m->status >= 200)
		note_discovered_response(px, t, m->status);
	/* 16.7 item 3: our Via goes. */
	sip_msg_remove(m, (unsigned)sip_msg_find(m, SIP_HDR_VIA, 0));

	if (m->status < 200) {
		if (t->cli == CLI_CALLING || t->cli == CLI_PROCEEDING) {
			t->cli = CLI_PROCEEDING;
			if (invite)
				ptx_cli_timer(t, TIMER_C);
		}
		if (t->cancel_pending) {
			t->cancel_pending = 0;
			send_hop_request(t, SIP_CANCEL, NULL);
		}
		if (m->status > 100) /* 16.7 item 3: 100 is not forwarded */
			ptx_respond(t, m);
		sip_msg_free(m);
		return;
	}
	if (m->status < 300) {
		if (t->held) {
			/* A retransmission while the first waits for the pool: that one goes. */
			sip_msg_free(m);
			return;
		}
		int held = t->in_side != conn_side(c) && dialog_answered(px, t, m);
		if (invite) {
			if (t->cli != CLI_ACCEPTED) {
				t->cli = CLI_ACCEPTED;
				ptx_cli_timer(t, TIMER_64T1);
				list_del(&t->out_link);
			}
		} else {
			ptx_cli_done(t);
		}
		if (held)
			return; /* dialog_confirmed() relays it */
		ptx_respond(t, m);
		px->stats.responses_forwarded++;
		sip_msg_free(m);
		ptx_settle(t);
		return;
	}
	if (t->cli == CLI_ACCEPTED) {
		sip_msg_free(m);
		return;
	}
	if (invite)
		send_hop_request(t, SIP_ACK, m);
	ptx_cli_done(t);
	if (m->status == 503) {
		/* 16.7 item 6: a 503 upstream would say that we are unavailable. */
		m->status = 500;
		m->reason = SIP_STR_LIT("Server Internal Error");
	}
	ptx_respond(t, m);
	px->stats.responses_forwarded++;
	sip_msg_free(m);
	ptx_settle(t);
}

/* ---- timers ---- */

static void ptx_srv_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ptx *t = w->data;
	/* Timer H (no ACK came) or Timer L (2xx retransmission window over). */
	ptx_srv_done(t);
	ptx_settle(t);
}

static void ptx_cli_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct ptx *t = w->data;
	if (t->cli == CLI_PROCEEDING && t->req->method == SIP_INVITE) {
		/* Timer C: 16.8, give up on the branch. */
		send_hop_request(t, SIP_CANCEL, NULL);
	}
	int timed_out = t->cli == CLI_CALLING || t->cli == CLI_PROCEEDING;
	ptx_cli_done(t);
	if (timed_out && t->srv == SRV_PROCEEDING) {
		char warning[300];
		snprintf(warning, sizeof(warning), "no final response from %s", t->dest_name);
		ptx_reply(t, 408, warning);
	}
	ptx_settle(t);
}

/* ---- messages from connections ---- */

static void on_message(void *ctx, struct conn *c, struct sip_msg *m)
{
	struct proxy *px = ctx;
	if (m->is_request)
		handle_request(px, c, m);
	else
		handle_response(px, c, m);
}

static void on_bad_message(void *ctx, struct conn *c, struct sip_msg *m, int err)
{
	struct proxy *px = ctx;
	char peer[128];
	px->stats.malformed++;
	log_notice("%s message from %s (%s side): %s", err == SIP_ERR_TOO_LARGE ? "oversized"
	           : "malformed", peer_label(c, peer, sizeof(peer)),
	           conn_side(c) == CONN_EXTERNAL ? "external" : "internal", sip_strerror(err));
	/* A request with a Via can be answered on its connection, with whatever
	 * of From, To, Call-ID and CSeq it has (8.2.6); an ACK never is. */
	int answerable = m && m->is_request && m->method != SIP_ACK &&
	                 sip_msg_find(m, SIP_HDR_VIA, 0) >= 0;
	if (answerable && err == SIP_ERR_TOO_LARGE)
		send_stateless(px, c, m, 513, NULL, "the message is larger than this side accepts");
	else if (answerable)
		send_stateless(px, c, m, 400, NULL, sip_strerror(err));
	else if (!m && err != SIP_ERR_TOO_LARGE)
		/* Not SIP at all: whatever follows cannot be trusted either. */
		conn_fail(c, "not a SIP message");
	/* A malformed response matches nothing: dropping it is all there is to do. */
	sip_msg_free(m);
}

/* A connection to the balancer's listener closed before its handshake; conn counts it. */
static void on_refused(void *ctx, const char *from, enum conn_refusal what, const char *why)
{
	if (what == CONN_REFUSED_SOURCE)
		log_notice("connection from %s to a PROXY protocol listener refused: %s", from, why);
	else if (what == CONN_REFUSED_HEADER)
		log_notice("connection from balancer %s closed: %s", from, why);
	else
		log_debug("connection from balancer %s closed: %s", from, why);
}

static const struct conn_handler proxy_handler = {
	.on_message = on_message,
	.on_bad_message = on_bad_message,
	.on_up = on_up,
	.on_down = on_down,
	.on_refused = on_refused,
};

/* ---- the discovered partners' counts, pool-wide ---- */

#define THR_KEY_PREFIX "thr/"
#define SHARE_INTERVAL 1.0   /* seconds between publications of our counts */

/* Our part of a partner's counts goes to the store: "thr/<domain>/<node>". */
static void publish_part(void *arg, const char *domain, uint64_t period,
                         const struct thr_part *part)
{
	struct proxy *px = arg;
	char key[320], value[96];
	snprintf(key, sizeof(key), THR_KEY_PREFIX "%s/%s", domain, clu_node_name(px->cluster));
	int n = snprintf(value, sizeof(value), "%llu %u %u %u", (unsigned long long)period,
	                 part->contacts, part->responses, part->failures);
	uint64_t ttl_ms = (uint64_t)px->cfg->edge.discovered_report_period_min * 2 * 60000;
	clu_node_put(px->cluster, key, value, (size_t)n, ttl_ms);
}

static void share_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct proxy *px = w->data;
	/* The pool's nodes only: the balancers observe the cluster, they take no share. */
	thr_set_pool_size(px->thr, clu_alive_nodes(clu_node_members(px->cluster)));
	thr_take_changes(px->thr, publish_part, px);
}

/* Another node's part of a partner's counts, from the store. */
static void on_record(void *arg, const struct clu_rec *r)
{
	struct proxy *px = arg;
	char domain[256], value[96];
	const char *rest, *slash;
	struct thr_part part;
	unsigned long long period;
	if (strncmp(r->key, THR_KEY_PREFIX, strlen(THR_KEY_PREFIX)) != 0 || r->tombstone ||
	    strcmp(r->origin, clu_node_name(px->cluster)) == 0)
		return;
	rest = r->key + strlen(THR_KEY_PREFIX);
	slash = strrchr(rest, '/');
	if (!slash || (size_t)(slash - rest) >= sizeof(domain) || r->len >= sizeof(value))
		return;
	memcpy(domain, rest, (size_t)(slash - rest));
	domain[slash - rest] = '\0';
	memcpy(value, r->value, r->len);
	value[r->len] = '\0';
	if (sscanf(value, "%llu %u %u %u", &period, &part.contacts, &part.responses,
	           &part.failures) == 4)
		thr_set_remote(px->thr, domain, slash + 1, period, &part, ev_now(px->loop));
}

/* ---- setup ---- */

static void set_limits(struct conn_limits *lim, const struct edge_cfg *cfg, size_t max_msg)
{
	lim->sip.max_msg_bytes = max_msg;
	lim->sip.max_line_bytes = cfg->max_line_bytes;
	lim->sip.max_headers = cfg->max_headers;
	lim->connect_timeout_ms = cfg->connect_timeout_ms;
	lim->keepalive_s = cfg->keepalive_s;
	lim->whitespace_keepalive = cfg->whitespace_keepalive;
}

int proxy_check(const struct edge_cfg *cfg, char *err, size_t errlen)
{
	struct tls_ctx *s = tls_ctx_new(TLS_SERVER, cfg->ca_file, cfg->cert_file, cfg->key_file,
	                                err, errlen);
	struct tls_ctx *c = s ? tls_ctx_new(TLS_CLIENT, cfg->ca_file, cfg->cert_file,
	                                    cfg->key_file, err, errlen) : NULL;
	int rc = s && c ? 0 : -1;
	tls_ctx_free(s);
	tls_ctx_free(c);
	if (rc == 0 && xmpp_gw_check(cfg, err, errlen) < 0)
		rc = -1;
	return rc;
}

static int listen_all(struct proxy *px, const struct cfgu_listen *l, unsigned n,
                      enum conn_side side, const struct conn_limits *lim, char *err, size_t errlen)
{
	const struct edge_cfg *cfg = px->cfg;
	for (unsigned i = 0; i < n; i++) {
		const struct sockaddr *sa = (const struct sockaddr *)&l[i].addr.sa;
		struct tls_ctx *tls = l[i].tls ? px->tls_server : NULL;
		int rc = l[i].proxy_protocol
		       ? conn_listen_proxied(px->conns, sa, l[i].addr.salen, side, tls, lim,
		                             cfg->proxy_from_addr, cfg->nproxy_from, err, errlen)
		       : conn_listen(px->conns, sa, l[i].addr.salen, side, tls, lim, err, errlen);
		if (rc < 0)
			return -1;
		log_info("listening on %s %s port %u (%s side%s)", l[i].tls ? "TLS" : "TCP",
		         l[i].address, l[i].port, side == CONN_EXTERNAL ? "external" : "internal",
		         l[i].proxy_protocol ? ", PROXY protocol v2 from the balancers" : "");
	}
	return 0;
}

struct proxy *proxy_new(struct ev_loop *loop, const struct edge_cfg *cfg, struct clu_node *cluster,
                        char *err, size_t errlen)
{
	struct proxy *px = calloc(1, sizeof(*px));
	if (!px) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	px->loop = loop;
	px->cfg = cfg;
	px->cluster = cluster;
	list_init(&px->stateless);
	set_limits(&px->lim_internal, cfg, cfg->internal_max_msg);
	set_limits(&px->lim_external, cfg, cfg->external_max_msg);
	px->tls_server = tls_ctx_new(TLS_SERVER, cfg->ca_file, cfg->cert_file, cfg->key_file,
	                             err, errlen);
	if (!px->tls_server)
		goto fail;
	px->tls_client = tls_ctx_new(TLS_CLIENT, cfg->ca_file, cfg->cert_file, cfg->key_file,
	                             err, errlen);
	if (!px->tls_client)
		goto fail;
	struct dns_options dns_opt = {
		.server = cfg->dns.server,
		.port = cfg->dns.port,
		.timeout_ms = cfg->dns.timeout_ms,
		.tries = cfg->dns.tries,
		.cache_records = cfg->dns.cache_records,
	};
	px->dns = dns_resolver_new(loop, &dns_opt, err, errlen);
	if (!px->dns)
		goto fail;
	struct thr_limits thr_lim = {
		.rate = cfg->edge.discovered_rate,
		.max_contacts = cfg->edge.discovered_max_contacts,
		.contacts_limit = cfg->edge.discovered_contacts_limit,
		.period_s = cfg->edge.discovered_report_period_min * 60.0,
	};
	px->thr = thr_new(&thr_lim);
	px->dialogs = dlg_new(cluster);
	px->router = rt_new(loop, cfg, px->tls_client, px->dns, px->thr, cluster, &px->lim_internal,
	                    &px->lim_external);
	px->conns = conn_mgr_new(loop, &proxy_handler, px, cfg->max_connections);
	if (!px->thr || !px->dialogs || !px->router || !px->conns) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (cluster) {
		clu_node_on_record(cluster, on_record, px);
		ev_timer_init(&px->share_timer, share_cb, SHARE_INTERVAL, SHARE_INTERVAL);
		px->share_timer.data = px;
		ev_timer_start(loop, &px->share_timer);
	}
	if (cfg->xmpp) {
		px->gw = xmpp_gw_new(loop, cfg, px, px->dns, cluster, err, errlen);
		if (!px->gw)
			goto fail;
	}
	if (listen_all(px, cfg->internal_listen, cfg->ninternal_listen, CONN_INTERNAL,
	               &px->lim_internal, err, errlen) < 0 ||
	    listen_all(px, cfg->external_listen, cfg->nexternal_listen, CONN_EXTERNAL,
	               &px->lim_external, err, errlen) < 0)
		goto fail;
	return px;
fail:
	proxy_free(px);
	return NULL;
}

static void free_server_half(struct htab_node *n, void *arg)
{
	ptx_free(list_entry(n, struct ptx, srv_link.node));
}

static void free_client_half(struct htab_node *n, void *arg)
{
	ptx_free(list_entry(n, struct ptx, cli_link.node));
}

void proxy_free(struct proxy *px)
{
	if (!px)
		return;
	if (px->cluster) {
		ev_timer_stop(px->loop, &px->share_timer);
		clu_node_on_record(px->cluster, NULL, NULL);
	}
	/* The gateway first: what fails below must not make it send anything. */
	xmpp_gw_quiesce(px->gw);
	/* Connections first: their on_down fails what is pending on them. */
	conn_mgr_free(px->conns);
	px->conns = NULL;
	htab_foreach(&px->server_txns.by_key, free_server_half, NULL);
	/* Those whose server half was over already. */
	htab_foreach(&px->client_txns.by_key, free_client_half, NULL);
	sip_txn_table_free(&px->server_txns);
	sip_txn_table_free(&px->client_txns);
	while (!list_empty(&px->stateless))
		stateless_free(list_entry(px->stateless.next, struct stateless_fwd, link));
	/* Last of the edge's users: the transactions above may still answer it. */
	xmpp_gw_free(px->gw);
	rt_free(px->router);
	thr_free(px->thr);
	dlg_free(px->dialogs);
	dns_resolver_free(px->dns);
	tls_ctx_free(px->tls_server);
	tls_ctx_free(px->tls_client);
	free(px);
}

void proxy_drain(struct proxy *px)
{
	px->draining = 1;
}

int proxy_busy(const struct proxy *px)
{
	/* Transactions that only absorb retransmissions (Timers L, M) need nobody. */
	return px->unanswered > 0;
}

void proxy_get_stats(const struct proxy *px, struct proxy_stats *out)
{
	*out = px->stats;
	out->connections = px->conns ? conn_mgr_count(px->conns) : 0;
}

/* Appends to a status text; at stops at len - 1 when it runs out. */
__attribute__((format(printf, 4, 5)))
static void status_add(char *buf, size_t len, size_t *at, const char *fmt, ...)
{
	va_list ap;
	if (*at + 1 >= len)
		return;
	va_start(ap, fmt);
	int n = vsnprintf(buf + *at, len - *at, fmt, ap);
	va_end(ap);
	if (n > 0)
		*at = *at + (size_t)n < len ? *at + (size_t)n : len - 1;
}

size_t proxy_status_json(const struct proxy *px, char *buf, size_t len)
{
	struct proxy_stats st;
	struct conn_stats cs;
	struct thr_stats thr;
	struct dns_stats dns;
	size_t at = 0;
	if (len == 0)
		return 0;
	buf[0] = '\0';
	proxy_get_stats(px, &st);
	conn_mgr_stats(px->conns, &cs);
	thr_get_stats(px->thr, ev_now(px->loop), &thr);
	dns_get_stats(px->dns, &dns);
	status_add(buf, len, &at,
	           "{\"pool_fqdn\": \"%s\", \"connections\": %llu, \"transactions\": %llu, "
	           "\"requests_in\": %llu, \"requests_forwarded\": %llu, "
	           "\"responses_forwarded\": %llu, \"rejected\": %llu, \"malformed\": %llu, "
	           "\"connection_failures\": %llu, \"proxy_headers\": %llu, \"proxy_refused\": %llu, "
	           "\"proxy_header_failures\": %llu, "
	           "\"discovered_partners\": {\"tracked\": %u, \"blocked\": %u, "
	           "\"suspicious\": %u, \"pool_contacts\": %u, \"rate_refused\": %llu, "
	           "\"contacts_refused\": %llu}, "
	           "\"dns\": {\"queries\": %llu, \"cache_hits\": %llu, \"failures\": %llu, "
	           "\"cached\": %u}, \"monitored_domains\": {",
	           px->cfg->pool_fqdn, st.connections, st.transactions, st.requests_in,
	           st.requests_forwarded, st.responses_forwarded, st.rejected, st.malformed,
	           st.connection_failures, cs.proxy_headers, cs.proxy_refused,
	           cs.proxy_header_failures, thr.partners, thr.blocked, thr.suspicious,
	           thr.pool_contacts, thr.rate_refused, thr.contacts_refused, dns.queries, dns.cache_hits,
	           dns.failures, dns.cached);
	/* Domain names are checked at load: nothing in them needs escaping. */
	unsigned nmon;
	const struct rt_monitor *mon = rt_monitors(px->router, &nmon);
	const char *sep = "";
	for (unsigned i = 0; i < nmon; i++) {
		if (!mon[i].domain)
			continue;
		status_add(buf, len, &at, "%s\"%s\": {\"in\": %llu, \"out\": %llu}", sep,
		           mon[i].domain, mon[i].in, mon[i].out);
		sep = ", ";
	}
	status_add(buf, len, &at, "}, \"xmpp\": ");
	if (px->gw && at + 1 < len)
		at += xmpp_gw_status_json(px->gw, buf + at, len - at);
	else
		status_add(buf, len, &at, "null");
	status_add(buf, len, &at, ", \"cluster\": ");
	if (px->cluster && at + 1 < len)
		at += clu_node_status_json(px->cluster, buf + at, len - at);
	else
		status_add(buf, len, &at, "null");
	status_add(buf, len, &at, "}\n");
	return at;
}
