/*
 * xmpp_presence: the pure presence mappings of the SIP<->XMPP gateway,
 * RFC 8048 (which obsoletes RFC 7248), for what person-to-person IM needs:
 *
 * - PIDF (RFC 3863, application/pidf+xml) in a SIP NOTIFY -> an XMPP
 *   <presence/>: available or unavailable, <show/> from the RPID
 *   activities (RFC 4480), <status/> from the PIDF note.
 * - XMPP <presence/> (available or unavailable) -> a PIDF document.
 * - Subscriptions: which SIP action an XMPP subscription stanza calls for,
 *   and which XMPP subscription stanza a SIP event gives. Decisions only:
 *   the dialogs and their state are the caller's.
 *
 * Availability mapping, both ways (RFC 8048 maps availability; the <show/>
 * rows follow RPID, and where one side has no counterpart the value is
 * dropped rather than invented):
 *
 *   PIDF                                   XMPP
 *   <basic>closed</basic>                  type='unavailable'
 *   <basic>open</basic>, no activity       available, no <show/>
 *   activity away, meal, breakfast,        <show>away</show>
 *     dinner, in-transit, travel, shopping
 *   activity busy, on-the-phone, meeting,  <show>dnd</show>
 *     appointment, presentation, performance
 *   activity vacation, holiday, sleeping,  <show>xa</show>
 *     permanent-absence
 *   any other activity                     available, no <show/>
 *   <note>                                 <status>
 *
 *   XMPP                                   PIDF
 *   no type                                <basic>open</basic>
 *   type='unavailable'                     <basic>closed</basic>
 *   <show>chat</show> or none              open, no activity (RPID has no
 *                                          "eager to chat")
 *   <show>away</show>                      open, <rpid:away/>
 *   <show>xa</show>                        open, <rpid:away/> (RPID's nearest;
 *                                          SIP clients show it as away)
 *   <show>dnd</show>                       open, <rpid:busy/>
 *   <status>                               <note> in the tuple
 *
 * Ownership, once for the whole module: a stanza built here is a new tree
 * that the caller frees with xmpp_xml_free(); a PIDF document built here
 * is in a buffer of the result struct, freed with xmpp_presence_pidf_free().
 * Inputs are only read. Nothing here touches a socket or logs: errors are
 * returned.
 */
#ifndef EDGE_XMPP_PRESENCE_H
#define EDGE_XMPP_PRESENCE_H

#include <stddef.h>

#include "xmpp_map.h"
#include "xmpp_xml.h"

#define XMPP_PRESENCE_NS_PIDF "urn:ietf:params:xml:ns:pidf"
#define XMPP_PRESENCE_NS_DM   "urn:ietf:params:xml:ns:pidf:data-model"  /* RFC 4479 */
#define XMPP_PRESENCE_NS_RPID "urn:ietf:params:xml:ns:pidf:rpid"        /* RFC 4480 */
#define XMPP_PRESENCE_PIDF_TYPE "application/pidf+xml"
/* A PIDF body larger than this is refused unparsed: one user's presence
 * is a few kilobytes even with Lync's extensions. */
#define XMPP_PRESENCE_PIDF_MAX 65536

enum xmpp_presence_err {
	XMPP_PRESENCE_OK = 0,
	XMPP_PRESENCE_ERR_SIZE = -1,    /* empty, or larger than XMPP_PRESENCE_PIDF_MAX */
	XMPP_PRESENCE_ERR_XML = -2,     /* not well-formed XML (or not UTF-8) */
	XMPP_PRESENCE_ERR_DTD = -3,     /* a DOCTYPE or an entity: refused, never expanded */
	XMPP_PRESENCE_ERR_PIDF = -4,    /* the root is not a PIDF <presence>, or nested
	                                 * too deep */
	XMPP_PRESENCE_ERR_BASIC = -5,   /* no tuple with <status><basic>, or a basic
	                                 * other than open or closed */
	XMPP_PRESENCE_ERR_ADDR = -6,    /* from or to missing or not mappable (xmpp_map) */
	XMPP_PRESENCE_ERR_STANZA = -7,  /* not a <presence/> stanza */
	XMPP_PRESENCE_ERR_TYPE = -8,    /* a presence type that is not available or
	                                 * unavailable (subscriptions, probe, error) */
	XMPP_PRESENCE_ERR_CHAR = -9,    /* a status that is not UTF-8 of XML characters */
	XMPP_PRESENCE_ERR_NOMEM = -10,
};

const char *xmpp_presence_strerror(int err);

/* ---- PIDF -> XMPP ------------------------------------------------------------ */

/*
 * A PIDF document (the body of a NOTIFY whose Content-Type the caller has
 * checked is application/pidf+xml), len bytes, not NUL-terminated -> a new
 * <presence from to [type='unavailable']>[<show/>][<status/>]</presence>
 * in jabber:server, in *out (NULL on error; the caller frees it).
 *
 * from and to are the NOTIFY's From and To URIs (addr-specs), mapped to
 * bare JIDs by xmpp_map_sip_to_jid() (RFC 8048 takes the sender from the
 * SIP headers, not from the document's entity). The first <tuple>'s
 * <status><basic> decides availability; the note is the first tuple's
 * <note>, else the document's <note>, else the <dm:person>'s <dm:note>;
 * the show comes from the first child of the first <rpid:activities> that
 * the table above lists. Texts are an element's direct text, joined
 * around any child (as xmpp_xml_text() reads them), then trimmed; a blank
 * note is none. Other tuples and extensions are ignored.
 *
 * The document is parsed as UTF-8 whatever it declares; a DOCTYPE,
 * entity declaration or external entity is refused (ERR_DTD), and so is
 * nesting deeper than 32 elements (ERR_PIDF).
 */
