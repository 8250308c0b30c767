#include "xprt.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int xprt_connect_done(int fd, char *errbuf, size_t errlen)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err == 0) {
		struct sockaddr_storage ss;
		socklen_t sslen = sizeof(ss);
		/* No error yet, but no peer either: still connecting. */
		if (getpeername(fd, (struct sockaddr *)&ss, &sslen) == 0)
			return 0;
		if (errno == ENOTCONN)
			return XPRT_WANT_WRITE;
		err = errno;
	}
	if (err == EINPROGRESS || err == EALREADY)
		return XPRT_WANT_WRITE;
	snprintf(errbuf, errlen, "connect: %s", strerror(err));
	return XPRT_FAILED;
}

static int tcp_handshake(struct xprt *x)
{
	return xprt_connect_done(x->fd, x->error, sizeof(x->error));
}

static ssize_t tcp_recv(struct xprt *x, void *buf, size_t len)
{
	ssize_t n = recv(x->fd, buf, len, 0);
	if (n > 0)
		return n;
	if (n == 0)
		return XPRT_CLOSED;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return XPRT_WANT_READ;
	snprintf(x->error, sizeof(x->error), "recv: %s", strerror(errno));
	return XPRT_FAILED;
}

static ssize_t tcp_send(struct xprt *x, const void *buf, size_t len)
{
	ssize_t n = send(x->fd, buf, len, MSG_NOSIGNAL);
	if (n >= 0)
		return n > 0 ? n : XPRT_WANT_WRITE;
	if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
		return XPRT_WANT_WRITE;
	snprintf(x->error, sizeof(x->error), "send: %s", strerror(errno));
	return XPRT_FAILED;
}

static void tcp_shutdown(struct xprt *x)
{
	shutdown(x->fd, SHUT_WR);
}

static const char *const *tcp_peer_names(struct xprt *x, unsigned *n)
{
	*n = 0;
	return NULL;
}

static void tcp_destroy(struct xprt *x)
{
	close(x->fd);
	free(x);
}

static const struct xprt_ops tcp_ops = {
	.name = "tcp",
	.handshake = tcp_handshake,
	.recv = tcp_recv,
	.send = tcp_send,
	.shutdown = tcp_shutdown,
	.peer_names = tcp_peer_names,
	.destroy = tcp_destroy,
};

int xprt_tcp_release(struct xprt *x)
{
	int fd = x->fd;
	free(x);
	return fd;
}

struct xprt *xprt_tcp_new(int fd)
{
	struct xprt *x = calloc(1, sizeof(*x));
	if (!x)
		return NULL;
	x->ops = &tcp_ops;
	x->fd = fd;
	return x;
}
