/*
 * xprt: one byte-stream transport interface with two implementations, plain
 * TCP (xprt_tcp.c) and TLS (tls.c), so that connection and SIP code never
 * call OpenSSL. (HAProxy's struct xprt_ops has the same shape.)
 *
 * A transport owns its socket: destroy() closes it.
 */
#ifndef EDGE_XPRT_H
#define EDGE_XPRT_H

#include <stddef.h>
#include <sys/types.h>

/* Negative results of handshake(), recv() and send(). */
enum xprt_status {
	XPRT_WANT_READ = -1,  /* retry when the socket is readable */
	XPRT_WANT_WRITE = -2, /* retry when the socket is writable */
	XPRT_CLOSED = -3,     /* orderly end of stream */
	XPRT_FAILED = -4,     /* error: the reason is in xprt->error */
};

struct xprt;

struct xprt_ops {
	const char *name; /* "tcp" or "tls": what Via says, upper-cased */
	/* Drives the handshake: 0 when done, or a negative xprt_status. */
	int (*handshake)(struct xprt *x);
	/* Bytes received (> 0), or a negative xprt_status. */
	ssize_t (*recv)(struct xprt *x, void *buf, size_t len);
	/* Bytes sent (> 0), or a negative xprt_status. */
	ssize_t (*send)(struct xprt *x, const void *buf, size_t len);
	/* Ends our direction of the stream (TLS: close_notify, then TCP FIN);
	 * the peer may still send. */
	void (*shutdown)(struct xprt *x);
	/* Names of the verified peer certificate (SAN DNS names, or CN when it
	 * has none); NULL and 0 for transports without one. Valid until destroy. */
	const char *const *(*peer_names)(struct xprt *x, unsigned *n);
	/* Closes the socket and frees the transport. */
	void (*destroy)(struct xprt *x);
};

struct xprt {
	const struct xprt_ops *ops;
	int fd;
	char error[200]; /* why the last call failed */
};

/* Plain TCP on a non-blocking socket. NULL when out of memory. */
struct xprt *xprt_tcp_new(int fd);

/*
 * Frees a TCP transport without closing its socket, and returns the
 * socket: for STARTTLS, where TLS takes over the same connection.
 */
int xprt_tcp_release(struct xprt *x);

/*
 * Whether a non-blocking connect() on fd has finished: 0 when connected,
 * XPRT_WANT_WRITE while in progress, XPRT_FAILED with the reason in err.
 */
int xprt_connect_done(int fd, char *err, size_t errlen);

#endif
