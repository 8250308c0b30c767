/*
 * status: a tiny HTTP/1.0 endpoint that serves one JSON document, so that
 * operators, monitoring and tests read a daemon's state the same way:
 *
 *   curl http://127.0.0.1:9100/status
 *
 * Only "GET /status" is served (404 otherwise); each connection carries one
 * request, read within STATUS_READ_TIMEOUT seconds and at most 4 KB.
 */
#ifndef COMMON_STATUS_H
#define COMMON_STATUS_H

#include <ev.h>
#include <stddef.h>
#include <sys/socket.h>

struct status_server;

/*
 * Writes the JSON document into buf (at most len bytes, NUL-terminated)
 * and returns its length; called once per request.
 */
typedef size_t (*status_render_fn)(void *ctx, char *buf, size_t len);

/* Listens on addr. Returns NULL with err set on failure. */
struct status_server *status_listen(struct ev_loop *loop, const struct sockaddr *addr,
                                    socklen_t addrlen, status_render_fn render, void *ctx,
                                    char *err, size_t errlen);
/* Closes the listener and any request in progress. */
void status_close(struct status_server *s);

#endif
