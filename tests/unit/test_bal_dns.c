/*
 * Unit tests for balancer/bal_dns.c: the authoritative answers of balancerd,
 * for two zones built by hand (no configuration file), asked with queries
 * that ldns builds and read back with ldns.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <ldns/ldns.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "bal_dns.h"

#define SERIAL0 1700000000u
#define FAB_SERIAL 2024010101u

/* ---- the configuration: contoso.test (everything) and fabrikam.test (the least) ---- */

static struct in_addr vip4[1], ns4[1];
static struct in6_addr vip6[1];
static const char *contoso_ns[] = { "ns1.contoso.test", "ns2.example.net", NULL };
static const char *fabrikam_ns[] = { "ns.example.net", NULL };
static struct bal_cfg_zone zones[2];
static struct bal_cfg_dns cfg;

static void config(void)
{
	inet_pton(AF_INET, "198.18.0.10", &vip4[0]);
	inet_pton(AF_INET6, "fd00::10", &vip6[0]);
	inet_pton(AF_INET, "198.18.0.53", &ns4[0]);
	zones[0] = (struct bal_cfg_zone){
		.domain = "contoso.test", .pool_name = "sip.contoso.test",
		.vip_name = "vip.contoso.test", .vip4 = vip4, .nvip4 = 1, .vip6 = vip6, .nvip6 = 1,
		.ns = contoso_ns, .nns = 2, .ns4 = ns4, .nns4 = 1,
		.hostmaster = "hostmaster.contoso.test", .serial = 0,
		.sip_port = 5061, .sip_tls_port = 443, .xmpp_port = 5269,
	};
	zones[1] = (struct bal_cfg_zone){
		.domain = "fabrikam.test", .pool_name = "sip.fabrikam.test",
		.ns = fabrikam_ns, .nns = 1, .serial = FAB_SERIAL, .sip_port = 5061,
	};
	cfg = (struct bal_cfg_dns){ .ttl = 5, .static_ttl = 300, .zones = zones, .nzones = 2 };
}

static struct bal_dns *responder(void)
{
	char err[200] = "";
	config();
	struct bal_dns *d = bal_dns_new(&cfg, SERIAL0, err, sizeof(err));
	if (!d)
		fail_msg("bal_dns_new: %s", err);
	return d;
}

static struct bal_ip ip(const char *s)
{
	struct bal_ip a = { .family = strchr(s, ':') ? AF_INET6 : AF_INET };
	assert_int_equal(inet_pton(a.family, s, &a.u), 1);
	return a;
}

static void pool(struct bal_dns *d, const char *zone, const char *const *addrs, unsigned n)
{
	struct bal_ip set[64];
	for (unsigned i = 0; i < n; i++)
		set[i] = ip(addrs[i]);
	assert_int_equal(bal_dns_set_pool(d, zone, set, n), 0);
}

/* ---- queries and answers ---- */

static ldns_pkt *query(const char *name, ldns_rr_type type)
{
	ldns_pkt *q = NULL;
	assert_int_equal(ldns_pkt_query_new_frm_str(&q, name, type, LDNS_RR_CLASS_IN, LDNS_RD),
	                 LDNS_STATUS_OK);
	ldns_pkt_set_id(q, 0x4242);
	return q;
}

static size_t wire(ldns_pkt *q, uint8_t *buf)
{
	uint8_t *w = NULL;
	size_t len = 0;
	assert_int_equal(ldns_pkt2wire(&w, q, &len), LDNS_STATUS_OK);
	memcpy(buf, w, len);
	free(w);
	ldns_pkt_free(q);
	return len;
}

static uint8_t answer_buf[65535];
static size_t answer_len;

/* Answers wire query q of qlen bytes; returns the answer parsed (NULL: none was sent). */
static ldns_pkt *ask_wire(struct bal_dns *d, const uint8_t *q, size_t qlen, int tcp,
                          size_t outlen)
{
	ldns_pkt *a = NULL;
	answer_len = bal_dns_answer(d, q, qlen, tcp, answer_buf, outlen);
	assert_true(answer_len <= outlen);
	if (!answer_len)
		return NULL;
	assert_int_equal(ldns_wire2pkt(&a, answer_buf, answer_len), LDNS_STATUS_OK);
	assert_true(ldns_pkt_qr(a));
	assert_int_equal(ldns_pkt_id(a), ldns_read_uint16(q));
	return a;
}

/* Asks q (taken over) over UDP with a 65535-byte buffer, or over TCP. */
static ldns_pkt *ask_pkt(struct bal_dns *d, ldns_pkt *q, int tcp)
{
	uint8_t buf[1024];
	size_t len = wire(q, buf);
	ldns_pkt *a = ask_wire(d, buf, len, tcp, sizeof(answer_buf));
	assert_non_null(a);
	return a;
}

static ldns_pkt *ask(struct bal_dns *d, const char *name, ldns_rr_type type)
{
	return ask_pkt(d, query(name, type), 0);
}

static unsigned count(const ldns_pkt *a, ldns_pkt_section sec, ldns_rr_type type)
{
	const ldns_rr_list *s = sec == LDNS_SECTION_ANSWER ? ldns_pkt_answer(a) :
	                        sec == LDNS_SECTION_AUTHORITY ? ldns_pkt_authority(a) :
	                        ldns_pkt_additional(a);
	unsigned n = 0;
	for (size_t i = 0; i < ldns_rr_list_rr_count(s); i++)
		n += ldns_rr_get_type(ldns_rr_list_rr(s, i)) == type;
	return n;
}

