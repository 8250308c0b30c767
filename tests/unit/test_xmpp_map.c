/* Unit tests for edge/xmpp_map.c: SIP<->XMPP addresses, error codes and instant messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "xmpp_map.h"
#include "xmpp_xml.h"

/* ---- helpers ---- */

/*
 * Maps with a heap copy of s without its NUL, so that ASan reports any read
 * past len.
 */
static int sip_to_jid(const char *s, char *out, size_t outsz)
{
	size_t len = strlen(s);
	char *p = malloc(len ? len : 1);
	int rc;

	assert_non_null(p);
	memcpy(p, s, len);
	rc = xmpp_map_sip_to_jid(p, len, out, outsz);
	free(p); p = NULL;
	return rc;
}

static int jid_to_sip(const char *s, char *out, size_t outsz)
{
	size_t len = strlen(s);
	char *p = malloc(len ? len : 1);
	int rc;

	assert_non_null(p);
	memcpy(p, s, len);
	rc = xmpp_map_jid_to_sip(p, len, out, outsz);
	free(p); p = NULL;
	return rc;
}

/* The SIP URI s maps to the JID jid, and jid back to back_uri. */
static void round_trip(const char *s, const char *jid, const char *back_uri)
{
	char j[XMPP_MAP_JID_MAX], u[XMPP_MAP_URI_MAX];

	assert_int_equal(sip_to_jid(s, j, sizeof(j)), 0);
	assert_string_equal(j, jid);
	assert_int_equal(jid_to_sip(j, u, sizeof(u)), 0);
	assert_string_equal(u, back_uri);
}

/* Parses one stanza out of an s2s stream; the caller frees the copy. */
static int keep_elem(void *arg, struct xmpp_xml_elem *el)
{
	struct xmpp_xml_elem **out = arg;

	*out = xmpp_xml_clone(el);
	return 1;
}

static struct xmpp_xml_elem *parse(const char *stanza)
{
	static const char open[] =
		"<stream:stream xmlns='jabber:server' "
		"xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>";
	struct xmpp_xml_cbs cbs = { .on_element = keep_elem };
	struct xmpp_xml_elem *el = NULL;
	struct xmpp_xml_parser *p = xmpp_xml_parser_new(NULL, &cbs, &el);

	assert_non_null(p);
	assert_int_equal(xmpp_xml_feed(p, open, strlen(open), NULL), XMPP_XML_OK);
	assert_int_equal(xmpp_xml_feed(p, stanza, strlen(stanza), NULL), XMPP_XML_STOPPED);
	xmpp_xml_parser_free(p); p = NULL;
	assert_non_null(el);
	return el;
}

/* Serializes a tree as a jabber:server stanza into a NUL-terminated string. */
static char *serialize(const struct xmpp_xml_elem *el)
{
	struct xmpp_xml_buf b = { 0 };
	char *s;

	assert_int_equal(xmpp_xml_write_elem(&b, el, NULL), 0);
	s = malloc(b.len + 1);
	assert_non_null(s);
	memcpy(s, b.data, b.len);
	s[b.len] = '\0';
	xmpp_xml_buf_free(&b);
	return s;
}

/* ---- addresses ---- */

static void test_addr_round_trips(void **state)
{
	(void)state;
	round_trip("sip:romeo@contoso.test", "romeo@contoso.test", "sip:romeo@contoso.test");
	/* The scheme is case-insensitive and sips: maps alike; hosts are lower-cased. */
	round_trip("SIPS:Romeo@Contoso.TEST", "Romeo@contoso.test", "sip:Romeo@contoso.test");
	/* Parameters and headers are the SIP side's business. */
	round_trip("sip:romeo@contoso.test;transport=tls?subject=hi", "romeo@contoso.test",
	           "sip:romeo@contoso.test");
	/* Escapes decode; what RFC 3261 needs escaped is escaped again, the rest
	 * comes back raw. */
	round_trip("sip:caf%C3%A9@contoso.test", "caf\xc3\xa9@contoso.test",
	           "sip:caf%C3%A9@contoso.test");
	round_trip("sip:%72omeo@contoso.test", "romeo@contoso.test", "sip:romeo@contoso.test");
	round_trip("sip:a%23b%25c@contoso.test", "a#b%c@contoso.test", "sip:a%23b%25c@contoso.test");
	round_trip("sip:a+b=c$,;?x!~*()@contoso.test", "a+b=c$,;?x!~*()@contoso.test",
	           "sip:a+b=c$,;?x!~*()@contoso.test");
	round_trip("sip:+14255550100@contoso.test", "+14255550100@contoso.test",
	           "sip:+14255550100@contoso.test");
}

