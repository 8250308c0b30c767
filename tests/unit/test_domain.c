/* Unit tests for edge/domain.c: host names and the user patterns of access policies. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "domain.h"

/* dom_valid on a NUL-terminated name. */
static int valid(const char *name)
{
	return dom_valid(name, strlen(name));
}

/*
 * A heap copy of s[0..len) without a terminating NUL, so that ASan reports
 * any read past len. Caller frees.
 */
static char *slice(const char *s, size_t len)
{
	char *p = malloc(len ? len : 1);
	assert_non_null(p);
	memcpy(p, s, len);
	return p;
}

/* A name of `len` bytes: labels of `label` 'a's separated by dots. */
static char *make_name(size_t len, size_t label)
{
	char *s = malloc(len + 1);
	assert_non_null(s);
	for (size_t i = 0; i < len; i++)
		s[i] = (i % (label + 1) == label) ? '.' : 'a';
	s[len] = '\0';
	return s;
}

static void test_valid_good(void **state)
{
	assert_true(valid("contoso.test"));
	assert_true(valid("sip.contoso.test"));
	assert_true(valid("SIP.Contoso.TEST"));
	assert_true(valid("a.b"));
	assert_true(valid("x-1.fabrikam-2.test"));
	assert_true(valid("123.test"));          /* digits are fine, just not all of them */
	assert_true(valid("a1.2b.3c"));
}

static void test_valid_lengths(void **state)
{
	assert_false(dom_valid("", 0));
	assert_false(dom_valid("contoso.test", 0));

	/* 253 bytes is the most a name may hold; 254 is one too many. */
	char *s = make_name(253, 50);
	assert_true(s[252] != '.' && s[251] != '.');
	assert_true(valid(s));
	free(s); s = NULL;
	s = make_name(254, 50);
	assert_true(s[253] != '.');
	assert_false(valid(s));
	free(s); s = NULL;

	/* Labels of 63 bytes are the longest. */
	char name[80];
	memset(name, 'a', 63);
	strcpy(name + 63, ".test");
	assert_true(valid(name));
	memset(name, 'a', 64);
	strcpy(name + 64, ".test");
	assert_false(valid(name));
	strcpy(name, "test.");
	memset(name + 5, 'b', 64);
	name[69] = '\0';
	assert_false(valid(name));
	name[68] = '\0';
	assert_true(valid(name));
}

static void test_valid_bad(void **state)
{
	assert_false(valid("-a.test"));
	assert_false(valid("a-.test"));
	assert_false(valid("a.-test"));
	assert_false(valid("a.test-"));
	assert_false(valid("a..b"));
	assert_false(valid(".a.test"));
	assert_false(valid("a.test."));        /* no trailing dot */
	assert_false(valid("."));
	assert_false(valid("localhost"));       /* one label */
	assert_false(valid("198.18.0.1"));      /* an address */
	assert_false(valid("1.2"));
	assert_false(valid("[::1]"));
	assert_false(valid("::1"));
	assert_false(valid("_sip.test"));
	assert_false(valid("a_b.test"));
	assert_false(valid("a b.test"));
	assert_false(valid("a*.test"));
	assert_false(valid("*.a.test"));
	assert_false(valid("a@b.test"));
	assert_false(valid("caf\xc3\xa9.test"));   /* UTF-8 */
	assert_false(valid("a.t\xe9st"));          /* Latin-1 */
	assert_false(valid("a.\x80"));
	assert_false(valid("a.t\x7f"));
}

/* The length counts, not the NUL: a valid prefix is valid, embedded NULs are not. */
static void test_valid_lengths_not_nul(void **state)
{
	char *s = slice("a.test.evil", 6);
	assert_true(dom_valid(s, 6));
	assert_true(dom_valid(s, 5));         /* "a.tes" */
	free(s); s = NULL;
	s = slice("a.test.evil", 7);
	assert_false(dom_valid(s, 7));        /* "a.test." */
	free(s); s = NULL;
	assert_false(dom_valid("a.te\0st", 7));
	s = slice("a-", 2);
	assert_false(dom_valid(s, 2));
	free(s); s = NULL;
}

static void test_within(void **state)
{
	const char *h;

	h = "sip.a.test";
	assert_true(dom_within(h, strlen(h), "a.test"));
	h = "x.y.sip.a.test";
	assert_true(dom_within(h, strlen(h), "a.test"));
	h = "a.test";
	assert_true(dom_within(h, strlen(h), "a.test"));
	h = "evila.test";
	assert_false(dom_within(h, strlen(h), "a.test"));
	h = "a.test.evil";
	assert_false(dom_within(h, strlen(h), "a.test"));
	h = "test";
	assert_false(dom_within(h, strlen(h), "a.test"));
	h = "b.test";
	assert_false(dom_within(h, strlen(h), "a.test"));
	h = "";
	assert_false(dom_within(h, 0, "a.test"));
	/* Case does not matter, on either side. */
	h = "SIP.A.Test";
	assert_true(dom_within(h, strlen(h), "a.test"));
	h = "sip.a.test";
	assert_true(dom_within(h, strlen(h), "A.TEST"));
	h = "A.TEST";
	assert_true(dom_within(h, strlen(h), "a.test"));
}

