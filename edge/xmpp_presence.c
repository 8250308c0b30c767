#include "xmpp_presence.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* As in xmpp_xml.c: expat.h only declares the billion-laughs settings
 * when XML_DTD says the library has them, which Debian's does. */
#ifndef XML_DTD
#define XML_DTD 1
#endif
#include <expat.h>

const char *xmpp_presence_strerror(int err)
{
	static const char *const texts[] = {
		"success",
		"PIDF document empty or too large",
		"PIDF document not well-formed XML",
		"DOCTYPE or entity in a PIDF document",
		"not a PIDF presence document, or nested too deep",
		"no tuple with an open or closed basic status",
		"from or to missing or not mappable",
		"not a presence stanza",
		"presence type not carried as PIDF",
		"bad UTF-8 or a character XML 1.0 refuses",
		"out of memory",
	};

	return err <= 0 && -err < (int)(sizeof(texts) / sizeof(texts[0])) ? texts[-err] : "unknown error";
}

/* ---- Activities and shows ------------------------------------------------------ */

/* RPID activity (RFC 4480 section 3.2) -> <show/>; NULL: none. */
static const struct {
	const char *activity, *show;
} activity_show[] = {
	{ "away", "away" },
	{ "meal", "away" },
	{ "breakfast", "away" },
	{ "dinner", "away" },
	{ "in-transit", "away" },
	{ "travel", "away" },
	{ "shopping", "away" },
	{ "busy", "dnd" },
	{ "on-the-phone", "dnd" },
	{ "meeting", "dnd" },
	{ "appointment", "dnd" },
	{ "presentation", "dnd" },
	{ "performance", "dnd" },
	{ "vacation", "xa" },
	{ "holiday", "xa" },
	{ "sleeping", "xa" },
	{ "permanent-absence", "xa" },
};

static const char *show_for_activity(const char *activity)
{
	for (size_t i = 0; i < sizeof(activity_show) / sizeof(activity_show[0]); i++)
		if (strcmp(activity_show[i].activity, activity) == 0)
			return activity_show[i].show;
	return NULL;
}

/* <show/> -> the RPID activity written; NULL for chat, none or unknown. */
static const char *activity_for_show(const char *show)
{
	if (show == NULL)
		return NULL;
	if (strcmp(show, "away") == 0 || strcmp(show, "xa") == 0)
		return "away";
	if (strcmp(show, "dnd") == 0)
		return "busy";
	return NULL;
}

/* ---- PIDF -> XMPP ------------------------------------------------------------ */

#define NS_SEP '\x01'
#define PIDF_MAX_DEPTH 32

/* A growable text, capped by the document's size. */
struct text {
	char *s;
	size_t len, cap;
	int done;        /* the element ended: later ones of the same kind are ignored */
};

struct pidf {
	XML_Parser xp;
	int err;                  /* first error, 0 while fine */
	unsigned depth;           /* of the element being read; the root is 1 */
	int tuple_seen;           /* a first <tuple> began */
	unsigned tuple_depth;     /* > 0 while inside the first tuple */
	unsigned status_depth;    /* > 0 while inside its <status> */
	unsigned person_depth;    /* > 0 while inside a <dm:person> */
	unsigned activities_depth; /* > 0 while inside the first <rpid:activities> */
	int activities_seen;
	const char *show;         /* static; NULL until an activity maps */
	struct text basic, tuple_note, doc_note, person_note;
	struct text *collect;     /* the text being gathered, or NULL */
	unsigned collect_depth;   /* its element's depth: only direct text counts */
};

/* Whether an expat name "uri\1local" is local in ns. */
static int name_is(const char *name, const char *ns, const char *local)
{
	size_t n = strlen(ns);

	return strncmp(name, ns, n) == 0 && name[n] == NS_SEP && strcmp(name + n + 1, local) == 0;
}

/* The local name of an expat name in ns, or NULL when in another one. */
static const char *local_in(const char *name, const char *ns)
{
	size_t n = strlen(ns);

	return strncmp(name, ns, n) == 0 && name[n] == NS_SEP ? name + n + 1 : NULL;
}