static char *str(const ldns_rdf *r)
{
	char *s = ldns_rdf2str(r);
	assert_non_null(s);
	return s;
}

/* Checks rdf r prints as want, and frees the string. */
static void assert_rdf(const ldns_rdf *r, const char *want)
{
	char *s = str(r);
	if (strcmp(s, want) != 0)
		fail_msg("'%s' where '%s' was expected", s, want);
	free(s);
}

static void assert_noerror_aa(const ldns_pkt *a)
{
	assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_NOERROR);
	assert_true(ldns_pkt_aa(a));
	assert_false(ldns_pkt_tc(a));
	assert_false(ldns_pkt_ra(a));
}

/* The negative answer's SOA: in the authority section, TTL min(static_ttl, ttl) = 5. */
static void assert_negative(const ldns_pkt *a, ldns_pkt_rcode rcode, const char *apex)
{
	assert_int_equal(ldns_pkt_get_rcode(a), rcode);
	assert_true(ldns_pkt_aa(a));
	assert_int_equal(ldns_pkt_ancount(a), 0);
	assert_int_equal(ldns_pkt_nscount(a), 1);
	const ldns_rr *soa = ldns_rr_list_rr(ldns_pkt_authority(a), 0);
	assert_int_equal(ldns_rr_get_type(soa), LDNS_RR_TYPE_SOA);
	/* ldns compresses without regard to case: the owner may take the question's */
	char *owner = str(ldns_rr_owner(soa));
	if (strcasecmp(owner, apex) != 0)
		fail_msg("SOA of '%s' where '%s' was expected", owner, apex);
	free(owner);
	assert_int_equal(ldns_rr_ttl(soa), 5);
}

/* ---- tests ---- */

static void test_soa(void **state)
{
	struct bal_dns *d = responder();
	ldns_pkt *a = ask(d, "contoso.test", LDNS_RR_TYPE_SOA);
	assert_noerror_aa(a);
	assert_int_equal(ldns_pkt_ancount(a), 1);
	const ldns_rr *soa = ldns_rr_list_rr(ldns_pkt_answer(a), 0);
	assert_int_equal(ldns_rr_get_type(soa), LDNS_RR_TYPE_SOA);
	assert_int_equal(ldns_rr_ttl(soa), 300);
	assert_rdf(ldns_rr_rdf(soa, 0), "ns1.contoso.test.");
	assert_rdf(ldns_rr_rdf(soa, 1), "hostmaster.contoso.test.");
	assert_int_equal(ldns_rdf2native_int32(ldns_rr_rdf(soa, 2)), SERIAL0);
	assert_int_equal(ldns_rdf2native_int32(ldns_rr_rdf(soa, 3)), 3600);
	assert_int_equal(ldns_rdf2native_int32(ldns_rr_rdf(soa, 4)), 600);
	assert_int_equal(ldns_rdf2native_int32(ldns_rr_rdf(soa, 5)), 86400);
	assert_int_equal(ldns_rdf2native_int32(ldns_rr_rdf(soa, 6)), 5); /* negative TTL: ttl */
	ldns_pkt_free(a);

	/* fabrikam: its own serial, the default hostmaster, an NS outside the zone */
	a = ask(d, "fabrikam.test", LDNS_RR_TYPE_SOA);
	soa = ldns_rr_list_rr(ldns_pkt_answer(a), 0);
	assert_rdf(ldns_rr_rdf(soa, 0), "ns.example.net.");
	assert_rdf(ldns_rr_rdf(soa, 1), "hostmaster.fabrikam.test.");
	assert_int_equal(ldns_rdf2native_int32(ldns_rr_rdf(soa, 2)), FAB_SERIAL);
	ldns_pkt_free(a);
	bal_dns_free(d);
}

static void test_ns_glue(void **state)
{
	struct bal_dns *d = responder();
	ldns_pkt *a = ask(d, "contoso.test", LDNS_RR_TYPE_NS);
	assert_noerror_aa(a);
	assert_int_equal(ldns_pkt_ancount(a), 2);
	assert_rdf(ldns_rr_rdf(ldns_rr_list_rr(ldns_pkt_answer(a), 0), 0), "ns1.contoso.test.");
	assert_rdf(ldns_rr_rdf(ldns_rr_list_rr(ldns_pkt_answer(a), 1), 0), "ns2.example.net.");
	assert_int_equal(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(a), 0)), 300);
	/* glue: ns1 lies in the zone, ns2 does not */
	assert_int_equal(ldns_pkt_arcount(a), 1);
	const ldns_rr *g = ldns_rr_list_rr(ldns_pkt_additional(a), 0);
	assert_int_equal(ldns_rr_get_type(g), LDNS_RR_TYPE_A);
	assert_rdf(ldns_rr_owner(g), "ns1.contoso.test.");
	assert_rdf(ldns_rr_rdf(g, 0), "198.18.0.53");
	ldns_pkt_free(a);

	/* The NS name holds its address itself; its AAAA is NODATA. */
	a = ask(d, "ns1.contoso.test", LDNS_RR_TYPE_A);
	assert_noerror_aa(a);
	assert_int_equal(count(a, LDNS_SECTION_ANSWER, LDNS_RR_TYPE_A), 1);
	ldns_pkt_free(a);
	a = ask(d, "ns1.contoso.test", LDNS_RR_TYPE_AAAA);
	assert_negative(a, LDNS_RCODE_NOERROR, "contoso.test.");
	ldns_pkt_free(a);

	a = ask(d, "fabrikam.test", LDNS_RR_TYPE_NS);
	assert_int_equal(ldns_pkt_ancount(a), 1);
	assert_int_equal(ldns_pkt_arcount(a), 0);
	ldns_pkt_free(a);
	bal_dns_free(d);
}

