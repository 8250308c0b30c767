/* Unit tests for edge/xmpp_xml.c: the XMPP stream parser, its refusals, trees, the serializer. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xmpp_xml.h"

/* The opening of an s2s stream as Prosody 0.12 sends it. */
#define PROSODY_HEADER "<?xml version='1.0'?>" STREAM_OPEN
#define STREAM_OPEN \
	"<stream:stream xmlns='jabber:server' " \
	"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' " \
	"to='contoso.test' from='fabrikam.test' version='1.0' xml:lang='en'>"

#define FEATURES \
	"<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>" \
	"<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>"

#define MESSAGE \
	"<message from='juliet@fabrikam.test/balcony' id='ktx72v49' to='romeo@contoso.test' " \
	"type='chat' xml:lang='en'><body>Art thou not Romeo, &amp; a Montague?</body>" \
	"<thread>e0ffe42b28561960c6b12b944a092794b9683a38</thread></message>"

#define PRESENCE \
	"<presence from='juliet@fabrikam.test/balcony' to='romeo@contoso.test'>" \
	"<show>away</show><status>be right back</status><priority>0</priority></presence>"

#define IQ \
	"<iq from='fabrikam.test' id='ping1' to='contoso.test' type='get'>" \
	"<ping xmlns='urn:xmpp:ping'/></iq>"

#define DB_RESULT \
	"<db:result from='fabrikam.test' to='contoso.test'>" \
	"b4835385f37fe2895af6c196b59097b16862406db80559900d596bb72f4b1de2</db:result>"

#define STREAM_BODY FEATURES "\n" MESSAGE " " PRESENCE "\n\n" IQ DB_RESULT
#define CLOSE "</stream:stream>"

/* ---- a recorder of callbacks ---- */

struct rec {
	char log[32768];             /* one line per event, elements serialized */
	size_t len;
	unsigned opens, elems, closes, errors;
	enum xmpp_xml_cond cond;
	struct xmpp_xml_elem *kept[8]; /* clones of the first elements */
	unsigned nkept;
	char to[64], from[64], version[16], lang[16], content_ns[32];
	unsigned major, minor;
	int has_version;
	unsigned nprefixes;
	char prefixes[128];          /* "p=uri " ... */
	const char *stop_on;         /* on_element stops after an element of this name */
	int stop_on_open;
	struct xmpp_xml_parser *self; /* set: callbacks try to re-enter it */
	int reentry_refused;
};

