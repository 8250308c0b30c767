#include "tls.h"

#include <errno.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

struct tls_ctx {
	SSL_CTX *ssl_ctx;
	enum tls_role role;
	int optional;             /* tls_ctx_new_optional(): unverified peers get through */
};

struct tls_xprt {
	struct xprt base;
	SSL *ssl;
	int tcp_connected;        /* the client's connect() has finished */
	int optional;             /* from tls_ctx_new_optional() */
	char **peer_names;        /* set once the handshake is done */
	unsigned npeer_names;
};

static void openssl_error(char *err, size_t errlen, const char *what)
{
	unsigned long e = ERR_get_error();
	char buf[160] = "unknown error";
	if (e)
		ERR_error_string_n(e, buf, sizeof(buf));
	ERR_clear_error();
	snprintf(err, errlen, "%s: %s", what, buf);
}

/* The optional mode's verification: the result is kept, the handshake goes on. */
static int accept_any_peer(int preverify_ok, X509_STORE_CTX *store)
{
	return 1;
}

static struct tls_ctx *ctx_new(enum tls_role role, int optional, const char *ca_file,
                               const char *cert_file, const char *key_file, char *err,
                               size_t errlen)
{
	struct tls_ctx *ctx = calloc(1, sizeof(*ctx));
	if (!ctx) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	ctx->role = role;
	ctx->optional = optional;
	ctx->ssl_ctx = SSL_CTX_new(role == TLS_SERVER ? TLS_server_method() : TLS_client_method());
	if (!ctx->ssl_ctx) {
		openssl_error(err, errlen, "SSL_CTX_new");
		goto fail;
	}
	SSL_CTX *s = ctx->ssl_ctx;
	SSL_CTX_set_min_proto_version(s, TLS1_2_VERSION);
	/* Idle connections give their 2 x 16 KB record buffers back. */
	SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER |
	                    SSL_MODE_ENABLE_PARTIAL_WRITE);
	SSL_CTX_set_options(s, SSL_OP_NO_RENEGOTIATION);
	if (SSL_CTX_load_verify_locations(s, ca_file, NULL) != 1) {
		openssl_error(err, errlen, ca_file);
		goto fail;
	}
	if (SSL_CTX_use_certificate_chain_file(s, cert_file) != 1) {
		openssl_error(err, errlen, cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(s, key_file, SSL_FILETYPE_PEM) != 1) {
		openssl_error(err, errlen, key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(s) != 1) {
		openssl_error(err, errlen, "the key does not match the certificate");
		goto fail;
	}
	X509 *own = SSL_CTX_get0_certificate(s);
	if (X509_check_purpose(own, X509_PURPOSE_SSL_SERVER, 0) != 1 ||
	    X509_check_purpose(own, X509_PURPOSE_SSL_CLIENT, 0) != 1) {
		snprintf(err, errlen, "%s: the certificate needs both serverAuth and clientAuth "
		         "extended key usage, to serve and to connect to partners", cert_file);
		goto fail;
	}
	if (optional) {
		SSL_CTX_set_verify(s, SSL_VERIFY_PEER, accept_any_peer);
		SSL_CTX_set_purpose(s, role == TLS_SERVER ? X509_PURPOSE_SSL_CLIENT
		                                          : X509_PURPOSE_SSL_SERVER);
		if (role == TLS_SERVER) {
			SSL_CTX_set_client_CA_list(s, SSL_load_client_CA_file(ca_file));
			SSL_CTX_set_session_id_context(s, (const unsigned char *)"edgepool-xmpp", 13);
		}
	} else if (role == TLS_SERVER) {
		SSL_CTX_set_verify(s, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
		SSL_CTX_set_purpose(s, X509_PURPOSE_SSL_CLIENT);
		SSL_CTX_set_client_CA_list(s, SSL_load_client_CA_file(ca_file));
		SSL_CTX_set_session_id_context(s, (const unsigned char *)"edgepool", 8);
	} else {
		SSL_CTX_set_verify(s, SSL_VERIFY_PEER, NULL);
		SSL_CTX_set_purpose(s, X509_PURPOSE_SSL_SERVER);
	}
	SSL_CTX_set_verify_depth(s, 8);
	return ctx;
fail:
	tls_ctx_free(ctx);
	return NULL;
}

struct tls_ctx *tls_ctx_new(enum tls_role role, const char *ca_file, const char *cert_file,
                            const char *key_file, char *err, size_t errlen)
{
	return ctx_new(role, 0, ca_file, cert_file, key_file, err, errlen);
}

struct tls_ctx *tls_ctx_new_optional(enum tls_role role, const char *ca_file,
                                     const char *cert_file, const char *key_file,
                                     char *err, size_t errlen)
{
	return ctx_new(role, 1, ca_file, cert_file, key_file, err, errlen);
}

void tls_ctx_free(struct tls_ctx *ctx)
{
	if (!ctx)
		return;
	SSL_CTX_free(ctx->ssl_ctx);
	free(ctx);
}

/* Why a handshake or an I/O call failed, in words an operator can act on. */
static int tls_failed(struct tls_xprt *t, int ssl_err, const char *what)
{
	struct xprt *x = &t->base;
	long vr = SSL_get_verify_result(t->ssl);
	if (vr != X509_V_OK && !t->optional) {
		snprintf(x->error, sizeof(x->error), "%s: certificate verification failed: %s",
		         what, X509_verify_cert_error_string(vr));
		ERR_clear_error();
	} else if (ssl_err == SSL_ERROR_SYSCALL && ERR_peek_error() == 0) {
		snprintf(x->error, sizeof(x->error), "%s: %s", what,
		         errno ? strerror(errno) : "connection closed by peer");
	} else {
		openssl_error(x->error, sizeof(x->error), what);
	}
	return XPRT_FAILED;
}

static int tls_status(struct tls_xprt *t, int rc, const char *what)
{
	int e = SSL_get_error(t->ssl, rc);
	switch (e) {
	case SSL_ERROR_WANT_READ:
		return XPRT_WANT_READ;
	case SSL_ERROR_WANT_WRITE:
		return XPRT_WANT_WRITE;
	case SSL_ERROR_ZERO_RETURN:
		return XPRT_CLOSED;
	default:
		return tls_failed(t, e, what);
	}
}

static int add_name(struct tls_xprt *t, const char *name, size_t len)
{
	/* A name with an embedded NUL is an attack on naive string checks. */
	if (memchr(name, '\0', len))
		return 0;
	char **grown = realloc(t->peer_names, (t->npeer_names + 1) * sizeof(*grown));
	if (!grown)
		return -1;
	t->peer_names = grown;
	char *copy = strndup(name, len);
	if (!copy)
		return -1;
	t->peer_names[t->npeer_names++] = copy;
	return 0;
}

/* SAN DNS names, or the CN when the certificate has no DNS SAN (RFC 6125). */
static int collect_peer_names(struct tls_xprt *t)
{
	X509 *cert = SSL_get0_peer_certificate(t->ssl);
	if (!cert)
		return 0;
	GENERAL_NAMES *sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	int rc = 0;
	for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && rc == 0; i++) {
		const GENERAL_NAME *gn = sk_GENERAL_NAME_value(sans, i);
		if (gn->type == GEN_DNS)
			rc = add_name(t, (const char *)ASN1_STRING_get0_data(gn->d.dNSName),
			              (size_t)ASN1_STRING_length(gn->d.dNSName));
	}
	GENERAL_NAMES_free(sans);
	if (rc == 0 && t->npeer_names == 0) {
		X509_NAME *subject = X509_get_subject_name(cert);
		int idx = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
		if (idx >= 0) {
			ASN1_STRING *cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, idx));
			rc = add_name(t, (const char *)ASN1_STRING_get0_data(cn),
			              (size_t)ASN1_STRING_length(cn));
		}
	}
	return rc;
}

