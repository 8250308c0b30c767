#include "bal_dnsd.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accept.h"
#include "list.h"

#define UDP_BATCH 64           /* datagrams answered per wakeup, so that TCP gets its turn */
#define ACCEPT_BATCH 16
#define TCP_BACKLOG 128
#define TCP_MSG_MAX 65535u     /* what a 2-byte length can say (RFC 7766 8) */
#define IN_MIN 1024            /* a TCP read: room for a few pipelined queries */
#define BIND_TRIES 16          /* port 0: tries to find one free for both UDP and TCP */

struct listener {
	struct bal_dnsd *srv;
	int udp, tcp;
	ev_io udp_io, tcp_io;
	struct accept_rest rest;   /* accepting again after EMFILE */
	int pktinfo;               /* bound to a wildcard: replies name the address asked */
	uint16_t port;
};

/* A TCP client. Its timer closes it when idle (see bal_dnsd.h for what counts). */
struct conn {
	struct list_node link;
	struct bal_dnsd *srv;
	int fd;
	ev_io io;
	ev_timer timer;
	uint8_t *in;               /* bytes read, not yet answered: whole messages and a part */
	size_t inlen, incap;
	uint8_t *out;              /* framed answers, sent from outoff */
	size_t outlen, outoff, outcap;
	int eof;                   /* the client is done sending: answer what came, then close */
};

struct bal_dnsd {
	struct ev_loop *loop;
	struct bal_dns *dns;
	struct listener *ls;
	unsigned nls;
	struct list_node conns;
	unsigned max_tcp;
	double idle;
	struct bal_dnsd_stats stats;
	uint8_t query[TCP_MSG_MAX + 1];  /* a datagram (one byte more: too long ones are seen) */
	uint8_t answer[TCP_MSG_MAX];     /* the answer being built */
};

/* ---- TCP connections ---- */

enum close_why { CLOSE_DONE, CLOSE_IDLE, CLOSE_BAD };

/*
 * Releases c. Callers return at once: c no longer exists. Freeing c in its
 * own watcher's callback is safe with libev once both watchers are stopped
 * (a pending event of the other one is cleared by its stop), as common/status.c
 * and cluster/clu_node.c do.
 */
static void conn_close(struct conn *c, enum close_why why)
{
	struct bal_dnsd *s = c->srv;
	if (why == CLOSE_IDLE)
		s->stats.tcp_idle_closed++;
	else if (why == CLOSE_BAD)
		s->stats.tcp_bad_closed++;
	s->stats.tcp_clients--;
	list_del(&c->link);
	ev_io_stop(s->loop, &c->io);
	ev_timer_stop(s->loop, &c->timer);
	close(c->fd);
	free(c->in); c->in = NULL;
	free(c->out); c->out = NULL;
	free(c);
}

static size_t out_pending(const struct conn *c)
{
	return c->outlen - c->outoff;
}

/* Appends a framed answer. Returns 0, or -1 out of memory. */
static int out_put(struct conn *c, const uint8_t *a, size_t alen)
{
	if (c->outoff > 0) {
		memmove(c->out, c->out + c->outoff, c->outlen - c->outoff);
		c->outlen -= c->outoff;
		c->outoff = 0;
	}
	if (c->outcap - c->outlen < 2 + alen) {
		size_t cap = c->outlen + 2 + alen;
		uint8_t *grown = realloc(c->out, cap);
		if (!grown)
			return -1;
		c->out = grown;
		c->outcap = cap;
	}
	c->out[c->outlen] = (uint8_t)(alen >> 8);
	c->out[c->outlen + 1] = (uint8_t)alen;
	memcpy(c->out + c->outlen + 2, a, alen);
	c->outlen += 2 + alen;
	return 0;
}

