/*
 * bal_dns: the answers of balancerd's authoritative DNS responder, on ldns.
 * Pure: no sockets and no clock, so that it can be tested and fuzzed alone;
 * bal_dnsd.h puts it on the network.
 *
 * For each configured zone (bal_cfg_zone) it serves: SOA and NS at the apex
 * (with glue for the first NS when it lies in the zone); A/AAAA of the pool
 * name listing the addresses set by bal_dns_set_pool(), rotated by one at
 * every answer; A/AAAA of the VIP name; SRV _sipfederationtls._tcp,
 * _sip._tls and _xmpp-server._tcp pointing to the pool name (a port of 0:
 * no such name), with the pool's addresses in the additional section. The
 * SOA: MNAME ns[0], RNAME hostmaster (default hostmaster.<domain>), refresh
 * 3600, retry 600, expire 86400, minimum = cfg->ttl. TTLs: cfg->ttl for the
 * pool's addresses, cfg->static_ttl for the rest, and the smaller of the two
 * for the SOA of negative answers (RFC 2308 3). Names compare without case;
 * the question comes back as asked. AA is set on every answer from a zone.
 *
 * NXDOMAIN for a name that does not exist, NODATA (NOERROR, SOA in the
 * authority section) for a name that exists without the type asked, an
 * empty non-terminal such as _tcp.<domain> (RFC 8020), or the pool name
 * while the pool is empty. REFUSED for a name outside every zone, a class
 * other than IN, AXFR and IXFR. FORMERR for QDCOUNT other than 1, several
 * OPT records, QTYPE OPT, or a message ldns cannot read (a bare header
 * then); NOTIMP for an opcode other than QUERY; no answer to a response.
 *
 * ANY (RFC 8482 lets us choose): every RRset the name holds, as for each
 * type in turn; the zone holds few, and an ANY is no larger than the pool's
 * A and AAAA together.
 *
 * EDNS0 (RFC 6891): an OPT in the query gets our OPT in the answer (size
 * BAL_DNS_UDP_SIZE, version 0, the DO bit copied; options are ignored);
 * version > 0 gets BADVERS. Over UDP an answer longer than the client's
 * size (512 without EDNS0, its OPT's size but at least 512 with it, and at
 * most outlen) first loses whole RRsets of its additional section, without
 * TC (RFC 2181 9); if still too long, it is sent as the header and the
 * question (and OPT) with TC set, no record at all: the client asks again
 * over TCP. Over TCP nothing is ever cut: an answer larger than outlen is
 * a SERVFAIL.
 */
#ifndef BALANCER_BAL_DNS_H
#define BALANCER_BAL_DNS_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "bal_cfg.h"

/* An address of an edge as DNS publishes it. */
struct bal_ip {
	int family;               /* AF_INET or AF_INET6 */
	union {
		struct in_addr v4;
		struct in6_addr v6;
	} u;
};

/*
 * Counters since bal_dns_new(). queries: every message given to
 * bal_dns_answer(); answered: those that got an answer (of any rcode),
 * dropped: those that got none (shorter than a header, a response, or an
 * answer that does not fit outlen). The others count answers by kind:
 * nxdomain and nodata (authoritative negative answers), refused (outside
 * every zone, a class other than IN, AXFR/IXFR), formerr, notimp (an opcode
 * other than QUERY), badvers (EDNS version > 0), servfail (out of memory, or
 * an answer too large for TCP's outlen), truncated (TC over UDP).
 */
struct bal_dns_stats {
	unsigned long long queries, answered, nxdomain, nodata, refused, formerr, notimp,
		truncated, dropped, badvers, servfail;
};

/* The UDP payload size our OPT records offer (RFC 6891), and the most balancerd
 * sends over UDP: the size that avoids IP fragmentation (DNS flag day 2020). */
#define BAL_DNS_UDP_SIZE 1232

struct bal_dns;

/*
 * A responder for cfg's zones. cfg must outlive it (its strings are used in
 * place). serial is the zones' first SOA serial when cfg gives none (0):
 * balancerd passes its start time. Returns NULL on failure (out of memory,
 * a name ldns refuses) with err set.
 */
struct bal_dns *bal_dns_new(const struct bal_cfg_dns *cfg, uint32_t serial, char *err,
                            size_t errlen);
void bal_dns_free(struct bal_dns *d);

/*
 * The addresses zone's pool name resolves to from now on (copied; duplicates
 * are kept once): the healthy edges, as balancerd decides; n = 0 empties it.
 * zone is a configured domain, in any case, with or without the final dot.
 * A change of the set (not of its order) increases the zone's SOA serial by
 * one (RFC 1982 arithmetic; 0 is skipped). Returns 0, or -1 for an unknown
 * zone, a family other than AF_INET and AF_INET6, or out of memory, the pool
 * then unchanged.
 */
int bal_dns_set_pool(struct bal_dns *d, const char *zone, const struct bal_ip *addrs,
                     unsigned n);

/*
 * Answers the query q (wire format) into out. Returns the answer's length,
 * at most outlen, or 0 when nothing must be sent (shorter than a header, a
 * response, or outlen too small even for a truncated answer). over_tcp: the
 * answer may take up to outlen (at most 65535) and is never truncated; over
 * UDP it is cut to 512 bytes, or to the EDNS0 size the client gives (at most
 * outlen), as said above. Not reentrant on one d (the rotation moves).
 */
size_t bal_dns_answer(struct bal_dns *d, const uint8_t *q, size_t qlen, int over_tcp,
                      uint8_t *out, size_t outlen);

/* The current SOA serial of zone, or 0 for an unknown zone. */
uint32_t bal_dns_serial(const struct bal_dns *d, const char *zone);
void bal_dns_get_stats(const struct bal_dns *d, struct bal_dns_stats *out);

#endif
