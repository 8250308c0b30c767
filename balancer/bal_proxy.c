#include "bal_proxy.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accept.h"
#include "clu_store.h"
#include "list.h"
#include "ppv2.h"
#include "sockaddr.h"

#define EXPIRE_INTERVAL 60.0      /* seconds between sweeps of a private affinity store */
#define LINGER 5.0                /* seconds a connection whose other side failed may flush */

struct listener {
	struct bal_proxy *p;
	const struct bal_cfg_forward *fw;
	int fd;
	ev_io io;
	struct accept_rest rest;  /* out of file descriptors: accept again after a rest */
};

/* Bytes in flight in one direction. */
struct pipe_buf {
	char *data;
	size_t off, len;          /* pending: data[off .. len); both 0 once all is written */
	int kpipe[2];             /* a kernel pipe, once the direction is bulk; -1 before */
	size_t in_kpipe;          /* bytes in it, not yet written */
	int kpipe_full;           /* it refused more: read again once some is written */
	int eof;                  /* the sending side ended its stream (or broke) */
	int shut;                 /* and we passed the end on */
};

enum pconn_phase { PC_CONNECTING, PC_RELAYING };

struct pconn {
	struct list_node link;
	struct bal_proxy *p;
	const struct bal_cfg_forward *fw;
	enum pconn_phase phase;
	int cfd, efd;             /* partner's and edge's sockets */
	int cdead, edead;         /* that side failed: nothing more goes to it */
	int affinity_noted;       /* the edge answered: the source's affinity is written */
	ev_io cio, eio;
	ev_timer connect_timer;
	ev_timer linger;          /* one side failed: the other gets what is left, for a while */
	int edge;                 /* index in cfg->edges, -1 before one is chosen */
	unsigned char *tried;     /* edges already tried, one flag each */
	struct sockaddr_storage src, dst;
	char src_str[INET6_ADDRSTRLEN];
	struct pipe_buf up;       /* partner -> edge */
	struct pipe_buf down;     /* edge -> partner */
};

struct bal_proxy {
	struct ev_loop *loop;
	const struct bal_cfg *cfg;
	const struct bal_cfg_vip *vip;
	const struct bal_health *health;
	struct clu_node *cluster;    /* not owned; NULL: affinity in `own` */
	struct clu_store *own;       /* the affinity store without a cluster */
	ev_timer expire_timer;
	struct listener *listeners;
	unsigned nlisteners;
	struct list_node conns;
	unsigned *per_edge;          /* connections per edge */
	unsigned rr;                 /* where ties among least-loaded edges start */
	struct bal_proxy_stats stats;
};

static uint64_t wall_ms(const struct bal_proxy *p)
{
	return (uint64_t)(ev_now(p->loop) * 1000.0);
}

/* ---- affinity ---- */

/*
 * The source's key: its IPv4 address, or its IPv6 /64 (a host holds a
 * whole /64, and a new address per connection must not mean a new record).
 */
static void affinity_key(const struct pconn *c, char *key, size_t len)
{
	if (c->src.ss_family != AF_INET6) {
		snprintf(key, len, BAL_AFFINITY_PREFIX "%s", c->src_str);
		return;
	}
	struct sockaddr_storage net = c->src;
	memset(((struct sockaddr_in6 *)(void *)&net)->sin6_addr.s6_addr + 8, 0, 8);
	char ip[INET6_ADDRSTRLEN];
	snprintf(key, len, BAL_AFFINITY_PREFIX "%s/64", sa_ip(&net, ip, sizeof(ip)));
}

/* The edge the source used last, or -1. */
static int affinity_get(struct bal_proxy *p, const struct pconn *c)
{
	char key[80];
	affinity_key(c, key, sizeof(key));
	const struct clu_rec *r = p->cluster ? clu_node_get(p->cluster, key)
	                                     : clu_store_get(p->own, key, wall_ms(p));
	if (!r || !r->value)
		return -1;
	for (unsigned i = 0; i < p->cfg->nedges; i++) {
		const char *name = p->cfg->edges[i].name;
		if (strlen(name) == r->len && memcmp(name, r->value, r->len) == 0)
			return (int)i;
	}
	return -1;
}