static void logf_(struct rec *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_(struct rec *r, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(r->log + r->len, sizeof(r->log) - r->len, fmt, ap);
	va_end(ap);
	assert_true(n >= 0 && (size_t)n < sizeof(r->log) - r->len);
	r->len += (size_t)n;
}

static void copy(char *dst, size_t size, const char *s)
{
	snprintf(dst, size, "%s", s ? s : "");
}

static int rec_open(void *arg, const struct xmpp_xml_header *h)
{
	struct rec *r = arg;

	r->opens++;
	copy(r->to, sizeof(r->to), h->to);
	copy(r->from, sizeof(r->from), h->from);
	copy(r->version, sizeof(r->version), h->version);
	copy(r->lang, sizeof(r->lang), h->lang);
	copy(r->content_ns, sizeof(r->content_ns), h->content_ns);
	r->has_version = h->version != NULL;
	r->major = h->version_major;
	r->minor = h->version_minor;
	r->nprefixes = h->nprefixes;
	r->prefixes[0] = '\0';
	for (unsigned i = 0; i < h->nprefixes; i++) {
		size_t l = strlen(r->prefixes);
		snprintf(r->prefixes + l, sizeof(r->prefixes) - l, "%s=%s ", h->prefixes[i].prefix,
		         h->prefixes[i].uri);
	}
	logf_(r, "open to=%s from=%s v=%u.%u ns=%s\n", r->to, r->from, r->major, r->minor,
	      r->content_ns);
	return r->stop_on_open;
}

static int rec_elem(void *arg, struct xmpp_xml_elem *el)
{
	struct rec *r = arg;
	struct xmpp_xml_ctx ctx = { XMPP_XML_NS_SERVER, 1 };
	struct xmpp_xml_buf b = { 0 };

	r->elems++;
	assert_null(el->parent);
	assert_int_equal(xmpp_xml_write_elem(&b, el, &ctx), 0);
	logf_(r, "elem {%s}%s %.*s\n", el->ns, el->name, (int)b.len, b.data);
	xmpp_xml_buf_free(&b);
	if (r->nkept < sizeof(r->kept) / sizeof(r->kept[0]))
		assert_non_null(r->kept[r->nkept++] = xmpp_xml_clone(el));
	if (r->self && xmpp_xml_reset(r->self) == XMPP_XML_ERR_STATE &&
	    xmpp_xml_feed(r->self, IQ, strlen(IQ), NULL) == XMPP_XML_ERR_STATE)
		r->reentry_refused++;
	return r->stop_on && strcmp(el->name, r->stop_on) == 0;
}

static void rec_close(void *arg)
{
	struct rec *r = arg;

	r->closes++;
	logf_(r, "close\n");
}

static void rec_error(void *arg, enum xmpp_xml_cond cond, const char *text)
{
	struct rec *r = arg;

	r->errors++;
	r->cond = cond;
	assert_non_null(text);
	logf_(r, "error %s\n", xmpp_xml_cond_name(cond));
}

static const struct xmpp_xml_cbs CBS = { rec_open, rec_elem, rec_close, rec_error };

static void rec_free(struct rec *r)
{
	for (unsigned i = 0; i < r->nkept; i++) {
		xmpp_xml_free(r->kept[i]); r->kept[i] = NULL;
	}
	r->nkept = 0;
}

static struct xmpp_xml_parser *new_parser(const struct xmpp_xml_limits *lim, struct rec *r)
{
	struct xmpp_xml_parser *p = xmpp_xml_parser_new(lim, &CBS, r);

	assert_non_null(p);
	return p;
}

static int feed_str(struct xmpp_xml_parser *p, const char *s)
{
	return xmpp_xml_feed(p, s, strlen(s), NULL);
}

/* Feeds s in pieces of `step` bytes (0: whole); returns the first non-OK code. */
static int feed_steps(struct xmpp_xml_parser *p, const char *s, size_t len, size_t step)
{
	int rc = XMPP_XML_OK;

	if (!step)
		step = len;
	for (size_t off = 0; off < len && rc == XMPP_XML_OK; off += step)
		rc = xmpp_xml_feed(p, s + off, len - off < step ? len - off : step, NULL);
	return rc;
}

/* Parses an input with the given limits, whole and one byte at a time,
 * expecting the same stream error both ways. */
static void expect_refusal(const struct xmpp_xml_limits *lim, const char *input,
                           enum xmpp_xml_cond want)
{
	for (size_t step = 0; step < 2; step++) {
		struct rec r = { 0 };
		struct xmpp_xml_parser *p = new_parser(lim, &r);
		const char *text = NULL;
		int rc = feed_steps(p, input, strlen(input), step);

		if (rc != XMPP_XML_ERR_STREAM || r.cond != want)
			fail_msg("input %.60s... by %zu: rc %d, cond %s, want %s", input, step, rc,
			         xmpp_xml_cond_name(r.cond), xmpp_xml_cond_name(want));
		assert_int_equal(r.errors, 1);
		assert_int_equal(xmpp_xml_error(p, &text), want);
		assert_non_null(text);
		/* nothing more is parsed, and the error is not reported twice */
		assert_int_equal(feed_str(p, IQ), XMPP_XML_ERR_STATE);
		assert_int_equal(r.errors, 1);
		rec_free(&r);
		xmpp_xml_parser_free(p);
	}
}

/* ---- parsing ---- */

static void test_prosody_opening(void **state)
{
	(void)state;
	struct rec r = { 0 };
	struct xmpp_xml_parser *p = new_parser(NULL, &r);

	assert_int_equal(feed_str(p, PROSODY_HEADER), XMPP_XML_OK);
	assert_int_equal(r.opens, 1);
	assert_string_equal(r.to, "contoso.test");
	assert_string_equal(r.from, "fabrikam.test");
	assert_string_equal(r.version, "1.0");
	assert_string_equal(r.lang, "en");
	assert_string_equal(r.content_ns, XMPP_XML_NS_SERVER);
	assert_int_equal(r.major, 1);
	assert_int_equal(r.minor, 0);
	assert_int_equal(r.nprefixes, 2);
	assert_string_equal(r.prefixes, "stream=" XMPP_XML_NS_STREAMS " db=" XMPP_XML_NS_DIALBACK " ");
	assert_int_equal(xmpp_xml_error(p, NULL), XMPP_XML_COND_NONE);
	xmpp_xml_parser_free(p);

	/* a client stream, an id, no XML declaration, double quotes */
	memset(&r, 0, sizeof(r));
	p = new_parser(NULL, &r);
	assert_int_equal(feed_str(p, "<s:stream xmlns:s=\"http://etherx.jabber.org/streams\" "
	                             "xmlns=\"jabber:client\" id=\"abc\" version=\"1.2\">"),
	                 XMPP_XML_OK);
	assert_int_equal(r.opens, 1);
	assert_string_equal(r.content_ns, XMPP_XML_NS_CLIENT);
	assert_int_equal(r.major, 1);
	assert_int_equal(r.minor, 2);
	assert_string_equal(r.prefixes, "s=" XMPP_XML_NS_STREAMS " ");
	xmpp_xml_parser_free(p);

	/* no version: a pre-1.0 peer, taken as 0.9 (RFC 6120 4.7.5) */
	memset(&r, 0, sizeof(r));
	p = new_parser(NULL, &r);
	assert_int_equal(feed_str(p, "<stream:stream xmlns='jabber:server' "
	                             "xmlns:stream='http://etherx.jabber.org/streams' to='a'>"),
	                 XMPP_XML_OK);
	assert_int_equal(r.opens, 1);
	assert_false(r.has_version);
	assert_int_equal(r.major, 0);
	assert_int_equal(r.minor, 9);
	xmpp_xml_parser_free(p);
}

static void test_stanzas(void **state)
{
	(void)state;
	struct rec r = { 0 };
	struct xmpp_xml_parser *p = new_parser(NULL, &r);
	struct xmpp_xml_elem *el, *c, *c2;
	size_t len;

	assert_int_equal(feed_str(p, PROSODY_HEADER STREAM_BODY), XMPP_XML_OK);
	assert_int_equal(r.elems, 5);
	assert_int_equal(r.closes, 0);

	/* features, with starttls and dialback */
	el = r.kept[0];
	assert_string_equal(el->name, "features");
	assert_string_equal(el->ns, XMPP_XML_NS_STREAMS);
	c = xmpp_xml_child(el, NULL, "starttls", XMPP_XML_NS_TLS);
	assert_non_null(c);
	assert_non_null(xmpp_xml_child(c, NULL, "required", XMPP_XML_NS_TLS));
	c2 = xmpp_xml_child(el, NULL, "dialback", XMPP_XML_NS_DIALBACK_FEATURE);
	assert_non_null(c2);
	assert_non_null(xmpp_xml_child(c2, NULL, "errors", NULL));
	assert_ptr_equal(xmpp_xml_child(el, c, NULL, NULL), c2);
	assert_null(xmpp_xml_child(el, NULL, "starttls", XMPP_XML_NS_SERVER));
	assert_null(xmpp_xml_child(el, c2, NULL, NULL));

	/* message with body and thread; entities decoded */
	el = r.kept[1];
	assert_string_equal(el->name, "message");
	assert_string_equal(el->ns, XMPP_XML_NS_SERVER);
	assert_string_equal(xmpp_xml_attr(el, "type"), "chat");
	assert_string_equal(xmpp_xml_attr(el, "to"), "romeo@contoso.test");
	assert_null(xmpp_xml_attr(el, "lang"));
	assert_string_equal(xmpp_xml_attr_ns(el, "lang", XMPP_XML_NS_XML), "en");
	c = xmpp_xml_child(el, NULL, "body", XMPP_XML_NS_SERVER);
	assert_string_equal(xmpp_xml_text(c, &len), "Art thou not Romeo, & a Montague?");
	assert_int_equal(len, strlen("Art thou not Romeo, & a Montague?"));
	c = xmpp_xml_child(el, NULL, "thread", XMPP_XML_NS_SERVER);
	assert_string_equal(xmpp_xml_text(c, NULL), "e0ffe42b28561960c6b12b944a092794b9683a38");
	assert_string_equal(xmpp_xml_text(el, &len), "");
	assert_int_equal(len, 0);

	/* presence with show and status */
	el = r.kept[2];
	assert_string_equal(el->name, "presence");
	assert_string_equal(xmpp_xml_text(xmpp_xml_child(el, NULL, "show", NULL), NULL), "away");
	assert_string_equal(xmpp_xml_text(xmpp_xml_child(el, NULL, "status", NULL), NULL), "be right back");

	/* iq with a child in another namespace */
	el = r.kept[3];
	assert_string_equal(el->name, "iq");
	assert_string_equal(xmpp_xml_attr(el, "type"), "get");
	c = xmpp_xml_child(el, NULL, "ping", "urn:xmpp:ping");
	assert_non_null(c);
	assert_null(c->children);

	/* dialback result: prefixed, in the dialback namespace */
	el = r.kept[4];
	assert_string_equal(el->name, "result");
	assert_string_equal(el->ns, XMPP_XML_NS_DIALBACK);
	assert_string_equal(xmpp_xml_text(el, NULL),
	                    "b4835385f37fe2895af6c196b59097b16862406db80559900d596bb72f4b1de2");

	/* the stream closes, then the parser takes only whitespace */
	assert_int_equal(feed_str(p, CLOSE "\r\n "), XMPP_XML_OK);
	assert_int_equal(r.closes, 1);
	assert_int_equal(feed_str(p, "  \n"), XMPP_XML_OK);
	assert_int_equal(r.errors, 0);
	rec_free(&r);
	xmpp_xml_parser_free(p);
}

static void test_split_feeding(void **state)
{
	(void)state;
	const char *in = PROSODY_HEADER STREAM_BODY " " CLOSE;
	size_t len = strlen(in);
	static const size_t steps[] = { 1, 2, 3, 7, 13, 64, 1000 };
	struct rec whole = { 0 };
	struct xmpp_xml_parser *p = new_parser(NULL, &whole);

	assert_int_equal(feed_str(p, in), XMPP_XML_OK);
	assert_int_equal(whole.elems, 5);
	assert_int_equal(whole.closes, 1);
	xmpp_xml_parser_free(p);
	rec_free(&whole);

	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++) {
		struct rec r = { 0 };

		p = new_parser(NULL, &r);
		assert_int_equal(feed_steps(p, in, len, steps[i]), XMPP_XML_OK);
		assert_string_equal(r.log, whole.log);
		rec_free(&r);
		xmpp_xml_parser_free(p);
	}
}

