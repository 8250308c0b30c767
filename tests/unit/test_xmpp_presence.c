/* Unit tests for edge/xmpp_presence.c: PIDF <-> XMPP presence and subscription events. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmpp_presence.h"
#include "xmpp_xml.h"

/* ---- helpers ---- */

#define ALICE "sip:alice@contoso.com"
#define BOB   "sip:bob@example.org"

/*
 * Maps a heap copy of doc without its NUL, so that ASan reports any read
 * past len.
 */
static int from_pidf(const char *doc, struct xmpp_xml_elem **out)
{
	size_t len = strlen(doc);
	char *p = malloc(len ? len : 1);
	int rc;

	assert_non_null(p);
	memcpy(p, doc, len);
	rc = xmpp_presence_from_pidf(ALICE, BOB, p, len, out);
	free(p); p = NULL;
	return rc;
}

/* The text of el's first child called name, or NULL when there is none. */
static const char *child_text(const struct xmpp_xml_elem *el, const char *name)
{
	const struct xmpp_xml_elem *c = xmpp_xml_child(el, NULL, name, XMPP_XML_NS_SERVER);

	return c ? xmpp_xml_text(c, NULL) : NULL;
}

/* A <presence/> from a Prosody user to a Lync user, with optional parts. */
static struct xmpp_xml_elem *stanza(const char *type, const char *show, const char *status)
{
	struct xmpp_xml_elem *p = xmpp_xml_new("presence", XMPP_XML_NS_SERVER), *el;

	assert_non_null(p);
	assert_int_equal(xmpp_xml_set_attr(p, "from", NULL, "juliet@capulet.example/balcony"), 0);
	assert_int_equal(xmpp_xml_set_attr(p, "to", NULL, "romeo@montague.example"), 0);
	if (type)
		assert_int_equal(xmpp_xml_set_attr(p, "type", NULL, type), 0);
	if (show) {
		assert_non_null(el = xmpp_xml_add(p, "show", NULL));
		assert_int_equal(xmpp_xml_add_text(el, show, strlen(show)), 0);
	}
	if (status) {
		assert_non_null(el = xmpp_xml_add(p, "status", NULL));
		assert_int_equal(xmpp_xml_add_text(el, status, strlen(status)), 0);
	}
	return p;
}

/* The PIDF document of out as a NUL-terminated string (a static copy). */
static const char *doc_str(const struct xmpp_presence_pidf *out)
{
	static char s[8192];

	assert_true(out->doc.len < sizeof(s));
	memcpy(s, out->doc.data, out->doc.len);
	s[out->doc.len] = '\0';
	return s;
}

/* ---- PIDF -> XMPP ---- */

/* What Lync Server / OCS sends: several namespaces, a tuple, a person with
 * RPID activities and extensions the gateway must skip. */
static const char lync_pidf[] =
	"<?xml version=\"1.0\" encoding=\"utf-8\"?>\r\n"
	"<presence xmlns=\"urn:ietf:params:xml:ns:pidf\"\r\n"
	"  xmlns:ep=\"urn:ietf:params:xml:ns:pidf:status:rpid\"\r\n"
	"  xmlns:dm=\"urn:ietf:params:xml:ns:pidf:data-model\"\r\n"
	"  xmlns:rpid=\"urn:ietf:params:xml:ns:pidf:rpid\"\r\n"
	"  xmlns:ci=\"urn:ietf:params:xml:ns:pidf:cipid\"\r\n"
	"  xmlns:lync=\"http://schemas.microsoft.com/2006/09/sip/state\"\r\n"
	"  entity=\"sip:alice@contoso.com\">\r\n"
	"  <tuple id=\"sip:alice@contoso.com;gruu;opaque=app:conf\">\r\n"
	"    <status><basic>open</basic></status>\r\n"
	"    <contact priority=\"0.8\">sip:alice@contoso.com</contact>\r\n"
	"    <note xml:lang=\"en\">In a meeting &amp; on &lt;mute&gt;</note>\r\n"
	"    <lync:state avail=\"6500\"><lync:activity token=\"in-a-meeting\"/></lync:state>\r\n"
	"  </tuple>\r\n"
	"  <tuple id=\"second\"><status><basic>closed</basic></status></tuple>\r\n"
	"  <dm:person id=\"p7\">\r\n"
	"    <rpid:activities><rpid:meeting/><rpid:away/></rpid:activities>\r\n"
	"    <ci:display-name>Alice Example</ci:display-name>\r\n"
	"    <dm:note>person note, not used</dm:note>\r\n"
	"  </dm:person>\r\n"
	"</presence>\r\n";

