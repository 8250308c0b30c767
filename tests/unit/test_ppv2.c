/* Unit tests for common/ppv2.c: the PROXY protocol v2 header, built and parsed. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/un.h>

#include "ppv2.h"

#define SIG "\r\n\r\n\0\r\nQUIT\n"

static struct sockaddr_in v4(const char *ip, uint16_t port)
{
	struct sockaddr_in s;
	memset(&s, 0, sizeof(s));
	s.sin_family = AF_INET;
	s.sin_port = htons(port);
	assert_int_equal(inet_pton(AF_INET, ip, &s.sin_addr), 1);
	return s;
}

static struct sockaddr_in6 v6(const char *ip, uint16_t port)
{
	struct sockaddr_in6 s;
	memset(&s, 0, sizeof(s));
	s.sin6_family = AF_INET6;
	s.sin6_port = htons(port);
	assert_int_equal(inet_pton(AF_INET6, ip, &s.sin6_addr), 1);
	return s;
}

/*
 * A heap copy of b[0..len), so that ASan reports any read past len. Caller
 * frees.
 */
static uint8_t *slice(const uint8_t *b, size_t len)
{
	uint8_t *p = malloc(len ? len : 1);
	assert_non_null(p);
	memcpy(p, b, len);
	return p;
}

/* ppv2_parse() on exactly b[0..len). */
static int parse(const uint8_t *b, size_t len, struct ppv2_header *h)
{
	uint8_t *p = slice(b, len);
	int rc = ppv2_parse(p, len, h);
	free(p); p = NULL;
	return rc;
}

/* A header: the signature, ver/cmd, family, the length field, then body. */
static size_t make(uint8_t *out, uint8_t vercmd, uint8_t fam, unsigned lenfield,
                   const uint8_t *body, size_t blen)
{
	memcpy(out, SIG, 12);
	out[12] = vercmd;
	out[13] = fam;
	out[14] = (uint8_t)(lenfield >> 8);
	out[15] = (uint8_t)lenfield;
	if (blen)
		memcpy(out + 16, body, blen);
	return 16 + blen;
}

/* Every proper prefix of a valid header asks for more. */
static void assert_prefixes_need_more(const uint8_t *b, size_t len)
{
	struct ppv2_header h;
	for (size_t n = 0; n < len; n++) {
		int rc = parse(b, n, &h);
		if (rc != 0)
			fail_msg("prefix of %zu of %zu bytes: %d (%s)", n, len, rc, ppv2_strerror(rc));
	}
}

static void test_build_v4_bytes(void **state)
{
	struct sockaddr_in s = v4("192.0.2.1", 40000), d = v4("198.51.100.7", 5061);
	uint8_t buf[64];
	static const uint8_t want[28] = {
		0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
		0x21, 0x11, 0x00, 0x0c,
		192, 0, 2, 1, 198, 51, 100, 7, 0x9c, 0x40, 0x13, 0xc5,
	};
	assert_int_equal(ppv2_build(buf, sizeof(buf), (struct sockaddr *)&s, (struct sockaddr *)&d), 28);
	assert_memory_equal(buf, want, sizeof(want));
}

static void test_roundtrip_v4(void **state)
{
	struct sockaddr_in s = v4("127.0.0.99", 40000), d = v4("127.0.0.10", 5061);
	uint8_t buf[PPV2_MAX_LEN];
	struct ppv2_header h;
	size_t n = ppv2_build(buf, sizeof(buf), (struct sockaddr *)&s, (struct sockaddr *)&d);
	assert_int_equal(n, 28);
	assert_int_equal(parse(buf, n, &h), 28);
	assert_int_equal(h.command, PPV2_PROXY);
	assert_int_equal(h.srclen, sizeof(struct sockaddr_in));
	assert_int_equal(h.dstlen, sizeof(struct sockaddr_in));
	assert_memory_equal(&h.src, &s, sizeof(s));
	assert_memory_equal(&h.dst, &d, sizeof(d));
	assert_prefixes_need_more(buf, n);
}

