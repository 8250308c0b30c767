#include "accept.h"

#include <errno.h>
#include <sys/resource.h>

static void rest_over(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct accept_rest *r = w->data;
	ev_io_start(loop, r->io);
}

void accept_init(struct accept_rest *r, ev_io *io)
{
	r->io = io;
	r->rests = 0;
	ev_init(&r->timer, rest_over);
	r->timer.data = r;
}

void accept_stop(struct ev_loop *loop, struct accept_rest *r)
{
	ev_timer_stop(loop, &r->timer);
}

int accept_next(struct ev_loop *loop, struct accept_rest *r, struct sockaddr *sa,
                socklen_t *salen)
{
	int fd = accept4(r->io->fd, sa, salen, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd >= 0)
		return fd;
	if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
		r->rests++;
		ev_io_stop(loop, r->io);
		ev_timer_set(&r->timer, ACCEPT_REST, 0.);
		ev_timer_start(loop, &r->timer);
	}
	return -1;
}

unsigned long accept_raise_fd_limit(unsigned long want)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return 0;
	if (rl.rlim_cur != RLIM_INFINITY && rl.rlim_cur < want) {
		rlim_t cur = rl.rlim_cur;
		rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= want ? want : rl.rlim_max;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0)
			rl.rlim_cur = cur;
	}
	return rl.rlim_cur == RLIM_INFINITY ? want : (unsigned long)rl.rlim_cur;
}
