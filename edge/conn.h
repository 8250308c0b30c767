/*
 * conn: SIP connections over an xprt transport, and their manager.
 *
 * The manager accepts on listeners, connects to destinations and keeps the
 * outbound connections of each destination in a pool that it reuses (up to
 * a count per destination, as Lync's OutgoingTlsCount). A connection reads
 * into its own buffer, frames the stream into SIP messages (sip_frame()),
 * parses them and hands them to the handler; it answers CRLF keep-alive
 * pings itself. Writes are queued until the handshake is done (so an
 * unverified peer is never sent a byte) and while the socket is full.
 *
 * A listener meant for the balancer (conn_listen_proxied()) takes
 * connections only from the balancers' addresses and reads a PROXY protocol
 * v2 header (common/ppv2.h) before the TLS handshake, exactly its length,
 * so that the partner's TLS bytes behind it reach OpenSSL untouched; the
 * header's source then is the connection's peer, for logs, Via and
 * everything else, and the balancer's address stays known (conn_via()).
 *
 * Connections are freed by the manager, never inside their own callbacks:
 * conn_close() only marks one closing, so a pointer stays valid until the
 * event loop iteration ends. Code that keeps a connection across iterations
 * keeps its id and looks it up with conn_find().
 */
#ifndef EDGE_CONN_H
#define EDGE_CONN_H

#include <ev.h>
#include <stdint.h>
#include <sys/socket.h>

#include "sip_msg.h"
#include "tls.h"

enum conn_side {
	CONN_INTERNAL = 0, /* the organization's own servers */
	CONN_EXTERNAL = 1, /* federated partners */
};

struct conn;
struct conn_mgr;
struct cfgu_addr;

/* Why a connection to a PROXY listener was closed before its handshake. */
enum conn_refusal {
	CONN_REFUSED_SOURCE,  /* its source is not one of the balancers */
	CONN_REFUSED_HEADER,  /* its PROXY header is bad, cut short or late */
	CONN_REFUSED_EMPTY,   /* closed before sending a byte (a TCP check, say): not counted */
};

/* What the manager counts itself; connections open now are conn_mgr_count(). */
struct conn_stats {
	unsigned long long proxy_headers;   /* PROXY v2 headers accepted (LOCAL too) */
	unsigned long long proxy_refused;   /* connections from a source not allowed */
	unsigned long long proxy_header_failures; /* CONN_REFUSED_HEADER */
};

/* Events a connection reports to its user (the proxy). */
struct conn_handler {
	/* A whole, parsed message. The handler owns msg. */
	void (*on_message)(void *ctx, struct conn *c, struct sip_msg *msg);
	/*
	 * A framed message that failed to parse (err is a sip_parse_error), or
	 * one over the size limit (SIP_ERR_TOO_LARGE: the connection closes once
	 * the handler's answer is written). msg is what parsed of it, or NULL;
	 * the handler owns it.
	 */
	void (*on_bad_message)(void *ctx, struct conn *c, struct sip_msg *msg, int err);
	/* The connection is up: TCP connected or TLS handshake done and verified. */
	void (*on_up)(void *ctx, struct conn *c);
	/* The connection is closing: nothing more can be sent on it. failed
	 * says whether an error ended it (TLS, I/O, framing, timeout) rather
	 * than the peer, the idle timer or shutdown. */
	void (*on_down)(void *ctx, struct conn *c, int failed, const char *why);
	/*
	 * A connection to a PROXY listener closed before its handshake, so
	 * before any other callback saw it (none will): from is the address
	 * that connected, "ip:port"; why says what was wrong. May be NULL.
	 */
	void (*on_refused)(void *ctx, const char *from, enum conn_refusal what, const char *why);
};

struct conn_limits {
	struct sip_limits sip;
	unsigned connect_timeout_ms; /* TCP connect plus TLS handshake */
	/*
	 * Lync's MaxKeepAliveInterval: a connection without traffic for this
	 * long is checked. With whitespace_keepalive (EnableWhiteSpaceKeepAlive)
	 * CRLF pings and pongs (RFC 5626) count as traffic and the check is a
	 * ping that must be answered; without it, only SIP messages count and
	 * the connection is closed.
	 */
	unsigned keepalive_s;
	int whitespace_keepalive;
};

