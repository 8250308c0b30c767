#include "xmpp_xml.h"

/* Debian builds expat with DTD support, but expat.h only declares the
 * billion-laughs settings to programs that say so. */
#ifndef XML_DTD
#define XML_DTD 1
#endif
#include <expat.h>

#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

/* Expanded names come as "uri SEP local SEP prefix". XML 1.0 allows no
 * U+0001 anywhere, not even as &#1;, so it cannot be part of a URI. */
#define NS_SEP '\x01'

#define NS_XMLNS "http://www.w3.org/2000/xmlns/"

/* ---- Names -------------------------------------------------------------------- */

const char *xmpp_xml_strerror(int err)
{
	static const char *const texts[] = {
		"success", "stream error", "parser stopped or in a callback", "out of memory",
		"character not allowed in XML", "not an XML name or a reserved namespace",
	};

	if (err == XMPP_XML_STOPPED)
		return "stopped by a callback";
	return err <= 0 && -err < (int)(sizeof(texts) / sizeof(texts[0])) ? texts[-err] : "unknown error";
}

static const char *const cond_names[] = {
	[XMPP_XML_COND_NONE] = "undefined-condition",
	[XMPP_XML_COND_BAD_FORMAT] = "bad-format",
	[XMPP_XML_COND_BAD_NAMESPACE_PREFIX] = "bad-namespace-prefix",
	[XMPP_XML_COND_CONFLICT] = "conflict",
	[XMPP_XML_COND_CONNECTION_TIMEOUT] = "connection-timeout",
	[XMPP_XML_COND_HOST_GONE] = "host-gone",
	[XMPP_XML_COND_HOST_UNKNOWN] = "host-unknown",
	[XMPP_XML_COND_IMPROPER_ADDRESSING] = "improper-addressing",
	[XMPP_XML_COND_INTERNAL_SERVER_ERROR] = "internal-server-error",
	[XMPP_XML_COND_INVALID_FROM] = "invalid-from",
	[XMPP_XML_COND_INVALID_NAMESPACE] = "invalid-namespace",
	[XMPP_XML_COND_INVALID_XML] = "invalid-xml",
	[XMPP_XML_COND_NOT_AUTHORIZED] = "not-authorized",
	[XMPP_XML_COND_NOT_WELL_FORMED] = "not-well-formed",
	[XMPP_XML_COND_POLICY_VIOLATION] = "policy-violation",
	[XMPP_XML_COND_REMOTE_CONNECTION_FAILED] = "remote-connection-failed",
	[XMPP_XML_COND_RESET] = "reset",
	[XMPP_XML_COND_RESOURCE_CONSTRAINT] = "resource-constraint",
	[XMPP_XML_COND_RESTRICTED_XML] = "restricted-xml",
	[XMPP_XML_COND_SEE_OTHER_HOST] = "see-other-host",
	[XMPP_XML_COND_SYSTEM_SHUTDOWN] = "system-shutdown",
	[XMPP_XML_COND_UNDEFINED_CONDITION] = "undefined-condition",
	[XMPP_XML_COND_UNSUPPORTED_ENCODING] = "unsupported-encoding",
	[XMPP_XML_COND_UNSUPPORTED_FEATURE] = "unsupported-feature",
	[XMPP_XML_COND_UNSUPPORTED_STANZA_TYPE] = "unsupported-stanza-type",
	[XMPP_XML_COND_UNSUPPORTED_VERSION] = "unsupported-version",
};
#define NCONDS (sizeof(cond_names) / sizeof(cond_names[0]))

const char *xmpp_xml_cond_name(enum xmpp_xml_cond c)
{
	return (unsigned)c < NCONDS ? cond_names[c] : cond_names[0];
}

enum xmpp_xml_cond xmpp_xml_cond_from_name(const char *name)
{
	for (unsigned i = 1; name && i < NCONDS; i++)
		if (strcmp(name, cond_names[i]) == 0)
			return (enum xmpp_xml_cond)i;
	return XMPP_XML_COND_NONE;
}

/* ---- Arena ------------------------------------------------------------------- */

#define ARENA_MIN 1024

struct arena_block {
	struct arena_block *next;
	size_t used, cap;
	max_align_t data[]; /* cap bytes */
};

struct xmpp_xml_arena {
	struct arena_block *head;  /* the block being filled */
	int parser_owned;          /* xmpp_xml_free() leaves it to the parser */
};

static struct xmpp_xml_arena *arena_new(int parser_owned)
{
	struct xmpp_xml_arena *a = calloc(1, sizeof(*a));

	if (a)
		a->parser_owned = parser_owned;
	return a;
}

static void arena_free(struct xmpp_xml_arena *a)
{
	if (!a)
		return;
	for (struct arena_block *b = a->head, *next; b; b = next) {
		next = b->next;
		free(b);
	}
	free(a);
}

/* n bytes aligned for any node type. NULL when out of memory. */
static void *arena_alloc(struct xmpp_xml_arena *a, size_t n, size_t align)
{
	struct arena_block *b = a->head;
	size_t cap;

	if (b) {
		size_t off = (b->used + align - 1) & ~(align - 1);
		if (off <= b->cap && b->cap - off >= n) {
			b->used = off + n;
			return (char *)b->data + off;
		}
	}
	cap = n > ARENA_MIN ? n : ARENA_MIN;
	if (cap > SIZE_MAX - sizeof(*b))
		return NULL;
	if (!(b = malloc(sizeof(*b) + cap)))
		return NULL;
	b->cap = cap;
	b->used = n;
	/* A big string gets a block of its own behind the current one, so the
	 * room left in the current block still serves the small nodes. */
	if (a->head && n >= ARENA_MIN) {
		b->next = a->head->next;
		a->head->next = b;
	} else {
		b->next = a->head;
		a->head = b;
	}
	return b->data;
}

static char *arena_strndup(struct xmpp_xml_arena *a, const char *s, size_t n)
{
	char *d;

	if (n == SIZE_MAX || !(d = arena_alloc(a, n + 1, 1)))
		return NULL;
	if (n)
		memcpy(d, s, n);
	d[n] = '\0';
	return d;
}

/* ---- Trees -------------------------------------------------------------------- */

static int streq(const char *a, const char *b)
{
	return strcmp(a ? a : "", b ? b : "") == 0;
}

static struct xmpp_xml_elem *node_new(struct xmpp_xml_arena *a)
{
	struct xmpp_xml_elem *n = arena_alloc(a, sizeof(*n), _Alignof(struct xmpp_xml_elem));

	if (n) {
		memset(n, 0, sizeof(*n));
		n->arena = a;
	}
	return n;
}

static void node_append(struct xmpp_xml_elem *parent, struct xmpp_xml_elem *n)
{
	n->parent = parent;
	if (parent->last_child)
		parent->last_child->next = n;
	else
		parent->children = n;
	parent->last_child = n;
}

/*
 * A namespace string for a node of this tree: the parent's or the node's
 * own pointer when equal (one copy for a whole stanza), else a copy.
 */
