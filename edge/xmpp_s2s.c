#include "xmpp_s2s.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <unistd.h>

#include "domain.h"
#include "sockaddr.h"
#include "tls.h"
#include "xprt.h"

#define CLOSE_LINGER 2.0      /* after our </stream:stream>: the peer's end, at most */
#define READ_CHUNK 16384
#define MAX_VERIFY_QUEUE 64   /* keys a verify-mode stream holds before it is ready */

enum state {
	ST_CONNECTING,  /* outbound: TCP connect */
	ST_HEADER,      /* waiting for the peer's stream header */
	ST_FEATURES,    /* outbound: waiting for <stream:features/> */
	ST_OPEN,        /* inbound: header sent; negotiating, then carrying stanzas */
	ST_PROCEED,     /* outbound: <starttls/> sent */
	ST_TLS_WAIT,    /* inbound: <proceed/> queued; TLS once it is written */
	ST_TLS,         /* the TLS handshake */
	ST_SASL,        /* outbound: <auth/> sent */
	ST_DIALBACK,    /* outbound: <db:result/> sent */
	ST_READY,       /* outbound: authenticated */
	ST_CLOSING,     /* our end is sent or being sent; then the peer's, or the linger */
	ST_DEAD,        /* on_down called; freed by the reaper */
};

struct pair {
	char local[254], remote[254];
	enum xmpp_s2s_auth auth;    /* NONE while its dialback key is being verified */
};

struct verify_req {
	char id[128];
	char key[XMPP_S2S_DB_KEY_MAX + 1];
};

struct xmpp_s2s {
	struct list_node link;        /* in env->streams */
	struct xmpp_s2s_env *env;
	struct xprt *x;
	ev_io io;
	ev_timer timer;               /* negotiation deadline; then keep-alive and idleness */
	ev_timer reaper;              /* frees the stream, outside its callbacks */
	struct xmpp_xml_parser *parser;
	struct xmpp_xml_buf out;      /* bytes to write; out_sent of them are written */
	size_t out_sent;
	enum state st;
	int outbound;
	int header_sent;              /* our header for the current stream */
	int tls;                      /* TLS is up */
	int tls_verified;             /* the peer's certificate verified (outbound: names remote) */
	int sasl_done;
	int restart;                  /* the parser stopped for a stream restart */
	int read_wants_write;         /* TLS needs the socket writable to read on */
	int shut;                     /* our direction is shut */
	int served_verify;            /* answered a db:verify (authoritative role) */
	int peer_closed;              /* the peer's </stream:stream> came while we were closing */
	unsigned bad_keys;            /* dialback keys refused on this stream */
	int backlogged;               /* stanzas were queued since the output was last empty */
	enum xmpp_s2s_mode mode;
	enum xmpp_s2s_auth auth;
	struct xmpp_s2s_policy policy;
	int have_policy;
	char local[254], remote[254];
	char id[128];                 /* inbound: ours; outbound: the peer's */
	char peer[64];
	struct xmpp_s2s_target *targets;
	unsigned ntargets, target;
	struct pair *pairs;           /* inbound: grown as peers authenticate more pairs */
	unsigned pair_cap;
	unsigned npairs;
	struct verify_req *verifies;  /* verify mode: keys not sent yet */
	unsigned nverifies;
	unsigned verifies_due;        /* verify mode: keys sent, not answered yet */
	ev_tstamp last_sent, last_stanza;
	int failed;
	char why[256];
	void *user;
};

/* ---- small helpers ---- */

const char *xmpp_s2s_auth_name(enum xmpp_s2s_auth a)
{
	switch (a) {
	case XMPP_S2S_AUTH_SASL:
		return "SASL EXTERNAL";
	case XMPP_S2S_AUTH_DIALBACK_CERT:
		return "dialback (certificate)";
	case XMPP_S2S_AUTH_DIALBACK:
		return "dialback";
	default:
		return "none";
	}
}

/* Copies a domain, lower-cased, when it is one; -1 otherwise. */
static int take_domain(char *out, size_t outsz, const char *in)
{
	if (!in)
		return -1;
	size_t n = strlen(in);
	if (n && in[n - 1] == '.')
		n--;
	if (n == 0 || n >= outsz || !dom_valid(in, n))
		return -1;
	for (size_t i = 0; i < n; i++)
		out[i] = (char)tolower((unsigned char)in[i]);
	out[n] = '\0';
	return 0;
}

/* The domain of a JID ("u@d/r" -> "d"), lower-cased; -1 when it has none. */
static int jid_domain(const char *jid, char *out, size_t outsz)
{
	if (!jid)
		return -1;
	const char *slash = strchr(jid, '/');
	size_t end = slash ? (size_t)(slash - jid) : strlen(jid);
	const char *at = memchr(jid, '@', end);
	const char *d = at ? at + 1 : jid;
	size_t n = end - (size_t)(d - jid);
	char tmp[254];
	if (n == 0 || n >= sizeof(tmp))
		return -1;
	memcpy(tmp, d, n);
	tmp[n] = '\0';
	return take_domain(out, outsz, tmp);
}

static void random_id(char *out, size_t len)
{
	unsigned char raw[XMPP_S2S_ID_LEN / 2];
	static const char hex[] = "0123456789abcdef";
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		memset(raw, 0, sizeof(raw)); /* unique enough for a log, still a valid id */
	size_t i;
	for (i = 0; i < sizeof(raw) && 2 * i + 2 < len; i++) {
		out[2 * i] = hex[raw[i] >> 4];
		out[2 * i + 1] = hex[raw[i] & 15];
	}
	out[2 * i] = '\0';
}

int xmpp_s2s_db_key(const unsigned char *secret, size_t secret_len, const char *receiving,
                    const char *originating, const char *id, char *out)
{
	static const char hex[] = "0123456789abcdef";
	unsigned char digest[EVP_MAX_MD_SIZE], mac[EVP_MAX_MD_SIZE];
	unsigned dlen = 0, mlen = 0;
	char hkey[2 * 32 + 1];
	if (EVP_Digest(secret, secret_len, digest, &dlen, EVP_sha256(), NULL) != 1 || dlen != 32)
		return -1;
	for (unsigned i = 0; i < dlen; i++) {
		hkey[2 * i] = hex[digest[i] >> 4];
		hkey[2 * i + 1] = hex[digest[i] & 15];
	}
	hkey[64] = '\0';
	size_t n = strlen(receiving) + strlen(originating) + strlen(id) + 3;
	char *text = malloc(n);
	if (!text)
		return -1;
	snprintf(text, n, "%s %s %s", receiving, originating, id);
	unsigned char *r = HMAC(EVP_sha256(), hkey, 64, (const unsigned char *)text, strlen(text),
	                        mac, &mlen);
	free(text);
	if (!r || mlen != 32)
		return -1;
	for (unsigned i = 0; i < mlen; i++) {
		out[2 * i] = hex[mac[i] >> 4];
		out[2 * i + 1] = hex[mac[i] & 15];
	}
	out[2 * mlen] = '\0';
	return 0;
}

/* Whether the verified peer certificate names domain. */
static int cert_names(struct xmpp_s2s *s, const char *domain)
{
	if (!s->tls || !s->tls_verified)
		return 0;
	unsigned n = 0;
	const char *const *names = s->x->ops->peer_names(s->x, &n);
	for (unsigned i = 0; i < n; i++)
		if (strcasecmp(names[i], domain) == 0)
			return 1;
	return 0;
}

/* ---- output ---- */