/*
 * Remembers the edge for the source. A record that already says so is
 * written again only when a quarter of its time has passed, so a partner
 * that reconnects often does not flood the cluster with writes.
 */
static void affinity_put(struct bal_proxy *p, const struct pconn *c, int edge)
{
	char key[80];
	uint64_t ttl = (uint64_t)p->vip->affinity_idle_s * 1000, now = wall_ms(p);
	if (ttl == 0)
		return;
	affinity_key(c, key, sizeof(key));
	const char *name = p->cfg->edges[edge].name;
	const struct clu_rec *r = p->cluster ? clu_node_get(p->cluster, key)
	                                     : clu_store_get(p->own, key, now);
	if (r && r->value && r->len == strlen(name) && memcmp(r->value, name, r->len) == 0 &&
	    r->expires_ms > now + ttl - ttl / 4)
		return;
	if (p->cluster)
		clu_node_put(p->cluster, key, name, strlen(name), ttl);
	else
		clu_store_put(p->own, key, name, strlen(name), ttl, now);
}

static void on_expire(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct bal_proxy *p = w->data;
	clu_store_expire(p->own, wall_ms(p));
}

/* ---- connections ---- */

static void pipe_close(struct pipe_buf *b)
{
	if (b->kpipe[0] >= 0) {
		close(b->kpipe[0]);
		close(b->kpipe[1]);
	}
	b->kpipe[0] = b->kpipe[1] = -1;
}

/*
 * A direction that fills its buffer is bulk: it moves on to a kernel pipe
 * and splice(2), so its bytes go from socket to socket without a copy
 * through user space (the copies were a quarter of the proxy's work). SIP
 * signalling never fills 64 KB, so most connections never take the two
 * file descriptors of a pipe.
 */
static void pipe_go_bulk(struct pipe_buf *b, size_t cap)
{
	if (b->kpipe[0] >= 0 || pipe2(b->kpipe, O_NONBLOCK | O_CLOEXEC) < 0)
		return;
	/* Room for what the buffer holds: the pipe is the buffer from now on. A
	 * smaller pipe would refuse bytes that pipe_room() promises, and the
	 * socket would stay readable for ever: then the buffer it is. */
	int size = fcntl(b->kpipe[1], F_SETPIPE_SZ, (int)cap);
	if (size < 0 || (size_t)size < cap)
		pipe_close(b);
}

static void pconn_free(struct pconn *c)
{
	struct bal_proxy *p = c->p;
	ev_io_stop(p->loop, &c->cio);
	ev_io_stop(p->loop, &c->eio);
	ev_timer_stop(p->loop, &c->connect_timer);
	ev_timer_stop(p->loop, &c->linger);
	if (c->cfd >= 0)
		close(c->cfd);
	if (c->efd >= 0)
		close(c->efd);
	if (c->edge >= 0)
		p->per_edge[c->edge]--;
	list_del(&c->link);
	p->stats.active--;
	pipe_close(&c->up);
	pipe_close(&c->down);
	free(c->up.data);
	free(c->down.data);
	free(c->tried);
	free(c);
}

static void watch(struct bal_proxy *p, ev_io *w, int fd, int events)
{
	if (w->fd == fd && (w->events & (EV_READ | EV_WRITE)) == events && ev_is_active(w))
		return;
	ev_io_stop(p->loop, w);
	if (!events)
		return;
	ev_io_set(w, fd, events);
	ev_io_start(p->loop, w);
}

/* Bytes not yet written. */
static size_t pipe_pending(const struct pipe_buf *b)
{
	return b->len - b->off + b->in_kpipe;
}

/* Bytes a pipe may still take: what is written leaves room (pipe_read compacts). */
static size_t pipe_room(const struct pipe_buf *b, size_t cap)
{
	size_t held = pipe_pending(b);
	return held < cap && !b->kpipe_full ? cap - held : 0;
}

