/* Unit tests for edge/sip_txn.c: transaction keys, branches, loop hash, table. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sip_txn.h"

static const struct sip_limits LIM = { 65536, 4096, 64 };

#define VIA_A "SIP/2.0/TCP h1.example:5060;branch=z9hG4bKabc"

/* What a test request is made of; NULL or 0 fields take the defaults. */
struct req_spec {
	const char *method;   /* INVITE */
	const char *ruri;     /* sip:bob@b.example */
	const char *via;      /* VIA_A; the top Via */
	const char *via2;     /* a second Via, or none */
	const char *from_tag; /* ft */
	const char *to_tag;   /* none */
	const char *call_id;  /* c1@a.example */
	unsigned cseq;        /* 1 */
	const char *extra;    /* more header lines, each ending in CRLF */
};

static struct sip_msg *parse_ok(const char *text)
{
	struct sip_msg *m = NULL;

	assert_int_equal(sip_msg_parse(text, strlen(text), &LIM, &m), SIP_OK);
	assert_non_null(m);
	return m;
}

static struct sip_msg *build(struct req_spec r)
{
	static char text[8192];
	const char *method = r.method ? r.method : "INVITE";
	int n = snprintf(text, sizeof(text),
	                 "%s %s SIP/2.0\r\n"
	                 "Via: %s\r\n"
	                 "%s%s%s"
	                 "Max-Forwards: 70\r\n"
	                 "From: Alice <sip:alice@a.example>;tag=%s\r\n"
	                 "To: Bob <sip:bob@b.example>%s%s\r\n"
	                 "Call-ID: %s\r\n"
	                 "CSeq: %u %s\r\n"
	                 "%s"
	                 "Content-Length: 0\r\n\r\n",
	                 method, r.ruri ? r.ruri : "sip:bob@b.example",
	                 r.via ? r.via : VIA_A,
	                 r.via2 ? "Via: " : "", r.via2 ? r.via2 : "", r.via2 ? "\r\n" : "",
	                 r.from_tag ? r.from_tag : "ft",
	                 r.to_tag ? ";tag=" : "", r.to_tag ? r.to_tag : "",
	                 r.call_id ? r.call_id : "c1@a.example",
	                 r.cseq ? r.cseq : 1, method,
	                 r.extra ? r.extra : "");
	assert_true(n > 0 && (size_t)n < sizeof(text));
	return parse_ok(text);
}

/* A response to a default request, under the given top Via. */
static struct sip_msg *build_resp(const char *via, const char *cseq_method)
{
	char text[1024];
	int n = snprintf(text, sizeof(text),
	                 "SIP/2.0 200 OK\r\n"
	                 "Via: %s\r\n"
	                 "Via: SIP/2.0/TCP h1.example:5060;branch=z9hG4bKabc\r\n"
	                 "From: Alice <sip:alice@a.example>;tag=ft\r\n"
	                 "To: Bob <sip:bob@b.example>;tag=tt\r\n"
	                 "Call-ID: c1@a.example\r\n"
	                 "CSeq: 1 %s\r\n"
	                 "Content-Length: 0\r\n\r\n",
	                 via, cseq_method);
	assert_true(n > 0 && (size_t)n < sizeof(text));
	return parse_ok(text);
}

/* The server key of a request; asserts that it fits and says its length. */
static void server_key(struct req_spec r, enum sip_method as, char *key)
{
	struct sip_msg *m = build(r);
	int n = sip_txn_server_key(m, as, key, SIP_TXN_KEY_MAX);

	assert_true(n > 0);
	assert_int_equal((size_t)n, strlen(key));
	sip_msg_free(m);
}

static void assert_same_server_key(struct req_spec a, struct req_spec b)
{
	char ka[SIP_TXN_KEY_MAX], kb[SIP_TXN_KEY_MAX];

	server_key(a, SIP_METHOD_UNKNOWN, ka);
	server_key(b, SIP_METHOD_UNKNOWN, kb);
	assert_string_equal(ka, kb);
}