/* Hosts are slices of a SIP message: only hostlen bytes may be read. */
static void test_within_slices(void **state)
{
	const char *buf = "sip.a.test;transport=tls";
	char *h = slice(buf, 10);
	assert_true(dom_within(h, 10, "a.test"));
	assert_true(dom_within(h, 10, "sip.a.test"));
	assert_false(dom_within(h, 9, "a.test"));     /* "sip.a.tes" */
	assert_false(dom_within(h, 10, "a.test;transport=tls"));
	free(h); h = NULL;

	/* The buffer goes on past hostlen: what follows must not count. */
	assert_false(dom_within("a.tester", 6, "a.tester"));
	assert_true(dom_within("a.tester", 6, "a.test"));
	assert_true(dom_within("x.a.test.evil", 8, "a.test"));
	assert_false(dom_within("x.a.test.evil", 13, "a.test"));

	h = slice("a.test", 6);
	assert_true(dom_within(h, 6, "a.test"));
	assert_false(dom_within(h, 5, "a.test"));
	free(h); h = NULL;
	h = slice(".a.test", 7);
	assert_true(dom_within(h + 1, 6, "a.test"));
	free(h); h = NULL;
}

static void test_eq(void **state)
{
	char *h = slice("Contoso.Test", 12);
	assert_true(dom_eq(h, 12, "contoso.test"));
	assert_false(dom_eq(h, 11, "contoso.test"));
	assert_false(dom_eq(h, 12, "contoso.tes"));
	assert_false(dom_eq(h, 12, "sip.contoso.test"));
	free(h); h = NULL;
	h = slice("sip.contoso.test", 16);
	assert_false(dom_eq(h, 16, "contoso.test"));
	free(h); h = NULL;
	assert_true(dom_eq("contoso.test.evil", 12, "contoso.test"));
	assert_false(dom_eq("contoso\0test", 12, "contoso.test"));
}

/* A host off the wire may end in the root's dot: the same name (RFC 1034 3.1). */
static void test_root_dot(void **state)
{
	char *h = slice("contoso.test.", 13);
	assert_true(dom_eq(h, 13, "contoso.test"));
	assert_true(dom_within(h, 13, "contoso.test"));
	assert_true(dom_user_match("*@contoso.test", "bob", 3, h, 13));
	free(h); h = NULL;
	h = slice("sip.contoso.test.", 17);
	assert_true(dom_within(h, 17, "contoso.test"));
	assert_true(dom_user_match("*@*.contoso.test", "bob", 3, h, 17));
	free(h); h = NULL;
	/* One dot only, and never the whole name. */
	assert_false(dom_eq("contoso.test..", 14, "contoso.test"));
	assert_false(dom_eq(".", 1, ""));
	/* Not names: nothing below a domain. */
	assert_false(dom_user_match("*@*.contoso.test", "bob", 3, ".contoso.test", 13));
	assert_false(dom_user_match("*@*.contoso.test", "bob", 3, "x..contoso.test", 15));
}

static void test_pattern_valid(void **state)
{
	assert_true(dom_user_pattern_valid("alice@contoso.test"));
	assert_true(dom_user_pattern_valid("Alice.Smith+x@contoso.test"));
	assert_true(dom_user_pattern_valid("*@contoso.test"));
	assert_true(dom_user_pattern_valid("*@*.contoso.test"));
	assert_true(dom_user_pattern_valid("alice@*.contoso.test"));

	assert_false(dom_user_pattern_valid(""));
	assert_false(dom_user_pattern_valid("nobody"));
	assert_false(dom_user_pattern_valid("contoso.test"));
	assert_false(dom_user_pattern_valid("@x.test"));
	assert_false(dom_user_pattern_valid("a*@x.test"));
	assert_false(dom_user_pattern_valid("*a@x.test"));
	assert_false(dom_user_pattern_valid("**@x.test"));
	assert_false(dom_user_pattern_valid("a@b@c.test"));
	assert_false(dom_user_pattern_valid("a b@x.test"));
	assert_false(dom_user_pattern_valid("a\tb@x.test"));
	assert_false(dom_user_pattern_valid("<a>@x.test"));
	assert_false(dom_user_pattern_valid("a;b@x.test"));
	assert_false(dom_user_pattern_valid("sip:a@x.test"));
	assert_false(dom_user_pattern_valid("a@"));
	assert_false(dom_user_pattern_valid("a@localhost"));
	assert_false(dom_user_pattern_valid("a@x.test."));
	assert_false(dom_user_pattern_valid("a@198.18.0.1"));
	assert_false(dom_user_pattern_valid("*@*"));
	assert_false(dom_user_pattern_valid("*@*."));
	assert_false(dom_user_pattern_valid("*@*.test"));      /* one label under the wildcard */
	assert_false(dom_user_pattern_valid("*@*.*.x.test"));
	assert_false(dom_user_pattern_valid("*@x*.test"));
	assert_false(dom_user_pattern_valid("*@**.x.test"));
}