static int tls_handshake(struct xprt *x)
{
	struct tls_xprt *t = (struct tls_xprt *)x;
	if (!t->tcp_connected) {
		int rc = xprt_connect_done(x->fd, x->error, sizeof(x->error));
		if (rc < 0)
			return rc;
		t->tcp_connected = 1;
	}
	ERR_clear_error();
	int rc = SSL_do_handshake(t->ssl);
	if (rc != 1) {
		rc = tls_status(t, rc, "TLS handshake");
		return rc == XPRT_CLOSED ? tls_failed(t, SSL_ERROR_SYSCALL, "TLS handshake") : rc;
	}
	if (tls_xprt_verify_error(x) == NULL && collect_peer_names(t) < 0) {
		snprintf(x->error, sizeof(x->error), "out of memory");
		return XPRT_FAILED;
	}
	return 0;
}

const char *tls_xprt_verify_error(struct xprt *x)
{
	struct tls_xprt *t = (struct tls_xprt *)x;
	if (!SSL_get0_peer_certificate(t->ssl))
		return "no certificate";
	long vr = SSL_get_verify_result(t->ssl);
	return vr == X509_V_OK ? NULL : X509_verify_cert_error_string(vr);
}

static ssize_t tls_recv(struct xprt *x, void *buf, size_t len)
{
	struct tls_xprt *t = (struct tls_xprt *)x;
	size_t got = 0;
	ERR_clear_error();
	int rc = SSL_read_ex(t->ssl, buf, len, &got);
	if (rc == 1)
		return (ssize_t)got;
	return tls_status(t, rc, "TLS read");
}