/* What each socket waits for, from the state of the two pipes and the sides. */
static void rewatch(struct pconn *c)
{
	size_t cap = c->p->vip->buffer_bytes;
	int cev = 0, eev = 0;
	if (!c->cdead) {
		if (!c->up.eof && pipe_room(&c->up, cap) > 0)
			cev |= EV_READ;
		if (pipe_pending(&c->down))
			cev |= EV_WRITE;
	}
	if (!c->edead) {
		if (!c->down.eof && pipe_room(&c->down, cap) > 0)
			eev |= EV_READ;
		if (pipe_pending(&c->up))
			eev |= EV_WRITE;
	}
	watch(c->p, &c->cio, c->cfd, cev);
	watch(c->p, &c->eio, c->efd, eev);
}

/* Reads from fd into b. Returns 0, or -1 when the socket failed (b->eof is then set). */
static int pipe_read(int fd, struct pipe_buf *b, size_t cap, unsigned long long *count)
{
	for (;;) {
		size_t room = pipe_room(b, cap);
		ssize_t n;
		if (room == 0)
			return 0;
		if (b->kpipe[0] >= 0) {
			n = splice(fd, NULL, b->kpipe[1], NULL, room, SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
			if (n > 0)
				b->in_kpipe += (size_t)n;
		} else {
			if (b->off > 0 && b->len == cap) {
				memmove(b->data, b->data + b->off, b->len - b->off);
				b->len -= b->off;
				b->off = 0;
			}
			n = recv(fd, b->data + b->len, cap - b->len, 0);
			if (n > 0) {
				b->len += (size_t)n;
				if (b->len == cap)
					pipe_go_bulk(b, cap);
			}
		}
		if (n > 0) {
			*count += (unsigned long long)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
			/* A pipe holds pages, not bytes: splice's partial pages may fill it
			 * before `room` bytes. Then the socket stays readable and would be
			 * watched for nothing: wait until the pipe gives some out. */
			if (b->kpipe[0] >= 0 && b->in_kpipe > 0)
				b->kpipe_full = 1;
			return 0;
		}
		b->eof = 1;
		return n == 0 ? 0 : -1;
	}
}

/*
 * Writes what b holds to fd (the buffer first, then the kernel pipe: the
 * order they were read in), and passes the end on when all is written.
 * -1: fd failed.
 */
static int pipe_write(int fd, struct pipe_buf *b)
{
	while (b->off < b->len) {
		ssize_t n = send(fd, b->data + b->off, b->len - b->off, MSG_NOSIGNAL);
		if (n > 0) {
			b->off += (size_t)n;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return 0;
		return -1;
	}
	b->off = b->len = 0;
	while (b->in_kpipe > 0) {
		ssize_t n = splice(b->kpipe[0], NULL, fd, NULL, b->in_kpipe,
		                   SPLICE_F_MOVE | SPLICE_F_NONBLOCK);
		if (n > 0) {
			b->in_kpipe -= (size_t)n;
			b->kpipe_full = 0;
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return 0;
		return -1;
	}
	if (b->eof && !b->shut) {
		b->shut = 1;
		shutdown(fd, SHUT_WR);
	}
	return 0;
}

static void on_linger(struct ev_loop *loop, ev_timer *w, int revents)
{
	pconn_free(w->data);
}

/*
 * Moves bytes both ways. A side that fails gets nothing more, but what it
 * sent before still goes to the other side (an edge's last answer or TLS
 * alert), for LINGER seconds at most. Frees c when both directions are
 * over: the watchers are stopped first, so freeing c from its own callback
 * is safe with libev.
 */
static void relay(struct pconn *c, int cev, int eev)
{
	struct bal_proxy *p = c->p;
	size_t cap = p->vip->buffer_bytes;
	unsigned long long from_edge = 0;
	if ((cev & EV_READ) && pipe_read(c->cfd, &c->up, cap, &p->stats.bytes_in) < 0)
		c->cdead = 1;
	if ((eev & EV_READ) && pipe_read(c->efd, &c->down, cap, &from_edge) < 0)
		c->edead = 1;
	p->stats.bytes_out += from_edge;
	/* Twice when a side failed on the way: its end is passed on to the other at once. */
	for (int pass = 0; pass < 2; pass++) {
		int dead = c->cdead + c->edead;
		if (!c->edead && pipe_write(c->efd, &c->up) < 0) {
			c->edead = 1;
			c->down.eof = 1;
		}
		if (!c->cdead && pipe_write(c->cfd, &c->down) < 0) {
			c->cdead = 1;
			c->up.eof = 1;
		}
		if (c->cdead + c->edead == dead)
			break;
	}
	/* The edge answered: this source goes there again (not for a mere connect). */
	if (!c->affinity_noted && from_edge > 0) {
		c->affinity_noted = 1;
		affinity_put(p, c, c->edge);
	}
	int up_over = c->up.shut || c->edead, down_over = c->down.shut || c->cdead;
	if (up_over && down_over) {
		pconn_free(c);
		return;
	}
	if ((c->cdead || c->edead) && !ev_is_active(&c->linger)) {
		ev_timer_set(&c->linger, LINGER, 0.);
		ev_timer_start(p->loop, &c->linger);
	}
	rewatch(c);
}

/*
 * A relayed connection has no idle timeout (SIP keeps its connections for
 * 20 minutes and more), so a peer that vanishes without a FIN or a reset is
 * found by TCP: keepalive probes after KEEPIDLE seconds of silence, and
 * unacknowledged data given up after USER_TIMEOUT_MS.
 */
#define KEEPIDLE 300
#define KEEPINTVL 30
#define KEEPCNT 4
#define USER_TIMEOUT_MS 60000

static void tune_socket(int fd)
{
	int one = 1, idle = KEEPIDLE, intvl = KEEPINTVL, cnt = KEEPCNT;
	unsigned timeout = USER_TIMEOUT_MS;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
	setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
	setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &timeout, sizeof(timeout));
}

static void on_client_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct pconn *c = w->data;
	relay(c, revents, 0);
}

static void try_next_edge(struct pconn *c);

static void connected(struct pconn *c)
{
	struct bal_proxy *p = c->p;
	ev_timer_stop(p->loop, &c->connect_timer);
	c->phase = PC_RELAYING;
	tune_socket(c->efd);
	relay(c, 0, 0);
}

static void on_edge_io(struct ev_loop *loop, ev_io *w, int revents)
{
	struct pconn *c = w->data;
	if (c->phase == PC_RELAYING) {
		relay(c, 0, revents);
		return;
	}
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(c->efd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == EINPROGRESS)
		return;
	if (err != 0) {
		c->p->stats.connect_failures++;
		try_next_edge(c);
		return;
	}
	connected(c);
}

static void on_connect_timeout(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct pconn *c = w->data;
	c->p->stats.connect_failures++;
	try_next_edge(c);
}

/* The edge for a new connection: affinity first, then the fewest connections. */
static int pick_edge(struct bal_proxy *p, struct pconn *c)
{
	unsigned n = p->cfg->nedges;
	unsigned path = (unsigned)(c->fw - p->vip->forwards);
	int aff = affinity_get(p, c);
	if (aff >= 0 && !c->tried[aff] && bal_health_usable_via(p->health, (unsigned)aff, path)) {
		p->stats.affinity_hits++;
		return aff;
	}
	int best = -1;
	p->rr++;
	for (unsigned k = 0; k < n; k++) {
		unsigned i = (p->rr + k) % n;
		if (c->tried[i] || !bal_health_usable_via(p->health, i, path))
			continue;
		if (best < 0 || p->per_edge[i] < p->per_edge[best])
			best = (int)i;
	}
	return best;
}

/* Connects to the next usable edge, or gives up and frees c. */
static void try_next_edge(struct pconn *c)
{
	struct bal_proxy *p = c->p;
	ev_io_stop(p->loop, &c->eio);
	ev_timer_stop(p->loop, &c->connect_timer);
	if (c->efd >= 0)
		close(c->efd);
	c->efd = -1;
	for (;;) {
		/* A connection counts for its edge from the attempt on (least connections). */
		if (c->edge >= 0)
			p->per_edge[c->edge]--;
		int e = c->edge = pick_edge(p, c);
		if (e < 0) {
			p->stats.no_edge++;
			pconn_free(c);
			return;
		}
		c->tried[e] = 1;
		p->per_edge[e]++;
		struct sockaddr_storage to;
		const struct cfgu_addr *a = &p->cfg->edges[e].addr;
		memcpy(&to, &a->sa, a->salen);
		sa_set_port(&to, c->fw->edge_port);
		c->efd = socket(to.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (c->efd < 0) {
			/* Out of file descriptors or memory: ours, not the edge's. */
			p->stats.refused++;
			pconn_free(c);
			return;
		}
		if (connect(c->efd, (struct sockaddr *)&to, a->salen) == 0 || errno == EINPROGRESS)
			break;
		p->stats.connect_failures++;
		if (c->efd >= 0)
			close(c->efd);
		c->efd = -1;
	}
	/* The PROXY header goes first, ahead of anything the partner sent. */
	c->up.off = c->up.len = 0;
	if (c->fw->proxy_protocol) {
		size_t n = ppv2_build((uint8_t *)c->up.data, p->vip->buffer_bytes,
		                      (struct sockaddr *)&c->src, (struct sockaddr *)&c->dst);
		if (n == 0) {
			pconn_free(c);
			return;
		}
		c->up.len = n;
	}
	ev_io_set(&c->eio, c->efd, EV_WRITE);
	ev_io_start(p->loop, &c->eio);
	ev_timer_set(&c->connect_timer, p->vip->connect_timeout_ms / 1000.0, 0.);
	ev_timer_start(p->loop, &c->connect_timer);
}

static void accept_one(struct listener *l, int fd)
{
	struct bal_proxy *p = l->p;
	struct pconn *c = calloc(1, sizeof(*c));
	size_t cap = p->vip->buffer_bytes;
	if (!c || !(c->up.data = malloc(cap)) || !(c->down.data = malloc(cap)) ||
	    !(c->tried = calloc(p->cfg->nedges, 1))) {
		if (c) {
			free(c->up.data);
			free(c->down.data);
		}
		free(c);
		close(fd);
		return;
	}
	c->p = p;
	c->fw = l->fw;
	c->up.kpipe[0] = c->up.kpipe[1] = c->down.kpipe[0] = c->down.kpipe[1] = -1;
	c->cfd = fd;
	c->efd = -1;
	c->edge = -1;
	socklen_t len = sizeof(c->src);
	getpeername(fd, (struct sockaddr *)&c->src, &len);
	len = sizeof(c->dst);
	getsockname(fd, (struct sockaddr *)&c->dst, &len);
	sa_ip(&c->src, c->src_str, sizeof(c->src_str));
	tune_socket(fd);
	ev_init(&c->cio, on_client_io);
	c->cio.data = c;
	ev_init(&c->eio, on_edge_io);
	c->eio.data = c;
	ev_init(&c->connect_timer, on_connect_timeout);
	c->connect_timer.data = c;
	ev_init(&c->linger, on_linger);
	c->linger.data = c;
	list_add_tail(&p->conns, &c->link);
	p->stats.active++;
	p->stats.accepted++;
	try_next_edge(c);
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
	struct listener *l = w->data;
	struct bal_proxy *p = l->p;
	for (;;) {
		int fd = accept_next(loop, &l->rest, NULL, NULL);
		if (fd < 0)
			return;
		if (p->stats.active >= p->vip->max_connections) {
			p->stats.refused++;
			close(fd);
			continue;
		}
		accept_one(l, fd);
	}
}

/* A listener on addr:port that may bind before the address is ours. */
static int listen_on(const struct cfgu_addr *addr, uint16_t port, char *err, size_t errlen)
{
	struct sockaddr_storage sa;
	memcpy(&sa, &addr->sa, addr->salen);
	sa_set_port(&sa, port);
	int fd = socket(sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    setsockopt(fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one)) < 0 ||
	    bind(fd, (struct sockaddr *)&sa, addr->salen) < 0 || listen(fd, 1024) < 0) {
		char host[INET6_ADDRSTRLEN];
		snprintf(err, errlen, "vip %s port %u: %s", sa_ip(&sa, host, sizeof(host)), port,
		         strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

struct bal_proxy *bal_proxy_new(struct ev_loop *loop, const struct bal_cfg *cfg,
                                const struct bal_health *health, struct clu_node *cluster,
                                char *err, size_t errlen)
{
	const struct bal_cfg_vip *vip = cfg->vip;
	struct bal_proxy *p = calloc(1, sizeof(*p));
	unsigned n = vip->naddrs * vip->nforwards;
	if (!p || !(p->listeners = calloc(n, sizeof(*p->listeners))) ||
	    !(p->per_edge = calloc(cfg->nedges, sizeof(*p->per_edge)))) {
		if (p)
			free(p->listeners);
		free(p);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	p->loop = loop;
	p->cfg = cfg;
	p->vip = vip;
	p->health = health;
	p->cluster = cluster;
	list_init(&p->conns);
	ev_init(&p->expire_timer, on_expire);
	p->expire_timer.data = p;
	if (!cluster) {
		struct clu_store_limits lim = { .max_records = 1000000, .max_bytes = 64 << 20,
		                                .tombstone_ms = 1000 };
		if (!(p->own = clu_store_new("balancer", &lim))) {
			bal_proxy_free(p);
			snprintf(err, errlen, "out of memory");
			return NULL;
		}
		ev_timer_set(&p->expire_timer, EXPIRE_INTERVAL, EXPIRE_INTERVAL);
		ev_timer_start(loop, &p->expire_timer);
	}
	for (unsigned a = 0; a < vip->naddrs; a++) {
		for (unsigned f = 0; f < vip->nforwards; f++) {
			struct listener *l = &p->listeners[p->nlisteners];
			l->fd = listen_on(&vip->addrs[a], vip->forwards[f].listen_port, err, errlen);
			if (l->fd < 0) {
				bal_proxy_free(p);
				return NULL;
			}
			l->p = p;
			l->fw = &vip->forwards[f];
			ev_io_init(&l->io, on_accept, l->fd, EV_READ);
			l->io.data = l;
			accept_init(&l->rest, &l->io);
			ev_io_start(loop, &l->io);
			p->nlisteners++;
		}
	}
	return p;
}

void bal_proxy_free(struct bal_proxy *p)
{
	if (!p)
		return;
	while (!list_empty(&p->conns))
		pconn_free(list_entry(p->conns.next, struct pconn, link));
	for (unsigned i = 0; i < p->nlisteners; i++) {
		ev_io_stop(p->loop, &p->listeners[i].io);
		accept_stop(p->loop, &p->listeners[i].rest);
		close(p->listeners[i].fd);
	}
	ev_timer_stop(p->loop, &p->expire_timer);
	clu_store_free(p->own);
	free(p->listeners);
	free(p->per_edge);
	free(p);
}

void bal_proxy_get_stats(const struct bal_proxy *p, struct bal_proxy_stats *out)
{
	*out = p->stats;
	for (unsigned i = 0; i < p->nlisteners; i++)
		out->accept_pauses += p->listeners[i].rest.rests;
}

unsigned bal_proxy_edge_connections(const struct bal_proxy *p, unsigned edge)
{
	return edge < p->cfg->nedges ? p->per_edge[edge] : 0;
}

size_t bal_proxy_status_json(const struct bal_proxy *p, char *buf, size_t len)
{
	struct bal_proxy_stats st;
	const struct bal_proxy_stats *s = &st;
	bal_proxy_get_stats(p, &st);
	size_t off = (size_t)snprintf(buf, len,
	                              "{\"accepted\":%llu,\"refused\":%llu,\"no_edge\":%llu,"
	                              "\"connect_failures\":%llu,\"affinity_hits\":%llu,"
	                              "\"accept_pauses\":%llu,"
	                              "\"bytes_in\":%llu,\"bytes_out\":%llu,\"active\":%u,"
	                              "\"per_edge\":{",
	                              s->accepted, s->refused, s->no_edge, s->connect_failures,
	                              s->affinity_hits, s->accept_pauses, s->bytes_in, s->bytes_out,
	                              s->active);
	for (unsigned i = 0; i < p->cfg->nedges; i++)
		off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "%s\"%s\":%u",
		                        i ? "," : "", p->cfg->edges[i].name, p->per_edge[i]);
	off += (size_t)snprintf(buf + off, off < len ? len - off : 0, "}}");
	return off < len ? off : (len ? len - 1 : 0);
}
