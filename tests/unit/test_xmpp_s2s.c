/*
 * Unit tests for edge/xmpp_s2s.c: the XEP-0185 dialback key against an
 * HMAC computed here with OpenSSL; whole negotiations between streams of
 * this module on loopback in one libev loop (plain TCP and Server Dialback
 * in its three roles, a valid and an invalid key, a first target that
 * hangs up; STARTTLS with SASL EXTERNAL, and dialback vouched for by the
 * certificate, on certificates made here); and an inbound stream driven
 * from a raw socket (stream errors, a second domain pair, a restart that
 * forgets pending keys, when on_down may come).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "run_until.h"
#include "tls.h"
#include "xmpp_s2s.h"

#define HDR_FROM(from, to) \
	"<?xml version='1.0'?><stream:stream xmlns='jabber:server' " \
	"xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' " \
	"from='" from "' to='" to "' version='1.0'>"

/* ---- the key ---- */

/* XEP-0185 section 2, computed apart: hex(HMAC-SHA256(hex(SHA-256(secret)), text)). */
static void reference_key(const char *secret, const char *text, char out[65])
{
	unsigned char h[SHA256_DIGEST_LENGTH], mac[EVP_MAX_MD_SIZE];
	char hkey[65];
	unsigned mlen = 0;
	SHA256((const unsigned char *)secret, strlen(secret), h);
	for (int i = 0; i < 32; i++)
		sprintf(hkey + 2 * i, "%02x", h[i]);
	/* EVP_MAC, not the HMAC() one-shot that xmpp_s2s uses. */
	EVP_MAC *hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
	EVP_MAC_CTX *ctx = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0),
		OSSL_PARAM_construct_end(),
	};
	size_t outl = 0;
	assert_non_null(ctx);
	assert_int_equal(EVP_MAC_init(ctx, (const unsigned char *)hkey, 64, params), 1);
	assert_int_equal(EVP_MAC_update(ctx, (const unsigned char *)text, strlen(text)), 1);
	assert_int_equal(EVP_MAC_final(ctx, mac, &outl, sizeof(mac)), 1);
	EVP_MAC_CTX_free(ctx);
	EVP_MAC_free(hmac);
	mlen = (unsigned)outl;
	assert_int_equal(mlen, 32);
	for (unsigned i = 0; i < mlen; i++)
		sprintf(out + 2 * i, "%02x", mac[i]);
}

static void test_db_key(void **state)
{
	const char *secret = "s3cr3tf0rd14lb4ck";
	char key[XMPP_S2S_DB_KEY_LEN + 1], ref[65], again[XMPP_S2S_DB_KEY_LEN + 1];
	assert_int_equal(xmpp_s2s_db_key((const unsigned char *)secret, strlen(secret),
	                                 "example.net", "example.com", "D60000229F", key), 0);
	reference_key(secret, "example.net example.com D60000229F", ref);
	assert_string_equal(key, ref);
	/* The same inputs through Python's hmac and hashlib, by hand. */
	assert_string_equal(key, "008c689ff366b50c63d69a3e2d2c0e0e1f8404b0118eb688a0102c87cb691bdc");
	assert_int_equal(strlen(key), XMPP_S2S_DB_KEY_LEN);
	/* Each input counts: receiving and originating are not interchangeable. */
	assert_int_equal(xmpp_s2s_db_key((const unsigned char *)secret, strlen(secret),
	                                 "example.com", "example.net", "D60000229F", again), 0);
	assert_string_not_equal(key, again);
	assert_int_equal(xmpp_s2s_db_key((const unsigned char *)secret, strlen(secret),
	                                 "example.net", "example.com", "D60000229G", again), 0);
	assert_string_not_equal(key, again);
	assert_int_equal(xmpp_s2s_db_key((const unsigned char *)"other", 5, "example.net",
	                                 "example.com", "D60000229F", again), 0);
	assert_string_not_equal(key, again);
	/* A binary secret (the gateway's is 32 raw bytes). */
	unsigned char raw[32];
	for (int i = 0; i < 32; i++)
		raw[i] = (unsigned char)(i * 7);
	assert_int_equal(xmpp_s2s_db_key(raw, sizeof(raw), "b.test", "a.test", "x1", key), 0);
	unsigned char h[32], mac[32];
	char hkey[65], want[65];
	unsigned mlen = 0;
	SHA256(raw, sizeof(raw), h);
	for (int i = 0; i < 32; i++)
		sprintf(hkey + 2 * i, "%02x", h[i]);
	HMAC(EVP_sha256(), hkey, 64, (const unsigned char *)"b.test a.test x1", 16, mac, &mlen);
	for (int i = 0; i < 32; i++)
		sprintf(want + 2 * i, "%02x", mac[i]);
	assert_string_equal(key, want);
}

/* ---- a side: one env, its listener, what its callbacks saw ---- */

struct side;

struct verify_req {
	struct xmpp_s2s *in;          /* the inbound stream that got the key */
	struct xmpp_s2s *v;           /* the verify stream, when auto_verify opened one */
	char local[64], remote[64], id[128], key[1100];
	int answered, valid;
};

struct side {
	struct xmpp_s2s_env env;
	const char *domain;           /* ours */
	const char *partners[4];      /* domains we accept */
	struct xmpp_s2s_policy policy;
	int lfd;
	ev_io lio;
	struct sockaddr_in addr;
	int raw_accept;               /* the listener keeps accepted sockets raw (raw_fd) */
	int hang_up;                  /* the listener closes what it accepts at once */
	int raw_fd;
	struct side *authoritative;   /* where auto_verify sends keys */
	int auto_verify;
	struct verify_req reqs[8];
	unsigned nreqs;
	unsigned readies, downs, failures, stanzas, verifieds;
	char ready_pair[160], why[300], body[256];
	struct xmpp_s2s *last_down;
	int in_call;                  /* inside a call into the module: on_down must not come */
	int down_in_call;
	struct xmpp_s2s *inbound;     /* the last accepted stream */
};