static void test_pool_rotation(void **state)
{
	struct bal_dns *d = responder();
	const char *set[] = { "198.18.1.1", "198.18.1.2", "198.18.1.3", "fd00::1:1", "fd00::1:2" };
	pool(d, "contoso.test", set, 5);
	char *first[3];
	for (int i = 0; i < 3; i++) {
		ldns_pkt *a = ask(d, "sip.contoso.test", LDNS_RR_TYPE_A);
		assert_noerror_aa(a);
		assert_int_equal(ldns_pkt_ancount(a), 3);
		assert_int_equal(count(a, LDNS_SECTION_ANSWER, LDNS_RR_TYPE_A), 3);
		for (int k = 0; k < 3; k++)
			assert_int_equal(ldns_rr_ttl(ldns_rr_list_rr(ldns_pkt_answer(a), k)), 5);
		/* each answer holds the three, in a rotated order */
		for (int k = 0; k < 3; k++) {
			char *s = str(ldns_rr_rdf(ldns_rr_list_rr(ldns_pkt_answer(a), k), 0));
			assert_string_equal(s, set[(i + k) % 3]);
			if (k == 0)
				first[i] = s;
			else
				free(s);
		}
		ldns_pkt_free(a);
	}
	assert_string_not_equal(first[0], first[1]);
	assert_string_not_equal(first[1], first[2]);
	assert_string_not_equal(first[0], first[2]);
	for (int i = 0; i < 3; i++)
		free(first[i]);

	ldns_pkt *a = ask(d, "sip.contoso.test", LDNS_RR_TYPE_AAAA);
	assert_noerror_aa(a);
	assert_int_equal(count(a, LDNS_SECTION_ANSWER, LDNS_RR_TYPE_AAAA), 2);
	assert_rdf(ldns_rr_rdf(ldns_rr_list_rr(ldns_pkt_answer(a), 0), 0), "fd00::1:1");
	ldns_pkt_free(a);
	a = ask(d, "sip.contoso.test", LDNS_RR_TYPE_AAAA);
	assert_rdf(ldns_rr_rdf(ldns_rr_list_rr(ldns_pkt_answer(a), 0), 0), "fd00::1:2");
	ldns_pkt_free(a);

	/* An empty pool: the name still exists, without addresses (NODATA). */
	pool(d, "contoso.test", NULL, 0);
	a = ask(d, "sip.contoso.test", LDNS_RR_TYPE_A);
	assert_negative(a, LDNS_RCODE_NOERROR, "contoso.test.");
	ldns_pkt_free(a);
	/* fabrikam's pool was never set */
	a = ask(d, "sip.fabrikam.test", LDNS_RR_TYPE_A);
	assert_negative(a, LDNS_RCODE_NOERROR, "fabrikam.test.");
	ldns_pkt_free(a);
	bal_dns_free(d);
}

static void test_vip(void **state)
{
	struct bal_dns *d = responder();
	ldns_pkt *a = ask(d, "vip.contoso.test", LDNS_RR_TYPE_A);
	assert_noerror_aa(a);
	assert_int_equal(ldns_pkt_ancount(a), 1);
	const ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(a), 0);
	assert_rdf(ldns_rr_rdf(rr, 0), "198.18.0.10");
	assert_int_equal(ldns_rr_ttl(rr), 300);
	ldns_pkt_free(a);
	a = ask(d, "vip.contoso.test", LDNS_RR_TYPE_AAAA);
	assert_noerror_aa(a);
	assert_rdf(ldns_rr_rdf(ldns_rr_list_rr(ldns_pkt_answer(a), 0), 0), "fd00::10");
	ldns_pkt_free(a);
	/* fabrikam has no VIP name */
	a = ask(d, "vip.fabrikam.test", LDNS_RR_TYPE_A);
	assert_negative(a, LDNS_RCODE_NXDOMAIN, "fabrikam.test.");
	ldns_pkt_free(a);
	bal_dns_free(d);
}

static void check_srv(struct bal_dns *d, const char *name, unsigned port, unsigned additional)
{
	ldns_pkt *a = ask(d, name, LDNS_RR_TYPE_SRV);
	assert_noerror_aa(a);
	assert_int_equal(ldns_pkt_ancount(a), 1);
	const ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_answer(a), 0);
	assert_int_equal(ldns_rr_get_type(rr), LDNS_RR_TYPE_SRV);
	assert_int_equal(ldns_rr_ttl(rr), 300);
	assert_int_equal(ldns_rdf2native_int16(ldns_rr_rdf(rr, 0)), 0);
	assert_int_equal(ldns_rdf2native_int16(ldns_rr_rdf(rr, 1)), 0);
	assert_int_equal(ldns_rdf2native_int16(ldns_rr_rdf(rr, 2)), port);
	char *target = str(ldns_rr_rdf(rr, 3));
	assert_true(strcmp(target, "sip.contoso.test.") == 0 ||
	            strcmp(target, "sip.fabrikam.test.") == 0);
	/* the target's addresses ride along */
	assert_int_equal(ldns_pkt_arcount(a), additional);
	for (unsigned i = 0; i < additional; i++)
		assert_rdf(ldns_rr_owner(ldns_rr_list_rr(ldns_pkt_additional(a), i)), target);
	free(target);
	ldns_pkt_free(a);
}

