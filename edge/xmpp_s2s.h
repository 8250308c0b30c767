/*
 * xmpp_s2s: one XMPP server-to-server stream (RFC 6120), inbound or
 * outbound, over TCP that STARTTLS turns into TLS: the negotiation
 * (STARTTLS, SASL EXTERNAL, Server Dialback per XEP-0220 in its three
 * roles), whitespace keep-alives, and the stanzas of the domain pairs it
 * authenticated. The owner (the gateway) decides policy through callbacks,
 * keeps the stanzas it wants to send until a stream is ready, and routes
 * what arrives.
 *
 * Roles, for Server Dialback (XEP-0220 section 2):
 * - initiating: an outbound stream sends <db:result> with a key made here
 *   (XEP-0185) and is ready when the peer answers valid;
 * - receiving: an inbound stream that gets <db:result> accepts it at once
 *   when the peer's TLS certificate verified and names the sending domain
 *   (XEP-0344), else asks the owner to have the key checked by the
 *   sender's authoritative server (an outbound stream in verify mode) and
 *   is told the verdict with xmpp_s2s_dialback_verdict();
 * - authoritative: <db:verify> on an inbound stream is answered here, by
 *   making the key again.
 *
 * Lifetime: streams are freed by this module, never inside one of their
 * own callbacks. on_down is the last callback of a stream; it always comes
 * from the loop, never from inside a call into this module (a send whose
 * write fails, a verdict, a close) nor from another stream's callback; the
 * stream's pointer is valid until that callback returns, so the owner
 * forgets it there. A stream that ended but whose on_down has not come yet
 * refuses sends and verdicts and is not ready.
 * xmpp_s2s_close() only starts the end; xmpp_s2s_shutdown() frees every
 * stream of an env at once, for the owner's own end. Nothing here logs:
 * why a stream ended is on_down's text.
 */
#ifndef EDGE_XMPP_S2S_H
#define EDGE_XMPP_S2S_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "cfg.h"
#include "list.h"
#include "xmpp_xml.h"

#define XMPP_S2S_ID_LEN 32       /* stream ids we make: hex */
#define XMPP_S2S_DB_KEY_LEN 64   /* our dialback keys: hex of HMAC-SHA256 */
#define XMPP_S2S_DB_KEY_MAX 256  /* a peer's key, whatever its server's scheme */
#define XMPP_S2S_BAD_KEYS 3      /* dialback keys refused before the stream is closed */
#define XMPP_S2S_MAX_PAIRS 16    /* domain pairs one inbound stream may carry */

struct xmpp_s2s;
struct tls_ctx;

/* What a partner's configuration allows on its streams (cfg_xmpp_partner). */
struct xmpp_s2s_policy {
	enum cfg_xmpp_nego tls;
	enum cfg_xmpp_nego sasl;
	int dialback;
	int keepalive;
};

/* How a stream, or one pair on it, was authenticated. */
enum xmpp_s2s_auth {
	XMPP_S2S_AUTH_NONE = 0,
	XMPP_S2S_AUTH_SASL,          /* SASL EXTERNAL on a verified certificate */
	XMPP_S2S_AUTH_DIALBACK_CERT, /* dialback, the certificate vouching (XEP-0344) */
	XMPP_S2S_AUTH_DIALBACK,      /* dialback, checked with the authoritative server */
};
const char *xmpp_s2s_auth_name(enum xmpp_s2s_auth a);

/* Outbound streams: for stanzas, or only to verify dialback keys. */
enum xmpp_s2s_mode {
	XMPP_S2S_STANZAS = 0,
	XMPP_S2S_VERIFY,
};

struct xmpp_s2s_cbs {
	/*
	 * An inbound stream's header names the peer `remote` and our `local`
	 * domain (both lower-cased): the partner's policy, or NULL to refuse
	 * with *cond (host-unknown for a local domain we do not serve,
	 * not-authorized for a peer that is no partner). Also asked for each
	 * further pair a peer authenticates by dialback on the same stream.
	 */
	const struct xmpp_s2s_policy *(*partner)(void *arg, struct xmpp_s2s *s, const char *local,
	                                         const char *remote, enum xmpp_xml_cond *cond);
	/* The pair local/remote is authenticated on s: an outbound stream may
	 * now send (xmpp_s2s_send()); an inbound one will deliver its stanzas. */
	void (*on_ready)(void *arg, struct xmpp_s2s *s, const char *local, const char *remote);
	/*
	 * Receiving role: remote sent a dialback key for stream id that its
	 * authoritative server must confirm. The owner answers, later, with
	 * xmpp_s2s_dialback_verdict(s, ...), unless s went down first.
	 */
	void (*verify)(void *arg, struct xmpp_s2s *s, const char *local, const char *remote,
	               const char *id, const char *key);
	/* A verify-mode stream got the authoritative answer for id. */
	void (*on_verified)(void *arg, struct xmpp_s2s *s, const char *local, const char *remote,
	                    const char *id, int valid);
	/*
	 * A stanza (message, presence, iq) of an authenticated pair on an
	 * inbound stream; its from and to are checked against the pair. The
	 * tree belongs to the stream: clone to keep it.
	 */
	void (*on_stanza)(void *arg, struct xmpp_s2s *s, struct xmpp_xml_elem *stanza);
	/* An outbound stream wrote out every stanza given to it: the owner may
	 * give more (xmpp_s2s_unsent() says how much still waits). May be NULL. */
	void (*on_drained)(void *arg, struct xmpp_s2s *s);
	/* The stream ended: failed says an error ended it (not the peer's
	 * close, idleness or ours). The last callback. */
	void (*on_down)(void *arg, struct xmpp_s2s *s, int failed, const char *why);
};

