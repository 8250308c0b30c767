#include "conn.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accept.h"
#include "cfgu.h"
#include "htab.h"
#include "list.h"
#include "ppv2.h"
#include "xprt.h"

enum conn_state {
	CONN_PROXY_HEADER, /* inbound from the balancer: reading its PROXY v2 header */
	CONN_CONNECTING,  /* outbound: TCP connect and, for TLS, the handshake */
	CONN_HANDSHAKING, /* inbound TLS */
	CONN_UP,
	CONN_DRAINING,    /* last answer written, our side shut: reading to discard */
	CONN_CLOSING,
};

/*
 * How long a connection that we close after an error answer (513) keeps
 * reading and discarding: closing with unread data makes the kernel send a
 * reset, and a reset can destroy the answer before the peer reads it.
 */
#define DRAIN_SECONDS 2.0

/*
 * How long a destination whose connection failed before it came up (refused,
 * timed out, handshake failed) is tried only after the others.
 */
#define DEST_DOWN_SECONDS 30.0

/* How long a keep-alive ping may wait for its pong (at most the interval itself). */
#define PONG_WAIT_SECONDS 10.0

/* Enough for one TLS record: reads into the stack, copies only leftovers. */
#define READ_CHUNK 16384

struct pool;

struct conn {
	struct htab_node by_id;
	struct list_node pool_link;   /* in pool->conns, outbound only */
	struct list_node dead_link;   /* in mgr->dead once closing */
	struct conn_mgr *mgr;
	struct pool *pool;            /* outbound only */
	uint64_t id;
	enum conn_state state;
	enum conn_side side;
	int outbound;
	int close_after_flush;
	const char *close_reason;     /* a string literal, for on_down */
	struct xprt *xprt;
	const struct conn_limits *lim;
	ev_io io;
	ev_timer timer;               /* connect/handshake deadline, then keep-alive */
	ev_tstamp last_active;        /* the last traffic that counts (conn_limits) */
	int pinged;                   /* a keep-alive ping waits for its answer */

	char *rbuf;                   /* bytes of a message not yet whole */
	size_t rlen, rcap;
	char *wbuf;                   /* bytes queued for the peer */
	size_t woff, wlen, wcap;

	char peer_ip[INET6_ADDRSTRLEN];
	uint16_t peer_port;
	char peer_str[INET6_ADDRSTRLEN + 8];
	char via_ip[INET6_ADDRSTRLEN]; /* the balancer, when a PROXY header named the peer */
	char local_ip[INET6_ADDRSTRLEN];
	uint16_t local_port;
	void *user;
};

/* The outbound connections to one destination. */
struct pool {
	struct htab_node by_key;
	struct list_node conns;
	unsigned nconns;
	char *key;                    /* "tls:name:addr" */
	char *name;
	ev_tstamp down_until;         /* a connection failed before it came up */
};

struct listener {
	ev_io io;
	struct accept_rest rest;      /* out of file descriptors: accepting rests */
	struct conn_mgr *mgr;
	int fd;
	enum conn_side side;
	struct tls_ctx *tls;
	const struct conn_limits *lim;
	int proxied;                  /* conn_listen_proxied() */
	const struct cfgu_addr *from; /* the balancers */
	unsigned nfrom;
	struct listener *next;
};

struct conn_mgr {
	struct ev_loop *loop;
	const struct conn_handler *handler;
	void *ctx;
	unsigned max_conns;
	unsigned nconns;
	uint64_t next_id;
	struct htab conns;            /* by id */
	struct htab pools;            /* by key */
	struct listener *listeners;
	struct list_node dead;        /* closed, to free after this iteration */
	ev_prepare reaper;
	struct conn_stats stats;
};

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents);
static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents);
static void conn_update_events(struct conn *c);
static void conn_drain(struct conn *c);

/* ---- addresses ---- */

static void addr_to_str(const struct sockaddr_storage *ss, char *ip, size_t iplen, uint16_t *port)
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, ip, (socklen_t)iplen);
		*port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, ip, (socklen_t)iplen);
		*port = ntohs(s4->sin_port);
	}
}

/* "ip:port", or "[ip]:port" for IPv6. */
static void addr_to_hostport(const struct sockaddr_storage *ss, char *out, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	uint16_t port;
	addr_to_str(ss, ip, sizeof(ip), &port);
	snprintf(out, len, strchr(ip, ':') ? "[%s]:%u" : "%s:%u", ip, port);
}

