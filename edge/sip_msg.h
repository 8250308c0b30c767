/*
 * sip_msg: the SIP message model, stream framing, parser and serializer.
 *
 * RFC 3261 sections 7, 18.3 (stream framing by Content-Length), 20 (headers,
 * compact forms) and 25 (grammar); RFC 5626 section 3.5.1 (CRLF keep-alive).
 *
 * The parser keeps an owned copy of the received bytes and records every
 * header as a (name, value) span into that copy. Via, Route and
 * Record-Route values that hold several comma-separated entries are split
 * into one header each, so that a proxy can push and pop single entries.
 * Headers that a proxy adds later are kept in the message's own string
 * arena; the serializer writes every header on its own line.
 *
 * Nothing here touches a socket or logs: errors are returned.
 */
#ifndef EDGE_SIP_MSG_H
#define EDGE_SIP_MSG_H

#include <stddef.h>
#include <stdint.h>

/* A span of bytes, not NUL-terminated. An all-zero span is the empty one. */
struct sip_str {
	const char *s;
	size_t len;
};

#define SIP_STR_LIT(lit) ((struct sip_str){ (lit), sizeof(lit) - 1 })

int sip_str_eq(struct sip_str a, const char *lit);     /* exact, case-sensitive */
int sip_str_caseeq(struct sip_str a, const char *lit); /* ASCII case-insensitive */
int sip_str_caseeq2(struct sip_str a, struct sip_str b);

enum sip_method {
	SIP_METHOD_UNKNOWN = 0, /* any extension method: see method_name */
	SIP_INVITE,
	SIP_ACK,
	SIP_BYE,
	SIP_CANCEL,
	SIP_OPTIONS,
	SIP_REGISTER,
	SIP_MESSAGE,
	SIP_SUBSCRIBE,
	SIP_NOTIFY,
	SIP_INFO,
	SIP_UPDATE,
	SIP_PRACK,
	SIP_REFER,
	SIP_PUBLISH,
};

/* Parses a method token (case-sensitive, as RFC 3261 7.1 says). */
enum sip_method sip_method_from_str(struct sip_str token);
const char *sip_method_name(enum sip_method m); /* "UNKNOWN" for 0 */

/* Headers the proxy core looks at; every other header is SIP_HDR_OTHER. */
enum sip_hdr_id {
	SIP_HDR_OTHER = 0,
	SIP_HDR_VIA,            /* v */
	SIP_HDR_FROM,           /* f */
	SIP_HDR_TO,             /* t */
	SIP_HDR_CALL_ID,        /* i */
	SIP_HDR_CSEQ,
	SIP_HDR_MAX_FORWARDS,
	SIP_HDR_CONTENT_LENGTH, /* l */
	SIP_HDR_CONTENT_TYPE,   /* c */
	SIP_HDR_CONTACT,        /* m */
	SIP_HDR_ROUTE,
	SIP_HDR_RECORD_ROUTE,
	SIP_HDR_PROXY_REQUIRE,
	SIP_HDR_REQUIRE,
	SIP_HDR_SUPPORTED,      /* k */
	SIP_HDR_EVENT,          /* o */
	SIP_HDR_WARNING,
	SIP_HDR_REASON,
	SIP_HDR_RETRY_AFTER,
	SIP_HDR_SERVER,
	SIP_HDR_USER_AGENT,
	SIP_HDR_ALLOW,
	SIP_HDR_UNSUPPORTED,
};

/* Maps a header name, full or compact, case-insensitively. */
enum sip_hdr_id sip_hdr_id_from_name(struct sip_str name);
const char *sip_hdr_full_name(enum sip_hdr_id id); /* NULL for OTHER */

struct sip_hdr {
	enum sip_hdr_id id;
	struct sip_str name;  /* as received, or the full name when added */
	struct sip_str value; /* trimmed of surrounding whitespace */
};

struct sip_arena; /* private to sip_msg.c */

struct sip_msg {
	char *raw;                    /* owned copy of the bytes parsed */
	size_t raw_len;

	int is_request;
	/* request line */
	enum sip_method method;
	struct sip_str method_name;
	struct sip_str ruri;
	/* status line */
	unsigned status;
	struct sip_str reason;

	struct sip_hdr *hdrs;         /* owned array, in wire order */
	unsigned nhdrs;
	unsigned hdr_cap;

	struct sip_str body;