static const struct xmpp_s2s_policy *cb_partner(void *arg, struct xmpp_s2s *s,
                                                const char *local, const char *remote,
                                                enum xmpp_xml_cond *cond)
{
	struct side *sd = arg;
	if (strcmp(local, sd->domain) != 0) {
		*cond = XMPP_XML_COND_HOST_UNKNOWN;
		return NULL;
	}
	for (unsigned i = 0; i < 4 && sd->partners[i]; i++)
		if (strcmp(remote, sd->partners[i]) == 0)
			return &sd->policy;
	*cond = XMPP_XML_COND_NOT_AUTHORIZED;
	return NULL;
}

static void cb_ready(void *arg, struct xmpp_s2s *s, const char *local, const char *remote)
{
	struct side *sd = arg;
	sd->readies++;
	snprintf(sd->ready_pair, sizeof(sd->ready_pair), "%s %s->%s",
	         xmpp_s2s_is_outbound(s) ? "out" : "in", local, remote);
}

static void cb_verify(void *arg, struct xmpp_s2s *s, const char *local, const char *remote,
                      const char *id, const char *key)
{
	struct side *sd = arg;
	assert_true(sd->nreqs < 8);
	struct verify_req *r = &sd->reqs[sd->nreqs++];
	memset(r, 0, sizeof(*r));
	r->in = s;
	snprintf(r->local, sizeof(r->local), "%s", local);
	snprintf(r->remote, sizeof(r->remote), "%s", remote);
	snprintf(r->id, sizeof(r->id), "%s", id);
	snprintf(r->key, sizeof(r->key), "%s", key);
	assert_string_equal(id, xmpp_s2s_id(s));
	if (!sd->auto_verify)
		return;
	/* The receiving role's owner: a verify stream to the sender's authoritative server. */
	struct xmpp_s2s_target t = { .addrlen = sizeof(struct sockaddr_in) };
	memcpy(&t.addr, &sd->authoritative->addr, sizeof(sd->authoritative->addr));
	char err[200];
	r->v = xmpp_s2s_connect(&sd->env, local, remote, &t, 1, &sd->policy, XMPP_S2S_VERIFY, err,
	                        sizeof(err));
	assert_non_null(r->v);
	assert_int_equal(xmpp_s2s_verify_key(r->v, id, key), 0);
}

static void cb_verified(void *arg, struct xmpp_s2s *s, const char *local, const char *remote,
                        const char *id, int valid)
{
	struct side *sd = arg;
	sd->verifieds++;
	for (unsigned i = 0; i < sd->nreqs; i++) {
		struct verify_req *r = &sd->reqs[i];
		if (r->v != s || strcmp(r->id, id) != 0 || r->answered)
			continue;
		r->answered = 1;
		r->valid = valid;
		r->v = NULL;
		xmpp_s2s_close(s, XMPP_XML_COND_NONE, "verified");
		if (r->in) {
			sd->in_call = 1;
			xmpp_s2s_dialback_verdict(r->in, r->local, r->remote, valid);
			sd->in_call = 0;
		}
	}
}

static void cb_stanza(void *arg, struct xmpp_s2s *s, struct xmpp_xml_elem *st)
{
	struct side *sd = arg;
	sd->stanzas++;
	const struct xmpp_xml_elem *b = xmpp_xml_child(st, NULL, "body", NULL);
	const char *text = b ? xmpp_xml_text(b, NULL) : NULL;
	snprintf(sd->body, sizeof(sd->body), "%s", text ? text : "");
}

static void cb_down(void *arg, struct xmpp_s2s *s, int failed, const char *why)
{
	struct side *sd = arg;
	if (sd->in_call)
		sd->down_in_call = 1;
	sd->downs++;
	sd->failures += failed != 0;
	sd->last_down = s;
	snprintf(sd->why, sizeof(sd->why), "%s", why);
	for (unsigned i = 0; i < sd->nreqs; i++) {
		if (sd->reqs[i].in == s)
			sd->reqs[i].in = NULL;
		if (sd->reqs[i].v == s)
			sd->reqs[i].v = NULL;
	}
	if (sd->inbound == s)
		sd->inbound = NULL;
}

static const struct xmpp_s2s_cbs cbs = {
	.partner = cb_partner,
	.on_ready = cb_ready,
	.verify = cb_verify,
	.on_verified = cb_verified,
	.on_stanza = cb_stanza,
	.on_down = cb_down,
};

static void listener_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct side *sd = w->data;
	struct sockaddr_in peer;
	socklen_t len = sizeof(peer);
	int fd = accept4(sd->lfd, (struct sockaddr *)&peer, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	if (sd->hang_up) {
		close(fd);
		return;
	}
	if (sd->raw_accept) {
		sd->raw_fd = fd;
		return;
	}
	sd->inbound = xmpp_s2s_accept(&sd->env, fd, "127.0.0.1:peer");
	assert_non_null(sd->inbound);
}