static const char *ns_intern(struct xmpp_xml_arena *a, const struct xmpp_xml_elem *near,
                             const char *ns, size_t len)
{
	if (len == 0)
		return "";
	if (len == sizeof(XMPP_XML_NS_XML) - 1 && memcmp(ns, XMPP_XML_NS_XML, len) == 0)
		return XMPP_XML_NS_XML;
	for (; near; near = near->parent)
		if (near->ns && strlen(near->ns) == len && memcmp(near->ns, ns, len) == 0)
			return near->ns;
	return arena_strndup(a, ns, len);
}

struct xmpp_xml_elem *xmpp_xml_child(const struct xmpp_xml_elem *el,
                                     const struct xmpp_xml_elem *after,
                                     const char *name, const char *ns)
{
	struct xmpp_xml_elem *c;

	if (!el)
		return NULL;
	for (c = after ? after->next : el->children; c; c = c->next)
		if (c->name && (!name || strcmp(c->name, name) == 0) &&
		    (!ns || strcmp(c->ns, ns) == 0))
			return c;
	return NULL;
}

const char *xmpp_xml_attr_ns(const struct xmpp_xml_elem *el, const char *name, const char *ns)
{
	for (unsigned i = 0; el && i < el->nattrs; i++)
		if (strcmp(el->attrs[i].name, name) == 0 && streq(el->attrs[i].ns, ns))
			return el->attrs[i].value;
	return NULL;
}

const char *xmpp_xml_attr(const struct xmpp_xml_elem *el, const char *name)
{
	return xmpp_xml_attr_ns(el, name, "");
}

const char *xmpp_xml_text(const struct xmpp_xml_elem *el, size_t *len)
{
	const struct xmpp_xml_elem *c;
	char *s, *d;

	if (len)
		*len = el->text_len;
	if (!el->name)
		return el->text;
	if (el->text_len == 0)
		return "";
	for (c = el->children; c && c->name; c = c->next)
		;
	if (c && c->text_len == el->text_len)
		return c->text; /* the usual case: one text node */
	if (el->text_len == SIZE_MAX || !(s = arena_alloc(el->arena, el->text_len + 1, 1)))
		return NULL;
	d = s;
	for (c = el->children; c; c = c->next)
		if (!c->name) {
			memcpy(d, c->text, c->text_len);
			d += c->text_len;
		}
	*d = '\0';
	return s;
}

static struct xmpp_xml_elem *elem_new(struct xmpp_xml_arena *a, struct xmpp_xml_elem *parent,
                                      const char *name, const char *ns)
{
	struct xmpp_xml_elem *el = node_new(a);

	if (!el || !(el->name = arena_strndup(a, name, strlen(name))) ||
	    !(el->ns = ns_intern(a, parent, ns, strlen(ns))))
		return NULL;
	if (parent)
		node_append(parent, el);
	return el;
}

struct xmpp_xml_elem *xmpp_xml_new(const char *name, const char *ns)
{
	struct xmpp_xml_arena *a = arena_new(0);
	struct xmpp_xml_elem *el;

	if (!a)
		return NULL;
	if (!(el = elem_new(a, NULL, name, ns ? ns : ""))) {
		arena_free(a); a = NULL;
	}
	return el;
}

struct xmpp_xml_elem *xmpp_xml_add(struct xmpp_xml_elem *parent, const char *name, const char *ns)
{
	return elem_new(parent->arena, parent, name, ns ? ns : parent->ns);
}

int xmpp_xml_add_text(struct xmpp_xml_elem *el, const char *text, size_t len)
{
	struct xmpp_xml_elem *last = el->last_child, *t;
	char *s;

	if (len == 0)
		return 0;
	if (last && !last->name) {
		/* one text node per run, as the parser makes them */
		if (len > SIZE_MAX - 1 - last->text_len ||
		    !(s = arena_alloc(el->arena, last->text_len + len + 1, 1)))
			return XMPP_XML_ERR_NOMEM;
		memcpy(s, last->text, last->text_len);
		memcpy(s + last->text_len, text, len);
		s[last->text_len + len] = '\0';
		last->text = s;
		last->text_len += len;
	} else {
		if (!(t = node_new(el->arena)) || !(s = arena_strndup(el->arena, text, len)))
			return XMPP_XML_ERR_NOMEM;
		t->text = s;
		t->text_len = len;
		node_append(el, t);
	}
	el->text_len += len;
	return 0;
}

static struct xmpp_xml_attr *attrs_alloc(struct xmpp_xml_arena *a, size_t n)
{
	return arena_alloc(a, n * sizeof(struct xmpp_xml_attr), _Alignof(struct xmpp_xml_attr));
}

/* Room for one more attribute, growing the array inside the arena. */
static int attr_room(struct xmpp_xml_elem *el)
{
	struct xmpp_xml_attr *a;
	unsigned cap;

	if (el->nattrs < el->attr_cap)
		return 0;
	cap = el->attr_cap ? el->attr_cap * 2 : 4;
	if (cap <= el->attr_cap || !(a = attrs_alloc(el->arena, cap)))
		return XMPP_XML_ERR_NOMEM;
	if (el->nattrs)
		memcpy(a, el->attrs, el->nattrs * sizeof(*a));
	el->attrs = a;
	el->attr_cap = cap;
	return 0;
}

int xmpp_xml_set_attr(struct xmpp_xml_elem *el, const char *name, const char *ns,
                      const char *value)
{
	size_t vlen = strlen(value);
	struct xmpp_xml_attr *at = NULL;
	char *v;

	ns = ns ? ns : "";
	for (unsigned i = 0; i < el->nattrs; i++)
		if (strcmp(el->attrs[i].name, name) == 0 && strcmp(el->attrs[i].ns, ns) == 0)
			at = &el->attrs[i];
	if (!(v = arena_strndup(el->arena, value, vlen)))
		return XMPP_XML_ERR_NOMEM;
	if (!at) {
		const char *n, *s;

		if (attr_room(el) < 0 || !(n = arena_strndup(el->arena, name, strlen(name))) ||
		    !(s = ns_intern(el->arena, el, ns, strlen(ns))))
			return XMPP_XML_ERR_NOMEM;
		at = &el->attrs[el->nattrs++];
		at->name = n;
		at->ns = s;
	}
	at->value = v;
	at->value_len = vlen;
	return 0;
}

static int clone_into(struct xmpp_xml_arena *a, struct xmpp_xml_elem *parent,
                      const struct xmpp_xml_elem *src, struct xmpp_xml_elem **out)
{
	struct xmpp_xml_elem *el;

	if (!src->name) {
		if (!(el = node_new(a)) || !(el->text = arena_strndup(a, src->text, src->text_len)))
			return XMPP_XML_ERR_NOMEM;
		el->text_len = src->text_len;
		node_append(parent, el);
		return 0;
	}
	if (!(el = elem_new(a, parent, src->name, src->ns)))
		return XMPP_XML_ERR_NOMEM;
	el->text_len = src->text_len;
	if (src->nattrs) {
		if (!(el->attrs = attrs_alloc(a, src->nattrs)))
			return XMPP_XML_ERR_NOMEM;
		el->attr_cap = src->nattrs;
	}
	for (unsigned i = 0; i < src->nattrs; i++) {
		const struct xmpp_xml_attr *s = &src->attrs[i];
		struct xmpp_xml_attr *d = &el->attrs[i];

		if (!(d->name = arena_strndup(a, s->name, strlen(s->name))) ||
		    !(d->ns = ns_intern(a, el, s->ns, strlen(s->ns))) ||
		    !(d->value = arena_strndup(a, s->value, s->value_len)))
			return XMPP_XML_ERR_NOMEM;
		d->value_len = s->value_len;
		el->nattrs++;
	}
	for (const struct xmpp_xml_elem *c = src->children; c; c = c->next)
		if (clone_into(a, el, c, NULL) < 0)
			return XMPP_XML_ERR_NOMEM;
	if (out)
		*out = el;
	return 0;
}