static void test_srv(void **state)
{
	struct bal_dns *d = responder();
	const char *set[] = { "198.18.1.1", "198.18.1.2", "fd00::1:1" };
	pool(d, "contoso.test", set, 3);
	check_srv(d, "_sipfederationtls._tcp.contoso.test", 5061, 3);
	check_srv(d, "_sip._tls.contoso.test", 443, 3);
	check_srv(d, "_xmpp-server._tcp.contoso.test", 5269, 3);
	check_srv(d, "_sipfederationtls._tcp.fabrikam.test", 5061, 0); /* its pool is empty */

	ldns_pkt *a = ask(d, "_sipfederationtls._tcp.contoso.test", LDNS_RR_TYPE_SRV);
	assert_int_equal(count(a, LDNS_SECTION_ADDITIONAL, LDNS_RR_TYPE_A), 2);
	assert_int_equal(count(a, LDNS_SECTION_ADDITIONAL, LDNS_RR_TYPE_AAAA), 1);
	ldns_pkt_free(a);

	/* port 0: no such record, no such name */
	a = ask(d, "_sip._tls.fabrikam.test", LDNS_RR_TYPE_SRV);
	assert_negative(a, LDNS_RCODE_NXDOMAIN, "fabrikam.test.");
	ldns_pkt_free(a);
	a = ask(d, "_xmpp-server._tcp.fabrikam.test", LDNS_RR_TYPE_SRV);
	assert_negative(a, LDNS_RCODE_NXDOMAIN, "fabrikam.test.");
	ldns_pkt_free(a);
	/* an SRV name asked for another type */
	a = ask(d, "_sip._tls.contoso.test", LDNS_RR_TYPE_A);
	assert_negative(a, LDNS_RCODE_NOERROR, "contoso.test.");
	ldns_pkt_free(a);
	bal_dns_free(d);
}

static void test_negative(void **state)
{
	struct bal_dns *d = responder();
	ldns_pkt *a = ask(d, "nothere.contoso.test", LDNS_RR_TYPE_A);
	assert_negative(a, LDNS_RCODE_NXDOMAIN, "contoso.test.");
	ldns_pkt_free(a);
	a = ask(d, "x.sip.contoso.test", LDNS_RR_TYPE_A); /* below an existing name */
	assert_negative(a, LDNS_RCODE_NXDOMAIN, "contoso.test.");
	ldns_pkt_free(a);
	a = ask(d, "sip.contoso.test", LDNS_RR_TYPE_MX); /* the name exists, not the type */
	assert_negative(a, LDNS_RCODE_NOERROR, "contoso.test.");
	ldns_pkt_free(a);
	a = ask(d, "contoso.test", LDNS_RR_TYPE_A);
	assert_negative(a, LDNS_RCODE_NOERROR, "contoso.test.");
	ldns_pkt_free(a);
	/* empty non-terminals (RFC 8020): NODATA, whatever the type */
	const char *ents[] = { "_tcp.contoso.test", "_tls.contoso.test", "_tcp.fabrikam.test" };
	for (unsigned i = 0; i < 3; i++) {
		a = ask(d, ents[i], i == 1 ? LDNS_RR_TYPE_SRV : LDNS_RR_TYPE_A);
		assert_negative(a, LDNS_RCODE_NOERROR, i == 2 ? "fabrikam.test." : "contoso.test.");
		ldns_pkt_free(a);
	}
	/* fabrikam has no _xmpp-server, so no _tcp except for _sipfederationtls */
	a = ask(d, "_udp.fabrikam.test", LDNS_RR_TYPE_A);
	assert_negative(a, LDNS_RCODE_NXDOMAIN, "fabrikam.test.");
	ldns_pkt_free(a);

	/* outside every zone: REFUSED, not authoritative, nothing in it */
	const char *outside[] = { "example.org", "xcontoso.test", "test", "." };
	for (unsigned i = 0; i < 4; i++) {
		a = ask(d, outside[i], LDNS_RR_TYPE_A);
		assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_REFUSED);
		assert_false(ldns_pkt_aa(a));
		assert_int_equal(ldns_pkt_ancount(a) + ldns_pkt_nscount(a), 0);
		assert_int_equal(ldns_pkt_qdcount(a), 1);
		ldns_pkt_free(a);
	}
	bal_dns_free(d);
}