static void conn_set_peer(struct conn *c, const struct sockaddr_storage *ss)
{
	addr_to_str(ss, c->peer_ip, sizeof(c->peer_ip), &c->peer_port);
	addr_to_hostport(ss, c->peer_str, sizeof(c->peer_str));
}

static void conn_fill_addrs(struct conn *c, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	if (getpeername(fd, (struct sockaddr *)&ss, &len) == 0)
		conn_set_peer(c, &ss);
	len = sizeof(ss);
	memset(&ss, 0, sizeof(ss));
	if (getsockname(fd, (struct sockaddr *)&ss, &len) == 0)
		addr_to_str(&ss, c->local_ip, sizeof(c->local_ip), &c->local_port);
}

/* Whether ss is one of the balancers (the address alone: their ports are ephemeral). */
static int addr_listed(const struct sockaddr_storage *ss, const struct cfgu_addr *list, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		const struct sockaddr_storage *a = &list[i].sa;
		if (a->ss_family != ss->ss_family)
			continue;
		if (ss->ss_family == AF_INET &&
		    ((const struct sockaddr_in *)a)->sin_addr.s_addr ==
		    ((const struct sockaddr_in *)ss)->sin_addr.s_addr)
			return 1;
		if (ss->ss_family == AF_INET6 &&
		    memcmp(&((const struct sockaddr_in6 *)a)->sin6_addr,
		           &((const struct sockaddr_in6 *)ss)->sin6_addr, sizeof(struct in6_addr)) == 0)
			return 1;
	}
	return 0;
}

/* ---- manager ---- */

static void reap_cb(struct ev_loop *loop, ev_prepare *w, int revents)
{
	struct conn_mgr *mgr = w->data;
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &mgr->dead) {
		struct conn *c = list_entry(n, struct conn, dead_link);
		list_del(&c->dead_link);
		free(c->rbuf);
		free(c->wbuf);
		free(c);
	}
}

struct conn_mgr *conn_mgr_new(struct ev_loop *loop, const struct conn_handler *handler,
                              void *ctx, unsigned max_conns)
{
	struct conn_mgr *mgr = calloc(1, sizeof(*mgr));
	if (!mgr)
		return NULL;
	mgr->loop = loop;
	mgr->handler = handler;
	mgr->ctx = ctx;
	mgr->max_conns = max_conns;
	mgr->next_id = 1;
	list_init(&mgr->dead);
	ev_prepare_init(&mgr->reaper, reap_cb);
	mgr->reaper.data = mgr;
	ev_prepare_start(loop, &mgr->reaper);
	ev_unref(loop); /* the reaper alone must not keep the loop running */
	return mgr;
}

static void close_one(struct htab_node *n, void *arg)
{
	conn_close((struct conn *)(void *)n, "shutting down");
}

static void free_pool(struct htab_node *n, void *arg)
{
	struct pool *p = (struct pool *)(void *)n;
	free(p->key);
	free(p->name);
	free(p);
}

void conn_mgr_free(struct conn_mgr *mgr)
{
	if (!mgr)
		return;
	while (mgr->listeners) {
		struct listener *l = mgr->listeners;
		mgr->listeners = l->next;
		ev_io_stop(mgr->loop, &l->io);
		accept_stop(mgr->loop, &l->rest);
		close(l->fd);
		free(l);
	}
	htab_foreach(&mgr->conns, close_one, NULL);
	reap_cb(mgr->loop, &mgr->reaper, 0);
	ev_ref(mgr->loop);
	ev_prepare_stop(mgr->loop, &mgr->reaper);
	htab_foreach(&mgr->pools, free_pool, NULL);
	htab_free(&mgr->pools);
	htab_free(&mgr->conns);
	free(mgr);
}

unsigned conn_mgr_count(const struct conn_mgr *mgr)
{
	return mgr->nconns;
}

void conn_mgr_stats(const struct conn_mgr *mgr, struct conn_stats *out)
{
	*out = mgr->stats;
}

static int id_eq(const struct htab_node *n, const void *key)
{
	return ((const struct conn *)(const void *)n)->id == *(const uint64_t *)key;
}

static uint64_t id_hash(uint64_t id)
{
	return htab_hash(HTAB_SEED, &id, sizeof(id));
}

struct conn *conn_find(struct conn_mgr *mgr, uint64_t id)
{
	struct htab_node *n = htab_find(&mgr->conns, id_hash(id), id_eq, &id);
	struct conn *c = (struct conn *)(void *)n;
	return c && c->state != CONN_CLOSING ? c : NULL;
}

/*
 * A new connection on fd (owned by the connection from now on); proxied:
 * a PROXY header comes first.
 */