static void update_io(struct xmpp_s2s *s);
static void finish(struct xmpp_s2s *s);
static void fail(struct xmpp_s2s *s, enum xmpp_xml_cond cond, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

static int out_append(struct xmpp_s2s *s, const char *data, size_t len)
{
	struct xmpp_xml_buf *b = &s->out;
	if (b->len + len > b->cap) {
		size_t cap = b->cap ? b->cap : 1024;
		while (cap < b->len + len)
			cap *= 2;
		char *grown = realloc(b->data, cap);
		if (!grown)
			return -1;
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	return 0;
}

static int out_str(struct xmpp_s2s *s, const char *text)
{
	return out_append(s, text, strlen(text));
}

static const struct xmpp_xml_ctx stream_ctx = { .content_ns = XMPP_XML_NS_SERVER, .dialback = 1 };

static int out_elem(struct xmpp_s2s *s, const struct xmpp_xml_elem *el)
{
	return xmpp_xml_write_elem(&s->out, el, &stream_ctx);
}

/* Writes what can be written. Returns -1 when the stream failed. */
static int flush(struct xmpp_s2s *s)
{
	while (s->out_sent < s->out.len) {
		ssize_t n = s->x->ops->send(s->x, s->out.data + s->out_sent, s->out.len - s->out_sent);
		if (n == XPRT_WANT_WRITE || n == XPRT_WANT_READ)
			break;
		if (n < 0) {
			snprintf(s->why, sizeof(s->why), "%s",
			         n == XPRT_CLOSED ? "closed by the peer" : s->x->error);
			s->failed = 1;
			finish(s);
			return -1;
		}
		s->out_sent += (size_t)n;
		s->last_sent = ev_now(s->env->loop);
	}
	if (s->out_sent == s->out.len) {
		s->out.len = 0;
		s->out_sent = 0;
	} else if (s->out.len - s->out_sent > s->env->max_queued_bytes) {
		snprintf(s->why, sizeof(s->why), "the peer does not read: %zu bytes unsent",
		         s->out.len - s->out_sent);
		s->failed = 1;
		finish(s);
		return -1;
	}
	return 0;
}

static int send_header(struct xmpp_s2s *s, int with_version)
{
	struct xmpp_xml_header_out h = {
		.from = s->local[0] ? s->local : NULL,
		.to = s->remote[0] ? s->remote : NULL,
		.id = s->outbound ? NULL : s->id,
		.version = with_version ? "1.0" : NULL,
		.content_ns = XMPP_XML_NS_SERVER,
		.dialback = 1,
	};
	s->header_sent = 1;
	return xmpp_xml_write_header(&s->out, &h);
}

/* ---- ending ---- */

static void stream_free(struct xmpp_s2s *s)
{
	struct ev_loop *loop = s->env->loop;
	ev_io_stop(loop, &s->io);
	ev_timer_stop(loop, &s->timer);
	ev_timer_stop(loop, &s->reaper);
	list_del(&s->link);
	if (s->x)
		s->x->ops->destroy(s->x);
	xmpp_xml_parser_free(s->parser);
	xmpp_xml_buf_free(&s->out);
	free(s->targets);
	free(s->verifies);
	free(s->pairs);
	free(s);
}

/* From the loop, never inside a call into this module: on_down, then the free. */
static void reaper_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct xmpp_s2s *s = w->data;
	s->env->cbs->on_down(s->env->arg, s, s->failed, s->why[0] ? s->why : "closed");
	stream_free(s);
}

void xmpp_s2s_env_init(struct xmpp_s2s_env *env)
{
	list_init(&env->streams);
}

void xmpp_s2s_shutdown(struct xmpp_s2s_env *env)
{
	while (!list_empty(&env->streams)) {
		struct xmpp_s2s *s = list_entry(env->streams.next, struct xmpp_s2s, link);
		if (s->st < ST_CLOSING && s->st != ST_CONNECTING && s->st != ST_TLS &&
		    s->st != ST_TLS_WAIT) {
			s->out.len = s->out_sent = 0;
			if (!s->header_sent && !s->outbound) {
				random_id(s->id, sizeof(s->id));
				send_header(s, 1);
			}
			xmpp_xml_write_error(&s->out, XMPP_XML_COND_SYSTEM_SHUTDOWN, NULL);
			xmpp_xml_write_close(&s->out);
			s->x->ops->send(s->x, s->out.data, s->out.len);
		}
		stream_free(s);
	}
}

/*
 * The end: the reaper calls on_down, then frees the stream. Never on_down
 * from here: finish() runs inside the owner's own calls (a send whose
 * write fails, a dialback verdict, a close) and inside other streams'
 * callbacks, where the owner cannot have the stream, or what it hangs on
 * it, freed under its feet.
 */
static void finish(struct xmpp_s2s *s)
{
	if (s->st == ST_DEAD)
		return;
	s->st = ST_DEAD;
	ev_io_stop(s->env->loop, &s->io);
	ev_timer_stop(s->env->loop, &s->timer);
	ev_timer_set(&s->reaper, 0, 0);
	ev_timer_start(s->env->loop, &s->reaper);
}

/* Closing: once our end is written, shut our direction; done when the peer's end came. */
static void closing_progress(struct xmpp_s2s *s)
{
	if (s->st != ST_CLOSING || s->out.len)
		return;
	if (!s->shut) {
		s->x->ops->shutdown(s->x);
		s->shut = 1;
	}
	if (s->peer_closed)
		finish(s);
}

static void begin_close(struct xmpp_s2s *s, enum xmpp_xml_cond cond, const char *text)
{
	if (s->st >= ST_CLOSING)
		return;
	if (s->st == ST_CONNECTING || s->st == ST_TLS || s->st == ST_TLS_WAIT) {
		/* No stream to end on this socket (or TLS half set up): just close. */
		finish(s);
		return;
	}
	if (!s->header_sent && !s->outbound) {
		/* RFC 6120 4.9.1.1: an error before our header still opens the stream. */
		random_id(s->id, sizeof(s->id));
		send_header(s, 1);
	}
	if (cond != XMPP_XML_COND_NONE)
		xmpp_xml_write_error(&s->out, cond, text);
	xmpp_xml_write_close(&s->out);
	s->st = ST_CLOSING;
	ev_timer_stop(s->env->loop, &s->timer);
	ev_timer_set(&s->timer, CLOSE_LINGER, 0);
	ev_timer_start(s->env->loop, &s->timer);
	if (flush(s) == 0) {
		closing_progress(s);
		update_io(s);
	}
}

static void fail(struct xmpp_s2s *s, enum xmpp_xml_cond cond, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(s->why, sizeof(s->why), fmt, ap);
	va_end(ap);
	s->failed = 1;
	begin_close(s, cond, NULL);
}

void xmpp_s2s_close(struct xmpp_s2s *s, enum xmpp_xml_cond cond, const char *text)
{
	if (s->st >= ST_CLOSING)
		return;
	if (!s->why[0])
		snprintf(s->why, sizeof(s->why), "%s", text ? text : "closed by us");
	if (cond != XMPP_XML_COND_NONE)
		s->failed = 1;
	begin_close(s, cond, text);
}

/*
 * Whether the stream has authenticated: an outbound one once ready, an
 * inbound one once any of its pairs has (the first pair may still wait
 * for its dialback verdict while a later one is through).
 */
static int authenticated(const struct xmpp_s2s *s)
{
	if (s->outbound)
		return s->st == ST_READY;
	for (unsigned i = 0; i < s->npairs; i++)
		if (s->pairs[i].auth)
			return 1;
	return 0;
}

/* ---- timers ---- */

static void arm_tick(struct xmpp_s2s *s)
{
	const struct xmpp_s2s_env *e = s->env;
	double every = 0;
	if (e->keepalive > 0 && s->policy.keepalive)
		every = e->keepalive;
	if (e->idle_timeout > 0 && (every == 0 || e->idle_timeout < every))
		every = e->idle_timeout;
	ev_timer_stop(e->loop, &s->timer);
	if (every > 0) {
		ev_timer_set(&s->timer, every, every);
		ev_timer_start(e->loop, &s->timer);
	}
}

static void timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct xmpp_s2s *s = w->data;
	const struct xmpp_s2s_env *e = s->env;
	ev_tstamp now = ev_now(loop);
	if (s->st == ST_CLOSING) {
		finish(s);
		return;
	}
	if (s->verifies_due) {
		fail(s, XMPP_XML_COND_CONNECTION_TIMEOUT, "%s did not answer a dialback verification "
		     "within %.0f s", s->remote, e->negotiate_timeout);
		return;
	}
	if (!authenticated(s)) {
		if (!s->outbound && s->served_verify) {
			snprintf(s->why, sizeof(s->why), "dialback verification stream done");
			begin_close(s, XMPP_XML_COND_NONE, NULL);
		} else {
			fail(s, XMPP_XML_COND_CONNECTION_TIMEOUT, "not authenticated within %.0f s",
			     e->negotiate_timeout);
		}
		return;
	}
	if (e->idle_timeout > 0 && now - s->last_stanza >= e->idle_timeout) {
		snprintf(s->why, sizeof(s->why), "idle for %.0f s", now - s->last_stanza);
		begin_close(s, XMPP_XML_COND_NONE, NULL);
		return;
	}
	/* RFC 6120 4.6.1: a single space keeps NATs and the peer's checks content. */
	if (e->keepalive > 0 && s->policy.keepalive && now - s->last_sent >= e->keepalive &&
	    s->out.len == 0 && out_str(s, " ") == 0 && flush(s) == 0)
		update_io(s);
}

