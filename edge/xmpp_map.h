/*
 * xmpp_map: the pure mappings of the SIP<->XMPP gateway.
 *
 * - Addresses, RFC 7247 section 5: sip:user@domain <-> the bare JID
 *   user@domain, the JID checked roughly as RFC 7622 says (no PRECIS
 *   profiles: bytes, forbidden characters and UTF-8 only).
 * - Errors, RFC 7247 section 6: XMPP stanza error conditions -> SIP response
 *   codes and back.
 * - Instant messages, RFC 7572: a SIP MESSAGE with a text/plain body <-> an
 *   XMPP <message/> of type chat or normal with a <body/>.
 *
 * Ownership, once for the whole module: addresses are written into caller
 * buffers, NUL-terminated; a stanza built here is a new tree that the caller
 * frees with xmpp_xml_free(); what is read out of a stanza points into that
 * stanza's tree and lives as long as the tree. Nothing here allocates
 * except the trees, touches a socket or logs: errors are returned.
 */
#ifndef EDGE_XMPP_MAP_H
#define EDGE_XMPP_MAP_H

#include <stddef.h>

#include "xmpp_xml.h"

enum xmpp_map_err {
	XMPP_MAP_OK = 0,
	XMPP_MAP_ERR_SCHEME = -1,   /* not a sip: or sips: URI */
	XMPP_MAP_ERR_USER = -2,     /* no user part / localpart, or one the other side refuses */
	XMPP_MAP_ERR_DOMAIN = -3,   /* not a domain name (dom_valid), or a port */
	XMPP_MAP_ERR_ESCAPE = -4,   /* a bad %-escape, or a character RFC 3261 does not
	                             * allow raw in a user part */
	XMPP_MAP_ERR_RESOURCE = -5, /* an empty or oversized resourcepart */
	XMPP_MAP_ERR_SPACE = -6,    /* the output buffer is too small */
	XMPP_MAP_ERR_TYPE = -7,     /* the body is not text/plain in UTF-8 */
	XMPP_MAP_ERR_CHAR = -8,     /* bad UTF-8, or a character XML 1.0 refuses */
	XMPP_MAP_ERR_STANZA = -9,   /* not a <message/>, or from/to missing or malformed */
	XMPP_MAP_ERR_MSG_TYPE = -10, /* a message type the gateway does not carry */
	XMPP_MAP_ERR_NO_BODY = -11, /* a message without <body/> (chat states, receipts) */
	XMPP_MAP_ERR_NOMEM = -12,
};

const char *xmpp_map_strerror(int err);

/*
 * The SIP response a SIP request gets when mapping it failed with err:
 * 415 for ERR_TYPE and ERR_CHAR (RFC 3261 21.4.13), 500 for ERR_NOMEM,
 * 404 for ERR_USER and ERR_DOMAIN (no such XMPP address can exist), 400
 * for the others. 200 for XMPP_MAP_OK.
 */
unsigned xmpp_map_err_sip_status(int err);

/* ---- Addresses, RFC 7247 section 5 ------------------------------------------ */

#define XMPP_MAP_PART_MAX 1023  /* RFC 7622 3.1: local- and resourcepart bytes */
#define XMPP_MAP_DOMAIN_MAX 253 /* dom_valid()'s limit, below RFC 7622's 1023 */
/* A bare JID and its NUL. */
#define XMPP_MAP_JID_MAX (XMPP_MAP_PART_MAX + 1 + XMPP_MAP_DOMAIN_MAX + 1)
/* "sips:", a localpart with every byte %-escaped, '@', a domain and the NUL. */
#define XMPP_MAP_URI_MAX (5 + 3 * XMPP_MAP_PART_MAX + 1 + XMPP_MAP_DOMAIN_MAX + 1)

/*
 * SIP URI -> bare JID. uri is the addr-spec alone (no display name, no
 * angle brackets), len bytes. The scheme is sip: or sips: (any case); the
 * user part is required and is %-decoded, then must be a JID localpart:
 * 1 to 1023 bytes of UTF-8 without controls, spaces or "&'/:<>@ (so
 * "%40" is refused rather than mapped to an '@'). A password
 * ("user:pw@") is refused for the same reason (':'). The host must pass
 * dom_valid() and is lower-cased; a port is refused, since a JID has
 * none; URI parameters and headers (";..." and "?..." after the host)
 * are dropped. Writes "local@domain" into out (outsz bytes, at most
 * XMPP_MAP_JID_MAX needed). Returns 0 or an xmpp_map_err.
 */
int xmpp_map_sip_to_jid(const char *uri, size_t len, char *out, size_t outsz);

/*
 * JID -> SIP URI. jid is "local@domain[/resource]", len bytes; the
 * resource, when present, must be 1 to 1023 bytes and is dropped (the SIP
 * side addresses the user, RFC 7247 5.3). A localpart is required and
 * checked as above; the domain must pass dom_valid() and is lower-cased.
 * Writes "sip:" + the localpart %-escaped where RFC 3261's user rule wants
 * it + "@domain" into out (at most XMPP_MAP_URI_MAX bytes needed).
 */
int xmpp_map_jid_to_sip(const char *jid, size_t len, char *out, size_t outsz);

