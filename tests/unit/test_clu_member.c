/* Unit tests for cluster/clu_member.c: SWIM and Lifeguard membership rules, without a network. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "clu_member.h"
#include "clu_msg.h"

static struct sockaddr_in addr_of(int last)
{
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons(7946) };
	a.sin_addr.s_addr = htonl(0x7f000000u | (unsigned)last);
	return a;
}

struct changes {
	int n;
	char last[64];
	enum clu_state last_state, last_old;
};

static void on_change(void *arg, const struct clu_member *m, enum clu_state old)
{
	struct changes *c = arg;
	c->n++;
	snprintf(c->last, sizeof(c->last), "%s", m->name);
	c->last_state = m->state;
	c->last_old = old;
}

static struct clu_members *table(unsigned others, struct changes *ch)
{
	struct clu_timing t;
	clu_timing_lan(&t);
	struct sockaddr_in a = addr_of(1);
	struct clu_members *m = clu_members_new("edge-1", (struct sockaddr *)&a, sizeof(a), &t, 42, 0);
	assert_non_null(m);
	if (ch)
		clu_members_on_change(m, on_change, ch);
	for (unsigned i = 0; i < others; i++) {
		char name[16];
		struct sockaddr_in b = addr_of((int)i + 2);
		snprintf(name, sizeof(name), "edge-%u", i + 2);
		assert_int_equal(clu_on_alive(m, name, 1, (struct sockaddr *)&b, sizeof(b), 0, 0), 1);
	}
	return m;
}

static void test_alive_rules(void **state)
{
	struct changes ch = { 0 };
	struct clu_members *m = table(0, &ch);
	struct sockaddr_in b = addr_of(2), c = addr_of(3);
	assert_int_equal(clu_self(m)->incarnation, 1);
	assert_int_equal(clu_on_alive(m, "edge-2", 5, (struct sockaddr *)&b, sizeof(b), 0, 1), 1);
	assert_int_equal(ch.n, 1);
	assert_string_equal(ch.last, "edge-2");
	/* Stale or repeated news changes nothing. */
	assert_int_equal(clu_on_alive(m, "edge-2", 5, (struct sockaddr *)&c, sizeof(c), 0, 2), 0);
	assert_int_equal(clu_on_alive(m, "edge-2", 4, (struct sockaddr *)&c, sizeof(c), 0, 2), 0);
	/* A higher incarnation may move it. */
	assert_int_equal(clu_on_alive(m, "edge-2", 6, (struct sockaddr *)&c, sizeof(c), 0, 3), 1);
	const struct clu_member *e2 = clu_find(m, "edge-2");
	assert_int_equal(((const struct sockaddr_in *)(const void *)&e2->addr)->sin_addr.s_addr,
	                 c.sin_addr.s_addr);
	assert_int_equal(clu_alive_count(m), 2);
	/* Names that are no node names are refused. */
	assert_int_equal(clu_on_alive(m, "bad name", 1, (struct sockaddr *)&c, sizeof(c), 0, 3), -1);
	clu_members_free(m);
}

/* Observers (balancers) are members, but not among the pool's nodes. */
static void test_observers(void **state)
{
	struct clu_members *m = table(1, NULL);
	struct sockaddr_in c = addr_of(9);
	assert_int_equal(clu_on_alive(m, "balancer-1", 1, (struct sockaddr *)&c, sizeof(c), 1, 1), 1);
	assert_true(clu_find(m, "balancer-1")->observer);
	assert_int_equal(clu_alive_count(m), 3);
	assert_int_equal(clu_alive_nodes(m), 2);
	/* Only edge-2 may hold a confirmed write or a handoff: never the observer. */
	const struct clu_member *picked[4];
	for (int i = 0; i < 20; i++) {
		assert_int_equal(clu_pick_nodes(m, picked, 4), 1);
		assert_string_equal(picked[0]->name, "edge-2");
	}
	/* Its alive news says what it is, so every member learns it. */
	struct clu_members *b = clu_members_new("balancer-1", (struct sockaddr *)&c, sizeof(c),
	                                        &(struct clu_timing){ 0 }, 1, 0);
	assert_non_null(b);
	assert_int_equal(clu_set_observer(b), 0);
	assert_true(clu_self(b)->observer);
	assert_int_equal(clu_alive_nodes(b), 0);
	assert_int_equal(clu_pick_nodes(b, picked, 4), 0);
	clu_members_free(b);
	clu_members_free(m);
}

