#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "sip_msg.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- Character classes and spans ---------------------------------------- */

static int is_ws(char c) { return c == ' ' || c == '\t'; }

/* Folded values keep their CRLF, so sub-parsers skip CR and LF as blanks. */
static int is_lws(char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; }

static int is_digit(char c) { return c >= '0' && c <= '9'; }

static char lower(char c) { return (c >= 'A' && c <= 'Z') ? (char)(c - 'A' + 'a') : c; }

static int is_alnum(char c) { return is_digit(c) || (lower(c) >= 'a' && lower(c) <= 'z'); }

static int is_xdigit(char c) { return is_digit(c) || (lower(c) >= 'a' && lower(c) <= 'f'); }

/* RFC 3261 25.1 token. */
static int is_token_char(char c)
{
	return is_alnum(c) || (c != '\0' && strchr("-.!%*_+`'~", c) != NULL);
}

/* '_' is not in the grammar but real deployments use it in host names. */
static int is_host_char(char c) { return is_alnum(c) || c == '-' || c == '.' || c == '_'; }

static int caseeq_n(const char *a, const char *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (lower(a[i]) != lower(b[i]))
			return 0;
	return 1;
}

static struct sip_str span(const char *s, const char *e)
{
	return (struct sip_str){ s, (size_t)(e - s) };
}

/* The end of a span; never offsets a NULL pointer (UB even by zero). */
static const char *end_of(struct sip_str v)
{
	return v.len ? v.s + v.len : v.s;
}

static int span_eq(struct sip_str a, struct sip_str b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.s, b.s, a.len) == 0);
}

static const char *skip_lws(const char *p, const char *e)
{
	while (p < e && is_lws(*p))
		p++;
	return p;
}

static struct sip_str trim(struct sip_str v)
{
	const char *s = v.s, *e = end_of(v);
	s = skip_lws(s, e);
	while (e > s && is_lws(e[-1]))
		e--;
	return span(s, e);
}

/* The end of a quoted string that starts at p ('"'), or NULL when unterminated. */
static const char *skip_quoted(const char *p, const char *e)
{
	for (p++; p < e; p++) {
		if (*p == '\\' && p + 1 < e)
			p++;
		else if (*p == '"')
			return p + 1;
	}
	return NULL;
}

/*
 * Reads 1*DIGIT from p, refusing values above max (so never overflows).
 * Returns the position after the digits, or NULL.
 */
static const char *parse_dec(const char *p, const char *e, uint64_t max, uint64_t *out)
{
	const char *s = p;
	uint64_t v = 0;

	for (; p < e && is_digit(*p); p++) {
		unsigned d = (unsigned)(*p - '0');
		if (v > (max - d) / 10)
			return NULL;
		v = v * 10 + d;
	}
	if (p == s)
		return NULL;
	*out = v;
	return p;
}

/* A whole (trimmed) value that must be a number, as Content-Length is. */
static int parse_number(struct sip_str v, uint64_t max, uint64_t *out)
{
	v = trim(v);
	return v.len && parse_dec(v.s, end_of(v), max, out) == end_of(v) ? 0 : -1;
}

int sip_str_eq(struct sip_str a, const char *lit)
{
	return span_eq(a, (struct sip_str){ lit, strlen(lit) });
}

int sip_str_caseeq(struct sip_str a, const char *lit)
{
	size_t n = strlen(lit);
	return a.len == n && caseeq_n(a.s, lit, n);
}

int sip_str_caseeq2(struct sip_str a, struct sip_str b)
{
	return a.len == b.len && caseeq_n(a.s, b.s, a.len);
}

/* ---- Names: methods, headers, errors, reasons ----------------------------- */

static const char *const method_names[] = {
	[SIP_METHOD_UNKNOWN] = "UNKNOWN",
	[SIP_INVITE] = "INVITE",       [SIP_ACK] = "ACK",
	[SIP_BYE] = "BYE",             [SIP_CANCEL] = "CANCEL",
	[SIP_OPTIONS] = "OPTIONS",     [SIP_REGISTER] = "REGISTER",
	[SIP_MESSAGE] = "MESSAGE",     [SIP_SUBSCRIBE] = "SUBSCRIBE",
	[SIP_NOTIFY] = "NOTIFY",       [SIP_INFO] = "INFO",
	[SIP_UPDATE] = "UPDATE",       [SIP_PRACK] = "PRACK",
	[SIP_REFER] = "REFER",         [SIP_PUBLISH] = "PUBLISH",
};
#define NMETHODS (sizeof(method_names) / sizeof(method_names[0]))

enum sip_method sip_method_from_str(struct sip_str token)
{
	for (unsigned i = 1; i < NMETHODS; i++)
		if (sip_str_eq(token, method_names[i]))
			return (enum sip_method)i;
	return SIP_METHOD_UNKNOWN;
}

const char *sip_method_name(enum sip_method m)
{
	return (unsigned)m < NMETHODS ? method_names[m] : method_names[0];
}

static const struct {
	const char *name;
	char compact; /* RFC 3261 20 / 7.3.3, 0 when none */
} hdr_names[] = {
	[SIP_HDR_OTHER] = { NULL, 0 },
	[SIP_HDR_VIA] = { "Via", 'v' },                   [SIP_HDR_FROM] = { "From", 'f' },
	[SIP_HDR_TO] = { "To", 't' },                     [SIP_HDR_CALL_ID] = { "Call-ID", 'i' },
	[SIP_HDR_CSEQ] = { "CSeq", 0 },                   [SIP_HDR_MAX_FORWARDS] = { "Max-Forwards", 0 },
	[SIP_HDR_CONTENT_LENGTH] = { "Content-Length", 'l' },
	[SIP_HDR_CONTENT_TYPE] = { "Content-Type", 'c' }, [SIP_HDR_CONTACT] = { "Contact", 'm' },
	[SIP_HDR_ROUTE] = { "Route", 0 },                 [SIP_HDR_RECORD_ROUTE] = { "Record-Route", 0 },
	[SIP_HDR_PROXY_REQUIRE] = { "Proxy-Require", 0 }, [SIP_HDR_REQUIRE] = { "Require", 0 },
	[SIP_HDR_SUPPORTED] = { "Supported", 'k' },       [SIP_HDR_EVENT] = { "Event", 'o' },
	[SIP_HDR_WARNING] = { "Warning", 0 },             [SIP_HDR_REASON] = { "Reason", 0 },
	[SIP_HDR_RETRY_AFTER] = { "Retry-After", 0 },     [SIP_HDR_SERVER] = { "Server", 0 },
	[SIP_HDR_USER_AGENT] = { "User-Agent", 0 },       [SIP_HDR_ALLOW] = { "Allow", 0 },
	[SIP_HDR_UNSUPPORTED] = { "Unsupported", 0 },
};
#define NHDRNAMES (sizeof(hdr_names) / sizeof(hdr_names[0]))