/* Records the first error and stops expat; later ones say less. */
static void pidf_fail(struct pidf *p, int err)
{
	if (p->err == 0)
		p->err = err;
	XML_StopParser(p->xp, XML_FALSE);
}

static void begin_text(struct pidf *p, struct text *t)
{
	if (t->done || p->collect)
		return;
	p->collect = t;
	p->collect_depth = p->depth;
}

static void XMLCALL on_start(void *ud, const XML_Char *name, const XML_Char **atts)
{
	struct pidf *p = ud;
	const char *act;

	(void)atts;
	if (p->err)
		return;
	if (++p->depth > PIDF_MAX_DEPTH) {
		pidf_fail(p, XMPP_PRESENCE_ERR_PIDF);
		return;
	}
	if (p->depth == 1) {
		if (!name_is(name, XMPP_PRESENCE_NS_PIDF, "presence"))
			pidf_fail(p, XMPP_PRESENCE_ERR_PIDF);
		return;
	}
	/* Only direct text is gathered: a child ends the element's text. */
	if (p->collect && p->depth > p->collect_depth)
		return;

	if (p->depth == 2) {
		if (name_is(name, XMPP_PRESENCE_NS_PIDF, "tuple") && !p->tuple_seen) {
			p->tuple_seen = 1;
			p->tuple_depth = 2;
		} else if (name_is(name, XMPP_PRESENCE_NS_PIDF, "note")) {
			begin_text(p, &p->doc_note);
		} else if (name_is(name, XMPP_PRESENCE_NS_DM, "person")) {
			p->person_depth = 2;
		}
	} else if (p->depth == 3 && p->tuple_depth) {
		if (name_is(name, XMPP_PRESENCE_NS_PIDF, "status"))
			p->status_depth = 3;
		else if (name_is(name, XMPP_PRESENCE_NS_PIDF, "note"))
			begin_text(p, &p->tuple_note);
	} else if (p->depth == 4 && p->status_depth) {
		if (name_is(name, XMPP_PRESENCE_NS_PIDF, "basic"))
			begin_text(p, &p->basic);
	} else if (p->depth == 3 && p->person_depth) {
		if (name_is(name, XMPP_PRESENCE_NS_DM, "note"))
			begin_text(p, &p->person_note);
	}

	/* Activities sit in <dm:person> (RFC 4480), but older servers put them
	 * in the tuple's <status>: the first one anywhere is taken. */
	if (name_is(name, XMPP_PRESENCE_NS_RPID, "activities") && !p->activities_seen) {
		p->activities_seen = 1;
		p->activities_depth = p->depth;
	} else if (p->activities_depth && p->depth == p->activities_depth + 1 && !p->show &&
	           (act = local_in(name, XMPP_PRESENCE_NS_RPID)) != NULL) {
		p->show = show_for_activity(act);
	}
}

static void XMLCALL on_end(void *ud, const XML_Char *name)
{
	struct pidf *p = ud;

	(void)name;
	if (p->err)
		return;
	if (p->collect && p->depth == p->collect_depth) {
		p->collect->done = 1;
		p->collect = NULL;
	}
	if (p->depth == p->tuple_depth)
		p->tuple_depth = 0;
	if (p->depth == p->status_depth)
		p->status_depth = 0;
	if (p->depth == p->person_depth)
		p->person_depth = 0;
	if (p->depth == p->activities_depth)
		p->activities_depth = 0;
	p->depth--;
}

static void XMLCALL on_text(void *ud, const XML_Char *s, int len)
{
	struct pidf *p = ud;
	struct text *t = p->collect;
	char *n;

	if (p->err || t == NULL || p->depth != p->collect_depth || len <= 0)
		return;
	if (t->len + (size_t)len + 1 > t->cap) {
		size_t cap = t->cap ? t->cap : 64;

		while (cap < t->len + (size_t)len + 1)
			cap *= 2;
		if ((n = realloc(t->s, cap)) == NULL) {
			pidf_fail(p, XMPP_PRESENCE_ERR_NOMEM);
			return;
		}
		t->s = n;
		t->cap = cap;
	}
	memcpy(t->s + t->len, s, (size_t)len);
	t->len += (size_t)len;
	t->s[t->len] = '\0';
}

