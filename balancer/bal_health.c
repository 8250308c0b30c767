#include "bal_health.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "ppv2.h"
#include "sip_msg.h"
#include "sockaddr.h"
#include "tls.h"
#include "xprt.h"

#define RESPONSE_MAX 8192

enum check_phase {
	PHASE_IDLE,               /* no connection: the next check connects */
	PHASE_CONNECTING,         /* TCP connect, the LOCAL header, then the TLS handshake */
	PHASE_WAITING,            /* OPTIONS sent, reading the answer */
	PHASE_READY,              /* connection kept open until the next check */
};

enum check_state { CHECK_UNKNOWN, CHECK_UP, CHECK_DOWN };

enum check_result {
	RESULT_OK,                /* 200 */
	RESULT_DRAINING,          /* 503: reachable, but no new traffic */
	RESULT_FAILED,
};

struct edge;

/* One path to an edge, checked on a connection of its own. */
struct check {
	struct edge *e;
	struct sockaddr_storage to;
	socklen_t tolen;
	int local_header;         /* a PROXY v2 LOCAL header goes first (the VIP's path) */
	int header_sent;
	enum check_phase phase;
	enum check_state state;
	int draining;             /* the last answer was 503 */
	unsigned streak;          /* successes (state down) or failures (state up) in a row */
	double last_recheck;      /* when a failure last asked for a check at once */
	unsigned long long checks, failures;
	uint32_t seq;             /* CSeq of the last OPTIONS, below 2^31 */
	char last_error[160];
	struct xprt *x;
	ev_io io;
	ev_timer timeout;         /* of the check in progress */
	ev_timer next;            /* the next check */
	char out[1024];
	size_t out_len, out_off;
	char in[RESPONSE_MAX];
	size_t in_len;
};

struct edge {
	struct bal_health *h;
	unsigned index;
	const struct bal_cfg_edge *cfg;
	enum bal_member_view member;
	int member_seen;          /* the cluster named it once */
	int usable;               /* on the DNS path, as last told to on_change */
	struct check *checks;     /* [0]: the SIP port; [1 + f]: forward f, or unused */
	unsigned nchecks;
};

struct bal_health {
	struct ev_loop *loop;
	const struct bal_cfg *cfg;
	struct tls_ctx *tls;
	bal_health_fn on_change;
	void *arg;
	struct edge *edges;
	unsigned nedges;
};

static void start_check(struct check *c);

static int check_good(const struct check *c)
{
	return c->state == CHECK_UP && !c->draining;
}

static int compute_usable(const struct edge *e)
{
	return e->member != BAL_MEMBER_GONE && check_good(&e->checks[0]);
}

static void notify(struct edge *e)
{
	int usable = compute_usable(e);
	if (usable == e->usable)
		return;
	e->usable = usable;
	e->h->on_change(e->h->arg, e->index, usable);
}

static void close_conn(struct check *c)
{
	struct ev_loop *loop = c->e->h->loop;
	ev_io_stop(loop, &c->io);
	ev_timer_stop(loop, &c->timeout);
	if (c->x)
		c->x->ops->destroy(c->x);
	c->x = NULL;
	c->phase = PHASE_IDLE;
}

static void schedule(struct check *c, double after)
{
	struct ev_loop *loop = c->e->h->loop;
	ev_timer_stop(loop, &c->next);
	ev_timer_set(&c->next, after, 0.);
	ev_timer_start(loop, &c->next);
}

static void watch(struct check *c, int events)
{
	struct ev_loop *loop = c->e->h->loop;
	ev_io_stop(loop, &c->io);
	ev_io_set(&c->io, c->x->fd, events);
	ev_io_start(loop, &c->io);
}

/*
 * One check ended. A reachable edge keeps its connection for the next
 * check; why says what failed.
 */