int xmpp_presence_from_pidf(const char *from, const char *to, const char *doc, size_t len,
                            struct xmpp_xml_elem **out);

/* ---- XMPP -> PIDF ------------------------------------------------------------ */

/* The parts of the SIP NOTIFY (or PUBLISH) to build from a <presence/>. */
struct xmpp_presence_pidf {
	char from[XMPP_MAP_URI_MAX];  /* the From URI, also the document's entity */
	char to[XMPP_MAP_URI_MAX];    /* the To URI */
	struct xmpp_xml_buf doc;      /* the PIDF document, XMPP_PRESENCE_PIDF_TYPE */
};

/*
 * <presence/> without type (available) or with type='unavailable' -> the
 * PIDF document and the URIs, into *out (all zero first; freed with
 * xmpp_presence_pidf_free(), which is also fine on error). from and to are
 * mapped by xmpp_map_jid_to_sip(), resources dropped. The status is the
 * first <status/> without xml:lang, else the first one; a <show/> other
 * than away, chat, dnd and xa is taken as none (RFC 6121 4.7.2.1 allows no
 * other). Any other type: ERR_TYPE (subscriptions go through
 * xmpp_presence_sub_from_xmpp(); probes are the gateway's business).
 */
int xmpp_presence_to_pidf(const struct xmpp_xml_elem *pres, struct xmpp_presence_pidf *out);

void xmpp_presence_pidf_free(struct xmpp_presence_pidf *p);

/* ---- Subscriptions, RFC 8048 section 4 ---------------------------------------- */

/*
 * A subscription event, one row of RFC 8048's mapping, named by what it
 * means on both sides:
 *
 *   event        XMPP type       SIP
 *   SUBSCRIBE    subscribe       SUBSCRIBE, Event: presence, Expires > 0
 *   ACCEPTED     subscribed      200 (or 202, RFC 3265) to that SUBSCRIBE
 *   UNSUBSCRIBE  unsubscribe     SUBSCRIBE, Event: presence, Expires: 0
 *   TERMINATED   unsubscribed    NOTIFY, Subscription-State: terminated
 *                                (also: a SUBSCRIBE refused with 3xx-6xx)
 */
enum xmpp_presence_sub {
	XMPP_PRESENCE_SUB_NONE = 0,    /* not a subscription event */
	XMPP_PRESENCE_SUB_SUBSCRIBE,
	XMPP_PRESENCE_SUB_ACCEPTED,
	XMPP_PRESENCE_SUB_UNSUBSCRIBE,
	XMPP_PRESENCE_SUB_TERMINATED,
};

/*
 * XMPP -> SIP: the event an XMPP presence type is (NULL or any other
 * type: NONE). What the gateway then does in SIP:
 * - SUBSCRIBE: send SUBSCRIBE to the contact, Event: presence, Accept:
 *   application/pidf+xml, Expires > 0, and refresh it while it lasts;
 * - ACCEPTED: the XMPP user allows a SIP user's pending subscription:
 *   answer it 200 (or, answered already, NOTIFY with Subscription-State:
 *   active and the current presence);
 * - UNSUBSCRIBE: SUBSCRIBE in that dialog with Expires: 0;
 * - TERMINATED: the XMPP user denies or cancels a SIP user's subscription:
 *   NOTIFY with Subscription-State: terminated (or 603 to a SUBSCRIBE not
 *   yet answered).
 */
enum xmpp_presence_sub xmpp_presence_sub_from_xmpp(const char *type);

/*
 * SIP -> the event. method is the request's method, or for a response
 * (status 100 to 699) its CSeq method; event the Event header value (NULL
 * when absent; parameters after ';' are ignored, the package compared
 * without case); expires the Expires value, or -1 when absent (RFC 3856's
 * default, then, is a positive duration); sub_state the
 * Subscription-State value of a NOTIFY, or NULL. Rows:
 * - SUBSCRIBE request, Event presence: Expires 0 -> UNSUBSCRIBE, else
 *   SUBSCRIBE;
 * - 200 or 202 to a SUBSCRIBE with Expires not 0 -> ACCEPTED (the Event
 *   header is optional in responses: not checked); 3xx to 6xx to a SUBSCRIBE
 *   -> TERMINATED (the subscription was refused);
 * - NOTIFY, Event presence, Subscription-State terminated -> TERMINATED;
 * - anything else, a NOTIFY with presence included -> NONE.
 */
enum xmpp_presence_sub xmpp_presence_sub_from_sip(const char *method, unsigned status,
                                                  const char *event, long expires,
                                                  const char *sub_state);

/* The XMPP presence type for an event ("subscribe", ...), NULL for NONE. */
const char *xmpp_presence_sub_to_xmpp(enum xmpp_presence_sub ev);

#endif
