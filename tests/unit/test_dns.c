/*
 * Unit tests for edge/dns.c: the SRV answer parser on hand-built messages,
 * the RFC 2782 order, the cache (filled through dns_cache_put_*), and the
 * resolver on a real libev loop against loopback sockets that never answer.
 *
 * With DNS_TEST_SERVER=127.0.0.1:port, test_real_server also asks a real
 * server, which must serve this zone (BIND: named -g with `recursion no`):
 *
 *   $TTL 300
 *   @       IN SOA ns.fabrikam.test. hostmaster.fabrikam.test. ( 1 3600 600 86400 10 )
 *           IN NS ns
 *   ns      IN A 127.0.0.1
 *   sip     IN A 127.0.0.2
 *   sip     IN AAAA ::1
 *   sip2    IN A 127.0.0.3
 *   v4only  IN A 127.0.0.5
 *   _sipfederationtls._tcp IN SRV 10 60 5061 sip.fabrikam.test.
 *   _sipfederationtls._tcp IN SRV 10 20 5061 sip2.fabrikam.test.
 *   _sipfederationtls._tcp IN SRV 20 0 5062 v4only.fabrikam.test.
 *   ttl1    1 IN A 127.0.0.4
 *   _sipfederationtls._tcp.ttl1 1 IN SRV 0 0 5061 sip.fabrikam.test.
 *   _sipfederationtls._tcp.none IN SRV 0 0 0 .
 *   _sipfederationtls._tcp.alias IN CNAME _sipfederationtls._tcp.fabrikam.test.
 *   ; 30 targets, 2.5 kB: truncated over UDP without EDNS, so asked again over TCP
 *   _sipfederationtls._tcp.big 300 IN SRV <i/10> <i%10> 5061 edge-server-number-<ii>-with-a-rather-long-name.pool.fabrikam.test.
 *   ;   for ii = 00 .. 29
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "dns.h"

#define QNAME "_sipfederationtls._tcp.fabrikam.test"

/* ---- building DNS messages ---- */

struct wb {
	unsigned char b[16384];
	size_t n;
};

static void w8(struct wb *w, unsigned v)
{
	w->b[w->n++] = (unsigned char)v;
}

static void w16(struct wb *w, unsigned v)
{
	w8(w, (v >> 8) & 0xff);
	w8(w, v & 0xff);
}

static void w32(struct wb *w, uint32_t v)
{
	w16(w, v >> 16);
	w16(w, v & 0xffff);
}

/* Writes name uncompressed ("" is the root); returns where it starts. */
static size_t wname(struct wb *w, const char *name)
{
	size_t at = w->n;
	while (*name) {
		const char *dot = strchr(name, '.');
		size_t l = dot ? (size_t)(dot - name) : strlen(name);
		w8(w, (unsigned)l);
		memcpy(w->b + w->n, name, l);
		w->n += l;
		name += l;
		if (*name == '.')
			name++;
	}
	w8(w, 0);
	return at;
}

static void wptr(struct wb *w, size_t off)
{
	w16(w, 0xc000 | (unsigned)off);
}

/* A response header (QR, AA) with rcode; one question for qname, returned: its offset. */
static size_t whead(struct wb *w, unsigned rcode, unsigned an, unsigned ns, const char *qname,
                    unsigned qtype)
{
	size_t q;
	w->n = 0;
	w16(w, 0x1234);
	w16(w, 0x8400 | rcode);
	w16(w, 1);
	w16(w, an);
	w16(w, ns);
	w16(w, 0);
	q = wname(w, qname);
	w16(w, qtype);
	w16(w, 1);
	return q;
}

/* A record's fields after its owner; returns where its rdlength goes (see wend). */
static size_t wrr(struct wb *w, unsigned type, unsigned cls, uint32_t ttl)
{
	size_t at;
	w16(w, type);
	w16(w, cls);
	w32(w, ttl);
	at = w->n;
	w16(w, 0);
	return at;
}

static void wend(struct wb *w, size_t at)
{
	size_t len = w->n - at - 2;
	w->b[at] = (unsigned char)(len >> 8);
	w->b[at + 1] = (unsigned char)(len & 0xff);
}

/* An SRV record owned by the name at owner (a pointer), target written plainly. */
static void wsrv(struct wb *w, size_t owner, uint32_t ttl, unsigned prio, unsigned weight,
                 unsigned port, const char *target)
{
	size_t at;
	wptr(w, owner);
	at = wrr(w, 33, 1, ttl);
	w16(w, prio);
	w16(w, weight);
	w16(w, port);
	wname(w, target);
	wend(w, at);
}

/* An SOA record for the authority section. */
static void wsoa(struct wb *w, uint32_t ttl, uint32_t minimum)
{
	size_t at;
	wname(w, "fabrikam.test");
	at = wrr(w, 6, 1, ttl);
	wname(w, "ns.fabrikam.test");
	wname(w, "hostmaster.fabrikam.test");
	w32(w, 1);
	w32(w, 3600);
	w32(w, 600);
	w32(w, 86400);
	w32(w, minimum);
	wend(w, at);
}

/* Parses a heap copy of exactly len bytes, so that ASan sees any overread. */
static int parse(const struct wb *w, size_t len, const char *qname, struct dns_srv_rrset *rr)
{
	unsigned char *copy = malloc(len ? len : 1);
	int rc;
	assert_non_null(copy);
	memcpy(copy, w->b, len);
	rc = dns_parse_srv_answer(copy, len, qname, rr);
	free(copy); copy = NULL;
	return rc;
}

/* ---- the parser ---- */

/* Two SRV records with compressed names, and records of other names, types
 * and classes that must be ignored. */