enum sip_hdr_id sip_hdr_id_from_name(struct sip_str name)
{
	for (unsigned i = 1; i < NHDRNAMES; i++) {
		if (name.len == 1 && hdr_names[i].compact && lower(name.s[0]) == hdr_names[i].compact)
			return (enum sip_hdr_id)i;
		if (sip_str_caseeq(name, hdr_names[i].name))
			return (enum sip_hdr_id)i;
	}
	return SIP_HDR_OTHER;
}

const char *sip_hdr_full_name(enum sip_hdr_id id)
{
	return (unsigned)id < NHDRNAMES ? hdr_names[id].name : NULL;
}

const char *sip_strerror(int err)
{
	static const char *const texts[] = {
		"success", "bad start line", "unsupported SIP version", "malformed header",
		"line too long", "too many headers", "missing mandatory header", "bad CSeq",
		"bad Max-Forwards", "bad Content-Length", "message too large", "out of memory",
		"bad Via",
	};

	return err <= 0 && -err < (int)(sizeof(texts) / sizeof(texts[0])) ? texts[-err] : "unknown error";
}

static const struct {
	unsigned code;
	const char *text;
} reasons[] = {
	{ 100, "Trying" }, { 180, "Ringing" }, { 181, "Call Is Being Forwarded" },
	{ 182, "Queued" }, { 183, "Session Progress" }, { 199, "Early Dialog Terminated" },
	{ 200, "OK" }, { 202, "Accepted" }, { 204, "No Notification" },
	{ 300, "Multiple Choices" }, { 301, "Moved Permanently" },
	{ 302, "Moved Temporarily" }, { 305, "Use Proxy" }, { 380, "Alternative Service" },
	{ 400, "Bad Request" }, { 401, "Unauthorized" }, { 402, "Payment Required" },
	{ 403, "Forbidden" }, { 404, "Not Found" }, { 405, "Method Not Allowed" },
	{ 406, "Not Acceptable" }, { 407, "Proxy Authentication Required" },
	{ 408, "Request Timeout" }, { 410, "Gone" }, { 412, "Conditional Request Failed" },
	{ 413, "Request Entity Too Large" }, { 414, "Request-URI Too Long" },
	{ 415, "Unsupported Media Type" }, { 416, "Unsupported URI Scheme" },
	{ 420, "Bad Extension" }, { 421, "Extension Required" },
	{ 423, "Interval Too Brief" }, { 429, "Provide Referrer Identity" },
	{ 480, "Temporarily Unavailable" }, { 481, "Call/Transaction Does Not Exist" },
	{ 482, "Loop Detected" }, { 483, "Too Many Hops" }, { 484, "Address Incomplete" },
	{ 485, "Ambiguous" }, { 486, "Busy Here" }, { 487, "Request Terminated" },
	{ 488, "Not Acceptable Here" }, { 489, "Bad Event" }, { 491, "Request Pending" },
	{ 493, "Undecipherable" }, { 494, "Security Agreement Required" },
	{ 500, "Server Internal Error" }, { 501, "Not Implemented" },
	{ 502, "Bad Gateway" }, { 503, "Service Unavailable" }, { 504, "Server Time-out" },
	{ 505, "Version Not Supported" }, { 513, "Message Too Large" },
	{ 580, "Precondition Failure" }, { 600, "Busy Everywhere" }, { 603, "Decline" },
	{ 604, "Does Not Exist Anywhere" }, { 606, "Not Acceptable" },
};

static const char *default_reason(unsigned code)
{
	static const char *const by_class[] = {
		"Unknown", "Provisional", "Success", "Redirection",
		"Client Error", "Server Error", "Global Failure",
	};

	for (size_t i = 0; i < sizeof(reasons) / sizeof(reasons[0]); i++)
		if (reasons[i].code == code)
			return reasons[i].text;
	return code >= 100 && code < 700 ? by_class[code / 100] : by_class[0];
}

/* ---- Arena ------------------------------------------------------------------ */

#define ARENA_MIN 1024

/* One block of the chain; m->arena points to the block currently filled. */
struct sip_arena {
	struct sip_arena *next;
	size_t used, cap;
	char data[];
};

static char *arena_alloc(struct sip_msg *m, size_t n)
{
	struct sip_arena *a = m->arena, *b;
	size_t cap = n > ARENA_MIN ? n : ARENA_MIN;

	if (a && a->cap - a->used >= n) {
		char *p = a->data + a->used;
		a->used += n;
		return p;
	}
	if (cap > SIZE_MAX - sizeof(*b))
		return NULL;
	b = malloc(sizeof(*b) + cap);
	if (!b)
		return NULL;
	b->cap = cap;
	b->used = n;
	/* A big string gets a block of its own behind the current one, so the
	 * free room of the current block still serves the small strings. */
	if (a && n >= ARENA_MIN) {
		b->next = a->next;
		a->next = b;
	} else {
		b->next = a;
		m->arena = b;
	}
	return b->data;
}

struct sip_str sip_msg_strdup(struct sip_msg *m, const char *s, size_t len)
{
	char *d;

	if (len == SIZE_MAX || !(d = arena_alloc(m, len + 1)))
		return (struct sip_str){ NULL, 0 };
	if (len)
		memcpy(d, s, len);
	d[len] = '\0'; /* handy for callers that need a C string */
	return (struct sip_str){ d, len };
}

/* ---- Framing (RFC 3261 18.3, RFC 5626 3.5.1) -------------------------------- */

