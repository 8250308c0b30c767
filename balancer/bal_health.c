#include "bal_health.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "sip_msg.h"
#include "tls.h"
#include "xprt.h"

#define RESPONSE_MAX 8192

enum check_phase {
	PHASE_IDLE,               /* no connection: the next check connects */
	PHASE_CONNECTING,         /* TCP connect, then the TLS handshake */
	PHASE_WAITING,            /* OPTIONS sent, reading the answer */
	PHASE_READY,              /* connection kept open until the next check */
};

enum check_state { CHECK_UNKNOWN, CHECK_UP, CHECK_DOWN };

struct edge_check {
	struct bal_health *h;
	unsigned index;
	const struct bal_cfg_edge *cfg;
	enum check_phase phase;
	enum check_state state;
	enum bal_member_view member;
	int draining;             /* the last answer was 503 */
	int usable;               /* as last told to on_change */
	unsigned streak;          /* successes (state down) or failures (state up) in a row */
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

struct bal_health {
	struct ev_loop *loop;
	const struct bal_cfg *cfg;
	struct tls_ctx *tls;
	bal_health_fn on_change;
	void *arg;
	struct edge_check *edges;
	unsigned nedges;
};

static void start_check(struct edge_check *e);

static int compute_usable(const struct edge_check *e)
{
	return e->state == CHECK_UP && !e->draining && e->member != BAL_MEMBER_GONE;
}

static void notify(struct edge_check *e)
{
	int usable = compute_usable(e);
	if (usable == e->usable)
		return;
	e->usable = usable;
	e->h->on_change(e->h->arg, e->index, usable);
}

static void close_conn(struct edge_check *e)
{
	struct ev_loop *loop = e->h->loop;
	ev_io_stop(loop, &e->io);
	ev_timer_stop(loop, &e->timeout);
	if (e->x)
		e->x->ops->destroy(e->x);
	e->x = NULL;
	e->phase = PHASE_IDLE;
}

static void schedule(struct edge_check *e, double after)
{
	ev_timer_stop(e->h->loop, &e->next);
	ev_timer_set(&e->next, after, 0.);
	ev_timer_start(e->h->loop, &e->next);
}

enum check_result {
	RESULT_OK,                /* 200 */
	RESULT_DRAINING,          /* 503: reachable, but no new traffic */
	RESULT_FAILED,
};

/*
 * One check ended. A reachable edge keeps its connection for the next
 * check; why says what failed.
 */
static void finish(struct edge_check *e, enum check_result result, const char *why)
{
	const struct bal_cfg_health *hc = &e->h->cfg->health;
	int reachable = result != RESULT_FAILED;
	/* Before the connection goes: why may point into it. */
	if (why)
		snprintf(e->last_error, sizeof(e->last_error), "%s", why);
	e->checks++;
	e->draining = result == RESULT_DRAINING;
	if (reachable) {
		ev_io_stop(e->h->loop, &e->io);
		ev_timer_stop(e->h->loop, &e->timeout);
		e->phase = PHASE_READY;
		/* A kept connection that ends is noticed while idle. */
		ev_io_set(&e->io, e->x->fd, EV_READ);
		ev_io_start(e->h->loop, &e->io);
	} else {
		e->failures++;
		close_conn(e);
	}
	if (e->state == CHECK_UNKNOWN) {
		e->state = reachable ? CHECK_UP : CHECK_DOWN;
		e->streak = 0;
	} else if ((e->state == CHECK_UP) != reachable) {
		if (++e->streak >= (reachable ? hc->rise : hc->fall)) {
			e->state = reachable ? CHECK_UP : CHECK_DOWN;
			e->streak = 0;
		}
	} else {
		e->streak = 0;
	}
	notify(e);
	/* An up edge that failed is checked again at once: a dead edge is known
	 * in `fall` round trips, not `fall` intervals. */
	schedule(e, !reachable && e->state == CHECK_UP ? 0. : hc->interval_ms / 1000.0);
}

static void build_options(struct edge_check *e)
{
	const struct bal_cfg_edge *c = e->cfg;
	e->seq = e->seq % 0x7fffffffu + 1;
	int n = snprintf(e->out, sizeof(e->out),
	                 "OPTIONS sip:%s:%u;transport=tls SIP/2.0\r\n"
	                 "Via: SIP/2.0/TLS balancer.invalid;branch=z9hG4bK-bal-%u-%u\r\n"
	                 "Max-Forwards: 0\r\n"
	                 "From: <sip:balancer@%s>;tag=bal%u\r\n"
	                 "To: <sip:%s>\r\n"
	                 "Call-ID: bal-health-%u-%u\r\n"
	                 "CSeq: %u OPTIONS\r\n"
	                 "Content-Length: 0\r\n\r\n",
	                 c->fqdn, c->sip_port, e->index, e->seq, c->fqdn, e->index, c->fqdn,
	                 e->index, e->seq, e->seq);
	e->out_len = n > 0 && (size_t)n < sizeof(e->out) ? (size_t)n : 0;
	e->out_off = 0;
	e->in_len = 0;
}

/* Reads the answer; returns 1 when the check ended (finish() was called). */
static int read_answer(struct edge_check *e)
{
	static const struct sip_limits lim = { .max_msg_bytes = RESPONSE_MAX,
	                                       .max_line_bytes = 2048, .max_headers = 64 };
	for (;;) {
		if (e->in_len == sizeof(e->in)) {
			finish(e, RESULT_FAILED, "answer too large");
			return 1;
		}
		ssize_t r = e->x->ops->recv(e->x, e->in + e->in_len, sizeof(e->in) - e->in_len);
		if (r == XPRT_WANT_READ || r == XPRT_WANT_WRITE)
			return 0;
		if (r < 0) {
			finish(e, RESULT_FAILED, r == XPRT_CLOSED ? "closed by the edge" : e->x->error);
			return 1;
		}
		e->in_len += (size_t)r;
		size_t used;
		/* Keep-alive CRLFs may precede the answer. */
		size_t skip = 0;
		while (skip < e->in_len && (e->in[skip] == '\r' || e->in[skip] == '\n'))
			skip++;
		enum sip_frame_result fr = sip_frame(e->in + skip, e->in_len - skip, &lim, &used);
		if (fr == SIP_FRAME_MORE)
			continue;
		if (fr != SIP_FRAME_MSG) {
			finish(e, RESULT_FAILED, "unframed answer");
			return 1;
		}
		struct sip_msg *m = NULL;
		int rc = sip_msg_parse(e->in + skip, used, &lim, &m);
		char why[96];
		enum check_result result = RESULT_FAILED;
		if (rc != SIP_OK || !m || m->is_request) {
			snprintf(why, sizeof(why), "bad answer: %s", sip_strerror(rc));
		} else if (m->cseq != e->seq) {
			snprintf(why, sizeof(why), "answer to another OPTIONS");
		} else if (e->in_len > skip + used) {
			snprintf(why, sizeof(why), "unexpected bytes after the answer");
		} else if (m->status == 200 || m->status == 503) {
			result = m->status == 200 ? RESULT_OK : RESULT_DRAINING;
			snprintf(why, sizeof(why), "%s", m->status == 200 ? "" : "draining (503)");
		} else {
			snprintf(why, sizeof(why), "OPTIONS answered %u", m->status);
		}
		sip_msg_free(m);
		finish(e, result, why);
		return 1;
	}
}

static void on_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct edge_check *e = w->data;
	if (e->phase == PHASE_READY) {
		/* Anything on an idle kept connection: its end, or bytes we did not ask for. */
		char byte;
		ssize_t r = e->x->ops->recv(e->x, &byte, 1);
		if (r == XPRT_WANT_READ || r == XPRT_WANT_WRITE)
			return;
		finish(e, RESULT_FAILED, r == XPRT_CLOSED || r == XPRT_FAILED ? "connection ended"
		                                                     : "unexpected bytes");
		return;
	}
	if (e->phase == PHASE_CONNECTING) {
		int rc = e->x->ops->handshake(e->x);
		if (rc == XPRT_WANT_READ || rc == XPRT_WANT_WRITE) {
			ev_io_stop(loop, &e->io);
			ev_io_set(&e->io, e->x->fd, rc == XPRT_WANT_READ ? EV_READ : EV_WRITE);
			ev_io_start(loop, &e->io);
			return;
		}
		if (rc < 0) {
			finish(e, RESULT_FAILED, e->x->error);
			return;
		}
		e->phase = PHASE_WAITING;
	}
	while (e->out_off < e->out_len) {
		ssize_t r = e->x->ops->send(e->x, e->out + e->out_off, e->out_len - e->out_off);
		if (r == XPRT_WANT_READ || r == XPRT_WANT_WRITE) {
			ev_io_stop(loop, &e->io);
			ev_io_set(&e->io, e->x->fd, r == XPRT_WANT_READ ? EV_READ : EV_WRITE);
			ev_io_start(loop, &e->io);
			return;
		}
		if (r < 0) {
			finish(e, RESULT_FAILED, e->x->error);
			return;
		}
		e->out_off += (size_t)r;
	}
	if (read_answer(e))
		return;
	ev_io_stop(loop, &e->io);
	ev_io_set(&e->io, e->x->fd, EV_READ);
	ev_io_start(loop, &e->io);
}