static size_t build_basic(struct wb *w)
{
	size_t q = whead(w, 0, 5, 0, QNAME, 33), t1, at;

	wptr(w, q);
	at = wrr(w, 33, 1, 300);
	w16(w, 10);
	w16(w, 60);
	w16(w, 5061);
	t1 = wname(w, "sip.fabrikam.test");
	wend(w, at);

	wptr(w, q);
	at = wrr(w, 33, 1, 120);
	w16(w, 10);
	w16(w, 20);
	w16(w, 5061);
	w8(w, 4);
	memcpy(w->b + w->n, "sip2", 4);
	w->n += 4;
	wptr(w, t1 + 4); /* "fabrikam.test" inside the first target */
	wend(w, at);

	wptr(w, t1); /* an A record of the target: not ours */
	at = wrr(w, 1, 1, 5);
	w32(w, 0x7f000002);
	wend(w, at);

	wname(w, "_sip._tcp.fabrikam.test"); /* another owner */
	at = wrr(w, 33, 1, 1);
	w16(w, 0);
	w16(w, 0);
	w16(w, 5060);
	wname(w, "other.fabrikam.test");
	wend(w, at);

	wptr(w, q); /* class CH */
	at = wrr(w, 33, 3, 1);
	w16(w, 0);
	w16(w, 0);
	w16(w, 5060);
	wname(w, "chaos.fabrikam.test");
	wend(w, at);
	return w->n;
}

static void test_parse_basic(void **state)
{
	struct wb w;
	struct dns_srv_rrset rr;
	size_t len = build_basic(&w);

	assert_int_equal(parse(&w, len, QNAME, &rr), DNS_OK);
	assert_int_equal(rr.n, 2);
	assert_int_equal(rr.ttl, 120);
	assert_string_equal(rr.rr[0].name, "sip.fabrikam.test");
	assert_int_equal(rr.rr[0].priority, 10);
	assert_int_equal(rr.rr[0].weight, 60);
	assert_int_equal(rr.rr[0].port, 5061);
	assert_string_equal(rr.rr[1].name, "sip2.fabrikam.test");
	assert_int_equal(rr.rr[1].weight, 20);

	/* the owner matches without regard to case, and a trailing dot is allowed */
	assert_int_equal(parse(&w, len, "_SIPFederationTLS._TCP.Fabrikam.TEST.", &rr), DNS_OK);
	assert_int_equal(rr.n, 2);
	/* a name that owns nothing here */
	assert_int_equal(parse(&w, len, "_sipfederationtls._tcp.northwind.test", &rr), DNS_ENOTFOUND);
	assert_int_equal(rr.n, 0);
	assert_int_equal(rr.ttl, 5);
}

static void test_parse_truncated(void **state)
{
	struct wb w;
	struct dns_srv_rrset rr;
	size_t len = build_basic(&w);

	for (size_t l = 0; l < len; l++)
		assert_int_equal(parse(&w, l, QNAME, &rr), DNS_ESERVFAIL);
	/* bytes after the last record do not matter */
	w.b[len] = 0xff;
	assert_int_equal(parse(&w, len + 1, QNAME, &rr), DNS_OK);
}

static void test_parse_rcodes(void **state)
{
	struct wb w;
	struct dns_srv_rrset rr;
	size_t len;

	/* NXDOMAIN: remembered for min(SOA TTL, SOA minimum), at most 30 s */
	whead(&w, 3, 0, 1, QNAME, 33);
	wsoa(&w, 300, 10);
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ENOTFOUND);
	assert_int_equal(rr.ttl, 10);
	whead(&w, 3, 0, 1, QNAME, 33);
	wsoa(&w, 2, 10);
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ENOTFOUND);
	assert_int_equal(rr.ttl, 2);
	whead(&w, 3, 0, 1, QNAME, 33);
	wsoa(&w, 3600, 3600);
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ENOTFOUND);
	assert_int_equal(rr.ttl, 30);
	/* without an SOA: 5 s */
	whead(&w, 3, 0, 0, QNAME, 33);
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ENOTFOUND);
	assert_int_equal(rr.ttl, 5);
	/* NODATA */
	whead(&w, 0, 0, 1, QNAME, 33);
	wsoa(&w, 300, 7);
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ENOTFOUND);
	assert_int_equal(rr.ttl, 7);
	/* a truncated SOA: the default */
	len = w.n;
	assert_int_equal(parse(&w, len - 2, QNAME, &rr), DNS_ENOTFOUND);
	assert_int_equal(rr.ttl, 5);
	/* SERVFAIL, REFUSED, FORMERR */
	for (unsigned rcode = 1; rcode < 16; rcode++) {
		if (rcode == 3)
			continue;
		whead(&w, rcode, 0, 0, QNAME, 33);
		assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ESERVFAIL);
	}
	/* a query, not a response */
	build_basic(&w);
	w.b[2] &= 0x7f;
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ESERVFAIL);
}

static void test_parse_dot(void **state)
{
	struct wb w;
	struct dns_srv_rrset rr;
	size_t q;

	/* a single "." target: decidedly not available */
	q = whead(&w, 0, 1, 0, QNAME, 33);
	wsrv(&w, q, 600, 0, 0, 0, "");
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ENOTFOUND);
	assert_int_equal(rr.n, 0);
	assert_int_equal(rr.ttl, 30);
	q = whead(&w, 0, 1, 0, QNAME, 33);
	wsrv(&w, q, 7, 0, 0, 0, "");
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ENOTFOUND);
	assert_int_equal(rr.ttl, 7);
	/* "." beside a real target is just skipped */
	q = whead(&w, 0, 2, 0, QNAME, 33);
	wsrv(&w, q, 60, 0, 0, 0, "");
	wsrv(&w, q, 60, 5, 1, 5061, "sip.fabrikam.test");
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_OK);
	assert_int_equal(rr.n, 1);
	assert_string_equal(rr.rr[0].name, "sip.fabrikam.test");
}