static struct conn *conn_new(struct conn_mgr *mgr, int fd, enum conn_side side, int outbound,
                             int proxied, struct tls_ctx *tls, const char *name,
                             const struct conn_limits *lim)
{
	struct conn *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return NULL;
	}
	c->xprt = tls ? tls_xprt_new(tls, fd, name) : xprt_tcp_new(fd);
	if (!c->xprt) {
		if (!tls)
			close(fd);
		free(c);
		return NULL;
	}
	c->mgr = mgr;
	c->id = mgr->next_id++;
	c->side = side;
	c->outbound = outbound;
	c->lim = lim;
	c->state = outbound ? CONN_CONNECTING : proxied ? CONN_PROXY_HEADER
	         : tls ? CONN_HANDSHAKING : CONN_UP;
	c->last_active = ev_now(mgr->loop);
	if (!outbound)
		conn_fill_addrs(c, fd);
	htab_insert(&mgr->conns, &c->by_id, id_hash(c->id));
	mgr->nconns++;

	ev_io_init(&c->io, conn_io_cb, fd, outbound ? EV_WRITE : EV_READ);
	c->io.data = c;
	ev_io_start(mgr->loop, &c->io);
	ev_init(&c->timer, conn_timer_cb);
	c->timer.data = c;
	c->timer.repeat = c->state == CONN_UP ? lim->keepalive_s
	                                      : lim->connect_timeout_ms / 1000.0;
	ev_timer_again(mgr->loop, &c->timer);
	return c;
}

/* report 0: the handler never saw the connection, and is not told of its end. */
static void conn_close_as(struct conn *c, int failed, int report, const char *why)
{
	if (c->state == CONN_CLOSING)
		return;
	struct conn_mgr *mgr = c->mgr;
	if (failed && c->pool && c->state == CONN_CONNECTING)
		c->pool->down_until = ev_now(mgr->loop) + DEST_DOWN_SECONDS;
	c->state = CONN_CLOSING;
	ev_io_stop(mgr->loop, &c->io);
	ev_timer_stop(mgr->loop, &c->timer);
	if (c->pool) {
		list_del(&c->pool_link);
		c->pool->nconns--;
		c->pool = NULL;
	}
	htab_remove(&mgr->conns, &c->by_id);
	mgr->nconns--;
	if (report)
		mgr->handler->on_down(mgr->ctx, c, failed, why);
	c->xprt->ops->destroy(c->xprt);
	c->xprt = NULL;
	list_add_tail(&mgr->dead, &c->dead_link);
}

void conn_close(struct conn *c, const char *why)
{
	conn_close_as(c, 0, 1, why);
}

void conn_fail(struct conn *c, const char *why)
{
	conn_close_as(c, 1, 1, why);
}

void conn_close_after_flush(struct conn *c, const char *why)
{
	if (c->state != CONN_UP)
		return;
	c->close_after_flush = 1;
	c->close_reason = why;
	if (c->wlen == c->woff)
		conn_drain(c);
	else
		conn_update_events(c);
}

/* ---- writing ---- */

static void conn_update_events(struct conn *c)
{
	if (c->state != CONN_UP)
		return; /* the handshake sets its own events */
	int want = c->close_after_flush ? 0 : EV_READ;
	if (c->wlen > c->woff)
		want |= EV_WRITE;
	if ((c->io.events & (EV_READ | EV_WRITE)) != want || !ev_is_active(&c->io)) {
		ev_io_stop(c->mgr->loop, &c->io);
		ev_io_set(&c->io, c->io.fd, want);
		if (want)
			ev_io_start(c->mgr->loop, &c->io);
	}
}

/* Shuts our side and discards what the peer still sends, for DRAIN_SECONDS. */
static void conn_drain(struct conn *c)
{
	struct ev_loop *loop = c->mgr->loop;
	c->state = CONN_DRAINING;
	c->xprt->ops->shutdown(c->xprt);
	ev_io_stop(loop, &c->io);
	ev_io_set(&c->io, c->io.fd, EV_READ);
	ev_io_start(loop, &c->io);
	ev_timer_stop(loop, &c->timer);
	c->timer.repeat = DRAIN_SECONDS;
	ev_timer_again(loop, &c->timer);
}

/* Discards raw bytes: nothing read after the last answer is ever parsed. */
static void conn_discard(struct conn *c)
{
	char sink[READ_CHUNK];
	ssize_t n;
	while ((n = recv(c->io.fd, sink, sizeof(sink), 0)) > 0)
		;
	if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
		conn_close(c, c->close_reason);
}