static void test_any(void **state)
{
	struct bal_dns *d = responder();
	const char *set[] = { "198.18.1.1", "fd00::1:1" };
	pool(d, "contoso.test", set, 2);
	ldns_pkt *a = ask(d, "contoso.test", LDNS_RR_TYPE_ANY);
	assert_noerror_aa(a);
	assert_int_equal(count(a, LDNS_SECTION_ANSWER, LDNS_RR_TYPE_SOA), 1);
	assert_int_equal(count(a, LDNS_SECTION_ANSWER, LDNS_RR_TYPE_NS), 2);
	assert_int_equal(count(a, LDNS_SECTION_ADDITIONAL, LDNS_RR_TYPE_A), 1);
	ldns_pkt_free(a);
	a = ask(d, "sip.contoso.test", LDNS_RR_TYPE_ANY);
	assert_noerror_aa(a);
	assert_int_equal(count(a, LDNS_SECTION_ANSWER, LDNS_RR_TYPE_A), 1);
	assert_int_equal(count(a, LDNS_SECTION_ANSWER, LDNS_RR_TYPE_AAAA), 1);
	ldns_pkt_free(a);
	a = ask(d, "_tcp.contoso.test", LDNS_RR_TYPE_ANY);
	assert_negative(a, LDNS_RCODE_NOERROR, "contoso.test.");
	ldns_pkt_free(a);
	bal_dns_free(d);
}

/* A query header's flags byte 2 (QR, opcode, AA, TC, RD) and QDCOUNT, changed by hand. */
static void test_errors(void **state)
{
	struct bal_dns *d = responder();
	uint8_t q[1024];
	size_t len = wire(query("sip.contoso.test", LDNS_RR_TYPE_A), q);
	size_t qsection = len - LDNS_HEADER_SIZE;

	/* QDCOUNT 2: FORMERR, whatever the second question */
	memcpy(q + len, q + LDNS_HEADER_SIZE, qsection);
	q[5] = 2;
	ldns_pkt *a = ask_wire(d, q, len + qsection, 0, 512);
	assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_FORMERR);
	assert_false(ldns_pkt_aa(a));
	assert_int_equal(ldns_pkt_ancount(a), 0);
	ldns_pkt_free(a);
	/* QDCOUNT 0 */
	q[5] = 0;
	a = ask_wire(d, q, LDNS_HEADER_SIZE, 0, 512);
	assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_FORMERR);
	ldns_pkt_free(a);
	/* a question cut short: a bare header, FORMERR */
	q[5] = 1;
	answer_len = bal_dns_answer(d, q, len - 3, 0, answer_buf, 512);
	assert_int_equal(answer_len, LDNS_HEADER_SIZE);
	assert_int_equal(answer_buf[3] & 0x0f, LDNS_RCODE_FORMERR);
	assert_int_equal(ldns_read_uint16(answer_buf), 0x4242);
	assert_true(answer_buf[2] & 0x80);

	/* opcodes other than QUERY: NOTIMP */
	const int opcodes[] = { LDNS_PACKET_NOTIFY, LDNS_PACKET_UPDATE, LDNS_PACKET_STATUS };
	for (unsigned i = 0; i < 3; i++) {
		ldns_pkt *qp = query("contoso.test", LDNS_RR_TYPE_SOA);
		ldns_pkt_set_opcode(qp, opcodes[i]);
		a = ask_pkt(d, qp, 0);
		assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_NOTIMPL);
		assert_int_equal(ldns_pkt_get_opcode(a), opcodes[i]);
		assert_int_equal(ldns_pkt_ancount(a), 0);
		ldns_pkt_free(a);
	}

	/* a response, or less than a header: nothing at all */
	q[2] |= 0x80;
	assert_int_equal(bal_dns_answer(d, q, len, 0, answer_buf, 512), 0);
	q[2] &= 0x7f;
	assert_int_equal(bal_dns_answer(d, q, 11, 0, answer_buf, 512), 0);
	assert_int_equal(bal_dns_answer(d, q, 0, 1, answer_buf, 512), 0);

	/* classes other than IN, and zone transfers: REFUSED */
	const ldns_rr_class classes[] = { LDNS_RR_CLASS_CH, LDNS_RR_CLASS_HS, LDNS_RR_CLASS_ANY };
	for (unsigned i = 0; i < 3; i++) {
		ldns_pkt *qp = NULL;
		assert_int_equal(ldns_pkt_query_new_frm_str(&qp, "contoso.test", LDNS_RR_TYPE_SOA,
		                                            classes[i], 0), LDNS_STATUS_OK);
		a = ask_pkt(d, qp, 0);
		assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_REFUSED);
		ldns_pkt_free(a);
	}
	a = ask_pkt(d, query("contoso.test", LDNS_RR_TYPE_AXFR), 1);
	assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_REFUSED);
	assert_int_equal(ldns_pkt_ancount(a), 0);
	ldns_pkt_free(a);
	bal_dns_free(d);
}

static void test_case(void **state)
{
	struct bal_dns *d = responder();
	const char *set[] = { "198.18.1.1" };
	pool(d, "contoso.test", set, 1);
	uint8_t q[512];
	size_t len = wire(query("SiP.CoNtOsO.TeSt", LDNS_RR_TYPE_A), q);
	ldns_pkt *a = ask_wire(d, q, len, 0, 512);
	assert_noerror_aa(a);
	assert_int_equal(ldns_pkt_ancount(a), 1);
	/* the question comes back byte for byte */
	assert_memory_equal(answer_buf + LDNS_HEADER_SIZE, q + LDNS_HEADER_SIZE,
	                    len - LDNS_HEADER_SIZE);
	assert_rdf(ldns_rr_owner(ldns_rr_list_rr(ldns_pkt_question(a), 0)), "SiP.CoNtOsO.TeSt.");
	ldns_pkt_free(a);
	a = ask(d, "_SIPFEDERATIONTLS._TCP.CONTOSO.TEST", LDNS_RR_TYPE_SRV);
	assert_noerror_aa(a);
	assert_int_equal(ldns_pkt_ancount(a), 1);
	ldns_pkt_free(a);
	a = ask(d, "_TCP.Contoso.Test", LDNS_RR_TYPE_A);
	assert_negative(a, LDNS_RCODE_NOERROR, "contoso.test.");
	ldns_pkt_free(a);
	bal_dns_free(d);
}