static void test_suspect_then_dead_without_confirmation(void **state)
{
	struct changes ch = { 0 };
	struct clu_members *m = table(4, &ch); /* 5 alive: min 4 s, max 24 s, k = 2 */
	assert_int_equal(clu_on_suspect(m, "edge-2", 1, "edge-3", 10), 1);
	assert_int_equal(clu_find(m, "edge-2")->state, CLU_SUSPECT);
	assert_int_equal(ch.last_state, CLU_SUSPECT);
	/* Stale: a lower incarnation; repeated: the same accuser. */
	assert_int_equal(clu_on_suspect(m, "edge-2", 0, "edge-4", 10), 0);
	assert_int_equal(clu_on_suspect(m, "edge-2", 1, "edge-3", 10), 0);
	double next = clu_tick(m, 33.9);
	assert_int_equal(clu_find(m, "edge-2")->state, CLU_SUSPECT);
	assert_true(next > 33.9 && next <= 34.0 + 1e-9);
	clu_tick(m, 34.0);
	assert_int_equal(clu_find(m, "edge-2")->state, CLU_DEAD);
	assert_int_equal(ch.last_state, CLU_DEAD);
	assert_int_equal(clu_alive_count(m), 4);
	/* Dead members are kept for push-pull to reach (partitions heal), then forgotten. */
	assert_string_equal(clu_pick_dead(m)->name, "edge-2");
	clu_tick(m, 34.0 + 86400 - 1);
	assert_non_null(clu_find(m, "edge-2"));
	clu_tick(m, 34.0 + 86400);
	assert_null(clu_find(m, "edge-2"));
	assert_null(clu_pick_dead(m));
	/* Members that left are forgotten sooner, and never reached out to. */
	clu_on_dead(m, "edge-3", 1, "edge-3", 90000);
	assert_null(clu_pick_dead(m));
	clu_tick(m, 90000 + 29.9);
	assert_non_null(clu_find(m, "edge-3"));
	clu_tick(m, 90000 + 30);
	assert_null(clu_find(m, "edge-3"));
	clu_members_free(m);
}

static void test_confirmations_shorten_suspicion(void **state)
{
	struct clu_members *m = table(4, NULL);
	clu_on_suspect(m, "edge-2", 1, "edge-3", 0);
	assert_int_equal(clu_on_suspect(m, "edge-2", 1, "edge-4", 0), 1); /* 1 confirmation: ~11.4 s */
	clu_tick(m, 11.3);
	assert_int_equal(clu_find(m, "edge-2")->state, CLU_SUSPECT);
	clu_tick(m, 11.4);
	assert_int_equal(clu_find(m, "edge-2")->state, CLU_DEAD);

	clu_on_alive(m, "edge-3", 2, (const struct sockaddr *)&clu_find(m, "edge-3")->addr,
	             sizeof(struct sockaddr_in), 0, 20);
	clu_on_suspect(m, "edge-3", 2, "edge-4", 20);
	clu_on_suspect(m, "edge-3", 2, "edge-5", 20);
	clu_on_suspect(m, "edge-3", 2, "edge-1", 20); /* 2 confirmations = k: the minimum, 4 s */
	clu_tick(m, 23.9);
	assert_int_equal(clu_find(m, "edge-3")->state, CLU_SUSPECT);
	clu_tick(m, 24.0);
	assert_int_equal(clu_find(m, "edge-3")->state, CLU_DEAD);
	clu_members_free(m);
}