static void XMLCALL on_doctype(void *ud, const XML_Char *name, const XML_Char *sysid,
                               const XML_Char *pubid, int has_internal_subset)
{
	(void)name; (void)sysid; (void)pubid; (void)has_internal_subset;
	pidf_fail(ud, XMPP_PRESENCE_ERR_DTD);
}

static void XMLCALL on_entity_decl(void *ud, const XML_Char *name, int is_pe,
                                   const XML_Char *value, int value_len, const XML_Char *base,
                                   const XML_Char *sysid, const XML_Char *pubid,
                                   const XML_Char *notation)
{
	(void)name; (void)is_pe; (void)value; (void)value_len; (void)base; (void)sysid;
	(void)pubid; (void)notation;
	pidf_fail(ud, XMPP_PRESENCE_ERR_DTD);
}

/* Never fetched: refusing here makes expat fail the parse. */
static int XMLCALL on_external_entity(XML_Parser xp, const XML_Char *context,
                                      const XML_Char *base, const XML_Char *sysid,
                                      const XML_Char *pubid)
{
	(void)xp; (void)context; (void)base; (void)sysid; (void)pubid;
	return XML_STATUS_ERROR;
}

/* The text without surrounding XML whitespace (basic is a token). */
static int token_is(const struct text *t, const char *word)
{
	const char *s = t->s;
	size_t len = t->len, n = strlen(word);

	if (s == NULL)
		return 0;
	while (len && strchr(" \t\r\n", *s)) {
		s++;
		len--;
	}
	while (len && strchr(" \t\r\n", s[len - 1]))
		len--;
	return len == n && memcmp(s, word, n) == 0;
}

/* The note to carry: trimmed; NULL when none or blank. */
static const char *pick_note(const struct pidf *p, size_t *len)
{
	const struct text *cand[] = { &p->tuple_note, &p->doc_note, &p->person_note };

	for (size_t i = 0; i < sizeof(cand) / sizeof(cand[0]); i++) {
		const char *s = cand[i]->s;
		size_t n = cand[i]->len;

		if (s == NULL)
			continue;
		while (n && strchr(" \t\r\n", *s)) {
			s++;
			n--;
		}
		while (n && strchr(" \t\r\n", s[n - 1]))
			n--;
		if (n) {
			*len = n;
			return s;
		}
	}
	return NULL;
}

static int pidf_parse(struct pidf *p, const char *doc, size_t len)
{
	if ((p->xp = XML_ParserCreateNS("UTF-8", NS_SEP)) == NULL)
		return XMPP_PRESENCE_ERR_NOMEM;
	XML_SetUserData(p->xp, p);
	XML_SetParamEntityParsing(p->xp, XML_PARAM_ENTITY_PARSING_NEVER);
	/* A DOCTYPE is refused before any entity is declared: a second guard. */
	XML_SetBillionLaughsAttackProtectionMaximumAmplification(p->xp, 4.0f);
	XML_SetBillionLaughsAttackProtectionActivationThreshold(p->xp, 65536);
	XML_SetElementHandler(p->xp, on_start, on_end);
	XML_SetCharacterDataHandler(p->xp, on_text);
	XML_SetStartDoctypeDeclHandler(p->xp, on_doctype);
	XML_SetEntityDeclHandler(p->xp, on_entity_decl);
	XML_SetExternalEntityRefHandler(p->xp, on_external_entity);

	if (XML_Parse(p->xp, doc, (int)len, XML_TRUE) != XML_STATUS_OK && p->err == 0)
		p->err = XMPP_PRESENCE_ERR_XML;
	if (p->err == 0 && !token_is(&p->basic, "open") && !token_is(&p->basic, "closed"))
		p->err = XMPP_PRESENCE_ERR_BASIC;
	return p->err;
}