/* STARTTLS and SASL: a callback stops the parser, the rest goes on after a reset. */
static void test_stop_and_reset(void **state)
{
	(void)state;
	const char *in = PROSODY_HEADER "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
	const char *tls = "\x16\x03\x01\x02\x00\x01"; /* what follows is a TLS record */
	char buf[1024];
	struct rec r = { .stop_on = "proceed" };
	struct xmpp_xml_parser *p = new_parser(NULL, &r);
	size_t used = 0;

	snprintf(buf, sizeof(buf), "%s%s", in, tls);
	assert_int_equal(xmpp_xml_feed(p, buf, strlen(buf), &used), XMPP_XML_STOPPED);
	assert_int_equal(used, strlen(in));
	assert_int_equal(r.elems, 1);
	assert_int_equal(r.errors, 0);
	assert_int_equal(feed_str(p, " "), XMPP_XML_ERR_STATE);

	/* the same, one byte at a time: stopped at the last byte of the element */
	assert_int_equal(xmpp_xml_reset(p), 0);
	for (size_t i = 0; i < strlen(buf); i++) {
		int rc = xmpp_xml_feed(p, buf + i, 1, &used);
		if (i + 1 < strlen(in)) {
			assert_int_equal(rc, XMPP_XML_OK);
			assert_int_equal(used, 1);
		} else {
			assert_int_equal(rc, XMPP_XML_STOPPED);
			assert_int_equal(i + 1, strlen(in));
			assert_int_equal(used, 1);
			break;
		}
	}

	/* SASL success, with the restarted stream in the same read */
	assert_int_equal(xmpp_xml_reset(p), 0);
	r.stop_on = "success";
	r.opens = 0;
	const char *sasl = PROSODY_HEADER "<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>";
	snprintf(buf, sizeof(buf), "%s%s%s", sasl, PROSODY_HEADER, MESSAGE);
	assert_int_equal(xmpp_xml_feed(p, buf, strlen(buf), &used), XMPP_XML_STOPPED);
	assert_int_equal(used, strlen(sasl));
	assert_int_equal(r.opens, 1);
	assert_int_equal(xmpp_xml_reset(p), 0);
	assert_int_equal(xmpp_xml_error(p, NULL), XMPP_XML_COND_NONE);
	unsigned before = r.elems;
	assert_int_equal(xmpp_xml_feed(p, buf + used, strlen(buf) - used, &used), XMPP_XML_OK);
	assert_int_equal(r.opens, 2);
	assert_int_equal(r.elems, before + 1);
	assert_string_equal(r.kept[r.nkept - 1]->name, "message");

	/* the header itself may stop the parser */
	assert_int_equal(xmpp_xml_reset(p), 0);
	r.stop_on_open = 1;
	assert_int_equal(xmpp_xml_feed(p, buf + strlen(sasl), strlen(buf) - strlen(sasl), &used),
	                 XMPP_XML_STOPPED);
	assert_int_equal(used, strlen(PROSODY_HEADER));

	/* a reset after an error gives a fresh stream too */
	r.stop_on_open = 0;
	assert_int_equal(xmpp_xml_reset(p), 0);
	assert_int_equal(feed_str(p, "<x/>"), XMPP_XML_ERR_STREAM);
	assert_int_equal(xmpp_xml_reset(p), 0);
	assert_int_equal(feed_str(p, PROSODY_HEADER IQ), XMPP_XML_OK);
	rec_free(&r);
	xmpp_xml_parser_free(p);
}

static void test_callback_reentry(void **state)
{
	(void)state;
	struct rec r = { 0 };
	struct xmpp_xml_parser *p = new_parser(NULL, &r);

	r.self = p;
	assert_int_equal(feed_str(p, PROSODY_HEADER MESSAGE PRESENCE), XMPP_XML_OK);
	assert_int_equal(r.elems, 2);
	assert_int_equal(r.reentry_refused, 2);
	assert_int_equal(feed_str(p, IQ), XMPP_XML_OK); /* the parser went on as before */
	assert_int_equal(r.elems, 3);
	rec_free(&r);
	xmpp_xml_parser_free(p);
}