static const char *find_crlf(const char *p, const char *e)
{
	while (p < e && (p = memchr(p, '\r', (size_t)(e - p))) != NULL) {
		if (p + 1 < e && p[1] == '\n')
			return p;
		p++;
	}
	return NULL;
}

/* When the line at p is a Content-Length header, the start of its value. */
static const char *content_length_value(const char *p, const char *eol)
{
	const char *n = p;

	while (n < eol && is_token_char(*n))
		n++;
	struct sip_str name = span(p, n);
	if (!sip_str_caseeq(name, "content-length") && !sip_str_caseeq(name, "l"))
		return NULL;
	while (n < eol && is_ws(*n))
		n++;
	return n < eol && *n == ':' ? n + 1 : NULL;
}

/*
 * Reads every Content-Length of the header block [p, e), start line
 * included; e is just past the CRLF of the last header line.
 */
static int frame_body_len(const char *p, const char *e, uint64_t *body)
{
	const char *eol = find_crlf(p, e);
	int seen = 0;

	*body = 0;
	for (p = eol ? eol + 2 : e; p < e; p = eol < e ? eol + 2 : e) {
		const char *v;
		uint64_t n;

		if (!(eol = find_crlf(p, e)))
			eol = e;
		if (!(v = content_length_value(p, eol)))
			continue;
		while (eol + 2 < e && is_ws(eol[2])) { /* folded value */
			const char *next = find_crlf(eol + 2, e);
			eol = next ? next : e;
		}
		if (parse_number(span(v, eol), UINT64_MAX, &n) < 0 || (seen && n != *body))
			return -1;
		*body = n;
		seen = 1;
	}
	return 0;
}

enum sip_frame_result sip_frame(const char *buf, size_t len,
                                const struct sip_limits *lim, size_t *consumed)
{
	size_t window = len < lim->max_msg_bytes ? len : lim->max_msg_bytes;
	const char *he;
	uint64_t body;
	size_t hlen;

	*consumed = 0;
	if (len == 0)
		return lim->max_msg_bytes ? SIP_FRAME_MORE : SIP_FRAME_TOO_LARGE;
	if (len >= 2 && buf[0] == '\r' && buf[1] == '\n') {
		if (len >= 4 && buf[2] == '\r' && buf[3] == '\n') {
			*consumed = 4;
			return SIP_FRAME_PING;
		}
		if (len == 3 && buf[2] == '\r')
			return SIP_FRAME_MORE; /* the first bytes of a ping */
		*consumed = 2;
		return SIP_FRAME_PONG;
	}
	/* Searching only the first max_msg_bytes bytes keeps the answer the same
	 * however the stream was cut into reads. */
	he = memmem(buf, window, "\r\n\r\n", 4);
	if (!he)
		return len >= lim->max_msg_bytes ? SIP_FRAME_TOO_LARGE : SIP_FRAME_MORE;
	hlen = (size_t)(he - buf) + 4;
	if (frame_body_len(buf, he + 2, &body) < 0)
		return SIP_FRAME_BAD;
	if (body > lim->max_msg_bytes - hlen) {
		*consumed = hlen;
		return SIP_FRAME_TOO_LARGE;
	}
	if (len - hlen < body)
		return SIP_FRAME_MORE;
	*consumed = hlen + (size_t)body;
	return SIP_FRAME_MSG;
}

/* ---- Header array ------------------------------------------------------------ */

static int hdr_insert(struct sip_msg *m, unsigned pos, enum sip_hdr_id id,
                      struct sip_str name, struct sip_str value)
{
	if (m->nhdrs == m->hdr_cap) {
		unsigned cap = m->hdr_cap ? m->hdr_cap * 2 : 16;
		size_t bytes = (size_t)cap * sizeof(m->hdrs[0]);
		struct sip_hdr *h;

		if (cap <= m->hdr_cap || bytes / sizeof(m->hdrs[0]) != cap)
			return SIP_ERR_NOMEM;
		if (!(h = realloc(m->hdrs, bytes)))
			return SIP_ERR_NOMEM;
		m->hdrs = h;
		m->hdr_cap = cap;
	}
	if (pos > m->nhdrs)
		pos = m->nhdrs;
	memmove(&m->hdrs[pos + 1], &m->hdrs[pos], (m->nhdrs - pos) * sizeof(m->hdrs[0]));
	m->hdrs[pos] = (struct sip_hdr){ id, name, value };
	m->nhdrs++;
	return 0;
}

int sip_msg_find(const struct sip_msg *m, enum sip_hdr_id id, int start)
{
	for (unsigned i = start > 0 ? (unsigned)start : 0; i < m->nhdrs; i++)
		if (m->hdrs[i].id == id)
			return (int)i;
	return -1;
}

int sip_msg_find_name(const struct sip_msg *m, const char *name, int start)
{
	struct sip_str n = { name, strlen(name) };
	enum sip_hdr_id id = sip_hdr_id_from_name(n);

	/* A known header is found under its compact name as well. */
	if (id != SIP_HDR_OTHER)
		return sip_msg_find(m, id, start);
	for (unsigned i = start > 0 ? (unsigned)start : 0; i < m->nhdrs; i++)
		if (m->hdrs[i].id == SIP_HDR_OTHER && sip_str_caseeq2(m->hdrs[i].name, n))
			return (int)i;
	return -1;
}

unsigned sip_msg_count(const struct sip_msg *m, enum sip_hdr_id id)
{
	unsigned n = 0;

	for (unsigned i = 0; i < m->nhdrs; i++)
		n += m->hdrs[i].id == id;
	return n;
}

/* ---- Message parser ---------------------------------------------------------- */

/*
 * Finds the end of the logical header line at p: the first CRLF that is not
 * followed by SP or HT. Bare CR, bare LF and NUL are refused: a downstream
 * parser could read them as line ends that this one did not see.
 */
static int header_line(const char *p, const char *e, const char **eol, const char **next)
{
	for (const char *q = p; q < e; q++) {
		if (*q == '\n' || *q == '\0')
			return -1;
		if (*q != '\r')
			continue;
		if (q + 1 >= e || q[1] != '\n')
			return -1;
		if (q + 2 < e && is_ws(q[2])) {
			q++;
			continue;
		}
		*eol = q;
		*next = q + 2;
		return 0;
	}
	*eol = *next = e;
	return 0;
}