/* Writes what is queued. Returns 0, or -1 when an error closed the connection. */
static int conn_flush(struct conn *c)
{
	while (c->woff < c->wlen) {
		ssize_t n = c->xprt->ops->send(c->xprt, c->wbuf + c->woff, c->wlen - c->woff);
		if (n == XPRT_WANT_WRITE || n == XPRT_WANT_READ)
			break;
		if (n < 0) {
			conn_fail(c, c->xprt->error[0] ? c->xprt->error : "send failed");
			return -1;
		}
		c->woff += (size_t)n;
	}
	if (c->woff == c->wlen) {
		c->woff = c->wlen = 0;
		/* An idle connection keeps no buffers. */
		free(c->wbuf);
		c->wbuf = NULL;
		c->wcap = 0;
		if (c->close_after_flush) {
			conn_drain(c); /* all written: what is left is the lingering close */
			return 0;
		}
	}
	conn_update_events(c);
	return 0;
}

int conn_send(struct conn *c, const char *data, size_t len)
{
	if (c->state == CONN_CLOSING || c->state == CONN_DRAINING)
		return -1;
	/* A peer that stops reading must not make us buffer without end; one
	 * message of any allowed size still fits behind a short backlog. */
	size_t cap = 4 * c->lim->sip.max_msg_bytes + (1u << 20);
	if (c->wlen - c->woff > cap) {
		conn_fail(c, "peer does not read: send queue full");
		return -1;
	}
	if (c->wlen + len > c->wcap) {
		if (c->woff > 0) {
			memmove(c->wbuf, c->wbuf + c->woff, c->wlen - c->woff);
			c->wlen -= c->woff;
			c->woff = 0;
		}
		size_t ncap = c->wcap ? c->wcap : 4096;
		while (ncap < c->wlen + len)
			ncap *= 2;
		char *nb = realloc(c->wbuf, ncap);
		if (!nb) {
			conn_fail(c, "out of memory");
			return -1;
		}
		c->wbuf = nb;
		c->wcap = ncap;
	}
	memcpy(c->wbuf + c->wlen, data, len);
	c->wlen += len;
	if (c->state != CONN_UP)
		return 0;
	return conn_flush(c);
}

int conn_send_msg(struct conn *c, const struct sip_msg *m)
{
	size_t size = sip_msg_size(m);
	char stackbuf[8192];
	char *buf = size <= sizeof(stackbuf) ? stackbuf : malloc(size);
	if (!buf) {
		conn_fail(c, "out of memory");
		return -1;
	}
	size_t n = sip_msg_write(m, buf);
	int rc = conn_send(c, buf, n);
	if (buf != stackbuf)
		free(buf);
	return rc;
}

/* ---- reading ---- */

/* Traffic that proves the peer alive. */
static void conn_touch(struct conn *c)
{
	c->last_active = ev_now(c->mgr->loop);
	c->pinged = 0;
}

/*
 * Frames and dispatches the messages in buf. Returns the bytes consumed, or
 * -1 when the connection closed meanwhile.
 */
static ssize_t conn_dispatch(struct conn *c, const char *buf, size_t len)
{
	const struct conn_handler *h = c->mgr->handler;
	void *ctx = c->mgr->ctx;
	size_t off = 0;
	while (off < len && c->state == CONN_UP && !c->close_after_flush) {
		size_t used = 0;
		enum sip_frame_result fr = sip_frame(buf + off, len - off, &c->lim->sip, &used);
		struct sip_msg *msg = NULL;
		int rc;
		switch (fr) {
		case SIP_FRAME_MORE:
			return (ssize_t)off;
		case SIP_FRAME_PING:
			if (c->lim->whitespace_keepalive)
				conn_touch(c);
			if (conn_send(c, "\r\n", 2) < 0)
				return -1;
			break;
		case SIP_FRAME_PONG:
			if (c->lim->whitespace_keepalive)
				conn_touch(c);
			break;
		case SIP_FRAME_MSG:
			conn_touch(c);
			rc = sip_msg_parse(buf + off, used, &c->lim->sip, &msg);
			if (rc == SIP_OK)
				h->on_message(ctx, c, msg);
			else
				h->on_bad_message(ctx, c, msg, rc);
			break;
		case SIP_FRAME_TOO_LARGE:
			if (used > 0) {
				/* Parse the headers alone, so that a 513 can be addressed. */
				struct sip_limits hdr_only = c->lim->sip;
				hdr_only.max_msg_bytes = used;
				sip_msg_parse(buf + off, used, &hdr_only, &msg);
			}
			h->on_bad_message(ctx, c, msg, SIP_ERR_TOO_LARGE);
			conn_close_after_flush(c, "message too large");
			return c->state == CONN_CLOSING ? -1 : (ssize_t)len;
		case SIP_FRAME_BAD:
			conn_fail(c, "broken framing: bad Content-Length");
			return -1;
		}
		off += used;
	}
	return c->state == CONN_CLOSING ? -1 : (ssize_t)off;
}