static void test_keepalives(void **state)
{
	(void)state;
	struct xmpp_xml_limits lim = { .max_stanza_bytes = 200 };
	struct rec r = { 0 };
	struct xmpp_xml_parser *p = new_parser(&lim, &r);
	char spaces[1000];

	memset(spaces, ' ', sizeof(spaces));
	assert_int_equal(feed_str(p, PROSODY_HEADER), XMPP_XML_OK);
	/* hours of keep-alives: far more than a stanza's budget, in one read or many */
	for (int i = 0; i < 20; i++) {
		assert_int_equal(xmpp_xml_feed(p, spaces, sizeof(spaces), NULL), XMPP_XML_OK);
		assert_int_equal(feed_str(p, "\n \t\r\n"), XMPP_XML_OK);
	}
	assert_int_equal(feed_str(p, IQ), XMPP_XML_OK);
	assert_int_equal(feed_str(p, " "), XMPP_XML_OK);
	assert_int_equal(feed_str(p, IQ), XMPP_XML_OK);
	assert_int_equal(r.elems, 2);
	assert_int_equal(r.errors, 0);
	/* the keep-alives are no element's text */
	assert_null(r.kept[0]->children->next);
	assert_int_equal(r.kept[0]->text_len, 0);
	rec_free(&r);
	xmpp_xml_parser_free(p);
}

static void test_mixed_content(void **state)
{
	(void)state;
	struct rec r = { 0 };
	struct xmpp_xml_parser *p = new_parser(NULL, &r);
	struct xmpp_xml_elem *el, *n;
	size_t len;

	assert_int_equal(feed_str(p, PROSODY_HEADER "<message><body>one <b>two</b> three"
	                             "<![CDATA[ <four> ]]>&#x263A;&lt;</body></message>"),
	                 XMPP_XML_OK);
	el = xmpp_xml_child(r.kept[0], NULL, "body", NULL);
	n = el->children;
	assert_null(n->name);
	assert_string_equal(n->text, "one ");
	n = n->next;
	assert_string_equal(n->name, "b");
	assert_string_equal(xmpp_xml_text(n, NULL), "two");
	n = n->next;
	assert_null(n->name);
	assert_string_equal(n->text, " three <four> \xe2\x98\xba<"); /* one node per run */
	assert_null(n->next);
	assert_string_equal(xmpp_xml_text(el, &len), "one  three <four> \xe2\x98\xba<");
	assert_int_equal(len, el->text_len);
	rec_free(&r);
	xmpp_xml_parser_free(p);
}

/* ---- refusals (RFC 6120 4.9.3 and 11.1) ---- */

#define H PROSODY_HEADER

static void test_refuse_restricted_xml(void **state)
{
	(void)state;
	/* DTDs, and with them every entity trick */
	expect_refusal(NULL, "<?xml version='1.0'?><!DOCTYPE stream:stream>" H,
	               XMPP_XML_COND_RESTRICTED_XML);
	expect_refusal(NULL,
	               "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
	               "<!ENTITY lol2 '&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;'>"
	               "<!ENTITY lol3 '&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;'>]>"
	               "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
	               " version='1.0'><message><body>&lol3;</body></message>",
	               XMPP_XML_COND_RESTRICTED_XML);
	expect_refusal(NULL,
	               "<!DOCTYPE foo [<!ENTITY xxe SYSTEM 'file:///etc/passwd'>]>"
	               "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
	               "<message><body>&xxe;</body></message>",
	               XMPP_XML_COND_RESTRICTED_XML);
	expect_refusal(NULL, "<!DOCTYPE foo SYSTEM 'http://evil.test/x.dtd'>" H,
	               XMPP_XML_COND_RESTRICTED_XML);
	/* an entity never declared */
	expect_refusal(NULL, H "<message><body>&lol;</body></message>", XMPP_XML_COND_RESTRICTED_XML);
	expect_refusal(NULL, H "<message to='&lol;'/>", XMPP_XML_COND_RESTRICTED_XML);
	/* comments and processing instructions, before the header or inside */
	expect_refusal(NULL, "<?xml version='1.0'?><!-- hi -->" H, XMPP_XML_COND_RESTRICTED_XML);
	expect_refusal(NULL, H "<message><!-- hi --></message>", XMPP_XML_COND_RESTRICTED_XML);
	expect_refusal(NULL, H "<!-- between -->", XMPP_XML_COND_RESTRICTED_XML);
	expect_refusal(NULL, "<?xml-stylesheet href='x'?>" H, XMPP_XML_COND_RESTRICTED_XML);
	expect_refusal(NULL, H "<message><?php echo 1; ?></message>", XMPP_XML_COND_RESTRICTED_XML);
}

static void test_refuse_namespaces(void **state)
{
	(void)state;
	/* not the streams namespace */
	expect_refusal(NULL, "<stream:stream xmlns='jabber:server' xmlns:stream='http://wrong.test/'>",
	               XMPP_XML_COND_INVALID_NAMESPACE);
	expect_refusal(NULL, "<message xmlns='jabber:server'/>", XMPP_XML_COND_INVALID_NAMESPACE);
	/* the right namespace, the wrong element */
	expect_refusal(NULL, "<stream:features xmlns='jabber:server' "
	                     "xmlns:stream='http://etherx.jabber.org/streams'>",
	               XMPP_XML_COND_BAD_FORMAT);
	/* the stream element must carry a prefix */
	expect_refusal(NULL, "<stream xmlns='http://etherx.jabber.org/streams'>",
	               XMPP_XML_COND_BAD_NAMESPACE_PREFIX);
	/* a content namespace other than jabber:server or jabber:client, or none */
	expect_refusal(NULL, "<stream:stream xmlns='jabber:evil' "
	                     "xmlns:stream='http://etherx.jabber.org/streams'>",
	               XMPP_XML_COND_INVALID_NAMESPACE);
	expect_refusal(NULL, "<stream:stream xmlns:stream='http://etherx.jabber.org/streams'>",
	               XMPP_XML_COND_INVALID_NAMESPACE);
	/* an unbound prefix breaks the namespace rules */
	expect_refusal(NULL, H "<x:message/>", XMPP_XML_COND_NOT_WELL_FORMED);
}

static void test_refuse_version_encoding(void **state)
{
	(void)state;
	static const char *const bad[] = { "2.0", "0.9", "1", "1.0.0", "", "x.y", " 1.0", "1.99999999" };
	char buf[512];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(buf, sizeof(buf), "<stream:stream xmlns='jabber:server' "
		         "xmlns:stream='http://etherx.jabber.org/streams' version='%s'>", bad[i]);
		expect_refusal(NULL, buf, XMPP_XML_COND_UNSUPPORTED_VERSION);
	}
	expect_refusal(NULL, "<?xml version='1.0' encoding='ISO-8859-1'?>" STREAM_OPEN,
	               XMPP_XML_COND_UNSUPPORTED_ENCODING);
	/* UTF-8 is forced: Latin-1 bytes are bad UTF-8 */
	expect_refusal(NULL, H "<message><body>caf\xe9</body></message>", XMPP_XML_COND_NOT_WELL_FORMED);
	/* an explicit UTF-8 declaration is fine */
	struct rec r = { 0 };
	struct xmpp_xml_parser *p = new_parser(NULL, &r);
	assert_int_equal(feed_str(p, "<?xml version='1.0' encoding='utf-8'?>" STREAM_OPEN), XMPP_XML_OK);
	assert_int_equal(r.opens, 1);
	xmpp_xml_parser_free(p);
}

