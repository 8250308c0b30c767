/*
 * xmpp_xml: the XML stream of XMPP (RFC 6120 sections 4 and 11) on expat,
 * parsed incrementally into small trees, and the serializer for the same.
 *
 * A stream is one XML document: the header <stream:stream ...> opens it,
 * every first-level element (a stanza, or a stream-level element such as
 * <stream:features/>, <starttls/>, <db:result/>) arrives whole through a
 * callback as a tree, and </stream:stream> closes it. Any bad input gives
 * one stream error condition (RFC 6120 4.9.3) to send before closing, and
 * the parser then takes nothing more until it is reset.
 *
 * Ownership, once for the whole module:
 * - A tree handed to on_element belongs to the parser and is freed when the
 *   callback returns. The callback may read it, edit it and serialize it; to
 *   keep it, it takes a copy with xmpp_xml_clone().
 * - Trees from xmpp_xml_new() and xmpp_xml_clone() belong to the caller, who
 *   frees them with xmpp_xml_free() on the root. Every string and node of a
 *   tree lives in one arena owned by the root: nothing is freed singly.
 * - The header given to on_open lives until that callback returns.
 * - The serializer appends to a growable buffer owned by the caller.
 *
 * Nothing here touches a socket or logs: errors are returned.
 */
#ifndef EDGE_XMPP_XML_H
#define EDGE_XMPP_XML_H

#include <stddef.h>
#include <stdint.h>

#define XMPP_XML_NS_STREAMS  "http://etherx.jabber.org/streams"
#define XMPP_XML_NS_SERVER   "jabber:server"
#define XMPP_XML_NS_CLIENT   "jabber:client"
#define XMPP_XML_NS_DIALBACK "jabber:server:dialback"
#define XMPP_XML_NS_STREAM_ERRORS "urn:ietf:params:xml:ns:xmpp-streams"
#define XMPP_XML_NS_STANZA_ERRORS "urn:ietf:params:xml:ns:xmpp-stanzas"
#define XMPP_XML_NS_TLS      "urn:ietf:params:xml:ns:xmpp-tls"
#define XMPP_XML_NS_SASL     "urn:ietf:params:xml:ns:xmpp-sasl"
#define XMPP_XML_NS_DIALBACK_FEATURE "urn:xmpp:features:dialback"
#define XMPP_XML_NS_XML      "http://www.w3.org/XML/1998/namespace"

/* Return codes. Negative values are errors; XMPP_XML_STOPPED is not one. */
enum xmpp_xml_err {
	XMPP_XML_OK = 0,
	XMPP_XML_STOPPED = 1,       /* a callback asked to stop: see xmpp_xml_feed() */
	XMPP_XML_ERR_STREAM = -1,   /* stream error: the condition is in xmpp_xml_error() */
	XMPP_XML_ERR_STATE = -2,    /* fed after an error or a stop without a reset,
	                             * or reset/fed from inside a callback */
	XMPP_XML_ERR_NOMEM = -3,
	XMPP_XML_ERR_CHAR = -4,     /* a character XML 1.0 does not allow, or bad UTF-8 */
	XMPP_XML_ERR_NAME = -5,     /* not an XML name, or a reserved namespace */
};

const char *xmpp_xml_strerror(int err);

/*
 * Characters, for every module that puts text into XML: one UTF-8 character
 * at s (n bytes left), its code point in *cp and its length, or 0 when it is
 * malformed, overlong or a surrogate; XML 1.0's Char production (2.2); and
 * whether text is UTF-8 made of such characters only.
 */
size_t xmpp_xml_utf8_next(const unsigned char *s, size_t n, uint32_t *cp);
int xmpp_xml_is_char(uint32_t c);
int xmpp_xml_text_ok(const char *text, size_t n);