static void on_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct edge_check *e = w->data;
	finish(e, RESULT_FAILED, e->phase == PHASE_CONNECTING ? "connect or handshake timed out"
	                                             : "no answer in time");
}

static void on_next(struct ev_loop *loop, ev_timer *w, int revents)
{
	start_check(w->data);
}

static void start_check(struct edge_check *e)
{
	struct ev_loop *loop = e->h->loop;
	build_options(e);
	if (e->phase == PHASE_READY) {
		ev_io_stop(loop, &e->io);
		e->phase = PHASE_WAITING;
	} else {
		const struct cfgu_addr *a = &e->cfg->addr;
		int fd = socket(a->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0) {
			finish(e, RESULT_FAILED, strerror(errno));
			return;
		}
		if (connect(fd, (const struct sockaddr *)&a->sa, a->salen) < 0 &&
		    errno != EINPROGRESS) {
			char why[96];
			snprintf(why, sizeof(why), "connect: %s", strerror(errno));
			close(fd);
			finish(e, RESULT_FAILED, why);
			return;
		}
		e->x = tls_xprt_new(e->h->tls, fd, e->cfg->fqdn);
		if (!e->x) {
			finish(e, RESULT_FAILED, "out of memory");
			return;
		}
		e->phase = PHASE_CONNECTING;
	}
	ev_io_set(&e->io, e->x->fd, EV_WRITE);
	ev_io_start(loop, &e->io);
	ev_timer_set(&e->timeout, e->h->cfg->health.timeout_ms / 1000.0, 0.);
	ev_timer_start(loop, &e->timeout);
}