static void test_refuse_not_well_formed(void **state)
{
	(void)state;
	expect_refusal(NULL, H "<message></presence>", XMPP_XML_COND_NOT_WELL_FORMED);
	expect_refusal(NULL, H "<message to='a' to='b'/>", XMPP_XML_COND_NOT_WELL_FORMED);
	expect_refusal(NULL, H "<message><body>\x01</body></message>", XMPP_XML_COND_NOT_WELL_FORMED);
	expect_refusal(NULL, H "<message><body>&#0;</body></message>", XMPP_XML_COND_NOT_WELL_FORMED);
	expect_refusal(NULL, H "<<", XMPP_XML_COND_NOT_WELL_FORMED);
	expect_refusal(NULL, "   " H, XMPP_XML_COND_NOT_WELL_FORMED); /* XML decl not first */
	expect_refusal(NULL, H "<?xml version='1.0'?>", XMPP_XML_COND_NOT_WELL_FORMED);
	/* text between stanzas is not a keep-alive */
	expect_refusal(NULL, H " hello ", XMPP_XML_COND_BAD_FORMAT);
	/* after the stream closed: anything but whitespace */
	expect_refusal(NULL, H CLOSE " <message/>", XMPP_XML_COND_NOT_WELL_FORMED);

	struct rec r = { 0 };
	struct xmpp_xml_parser *p = new_parser(NULL, &r);
	assert_int_equal(feed_str(p, H IQ CLOSE), XMPP_XML_OK);
	assert_int_equal(feed_str(p, "\n"), XMPP_XML_OK);
	assert_int_equal(feed_str(p, "x"), XMPP_XML_ERR_STREAM);
	assert_int_equal(r.cond, XMPP_XML_COND_NOT_WELL_FORMED);
	assert_int_equal(r.closes, 1);
	assert_int_equal(r.errors, 1);
	rec_free(&r);
	xmpp_xml_parser_free(p);
}

/* head, n times fill, tail: a malloc'd string. */
static char *big(const char *head, char fill, size_t n, const char *tail)
{
	size_t h = strlen(head), t = strlen(tail);
	char *s = malloc(h + n + t + 1);

	assert_non_null(s);
	memcpy(s, head, h);
	memset(s + h, fill, n);
	memcpy(s + h + n, tail, t + 1);
	return s;
}

static void test_refuse_limits(void **state)
{
	(void)state;
	struct xmpp_xml_limits small = { .max_stanza_bytes = 1024, .max_header_bytes = 512,
	                                 .max_text_bytes = 100, .max_depth = 4, .max_attrs = 7,
	                                 .max_elements = 20 };
	char *s;

	/* text over max_text_bytes, though the stanza fits */
	s = big(H "<message><body>", 'a', 101, "</body></message>");
	expect_refusal(&small, s, XMPP_XML_COND_POLICY_VIOLATION);
	free(s); s = NULL;
	s = big(H "<message><body>", 'a', 100, "</body></message>");
	{
		struct rec r = { 0 };
		struct xmpp_xml_parser *p = new_parser(&small, &r);
		assert_int_equal(feed_str(p, s), XMPP_XML_OK);
		assert_int_equal(r.elems, 1);
		rec_free(&r);
		xmpp_xml_parser_free(p);
	}
	free(s); s = NULL;
	/* the text of an element counts all its runs */
	s = big(H "<message><body>", 'a', 60, "<b/>aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa</body></message>");
	expect_refusal(&small, s, XMPP_XML_COND_POLICY_VIOLATION);
	free(s); s = NULL;
	/* a stanza of exactly max_stanza_bytes fits, one byte more does not;
	 * the whitespace before it is no stanza's */
	{
		struct xmpp_xml_limits lim = { .max_stanza_bytes = 1024 };
		struct rec r = { 0 };
		struct xmpp_xml_parser *p = new_parser(&lim, &r);

		s = big(H "  <message><body>", 'a', 1024 - 32, "</body></message>  ");
		assert_int_equal(feed_steps(p, s, strlen(s), 0), XMPP_XML_OK);
		assert_int_equal(feed_steps(p, s + strlen(H), strlen(s) - strlen(H), 1), XMPP_XML_OK);
		assert_int_equal(r.elems, 2);
		rec_free(&r);
		xmpp_xml_parser_free(p);
		free(s); s = NULL;
		s = big(H "<message><body>", 'a', 1024 - 31, "</body></message>");
		expect_refusal(&lim, s, XMPP_XML_COND_POLICY_VIOLATION);
		free(s); s = NULL;
	}
	/* a stanza over max_stanza_bytes by its attribute */
	s = big(H "<message to='", 'a', 2000, "'/>");
	expect_refusal(&small, s, XMPP_XML_COND_POLICY_VIOLATION);
	free(s); s = NULL;
	/* counted as fed: an attribute that never ends is refused all the same,
	 * before expat has buffered it all */
	s = big(H "<message to='", 'a', 1 << 20, "");
	expect_refusal(&small, s, XMPP_XML_COND_POLICY_VIOLATION);
	free(s); s = NULL;
	s = big(H "<message><body>", 'a', 1 << 20, "");
	expect_refusal(NULL, s, XMPP_XML_COND_POLICY_VIOLATION);
	free(s); s = NULL;
	/* a stream header too large */
	s = big("<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='",
	        'a', 600, "'>");
	expect_refusal(&small, s, XMPP_XML_COND_POLICY_VIOLATION);
	free(s); s = NULL;
	/* depth: 4 levels fit, 5 do not */
	{
		struct rec r = { 0 };
		struct xmpp_xml_parser *p = new_parser(&small, &r);
		assert_int_equal(feed_str(p, H "<a><b><c><d/></c></b></a>"), XMPP_XML_OK);
		assert_int_equal(r.elems, 1);
		rec_free(&r);
		xmpp_xml_parser_free(p);
	}
	expect_refusal(&small, H "<a><b><c><d><e/></d></c></b></a>", XMPP_XML_COND_POLICY_VIOLATION);
	/* attributes: 7 fit, 8 do not; namespace declarations count (the
	 * header's 4 attributes and 2 prefixes fit) */
	expect_refusal(&small, H "<a x1='' x2='' x3='' x4='' x5='' x6='' x7='' x8=''/>",
	               XMPP_XML_COND_POLICY_VIOLATION);
	expect_refusal(&small, H "<a x1='' x2='' x3='' x4='' x5='' x6='' xmlns:p='u' xmlns:q='v'/>",
	               XMPP_XML_COND_POLICY_VIOLATION);
	expect_refusal(&small, "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'"
	                       " a='' b='' c='' d='' e='' f='' g=''>", XMPP_XML_COND_POLICY_VIOLATION);
	{
		struct rec r = { 0 };
		struct xmpp_xml_parser *p = new_parser(&small, &r);
		assert_int_equal(feed_str(p, H "<a x1='' x2='' x3='' x4='' x5='' x6='' x7=''/>"), XMPP_XML_OK);
		assert_int_equal(feed_str(p, "<a x1='' x2='' x3='' x4='' x5='' xmlns:p='u' p:x6=''/>"),
		                 XMPP_XML_OK);
		assert_int_equal(r.elems, 2);
		rec_free(&r);
		xmpp_xml_parser_free(p);
	}
	/* elements per stanza */
	s = big(H "<a>", ' ', 0, "<b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/><b/></a>");
	expect_refusal(&small, s, XMPP_XML_COND_POLICY_VIOLATION);
	free(s); s = NULL;

	/* the limits apply to each stanza, not to the stream */
	{
		struct rec r = { 0 };
		struct xmpp_xml_parser *p = new_parser(&small, &r);
		assert_int_equal(feed_str(p, H), XMPP_XML_OK);
		for (int i = 0; i < 100; i++)
			assert_int_equal(feed_str(p, MESSAGE "\n"), XMPP_XML_OK);
		assert_int_equal(r.elems, 100);
		rec_free(&r);
		xmpp_xml_parser_free(p);
	}
}