/* ---- becoming ready ---- */

static void send_verifies(struct xmpp_s2s *s)
{
	for (unsigned i = 0; i < s->nverifies; i++) {
		struct xmpp_xml_elem *v = xmpp_xml_new("verify", XMPP_XML_NS_DIALBACK);
		if (!v || xmpp_xml_set_attr(v, "from", NULL, s->local) < 0 ||
		    xmpp_xml_set_attr(v, "to", NULL, s->remote) < 0 ||
		    xmpp_xml_set_attr(v, "id", NULL, s->verifies[i].id) < 0 ||
		    xmpp_xml_add_text(v, s->verifies[i].key, strlen(s->verifies[i].key)) < 0 ||
		    out_elem(s, v) < 0) {
			xmpp_xml_free(v);
			fail(s, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "out of memory");
			return;
		}
		xmpp_xml_free(v);
	}
	if (s->nverifies) {
		/* The answers are due within a negotiation's time, not an idle stream's. */
		s->verifies_due += s->nverifies;
		ev_timer_stop(s->env->loop, &s->timer);
		ev_timer_set(&s->timer, s->env->negotiate_timeout, 0);
		ev_timer_start(s->env->loop, &s->timer);
	}
	s->nverifies = 0;
}

static void outbound_ready(struct xmpp_s2s *s, enum xmpp_s2s_auth how)
{
	s->st = ST_READY;
	if (s->auth == XMPP_S2S_AUTH_NONE)
		s->auth = how;
	s->last_stanza = ev_now(s->env->loop);
	arm_tick(s);
	if (s->mode == XMPP_S2S_VERIFY)
		send_verifies(s);
	else
		s->env->cbs->on_ready(s->env->arg, s, s->local, s->remote);
}

static void pair_ready(struct xmpp_s2s *s, struct pair *p, enum xmpp_s2s_auth how)
{
	int first = !authenticated(s);
	p->auth = how;
	if (s->auth == XMPP_S2S_AUTH_NONE)
		s->auth = how;
	if (first) {
		s->last_stanza = ev_now(s->env->loop);
		arm_tick(s);
	}
	s->env->cbs->on_ready(s->env->arg, s, p->local, p->remote);
}

static struct pair *find_pair(struct xmpp_s2s *s, const char *local, const char *remote)
{
	for (unsigned i = 0; i < s->npairs; i++)
		if (strcmp(s->pairs[i].local, local) == 0 && strcmp(s->pairs[i].remote, remote) == 0)
			return &s->pairs[i];
	return NULL;
}

/*
 * A stream restart (STARTTLS, SASL success) forgets the keys still being
 * checked (RFC 6120 4.3.3: nothing of the old stream carries over): their
 * verdicts, when they come, find no pair and are dropped, instead of being
 * written before our new header or into the TLS handshake.
 */
static void drop_pending_pairs(struct xmpp_s2s *s)
{
	unsigned kept = 0;
	for (unsigned i = 0; i < s->npairs; i++)
		if (s->pairs[i].auth)
			s->pairs[kept++] = s->pairs[i];
	s->npairs = kept;
}

static struct pair *add_pair(struct xmpp_s2s *s, const char *local, const char *remote)
{
	struct pair *p = find_pair(s, local, remote);
	if (p || s->npairs == XMPP_S2S_MAX_PAIRS)
		return p;
	if (s->npairs == s->pair_cap) {
		/* Most streams carry one pair: room for more only once a second comes. */
		unsigned cap = s->pair_cap ? 2 * s->pair_cap : 1;
		struct pair *grown = realloc(s->pairs, (cap < XMPP_S2S_MAX_PAIRS ? cap
		                                        : XMPP_S2S_MAX_PAIRS) * sizeof(*grown));
		if (!grown)
			return NULL;
		s->pairs = grown;
		s->pair_cap = cap < XMPP_S2S_MAX_PAIRS ? cap : XMPP_S2S_MAX_PAIRS;
	}
	p = &s->pairs[s->npairs++];
	snprintf(p->local, sizeof(p->local), "%s", local);
	snprintf(p->remote, sizeof(p->remote), "%s", remote);
	p->auth = XMPP_S2S_AUTH_NONE;
	return p;
}

/* ---- TLS ---- */

static void handshake_step(struct xmpp_s2s *s);
static void read_step(struct xmpp_s2s *s);

static void start_tls(struct xmpp_s2s *s)
{
	int fd = xprt_tcp_release(s->x);
	s->x = tls_xprt_new(s->outbound ? s->env->tls_client : s->env->tls_server, fd,
	                    s->outbound ? s->remote : NULL);
	if (!s->x) {
		snprintf(s->why, sizeof(s->why), "cannot start TLS: out of memory");
		s->failed = 1;
		finish(s);
		return;
	}
	s->st = ST_TLS;
	handshake_step(s);
}

/* ---- the outbound side ---- */

static int next_target(struct xmpp_s2s *s);

static void send_db_result(struct xmpp_s2s *s)
{
	char key[XMPP_S2S_DB_KEY_LEN + 1];
	struct xmpp_xml_elem *r = NULL;
	if (xmpp_s2s_db_key(s->env->db_secret, sizeof(s->env->db_secret), s->remote, s->local,
	                    s->id, key) < 0 ||
	    !(r = xmpp_xml_new("result", XMPP_XML_NS_DIALBACK)) ||
	    xmpp_xml_set_attr(r, "from", NULL, s->local) < 0 ||
	    xmpp_xml_set_attr(r, "to", NULL, s->remote) < 0 ||
	    xmpp_xml_add_text(r, key, strlen(key)) < 0 || out_elem(s, r) < 0) {
		xmpp_xml_free(r);
		fail(s, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "cannot make a dialback key");
		return;
	}
	xmpp_xml_free(r);
	s->st = ST_DIALBACK;
}

