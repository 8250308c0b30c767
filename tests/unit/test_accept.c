/* Unit tests for common/accept.c: a listener out of file descriptors rests, then accepts. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "accept.h"
#include "run_until.h"

struct probe {
	struct ev_loop *loop;
	struct accept_rest rest;
	ev_io io;
	int accepted;             /* the socket accept_next() gave, or -1 */
	unsigned calls;
};

static void on_readable(struct ev_loop *loop, ev_io *w, int revents)
{
	struct probe *p = w->data;
	p->calls++;
	int fd = accept_next(loop, &p->rest, NULL, NULL);
	if (fd >= 0)
		p->accepted = fd;
}

static int accepted(void *arg)
{
	return ((struct probe *)arg)->accepted >= 0;
}

static int rested(void *arg)
{
	return ((struct probe *)arg)->rest.rests > 0;
}

static void test_rests_when_out_of_descriptors(void **state)
{
	struct probe p = { .loop = ev_loop_new(EVFLAG_AUTO), .accepted = -1 };
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_true(lfd >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 8), 0);
	getsockname(lfd, (struct sockaddr *)&a, &alen);
	int client = socket(AF_INET, SOCK_STREAM, 0);
	assert_int_equal(connect(client, (struct sockaddr *)&a, sizeof(a)), 0);

	/* Every descriptor taken: the pending connection cannot be accepted. */
	struct rlimit saved, low;
	getrlimit(RLIMIT_NOFILE, &saved);
	low = saved;
	low.rlim_cur = 64;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	int fill[64], nfill = 0;
	while (nfill < 64 && (fill[nfill] = dup(0)) >= 0)
		nfill++;
	assert_int_equal(errno, EMFILE);

	ev_io_init(&p.io, on_readable, lfd, EV_READ);
	p.io.data = &p;
	accept_init(&p.rest, &p.io);
	ev_io_start(p.loop, &p.io);
	assert_true(run_until(p.loop, rested, &p, 2.0));
	/* Resting: the listener is not watched, so the loop does not spin on it. */
	assert_false(ev_is_active(&p.io));
	unsigned calls = p.calls;
	run_until(p.loop, accepted, &p, ACCEPT_REST / 2);
	assert_int_equal(p.calls, calls);

	/* A descriptor free again: after the rest, the connection is accepted. */
	close(fill[--nfill]);
	assert_true(run_until(p.loop, accepted, &p, 2.0));
	assert_true(ev_is_active(&p.io));

	close(p.accepted);
	while (nfill)
		close(fill[--nfill]);
	setrlimit(RLIMIT_NOFILE, &saved);
	ev_io_stop(p.loop, &p.io);
	accept_stop(p.loop, &p.rest);
	close(client);
	close(lfd);
	ev_loop_destroy(p.loop);
}

static void test_raise_fd_limit(void **state)
{
	struct rlimit saved, now;
	getrlimit(RLIMIT_NOFILE, &saved);
	struct rlimit low = saved;
	low.rlim_cur = 100;
	assert_int_equal(setrlimit(RLIMIT_NOFILE, &low), 0);
	unsigned long want = saved.rlim_max == RLIM_INFINITY || saved.rlim_max > 200 ? 200
	                                                                             : saved.rlim_max;
	assert_int_equal(accept_raise_fd_limit(want), want);
	getrlimit(RLIMIT_NOFILE, &now);
	assert_int_equal(now.rlim_cur, want);
	/* Never lowered. */
	assert_int_equal(accept_raise_fd_limit(50), want);
	setrlimit(RLIMIT_NOFILE, &saved);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rests_when_out_of_descriptors),
		cmocka_unit_test(test_raise_fd_limit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