/* ---- trees ---- */

static void test_build_and_helpers(void **state)
{
	(void)state;
	struct xmpp_xml_elem *m = xmpp_xml_new("message", XMPP_XML_NS_SERVER), *b, *c;
	size_t len;

	assert_non_null(m);
	assert_int_equal(xmpp_xml_set_attr(m, "to", NULL, "a@b"), 0);
	assert_int_equal(xmpp_xml_set_attr(m, "to", NULL, "c@d"), 0); /* replaces */
	for (int i = 0; i < 10; i++) { /* grows the array */
		char n[8];
		snprintf(n, sizeof(n), "x%d", i);
		assert_int_equal(xmpp_xml_set_attr(m, n, NULL, n), 0);
	}
	assert_int_equal(m->nattrs, 11);
	assert_string_equal(xmpp_xml_attr(m, "to"), "c@d");
	assert_string_equal(xmpp_xml_attr(m, "x9"), "x9");
	assert_int_equal(xmpp_xml_set_attr(m, "lang", XMPP_XML_NS_XML, "en"), 0);
	assert_string_equal(xmpp_xml_attr_ns(m, "lang", XMPP_XML_NS_XML), "en");
	assert_null(xmpp_xml_attr(m, "lang"));
	b = xmpp_xml_add(m, "body", NULL);
	assert_string_equal(b->ns, XMPP_XML_NS_SERVER);
	assert_int_equal(xmpp_xml_add_text(b, "hello ", 6), 0);
	assert_int_equal(xmpp_xml_add_text(b, "world", 5), 0);
	assert_null(b->children->next); /* one run, one node */
	c = xmpp_xml_add(b, "i", "urn:x");
	assert_int_equal(xmpp_xml_add_text(b, "!", 1), 0);
	assert_string_equal(xmpp_xml_text(b, &len), "hello world!");
	assert_int_equal(len, 12);
	assert_ptr_equal(xmpp_xml_child(b, NULL, "i", "urn:x"), c);
	assert_null(xmpp_xml_child(b, NULL, "i", XMPP_XML_NS_SERVER));

	struct xmpp_xml_elem *k = xmpp_xml_clone(b);
	assert_non_null(k);
	assert_null(k->parent);
	assert_true(xmpp_xml_equal(k, b));
	assert_int_equal(xmpp_xml_add_text(k, "?", 1), 0);
	assert_false(xmpp_xml_equal(k, b));
	xmpp_xml_free(c); /* not a root: left alone */
	xmpp_xml_free(k);
	xmpp_xml_free(m);
	xmpp_xml_free(NULL);
}

static void test_cond_names(void **state)
{
	(void)state;
	for (int c = XMPP_XML_COND_BAD_FORMAT; c <= XMPP_XML_COND_UNSUPPORTED_VERSION; c++)
		assert_int_equal(xmpp_xml_cond_from_name(xmpp_xml_cond_name(c)), c);
	assert_string_equal(xmpp_xml_cond_name(XMPP_XML_COND_RESTRICTED_XML), "restricted-xml");
	assert_string_equal(xmpp_xml_cond_name(XMPP_XML_COND_INVALID_XML), "invalid-xml");
	assert_string_equal(xmpp_xml_cond_name(XMPP_XML_COND_NONE), "undefined-condition");
	assert_string_equal(xmpp_xml_cond_name((enum xmpp_xml_cond)999), "undefined-condition");
	assert_int_equal(xmpp_xml_cond_from_name("nonsense"), XMPP_XML_COND_NONE);
	assert_int_equal(xmpp_xml_cond_from_name(NULL), XMPP_XML_COND_NONE);
	assert_string_equal(xmpp_xml_strerror(XMPP_XML_ERR_CHAR), "character not allowed in XML");
	assert_string_equal(xmpp_xml_strerror(-99), "unknown error");
}

/* ---- the serializer ---- */

static void assert_buf(const struct xmpp_xml_buf *b, const char *want)
{
	if (b->len != strlen(want) || memcmp(b->data, want, b->len) != 0)
		fail_msg("got \"%.*s\", want \"%s\"", (int)b->len, b->data ? b->data : "", want);
}