	/* Filled by the parser from the headers every transaction needs. */
	struct sip_str call_id;
	struct sip_str from_tag;      /* empty when absent */
	struct sip_str to_tag;        /* empty when absent */
	uint32_t cseq;
	enum sip_method cseq_method;
	struct sip_str cseq_method_name;
	int max_forwards;             /* -1 when absent */

	struct sip_arena *arena;      /* strings added after parsing */
};

/* Size limits that both framing and parsing enforce. */
struct sip_limits {
	size_t max_msg_bytes;  /* start line + headers + body */
	size_t max_line_bytes; /* one header line, folded lines joined */
	unsigned max_headers;  /* after splitting comma-separated values */
};

enum sip_frame_result {
	SIP_FRAME_MORE = 0,  /* not a whole message yet: read more */
	SIP_FRAME_MSG,       /* *consumed bytes are one whole message */
	SIP_FRAME_PING,      /* CRLFCRLF keep-alive (*consumed = 4): answer CRLF */
	SIP_FRAME_PONG,      /* a lone CRLF (*consumed = 2): ignore it */
	SIP_FRAME_TOO_LARGE, /* headers end at *consumed, but the whole message
	                      * exceeds max_msg_bytes; *consumed is 0 when the
	                      * header block itself did not fit */
	SIP_FRAME_BAD,       /* no trustworthy framing (bad Content-Length):
	                      * the stream must be closed */
};

/*
 * Finds the next message boundary in a stream buffer (RFC 3261 18.3).
 * Content-Length (or "l") decides the body length; a missing one means 0.
 * "\r\n\r" alone is MORE: it may be the start of a ping.
 */
enum sip_frame_result sip_frame(const char *buf, size_t len,
                                const struct sip_limits *lim, size_t *consumed);

enum sip_parse_error {
	SIP_OK = 0,
	SIP_ERR_START_LINE = -1,  /* not a SIP request or status line */
	SIP_ERR_VERSION = -2,     /* not SIP/2.0 */
	SIP_ERR_HEADER = -3,      /* a header line without a colon, bad name */
	SIP_ERR_LINE_TOO_LONG = -4,
	SIP_ERR_TOO_MANY_HEADERS = -5,
	SIP_ERR_MISSING = -6,     /* a mandatory header is absent (8.1.1) */
	SIP_ERR_CSEQ = -7,        /* bad CSeq, or its method differs from the request's */
	SIP_ERR_MAX_FORWARDS = -8,
	SIP_ERR_CONTENT_LENGTH = -9,
	SIP_ERR_TOO_LARGE = -10,
	SIP_ERR_NOMEM = -11,
	SIP_ERR_VIA = -12,        /* top Via does not parse */
};

const char *sip_strerror(int err);

/*
 * Parses one whole message, as sip_frame() delimited it. Returns a new
 * message in *out (the caller frees it with sip_msg_free()) or an error.
 * On error, *out may still hold a partially parsed message whose start line
 * and the headers parsed so far are usable to build an error response (a
 * 400 needs Via, From, To, Call-ID and CSeq), or NULL when even the start
 * line was unusable (or len exceeds max_msg_bytes); the caller frees it too.
 * Checks: start line, SIP/2.0, header syntax, limits, presence of Via, From,
 * To, Call-ID and CSeq, each of these but Via (and Max-Forwards) at most
 * once, parsable From and To, CSeq number and method (equal to the request
 * method, except ACK/CANCEL rules stay with the caller), Max-Forwards
 * 0-255, Content-Length equal to the body length, a parsable top Via.
 */
int sip_msg_parse(const char *buf, size_t len, const struct sip_limits *lim,
                  struct sip_msg **out);

void sip_msg_free(struct sip_msg *m);

/* Deep copy: the copy owns all its strings. NULL when out of memory. */
struct sip_msg *sip_msg_clone(const struct sip_msg *m);

/* Header access. Indexes are positions in m->hdrs. */
int sip_msg_find(const struct sip_msg *m, enum sip_hdr_id id, int start); /* index or -1 */
int sip_msg_find_name(const struct sip_msg *m, const char *name, int start);
unsigned sip_msg_count(const struct sip_msg *m, enum sip_hdr_id id);

/*
 * Inserts a header before index pos (0 = first; m->nhdrs = last). The name
 * is the full name of id, or `name` for SIP_HDR_OTHER. The value is copied
 * into the message's arena. Returns 0, SIP_ERR_NOMEM, or SIP_ERR_HEADER when
 * id is OTHER and name is NULL. A name that maps to a known id takes that id.
 * The parsed fields (call_id, to_tag, ...) are not updated by any of these,
 * except by sip_msg_set_max_forwards().
 */