struct xmpp_xml_elem *xmpp_xml_clone(const struct xmpp_xml_elem *src)
{
	struct xmpp_xml_arena *a;
	struct xmpp_xml_elem *root = NULL;

	if (!src || !src->name || !(a = arena_new(0)))
		return NULL;
	if (clone_into(a, NULL, src, &root) < 0) {
		arena_free(a); a = NULL;
		return NULL;
	}
	return root;
}

void xmpp_xml_free(struct xmpp_xml_elem *root)
{
	if (root && !root->parent && !root->arena->parser_owned)
		arena_free(root->arena);
}

int xmpp_xml_equal(const struct xmpp_xml_elem *a, const struct xmpp_xml_elem *b)
{
	const struct xmpp_xml_elem *x, *y;

	if (!a->name || !b->name)
		return !a->name && !b->name && a->text_len == b->text_len &&
		       memcmp(a->text, b->text, a->text_len) == 0;
	if (strcmp(a->name, b->name) || strcmp(a->ns, b->ns) || a->nattrs != b->nattrs)
		return 0;
	for (unsigned i = 0; i < a->nattrs; i++) {
		const struct xmpp_xml_attr *p = &a->attrs[i], *q = &b->attrs[i];

		if (strcmp(p->name, q->name) || strcmp(p->ns, q->ns) || p->value_len != q->value_len ||
		    memcmp(p->value, q->value, p->value_len))
			return 0;
	}
	for (x = a->children, y = b->children; x && y; x = x->next, y = y->next)
		if (!xmpp_xml_equal(x, y))
			return 0;
	return !x && !y;
}

/* ---- The stream parser ---------------------------------------------------------- */

enum pstate {
	ST_HEADER = 0, /* before the stream header */
	ST_STREAM,     /* inside the stream */
	ST_CLOSED,     /* after </stream:stream> */
	ST_STOPPED,    /* a callback asked to stop */
	ST_ERROR,      /* a stream error was found */
};

struct xmpp_xml_parser {
	XML_Parser xp;
	struct xmpp_xml_limits lim;
	struct xmpp_xml_cbs cbs;
	void *arg;
	unsigned long salt;

	enum pstate state;
	int in_parse;                  /* inside XML_Parse: handlers may run */
	unsigned depth;                /* open elements, the stream's included */
	unsigned nelems;               /* elements of the first-level element */
	unsigned pending_ns;           /* namespace declarations of the next element */
	unsigned long long fed;        /* bytes given to expat since the stream began */
	unsigned long long mark;       /* where the bytes of the current element began */
	unsigned long long stop_at;    /* STOPPED, CLOSED: just past the last event */

	struct xmpp_xml_arena *arena;  /* the tree being built, or NULL */
	struct xmpp_xml_elem *cur;     /* its innermost open element */
	char *tbuf;                    /* a run of text not yet in the tree */
	size_t tlen, tcap;

	/* Namespace declarations of the stream header, seen before its start. */
	struct xmpp_xml_arena *harena;
	struct xmpp_xml_prefix *prefixes;
	unsigned nprefixes, prefix_cap;
	const char *default_ns;        /* NULL until declared; "" when undeclared */

	enum xmpp_xml_cond cond;
	int reported;                  /* on_error was called */
	char text[192];
};

static void fill_limits(struct xmpp_xml_limits *l, const struct xmpp_xml_limits *in)
{
	*l = in ? *in : (struct xmpp_xml_limits){ 0 };
	if (!l->max_stanza_bytes)
		l->max_stanza_bytes = 65536;
	if (!l->max_header_bytes)
		l->max_header_bytes = 4096;
	if (!l->max_text_bytes)
		l->max_text_bytes = l->max_stanza_bytes;
	if (!l->max_depth)
		l->max_depth = 16;
	if (!l->max_attrs)
		l->max_attrs = 32;
	if (!l->max_elements)
		l->max_elements = 1024;
}

/* Copies s for a log text: printable ASCII only, at most 48 bytes, so that
 * the text stays valid UTF-8 and short whatever the peer sent. */
static const char *clean(char *out, size_t size, const char *s)
{
	size_t i = 0;

	for (; s && *s && i + 4 < size && i < 48; s++)
		out[i++] = (*s >= 0x20 && *s < 0x7f) ? *s : '?';
	if (s && *s)
		for (int k = 0; k < 3; k++)
			out[i++] = '.';
	out[i] = '\0';
	return out;
}

/* Records the first stream error and stops expat when inside it. */
__attribute__((format(printf, 3, 4)))
static void fail(struct xmpp_xml_parser *p, enum xmpp_xml_cond cond, const char *fmt, ...)
{
	va_list ap;

	if (p->cond != XMPP_XML_COND_NONE)
		return;
	p->cond = cond;
	va_start(ap, fmt);
	vsnprintf(p->text, sizeof(p->text), fmt, ap);
	va_end(ap);
	p->state = ST_ERROR;
	if (p->in_parse)
		XML_StopParser(p->xp, XML_FALSE);
}

/*
 * Whether handlers still build anything. Expat runs the end handler of an
 * empty element even when its start handler stopped the parser, so every
 * handler asks first.
 */
static int live(const struct xmpp_xml_parser *p)
{
	return p->state == ST_HEADER || p->state == ST_STREAM;
}

/* The stream offset just past the event a handler is called for. */
static unsigned long long event_end(struct xmpp_xml_parser *p)
{
	XML_Index i = XML_GetCurrentByteIndex(p->xp);
	int n = XML_GetCurrentByteCount(p->xp);

	return i < 0 ? p->fed : (unsigned long long)i + (unsigned long long)(n > 0 ? n : 0);
}

/* Splits an expanded name "uri SEP local [SEP prefix]". */
struct xname {
	const char *ns, *local, *prefix; /* prefix NULL when none */
	size_t ns_len, local_len;
};

static void split_name(const char *s, struct xname *x)
{
	const char *sep = strchr(s, NS_SEP), *sep2;

	if (!sep) {
		*x = (struct xname){ "", s, NULL, 0, strlen(s) };
		return;
	}
	x->ns = s;
	x->ns_len = (size_t)(sep - s);
	x->local = sep + 1;
	sep2 = strchr(x->local, NS_SEP);
	x->local_len = sep2 ? (size_t)(sep2 - x->local) : strlen(x->local);
	x->prefix = sep2 ? sep2 + 1 : NULL;
}

static int xname_is(const struct xname *x, const char *ns, const char *local)
{
	return x->ns_len == strlen(ns) && memcmp(x->ns, ns, x->ns_len) == 0 &&
	       x->local_len == strlen(local) && memcmp(x->local, local, x->local_len) == 0;
}