static void test_refutation(void **state)
{
	struct clu_members *m = table(2, NULL);
	/* Suspected at our incarnation: we go one higher and say so. */
	assert_int_equal(clu_on_suspect(m, "edge-1", 1, "edge-2", 1), 1);
	assert_int_equal(clu_self(m)->incarnation, 2);
	assert_int_equal(clu_self(m)->state, CLU_ALIVE);
	assert_int_equal(clu_awareness(m), 1);
	assert_int_equal(clu_on_dead(m, "edge-1", 2, "edge-2", 2), 1);
	assert_int_equal(clu_self(m)->incarnation, 3);
	/* After a restart, the cluster remembers us at 7: we come back at 8. */
	struct sockaddr_in a = addr_of(1);
	assert_int_equal(clu_on_alive(m, "edge-1", 7, (struct sockaddr *)&a, sizeof(a), 0, 3), 1);
	assert_int_equal(clu_self(m)->incarnation, 8);
	/* A refuted suspicion of another node: alive at a higher incarnation wins. */
	clu_on_suspect(m, "edge-2", 1, "edge-3", 4);
	assert_int_equal(clu_on_alive(m, "edge-2", 2, (const struct sockaddr *)&clu_find(m, "edge-2")->addr,
	                              sizeof(struct sockaddr_in), 0, 5), 1);
	assert_int_equal(clu_find(m, "edge-2")->state, CLU_ALIVE);
	clu_members_free(m);
}

static void test_leave_and_dead_rules(void **state)
{
	struct clu_members *m = table(3, NULL);
	/* Dead from itself: it left. */
	assert_int_equal(clu_on_dead(m, "edge-2", 1, "edge-2", 1), 1);
	assert_int_equal(clu_find(m, "edge-2")->state, CLU_LEFT);
	assert_int_equal(clu_on_dead(m, "edge-2", 1, "edge-3", 1), 0);
	/* Dead beats suspect at the same incarnation; alive at the same does not revive. */
	clu_on_suspect(m, "edge-3", 1, "edge-4", 2);
	assert_int_equal(clu_on_dead(m, "edge-3", 1, "edge-4", 2), 1);
	assert_int_equal(clu_find(m, "edge-3")->state, CLU_DEAD);
	assert_int_equal(clu_on_alive(m, "edge-3", 1, (const struct sockaddr *)&clu_find(m, "edge-3")->addr,
	                              sizeof(struct sockaddr_in), 0, 3), 0);
	/* Unknown nodes: suspicion and death of a stranger mean nothing. */
	assert_int_equal(clu_on_suspect(m, "edge-99", 1, "edge-4", 3), 0);
	assert_int_equal(clu_on_dead(m, "edge-99", 1, "edge-4", 3), 0);
	/* We leave: no refutation of our own death afterwards. The leave news can be
	 * queued afresh (for each lifeline peer) only once we leave. */
	assert_int_equal(clu_repeat_leave(m), -1);
	assert_int_equal(clu_leave(m, 4), 0);
	assert_int_equal(clu_repeat_leave(m), 0);
	assert_true(clu_news_count(m) >= 1);
	assert_int_equal(clu_self(m)->state, CLU_LEFT);
	assert_int_equal(clu_on_dead(m, "edge-1", 1, "edge-4", 5), 0);
	clu_members_free(m);
}

static void test_probe_order(void **state)
{
	struct clu_members *m = table(4, NULL);
	/* Two rounds: every other member once per round, never ourselves. */
	for (int round = 0; round < 2; round++) {
		int seen[6] = { 0 };
		for (int i = 0; i < 4; i++) {
			const struct clu_member *t = clu_next_probe(m);
			assert_non_null(t);
			assert_string_not_equal(t->name, "edge-1");
			seen[t->name[5] - '0']++;
		}
		for (int k = 2; k <= 5; k++)
			assert_int_equal(seen[k], 1);
	}
	/* The dead are not probed; suspects are. */
	clu_on_dead(m, "edge-2", 1, "edge-3", 1);
	clu_on_suspect(m, "edge-3", 1, "edge-4", 1);
	for (int i = 0; i < 6; i++)
		assert_string_not_equal(clu_next_probe(m)->name, "edge-2");
	clu_members_free(m);
	m = table(0, NULL);
	assert_null(clu_next_probe(m));
	clu_members_free(m);
}

static void test_relays(void **state)
{
	struct clu_members *m = table(5, NULL);
	const struct clu_member *r[3];
	clu_on_suspect(m, "edge-6", 1, "edge-2", 1);
	for (int i = 0; i < 20; i++) {
		unsigned n = clu_pick_relays(m, "edge-2", r, 3);
		assert_int_equal(n, 3);
		for (unsigned k = 0; k < n; k++) {
			assert_string_not_equal(r[k]->name, "edge-1");
			assert_string_not_equal(r[k]->name, "edge-2");
			assert_string_not_equal(r[k]->name, "edge-6"); /* only the alive relay */
		}
	}
	assert_int_equal(clu_pick_relays(m, "edge-2", r, 0), 0);
	clu_members_free(m);
}