static void test_write_stream(void **state)
{
	(void)state;
	struct xmpp_xml_buf b = { 0 };
	struct xmpp_xml_header_out h = { .to = "fabrikam.test", .from = "contoso.test", .id = "s1'<",
	                                 .version = "1.0", .lang = "en", .dialback = 1 };

	assert_int_equal(xmpp_xml_write_header(&b, &h), 0);
	assert_buf(&b, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
	               "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' "
	               "to='fabrikam.test' from='contoso.test' id='s1&apos;&lt;' version='1.0' xml:lang='en'>");
	b.len = 0;
	h = (struct xmpp_xml_header_out){ .content_ns = XMPP_XML_NS_CLIENT, .to = "x" };
	assert_int_equal(xmpp_xml_write_header(&b, &h), 0);
	assert_buf(&b, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
	               "xmlns:stream='http://etherx.jabber.org/streams' to='x'>");
	b.len = 0;
	assert_int_equal(xmpp_xml_write_close(&b), 0);
	assert_buf(&b, "</stream:stream>");
	b.len = 0;
	assert_int_equal(xmpp_xml_write_error(&b, XMPP_XML_COND_POLICY_VIOLATION, "stanza > 64 KB & more"), 0);
	assert_buf(&b, "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
	               "<text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>stanza &gt; 64 KB &amp; more</text>"
	               "</stream:error>");
	b.len = 0;
	assert_int_equal(xmpp_xml_write_error(&b, XMPP_XML_COND_NONE, NULL), 0);
	assert_buf(&b, "<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
	               "</stream:error>");
	/* a bad text leaves the buffer as it was */
	assert_int_equal(xmpp_xml_write_error(&b, XMPP_XML_COND_RESET, "a\x02"), XMPP_XML_ERR_CHAR);
	assert_buf(&b, "<stream:error><undefined-condition xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>"
	               "</stream:error>");
	b.len = 0;
	h = (struct xmpp_xml_header_out){ .to = "bad\xff" };
	assert_int_equal(xmpp_xml_write_header(&b, &h), XMPP_XML_ERR_CHAR);
	assert_int_equal(b.len, 0);
	xmpp_xml_buf_free(&b);
	assert_null(b.data);
}

/* Serializes el in a whole stream, parses it again and returns the one element. */
static struct xmpp_xml_elem *reparse(const struct xmpp_xml_elem *el, int dialback, const char *ns)
{
	struct xmpp_xml_header_out h = { .to = "a", .from = "b", .version = "1.0",
	                                 .content_ns = ns, .dialback = dialback };
	struct xmpp_xml_ctx ctx = { ns, dialback };
	struct xmpp_xml_buf b = { 0 };
	struct rec r = { 0 };
	struct xmpp_xml_parser *p = new_parser(NULL, &r);
	struct xmpp_xml_elem *out;

	assert_int_equal(xmpp_xml_write_header(&b, &h), 0);
	assert_int_equal(xmpp_xml_write_elem(&b, el, &ctx), 0);
	assert_int_equal(xmpp_xml_write_close(&b), 0);
	if (xmpp_xml_feed(p, b.data, b.len, NULL) != XMPP_XML_OK)
		fail_msg("reparse of %.*s: %s", (int)b.len, b.data, r.log);
	assert_int_equal(r.elems, 1);
	assert_int_equal(r.closes, 1);
	out = r.kept[0];
	xmpp_xml_buf_free(&b);
	xmpp_xml_parser_free(p);
	return out;
}

static void test_roundtrip(void **state)
{
	(void)state;
	struct xmpp_xml_elem *m = xmpp_xml_new("message", XMPP_XML_NS_SERVER), *b, *x, *r;
	struct xmpp_xml_buf out = { 0 };

	assert_int_equal(xmpp_xml_set_attr(m, "to", NULL, "romeo@contoso.test"), 0);
	assert_int_equal(xmpp_xml_set_attr(m, "id", NULL, "q'\"<>&\t\n\r end"), 0);
	assert_int_equal(xmpp_xml_set_attr(m, "lang", XMPP_XML_NS_XML, "fr"), 0);
	assert_int_equal(xmpp_xml_set_attr(m, "a", "urn:one", "1"), 0);
	assert_int_equal(xmpp_xml_set_attr(m, "b", "urn:two", "2"), 0);
	assert_int_equal(xmpp_xml_set_attr(m, "c", "urn:one", "3"), 0);
	b = xmpp_xml_add(m, "body", NULL);
	const char *tricky = "1 < 2 & 3 > 2 \"q\" 'a' ]]> \r\n\t \xe2\x98\xba \xf0\x9f\x98\x80";
	assert_int_equal(xmpp_xml_add_text(b, tricky, strlen(tricky)), 0);
	x = xmpp_xml_add(m, "html", "http://jabber.org/protocol/xhtml-im");
	x = xmpp_xml_add(x, "body", "http://www.w3.org/1999/xhtml");
	assert_int_equal(xmpp_xml_add_text(x, "mixed ", 6), 0);
	assert_non_null(xmpp_xml_add(x, "em", NULL));
	assert_int_equal(xmpp_xml_add_text(xmpp_xml_child(x, NULL, "em", NULL), "content", 7), 0);
	assert_int_equal(xmpp_xml_add_text(x, " here", 5), 0);
	assert_non_null(xmpp_xml_add(m, "nons", ""));           /* no namespace */
	assert_non_null(xmpp_xml_add(m, "delay", "urn:xmpp:delay"));

	/* the text's escaping, as written */
	assert_int_equal(xmpp_xml_write_elem(&out, b, NULL), 0);
	assert_buf(&out, "<body>1 &lt; 2 &amp; 3 &gt; 2 &quot;q&quot; &apos;a&apos; ]]&gt; &#13;\n\t "
	                 "\xe2\x98\xba \xf0\x9f\x98\x80</body>");
	out.len = 0;
	assert_int_equal(xmpp_xml_write_elem(&out, xmpp_xml_child(m, NULL, "nons", NULL), NULL), 0);
	assert_buf(&out, "<nons xmlns=''/>");
	xmpp_xml_buf_free(&out);

	r = reparse(m, 0, NULL);
	assert_true(xmpp_xml_equal(r, m));
	assert_string_equal(xmpp_xml_attr(r, "id"), "q'\"<>&\t\n\r end");
	xmpp_xml_free(r);
	/* the same in a client stream: every namespace declared where needed */
	r = reparse(m, 0, XMPP_XML_NS_CLIENT);
	assert_true(xmpp_xml_equal(r, m));
	xmpp_xml_free(r);
	xmpp_xml_free(m);

	/* stream-level elements keep their prefixes */
	m = xmpp_xml_new("result", XMPP_XML_NS_DIALBACK);
	assert_int_equal(xmpp_xml_set_attr(m, "from", NULL, "fabrikam.test"), 0);
	assert_int_equal(xmpp_xml_add_text(m, "key", 3), 0);
	assert_int_equal(xmpp_xml_write_elem(&out, m, &(struct xmpp_xml_ctx){ NULL, 1 }), 0);
	assert_buf(&out, "<db:result from='fabrikam.test'>key</db:result>");
	out.len = 0;
	assert_int_equal(xmpp_xml_write_elem(&out, m, NULL), 0);
	assert_buf(&out, "<result xmlns='jabber:server:dialback' from='fabrikam.test'>key</result>");
	out.len = 0;
	r = reparse(m, 1, NULL);
	assert_true(xmpp_xml_equal(r, m));
	xmpp_xml_free(r);
	r = reparse(m, 0, NULL);
	assert_true(xmpp_xml_equal(r, m));
	xmpp_xml_free(r);
	xmpp_xml_free(m);

	m = xmpp_xml_new("features", XMPP_XML_NS_STREAMS);
	assert_non_null(xmpp_xml_add(xmpp_xml_add(m, "starttls", XMPP_XML_NS_TLS), "required", NULL));
	assert_int_equal(xmpp_xml_write_elem(&out, m, NULL), 0);
	assert_buf(&out, "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>"
	                 "<required/></starttls></stream:features>");
	r = reparse(m, 0, NULL);
	assert_true(xmpp_xml_equal(r, m));
	xmpp_xml_free(r);
	xmpp_xml_free(m);
	xmpp_xml_buf_free(&out);

	/* what the parser got from Prosody comes back the same */
	struct rec rr = { 0 };
	struct xmpp_xml_parser *p = new_parser(NULL, &rr);
	assert_int_equal(feed_str(p, PROSODY_HEADER STREAM_BODY), XMPP_XML_OK);
	for (unsigned i = 0; i < rr.nkept; i++) {
		r = reparse(rr.kept[i], 1, NULL);
		assert_true(xmpp_xml_equal(r, rr.kept[i]));
		xmpp_xml_free(r);
	}
	rec_free(&rr);
	xmpp_xml_parser_free(p);
}