/* Sends what it can of the answers. Returns 0, or -1 when the connection failed. */
static int conn_flush(struct conn *c)
{
	while (c->outoff < c->outlen) {
		ssize_t k = send(c->fd, c->out + c->outoff, c->outlen - c->outoff,
		                 MSG_NOSIGNAL | MSG_DONTWAIT);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		if (k <= 0)
			return -1;
		c->outoff += (size_t)k;
	}
	if (c->outlen > 0) {
		/* All sent: the client reads, it is not idle. A large buffer is not kept. */
		c->outlen = c->outoff = 0;
		if (c->outcap > IN_MIN) {
			free(c->out); c->out = NULL;
			c->outcap = 0;
		}
		ev_timer_again(c->srv->loop, &c->timer);
	}
	return 0;
}

/*
 * Answers the whole messages of c->in, in order, while the answers waiting
 * stay under BAL_DNSD_TCP_OUT_MAX. Returns 0, or -1 for a length of 0 (no
 * DNS message is empty) or out of memory.
 */
static int conn_answer(struct conn *c)
{
	struct bal_dnsd *s = c->srv;
	size_t off = 0;
	int rc = 0;
	while (c->inlen - off >= 2 && out_pending(c) < BAL_DNSD_TCP_OUT_MAX) {
		size_t len = (size_t)c->in[off] << 8 | c->in[off + 1];
		if (len == 0) {
			rc = -1;
			break;
		}
		if (c->inlen - off - 2 < len)
			break;
		s->stats.tcp_queries++;
		size_t alen = bal_dns_answer(s->dns, c->in + off + 2, len, 1, s->answer,
		                             sizeof(s->answer));
		off += 2 + len;
		ev_timer_again(s->loop, &c->timer); /* a whole query: the client is alive */
		if (alen && out_put(c, s->answer, alen) < 0) {
			rc = -1;
			break;
		}
		if (alen)
			s->stats.tcp_answers++;
	}
	if (off > 0) {
		memmove(c->in, c->in + off, c->inlen - off);
		c->inlen -= off;
	}
	if (c->inlen == 0 && c->incap > IN_MIN) {
		free(c->in); c->in = NULL;
		c->incap = 0;
	}
	return rc;
}

/* Room for the message that c->in begins (or IN_MIN). Returns 0, or -1 out of memory. */
static int in_room(struct conn *c)
{
	size_t need = IN_MIN;
	if (c->inlen >= 2) {
		size_t msg = 2 + ((size_t)c->in[0] << 8 | c->in[1]);
		if (msg > need)
			need = msg;
	}
	if (c->incap >= need && c->incap > c->inlen)
		return 0;
	if (need <= c->inlen)
		need = c->inlen + IN_MIN;
	uint8_t *grown = realloc(c->in, need);
	if (!grown)
		return -1;
	c->in = grown;
	c->incap = need;
	return 0;
}

/*
 * Sends answers and answers the whole messages already read, until the
 * socket is full or nothing more can be answered. Returns 0, or -1 when the
 * connection failed or the client sent a bad frame (c still exists).
 */
static int conn_work(struct conn *c)
{
	for (;;) {
		if (conn_flush(c) < 0)
			return -1;
		if (out_pending(c) >= BAL_DNSD_TCP_OUT_MAX)
			return 0;
		size_t before = c->inlen;
		if (conn_answer(c) < 0) {
			(void)conn_flush(c); /* what came before the bad frame is answered, if it can be */
			return -1;
		}
		if (c->inlen == before)
			return 0;
	}
}

