/* Unit tests for edge/sip_msg.c: framing, parsing, value parsers, editing. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sip_msg.h"

static const struct sip_limits LIM = { 65536, 4096, 64 };

#define RL_OPT "OPTIONS sip:bob@b.example SIP/2.0\r\n"
#define VIA1   "Via: SIP/2.0/TCP h1.example:5060;branch=z9hG4bK1\r\n"
#define FROM   "From: Alice <sip:alice@a.example>;tag=ft\r\n"
#define TO     "To: <sip:bob@b.example>\r\n"
#define CID    "Call-ID: c1@a.example\r\n"
#define CSEQ   "CSeq: 7 OPTIONS\r\n"
#define CORE   VIA1 FROM TO CID CSEQ

#define INVITE \
	"INVITE sip:bob@biloxi.example.com SIP/2.0\r\n" \
	"Via: SIP/2.0/TCP client.atlanta.example.com:5060;branch=z9hG4bK74bf9\r\n" \
	"Max-Forwards: 70\r\n" \
	"From: Alice <sip:alice@atlanta.example.com>;tag=9fxced76sl\r\n" \
	"To: Bob <sip:bob@biloxi.example.com>\r\n" \
	"Call-ID: 3848276298220188511@atlanta.example.com\r\n" \
	"CSeq: 1 INVITE\r\n" \
	"Route: <sip:p1.example;lr>, <sip:p2.example;lr>\r\n" \
	"Contact: <sip:alice@client.atlanta.example.com;transport=tcp>\r\n" \
	"Content-Type: application/sdp\r\n" \
	"Content-Length: 4\r\n" \
	"\r\n" \
	"v=0\n"

static int parse(const char *s, struct sip_msg **m)
{
	return sip_msg_parse(s, strlen(s), &LIM, m);
}

static struct sip_msg *parse_ok(const char *s)
{
	struct sip_msg *m = NULL;

	assert_int_equal(parse(s, &m), SIP_OK);
	assert_non_null(m);
	return m;
}

/* Asserts that parsing fails with err and frees whatever came back. */
static void parse_err(const char *s, int err, int want_partial)
{
	struct sip_msg *m = (struct sip_msg *)1;

	assert_int_equal(parse(s, &m), err);
	if (want_partial)
		assert_non_null(m);
	else
		assert_null(m);
	sip_msg_free(m);
}

static void assert_str(struct sip_str s, const char *want)
{
	if (!sip_str_eq(s, want))
		fail_msg("got \"%.*s\", want \"%s\"", (int)s.len, s.s ? s.s : "", want);
}