static void pidf_clear(struct pidf *p)
{
	if (p->xp)
		XML_ParserFree(p->xp);
	p->xp = NULL;
	free(p->basic.s); p->basic.s = NULL;
	free(p->tuple_note.s); p->tuple_note.s = NULL;
	free(p->doc_note.s); p->doc_note.s = NULL;
	free(p->person_note.s); p->person_note.s = NULL;
}

int xmpp_presence_from_pidf(const char *from, const char *to, const char *doc, size_t len,
                            struct xmpp_xml_elem **out)
{
	char jfrom[XMPP_MAP_JID_MAX], jto[XMPP_MAP_JID_MAX];
	struct pidf p;
	struct xmpp_xml_elem *pres = NULL, *el;
	const char *note;
	size_t note_len = 0;
	int rc, open;

	*out = NULL;
	if (from == NULL || to == NULL ||
	    xmpp_map_sip_to_jid(from, strlen(from), jfrom, sizeof(jfrom)) < 0 ||
	    xmpp_map_sip_to_jid(to, strlen(to), jto, sizeof(jto)) < 0)
		return XMPP_PRESENCE_ERR_ADDR;
	if (doc == NULL || len == 0 || len > XMPP_PRESENCE_PIDF_MAX)
		return XMPP_PRESENCE_ERR_SIZE;

	memset(&p, 0, sizeof(p));
	if ((rc = pidf_parse(&p, doc, len)) < 0) {
		pidf_clear(&p);
		return rc;
	}
	open = token_is(&p.basic, "open");
	note = pick_note(&p, &note_len);

	rc = XMPP_PRESENCE_ERR_NOMEM;
	if ((pres = xmpp_xml_new("presence", XMPP_XML_NS_SERVER)) == NULL ||
	    xmpp_xml_set_attr(pres, "from", NULL, jfrom) < 0 ||
	    xmpp_xml_set_attr(pres, "to", NULL, jto) < 0 ||
	    (!open && xmpp_xml_set_attr(pres, "type", NULL, "unavailable") < 0))
		goto fail;
	/* An unavailable entity has no show (RFC 6121 4.7.2.1 is for available
	 * presence), but may say why it left. */
	if (open && p.show &&
	    ((el = xmpp_xml_add(pres, "show", NULL)) == NULL ||
	     xmpp_xml_add_text(el, p.show, strlen(p.show)) < 0))
		goto fail;
	if (note &&
	    ((el = xmpp_xml_add(pres, "status", NULL)) == NULL ||
	     xmpp_xml_add_text(el, note, note_len) < 0))
		goto fail;
	pidf_clear(&p);
	*out = pres;
	return 0;
fail:
	xmpp_xml_free(pres); pres = NULL;
	pidf_clear(&p);
	return rc;
}

/* ---- XMPP -> PIDF ------------------------------------------------------------ */

static int buf_put(struct xmpp_xml_buf *b, const char *s, size_t n)
{
	char *d;

	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 512;

		while (cap < b->len + n)
			cap *= 2;
		if ((d = realloc(b->data, cap)) == NULL)
			return XMPP_PRESENCE_ERR_NOMEM;
		b->data = d;
		b->cap = cap;
	}
	memcpy(b->data + b->len, s, n);
	b->len += n;
	return 0;
}

static int buf_str(struct xmpp_xml_buf *b, const char *s)
{
	return buf_put(b, s, strlen(s));
}

/*
 * Appends s escaped: the five markup characters everywhere, CR always (a
 * reader would turn it into LF), and TAB and LF in attribute values (a
 * reader would turn them into spaces).
 */
static int buf_esc(struct xmpp_xml_buf *b, const char *s, size_t len, int attr)
{
	size_t start = 0;
	const char *rep;

	for (size_t i = 0; i < len; i++) {
		switch (s[i]) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '\'': rep = "&apos;"; break;
		case '"': rep = "&quot;"; break;
		case '\r': rep = "&#13;"; break;
		case '\t': rep = attr ? "&#9;" : NULL; break;
		case '\n': rep = attr ? "&#10;" : NULL; break;
		default: rep = NULL; break;
		}
		if (rep == NULL)
			continue;
		if (buf_put(b, s + start, i - start) < 0 || buf_str(b, rep) < 0)
			return XMPP_PRESENCE_ERR_NOMEM;
		start = i + 1;
	}
	return buf_put(b, s + start, len - start);
}