static void test_roundtrip_v6(void **state)
{
	struct sockaddr_in6 s = v6("2001:db8::99", 1), d = v6("fd00::10", 65535);
	uint8_t buf[PPV2_MAX_LEN];
	struct ppv2_header h;
	size_t n = ppv2_build(buf, sizeof(buf), (struct sockaddr *)&s, (struct sockaddr *)&d);
	assert_int_equal(n, 52);
	assert_int_equal(buf[12], 0x21);
	assert_int_equal(buf[13], 0x21);
	assert_int_equal(buf[15], 36);
	assert_int_equal(parse(buf, n, &h), 52);
	assert_int_equal(h.command, PPV2_PROXY);
	assert_int_equal(h.srclen, sizeof(struct sockaddr_in6));
	assert_memory_equal(&h.src, &s, sizeof(s));
	assert_memory_equal(&h.dst, &d, sizeof(d));
	assert_prefixes_need_more(buf, n);
}

/* What follows the header (the partner's TLS) is neither read nor counted. */
static void test_parse_stops_at_header(void **state)
{
	struct sockaddr_in s = v4("127.0.0.99", 40000), d = v4("127.0.0.10", 5061);
	uint8_t buf[128];
	struct ppv2_header h;
	size_t n = ppv2_build(buf, sizeof(buf), (struct sockaddr *)&s, (struct sockaddr *)&d);
	memcpy(buf + n, "\x16\x03\x01\x02\x00\x01", 6); /* a ClientHello's first bytes */
	assert_int_equal(parse(buf, n + 6, &h), (int)n);
	assert_int_equal(ppv2_wanted(buf, n + 6), n);
}

static void test_build_refuses(void **state)
{
	struct sockaddr_in s4 = v4("192.0.2.1", 1), d4 = v4("192.0.2.2", 2);
	struct sockaddr_in6 s6 = v6("2001:db8::1", 1), d6 = v6("2001:db8::2", 2);
	struct sockaddr_un un = { .sun_family = AF_UNIX };
	uint8_t buf[64];
	memset(buf, 0xee, sizeof(buf));
	assert_int_equal(ppv2_build(buf, 27, (struct sockaddr *)&s4, (struct sockaddr *)&d4), 0);
	assert_int_equal(ppv2_build(buf, 51, (struct sockaddr *)&s6, (struct sockaddr *)&d6), 0);
	assert_int_equal(buf[0], 0xee); /* nothing written when it does not fit */
	assert_int_equal(ppv2_build(buf, 28, (struct sockaddr *)&s4, (struct sockaddr *)&d4), 28);
	assert_int_equal(ppv2_build(buf, 52, (struct sockaddr *)&s6, (struct sockaddr *)&d6), 52);
	assert_int_equal(ppv2_build(buf, sizeof(buf), (struct sockaddr *)&s4, (struct sockaddr *)&d6), 0);
	assert_int_equal(ppv2_build(buf, sizeof(buf), (struct sockaddr *)&s6, (struct sockaddr *)&d4), 0);
	assert_int_equal(ppv2_build(buf, sizeof(buf), (struct sockaddr *)&un, (struct sockaddr *)&un), 0);
	assert_int_equal(ppv2_build(buf, sizeof(buf), NULL, (struct sockaddr *)&d4), 0);
}