static void side_init(struct side *sd, struct ev_loop *loop, const char *domain,
                      const char *partner, const char *secret)
{
	memset(sd, 0, sizeof(*sd));
	sd->domain = domain;
	sd->partners[0] = partner;
	sd->policy = (struct xmpp_s2s_policy){ .tls = CFG_XMPP_NOT_SUPPORTED,
	                                       .sasl = CFG_XMPP_NOT_SUPPORTED, .dialback = 1,
	                                       .keepalive = 1 };
	sd->raw_fd = -1;
	sd->env.loop = loop;
	SHA256((const unsigned char *)secret, strlen(secret), sd->env.db_secret);
	sd->env.negotiate_timeout = 3;
	sd->env.max_queued_bytes = 1 << 20;
	sd->env.cbs = &cbs;
	sd->env.arg = sd;
	xmpp_s2s_env_init(&sd->env);
	sd->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(sd->lfd >= 0);
	sd->addr.sin_family = AF_INET;
	sd->addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	socklen_t len = sizeof(sd->addr);
	assert_int_equal(bind(sd->lfd, (struct sockaddr *)&sd->addr, len), 0);
	assert_int_equal(listen(sd->lfd, 16), 0);
	assert_int_equal(getsockname(sd->lfd, (struct sockaddr *)&sd->addr, &len), 0);
	ev_io_init(&sd->lio, listener_cb, sd->lfd, EV_READ);
	sd->lio.data = sd;
	ev_io_start(loop, &sd->lio);
}

static void side_free(struct side *sd)
{
	ev_io_stop(sd->env.loop, &sd->lio);
	close(sd->lfd);
	if (sd->raw_fd >= 0)
		close(sd->raw_fd);
	xmpp_s2s_shutdown(&sd->env);
	tls_ctx_free(sd->env.tls_server);
	tls_ctx_free(sd->env.tls_client);
}

static struct xmpp_s2s_target target_of(const struct side *sd)
{
	struct xmpp_s2s_target t = { .addrlen = sizeof(struct sockaddr_in) };
	memcpy(&t.addr, &sd->addr, sizeof(sd->addr));
	return t;
}

static struct xmpp_xml_elem *chat(const char *from, const char *to, const char *body)
{
	struct xmpp_xml_elem *m = xmpp_xml_new("message", XMPP_XML_NS_SERVER);
	assert_non_null(m);
	assert_int_equal(xmpp_xml_set_attr(m, "from", NULL, from), 0);
	assert_int_equal(xmpp_xml_set_attr(m, "to", NULL, to), 0);
	assert_int_equal(xmpp_xml_set_attr(m, "type", NULL, "chat"), 0);
	struct xmpp_xml_elem *b = xmpp_xml_add(m, "body", NULL);
	assert_non_null(b);
	assert_int_equal(xmpp_xml_add_text(b, body, strlen(body)), 0);
	return m;
}

struct pair_wait {
	struct side *sd;
	unsigned n;
};

static int readies_reach(void *arg)
{
	struct pair_wait *w = arg;
	return w->sd->readies >= w->n;
}

static int downs_reach(void *arg)
{
	struct pair_wait *w = arg;
	return w->sd->downs >= w->n;
}

static int stanzas_reach(void *arg)
{
	struct pair_wait *w = arg;
	return w->sd->stanzas >= w->n;
}

/* ---- certificates, made here: a CA, and one certificate per domain ---- */

static char pki_dir[64];
static EVP_PKEY *ca_key;
static X509 *ca_cert;

static void add_ext(X509 *x, X509V3_CTX *ctx, int nid, const char *value)
{
	X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
	assert_non_null(e);
	assert_int_equal(X509_add_ext(x, e, -1), 1);
	X509_EXTENSION_free(e);
}

/* A certificate for cn (SAN DNS:cn, both EKUs) signed by the CA; NULL issuer: the CA itself. */
static X509 *make_cert(EVP_PKEY *key, const char *cn, int is_ca)
{
	static long serial = 1;
	X509 *x = X509_new();
	assert_non_null(x);
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial++);
	X509_gmtime_adj(X509_getm_notBefore(x), -3600);
	X509_gmtime_adj(X509_getm_notAfter(x), 86400);
	X509_set_pubkey(x, key);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, is_ca ? name : X509_get_subject_name(ca_cert));
	X509V3_CTX ctx;
	X509V3_set_ctx_nodb(&ctx);
	X509V3_set_ctx(&ctx, is_ca ? x : ca_cert, x, NULL, NULL, 0);
	if (is_ca) {
		add_ext(x, &ctx, NID_basic_constraints, "critical,CA:TRUE");
		add_ext(x, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign");
	} else {
		char san[300];
		snprintf(san, sizeof(san), "DNS:%s", cn);
		add_ext(x, &ctx, NID_basic_constraints, "critical,CA:FALSE");
		add_ext(x, &ctx, NID_ext_key_usage, "serverAuth,clientAuth");
		add_ext(x, &ctx, NID_subject_alt_name, san);
	}
	assert_true(X509_sign(x, is_ca ? key : ca_key, EVP_sha256()) > 0);
	return x;
}

static void write_pem(const char *path, X509 *x, EVP_PKEY *key)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	if (x)
		assert_int_equal(PEM_write_X509(f, x), 1);
	if (key)
		assert_int_equal(PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
}

static void pki_paths(const char *name, char *cert, char *key, size_t n)
{
	snprintf(cert, n, "%s/%s.pem", pki_dir, name);
	snprintf(key, n, "%s/%s.key", pki_dir, name);
}