static int rbuf_append(struct conn *c, const char *data, size_t len)
{
	if (c->rlen + len > c->rcap) {
		size_t ncap = c->rcap ? c->rcap : READ_CHUNK;
		while (ncap < c->rlen + len)
			ncap *= 2;
		char *nb = realloc(c->rbuf, ncap);
		if (!nb)
			return -1;
		c->rbuf = nb;
		c->rcap = ncap;
	}
	memcpy(c->rbuf + c->rlen, data, len);
	c->rlen += len;
	return 0;
}

/* Reads until the transport would block. Returns -1 when the connection closed. */
static int conn_read(struct conn *c)
{
	char chunk[READ_CHUNK];
	while (c->state == CONN_UP && !c->close_after_flush) {
		ssize_t n = c->xprt->ops->recv(c->xprt, chunk, sizeof(chunk));
		if (n == XPRT_WANT_READ || n == XPRT_WANT_WRITE)
			return 0;
		if (n == XPRT_CLOSED) {
			if (c->rlen)
				conn_fail(c, "closed by peer inside a message");
			else
				conn_close(c, "closed by peer");
			return -1;
		}
		if (n < 0) {
			conn_fail(c, c->xprt->error[0] ? c->xprt->error : "read failed");
			return -1;
		}
		const char *data = chunk;
		size_t len = (size_t)n;
		if (c->rlen > 0) {
			if (rbuf_append(c, chunk, len) < 0) {
				conn_fail(c, "out of memory");
				return -1;
			}
			data = c->rbuf;
			len = c->rlen;
		}
		ssize_t used = conn_dispatch(c, data, len);
		if (used < 0)
			return -1;
		size_t left = len - (size_t)used;
		if (c->rlen > 0) {
			memmove(c->rbuf, c->rbuf + used, left);
			c->rlen = left;
		} else if (left > 0 && rbuf_append(c, data + used, left) < 0) {
			conn_fail(c, "out of memory");
			return -1;
		}
		if (c->rlen == 0 && c->rbuf) {
			free(c->rbuf);
			c->rbuf = NULL;
			c->rcap = 0;
		}
	}
	return c->state == CONN_CLOSING ? -1 : 0;
}

/* ---- the balancer's PROXY header ---- */

/*
 * Ends a connection whose PROXY header failed: counted and reported once,
 * through on_refused, and never through on_down, as nothing else was.
 */
static void conn_refuse(struct conn *c, enum conn_refusal what, const char *why)
{
	struct conn_mgr *mgr = c->mgr;
	if (what == CONN_REFUSED_HEADER)
		mgr->stats.proxy_header_failures++;
	if (mgr->handler->on_refused)
		mgr->handler->on_refused(mgr->ctx, c->peer_str, what, why);
	conn_close_as(c, 1, 0, why);
}

/* The header is in: its source becomes the peer, unless it is the balancer's own (LOCAL). */
static void conn_take_header(struct conn *c, const struct ppv2_header *h)
{
	c->mgr->stats.proxy_headers++;
	if (h->command == PPV2_PROXY) {
		memcpy(c->via_ip, c->peer_ip, sizeof(c->via_ip));
		conn_set_peer(c, &h->src);
	}
	free(c->rbuf);
	c->rbuf = NULL;
	c->rlen = c->rcap = 0;
	/* The deadline runs on: header and handshake together get connect_timeout_ms. */
	c->state = conn_is_tls(c) ? CONN_HANDSHAKING : CONN_UP;
	if (c->state == CONN_UP) {
		c->last_active = ev_now(c->mgr->loop);
		ev_timer_stop(c->mgr->loop, &c->timer);
		c->timer.repeat = c->lim->keepalive_s;
		ev_timer_again(c->mgr->loop, &c->timer);
	}
}

static void conn_handshake(struct conn *c);

/*
 * Reads the PROXY header into rbuf, never a byte past it (ppv2_wanted()):
 * what follows is the partner's TLS, which OpenSSL reads from the socket.
 * Reading rather than peeking, so that a partial header does not keep the
 * socket readable and the loop spinning.
 */