static void test_local(void **state)
{
	uint8_t buf[64];
	struct ppv2_header h;
	size_t n = make(buf, 0x20, 0x00, 0, NULL, 0);
	memset(&h, 0xff, sizeof(h));
	assert_int_equal(parse(buf, n, &h), 16);
	assert_int_equal(h.command, PPV2_LOCAL);
	assert_int_equal(h.srclen, 0);
	assert_int_equal(h.dstlen, 0);
	assert_prefixes_need_more(buf, n);

	/* The family and addresses of a LOCAL header are ignored (section 2.2). */
	static const uint8_t addrs[12] = { 10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2 };
	n = make(buf, 0x20, 0x11, sizeof(addrs), addrs, sizeof(addrs));
	assert_int_equal(parse(buf, n, &h), 28);
	assert_int_equal(h.command, PPV2_LOCAL);
	assert_int_equal(h.srclen, 0);
	n = make(buf, 0x20, 0x12, sizeof(addrs), addrs, sizeof(addrs)); /* UDP: ignored too */
	assert_int_equal(parse(buf, n, &h), 28);
	assert_int_equal(h.command, PPV2_LOCAL);

	/* What balancerd's health checks send: built, it parses as LOCAL. */
	uint8_t built[PPV2_HDR_LEN];
	assert_int_equal(ppv2_build_local(built, sizeof(built)), PPV2_HDR_LEN);
	assert_memory_equal(built, buf, 12);
	assert_int_equal(parse(built, sizeof(built), &h), PPV2_HDR_LEN);
	assert_int_equal(h.command, PPV2_LOCAL);
	assert_int_equal(ppv2_build_local(built, PPV2_HDR_LEN - 1), 0);
}

static void test_tlvs_skipped(void **state)
{
	static const uint8_t body[] = {
		127, 0, 0, 99, 127, 0, 0, 10, 0x9c, 0x40, 0x13, 0xc5,
		0x01, 0x00, 0x02, 'h', '2',                           /* PP2_TYPE_ALPN */
		0x04, 0x00, 0x00,                                     /* PP2_TYPE_NOOP, empty */
		0x02, 0x00, 0x10, 's', 'i', 'p', '.', 'c', 'o', 'n', 't', 'o', 's', 'o', '.',
		't', 'e', 's', 't',                                   /* PP2_TYPE_AUTHORITY */
		0x20, 0x00, 0x05, 0x01, 0x00, 0x00, 0x00, 0x00,       /* PP2_TYPE_SSL */
	};
	uint8_t buf[128];
	struct ppv2_header h;
	size_t n = make(buf, 0x21, 0x11, sizeof(body), body, sizeof(body));
	assert_int_equal(parse(buf, n, &h), (int)n);
	assert_int_equal(h.command, PPV2_PROXY);
	struct sockaddr_in s = v4("127.0.0.99", 40000);
	assert_memory_equal(&h.src, &s, sizeof(s));
	assert_prefixes_need_more(buf, n);
}

/* The bound: 520 bytes of addresses and TLVs pass, 521 do not. */
static void test_longest(void **state)
{
	uint8_t body[PPV2_MAX_BODY + 1];
	uint8_t buf[PPV2_HDR_LEN + sizeof(body)];
	struct ppv2_header h;
	memset(body, 0, sizeof(body));
	memcpy(body, (const uint8_t[]){ 127, 0, 0, 99, 127, 0, 0, 10, 0, 1, 0, 2 }, 12);
	/* One NOOP TLV fills the rest. */
	size_t tlv = PPV2_MAX_BODY - 12 - 3;
	body[12] = 0x04;
	body[13] = (uint8_t)(tlv >> 8);
	body[14] = (uint8_t)tlv;
	size_t n = make(buf, 0x21, 0x11, PPV2_MAX_BODY, body, PPV2_MAX_BODY);
	assert_int_equal(n, PPV2_MAX_LEN);
	assert_int_equal(parse(buf, n, &h), PPV2_MAX_LEN);
	assert_int_equal(ppv2_wanted(buf, 16), PPV2_MAX_LEN);
	assert_prefixes_need_more(buf, n);

	tlv++;
	body[13] = (uint8_t)(tlv >> 8);
	body[14] = (uint8_t)tlv;
	n = make(buf, 0x21, 0x11, PPV2_MAX_BODY + 1, body, PPV2_MAX_BODY + 1);
	/* Known as soon as the length field is in: nobody waits for 521 bytes. */
	assert_int_equal(parse(buf, 16, &h), PPV2_ERR_TOO_LONG);
	assert_int_equal(parse(buf, n, &h), PPV2_ERR_TOO_LONG);
	make(buf, 0x21, 0x21, 0xffff, NULL, 0);
	assert_int_equal(parse(buf, 16, &h), PPV2_ERR_TOO_LONG);
	make(buf, 0x20, 0x00, 0xffff, NULL, 0); /* LOCAL is bounded too */
	assert_int_equal(parse(buf, 16, &h), PPV2_ERR_TOO_LONG);
}

