/*
 * Tests for cluster/clu_node.c: real nodes on loopback, driven by one libev
 * loop in this process: join, gossip of store writes, deletes, a late
 * joiner synced by push-pull, a stranger with another key.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "clu_node.h"
#include "run_until.h"

static const uint8_t KEY[1][CLU_KEY_LEN] = { { 9 } };
static const uint8_t OTHER[1][CLU_KEY_LEN] = { { 10 } };

/* A port free for both UDP and TCP on 127.0.0.1, now. */
static uint16_t free_port(void)
{
	for (;;) {
		struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
		socklen_t len = sizeof(a);
		int t = socket(AF_INET, SOCK_STREAM, 0), u = socket(AF_INET, SOCK_DGRAM, 0);
		int ok = bind(t, (struct sockaddr *)&a, len) == 0 &&
		         getsockname(t, (struct sockaddr *)&a, &len) == 0 &&
		         bind(u, (struct sockaddr *)&a, len) == 0;
		close(t);
		close(u);
		if (ok)
			return ntohs(a.sin_port);
	}
}

static struct sockaddr_storage loopback(uint16_t port)
{
	struct sockaddr_storage ss;
	struct sockaddr_in *a = (struct sockaddr_in *)&ss;
	memset(&ss, 0, sizeof(ss));
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a->sin_port = htons(port);
	return ss;
}

static struct clu_node *start(struct ev_loop *loop, const char *name, uint16_t port,
                              const struct sockaddr_storage *seed, const uint8_t (*key)[CLU_KEY_LEN])
{
	struct clu_config c;
	char err[200];
	clu_config_lan(&c);
	c.name = name;
	c.bind = loopback(port);
	c.bindlen = sizeof(struct sockaddr_in);
	c.keys = key;
	c.nkeys = 1;
	c.seeds = seed;
	c.nseeds = seed ? 1 : 0;
	c.timing.probe_interval = 0.1;
	c.timing.probe_timeout = 0.05;
	c.gossip_interval = 0.02;
	c.pushpull_interval = 1;
	struct clu_node *n = clu_node_new(loop, &c, err, sizeof(err));
	if (!n)
		fail_msg("clu_node_new: %s", err);
	return n;
}


struct pool {
	struct clu_node *n[5];
	unsigned count;
	const char *key;
	unsigned want;
};

static int all_alive(void *arg)
{
	struct pool *p = arg;
	for (unsigned i = 0; i < p->count; i++)
		if (clu_alive_count(clu_node_members(p->n[i])) != p->want)
			return 0;
	return 1;
}

static int all_have(void *arg)
{
	struct pool *p = arg;
	for (unsigned i = 0; i < p->count; i++)
		if (!clu_node_get(p->n[i], p->key))
			return 0;
	return 1;
}

static int none_have(void *arg)
{
	struct pool *p = arg;
	for (unsigned i = 0; i < p->count; i++)
		if (clu_node_get(p->n[i], p->key))
			return 0;
	return 1;
}

static int last_has_all(void *arg)
{
	struct pool *p = arg;
	struct clu_store_stats st;
	clu_store_get_stats(clu_node_store(p->n[p->count - 1]), &st);
	return st.records == p->want;
}

static void test_pool(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	uint16_t p1 = free_port(), p2 = free_port(), p3 = free_port(), p4 = free_port();
	struct sockaddr_storage seed = loopback(p1);
	struct pool p = { .count = 3, .want = 3 };
	p.n[0] = start(loop, "n1", p1, NULL, KEY);
	p.n[1] = start(loop, "n2", p2, &seed, KEY);
	p.n[2] = start(loop, "n3", p3, &seed, KEY);
	assert_true(run_until(loop, all_alive, &p, 5));

	/* A write on one node reaches every node by gossip. */
	const char *route = "route-set;sip:sip.fabrikam.test;lr";
	assert_int_equal(clu_node_put(p.n[0], "dialog/abc", route, strlen(route), 0), 0);
	p.key = "dialog/abc";
	assert_true(run_until(loop, all_have, &p, 3));
	const struct clu_rec *r = clu_node_get(p.n[2], "dialog/abc");
	assert_memory_equal(r->value, route, strlen(route));
	assert_string_equal(r->origin, "n1");

	/* A delete on another node reaches every node too. */
	assert_int_equal(clu_node_delete(p.n[1], "dialog/abc"), 0);
	assert_true(run_until(loop, none_have, &p, 3));

	/* 2000 records, then a fourth node: push-pull brings it all of them. */
	char key[32];
	for (int i = 0; i < 2000; i++) {
		snprintf(key, sizeof(key), "sub/%d", i);
		assert_int_equal(clu_node_put(p.n[0], key, "x", 1, 0), 0);
	}
	p.n[3] = start(loop, "n4", p4, &seed, KEY);
	p.count = 4;
	p.want = 2000;
	assert_true(run_until(loop, last_has_all, &p, 5));
	p.want = 4;
	assert_true(run_until(loop, all_alive, &p, 5));

	for (unsigned i = 0; i < p.count; i++)
		clu_node_leave_and_free(p.n[i]);
	ev_loop_destroy(loop);
}