/* The CA and certificates for a.test and b.test, once per run, in a private directory. */
static void pki_make(void)
{
	if (pki_dir[0])
		return;
	snprintf(pki_dir, sizeof(pki_dir), "/tmp/test_xmpp_s2s.XXXXXX");
	assert_non_null(mkdtemp(pki_dir));
	ca_key = EVP_EC_gen("P-256");
	assert_non_null(ca_key);
	ca_cert = make_cert(ca_key, "xmpp_s2s test CA", 1);
	char path[128], kpath[128];
	snprintf(path, sizeof(path), "%s/ca.pem", pki_dir);
	write_pem(path, ca_cert, NULL);
	const char *names[] = { "a.test", "b.test" };
	for (unsigned i = 0; i < 2; i++) {
		EVP_PKEY *k = EVP_EC_gen("P-256");
		assert_non_null(k);
		X509 *x = make_cert(k, names[i], 0);
		pki_paths(names[i], path, kpath, sizeof(path));
		write_pem(path, x, NULL);
		write_pem(kpath, NULL, k);
		X509_free(x);
		EVP_PKEY_free(k);
	}
}

static void pki_remove(void)
{
	if (!pki_dir[0])
		return;
	const char *files[] = { "ca.pem", "a.test.pem", "a.test.key", "b.test.pem", "b.test.key" };
	char path[128];
	for (unsigned i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "%s/%s", pki_dir, files[i]);
		unlink(path);
	}
	rmdir(pki_dir);
	X509_free(ca_cert);
	EVP_PKEY_free(ca_key);
}

/* The side's TLS contexts, with its domain's certificate. */
static void side_tls(struct side *sd)
{
	char ca[128], cert[128], key[128], err[256];
	pki_make();
	snprintf(ca, sizeof(ca), "%s/ca.pem", pki_dir);
	pki_paths(sd->domain, cert, key, sizeof(cert));
	sd->env.tls_server = tls_ctx_new_optional(TLS_SERVER, ca, cert, key, err, sizeof(err));
	if (!sd->env.tls_server)
		fail_msg("tls server: %s", err);
	sd->env.tls_client = tls_ctx_new_optional(TLS_CLIENT, ca, cert, key, err, sizeof(err));
	if (!sd->env.tls_client)
		fail_msg("tls client: %s", err);
}

/* ---- whole negotiations between two envs ---- */

/*
 * a.test sends to b.test over plain TCP with dialback: b.test asks a.test's
 * authoritative server (its listener, the same env as the initiating
 * stream) on a verify stream, and tells the initiating stream valid.
 */
static void test_dialback_three_roles(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side a, b;
	side_init(&a, loop, "a.test", "b.test", "secret of a.test");
	side_init(&b, loop, "b.test", "a.test", "secret of b.test");
	b.auto_verify = 1;
	b.authoritative = &a;
	struct xmpp_s2s_target t = target_of(&b);
	char err[200];
	struct xmpp_s2s *out = xmpp_s2s_connect(&a.env, "a.test", "b.test", &t, 1, &a.policy,
	                                        XMPP_S2S_STANZAS, err, sizeof(err));
	assert_non_null(out);
	assert_false(xmpp_s2s_is_ready(out));
	struct pair_wait wa = { &a, 1 };
	assert_true(run_until(loop, readies_reach, &wa, 5));
	assert_string_equal(a.ready_pair, "out a.test->b.test");
	assert_true(xmpp_s2s_is_ready(out));
	assert_false(xmpp_s2s_is_tls(out));
	assert_int_equal(xmpp_s2s_auth(out), XMPP_S2S_AUTH_DIALBACK);
	/* b.test checked the key once, with a.test, which said valid. */
	assert_int_equal(b.nreqs, 1);
	assert_true(b.reqs[0].answered);
	assert_true(b.reqs[0].valid);
	assert_string_equal(b.reqs[0].local, "b.test");
	assert_string_equal(b.reqs[0].remote, "a.test");
	assert_int_equal(b.readies, 1);
	assert_string_equal(b.ready_pair, "in b.test->a.test");
	/* b.test's inbound stream carries a.test -> b.test now. */
	struct xmpp_s2s *in = b.reqs[0].in;
	assert_non_null(in);
	assert_true(xmpp_s2s_carries(in, "b.test", "a.test"));
	assert_int_equal(xmpp_s2s_auth(in), XMPP_S2S_AUTH_DIALBACK);
	assert_string_equal(xmpp_s2s_remote(in), "a.test");
	/* A stanza goes through. */
	struct xmpp_xml_elem *m = chat("alice@a.test/x", "bob@b.test", "over dialback");
	assert_int_equal(xmpp_s2s_send(out, m), 0);
	xmpp_xml_free(m);
	struct pair_wait wb = { &b, 1 };
	assert_true(run_until(loop, stanzas_reach, &wb, 5));
	assert_string_equal(b.body, "over dialback");
	/* The verify stream and a.test's stream that answered it ended, not as failures. */
	struct pair_wait da = { &a, 1 }, db = { &b, 1 };
	assert_true(run_until(loop, downs_reach, &da, 5));
	assert_true(run_until(loop, downs_reach, &db, 5));
	assert_int_equal(a.failures, 0);
	assert_int_equal(b.failures, 0);
	/* Both ends of the stanza stream close cleanly. */
	xmpp_s2s_close(out, XMPP_XML_COND_NONE, "done");
	da.n = a.downs + 1;
	db.n = b.downs + 1;
	assert_true(run_until(loop, downs_reach, &da, 5));
	assert_true(run_until(loop, downs_reach, &db, 5));
	assert_int_equal(a.failures, 0);
	side_free(&a);
	side_free(&b);
	ev_loop_destroy(loop);
}

