/* Unit tests for edge/thr.c: discovered-partner limits, with time passed in. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "thr.h"

static const struct thr_limits LIM = { .rate = 5, .max_contacts = 3, .contacts_limit = 1,
                                       .period_s = 3600 };

static enum thr_verdict admit(struct thr_table *t, const char *domain, const char *contact,
                              double now, struct thr_result *res)
{
	struct thr_result local;
	if (!res)
		res = &local;
	thr_admit(t, domain, contact, strlen(contact), now, res);
	return res->verdict;
}

static void test_rate_burst_then_refill(void **state)
{
	struct thr_table *t = thr_new(&LIM);
	struct thr_result res;
	for (int i = 0; i < 5; i++)
		assert_int_equal(admit(t, "a.test", "bob@c.test", 100.0, NULL), THR_PASS);
	assert_int_equal(admit(t, "a.test", "bob@c.test", 100.0, &res), THR_RATE);
	assert_int_equal(res.retry_after, 1);
	assert_int_equal(res.rate, 5);
	/* 0.2 s gives one token back at 5/s; 0.1 s does not. */
	assert_int_equal(admit(t, "a.test", "bob@c.test", 100.1, NULL), THR_RATE);
	assert_int_equal(admit(t, "a.test", "bob@c.test", 100.2, NULL), THR_PASS);
	assert_int_equal(admit(t, "a.test", "bob@c.test", 100.2, NULL), THR_RATE);
	/* Never more than a second's worth, however long it was quiet. */
	int passed = 0;
	for (int i = 0; i < 20; i++)
		passed += admit(t, "a.test", "bob@c.test", 500.0, NULL) == THR_PASS;
	assert_int_equal(passed, 5);
	/* Another partner has its own bucket. */
	assert_int_equal(admit(t, "b.test", "bob@c.test", 500.0, NULL), THR_PASS);
	struct thr_stats st;
	thr_get_stats(t, 500.0, &st);
	assert_int_equal(st.partners, 2);
	assert_int_equal(st.rate_refused, 3 + 15);
	thr_free(t);
}

static void test_contacts_limit(void **state)
{
	struct thr_table *t = thr_new(&LIM);
	struct thr_result res;
	double now = 10;
	const char *users[] = { "u1@c.test", "u2@c.test", "U1@c.test", "u3@C.TEST" };
	/* u1, u2, U1 (user parts are case-sensitive: a third user), u3@C.TEST is u3@c.test. */
	for (int i = 0; i < 4; i++, now += 1)
		assert_int_equal(admit(t, "a.test", users[i], now, NULL), i < 3 ? THR_PASS : THR_BLOCKED);
	assert_int_equal(admit(t, "A.Test", "u1@c.test", now, &res), THR_BLOCKED);
	assert_int_equal(res.changed, 0);
	assert_int_equal(res.retry_after, 3600 - 14); /* periods are aligned on the wall clock */
	/* A new period forgets it all. */
	assert_int_equal(admit(t, "a.test", "u9@c.test", 10 + 3600, &res), THR_PASS);
	thr_free(t);
}

static void test_contacts_limit_off(void **state)
{
	struct thr_limits lim = LIM;
	lim.contacts_limit = 0;
	struct thr_table *t = thr_new(&lim);
	char user[32];
	for (int i = 0; i < 50; i++) {
		snprintf(user, sizeof(user), "u%d@c.test", i);
		assert_int_equal(admit(t, "a.test", user, i, NULL), THR_PASS);
	}
	thr_free(t);
}

static void test_blocked_reported_once(void **state)
{
	struct thr_table *t = thr_new(&LIM);
	struct thr_result res;
	admit(t, "a.test", "u1@c.test", 1, NULL);
	admit(t, "a.test", "u2@c.test", 2, NULL);
	admit(t, "a.test", "u3@c.test", 3, NULL);
	assert_int_equal(admit(t, "a.test", "u4@c.test", 4, &res), THR_BLOCKED);
	assert_int_equal(res.changed, 1);
	assert_int_equal(admit(t, "a.test", "u5@c.test", 5, &res), THR_BLOCKED);
	assert_int_equal(res.changed, 0);
	struct thr_stats st;
	thr_get_stats(t, 6, &st);
	assert_int_equal(st.blocked, 1);
	assert_int_equal(st.contacts_refused, 2);
	thr_get_stats(t, 1 + 3600, &st);
	assert_int_equal(st.blocked, 0);
	thr_free(t);
}

static void test_suspicious(void **state)
{
	struct thr_table *t = thr_new(&LIM);
	struct thr_result res;
	admit(t, "a.test", "u1@c.test", 1, NULL);
	/* 19 responses are too few to judge, whatever they are. */
	for (int i = 0; i < 19; i++)
		assert_int_equal(thr_response(t, "a.test", 404, 1), 0);
	/* Provisional responses do not count. */
	assert_int_equal(thr_response(t, "a.test", 180, 1), 0);
	assert_int_equal(thr_response(t, "a.test", 404, 1), 1);
	assert_int_equal(thr_response(t, "a.test", 404, 1), 0); /* reported once */
	assert_int_equal(admit(t, "a.test", "u1@c.test", 1, &res), THR_PASS);
	assert_int_equal(res.suspicious, 1);
	assert_int_equal(res.rate, 1);
	assert_int_equal(admit(t, "a.test", "u1@c.test", 1, NULL), THR_RATE);
	assert_int_equal(admit(t, "a.test", "u1@c.test", 2, NULL), THR_PASS);
	/* An unknown partner's responses are ignored. */
	assert_int_equal(thr_response(t, "other.test", 404, 1), 0);
	thr_free(t);
}

