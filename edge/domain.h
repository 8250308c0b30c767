/*
 * domain: DNS names and user patterns as the federation policy uses them.
 *
 * Names are compared ASCII case-insensitively. A name off the wire (the
 * slice with a length) may end in the root's dot, "contoso.test.", and is
 * then the same name as "contoso.test"; configured names (NUL-terminated)
 * have no such dot (dom_valid() refuses it). Nothing here allocates.
 */
#ifndef EDGE_DOMAIN_H
#define EDGE_DOMAIN_H

#include <stddef.h>

/*
 * Whether name is a host name a configuration may hold: 1 to 253 bytes,
 * labels of 1 to 63 letters, digits and hyphens (no hyphen at either end),
 * at least two labels, no trailing dot. IP literals are not domains.
 */
int dom_valid(const char *name, size_t len);

/* Whether host equals domain or lies below it ("sip.a.test" in "a.test"). */
int dom_within(const char *host, size_t hostlen, const char *domain);

/* Whether a and b are the same name. */
int dom_eq(const char *a, size_t alen, const char *b);

/*
 * A user pattern of an external access policy: "user@domain" exactly, or
 * "*@domain" for every user of that domain (not of its subdomains), or
 * "*@*.domain" for every user of every subdomain. The user part may not be
 * empty or contain '*' except as the whole user.
 */
int dom_user_pattern_valid(const char *pattern);
int dom_user_match(const char *pattern, const char *user, size_t userlen,
                   const char *host, size_t hostlen);

#endif