static void finish(struct check *c, enum check_result result, const char *why)
{
	struct ev_loop *loop = c->e->h->loop;
	const struct bal_cfg_health *hc = &c->e->h->cfg->health;
	double interval = hc->interval_ms / 1000.0;
	int reachable = result != RESULT_FAILED;
	/* Before the connection goes: why may point into it. */
	if (why)
		snprintf(c->last_error, sizeof(c->last_error), "%s", why);
	c->checks++;
	c->draining = result == RESULT_DRAINING;
	if (reachable) {
		ev_timer_stop(loop, &c->timeout);
		c->phase = PHASE_READY;
		/* A kept connection that ends is noticed while idle. */
		watch(c, EV_READ);
	} else {
		c->failures++;
		close_conn(c);
	}
	if (c->state == CHECK_UNKNOWN) {
		c->state = reachable ? CHECK_UP : CHECK_DOWN;
		c->streak = 0;
	} else if ((c->state == CHECK_UP) != reachable) {
		if (++c->streak >= (reachable ? hc->rise : hc->fall)) {
			c->state = reachable ? CHECK_UP : CHECK_DOWN;
			c->streak = 0;
		}
	} else {
		c->streak = 0;
	}
	notify(c->e);
	/* An up path that failed is checked again at once: a dead edge is known in
	 * `fall` round trips, not `fall` intervals. Once per interval at most, so
	 * that an edge which answers and then drops the connection is not hammered. */
	double now = ev_now(loop);
	if (!reachable && c->state == CHECK_UP && now - c->last_recheck >= interval) {
		c->last_recheck = now;
		schedule(c, 0.);
	} else {
		schedule(c, interval);
	}
}

static void build_options(struct check *c)
{
	const struct bal_cfg_edge *e = c->e->cfg;
	unsigned id = c->e->index, path = (unsigned)(c - c->e->checks);
	c->seq = c->seq % 0x7fffffffu + 1;
	int n = snprintf(c->out, sizeof(c->out),
	                 "OPTIONS sip:%s;transport=tls SIP/2.0\r\n"
	                 "Via: SIP/2.0/TLS balancer.invalid;branch=z9hG4bK-bal-%u-%u\r\n"
	                 "Max-Forwards: 0\r\n"
	                 "From: <sip:balancer@%s>;tag=bal%u\r\n"
	                 "To: <sip:%s>\r\n"
	                 "Call-ID: bal-health-%u-%u-%u\r\n"
	                 "CSeq: %u OPTIONS\r\n"
	                 "Content-Length: 0\r\n\r\n",
	                 e->fqdn, id, c->seq, e->fqdn, id, e->fqdn, id, path, c->seq, c->seq);
	c->out_len = n > 0 && (size_t)n < sizeof(c->out) ? (size_t)n : 0;
	c->out_off = 0;
	c->in_len = 0;
}

/* Reads the answer; returns 1 when the check ended (finish() was called). */
static int read_answer(struct check *c)
{
	static const struct sip_limits lim = { .max_msg_bytes = RESPONSE_MAX,
	                                       .max_line_bytes = 2048, .max_headers = 64 };
	for (;;) {
		if (c->in_len == sizeof(c->in)) {
			finish(c, RESULT_FAILED, "answer too large");
			return 1;
		}
		ssize_t r = c->x->ops->recv(c->x, c->in + c->in_len, sizeof(c->in) - c->in_len);
		if (r == XPRT_WANT_READ || r == XPRT_WANT_WRITE)
			return 0;
		if (r < 0) {
			finish(c, RESULT_FAILED, r == XPRT_CLOSED ? "closed by the edge" : c->x->error);
			return 1;
		}
		c->in_len += (size_t)r;
		/* Keep-alive CRLFs may precede the answer. */
		size_t skip = 0, used;
		while (skip < c->in_len && (c->in[skip] == '\r' || c->in[skip] == '\n'))
			skip++;
		enum sip_frame_result fr = sip_frame(c->in + skip, c->in_len - skip, &lim, &used);
		if (fr == SIP_FRAME_MORE)
			continue;
		if (fr != SIP_FRAME_MSG) {
			finish(c, RESULT_FAILED, "unframed answer");
			return 1;
		}
		struct sip_msg *m = NULL;
		int rc = sip_msg_parse(c->in + skip, used, &lim, &m);
		char why[96];
		enum check_result result = RESULT_FAILED;
		if (rc != SIP_OK || !m || m->is_request) {
			snprintf(why, sizeof(why), "bad answer: %s", sip_strerror(rc));
		} else if (m->cseq != c->seq) {
			snprintf(why, sizeof(why), "answer to another OPTIONS");
		} else if (c->in_len > skip + used) {
			snprintf(why, sizeof(why), "unexpected bytes after the answer");
		} else if (m->status == 200 || m->status == 503) {
			result = m->status == 200 ? RESULT_OK : RESULT_DRAINING;
			snprintf(why, sizeof(why), "%s", m->status == 200 ? "" : "draining (503)");
		} else {
			snprintf(why, sizeof(why), "OPTIONS answered %u", m->status);
		}
		sip_msg_free(m);
		finish(c, result, why);
		return 1;
	}
}