/* After TLS, or without it: SASL EXTERNAL, dialback, or the end. */
static void outbound_authenticate(struct xmpp_s2s *s, const struct xmpp_xml_elem *features)
{
	const struct xmpp_s2s_policy *p = &s->policy;
	if (s->sasl_done) {
		outbound_ready(s, XMPP_S2S_AUTH_SASL);
		return;
	}
	if (s->mode == XMPP_S2S_VERIFY) {
		/* The authoritative server answers db:verify without our authentication. */
		outbound_ready(s, XMPP_S2S_AUTH_NONE);
		return;
	}
	int external = 0;
	const struct xmpp_xml_elem *mechs =
		features ? xmpp_xml_child(features, NULL, "mechanisms", XMPP_XML_NS_SASL) : NULL;
	for (const struct xmpp_xml_elem *m = mechs ? xmpp_xml_child(mechs, NULL, "mechanism", NULL)
	                                           : NULL;
	     m; m = xmpp_xml_child(mechs, m, "mechanism", NULL)) {
		const char *t = xmpp_xml_text(m, NULL);
		if (t && strcmp(t, "EXTERNAL") == 0)
			external = 1;
	}
	if (external && s->tls && s->tls_verified && p->sasl != CFG_XMPP_NOT_SUPPORTED) {
		/* RFC 6120 6.4.2: the authorization identity is our domain, base64. */
		unsigned char b64[400];
		int n = EVP_EncodeBlock(b64, (const unsigned char *)s->local, (int)strlen(s->local));
		struct xmpp_xml_elem *a = xmpp_xml_new("auth", XMPP_XML_NS_SASL);
		if (n < 0 || !a || xmpp_xml_set_attr(a, "mechanism", NULL, "EXTERNAL") < 0 ||
		    xmpp_xml_add_text(a, (const char *)b64, (size_t)n) < 0 || out_elem(s, a) < 0) {
			xmpp_xml_free(a);
			fail(s, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "out of memory");
			return;
		}
		xmpp_xml_free(a);
		s->st = ST_SASL;
		return;
	}
	if (p->sasl == CFG_XMPP_REQUIRED) {
		fail(s, XMPP_XML_COND_POLICY_VIOLATION, "SASL EXTERNAL is required for %s, but %s",
		     s->remote, !s->tls ? "the stream is not encrypted"
		     : !s->tls_verified ? "its certificate did not verify" : "it does not offer EXTERNAL");
		return;
	}
	if (!p->dialback) {
		fail(s, XMPP_XML_COND_POLICY_VIOLATION, "no authentication with %s: %s, and dialback "
		     "is not allowed", s->remote, external ? "its certificate did not verify"
		     : "it does not offer SASL EXTERNAL");
		return;
	}
	send_db_result(s);
}

static void outbound_features(struct xmpp_s2s *s, const struct xmpp_xml_elem *f)
{
	const struct xmpp_s2s_policy *p = &s->policy;
	const struct xmpp_xml_elem *starttls = xmpp_xml_child(f, NULL, "starttls", XMPP_XML_NS_TLS);
	if (!s->tls) {
		int required = starttls && xmpp_xml_child(starttls, NULL, "required", XMPP_XML_NS_TLS);
		if (starttls && p->tls != CFG_XMPP_NOT_SUPPORTED) {
			out_str(s, "<starttls xmlns='" XMPP_XML_NS_TLS "'/>");
			s->st = ST_PROCEED;
			return;
		}
		if (required) {
			fail(s, XMPP_XML_COND_POLICY_VIOLATION, "%s requires TLS, which its policy "
			     "(tls_negotiation NotSupported) does not allow", s->remote);
			return;
		}
		if (p->tls == CFG_XMPP_REQUIRED) {
			fail(s, XMPP_XML_COND_POLICY_VIOLATION, "%s does not offer TLS, which its "
			     "policy requires", s->remote);
			return;
		}
	}
	outbound_authenticate(s, f);
}

static int outbound_element(struct xmpp_s2s *s, struct xmpp_xml_elem *el)
{
	const char *ns = el->ns;
	switch (s->st) {
	case ST_FEATURES:
		if (strcmp(el->name, "features") != 0 || strcmp(ns, XMPP_XML_NS_STREAMS) != 0) {
			fail(s, XMPP_XML_COND_UNSUPPORTED_STANZA_TYPE, "<%s/> before the stream features",
			     el->name);
			return 1;
		}
		outbound_features(s, el);
		return s->st >= ST_CLOSING;
	case ST_PROCEED:
		if (strcmp(ns, XMPP_XML_NS_TLS) == 0 && strcmp(el->name, "proceed") == 0) {
			s->st = ST_TLS;
			return 1; /* what follows is TLS */
		}
		fail(s, XMPP_XML_COND_UNDEFINED_CONDITION, "%s refused STARTTLS", s->remote);
		return 1;
	case ST_SASL:
		if (strcmp(ns, XMPP_XML_NS_SASL) == 0 && strcmp(el->name, "success") == 0) {
			s->sasl_done = 1;
			s->auth = XMPP_S2S_AUTH_SASL;
			s->restart = 1;
			s->st = ST_HEADER;
			return 1;
		}
		if (strcmp(ns, XMPP_XML_NS_SASL) == 0 && strcmp(el->name, "failure") == 0 &&
		    s->policy.dialback && s->policy.sasl != CFG_XMPP_REQUIRED) {
			send_db_result(s);
			return 0;
		}
		fail(s, XMPP_XML_COND_NOT_AUTHORIZED, "%s refused SASL EXTERNAL", s->remote);
		return 1;
	case ST_DIALBACK:
		if (strcmp(ns, XMPP_XML_NS_DIALBACK) == 0 && strcmp(el->name, "result") == 0) {
			const char *type = xmpp_xml_attr(el, "type");
			if (type && strcmp(type, "valid") == 0) {
				outbound_ready(s, XMPP_S2S_AUTH_DIALBACK);
				return 0;
			}
			fail(s, XMPP_XML_COND_NONE, "%s answered our dialback key %s", s->remote,
			     type ? type : "without a type");
			return 1;
		}
		return 0;
	case ST_READY:
		if (s->mode == XMPP_S2S_VERIFY && strcmp(ns, XMPP_XML_NS_DIALBACK) == 0 &&
		    strcmp(el->name, "verify") == 0) {
			const char *type = xmpp_xml_attr(el, "type"), *id = xmpp_xml_attr(el, "id");
			if (s->verifies_due && --s->verifies_due == 0)
				arm_tick(s);
			s->env->cbs->on_verified(s->env->arg, s, s->local, s->remote, id ? id : "",
			                         type && strcmp(type, "valid") == 0);
			return s->st >= ST_CLOSING;
		}
		/* Streams are one-way (no XEP-0288): anything else is dropped. */
		return 0;
	default:
		return 0;
	}
}

/* ---- the inbound side ---- */

static void send_features(struct xmpp_s2s *s)
{
	const struct xmpp_s2s_policy *p = &s->policy;
	int offered = 0;
	out_str(s, "<stream:features>");
	if (!s->tls && p->tls != CFG_XMPP_NOT_SUPPORTED) {
		out_str(s, p->tls == CFG_XMPP_REQUIRED
		        ? "<starttls xmlns='" XMPP_XML_NS_TLS "'><required/></starttls>"
		        : "<starttls xmlns='" XMPP_XML_NS_TLS "'/>");
		offered = 1;
	}
	if (!s->sasl_done && (s->tls || p->tls != CFG_XMPP_REQUIRED)) {
		if (cert_names(s, s->remote) && p->sasl != CFG_XMPP_NOT_SUPPORTED) {
			out_str(s, "<mechanisms xmlns='" XMPP_XML_NS_SASL "'>"
			        "<mechanism>EXTERNAL</mechanism></mechanisms>");
			offered = 1;
		}
		if (p->dialback && p->sasl != CFG_XMPP_REQUIRED) {
			out_str(s, "<dialback xmlns='" XMPP_XML_NS_DIALBACK_FEATURE "'><errors/></dialback>");
			offered = 1;
		}
	}
	out_str(s, "</stream:features>");
	if (!offered && !s->sasl_done) {
		fail(s, XMPP_XML_COND_NOT_AUTHORIZED, "%s cannot authenticate: %s", s->remote,
		     !s->tls ? "no TLS" : !s->tls_verified ? "its certificate did not verify and "
		     "dialback is not allowed" : "its certificate does not name it and dialback is "
		     "not allowed");
	}
}

