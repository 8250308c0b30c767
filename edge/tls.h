/*
 * tls: the TLS implementation of the xprt interface, on OpenSSL.
 *
 * Both roles are mutual: a server context asks for and verifies the client
 * certificate (chain to ca_file, clientAuth EKU); a client context presents
 * the node's certificate and verifies that the server's chains to ca_file,
 * has the serverAuth EKU and names the expected host in subjectAltName (or
 * in CN when there is no DNS SAN). The node's own certificate must carry
 * both EKUs, since it serves as server and client alike.
 */
#ifndef EDGE_TLS_H
#define EDGE_TLS_H

#include <stddef.h>

#include "xprt.h"

struct tls_ctx;

enum tls_role { TLS_SERVER, TLS_CLIENT };

/* Returns a new context (free with tls_ctx_free()) or NULL with err set. */
struct tls_ctx *tls_ctx_new(enum tls_role role, const char *ca_file, const char *cert_file,
                            const char *key_file, char *err, size_t errlen);

/*
 * As tls_ctx_new(), for XMPP server-to-server streams, where a peer
 * without a good certificate may still authenticate by Server Dialback
 * (XEP-0220) over an encrypted stream: the handshake succeeds whatever the
 * peer's certificate (a server asks for one, requires none), and
 * tls_xprt_verify_error() says afterwards whether it verified. Peer names
 * are reported only for a verified certificate.
 */
struct tls_ctx *tls_ctx_new_optional(enum tls_role role, const char *ca_file,
                                     const char *cert_file, const char *key_file,
                                     char *err, size_t errlen);
void tls_ctx_free(struct tls_ctx *ctx);

/*
 * A TLS transport over a non-blocking socket (connected, or connecting for
 * the client role); it owns fd from now on, even when it returns NULL.
 * expected_name: for the client role, the name to verify and send as SNI;
 * NULL for the server role. The context must outlive the transport.
 */
struct xprt *tls_xprt_new(struct tls_ctx *ctx, int fd, const char *expected_name);

/*
 * After the handshake of a transport from tls_xprt_new(): NULL when the
 * peer's certificate chained to ca_file (and, for a client, named the
 * expected name), else why not ("no certificate", "hostname mismatch", ...).
 */
const char *tls_xprt_verify_error(struct xprt *x);

#endif