/* dom_user_match on slices that are not NUL-terminated. */
static int match(const char *pattern, const char *user, const char *host)
{
	size_t ul = strlen(user), hl = strlen(host);
	char *u = slice(user, ul), *h = slice(host, hl);
	int m = dom_user_match(pattern, u, ul, h, hl);
	free(u); u = NULL;
	free(h); h = NULL;
	return m;
}

static void test_match_exact(void **state)
{
	assert_true(match("alice@contoso.test", "alice", "contoso.test"));
	assert_false(match("alice@contoso.test", "bob", "contoso.test"));
	assert_false(match("alice@contoso.test", "alic", "contoso.test"));
	assert_false(match("alice@contoso.test", "alice2", "contoso.test"));
	assert_false(match("alice@contoso.test", "", "contoso.test"));
	assert_false(match("alice@contoso.test", "alice", "sip.contoso.test"));
	assert_false(match("alice@contoso.test", "alice", "fabrikam.test"));
	/* The user part is case-sensitive (RFC 3261 19.1.4), the host is not. */
	assert_false(match("alice@contoso.test", "Alice", "contoso.test"));
	assert_false(match("Alice@contoso.test", "alice", "contoso.test"));
	assert_true(match("alice@contoso.test", "alice", "CONTOSO.Test"));
	assert_true(match("alice@CONTOSO.TEST", "alice", "contoso.test"));
}

static void test_match_any_user(void **state)
{
	assert_true(match("*@contoso.test", "alice", "contoso.test"));
	assert_true(match("*@contoso.test", "Bob", "Contoso.Test"));
	assert_true(match("*@contoso.test", "*", "contoso.test"));
	/* That domain only, not its subdomains nor look-alikes. */
	assert_false(match("*@contoso.test", "alice", "sip.contoso.test"));
	assert_false(match("*@contoso.test", "alice", "evilcontoso.test"));
	assert_false(match("*@contoso.test", "alice", "contoso.test.evil"));
	assert_false(match("*@contoso.test", "alice", "contoso.tes"));
	/* '*' is a wildcard only as the whole user part. */
	assert_false(match("alice@contoso.test", "*", "contoso.test"));
}

static void test_match_subdomains(void **state)
{
	assert_true(match("*@*.contoso.test", "alice", "sip.contoso.test"));
	assert_true(match("*@*.contoso.test", "alice", "a.b.CONTOSO.test"));
	assert_false(match("*@*.contoso.test", "alice", "contoso.test"));
	assert_false(match("*@*.contoso.test", "alice", "evilcontoso.test"));
	assert_false(match("*@*.contoso.test", "alice", "sip.contoso.test.evil"));
	assert_false(match("*@*.contoso.test", "alice", "fabrikam.test"));
	assert_false(match("*@*.contoso.test", "alice", ""));
	assert_true(match("alice@*.contoso.test", "alice", "eu.contoso.test"));
	assert_false(match("alice@*.contoso.test", "bob", "eu.contoso.test"));
	assert_false(match("alice@*.contoso.test", "alice", "contoso.test"));
}

/* Host slices: the bytes after hostlen are not part of the host. */
static void test_match_slices(void **state)
{
	const char *uri = "alice@contoso.test.evil;transport=tls";
	assert_true(dom_user_match("*@contoso.test", uri, 5, uri + 6, 12));
	assert_true(dom_user_match("alice@contoso.test", uri, 5, uri + 6, 12));
	assert_false(dom_user_match("alice@contoso.test", uri, 5, uri + 6, 17));
	assert_false(dom_user_match("alice@contoso.test", uri, 4, uri + 6, 12));
	assert_false(dom_user_match("nobody", uri, 5, uri + 6, 12));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid_good),
		cmocka_unit_test(test_valid_lengths),
		cmocka_unit_test(test_valid_bad),
		cmocka_unit_test(test_valid_lengths_not_nul),
		cmocka_unit_test(test_within),
		cmocka_unit_test(test_within_slices),
		cmocka_unit_test(test_eq),
		cmocka_unit_test(test_root_dot),
		cmocka_unit_test(test_pattern_valid),
		cmocka_unit_test(test_match_exact),
		cmocka_unit_test(test_match_any_user),
		cmocka_unit_test(test_match_subdomains),
		cmocka_unit_test(test_match_slices),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