static void assert_other_server_key(struct req_spec a, struct req_spec b)
{
	char ka[SIP_TXN_KEY_MAX], kb[SIP_TXN_KEY_MAX];

	server_key(a, SIP_METHOD_UNKNOWN, ka);
	server_key(b, SIP_METHOD_UNKNOWN, kb);
	assert_string_not_equal(ka, kb);
}

static void test_server_key_ack_is_invite(void **state)
{
	/* The ACK for a non-2xx carries the To tag of the response. */
	assert_same_server_key((struct req_spec){ 0 },
	                       (struct req_spec){ .method = "ACK", .to_tag = "tt" });
	/* Only the top Via counts. */
	assert_same_server_key((struct req_spec){ 0 },
	                       (struct req_spec){ .via2 = "SIP/2.0/TLS p.example;branch=z9hG4bKx" });
}

static void test_server_key_cancel(void **state)
{
	char inv[SIP_TXN_KEY_MAX], can[SIP_TXN_KEY_MAX];
	struct req_spec cancel = { .method = "CANCEL" };

	server_key((struct req_spec){ 0 }, SIP_METHOD_UNKNOWN, inv);
	server_key(cancel, SIP_METHOD_UNKNOWN, can);
	assert_string_not_equal(inv, can); /* a CANCEL is a transaction of its own */
	server_key(cancel, SIP_INVITE, can);
	assert_string_equal(inv, can);     /* ... that finds the INVITE's */
}

static void test_server_key_fields(void **state)
{
	struct req_spec base = { 0 };

	assert_other_server_key(base, (struct req_spec){ .via = "SIP/2.0/TCP h1.example:5060;branch=z9hG4bKabd" });
	assert_other_server_key(base, (struct req_spec){ .via = "SIP/2.0/TCP h2.example:5060;branch=z9hG4bKabc" });
	assert_other_server_key(base, (struct req_spec){ .via = "SIP/2.0/TCP h1.example:5062;branch=z9hG4bKabc" });
	assert_other_server_key(base, (struct req_spec){ .method = "OPTIONS" });
	assert_other_server_key((struct req_spec){ .method = "FOO" }, (struct req_spec){ .method = "BAR" });
	/* Host names compare case-insensitively (RFC 3261 19.1.4). */
	assert_same_server_key(base, (struct req_spec){ .via = "SIP/2.0/TCP H1.Example:5060;branch=z9hG4bKabc" });
	/* A retransmission with other dialog fields is still the same transaction. */
	assert_same_server_key(base, (struct req_spec){ .call_id = "other", .cseq = 9, .from_tag = "zz" });
}

static void test_server_key_rfc2543(void **state)
{
	const char *old = "SIP/2.0/TCP h1.example:5060";
	struct req_spec base = { .via = old };

	assert_same_server_key(base, (struct req_spec){ .via = old, .method = "ACK", .to_tag = "tt" });
	assert_other_server_key(base, (struct req_spec){ .via = old, .call_id = "c2@a.example" });
	assert_other_server_key(base, (struct req_spec){ .via = old, .cseq = 2 });
	assert_other_server_key(base, (struct req_spec){ .via = old, .from_tag = "other" });
	assert_other_server_key(base, (struct req_spec){ .via = "SIP/2.0/TCP h2.example:5060" });

	/* A branch without the magic cookie does not identify a transaction. */
	const char *nocookie = "SIP/2.0/TCP h1.example:5060;branch=1234";
	assert_other_server_key((struct req_spec){ .via = nocookie },
	                        (struct req_spec){ .via = nocookie, .call_id = "c2@a.example" });
	assert_same_server_key((struct req_spec){ .via = nocookie },
	                       (struct req_spec){ .via = nocookie, .method = "ACK" });

	char inv[SIP_TXN_KEY_MAX], can[SIP_TXN_KEY_MAX];
	server_key(base, SIP_METHOD_UNKNOWN, inv);
	server_key((struct req_spec){ .via = old, .method = "CANCEL" }, SIP_INVITE, can);
	assert_string_equal(inv, can);
}