static void test_pidf_lync(void **state)
{
	struct xmpp_xml_elem *p;

	(void)state;
	assert_int_equal(from_pidf(lync_pidf, &p), 0);
	assert_string_equal(p->name, "presence");
	assert_string_equal(p->ns, XMPP_XML_NS_SERVER);
	assert_string_equal(xmpp_xml_attr(p, "from"), "alice@contoso.com");
	assert_string_equal(xmpp_xml_attr(p, "to"), "bob@example.org");
	assert_null(xmpp_xml_attr(p, "type"));
	assert_string_equal(child_text(p, "show"), "dnd");
	assert_string_equal(child_text(p, "status"), "In a meeting & on <mute>");
	xmpp_xml_free(p); p = NULL;
}

static void test_pidf_minimal(void **state)
{
	struct xmpp_xml_elem *p;

	(void)state;
	assert_int_equal(from_pidf("<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='pres:a@b'>"
	                           "<tuple id='t'><status><basic> open\n</basic></status></tuple>"
	                           "</presence>", &p), 0);
	assert_null(xmpp_xml_attr(p, "type"));
	assert_null(child_text(p, "show"));
	assert_null(child_text(p, "status"));
	assert_null(p->children);
	xmpp_xml_free(p); p = NULL;

	/* Direct text only, joined around a child, as xmpp_xml_text() reads it. */
	assert_int_equal(from_pidf("<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple id='t'>"
	                           "<status><basic>clo<x>open</x>sed</basic></status></tuple>"
	                           "</presence>", &p), 0);
	assert_string_equal(xmpp_xml_attr(p, "type"), "unavailable");
	xmpp_xml_free(p); p = NULL;
}

static void test_pidf_unavailable(void **state)
{
	struct xmpp_xml_elem *p;

	(void)state;
	/* Closed: no show even with an activity; the document-level note is taken. */
	assert_int_equal(from_pidf("<presence xmlns='urn:ietf:params:xml:ns:pidf'"
	                           " xmlns:rpid='urn:ietf:params:xml:ns:pidf:rpid' entity='sip:a@b'>"
	                           "<tuple id='t'><status><basic>closed</basic>"
	                           "<rpid:activities><rpid:busy/></rpid:activities></status></tuple>"
	                           "<note>Gone home</note></presence>", &p), 0);
	assert_string_equal(xmpp_xml_attr(p, "type"), "unavailable");
	assert_null(child_text(p, "show"));
	assert_string_equal(child_text(p, "status"), "Gone home");
	xmpp_xml_free(p); p = NULL;
}

static void test_pidf_shows(void **state)
{
	static const struct {
		const char *activity, *show;
	} rows[] = {
		{ "away", "away" }, { "meal", "away" }, { "in-transit", "away" },
		{ "busy", "dnd" }, { "on-the-phone", "dnd" }, { "meeting", "dnd" },
		{ "vacation", "xa" }, { "sleeping", "xa" }, { "permanent-absence", "xa" },
		{ "working", NULL }, { "unknown", NULL },
	};
	char doc[1024];
	struct xmpp_xml_elem *p;

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		snprintf(doc, sizeof(doc),
		         "<presence xmlns='urn:ietf:params:xml:ns:pidf'"
		         " xmlns:dm='urn:ietf:params:xml:ns:pidf:data-model'"
		         " xmlns:r='urn:ietf:params:xml:ns:pidf:rpid' entity='sip:a@b'>"
		         "<tuple id='t'><status><basic>open</basic></status></tuple>"
		         "<dm:person id='p'><r:activities><r:%s/></r:activities>"
		         "<dm:note>n %zu</dm:note></dm:person></presence>", rows[i].activity, i);
		assert_int_equal(from_pidf(doc, &p), 0);
		if (rows[i].show)
			assert_string_equal(child_text(p, "show"), rows[i].show);
		else
			assert_null(child_text(p, "show"));
		/* With no tuple or document note, the person's note is used. */
		assert_non_null(child_text(p, "status"));
		assert_int_equal(strncmp(child_text(p, "status"), "n ", 2), 0);
		xmpp_xml_free(p); p = NULL;
	}
}