static char *write_msg(const struct sip_msg *m, size_t *len)
{
	size_t n = sip_msg_size(m);
	char *buf = malloc(n + 1);

	assert_non_null(buf);
	assert_int_equal(sip_msg_write(m, buf), n);
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* Writes m, parses the output and checks that nothing changed. */
static struct sip_msg *reparse_same(const struct sip_msg *m)
{
	size_t len;
	char *buf = write_msg(m, &len);
	struct sip_msg *r = NULL;

	assert_int_equal(sip_msg_parse(buf, len, &LIM, &r), SIP_OK);
	free(buf); buf = NULL;
	assert_int_equal(r->is_request, m->is_request);
	if (m->is_request) {
		assert_true(sip_str_caseeq2(r->method_name, m->method_name));
		assert_true(sip_str_caseeq2(r->ruri, m->ruri));
	} else {
		assert_int_equal(r->status, m->status);
	}
	assert_int_equal(r->nhdrs, m->nhdrs);
	for (unsigned i = 0; i < m->nhdrs; i++) {
		assert_int_equal(r->hdrs[i].id, m->hdrs[i].id);
		assert_true(sip_str_caseeq2(r->hdrs[i].name, m->hdrs[i].name));
		assert_int_equal(r->hdrs[i].value.len, m->hdrs[i].value.len);
		assert_memory_equal(r->hdrs[i].value.s, m->hdrs[i].value.s, m->hdrs[i].value.len);
	}
	assert_int_equal(r->body.len, m->body.len);
	return r;
}

/* ---- framing ---- */

static void test_frame_partial(void **state)
{
	(void)state;
	const char *msg = INVITE;
	size_t len = strlen(msg), used = 99;

	assert_int_equal(sip_frame(msg, 20, &LIM, &used), SIP_FRAME_MORE);
	assert_int_equal(used, 0);
	assert_int_equal(sip_frame(msg, len - 4, &LIM, &used), SIP_FRAME_MORE); /* no body */
	assert_int_equal(sip_frame(msg, len - 1, &LIM, &used), SIP_FRAME_MORE);
	assert_int_equal(sip_frame(msg, len, &LIM, &used), SIP_FRAME_MSG);
	assert_int_equal(used, len);
}

static void test_frame_pipelined(void **state)
{
	(void)state;
	const char *two = INVITE RL_OPT CORE "\r\n";
	size_t len = strlen(two), used;

	assert_int_equal(sip_frame(two, len, &LIM, &used), SIP_FRAME_MSG);
	assert_int_equal(used, strlen(INVITE));
	assert_int_equal(sip_frame(two + used, len - used, &LIM, &used), SIP_FRAME_MSG);
	assert_int_equal(used, strlen(RL_OPT CORE "\r\n")); /* no Content-Length: body 0 */
}

static void test_frame_keepalive(void **state)
{
	(void)state;
	size_t used;

	assert_int_equal(sip_frame("\r\n\r\nINVITE", 10, &LIM, &used), SIP_FRAME_PING);
	assert_int_equal(used, 4);
	assert_int_equal(sip_frame("\r\n", 2, &LIM, &used), SIP_FRAME_PONG);
	assert_int_equal(used, 2);
	assert_int_equal(sip_frame("\r\nOPTIONS", 9, &LIM, &used), SIP_FRAME_PONG);
	assert_int_equal(used, 2);
	assert_int_equal(sip_frame("\r\n\r", 3, &LIM, &used), SIP_FRAME_MORE);
	assert_int_equal(used, 0);
	assert_int_equal(sip_frame("\r", 1, &LIM, &used), SIP_FRAME_MORE);
}

static void test_frame_content_length(void **state)
{
	(void)state;
	size_t used;
	static const char *const bad[] = {
		RL_OPT "Content-Length: abc\r\n\r\n",
		RL_OPT "Content-Length: -1\r\n\r\n",
		RL_OPT "Content-Length:\r\n\r\n",
		RL_OPT "Content-Length: 1 2\r\n\r\n",
		RL_OPT "Content-Length: 99999999999999999999999\r\n\r\n",
		RL_OPT "Content-Length: 2\r\nl: 3\r\n\r\nabc",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sip_frame(bad[i], strlen(bad[i]), &LIM, &used), SIP_FRAME_BAD);

	const char *same = RL_OPT "Content-Length: 3\r\nL : 03\r\n\r\nabcX";
	assert_int_equal(sip_frame(same, strlen(same), &LIM, &used), SIP_FRAME_MSG);
	assert_int_equal(used, strlen(same) - 1);

	const char *folded = RL_OPT "content-LENGTH:\r\n  2\r\n\r\nab";
	assert_int_equal(sip_frame(folded, strlen(folded), &LIM, &used), SIP_FRAME_MSG);
	assert_int_equal(used, strlen(folded));

	/* a header that merely starts like Content-Length is not one */
	const char *other = RL_OPT "Content-Length-X: 5\r\nXl: 4\r\n\r\n";
	assert_int_equal(sip_frame(other, strlen(other), &LIM, &used), SIP_FRAME_MSG);
	assert_int_equal(used, strlen(other));
}

static void test_frame_too_large(void **state)
{
	(void)state;
	struct sip_limits small = { 64, 64, 8 };
	char big[200];
	size_t used = 99;

	memset(big, 'a', sizeof(big));
	assert_int_equal(sip_frame(big, 63, &small, &used), SIP_FRAME_MORE);
	assert_int_equal(sip_frame(big, 64, &small, &used), SIP_FRAME_TOO_LARGE);
	assert_int_equal(used, 0);

	const char *hdr = "OPTIONS sip:x SIP/2.0\r\nContent-Length: 100\r\n\r\n";
	assert_int_equal(sip_frame(hdr, strlen(hdr), &small, &used), SIP_FRAME_TOO_LARGE);
	assert_int_equal(used, strlen(hdr));

	const char *fits = "OPTIONS sip:x SIP/2.0\r\nl: 10\r\n\r\n0123456789";
	assert_int_equal(strlen(fits), 42);
	assert_int_equal(sip_frame(fits, strlen(fits), &small, &used), SIP_FRAME_MSG);
	assert_int_equal(used, 42);
}

/* ---- parsing ---- */

static void test_parse_request(void **state)
{
	(void)state;
	struct sip_msg *m = parse_ok(INVITE);

	assert_true(m->is_request);
	assert_int_equal(m->method, SIP_INVITE);
	assert_str(m->method_name, "INVITE");
	assert_str(m->ruri, "sip:bob@biloxi.example.com");
	assert_str(m->call_id, "3848276298220188511@atlanta.example.com");
	assert_str(m->from_tag, "9fxced76sl");
	assert_int_equal(m->to_tag.len, 0);
	assert_int_equal(m->cseq, 1);
	assert_int_equal(m->cseq_method, SIP_INVITE);
	assert_int_equal(m->max_forwards, 70);
	assert_str(m->body, "v=0\n");
	assert_int_equal(m->nhdrs, 11); /* Route split in two */
	assert_int_equal(sip_msg_count(m, SIP_HDR_ROUTE), 2);
	assert_int_equal(sip_msg_find(m, SIP_HDR_CONTENT_TYPE, 0), 9);
	assert_int_equal(sip_msg_find_name(m, "content-type", 0), 9);
	assert_int_equal(sip_msg_find(m, SIP_HDR_CONTENT_TYPE, 10), -1);
	sip_msg_free(m);
}

static void test_parse_response(void **state)
{
	(void)state;
	struct sip_msg *m = parse_ok("SIP/2.0 180 Ringing Now\r\n" VIA1 FROM
	                             "To: <sip:bob@b.example> ; TAG = xyz\r\n" CID "CSeq: 7 INVITE\r\n\r\n");
	assert_false(m->is_request);
	assert_int_equal(m->status, 180);
	assert_str(m->reason, "Ringing Now");
	assert_str(m->to_tag, "xyz");
	assert_int_equal(m->cseq_method, SIP_INVITE); /* no method check on responses */
	assert_int_equal(m->max_forwards, -1);
	sip_msg_free(m);

	m = parse_ok("sip/2.0 200\r\n" CORE "\r\n");
	assert_int_equal(m->status, 200);
	assert_int_equal(m->reason.len, 0);
	sip_msg_free(m);
}

static void test_parse_compact(void **state)
{
	(void)state;
	struct sip_msg *m = parse_ok(
		"MESSAGE sip:b@b.example SIP/2.0\r\n"
		"v: SIP/2.0/TLS h.example;branch=z9hG4bKc\r\n"
		"f: <sip:a@a.example>;tag=1\r\nT: sip:b@b.example\r\ni: cid\r\n"
		"CSeq: 2 MESSAGE\r\nc: text/plain\r\nm: <sip:a@10.0.0.1>\r\nk: path\r\n"
		"o: presence\r\nL: 2\r\n\r\nhi");

	assert_int_equal(m->method, SIP_MESSAGE);
	assert_int_equal(m->hdrs[0].id, SIP_HDR_VIA);
	assert_str(m->hdrs[0].name, "v");
	assert_int_equal(m->hdrs[2].id, SIP_HDR_TO);
	assert_int_equal(m->hdrs[3].id, SIP_HDR_CALL_ID);
	assert_int_equal(m->hdrs[5].id, SIP_HDR_CONTENT_TYPE);
	assert_int_equal(m->hdrs[6].id, SIP_HDR_CONTACT);
	assert_int_equal(m->hdrs[7].id, SIP_HDR_SUPPORTED);
	assert_int_equal(m->hdrs[8].id, SIP_HDR_EVENT);
	assert_int_equal(m->hdrs[9].id, SIP_HDR_CONTENT_LENGTH);
	assert_str(m->call_id, "cid");
	assert_int_equal(sip_msg_find_name(m, "Call-ID", 0), 3);
	assert_str(m->body, "hi");
	sip_msg_free(sip_msg_clone(m));
	sip_msg_free(reparse_same(m)); /* compact names are written as received */
	sip_msg_free(m);
}

static void test_parse_folded(void **state)
{
	(void)state;
	struct sip_msg *m = parse_ok(
		RL_OPT "Via: SIP/2.0/TCP\r\n   h.example\r\n\t;branch=z9hG4bKf\r\n"
		FROM TO CID CSEQ "Subject : I know you're there,\r\n pick up!  \r\n\r\n");
	struct sip_via v;
	int i = sip_msg_find_name(m, "subject", 0);

	assert_int_equal(m->nhdrs, 6);
	assert_int_equal(sip_via_parse(m->hdrs[0].value, &v), 0);
	assert_str(v.host, "h.example");
	assert_str(v.branch, "z9hG4bKf");
	assert_true(i >= 0);
	assert_str(m->hdrs[i].name, "Subject");
	assert_str(m->hdrs[i].value, "I know you're there,\r\n pick up!");
	sip_msg_free(reparse_same(m));
	sip_msg_free(m);
}

static void test_parse_split(void **state)
{
	(void)state;
	struct sip_msg *m = parse_ok(
		RL_OPT "Via: SIP/2.0/TCP a.example;branch=z9hG4bK1 ,SIP/2.0/UDP b.example,,\r\n"
		"v: SIP/2.0/TLS [2001:db8::1]:5061;received=\"x,y\"\r\n"
		FROM TO CID CSEQ
		"Route: \"Proxy, One\" <sip:p1.example;lr>, <sip:p2.example;x=\"a,b\">\r\n"
		"Record-Route: <sip:r1.example;lr>,<sip:r2.example?h=a,b>\r\n"
		"Contact: <sip:a@a.example>, <sip:b@a.example>\r\n\r\n");

	assert_int_equal(sip_msg_count(m, SIP_HDR_VIA), 3);
	assert_str(m->hdrs[0].value, "SIP/2.0/TCP a.example;branch=z9hG4bK1");
	assert_str(m->hdrs[1].value, "SIP/2.0/UDP b.example");
	assert_str(m->hdrs[1].name, "Via");
	assert_str(m->hdrs[2].value, "SIP/2.0/TLS [2001:db8::1]:5061;received=\"x,y\"");
	assert_str(m->hdrs[2].name, "v");
	int r = sip_msg_find(m, SIP_HDR_ROUTE, 0);
	assert_str(m->hdrs[r].value, "\"Proxy, One\" <sip:p1.example;lr>");
	assert_str(m->hdrs[r + 1].value, "<sip:p2.example;x=\"a,b\">");
	r = sip_msg_find(m, SIP_HDR_RECORD_ROUTE, 0);
	assert_str(m->hdrs[r].value, "<sip:r1.example;lr>");
	assert_str(m->hdrs[r + 1].value, "<sip:r2.example?h=a,b>");
	assert_int_equal(sip_msg_count(m, SIP_HDR_CONTACT), 1); /* not split */
	assert_int_equal(m->nhdrs, 12);
	sip_msg_free(reparse_same(m));
	sip_msg_free(m);
}

static void test_parse_limits(void **state)
{
	(void)state;
	struct sip_limits lim = { 4096, 60, 6 };
	struct sip_msg *m = NULL;
	char buf[512];

	snprintf(buf, sizeof(buf), RL_OPT CORE "Subject: %060d\r\n\r\n", 0);
	assert_int_equal(sip_msg_parse(buf, strlen(buf), &lim, &m), SIP_ERR_LINE_TOO_LONG);
	assert_non_null(m); /* partial: Via, From, To, Call-ID, CSeq are there */
	assert_int_equal(m->nhdrs, 5);
	sip_msg_free(m);

	/* folded lines count joined */
	snprintf(buf, sizeof(buf), RL_OPT CORE "Subject: %030d\r\n %030d\r\n\r\n", 0, 0);
	assert_int_equal(sip_msg_parse(buf, strlen(buf), &lim, &m), SIP_ERR_LINE_TOO_LONG);
	sip_msg_free(m);

	snprintf(buf, sizeof(buf), "OPTIONS sip:%060d SIP/2.0\r\n" CORE "\r\n", 0);
	assert_int_equal(sip_msg_parse(buf, strlen(buf), &lim, &m), SIP_ERR_LINE_TOO_LONG);
	assert_null(m);

	snprintf(buf, sizeof(buf), RL_OPT CORE "Max-Forwards: 1\r\n\r\n");
	assert_int_equal(sip_msg_parse(buf, strlen(buf), &lim, &m), SIP_OK);
	sip_msg_free(m);
	/* six lines, but seven headers once the Via is split */
	snprintf(buf, sizeof(buf), RL_OPT "Via: SIP/2.0/TCP a, SIP/2.0/TCP b\r\n"
	         FROM TO CID CSEQ "Max-Forwards: 1\r\n\r\n");
	assert_int_equal(sip_msg_parse(buf, strlen(buf), &lim, &m), SIP_ERR_TOO_MANY_HEADERS);
	assert_non_null(m);
	assert_int_equal(m->nhdrs, 6);
	sip_msg_free(m);

	lim.max_msg_bytes = strlen(buf) - 1;
	assert_int_equal(sip_msg_parse(buf, strlen(buf), &lim, &m), SIP_ERR_TOO_LARGE);
	assert_null(m);
}

static void test_parse_errors(void **state)
{
	(void)state;
	parse_err("", SIP_ERR_START_LINE, 0);
	parse_err("\r\n\r\n", SIP_ERR_START_LINE, 0);
	parse_err("hello\r\n" CORE "\r\n", SIP_ERR_START_LINE, 0);
	parse_err("OPTIONS  sip:b SIP/2.0\r\n" CORE "\r\n", SIP_ERR_START_LINE, 0);
	parse_err("OPT(ONS sip:b SIP/2.0\r\n" CORE "\r\n", SIP_ERR_START_LINE, 0);
	parse_err("OPTIONS sip:b HTTP/1.1\r\n" CORE "\r\n", SIP_ERR_START_LINE, 0);
	parse_err("OPTIONS sip:b SIP/2.0 x\r\n" CORE "\r\n", SIP_ERR_START_LINE, 0);
	parse_err("SIP/2.0 20 OK\r\n" CORE "\r\n", SIP_ERR_START_LINE, 0);
	parse_err("SIP/2.0 700 OK\r\n" CORE "\r\n", SIP_ERR_START_LINE, 0);
	parse_err("SIP/2.0 2000 OK\r\n" CORE "\r\n", SIP_ERR_START_LINE, 0);
	parse_err("OPTIONS sip:b SIP/3.0\r\n" CORE "\r\n", SIP_ERR_VERSION, 0);
	parse_err("SIP/2.1 200 OK\r\n" CORE "\r\n", SIP_ERR_VERSION, 0);

	parse_err(RL_OPT CORE "NoColon\r\n\r\n", SIP_ERR_HEADER, 1);
	parse_err(RL_OPT CORE "Bad Name: x\r\n\r\n", SIP_ERR_HEADER, 1);
	parse_err(RL_OPT CORE ": x\r\n\r\n", SIP_ERR_HEADER, 1);
	parse_err(RL_OPT " Via: x\r\n" CORE "\r\n", SIP_ERR_HEADER, 1);
	parse_err(RL_OPT CORE "X: a\nContent-Length: 5\r\n\r\n", SIP_ERR_HEADER, 1);
	parse_err(RL_OPT CORE "X: a\rb\r\n\r\n", SIP_ERR_HEADER, 1);
	parse_err(RL_OPT VIA1 FROM FROM TO CID CSEQ "\r\n", SIP_ERR_HEADER, 1);
	parse_err(RL_OPT VIA1 "From: nobody\r\n" TO CID CSEQ "\r\n", SIP_ERR_HEADER, 1);

	parse_err(RL_OPT FROM TO CID CSEQ "\r\n", SIP_ERR_MISSING, 1);
	parse_err(RL_OPT VIA1 TO CID CSEQ "\r\n", SIP_ERR_MISSING, 1);
	parse_err(RL_OPT VIA1 FROM CID CSEQ "\r\n", SIP_ERR_MISSING, 1);
	parse_err(RL_OPT VIA1 FROM TO CSEQ "\r\n", SIP_ERR_MISSING, 1);
	parse_err(RL_OPT VIA1 FROM TO CID "\r\n", SIP_ERR_MISSING, 1);
	parse_err(RL_OPT VIA1 FROM TO "Call-ID:\r\n" CSEQ "\r\n", SIP_ERR_MISSING, 1);

	parse_err(RL_OPT VIA1 FROM TO CID "CSeq: 7 INVITE\r\n\r\n", SIP_ERR_CSEQ, 1);
	parse_err(RL_OPT VIA1 FROM TO CID "CSeq: 7 options\r\n\r\n", SIP_ERR_CSEQ, 1);
	parse_err(RL_OPT VIA1 FROM TO CID "CSeq: x OPTIONS\r\n\r\n", SIP_ERR_CSEQ, 1);
	parse_err(RL_OPT VIA1 FROM TO CID "CSeq: 7OPTIONS\r\n\r\n", SIP_ERR_CSEQ, 1);
	parse_err(RL_OPT VIA1 FROM TO CID "CSeq: 7\r\n\r\n", SIP_ERR_CSEQ, 1);
	parse_err(RL_OPT VIA1 FROM TO CID "CSeq: 2147483648 OPTIONS\r\n\r\n", SIP_ERR_CSEQ, 1);
	parse_err(RL_OPT CORE CSEQ "\r\n", SIP_ERR_CSEQ, 1);
	struct sip_msg *m = parse_ok(RL_OPT VIA1 FROM TO CID "CSeq: 2147483647 OPTIONS\r\n\r\n");
	assert_int_equal(m->cseq, 2147483647u);
	sip_msg_free(m);

	parse_err(RL_OPT CORE "Max-Forwards: 256\r\n\r\n", SIP_ERR_MAX_FORWARDS, 1);
	parse_err(RL_OPT CORE "Max-Forwards: -1\r\n\r\n", SIP_ERR_MAX_FORWARDS, 1);
	parse_err(RL_OPT CORE "Max-Forwards: \r\n\r\n", SIP_ERR_MAX_FORWARDS, 1);
	parse_err(RL_OPT CORE "Max-Forwards: 1\r\nMax-Forwards: 70\r\n\r\n", SIP_ERR_MAX_FORWARDS, 1);
	m = parse_ok(RL_OPT CORE "Max-Forwards: 0\r\n\r\n");
	assert_int_equal(m->max_forwards, 0);
	sip_msg_free(m);

	parse_err(RL_OPT CORE "Content-Length: 3\r\n\r\nab", SIP_ERR_CONTENT_LENGTH, 1);
	parse_err(RL_OPT CORE "Content-Length: x\r\n\r\n", SIP_ERR_CONTENT_LENGTH, 1);
	parse_err(RL_OPT CORE "l: 2\r\nl: 1\r\n\r\nab", SIP_ERR_CONTENT_LENGTH, 1);

	parse_err(RL_OPT "Via: SIP/2.0/TCP\r\n" FROM TO CID CSEQ "\r\n", SIP_ERR_VIA, 1);
	parse_err(RL_OPT "Via: HTTP/1.1 h\r\n" FROM TO CID CSEQ "\r\n", SIP_ERR_VIA, 1);
	/* only the top Via must parse */
	sip_msg_free(parse_ok(RL_OPT VIA1 "Via: junk\r\n" FROM TO CID CSEQ "\r\n"));

	/* every code has its own text */
	for (int e = SIP_OK; e >= SIP_ERR_VIA; e--) {
		assert_string_not_equal(sip_strerror(e), "unknown error");
		for (int f = e - 1; f >= SIP_ERR_VIA; f--)
			assert_string_not_equal(sip_strerror(e), sip_strerror(f));
	}
	assert_string_equal(sip_strerror(-100), "unknown error");
}

static void test_parse_partial_for_400(void **state)
{
	(void)state;
	struct sip_msg *m = NULL;

	assert_int_equal(parse(RL_OPT CORE "Max-Forwards: lots\r\n\r\n", &m),
	                 SIP_ERR_MAX_FORWARDS);
	assert_non_null(m);
	struct sip_msg *r = sip_msg_response(m, 400, NULL, "t400");
	sip_msg_free(m); m = NULL;
	assert_non_null(r);
	assert_int_equal(r->status, 400);
	assert_str(r->reason, "Bad Request");
	assert_str(r->call_id, "c1@a.example");
	assert_str(r->to_tag, "t400");
	assert_int_equal(r->cseq, 7);
	sip_msg_free(reparse_same(r));
	sip_msg_free(r);
}

static void test_parse_hostile_sizes(void **state)
{
	(void)state;
	struct sip_limits big = { 6u << 20, 6u << 20, 200000 };
	size_t n = 5u << 20, len;
	char *buf = malloc(n + 256);
	struct sip_msg *m = NULL;

	/* one header folded 1,000,000 times */
	len = (size_t)sprintf(buf, RL_OPT CORE "Subject: x");
	while (len + 8 < n) {
		memcpy(buf + len, "\r\n y", 4);
		len += 4;
	}
	memcpy(buf + len, "\r\n\r\n", 4);
	len += 4;
	assert_int_equal(sip_msg_parse(buf, len, &big, &m), SIP_OK);
	assert_int_equal(m->nhdrs, 6);
	sip_msg_free(m);

	/* 150,000 Via entries on one line: limits apply after splitting */
	len = (size_t)sprintf(buf, RL_OPT "Via: SIP/2.0/TCP h");
	for (int i = 0; i < 150000; i++) {
		memcpy(buf + len, ",SIP/2.0/TCP h", 14);
		len += 14;
	}
	len += (size_t)sprintf(buf + len, "\r\n" FROM TO CID CSEQ "\r\n");
	assert_int_equal(sip_msg_parse(buf, len, &big, &m), SIP_OK);
	assert_int_equal(sip_msg_count(m, SIP_HDR_VIA), 150001);
	sip_msg_free(m);
	big.max_headers = 1000;
	assert_int_equal(sip_msg_parse(buf, len, &big, &m), SIP_ERR_TOO_MANY_HEADERS);
	assert_int_equal(m->nhdrs, 1000);
	sip_msg_free(m);
	free(buf); buf = NULL;
}

/* ---- value parsers ---- */

static void test_uri_parse(void **state)
{
	(void)state;
	struct sip_uri u;

	assert_int_equal(sip_uri_parse(SIP_STR_LIT("sip:alice@atlanta.com:5070;transport=tcp;lr?subject=x"), &u), 0);
	assert_str(u.scheme, "sip");
	assert_str(u.user, "alice");
	assert_str(u.host, "atlanta.com");
	assert_int_equal(u.port, 5070);
	assert_str(u.params, ";transport=tcp;lr");
	assert_str(u.headers, "subject=x");

	assert_int_equal(sip_uri_parse(SIP_STR_LIT("SIPS:user:pw@[2001:db8::2]:5061"), &u), 0);
	assert_str(u.user, "user");
	assert_str(u.host, "2001:db8::2");
	assert_int_equal(u.port, 5061);
	assert_int_equal(u.params.len, 0);

	assert_int_equal(sip_uri_parse(SIP_STR_LIT("sip:[::1]"), &u), 0);
	assert_str(u.host, "::1");
	assert_int_equal(u.port, 0);

	assert_int_equal(sip_uri_parse(SIP_STR_LIT("sip:example.com;maddr=10.0.0.1"), &u), 0);
	assert_int_equal(u.user.len, 0);
	assert_str(u.host, "example.com");
	assert_str(u.params, ";maddr=10.0.0.1");

	/* RFC 3261 19.1.3 / RFC 3966: ';' inside the user part */
	assert_int_equal(sip_uri_parse(SIP_STR_LIT("sip:1234;phone-context=+1212@gw.example;user=phone"), &u), 0);
	assert_str(u.user, "1234;phone-context=+1212");
	assert_str(u.host, "gw.example");
	assert_str(u.params, ";user=phone");
	/* '@' after '?' belongs to the headers */
	assert_int_equal(sip_uri_parse(SIP_STR_LIT("sip:h.example?Replaces=a@b"), &u), 0);
	assert_str(u.host, "h.example");
	assert_str(u.headers, "Replaces=a@b");

	static const char *const bad[] = {
		"tel:+15551234", "http://x", "sip:", "sip:@h", "sip:u@", "sip:h:0", "sip:h:65536",
		"sip:h:", "sip:h:12a", "sip:[::1", "sip:[zz]", "sip:h x", "sip:<h>", "sip:h!x", "sip",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct sip_str s = { bad[i], strlen(bad[i]) };
		if (sip_uri_parse(s, &u) != -1)
			fail_msg("accepted %s", bad[i]);
	}
	assert_int_equal(sip_uri_parse(SIP_STR_LIT("sip:h:65535"), &u), 0);
	assert_int_equal(u.port, 65535);
}

static void test_nameaddr_parse(void **state)
{
	(void)state;
	struct sip_nameaddr na;

	assert_int_equal(sip_nameaddr_parse(SIP_STR_LIT(" \"Bob \\\"B\\\" <x>\" <sip:bob@h> ;tag=1 "), &na), 0);
	assert_str(na.display, "Bob \\\"B\\\" <x>");
	assert_str(na.uri, "sip:bob@h");
	assert_str(na.params, ";tag=1");

	assert_int_equal(sip_nameaddr_parse(SIP_STR_LIT("Big Bob <sips:bob@h;transport=tls>"), &na), 0);
	assert_str(na.display, "Big Bob");
	assert_str(na.uri, "sips:bob@h;transport=tls");
	assert_int_equal(na.params.len, 0);

	assert_int_equal(sip_nameaddr_parse(SIP_STR_LIT("<tel:+1555>"), &na), 0);
	assert_int_equal(na.display.len, 0);
	assert_str(na.uri, "tel:+1555");

	/* addr-spec: parameters are the header's */
	assert_int_equal(sip_nameaddr_parse(SIP_STR_LIT("sip:bob@h;tag=88"), &na), 0);
	assert_str(na.uri, "sip:bob@h");
	assert_str(na.params, ";tag=88");

	static const char *const bad[] = {
		"", "  ", "\"open <sip:a@h>", "\"x\" sip:a@h", "<sip:a@h", "<sip:a@h> junk",
		"a\"b <sip:a@h>", "<>", "<nocolon>", "Bob sip:a@h", "<sip:a @h>",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct sip_str s = { bad[i], strlen(bad[i]) };
		if (sip_nameaddr_parse(s, &na) != -1)
			fail_msg("accepted %s", bad[i]);
	}
}

static void test_via_parse(void **state)
{
	(void)state;
	struct sip_via v;

	assert_int_equal(sip_via_parse(SIP_STR_LIT("SIP / 2.0 / UDP  h.example : 5060 ;branch=z9hG4bKx;rport;received=192.0.2.1"), &v), 0);
	assert_str(v.transport, "UDP");
	assert_str(v.host, "h.example");
	assert_int_equal(v.port, 5060);
	assert_str(v.branch, "z9hG4bKx");
	assert_str(v.received, "192.0.2.1");
	assert_true(v.has_rport);
	assert_int_equal(v.rport, 0);
	assert_str(v.params, ";branch=z9hG4bKx;rport;received=192.0.2.1");

	assert_int_equal(sip_via_parse(SIP_STR_LIT("sip/2.0/tls [2001:db8::9];rport=5062;received=2001:db8::1"), &v), 0);
	assert_str(v.transport, "tls");
	assert_str(v.host, "2001:db8::9");
	assert_int_equal(v.port, 0);
	assert_int_equal(v.rport, 5062);
	assert_str(v.received, "2001:db8::1");
	assert_int_equal(v.branch.len, 0);

	assert_int_equal(sip_via_parse(SIP_STR_LIT("SIP/2.0/TCP h"), &v), 0);
	assert_false(v.has_rport);
	assert_int_equal(v.params.len, 0);

	static const char *const bad[] = {
		"SIP/2.0/TCP", "SIP/2.0/TCP ", "SIP/2.0 TCP h", "SIP/1.0/TCP h", "SIP/2.0/TCPh",
		"SIP/2.0/TCP h:0", "SIP/2.0/TCP h:99999", "SIP/2.0/TCP h junk",
		"SIP/2.0/TCP h;rport=0", "SIP/2.0/TCP h;rport=x", "SIP/2.0/ h",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct sip_str s = { bad[i], strlen(bad[i]) };
		if (sip_via_parse(s, &v) != -1)
			fail_msg("accepted %s", bad[i]);
	}
}

static void test_param_get(void **state)
{
	(void)state;
	struct sip_str p = SIP_STR_LIT(";lr ; Transport = TCP;x=\"a;b=c\";\r\n Maddr=1.2.3.4;;flag");
	struct sip_str v;

	assert_int_equal(sip_param_get(p, "lr", &v), 1);
	assert_int_equal(v.len, 0);
	assert_int_equal(sip_param_get(p, "transport", &v), 1);
	assert_str(v, "TCP");
	assert_int_equal(sip_param_get(p, "X", &v), 1);
	assert_str(v, "\"a;b=c\"");
	assert_int_equal(sip_param_get(p, "b", &v), 0); /* inside the quotes */
	assert_int_equal(sip_param_get(p, "maddr", &v), 1);
	assert_str(v, "1.2.3.4");
	assert_int_equal(sip_param_get(p, "flag", &v), 1);
	assert_int_equal(sip_param_get(p, "fla", &v), 0);
	assert_int_equal(sip_param_get(p, "l", &v), 0);
	assert_int_equal(sip_param_get(SIP_STR_LIT("tag=5"), "tag", &v), 1);
	assert_str(v, "5");
	assert_int_equal(sip_param_get((struct sip_str){ NULL, 0 }, "tag", &v), 0);
}

static void test_uri_host_of(void **state)
{
	(void)state;
	struct sip_str h;

	assert_int_equal(sip_uri_host_of(SIP_STR_LIT("\"A\" <sip:a@Contoso.test>;tag=1"), &h), 0);
	assert_str(h, "Contoso.test");
	assert_int_equal(sip_uri_host_of(SIP_STR_LIT("sip:a@fabrikam.test;tag=1"), &h), 0);
	assert_str(h, "fabrikam.test");
	assert_int_equal(sip_uri_host_of(SIP_STR_LIT("sip:1;phone-context=x@gw.test;user=phone"), &h), 0);
	assert_str(h, "gw.test");
	assert_int_equal(sip_uri_host_of(SIP_STR_LIT("<sip:[2001:db8::5]:5061>"), &h), 0);
	assert_str(h, "2001:db8::5");
	assert_int_equal(sip_uri_host_of(SIP_STR_LIT("<tel:+1555>"), &h), -1);
	assert_int_equal(sip_uri_host_of(SIP_STR_LIT("\"x"), &h), -1);
}

static void test_names(void **state)
{
	(void)state;
	assert_int_equal(sip_method_from_str(SIP_STR_LIT("INVITE")), SIP_INVITE);
	assert_int_equal(sip_method_from_str(SIP_STR_LIT("invite")), SIP_METHOD_UNKNOWN);
	assert_int_equal(sip_method_from_str(SIP_STR_LIT("PUBLISH")), SIP_PUBLISH);
	assert_int_equal(sip_method_from_str(SIP_STR_LIT("INVITEX")), SIP_METHOD_UNKNOWN);
	assert_string_equal(sip_method_name(SIP_REFER), "REFER");
	assert_string_equal(sip_method_name(SIP_METHOD_UNKNOWN), "UNKNOWN");
	assert_string_equal(sip_method_name((enum sip_method)999), "UNKNOWN");
	assert_int_equal(sip_hdr_id_from_name(SIP_STR_LIT("record-ROUTE")), SIP_HDR_RECORD_ROUTE);
	assert_int_equal(sip_hdr_id_from_name(SIP_STR_LIT("I")), SIP_HDR_CALL_ID);
	assert_int_equal(sip_hdr_id_from_name(SIP_STR_LIT("x")), SIP_HDR_OTHER);
	assert_int_equal(sip_hdr_id_from_name(SIP_STR_LIT("Vias")), SIP_HDR_OTHER);
	assert_string_equal(sip_hdr_full_name(SIP_HDR_CALL_ID), "Call-ID");
	assert_null(sip_hdr_full_name(SIP_HDR_OTHER));
	assert_true(sip_str_caseeq(SIP_STR_LIT("AbC"), "aBc"));
	assert_false(sip_str_eq(SIP_STR_LIT("AbC"), "aBc"));
	assert_false(sip_str_caseeq(SIP_STR_LIT("AbC"), "aBcd"));
	assert_true(sip_str_caseeq2(SIP_STR_LIT("x-Y"), SIP_STR_LIT("X-y")));
}

/* ---- building and editing ---- */

static void test_response(void **state)
{
	(void)state;
	struct sip_msg *req = parse_ok(
		"INVITE sip:b@b.example SIP/2.0\r\n"
		"v: SIP/2.0/TLS p2.example;branch=z9hG4bK2, SIP/2.0/TCP p1.example;branch=z9hG4bK1\r\n"
		FROM TO CID "CSeq: 7 INVITE\r\nMax-Forwards: 9\r\nTimestamp: 54\r\n"
		"Content-Length: 0\r\n\r\n");
	struct sip_msg *r = sip_msg_response(req, 180, NULL, "uas1");

	assert_non_null(r);
	assert_false(r->is_request);
	assert_str(r->reason, "Ringing");
	assert_int_equal(r->nhdrs, 7);
	assert_int_equal(r->hdrs[0].id, SIP_HDR_VIA);
	assert_str(r->hdrs[0].name, "Via");
	assert_str(r->hdrs[0].value, "SIP/2.0/TLS p2.example;branch=z9hG4bK2");
	assert_str(r->hdrs[1].value, "SIP/2.0/TCP p1.example;branch=z9hG4bK1");
	assert_str(r->hdrs[3].value, "<sip:bob@b.example>;tag=uas1");
	assert_str(r->to_tag, "uas1");
	assert_str(r->from_tag, "ft");
	assert_int_equal(r->cseq_method, SIP_INVITE);
	assert_int_equal(sip_msg_find_name(r, "Timestamp", 0), -1);
	assert_int_equal(sip_msg_find(r, SIP_HDR_MAX_FORWARDS, 0), -1);
	assert_str(r->hdrs[6].value, "0");
	assert_int_equal(sip_msg_appendf(r, SIP_HDR_SERVER, NULL, "EdgePool/%d.%d", 1, 2), 0);
	sip_msg_free(req); req = NULL;

	size_t len;
	char *wire = write_msg(r, &len);
	assert_non_null(strstr(wire, "SIP/2.0 180 Ringing\r\nVia: SIP/2.0/TLS"));
	assert_non_null(strstr(wire, "\r\nServer: EdgePool/1.2\r\n\r\n"));
	free(wire); wire = NULL;
	sip_msg_free(reparse_same(r));
	sip_msg_free(r);

	/* 100 Trying: Timestamp copied, no tag; custom reason; tag kept once */
	req = parse_ok(RL_OPT VIA1 FROM "To: <sip:b@b.example>;tag=old\r\n" CID CSEQ
	               "Timestamp: 54\r\n\r\n");
	r = sip_msg_response(req, 100, NULL, "new");
	assert_str(r->reason, "Trying");
	assert_int_equal(sip_msg_find_name(r, "timestamp", 0), 5);
	assert_str(r->to_tag, "old");
	sip_msg_free(r);
	r = sip_msg_response(req, 486, "Busy, really", "new");
	assert_str(r->reason, "Busy, really");
	assert_str(r->hdrs[2].value, "<sip:b@b.example>;tag=old");
	sip_msg_free(r);
	r = sip_msg_response(req, 599, NULL, NULL);
	assert_str(r->reason, "Server Error");
	sip_msg_free(r);
	sip_msg_free(req);
}

static void test_edit_roundtrip(void **state)
{
	(void)state;
	struct sip_msg *m = parse_ok(INVITE);
	int i;

	assert_int_equal(sip_msg_insert(m, 0, SIP_HDR_VIA, NULL,
	                                "SIP/2.0/TLS edge.example;branch=z9hG4bKe", 40), 0);
	assert_str(m->hdrs[0].name, "Via");
	assert_int_equal(sip_msg_count(m, SIP_HDR_VIA), 2);
	i = sip_msg_find(m, SIP_HDR_ROUTE, 0);
	sip_msg_remove(m, (unsigned)i);
	assert_int_equal(sip_msg_count(m, SIP_HDR_ROUTE), 1);
	assert_str(m->hdrs[i].value, "<sip:p2.example;lr>");
	sip_msg_remove(m, 1000); /* out of range: nothing */
	assert_int_equal(sip_msg_set_value(m, (unsigned)i, "<sip:p3.example;lr>", 19), 0);
	assert_int_equal(sip_msg_set_value(m, 1000, "x", 1), SIP_ERR_HEADER);
	assert_int_equal(sip_msg_set_ruri(m, "sip:bob@10.0.0.7:5060;transport=tcp", 35), 0);
	assert_int_equal(sip_msg_set_max_forwards(m, 69), 0);
	assert_int_equal(m->max_forwards, 69);
	assert_int_equal(sip_msg_append(m, SIP_HDR_OTHER, "X-Edge", "1", 1), 0);
	assert_int_equal(sip_msg_append(m, SIP_HDR_OTHER, "record-route", "<sip:e;lr>", 10), 0);
	assert_int_equal(m->hdrs[m->nhdrs - 1].id, SIP_HDR_RECORD_ROUTE);
	assert_int_equal(sip_msg_insert(m, 9999, SIP_HDR_OTHER, "X-Last", "", 0), 0);
	assert_str(m->hdrs[m->nhdrs - 1].name, "X-Last");
	assert_int_equal(sip_msg_insert(m, 0, SIP_HDR_OTHER, NULL, "x", 1), SIP_ERR_HEADER);

	struct sip_msg *r = reparse_same(m);
	assert_str(r->ruri, "sip:bob@10.0.0.7:5060;transport=tcp");
	assert_int_equal(r->max_forwards, 69);
	assert_str(r->hdrs[0].value, "SIP/2.0/TLS edge.example;branch=z9hG4bKe");
	assert_str(r->hdrs[i].value, "<sip:p3.example;lr>");
	assert_str(r->body, "v=0\n");
	sip_msg_free(r);

	/* Max-Forwards added when absent */
	sip_msg_remove(m, (unsigned)sip_msg_find(m, SIP_HDR_MAX_FORWARDS, 0));
	assert_int_equal(sip_msg_set_max_forwards(m, 70), 0);
	i = sip_msg_find(m, SIP_HDR_MAX_FORWARDS, 0);
	assert_int_equal(i, (int)m->nhdrs - 1);
	assert_str(m->hdrs[i].value, "70");
	assert_str(m->hdrs[i].name, "Max-Forwards");

	/* a message without Content-Length is written without one */
	sip_msg_remove(m, (unsigned)sip_msg_find(m, SIP_HDR_CONTENT_LENGTH, 0));
	size_t len;
	char *wire = write_msg(m, &len);
	assert_null(strstr(wire, "Content-Length"));
	assert_memory_equal(wire + len - 8, "\r\n\r\nv=0\n", 8);
	free(wire); wire = NULL;
	sip_msg_free(m);
}

static void test_clone(void **state)
{
	(void)state;
	struct sip_msg *m = parse_ok(INVITE);
	char big[3000];

	memset(big, 'b', sizeof(big));
	assert_int_equal(sip_msg_append(m, SIP_HDR_OTHER, "X-Big", big, sizeof(big)), 0);
	assert_int_equal(sip_msg_set_ruri(m, "sip:new@h", 9), 0);
	m->body = sip_msg_strdup(m, "new body", 8);
	assert_int_equal(sip_msg_set_value(m, (unsigned)sip_msg_find(m, SIP_HDR_CONTENT_LENGTH, 0), "8", 1), 0);

	size_t len1, len2;
	char *before = write_msg(m, &len1);
	struct sip_msg *c = sip_msg_clone(m);
	assert_non_null(c);
	assert_ptr_not_equal(c->raw, m->raw);
	sip_msg_free(m); m = NULL;

	char *after = write_msg(c, &len2);
	assert_int_equal(len1, len2);
	assert_memory_equal(before, after, len1);
	assert_str(c->call_id, "3848276298220188511@atlanta.example.com");
	assert_str(c->from_tag, "9fxced76sl");
	assert_str(c->cseq_method_name, "INVITE");
	assert_str(c->ruri, "sip:new@h");
	assert_int_equal(sip_msg_append(c, SIP_HDR_OTHER, "X-After", "1", 1), 0);
	struct sip_msg *r = reparse_same(c);
	sip_msg_free(r);
	/* a clone of a built response: everything lives in the arena */
	r = sip_msg_response(c, 200, NULL, "t");
	struct sip_msg *rc = sip_msg_clone(r);
	sip_msg_free(r); r = NULL;
	assert_str(rc->to_tag, "t");
	assert_str(rc->reason, "OK");
	sip_msg_free(reparse_same(rc));
	sip_msg_free(rc);
	sip_msg_free(c);
	free(before); before = NULL;
	free(after); after = NULL;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_frame_partial),
		cmocka_unit_test(test_frame_pipelined),
		cmocka_unit_test(test_frame_keepalive),
		cmocka_unit_test(test_frame_content_length),
		cmocka_unit_test(test_frame_too_large),
		cmocka_unit_test(test_parse_request),
		cmocka_unit_test(test_parse_response),
		cmocka_unit_test(test_parse_compact),
		cmocka_unit_test(test_parse_folded),
		cmocka_unit_test(test_parse_split),
		cmocka_unit_test(test_parse_limits),
		cmocka_unit_test(test_parse_errors),
		cmocka_unit_test(test_parse_partial_for_400),
		cmocka_unit_test(test_parse_hostile_sizes),
		cmocka_unit_test(test_uri_parse),
		cmocka_unit_test(test_nameaddr_parse),
		cmocka_unit_test(test_via_parse),
		cmocka_unit_test(test_param_get),
		cmocka_unit_test(test_uri_host_of),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_response),
		cmocka_unit_test(test_edit_roundtrip),
		cmocka_unit_test(test_clone),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