static void test_server_key_too_long(void **state)
{
	char via[700], key[SIP_TXN_KEY_MAX];
	struct sip_msg *m;
	int n;

	snprintf(via, sizeof(via), "SIP/2.0/TCP h1.example;branch=z9hG4bK%0600d", 7);
	m = build((struct req_spec){ .via = via });
	assert_int_equal(sip_txn_server_key(m, SIP_METHOD_UNKNOWN, key, sizeof(key)), -1);
	sip_msg_free(m);

	/* The boundary: a key of n bytes needs n + 1. */
	m = build((struct req_spec){ 0 });
	n = sip_txn_server_key(m, SIP_METHOD_UNKNOWN, key, sizeof(key));
	assert_true(n > 0);
	memset(key, 'x', sizeof(key));
	assert_int_equal(sip_txn_server_key(m, SIP_METHOD_UNKNOWN, key, (size_t)n + 1), n);
	assert_int_equal(strlen(key), n);
	memset(key, 'x', sizeof(key));
	assert_int_equal(sip_txn_server_key(m, SIP_METHOD_UNKNOWN, key, (size_t)n), -1);
	assert_int_equal(key[n], 'x'); /* nothing written past the buffer given */
	assert_int_equal(sip_txn_client_key(m, key, 4), -1);
	assert_int_equal(sip_txn_client_key_of("z9hG4bKabc", m, key, 4), -1);
	sip_msg_free(m);
}

static void test_client_key(void **state)
{
	char kr[SIP_TXN_KEY_MAX], kq[SIP_TXN_KEY_MAX];
	struct sip_msg *req = build((struct req_spec){ 0 });
	struct sip_msg *resp = build_resp("SIP/2.0/TLS edge.example:5061;branch=z9hG4bKours", "INVITE");

	assert_true(sip_txn_client_key(resp, kr, sizeof(kr)) > 0);
	assert_true(sip_txn_client_key_of("z9hG4bKours", req, kq, sizeof(kq)) > 0);
	assert_string_equal(kr, kq);
	assert_true(sip_txn_client_key_of("z9hG4bKother", req, kq, sizeof(kq)) > 0);
	assert_string_not_equal(kr, kq);
	sip_msg_free(resp);

	/* The sent-by of the top Via does not matter; the CSeq method does. */
	resp = build_resp("SIP/2.0/TLS 192.0.2.1:5061;branch=z9hG4bKours", "INVITE");
	assert_true(sip_txn_client_key(resp, kq, sizeof(kq)) > 0);
	assert_string_equal(kr, kq);
	sip_msg_free(resp);
	resp = build_resp("SIP/2.0/TLS edge.example:5061;branch=z9hG4bKours", "CANCEL");
	assert_true(sip_txn_client_key(resp, kq, sizeof(kq)) > 0);
	assert_string_not_equal(kr, kq);
	sip_msg_free(resp);

	/* No branch, no client transaction. */
	resp = build_resp("SIP/2.0/TLS edge.example:5061", "INVITE");
	assert_int_equal(sip_txn_client_key(resp, kq, sizeof(kq)), -1);
	sip_msg_free(resp);
	sip_msg_free(req);

	/* Extension methods match by name. */
	req = build((struct req_spec){ .method = "FOO" });
	resp = build_resp("SIP/2.0/TLS edge.example:5061;branch=z9hG4bKours", "FOO");
	assert_true(sip_txn_client_key(resp, kr, sizeof(kr)) > 0);
	assert_true(sip_txn_client_key_of("z9hG4bKours", req, kq, sizeof(kq)) > 0);
	assert_string_equal(kr, kq);
	sip_msg_free(resp);
	resp = build_resp("SIP/2.0/TLS edge.example:5061;branch=z9hG4bKours", "BAR");
	assert_true(sip_txn_client_key(resp, kr, sizeof(kr)) > 0);
	assert_string_not_equal(kr, kq);
	sip_msg_free(resp);
	sip_msg_free(req);
}

