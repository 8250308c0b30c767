#include "status.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accept.h"

#define STATUS_READ_TIMEOUT 2.0
#define STATUS_MAX_REQUEST 4096
#define STATUS_MAX_BODY 65536

struct status_client {
	ev_io io;
	ev_timer timer;
	struct status_server *srv;
	struct status_client *next;
	size_t len;
	char req[STATUS_MAX_REQUEST];
};

struct status_server {
	ev_io io;
	struct accept_rest rest;       /* out of file descriptors: accepting rests */
	struct ev_loop *loop;
	int fd;
	status_render_fn render;
	void *ctx;
	struct status_client *clients; /* requests being read */
	char body[STATUS_MAX_BODY];    /* the answer being sent: one at a time */
};

static void client_free(struct status_client *c)
{
	struct status_server *s = c->srv;
	for (struct status_client **pp = &s->clients; *pp; pp = &(*pp)->next) {
		if (*pp == c) {
			*pp = c->next;
			break;
		}
	}
	ev_io_stop(s->loop, &c->io);
	ev_timer_stop(s->loop, &c->timer);
	close(c->io.fd);
	free(c);
}

/* One blocking-free best effort: the answer fits the socket buffer. */
static void client_answer(struct status_client *c)
{
	char *body = c->srv->body;
	char head[160];
	const char *status = "404 Not Found";
	size_t blen = 0;
	if (strncmp(c->req, "GET /status ", 12) == 0 || strncmp(c->req, "GET /status?", 12) == 0) {
		status = "200 OK";
		blen = c->srv->render(c->srv->ctx, body, STATUS_MAX_BODY);
	}
	int hlen = snprintf(head, sizeof(head), "HTTP/1.0 %s\r\nContent-Type: application/json\r\n"
	                    "Content-Length: %zu\r\nConnection: close\r\n\r\n", status, blen);
	struct iovec iov[2] = { { head, (size_t)hlen }, { body, blen } };
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	(void)sendmsg(c->io.fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
	client_free(c);
}

static void client_read_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct status_client *c = w->data;
	ssize_t n = recv(w->fd, c->req + c->len, sizeof(c->req) - 1 - c->len, 0);
	if (n < 0 && (errno == EAGAIN || errno == EINTR))
		return;
	if (n <= 0) {
		client_free(c);
		return;
	}
	c->len += (size_t)n;
	c->req[c->len] = '\0';
	if (strstr(c->req, "\r\n\r\n") || strstr(c->req, "\n\n"))
		client_answer(c);
	else if (c->len == sizeof(c->req) - 1)
		client_free(c); /* too long: not a status request */
}

static void client_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	client_free(w->data);
}

static void accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct status_server *s = w->data;
	int fd = accept_next(loop, &s->rest, NULL, NULL);
	if (fd < 0)
		return;
	struct status_client *c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	c->srv = s;
	ev_io_init(&c->io, client_read_cb, fd, EV_READ);
	c->io.data = c;
	ev_timer_init(&c->timer, client_timeout_cb, STATUS_READ_TIMEOUT, 0);
	c->timer.data = c;
	ev_io_start(loop, &c->io);
	ev_timer_start(loop, &c->timer);
	c->next = s->clients;
	s->clients = c;
}

struct status_server *status_listen(struct ev_loop *loop, const struct sockaddr *addr,
                                    socklen_t addrlen, status_render_fn render, void *ctx,
                                    char *err, size_t errlen)
{
	struct status_server *s = calloc(1, sizeof(*s));
	if (!s) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	s->fd = socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (s->fd < 0 || setsockopt(s->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
	    bind(s->fd, addr, addrlen) < 0 || listen(s->fd, 16) < 0) {
		snprintf(err, errlen, "status listener: %s", strerror(errno));
		if (s->fd >= 0)
			close(s->fd);
		free(s);
		return NULL;
	}
	s->loop = loop;
	s->render = render;
	s->ctx = ctx;
	ev_io_init(&s->io, accept_cb, s->fd, EV_READ);
	accept_init(&s->rest, &s->io);
	s->io.data = s;
	ev_io_start(loop, &s->io);
	return s;
}

void status_close(struct status_server *s)
{
	if (!s)
		return;
	while (s->clients)
		client_free(s->clients);
	ev_io_stop(s->loop, &s->io);
	accept_stop(s->loop, &s->rest);
	close(s->fd);
	free(s);
}