static void test_pidf_refusals(void **state)
{
	static const struct {
		const char *doc;
		int err;
	} rows[] = {
		{ "<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple id='t'>", XMPP_PRESENCE_ERR_XML },
		{ "<presence xmlns='urn:ietf:params:xml:ns:pidf'></presence><x/>", XMPP_PRESENCE_ERR_XML },
		{ "<presence xmlns='urn:ietf:params:xml:ns:pidf'>&foo;</presence>", XMPP_PRESENCE_ERR_XML },
		{ "<!DOCTYPE presence [<!ENTITY a 'aaaa'><!ENTITY b '&a;&a;&a;'>]>"
		  "<presence xmlns='urn:ietf:params:xml:ns:pidf'>&b;</presence>", XMPP_PRESENCE_ERR_DTD },
		{ "<!DOCTYPE presence SYSTEM 'http://example.org/pidf.dtd'>"
		  "<presence xmlns='urn:ietf:params:xml:ns:pidf'/>", XMPP_PRESENCE_ERR_DTD },
		{ "<presence xmlns='urn:ietf:params:xml:ns:xpidf'><tuple id='t'><status>"
		  "<basic>open</basic></status></tuple></presence>", XMPP_PRESENCE_ERR_PIDF },
		{ "<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:a@b'/>", XMPP_PRESENCE_ERR_BASIC },
		{ "<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple id='t'><status/>"
		  "</tuple></presence>", XMPP_PRESENCE_ERR_BASIC },
		{ "<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple id='t'><status>"
		  "<basic>online</basic></status></tuple></presence>", XMPP_PRESENCE_ERR_BASIC },
		/* Basic outside the first tuple's status does not count. */
		{ "<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple id='t'/><tuple id='u'>"
		  "<status><basic>open</basic></status></tuple></presence>", XMPP_PRESENCE_ERR_BASIC },
		{ "<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple id='t'><status>"
		  "<basic>op<x/>n</basic></status></tuple></presence>", XMPP_PRESENCE_ERR_BASIC },
		{ "<presence xmlns='urn:ietf:params:xml:ns:pidf'><tuple id='t'><status>"
		  "<basic>\xff</basic></status></tuple></presence>", XMPP_PRESENCE_ERR_XML },
	};
	struct xmpp_xml_elem *p = (struct xmpp_xml_elem *)1;
	char *big, *deep;
	size_t n;

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		assert_int_equal(from_pidf(rows[i].doc, &p), rows[i].err);
		assert_null(p);
	}

	/* Too large: refused before parsing, however well-formed. */
	n = XMPP_PRESENCE_PIDF_MAX + 1;
	assert_non_null(big = malloc(n));
	memset(big, ' ', n);
	assert_int_equal(xmpp_presence_from_pidf(ALICE, BOB, big, n, &p), XMPP_PRESENCE_ERR_SIZE);
	free(big); big = NULL;
	assert_int_equal(xmpp_presence_from_pidf(ALICE, BOB, "", 0, &p), XMPP_PRESENCE_ERR_SIZE);

	/* Too deep. */
	assert_non_null(deep = calloc(1, 4096));
	strcpy(deep, "<presence xmlns='urn:ietf:params:xml:ns:pidf'>");
	for (int i = 0; i < 40; i++)
		strcat(deep, "<a>");
	for (int i = 0; i < 40; i++)
		strcat(deep, "</a>");
	strcat(deep, "</presence>");
	assert_int_equal(from_pidf(deep, &p), XMPP_PRESENCE_ERR_PIDF);
	free(deep); deep = NULL;

	/* Addresses. */
	assert_int_equal(xmpp_presence_from_pidf("tel:+1555", BOB, lync_pidf, strlen(lync_pidf), &p),
	                 XMPP_PRESENCE_ERR_ADDR);
	assert_int_equal(xmpp_presence_from_pidf(ALICE, NULL, lync_pidf, strlen(lync_pidf), &p),
	                 XMPP_PRESENCE_ERR_ADDR);
	assert_null(p);
}