/* The branch of a request, checking its size and that nothing overflows. */
static void branch_of(struct req_spec r, char *out)
{
	char buf[SIP_TXN_BRANCH_LEN + 8];
	struct sip_msg *m = build(r);

	memset(buf, '#', sizeof(buf));
	sip_txn_branch(m, buf);
	assert_int_equal(strlen(buf), SIP_TXN_BRANCH_LEN);
	assert_int_equal(buf[SIP_TXN_BRANCH_LEN + 1], '#');
	memcpy(out, buf, SIP_TXN_BRANCH_LEN + 1);
	sip_msg_free(m);
}

static void test_branch(void **state)
{
	char a[SIP_TXN_BRANCH_LEN + 1], b[SIP_TXN_BRANCH_LEN + 1];

	branch_of((struct req_spec){ 0 }, a);
	assert_memory_equal(a, "z9hG4bK", 7);
	for (size_t i = 7; i < SIP_TXN_BRANCH_LEN; i++) {
		if (i == 7 + 16)
			assert_int_equal(a[i], '.');
		else
			assert_non_null(strchr("0123456789abcdef", a[i]));
	}
	branch_of((struct req_spec){ 0 }, b);
	assert_string_equal(a, b);
	/* A retransmission through another path of Vias below the top one. */
	branch_of((struct req_spec){ .via2 = "SIP/2.0/TCP p.example;branch=z9hG4bKp" }, b);
	assert_string_equal(a, b);
	/* Another transaction with the same loop fields: same loop half, other branch. */
	branch_of((struct req_spec){ .via = "SIP/2.0/TCP h1.example:5060;branch=z9hG4bKabd" }, b);
	assert_string_not_equal(a, b);
	assert_memory_equal(a, b, 7 + 16 + 1);
	/* A spiral: other loop half. */
	branch_of((struct req_spec){ .ruri = "sip:bob@c.example" }, b);
	assert_memory_not_equal(a, b, 7 + 16);
	/* RFC 2543 requests get a branch too, and a stable one. */
	branch_of((struct req_spec){ .via = "SIP/2.0/TCP h1.example:5060" }, a);
	branch_of((struct req_spec){ .via = "SIP/2.0/TCP h1.example:5060" }, b);
	assert_string_equal(a, b);
}

static uint64_t loop_hash_of(struct req_spec r)
{
	struct sip_msg *m = build(r);
	uint64_t h = sip_txn_loop_hash(m);

	sip_msg_free(m);
	return h;
}

static void test_loop_hash(void **state)
{
	uint64_t h = loop_hash_of((struct req_spec){ 0 });

	assert_true(h == loop_hash_of((struct req_spec){ 0 }));
	assert_true(h == loop_hash_of((struct req_spec){
		.via = "SIP/2.0/TLS edge.example:5061;branch=z9hG4bKzzz",
		.via2 = VIA_A }));
	assert_true(h == loop_hash_of((struct req_spec){ .extra = "Subject: other\r\n" }));
	assert_true(h != loop_hash_of((struct req_spec){ .ruri = "sip:bob@c.example" }));
	assert_true(h != loop_hash_of((struct req_spec){ .extra = "Route: <sip:p1.example;lr>\r\n" }));
	assert_true(h != loop_hash_of((struct req_spec){ .extra = "Proxy-Require: foo\r\n" }));
	assert_true(h != loop_hash_of((struct req_spec){ .to_tag = "tt" }));
	assert_true(h != loop_hash_of((struct req_spec){ .from_tag = "other" }));
	assert_true(h != loop_hash_of((struct req_spec){ .call_id = "c2@a.example" }));
	assert_true(h != loop_hash_of((struct req_spec){ .cseq = 2 }));
	assert_true(loop_hash_of((struct req_spec){ .extra = "Route: <sip:p1.example;lr>\r\n" }) !=
	            loop_hash_of((struct req_spec){ .extra = "Route: <sip:p2.example;lr>\r\n" }));
}