/* The bare JID of jid ("a@b/r" -> "a@b"), checked as xmpp_map_jid_to_sip()
 * does, domain lower-cased, into out. */
int xmpp_map_jid_bare(const char *jid, size_t len, char *out, size_t outsz);

/* ---- Errors, RFC 7247 section 6 ---------------------------------------------- */

/*
 * The SIP response code for an XMPP stanza error condition (its element
 * name, "item-not-found"), RFC 7247 table 4. An unknown name is taken as
 * <undefined-condition/> (RFC 6120 8.3.2): 400. NULL likewise.
 */
unsigned xmpp_map_sip_status(const char *condition);

/*
 * The XMPP condition for a SIP final error response (300 to 699), RFC 7247
 * section 6.2; a code the tables do not list is taken as its class's x00,
 * as RFC 3261 8.1.3.2 tells a UAC to do with an unknown code. NULL for a
 * code below 300 or above 699: not an error.
 */
const char *xmpp_map_condition(unsigned sip_status);

/*
 * The error type to send with a condition (RFC 6120 8.3.3's usual one:
 * "cancel", "modify", "auth" or "wait"); "cancel" for an unknown name.
 */
const char *xmpp_map_condition_type(const char *condition);

/* ---- Messages, RFC 7572 ------------------------------------------------------ */

/*
 * What xmpp_map_sip_to_message() reads of a SIP MESSAGE: strings of the
 * caller's, NUL-terminated but the body.
 */
struct xmpp_map_sip_in {
	const char *from;          /* the From URI (addr-spec, no <>) */
	const char *to;            /* the To URI */
	const char *content_type;  /* the Content-Type value; NULL when absent */
	const char *body;          /* body_len bytes, not NUL-terminated */
	size_t body_len;
	const char *id;            /* the stanza id to set (the Call-ID, say); may be NULL */
};

/*
 * What xmpp_map_message_to_sip() gives for the SIP MESSAGE to build: the
 * URIs in the struct's own arrays; body, id and thread point into the
 * stanza's tree, content_type to a static string.
 */
struct xmpp_map_sip_im {
	char ruri[XMPP_MAP_URI_MAX];  /* the Request-URI: the To URI */
	char from[XMPP_MAP_URI_MAX];  /* the From URI */
	char to[XMPP_MAP_URI_MAX];    /* the To URI */
	const char *content_type;     /* "text/plain;charset=UTF-8" */
	const char *body;             /* NUL-terminated too */
	size_t body_len;
	const char *id;               /* the stanza's id, or NULL */
	const char *thread;           /* <thread/>'s text, or NULL */
};

/*
 * SIP MESSAGE -> <message type='chat' from=... to=... id=...><body>...
 * </body></message> in the jabber:server namespace, as a new tree in *out
 * (the caller frees it). from and to are mapped to bare JIDs (RFC 7572
 * maps From and To; the Request-URI is the caller's routing business);
 * their errors are xmpp_map_sip_to_jid()'s, NULL being ERR_SCHEME. The
 * Content-Type must be text/plain with no charset or charset=UTF-8
 * (ERR_TYPE otherwise, absent included), the body valid UTF-8 of XML 1.0
 * characters (ERR_CHAR): answer both with 415 (xmpp_map_err_sip_status()).
 * An empty body gives an empty <body/>. *out is NULL on error.
 */
int xmpp_map_sip_to_message(const struct xmpp_map_sip_in *in, struct xmpp_xml_elem **out);

/*
 * XMPP <message/> -> the parts of a SIP MESSAGE, into *out. The message's
 * type must be chat or normal (absent is normal, RFC 6121 5.2.2); its from
 * and to must map to SIP URIs (resources dropped). The body is the text of
 * the first <body/> without xml:lang, else of the first <body/>; the
 * Content-Type is "text/plain;charset=UTF-8".
 *
 * On error, *condition (may be NULL) gets the stanza error condition to
 * answer with, or NULL when the stanza must be dropped without an answer:
 * - type groupchat: ERR_MSG_TYPE, "service-unavailable" (RFC 7572 leaves
 *   groupchat out; RFC 6121 8.5.2.1.1 answers a groupchat message to a user
 *   it cannot deliver with service-unavailable, which also tells the sender
 *   nothing about the user, where feature-not-implemented would);
 * - type headline: ERR_MSG_TYPE, NULL (RFC 6121 8.5.2.1.1: silently dropped);
 * - type error, or an unknown type: ERR_MSG_TYPE, NULL (an error is never
 *   answered with an error, RFC 6120 8.3.1);
 * - no <body/>: ERR_NO_BODY, NULL (chat states and receipts have no SIP
 *   counterpart here, and an error for each would be noise);
 * - from or to missing or not mappable: ERR_STANZA, "jid-malformed";
 * - a body XML allows but that is no text (cannot happen from the parser):
 *   ERR_CHAR, "not-acceptable"; out of memory: ERR_NOMEM,
 *   "internal-server-error"; not a <message/>: ERR_STANZA, "bad-request".
 */
int xmpp_map_message_to_sip(const struct xmpp_xml_elem *msg, struct xmpp_map_sip_im *out,
                            const char **condition);

#endif
