/* Unit tests for edge/xmpp_sub.c: the gateway's subscriptions and stream holders in a store. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "xmpp_sub.h"

static struct xmpp_sub watch(enum xmpp_sub_kind kind, const char *user, const char *jid,
                             const char *call_id)
{
	struct xmpp_sub s;
	memset(&s, 0, sizeof(s));
	s.kind = kind;
	snprintf(s.sip_user, sizeof(s.sip_user), "%s", user);
	snprintf(s.jid, sizeof(s.jid), "%s", jid);
	snprintf(s.call_id, sizeof(s.call_id), "%s", call_id);
	snprintf(s.local_tag, sizeof(s.local_tag), "gw1");
	snprintf(s.remote_tag, sizeof(s.remote_tag), "fe9");
	snprintf(s.target, sizeof(s.target), "sip:alice@198.18.0.7;transport=tcp");
	snprintf(s.route, sizeof(s.route), "<sip:fe1.contoso.test;lr>, <sip:dir.contoso.test;lr>");
	snprintf(s.holder, sizeof(s.holder), "edge-a");
	s.cseq = 4000000000u;
	s.active = 1;
	s.expires_ms = xmpp_sub_now_ms() + 600000;
	s.last_doc = 0xfedcba9876543210ull;
	return s;
}

static void test_codec_round_trip(void **state)
{
	struct xmpp_sub s = watch(XMPP_SUB_XMPP_WATCHES, "alice@contoso.test", "juliet@fabrikam.test",
	                          "c1"), back;
	char buf[4096];
	size_t n = xmpp_sub_encode(&s, buf, sizeof(buf));
	assert_true(n > 0);
	assert_int_equal(xmpp_sub_decode(buf, n, &back), 0);
	assert_memory_equal(&s, &back, sizeof(s));
	/* Too small a buffer: nothing, not a cut record. */
	assert_int_equal(xmpp_sub_encode(&s, buf, 20), 0);
}

