#include "xmpp_map.h"

#include <stdint.h>
#include <string.h>
#include <strings.h>

#include "domain.h"

const char *xmpp_map_strerror(int err)
{
	static const char *const texts[] = {
		"success",
		"not a sip: or sips: URI",
		"no user part or localpart, or one the other side refuses",
		"not a domain name, or a port",
		"bad %-escape or character in a SIP user part",
		"empty or oversized resourcepart",
		"output buffer too small",
		"body is not text/plain in UTF-8",
		"bad UTF-8 or a character XML 1.0 refuses",
		"not a message stanza, or from/to missing or malformed",
		"message type not carried by the gateway",
		"message without a body",
		"out of memory",
	};

	return err <= 0 && -err < (int)(sizeof(texts) / sizeof(texts[0])) ? texts[-err] : "unknown error";
}

unsigned xmpp_map_err_sip_status(int err)
{
	switch (err) {
	case XMPP_MAP_OK:
		return 200;
	case XMPP_MAP_ERR_TYPE:
	case XMPP_MAP_ERR_CHAR:
		return 415;
	case XMPP_MAP_ERR_NOMEM:
		return 500;
	case XMPP_MAP_ERR_USER:
	case XMPP_MAP_ERR_DOMAIN:
		return 404;
	default:
		return 400;
	}
}

/* ---- Characters --------------------------------------------------------------- */

/*
 * Whether s is a JID localpart or resourcepart, roughly as RFC 7622 3.3
 * and 3.4 say without the PRECIS tables: 1 to 1023 bytes of UTF-8 without
 * control characters (C0, DEL, C1). A localpart (IdentifierClass) also
 * refuses spaces and "&'/:<>@ (RFC 7622 3.3.1); a resourcepart
 * (FreeformClass) takes them.
 */
static int jid_part_ok(const char *s, size_t len, int local)
{
	const unsigned char *u = (const unsigned char *)s;
	uint32_t cp;

	if (len == 0 || len > XMPP_MAP_PART_MAX)
		return 0;
	for (size_t i = 0, n; i < len; i += n) {
		if (!(n = xmpp_xml_utf8_next(u + i, len - i, &cp)))
			return 0;
		if (cp < 0x20 || (cp >= 0x7F && cp <= 0x9F))
			return 0;
		if (local && (cp == ' ' || cp == 0xA0 || (cp < 0x80 && strchr("\"&'/:<>@", (int)cp))))
			return 0;
	}
	return 1;
}

/* RFC 3261 25.1: unreserved and user-unreserved, what a user part holds raw. */
static int sip_user_raw(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       (c != '\0' && strchr("-_.!~*'()&=+$,;?/", c) != NULL);
}