static ssize_t tls_send(struct xprt *x, const void *buf, size_t len)
{
	struct tls_xprt *t = (struct tls_xprt *)x;
	size_t sent = 0;
	ERR_clear_error();
	int rc = SSL_write_ex(t->ssl, buf, len, &sent);
	if (rc == 1)
		return (ssize_t)sent;
	return tls_status(t, rc, "TLS write");
}

static void tls_shutdown(struct xprt *x)
{
	struct tls_xprt *t = (struct tls_xprt *)x;
	ERR_clear_error();
	SSL_shutdown(t->ssl); /* sends close_notify; the answer is not awaited */
	ERR_clear_error();
	shutdown(x->fd, SHUT_WR);
}

static const char *const *tls_peer_names(struct xprt *x, unsigned *n)
{
	struct tls_xprt *t = (struct tls_xprt *)x;
	*n = t->npeer_names;
	return (const char *const *)t->peer_names;
}

static void tls_destroy(struct xprt *x)
{
	struct tls_xprt *t = (struct tls_xprt *)x;
	/* A quiet shutdown: the peer learns of the close from the TCP FIN, and a
	 * close_notify could block on a peer that stopped reading. */
	SSL_set_quiet_shutdown(t->ssl, 1);
	SSL_free(t->ssl);
	for (unsigned i = 0; i < t->npeer_names; i++)
		free(t->peer_names[i]);
	free(t->peer_names);
	close(x->fd);
	free(t);
}

static const struct xprt_ops tls_ops = {
	.name = "tls",
	.handshake = tls_handshake,
	.recv = tls_recv,
	.send = tls_send,
	.shutdown = tls_shutdown,
	.peer_names = tls_peer_names,
	.destroy = tls_destroy,
};

struct xprt *tls_xprt_new(struct tls_ctx *ctx, int fd, const char *expected_name)
{
	struct tls_xprt *t = calloc(1, sizeof(*t));
	if (!t) {
		close(fd);
		return NULL;
	}
	t->base.ops = &tls_ops;
	t->base.fd = fd;
	t->optional = ctx->optional;
	t->ssl = SSL_new(ctx->ssl_ctx);
	if (!t->ssl || SSL_set_fd(t->ssl, fd) != 1)
		goto fail;
	if (ctx->role == TLS_SERVER) {
		t->tcp_connected = 1;
		SSL_set_accept_state(t->ssl);
	} else {
		/* Checks SAN DNS names, or CN only when there is no DNS SAN. */
		SSL_set_hostflags(t->ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(t->ssl, expected_name) != 1 ||
		    SSL_set_tlsext_host_name(t->ssl, expected_name) != 1)
			goto fail;
		SSL_set_connect_state(t->ssl);
	}
	return &t->base;
fail:
	ERR_clear_error();
	SSL_free(t->ssl);
	close(fd);
	free(t);
	return NULL;
}