static void conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct conn *c = w->data;
	if (conn_work(c) < 0) {
		conn_close(c, CLOSE_BAD);
		return;
	}
	while (!c->eof && out_pending(c) < BAL_DNSD_TCP_OUT_MAX) {
		if (in_room(c) < 0) {
			conn_close(c, CLOSE_BAD);
			return;
		}
		ssize_t k = recv(c->fd, c->in + c->inlen, c->incap - c->inlen, 0);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (k < 0) {
			conn_close(c, CLOSE_BAD);
			return;
		}
		if (k == 0)
			c->eof = 1; /* a half-close (RFC 7766 6.2.3 allows it): answer, then close */
		c->inlen += (size_t)k;
		if (conn_answer(c) < 0) {
			(void)conn_flush(c);
			conn_close(c, CLOSE_BAD);
			return;
		}
	}
	if (conn_work(c) < 0) {
		conn_close(c, CLOSE_BAD);
		return;
	}
	if (c->eof && out_pending(c) == 0) {
		/* What was answerable is answered; a part of a message left is a cut one. */
		conn_close(c, c->inlen ? CLOSE_BAD : CLOSE_DONE);
		return;
	}
	int want = (out_pending(c) ? EV_WRITE : 0) |
	           (!c->eof && out_pending(c) < BAL_DNSD_TCP_OUT_MAX ? EV_READ : 0);
	if (want != (c->io.events & (EV_READ | EV_WRITE))) {
		ev_io_stop(loop, &c->io);
		ev_io_set(&c->io, c->fd, want);
		ev_io_start(loop, &c->io);
	}
}

static void conn_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	conn_close(w->data, CLOSE_IDLE);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	struct bal_dnsd *s = l->srv;
	for (int i = 0; i < ACCEPT_BATCH; i++) {
		int fd = accept_next(loop, &l->rest, NULL, NULL);
		if (fd < 0)
			return;
		struct conn *c = s->stats.tcp_clients < s->max_tcp ? calloc(1, sizeof(*c)) : NULL;
		if (!c) {
			/* Past the limit, a client costs an accept and a close, never a state. */
			close(fd);
			s->stats.tcp_refused++;
			continue;
		}
		c->srv = s;
		c->fd = fd;
		list_add_tail(&s->conns, &c->link);
		ev_io_init(&c->io, conn_cb, fd, EV_READ);
		c->io.data = c;
		ev_io_start(loop, &c->io);
		ev_init(&c->timer, conn_timer_cb);
		c->timer.repeat = s->idle;
		c->timer.data = c;
		ev_timer_again(loop, &c->timer);
		s->stats.tcp_accepted++;
		s->stats.tcp_clients++;
	}
}

/* ---- UDP ---- */

/* A control message big enough for either family's packet info. */
union pktinfo_buf {
	char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
	struct cmsghdr align;
};

/*
 * The control message that makes the answer leave from the address the query
 * was sent to, as a client expects, when the socket is bound to a wildcard.
 * Returns its length in ctl (0: none).
 */
static size_t reply_source(struct msghdr *in, union pktinfo_buf *ctl)
{
	for (struct cmsghdr *cm = CMSG_FIRSTHDR(in); cm; cm = CMSG_NXTHDR(in, cm)) {
		struct cmsghdr *o = (struct cmsghdr *)ctl->buf;
		if (cm->cmsg_level == IPPROTO_IP && cm->cmsg_type == IP_PKTINFO) {
			struct in_pktinfo pi;
			memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
			pi.ipi_spec_dst = pi.ipi_addr;
			pi.ipi_ifindex = 0; /* the route decides the interface, as for any reply */
			memset(ctl, 0, sizeof(*ctl));
			o->cmsg_level = IPPROTO_IP;
			o->cmsg_type = IP_PKTINFO;
			o->cmsg_len = CMSG_LEN(sizeof(pi));
			memcpy(CMSG_DATA(o), &pi, sizeof(pi));
			return CMSG_SPACE(sizeof(pi));
		}
		if (cm->cmsg_level == IPPROTO_IPV6 && cm->cmsg_type == IPV6_PKTINFO) {
			struct in6_pktinfo pi; /* the interface is kept: link-local addresses need it */
			memcpy(&pi, CMSG_DATA(cm), sizeof(pi));
			memset(ctl, 0, sizeof(*ctl));
			o->cmsg_level = IPPROTO_IPV6;
			o->cmsg_type = IPV6_PKTINFO;
			o->cmsg_len = CMSG_LEN(sizeof(pi));
			memcpy(CMSG_DATA(o), &pi, sizeof(pi));
			return CMSG_SPACE(sizeof(pi));
		}
	}
	return 0;
}