static void test_write_refusals(void **state)
{
	(void)state;
	static const char *const bad_text[] = {
		"\x01", "\x1f", "\xff", "\xc0\x80" /* overlong NUL */, "\xed\xa0\x80" /* surrogate */,
		"\xef\xbf\xbe" /* U+FFFE */, "\xf4\x90\x80\x80" /* past U+10FFFF */, "\xe2\x98" /* cut */,
	};
	static const char *const bad_names[] = { "", "a:b", "1a", "-a", "a b", "a>", "\xc3\x97x", "x\xff" };
	struct xmpp_xml_buf b = { 0 };
	struct xmpp_xml_elem *m, *r;
	size_t before;

	assert_int_equal(xmpp_xml_write_close(&b), 0);
	before = b.len;
	for (size_t i = 0; i < sizeof(bad_text) / sizeof(bad_text[0]); i++) {
		m = xmpp_xml_new("message", NULL);
		assert_int_equal(xmpp_xml_add_text(xmpp_xml_add(m, "body", NULL), bad_text[i],
		                                   strlen(bad_text[i])), 0);
		assert_int_equal(xmpp_xml_write_elem(&b, m, NULL), XMPP_XML_ERR_CHAR);
		assert_int_equal(b.len, before);
		xmpp_xml_free(m);
		m = xmpp_xml_new("message", NULL);
		assert_int_equal(xmpp_xml_set_attr(m, "to", NULL, bad_text[i]), 0);
		assert_int_equal(xmpp_xml_write_elem(&b, m, NULL), XMPP_XML_ERR_CHAR);
		assert_int_equal(b.len, before);
		xmpp_xml_free(m);
	}
	for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
		m = xmpp_xml_new(bad_names[i], NULL);
		assert_int_equal(xmpp_xml_write_elem(&b, m, NULL), XMPP_XML_ERR_NAME);
		xmpp_xml_free(m);
		m = xmpp_xml_new("message", NULL);
		assert_int_equal(xmpp_xml_set_attr(m, bad_names[i], NULL, "v"), 0);
		assert_int_equal(xmpp_xml_write_elem(&b, m, NULL), XMPP_XML_ERR_NAME);
		assert_int_equal(b.len, before);
		xmpp_xml_free(m);
	}
	/* namespace declarations are not attributes; xml and xmlns hold no element */
	m = xmpp_xml_new("message", NULL);
	assert_int_equal(xmpp_xml_set_attr(m, "xmlns", NULL, "urn:x"), 0);
	assert_int_equal(xmpp_xml_write_elem(&b, m, NULL), XMPP_XML_ERR_NAME);
	xmpp_xml_free(m);
	m = xmpp_xml_new("message", NULL);
	assert_int_equal(xmpp_xml_set_attr(m, "p", "http://www.w3.org/2000/xmlns/", "urn:x"), 0);
	assert_int_equal(xmpp_xml_write_elem(&b, m, NULL), XMPP_XML_ERR_NAME);
	xmpp_xml_free(m);
	m = xmpp_xml_new("lang", XMPP_XML_NS_XML);
	assert_int_equal(xmpp_xml_write_elem(&b, m, NULL), XMPP_XML_ERR_NAME);
	xmpp_xml_free(m);
	assert_int_equal(b.len, before);

	/* names beyond ASCII are names */
	m = xmpp_xml_new("caf\xc3\xa9", "urn:x");
	assert_int_equal(xmpp_xml_set_attr(m, "\xe5\x90\x8d", NULL, "\xe5\x80\xa4"), 0);
	r = reparse(m, 0, NULL);
	assert_true(xmpp_xml_equal(r, m));
	xmpp_xml_free(r);
	xmpp_xml_free(m);
	xmpp_xml_buf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_prosody_opening),
		cmocka_unit_test(test_stanzas),
		cmocka_unit_test(test_split_feeding),
		cmocka_unit_test(test_stop_and_reset),
		cmocka_unit_test(test_callback_reentry),
		cmocka_unit_test(test_keepalives),
		cmocka_unit_test(test_mixed_content),
		cmocka_unit_test(test_refuse_restricted_xml),
		cmocka_unit_test(test_refuse_namespaces),
		cmocka_unit_test(test_refuse_version_encoding),
		cmocka_unit_test(test_refuse_not_well_formed),
		cmocka_unit_test(test_refuse_limits),
		cmocka_unit_test(test_build_and_helpers),
		cmocka_unit_test(test_cond_names),
		cmocka_unit_test(test_write_stream),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_write_refusals),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