static void test_bad_signature(void **state)
{
	struct ppv2_header h;
	uint8_t buf[64];
	memset(buf, 0, sizeof(buf));
	assert_int_equal(parse((const uint8_t *)"\x16\x03\x01", 3, &h), PPV2_ERR_SIGNATURE);
	assert_int_equal(parse((const uint8_t *)"G", 1, &h), PPV2_ERR_SIGNATURE);
	assert_int_equal(parse((const uint8_t *)"garbage instead of a header", 27, &h),
	                 PPV2_ERR_SIGNATURE);
	/* Any byte of the signature, as soon as it is in. */
	for (size_t i = 0; i < 12; i++) {
		make(buf, 0x21, 0x11, 12, NULL, 0);
		buf[i] ^= 0x40;
		assert_int_equal(parse(buf, i + 1, &h), PPV2_ERR_SIGNATURE);
		assert_int_equal(parse(buf, 28, &h), PPV2_ERR_SIGNATURE);
	}
}

static void test_v1_text(void **state)
{
	static const char v1[] = "PROXY TCP4 127.0.0.99 127.0.0.10 40000 5061\r\n";
	struct ppv2_header h;
	assert_int_equal(parse((const uint8_t *)v1, strlen(v1), &h), PPV2_ERR_V1);
	assert_int_equal(parse((const uint8_t *)v1, 16, &h), PPV2_ERR_V1);
	assert_int_equal(parse((const uint8_t *)"PROXY UNKNOWN\r\n", 15, &h), PPV2_ERR_V1);
	/* Too short to tell: any garbage. */
	assert_int_equal(parse((const uint8_t *)v1, 3, &h), PPV2_ERR_SIGNATURE);
}

static void test_bad_version_command(void **state)
{
	struct ppv2_header h;
	uint8_t buf[64];
	memset(buf, 0, sizeof(buf));
	static const uint8_t vers[] = { 0x01, 0x11, 0x31, 0xf1, 0x00 };
	for (size_t i = 0; i < sizeof(vers); i++) {
		make(buf, vers[i], 0x11, 12, NULL, 0);
		assert_int_equal(parse(buf, 13, &h), PPV2_ERR_VERSION);
		assert_int_equal(parse(buf, 28, &h), PPV2_ERR_VERSION);
	}
	static const uint8_t cmds[] = { 0x22, 0x23, 0x2f };
	for (size_t i = 0; i < sizeof(cmds); i++) {
		make(buf, cmds[i], 0x11, 12, NULL, 0);
		assert_int_equal(parse(buf, 13, &h), PPV2_ERR_COMMAND);
		assert_int_equal(parse(buf, 28, &h), PPV2_ERR_COMMAND);
	}
}

static void test_bad_family(void **state)
{
	struct ppv2_header h;
	uint8_t buf[128];
	/* UNSPEC, UDP4, UDP6, UNIX stream and datagram, unknown values. */
	static const uint8_t fams[] = { 0x00, 0x12, 0x22, 0x31, 0x32, 0x10, 0x01, 0x41, 0x13, 0xff };
	for (size_t i = 0; i < sizeof(fams); i++) {
		make(buf, 0x21, fams[i], 36, NULL, 0);
		memset(buf + 16, 0, 36);
		assert_int_equal(parse(buf, 14, &h), PPV2_ERR_FAMILY);
		assert_int_equal(parse(buf, 52, &h), PPV2_ERR_FAMILY);
	}
	/* UNIX addresses are 216 bytes: refused for the family, not the length. */
	make(buf, 0x21, 0x31, 216, NULL, 0);
	assert_int_equal(parse(buf, 16, &h), PPV2_ERR_FAMILY);
}