static uint16_t sa_port(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)ss)->sin_port);
	if (ss->ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)ss)->sin6_port);
	return 0;
}

static void udp_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	struct bal_dnsd *s = l->srv;
	for (int i = 0; i < UDP_BATCH; i++) {
		struct sockaddr_storage from;
		union pktinfo_buf cin, cout;
		struct iovec iov = { s->query, sizeof(s->query) };
		struct msghdr mh = { .msg_name = &from, .msg_namelen = sizeof(from), .msg_iov = &iov,
		                     .msg_iovlen = 1, .msg_control = cin.buf,
		                     .msg_controllen = sizeof(cin.buf) };
		ssize_t k = recvmsg(l->udp, &mh, MSG_DONTWAIT);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return; /* EAGAIN: all read; an error (ICMP of an earlier reply): next time */
		s->stats.udp_queries++;
		if ((size_t)k > TCP_MSG_MAX || sa_port(&from) == 0)
			continue; /* no DNS message; port 0 cannot be answered */
		/* At most BAL_DNS_UDP_SIZE over UDP, whatever the client offers: no fragments. */
		size_t alen = bal_dns_answer(s->dns, s->query, (size_t)k, 0, s->answer,
		                             BAL_DNS_UDP_SIZE);
		if (!alen)
			continue;
		struct iovec oiov = { s->answer, alen };
		struct msghdr om = { .msg_name = &from, .msg_namelen = mh.msg_namelen,
		                     .msg_iov = &oiov, .msg_iovlen = 1 };
		size_t clen = l->pktinfo ? reply_source(&mh, &cout) : 0;
		if (clen) {
			om.msg_control = cout.buf;
			om.msg_controllen = clen;
		}
		/* A full socket buffer drops the answer, as the network could: the client retries. */
		if (sendmsg(l->udp, &om, MSG_DONTWAIT | MSG_NOSIGNAL) < 0)
			s->stats.udp_send_errors++;
		else
			s->stats.udp_answers++;
	}
}

/* ---- sockets ---- */

static int is_wildcard(const struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ((const struct sockaddr_in *)ss)->sin_addr.s_addr == htonl(INADDR_ANY);
	return IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)ss)->sin6_addr);
}

static void set_port(struct sockaddr_storage *ss, uint16_t port)
{
	if (ss->ss_family == AF_INET)
		((struct sockaddr_in *)ss)->sin_port = htons(port);
	else
		((struct sockaddr_in6 *)ss)->sin6_port = htons(port);
}

/* A socket of type bound to ss (listening for TCP). Returns it, or -1 with errno. */
static int bind_one(int type, const struct sockaddr_storage *ss, socklen_t len)
{
	int fd = socket(ss->ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -1;
	int one = 1;
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	/* A VIP is bound before keepalived gives it to us. Best effort: the bind says. */
	if (ss->ss_family == AF_INET6) {
		/* "::" and "0.0.0.0" may both be listened on. */
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
#ifdef IPV6_FREEBIND
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one));
#else
		(void)setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one));
#endif
	} else {
		(void)setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one));
	}
	if (type == SOCK_DGRAM && is_wildcard(ss)) {
		if (ss->ss_family == AF_INET6)
			(void)setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
		else
			(void)setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
	}
	if (bind(fd, (const struct sockaddr *)ss, len) < 0 ||
	    (type == SOCK_STREAM && listen(fd, TCP_BACKLOG) < 0)) {
		int e = errno;
		close(fd);
		errno = e;
		return -1;
	}
	return fd;
}