static void test_parse_bad_targets(void **state)
{
	struct wb w;
	struct dns_srv_rrset rr;
	char longname[400];
	size_t q, at;

	/* 5 labels of 63: more than DNS_NAME_MAX characters */
	longname[0] = '\0';
	for (int i = 0; i < 5; i++) {
		strcat(longname, i ? "." : "");
		for (int k = 0; k < 63; k++)
			strcat(longname, "a");
	}
	q = whead(&w, 0, 4, 0, QNAME, 33);
	wsrv(&w, q, 60, 0, 0, 5061, "has space.fabrikam.test");
	wsrv(&w, q, 60, 0, 0, 5061, "dot\\.inside.fabrikam.test");
	wsrv(&w, q, 60, 0, 0, 5061, longname);
	wsrv(&w, q, 60, 1, 0, 5061, "good.fabrikam.test");
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_OK);
	assert_int_equal(rr.n, 1);
	assert_string_equal(rr.rr[0].name, "good.fabrikam.test");

	/* records, none usable: a bad answer, not a missing one */
	q = whead(&w, 0, 1, 0, QNAME, 33);
	wsrv(&w, q, 60, 0, 0, 5061, "has space.fabrikam.test");
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ESERVFAIL);

	/* rdata too short for an SRV */
	q = whead(&w, 0, 1, 0, QNAME, 33);
	wptr(&w, q);
	at = wrr(&w, 33, 1, 60);
	w16(&w, 1);
	w16(&w, 2);
	wend(&w, at);
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ESERVFAIL);

	/* a target that runs past its rdata */
	q = whead(&w, 0, 2, 0, QNAME, 33);
	wptr(&w, q);
	at = wrr(&w, 33, 1, 60);
	w16(&w, 1);
	w16(&w, 2);
	w16(&w, 3);
	wname(&w, "x.test");
	w.b[at + 1] = 7; /* rdlength: the fixed part and one byte of the name */
	w.n = at + 2 + 7;
	wsrv(&w, q, 60, 0, 0, 5061, "good.fabrikam.test");
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ESERVFAIL);

	/* good records, then a malformed one: nothing of it is kept */
	q = whead(&w, 0, 3, 0, QNAME, 33);
	wsrv(&w, q, 60, 0, 0, 5061, "one.fabrikam.test");
	wsrv(&w, q, 60, 0, 0, 5061, "two.fabrikam.test");
	wptr(&w, q);
	at = wrr(&w, 33, 1, 60);
	w16(&w, 1);
	wend(&w, at);
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ESERVFAIL);
	assert_int_equal(rr.n, 0);

	/* a compression loop */
	q = whead(&w, 0, 1, 0, QNAME, 33);
	at = w.n;
	wptr(&w, at); /* points at itself */
	wrr(&w, 33, 1, 60);
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_ESERVFAIL);

	/* a TTL with the top bit set counts as 0 (RFC 2181) */
	q = whead(&w, 0, 1, 0, QNAME, 33);
	wsrv(&w, q, 0x80000001u, 0, 0, 5061, "good.fabrikam.test");
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_OK);
	assert_int_equal(rr.ttl, 0);
}

static void test_parse_bound(void **state)
{
	struct wb w;
	struct dns_srv_rrset rr;
	char name[32];
	size_t q = whead(&w, 0, 40, 0, QNAME, 33);

	/* 40 records, priorities 40 down to 1: the 32 lowest are kept */
	for (unsigned i = 0; i < 40; i++) {
		snprintf(name, sizeof(name), "h%02u.fabrikam.test", i);
		wsrv(&w, q, 60, 40 - i, 1, 5061, name);
	}
	assert_int_equal(parse(&w, w.n, QNAME, &rr), DNS_OK);
	assert_int_equal(rr.n, DNS_MAX_SRV_TARGETS);
	for (unsigned i = 0; i < rr.n; i++) {
		assert_true(rr.rr[i].priority >= 1 && rr.rr[i].priority <= 32);
		for (unsigned k = 0; k < i; k++)
			assert_int_not_equal(rr.rr[i].priority, rr.rr[k].priority);
	}
}

static void test_parse_cname(void **state)
{
	struct wb w;
	struct dns_srv_rrset rr;
	size_t q = whead(&w, 0, 3, 0, "_sipfederationtls._tcp.alias.test", 33), t, at;

	wptr(&w, q);
	at = wrr(&w, 5, 1, 50);
	t = wname(&w, QNAME);
	wend(&w, at);
	wsrv(&w, t, 300, 0, 1, 5061, "sip.fabrikam.test");
	wsrv(&w, q, 300, 0, 1, 5061, "not-me.alias.test"); /* the alias owns no SRV beside its CNAME */
	assert_int_equal(parse(&w, w.n, "_sipfederationtls._tcp.alias.test", &rr), DNS_OK);
	assert_int_equal(rr.n, 1);
	assert_string_equal(rr.rr[0].name, "sip.fabrikam.test");
	assert_int_equal(rr.ttl, 50);

	/* a CNAME loop ends without records */
	q = whead(&w, 0, 2, 0, "a.test", 33);
	wptr(&w, q);
	at = wrr(&w, 5, 1, 50);
	t = wname(&w, "b.test");
	wend(&w, at);
	wptr(&w, t);
	at = wrr(&w, 5, 1, 50);
	wptr(&w, q);
	wend(&w, at);
	assert_int_equal(parse(&w, w.n, "a.test", &rr), DNS_ENOTFOUND);
}

/* Random bytes behind a plausible header: no crash, and a sane result. */
static void test_parse_garbage(void **state)
{
	struct wb w;
	struct dns_srv_rrset rr;
	uint64_t s = 42;

	for (int iter = 0; iter < 20000; iter++) {
		size_t len = 12 + (size_t)(rand() % 300);
		for (size_t i = 0; i < len; i++) {
			s = s * 6364136223846793005ULL + 1442695040888963407ULL;
			w.b[i] = (unsigned char)(s >> 56);
		}
		w.b[2] = 0x84;
		w.b[3] = 0;
		w.b[4] = 0;
		w.b[5] = (unsigned char)(iter & 1);
		w.b[6] = 0;
		w.b[7] = (unsigned char)(iter % 5);
		int rc = parse(&w, len, QNAME, &rr);
		assert_true(rc == DNS_OK || rc == DNS_ENOTFOUND || rc == DNS_ESERVFAIL);
		if (rc == DNS_OK)
			assert_true(rr.n >= 1 && rr.n <= DNS_MAX_SRV_TARGETS);
		else
			assert_int_equal(rr.n, 0);
	}
}

/* ---- RFC 2782 order ---- */

static void test_order_priorities(void **state)
{
	static const struct dns_srv_target in[] = {
		{ "c", 1, 20, 5 }, { "a", 1, 10, 0 }, { "d", 1, 30, 1 }, { "b", 1, 10, 7 }, { "e", 1, 20, 0 },
	};
	struct dns_srv_target out[5];
	uint64_t rng = 1;

	for (int iter = 0; iter < 1000; iter++) {
		unsigned seen = 0;
		dns_srv_order(&rng, in, 5, out);
		for (unsigned i = 0; i < 5; i++) {
			if (i > 0)
				assert_true(out[i - 1].priority <= out[i].priority);
			seen |= 1u << (out[i].name[0] - 'a');
		}
		assert_int_equal(seen, 0x1f); /* a permutation */
		assert_string_equal(out[4].name, "d");
	}
	dns_srv_order(&rng, in, 0, out);
	dns_srv_order(&rng, in, 1, out);
	assert_string_equal(out[0].name, "c");
}