static void test_awareness(void **state)
{
	struct clu_members *m = table(4, NULL);
	assert_true(clu_probe_interval(m) == 1.0);
	/* Missed: 3 relays asked, 1 nacked: we lost 2 answers, our fault more likely. */
	assert_int_equal(clu_probe_done(m, "edge-2", 0, 3, 1, 1), 1);
	assert_int_equal(clu_awareness(m), 2);
	assert_int_equal(clu_find(m, "edge-2")->state, CLU_SUSPECT);
	assert_true(clu_probe_interval(m) == 3.0 && clu_probe_timeout(m) == 1.5);
	/* Acked through a relay: no change; directly: healthier. */
	clu_probe_done(m, "edge-3", 1, 3, 3, 2);
	assert_int_equal(clu_awareness(m), 2);
	clu_probe_done(m, "edge-3", 2, 0, 0, 2);
	clu_probe_done(m, "edge-3", 2, 0, 0, 2);
	clu_probe_done(m, "edge-3", 2, 0, 0, 2);
	assert_int_equal(clu_awareness(m), 0);
	for (int i = 0; i < 20; i++)
		clu_probe_done(m, "edge-4", 0, 0, 0, 3);
	assert_int_equal(clu_awareness(m), 8); /* capped */
	clu_members_free(m);
}

/* The news as a packet would carry it: a Packet header, then the taken items. */
static clu_packet *packet_with_news(struct clu_members *m, size_t budget, size_t *used)
{
	static uint8_t buf[70000];
	size_t n = 0;
	buf[n++] = 0x08; buf[n++] = 1;                         /* version 1 */
	buf[n++] = 0x12; buf[n++] = 6; memcpy(buf + n, "edge-1", 6); n += 6;
	*used = clu_take_news(m, buf + n, budget);
	char why[200];
	clu_packet *p = clu_packet_decode(buf, n + *used, why, sizeof(why));
	if (!p)
		fail_msg("news do not decode: %s", why);
	return p;
}

static void test_news_queue(void **state)
{
	struct clu_members *m = table(4, NULL);    /* self alive + 4 alive news */
	assert_int_equal(clu_news_count(m), 5);
	size_t used;
	clu_packet *p = packet_with_news(m, 1400, &used);
	assert_int_equal(p->n_gossip, 5);
	assert_int_equal(p->gossip[0]->item_case, EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_ALIVE);
	assert_string_equal(p->gossip[0]->alive->node, "edge-1"); /* oldest first among equals */
	clu_packet_free(p);
	/* Newer news about a node replaces the old. */
	clu_on_suspect(m, "edge-3", 1, "edge-1", 1);
	assert_int_equal(clu_news_count(m), 5);
	/* A small budget takes what fits: the fresh suspicion first (sent 0 times). */
	p = packet_with_news(m, 40, &used);
	assert_true(used <= 40 && p->n_gossip >= 1);
	assert_int_equal(p->gossip[0]->item_case, EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_SUSPECT);
	clu_packet_free(p);
	/* Each item goes out retransmit_mult * ceil(log10(5 + 1)) = 4 times, then leaves. */
	for (int i = 0; i < 10 && clu_news_count(m); i++) {
		p = packet_with_news(m, 1400, &used);
		clu_packet_free(p);
	}
	assert_int_equal(clu_news_count(m), 0);
	p = packet_with_news(m, 1400, &used);
	assert_int_equal(used, 0);
	clu_packet_free(p);
	clu_members_free(m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alive_rules),
		cmocka_unit_test(test_observers),
		cmocka_unit_test(test_suspect_then_dead_without_confirmation),
		cmocka_unit_test(test_confirmations_shorten_suspicion),
		cmocka_unit_test(test_refutation),
		cmocka_unit_test(test_leave_and_dead_rules),
		cmocka_unit_test(test_probe_order),
		cmocka_unit_test(test_relays),
		cmocka_unit_test(test_awareness),
		cmocka_unit_test(test_news_queue),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
