#include "domain.h"

#include <string.h>
#include <strings.h>

static int is_alnum(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

int dom_valid(const char *name, size_t len)
{
	if (len == 0 || len > 253)
		return 0;
	size_t label = 0;
	unsigned labels = 1;
	int all_digits = 1; /* "198.18.0.1" is an address, not a domain */
	for (size_t i = 0; i < len; i++) {
		char c = name[i];
		if (c == '.') {
			if (label == 0 || name[i - 1] == '-')
				return 0;
			label = 0;
			labels++;
			continue;
		}
		if (!is_alnum(c) && c != '-')
			return 0;
		if (c == '-' && label == 0)
			return 0;
		if (c < '0' || c > '9')
			all_digits = 0;
		if (++label > 63)
			return 0;
	}
	return label > 0 && name[len - 1] != '-' && labels >= 2 && !all_digits;
}

/* A name off the wire may end in the root's dot (RFC 1034 3.1): the same name. */
static size_t without_root_dot(const char *name, size_t len)
{
	return len > 1 && name[len - 1] == '.' ? len - 1 : len;
}

int dom_eq(const char *a, size_t alen, const char *b)
{
	alen = without_root_dot(a, alen);
	return strlen(b) == alen && strncasecmp(a, b, alen) == 0;
}

int dom_within(const char *host, size_t hostlen, const char *domain)
{
	size_t dlen = strlen(domain);
	hostlen = without_root_dot(host, hostlen);
	if (hostlen == dlen)
		return strncasecmp(host, domain, dlen) == 0;
	/* A dot must separate the labels: "evilfabrikam.test" is not in "fabrikam.test". */
	return dlen > 0 && hostlen > dlen && host[hostlen - dlen - 1] == '.' &&
	       strncasecmp(host + hostlen - dlen, domain, dlen) == 0;
}

int dom_user_pattern_valid(const char *pattern)
{
	const char *at = strchr(pattern, '@');
	if (!at || at == pattern || strchr(at + 1, '@'))
		return 0;
	size_t ulen = (size_t)(at - pattern);
	if (memchr(pattern, '*', ulen) && !(ulen == 1 && pattern[0] == '*'))
		return 0;
	for (const char *p = pattern; p < at; p++)
		if ((unsigned char)*p <= ' ' || *p == '<' || *p == '>' || *p == ';' || *p == ':')
			return 0;
	const char *host = at + 1;
	if (strncmp(host, "*.", 2) == 0)
		host += 2;
	return dom_valid(host, strlen(host));
}

int dom_user_match(const char *pattern, const char *user, size_t userlen,
                   const char *host, size_t hostlen)
{
	const char *at = strchr(pattern, '@');
	if (!at)
		return 0;
	size_t plen = (size_t)(at - pattern);
	int any_user = plen == 1 && pattern[0] == '*';
	/* User parts are case-sensitive in SIP (RFC 3261 19.1.4). */
	if (!any_user && (plen != userlen || memcmp(pattern, user, userlen) != 0))
		return 0;
	const char *domain = at + 1;
	if (strncmp(domain, "*.", 2) == 0) {
		/* Below the domain, and a name: ".contoso.test" is not a subdomain. */
		size_t dlen = strlen(domain + 2);
		hostlen = without_root_dot(host, hostlen);
		return hostlen > dlen && dom_valid(host, hostlen) && dom_within(host, hostlen, domain + 2);
	}
	return dom_eq(host, hostlen, domain);
}