static ldns_pkt *query_edns(const char *name, ldns_rr_type type, uint16_t size, uint8_t version)
{
	ldns_pkt *q = query(name, type);
	ldns_pkt_set_edns_udp_size(q, size);
	ldns_pkt_set_edns_version(q, version);
	return q;
}

static void test_edns(void **state)
{
	struct bal_dns *d = responder();
	/* no OPT in, no OPT out */
	ldns_pkt *a = ask(d, "contoso.test", LDNS_RR_TYPE_SOA);
	assert_false(ldns_pkt_edns(a));
	ldns_pkt_free(a);
	/* an OPT: ours comes back, 1232 bytes, version 0, DO as asked */
	ldns_pkt *q = query_edns("contoso.test", LDNS_RR_TYPE_SOA, 4096, 0);
	ldns_pkt_set_edns_do(q, true);
	a = ask_pkt(d, q, 0);
	assert_noerror_aa(a);
	assert_true(ldns_pkt_edns(a));
	assert_int_equal(ldns_pkt_edns_udp_size(a), BAL_DNS_UDP_SIZE);
	assert_int_equal(ldns_pkt_edns_version(a), 0);
	assert_true(ldns_pkt_edns_do(a));
	assert_int_equal(ldns_pkt_ancount(a), 1);
	ldns_pkt_free(a);
	a = ask_pkt(d, query_edns("nothere.contoso.test", LDNS_RR_TYPE_A, 1232, 0), 0);
	assert_negative(a, LDNS_RCODE_NXDOMAIN, "contoso.test.");
	assert_true(ldns_pkt_edns(a));
	assert_false(ldns_pkt_edns_do(a));
	ldns_pkt_free(a);
	/* version 1: BADVERS (16: 1 in the OPT, 0 in the header), our version 0, no data */
	a = ask_pkt(d, query_edns("contoso.test", LDNS_RR_TYPE_SOA, 4096, 1), 0);
	assert_int_equal(ldns_pkt_get_rcode(a), 0);
	assert_true(ldns_pkt_edns(a));
	assert_int_equal(ldns_pkt_edns_extended_rcode(a), 1);
	assert_int_equal(ldns_pkt_edns_version(a), 0);
	assert_int_equal(ldns_pkt_ancount(a), 0);
	assert_int_equal(ldns_pkt_qdcount(a), 1);
	ldns_pkt_free(a);
	/* two OPT records: FORMERR (RFC 6891 6.1.1) */
	uint8_t w[512];
	size_t len = wire(query_edns("contoso.test", LDNS_RR_TYPE_SOA, 4096, 0), w);
	memcpy(w + len, w + len - 11, 11);
	w[11] = 2;
	a = ask_wire(d, w, len + 11, 0, 512);
	assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_FORMERR);
	assert_true(ldns_pkt_edns(a));
	assert_int_equal(ldns_pkt_ancount(a), 0);
	ldns_pkt_free(a);
	/* the OPT's UDP size may be below 512: 512 holds */
	const char *set[] = { "198.18.1.1", "198.18.1.2", "198.18.1.3", "198.18.1.4" };
	pool(d, "contoso.test", set, 4);
	a = ask_pkt(d, query_edns("sip.contoso.test", LDNS_RR_TYPE_A, 100, 0), 0);
	assert_false(ldns_pkt_tc(a));
	assert_int_equal(ldns_pkt_ancount(a), 4);
	ldns_pkt_free(a);
	bal_dns_free(d);
}

static void big_pool(struct bal_dns *d)
{
	struct bal_ip set[40];
	for (unsigned i = 0; i < 40; i++) {
		char s[64];
		snprintf(s, sizeof(s), "fd00::2:%x", i + 1);
		set[i] = ip(s);
	}
	assert_int_equal(bal_dns_set_pool(d, "contoso.test", set, 40), 0);
}