static void test_short_addresses(void **state)
{
	struct ppv2_header h;
	uint8_t buf[64];
	memset(buf, 0, sizeof(buf));
	make(buf, 0x21, 0x11, 11, NULL, 0);
	assert_int_equal(parse(buf, 16, &h), PPV2_ERR_SHORT);
	assert_int_equal(parse(buf, 27, &h), PPV2_ERR_SHORT);
	make(buf, 0x21, 0x21, 12, NULL, 0); /* IPv4's length with IPv6's family */
	assert_int_equal(parse(buf, 28, &h), PPV2_ERR_SHORT);
	make(buf, 0x21, 0x21, 35, NULL, 0);
	assert_int_equal(parse(buf, 51, &h), PPV2_ERR_SHORT);
	make(buf, 0x21, 0x11, 0, NULL, 0);
	assert_int_equal(parse(buf, 16, &h), PPV2_ERR_SHORT);
}

static void test_bad_tlv(void **state)
{
	struct ppv2_header h;
	uint8_t buf[64];
	uint8_t body[20] = { 127, 0, 0, 99, 127, 0, 0, 10, 0, 1, 0, 2 };
	/* A TLV whose length runs past the header. */
	memcpy(body + 12, (const uint8_t[]){ 0x01, 0x00, 0x06, 'h', '2' }, 5);
	size_t n = make(buf, 0x21, 0x11, 17, body, 17);
	assert_int_equal(parse(buf, n, &h), PPV2_ERR_TLV);
	/* One or two bytes left: no room for a TLV's type and length. */
	n = make(buf, 0x21, 0x11, 13, body, 13);
	assert_int_equal(parse(buf, n, &h), PPV2_ERR_TLV);
	n = make(buf, 0x21, 0x11, 14, body, 14);
	assert_int_equal(parse(buf, n, &h), PPV2_ERR_TLV);
	/* Exactly fitting is fine. */
	body[14] = 2;
	n = make(buf, 0x21, 0x11, 17, body, 17);
	assert_int_equal(parse(buf, n, &h), 33);
}

static void test_wanted(void **state)
{
	uint8_t buf[64];
	make(buf, 0x21, 0x21, 36, NULL, 0);
	for (size_t n = 0; n < 16; n++)
		assert_int_equal(ppv2_wanted(buf, n), 16);
	assert_int_equal(ppv2_wanted(buf, 16), 52);
	assert_int_equal(ppv2_wanted(buf, 40), 52);
}

static void test_strerror(void **state)
{
	const char *seen[9] = { NULL };
	for (int e = PPV2_ERR_TLV; e <= PPV2_ERR_SIGNATURE; e++) {
		const char *s = ppv2_strerror(e);
		assert_non_null(s);
		assert_non_null(strstr(s, "PROXY"));
		for (int i = 0; i < 9; i++)
			assert_true(!seen[i] || strcmp(seen[i], s) != 0);
		seen[-e] = s;
	}
	assert_non_null(ppv2_strerror(-100));
	assert_non_null(strstr(ppv2_strerror(PPV2_ERR_TOO_LONG), "536"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_v4_bytes),
		cmocka_unit_test(test_roundtrip_v4),
		cmocka_unit_test(test_roundtrip_v6),
		cmocka_unit_test(test_parse_stops_at_header),
		cmocka_unit_test(test_build_refuses),
		cmocka_unit_test(test_local),
		cmocka_unit_test(test_tlvs_skipped),
		cmocka_unit_test(test_longest),
		cmocka_unit_test(test_bad_signature),
		cmocka_unit_test(test_v1_text),
		cmocka_unit_test(test_bad_version_command),
		cmocka_unit_test(test_bad_family),
		cmocka_unit_test(test_short_addresses),
		cmocka_unit_test(test_bad_tlv),
		cmocka_unit_test(test_wanted),
		cmocka_unit_test(test_strerror),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