/* The authoritative server says invalid: the initiating stream fails. */
static void test_dialback_invalid_key(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side a, b, impostor;
	side_init(&a, loop, "a.test", "b.test", "secret of a.test");
	side_init(&b, loop, "b.test", "a.test", "secret of b.test");
	/* "a.test"'s authoritative server, as b.test finds it, has another secret. */
	side_init(&impostor, loop, "a.test", "b.test", "not the secret of a.test");
	b.auto_verify = 1;
	b.authoritative = &impostor;
	struct xmpp_s2s_target t = target_of(&b);
	char err[200];
	struct xmpp_s2s *out = xmpp_s2s_connect(&a.env, "a.test", "b.test", &t, 1, &a.policy,
	                                        XMPP_S2S_STANZAS, err, sizeof(err));
	assert_non_null(out);
	struct pair_wait wa = { &a, 1 };
	assert_true(run_until(loop, downs_reach, &wa, 5));
	assert_ptr_equal(a.last_down, out);
	assert_int_equal(a.failures, 1);
	assert_int_equal(a.readies, 0);
	assert_non_null(strstr(a.why, "invalid"));
	assert_int_equal(b.nreqs, 1);
	assert_true(b.reqs[0].answered);
	assert_false(b.reqs[0].valid);
	assert_int_equal(b.readies, 0);
	side_free(&a);
	side_free(&b);
	side_free(&impostor);
	ev_loop_destroy(loop);
}

/* A first target that accepts and hangs up before its header gives way to the next. */
static void test_next_target_after_hang_up(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side a, b, dud;
	side_init(&a, loop, "a.test", "b.test", "secret of a.test");
	side_init(&b, loop, "b.test", "a.test", "secret of b.test");
	side_init(&dud, loop, "b.test", "a.test", "unused");
	dud.hang_up = 1;
	b.auto_verify = 1;
	b.authoritative = &a;
	struct xmpp_s2s_target t[2] = { target_of(&dud), target_of(&b) };
	char err[200];
	struct xmpp_s2s *out = xmpp_s2s_connect(&a.env, "a.test", "b.test", t, 2, &a.policy,
	                                        XMPP_S2S_STANZAS, err, sizeof(err));
	assert_non_null(out);
	struct pair_wait wa = { &a, 1 };
	assert_true(run_until(loop, readies_reach, &wa, 5));
	assert_true(xmpp_s2s_is_ready(out));
	side_free(&a);
	side_free(&b);
	side_free(&dud);
	ev_loop_destroy(loop);
}

/*
 * Both sides with certificates of one CA, TLS and SASL EXTERNAL required:
 * STARTTLS, EXTERNAL, a stream restart each, then a stanza.
 */
static void test_tls_sasl_external(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side a, b;
	side_init(&a, loop, "a.test", "b.test", "secret of a.test");
	side_init(&b, loop, "b.test", "a.test", "secret of b.test");
	side_tls(&a);
	side_tls(&b);
	a.policy.tls = b.policy.tls = CFG_XMPP_REQUIRED;
	a.policy.sasl = b.policy.sasl = CFG_XMPP_REQUIRED;
	a.policy.dialback = b.policy.dialback = 0;
	struct xmpp_s2s_target t = target_of(&b);
	char err[200];
	struct xmpp_s2s *out = xmpp_s2s_connect(&a.env, "a.test", "b.test", &t, 1, &a.policy,
	                                        XMPP_S2S_STANZAS, err, sizeof(err));
	assert_non_null(out);
	struct pair_wait wa = { &a, 1 }, wb = { &b, 1 };
	assert_true(run_until(loop, readies_reach, &wa, 5));
	assert_true(run_until(loop, readies_reach, &wb, 5));
	assert_true(xmpp_s2s_is_tls(out));
	assert_int_equal(xmpp_s2s_auth(out), XMPP_S2S_AUTH_SASL);
	assert_non_null(b.inbound);
	assert_true(xmpp_s2s_is_tls(b.inbound));
	assert_int_equal(xmpp_s2s_auth(b.inbound), XMPP_S2S_AUTH_SASL);
	assert_true(xmpp_s2s_carries(b.inbound, "b.test", "a.test"));
	assert_int_equal(b.nreqs, 0);
	struct xmpp_xml_elem *m = chat("alice@a.test/x", "bob@b.test", "over TLS");
	assert_int_equal(xmpp_s2s_send(out, m), 0);
	xmpp_xml_free(m);
	assert_true(run_until(loop, stanzas_reach, &wb, 5));
	assert_string_equal(b.body, "over TLS");
	side_free(&a);
	side_free(&b);
	ev_loop_destroy(loop);
}

/*
 * TLS required, SASL NotSupported: dialback, and b.test takes a.test's key
 * on the strength of a.test's certificate (XEP-0344), asking nobody.
 */
static void test_tls_dialback_certificate(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side a, b;
	side_init(&a, loop, "a.test", "b.test", "secret of a.test");
	side_init(&b, loop, "b.test", "a.test", "secret of b.test");
	side_tls(&a);
	side_tls(&b);
	a.policy.tls = b.policy.tls = CFG_XMPP_REQUIRED;
	struct xmpp_s2s_target t = target_of(&b);
	char err[200];
	struct xmpp_s2s *out = xmpp_s2s_connect(&a.env, "a.test", "b.test", &t, 1, &a.policy,
	                                        XMPP_S2S_STANZAS, err, sizeof(err));
	assert_non_null(out);
	struct pair_wait wa = { &a, 1 };
	assert_true(run_until(loop, readies_reach, &wa, 5));
	assert_true(xmpp_s2s_is_tls(out));
	assert_int_equal(xmpp_s2s_auth(out), XMPP_S2S_AUTH_DIALBACK);
	assert_int_equal(xmpp_s2s_auth(b.inbound), XMPP_S2S_AUTH_DIALBACK_CERT);
	assert_int_equal(b.nreqs, 0);
	side_free(&a);
	side_free(&b);
	ev_loop_destroy(loop);
}