/* The first child called name without xml:lang, else the first one. */
static const struct xmpp_xml_elem *default_lang_child(const struct xmpp_xml_elem *el,
                                                      const char *name)
{
	const struct xmpp_xml_elem *first = NULL, *c;

	for (c = NULL; (c = xmpp_xml_child(el, c, name, el->ns)) != NULL;) {
		if (xmpp_xml_attr_ns(c, "lang", XMPP_XML_NS_XML) == NULL)
			return c;
		if (first == NULL)
			first = c;
	}
	return first;
}

static int write_pidf(struct xmpp_xml_buf *b, const char *entity, int open,
                      const char *note, size_t note_len, const char *activity)
{
	if (buf_str(b, "<?xml version='1.0' encoding='UTF-8'?>\n"
	               "<presence xmlns='" XMPP_PRESENCE_NS_PIDF "'") < 0 ||
	    (activity && buf_str(b, " xmlns:dm='" XMPP_PRESENCE_NS_DM "'"
	                            " xmlns:rpid='" XMPP_PRESENCE_NS_RPID "'") < 0) ||
	    buf_str(b, " entity='") < 0 ||
	    buf_esc(b, entity, strlen(entity), 1) < 0 ||
	    /* One tuple stands for the user: SIP watchers aggregate no
	     * resources, and the gateway sends one document per change. */
	    buf_str(b, "'>\n<tuple id='xmpp'><status><basic>") < 0 ||
	    buf_str(b, open ? "open" : "closed") < 0 ||
	    buf_str(b, "</basic></status>") < 0)
		return XMPP_PRESENCE_ERR_NOMEM;
	if (note && (buf_str(b, "<note>") < 0 || buf_esc(b, note, note_len, 0) < 0 ||
	             buf_str(b, "</note>") < 0))
		return XMPP_PRESENCE_ERR_NOMEM;
	if (buf_str(b, "</tuple>\n") < 0)
		return XMPP_PRESENCE_ERR_NOMEM;
	if (activity && (buf_str(b, "<dm:person id='p'><rpid:activities><rpid:") < 0 ||
	                 buf_str(b, activity) < 0 ||
	                 buf_str(b, "/></rpid:activities></dm:person>\n") < 0))
		return XMPP_PRESENCE_ERR_NOMEM;
	if (buf_str(b, "</presence>\n") < 0)
		return XMPP_PRESENCE_ERR_NOMEM;
	return 0;
}

int xmpp_presence_to_pidf(const struct xmpp_xml_elem *pres, struct xmpp_presence_pidf *out)
{
	const struct xmpp_xml_elem *el;
	const char *type, *from, *to, *show = NULL, *note = NULL;
	size_t note_len = 0;
	int open, rc;

	memset(out, 0, sizeof(*out));
	if (pres == NULL || pres->name == NULL || strcmp(pres->name, "presence") != 0 ||
	    (strcmp(pres->ns, XMPP_XML_NS_SERVER) != 0 && strcmp(pres->ns, XMPP_XML_NS_CLIENT) != 0))
		return XMPP_PRESENCE_ERR_STANZA;
	type = xmpp_xml_attr(pres, "type");
	if (type && strcmp(type, "unavailable") != 0)
		return XMPP_PRESENCE_ERR_TYPE;
	open = type == NULL;

	from = xmpp_xml_attr(pres, "from");
	to = xmpp_xml_attr(pres, "to");
	if (from == NULL || to == NULL ||
	    xmpp_map_jid_to_sip(from, strlen(from), out->from, sizeof(out->from)) < 0 ||
	    xmpp_map_jid_to_sip(to, strlen(to), out->to, sizeof(out->to)) < 0) {
		memset(out, 0, sizeof(*out));
		return XMPP_PRESENCE_ERR_ADDR;
	}

	if (open && (el = xmpp_xml_child(pres, NULL, "show", pres->ns)) != NULL &&
	    (show = xmpp_xml_text(el, NULL)) == NULL)
		return XMPP_PRESENCE_ERR_NOMEM;
	if ((el = default_lang_child(pres, "status")) != NULL) {
		if ((note = xmpp_xml_text(el, &note_len)) == NULL)
			return XMPP_PRESENCE_ERR_NOMEM;
		if (!xmpp_xml_text_ok(note, note_len))
			return XMPP_PRESENCE_ERR_CHAR;
		if (note_len == 0)
			note = NULL;
	}

	if ((rc = write_pidf(&out->doc, out->from, open, note, note_len,
	                     open ? activity_for_show(show) : NULL)) < 0) {
		xmpp_presence_pidf_free(out);
		return rc;
	}
	return 0;
}