int sip_msg_insert(struct sip_msg *m, unsigned pos, enum sip_hdr_id id,
                   const char *name, const char *value, size_t value_len);
/* Appends a header (before the body), as insert at m->nhdrs. */
int sip_msg_append(struct sip_msg *m, enum sip_hdr_id id, const char *name,
                   const char *value, size_t value_len);
int sip_msg_appendf(struct sip_msg *m, enum sip_hdr_id id, const char *name,
                    const char *fmt, ...) __attribute__((format(printf, 4, 5)));
void sip_msg_remove(struct sip_msg *m, unsigned pos);
/* Replaces a header value (copied). Returns 0, SIP_ERR_NOMEM, or
 * SIP_ERR_HEADER when pos is out of range. */
int sip_msg_set_value(struct sip_msg *m, unsigned pos, const char *value, size_t len);
/* Replaces the Request-URI (copied). */
int sip_msg_set_ruri(struct sip_msg *m, const char *uri, size_t len);
/* Sets Max-Forwards (adds the header when absent) and m->max_forwards. */
int sip_msg_set_max_forwards(struct sip_msg *m, int value);
/* Copies a string into the message's arena; NULL span on NOMEM. */
struct sip_str sip_msg_strdup(struct sip_msg *m, const char *s, size_t len);

/*
 * Builds a response to a request (RFC 3261 8.2.6): status line, all Via
 * headers, From, To (with to_tag added when the request had none and
 * status > 100 and to_tag is not NULL), Call-ID, CSeq, and
 * "Content-Length: 0". For status 100, Timestamp is copied too.
 * The caller appends further headers and frees the result.
 * Returns NULL when out of memory.
 */
struct sip_msg *sip_msg_response(const struct sip_msg *req, unsigned status,
                                 const char *reason, const char *to_tag);

/* Number of bytes sip_msg_write() produces. */
size_t sip_msg_size(const struct sip_msg *m);
/*
 * Writes the message in wire form to dst (at least sip_msg_size() bytes):
 * the start line, every header as "Name: value\r\n" (in the case received,
 * compact names kept), an empty line and the body. Returns bytes written.
 */
size_t sip_msg_write(const struct sip_msg *m, char *dst);

/* ---- Parsers for header values; they never allocate. ---- */

struct sip_uri {
	struct sip_str scheme;    /* "sip" or "sips" (other schemes: error) */
	struct sip_str user;      /* may be empty; without ":password"; may hold ';'
	                           * (RFC 3966 "1234;phone-context=x@host") */
	struct sip_str host;      /* IPv6 references without brackets */
	uint16_t port;            /* 0 when absent */
	struct sip_str params;    /* ";a=b;lr" including the first ';', or empty */
	struct sip_str headers;   /* after '?', or empty */
};
int sip_uri_parse(struct sip_str in, struct sip_uri *out); /* 0 or -1 */

/* name-addr or addr-spec (RFC 3261 20.10): "Bob" <sip:b@h>;tag=x */
struct sip_nameaddr {
	struct sip_str display;   /* without the quotes of a quoted-string */
	struct sip_str uri;       /* without the angle brackets */
	struct sip_str params;    /* header parameters after the URI, from ';' */
};
int sip_nameaddr_parse(struct sip_str in, struct sip_nameaddr *out);

struct sip_via {
	struct sip_str transport; /* "UDP", "TCP", "TLS", ... */
	struct sip_str host;      /* IPv6 without brackets */
	uint16_t port;            /* 0 when absent */
	struct sip_str branch;    /* empty when absent */
	struct sip_str received;  /* empty when absent */
	int has_rport;            /* rport present, with or without value */
	uint16_t rport;           /* 0 when rport had no value */
	struct sip_str params;    /* all parameters, from the first ';' */
};
int sip_via_parse(struct sip_str in, struct sip_via *out);

/*
 * Finds parameter `name` (case-insensitive) in a ";a=b;c" list. Returns 1
 * with *value set (empty for a flag parameter) when present, 0 otherwise.
 * Quoted values are returned with their quotes.
 */
int sip_param_get(struct sip_str params, const char *name, struct sip_str *value);

/* "domain" of a SIP URI in a From/To/R-URI value: host of the URI. */
int sip_uri_host_of(struct sip_str nameaddr_or_uri, struct sip_str *host);
/* The Expires header's delta-seconds (at most 100000000), or def when absent. */
unsigned sip_msg_expires(const struct sip_msg *m, unsigned def);

#endif