static void conn_read_proxy_header(struct conn *c)
{
	if (!c->rbuf) {
		if (!(c->rbuf = malloc(PPV2_MAX_LEN))) {
			conn_refuse(c, CONN_REFUSED_HEADER, "out of memory for the PROXY header");
			return;
		}
		c->rcap = PPV2_MAX_LEN;
	}
	const uint8_t *buf = (const uint8_t *)c->rbuf;
	for (;;) {
		size_t want = ppv2_wanted(buf, c->rlen);
		if (want <= c->rlen || want > c->rcap) { /* ppv2_parse() refused it first */
			conn_refuse(c, CONN_REFUSED_HEADER, "PROXY header of a bad length");
			return;
		}
		ssize_t n = recv(c->io.fd, c->rbuf + c->rlen, want - c->rlen, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return;
		if (n <= 0) {
			char why[128];
			int empty = c->rlen == 0;
			snprintf(why, sizeof(why), "%s the PROXY header%s%s",
			         empty ? "closed before" : "closed inside", n < 0 ? ": " : "",
			         n < 0 ? strerror(errno) : "");
			conn_refuse(c, empty ? CONN_REFUSED_EMPTY : CONN_REFUSED_HEADER, why);
			return;
		}
		c->rlen += (size_t)n;
		struct ppv2_header h;
		int rc = ppv2_parse(buf, c->rlen, &h);
		if (rc < 0) {
			conn_refuse(c, CONN_REFUSED_HEADER, ppv2_strerror(rc));
			return;
		}
		if (rc > 0) {
			conn_take_header(c, &h);
			if (c->state == CONN_HANDSHAKING)
				conn_handshake(c);
			else
				conn_read(c);
			return;
		}
	}
}

/* ---- state machine ---- */

static void conn_established(struct conn *c)
{
	c->state = CONN_UP;
	c->last_active = ev_now(c->mgr->loop);
	if (c->outbound)
		conn_fill_addrs(c, c->io.fd);
	ev_timer_stop(c->mgr->loop, &c->timer);
	c->timer.repeat = c->lim->keepalive_s;
	ev_timer_again(c->mgr->loop, &c->timer);
	c->mgr->handler->on_up(c->mgr->ctx, c);
}

static void conn_handshake(struct conn *c)
{
	int rc = c->xprt->ops->handshake(c->xprt);
	if (rc == XPRT_WANT_READ || rc == XPRT_WANT_WRITE) {
		int want = rc == XPRT_WANT_READ ? EV_READ : EV_WRITE;
		if ((c->io.events & (EV_READ | EV_WRITE)) != want) {
			ev_io_stop(c->mgr->loop, &c->io);
			ev_io_set(&c->io, c->io.fd, want);
			ev_io_start(c->mgr->loop, &c->io);
		}
		return;
	}
	if (rc < 0) {
		conn_fail(c, c->xprt->error[0] ? c->xprt->error : "handshake failed");
		return;
	}
	conn_established(c);
	if (c->state == CONN_UP && conn_flush(c) == 0)
		conn_read(c);
}

static void conn_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	if (c->state == CONN_PROXY_HEADER) {
		conn_read_proxy_header(c);
		return;
	}
	if (c->state == CONN_CONNECTING || c->state == CONN_HANDSHAKING) {
		conn_handshake(c);
		return;
	}
	if (c->state == CONN_DRAINING) {
		conn_discard(c);
		return;
	}
	if ((revents & EV_WRITE) && conn_flush(c) < 0)
		return;
	if ((revents & EV_READ) && conn_read(c) < 0)
		return;
	/* TLS may want the other direction than the one that fired. */
	if (c->wlen > c->woff)
		conn_flush(c);
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct conn *c = w->data;
	if (c->state == CONN_PROXY_HEADER) {
		conn_refuse(c, CONN_REFUSED_HEADER, "timeout waiting for the PROXY header");
		return;
	}
	if (c->state == CONN_CONNECTING) {
		conn_fail(c, "connect timeout");
		return;
	}
	if (c->state == CONN_HANDSHAKING) {
		conn_fail(c, "TLS handshake timeout");
		return;
	}
	if (c->state == CONN_DRAINING) {
		conn_close(c, c->close_reason);
		return;
	}
	/* The check the cheap way: one timer, rearmed from the last traffic. */
	double interval = c->lim->keepalive_s;
	ev_tstamp idle_for = ev_now(loop) - c->last_active;
	if (c->pinged) {
		conn_fail(c, "no answer to a keep-alive ping");
		return;
	}
	if (idle_for >= interval && c->wlen == c->woff) {
		if (!c->lim->whitespace_keepalive) {
			conn_close(c, "idle timeout");
			return;
		}
		if (conn_send(c, "\r\n\r\n", 4) < 0)
			return;
		c->pinged = 1;
		w->repeat = interval < PONG_WAIT_SECONDS ? interval : PONG_WAIT_SECONDS;
	} else {
		w->repeat = interval - idle_for;
		if (w->repeat < 1)
			w->repeat = 1;
	}
	ev_timer_again(loop, w);
}

