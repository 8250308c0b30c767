/*
 * libFuzzer driver for edge/domain.c, cfg_load_text() and bal_cfg_load_text(): names, user
 * patterns, whole files of edged and balancerd.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bal_cfg.h"
#include "cfg.h"
#include "domain.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
const char *__lsan_default_suppressions(void);

/* libconfig before 1.7.3 leaks a string token on a syntax error (hyperrealm/libconfig#142). */
const char *__lsan_default_suppressions(void)
{
	return "leak:libconfig_yylex\nleak:strbuf_append\n";
}

/* A heap copy of exactly n bytes (and a NUL when nul), so that ASan sees a read past them. */
static char *copy(const uint8_t *p, size_t n, int nul)
{
	size_t cap = n + (size_t)nul;
	char *s = malloc(cap ? cap : 1); /* malloc(0) may return NULL */
	if (!s)
		abort();
	memcpy(s, p, n);
	if (nul)
		s[n] = '\0';
	return s;
}

/* The input: "user@host\ndomain\npattern\n..." for domain.c; all of it as a file for cfg.c. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *line[3], *end = data + size, *p = data;
	size_t len[3];
	for (int i = 0; i < 3; i++) {
		const uint8_t *nl = memchr(p, '\n', (size_t)(end - p));
		line[i] = p;
		len[i] = (size_t)((nl ? nl : end) - p);
		p = nl ? nl + 1 : end;
	}
	const uint8_t *at = memchr(line[0], '@', len[0]);
	size_t ulen = at ? (size_t)(at - line[0]) : 0, hlen = at ? len[0] - ulen - 1 : len[0];
	char *user = copy(line[0], ulen, 0), *host = copy(at ? at + 1 : line[0], hlen, 0);
	char *domain = copy(line[1], len[1], 1), *pattern = copy(line[2], len[2], 1);

	int valid = dom_valid(host, hlen);
	/* Equal names lie within each other; a valid name has no room for a NUL. */
	if (dom_eq(host, hlen, domain) && !dom_within(host, hlen, domain))
		abort();
	if (valid && memchr(host, '\0', hlen))
		abort();
	dom_user_pattern_valid(pattern);
	dom_user_match(pattern, user, ulen, host, hlen); /* valid or not: it must not crash */
	free(user); user = NULL;
	free(host); host = NULL;
	free(domain); domain = NULL;
	free(pattern); pattern = NULL;

	/* CFGU_NUMERIC_ONLY: no DNS. @include would read files of the machine: not ours to fuzz. */
	char *text = copy(data, size, 1);
	struct edge_cfg *cfg = NULL;
	struct bal_cfg *bcfg = NULL;
	char err[512];
	if (!strstr(text, "@include")) {
		if (cfg_load_text(text, "fuzz", CFGU_NUMERIC_ONLY, &cfg, err, sizeof(err)) == 0)
			cfg_free(cfg);
		if (bal_cfg_load_text(text, "fuzz", CFGU_NUMERIC_ONLY, &bcfg, err, sizeof(err)) == 0)
			bal_cfg_free(bcfg);
	}
	free(text); text = NULL;
	return 0;
}