/* ---- XMPP -> PIDF ---- */

static void test_xmpp_available(void **state)
{
	struct xmpp_xml_elem *p = stanza(NULL, NULL, NULL);
	struct xmpp_presence_pidf out;

	(void)state;
	assert_int_equal(xmpp_presence_to_pidf(p, &out), 0);
	assert_string_equal(out.from, "sip:juliet@capulet.example");
	assert_string_equal(out.to, "sip:romeo@montague.example");
	assert_string_equal(doc_str(&out),
		"<?xml version='1.0' encoding='UTF-8'?>\n"
		"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:juliet@capulet.example'>\n"
		"<tuple id='xmpp'><status><basic>open</basic></status></tuple>\n"
		"</presence>\n");
	xmpp_presence_pidf_free(&out);
	assert_null(out.doc.data);
	xmpp_xml_free(p); p = NULL;
}

/* Every show value XMPP -> PIDF, and the document back through the PIDF
 * parser. xa comes back as away: RPID's nearest activity. */
static void test_xmpp_shows(void **state)
{
	static const struct {
		const char *show, *activity, *back;
	} rows[] = {
		{ "away", "<rpid:away/>", "away" },
		{ "xa", "<rpid:away/>", "away" },
		{ "dnd", "<rpid:busy/>", "dnd" },
		{ "chat", NULL, NULL },
		{ "bogus", NULL, NULL },
	};
	struct xmpp_presence_pidf out;
	struct xmpp_xml_elem *p, *back;

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		p = stanza(NULL, rows[i].show, "Walking");
		assert_int_equal(xmpp_presence_to_pidf(p, &out), 0);
		if (rows[i].activity)
			assert_non_null(strstr(doc_str(&out), rows[i].activity));
		else
			assert_null(strstr(doc_str(&out), "activities"));
		assert_non_null(strstr(doc_str(&out), "<basic>open</basic></status><note>Walking</note>"));

		assert_int_equal(xmpp_presence_from_pidf(out.from, out.to, out.doc.data, out.doc.len,
		                                         &back), 0);
		assert_string_equal(xmpp_xml_attr(back, "from"), "juliet@capulet.example");
		assert_string_equal(xmpp_xml_attr(back, "to"), "romeo@montague.example");
		if (rows[i].back)
			assert_string_equal(child_text(back, "show"), rows[i].back);
		else
			assert_null(child_text(back, "show"));
		assert_string_equal(child_text(back, "status"), "Walking");
		xmpp_xml_free(back); back = NULL;
		xmpp_presence_pidf_free(&out);
		xmpp_xml_free(p); p = NULL;
	}
}

static void test_xmpp_unavailable(void **state)
{
	struct xmpp_xml_elem *p = stanza("unavailable", "dnd", "Logged out"), *back;
	struct xmpp_presence_pidf out;

	(void)state;
	assert_int_equal(xmpp_presence_to_pidf(p, &out), 0);
	assert_string_equal(doc_str(&out),
		"<?xml version='1.0' encoding='UTF-8'?>\n"
		"<presence xmlns='urn:ietf:params:xml:ns:pidf' entity='sip:juliet@capulet.example'>\n"
		"<tuple id='xmpp'><status><basic>closed</basic></status>"
		"<note>Logged out</note></tuple>\n"
		"</presence>\n");
	assert_int_equal(xmpp_presence_from_pidf(out.from, out.to, out.doc.data, out.doc.len,
	                                         &back), 0);
	assert_string_equal(xmpp_xml_attr(back, "type"), "unavailable");
	assert_null(child_text(back, "show"));
	assert_string_equal(child_text(back, "status"), "Logged out");
	xmpp_xml_free(back); back = NULL;
	xmpp_presence_pidf_free(&out);
	xmpp_xml_free(p); p = NULL;
}