/* ---- an inbound stream driven from a raw socket ---- */

struct raw {
	int fd;
	char buf[16384];
	size_t len;
	int eof;
	const char *want;
};

static void raw_send(struct raw *r, const char *text)
{
	size_t n = strlen(text), off = 0;
	while (off < n) {
		ssize_t k = send(r->fd, text + off, n - off, MSG_NOSIGNAL);
		assert_true(k > 0);
		off += (size_t)k;
	}
}

static void raw_pump(struct raw *r)
{
	for (;;) {
		if (r->len + 1 >= sizeof(r->buf))
			return;
		ssize_t n = recv(r->fd, r->buf + r->len, sizeof(r->buf) - 1 - r->len, MSG_DONTWAIT);
		if (n > 0) {
			r->len += (size_t)n;
			r->buf[r->len] = '\0';
			continue;
		}
		if (n == 0)
			r->eof = 1;
		return;
	}
}

static int raw_has(void *arg)
{
	struct raw *r = arg;
	raw_pump(r);
	return strstr(r->buf, r->want) != NULL;
}

static int raw_eof(void *arg)
{
	struct raw *r = arg;
	raw_pump(r);
	return r->eof;
}

/* b.test's env, and a connected raw peer on an inbound stream of it. */
static void raw_setup(struct ev_loop *loop, struct side *b, struct raw *r, double deadline)
{
	side_init(b, loop, "b.test", "a.test", "secret of b.test");
	b->partners[1] = "c.test";
	b->env.negotiate_timeout = deadline;
	memset(r, 0, sizeof(*r));
	int sv[2];
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv), 0);
	b->inbound = xmpp_s2s_accept(&b->env, sv[0], "unix:peer");
	assert_non_null(b->inbound);
	r->fd = sv[1];
}

/* What the peer gets for `input`: an error condition, then the close. */
static void expect_stream_error(const char *input, const char *condition, const char *policy_tls)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side b;
	struct raw r;
	raw_setup(loop, &b, &r, 3);
	if (policy_tls)
		b.policy.tls = CFG_XMPP_OPTIONAL;
	raw_send(&r, input);
	char want[160];
	snprintf(want, sizeof(want), "<%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>", condition);
	r.want = want;
	if (!run_until(loop, raw_has, &r, 5))
		fail_msg("no <%s/> in: %s", condition, r.buf);
	assert_true(run_until(loop, raw_eof, &r, 5));
	/* The error comes inside a stream, then the close; nothing after it. */
	assert_non_null(strstr(r.buf, "<stream:stream"));
	const char *err = strstr(r.buf, "<stream:error>");
	assert_non_null(err);
	assert_non_null(strstr(err, "</stream:error></stream:stream>"));
	struct pair_wait w = { &b, 1 };
	assert_true(run_until(loop, downs_reach, &w, 5));
	assert_int_equal(b.failures, 1);
	assert_int_equal(b.stanzas, 0);
	assert_int_equal(b.readies, 0);
	close(r.fd);
	side_free(&b);
	ev_loop_destroy(loop);
}

static void test_stream_errors(void **state)
{
	expect_stream_error("<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
	                    "xmlns:stream='http://etherx.jabber.org/streams' from='a.test' "
	                    "to='b.test' version='1.0'><message><<</message>",
	                    "not-well-formed", NULL);
	expect_stream_error(HDR_FROM("a.test", "elsewhere.test"), "host-unknown", NULL);
	expect_stream_error(HDR_FROM("stranger.test", "b.test"), "not-authorized", NULL);
	expect_stream_error("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
	                    "xmlns:stream='http://etherx.jabber.org/streams' from='a.test' "
	                    "to='b.test' version='1.0'>", "invalid-namespace", NULL);
	expect_stream_error(HDR_FROM("a.test", "b.test")
	                    "<message from='alice@a.test' to='bob@b.test'><body>hi</body></message>",
	                    "not-authorized", NULL);
	expect_stream_error(HDR_FROM("a.test", "b.test") "<!-- a comment -->", "restricted-xml",
	                    NULL);
	expect_stream_error("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'aaaa'>]>"
	                    HDR_FROM("a.test", "b.test"), "restricted-xml", NULL);
	/* Optional TLS: a <db:result/> may come on plain TCP, but without from it is refused. */
	expect_stream_error(HDR_FROM("a.test", "b.test") "<db:result to='b.test'>k</db:result>",
	                    "improper-addressing", "optional");
	expect_stream_error(HDR_FROM("a.test", "b.test") "<foo xmlns='urn:example:bar'/>",
	                    "unsupported-stanza-type", NULL);
}