/* How often each of in[] comes first over 10000 orderings. */
static void first_counts(const struct dns_srv_target *in, unsigned n, uint64_t seed, unsigned *counts)
{
	struct dns_srv_target out[DNS_MAX_SRV_TARGETS];
	uint64_t rng = seed;

	memset(counts, 0, n * sizeof(*counts));
	for (int iter = 0; iter < 10000; iter++) {
		dns_srv_order(&rng, in, n, out);
		for (unsigned i = 0; i < n; i++)
			if (out[0].name == in[i].name)
				counts[i]++;
	}
}

static void test_order_weights(void **state)
{
	static const struct dns_srv_target w31[] = { { "a", 1, 0, 3 }, { "b", 1, 0, 1 } };
	static const struct dns_srv_target w310[] = { { "a", 1, 0, 3 }, { "b", 1, 0, 1 }, { "z", 1, 0, 0 } };
	static const struct dns_srv_target w000[] = { { "a", 1, 0, 0 }, { "b", 1, 0, 0 }, { "c", 1, 0, 0 } };
	static const struct dns_srv_target w1100[] = {
		{ "a", 1, 0, 1 }, { "b", 1, 0, 1 }, { "y", 1, 0, 0 }, { "z", 1, 0, 0 },
	};
	unsigned c[4];

	/* 3:1: the first 75% of the time (sigma is 0.43%) */
	first_counts(w31, 2, 12345, c);
	assert_in_range(c[0], 7300, 7700);
	assert_int_equal(c[0] + c[1], 10000);
	/* with a weight 0: it is first when r = 0, 1 time in sum + 1 = 5 */
	first_counts(w310, 3, 777, c);
	assert_in_range(c[0], 5800, 6200);
	assert_in_range(c[1], 1800, 2200);
	assert_in_range(c[2], 1800, 2200);
	/* all weights 0: uniform */
	first_counts(w000, 3, 99, c);
	for (int i = 0; i < 3; i++)
		assert_in_range(c[i], 3100, 3567);
	/* two weights 0 share their chance (1 in 3 between them) */
	first_counts(w1100, 4, 5, c);
	assert_in_range(c[0], 3100, 3567);
	assert_in_range(c[1], 3100, 3567);
	assert_in_range(c[2], 1500, 1833);
	assert_in_range(c[3], 1500, 1833);
}

static void test_order_seeded(void **state)
{
	static const struct dns_srv_target in[] = {
		{ "a", 1, 0, 1 }, { "b", 1, 0, 2 }, { "c", 1, 0, 3 }, { "d", 1, 0, 4 },
	};
	struct dns_srv_target x[4], y[4];
	uint64_t r1 = 2024, r2 = 2024;

	for (int iter = 0; iter < 100; iter++) {
		dns_srv_order(&r1, in, 4, x);
		dns_srv_order(&r2, in, 4, y);
		for (int i = 0; i < 4; i++)
			assert_ptr_equal(x[i].name, y[i].name);
	}
}

/* ---- resolvers on a loop ---- */

/* A loopback UDP socket that receives and never answers; its port in *port. */
static int silent_socket(uint16_t *port)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);
	int fd = socket(AF_INET, SOCK_DGRAM, 0);

	assert_true(fd >= 0);
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
	*port = ntohs(sa.sin_port);
	return fd;
}

struct fx {
	struct ev_loop *loop;
	struct dns_resolver *r;
	int silent_fd;
	uint16_t silent_port;
};

static struct fx *fx_new(unsigned cache_records, unsigned timeout_ms, unsigned tries)
{
	struct fx *f = calloc(1, sizeof(*f));
	struct dns_options opt;
	char err[256];

	assert_non_null(f);
	f->loop = ev_loop_new(EVFLAG_AUTO);
	f->silent_fd = silent_socket(&f->silent_port);
	memset(&opt, 0, sizeof(opt));
	opt.server = "127.0.0.1";
	opt.port = f->silent_port;
	opt.timeout_ms = timeout_ms;
	opt.tries = tries;
	opt.cache_records = cache_records;
	opt.seed = 7;
	f->r = dns_resolver_new(f->loop, &opt, err, sizeof(err));
	if (!f->r)
		fprintf(stderr, "dns_resolver_new: %s\n", err);
	assert_non_null(f->r);
	return f;
}

static void fx_free(struct fx *f)
{
	dns_resolver_free(f->r);
	ev_loop_destroy(f->loop);
	close(f->silent_fd);
	free(f);
}

struct rec {
	int calls;
	int status;
	unsigned n;
	char names[DNS_MAX_SRV_TARGETS][DNS_NAME_MAX + 1];
	uint16_t prio[DNS_MAX_SRV_TARGETS];
	struct dns_addr addrs[DNS_MAX_ADDRS];
	/* what to do inside the callback */
	struct dns_resolver *free_me;
	struct dns_query *cancel_me;
};

static void on_srv(void *arg, int status, const struct dns_srv_answer *ans)
{
	struct rec *c = arg;
	c->calls++;
	c->status = status;
	c->n = ans->n;
	for (unsigned i = 0; i < ans->n; i++) {
		snprintf(c->names[i], sizeof(c->names[i]), "%s", ans->targets[i].name);
		c->prio[i] = ans->targets[i].priority;
	}
	if (c->free_me)
		dns_resolver_free(c->free_me);
	if (c->cancel_me)
		dns_cancel(c->cancel_me);
}

static void on_addr(void *arg, int status, const struct dns_addr_answer *ans)
{
	struct rec *c = arg;
	c->calls++;
	c->status = status;
	c->n = ans->n;
	for (unsigned i = 0; i < ans->n; i++)
		c->addrs[i] = ans->addrs[i];
	if (c->free_me)
		dns_resolver_free(c->free_me);
}

static uint16_t addr_port(const struct dns_addr *a)
{
	if (a->sa.ss_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)(const void *)&a->sa)->sin6_port);
	return ntohs(((const struct sockaddr_in *)(const void *)&a->sa)->sin_port);
}