static void test_xmpp_escaping(void **state)
{
	const char *note = "<b>Tom & \"Jerry\"</b>'s\r\nline\ttab";
	struct xmpp_xml_elem *p = stanza(NULL, "away", note), *back, *st;
	struct xmpp_presence_pidf out;

	(void)state;
	/* A second status, with xml:lang: the one without is taken. */
	assert_non_null(st = xmpp_xml_add(p, "status", NULL));
	assert_int_equal(xmpp_xml_set_attr(st, "lang", XMPP_XML_NS_XML, "fr"), 0);
	assert_int_equal(xmpp_xml_add_text(st, "non", 3), 0);

	assert_int_equal(xmpp_presence_to_pidf(p, &out), 0);
	assert_non_null(strstr(doc_str(&out),
		"<note>&lt;b&gt;Tom &amp; &quot;Jerry&quot;&lt;/b&gt;&apos;s&#13;\nline\ttab</note>"));
	assert_int_equal(xmpp_presence_from_pidf(out.from, out.to, out.doc.data, out.doc.len,
	                                         &back), 0);
	assert_string_equal(child_text(back, "status"), note);
	xmpp_xml_free(back); back = NULL;
	xmpp_presence_pidf_free(&out);
	xmpp_xml_free(p); p = NULL;
}

static void test_xmpp_refusals(void **state)
{
	static const char *const types[] = {
		"subscribe", "subscribed", "unsubscribe", "unsubscribed", "probe", "error", "x",
	};
	struct xmpp_presence_pidf out;
	struct xmpp_xml_elem *p;

	(void)state;
	for (size_t i = 0; i < sizeof(types) / sizeof(types[0]); i++) {
		p = stanza(types[i], NULL, NULL);
		assert_int_equal(xmpp_presence_to_pidf(p, &out), XMPP_PRESENCE_ERR_TYPE);
		assert_null(out.doc.data);
		xmpp_xml_free(p); p = NULL;
	}

	assert_non_null(p = xmpp_xml_new("message", XMPP_XML_NS_SERVER));
	assert_int_equal(xmpp_presence_to_pidf(p, &out), XMPP_PRESENCE_ERR_STANZA);
	xmpp_xml_free(p); p = NULL;
	assert_int_equal(xmpp_presence_to_pidf(NULL, &out), XMPP_PRESENCE_ERR_STANZA);

	p = stanza(NULL, NULL, NULL);
	assert_int_equal(xmpp_xml_set_attr(p, "from", NULL, "capulet.example"), 0);
	assert_int_equal(xmpp_presence_to_pidf(p, &out), XMPP_PRESENCE_ERR_ADDR);
	assert_string_equal(out.from, "");
	xmpp_xml_free(p); p = NULL;

	/* A built tree may hold what XML refuses: not passed on to SIP. */
	p = stanza(NULL, NULL, "bell\a");
	assert_int_equal(xmpp_presence_to_pidf(p, &out), XMPP_PRESENCE_ERR_CHAR);
	assert_null(out.doc.data);
	xmpp_xml_free(p); p = NULL;
	p = stanza(NULL, NULL, "bad \xc3(");
	assert_int_equal(xmpp_presence_to_pidf(p, &out), XMPP_PRESENCE_ERR_CHAR);
	xmpp_xml_free(p); p = NULL;

	assert_string_equal(xmpp_presence_strerror(XMPP_PRESENCE_ERR_NOMEM), "out of memory");
	assert_string_equal(xmpp_presence_strerror(-99), "unknown error");
}

/* ---- Subscriptions ---- */

static void test_sub_xmpp(void **state)
{
	static const struct {
		const char *type;
		enum xmpp_presence_sub ev;
	} rows[] = {
		{ "subscribe", XMPP_PRESENCE_SUB_SUBSCRIBE },
		{ "subscribed", XMPP_PRESENCE_SUB_ACCEPTED },
		{ "unsubscribe", XMPP_PRESENCE_SUB_UNSUBSCRIBE },
		{ "unsubscribed", XMPP_PRESENCE_SUB_TERMINATED },
		{ "unavailable", XMPP_PRESENCE_SUB_NONE },
		{ "probe", XMPP_PRESENCE_SUB_NONE },
		{ "Subscribe", XMPP_PRESENCE_SUB_NONE },
		{ NULL, XMPP_PRESENCE_SUB_NONE },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++) {
		assert_int_equal(xmpp_presence_sub_from_xmpp(rows[i].type), rows[i].ev);
		if (rows[i].ev != XMPP_PRESENCE_SUB_NONE)
			assert_string_equal(xmpp_presence_sub_to_xmpp(rows[i].ev), rows[i].type);
	}
	assert_null(xmpp_presence_sub_to_xmpp(XMPP_PRESENCE_SUB_NONE));
	assert_null(xmpp_presence_sub_to_xmpp((enum xmpp_presence_sub)42));
}