/* STARTTLS on a stream whose policy has no TLS: <failure/>, then the close. */
static void test_starttls_not_supported(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side b;
	struct raw r;
	raw_setup(loop, &b, &r, 3);
	raw_send(&r, HDR_FROM("a.test", "b.test"));
	r.want = "</stream:features>";
	assert_true(run_until(loop, raw_has, &r, 5));
	assert_null(strstr(r.buf, "starttls"));
	assert_non_null(strstr(r.buf, "urn:xmpp:features:dialback"));
	raw_send(&r, "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
	assert_true(run_until(loop, raw_eof, &r, 5));
	assert_non_null(strstr(r.buf, "<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"
	                              "</stream:stream>"));
	close(r.fd);
	side_free(&b);
	ev_loop_destroy(loop);
}

/* No header within the negotiation deadline: connection-timeout, in a stream of our own. */
static void test_header_deadline(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side b;
	struct raw r;
	raw_setup(loop, &b, &r, 0.2);
	assert_true(run_until(loop, raw_eof, &r, 5));
	assert_non_null(strstr(r.buf, "<stream:stream"));
	assert_non_null(strstr(r.buf, "<connection-timeout xmlns='urn:ietf:params:xml:ns:"
	                              "xmpp-streams'/></stream:error></stream:stream>"));
	struct pair_wait w = { &b, 1 };
	assert_true(run_until(loop, downs_reach, &w, 5));
	assert_non_null(strstr(b.why, "not authenticated"));
	close(r.fd);
	side_free(&b);
	ev_loop_destroy(loop);
}

static int never(void *arg)
{
	return 0;
}

/* Runs the loop for this long: for what must still hold after a deadline. */
static void run_for(struct ev_loop *loop, double seconds)
{
	run_until(loop, never, NULL, seconds);
}

struct reqs_wait {
	struct side *sd;
	unsigned n;
};

static int reqs_reach(void *arg)
{
	struct reqs_wait *w = arg;
	return w->sd->nreqs >= w->n;
}

/*
 * Two domain pairs on one stream: a.test's key waits for its verdict,
 * c.test's is confirmed first. The stream is authenticated (for c.test),
 * it outlives the negotiation deadline, c.test's stanzas pass, a.test's
 * are refused as invalid-from; a repeated key is not checked twice.
 */
static void test_second_pair_first(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side b;
	struct raw r;
	raw_setup(loop, &b, &r, 0.3);
	raw_send(&r, HDR_FROM("a.test", "b.test")
	         "<db:result from='a.test' to='b.test'>key-of-a</db:result>"
	         "<db:result from='a.test' to='b.test'>key-of-a</db:result>"
	         "<db:result from='c.test' to='b.test'>key-of-c</db:result>");
	struct reqs_wait rw = { &b, 2 };
	assert_true(run_until(loop, reqs_reach, &rw, 5));
	assert_int_equal(b.nreqs, 2);
	assert_string_equal(b.reqs[0].remote, "a.test");
	assert_string_equal(b.reqs[0].key, "key-of-a");
	assert_string_equal(b.reqs[1].remote, "c.test");
	assert_false(xmpp_s2s_is_ready(b.inbound));
	xmpp_s2s_dialback_verdict(b.inbound, "b.test", "c.test", 1);
	assert_true(xmpp_s2s_is_ready(b.inbound));
	assert_true(xmpp_s2s_carries(b.inbound, "b.test", "c.test"));
	assert_false(xmpp_s2s_carries(b.inbound, "b.test", "a.test"));
	r.want = "type='valid'";
	assert_true(run_until(loop, raw_has, &r, 5));
	assert_non_null(strstr(r.buf, "from='b.test' to='c.test' type='valid'"));
	/* Past the deadline of 0.3 s, the stream is still up. */
	run_for(loop, 0.6);
	assert_int_equal(b.downs, 0);
	raw_send(&r, "<message from='carol@c.test' to='bob@b.test'><body>from c</body></message>");
	struct pair_wait w = { &b, 1 };
	assert_true(run_until(loop, stanzas_reach, &w, 5));
	assert_string_equal(b.body, "from c");
	raw_send(&r, "<message from='alice@a.test' to='bob@b.test'><body>from a</body></message>");
	r.want = "<invalid-from xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>";
	assert_true(run_until(loop, raw_has, &r, 5));
	assert_true(run_until(loop, downs_reach, &w, 5));
	assert_int_equal(b.stanzas, 1);
	close(r.fd);
	side_free(&b);
	ev_loop_destroy(loop);
}

/*
 * A verdict for a peer that reset its connection meanwhile: the write
 * fails inside xmpp_s2s_dialback_verdict(), yet on_down comes from the
 * loop afterwards, not from inside the call.
 */
static void test_down_not_inside_verdict(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side b;
	struct raw r;
	raw_setup(loop, &b, &r, 3);
	raw_send(&r, HDR_FROM("a.test", "b.test")
	         "<db:result from='a.test' to='b.test'>key-of-a</db:result>");
	r.want = "</stream:features>";
	assert_true(run_until(loop, raw_has, &r, 5));
	struct reqs_wait rw = { &b, 1 };
	assert_true(run_until(loop, reqs_reach, &rw, 5));
	close(r.fd); /* the verdict's write gets EPIPE */
	b.in_call = 1;
	xmpp_s2s_dialback_verdict(b.inbound, "b.test", "a.test", 1);
	b.in_call = 0;
	assert_int_equal(b.downs, 0);
	assert_false(xmpp_s2s_is_ready(b.reqs[0].in));
	struct pair_wait w = { &b, 1 };
	assert_true(run_until(loop, downs_reach, &w, 5));
	assert_false(b.down_in_call);
	side_free(&b);
	ev_loop_destroy(loop);
}

static int raw_accepted(void *arg)
{
	return ((struct side *)arg)->raw_fd >= 0;
}

/*
 * The same for a send on an outbound stream whose peer reset it: the
 * stanza is queued (0), the write that follows fails, and on_down comes
 * afterwards from the loop, never inside the send. The peer is played raw: header, features,
 * and a valid answer to our key.
 */
static void test_down_not_inside_send(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side a, peer;
	side_init(&a, loop, "a.test", "b.test", "secret of a.test");
	side_init(&peer, loop, "b.test", "a.test", "unused");
	peer.raw_accept = 1;
	struct xmpp_s2s_target t = target_of(&peer);
	char err[200];
	struct xmpp_s2s *out = xmpp_s2s_connect(&a.env, "a.test", "b.test", &t, 1, &a.policy,
	                                        XMPP_S2S_STANZAS, err, sizeof(err));
	assert_non_null(out);
	struct raw r = { .fd = -1 };
	r.want = "<stream:stream";
	assert_true(run_until(loop, raw_accepted, &peer, 5));
	r.fd = peer.raw_fd;
	assert_true(run_until(loop, raw_has, &r, 5));
	assert_non_null(strstr(r.buf, "from='a.test'"));
	assert_non_null(strstr(r.buf, "to='b.test'"));
	raw_send(&r, "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
	         "xmlns:stream='http://etherx.jabber.org/streams' "
	         "xmlns:db='jabber:server:dialback' from='b.test' to='a.test' id='S1' version='1.0'>"
	         "<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>");
	r.want = "</db:result>";
	assert_true(run_until(loop, raw_has, &r, 5));
	/* Our key, as the authoritative server would make it for this stream id. */
	char key[XMPP_S2S_DB_KEY_LEN + 1];
	assert_int_equal(xmpp_s2s_db_key(a.env.db_secret, sizeof(a.env.db_secret), "b.test",
	                                 "a.test", "S1", key), 0);
	assert_non_null(strstr(r.buf, key));
	raw_send(&r, "<db:result from='b.test' to='a.test' type='valid'/>");
	struct pair_wait w = { &a, 1 };
	assert_true(run_until(loop, readies_reach, &w, 5));
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };
	setsockopt(r.fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(r.fd); /* RST */
	peer.raw_fd = -1;
	struct xmpp_xml_elem *m = chat("alice@a.test", "bob@b.test", "into the void");
	a.in_call = 1;
	int rc = xmpp_s2s_send(out, m);
	a.in_call = 0;
	xmpp_xml_free(m);
	/* Queued for the next write: the reset shows there, and on_down follows from the loop. */
	assert_int_equal(rc, 0);
	assert_true(xmpp_s2s_unsent(out) > 0);
	assert_int_equal(a.downs, 0);
	assert_true(run_until(loop, downs_reach, &w, 5));
	assert_false(a.down_in_call);
	assert_int_equal(a.failures, 1);
	side_free(&a);
	side_free(&peer);
	ev_loop_destroy(loop);
}

/*
 * STARTTLS while a key is being checked: the restart forgets it, and its
 * verdict, coming during the TLS handshake, writes nothing and makes no
 * pair ready.
 */
static void test_restart_forgets_pending_key(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side b;
	struct raw r;
	raw_setup(loop, &b, &r, 3);
	side_tls(&b);
	b.policy.tls = CFG_XMPP_OPTIONAL;
	raw_send(&r, HDR_FROM("a.test", "b.test")
	         "<db:result from='a.test' to='b.test'>key-of-a</db:result>"
	         "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
	r.want = "<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>";
	assert_true(run_until(loop, raw_has, &r, 5));
	assert_int_equal(b.nreqs, 1);
	size_t seen = r.len;
	xmpp_s2s_dialback_verdict(b.inbound, "b.test", "a.test", 1);
	run_for(loop, 0.1);
	raw_pump(&r);
	assert_int_equal(r.len, seen); /* the TLS server waits for the ClientHello: silence */
	assert_int_equal(b.readies, 0);
	assert_false(xmpp_s2s_is_ready(b.inbound));
	assert_false(xmpp_s2s_carries(b.inbound, "b.test", "a.test"));
	close(r.fd);
	side_free(&b);
	ev_loop_destroy(loop);
}

/* The authoritative role on a raw inbound stream: our key valid, another invalid. */
static void test_authoritative(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct side b;
	struct raw r;
	raw_setup(loop, &b, &r, 0.5);
	char key[XMPP_S2S_DB_KEY_LEN + 1], text[600];
	/* b.test's key for a stream b.test -> a.test whose id a.test gave as I9. */
	assert_int_equal(xmpp_s2s_db_key(b.env.db_secret, sizeof(b.env.db_secret), "a.test",
	                                 "b.test", "I9", key), 0);
	snprintf(text, sizeof(text), HDR_FROM("a.test", "b.test")
	         "<db:verify from='a.test' to='b.test' id='I9'>%s</db:verify>"
	         "<db:verify from='a.test' to='b.test' id='I10'>%s</db:verify>", key, key);
	raw_send(&r, text);
	r.want = "id='I10' type=";
	assert_true(run_until(loop, raw_has, &r, 5));
	assert_non_null(strstr(r.buf, "from='b.test' to='a.test' id='I9' type='valid'"));
	assert_non_null(strstr(r.buf, "from='b.test' to='a.test' id='I10' type='invalid'"));
	/* A stream that only served verifications ends at the deadline, as no failure. */
	struct pair_wait w = { &b, 1 };
	assert_true(run_until(loop, downs_reach, &w, 5));
	assert_int_equal(b.failures, 0);
	close(r.fd);
	side_free(&b);
	ev_loop_destroy(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_db_key),
		cmocka_unit_test(test_dialback_three_roles),
		cmocka_unit_test(test_dialback_invalid_key),
		cmocka_unit_test(test_next_target_after_hang_up),
		cmocka_unit_test(test_stream_errors),
		cmocka_unit_test(test_starttls_not_supported),
		cmocka_unit_test(test_header_deadline),
		cmocka_unit_test(test_second_pair_first),
		cmocka_unit_test(test_down_not_inside_verdict),
		cmocka_unit_test(test_down_not_inside_send),
		cmocka_unit_test(test_authoritative),
		cmocka_unit_test(test_tls_sasl_external),
		cmocka_unit_test(test_tls_dialback_certificate),
		cmocka_unit_test(test_restart_forgets_pending_key),
	};
	int failed = cmocka_run_group_tests(tests, NULL, NULL);
	pki_remove();
	return failed;
}
