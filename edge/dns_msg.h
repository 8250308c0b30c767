/*
 * dns_msg: the DNS wire format that federation discovery needs, and the
 * order of SRV targets. SRV answers are parsed here rather than by c-ares
 * 1.18, whose SRV parser drops the TTLs that the cache needs; RFC 2782's
 * weighted order is drawn here. Pure functions on buffers: no I/O, no
 * allocation. The resolver (dns.h) and the fuzzer use them.
 */
#ifndef EDGE_DNS_MSG_H
#define EDGE_DNS_MSG_H

#include <stddef.h>
#include <stdint.h>

#define DNS_NAME_MAX 255               /* characters of a name, without the NUL */
#define DNS_MAX_SRV_TARGETS 32         /* kept of one SRV RRset: those of lowest priority */

/*
 * A negative answer is remembered for the SOA's negative TTL (RFC 2308), but
 * at most DNS_NEG_TTL_MAX: a partner who publishes its records is found within
 * seconds, while a flood of requests for a domain without them still costs
 * one query per name and DNS_NEG_TTL_MAX. DNS_NEG_TTL_DEFAULT without an SOA.
 */
#define DNS_NEG_TTL_MAX 30u
#define DNS_NEG_TTL_DEFAULT 5u

enum { DNS_RR_A = 1, DNS_RR_CNAME = 5, DNS_RR_SOA = 6, DNS_RR_AAAA = 28, DNS_RR_SRV = 33 };
#define DNS_CLASS_IN 1

enum dns_status {
	DNS_OK = 0,
	DNS_ENOTFOUND = -1,       /* NXDOMAIN or no such records */
	DNS_ETIMEOUT = -2,        /* no server answered in time */
	DNS_ESERVFAIL = -3,       /* server failure, refused, malformed answer */
	DNS_ENOMEM = -4,
};

struct dns_srv_target {
	const char *name;         /* without the trailing dot */
	uint16_t port, priority, weight;
};

/* DNS names compare without regard to ASCII case (RFC 4343), whatever the locale. */
int dns_name_eq(const char *a, const char *b);

/* Copies name without its trailing dot into key (DNS_NAME_MAX + 1 bytes).
 * Returns 0, or -1 when it is empty or too long. */
int dns_name_key(char *key, const char *name);

/* An SRV RRset as parsed, in answer order. Self-contained: nothing to free. */
struct dns_srv_rrset {
	unsigned n;
	uint32_t ttl;             /* seconds: the smallest of the RRset (and of the CNAMEs to it),
	                             or, for DNS_ENOTFOUND, how long to remember that */
	struct dns_srv_rr {
		uint16_t priority, weight, port;
		char name[DNS_NAME_MAX + 1];
	} rr[DNS_MAX_SRV_TARGETS];
};

/*
 * Parses the answer buf to an SRV query for qname. It takes the answer
 * section's SRV records (class IN) of qname, or of the name that CNAMEs in
 * the answer lead to from qname, matched without regard to case; other
 * records are ignored, as are targets that are not host names. Returns
 * DNS_OK with 1 to DNS_MAX_SRV_TARGETS records in out; DNS_ENOTFOUND for
 * NXDOMAIN, no such records or only the target "." (out->ttl: how long to
 * remember that, from the SOA per RFC 2308 or the "." record, at most 30 s,
 * else 5 s); DNS_ESERVFAIL for an error rcode, a malformed message, or
 * records whose targets are all unusable; DNS_ENOMEM. out is the caller's,
 * overwritten whatever the result.
 */
int dns_parse_srv_answer(const unsigned char *buf, size_t len, const char *qname,
                         struct dns_srv_rrset *out);

/*
 * Puts in out the n targets of in (n <= DNS_MAX_SRV_TARGETS) in the order to
 * try them: ascending priority and, within a priority, the weighted random
 * selection of RFC 2782, drawing on the PRNG state *rng. Names are not
 * copied.
 */
void dns_srv_order(uint64_t *rng, const struct dns_srv_target *in, unsigned n,
                   struct dns_srv_target *out);

/*
 * How long to remember that the answer buf holds no records: the negative
 * TTL of the SOA in its authority section (RFC 2308 section 5), at most
 * DNS_NEG_TTL_MAX; DNS_NEG_TTL_DEFAULT without one.
 */
uint32_t dns_negative_ttl(const unsigned char *buf, size_t len);

#endif