struct bal_health *bal_health_new(struct ev_loop *loop, const struct bal_cfg *cfg,
                                  bal_health_fn on_change, void *arg, char *err, size_t errlen)
{
	struct bal_health *h = calloc(1, sizeof(*h));
	if (!h || !(h->edges = calloc(cfg->nedges, sizeof(*h->edges)))) {
		free(h);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	h->loop = loop;
	h->cfg = cfg;
	h->on_change = on_change;
	h->arg = arg;
	h->nedges = cfg->nedges;
	h->tls = tls_ctx_new(TLS_CLIENT, cfg->ca_file, cfg->cert_file, cfg->key_file, err, errlen);
	if (!h->tls) {
		free(h->edges);
		free(h);
		return NULL;
	}
	for (unsigned i = 0; i < h->nedges; i++) {
		struct edge_check *e = &h->edges[i];
		e->h = h;
		e->index = i;
		e->cfg = &cfg->edges[i];
		ev_init(&e->io, on_io);
		e->io.data = e;
		ev_init(&e->timeout, on_timeout);
		e->timeout.data = e;
		ev_init(&e->next, on_next);
		e->next.data = e;
		/* Spread the edges' checks over the first interval. */
		schedule(e, cfg->health.interval_ms / 1000.0 * i / h->nedges);
	}
	return h;
}

void bal_health_free(struct bal_health *h)
{
	if (!h)
		return;
	for (unsigned i = 0; i < h->nedges; i++) {
		/* A kept connection ends with a close_notify: the edge logs no failure. */
		if (h->edges[i].phase == PHASE_READY)
			h->edges[i].x->ops->shutdown(h->edges[i].x);
		close_conn(&h->edges[i]);
		ev_timer_stop(h->loop, &h->edges[i].next);
	}
	tls_ctx_free(h->tls);
	free(h->edges);
	free(h);
}

void bal_health_set_member(struct bal_health *h, const char *name, enum bal_member_view view)
{
	for (unsigned i = 0; i < h->nedges; i++) {
		struct edge_check *e = &h->edges[i];
		if (strcmp(e->cfg->name, name) != 0)
			continue;
		e->member = view;
		notify(e);
		/* Back in the cluster: check now rather than at the next interval. */
		if (view == BAL_MEMBER_ALIVE && e->state == CHECK_DOWN && e->phase == PHASE_IDLE)
			schedule(e, 0.);
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

size_t bal_health_status_json(const struct bal_health *h, char *buf, size_t len)
{
	static const char *const states[] = { "unknown", "up", "down" };
	static const char *const members[] = { "unknown", "alive", "gone" };
	size_t off = 0;
	off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "[");
	for (unsigned i = 0; i < h->nedges; i++) {
		const struct edge_check *e = &h->edges[i];
		off += (size_t)snprintf(buf + off, off < len ? len - off : 0,
		                        "%s{\"name\":\"%s\",\"usable\":%s,\"check\":\"%s\","
		                        "\"member\":\"%s\",\"draining\":%s,\"checks\":%llu,"
		                        "\"failures\":%llu,\"last_error\":\"",
		                        i ? "," : "", e->cfg->name, e->usable ? "true" : "false",
		                        states[e->state], members[e->member],
		                        e->draining ? "true" : "false", e->checks, e->failures);
		/* The reason comes from OpenSSL or strerror: keep only plain characters. */
		for (const char *p = e->last_error; *p && off + 2 < len; p++)
			buf[off++] = (*p == '"' || *p == '\\' || (unsigned char)*p < 0x20) ? ' ' : *p;
		off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "\"}");
	}
	off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "]");
	return off < len ? off : (len ? len - 1 : 0);
}