/* Moves the pending run of text into the tree as one text node. */
static int flush_text(struct xmpp_xml_parser *p)
{
	struct xmpp_xml_elem *t;

	if (!p->tlen)
		return 0;
	if (!(t = node_new(p->arena)) || !(t->text = arena_strndup(p->arena, p->tbuf, p->tlen))) {
		fail(p, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "out of memory");
		return -1;
	}
	t->text_len = p->tlen;
	node_append(p->cur, t);
	p->tlen = 0;
	return 0;
}

static void drop_tree(struct xmpp_xml_parser *p)
{
	arena_free(p->arena); p->arena = NULL;
	p->cur = NULL;
	p->tlen = 0;
	if (p->tcap > 4096) { /* an idle stream keeps little */
		free(p->tbuf); p->tbuf = NULL;
		p->tcap = 0;
	}
}

static void drop_header(struct xmpp_xml_parser *p)
{
	arena_free(p->harena); p->harena = NULL;
	p->prefixes = NULL;
	p->nprefixes = p->prefix_cap = 0;
	p->default_ns = NULL;
}

/* Copies expat's attributes into out[], n of them, in arena a. */
static int copy_attrs(struct xmpp_xml_arena *a, const struct xmpp_xml_elem *near,
                      const XML_Char **atts, struct xmpp_xml_attr *out, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		struct xname x;
		size_t vlen = strlen(atts[2 * i + 1]);

		split_name(atts[2 * i], &x);
		if (!(out[i].name = arena_strndup(a, x.local, x.local_len)) ||
		    !(out[i].ns = ns_intern(a, near, x.ns, x.ns_len)) ||
		    !(out[i].value = arena_strndup(a, atts[2 * i + 1], vlen)))
			return -1;
		out[i].value_len = vlen;
	}
	return 0;
}

/* "major.minor", each 1*DIGIT (RFC 6120 4.7.5). 0 or -1. */
static int parse_version(const char *s, unsigned *major, unsigned *minor)
{
	unsigned *out[2] = { major, minor };

	for (int k = 0; k < 2; k++) {
		unsigned long v = 0;
		const char *start = s;

		for (; *s >= '0' && *s <= '9'; s++) {
			v = v * 10 + (unsigned long)(*s - '0');
			if (v > 65535)
				return -1;
		}
		if (s == start || *s != (k == 0 ? '.' : '\0'))
			return -1;
		*out[k] = (unsigned)v;
		s++;
	}
	return 0;
}

/* The stream header's start tag: checks it and hands it to on_open. */
static void open_stream(struct xmpp_xml_parser *p, const char *name, const XML_Char **atts,
                        unsigned nattrs)
{
	struct xmpp_xml_header h = { 0 };
	struct xmpp_xml_attr *attrs = NULL;
	char buf[64];
	struct xname x;

	split_name(name, &x);
	if (x.ns_len != sizeof(XMPP_XML_NS_STREAMS) - 1 ||
	    memcmp(x.ns, XMPP_XML_NS_STREAMS, x.ns_len) != 0) {
		fail(p, XMPP_XML_COND_INVALID_NAMESPACE, "the first element is not in the streams "
		     "namespace");
		return;
	}
	if (!xname_is(&x, XMPP_XML_NS_STREAMS, "stream")) {
		fail(p, XMPP_XML_COND_BAD_FORMAT, "the first element is not <stream>");
		return;
	}
	if (!x.prefix) {
		fail(p, XMPP_XML_COND_BAD_NAMESPACE_PREFIX, "the stream element has no prefix");
		return;
	}
	if (!p->default_ns || (strcmp(p->default_ns, XMPP_XML_NS_SERVER) != 0 &&
	                       strcmp(p->default_ns, XMPP_XML_NS_CLIENT) != 0)) {
		fail(p, XMPP_XML_COND_INVALID_NAMESPACE, "default namespace '%s'",
		     clean(buf, sizeof(buf), p->default_ns ? p->default_ns : "(none)"));
		return;
	}
	if (!p->harena && !(p->harena = arena_new(1)))
		goto nomem;
	if (nattrs && (!(attrs = attrs_alloc(p->harena, nattrs)) ||
	               copy_attrs(p->harena, NULL, atts, attrs, nattrs) < 0))
		goto nomem;
	for (unsigned i = 0; i < nattrs; i++) {
		const struct xmpp_xml_attr *a = &attrs[i];
		const char **slot = NULL;

		if (!*a->ns) {
			if (!strcmp(a->name, "to"))
				slot = &h.to;
			else if (!strcmp(a->name, "from"))
				slot = &h.from;
			else if (!strcmp(a->name, "id"))
				slot = &h.id;
			else if (!strcmp(a->name, "version"))
				slot = &h.version;
		} else if (!strcmp(a->ns, XMPP_XML_NS_XML) && !strcmp(a->name, "lang")) {
			slot = &h.lang;
		}
		if (slot)
			*slot = a->value;
	}
	h.version_major = 0;
	h.version_minor = 9;
	if (h.version && (parse_version(h.version, &h.version_major, &h.version_minor) < 0 ||
	                  h.version_major != 1)) {
		fail(p, XMPP_XML_COND_UNSUPPORTED_VERSION, "stream version '%s'",
		     clean(buf, sizeof(buf), h.version));
		return;
	}
	h.content_ns = p->default_ns;
	h.prefixes = p->prefixes;
	h.nprefixes = p->nprefixes;
	h.attrs = attrs;
	h.nattrs = nattrs;

	p->state = ST_STREAM;
	p->depth = 1;
	p->mark = event_end(p);
	if (p->cbs.on_open && p->cbs.on_open(p->arg, &h)) {
		p->state = ST_STOPPED;
		p->stop_at = p->mark;
		XML_StopParser(p->xp, XML_FALSE);
	}
	drop_header(p);
	return;
nomem:
	fail(p, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "out of memory");
}