void xmpp_presence_pidf_free(struct xmpp_presence_pidf *p)
{
	xmpp_xml_buf_free(&p->doc);
}

/* ---- Subscriptions ------------------------------------------------------------ */

static const char *const sub_types[] = {
	[XMPP_PRESENCE_SUB_SUBSCRIBE] = "subscribe",
	[XMPP_PRESENCE_SUB_ACCEPTED] = "subscribed",
	[XMPP_PRESENCE_SUB_UNSUBSCRIBE] = "unsubscribe",
	[XMPP_PRESENCE_SUB_TERMINATED] = "unsubscribed",
};

enum xmpp_presence_sub xmpp_presence_sub_from_xmpp(const char *type)
{
	if (type == NULL)
		return XMPP_PRESENCE_SUB_NONE;
	for (unsigned i = 1; i < sizeof(sub_types) / sizeof(sub_types[0]); i++)
		if (strcmp(type, sub_types[i]) == 0)
			return (enum xmpp_presence_sub)i;
	return XMPP_PRESENCE_SUB_NONE;
}

const char *xmpp_presence_sub_to_xmpp(enum xmpp_presence_sub ev)
{
	if ((unsigned)ev == 0 || (unsigned)ev >= sizeof(sub_types) / sizeof(sub_types[0]))
		return NULL;
	return sub_types[ev];
}

/* Whether a header value's first token (before ';', LWS around it) is word,
 * without case: "presence;id=1", "terminated;reason=noresource". */
static int first_token_is(const char *v, const char *word)
{
	size_t n = strlen(word), len;

	if (v == NULL)
		return 0;
	while (*v == ' ' || *v == '\t')
		v++;
	len = strcspn(v, "; \t");
	if (len != n || strncasecmp(v, word, n) != 0)
		return 0;
	v += len;
	while (*v == ' ' || *v == '\t')
		v++;
	return *v == '\0' || *v == ';';
}

enum xmpp_presence_sub xmpp_presence_sub_from_sip(const char *method, unsigned status,
                                                  const char *event, long expires,
                                                  const char *sub_state)
{
	if (method == NULL)
		return XMPP_PRESENCE_SUB_NONE;
	/* Methods are case-sensitive (RFC 3261 7.1). */
	if (strcmp(method, "SUBSCRIBE") == 0) {
		if (status == 0)
			return !first_token_is(event, "presence") ? XMPP_PRESENCE_SUB_NONE :
			       expires == 0 ? XMPP_PRESENCE_SUB_UNSUBSCRIBE : XMPP_PRESENCE_SUB_SUBSCRIBE;
		/* A 200 to an unsubscribing SUBSCRIBE ends the subscription:
		 * the NOTIFY that follows says terminated. */
		if ((status == 200 || status == 202) && expires != 0)
			return XMPP_PRESENCE_SUB_ACCEPTED;
		if (status >= 300 && status <= 699)
			return XMPP_PRESENCE_SUB_TERMINATED;
		return XMPP_PRESENCE_SUB_NONE;
	}
	if (strcmp(method, "NOTIFY") == 0 && status == 0 && first_token_is(event, "presence") &&
	    first_token_is(sub_state, "terminated"))
		return XMPP_PRESENCE_SUB_TERMINATED;
	return XMPP_PRESENCE_SUB_NONE;
}