static int is_sip20(const char *p, const char *e)
{
	return e - p == 7 && caseeq_n(p, "SIP/2.0", 7);
}

/* Request-Line or Status-Line (RFC 3261 7.1, 7.2), CRLF excluded. */
static int parse_start_line(struct sip_msg *m, const char *p, const char *e)
{
	const char *sp1, *sp2, *q;

	for (q = p; q < e; q++)
		if ((unsigned char)*q < 0x20 && *q != '\t')
			return SIP_ERR_START_LINE;
	sp1 = memchr(p, ' ', (size_t)(e - p));
	if (e - p >= 4 && caseeq_n(p, "SIP/", 4)) {
		if (!sp1 || !is_sip20(p, sp1))
			return sp1 ? SIP_ERR_VERSION : SIP_ERR_START_LINE;
		q = sp1 + 1;
		if (e - q < 3 || !is_digit(q[0]) || !is_digit(q[1]) || !is_digit(q[2]) ||
		    q[0] < '1' || q[0] > '6' || (e - q > 3 && q[3] != ' '))
			return SIP_ERR_START_LINE;
		m->status = (unsigned)((q[0] - '0') * 100 + (q[1] - '0') * 10 + (q[2] - '0'));
		m->reason = e - q > 3 ? span(q + 4, e) : (struct sip_str){ NULL, 0 };
		m->is_request = 0;
		return 0;
	}
	if (!sp1 || sp1 == p || !(sp2 = memchr(sp1 + 1, ' ', (size_t)(e - sp1 - 1))) ||
	    sp2 == sp1 + 1)
		return SIP_ERR_START_LINE;
	for (q = p; q < sp1; q++)
		if (!is_token_char(*q))
			return SIP_ERR_START_LINE;
	if (e - sp2 - 1 < 4 || !caseeq_n(sp2 + 1, "SIP/", 4) || memchr(sp2 + 1, ' ', (size_t)(e - sp2 - 1)))
		return SIP_ERR_START_LINE;
	if (!is_sip20(sp2 + 1, e))
		return SIP_ERR_VERSION;
	m->is_request = 1;
	m->method_name = span(p, sp1);
	m->method = sip_method_from_str(m->method_name);
	m->ruri = span(sp1 + 1, sp2);
	return 0;
}

static int add_one(struct sip_msg *m, enum sip_hdr_id id, struct sip_str name,
                   struct sip_str value, const struct sip_limits *lim)
{
	if (m->nhdrs >= lim->max_headers)
		return SIP_ERR_TOO_MANY_HEADERS;
	return hdr_insert(m, m->nhdrs, id, name, value);
}

/*
 * Adds one header line; Via, Route and Record-Route are split at commas
 * outside quotes and angle brackets, so that a proxy pops single entries.
 */
static int add_parsed_header(struct sip_msg *m, enum sip_hdr_id id, struct sip_str name,
                             struct sip_str value, const struct sip_limits *lim)
{
	const char *p = value.s, *e = end_of(value), *start = p;
	int in_angle = 0, rc;

	if (id != SIP_HDR_VIA && id != SIP_HDR_ROUTE && id != SIP_HDR_RECORD_ROUTE)
		return add_one(m, id, name, value, lim);
	for (;; p++) {
		if (p == e || (*p == ',' && !in_angle)) {
			struct sip_str piece = trim(span(start, p));
			/* ",," or a trailing comma holds nothing to keep */
			if (piece.len && (rc = add_one(m, id, name, piece, lim)) < 0)
				return rc;
			if (p == e)
				return 0;
			start = p + 1;
		} else if (*p == '"') {
			const char *q = skip_quoted(p, e);
			p = (q ? q : e) - 1; /* an open quote runs to the end */
		} else if (*p == '<') {
			in_angle = 1;
		} else if (*p == '>') {
			in_angle = 0;
		}
	}
}

static int parse_headers(struct sip_msg *m, const char *p, const char *e,
                         const struct sip_limits *lim)
{
	while (p < e) {
		const char *eol, *next, *n = p;
		int rc;

		if (header_line(p, e, &eol, &next) < 0)
			return SIP_ERR_HEADER;
		if ((size_t)(eol - p) > lim->max_line_bytes)
			return SIP_ERR_LINE_TOO_LONG;
		while (n < eol && is_token_char(*n))
			n++;
		struct sip_str name = span(p, n);
		while (n < eol && is_ws(*n))
			n++;
		if (name.len == 0 || n == eol || *n != ':')
			return SIP_ERR_HEADER;
		struct sip_str value = trim(span(n + 1, eol));
		rc = add_parsed_header(m, sip_hdr_id_from_name(name), name, value, lim);
		if (rc < 0)
			return rc;
		p = next;
	}
	return 0;
}

/* The tag parameter of a From or To value. */
static int header_tag(struct sip_str value, struct sip_str *tag)
{
	struct sip_nameaddr na;

	*tag = (struct sip_str){ NULL, 0 };
	if (sip_nameaddr_parse(value, &na) < 0)
		return -1;
	sip_param_get(na.params, "tag", tag);
	return 0;
}

/* CSeq = 1*DIGIT LWS Method (RFC 3261 20.16); the number is below 2^31. */
static int parse_cseq(struct sip_str value, uint32_t *num, struct sip_str *method)
{
	struct sip_str v = trim(value);
	const char *e = end_of(v), *p, *q;
	uint64_t n;

	if (!v.len || !(p = parse_dec(v.s, e, 0x7fffffff, &n)))
		return -1;
	q = skip_lws(p, e);
	if (q == p || q == e)
		return -1;
	for (p = q; p < e; p++)
		if (!is_token_char(*p))
			return -1;
	*num = (uint32_t)n;
	*method = span(q, e);
	return 0;
}

/* A second From, To, Call-ID, CSeq or Max-Forwards could let two hops see
 * two different dialogs or hop counts: refuse it. */