static void XMLCALL on_ns_start(void *ud, const XML_Char *prefix, const XML_Char *uri)
{
	struct xmpp_xml_parser *p = ud;
	struct xmpp_xml_prefix *d;
	size_t ulen = uri ? strlen(uri) : 0;

	if (!live(p))
		return;
	if (p->depth > 0) {
		p->pending_ns++; /* counts as an attribute of the next element */
		return;
	}
	if (!p->harena && !(p->harena = arena_new(1)))
		goto nomem;
	if (!prefix) {
		/* expat's copy only lasts as long as the start tag's handlers */
		if (!(p->default_ns = arena_strndup(p->harena, uri ? uri : "", ulen)))
			goto nomem;
		return;
	}
	if (p->nprefixes + 1 > p->lim.max_attrs) {
		fail(p, XMPP_XML_COND_POLICY_VIOLATION, "more than %u attributes on the stream header",
		     p->lim.max_attrs);
		return;
	}
	if (p->nprefixes == p->prefix_cap) {
		unsigned cap = p->prefix_cap ? p->prefix_cap * 2 : 4;
		struct xmpp_xml_prefix *a = arena_alloc(p->harena, cap * sizeof(*a),
		                                        _Alignof(struct xmpp_xml_prefix));

		if (!a)
			goto nomem;
		if (p->nprefixes)
			memcpy(a, p->prefixes, p->nprefixes * sizeof(*a));
		p->prefixes = a;
		p->prefix_cap = cap;
	}
	d = &p->prefixes[p->nprefixes];
	if (!(d->prefix = arena_strndup(p->harena, prefix, strlen(prefix))) ||
	    !(d->uri = arena_strndup(p->harena, uri ? uri : "", ulen)))
		goto nomem;
	p->nprefixes++;
	return;
nomem:
	fail(p, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "out of memory");
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	struct xmpp_xml_parser *p = ud;
	struct xmpp_xml_elem *el;
	unsigned nattrs = 0, total;
	struct xname x;

	if (!live(p))
		return;
	while (atts[2 * nattrs])
		nattrs++;
	total = nattrs + p->pending_ns + (p->depth == 0 ? p->nprefixes : 0);
	p->pending_ns = 0;
	if (total > p->lim.max_attrs) {
		fail(p, XMPP_XML_COND_POLICY_VIOLATION, "an element with %u attributes, limit %u",
		     total, p->lim.max_attrs);
		return;
	}
	if (p->depth == 0) {
		open_stream(p, name, atts, nattrs);
		return;
	}
	/* The level of the new element in its first-level element (itself 1). */
	if (p->depth > p->lim.max_depth) {
		fail(p, XMPP_XML_COND_POLICY_VIOLATION, "elements nested deeper than %u",
		     p->lim.max_depth);
		return;
	}
	if (++p->nelems > p->lim.max_elements) {
		fail(p, XMPP_XML_COND_POLICY_VIOLATION, "more than %u elements in a stanza",
		     p->lim.max_elements);
		return;
	}
	if (p->depth == 1) {
		if (!(p->arena = arena_new(1)))
			goto nomem;
	} else if (flush_text(p) < 0) {
		return;
	}
	split_name(name, &x);
	if (!(el = node_new(p->arena)) || !(el->name = arena_strndup(p->arena, x.local, x.local_len)) ||
	    !(el->ns = ns_intern(p->arena, p->cur, x.ns, x.ns_len)))
		goto nomem;
	if (p->cur)
		node_append(p->cur, el);
	p->cur = el;
	if (nattrs) {
		if (!(el->attrs = attrs_alloc(p->arena, nattrs)) ||
		    copy_attrs(p->arena, el, atts, el->attrs, nattrs) < 0)
			goto nomem;
		el->nattrs = el->attr_cap = nattrs;
	}
	p->depth++;
	return;
nomem:
	fail(p, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "out of memory");
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
	struct xmpp_xml_parser *p = ud;
	struct xmpp_xml_elem *el = p->cur;
	unsigned long long end;

	(void)name;
	if (!live(p))
		return;
	end = event_end(p);
	if (p->depth == 1) {
		p->depth = 0;
		p->state = ST_CLOSED;
		p->stop_at = end;
		/* the rest is not XML for expat: feed checks it is whitespace */
		XML_StopParser(p->xp, XML_FALSE);
		if (p->cbs.on_close)
			p->cbs.on_close(p->arg);
		return;
	}
	if (flush_text(p) < 0)
		return;
	p->cur = el->parent;
	if (--p->depth > 1)
		return;
	/* A first-level element is complete. The check in feed lets at most
	 * one read's worth past the limit into expat; this one is exact. */
	if (end - p->mark > p->lim.max_stanza_bytes) {
		fail(p, XMPP_XML_COND_POLICY_VIOLATION, "a stanza of more than %zu bytes",
		     p->lim.max_stanza_bytes);
		return;
	}
	p->mark = end;
	p->nelems = 0;
	if (p->cbs.on_element && p->cbs.on_element(p->arg, el)) {
		p->state = ST_STOPPED;
		p->stop_at = end;
		XML_StopParser(p->xp, XML_FALSE);
	}
	drop_tree(p);
}

static int is_space(char c)
{
	return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
	struct xmpp_xml_parser *p = ud;
	size_t n = (size_t)len;

	if (!live(p))
		return;
	if (p->depth <= 1) {
		/* between first-level elements: whitespace keep-alives only, and
		 * not part of any element's budget */
		for (int i = 0; i < len; i++)
			if (!is_space(s[i])) {
				fail(p, XMPP_XML_COND_BAD_FORMAT, "text between stanzas");
				return;
			}
		p->mark = event_end(p);
		return;
	}
	if (n > p->lim.max_text_bytes - p->cur->text_len) {
		fail(p, XMPP_XML_COND_POLICY_VIOLATION, "an element with more than %zu bytes of text",
		     p->lim.max_text_bytes);
		return;
	}
	if (p->tcap - p->tlen < n) {
		size_t cap = p->tcap ? p->tcap : 256;
		char *b;

		while (cap - p->tlen < n)
			cap *= 2; /* bounded by max_text_bytes, checked above */
		if (!(b = realloc(p->tbuf, cap))) {
			fail(p, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "out of memory");
			return;
		}
		p->tbuf = b;
		p->tcap = cap;
	}
	memcpy(p->tbuf + p->tlen, s, n);
	p->tlen += n;
	p->cur->text_len += n;
}

/* RFC 6120 11.1: no comments, processing instructions, DTDs or entities. */
static void XMLCALL on_comment(void *ud, const XML_Char *data)
{
	(void)data;
	fail(ud, XMPP_XML_COND_RESTRICTED_XML, "an XML comment");
}

static void XMLCALL on_pi(void *ud, const XML_Char *target, const XML_Char *data)
{
	(void)target; (void)data;
	fail(ud, XMPP_XML_COND_RESTRICTED_XML, "a processing instruction");
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
	(void)name; (void)sysid; (void)pubid; (void)has_internal_subset;
	fail(ud, XMPP_XML_COND_RESTRICTED_XML, "a document type declaration");
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_pe,
                                   const XML_Char *value, int value_len, const XML_Char *base,
                                   const XML_Char *sysid, const XML_Char *pubid,
                                   const XML_Char *notation)
{
	(void)name; (void)is_pe; (void)value; (void)value_len; (void)base; (void)sysid;
	(void)pubid; (void)notation;
	fail(ud, XMPP_XML_COND_RESTRICTED_XML, "an entity declaration");
}

static void XMLCALL on_skipped_entity(void *ud, const XML_Char *name, int is_pe)
{
	(void)name; (void)is_pe;
	fail(ud, XMPP_XML_COND_RESTRICTED_XML, "an entity reference");
}

static int XMLCALL on_external_entity(XML_Parser xp, const XML_Char *context,
                                      const XML_Char *base, const XML_Char *sysid,
                                      const XML_Char *pubid)
{
	(void)context; (void)base; (void)sysid; (void)pubid;
	fail(XML_GetUserData(xp), XMPP_XML_COND_RESTRICTED_XML, "an external entity");
	return XML_STATUS_ERROR;
}