/* Stream error conditions, RFC 6120 4.9.3, in its order. */
enum xmpp_xml_cond {
	XMPP_XML_COND_NONE = 0,
	XMPP_XML_COND_BAD_FORMAT,
	XMPP_XML_COND_BAD_NAMESPACE_PREFIX,
	XMPP_XML_COND_CONFLICT,
	XMPP_XML_COND_CONNECTION_TIMEOUT,
	XMPP_XML_COND_HOST_GONE,
	XMPP_XML_COND_HOST_UNKNOWN,
	XMPP_XML_COND_IMPROPER_ADDRESSING,
	XMPP_XML_COND_INTERNAL_SERVER_ERROR, /* also: out of memory */
	XMPP_XML_COND_INVALID_FROM,
	XMPP_XML_COND_INVALID_NAMESPACE,
	XMPP_XML_COND_INVALID_XML,
	XMPP_XML_COND_NOT_AUTHORIZED,
	XMPP_XML_COND_NOT_WELL_FORMED,
	XMPP_XML_COND_POLICY_VIOLATION,
	XMPP_XML_COND_REMOTE_CONNECTION_FAILED,
	XMPP_XML_COND_RESET,
	XMPP_XML_COND_RESOURCE_CONSTRAINT,
	XMPP_XML_COND_RESTRICTED_XML,
	XMPP_XML_COND_SEE_OTHER_HOST,
	XMPP_XML_COND_SYSTEM_SHUTDOWN,
	XMPP_XML_COND_UNDEFINED_CONDITION,
	XMPP_XML_COND_UNSUPPORTED_ENCODING,
	XMPP_XML_COND_UNSUPPORTED_FEATURE,
	XMPP_XML_COND_UNSUPPORTED_STANZA_TYPE,
	XMPP_XML_COND_UNSUPPORTED_VERSION,
};

/* The element name ("bad-format", ...); "undefined-condition" for NONE or
 * an unknown value. from_name returns NONE for an unknown name. */
const char *xmpp_xml_cond_name(enum xmpp_xml_cond c);
enum xmpp_xml_cond xmpp_xml_cond_from_name(const char *name);

/* ---- Trees ------------------------------------------------------------------ */

struct xmpp_xml_attr {
	const char *name;  /* local name */
	const char *ns;    /* namespace URI; "" for an unprefixed attribute */
	const char *value;
	size_t value_len;  /* value is also NUL-terminated */
};

struct xmpp_xml_arena; /* private to xmpp_xml.c */

/*
 * One node: an element, or a text node when name is NULL. Children, text
 * and elements mixed, are in document order. Strings are NUL-terminated
 * UTF-8 (XML 1.0 allows no NUL, so the lengths are a convenience).
 */
struct xmpp_xml_elem {
	const char *name;                /* local name; NULL for a text node */
	const char *ns;                  /* namespace URI, "" for none; NULL for text */
	const char *text;                /* a text node's text, else NULL */
	size_t text_len;                 /* text node: its bytes; element: the bytes of
	                                  * its direct text, all its text nodes */
	struct xmpp_xml_attr *attrs;     /* nattrs, in document order */
	unsigned nattrs, attr_cap;
	struct xmpp_xml_elem *children;  /* first child */
	struct xmpp_xml_elem *last_child;
	struct xmpp_xml_elem *next;      /* next sibling */
	struct xmpp_xml_elem *parent;    /* NULL for the root */
	struct xmpp_xml_arena *arena;    /* the tree's, shared by every node */
};

/*
 * The first child element with this local name and namespace after `after`
 * (NULL: from the first child). A NULL name or ns matches any. NULL when none.
 */
struct xmpp_xml_elem *xmpp_xml_child(const struct xmpp_xml_elem *el,
                                     const struct xmpp_xml_elem *after,
                                     const char *name, const char *ns);
/* The value of the attribute without namespace called name, or NULL. */
const char *xmpp_xml_attr(const struct xmpp_xml_elem *el, const char *name);
/* The same for a namespaced attribute (XMPP_XML_NS_XML, "lang" for xml:lang). */
const char *xmpp_xml_attr_ns(const struct xmpp_xml_elem *el, const char *name,
                             const char *ns);
/*
 * The element's direct text, its text nodes joined ("" when none); *len
 * (may be NULL) gets its length. The string lives in the tree's arena (it is
 * built there when there are several text nodes). NULL when out of memory.
 */
const char *xmpp_xml_text(const struct xmpp_xml_elem *el, size_t *len);