/*
 * What all of an owner's streams share; it must outlive them, and is not
 * moved once a stream uses it. Zero it, fill it, then xmpp_s2s_env_init().
 */
struct xmpp_s2s_env {
	struct list_node streams;         /* every stream not yet freed: this module's */
	struct ev_loop *loop;
	struct tls_ctx *tls_server;       /* from tls_ctx_new_optional() */
	struct tls_ctx *tls_client;       /* from tls_ctx_new_optional() */
	struct xmpp_xml_limits xml;
	unsigned char db_secret[32];      /* dialback keys: HMAC under this */
	double negotiate_timeout;         /* connect to ready, seconds */
	double keepalive;                 /* whitespace after this long unsent; 0: none */
	double idle_timeout;              /* no stanza for this long: closed; 0: never */
	size_t max_queued_bytes;          /* unsent output past this fails the stream */
	const struct xmpp_s2s_cbs *cbs;
	void *arg;
};

void xmpp_s2s_env_init(struct xmpp_s2s_env *env);

/*
 * Frees every stream of env now, without callbacks: each live one is sent
 * a system-shutdown stream error, as far as its socket takes it at once.
 * For the owner's end only, never from a stream's callback.
 */
void xmpp_s2s_shutdown(struct xmpp_s2s_env *env);

/*
 * Takes an accepted, non-blocking socket (always, even on failure) and
 * starts an inbound stream on it. peer is "ip:port" for logs. NULL when
 * out of memory.
 */
struct xmpp_s2s *xmpp_s2s_accept(struct xmpp_s2s_env *env, int fd, const char *peer);

/* One address to try, in order, for an outbound stream. */
struct xmpp_s2s_target {
	struct sockaddr_storage addr;
	socklen_t addrlen;
};

/*
 * An outbound stream from our local domain to remote, trying the targets
 * in order until one connects (a target that fails before the stream
 * header is answered gives way to the next). The peer's certificate must
 * name remote for SASL EXTERNAL; policy is copied. Starts at once;
 * NULL with err set when nothing can be started.
 */
struct xmpp_s2s *xmpp_s2s_connect(struct xmpp_s2s_env *env, const char *local,
                                  const char *remote, const struct xmpp_s2s_target *targets,
                                  unsigned ntargets, const struct xmpp_s2s_policy *policy,
                                  enum xmpp_s2s_mode mode, char *err, size_t errlen);

/*
 * Queues a stanza on a ready outbound stream (in the stream's namespace,
 * jabber:server), to be written when the socket is next writable together
 * with the others of this loop iteration. Returns 0, or -1 when the stream
 * is not ready or is closing, or the stanza cannot be serialized (bad
 * characters: nothing queued). The owner keeps xmpp_s2s_unsent() small
 * (on_drained tells when to go on): a stream whose peer leaves more than
 * max_queued_bytes unread fails.
 */
int xmpp_s2s_send(struct xmpp_s2s *s, const struct xmpp_xml_elem *stanza);
/* Bytes given to the stream and not yet written to its socket. */
size_t xmpp_s2s_unsent(const struct xmpp_s2s *s);

/*
 * Verify mode: asks the peer, as the authoritative server of remote,
 * whether key is its key for the stream id on which it claimed local;
 * sent at once when the stream is ready, else when it becomes so.
 * Returns 0, or -1 when out of memory or closing.
 */
int xmpp_s2s_verify_key(struct xmpp_s2s *s, const char *id, const char *key);

/* The receiving role's answer to a verify() callback. */
void xmpp_s2s_dialback_verdict(struct xmpp_s2s *s, const char *local, const char *remote,
                               int valid);

/*
 * Ends the stream: a stream error with cond and text (cond NONE: a plain
 * close), </stream:stream>, then the connection once written. on_down
 * follows, from the loop.
 */
void xmpp_s2s_close(struct xmpp_s2s *s, enum xmpp_xml_cond cond, const char *text);

int xmpp_s2s_is_outbound(const struct xmpp_s2s *s);
int xmpp_s2s_is_ready(const struct xmpp_s2s *s);
int xmpp_s2s_is_tls(const struct xmpp_s2s *s);
/* Whether the stream is ending or has ended (its on_down may not have come yet). */
int xmpp_s2s_is_closing(const struct xmpp_s2s *s);
enum xmpp_s2s_mode xmpp_s2s_mode(const struct xmpp_s2s *s);
/* The outbound stream's local and remote domains; for an inbound stream,
 * those of its stream header (NULL before it). */
const char *xmpp_s2s_local(const struct xmpp_s2s *s);
const char *xmpp_s2s_remote(const struct xmpp_s2s *s);
const char *xmpp_s2s_peer(const struct xmpp_s2s *s);       /* "ip:port" */
const char *xmpp_s2s_id(const struct xmpp_s2s *s);         /* the stream id, or "" */
/* How the stream (outbound) or its first pair (inbound) authenticated. */
enum xmpp_s2s_auth xmpp_s2s_auth(const struct xmpp_s2s *s);
/* Whether an inbound stream carries the pair remote -> local. */
int xmpp_s2s_carries(const struct xmpp_s2s *s, const char *local, const char *remote);

/* One pointer of the owner's. */
void xmpp_s2s_set_user(struct xmpp_s2s *s, void *user);
void *xmpp_s2s_user(const struct xmpp_s2s *s);

/*
 * The XEP-0185 dialback key: hex of HMAC-SHA256 keyed with the hex of
 * SHA-256(secret), over "receiving originating id". out gets
 * XMPP_S2S_DB_KEY_LEN + 1 bytes. Returns 0, or -1 when OpenSSL fails.
 */
int xmpp_s2s_db_key(const unsigned char *secret, size_t secret_len, const char *receiving,
                    const char *originating, const char *id, char *out);

#endif