/*
 * Bytes on an idle kept connection: a keep-alive (CRLFs; a double CRLF is
 * a ping, answered with a CRLF pong, RFC 5626) is fine; its end, or anything
 * else, is a failure.
 */
static void on_idle_bytes(struct check *c)
{
	char buf[64];
	ssize_t r = c->x->ops->recv(c->x, buf, sizeof(buf));
	if (r == XPRT_WANT_READ || r == XPRT_WANT_WRITE)
		return;
	if (r < 0) {
		finish(c, RESULT_FAILED, "connection ended");
		return;
	}
	for (ssize_t i = 0; i < r; i++)
		if (buf[i] != '\r' && buf[i] != '\n') {
			finish(c, RESULT_FAILED, "unexpected bytes");
			return;
		}
	if (r >= 4 && memcmp(buf + r - 4, "\r\n\r\n", 4) == 0)
		c->x->ops->send(c->x, "\r\n", 2);
}

/* The LOCAL header, written on the socket before any TLS byte. 0: sent; 1: later; -1: failed. */
static int send_local_header(struct check *c)
{
	char why[96];
	int rc = xprt_connect_done(c->x->fd, why, sizeof(why));
	if (rc == XPRT_WANT_WRITE)
		return 1;
	if (rc < 0) {
		finish(c, RESULT_FAILED, why);
		return -1;
	}
	uint8_t hdr[PPV2_HDR_LEN];
	size_t n = ppv2_build_local(hdr, sizeof(hdr));
	/* A fresh connection's send buffer takes 16 bytes whole. */
	if (send(c->x->fd, hdr, n, MSG_NOSIGNAL) != (ssize_t)n) {
		finish(c, RESULT_FAILED, "cannot send the PROXY LOCAL header");
		return -1;
	}
	c->header_sent = 1;
	return 0;
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct check *c = w->data;
	if (c->phase == PHASE_READY) {
		on_idle_bytes(c);
		return;
	}
	if (c->phase == PHASE_CONNECTING) {
		if (c->local_header && !c->header_sent) {
			int rc = send_local_header(c);
			if (rc < 0)
				return;
			if (rc > 0) {
				watch(c, EV_WRITE);
				return;
			}
		}
		int rc = c->x->ops->handshake(c->x);
		if (rc == XPRT_WANT_READ || rc == XPRT_WANT_WRITE) {
			watch(c, rc == XPRT_WANT_READ ? EV_READ : EV_WRITE);
			return;
		}
		if (rc < 0) {
			finish(c, RESULT_FAILED, c->x->error);
			return;
		}
		c->phase = PHASE_WAITING;
	}
	while (c->out_off < c->out_len) {
		ssize_t r = c->x->ops->send(c->x, c->out + c->out_off, c->out_len - c->out_off);
		if (r == XPRT_WANT_READ || r == XPRT_WANT_WRITE) {
			watch(c, r == XPRT_WANT_READ ? EV_READ : EV_WRITE);
			return;
		}
		if (r < 0) {
			finish(c, RESULT_FAILED, c->x->error);
			return;
		}
		c->out_off += (size_t)r;
	}
	if (read_answer(c))
		return;
	watch(c, EV_READ);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct check *c = w->data;
	finish(c, RESULT_FAILED, c->phase == PHASE_CONNECTING ? "connect or handshake timed out"
	                                                      : "no answer in time");
}