static void test_mostly_successful_is_not_suspicious(void **state)
{
	struct thr_table *t = thr_new(&LIM);
	admit(t, "a.test", "u1@c.test", 1, NULL);
	for (int i = 0; i < 100; i++)
		assert_int_equal(thr_response(t, "a.test", i % 2 ? (i % 4 == 1 ? 486 : 404) : 200, 1), 0);
	/* 50 of 100 is half, not more: 51 of 101 tips it over. */
	assert_int_equal(thr_response(t, "a.test", 603, 1), 1);
	thr_free(t);
}

static void test_partner_cap(void **state)
{
	struct thr_table *t = thr_new(&LIM);
	char domain[32];
	for (int i = 0; i <= THR_MAX_PARTNERS; i++) {
		snprintf(domain, sizeof(domain), "p%d.test", i);
		admit(t, domain, "u@c.test", 1, NULL);
	}
	struct thr_stats st;
	thr_get_stats(t, 1, &st);
	assert_int_equal(st.partners, THR_MAX_PARTNERS);
	/* The least recently seen (p0) was forgotten: it starts afresh. */
	for (int i = 0; i < 5; i++)
		assert_int_equal(admit(t, "p0.test", "u@c.test", 1, NULL), THR_PASS);
	thr_free(t);
}

/* A pool of nodes: the others' parts count, the rate is shared. */
static void test_pool_parts(void **state)
{
	struct thr_table *t = thr_new(&LIM);
	struct thr_result res;
	struct thr_part two = { .contacts = 2 };
	/* Another node saw 2 users of a.test in this period (0), and 9 in an old one. */
	thr_set_remote(t, "a.test", "n2", 0, &two, 10);
	struct thr_part old = { .contacts = 9 };
	thr_set_remote(t, "a.test", "n3", 7, &old, 10);
	assert_int_equal(admit(t, "a.test", "u1@c.test", 10, NULL), THR_PASS);   /* 3 in the pool */
	assert_int_equal(admit(t, "a.test", "u2@c.test", 11, &res), THR_BLOCKED); /* 4 > 3 */
	assert_int_equal(res.changed, 1);
	/* A remote part alone can block: the next request sees it. */
	struct thr_part four = { .contacts = 4 };
	thr_set_remote(t, "b.test", "n2", 0, &four, 12);
	assert_int_equal(admit(t, "b.test", "u1@c.test", 12, NULL), THR_BLOCKED);
	/* Suspicion on the pool's responses: 19 failures elsewhere, 1 here. */
	struct thr_part failing = { .contacts = 1, .responses = 19, .failures = 19 };
	thr_set_remote(t, "c.test", "n2", 0, &failing, 13);
	admit(t, "c.test", "u1@c.test", 13, NULL);
	assert_int_equal(thr_response(t, "c.test", 404, 13), 1);
	thr_free(t);
}

struct taken {
	int n;
	char domain[32];
	struct thr_part part;
};

static void take(void *arg, const char *domain, uint64_t period, const struct thr_part *part)
{
	struct taken *tk = arg;
	tk->n++;
	snprintf(tk->domain, sizeof(tk->domain), "%s", domain);
	tk->part = *part;
	assert_int_equal(period, 0);
}

static void test_changes_and_rate_share(void **state)
{
	struct thr_table *t = thr_new(&LIM);
	struct taken tk = { 0 };
	admit(t, "a.test", "u1@c.test", 1, NULL);
	admit(t, "a.test", "u2@c.test", 1, NULL);
	thr_response(t, "a.test", 200, 1);
	thr_take_changes(t, take, &tk);
	assert_int_equal(tk.n, 1);
	assert_string_equal(tk.domain, "a.test");
	assert_int_equal(tk.part.contacts, 2);
	assert_int_equal(tk.part.responses, 1);
	thr_take_changes(t, take, &tk);
	assert_int_equal(tk.n, 1); /* nothing new */
	/* Two nodes share 5/s: each lets 2 through in a burst (a new partner's bucket). */
	thr_set_pool_size(t, 2);
	int passed = 0;
	for (int i = 0; i < 10; i++)
		passed += admit(t, "b.test", "u@c.test", 100, NULL) == THR_PASS;
	assert_int_equal(passed, 2);
	thr_free(t);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rate_burst_then_refill),
		cmocka_unit_test(test_contacts_limit),
		cmocka_unit_test(test_contacts_limit_off),
		cmocka_unit_test(test_blocked_reported_once),
		cmocka_unit_test(test_suspicious),
		cmocka_unit_test(test_mostly_successful_is_not_suspicious),
		cmocka_unit_test(test_partner_cap),
		cmocka_unit_test(test_pool_parts),
		cmocka_unit_test(test_changes_and_rate_share),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