static const char *addr_ip(const struct dns_addr *a, char *buf, size_t len)
{
	if (a->sa.ss_family == AF_INET6)
		return inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)(const void *)&a->sa)->sin6_addr, buf, (socklen_t)len);
	return inet_ntop(AF_INET, &((const struct sockaddr_in *)(const void *)&a->sa)->sin_addr, buf, (socklen_t)len);
}

static struct dns_addr mkaddr(const char *ip)
{
	struct dns_addr a;
	memset(&a, 0, sizeof(a));
	if (strchr(ip, ':')) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)&a.sa;
		s6->sin6_family = AF_INET6;
		inet_pton(AF_INET6, ip, &s6->sin6_addr);
		a.salen = sizeof(*s6);
	} else {
		struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)&a.sa;
		s4->sin_family = AF_INET;
		inet_pton(AF_INET, ip, &s4->sin_addr);
		a.salen = sizeof(*s4);
	}
	return a;
}

static struct dns_srv_rrset *mkrrset(unsigned n, uint32_t ttl)
{
	static struct dns_srv_rrset rr;
	memset(&rr, 0, sizeof(rr));
	rr.n = n;
	rr.ttl = ttl;
	for (unsigned i = 0; i < n; i++) {
		snprintf(rr.rr[i].name, sizeof(rr.rr[i].name), "t%u.fabrikam.test", i);
		rr.rr[i].priority = 10;
		rr.rr[i].weight = 1;
		rr.rr[i].port = 5061;
	}
	return &rr;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static struct dns_stats stats(const struct fx *f)
{
	struct dns_stats s;
	dns_get_stats(f->r, &s);
	return s;
}

static void test_numeric(void **state)
{
	static const struct { const char *host; int family; const char *ip; } cases[] = {
		{ "127.0.0.1", AF_INET, "127.0.0.1" },
		{ "::1", AF_INET6, "::1" },
		{ "[::1]", AF_INET6, "::1" },
	};
	struct fx *f = fx_new(100, 100, 1);
	char ip[INET6_ADDRSTRLEN];

	for (unsigned i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct rec c = { 0 };
		assert_non_null(dns_resolve_addr(f->r, cases[i].host, 5061, on_addr, &c));
		assert_int_equal(c.calls, 0); /* never from inside the call */
		ev_run(f->loop, 0);
		assert_int_equal(c.calls, 1);
		assert_int_equal(c.status, DNS_OK);
		assert_int_equal(c.n, 1);
		assert_int_equal(c.addrs[0].sa.ss_family, cases[i].family);
		assert_string_equal(addr_ip(&c.addrs[0], ip, sizeof(ip)), cases[i].ip);
		assert_int_equal(addr_port(&c.addrs[0]), 5061);
	}
	assert_int_equal(stats(f).queries, 0);
	fx_free(f);
}

static void test_cache_hit(void **state)
{
	struct fx *f = fx_new(100, 100, 1);
	struct rec c = { 0 };
	struct dns_stats s;

	assert_int_equal(dns_cache_put_srv(f->r, QNAME, DNS_OK, mkrrset(2, 300)), 0);
	s = stats(f);
	assert_int_equal(s.cached, 1);
	assert_int_equal(s.cached_records, 2);
	/* keys are names without regard to case or a trailing dot */
	assert_non_null(dns_resolve_srv(f->r, "_SIPFEDERATIONTLS._tcp.Fabrikam.Test.", on_srv, &c));
	assert_int_equal(c.calls, 0);
	ev_run(f->loop, 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.status, DNS_OK);
	assert_int_equal(c.n, 2);
	s = stats(f);
	assert_int_equal(s.cache_hits, 1);
	assert_int_equal(s.queries, 0);
	/* an address entry under the same name is another key */
	assert_int_equal(dns_cache_put_addr(f->r, QNAME, DNS_ENOTFOUND, NULL, 0, 60), 0);
	assert_int_equal(stats(f).cached, 2);
	/* putting it again replaces it */
	assert_int_equal(dns_cache_put_srv(f->r, QNAME, DNS_OK, mkrrset(3, 300)), 0);
	s = stats(f);
	assert_int_equal(s.cached, 2);
	assert_int_equal(s.cached_records, 4);
	fx_free(f);
}

/* Whether name is cached as SRV: a miss sends a query, which is cancelled. */
static int srv_cached(struct fx *f, const char *name)
{
	struct rec c = { 0 };
	unsigned long long before = stats(f).queries;
	struct dns_query *q = dns_resolve_srv(f->r, name, on_srv, &c);
	int hit = stats(f).queries == before;
	dns_cancel(q);
	return hit;
}

static void test_cache_lru(void **state)
{
	struct fx *f = fx_new(5, 100, 1);
	struct dns_stats s;

	assert_int_equal(dns_cache_put_srv(f->r, "a.test", DNS_OK, mkrrset(2, 300)), 0);
	assert_int_equal(dns_cache_put_srv(f->r, "b.test", DNS_OK, mkrrset(2, 300)), 0);
	assert_true(srv_cached(f, "a.test")); /* a is now used more recently than b */
	assert_int_equal(dns_cache_put_srv(f->r, "c.test", DNS_OK, mkrrset(2, 300)), 0);
	s = stats(f);
	assert_int_equal(s.cached, 2);
	assert_int_equal(s.cached_records, 4);
	assert_false(srv_cached(f, "b.test"));
	assert_true(srv_cached(f, "c.test"));
	assert_true(srv_cached(f, "a.test"));
	/* a negative entry counts one record: 5 of 5 */
	assert_int_equal(dns_cache_put_srv(f->r, "n.test", DNS_ENOTFOUND, mkrrset(0, 30)), 0);
	s = stats(f);
	assert_int_equal(s.cached, 3);
	assert_int_equal(s.cached_records, 5);
	/* 3 more records: the least recently used go until they fit, c then
	 * a; n, put after a was last used, stays */
	assert_int_equal(dns_cache_put_srv(f->r, "d.test", DNS_OK, mkrrset(3, 300)), 0);
	s = stats(f);
	assert_int_equal(s.cached, 2);
	assert_int_equal(s.cached_records, 4);
	assert_true(srv_cached(f, "n.test"));
	assert_true(srv_cached(f, "d.test"));
	assert_false(srv_cached(f, "a.test"));
	assert_false(srv_cached(f, "c.test"));
	/* more records than the whole cache: not cached, nothing evicted */
	assert_int_equal(dns_cache_put_srv(f->r, "e.test", DNS_OK, mkrrset(6, 300)), 0);
	s = stats(f);
	assert_int_equal(s.cached, 2);
	assert_int_equal(s.cached_records, 4);
	/* ttl 0: not cached */
	assert_int_equal(dns_cache_put_srv(f->r, "z.test", DNS_OK, mkrrset(1, 0)), 0);
	assert_int_equal(stats(f).cached, 2);
	fx_free(f);
}

static void test_cache_disabled(void **state)
{
	struct fx *f = fx_new(0, 100, 1);
	struct dns_addr a = mkaddr("127.0.0.2");

	assert_int_equal(dns_cache_put_srv(f->r, QNAME, DNS_OK, mkrrset(1, 300)), 0);
	assert_int_equal(dns_cache_put_addr(f->r, "sip.fabrikam.test", DNS_OK, &a, 1, 300), 0);
	assert_int_equal(stats(f).cached, 0);
	assert_false(srv_cached(f, QNAME));
	fx_free(f);
}

static void test_cache_expiry(void **state)
{
	struct fx *f = fx_new(100, 100, 1);

	assert_int_equal(dns_cache_put_srv(f->r, QNAME, DNS_OK, mkrrset(1, 1)), 0);
	assert_true(srv_cached(f, QNAME));
	usleep(1100 * 1000);
	assert_false(srv_cached(f, QNAME)); /* expired: asked again */
	assert_int_equal(stats(f).cached, 0);
	fx_free(f);
}

static void test_cache_addr(void **state)
{
	struct fx *f = fx_new(100, 100, 1);
	struct dns_addr a[2] = { mkaddr("::1"), mkaddr("127.0.0.2") };
	struct rec c = { 0 }, neg = { 0 };
	char ip[INET6_ADDRSTRLEN];

	assert_int_equal(dns_cache_put_addr(f->r, "sip.fabrikam.test", DNS_OK, a, 2, 60), 0);
	assert_int_equal(dns_cache_put_addr(f->r, "nosuch.fabrikam.test", DNS_ENOTFOUND, NULL, 0, 5), 0);
	assert_int_equal(stats(f).cached_records, 3);
	assert_non_null(dns_resolve_addr(f->r, "SIP.fabrikam.test", 5061, on_addr, &c));
	assert_non_null(dns_resolve_addr(f->r, "nosuch.fabrikam.test", 5061, on_addr, &neg));
	assert_int_equal(c.calls + neg.calls, 0);
	ev_run(f->loop, 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.status, DNS_OK);
	assert_int_equal(c.n, 2);
	assert_string_equal(addr_ip(&c.addrs[0], ip, sizeof(ip)), "::1");
	assert_int_equal(addr_port(&c.addrs[0]), 5061);
	assert_string_equal(addr_ip(&c.addrs[1], ip, sizeof(ip)), "127.0.0.2");
	assert_int_equal(addr_port(&c.addrs[1]), 5061);
	assert_int_equal(neg.calls, 1);
	assert_int_equal(neg.status, DNS_ENOTFOUND);
	assert_int_equal(neg.n, 0);
	assert_int_equal(stats(f).cache_hits, 2);
	assert_int_equal(stats(f).queries, 0);
	fx_free(f);
}

/* A cached RRset is ordered again for each query. */
static void test_cache_reorder(void **state)
{
	struct fx *f = fx_new(100, 100, 1);
	int first_t0 = 0;

	assert_int_equal(dns_cache_put_srv(f->r, QNAME, DNS_OK, mkrrset(2, 300)), 0);
	for (int i = 0; i < 200; i++) {
		struct rec c = { 0 };
		dns_resolve_srv(f->r, QNAME, on_srv, &c);
		ev_run(f->loop, 0);
		assert_int_equal(c.calls, 1);
		first_t0 += strcmp(c.names[0], "t0.fabrikam.test") == 0;
	}
	assert_in_range(first_t0, 60, 140);
	fx_free(f);
}

static void test_cancel(void **state)
{
	struct fx *f = fx_new(100, 100, 1);
	struct rec c = { 0 }, d = { 0 };
	struct dns_query *q;

	/* a ready answer */
	q = dns_resolve_addr(f->r, "127.0.0.1", 1, on_addr, &c);
	dns_cancel(q);
	/* a query in flight: the lookup goes on, harmlessly, and times out */
	q = dns_resolve_srv(f->r, QNAME, on_srv, &d);
	assert_int_equal(stats(f).queries, 1);
	dns_cancel(q);
	ev_run(f->loop, 0);
	assert_int_equal(c.calls + d.calls, 0);
	assert_int_equal(stats(f).failures, 1);
	fx_free(f);
}

/* Identical queries share one network query, and all time out. */
static void test_share_and_timeout(void **state)
{
	struct fx *f = fx_new(100, 300, 2);
	struct rec a = { 0 }, b = { 0 }, c = { 0 };
	double t0 = now_s(), dt;

	dns_resolve_srv(f->r, QNAME, on_srv, &a);
	dns_resolve_srv(f->r, "_SIPFEDERATIONTLS._TCP.FABRIKAM.TEST.", on_srv, &b);
	dns_resolve_addr(f->r, "sip.fabrikam.test", 5061, on_addr, &c);
	assert_int_equal(stats(f).queries, 1 + 2);
	ev_run(f->loop, 0);
	dt = now_s() - t0;
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 1);
	assert_int_equal(c.calls, 1);
	assert_int_equal(a.status, DNS_ETIMEOUT);
	assert_int_equal(b.status, DNS_ETIMEOUT);
	assert_int_equal(c.status, DNS_ETIMEOUT);
	/* two tries of 300 ms each, not c-ares' doubling 300 + 600 */
	assert_true(dt >= 0.59 && dt < 0.8);
	assert_int_equal(stats(f).queries, 2 * 3);
	assert_int_equal(stats(f).failures, 2);
	assert_int_equal(stats(f).cached, 0); /* failures are not cached */
	fx_free(f);
}