static void on_next(struct ev_loop *loop, ev_timer *w, int revents)
{
	start_check(w->data);
}

static void start_check(struct check *c)
{
	struct ev_loop *loop = c->e->h->loop;
	build_options(c);
	if (c->phase == PHASE_READY) {
		c->phase = PHASE_WAITING;
	} else {
		int fd = socket(c->to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			finish(c, RESULT_FAILED, strerror(errno));
			return;
		}
		if (connect(fd, (const struct sockaddr *)&c->to, c->tolen) < 0 && errno != EINPROGRESS) {
			char why[96];
			snprintf(why, sizeof(why), "connect: %s", strerror(errno));
			close(fd);
			finish(c, RESULT_FAILED, why);
			return;
		}
		c->x = tls_xprt_new(c->e->h->tls, fd, c->e->cfg->fqdn);
		if (!c->x) {
			finish(c, RESULT_FAILED, "out of memory");
			return;
		}
		c->header_sent = 0;
		c->phase = PHASE_CONNECTING;
	}
	watch(c, EV_WRITE);
	ev_timer_set(&c->timeout, c->e->h->cfg->health.timeout_ms / 1000.0, 0.);
	ev_timer_start(loop, &c->timeout);
}

static void check_init(struct check *c, struct edge *e, uint16_t port, int local_header,
                       double first)
{
	c->e = e;
	memcpy(&c->to, &e->cfg->addr.sa, e->cfg->addr.salen);
	c->tolen = e->cfg->addr.salen;
	sa_set_port(&c->to, port);
	c->local_header = local_header;
	c->last_recheck = -1e9;
	ev_init(&c->io, on_io);
	c->io.data = c;
	ev_init(&c->timeout, on_timeout);
	c->timeout.data = c;
	ev_init(&c->next, on_next);
	c->next.data = c;
	schedule(c, first);
}