/* TCP first, then UDP on the same port: with port 0, the port TCP got. */
static int listener_open(struct listener *l, const struct cfgu_listen *cl, char *err,
                         size_t errlen)
{
	struct sockaddr_storage ss;
	socklen_t len = cl->addr.salen;
	const char *what = "TCP";
	memcpy(&ss, &cl->addr.sa, sizeof(ss));
	if (len == 0 || (ss.ss_family != AF_INET && ss.ss_family != AF_INET6)) {
		snprintf(err, errlen, "dns listener %s: not an IPv4 or IPv6 address",
		         cl->address ? cl->address : "?");
		return -1;
	}
	uint16_t want = sa_port(&ss);
	for (int t = 0; t < BIND_TRIES; t++) {
		set_port(&ss, want);
		what = "TCP";
		if ((l->tcp = bind_one(SOCK_STREAM, &ss, len)) < 0)
			break;
		struct sockaddr_storage got;
		socklen_t glen = sizeof(got);
		if (getsockname(l->tcp, (struct sockaddr *)&got, &glen) < 0)
			break;
		l->port = sa_port(&got);
		set_port(&ss, l->port);
		what = "UDP";
		if ((l->udp = bind_one(SOCK_DGRAM, &ss, len)) >= 0) {
			l->pktinfo = is_wildcard(&ss);
			return 0;
		}
		int e = errno;
		close(l->tcp);
		l->tcp = -1;
		errno = e;
		if (want != 0 || e != EADDRINUSE)
			break; /* a port of the system's choice may be taken for UDP: another one */
	}
	snprintf(err, errlen, "dns listener %s port %u (%s): %s", cl->address ? cl->address : "?",
	         (unsigned)want, what, strerror(errno));
	if (l->tcp >= 0)
		close(l->tcp);
	l->tcp = -1;
	return -1;
}

struct bal_dnsd *bal_dnsd_new(struct ev_loop *loop, struct bal_dns *dns,
                              const struct cfgu_listen *listen, unsigned n,
                              unsigned max_tcp_clients, char *err, size_t errlen)
{
	struct bal_dnsd *s = calloc(1, sizeof(*s));
	if (s && n)
		s->ls = calloc(n, sizeof(*s->ls));
	if (!s || (n && !s->ls)) {
		free(s);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->loop = loop;
	s->dns = dns;
	s->max_tcp = max_tcp_clients;
	s->idle = BAL_DNSD_TCP_IDLE;
	list_init(&s->conns);
	for (unsigned i = 0; i < n; i++) {
		struct listener *l = &s->ls[i];
		l->srv = s;
		l->udp = l->tcp = -1;
		if (listener_open(l, &listen[i], err, errlen) < 0) {
			bal_dnsd_free(s);
			return NULL;
		}
		s->nls = i + 1;
		ev_io_init(&l->udp_io, udp_cb, l->udp, EV_READ);
		l->udp_io.data = l;
		ev_io_init(&l->tcp_io, accept_cb, l->tcp, EV_READ);
		l->tcp_io.data = l;
		accept_init(&l->rest, &l->tcp_io);
		ev_io_start(loop, &l->udp_io);
		ev_io_start(loop, &l->tcp_io);
	}
	return s;
}

void bal_dnsd_free(struct bal_dnsd *s)
{
	if (!s)
		return;
	while (!list_empty(&s->conns))
		conn_close(list_entry(s->conns.next, struct conn, link), CLOSE_DONE);
	for (unsigned i = 0; i < s->nls; i++) {
		struct listener *l = &s->ls[i];
		ev_io_stop(s->loop, &l->udp_io);
		ev_io_stop(s->loop, &l->tcp_io);
		accept_stop(s->loop, &l->rest);
		close(l->udp);
		close(l->tcp);
	}
	free(s->ls); s->ls = NULL;
	free(s);
}

void bal_dnsd_set_tcp_idle(struct bal_dnsd *s, double seconds)
{
	s->idle = seconds;
	for (struct list_node *it = s->conns.next; it != &s->conns; it = it->next) {
		struct conn *c = list_entry(it, struct conn, link);
		c->timer.repeat = seconds;
		ev_timer_again(s->loop, &c->timer);
	}
}

uint16_t bal_dnsd_port(const struct bal_dnsd *s, unsigned i)
{
	return i < s->nls ? s->ls[i].port : 0;
}

void bal_dnsd_get_stats(const struct bal_dnsd *s, struct bal_dnsd_stats *out)
{
	*out = s->stats;
}