static int single(const struct sip_msg *m, enum sip_hdr_id id, int *idx)
{
	*idx = sip_msg_find(m, id, 0);
	return *idx < 0 || sip_msg_find(m, id, *idx + 1) < 0;
}

/* Fills the transaction fields and runs the checks of sip_msg_parse(). */
static int check_core(struct sip_msg *m)
{
	int via = sip_msg_find(m, SIP_HDR_VIA, 0), from, to, cid, cseq, mf, cl;
	struct sip_via v;
	uint64_t n;

	if (!single(m, SIP_HDR_FROM, &from) || !single(m, SIP_HDR_TO, &to) ||
	    !single(m, SIP_HDR_CALL_ID, &cid))
		return SIP_ERR_HEADER;
	if (!single(m, SIP_HDR_CSEQ, &cseq))
		return SIP_ERR_CSEQ;
	if (!single(m, SIP_HDR_MAX_FORWARDS, &mf))
		return SIP_ERR_MAX_FORWARDS;
	if (via < 0 || from < 0 || to < 0 || cid < 0 || cseq < 0)
		return SIP_ERR_MISSING;

	m->call_id = m->hdrs[cid].value;
	if (m->call_id.len == 0)
		return SIP_ERR_MISSING;
	if (header_tag(m->hdrs[from].value, &m->from_tag) < 0 ||
	    header_tag(m->hdrs[to].value, &m->to_tag) < 0)
		return SIP_ERR_HEADER;
	if (parse_cseq(m->hdrs[cseq].value, &m->cseq, &m->cseq_method_name) < 0)
		return SIP_ERR_CSEQ;
	m->cseq_method = sip_method_from_str(m->cseq_method_name);
	if (m->is_request && !span_eq(m->cseq_method_name, m->method_name))
		return SIP_ERR_CSEQ;
	if (mf >= 0) {
		if (parse_number(m->hdrs[mf].value, 255, &n) < 0)
			return SIP_ERR_MAX_FORWARDS;
		m->max_forwards = (int)n;
	}
	for (cl = sip_msg_find(m, SIP_HDR_CONTENT_LENGTH, 0); cl >= 0;
	     cl = sip_msg_find(m, SIP_HDR_CONTENT_LENGTH, cl + 1))
		if (parse_number(m->hdrs[cl].value, UINT64_MAX, &n) < 0 || n != m->body.len)
			return SIP_ERR_CONTENT_LENGTH;
	if (sip_via_parse(m->hdrs[via].value, &v) < 0)
		return SIP_ERR_VIA;
	return 0;
}

int sip_msg_parse(const char *buf, size_t len, const struct sip_limits *lim,
                  struct sip_msg **out)
{
	struct sip_msg *m;
	const char *p, *e, *he, *hend, *eol;
	int rc;

	*out = NULL;
	if (len > lim->max_msg_bytes)
		return SIP_ERR_TOO_LARGE;
	if (!(m = calloc(1, sizeof(*m))) || !(m->raw = malloc(len + 1))) {
		free(m);
		m = NULL;
		return SIP_ERR_NOMEM;
	}
	if (len)
		memcpy(m->raw, buf, len);
	m->raw[len] = '\0';
	m->raw_len = len;
	m->max_forwards = -1;

	p = m->raw;
	e = p + len;
	while (e - p >= 2 && p[0] == '\r' && p[1] == '\n') /* RFC 3261 7.5 */
		p += 2;
	/* Without the empty line (a datagram cut short), all of it is headers. */
	he = memmem(p, (size_t)(e - p), "\r\n\r\n", 4);
	hend = he ? he + 2 : e;
	if (!(eol = find_crlf(p, hend)))
		eol = hend;
	if ((size_t)(eol - p) > lim->max_line_bytes)
		rc = SIP_ERR_LINE_TOO_LONG;
	else
		rc = p == eol ? SIP_ERR_START_LINE : parse_start_line(m, p, eol);
	if (rc < 0) {
		sip_msg_free(m);
		return rc;
	}
	*out = m;
	if (he)
		m->body = span(he + 4, e);
	rc = parse_headers(m, eol < hend ? eol + 2 : hend, hend, lim);
	return rc < 0 ? rc : check_core(m);
}

void sip_msg_free(struct sip_msg *m)
{
	struct sip_arena *a, *next;

	if (!m)
		return;
	for (a = m->arena; a; a = next) {
		next = a->next;
		free(a); a = NULL;
	}
	free(m->hdrs); m->hdrs = NULL;
	free(m->raw); m->raw = NULL;
	free(m); m = NULL;
}

/* ---- Changing a message ------------------------------------------------------ */

/* Inserts a header whose value already lives in the arena. */
static int insert_owned(struct sip_msg *m, unsigned pos, enum sip_hdr_id id,
                        const char *name, struct sip_str value)
{
	struct sip_str n;

	if (id == SIP_HDR_OTHER) {
		if (!name)
			return SIP_ERR_HEADER;
		n = sip_msg_strdup(m, name, strlen(name));
		if (!n.s)
			return SIP_ERR_NOMEM;
		id = sip_hdr_id_from_name(n); /* so that sip_msg_find() sees "Via" too */
	} else {
		const char *full = sip_hdr_full_name(id);
		if (!full)
			return SIP_ERR_HEADER;
		n = (struct sip_str){ full, strlen(full) };
	}
	return hdr_insert(m, pos, id, n, value);
}

int sip_msg_insert(struct sip_msg *m, unsigned pos, enum sip_hdr_id id,
                   const char *name, const char *value, size_t value_len)
{
	struct sip_str v = sip_msg_strdup(m, value, value_len);

	return v.s ? insert_owned(m, pos, id, name, v) : SIP_ERR_NOMEM;
}

int sip_msg_append(struct sip_msg *m, enum sip_hdr_id id, const char *name,
                   const char *value, size_t value_len)
{
	return sip_msg_insert(m, m->nhdrs, id, name, value, value_len);
}