struct bal_health *bal_health_new(struct ev_loop *loop, const struct bal_cfg *cfg,
                                  bal_health_fn on_change, void *arg, char *err, size_t errlen)
{
	struct bal_health *h = calloc(1, sizeof(*h));
	unsigned nforwards = cfg->vip ? cfg->vip->nforwards : 0;
	if (!h || !(h->edges = calloc(cfg->nedges, sizeof(*h->edges)))) {
		free(h);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->loop = loop;
	h->cfg = cfg;
	h->on_change = on_change;
	h->arg = arg;
	for (unsigned i = 0; i < cfg->nedges; i++, h->nedges++)
		if (!(h->edges[i].checks = calloc(1 + nforwards, sizeof(*h->edges[i].checks)))) {
			bal_health_free(h);
			snprintf(err, errlen, "out of memory");
			return NULL;
		}
	h->tls = tls_ctx_new(TLS_CLIENT, cfg->ca_file, cfg->cert_file, cfg->key_file, err, errlen);
	if (!h->tls) {
		bal_health_free(h);
		return NULL;
	}
	double interval = cfg->health.interval_ms / 1000.0;
	for (unsigned i = 0; i < h->nedges; i++) {
		struct edge *e = &h->edges[i];
		e->h = h;
		e->index = i;
		e->cfg = &cfg->edges[i];
		e->nchecks = 1 + nforwards;
		/* Spread the edges' checks over the first interval. */
		double first = interval * i / h->nedges;
		check_init(&e->checks[0], e, e->cfg->sip_port, 0, first);
		for (unsigned f = 0; f < nforwards; f++)
			if (cfg->vip->forwards[f].proxy_protocol)
				check_init(&e->checks[1 + f], e, cfg->vip->forwards[f].edge_port, 1, first);
	}
	return h;
}

void bal_health_free(struct bal_health *h)
{
	if (!h)
		return;
	for (unsigned i = 0; i < h->nedges; i++) {
		struct edge *e = &h->edges[i];
		for (unsigned k = 0; k < e->nchecks; k++) {
			struct check *c = &e->checks[k];
			if (!c->e)
				continue;         /* a forward without the PROXY protocol: not checked */
			/* A kept connection ends with a close_notify: the edge logs no failure. */
			if (c->phase == PHASE_READY)
				c->x->ops->shutdown(c->x);
			close_conn(c);
			ev_timer_stop(h->loop, &c->next);
		}
		free(e->checks);
	}
	tls_ctx_free(h->tls);
	free(h->edges);
	free(h);
}

void bal_health_set_member(struct bal_health *h, const char *name, enum bal_member_view view)
{
	for (unsigned i = 0; i < h->nedges; i++) {
		struct edge *e = &h->edges[i];
		if (strcmp(e->cfg->name, name) != 0)
			continue;
		e->member = view;
		e->member_seen = 1;
		notify(e);
		/* Back in the cluster: check now rather than at the next interval. */
		for (unsigned k = 0; view == BAL_MEMBER_ALIVE && k < e->nchecks; k++) {
			struct check *c = &e->checks[k];
			if (c->e && c->state == CHECK_DOWN && c->phase == PHASE_IDLE)
				schedule(c, 0.);
		}
	}
}

int bal_health_usable(const struct bal_health *h, unsigned edge)
{
	return edge < h->nedges && h->edges[edge].usable;
}

unsigned bal_health_usable_count(const struct bal_health *h)
{
	unsigned n = 0;
	for (unsigned i = 0; i < h->nedges; i++)
		n += h->edges[i].usable != 0;
	return n;
}

int bal_health_usable_via(const struct bal_health *h, unsigned edge, unsigned forward)
{
	if (edge >= h->nedges || 1 + forward >= h->edges[edge].nchecks)
		return 0;
	const struct edge *e = &h->edges[edge];
	const struct check *c = &e->checks[1 + forward];
	/* A forward without the PROXY protocol goes to a port we cannot check: the SIP port's verdict. */
	return e->usable && (!c->e || check_good(c));
}

int bal_health_member_known(const struct bal_health *h, unsigned edge)
{
	return edge < h->nedges && h->edges[edge].member_seen;
}

size_t bal_health_status_json(const struct bal_health *h, char *buf, size_t len)
{
	static const char *const states[] = { "unknown", "up", "down" };
	static const char *const members[] = { "unknown", "alive", "gone" };
	size_t off = 0;
#define PUT(...) (off += (size_t)snprintf(buf + off, off < len ? len - off : 0, __VA_ARGS__))
	PUT("[");
	for (unsigned i = 0; i < h->nedges; i++) {
		const struct edge *e = &h->edges[i];
		const struct check *sip = &e->checks[0];
		/* Edge names are node names (bal_cfg checks them): nothing to escape. */
		PUT("%s{\"name\":\"%s\",\"usable\":%s,\"member\":\"%s\",\"check\":\"%s\","
		    "\"draining\":%s,\"checks\":[", i ? "," : "", e->cfg->name,
		    e->usable ? "true" : "false", members[e->member], states[sip->state],
		    sip->draining ? "true" : "false");
		for (unsigned k = 0, first = 1; k < e->nchecks; k++) {
			const struct check *c = &e->checks[k];
			if (!c->e)
				continue;
			PUT("%s{\"port\":%u,\"proxy_local\":%s,\"state\":\"%s\",\"checks\":%llu,"
			    "\"failures\":%llu,\"last_error\":\"", first ? "" : ",",
			    k ? h->cfg->vip->forwards[k - 1].edge_port : e->cfg->sip_port,
			    c->local_header ? "true" : "false", states[c->state], c->checks, c->failures);
			first = 0;
			/* The reason comes from OpenSSL or strerror: keep only plain characters. */
			for (const char *p = c->last_error; *p && off + 2 < len; p++)
				buf[off++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? ' ' : *p;
			PUT("\"}");
		}
		PUT("]}");
	}
	PUT("]");
#undef PUT
	return off < len ? off : (len ? len - 1 : 0);
}
