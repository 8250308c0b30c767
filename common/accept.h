/*
 * accept: accept4() for a libev listener that rests when the process is out
 * of file descriptors (or memory), instead of spinning: the pending
 * connection stays queued and the listening socket readable, so libev would
 * call the listener again at once, forever. Every daemon's listeners use it.
 */
#ifndef COMMON_ACCEPT_H
#define COMMON_ACCEPT_H

#include <ev.h>
#include <sys/socket.h>

#define ACCEPT_REST 0.1           /* seconds a listener rests */

/* A listener's watcher and its rest timer; zeroed memory is not ready: call accept_init(). */
struct accept_rest {
	ev_io *io;                /* the listener's watcher: started again after the rest */
	ev_timer timer;
	unsigned long long rests; /* how often it had to rest */
};

void accept_init(struct accept_rest *r, ev_io *io);
/* Stops the rest timer (the listener's watcher is the caller's). */
void accept_stop(struct ev_loop *loop, struct accept_rest *r);

/*
 * accept4() on io's socket, non-blocking and close-on-exec. Returns the new
 * socket, or -1: nothing pending, or the listener now rests for ACCEPT_REST.
 */
int accept_next(struct ev_loop *loop, struct accept_rest *r, struct sockaddr *sa,
                socklen_t *salen);

/*
 * Raises the soft limit on open files to `want` (at most the hard limit).
 * Returns the limit now in force, which is below want when the hard limit
 * is: the caller says so, since connections past it rest at accept.
 */
unsigned long accept_raise_fd_limit(unsigned long want);

#endif