/* ---- listening ---- */

static void listener_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	struct conn_mgr *mgr = l->mgr;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage ss;
		socklen_t sslen = sizeof(ss);
		memset(&ss, 0, sizeof(ss));
		int fd = accept_next(mgr->loop, &l->rest, (struct sockaddr *)&ss, &sslen);
		if (fd < 0)
			return; /* nothing pending, or resting: out of file descriptors */
		/* Anyone else could claim any source: closed before a byte is read. */
		if (l->proxied && !addr_listed(&ss, l->from, l->nfrom)) {
			char from[INET6_ADDRSTRLEN + 8];
			close(fd);
			mgr->stats.proxy_refused++;
			addr_to_hostport(&ss, from, sizeof(from));
			if (mgr->handler->on_refused)
				mgr->handler->on_refused(mgr->ctx, from, CONN_REFUSED_SOURCE,
				                         "not a balancer in proxy_from");
			continue;
		}
		int over_limit = mgr->nconns >= mgr->max_conns;
		int one = 1;
		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct conn *c = conn_new(mgr, fd, l->side, 0, l->proxied, l->tls, NULL, l->lim);
		if (c && over_limit)
			conn_fail(c, "connection limit reached"); /* reported, with the peer */
		else if (c && c->state == CONN_HANDSHAKING)
			conn_handshake(c);
	}
}

static struct listener *listen_on(struct conn_mgr *mgr, const struct sockaddr *addr,
                                  socklen_t len, enum conn_side side, struct tls_ctx *tls,
                                  const struct conn_limits *lim, char *err, size_t errlen)
{
	char ip[INET6_ADDRSTRLEN];
	uint16_t port;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, addr, len);
	addr_to_str(&ss, ip, sizeof(ip), &port);

	int fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return NULL;
	}
	int one = 1;
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (addr->sa_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, addr, len) < 0 || listen(fd, 1024) < 0) {
		snprintf(err, errlen, "listen on %s port %u: %s", ip, port, strerror(errno));
		close(fd);
		return NULL;
	}
	struct listener *l = calloc(1, sizeof(*l));
	if (!l) {
		close(fd);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->mgr = mgr;
	l->fd = fd;
	l->side = side;
	l->tls = tls;
	l->lim = lim;
	ev_io_init(&l->io, listener_cb, fd, EV_READ);
	l->io.data = l;
	accept_init(&l->rest, &l->io);
	ev_io_start(mgr->loop, &l->io);
	l->next = mgr->listeners;
	mgr->listeners = l;
	return l;
}

int conn_listen(struct conn_mgr *mgr, const struct sockaddr *addr, socklen_t len,
                enum conn_side side, struct tls_ctx *tls, const struct conn_limits *lim,
                char *err, size_t errlen)
{
	return listen_on(mgr, addr, len, side, tls, lim, err, errlen) ? 0 : -1;
}

int conn_listen_proxied(struct conn_mgr *mgr, const struct sockaddr *addr, socklen_t len,
                        enum conn_side side, struct tls_ctx *tls, const struct conn_limits *lim,
                        const struct cfgu_addr *from, unsigned nfrom, char *err, size_t errlen)
{
	struct listener *l = listen_on(mgr, addr, len, side, tls, lim, err, errlen);
	if (!l)
		return -1;
	l->proxied = 1;
	l->from = from;
	l->nfrom = nfrom;
	return 0;
}

/* ---- outbound pools ---- */

static int pool_eq(const struct htab_node *n, const void *key)
{
	return strcmp(((const struct pool *)(const void *)n)->key, key) == 0;
}

/* The pool key of d in key; returns its hash. */
static uint64_t pool_key(const struct conn_dest *d, char *key, size_t len)
{
	char ip[INET6_ADDRSTRLEN];
	uint16_t port;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, d->addr, d->addrlen);
	addr_to_str(&ss, ip, sizeof(ip), &port);
	snprintf(key, len, "%s:%s:%s:%u", d->tls ? "tls" : "tcp", d->name, ip, port);
	return htab_hash(HTAB_SEED, key, strlen(key));
}