/* Returns a new manager, or NULL when out of memory. */
struct conn_mgr *conn_mgr_new(struct ev_loop *loop, const struct conn_handler *handler,
                              void *ctx, unsigned max_conns);
/* Closes every listener and connection and frees the manager. */
void conn_mgr_free(struct conn_mgr *mgr);
unsigned conn_mgr_count(const struct conn_mgr *mgr);
void conn_mgr_stats(const struct conn_mgr *mgr, struct conn_stats *out);

/*
 * Listens on addr. tls NULL means plain TCP. The manager keeps the pointers
 * to tls and lim: they must outlive it. Returns 0, or -1 with err set.
 */
int conn_listen(struct conn_mgr *mgr, const struct sockaddr *addr, socklen_t len,
                enum conn_side side, struct tls_ctx *tls, const struct conn_limits *lim,
                char *err, size_t errlen);

/*
 * As conn_listen(), for the balancer: a connection whose source address is
 * none of the nfrom addresses of from (ports are not compared) is closed at
 * once; the others must begin with a PROXY v2 header within
 * lim->connect_timeout_ms (the handshake after it has the same deadline).
 * A PROXY command makes the header's source the peer; LOCAL (the
 * balancer's own check) keeps the balancer as the peer. from must outlive
 * the manager.
 */
int conn_listen_proxied(struct conn_mgr *mgr, const struct sockaddr *addr, socklen_t len,
                        enum conn_side side, struct tls_ctx *tls, const struct conn_limits *lim,
                        const struct cfgu_addr *from, unsigned nfrom, char *err, size_t errlen);

/* Where an outbound connection goes. Pointers must outlive the manager. */
struct conn_dest {
	const char *name;            /* TLS: the name the certificate must carry */
	const struct sockaddr *addr;
	socklen_t addrlen;
	enum conn_side side;
	struct tls_ctx *tls;         /* NULL for TCP */
	unsigned max_conns;          /* pooled connections to this destination */
	const struct conn_limits *lim;
};

/*
 * A connection to dest to send on: an idle established one, else a new one
 * while fewer than max_conns exist, else the least busy. It may still be
 * connecting: what is sent waits for the handshake. Returns NULL with err
 * set when no connection can be had.
 */
struct conn *conn_pool_get(struct conn_mgr *mgr, const struct conn_dest *dest,
                           char *err, size_t errlen);

/*
 * Whether a connection to dest failed before it came up (refused, timed
 * out, handshake failed) in the last 30 s: callers with other destinations
 * try those first.
 */
int conn_dest_down(struct conn_mgr *mgr, const struct conn_dest *dest);

/* Queues bytes. Returns 0, or -1 when the connection is closing. */
int conn_send(struct conn *c, const char *data, size_t len);
int conn_send_msg(struct conn *c, const struct sip_msg *m);

/* Marks the connection closing and reports on_down(why); freed later. */
void conn_close(struct conn *c, const char *why);
/* As conn_close(), for a connection that an error ends. */
void conn_fail(struct conn *c, const char *why);
/* Stops reading, and closes once everything queued has been written. */
void conn_close_after_flush(struct conn *c, const char *why);

struct conn *conn_find(struct conn_mgr *mgr, uint64_t id);
uint64_t conn_id(const struct conn *c);
enum conn_side conn_side(const struct conn *c);
int conn_is_tls(const struct conn *c);
int conn_is_up(const struct conn *c);
int conn_is_outbound(const struct conn *c);
const char *conn_transport(const struct conn *c);  /* "TCP" or "TLS" */
const char *conn_peer_ip(const struct conn *c);    /* numeric, no brackets */
uint16_t conn_peer_port(const struct conn *c);
const char *conn_peer_str(const struct conn *c);   /* "ip:port" or "[ip]:port" */
/* The balancer's address (numeric) when a PROXY header named the peer, else NULL. */
const char *conn_via(const struct conn *c);
const char *conn_local_ip(const struct conn *c);
uint16_t conn_local_port(const struct conn *c);
/* For TLS, the names of the verified peer certificate; else NULL, 0. */
const char *const *conn_peer_names(const struct conn *c, unsigned *n);
/* The outbound destination name, or NULL for an accepted connection. */
const char *conn_dest_name(const struct conn *c);

/* One pointer of the user's, cleared by nobody: on_down is the place to free it. */
void conn_set_user(struct conn *c, void *user);
void *conn_user(const struct conn *c);

#endif