int sip_msg_appendf(struct sip_msg *m, enum sip_hdr_id id, const char *name,
                    const char *fmt, ...)
{
	va_list ap, ap2;
	char *s = NULL;
	int n;

	va_start(ap, fmt);
	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap);
	if (n >= 0 && (s = arena_alloc(m, (size_t)n + 1)) != NULL)
		vsnprintf(s, (size_t)n + 1, fmt, ap2);
	va_end(ap2);
	va_end(ap);
	if (!s)
		return SIP_ERR_NOMEM;
	return insert_owned(m, m->nhdrs, id, name, (struct sip_str){ s, (size_t)n });
}

void sip_msg_remove(struct sip_msg *m, unsigned pos)
{
	if (pos >= m->nhdrs)
		return;
	memmove(&m->hdrs[pos], &m->hdrs[pos + 1], (m->nhdrs - pos - 1) * sizeof(m->hdrs[0]));
	m->nhdrs--;
}

int sip_msg_set_value(struct sip_msg *m, unsigned pos, const char *value, size_t len)
{
	struct sip_str v;

	if (pos >= m->nhdrs)
		return SIP_ERR_HEADER;
	v = sip_msg_strdup(m, value, len);
	if (!v.s)
		return SIP_ERR_NOMEM;
	m->hdrs[pos].value = v;
	return 0;
}

int sip_msg_set_ruri(struct sip_msg *m, const char *uri, size_t len)
{
	struct sip_str v = sip_msg_strdup(m, uri, len);

	if (!v.s)
		return SIP_ERR_NOMEM;
	m->ruri = v;
	return 0;
}

int sip_msg_set_max_forwards(struct sip_msg *m, int value)
{
	char buf[16];
	int i = sip_msg_find(m, SIP_HDR_MAX_FORWARDS, 0);
	int n = snprintf(buf, sizeof(buf), "%d", value);
	int rc = i >= 0 ? sip_msg_set_value(m, (unsigned)i, buf, (size_t)n)
	                : sip_msg_append(m, SIP_HDR_MAX_FORWARDS, NULL, buf, (size_t)n);

	if (rc == 0)
		m->max_forwards = value;
	return rc;
}

/* ---- Copies: clone and response ------------------------------------------------ */

/*
 * Makes a span of the copy c point into c's memory: bytes of the original's
 * raw buffer map to the same offset in c->raw; anything else (arena, static
 * names, the caller's memory) is copied into c's arena.
 */
static int rebase(struct sip_msg *c, const struct sip_msg *m, struct sip_str *s)
{
	uintptr_t p = (uintptr_t)s->s, r = (uintptr_t)m->raw;

	if (s->len == 0) {
		*s = (struct sip_str){ NULL, 0 };
		return 0;
	}
	if (m->raw && p >= r && p - r <= m->raw_len && s->len <= m->raw_len - (p - r)) {
		s->s = c->raw + (p - r);
		return 0;
	}
	*s = sip_msg_strdup(c, s->s, s->len);
	return s->s ? 0 : -1;
}

struct sip_msg *sip_msg_clone(const struct sip_msg *m)
{
	struct sip_msg *c = calloc(1, sizeof(*c));
	int bad = 0;

	if (!c)
		return NULL;
	*c = *m;
	c->raw = NULL;
	c->hdrs = NULL;
	c->nhdrs = c->hdr_cap = 0;
	c->arena = NULL;
	if (m->raw && !(c->raw = malloc(m->raw_len + 1)))
		goto fail;
	if (m->raw) {
		memcpy(c->raw, m->raw, m->raw_len);
		c->raw[m->raw_len] = '\0';
	}
	if (m->nhdrs && !(c->hdrs = malloc(m->nhdrs * sizeof(*c->hdrs))))
		goto fail;
	c->hdr_cap = c->nhdrs = m->nhdrs;
	for (unsigned i = 0; i < m->nhdrs; i++) {
		c->hdrs[i] = m->hdrs[i];
		bad |= rebase(c, m, &c->hdrs[i].name) | rebase(c, m, &c->hdrs[i].value);
	}
	bad |= rebase(c, m, &c->method_name) | rebase(c, m, &c->ruri);
	bad |= rebase(c, m, &c->reason) | rebase(c, m, &c->body);
	bad |= rebase(c, m, &c->call_id) | rebase(c, m, &c->from_tag);
	bad |= rebase(c, m, &c->to_tag) | rebase(c, m, &c->cseq_method_name);
	if (!bad)
		return c;
fail:
	sip_msg_free(c);
	return NULL;
}

/* Copies header i of req to the end of m; `name` serves SIP_HDR_OTHER only. */
static int copy_header(struct sip_msg *m, const struct sip_msg *req, int i, const char *name)
{
	const struct sip_hdr *h = &req->hdrs[i];

	return sip_msg_append(m, h->id, name, h->value.s, h->value.len);
}

/* Copies the To header, adding ";tag=" when the UAS creates the dialog side. */
static int copy_to(struct sip_msg *m, const struct sip_msg *req, int i,
                   unsigned status, const char *to_tag)
{
	struct sip_str v = req->hdrs[i].value, tag;

	if (status <= 100 || !to_tag || req->to_tag.len ||
	    (header_tag(v, &tag) == 0 && tag.len))
		return copy_header(m, req, i, NULL);
	if (v.len > INT32_MAX)
		return SIP_ERR_HEADER;
	return sip_msg_appendf(m, SIP_HDR_TO, NULL, "%.*s;tag=%s", (int)v.len, v.s, to_tag);
}