/* The XML declaration: XMPP is UTF-8 only (RFC 6120 11.6). */
static void XMLCALL on_xml_decl(void *ud, const XML_Char *version, const XML_Char *encoding,
                                int standalone)
{
	(void)version; (void)standalone;
	if (encoding && strcasecmp(encoding, "UTF-8") != 0) {
		char buf[64];
		fail(ud, XMPP_XML_COND_UNSUPPORTED_ENCODING, "encoding '%s'",
		     clean(buf, sizeof(buf), encoding));
	}
}

/* Handlers and settings, again after each XML_ParserReset(), which clears them. */
static void setup(struct xmpp_xml_parser *p)
{
	XML_Parser xp = p->xp;

	XML_SetUserData(xp, p);
	if (p->salt)
		XML_SetHashSalt(xp, p->salt);
	XML_SetReturnNSTriplet(xp, 1);
	XML_SetParamEntityParsing(xp, XML_PARAM_ENTITY_PARSING_NEVER);
	/* No entity is ever declared (DOCTYPE is refused first): this is a
	 * second guard against expansion bombs. */
	XML_SetBillionLaughsAttackProtectionMaximumAmplification(xp, 4.0f);
	XML_SetBillionLaughsAttackProtectionActivationThreshold(xp, 65536);
#ifdef HAVE_EXPAT_REPARSE_DEFERRAL
	/* Deferred reparsing would hold back complete elements, and the byte
	 * budget of feed counts on every complete element being reported. */
	XML_SetReparseDeferralEnabled(xp, XML_FALSE);
#endif
	XML_SetElementHandler(xp, on_start, on_end);
	XML_SetStartNamespaceDeclHandler(xp, on_ns_start);
	XML_SetCharacterDataHandler(xp, on_text);
	XML_SetCommentHandler(xp, on_comment);
	XML_SetProcessingInstructionHandler(xp, on_pi);
	XML_SetStartDoctypeDeclHandler(xp, on_doctype);
	XML_SetEntityDeclHandler(xp, on_entity_decl);
	XML_SetSkippedEntityHandler(xp, on_skipped_entity);
	XML_SetExternalEntityRefHandler(xp, on_external_entity);
	XML_SetXmlDeclHandler(xp, on_xml_decl);
}

static void clear_state(struct xmpp_xml_parser *p)
{
	drop_tree(p);
	drop_header(p);
	p->state = ST_HEADER;
	p->depth = p->nelems = p->pending_ns = 0;
	p->fed = p->mark = p->stop_at = 0;
	p->cond = XMPP_XML_COND_NONE;
	p->reported = 0;
	p->text[0] = '\0';
}

struct xmpp_xml_parser *xmpp_xml_parser_new(const struct xmpp_xml_limits *lim,
                                            const struct xmpp_xml_cbs *cbs, void *arg)
{
	struct xmpp_xml_parser *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	fill_limits(&p->lim, lim);
	if (cbs)
		p->cbs = *cbs;
	p->arg = arg;
	/* Our own salt rather than expat's fallback: getrandom() once per
	 * parser, kept across resets. 0 lets expat pick one. */
	if (getrandom(&p->salt, sizeof(p->salt), GRND_NONBLOCK) != (ssize_t)sizeof(p->salt))
		p->salt = 0;
	/* UTF-8 is forced: an XML declaration cannot switch expat to another
	 * encoding (on_xml_decl refuses one that says so). */
	if (!(p->xp = XML_ParserCreateNS("UTF-8", NS_SEP))) {
		free(p); p = NULL;
		return NULL;
	}
	setup(p);
	return p;
}

void xmpp_xml_parser_free(struct xmpp_xml_parser *p)
{
	if (!p)
		return;
	drop_tree(p);
	drop_header(p);
	free(p->tbuf); p->tbuf = NULL;
	XML_ParserFree(p->xp);
	free(p);
}

int xmpp_xml_reset(struct xmpp_xml_parser *p)
{
	if (p->in_parse)
		return XMPP_XML_ERR_STATE;
	clear_state(p);
	if (!XML_ParserReset(p->xp, "UTF-8")) {
		p->state = ST_ERROR;
		p->cond = XMPP_XML_COND_INTERNAL_SERVER_ERROR;
		snprintf(p->text, sizeof(p->text), "parser reset failed");
		return XMPP_XML_ERR_NOMEM;
	}
	setup(p);
	return 0;
}

enum xmpp_xml_cond xmpp_xml_error(const struct xmpp_xml_parser *p, const char **text)
{
	if (text)
		*text = p->cond != XMPP_XML_COND_NONE ? p->text : NULL;
	return p->cond;
}

/* An error that expat found itself, as a stream error condition. */
static void fail_expat(struct xmpp_xml_parser *p)
{
	enum XML_Error e = XML_GetErrorCode(p->xp);
	enum xmpp_xml_cond c;

	switch (e) {
	case XML_ERROR_NO_MEMORY:
		c = XMPP_XML_COND_INTERNAL_SERVER_ERROR;
		break;
	case XML_ERROR_UNDEFINED_ENTITY:
	case XML_ERROR_RECURSIVE_ENTITY_REF:
	case XML_ERROR_BINARY_ENTITY_REF:
	case XML_ERROR_ATTRIBUTE_EXTERNAL_ENTITY_REF:
	case XML_ERROR_EXTERNAL_ENTITY_HANDLING:
	case XML_ERROR_ENTITY_DECLARED_IN_PE:
	case XML_ERROR_NOT_STANDALONE:
	case XML_ERROR_AMPLIFICATION_LIMIT_BREACH:
		c = XMPP_XML_COND_RESTRICTED_XML;
		break;
	case XML_ERROR_UNKNOWN_ENCODING:
	case XML_ERROR_INCORRECT_ENCODING:
		c = XMPP_XML_COND_UNSUPPORTED_ENCODING;
		break;
	default:
		c = XMPP_XML_COND_NOT_WELL_FORMED;
		break;
	}
	fail(p, c, "%s at line %lu column %lu", XML_ErrorString(e),
	     (unsigned long)XML_GetCurrentLineNumber(p->xp),
	     (unsigned long)XML_GetCurrentColumnNumber(p->xp));
}

static int report(struct xmpp_xml_parser *p)
{
	p->state = ST_ERROR;
	if (!p->reported) {
		p->reported = 1;
		if (p->cbs.on_error)
			p->cbs.on_error(p->arg, p->cond, p->text);
	}
	return XMPP_XML_ERR_STREAM;
}

/* After </stream:stream> only whitespace may follow. */
static int after_close(struct xmpp_xml_parser *p, const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (!is_space(s[i])) {
			fail(p, XMPP_XML_COND_NOT_WELL_FORMED, "data after the stream closed");
			return report(p);
		}
	return XMPP_XML_OK;
}