static void test_sub_sip(void **state)
{
	static const struct {
		const char *method;
		unsigned status;
		const char *event;
		long expires;
		const char *sub_state;
		enum xmpp_presence_sub ev;
	} rows[] = {
		{ "SUBSCRIBE", 0, "presence", 3600, NULL, XMPP_PRESENCE_SUB_SUBSCRIBE },
		{ "SUBSCRIBE", 0, " Presence ;id=7", -1, NULL, XMPP_PRESENCE_SUB_SUBSCRIBE },
		{ "SUBSCRIBE", 0, "presence", 0, NULL, XMPP_PRESENCE_SUB_UNSUBSCRIBE },
		{ "SUBSCRIBE", 0, "presence.winfo", 3600, NULL, XMPP_PRESENCE_SUB_NONE },
		{ "SUBSCRIBE", 0, "dialog", 3600, NULL, XMPP_PRESENCE_SUB_NONE },
		{ "SUBSCRIBE", 0, NULL, 3600, NULL, XMPP_PRESENCE_SUB_NONE },
		{ "SUBSCRIBE", 200, NULL, 3600, NULL, XMPP_PRESENCE_SUB_ACCEPTED },
		{ "SUBSCRIBE", 202, "presence", -1, NULL, XMPP_PRESENCE_SUB_ACCEPTED },
		{ "SUBSCRIBE", 200, NULL, 0, NULL, XMPP_PRESENCE_SUB_NONE },
		{ "SUBSCRIBE", 100, NULL, -1, NULL, XMPP_PRESENCE_SUB_NONE },
		{ "SUBSCRIBE", 403, NULL, -1, NULL, XMPP_PRESENCE_SUB_TERMINATED },
		{ "SUBSCRIBE", 603, NULL, -1, NULL, XMPP_PRESENCE_SUB_TERMINATED },
		{ "NOTIFY", 0, "presence", -1, "terminated;reason=rejected", XMPP_PRESENCE_SUB_TERMINATED },
		{ "NOTIFY", 0, "presence", -1, "Terminated", XMPP_PRESENCE_SUB_TERMINATED },
		{ "NOTIFY", 0, "presence", -1, "active;expires=3599", XMPP_PRESENCE_SUB_NONE },
		{ "NOTIFY", 0, "presence", -1, "pending", XMPP_PRESENCE_SUB_NONE },
		{ "NOTIFY", 0, "presence", -1, "terminatedx", XMPP_PRESENCE_SUB_NONE },
		{ "NOTIFY", 0, "dialog", -1, "terminated", XMPP_PRESENCE_SUB_NONE },
		{ "NOTIFY", 200, "presence", -1, "terminated", XMPP_PRESENCE_SUB_NONE },
		{ "subscribe", 0, "presence", 3600, NULL, XMPP_PRESENCE_SUB_NONE },
		{ "MESSAGE", 0, NULL, -1, NULL, XMPP_PRESENCE_SUB_NONE },
		{ NULL, 0, "presence", 3600, NULL, XMPP_PRESENCE_SUB_NONE },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(rows) / sizeof(rows[0]); i++)
		assert_int_equal(xmpp_presence_sub_from_sip(rows[i].method, rows[i].status,
		                                            rows[i].event, rows[i].expires,
		                                            rows[i].sub_state), rows[i].ev);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pidf_lync),
		cmocka_unit_test(test_pidf_minimal),
		cmocka_unit_test(test_pidf_unavailable),
		cmocka_unit_test(test_pidf_shows),
		cmocka_unit_test(test_pidf_refusals),
		cmocka_unit_test(test_xmpp_available),
		cmocka_unit_test(test_xmpp_shows),
		cmocka_unit_test(test_xmpp_unavailable),
		cmocka_unit_test(test_xmpp_escaping),
		cmocka_unit_test(test_xmpp_refusals),
		cmocka_unit_test(test_sub_xmpp),
		cmocka_unit_test(test_sub_sip),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