static int inbound_open(struct xmpp_s2s *s, const struct xmpp_xml_header *h)
{
	char local[254], remote[254];
	if (!h->content_ns || strcmp(h->content_ns, XMPP_XML_NS_SERVER) != 0) {
		fail(s, XMPP_XML_COND_INVALID_NAMESPACE, "not a server-to-server stream");
		return 1;
	}
	if (take_domain(local, sizeof(local), h->to) < 0) {
		fail(s, XMPP_XML_COND_HOST_UNKNOWN, "the stream header names no domain of ours (to=%s)",
		     h->to ? h->to : "none");
		return 1;
	}
	if (take_domain(remote, sizeof(remote), h->from) < 0) {
		fail(s, XMPP_XML_COND_INVALID_FROM, "the stream header names no sending domain "
		     "(from=%s)", h->from ? h->from : "none");
		return 1;
	}
	if (s->have_policy && (strcmp(local, s->local) != 0 || strcmp(remote, s->remote) != 0)) {
		fail(s, XMPP_XML_COND_INVALID_FROM, "the restarted stream names %s -> %s, not %s -> %s",
		     remote, local, s->remote, s->local);
		return 1;
	}
	snprintf(s->local, sizeof(s->local), "%s", local);
	snprintf(s->remote, sizeof(s->remote), "%s", remote);
	if (!s->have_policy) {
		enum xmpp_xml_cond cond = XMPP_XML_COND_NOT_AUTHORIZED;
		const struct xmpp_s2s_policy *p = s->env->cbs->partner(s->env->arg, s, local, remote,
		                                                       &cond);
		if (!p) {
			fail(s, cond, "%s -> %s refused: %s", remote, local,
			     cond == XMPP_XML_COND_HOST_UNKNOWN ? "not our domain" : "not an XMPP partner");
			return 1;
		}
		s->policy = *p;
		s->have_policy = 1;
	}
	random_id(s->id, sizeof(s->id));
	int v1 = h->version_major >= 1;
	send_header(s, v1);
	s->st = ST_OPEN;
	if (!v1) {
		/* A pre-1.0 peer knows no features: only plain dialback fits it. */
		if (s->policy.tls == CFG_XMPP_REQUIRED || !s->policy.dialback ||
		    s->policy.sasl == CFG_XMPP_REQUIRED) {
			fail(s, XMPP_XML_COND_UNSUPPORTED_VERSION, "%s speaks XMPP before 1.0 (no TLS, no "
			     "SASL), which its policy does not allow", remote);
			return 1;
		}
	} else {
		send_features(s);
		if (s->st >= ST_CLOSING)
			return 1;
		if (s->sasl_done) {
			struct pair *p = add_pair(s, s->local, s->remote);
			if (p && !p->auth)
				pair_ready(s, p, XMPP_S2S_AUTH_SASL);
		}
	}
	return s->st >= ST_CLOSING;
}

static int inbound_auth(struct xmpp_s2s *s, const struct xmpp_xml_elem *el)
{
	const char *mech = xmpp_xml_attr(el, "mechanism");
	size_t len = 0;
	const char *text = xmpp_xml_text(el, &len);
	if (s->sasl_done || !mech || strcmp(mech, "EXTERNAL") != 0 ||
	    s->policy.sasl == CFG_XMPP_NOT_SUPPORTED || !cert_names(s, s->remote)) {
		out_str(s, "<failure xmlns='" XMPP_XML_NS_SASL "'><invalid-mechanism/></failure>");
		return 0;
	}
	/* The authorization identity: empty ("=") means the header's from. */
	if (text && len > 0 && !(len == 1 && text[0] == '=')) {
		unsigned char decoded[400];
		int n = len < 500 ? EVP_DecodeBlock(decoded, (const unsigned char *)text, (int)len) : -1;
		/* EVP_DecodeBlock counts padding as bytes: drop them. */
		while (n > 0 && len > 0 && text[len - 1] == '=') {
			n--;
			len--;
		}
		char authz[254];
		if (n <= 0 || (size_t)n >= sizeof(authz)) {
			out_str(s, "<failure xmlns='" XMPP_XML_NS_SASL "'><incorrect-encoding/></failure>");
			return 0;
		}
		memcpy(authz, decoded, (size_t)n);
		authz[n] = '\0';
		if (strcasecmp(authz, s->remote) != 0) {
			out_str(s, "<failure xmlns='" XMPP_XML_NS_SASL "'><invalid-authzid/></failure>");
			return 0;
		}
	}
	out_str(s, "<success xmlns='" XMPP_XML_NS_SASL "'/>");
	drop_pending_pairs(s);
	s->sasl_done = 1;
	s->restart = 1;
	s->header_sent = 0;
	s->st = ST_HEADER;
	return 1;
}

static void db_answer(struct xmpp_s2s *s, const char *name, const char *from, const char *to,
                      const char *id, const char *type)
{
	struct xmpp_xml_elem *r = xmpp_xml_new(name, XMPP_XML_NS_DIALBACK);
	if (r && xmpp_xml_set_attr(r, "from", NULL, from) == 0 &&
	    xmpp_xml_set_attr(r, "to", NULL, to) == 0 &&
	    (!id || xmpp_xml_set_attr(r, "id", NULL, id) == 0) &&
	    xmpp_xml_set_attr(r, "type", NULL, type) == 0)
		out_elem(s, r);
	xmpp_xml_free(r);
}

/* Receiving role: <db:result from to>key</db:result>. */
static void inbound_db_result(struct xmpp_s2s *s, const struct xmpp_xml_elem *el)
{
	char local[254], remote[254];
	if (take_domain(remote, sizeof(remote), xmpp_xml_attr(el, "from")) < 0 ||
	    take_domain(local, sizeof(local), xmpp_xml_attr(el, "to")) < 0) {
		fail(s, XMPP_XML_COND_IMPROPER_ADDRESSING, "a dialback key without from or to");
		return;
	}
	const struct xmpp_s2s_policy *p = &s->policy;
	if (strcmp(local, s->local) != 0 || strcmp(remote, s->remote) != 0) {
		enum xmpp_xml_cond cond = XMPP_XML_COND_NOT_AUTHORIZED;
		p = s->env->cbs->partner(s->env->arg, s, local, remote, &cond);
		if (!p) {
			db_answer(s, "result", local, remote, NULL, "invalid");
			return;
		}
	}
	if (!p->dialback || p->sasl == CFG_XMPP_REQUIRED || (p->tls == CFG_XMPP_REQUIRED && !s->tls)) {
		db_answer(s, "result", local, remote, NULL, "invalid");
		return;
	}
	struct pair *pr = find_pair(s, local, remote);
	if (pr && pr->auth) {
		db_answer(s, "result", local, remote, NULL, "valid");
		return;
	}
	if (pr)
		return; /* its key is being checked already: that verdict answers */
	pr = add_pair(s, local, remote);
	if (!pr) {
		fail(s, XMPP_XML_COND_RESOURCE_CONSTRAINT, "more than %d domain pairs on one stream",
		     XMPP_S2S_MAX_PAIRS);
		return;
	}
	if (cert_names(s, remote)) {
		/* XEP-0344: the verified certificate vouches for the domain. */
		db_answer(s, "result", local, remote, NULL, "valid");
		pair_ready(s, pr, XMPP_S2S_AUTH_DIALBACK_CERT);
		return;
	}
	size_t len = 0;
	const char *key = xmpp_xml_text(el, &len);
	if (!key || len == 0 || len > XMPP_S2S_DB_KEY_MAX) {
		db_answer(s, "result", local, remote, NULL, "invalid");
		return;
	}
	s->env->cbs->verify(s->env->arg, s, local, remote, s->id, key);
}