struct sip_msg *sip_msg_response(const struct sip_msg *req, unsigned status,
                                 const char *reason, const char *to_tag)
{
	static const enum sip_hdr_id copied[] = {
		SIP_HDR_VIA, SIP_HDR_FROM, SIP_HDR_TO, SIP_HDR_CALL_ID, SIP_HDR_CSEQ,
	};
	struct sip_msg *m = calloc(1, sizeof(*m));
	int rc = 0, i;

	if (!m)
		return NULL;
	m->status = status;
	m->max_forwards = -1;
	if (!reason)
		reason = default_reason(status);
	m->reason = sip_msg_strdup(m, reason, strlen(reason));
	if (!m->reason.s)
		rc = SIP_ERR_NOMEM;
	for (size_t k = 0; k < sizeof(copied) / sizeof(copied[0]) && rc == 0; k++) {
		/* every Via in order; only the first of the others */
		for (i = sip_msg_find(req, copied[k], 0); i >= 0 && rc == 0;
		     i = copied[k] == SIP_HDR_VIA ? sip_msg_find(req, copied[k], i + 1) : -1)
			rc = copied[k] == SIP_HDR_TO ? copy_to(m, req, i, status, to_tag)
			                             : copy_header(m, req, i, NULL);
	}
	if (rc == 0 && status == 100 && (i = sip_msg_find_name(req, "Timestamp", 0)) >= 0)
		rc = copy_header(m, req, i, "Timestamp"); /* RFC 3261 8.2.6.1 */
	if (rc == 0)
		rc = sip_msg_append(m, SIP_HDR_CONTENT_LENGTH, NULL, "0", 1);
	if (rc < 0) {
		sip_msg_free(m);
		return NULL;
	}
	/* The transaction fields, read back from the copied headers. */
	if ((i = sip_msg_find(m, SIP_HDR_CALL_ID, 0)) >= 0)
		m->call_id = m->hdrs[i].value;
	if ((i = sip_msg_find(m, SIP_HDR_FROM, 0)) >= 0)
		header_tag(m->hdrs[i].value, &m->from_tag);
	if ((i = sip_msg_find(m, SIP_HDR_TO, 0)) >= 0)
		header_tag(m->hdrs[i].value, &m->to_tag);
	if ((i = sip_msg_find(m, SIP_HDR_CSEQ, 0)) >= 0 &&
	    parse_cseq(m->hdrs[i].value, &m->cseq, &m->cseq_method_name) == 0)
		m->cseq_method = sip_method_from_str(m->cseq_method_name);
	return m;
}

/* ---- Serializer ----------------------------------------------------------------- */

size_t sip_msg_size(const struct sip_msg *m)
{
	size_t n;

	if (m->is_request)
		n = m->method_name.len + 1 + m->ruri.len + 1 + 7 + 2;
	else
		n = 7 + 1 + 3 + 1 + m->reason.len + 2;
	for (unsigned i = 0; i < m->nhdrs; i++)
		n += m->hdrs[i].name.len + 2 + m->hdrs[i].value.len + 2;
	return n + 2 + m->body.len;
}

static char *put(char *d, const char *s, size_t n)
{
	if (n)
		memcpy(d, s, n);
	return d + n;
}

size_t sip_msg_write(const struct sip_msg *m, char *dst)
{
	char *d = dst;

	if (m->is_request) {
		d = put(d, m->method_name.s, m->method_name.len);
		d = put(d, " ", 1);
		d = put(d, m->ruri.s, m->ruri.len);
		d = put(d, " SIP/2.0\r\n", 10);
	} else {
		/* always three digits, so that the size matches for any status */
		unsigned st = m->status % 1000;
		char code[3] = { (char)('0' + st / 100), (char)('0' + st / 10 % 10),
		                 (char)('0' + st % 10) };
		d = put(d, "SIP/2.0 ", 8);
		d = put(d, code, 3);
		d = put(d, " ", 1);
		d = put(d, m->reason.s, m->reason.len);
		d = put(d, "\r\n", 2);
	}
	for (unsigned i = 0; i < m->nhdrs; i++) {
		d = put(d, m->hdrs[i].name.s, m->hdrs[i].name.len);
		d = put(d, ": ", 2);
		d = put(d, m->hdrs[i].value.s, m->hdrs[i].value.len);
		d = put(d, "\r\n", 2);
	}
	d = put(d, "\r\n", 2);
	d = put(d, m->body.s, m->body.len);
	return (size_t)(d - dst);
}

/* ---- Header value parsers ---------------------------------------------------------- */

/*
 * host [":" port] at *pp (RFC 3261 25.1); an IPv6 reference comes back
 * without its brackets. Via allows blanks around the colon (lws).
 */
static int parse_hostport(const char **pp, const char *e, int lws,
                          struct sip_str *host, uint16_t *port)
{
	const char *p = *pp, *hs, *q;
	uint64_t v;

	if (p < e && *p == '[') {
		hs = ++p;
		while (p < e && (is_xdigit(*p) || *p == ':' || *p == '.'))
			p++;
		if (p >= e || *p != ']' || !memchr(hs, ':', (size_t)(p - hs)))
			return -1;
		*host = span(hs, p++);
	} else {
		hs = p;
		while (p < e && is_host_char(*p))
			p++;
		if (p == hs)
			return -1;
		*host = span(hs, p);
	}
	q = lws ? skip_lws(p, e) : p;
	if (q < e && *q == ':') {
		q = lws ? skip_lws(q + 1, e) : q + 1;
		if (!(p = parse_dec(q, e, 65535, &v)) || v == 0)
			return -1;
		*port = (uint16_t)v;
	}
	*pp = p;
	return 0;
}

int sip_uri_parse(struct sip_str in, struct sip_uri *out)
{
	const char *p = in.s, *e = end_of(in), *colon, *qm, *at;

	memset(out, 0, sizeof(*out));
	if (!in.len)
		return -1;
	for (const char *q = p; q < e; q++)
		if ((unsigned char)*q <= ' ' || *q == 0x7f || *q == '<' || *q == '>' || *q == '"')
			return -1;
	if (!(colon = memchr(p, ':', in.len)))
		return -1;
	out->scheme = span(p, colon);
	if (!sip_str_caseeq(out->scheme, "sip") && !sip_str_caseeq(out->scheme, "sips"))
		return -1;
	p = colon + 1;
	qm = memchr(p, '?', (size_t)(e - p));
	/* The user part may hold ';' (RFC 3966 "1234;phone-context=x@gw"), so
	 * userinfo ends at the first '@' ahead of the headers, not of params. */
	if ((at = memchr(p, '@', (size_t)((qm ? qm : e) - p))) != NULL) {
		const char *pw = memchr(p, ':', (size_t)(at - p));
		out->user = span(p, pw ? pw : at);
		if (out->user.len == 0)
			return -1;
		p = at + 1;
	}
	if (parse_hostport(&p, e, 0, &out->host, &out->port) < 0)
		return -1;
	if (p < e && *p != ';' && *p != '?')
		return -1;
	if (p < e && *p == ';')
		out->params = span(p, qm ? qm : e);
	if (qm)
		out->headers = span(qm + 1, e);
	return 0;
}

