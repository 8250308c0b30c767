/*
 * dns: asynchronous DNS on the event loop, for federation partner discovery:
 * SRV _sipfederationtls._tcp.<domain>, then AAAA and A of the targets.
 *
 * c-ares does the transport (UDP, TCP when an answer is truncated) and
 * libev drives it, so nothing here blocks the loop; SRV answers are parsed
 * and ordered by dns_msg.h. This module adds a cache bounded by a record
 * count (as Lync's DnsCacheRecordCount) and emptied least recently used
 * first, a fresh RFC 2782 order for each query, and one network lookup
 * shared by identical queries. Names are absolute: no search
 * domains, no ndots; a trailing dot is allowed and ignored.
 *
 * Every callback comes from the event loop, never from inside the call that
 * started the query (not even for a cached answer or a numeric address), and
 * exactly once unless the query is cancelled first. Nothing is printed or
 * logged here: failures are an enum dns_status.
 */
#ifndef EDGE_DNS_H
#define EDGE_DNS_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "dns_msg.h"

#define DNS_CACHE_RECORDS_DEFAULT 3000 /* Lync's DnsCacheRecordCount */
#define DNS_MAX_ADDRS 32               /* of one host: up to 16 IPv6 and 16 IPv4 */

struct dns_options {
	const char *server;       /* numeric IPv4/IPv6 address of the resolver; NULL: the system's (resolv.conf) */
	uint16_t port;            /* of server; 0: 53 */
	unsigned timeout_ms;      /* per try and server; 0: 2000 */
	unsigned tries;           /* 0: 2 */
	unsigned cache_records;   /* most records cached at once; 0: no cache */
	uint64_t seed;            /* of the SRV order's PRNG; 0: a random one (tests set it) */
};

struct dns_resolver;

/*
 * A new resolver on loop. opt NULL takes every default, with a cache of
 * DNS_CACHE_RECORDS_DEFAULT. A lookup gives up after `tries` rounds, each
 * asking every server once and waiting timeout_ms for each: with one server,
 * DNS_ETIMEOUT comes timeout_ms * tries after the query started (a retry
 * over TCP after a truncated answer starts its try's wait again). Returns
 * NULL with err set when opt->server is not a numeric address or c-ares
 * cannot start.
 */
struct dns_resolver *dns_resolver_new(struct ev_loop *loop, const struct dns_options *opt,
                                      char *err, size_t errlen);
/*
 * Frees the resolver, its cache and its queries: the callbacks of pending
 * queries are NOT called, and their handles become invalid. Called from a
 * dns callback, it finishes when that callback returns, and no other
 * callback is called.
 */
void dns_resolver_free(struct dns_resolver *r);

struct dns_srv_answer {
	unsigned n;
	const struct dns_srv_target *targets; /* in the order to try (RFC 2782), drawn again per query */
};

struct dns_addr {
	struct sockaddr_storage sa;
	socklen_t salen;
};
struct dns_addr_answer {
	unsigned n;
	const struct dns_addr *addrs; /* IPv6 first, then IPv4, with the port asked for */
};

const char *dns_strerror(int status);

/*
 * ans is never NULL: on an error its n is 0. It and everything it points to
 * are valid only during the callback. The callback may start and cancel
 * queries, and free the resolver.
 */
typedef void (*dns_srv_cb)(void *arg, int status, const struct dns_srv_answer *ans);
typedef void (*dns_addr_cb)(void *arg, int status, const struct dns_addr_answer *ans);

struct dns_query; /* a handle, to cancel the query; freed by the resolver after the callback */

/*
 * Looks up the SRV records of name (e.g. "_sipfederationtls._tcp.fabrikam.com").
 * A single target "." (the service is decidedly not available) answers
 * DNS_ENOTFOUND. Returns a handle, or NULL only when out of memory; the
 * callback is then called once, later, from the loop, unless cancelled.
 */
struct dns_query *dns_resolve_srv(struct dns_resolver *r, const char *name, dns_srv_cb cb,
                                  void *arg);
/*
 * Looks up the AAAA and A records of host (two queries), answering with
 * both families; it is DNS_OK when either has an address, and an error of
 * one family is then not reported. A numeric host (IPv4, or IPv6 with or
 * without brackets) answers without a query. Returns as dns_resolve_srv().
 */
struct dns_query *dns_resolve_addr(struct dns_resolver *r, const char *host, uint16_t port,
                                   dns_addr_cb cb, void *arg);
/*
 * The callback of q will not be called, and q is freed. A network lookup
 * that q started goes on and fills the cache. Inside q's own callback, does
 * nothing.
 */
void dns_cancel(struct dns_query *q);

/* Counters for the JSON status. */
struct dns_stats {
	unsigned long long queries;    /* DNS queries sent (an address lookup sends two) */
	unsigned long long cache_hits; /* queries answered from the cache */
	unsigned long long failures;   /* lookups ended in a timeout, a server failure or no memory */
	unsigned cached;               /* cache entries */
	unsigned cached_records;       /* the records they hold, at most cache_records */
};
void dns_get_stats(const struct dns_resolver *r, struct dns_stats *out);

/* ---- for tests ---- */

/*
 * Caches an answer as if it had just come from the network, to test the
 * cache without one. status is DNS_OK (rr with at least one record, or n
 * addresses without their port) or DNS_ENOTFOUND; the entry lives rr->ttl
 * or ttl seconds. Returns 0 or DNS_ENOMEM; a 0 ttl or an answer of more
 * records than the cache holds is not cached.
 */
int dns_cache_put_srv(struct dns_resolver *r, const char *name, int status,
                      const struct dns_srv_rrset *rr);
int dns_cache_put_addr(struct dns_resolver *r, const char *host, int status,
                       const struct dns_addr *addrs, unsigned n, uint32_t ttl);

#endif