/* Authoritative role: <db:verify from to id>key</db:verify>. */
static void inbound_db_verify(struct xmpp_s2s *s, const struct xmpp_xml_elem *el)
{
	char receiving[254], originating[254], expect[XMPP_S2S_DB_KEY_LEN + 1];
	const char *id = xmpp_xml_attr(el, "id");
	size_t len = 0;
	const char *key = xmpp_xml_text(el, &len);
	if (take_domain(receiving, sizeof(receiving), xmpp_xml_attr(el, "from")) < 0 ||
	    take_domain(originating, sizeof(originating), xmpp_xml_attr(el, "to")) < 0 || !id) {
		fail(s, XMPP_XML_COND_IMPROPER_ADDRESSING, "a dialback verification without from, to "
		     "or id");
		return;
	}
	enum xmpp_xml_cond cond;
	int valid = key && len == XMPP_S2S_DB_KEY_LEN &&
	            s->env->cbs->partner(s->env->arg, s, originating, receiving, &cond) &&
	            xmpp_s2s_db_key(s->env->db_secret, sizeof(s->env->db_secret), receiving,
	                            originating, id, expect) == 0 &&
	            CRYPTO_memcmp(expect, key, XMPP_S2S_DB_KEY_LEN) == 0;
	db_answer(s, "verify", originating, receiving, id, valid ? "valid" : "invalid");
	s->served_verify = 1;
}

static int inbound_stanza(struct xmpp_s2s *s, struct xmpp_xml_elem *el)
{
	char from[254], to[254];
	if (jid_domain(xmpp_xml_attr(el, "from"), from, sizeof(from)) < 0) {
		fail(s, XMPP_XML_COND_INVALID_FROM, "a <%s/> without a valid from", el->name);
		return 1;
	}
	if (jid_domain(xmpp_xml_attr(el, "to"), to, sizeof(to)) < 0) {
		fail(s, XMPP_XML_COND_IMPROPER_ADDRESSING, "a <%s/> without a valid to", el->name);
		return 1;
	}
	struct pair *p = find_pair(s, to, from);
	if (!p || !p->auth) {
		/* RFC 6120 4.9.3.12 before any authentication, 4.9.3.9 for a pair it lacks. */
		fail(s, authenticated(s) ? XMPP_XML_COND_INVALID_FROM : XMPP_XML_COND_NOT_AUTHORIZED,
		     "a <%s/> from %s to %s, which this stream has not authenticated", el->name,
		     from, to);
		return 1;
	}
	s->last_stanza = ev_now(s->env->loop);
	s->env->cbs->on_stanza(s->env->arg, s, el);
	return s->st >= ST_CLOSING;
}

static int inbound_element(struct xmpp_s2s *s, struct xmpp_xml_elem *el)
{
	const char *ns = el->ns;
	if (s->st != ST_OPEN)
		return 0;
	if (strcmp(ns, XMPP_XML_NS_TLS) == 0 && strcmp(el->name, "starttls") == 0) {
		if (s->tls || s->policy.tls == CFG_XMPP_NOT_SUPPORTED) {
			out_str(s, "<failure xmlns='" XMPP_XML_NS_TLS "'/>");
			fail(s, XMPP_XML_COND_NONE, "STARTTLS %s", s->tls ? "twice" : "is not allowed");
			return 1;
		}
		out_str(s, "<proceed xmlns='" XMPP_XML_NS_TLS "'/>");
		drop_pending_pairs(s);
		s->st = ST_TLS_WAIT;
		return 1;
	}
	if (!s->tls && s->policy.tls == CFG_XMPP_REQUIRED) {
		fail(s, XMPP_XML_COND_POLICY_VIOLATION, "<%s/> before STARTTLS, which is required",
		     el->name);
		return 1;
	}
	if (strcmp(ns, XMPP_XML_NS_SASL) == 0 && strcmp(el->name, "auth") == 0)
		return inbound_auth(s, el);
	if (strcmp(ns, XMPP_XML_NS_DIALBACK) == 0 && strcmp(el->name, "result") == 0) {
		inbound_db_result(s, el);
		return s->st >= ST_CLOSING;
	}
	if (strcmp(ns, XMPP_XML_NS_DIALBACK) == 0 && strcmp(el->name, "verify") == 0) {
		inbound_db_verify(s, el);
		return s->st >= ST_CLOSING;
	}
	if (strcmp(ns, XMPP_XML_NS_SERVER) == 0 && (strcmp(el->name, "message") == 0 ||
	    strcmp(el->name, "presence") == 0 || strcmp(el->name, "iq") == 0))
		return inbound_stanza(s, el);
	fail(s, XMPP_XML_COND_UNSUPPORTED_STANZA_TYPE, "<%s xmlns='%s'/> is not a stanza",
	     el->name, ns);
	return 1;
}

/* ---- parser callbacks ---- */

static int on_open(void *arg, const struct xmpp_xml_header *h)
{
	struct xmpp_s2s *s = arg;
	if (s->st != ST_HEADER)
		return 1;
	if (!s->outbound)
		return inbound_open(s, h);
	if (!h->id || !h->id[0] || strlen(h->id) >= sizeof(s->id)) {
		fail(s, XMPP_XML_COND_INVALID_XML, "the stream header of %s has no usable id", s->remote);
		return 1;
	}
	snprintf(s->id, sizeof(s->id), "%s", h->id);
	if (h->version_major >= 1) {
		s->st = ST_FEATURES;
		return 0;
	}
	/* A pre-1.0 server: no features, no TLS, no SASL. */
	if (s->policy.tls == CFG_XMPP_REQUIRED) {
		fail(s, XMPP_XML_COND_POLICY_VIOLATION, "%s speaks XMPP before 1.0 (no TLS), which its "
		     "policy does not allow", s->remote);
		return 1;
	}
	outbound_authenticate(s, NULL);
	return s->st >= ST_CLOSING;
}

static int on_element(void *arg, struct xmpp_xml_elem *el)
{
	struct xmpp_s2s *s = arg;
	if (s->st >= ST_CLOSING)
		return 1;
	if (strcmp(el->ns, XMPP_XML_NS_STREAMS) == 0 && strcmp(el->name, "error") == 0) {
		const struct xmpp_xml_elem *c = xmpp_xml_child(el, NULL, NULL,
		                                               XMPP_XML_NS_STREAM_ERRORS);
		snprintf(s->why, sizeof(s->why), "stream error from the peer: %s",
		         c && c->name ? c->name : "undefined-condition");
		s->failed = 1;
		begin_close(s, XMPP_XML_COND_NONE, NULL);
		return 1;
	}
	return s->outbound ? outbound_element(s, el) : inbound_element(s, el);
}

static void on_close(void *arg)
{
	struct xmpp_s2s *s = arg;
	if (s->st == ST_CLOSING) {
		s->peer_closed = 1; /* both ends closed once ours is written */
		closing_progress(s);
		return;
	}
	if (!s->why[0])
		snprintf(s->why, sizeof(s->why), "closed by the peer");
	if (s->outbound && s->st != ST_READY)
		s->failed = 1;
	s->peer_closed = 1; /* done once our end is written, not at the linger's end */
	begin_close(s, XMPP_XML_COND_NONE, NULL);
}

static void on_error(void *arg, enum xmpp_xml_cond cond, const char *text)
{
	struct xmpp_s2s *s = arg;
	if (s->st >= ST_CLOSING)
		return;
	fail(s, cond, "bad XML from the peer: %s", text ? text : xmpp_xml_cond_name(cond));
}