/* display-name as *(token LWS); UTF-8 is let through for interoperability. */
static int display_ok(struct sip_str d)
{
	for (size_t i = 0; i < d.len; i++)
		if (!is_token_char(d.s[i]) && !is_lws(d.s[i]) && (unsigned char)d.s[i] < 0x80)
			return 0;
	return 1;
}

static int addr_uri_ok(struct sip_str u)
{
	if (u.len == 0 || !memchr(u.s, ':', u.len))
		return 0;
	for (size_t i = 0; i < u.len; i++)
		if (is_lws(u.s[i]) || u.s[i] == '<' || u.s[i] == '>' || u.s[i] == '"')
			return 0;
	return 1;
}

int sip_nameaddr_parse(struct sip_str in, struct sip_nameaddr *out)
{
	struct sip_str v = trim(in);
	const char *p = v.s, *e = end_of(v), *lt, *gt;

	memset(out, 0, sizeof(*out));
	if (v.len == 0)
		return -1;
	if (*p == '"') {
		const char *q = skip_quoted(p, e);
		if (!q)
			return -1;
		out->display = span(p + 1, q - 1); /* without the quotes */
		lt = skip_lws(q, e);
		if (lt == e || *lt != '<')
			return -1;
	} else if ((lt = memchr(p, '<', v.len)) != NULL) {
		out->display = trim(span(p, lt));
		if (!display_ok(out->display))
			return -1;
	} else {
		/* addr-spec: RFC 3261 20.10 gives every ';' parameter to the header */
		const char *semi = memchr(p, ';', v.len);
		out->uri = trim(span(p, semi ? semi : e));
		if (semi)
			out->params = span(semi, e);
		return addr_uri_ok(out->uri) ? 0 : -1;
	}
	if (!(gt = memchr(lt + 1, '>', (size_t)(e - lt - 1))))
		return -1;
	out->uri = trim(span(lt + 1, gt));
	p = skip_lws(gt + 1, e);
	if (p < e && *p != ';')
		return -1;
	if (p < e)
		out->params = span(p, e);
	return addr_uri_ok(out->uri) ? 0 : -1;
}

/* Expects literal `lit` (case-insensitive) at *pp, blanks allowed before it. */
static int expect(const char **pp, const char *e, const char *lit)
{
	const char *p = skip_lws(*pp, e);
	size_t n = strlen(lit);

	if ((size_t)(e - p) < n || !caseeq_n(p, lit, n))
		return -1;
	*pp = p + n;
	return 0;
}

int sip_via_parse(struct sip_str in, struct sip_via *out)
{
	struct sip_str v = trim(in), rp;
	const char *p = v.s, *e = end_of(v), *ts, *q;
	uint64_t n;

	memset(out, 0, sizeof(*out));
	if (!v.len || expect(&p, e, "SIP") < 0 || expect(&p, e, "/") < 0 || expect(&p, e, "2.0") < 0 ||
	    expect(&p, e, "/") < 0)
		return -1;
	for (ts = p = skip_lws(p, e); p < e && is_token_char(*p); p++)
		;
	out->transport = span(ts, p);
	q = skip_lws(p, e);
	if (out->transport.len == 0 || q == p)
		return -1;
	p = q;
	if (parse_hostport(&p, e, 1, &out->host, &out->port) < 0)
		return -1;
	p = skip_lws(p, e);
	if (p < e && *p != ';')
		return -1;
	if (p == e)
		return 0;
	out->params = span(p, e);
	sip_param_get(out->params, "branch", &out->branch);
	sip_param_get(out->params, "received", &out->received);
	if (sip_param_get(out->params, "rport", &rp)) {
		out->has_rport = 1;
		if (rp.len) {
			if (parse_number(rp, 65535, &n) < 0 || n == 0)
				return -1;
			out->rport = (uint16_t)n;
		}
	}
	return 0;
}

int sip_param_get(struct sip_str params, const char *name, struct sip_str *value)
{
	const char *p = params.s, *e = end_of(params);
	size_t nlen = strlen(name);

	while (p < e) {
		const char *ns, *vs, *ve;

		while (p < e && (is_lws(*p) || *p == ';'))
			p++;
		for (ns = p; p < e && *p != '=' && *p != ';' && !is_lws(*p); p++)
			;
		struct sip_str pname = span(ns, p);
		p = skip_lws(p, e);
		vs = ve = p;
		if (p < e && *p == '=') {
			vs = p = skip_lws(p + 1, e);
			if (p < e && *p == '"') {
				const char *q = skip_quoted(p, e);
				p = q ? q : e;
			} else {
				while (p < e && *p != ';' && !is_lws(*p))
					p++;
			}
			ve = p;
		}
		if (pname.len == nlen && caseeq_n(pname.s, name, nlen)) {
			*value = span(vs, ve);
			return 1;
		}
		while (p < e && *p != ';')
			p++;
	}
	return 0;
}

int sip_uri_host_of(struct sip_str nameaddr_or_uri, struct sip_str *host)
{
	struct sip_str v = trim(nameaddr_or_uri);
	struct sip_nameaddr na;
	struct sip_uri u;

	/* A bare URI keeps its ';' parameters, which may sit in the user part. */
	if (v.len && (v.s[0] == '"' || memchr(v.s, '<', v.len))) {
		if (sip_nameaddr_parse(v, &na) < 0)
			return -1;
		v = na.uri;
	}
	if (sip_uri_parse(v, &u) < 0)
		return -1;
	*host = u.host;
	return 0;
}

unsigned sip_msg_expires(const struct sip_msg *m, unsigned def)
{
	int i = sip_msg_find_name(m, "Expires", 0);
	if (i < 0)
		return def;
	unsigned v = 0;
	const struct sip_str e = m->hdrs[i].value;
	for (size_t k = 0; k < e.len && e.s[k] >= '0' && e.s[k] <= '9' && v < 100000000; k++)
		v = v * 10 + (unsigned)(e.s[k] - '0');
	return v;
}