/* A port where nothing listens: ICMP refuses at once, no waiting. */
static void test_refused(void **state)
{
	struct fx *f = fx_new(100, 1000, 2);
	struct dns_options opt = { "127.0.0.1", 0, 1000, 2, 100, 1 };
	struct rec c = { 0 };
	struct dns_resolver *r;
	char err[256];
	double t0;
	int fd = silent_socket(&opt.port);

	close(fd); /* the port is free again */
	r = dns_resolver_new(f->loop, &opt, err, sizeof(err));
	assert_non_null(r);
	t0 = now_s();
	dns_resolve_srv(r, QNAME, on_srv, &c);
	ev_run(f->loop, 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.status, DNS_ESERVFAIL);
	assert_true(now_s() - t0 < 0.5);
	dns_resolver_free(r);
	fx_free(f);
}

/* Freed with queries in flight and answers queued: no callback, no leak. */
static void test_free_pending(void **state)
{
	struct fx *f = fx_new(100, 1000, 2);
	struct rec c = { 0 };

	dns_resolve_srv(f->r, QNAME, on_srv, &c);
	dns_resolve_addr(f->r, "sip.fabrikam.test", 5061, on_addr, &c);
	dns_resolve_addr(f->r, "127.0.0.1", 5061, on_addr, &c);
	dns_resolver_free(f->r);
	f->r = NULL;
	ev_run(f->loop, 0); /* nothing left to wait for */
	assert_int_equal(c.calls, 0);
	fx_free(f);
}

