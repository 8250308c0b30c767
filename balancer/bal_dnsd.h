/*
 * bal_dnsd: balancerd's DNS responder on the network. For each listen
 * address, one UDP socket and one TCP listener on the same port, on the
 * caller's libev loop; the answers come from bal_dns.h.
 *
 * UDP: each datagram is answered at once, from the address it was sent to;
 * answers larger than the client's size (at most BAL_DNS_UDP_SIZE) are sent
 * truncated. TCP (RFC 7766): 2-byte length framing, queries pipelined on one
 * connection and answered in order, never truncated. A connection is closed
 * when it has been idle for the idle timeout (10 s by default) counted from
 * its last complete query or its last answer fully sent, so that a client
 * that stalls in the middle of a message or does not read its answers is
 * dropped too; when it sends a length of 0 (a message over 65535 bytes
 * cannot be framed at all); when it half-closes, once what it asked is
 * answered. Past max_tcp_clients connections, new ones are accepted and
 * closed at once. The answers waiting for a slow reader are bounded: past
 * BAL_DNSD_TCP_OUT_MAX bytes no more queries are read from it, and the idle
 * timeout closes it if it does not read on.
 */
#ifndef BALANCER_BAL_DNSD_H
#define BALANCER_BAL_DNSD_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "bal_dns.h"
#include "cfgu.h"

#define BAL_DNSD_TCP_IDLE 10.0            /* seconds */
#define BAL_DNSD_TCP_OUT_MAX (4 * 65537)  /* answers queued for one TCP client, bytes */

struct bal_dnsd_stats {
	unsigned long long udp_queries, udp_answers, udp_send_errors; /* datagrams */
	unsigned long long tcp_accepted, tcp_refused; /* refused: past max_tcp_clients */
	unsigned long long tcp_queries, tcp_answers;
	unsigned long long tcp_idle_closed;   /* idle, stalled, or not reading */
	unsigned long long tcp_bad_closed;    /* a length of 0, a truncated message, an error */
	unsigned tcp_clients;                 /* connections open now */
};

struct bal_dnsd;

/*
 * Binds the n listeners (numeric addresses, listen[i].addr as cfgu fills it;
 * port 0: one picked by the system, the same for UDP and TCP, see
 * bal_dnsd_port()) and starts answering from dns, which must outlive the
 * responder, as must loop. IPv4 and IPv6 sockets alike; SO_REUSEADDR, and
 * IP_FREEBIND so that a VIP can be bound before it is ours. Returns NULL with
 * err set when a socket cannot be bound.
 */
struct bal_dnsd *bal_dnsd_new(struct ev_loop *loop, struct bal_dns *dns,
                              const struct cfgu_listen *listen, unsigned n,
                              unsigned max_tcp_clients, char *err, size_t errlen);
/* Closes every socket and connection. */
void bal_dnsd_free(struct bal_dnsd *s);

/* The idle timeout of TCP connections from now on, open ones included, whose idle
 * time counts from now (tests shorten it). */
void bal_dnsd_set_tcp_idle(struct bal_dnsd *s, double seconds);
/* The port listener i is bound to (0 for an unknown i). */
uint16_t bal_dnsd_port(const struct bal_dnsd *s, unsigned i);
void bal_dnsd_get_stats(const struct bal_dnsd *s, struct bal_dnsd_stats *out);

#endif