/*
 * Building trees, for what edged sends. xmpp_xml_new() makes the root of a
 * new tree (ns NULL is ""); xmpp_xml_add() appends a child element (ns NULL:
 * the parent's namespace); xmpp_xml_add_text() appends text (joined to a
 * text node just before it); xmpp_xml_set_attr() sets or replaces an
 * attribute (ns NULL is ""). Strings are copied into the arena, not checked:
 * the serializer checks names and characters. Each returns NULL or
 * XMPP_XML_ERR_NOMEM when out of memory, the tree staying valid.
 */
struct xmpp_xml_elem *xmpp_xml_new(const char *name, const char *ns);
struct xmpp_xml_elem *xmpp_xml_add(struct xmpp_xml_elem *parent, const char *name,
                                   const char *ns);
int xmpp_xml_add_text(struct xmpp_xml_elem *el, const char *text, size_t len);
int xmpp_xml_set_attr(struct xmpp_xml_elem *el, const char *name, const char *ns,
                      const char *value);
/* A deep copy of el and its subtree as the root of a new tree, or NULL. */
struct xmpp_xml_elem *xmpp_xml_clone(const struct xmpp_xml_elem *el);
/*
 * Frees a tree from xmpp_xml_new() or xmpp_xml_clone(), given its root.
 * NULL is fine; a parser's tree or a non-root node is left alone.
 */
void xmpp_xml_free(struct xmpp_xml_elem *root);
/* 1 when both subtrees have the same names, namespaces, attributes (in
 * order) and children (text compared by content), else 0. */
int xmpp_xml_equal(const struct xmpp_xml_elem *a, const struct xmpp_xml_elem *b);

/* ---- The stream parser ------------------------------------------------------- */

/*
 * Limits. A zero field takes its default, so an all-zero struct (or NULL)
 * gives the defaults. Bytes are counted as received, before expat buffers
 * them: an element is refused as soon as it grows past its limit, however
 * long one attribute or text is.
 */
struct xmpp_xml_limits {
	size_t max_stanza_bytes;  /* one first-level element: 65536 */
	size_t max_header_bytes;  /* XML declaration and stream header: 4096 */
	size_t max_text_bytes;    /* the direct text of one element: max_stanza_bytes */
	unsigned max_depth;       /* levels of a first-level element, itself 1: 16 */
	unsigned max_attrs;       /* per element, namespace declarations included: 32 */
	unsigned max_elements;    /* elements in one first-level element: 1024, which
	                           * bounds the tree's memory (a node is ~100 bytes) */
};

/* Namespace prefixes declared on the stream header. */
struct xmpp_xml_prefix {
	const char *prefix;       /* "stream", "db", ... */
	const char *uri;
};

/* The stream header, as on_open sees it. Absent attributes are NULL. */
struct xmpp_xml_header {
	const char *to, *from, *id, *version, *lang; /* lang: xml:lang */
	unsigned version_major;   /* 0.9 when version is absent (RFC 6120 4.7.5) */
	unsigned version_minor;
	const char *content_ns;   /* the default namespace: XMPP_XML_NS_SERVER or _CLIENT */
	const struct xmpp_xml_prefix *prefixes; /* declared prefixes, "stream" too */
	unsigned nprefixes;
	const struct xmpp_xml_attr *attrs;     /* every attribute, in order */
	unsigned nattrs;
};

/*
 * Callbacks; any may be NULL. on_open and on_element return 0 to go on or
 * non-zero to stop the parser right after this element (for STARTTLS and
 * SASL success: the bytes that follow belong to TLS or to a new stream); see
 * xmpp_xml_feed(). on_close: </stream:stream> arrived. on_error: the stream
 * error to send, with a text for the log; called once per stream. A
 * callback must not feed, reset or free the parser.
 */
struct xmpp_xml_cbs {
	int (*on_open)(void *arg, const struct xmpp_xml_header *h);
	int (*on_element)(void *arg, struct xmpp_xml_elem *el);
	void (*on_close)(void *arg);
	void (*on_error)(void *arg, enum xmpp_xml_cond cond, const char *text);
};

struct xmpp_xml_parser; /* private to xmpp_xml.c */

/* A parser awaiting a stream header. lim and cbs are copied. NULL when out
 * of memory. */
struct xmpp_xml_parser *xmpp_xml_parser_new(const struct xmpp_xml_limits *lim,
                                            const struct xmpp_xml_cbs *cbs, void *arg);