static int hex_val(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Appends n bytes of s at out[*pos], keeping room for the NUL. */
static int put(char *out, size_t outsz, size_t *pos, const char *s, size_t n)
{
	if (*pos >= outsz || outsz - *pos <= n)
		return XMPP_MAP_ERR_SPACE;
	memcpy(out + *pos, s, n);
	*pos += n;
	out[*pos] = '\0';
	return 0;
}

/* Appends a domain, lower-cased: RFC 7622 3.2 and RFC 3261 19.1.4 both
 * compare hosts without case, and one spelling makes the JIDs comparable. */
static int put_domain(char *out, size_t outsz, size_t *pos, const char *d, size_t n)
{
	size_t start = *pos;
	int rc = put(out, outsz, pos, d, n);

	if (rc < 0)
		return rc;
	for (size_t i = start; i < *pos; i++)
		if (out[i] >= 'A' && out[i] <= 'Z')
			out[i] = (char)(out[i] - 'A' + 'a');
	return 0;
}

/* ---- Addresses ------------------------------------------------------------------ */

int xmpp_map_sip_to_jid(const char *uri, size_t len, char *out, size_t outsz)
{
	char local[XMPP_MAP_PART_MAX];
	size_t nlocal = 0, pos = 0, i;
	const char *at, *host;
	size_t hostlen;
	int rc;

	if (outsz > 0)
		out[0] = '\0';
	if (len >= 5 && strncasecmp(uri, "sips:", 5) == 0)
		i = 5;
	else if (len >= 4 && strncasecmp(uri, "sip:", 4) == 0)
		i = 4;
	else
		return XMPP_MAP_ERR_SCHEME;

	/* The user part can hold no raw '@' (RFC 3261 25.1), so the first one ends it. */
	at = memchr(uri + i, '@', len - i);
	if (at == NULL || at == uri + i)
		return XMPP_MAP_ERR_USER;
	for (; uri + i < at; i++) {
		unsigned char c = (unsigned char)uri[i];
		if (c == '%') {
			int hi, lo;
			if (at - (uri + i) < 3 || (hi = hex_val(uri[i + 1])) < 0 ||
			    (lo = hex_val(uri[i + 2])) < 0)
				return XMPP_MAP_ERR_ESCAPE;
			c = (unsigned char)(hi << 4 | lo);
			i += 2;
		} else if (c == ':') {
			return XMPP_MAP_ERR_USER; /* a password: no JID has one */
		} else if (!sip_user_raw(c)) {
			return XMPP_MAP_ERR_ESCAPE;
		}
		if (nlocal == sizeof(local))
			return XMPP_MAP_ERR_USER;
		local[nlocal++] = (char)c;
	}
	if (!jid_part_ok(local, nlocal, 1))
		return XMPP_MAP_ERR_USER;

	host = at + 1;
	for (hostlen = 0; host + hostlen < uri + len; hostlen++) {
		char c = host[hostlen];
		if (c == ';' || c == '?')
			break;
		if (c == ':')
			return XMPP_MAP_ERR_DOMAIN;
	}
	if (!dom_valid(host, hostlen))
		return XMPP_MAP_ERR_DOMAIN;

	if ((rc = put(out, outsz, &pos, local, nlocal)) < 0 ||
	    (rc = put(out, outsz, &pos, "@", 1)) < 0 ||
	    (rc = put_domain(out, outsz, &pos, host, hostlen)) < 0) {
		if (outsz > 0)
			out[0] = '\0';
		return rc;
	}
	return 0;
}

/*
 * Splits and checks a JID with a localpart: local and domain spans (the
 * domain without RFC 7622 3.2's trailing dot). The localpart ends at the
 * first '@' before the first '/' (RFC 7622 3.1).
 */
static int jid_split(const char *jid, size_t len, const char **local, size_t *nlocal,
                     const char **domain, size_t *ndomain)
{
	const char *slash = memchr(jid, '/', len);
	size_t bare = slash ? (size_t)(slash - jid) : len;
	const char *at = memchr(jid, '@', bare);

	if (slash && !jid_part_ok(slash + 1, len - bare - 1, 0))
		return XMPP_MAP_ERR_RESOURCE;
	if (at == NULL)
		return XMPP_MAP_ERR_USER; /* a server's JID: no SIP user maps to it */
	*local = jid;
	*nlocal = (size_t)(at - jid);
	if (!jid_part_ok(*local, *nlocal, 1))
		return XMPP_MAP_ERR_USER;
	*domain = at + 1;
	*ndomain = bare - *nlocal - 1;
	if (*ndomain > 1 && (*domain)[*ndomain - 1] == '.')
		(*ndomain)--;
	if (!dom_valid(*domain, *ndomain))
		return XMPP_MAP_ERR_DOMAIN;
	return 0;
}

int xmpp_map_jid_to_sip(const char *jid, size_t len, char *out, size_t outsz)
{
	static const char hex[] = "0123456789ABCDEF";
	const char *local, *domain;
	size_t nlocal, ndomain, pos = 0;
	int rc;

	if (outsz > 0)
		out[0] = '\0';
	if ((rc = jid_split(jid, len, &local, &nlocal, &domain, &ndomain)) < 0)
		return rc;
	if ((rc = put(out, outsz, &pos, "sip:", 4)) < 0)
		goto fail;
	for (size_t i = 0; i < nlocal; i++) {
		unsigned char c = (unsigned char)local[i];
		char esc[3] = { '%', hex[c >> 4], hex[c & 0xF] };
		rc = sip_user_raw(c) ? put(out, outsz, &pos, local + i, 1) : put(out, outsz, &pos, esc, 3);
		if (rc < 0)
			goto fail;
	}
	if ((rc = put(out, outsz, &pos, "@", 1)) < 0 ||
	    (rc = put_domain(out, outsz, &pos, domain, ndomain)) < 0)
		goto fail;
	return 0;
fail:
	if (outsz > 0)
		out[0] = '\0';
	return rc;
}

int xmpp_map_jid_bare(const char *jid, size_t len, char *out, size_t outsz)
{
	const char *local, *domain;
	size_t nlocal, ndomain, pos = 0;
	int rc;

	if (outsz > 0)
		out[0] = '\0';
	if ((rc = jid_split(jid, len, &local, &nlocal, &domain, &ndomain)) < 0)
		return rc;
	if ((rc = put(out, outsz, &pos, local, nlocal)) < 0 ||
	    (rc = put(out, outsz, &pos, "@", 1)) < 0 ||
	    (rc = put_domain(out, outsz, &pos, domain, ndomain)) < 0) {
		if (outsz > 0)
			out[0] = '\0';
		return rc;
	}
	return 0;
}

/* ---- Errors ------------------------------------------------------------------------ */

/*
 * RFC 7247 table 4, XMPP stanza error condition -> SIP response code, with
 * the RFC 6120 8.3.3 type each condition usually goes out with. Written
 * from RFC 7247 as remembered: the RFC's text could not be fetched while
 * this was written, so check the rows against section 6.1 when it can be.
 * Where the RFC gives a choice (unexpected-request: "491 or 400") the first
 * is taken.
 */
static const struct {
	const char *cond;
	unsigned status;
	const char *type;
} xmpp_to_sip[] = {
	{ "bad-request", 400, "modify" },
	{ "conflict", 400, "cancel" },
	{ "feature-not-implemented", 405, "cancel" },
	{ "forbidden", 403, "auth" },
	{ "gone", 301, "cancel" },              /* "permanent move" */
	{ "internal-server-error", 500, "cancel" },
	{ "item-not-found", 404, "cancel" },
	{ "jid-malformed", 400, "modify" },
	{ "not-acceptable", 406, "modify" },
	{ "not-allowed", 405, "cancel" },
	{ "not-authorized", 401, "auth" },
	{ "policy-violation", 403, "modify" },
	{ "recipient-unavailable", 480, "wait" },
	{ "redirect", 302, "modify" },          /* "temporary move" */
	{ "registration-required", 400, "auth" },
	{ "remote-server-not-found", 404, "cancel" },
	{ "remote-server-timeout", 408, "wait" },
	{ "resource-constraint", 500, "wait" },
	{ "service-unavailable", 503, "cancel" },
	{ "subscription-required", 400, "auth" },
	{ "undefined-condition", 400, "cancel" },
	{ "unexpected-request", 491, "wait" },
};

#define NELEMS(a) (sizeof(a) / sizeof((a)[0]))

static int cond_index(const char *condition)
{
	if (condition == NULL)
		return -1;
	for (size_t i = 0; i < NELEMS(xmpp_to_sip); i++)
		if (strcmp(xmpp_to_sip[i].cond, condition) == 0)
			return (int)i;
	return -1;
}

unsigned xmpp_map_sip_status(const char *condition)
{
	int i = cond_index(condition);

	return i < 0 ? 400 : xmpp_to_sip[i].status; /* as undefined-condition */
}

const char *xmpp_map_condition_type(const char *condition)
{
	int i = cond_index(condition);

	return i < 0 ? "cancel" : xmpp_to_sip[i].type;
}

/*
 * RFC 7247 section 6.2, SIP response code -> XMPP condition, from memory
 * as above. The x00 row of each class is the default for codes not listed.
 */
static const struct {
	unsigned status;
	const char *cond;
} sip_to_xmpp[] = {
	{ 300, "redirect" },
	{ 301, "gone" },
	{ 302, "redirect" },
	{ 305, "redirect" },
	{ 380, "redirect" },
	{ 400, "bad-request" },
	{ 401, "not-authorized" },
	{ 402, "bad-request" },
	{ 403, "forbidden" },
	{ 404, "item-not-found" },
	{ 405, "feature-not-implemented" },
	{ 406, "not-acceptable" },
	{ 407, "registration-required" },
	{ 408, "remote-server-timeout" },
	{ 410, "gone" },
	{ 413, "policy-violation" },
	{ 414, "jid-malformed" },
	{ 415, "bad-request" },
	{ 416, "jid-malformed" },
	{ 420, "feature-not-implemented" },
	{ 421, "feature-not-implemented" },
	{ 423, "resource-constraint" },
	{ 480, "recipient-unavailable" },
	{ 481, "item-not-found" },
	{ 482, "not-acceptable" },
	{ 483, "not-acceptable" },
	{ 484, "item-not-found" },
	{ 485, "item-not-found" },
	{ 486, "recipient-unavailable" },
	{ 487, "service-unavailable" },
	{ 488, "not-acceptable" },
	{ 491, "unexpected-request" },
	{ 493, "bad-request" },
	{ 500, "internal-server-error" },
	{ 501, "feature-not-implemented" },
	{ 502, "remote-server-not-found" },
	{ 503, "service-unavailable" },
	{ 504, "remote-server-timeout" },
	{ 505, "not-acceptable" },
	{ 513, "bad-request" },
	{ 600, "service-unavailable" },
	{ 603, "service-unavailable" },
	{ 604, "item-not-found" },
	{ 606, "not-acceptable" },
};

static const char *sip_lookup(unsigned status)
{
	for (size_t i = 0; i < NELEMS(sip_to_xmpp); i++)
		if (sip_to_xmpp[i].status == status)
			return sip_to_xmpp[i].cond;
	return NULL;
}

const char *xmpp_map_condition(unsigned sip_status)
{
	const char *c;

	if (sip_status < 300 || sip_status > 699)
		return NULL;
	c = sip_lookup(sip_status);
	return c ? c : sip_lookup(sip_status / 100 * 100);
}

/* ---- Messages ---------------------------------------------------------------------- */

static int is_lws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

static const char *skip_lws(const char *p, const char *end)
{
	while (p < end && is_lws(*p))
		p++;
	return p;
}

/* Matches the literal lit case-insensitively at *p, advancing past it. */
static int eat(const char **p, const char *end, const char *lit)
{
	size_t n = strlen(lit);

	if ((size_t)(end - *p) < n || strncasecmp(*p, lit, n) != 0)
		return 0;
	*p += n;
	return 1;
}

/*
 * Whether a Content-Type value (RFC 3261 20.15) is text/plain whose
 * charset, when given, is UTF-8 (RFC 7572 section 5 maps only that; other
 * parameters are ignored).
 */
static int content_type_ok(const char *ct)
{
	const char *p = ct, *end = ct + strlen(ct);

	p = skip_lws(p, end);
	if (!eat(&p, end, "text"))
		return 0;
	p = skip_lws(p, end);
	if (!eat(&p, end, "/"))
		return 0;
	p = skip_lws(p, end);
	if (!eat(&p, end, "plain"))
		return 0;
	for (;;) {
		const char *name, *val;
		size_t nname, nval;
		int quoted = 0;

		p = skip_lws(p, end);
		if (p == end)
			return 1;
		if (*p++ != ';')
			return 0;
		p = skip_lws(p, end);
		for (name = p; p < end && !is_lws(*p) && *p != '=' && *p != ';'; p++)
			;
		nname = (size_t)(p - name);
		p = skip_lws(p, end);
		if (nname == 0 || p == end || *p++ != '=')
			return 0;
		p = skip_lws(p, end);
		if (p < end && *p == '"') {
			quoted = 1;
			p++;
		}
		for (val = p; p < end && (quoted ? *p != '"' : !is_lws(*p) && *p != ';'); p++)
			if (quoted && *p == '\\' && p + 1 < end)
				p++;
		nval = (size_t)(p - val);
		if (quoted) {
			if (p == end)
				return 0;
			p++;
		}
		if (nname == 7 && strncasecmp(name, "charset", 7) == 0 &&
		    !(nval == 5 && strncasecmp(val, "utf-8", 5) == 0))
			return 0;
	}
}

int xmpp_map_sip_to_message(const struct xmpp_map_sip_in *in, struct xmpp_xml_elem **out)
{
	char from[XMPP_MAP_JID_MAX], to[XMPP_MAP_JID_MAX];
	struct xmpp_xml_elem *msg, *body;
	int rc;

	*out = NULL;
	if (in->from == NULL || in->to == NULL)
		return XMPP_MAP_ERR_SCHEME;
	if ((rc = xmpp_map_sip_to_jid(in->from, strlen(in->from), from, sizeof(from))) < 0 ||
	    (rc = xmpp_map_sip_to_jid(in->to, strlen(in->to), to, sizeof(to))) < 0)
		return rc;
	if (in->content_type == NULL || !content_type_ok(in->content_type))
		return XMPP_MAP_ERR_TYPE;
	if (in->body_len > 0 && in->body == NULL)
		return XMPP_MAP_ERR_CHAR;
	/* Checked here rather than left to the serializer, so that the SIP
	 * side gets its 415 now instead of a stanza that cannot be written. */
	if (!xmpp_xml_text_ok(in->body, in->body_len))
		return XMPP_MAP_ERR_CHAR;

	if ((msg = xmpp_xml_new("message", XMPP_XML_NS_SERVER)) == NULL)
		return XMPP_MAP_ERR_NOMEM;
	if (xmpp_xml_set_attr(msg, "type", NULL, "chat") < 0 ||
	    xmpp_xml_set_attr(msg, "from", NULL, from) < 0 ||
	    xmpp_xml_set_attr(msg, "to", NULL, to) < 0 ||
	    (in->id && xmpp_xml_set_attr(msg, "id", NULL, in->id) < 0) ||
	    (body = xmpp_xml_add(msg, "body", NULL)) == NULL ||
	    (in->body_len > 0 && xmpp_xml_add_text(body, in->body, in->body_len) < 0)) {
		xmpp_xml_free(msg); msg = NULL;
		return XMPP_MAP_ERR_NOMEM;
	}
	*out = msg;
	return 0;
}

/* Sets *condition and returns err, for the refusals below. */
static int refuse(const char **condition, const char *cond, int err)
{
	if (condition)
		*condition = cond;
	return err;
}

int xmpp_map_message_to_sip(const struct xmpp_xml_elem *msg, struct xmpp_map_sip_im *out,
                            const char **condition)
{
	const struct xmpp_xml_elem *body = NULL, *b, *thread;
	const char *type, *from, *to, *text;
	size_t len;

	memset(out, 0, sizeof(*out));
	if (condition)
		*condition = NULL;
	if (msg == NULL || msg->name == NULL || strcmp(msg->name, "message") != 0 ||
	    (strcmp(msg->ns, XMPP_XML_NS_SERVER) != 0 && strcmp(msg->ns, XMPP_XML_NS_CLIENT) != 0))
		return refuse(condition, "bad-request", XMPP_MAP_ERR_STANZA);

	type = xmpp_xml_attr(msg, "type");
	if (type && strcmp(type, "groupchat") == 0)
		return refuse(condition, "service-unavailable", XMPP_MAP_ERR_MSG_TYPE);
	if (type && strcmp(type, "chat") != 0 && strcmp(type, "normal") != 0)
		return refuse(condition, NULL, XMPP_MAP_ERR_MSG_TYPE);

	from = xmpp_xml_attr(msg, "from");
	to = xmpp_xml_attr(msg, "to");
	if (from == NULL || to == NULL ||
	    xmpp_map_jid_to_sip(from, strlen(from), out->from, sizeof(out->from)) < 0 ||
	    xmpp_map_jid_to_sip(to, strlen(to), out->to, sizeof(out->to)) < 0) {
		memset(out, 0, sizeof(*out));
		return refuse(condition, "jid-malformed", XMPP_MAP_ERR_STANZA);
	}
	memcpy(out->ruri, out->to, sizeof(out->ruri));

	/* SIP carries one body: the default-language one (RFC 6121 5.2.3). */
	for (b = NULL; (b = xmpp_xml_child(msg, b, "body", msg->ns)) != NULL;) {
		if (body == NULL)
			body = b;
		if (xmpp_xml_attr_ns(b, "lang", XMPP_XML_NS_XML) == NULL) {
			body = b;
			break;
		}
	}
	if (body == NULL) {
		memset(out, 0, sizeof(*out));
		return refuse(condition, NULL, XMPP_MAP_ERR_NO_BODY);
	}
	if ((text = xmpp_xml_text(body, &len)) == NULL) {
		memset(out, 0, sizeof(*out));
		return refuse(condition, "internal-server-error", XMPP_MAP_ERR_NOMEM);
	}
	if (!xmpp_xml_text_ok(text, len)) {
		memset(out, 0, sizeof(*out));
		return refuse(condition, "not-acceptable", XMPP_MAP_ERR_CHAR);
	}
	out->body = text;
	out->body_len = len;
	out->content_type = "text/plain;charset=UTF-8";
	out->id = xmpp_xml_attr(msg, "id");
	if ((thread = xmpp_xml_child(msg, NULL, "thread", msg->ns)) != NULL &&
	    (out->thread = xmpp_xml_text(thread, NULL)) == NULL) {
		memset(out, 0, sizeof(*out));
		return refuse(condition, "internal-server-error", XMPP_MAP_ERR_NOMEM);
	}
	return 0;
}