static void test_branch_has_loop(void **state)
{
	char b[SIP_TXN_BRANCH_LEN + 1];
	struct sip_msg *m = build((struct req_spec){ 0 });
	uint64_t h = sip_txn_loop_hash(m);
	struct sip_str s = { b, SIP_TXN_BRANCH_LEN };

	sip_txn_branch(m, b);
	assert_true(sip_txn_branch_has_loop(s, h));
	assert_false(sip_txn_branch_has_loop(s, h + 1));
	assert_false(sip_txn_branch_has_loop((struct sip_str){ b, SIP_TXN_BRANCH_LEN - 1 }, h));
	assert_false(sip_txn_branch_has_loop((struct sip_str){ 0 }, h));
	assert_false(sip_txn_branch_has_loop(SIP_STR_LIT("z9hG4bKabc"), h));
	b[0] = 'Z';
	assert_false(sip_txn_branch_has_loop(s, h));
	sip_msg_free(m);
}

#define NLINKS 10000

static void test_table(void **state)
{
	struct sip_txn_table t = { 0 };
	struct sip_txn_link *links = calloc(NLINKS, sizeof(*links));
	char key[32];

	assert_non_null(links);
	assert_int_equal(sip_txn_count(&t), 0);
	assert_null(sip_txn_find(&t, "k0"));
	for (unsigned i = 0; i < NLINKS; i++) {
		snprintf(key, sizeof(key), "k%u\x01INVITE\x01", i);
		assert_int_equal(sip_txn_add(&t, &links[i], key), 0);
	}
	assert_int_equal(sip_txn_count(&t), NLINKS);
	for (unsigned i = 0; i < NLINKS; i++) {
		snprintf(key, sizeof(key), "k%u\x01INVITE\x01", i);
		assert_ptr_equal(sip_txn_find(&t, key), &links[i]);
		assert_string_equal(links[i].key, key);
		assert_ptr_not_equal(links[i].key, key); /* a copy */
	}
	assert_null(sip_txn_find(&t, "k1\x01INVITE"));
	assert_null(sip_txn_find(&t, ""));

	for (unsigned i = 0; i < NLINKS; i += 2)
		sip_txn_del(&t, &links[i]);
	assert_int_equal(sip_txn_count(&t), NLINKS / 2);
	for (unsigned i = 0; i < NLINKS; i++) {
		snprintf(key, sizeof(key), "k%u\x01INVITE\x01", i);
		if (i % 2)
			assert_ptr_equal(sip_txn_find(&t, key), &links[i]);
		else
			assert_null(sip_txn_find(&t, key));
	}

	/* Deleting an unlinked node, twice or never linked, changes nothing. */
	sip_txn_del(&t, &links[0]);
	struct sip_txn_link never = { 0 };
	sip_txn_del(&t, &never);
	assert_int_equal(sip_txn_count(&t), NLINKS / 2);

	/* A deleted node can be linked again. */
	assert_int_equal(sip_txn_add(&t, &links[0], "again"), 0);
	assert_ptr_equal(sip_txn_find(&t, "again"), &links[0]);
	assert_int_equal(sip_txn_count(&t), NLINKS / 2 + 1);

	for (unsigned i = 0; i < NLINKS; i++)
		sip_txn_del(&t, &links[i]);
	assert_int_equal(sip_txn_count(&t), 0);
	assert_null(sip_txn_find(&t, "again"));
	sip_txn_table_free(&t);
	free(links);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_server_key_ack_is_invite),
		cmocka_unit_test(test_server_key_cancel),
		cmocka_unit_test(test_server_key_fields),
		cmocka_unit_test(test_server_key_rfc2543),
		cmocka_unit_test(test_server_key_too_long),
		cmocka_unit_test(test_client_key),
		cmocka_unit_test(test_branch),
		cmocka_unit_test(test_loop_hash),
		cmocka_unit_test(test_branch_has_loop),
		cmocka_unit_test(test_table),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