static void test_truncation(void **state)
{
	struct bal_dns *d = responder();
	big_pool(d); /* 40 AAAA: about 1.1 kB */
	uint8_t q[512];
	size_t len = wire(query("sip.contoso.test", LDNS_RR_TYPE_AAAA), q);

	/* UDP without EDNS: 512 bytes; header and question only, TC */
	ldns_pkt *a = ask_wire(d, q, len, 0, 65535);
	assert_true(answer_len <= 512);
	assert_true(ldns_pkt_tc(a));
	assert_true(ldns_pkt_aa(a));
	assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_NOERROR);
	assert_int_equal(ldns_pkt_qdcount(a), 1);
	assert_int_equal(ldns_pkt_ancount(a) + ldns_pkt_nscount(a) + ldns_pkt_arcount(a), 0);
	ldns_pkt_free(a);
	/* UDP with a buffer smaller than the client's: the buffer decides */
	size_t elen = wire(query_edns("sip.contoso.test", LDNS_RR_TYPE_AAAA, 4096, 0), q);
	a = ask_wire(d, q, elen, 0, 1000);
	assert_true(ldns_pkt_tc(a));
	assert_true(ldns_pkt_edns(a)); /* the OPT stays in a truncated answer */
	ldns_pkt_free(a);
	/* UDP with EDNS 4096 and room: all 40 */
	a = ask_wire(d, q, elen, 0, BAL_DNS_UDP_SIZE);
	assert_false(ldns_pkt_tc(a));
	assert_int_equal(ldns_pkt_ancount(a), 40);
	ldns_pkt_free(a);
	/* TCP: never truncated */
	len = wire(query("sip.contoso.test", LDNS_RR_TYPE_AAAA), q);
	a = ask_wire(d, q, len, 1, 65535);
	assert_false(ldns_pkt_tc(a));
	assert_int_equal(ldns_pkt_ancount(a), 40);
	ldns_pkt_free(a);
	/* the SRV answer loses its additional addresses rather than set TC (RFC 2181 9) */
	len = wire(query("_sipfederationtls._tcp.contoso.test", LDNS_RR_TYPE_SRV), q);
	a = ask_wire(d, q, len, 0, 65535);
	assert_false(ldns_pkt_tc(a));
	assert_int_equal(ldns_pkt_ancount(a), 1);
	assert_int_equal(ldns_pkt_arcount(a), 0);
	ldns_pkt_free(a);
	/* ... but keeps those that fit: the A RRset comes before the AAAA */
	const char *one4[] = { "198.18.1.1" };
	struct bal_ip set[41];
	for (unsigned i = 0; i < 40; i++) {
		char s[64];
		snprintf(s, sizeof(s), "fd00::2:%x", i + 1);
		set[i] = ip(s);
	}
	set[40] = ip(one4[0]);
	assert_int_equal(bal_dns_set_pool(d, "contoso.test", set, 41), 0);
	len = wire(query("_sipfederationtls._tcp.contoso.test", LDNS_RR_TYPE_SRV), q);
	a = ask_wire(d, q, len, 0, 65535);
	assert_false(ldns_pkt_tc(a));
	assert_int_equal(count(a, LDNS_SECTION_ADDITIONAL, LDNS_RR_TYPE_A), 1);
	assert_int_equal(count(a, LDNS_SECTION_ADDITIONAL, LDNS_RR_TYPE_AAAA), 0);
	ldns_pkt_free(a);
	a = ask_wire(d, q, len, 1, 65535);
	assert_int_equal(count(a, LDNS_SECTION_ADDITIONAL, LDNS_RR_TYPE_AAAA), 40);
	ldns_pkt_free(a);
	/* an answer larger than TCP's buffer is not sent cut: SERVFAIL */
	len = wire(query("sip.contoso.test", LDNS_RR_TYPE_AAAA), q);
	a = ask_wire(d, q, len, 1, 600);
	assert_false(ldns_pkt_tc(a));
	assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_SERVFAIL);
	ldns_pkt_free(a);
	/* a buffer too small even for the question: nothing */
	len = wire(query("sip.contoso.test", LDNS_RR_TYPE_AAAA), q);
	assert_int_equal(bal_dns_answer(d, q, len, 0, answer_buf, 20), 0);

	struct bal_dns_stats st;
	bal_dns_get_stats(d, &st);
	assert_int_equal(st.truncated, 2);
	assert_int_equal(st.servfail, 1);
	assert_int_equal(st.dropped, 1);
	bal_dns_free(d);
}

static void test_serial(void **state)
{
	struct bal_dns *d = responder();
	assert_int_equal(bal_dns_serial(d, "contoso.test"), SERIAL0);
	assert_int_equal(bal_dns_serial(d, "fabrikam.test"), FAB_SERIAL);
	assert_int_equal(bal_dns_serial(d, "example.org"), 0);
	/* the zone may be named with another case or a final dot */
	assert_int_equal(bal_dns_serial(d, "Contoso.Test."), SERIAL0);

	const char *ab[] = { "198.18.1.1", "198.18.1.2", "fd00::1" };
	const char *ba[] = { "fd00::1", "198.18.1.2", "198.18.1.1", "198.18.1.2" };
	const char *a_only[] = { "198.18.1.1" };
	pool(d, "contoso.test", ab, 3);
	assert_int_equal(bal_dns_serial(d, "contoso.test"), SERIAL0 + 1);
	pool(d, "contoso.test", ba, 4); /* another order, a duplicate: the same set */
	assert_int_equal(bal_dns_serial(d, "contoso.test"), SERIAL0 + 1);
	pool(d, "contoso.test", a_only, 1);
	assert_int_equal(bal_dns_serial(d, "contoso.test"), SERIAL0 + 2);
	pool(d, "contoso.test", a_only, 1);
	assert_int_equal(bal_dns_serial(d, "contoso.test"), SERIAL0 + 2);
	pool(d, "contoso.test", NULL, 0);
	assert_int_equal(bal_dns_serial(d, "contoso.test"), SERIAL0 + 3);
	assert_int_equal(bal_dns_serial(d, "fabrikam.test"), FAB_SERIAL);
	/* the duplicate is answered once */
	pool(d, "contoso.test", ba, 4);
	ldns_pkt *a = ask(d, "sip.contoso.test", LDNS_RR_TYPE_A);
	assert_int_equal(ldns_pkt_ancount(a), 2);
	ldns_pkt_free(a);
	/* the SOA says the serial */
	a = ask(d, "contoso.test", LDNS_RR_TYPE_SOA);
	assert_int_equal(ldns_rdf2native_int32(ldns_rr_rdf(ldns_rr_list_rr(ldns_pkt_answer(a), 0), 2)),
	                 SERIAL0 + 4);
	ldns_pkt_free(a);

	/* refused: an unknown zone, an unknown family; nothing changes */
	struct bal_ip bad = { .family = AF_UNIX };
	assert_int_equal(bal_dns_set_pool(d, "example.org", NULL, 0), -1);
	assert_int_equal(bal_dns_set_pool(d, "contoso.test", &bad, 1), -1);
	assert_int_equal(bal_dns_serial(d, "contoso.test"), SERIAL0 + 4);
	bal_dns_free(d);

	/* RFC 1982: past 2^32 - 1 comes 1 (0 is skipped) */
	config();
	zones[1].serial = 0xffffffffu;
	char err[200];
	d = bal_dns_new(&cfg, SERIAL0, err, sizeof(err));
	assert_non_null(d);
	pool(d, "fabrikam.test", a_only, 1);
	assert_int_equal(bal_dns_serial(d, "fabrikam.test"), 1);
	pool(d, "fabrikam.test", ab, 2);
	assert_int_equal(bal_dns_serial(d, "fabrikam.test"), 2);
	bal_dns_free(d);
}