int xmpp_xml_feed(struct xmpp_xml_parser *p, const void *buf, size_t len, size_t *used)
{
	const char *s = buf;
	unsigned long long base = p->fed;
	size_t off = 0, dummy;
	int rc;

	used = used ? used : &dummy;
	*used = 0;
	if (p->in_parse || p->state == ST_STOPPED || p->state == ST_ERROR)
		return XMPP_XML_ERR_STATE;
	if (p->state == ST_CLOSED) {
		if ((rc = after_close(p, s, len)) == XMPP_XML_OK)
			*used = len;
		return rc;
	}
	while (off < len) {
		size_t limit = p->state == ST_HEADER ? p->lim.max_header_bytes : p->lim.max_stanza_bytes;
		unsigned long long pending = p->fed - p->mark;
		size_t n = len - off;
		enum XML_Status st;

		/* Never hand expat more than the element being read may still
		 * take: its buffer stays within the limit, whatever the input. */
		if (pending >= limit) {
			fail(p, XMPP_XML_COND_POLICY_VIOLATION, "a %s of more than %zu bytes",
			     p->state == ST_HEADER ? "stream header" : "stanza", limit);
			return report(p);
		}
		if (n > limit - pending)
			n = (size_t)(limit - pending);
		if (n > INT_MAX)
			n = INT_MAX;
		p->in_parse = 1;
		st = XML_Parse(p->xp, s + off, (int)n, XML_FALSE);
		p->in_parse = 0;
		p->fed += n;
		if (st == XML_STATUS_OK) {
			off += n;
			continue;
		}
		if (p->state == ST_STOPPED) {
			*used = p->stop_at > base ? (size_t)(p->stop_at - base) : 0;
			return XMPP_XML_STOPPED;
		}
		if (p->state == ST_CLOSED) {
			size_t at = p->stop_at > base ? (size_t)(p->stop_at - base) : 0;

			if ((rc = after_close(p, s + at, len - at)) == XMPP_XML_OK)
				*used = len;
			return rc;
		}
		if (p->cond == XMPP_XML_COND_NONE)
			fail_expat(p);
		return report(p);
	}
	*used = len;
	return XMPP_XML_OK;
}

/* ---- The serializer --------------------------------------------------------------- */

void xmpp_xml_buf_free(struct xmpp_xml_buf *b)
{
	free(b->data); b->data = NULL;
	b->len = b->cap = 0;
}

static int buf_put(struct xmpp_xml_buf *b, const char *s, size_t n)
{
	if (b->cap - b->len < n) {
		size_t cap = b->cap ? b->cap : 256;
		char *d;

		while (cap - b->len < n) {
			if (cap > SIZE_MAX / 2)
				return XMPP_XML_ERR_NOMEM;
			cap *= 2;
		}
		if (!(d = realloc(b->data, cap)))
			return XMPP_XML_ERR_NOMEM;
		b->data = d;
		b->cap = cap;
	}
	if (n)
		memcpy(b->data + b->len, s, n);
	b->len += n;
	return 0;
}

static int buf_str(struct xmpp_xml_buf *b, const char *s)
{
	return buf_put(b, s, strlen(s));
}

size_t xmpp_xml_utf8_next(const unsigned char *s, size_t n, uint32_t *cp)
{
	size_t len, i;
	uint32_t c, min;

	if (s[0] < 0x80) {
		*cp = s[0];
		return 1;
	}
	if ((s[0] & 0xe0) == 0xc0) {
		len = 2; c = s[0] & 0x1f; min = 0x80;
	} else if ((s[0] & 0xf0) == 0xe0) {
		len = 3; c = s[0] & 0x0f; min = 0x800;
	} else if ((s[0] & 0xf8) == 0xf0) {
		len = 4; c = s[0] & 0x07; min = 0x10000;
	} else {
		return 0;
	}
	if (n < len)
		return 0;
	for (i = 1; i < len; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = (c << 6) | (s[i] & 0x3f);
	}
	if (c < min || c > 0x10ffff || (c >= 0xd800 && c <= 0xdfff))
		return 0;
	*cp = c;
	return len;
}

int xmpp_xml_is_char(uint32_t c)
{
	return c == 0x9 || c == 0xa || c == 0xd || (c >= 0x20 && c <= 0xd7ff) ||
	       (c >= 0xe000 && c <= 0xfffd) || (c >= 0x10000 && c <= 0x10ffff);
}

int xmpp_xml_text_ok(const char *text, size_t n)
{
	const unsigned char *s = (const unsigned char *)text;
	for (size_t i = 0; i < n;) {
		uint32_t c;
		size_t clen = xmpp_xml_utf8_next(s + i, n - i, &c);
		if (!clen || !xmpp_xml_is_char(c))
			return 0;
		i += clen;
	}
	return 1;
}

/* Appends text or an attribute value, escaped; checks every character. */
static int put_escaped(struct xmpp_xml_buf *b, const char *str, size_t n, int in_attr)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0, run = 0;
	int rc;

	while (i < n) {
		const char *rep = NULL;
		uint32_t c;
		size_t clen = xmpp_xml_utf8_next(s + i, n - i, &c);

		if (!clen || !xmpp_xml_is_char(c))
			return XMPP_XML_ERR_CHAR;
		switch (c) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '"': rep = "&quot;"; break;
		case '\'': rep = "&apos;"; break;
		/* the reader normalizes line ends, and in attributes all blanks */
		case '\r': rep = "&#13;"; break;
		case '\n': rep = in_attr ? "&#10;" : NULL; break;
		case '\t': rep = in_attr ? "&#9;" : NULL; break;
		}
		if (rep) {
			if ((rc = buf_put(b, str + run, i - run)) < 0 || (rc = buf_str(b, rep)) < 0)
				return rc;
			run = i + clen;
		}
		i += clen;
	}
	return buf_put(b, str + run, n - run);
}

/* XML 1.0 fifth edition NameStartChar and NameChar, without ':' (an NCName). */
static int is_name_start(uint32_t c)
{
	return (c >= 'A' && c <= 'Z') || c == '_' || (c >= 'a' && c <= 'z') ||
	       (c >= 0xc0 && c <= 0xd6) || (c >= 0xd8 && c <= 0xf6) || (c >= 0xf8 && c <= 0x2ff) ||
	       (c >= 0x370 && c <= 0x37d) || (c >= 0x37f && c <= 0x1fff) ||
	       (c >= 0x200c && c <= 0x200d) || (c >= 0x2070 && c <= 0x218f) ||
	       (c >= 0x2c00 && c <= 0x2fef) || (c >= 0x3001 && c <= 0xd7ff) ||
	       (c >= 0xf900 && c <= 0xfdcf) || (c >= 0xfdf0 && c <= 0xfffd) ||
	       (c >= 0x10000 && c <= 0xeffff);
}

static int is_name_char(uint32_t c)
{
	return is_name_start(c) || c == '-' || c == '.' || (c >= '0' && c <= '9') || c == 0xb7 ||
	       (c >= 0x300 && c <= 0x36f) || (c >= 0x203f && c <= 0x2040);
}

static int check_name(const char *name)
{
	const unsigned char *s = (const unsigned char *)name;
	size_t n = name ? strlen(name) : 0, i = 0;

	if (n == 0)
		return XMPP_XML_ERR_NAME;
	while (i < n) {
		uint32_t c;
		size_t clen = xmpp_xml_utf8_next(s + i, n - i, &c);

		if (!clen || !(i == 0 ? is_name_start(c) : is_name_char(c)))
			return XMPP_XML_ERR_NAME;
		i += clen;
	}
	return 0;
}