/* A callback that frees the resolver: the other answers are not delivered. */
static void test_free_in_callback(void **state)
{
	struct fx *f = fx_new(100, 1000, 2);
	struct rec a = { 0 }, b = { 0 }, pending = { 0 };

	a.free_me = f->r;
	dns_resolve_addr(f->r, "127.0.0.1", 5061, on_addr, &a);
	dns_resolve_addr(f->r, "127.0.0.2", 5061, on_addr, &b);
	dns_resolve_srv(f->r, QNAME, on_srv, &pending);
	ev_run(f->loop, 0);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 0);
	assert_int_equal(pending.calls, 0);
	f->r = NULL;
	fx_free(f);
}

/* A callback that cancels itself (a no-op) and a query queued after it. */
static void test_cancel_in_callback(void **state)
{
	struct fx *f = fx_new(100, 100, 1);
	struct rec self = { 0 }, victim = { 0 }, after = { 0 };
	struct dns_query *qs;

	assert_int_equal(dns_cache_put_srv(f->r, QNAME, DNS_OK, mkrrset(1, 300)), 0);
	qs = dns_resolve_srv(f->r, QNAME, on_srv, &self);
	self.cancel_me = qs;
	dns_resolve_srv(f->r, QNAME, on_srv, &after);
	self.cancel_me = qs;
	ev_run(f->loop, 0);
	assert_int_equal(self.calls, 1);
	assert_int_equal(after.calls, 1);

	/* self is called first and cancels victim, queued behind it */
	memset(&self, 0, sizeof(self));
	dns_resolve_srv(f->r, QNAME, on_srv, &self);
	self.cancel_me = dns_resolve_addr(f->r, "127.0.0.1", 5061, on_addr, &victim);
	ev_run(f->loop, 0);
	assert_int_equal(self.calls, 1);
	assert_int_equal(victim.calls, 0);
	fx_free(f);
}

static void test_bad_input(void **state)
{
	struct fx *f = fx_new(100, 100, 1);
	struct dns_options opt = { "not-an-address", 0, 0, 0, 0, 0 };
	struct rec c = { 0 }, d = { 0 };
	char err[256] = "";
	char longname[300];

	assert_null(dns_resolver_new(f->loop, &opt, err, sizeof(err)));
	assert_non_null(strstr(err, "not-an-address"));
	memset(longname, 'a', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	dns_resolve_srv(f->r, "", on_srv, &c);
	dns_resolve_addr(f->r, longname, 1, on_addr, &d);
	ev_run(f->loop, 0);
	assert_int_equal(c.calls, 1);
	assert_int_equal(c.status, DNS_ENOTFOUND);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.status, DNS_ENOTFOUND);
	assert_int_equal(stats(f).queries, 0);
	assert_string_equal(dns_strerror(DNS_ETIMEOUT), "no answer from the DNS server");
	assert_string_equal(dns_strerror(12345), "unknown DNS error");
	fx_free(f);
}

/* ---- against a real server: DNS_TEST_SERVER=127.0.0.1:port ---- */

static void break_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	ev_break(loop, EVBREAK_ONE);
}

static void wait_loop(struct ev_loop *loop, double s)
{
	ev_timer t;
	ev_timer_init(&t, break_cb, s, 0.);
	ev_timer_start(loop, &t);
	ev_run(loop, 0);
	ev_timer_stop(loop, &t);
}