static void test_stats(void **state)
{
	struct bal_dns *d = responder();
	const char *set[] = { "198.18.1.1" };
	pool(d, "contoso.test", set, 1);
	ldns_pkt_free(ask(d, "sip.contoso.test", LDNS_RR_TYPE_A));          /* answered */
	ldns_pkt_free(ask(d, "nothere.contoso.test", LDNS_RR_TYPE_A));      /* nxdomain */
	ldns_pkt_free(ask(d, "_tcp.contoso.test", LDNS_RR_TYPE_A));         /* nodata */
	ldns_pkt_free(ask(d, "sip.contoso.test", LDNS_RR_TYPE_TXT));        /* nodata */
	ldns_pkt_free(ask(d, "example.org", LDNS_RR_TYPE_A));               /* refused */
	ldns_pkt_free(ask_pkt(d, query_edns("contoso.test", LDNS_RR_TYPE_SOA, 1232, 2), 0));
	ldns_pkt *q = query("contoso.test", LDNS_RR_TYPE_SOA);
	ldns_pkt_set_opcode(q, LDNS_PACKET_UPDATE);
	ldns_pkt_free(ask_pkt(d, q, 0));                                     /* notimp */
	uint8_t w[512];
	size_t len = wire(query("contoso.test", LDNS_RR_TYPE_SOA), w);
	w[5] = 0;
	ldns_pkt_free(ask_wire(d, w, len, 0, 512));                          /* formerr */
	w[5] = 1;
	w[2] |= 0x80;
	assert_null(ask_wire(d, w, len, 0, 512));                            /* dropped */

	struct bal_dns_stats st;
	bal_dns_get_stats(d, &st);
	assert_int_equal(st.queries, 9);
	assert_int_equal(st.answered, 8);
	assert_int_equal(st.dropped, 1);
	assert_int_equal(st.nxdomain, 1);
	assert_int_equal(st.nodata, 2);
	assert_int_equal(st.refused, 1);
	assert_int_equal(st.badvers, 1);
	assert_int_equal(st.notimp, 1);
	assert_int_equal(st.formerr, 1);
	assert_int_equal(st.truncated, 0);
	assert_int_equal(st.servfail, 0);
	bal_dns_free(d);
}

static void test_bad_config(void **state)
{
	char err[200] = "";
	config();
	zones[1].pool_name = "sip..fabrikam.test";
	assert_null(bal_dns_new(&cfg, SERIAL0, err, sizeof(err)));
	assert_non_null(strstr(err, "sip..fabrikam.test"));
	config();
	contoso_ns[1] = "ns2..example.net";
	assert_null(bal_dns_new(&cfg, SERIAL0, err, sizeof(err)));
	assert_non_null(strstr(err, "ns2..example.net"));
	contoso_ns[1] = "ns2.example.net";
	/* no zone at all: everything is refused */
	config();
	cfg.nzones = 0;
	struct bal_dns *d = bal_dns_new(&cfg, SERIAL0, err, sizeof(err));
	assert_non_null(d);
	ldns_pkt *a = ask(d, "contoso.test", LDNS_RR_TYPE_SOA);
	assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_REFUSED);
	ldns_pkt_free(a);
	bal_dns_free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_soa),
		cmocka_unit_test(test_ns_glue),
		cmocka_unit_test(test_pool_rotation),
		cmocka_unit_test(test_vip),
		cmocka_unit_test(test_srv),
		cmocka_unit_test(test_negative),
		cmocka_unit_test(test_any),
		cmocka_unit_test(test_errors),
		cmocka_unit_test(test_case),
		cmocka_unit_test(test_edns),
		cmocka_unit_test(test_truncation),
		cmocka_unit_test(test_serial),
		cmocka_unit_test(test_stats),
		cmocka_unit_test(test_bad_config),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