static const struct xmpp_xml_cbs parser_cbs = {
	.on_open = on_open,
	.on_element = on_element,
	.on_close = on_close,
	.on_error = on_error,
};

/* ---- I/O ---- */

static void update_io(struct xmpp_s2s *s)
{
	if (s->st == ST_DEAD)
		return;
	int events = EV_READ;
	if (s->st == ST_CONNECTING || s->out_sent < s->out.len || s->read_wants_write)
		events |= EV_WRITE;
	if (s->shut && s->out_sent == s->out.len)
		events = EV_READ;
	if (events != (s->io.events & (EV_READ | EV_WRITE))) {
		ev_io_stop(s->env->loop, &s->io);
		ev_io_set(&s->io, s->x->fd, events);
		ev_io_start(s->env->loop, &s->io);
	} else if (!ev_is_active(&s->io)) {
		ev_io_start(s->env->loop, &s->io);
	}
}

/* After the parser stopped: TLS begins, or a new stream on the same transport. */
static int after_stop(struct xmpp_s2s *s, size_t leftover)
{
	if (s->st == ST_TLS || s->st == ST_TLS_WAIT) {
		if (leftover) {
			fail(s, XMPP_XML_COND_NONE, "bytes after STARTTLS before the TLS handshake");
			return -1;
		}
		if (s->st == ST_TLS)
			start_tls(s);
		/* ST_TLS_WAIT: TLS starts once <proceed/> is written (write path). */
		return 1;
	}
	if (s->restart) {
		s->restart = 0;
		if (xmpp_xml_reset(s->parser) < 0) {
			fail(s, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "out of memory");
			return -1;
		}
		if (s->outbound && send_header(s, 1) < 0) {
			fail(s, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "out of memory");
			return -1;
		}
		return 0;
	}
	return -1;
}

static void feed(struct xmpp_s2s *s, const char *buf, size_t len)
{
	while (len > 0 && s->st < ST_CLOSING) {
		size_t used = 0;
		int rc = xmpp_xml_feed(s->parser, buf, len, &used);
		if (rc != XMPP_XML_STOPPED)
			return; /* OK, or an error the callbacks have dealt with */
		buf += used;
		len -= used;
		if (after_stop(s, len) != 0)
			return;
	}
	if (s->st == ST_CLOSING && len)
		xmpp_xml_feed(s->parser, buf, len, NULL); /* only to see the peer's end */
}

static void read_step(struct xmpp_s2s *s)
{
	char buf[READ_CHUNK];
	s->read_wants_write = 0;
	for (int rounds = 0; s->st != ST_DEAD && s->st != ST_TLS && s->st != ST_TLS_WAIT; rounds++) {
		if (rounds == 16) {
			/* Fair to other streams; TLS may hold bytes epoll cannot see: come back. */
			ev_feed_event(s->env->loop, &s->io, EV_READ);
			return;
		}
		ssize_t n = s->x->ops->recv(s->x, buf, sizeof(buf));
		if (n == XPRT_WANT_READ)
			return;
		if (n == XPRT_WANT_WRITE) {
			s->read_wants_write = 1;
			return;
		}
		if (n < 0) {
			if (s->st != ST_CLOSING) {
				snprintf(s->why, sizeof(s->why), "%s", n == XPRT_CLOSED
				         ? "connection closed without </stream:stream>" : s->x->error);
				s->failed = 1;
			}
			/* A target that hung up before its stream header gives way to the next. */
			if (s->outbound && s->st == ST_HEADER && !s->tls && !s->id[0] &&
			    next_target(s) == 0)
				return;
			finish(s);
			return;
		}
		feed(s, buf, (size_t)n);
	}
}

static void handshake_done(struct xmpp_s2s *s)
{
	s->tls = 1;
	s->tls_verified = tls_xprt_verify_error(s->x) == NULL;
	if (xmpp_xml_reset(s->parser) < 0) {
		fail(s, XMPP_XML_COND_INTERNAL_SERVER_ERROR, "out of memory");
		return;
	}
	s->header_sent = 0;
	s->st = ST_HEADER;
	if (s->outbound)
		send_header(s, 1);
}

static void connected(struct xmpp_s2s *s)
{
	s->st = ST_HEADER;
	send_header(s, 1);
}

static void handshake_step(struct xmpp_s2s *s)
{
	int rc = s->x->ops->handshake(s->x);
	if (rc == XPRT_WANT_READ || rc == XPRT_WANT_WRITE) {
		ev_io_stop(s->env->loop, &s->io);
		ev_io_set(&s->io, s->x->fd, rc == XPRT_WANT_READ ? EV_READ : EV_WRITE);
		ev_io_start(s->env->loop, &s->io);
		return;
	}
	if (rc < 0) {
		snprintf(s->why, sizeof(s->why), "%s", s->x->error);
		s->failed = 1;
		if (s->st == ST_CONNECTING && next_target(s) == 0)
			return;
		finish(s);
		return;
	}
	int was_tls = s->st == ST_TLS;
	if (s->st == ST_CONNECTING)
		connected(s);
	else
		handshake_done(s);
	if (s->st < ST_CLOSING && flush(s) == 0) {
		if (was_tls)
			read_step(s); /* the peer's new header may sit in TLS's buffer already */
		if (s->st != ST_DEAD && s->st != ST_TLS)
			update_io(s);
	}
}

/* Writes what is queued; STARTTLS and the close move on once it is all out. */
static void write_step(struct xmpp_s2s *s)
{
	if (flush(s) < 0)
		return;
	if (s->backlogged && s->out.len == 0 && s->st == ST_READY) {
		s->backlogged = 0;
		if (s->env->cbs->on_drained)
			s->env->cbs->on_drained(s->env->arg, s);
		if (s->st == ST_DEAD)
			return;
	}
	if (s->st == ST_TLS_WAIT && s->out.len == 0)
		start_tls(s);
	else
		closing_progress(s);
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct xmpp_s2s *s = w->data;
	if (s->st == ST_CONNECTING || s->st == ST_TLS) {
		handshake_step(s);
		return;
	}
	if ((revents & EV_WRITE) || s->read_wants_write)
		write_step(s);
	if (s->st != ST_DEAD && s->st != ST_TLS && ((revents & EV_READ) || s->read_wants_write))
		read_step(s);
	if (s->st != ST_DEAD && s->st != ST_TLS && (s->out.len || s->st == ST_TLS_WAIT))
		write_step(s);
	if (s->st != ST_DEAD && s->st != ST_TLS)
		update_io(s);
}

/* ---- creating streams ---- */

static struct xmpp_s2s *stream_new(struct xmpp_s2s_env *env)
{
	struct xmpp_s2s *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->env = env;
	s->parser = xmpp_xml_parser_new(&env->xml, &parser_cbs, s);
	if (!s->parser) {
		free(s);
		return NULL;
	}
	ev_init(&s->io, io_cb);
	s->io.data = s;
	ev_init(&s->timer, timer_cb);
	s->timer.data = s;
	ev_init(&s->reaper, reaper_cb);
	s->reaper.data = s;
	s->last_sent = s->last_stanza = ev_now(env->loop);
	list_add_tail(&env->streams, &s->link);
	return s;
}

/*
 * No Nagle: stanzas are gathered here and written together once per loop
 * iteration, and a small last write must not wait for the peer's delayed
 * ACK (40 ms on Linux) behind the one before it.
 */