int conn_dest_down(struct conn_mgr *mgr, const struct conn_dest *d)
{
	char key[512];
	uint64_t h = pool_key(d, key, sizeof(key));
	const struct pool *p = (const struct pool *)(const void *)htab_find(&mgr->pools, h, pool_eq, key);
	return p && p->down_until > ev_now(mgr->loop);
}

static struct pool *pool_get(struct conn_mgr *mgr, const struct conn_dest *d)
{
	char key[512];
	uint64_t h = pool_key(d, key, sizeof(key));
	struct htab_node *n = htab_find(&mgr->pools, h, pool_eq, key);
	if (n)
		return (struct pool *)(void *)n;
	struct pool *p = calloc(1, sizeof(*p));
	if (!p)
		return NULL;
	p->key = strdup(key);
	p->name = strdup(d->name);
	if (!p->key || !p->name) {
		free(p->key);
		free(p->name);
		free(p);
		return NULL;
	}
	list_init(&p->conns);
	htab_insert(&mgr->pools, &p->by_key, h);
	return p;
}

static struct conn *conn_connect(struct conn_mgr *mgr, struct pool *p,
                                 const struct conn_dest *d, char *err, size_t errlen)
{
	if (mgr->nconns >= mgr->max_conns) {
		snprintf(err, errlen, "connection limit (%u) reached", mgr->max_conns);
		return NULL;
	}
	int fd = socket(d->addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(err, errlen, "socket: %s", strerror(errno));
		return NULL;
	}
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if (connect(fd, d->addr, d->addrlen) < 0 && errno != EINPROGRESS) {
		snprintf(err, errlen, "connect to %s: %s", d->name, strerror(errno));
		close(fd);
		return NULL;
	}
	struct conn *c = conn_new(mgr, fd, d->side, 1, 0, d->tls, d->name, d->lim);
	if (!c) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	memcpy(&ss, d->addr, d->addrlen);
	conn_set_peer(c, &ss);
	c->pool = p;
	list_add_tail(&p->conns, &c->pool_link);
	p->nconns++;
	return c;
}

struct conn *conn_pool_get(struct conn_mgr *mgr, const struct conn_dest *dest,
                           char *err, size_t errlen)
{
	struct pool *p = pool_get(mgr, dest);
	if (!p) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	struct conn *best = NULL;
	struct list_node *n, *tmp;
	list_for_each_safe(n, tmp, &p->conns) {
		struct conn *c = list_entry(n, struct conn, pool_link);
		if (c->state == CONN_DRAINING)
			continue;
		if (c->state == CONN_UP && c->wlen == c->woff)
			return c; /* established and idle: the cheapest choice */
		if (!best || c->wlen - c->woff < best->wlen - best->woff)
			best = c;
	}
	/* Open more connections only under load, up to the count allowed. */
	if (p->nconns < dest->max_conns)
		return conn_connect(mgr, p, dest, err, errlen);
	return best;
}

/* ---- accessors ---- */

uint64_t conn_id(const struct conn *c) { return c->id; }
enum conn_side conn_side(const struct conn *c) { return c->side; }
int conn_is_up(const struct conn *c) { return c->state == CONN_UP; }
int conn_is_outbound(const struct conn *c) { return c->outbound; }
const char *conn_peer_ip(const struct conn *c) { return c->peer_ip; }
uint16_t conn_peer_port(const struct conn *c) { return c->peer_port; }
const char *conn_peer_str(const struct conn *c) { return c->peer_str; }
const char *conn_via(const struct conn *c) { return c->via_ip[0] ? c->via_ip : NULL; }
const char *conn_local_ip(const struct conn *c) { return c->local_ip; }
uint16_t conn_local_port(const struct conn *c) { return c->local_port; }
const char *conn_dest_name(const struct conn *c) { return c->pool ? c->pool->name : NULL; }
void conn_set_user(struct conn *c, void *user) { c->user = user; }
void *conn_user(const struct conn *c) { return c->user; }

int conn_is_tls(const struct conn *c)
{
	return c->xprt && strcmp(c->xprt->ops->name, "tls") == 0;
}

const char *conn_transport(const struct conn *c)
{
	return conn_is_tls(c) ? "TLS" : "TCP";
}

const char *const *conn_peer_names(const struct conn *c, unsigned *n)
{
	*n = 0;
	return c->xprt ? c->xprt->ops->peer_names(c->xprt, n) : NULL;
}