/* name='value' with a leading space; prefix may be NULL. */
static int put_attr(struct xmpp_xml_buf *b, const char *prefix, const char *name,
                    const char *value, size_t len)
{
	int rc;

	if ((rc = buf_put(b, " ", 1)) < 0 ||
	    (prefix && ((rc = buf_str(b, prefix)) < 0 || (rc = buf_put(b, ":", 1)) < 0)) ||
	    (rc = buf_str(b, name)) < 0 || (rc = buf_put(b, "='", 2)) < 0 ||
	    (rc = put_escaped(b, value, len, 1)) < 0)
		return rc;
	return buf_put(b, "'", 1);
}

/* The prefix a namespace is written with in this stream, NULL for none. */
static const char *fixed_prefix(const struct xmpp_xml_ctx *ctx, const char *ns)
{
	if (!strcmp(ns, XMPP_XML_NS_STREAMS))
		return "stream";
	if (ctx->dialback && !strcmp(ns, XMPP_XML_NS_DIALBACK))
		return "db";
	if (!strcmp(ns, XMPP_XML_NS_XML))
		return "xml";
	return NULL;
}

static int put_start_attrs(struct xmpp_xml_buf *b, const struct xmpp_xml_elem *el,
                           const struct xmpp_xml_ctx *ctx)
{
	int rc;

	for (unsigned i = 0; i < el->nattrs; i++) {
		const struct xmpp_xml_attr *a = &el->attrs[i];
		const char *prefix = NULL;
		char gen[16];

		if ((rc = check_name(a->name)) < 0)
			return rc;
		/* a namespace declaration is not an attribute of the tree */
		if ((!*a->ns && !strcmp(a->name, "xmlns")) || !strcmp(a->ns, NS_XMLNS))
			return XMPP_XML_ERR_NAME;
		if (*a->ns && !(prefix = fixed_prefix(ctx, a->ns))) {
			/* Any other namespace: a prefix named after the first
			 * attribute of this element in it, declared here. */
			unsigned k = 0;

			while (strcmp(el->attrs[k].ns, a->ns) != 0)
				k++;
			snprintf(gen, sizeof(gen), "a%u", k);
			prefix = gen;
			if (k == i && (rc = put_attr(b, "xmlns", gen, a->ns, strlen(a->ns))) < 0)
				return rc;
		}
		if ((rc = put_attr(b, prefix, a->name, a->value, a->value_len)) < 0)
			return rc;
	}
	return 0;
}

static int put_elem(struct xmpp_xml_buf *b, const struct xmpp_xml_elem *el, const char *dflt,
                    const struct xmpp_xml_ctx *ctx)
{
	const char *prefix;
	int rc;

	if (!el->name)
		return put_escaped(b, el->text, el->text_len, 0);
	if ((rc = check_name(el->name)) < 0)
		return rc;
	if (!strcmp(el->ns, XMPP_XML_NS_XML) || !strcmp(el->ns, NS_XMLNS))
		return XMPP_XML_ERR_NAME; /* no element may be in these */
	prefix = fixed_prefix(ctx, el->ns);
	if ((rc = buf_put(b, "<", 1)) < 0 ||
	    (prefix && ((rc = buf_str(b, prefix)) < 0 || (rc = buf_put(b, ":", 1)) < 0)) ||
	    (rc = buf_str(b, el->name)) < 0)
		return rc;
	if (!prefix && strcmp(el->ns, dflt) != 0) {
		if ((rc = put_attr(b, NULL, "xmlns", el->ns, strlen(el->ns))) < 0)
			return rc;
		dflt = el->ns;
	}
	if ((rc = put_start_attrs(b, el, ctx)) < 0)
		return rc;
	if (!el->children)
		return buf_put(b, "/>", 2);
	if ((rc = buf_put(b, ">", 1)) < 0)
		return rc;
	for (const struct xmpp_xml_elem *c = el->children; c; c = c->next)
		if ((rc = put_elem(b, c, dflt, ctx)) < 0)
			return rc;
	if ((rc = buf_put(b, "</", 2)) < 0 ||
	    (prefix && ((rc = buf_str(b, prefix)) < 0 || (rc = buf_put(b, ":", 1)) < 0)) ||
	    (rc = buf_str(b, el->name)) < 0)
		return rc;
	return buf_put(b, ">", 1);
}

/* Calls leave b as it was on error. */
static int done(struct xmpp_xml_buf *b, size_t start, int rc)
{
	if (rc < 0)
		b->len = start;
	return rc;
}

int xmpp_xml_write_elem(struct xmpp_xml_buf *b, const struct xmpp_xml_elem *el,
                        const struct xmpp_xml_ctx *ctx)
{
	struct xmpp_xml_ctx c = ctx ? *ctx : (struct xmpp_xml_ctx){ 0 };
	size_t start = b->len;

	if (!c.content_ns)
		c.content_ns = XMPP_XML_NS_SERVER;
	return done(b, start, put_elem(b, el, c.content_ns, &c));
}

int xmpp_xml_write_header(struct xmpp_xml_buf *b, const struct xmpp_xml_header_out *h)
{
	const char *ns = h->content_ns ? h->content_ns : XMPP_XML_NS_SERVER;
	const struct {
		const char *prefix, *name, *value;
	} attrs[] = {
		{ NULL, "xmlns", ns },
		{ "xmlns", "stream", XMPP_XML_NS_STREAMS },
		{ "xmlns", "db", h->dialback ? XMPP_XML_NS_DIALBACK : NULL },
		{ NULL, "to", h->to },
		{ NULL, "from", h->from },
		{ NULL, "id", h->id },
		{ NULL, "version", h->version },
		{ "xml", "lang", h->lang },
	};
	size_t start = b->len;
	int rc = buf_str(b, "<?xml version='1.0'?><stream:stream");

	for (size_t i = 0; rc == 0 && i < sizeof(attrs) / sizeof(attrs[0]); i++)
		if (attrs[i].value)
			rc = put_attr(b, attrs[i].prefix, attrs[i].name, attrs[i].value,
			              strlen(attrs[i].value));
	if (rc == 0)
		rc = buf_put(b, ">", 1);
	return done(b, start, rc);
}

int xmpp_xml_write_close(struct xmpp_xml_buf *b)
{
	return buf_str(b, "</stream:stream>"); /* one append: all or nothing */
}

int xmpp_xml_write_error(struct xmpp_xml_buf *b, enum xmpp_xml_cond cond, const char *text)
{
	static const char xmlns[] = " xmlns='" XMPP_XML_NS_STREAM_ERRORS "'";
	size_t start = b->len;
	int rc;

	if ((rc = buf_str(b, "<stream:error><")) < 0 ||
	    (rc = buf_str(b, xmpp_xml_cond_name(cond))) < 0 ||
	    (rc = buf_str(b, xmlns)) < 0 || (rc = buf_put(b, "/>", 2)) < 0)
		return done(b, start, rc);
	if (text && *text &&
	    ((rc = buf_str(b, "<text")) < 0 || (rc = buf_str(b, xmlns)) < 0 ||
	     (rc = buf_put(b, ">", 1)) < 0 || (rc = put_escaped(b, text, strlen(text), 0)) < 0 ||
	     (rc = buf_str(b, "</text>")) < 0))
		return done(b, start, rc);
	return done(b, start, buf_str(b, "</stream:error>"));
}