static void test_codec_refusals(void **state)
{
	struct xmpp_sub out;
	const char *bad[] = {
		"",                                                       /* no fields */
		"0\na@b\nj@d\nc\nt\nr\nsip:x\n\n1\n1\n5\nn",              /* 12 fields, not 13 */
		"0\na@b\nj@d\nc\nt\nr\nsip:x\n\n1\n1\n5\nn\n0\nextra",    /* 14 */
		"2\na@b\nj@d\nc\nt\nr\nsip:x\n\n1\n1\n5\nn\n0",           /* kind 2 */
		"0\na@b\nj@d\nc\nt\nr\nsip:x\n\n1\n5\n5\nn\n0",           /* active 5 */
		"0\na@b\nj@d\nc\nt\nr\nsip:x\n\n4294967296\n1\n5\nn\n0",  /* CSeq past 32 bits */
		"0\na@b\nj@d\nc\nt\nr\nsip:x\n\n-1\n1\n5\nn\n0",          /* not a number */
		"0\n\nj@d\nc\nt\nr\nsip:x\n\n1\n1\n5\nn\n0",              /* no user */
		"0\na@b\nj@d\n\nt\nr\nsip:x\n\n1\n1\n5\nn\n0",            /* no Call-ID */
		"0\na@b\nj@d\nc\nt\nr\nsip:x\n\n\n1\n5\nn\n0",            /* empty number */
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(xmpp_sub_decode(bad[i], strlen(bad[i]), &out), -1);
	/* A NUL inside a field is refused, not cut short. */
	const char nul[] = "0\na\0b\nj@d\nc\nt\nr\nsip:x\n\n1\n1\n5\nn\n0";
	assert_int_equal(xmpp_sub_decode(nul, sizeof(nul) - 1, &out), -1);
	const char good[] = "0\na@b\nj@d\nc\nt\nr\nsip:x\n\n1\n1\n5\nn\n0";
	assert_int_equal(xmpp_sub_decode(good, sizeof(good) - 1, &out), 0);
	assert_string_equal(out.sip_user, "a@b");
	assert_int_equal(out.expires_ms, 5);
}

static void test_store_watches(void **state)
{
	struct xmpp_sub_store *st = xmpp_sub_store_new(NULL);
	assert_non_null(st);
	struct xmpp_sub a = watch(XMPP_SUB_SIP_WATCHES, "alice@contoso.test", "juliet@fabrikam.test",
	                          "call-a");
	struct xmpp_sub b = watch(XMPP_SUB_XMPP_WATCHES, "alice@contoso.test", "juliet@fabrikam.test",
	                          "call-b");
	struct xmpp_sub out;
	assert_int_equal(xmpp_sub_put(st, &a), 0);
	assert_int_equal(xmpp_sub_put(st, &b), 0);
	/* The same parties, both kinds: two watches. */
	assert_int_equal(xmpp_sub_get(st, XMPP_SUB_SIP_WATCHES, a.sip_user, a.jid, &out), 0);
	assert_string_equal(out.call_id, "call-a");
	assert_int_equal(xmpp_sub_get(st, XMPP_SUB_XMPP_WATCHES, a.sip_user, a.jid, &out), 0);
	assert_string_equal(out.call_id, "call-b");
	assert_int_equal(xmpp_sub_by_call_id(st, "call-b", &out), 0);
	assert_int_equal(out.kind, XMPP_SUB_XMPP_WATCHES);
	assert_int_equal(xmpp_sub_by_call_id(st, "call-x", &out), -1);

	/* A new dialog for the same parties: the old Call-ID no longer finds it. */
	struct xmpp_sub a2 = watch(XMPP_SUB_SIP_WATCHES, a.sip_user, a.jid, "call-a2");
	assert_int_equal(xmpp_sub_put(st, &a2), 0);
	assert_int_equal(xmpp_sub_by_call_id(st, "call-a", &out), -1);
	assert_int_equal(xmpp_sub_by_call_id(st, "call-a2", &out), 0);

	xmpp_sub_delete(st, &a2);
	assert_int_equal(xmpp_sub_get(st, XMPP_SUB_SIP_WATCHES, a.sip_user, a.jid, &out), -1);
	assert_int_equal(xmpp_sub_by_call_id(st, "call-a2", &out), -1);
	xmpp_sub_store_free(st);
}

static void count(void *arg, const struct xmpp_sub *s)
{
	(*(unsigned *)arg)++;
}

static void holder(void *arg, const char *local, const char *remote, const char *node)
{
	char *seen = arg;
	snprintf(seen, 200, "%s %s %s", local, remote, node);
}

static void test_permissions_holders_foreach(void **state)
{
	struct xmpp_sub_store *st = xmpp_sub_store_new(NULL);
	unsigned n = 0;
	char seen[200] = "";
	assert_false(xmpp_sub_allowed(st, "alice@contoso.test", "juliet@fabrikam.test"));
	assert_int_equal(xmpp_sub_allow(st, "alice@contoso.test", "juliet@fabrikam.test", 60000), 0);
	assert_true(xmpp_sub_allowed(st, "alice@contoso.test", "juliet@fabrikam.test"));
	assert_false(xmpp_sub_allowed(st, "bob@contoso.test", "juliet@fabrikam.test"));
	xmpp_sub_disallow(st, "alice@contoso.test", "juliet@fabrikam.test");
	assert_false(xmpp_sub_allowed(st, "alice@contoso.test", "juliet@fabrikam.test"));

	assert_int_equal(xmpp_sub_hold(st, "contoso.test", "fabrikam.test", "edge-b", 60000), 0);
	xmpp_sub_foreach_holder(st, holder, seen);
	assert_string_equal(seen, "contoso.test fabrikam.test edge-b");

	struct xmpp_sub a = watch(XMPP_SUB_SIP_WATCHES, "alice@contoso.test", "juliet@fabrikam.test",
	                          "c1");
	struct xmpp_sub b = watch(XMPP_SUB_XMPP_WATCHES, "bob@contoso.test", "romeo@fabrikam.test",
	                          "c2");
	xmpp_sub_put(st, &a);
	xmpp_sub_put(st, &b);
	xmpp_sub_foreach(st, count, &n);
	assert_int_equal(n, 2); /* holders, permissions and indexes are not watches */
	xmpp_sub_store_free(st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_codec_round_trip),
		cmocka_unit_test(test_codec_refusals),
		cmocka_unit_test(test_store_watches),
		cmocka_unit_test(test_permissions_holders_foreach),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