void xmpp_xml_parser_free(struct xmpp_xml_parser *p);

/*
 * Parses len more bytes of the stream, split anywhere. Returns:
 * - XMPP_XML_OK: all taken (*used = len).
 * - XMPP_XML_STOPPED: a callback asked to stop; *used is the number of bytes
 *   up to the end of that element or header. The bytes after it were not
 *   parsed: the caller hands them on (to TLS, or after xmpp_xml_reset() to
 *   the next stream) or drops them. Nothing more is parsed until a reset.
 * - XMPP_XML_ERR_STREAM: a stream error, already given to on_error; nothing
 *   more is parsed until a reset (the caller sends the error and closes).
 * - XMPP_XML_ERR_STATE: called after a stop or an error, or from a callback.
 * used may be NULL. After </stream:stream>, whitespace is ignored and any
 * other byte is a not-well-formed error.
 */
int xmpp_xml_feed(struct xmpp_xml_parser *p, const void *buf, size_t len, size_t *used);

/*
 * Starts over, awaiting a new stream header: after STARTTLS, after SASL
 * success (RFC 6120 4.3.3), or to reuse the parser. Returns 0, or
 * XMPP_XML_ERR_STATE from a callback, or XMPP_XML_ERR_NOMEM (then the
 * parser only frees).
 */
int xmpp_xml_reset(struct xmpp_xml_parser *p);

/* The stream error so far (NONE when none) and its text (may be NULL). */
enum xmpp_xml_cond xmpp_xml_error(const struct xmpp_xml_parser *p, const char **text);

/* ---- The serializer ------------------------------------------------------- */

/* A growable output buffer; all-zero is empty. The serializer appends. */
struct xmpp_xml_buf {
	char *data;  /* not NUL-terminated */
	size_t len, cap;
};
void xmpp_xml_buf_free(struct xmpp_xml_buf *b);

/* What a stream header we send says. NULL strings are left out. */
struct xmpp_xml_header_out {
	const char *to, *from, *id;
	const char *version;      /* "1.0" normally; NULL for an old peer */
	const char *lang;         /* xml:lang */
	const char *content_ns;   /* NULL: XMPP_XML_NS_SERVER */
	int dialback;             /* declare xmlns:db */
};

/*
 * The serializer's view of the stream an element goes into: which namespace
 * is the default, and whether db: is declared. Elements in the streams
 * namespace are written with the stream: prefix, declared on every header
 * this module writes.
 */
struct xmpp_xml_ctx {
	const char *content_ns;   /* NULL: XMPP_XML_NS_SERVER */
	int dialback;             /* elements in XMPP_XML_NS_DIALBACK get db: */
};

/*
 * Each appends to b and returns 0, XMPP_XML_ERR_NOMEM, XMPP_XML_ERR_CHAR
 * (a character XML 1.0 does not allow) or XMPP_XML_ERR_NAME; on error b->len
 * is what it was before the call. Attribute values use single quotes;
 * & < > " ' are escaped everywhere, and so are CR in text and TAB, LF, CR
 * in attribute values, so that the reader gets the same characters back.
 */
/* <?xml version='1.0'?><stream:stream xmlns=... xmlns:stream=... [xmlns:db=...] ...> */
int xmpp_xml_write_header(struct xmpp_xml_buf *b, const struct xmpp_xml_header_out *h);
/* </stream:stream> */
int xmpp_xml_write_close(struct xmpp_xml_buf *b);
/* <stream:error><COND xmlns=streams-errors/>[<text xmlns=...>text</text>]</stream:error>;
 * text may be NULL. */
int xmpp_xml_write_error(struct xmpp_xml_buf *b, enum xmpp_xml_cond cond, const char *text);
/*
 * An element and its subtree, as a first-level element of the stream that
 * ctx describes (ctx NULL: jabber:server without db). Namespaces are
 * declared where they change; a namespaced attribute other than xml:
 * gets a prefix declared on its element.
 */
int xmpp_xml_write_elem(struct xmpp_xml_buf *b, const struct xmpp_xml_elem *el,
                        const struct xmpp_xml_ctx *ctx);

#endif