static void test_jid_to_sip(void **state)
{
	char u[XMPP_MAP_URI_MAX], j[XMPP_MAP_JID_MAX];

	(void)state;
	/* The resource is dropped toward SIP. */
	assert_int_equal(jid_to_sip("juliet@fabrikam.test/balcony", u, sizeof(u)), 0);
	assert_string_equal(u, "sip:juliet@fabrikam.test");
	/* A resource may hold what a localpart may not. */
	assert_int_equal(jid_to_sip("juliet@fabrikam.test/a@b/c d", u, sizeof(u)), 0);
	assert_string_equal(u, "sip:juliet@fabrikam.test");
	/* RFC 7622 3.2: the domain's trailing dot goes. */
	assert_int_equal(jid_to_sip("juliet@Fabrikam.Test.", u, sizeof(u)), 0);
	assert_string_equal(u, "sip:juliet@fabrikam.test");

	assert_int_equal(xmpp_map_jid_bare("juliet@Fabrikam.test/balcony", 28, j, sizeof(j)), 0);
	assert_string_equal(j, "juliet@fabrikam.test");
	assert_int_equal(xmpp_map_jid_bare("fabrikam.test", 13, j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_string_equal(j, "");
}

static void test_sip_refusals(void **state)
{
	char j[XMPP_MAP_JID_MAX];

	(void)state;
	assert_int_equal(sip_to_jid("tel:+14255550100", j, sizeof(j)), XMPP_MAP_ERR_SCHEME);
	assert_int_equal(sip_to_jid("xmpp:romeo@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_SCHEME);
	assert_int_equal(sip_to_jid("<sip:romeo@contoso.test>", j, sizeof(j)), XMPP_MAP_ERR_SCHEME);
	assert_int_equal(sip_to_jid("", j, sizeof(j)), XMPP_MAP_ERR_SCHEME);
	assert_int_equal(sip_to_jid("sip", j, sizeof(j)), XMPP_MAP_ERR_SCHEME);
	/* No user part. */
	assert_int_equal(sip_to_jid("sip:contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	/* Escapes that decode to what a localpart refuses. */
	assert_int_equal(sip_to_jid("sip:a%40b@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:a%20b@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:a%2Fb@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:a%3Cb@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:a%22b@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:a%00b@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:a%7Fb@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:a%FFb@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:%C0%AF@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	/* Raw characters RFC 3261 does not allow, and '&' ''' '/' a JID refuses. */
	assert_int_equal(sip_to_jid("sip:a b@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_ESCAPE);
	assert_int_equal(sip_to_jid("sip:a<b@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_ESCAPE);
	assert_int_equal(sip_to_jid("sip:a&b@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:a'b@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	assert_int_equal(sip_to_jid("sip:a/b@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	/* Bad escapes. */
	assert_int_equal(sip_to_jid("sip:a%4@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_ESCAPE);
	assert_int_equal(sip_to_jid("sip:a%@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_ESCAPE);
	assert_int_equal(sip_to_jid("sip:a%zz@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_ESCAPE);
	/* A password. */
	assert_int_equal(sip_to_jid("sip:romeo:secret@contoso.test", j, sizeof(j)), XMPP_MAP_ERR_USER);
	/* Hosts: a port, an address, a single label, nothing. */
	assert_int_equal(sip_to_jid("sip:romeo@contoso.test:5061", j, sizeof(j)), XMPP_MAP_ERR_DOMAIN);
	assert_int_equal(sip_to_jid("sip:romeo@192.0.2.1", j, sizeof(j)), XMPP_MAP_ERR_DOMAIN);
	assert_int_equal(sip_to_jid("sip:romeo@[2001:db8::1]", j, sizeof(j)), XMPP_MAP_ERR_DOMAIN);
	assert_int_equal(sip_to_jid("sip:romeo@localhost", j, sizeof(j)), XMPP_MAP_ERR_DOMAIN);
	assert_int_equal(sip_to_jid("sip:romeo@", j, sizeof(j)), XMPP_MAP_ERR_DOMAIN);
	assert_int_equal(sip_to_jid("sip:romeo@;transport=tcp", j, sizeof(j)), XMPP_MAP_ERR_DOMAIN);
	/* A failure leaves an empty string behind. */
	assert_string_equal(j, "");
}

static void test_jid_refusals(void **state)
{
	char u[XMPP_MAP_URI_MAX];

	(void)state;
	assert_int_equal(jid_to_sip("fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_USER);
	assert_int_equal(jid_to_sip("fabrikam.test/res", u, sizeof(u)), XMPP_MAP_ERR_USER);
	assert_int_equal(jid_to_sip("@fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_USER);
	assert_int_equal(jid_to_sip("a b@fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_USER);
	assert_int_equal(jid_to_sip("a<b@fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_USER);
	assert_int_equal(jid_to_sip("a\"b@fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_USER);
	assert_int_equal(jid_to_sip("a:b@fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_USER);
	assert_int_equal(jid_to_sip("a\x01" "b@fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_USER);
	assert_int_equal(jid_to_sip("a\xc2\xa0" "b@fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_USER);
	assert_int_equal(jid_to_sip("\xff@fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_USER);
	assert_int_equal(jid_to_sip("\xed\xa0\x80@fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_USER);
	/* The second '@' is in the domain. */
	assert_int_equal(jid_to_sip("a@b@fabrikam.test", u, sizeof(u)), XMPP_MAP_ERR_DOMAIN);
	assert_int_equal(jid_to_sip("juliet@", u, sizeof(u)), XMPP_MAP_ERR_DOMAIN);
	assert_int_equal(jid_to_sip("juliet@fabrikam", u, sizeof(u)), XMPP_MAP_ERR_DOMAIN);
	assert_int_equal(jid_to_sip("juliet@[::1]", u, sizeof(u)), XMPP_MAP_ERR_DOMAIN);
	assert_int_equal(jid_to_sip("juliet@fabrikam.test/", u, sizeof(u)), XMPP_MAP_ERR_RESOURCE);
	assert_int_equal(jid_to_sip("juliet@fabrikam.test/\x01", u, sizeof(u)), XMPP_MAP_ERR_RESOURCE);
	assert_string_equal(u, "");
}

static void test_addr_lengths(void **state)
{
	char local[XMPP_MAP_PART_MAX + 2];
	char in[XMPP_MAP_URI_MAX + 16], u[XMPP_MAP_URI_MAX], j[XMPP_MAP_JID_MAX];

	(void)state;
	/* 1023 bytes of localpart are the most. */
	memset(local, 'a', XMPP_MAP_PART_MAX);
	local[XMPP_MAP_PART_MAX] = '\0';
	strcpy(in, "sip:");
	strcat(in, local);
	strcat(in, "@contoso.test");
	assert_int_equal(sip_to_jid(in, j, sizeof(j)), 0);
	assert_int_equal(strlen(j), XMPP_MAP_PART_MAX + 13);
	strcpy(in, local);
	strcat(in, "@contoso.test");
	assert_int_equal(jid_to_sip(in, u, sizeof(u)), 0);

	strcpy(local + XMPP_MAP_PART_MAX, "a");
	strcpy(in, "sip:");
	strcat(in, local);
	strcat(in, "@contoso.test");
	assert_int_equal(sip_to_jid(in, j, sizeof(j)), XMPP_MAP_ERR_USER);
	strcpy(in, local);
	strcat(in, "@contoso.test");
	assert_int_equal(jid_to_sip(in, u, sizeof(u)), XMPP_MAP_ERR_USER);

	/* The worst case fits XMPP_MAP_URI_MAX: every byte escaped. */
	memset(local, '#', XMPP_MAP_PART_MAX);
	local[XMPP_MAP_PART_MAX] = '\0';
	strcpy(in, local);
	strcat(in, "@contoso.test");
	assert_int_equal(jid_to_sip(in, u, sizeof(u)), 0);
	assert_int_equal(strlen(u), 4 + 3 * XMPP_MAP_PART_MAX + 13);

	/* Too small a buffer, by one, both ways. */
	assert_int_equal(sip_to_jid("sip:romeo@contoso.test", j, 18), XMPP_MAP_ERR_SPACE);
	assert_string_equal(j, "");
	assert_int_equal(sip_to_jid("sip:romeo@contoso.test", j, 19), 0);
	assert_int_equal(jid_to_sip("romeo@contoso.test", u, 22), XMPP_MAP_ERR_SPACE);
	assert_int_equal(jid_to_sip("romeo@contoso.test", u, 23), 0);
	assert_int_equal(jid_to_sip("romeo@contoso.test", u, 0), XMPP_MAP_ERR_SPACE);
}

/* ---- errors ---- */

static void test_xmpp_to_sip_status(void **state)
{
	(void)state;
	assert_int_equal(xmpp_map_sip_status("item-not-found"), 404);
	assert_int_equal(xmpp_map_sip_status("service-unavailable"), 503);
	assert_int_equal(xmpp_map_sip_status("forbidden"), 403);
	assert_int_equal(xmpp_map_sip_status("not-authorized"), 401);
	assert_int_equal(xmpp_map_sip_status("recipient-unavailable"), 480);
	assert_int_equal(xmpp_map_sip_status("remote-server-timeout"), 408);
	assert_int_equal(xmpp_map_sip_status("remote-server-not-found"), 404);
	assert_int_equal(xmpp_map_sip_status("feature-not-implemented"), 405);
	assert_int_equal(xmpp_map_sip_status("gone"), 301);
	assert_int_equal(xmpp_map_sip_status("redirect"), 302);
	assert_int_equal(xmpp_map_sip_status("unexpected-request"), 491);
	assert_int_equal(xmpp_map_sip_status("internal-server-error"), 500);
	/* Unknown conditions are undefined-condition: 400. */
	assert_int_equal(xmpp_map_sip_status("undefined-condition"), 400);
	assert_int_equal(xmpp_map_sip_status("no-such-condition"), 400);
	assert_int_equal(xmpp_map_sip_status(""), 400);
	assert_int_equal(xmpp_map_sip_status(NULL), 400);

	assert_string_equal(xmpp_map_condition_type("not-authorized"), "auth");
	assert_string_equal(xmpp_map_condition_type("bad-request"), "modify");
	assert_string_equal(xmpp_map_condition_type("recipient-unavailable"), "wait");
	assert_string_equal(xmpp_map_condition_type("service-unavailable"), "cancel");
	assert_string_equal(xmpp_map_condition_type("nonsense"), "cancel");
}

static void test_sip_to_condition(void **state)
{
	(void)state;
	assert_string_equal(xmpp_map_condition(404), "item-not-found");
	assert_string_equal(xmpp_map_condition(403), "forbidden");
	assert_string_equal(xmpp_map_condition(401), "not-authorized");
	assert_string_equal(xmpp_map_condition(480), "recipient-unavailable");
	assert_string_equal(xmpp_map_condition(486), "recipient-unavailable");
	assert_string_equal(xmpp_map_condition(408), "remote-server-timeout");
	assert_string_equal(xmpp_map_condition(491), "unexpected-request");
	assert_string_equal(xmpp_map_condition(503), "service-unavailable");
	assert_string_equal(xmpp_map_condition(504), "remote-server-timeout");
	assert_string_equal(xmpp_map_condition(301), "gone");
	assert_string_equal(xmpp_map_condition(302), "redirect");
	assert_string_equal(xmpp_map_condition(603), "service-unavailable");
	assert_string_equal(xmpp_map_condition(604), "item-not-found");
	/* Unlisted codes take their class's x00 (RFC 3261 8.1.3.2). */
	assert_string_equal(xmpp_map_condition(499), "bad-request");
	assert_string_equal(xmpp_map_condition(422), "bad-request");
	assert_string_equal(xmpp_map_condition(599), "internal-server-error");
	assert_string_equal(xmpp_map_condition(699), "service-unavailable");
	assert_string_equal(xmpp_map_condition(399), "redirect");
	/* Not errors. */
	assert_null(xmpp_map_condition(0));
	assert_null(xmpp_map_condition(100));
	assert_null(xmpp_map_condition(200));
	assert_null(xmpp_map_condition(299));
	assert_null(xmpp_map_condition(700));

	/* Every condition the SIP table gives is an RFC 6120 8.3.3 condition. */
	static const char *const known[] = {
		"bad-request", "conflict", "feature-not-implemented", "forbidden", "gone",
		"internal-server-error", "item-not-found", "jid-malformed", "not-acceptable",
		"not-allowed", "not-authorized", "policy-violation", "recipient-unavailable",
		"redirect", "registration-required", "remote-server-not-found",
		"remote-server-timeout", "resource-constraint", "service-unavailable",
		"subscription-required", "undefined-condition", "unexpected-request",
	};
	for (unsigned s = 300; s < 700; s++) {
		const char *c = xmpp_map_condition(s);
		size_t i = 0;
		assert_non_null(c);
		while (i < sizeof(known) / sizeof(known[0]) && strcmp(known[i], c) != 0)
			i++;
		assert_true(i < sizeof(known) / sizeof(known[0]));
		/* and maps back to an error response */
		unsigned back = xmpp_map_sip_status(c);
		assert_true(back >= 300 && back < 700);
	}
}

static void test_err_status(void **state)
{
	(void)state;
	assert_int_equal(xmpp_map_err_sip_status(XMPP_MAP_OK), 200);
	assert_int_equal(xmpp_map_err_sip_status(XMPP_MAP_ERR_TYPE), 415);
	assert_int_equal(xmpp_map_err_sip_status(XMPP_MAP_ERR_CHAR), 415);
	assert_int_equal(xmpp_map_err_sip_status(XMPP_MAP_ERR_NOMEM), 500);
	assert_int_equal(xmpp_map_err_sip_status(XMPP_MAP_ERR_USER), 404);
	assert_int_equal(xmpp_map_err_sip_status(XMPP_MAP_ERR_SCHEME), 400);
	for (int e = 0; e >= XMPP_MAP_ERR_NOMEM; e--)
		assert_string_not_equal(xmpp_map_strerror(e), "unknown error");
	assert_string_equal(xmpp_map_strerror(XMPP_MAP_ERR_NOMEM - 1), "unknown error");
	assert_string_equal(xmpp_map_strerror(1), "unknown error");
}

/* ---- messages, SIP to XMPP ---- */

static struct xmpp_map_sip_in sip_in(const char *ct, const char *body)
{
	return (struct xmpp_map_sip_in){
		.from = "sip:romeo@contoso.test",
		.to = "sip:juliet@fabrikam.test",
		.content_type = ct,
		.body = body,
		.body_len = body ? strlen(body) : 0,
		.id = "a84b4c76e66710@pc33.contoso.test",
	};
}

static void test_sip_message_to_xmpp(void **state)
{
	struct xmpp_map_sip_in in = sip_in("text/plain", "Wherefore <&> \"art\" 'thou'?\r\n");
	struct xmpp_xml_elem *m = NULL, *back;
	const char *text;
	size_t len;
	char *s;

	(void)state;
	assert_int_equal(xmpp_map_sip_to_message(&in, &m), 0);
	assert_non_null(m);
	s = serialize(m);
	assert_string_equal(s,
		"<message type='chat' from='romeo@contoso.test' to='juliet@fabrikam.test' "
		"id='a84b4c76e66710@pc33.contoso.test'><body>Wherefore &lt;&amp;&gt; &quot;art&quot; "
		"&apos;thou&apos;?&#13;\n</body></message>");

	/* What a peer parses is what SIP sent, byte for byte. */
	back = parse(s);
	text = xmpp_xml_text(xmpp_xml_child(back, NULL, "body", XMPP_XML_NS_SERVER), &len);
	assert_int_equal(len, in.body_len);
	assert_memory_equal(text, in.body, len);
	assert_true(xmpp_xml_equal(m, back));
	free(s); s = NULL;
	xmpp_xml_free(back); back = NULL;
	xmpp_xml_free(m); m = NULL;
}

static void test_sip_message_content_types(void **state)
{
	static const char *const good[] = {
		"text/plain", "TEXT/Plain", "text/plain;charset=UTF-8", "text/plain; charset=utf-8",
		"text/plain ; charset = \"utf-8\"", " text / plain ;format=flowed;charset=UTF-8 ",
		"text/plain;x=\"a;b\\\"c\";charset=utf-8",
	};
	static const char *const bad[] = {
		"text/html", "text/plainx", "text/plain;charset=iso-8859-1", "text/plain;charset=utf-16",
		"text/plain;charset=\"utf-8", "text/plain;charset", "text/plain;=x", "text/plain x",
		"application/im-iscomposing+xml", "message/cpim", "", "text",
	};
	struct xmpp_xml_elem *m = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct xmpp_map_sip_in in = sip_in(good[i], "hi");
		assert_int_equal(xmpp_map_sip_to_message(&in, &m), 0);
		xmpp_xml_free(m); m = NULL;
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct xmpp_map_sip_in in = sip_in(bad[i], "hi");
		assert_int_equal(xmpp_map_sip_to_message(&in, &m), XMPP_MAP_ERR_TYPE);
		assert_null(m);
	}
	struct xmpp_map_sip_in in = sip_in(NULL, "hi");
	assert_int_equal(xmpp_map_sip_to_message(&in, &m), XMPP_MAP_ERR_TYPE);
	assert_int_equal(xmpp_map_err_sip_status(XMPP_MAP_ERR_TYPE), 415);
	assert_null(m);
}

static void test_sip_message_utf8(void **state)
{
	/* Two, three and four byte sequences, and the edges of XML's ranges. */
	static const char *const good[] = {
		"caf\xc3\xa9", "\xe2\x82\xac 5", "\xf0\x9f\x98\x80", "\xef\xbf\xbd", "\xed\x9f\xbf",
		"\xee\x80\x80", "\xf4\x8f\xbf\xbd", "tab\there\nline",
	};
	static const char *const bad[] = {
		"\xc3", "\xc3(", "\xc0\xaf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
		"\xf8\x88\x80\x80\x80", "\xff", "\x80", "bell\x07", "esc\x1b", "\xef\xbf\xbe",
		"\xef\xbf\xbf", "\xe2\x82",
	};
	struct xmpp_xml_elem *m = NULL;

	(void)state;
	for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
		struct xmpp_map_sip_in in = sip_in("text/plain;charset=UTF-8", good[i]);
		assert_int_equal(xmpp_map_sip_to_message(&in, &m), 0);
		char *s = serialize(m); /* the serializer agrees */
		free(s); s = NULL;
		xmpp_xml_free(m); m = NULL;
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct xmpp_map_sip_in in = sip_in("text/plain;charset=UTF-8", bad[i]);
		assert_int_equal(xmpp_map_sip_to_message(&in, &m), XMPP_MAP_ERR_CHAR);
		assert_null(m);
	}
	/* A NUL inside the body. */
	struct xmpp_map_sip_in in = sip_in("text/plain", "a");
	in.body = "a\0b";
	in.body_len = 3;
	assert_int_equal(xmpp_map_sip_to_message(&in, &m), XMPP_MAP_ERR_CHAR);
	assert_int_equal(xmpp_map_err_sip_status(XMPP_MAP_ERR_CHAR), 415);
}

static void test_sip_message_refusals(void **state)
{
	struct xmpp_xml_elem *m = NULL;
	struct xmpp_map_sip_in in;

	(void)state;
	in = sip_in("text/plain", "hi");
	in.from = "tel:+14255550100";
	assert_int_equal(xmpp_map_sip_to_message(&in, &m), XMPP_MAP_ERR_SCHEME);
	in = sip_in("text/plain", "hi");
	in.to = "sip:a%40b@fabrikam.test";
	assert_int_equal(xmpp_map_sip_to_message(&in, &m), XMPP_MAP_ERR_USER);
	in = sip_in("text/plain", "hi");
	in.to = NULL;
	assert_int_equal(xmpp_map_sip_to_message(&in, &m), XMPP_MAP_ERR_SCHEME);
	assert_null(m);

	/* An empty body and no id: an empty <body/>, no id attribute. */
	in = sip_in("text/plain", "");
	in.id = NULL;
	in.from = "sip:romeo@contoso.test;tag=x";
	assert_int_equal(xmpp_map_sip_to_message(&in, &m), 0);
	char *s = serialize(m);
	assert_string_equal(s, "<message type='chat' from='romeo@contoso.test' "
	                       "to='juliet@fabrikam.test'><body/></message>");
	free(s); s = NULL;
	xmpp_xml_free(m); m = NULL;
}

/* ---- messages, XMPP to SIP ---- */

static void test_xmpp_message_to_sip(void **state)
{
	struct xmpp_xml_elem *m = parse(
		"<message from='juliet@fabrikam.test/balcony' id='ktx72v49' to='romeo@contoso.test' "
		"type='chat' xml:lang='en'><body>Art thou not Romeo, &amp; a Montague? &lt;&gt;"
		"&quot;&apos; caf\xc3\xa9</body>"
		"<thread>e0ffe42b28561960</thread></message>");
	struct xmpp_map_sip_im im;
	const char *cond = "unset";

	(void)state;
	assert_int_equal(xmpp_map_message_to_sip(m, &im, &cond), 0);
	assert_null(cond);
	assert_string_equal(im.ruri, "sip:romeo@contoso.test");
	assert_string_equal(im.to, "sip:romeo@contoso.test");
	assert_string_equal(im.from, "sip:juliet@fabrikam.test");
	assert_string_equal(im.content_type, "text/plain;charset=UTF-8");
	assert_string_equal(im.body, "Art thou not Romeo, & a Montague? <>\"' caf\xc3\xa9");
	assert_int_equal(im.body_len, strlen(im.body));
	assert_string_equal(im.id, "ktx72v49");
	assert_string_equal(im.thread, "e0ffe42b28561960");

	/* And back again: the same body, the same bare addresses. */
	struct xmpp_map_sip_in in = {
		.from = im.from, .to = im.to, .content_type = im.content_type,
		.body = im.body, .body_len = im.body_len, .id = im.id,
	};
	struct xmpp_xml_elem *m2 = NULL;
	assert_int_equal(xmpp_map_sip_to_message(&in, &m2), 0);
	assert_string_equal(xmpp_xml_attr(m2, "from"), "juliet@fabrikam.test");
	assert_string_equal(xmpp_xml_attr(m2, "to"), "romeo@contoso.test");
	assert_string_equal(xmpp_xml_text(xmpp_xml_child(m2, NULL, "body", NULL), NULL),
	                    "Art thou not Romeo, & a Montague? <>\"' caf\xc3\xa9");
	xmpp_xml_free(m2); m2 = NULL;
	xmpp_xml_free(m); m = NULL;
}

static void test_xmpp_message_bodies(void **state)
{
	struct xmpp_map_sip_im im;
	struct xmpp_xml_elem *m;

	(void)state;
	/* Type normal, and absent (normal): carried. The default-language body wins. */
	m = parse("<message from='a@fabrikam.test' to='b@contoso.test' type='normal'>"
	          "<body xml:lang='de'>Hallo</body><body>Hello</body></message>");
	assert_int_equal(xmpp_map_message_to_sip(m, &im, NULL), 0);
	assert_string_equal(im.body, "Hello");
	assert_null(im.id);
	assert_null(im.thread);
	xmpp_xml_free(m); m = NULL;

	/* Only bodies with a language: the first. */
	m = parse("<message from='a@fabrikam.test' to='b@contoso.test'>"
	          "<body xml:lang='de'>Hallo</body><body xml:lang='fr'>Salut</body></message>");
	assert_int_equal(xmpp_map_message_to_sip(m, &im, NULL), 0);
	assert_string_equal(im.body, "Hallo");
	xmpp_xml_free(m); m = NULL;

	/* An empty body is an empty SIP body. */
	m = parse("<message from='a@fabrikam.test' to='b@contoso.test' type='chat'><body/></message>");
	assert_int_equal(xmpp_map_message_to_sip(m, &im, NULL), 0);
	assert_int_equal(im.body_len, 0);
	assert_string_equal(im.body, "");
	xmpp_xml_free(m); m = NULL;

	/* A body in another namespace is not a body. */
	m = parse("<message from='a@fabrikam.test' to='b@contoso.test' type='chat'>"
	          "<body xmlns='urn:example'>x</body></message>");
	assert_int_equal(xmpp_map_message_to_sip(m, &im, NULL), XMPP_MAP_ERR_NO_BODY);
	xmpp_xml_free(m); m = NULL;
}

/* One refusal: the stanza, the error and the condition to answer. */
static void refused(const char *stanza, int err, const char *cond)
{
	struct xmpp_xml_elem *m = parse(stanza);
	struct xmpp_map_sip_im im;
	const char *c = "unset";

	assert_int_equal(xmpp_map_message_to_sip(m, &im, &c), err);
	if (cond)
		assert_string_equal(c, cond);
	else
		assert_null(c);
	assert_string_equal(im.from, "");
	assert_null(im.body);
	xmpp_xml_free(m); m = NULL;
}

static void test_xmpp_message_refusals(void **state)
{
	(void)state;
	refused("<message from='a@fabrikam.test' to='b@contoso.test' type='groupchat'>"
	        "<body>hi</body></message>", XMPP_MAP_ERR_MSG_TYPE, "service-unavailable");
	refused("<message from='a@fabrikam.test' to='b@contoso.test' type='headline'>"
	        "<body>hi</body></message>", XMPP_MAP_ERR_MSG_TYPE, NULL);
	refused("<message from='a@fabrikam.test' to='b@contoso.test' type='error'>"
	        "<body>hi</body><error type='cancel'><item-not-found "
	        "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>",
	        XMPP_MAP_ERR_MSG_TYPE, NULL);
	refused("<message from='a@fabrikam.test' to='b@contoso.test' type='bogus'>"
	        "<body>hi</body></message>", XMPP_MAP_ERR_MSG_TYPE, NULL);
	/* Chat states: no body, dropped without an answer. */
	refused("<message from='a@fabrikam.test' to='b@contoso.test' type='chat'>"
	        "<composing xmlns='http://jabber.org/protocol/chatstates'/></message>",
	        XMPP_MAP_ERR_NO_BODY, NULL);
	/* Addresses. */
	refused("<message to='b@contoso.test' type='chat'><body>hi</body></message>",
	        XMPP_MAP_ERR_STANZA, "jid-malformed");
	refused("<message from='a@fabrikam.test' type='chat'><body>hi</body></message>",
	        XMPP_MAP_ERR_STANZA, "jid-malformed");
	refused("<message from='fabrikam.test' to='b@contoso.test' type='chat'><body>hi</body></message>",
	        XMPP_MAP_ERR_STANZA, "jid-malformed");
	refused("<message from='a@fabrikam.test' to='b c@contoso.test' type='chat'><body>hi</body></message>",
	        XMPP_MAP_ERR_STANZA, "jid-malformed");
	refused("<message from='a@fabrikam.test' to='b@contoso.test:5269' type='chat'><body>hi</body></message>",
	        XMPP_MAP_ERR_STANZA, "jid-malformed");
	/* Not a message. */
	refused("<presence from='a@fabrikam.test' to='b@contoso.test'/>", XMPP_MAP_ERR_STANZA,
	        "bad-request");
}

static void test_xmpp_message_built(void **state)
{
	struct xmpp_map_sip_im im;
	const char *c = NULL;
	struct xmpp_xml_elem *m;

	(void)state;
	/* A tree built by hand may hold what no parser gives: refused. */
	m = xmpp_xml_new("message", XMPP_XML_NS_CLIENT);
	assert_non_null(m);
	assert_int_equal(xmpp_xml_set_attr(m, "from", NULL, "a@fabrikam.test"), 0);
	assert_int_equal(xmpp_xml_set_attr(m, "to", NULL, "b@contoso.test"), 0);
	struct xmpp_xml_elem *b = xmpp_xml_add(m, "body", NULL);
	assert_non_null(b);
	assert_int_equal(xmpp_xml_add_text(b, "bad\x01", 4), 0);
	assert_int_equal(xmpp_map_message_to_sip(m, &im, &c), XMPP_MAP_ERR_CHAR);
	assert_string_equal(c, "not-acceptable");
	xmpp_xml_free(m); m = NULL;

	/* jabber:client is fine; another namespace is not a stanza. */
	m = xmpp_xml_new("message", XMPP_XML_NS_CLIENT);
	assert_non_null(m);
	assert_int_equal(xmpp_xml_set_attr(m, "from", NULL, "a@fabrikam.test/r"), 0);
	assert_int_equal(xmpp_xml_set_attr(m, "to", NULL, "b@contoso.test"), 0);
	b = xmpp_xml_add(m, "body", NULL);
	assert_non_null(b);
	assert_int_equal(xmpp_xml_add_text(b, "one ", 4), 0);
	assert_non_null(xmpp_xml_add(b, "i", NULL));
	assert_int_equal(xmpp_xml_add_text(b, "two", 3), 0);
	assert_int_equal(xmpp_map_message_to_sip(m, &im, &c), 0);
	assert_string_equal(im.body, "one two");
	assert_string_equal(im.from, "sip:a@fabrikam.test");
	xmpp_xml_free(m); m = NULL;

	m = xmpp_xml_new("message", "urn:example");
	assert_non_null(m);
	assert_int_equal(xmpp_map_message_to_sip(m, &im, &c), XMPP_MAP_ERR_STANZA);
	assert_string_equal(c, "bad-request");
	xmpp_xml_free(m); m = NULL;
	assert_int_equal(xmpp_map_message_to_sip(NULL, &im, &c), XMPP_MAP_ERR_STANZA);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_round_trips),
		cmocka_unit_test(test_jid_to_sip),
		cmocka_unit_test(test_sip_refusals),
		cmocka_unit_test(test_jid_refusals),
		cmocka_unit_test(test_addr_lengths),
		cmocka_unit_test(test_xmpp_to_sip_status),
		cmocka_unit_test(test_sip_to_condition),
		cmocka_unit_test(test_err_status),
		cmocka_unit_test(test_sip_message_to_xmpp),
		cmocka_unit_test(test_sip_message_content_types),
		cmocka_unit_test(test_sip_message_utf8),
		cmocka_unit_test(test_sip_message_refusals),
		cmocka_unit_test(test_xmpp_message_to_sip),
		cmocka_unit_test(test_xmpp_message_bodies),
		cmocka_unit_test(test_xmpp_message_refusals),
		cmocka_unit_test(test_xmpp_message_built),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
