/*
 * run_until: the unit tests' way to drive a libev loop until something holds,
 * with a deadline, instead of sleeping for a fixed time.
 */
#ifndef TESTS_UNIT_RUN_UNTIL_H
#define TESTS_UNIT_RUN_UNTIL_H

#include <ev.h>

struct run_until_waiter {
	int (*pred)(void *);
	void *arg;
	int ok;
};

static void run_until_check(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct run_until_waiter *wt = w->data;
	(void)revents;
	if ((wt->ok = wt->pred(wt->arg)))
		ev_break(loop, EVBREAK_ONE);
}

static void run_until_deadline(struct ev_loop *loop, ev_timer *w, int revents)
{
	(void)w;
	(void)revents;
	ev_break(loop, EVBREAK_ONE);
}

/* Runs the loop until pred(arg) holds (checked every 5 ms) or `seconds` pass; returns pred(). */
static inline int run_until(struct ev_loop *loop, int (*pred)(void *), void *arg, double seconds)
{
	struct run_until_waiter wt = { pred, arg, 0 };
	ev_timer check, deadline;
	ev_timer_init(&check, run_until_check, 0.005, 0.005);
	check.data = &wt;
	ev_timer_init(&deadline, run_until_deadline, seconds, 0);
	ev_timer_start(loop, &check);
	ev_timer_start(loop, &deadline);
	ev_run(loop, 0);
	ev_timer_stop(loop, &check);
	ev_timer_stop(loop, &deadline);
	return wt.ok || pred(arg);
}

#endif