static void test_real_server(void **state)
{
	const char *env = getenv("DNS_TEST_SERVER");
	char host[64], ip[INET6_ADDRSTRLEN];
	struct ev_loop *loop;
	struct dns_resolver *r;
	struct dns_options opt;
	struct dns_stats s;
	char err[256];
	unsigned port;
	const char *colon;

	if (!env || !(colon = strrchr(env, ':')) || (size_t)(colon - env) >= sizeof(host)) {
		skip();
		return;
	}
	memcpy(host, env, (size_t)(colon - env));
	host[colon - env] = '\0';
	port = (unsigned)atoi(colon + 1);
	loop = ev_loop_new(EVFLAG_AUTO);
	memset(&opt, 0, sizeof(opt));
	opt.server = host;
	opt.port = (uint16_t)port;
	opt.timeout_ms = 500;
	opt.cache_records = 1000;
	opt.seed = 3;
	r = dns_resolver_new(loop, &opt, err, sizeof(err));
	assert_non_null(r);

	{	/* SRV, two identical queries sharing one */
		struct rec a = { 0 }, b = { 0 };
		dns_resolve_srv(r, QNAME, on_srv, &a);
		dns_resolve_srv(r, QNAME, on_srv, &b);
		ev_run(loop, 0);
		assert_int_equal(a.calls, 1);
		assert_int_equal(b.calls, 1);
		assert_int_equal(a.status, DNS_OK);
		assert_int_equal(a.n, 3);
		assert_int_equal(a.prio[0], 10);
		assert_int_equal(a.prio[1], 10);
		assert_int_equal(a.prio[2], 20);
		assert_string_equal(a.names[2], "v4only.fabrikam.test");
		dns_get_stats(r, &s);
		assert_int_equal(s.queries, 1);
		assert_int_equal(s.cached_records, 3);
	}
	{	/* A and AAAA */
		struct rec a = { 0 }, v4 = { 0 };
		dns_resolve_addr(r, "sip.fabrikam.test", 5061, on_addr, &a);
		dns_resolve_addr(r, "v4only.fabrikam.test", 5062, on_addr, &v4);
		ev_run(loop, 0);
		assert_int_equal(a.status, DNS_OK);
		assert_int_equal(a.n, 2);
		assert_string_equal(addr_ip(&a.addrs[0], ip, sizeof(ip)), "::1");
		assert_string_equal(addr_ip(&a.addrs[1], ip, sizeof(ip)), "127.0.0.2");
		assert_int_equal(addr_port(&a.addrs[1]), 5061);
		assert_int_equal(v4.status, DNS_OK);
		assert_int_equal(v4.n, 1);
		assert_string_equal(addr_ip(&v4.addrs[0], ip, sizeof(ip)), "127.0.0.5");
		assert_int_equal(addr_port(&v4.addrs[0]), 5062);
	}
	{	/* negative answers, cached */
		struct rec nx = { 0 }, dot = { 0 }, nodata = { 0 }, nx2 = { 0 };
		unsigned long long q0;
		dns_resolve_addr(r, "nosuch.fabrikam.test", 5061, on_addr, &nx);
		dns_resolve_srv(r, "_sipfederationtls._tcp.none.fabrikam.test", on_srv, &dot);
		dns_resolve_srv(r, "sip.fabrikam.test", on_srv, &nodata);
		ev_run(loop, 0);
		assert_int_equal(nx.status, DNS_ENOTFOUND);
		assert_int_equal(dot.status, DNS_ENOTFOUND);
		assert_int_equal(nodata.status, DNS_ENOTFOUND);
		dns_get_stats(r, &s);
		q0 = s.queries;
		dns_resolve_addr(r, "nosuch.fabrikam.test", 5061, on_addr, &nx2);
		ev_run(loop, 0);
		assert_int_equal(nx2.status, DNS_ENOTFOUND);
		dns_get_stats(r, &s);
		assert_int_equal(s.queries, q0);
	}
	{	/* a CNAME to the SRV RRset */
		struct rec a = { 0 };
		dns_resolve_srv(r, "_sipfederationtls._tcp.alias.fabrikam.test", on_srv, &a);
		ev_run(loop, 0);
		assert_int_equal(a.status, DNS_OK);
		assert_int_equal(a.n, 3);
	}
	{	/* 30 targets: truncated over UDP, then TCP */
		struct rec a = { 0 };
		dns_resolve_srv(r, "_sipfederationtls._tcp.big.fabrikam.test", on_srv, &a);
		ev_run(loop, 0);
		assert_int_equal(a.status, DNS_OK);
		assert_int_equal(a.n, 30);
		for (unsigned i = 1; i < a.n; i++)
			assert_true(a.prio[i - 1] <= a.prio[i]);
		assert_non_null(strstr(a.names[0], "-with-a-rather-long-name.pool.fabrikam.test"));
	}
	{	/* TTL 1: cached, then expired and asked again */
		struct rec a = { 0 }, b = { 0 }, c = { 0 };
		unsigned long long q0, hits0;
		dns_get_stats(r, &s);
		q0 = s.queries;
		dns_resolve_srv(r, "_sipfederationtls._tcp.ttl1.fabrikam.test", on_srv, &a);
		ev_run(loop, 0);
		assert_int_equal(a.status, DNS_OK);
		dns_get_stats(r, &s);
		assert_int_equal(s.queries, q0 + 1);
		hits0 = s.cache_hits;
		dns_resolve_srv(r, "_sipfederationtls._tcp.ttl1.fabrikam.test", on_srv, &b);
		ev_run(loop, 0);
		dns_get_stats(r, &s);
		assert_int_equal(s.queries, q0 + 1);
		assert_int_equal(s.cache_hits, hits0 + 1);
		wait_loop(loop, 1.5);
		dns_resolve_srv(r, "_sipfederationtls._tcp.ttl1.fabrikam.test", on_srv, &c);
		ev_run(loop, 0);
		assert_int_equal(c.status, DNS_OK);
		dns_get_stats(r, &s);
		assert_int_equal(s.queries, q0 + 2);
		assert_int_equal(s.cache_hits, hits0 + 1);
	}
	{	/* outside the server's zones, without recursion: REFUSED, not cached */
		struct rec a = { 0 }, b = { 0 };
		unsigned long long q0;
		dns_get_stats(r, &s);
		assert_int_equal(s.failures, 0);
		q0 = s.queries;
		dns_resolve_srv(r, "_sipfederationtls._tcp.northwind.example", on_srv, &a);
		ev_run(loop, 0);
		assert_int_equal(a.status, DNS_ESERVFAIL);
		dns_resolve_srv(r, "_sipfederationtls._tcp.northwind.example", on_srv, &b);
		ev_run(loop, 0);
		assert_int_equal(b.status, DNS_ESERVFAIL);
		dns_get_stats(r, &s);
		assert_int_equal(s.queries, q0 + 2);
		assert_int_equal(s.failures, 2);
	}
	dns_resolver_free(r);
	ev_loop_destroy(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_parse_basic),
		cmocka_unit_test(test_parse_truncated),
		cmocka_unit_test(test_parse_rcodes),
		cmocka_unit_test(test_parse_dot),
		cmocka_unit_test(test_parse_bad_targets),
		cmocka_unit_test(test_parse_bound),
		cmocka_unit_test(test_parse_cname),
		cmocka_unit_test(test_parse_garbage),
		cmocka_unit_test(test_order_priorities),
		cmocka_unit_test(test_order_weights),
		cmocka_unit_test(test_order_seeded),
		cmocka_unit_test(test_numeric),
		cmocka_unit_test(test_cache_hit),
		cmocka_unit_test(test_cache_lru),
		cmocka_unit_test(test_cache_disabled),
		cmocka_unit_test(test_cache_expiry),
		cmocka_unit_test(test_cache_addr),
		cmocka_unit_test(test_cache_reorder),
		cmocka_unit_test(test_cancel),
		cmocka_unit_test(test_share_and_timeout),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_free_pending),
		cmocka_unit_test(test_free_in_callback),
		cmocka_unit_test(test_cancel_in_callback),
		cmocka_unit_test(test_bad_input),
		cmocka_unit_test(test_real_server),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