static void no_delay(int fd)
{
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

static void start_deadline(struct xmpp_s2s *s)
{
	ev_timer_set(&s->timer, s->env->negotiate_timeout, 0);
	ev_timer_start(s->env->loop, &s->timer);
}

struct xmpp_s2s *xmpp_s2s_accept(struct xmpp_s2s_env *env, int fd, const char *peer)
{
	struct xmpp_s2s *s = stream_new(env);
	if (!s || !(s->x = xprt_tcp_new(fd))) {
		close(fd);
		if (s)
			stream_free(s);
		return NULL;
	}
	snprintf(s->peer, sizeof(s->peer), "%s", peer);
	no_delay(fd);
	s->st = ST_HEADER;
	start_deadline(s);
	update_io(s);
	return s;
}

/* Connects to target s->target; -1 with s->why when it cannot even start. */
static int connect_target(struct xmpp_s2s *s)
{
	const struct xmpp_s2s_target *t = &s->targets[s->target];
	sa_str(&t->addr, s->peer, sizeof(s->peer));
	int fd = socket(t->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		snprintf(s->why, sizeof(s->why), "socket: %s", strerror(errno));
		return -1;
	}
	no_delay(fd);
	if (connect(fd, (const struct sockaddr *)&t->addr, t->addrlen) < 0 && errno != EINPROGRESS) {
		snprintf(s->why, sizeof(s->why), "connect to %s: %s", s->peer, strerror(errno));
		close(fd);
		return -1;
	}
	s->x = xprt_tcp_new(fd);
	if (!s->x) {
		close(fd);
		snprintf(s->why, sizeof(s->why), "out of memory");
		return -1;
	}
	s->st = ST_CONNECTING;
	s->tls = s->tls_verified = s->sasl_done = 0;
	ev_io_stop(s->env->loop, &s->io);
	ev_io_set(&s->io, fd, EV_WRITE);
	ev_io_start(s->env->loop, &s->io);
	return 0;
}

/*
 * The current target failed before the stream began: the next one, from a
 * clean slate. Returns 0 when one is connecting, -1 when none is left.
 */
static int next_target(struct xmpp_s2s *s)
{
	while (s->target + 1 < s->ntargets) {
		s->target++;
		if (s->x)
			s->x->ops->destroy(s->x);
		s->x = NULL;
		s->out.len = s->out_sent = 0;
		s->header_sent = 0;
		if (xmpp_xml_reset(s->parser) < 0)
			return -1;
		if (connect_target(s) == 0) {
			s->failed = 0;
			s->why[0] = '\0';
			return 0;
		}
	}
	return -1;
}

struct xmpp_s2s *xmpp_s2s_connect(struct xmpp_s2s_env *env, const char *local,
                                  const char *remote, const struct xmpp_s2s_target *targets,
                                  unsigned ntargets, const struct xmpp_s2s_policy *policy,
                                  enum xmpp_s2s_mode mode, char *err, size_t errlen)
{
	if (ntargets == 0) {
		snprintf(err, errlen, "no address for %s", remote);
		return NULL;
	}
	struct xmpp_s2s *s = stream_new(env);
	if (!s || !(s->targets = malloc(ntargets * sizeof(*targets)))) {
		if (s)
			stream_free(s);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	memcpy(s->targets, targets, ntargets * sizeof(*targets));
	s->ntargets = ntargets;
	s->outbound = 1;
	s->mode = mode;
	s->policy = *policy;
	s->have_policy = 1;
	snprintf(s->local, sizeof(s->local), "%s", local);
	snprintf(s->remote, sizeof(s->remote), "%s", remote);
	if (connect_target(s) < 0 && next_target(s) < 0) {
		snprintf(err, errlen, "%s", s->why);
		stream_free(s);
		return NULL;
	}
	start_deadline(s);
	return s;
}

/* ---- the owner's calls ---- */

int xmpp_s2s_send(struct xmpp_s2s *s, const struct xmpp_xml_elem *stanza)
{
	if (s->st != ST_READY || s->mode != XMPP_S2S_STANZAS)
		return -1;
	if (out_elem(s, stanza) < 0)
		return -1;
	s->last_stanza = ev_now(s->env->loop);
	/* Written when the socket is next writable, with whatever else comes in this
	 * loop iteration: one write and fewer TLS records for a burst. */
	s->backlogged = 1;
	update_io(s);
	return 0;
}

size_t xmpp_s2s_unsent(const struct xmpp_s2s *s)
{
	return s->out.len - s->out_sent;
}

int xmpp_s2s_verify_key(struct xmpp_s2s *s, const char *id, const char *key)
{
	if (s->st >= ST_CLOSING || s->mode != XMPP_S2S_VERIFY || s->nverifies >= MAX_VERIFY_QUEUE ||
	    strlen(id) >= sizeof(s->verifies[0].id) || strlen(key) > XMPP_S2S_DB_KEY_MAX)
		return -1;
	struct verify_req *grown = realloc(s->verifies, (s->nverifies + 1) * sizeof(*grown));
	if (!grown)
		return -1;
	s->verifies = grown;
	struct verify_req *v = &s->verifies[s->nverifies++];
	snprintf(v->id, sizeof(v->id), "%s", id);
	snprintf(v->key, sizeof(v->key), "%s", key);
	if (s->st == ST_READY) {
		send_verifies(s);
		if (s->st < ST_CLOSING && flush(s) == 0)
			update_io(s);
	}
	return 0;
}

void xmpp_s2s_dialback_verdict(struct xmpp_s2s *s, const char *local, const char *remote,
                               int valid)
{
	struct pair *p = s->outbound ? NULL : find_pair(s, local, remote);
	if (!p || p->auth || s->st != ST_OPEN)
		return; /* gone, answered, or the stream is restarting or ending */
	db_answer(s, "result", local, remote, NULL, valid ? "valid" : "invalid");
	if (valid) {
		pair_ready(s, p, XMPP_S2S_AUTH_DIALBACK);
	} else if (++s->bad_keys >= XMPP_S2S_BAD_KEYS) {
		/* Each key costs a connection to the sender's authoritative server: not forever. */
		fail(s, XMPP_XML_COND_NOT_AUTHORIZED, "%u dialback keys refused on one stream",
		     s->bad_keys);
		return;
	} else {
		/* Forget it: the peer may try again on this stream. */
		*p = s->pairs[--s->npairs];
	}
	if (s->st < ST_CLOSING && flush(s) == 0)
		update_io(s);
}

int xmpp_s2s_is_outbound(const struct xmpp_s2s *s)
{
	return s->outbound;
}

int xmpp_s2s_is_ready(const struct xmpp_s2s *s)
{
	return s->st < ST_CLOSING && authenticated(s);
}

int xmpp_s2s_is_closing(const struct xmpp_s2s *s)
{
	return s->st >= ST_CLOSING;
}

int xmpp_s2s_is_tls(const struct xmpp_s2s *s)
{
	return s->tls;
}

enum xmpp_s2s_mode xmpp_s2s_mode(const struct xmpp_s2s *s)
{
	return s->mode;
}

const char *xmpp_s2s_local(const struct xmpp_s2s *s)
{
	return s->local[0] ? s->local : NULL;
}

const char *xmpp_s2s_remote(const struct xmpp_s2s *s)
{
	return s->remote[0] ? s->remote : NULL;
}

const char *xmpp_s2s_peer(const struct xmpp_s2s *s)
{
	return s->peer;
}

const char *xmpp_s2s_id(const struct xmpp_s2s *s)
{
	return s->id;
}

enum xmpp_s2s_auth xmpp_s2s_auth(const struct xmpp_s2s *s)
{
	return s->auth;
}

int xmpp_s2s_carries(const struct xmpp_s2s *s, const char *local, const char *remote)
{
	for (unsigned i = 0; i < s->npairs; i++)
		if (s->pairs[i].auth && strcmp(s->pairs[i].local, local) == 0 &&
		    strcmp(s->pairs[i].remote, remote) == 0)
			return 1;
	return 0;
}

void xmpp_s2s_set_user(struct xmpp_s2s *s, void *user)
{
	s->user = user;
}

void *xmpp_s2s_user(const struct xmpp_s2s *s)
{
	return s->user;
}