/* Confirmation: when done says 0, another node holds the record already. */
struct confirm_result {
	int calls, status, held_elsewhere;
	struct pool *p;
};

static void on_confirmed(void *arg, int status)
{
	struct confirm_result *cr = arg;
	cr->calls++;
	cr->status = status;
	for (unsigned i = 1; i < cr->p->count; i++)
		if (clu_node_get(cr->p->n[i], "dialog/sync"))
			cr->held_elsewhere = 1;
}

static int confirmed(void *arg)
{
	return ((struct confirm_result *)arg)->calls > 0;
}

static void test_confirmed_write(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	uint16_t p1 = free_port(), p2 = free_port(), p3 = free_port();
	struct sockaddr_storage seed = loopback(p1);
	struct pool p = { .count = 3, .want = 3 };
	p.n[0] = start(loop, "n1", p1, NULL, KEY);
	p.n[1] = start(loop, "n2", p2, &seed, KEY);
	p.n[2] = start(loop, "n3", p3, &seed, KEY);
	assert_true(run_until(loop, all_alive, &p, 5));
	struct confirm_result cr = { .p = &p };
	assert_non_null(clu_node_put_confirmed(p.n[0], "dialog/sync", "v", 1, 0, 2.0, on_confirmed, &cr));
	assert_int_equal(cr.calls, 0); /* never from inside the call */
	assert_true(run_until(loop, confirmed, &cr, 3));
	assert_int_equal(cr.calls, 1);
	assert_int_equal(cr.status, 0);
	assert_true(cr.held_elsewhere);
	/* A cancelled confirmation says nothing. */
	struct confirm_result quiet = { .p = &p };
	clu_node_cancel_confirm(clu_node_put_confirmed(p.n[0], "dialog/x", "v", 1, 0, 2.0,
	                                               on_confirmed, &quiet));
	run_until(loop, confirmed, &quiet, 0.5);
	assert_int_equal(quiet.calls, 0);
	for (unsigned i = 0; i < p.count; i++)
		clu_node_leave_and_free(p.n[i]);
	/* Alone: nobody can hold it. */
	uint16_t p9 = free_port();
	struct pool alone = { .count = 1 };
	alone.n[0] = start(loop, "n9", p9, NULL, KEY);
	struct confirm_result lonely = { .p = &alone };
	assert_non_null(clu_node_put_confirmed(alone.n[0], "dialog/sync", "v", 1, 0, 2.0,
	                                       on_confirmed, &lonely));
	assert_true(run_until(loop, confirmed, &lonely, 3));
	assert_int_equal(lonely.status, -1);
	clu_node_leave_and_free(alone.n[0]);
	ev_loop_destroy(loop);
}

static int stranger_failed(void *arg)
{
	struct clu_node_stats st;
	clu_node_get_stats(arg, &st);
	return st.stream_failures >= 1;
}

static void test_stranger(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	uint16_t p1 = free_port(), p2 = free_port();
	struct sockaddr_storage seed = loopback(p1);
	struct clu_node *a = start(loop, "n1", p1, NULL, KEY);
	struct clu_node *b = start(loop, "x1", p2, &seed, OTHER);
	assert_true(run_until(loop, stranger_failed, b, 5));
	assert_int_equal(clu_alive_count(clu_node_members(a)), 1);
	assert_int_equal(clu_alive_count(clu_node_members(b)), 1);
	clu_node_leave_and_free(b);
	clu_node_leave_and_free(a);
	ev_loop_destroy(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pool),
		cmocka_unit_test(test_stranger),
		cmocka_unit_test(test_confirmed_write),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
