#include "cfg.h"

#include <arpa/inet.h>
#include <errno.h>
#include <libconfig.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "clu_crypt.h"
#include "clu_msg.h"
#include "domain.h"

/* What a failed check reports: the line of the setting that is wrong. */
struct loader {
	struct edge_cfg *cfg;
	config_t *lc;
	char *err;
	size_t errlen;
	int flags;                /* CFG_NUMERIC_ONLY */
};

__attribute__((format(printf, 3, 4)))
static int fail(struct loader *ld, const config_setting_t *at, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	unsigned line = at ? config_setting_source_line(at) : 0;
	snprintf(ld->err, ld->errlen, "%s:%u: %s", ld->cfg->source, line, why);
	return -1;
}

static const config_setting_t *setting(const config_setting_t *group, const char *name)
{
	return group ? config_setting_get_member(group, name) : NULL;
}

/*
 * Checks that group, when present, is a group of known settings only:
 * libconfig accepts any name, and a misspelt setting must not be silently
 * ignored.
 */
static int check_members(struct loader *ld, const config_setting_t *group,
                         const char *const *known)
{
	if (group && !config_setting_is_group(group)) {
		const char *name = config_setting_name(group);
		return fail(ld, group, "'%s' must be a group { ... }", name ? name : "each element");
	}
	for (int i = 0; group && i < config_setting_length(group); i++) {
		const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
		const char *name = config_setting_name(s);
		const char *const *k = known;
		while (*k && strcmp(*k, name) != 0)
			k++;
		if (!*k)
			return fail(ld, s, "unknown setting '%s'", name);
	}
	return 0;
}

static int get_string(struct loader *ld, const config_setting_t *group, const char *name,
                      const char *def, const char **out)
{
	const config_setting_t *s = setting(group, name);
	if (!s) {
		if (!def)
			return fail(ld, group, "'%s' is required", name);
		*out = def;
		return 0;
	}
	const char *v = config_setting_get_string(s);
	if (!v)
		return fail(ld, s, "'%s' must be a string", name);
	if (!*v)
		return fail(ld, s, "'%s' must not be empty", name);
	*out = v;
	return 0;
}

static int get_uint(struct loader *ld, const config_setting_t *group, const char *name,
                    long long min, long long max, long long def, unsigned *out)
{
	const config_setting_t *s = setting(group, name);
	if (!s) {
		*out = (unsigned)def;
		return 0;
	}
	int type = config_setting_type(s);
	if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
		return fail(ld, s, "'%s' must be an integer", name);
	long long v = config_setting_get_int64(s);
	if (v < min || v > max)
		return fail(ld, s, "'%s' = %lld is out of range %lld-%lld", name, v, min, max);
	*out = (unsigned)v;
	return 0;
}

static int get_bool(struct loader *ld, const config_setting_t *group, const char *name,
                    int def, int *out)
{
	const config_setting_t *s = setting(group, name);
	if (!s) {
		*out = def;
		return 0;
	}
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return fail(ld, s, "'%s' must be true or false", name);
	*out = config_setting_get_bool(s);
	return 0;
}

/* A list or array of non-empty strings. */
static int get_strings(struct loader *ld, const config_setting_t *group, const char *name,
                       int required, const char ***out, unsigned *n)
{
	const config_setting_t *s = setting(group, name);
	*out = NULL;
	*n = 0;
	if (!s)
		return required ? fail(ld, group, "'%s' is required", name) : 0;
	if (!config_setting_is_aggregate(s))
		return fail(ld, s, "'%s' must be a list of strings", name);
	int count = config_setting_length(s);
	if (required && count == 0)
		return fail(ld, s, "'%s' must not be empty", name);
	*out = calloc((size_t)count + 1, sizeof(**out));
	if (!*out)
		return fail(ld, s, "out of memory");
	for (int i = 0; i < count; i++) {
		const char *v = config_setting_get_string_elem(s, i);
		if (!v || !*v)
			return fail(ld, s, "'%s' element %d must be a non-empty string", name, i + 1);
		(*out)[i] = v;
	}
	*n = (unsigned)count;
	return 0;
}

static int parse_numeric(const char *address, uint16_t port, struct cfg_addr *out)
{
	struct addrinfo hints = { .ai_flags = AI_NUMERICHOST | AI_NUMERICSERV,
	                          .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai;
	char service[8];
	snprintf(service, sizeof(service), "%u", port);
	if (getaddrinfo(address, service, &hints, &ai) != 0)
		return -1;
	memcpy(&out->sa, ai->ai_addr, ai->ai_addrlen);
	out->salen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

/* Resolves a name once, at load time; later DNS is the resolver module's job. */
static int resolve(struct loader *ld, const config_setting_t *at, const char *host,
                   uint16_t port, struct cfg_addr *out)
{
	if (parse_numeric(host, port, out) == 0)
		return 0;
	if (ld->flags & CFG_NUMERIC_ONLY)
		return fail(ld, at, "'%s' is not a numeric address", host);
	struct addrinfo hints = { .ai_flags = AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai;
	char service[8];
	snprintf(service, sizeof(service), "%u", port);
	int rc = getaddrinfo(host, service, &hints, &ai);
	if (rc != 0)
		return fail(ld, at, "cannot resolve '%s': %s", host, gai_strerror(rc));
	memcpy(&out->sa, ai->ai_addr, ai->ai_addrlen);
	out->salen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

static int get_transport(struct loader *ld, const config_setting_t *group, int *tls)
{
	const char *t;
	if (get_string(ld, group, "transport", "tcp", &t) < 0)
		return -1;
	if (strcmp(t, "tcp") == 0)
		*tls = 0;
	else if (strcmp(t, "tls") == 0)
		*tls = 1;
	else
		return fail(ld, setting(group, "transport"),
		            "unknown transport '%s' (tcp or tls)", t);
	return 0;
}

static int load_listeners(struct loader *ld, const config_setting_t *side, int external,
                          struct cfg_listen **out, unsigned *n)
{
	const config_setting_t *list = setting(side, "listen");
	if (!list || !config_setting_is_list(list) || config_setting_length(list) == 0)
		return fail(ld, list ? list : side, "'listen' must be a non-empty list of listeners");
	int count = config_setting_length(list);
	*out = calloc((size_t)count, sizeof(**out));
	if (!*out)
		return fail(ld, list, "out of memory");
	*n = (unsigned)count;
	for (int i = 0; i < count; i++) {
		const config_setting_t *l = config_setting_get_elem(list, (unsigned)i);
		struct cfg_listen *o = &(*out)[i];
		unsigned port;
		static const char *const listener_keys[] = { "address", "port", "transport", NULL };
		if (!config_setting_is_group(l))
			return fail(ld, l, "a listener is a group { address = ...; port = ...; }");
		if (check_members(ld, l, listener_keys) < 0)
			return -1;
		if (get_string(ld, l, "address", NULL, &o->address) < 0 ||
		    get_uint(ld, l, "port", 1, 65535, 0, &port) < 0)
			return -1;
		if (port == 0)
			return fail(ld, l, "'port' is required");
		o->port = (uint16_t)port;
		if (external) {
			o->tls = 1;
			if (setting(l, "transport"))
				return fail(ld, setting(l, "transport"),
				            "the external side is always mutual TLS: remove 'transport'");
		} else if (get_transport(ld, l, &o->tls) < 0) {
			return -1;
		}
		if (parse_numeric(o->address, o->port, &o->addr) < 0)
			return fail(ld, setting(l, "address"),
			            "'%s' is not a numeric IPv4 or IPv6 address", o->address);
	}
	return 0;
}

/* One of Lync's VerificationLevel names. */
static int get_verification(struct loader *ld, const config_setting_t *group, const char *name,
                            enum cfg_verification def, enum cfg_verification *out)
{
	static const char *const names[] = { "UseSourceVerification", "AlwaysVerifiable",
	                                     "AlwaysUnverifiable" };
	const char *v;
	if (get_string(ld, group, name, names[def], &v) < 0)
		return -1;
	for (unsigned i = 0; i < 3; i++)
		if (strcasecmp(v, names[i]) == 0) {
			*out = (enum cfg_verification)i;
			return 0;
		}
	return fail(ld, setting(group, name), "unknown %s '%s' (UseSourceVerification, "
	            "AlwaysVerifiable or AlwaysUnverifiable)", name, v);
}

static int get_domain(struct loader *ld, const config_setting_t *group, const char *name,
                      const char **out)
{
	if (get_string(ld, group, name, NULL, out) < 0)
		return -1;
	if (!dom_valid(*out, strlen(*out)))
		return fail(ld, setting(group, name), "'%s' is not a valid domain name", *out);
	return 0;
}

/*
 * A server: `fqdn_key` (the name its certificate must carry), an optional
 * numeric `address` and `port`. Without the fqdn (when not required) the
 * server is found by DNS SRV. Names are resolved when used, not here.
 */
static int load_server(struct loader *ld, const config_setting_t *group, const char *fqdn_key,
                       int required, struct cfg_server *out)
{
	unsigned port;
	out->fqdn = NULL;
	if ((required || setting(group, fqdn_key)) && get_domain(ld, group, fqdn_key, &out->fqdn) < 0)
		return -1;
	if (get_string(ld, group, "address", "", &out->address) < 0 ||
	    get_uint(ld, group, "port", 1, 65535, 5061, &port) < 0)
		return -1;
	out->port = (uint16_t)port;
	if (!out->fqdn && (setting(group, "address") || setting(group, "port")))
		return fail(ld, group, "'address' and 'port' need '%s'", fqdn_key);
	if (out->fqdn && strcasecmp(out->fqdn, ld->cfg->pool_fqdn) == 0)
		return fail(ld, setting(group, fqdn_key), "'%s' is our own pool_fqdn", out->fqdn);
	if (*out->address && parse_numeric(out->address, out->port, &out->addr) < 0)
		return fail(ld, setting(group, "address"),
		            "'%s' is not a numeric IPv4 or IPv6 address", out->address);
	return 0;
}

/*
 * The list of groups `name` of the root and its length: 0 when absent, an
 * error when not a list of groups.
 */
static int get_group_list(struct loader *ld, const config_setting_t *root, const char *name,
                          const config_setting_t **out, unsigned *n)
{
	*out = setting(root, name);
	*n = 0;
	if (!*out)
		return 0;
	if (!config_setting_is_list(*out))
		return fail(ld, *out, "'%s' must be a list ( {...}, {...} )", name);
	int count = config_setting_length(*out);
	for (int i = 0; i < count; i++)
		if (!config_setting_is_group(config_setting_get_elem(*out, (unsigned)i)))
			return fail(ld, config_setting_get_elem(*out, (unsigned)i),
			            "each element of '%s' is a group { ... }", name);
	*n = (unsigned)count;
	return 0;
}

/* calloc for n elements (and one more, so that no count gives NULL). */
static int alloc_array(struct loader *ld, const config_setting_t *at, void **out, unsigned n,
                       size_t size)
{
	*out = calloc((size_t)n + 1, size);
	return *out ? 0 : fail(ld, at, "out of memory");
}

/*
 * Every domain the configuration names must have one meaning: ours,
 * allowed, blocked, or routed to one provider. Returns what `domain`
 * already is, or NULL.
 */
static const char *domain_claimed(const struct edge_cfg *cfg, const char *domain,
                                  const void *self)
{
	for (unsigned i = 0; i < cfg->nsip_domains; i++)
		if (strcasecmp(cfg->sip_domains[i], domain) == 0)
			return "one of node.sip_domains";
	for (unsigned i = 0; i < cfg->nallowed; i++)
		if (&cfg->allowed[i] != self && cfg->allowed[i].domain &&
		    strcasecmp(cfg->allowed[i].domain, domain) == 0)
			return "an allowed domain";
	for (unsigned i = 0; i < cfg->nblocked; i++)
		if (&cfg->blocked[i] != self && cfg->blocked[i].domain &&
		    strcasecmp(cfg->blocked[i].domain, domain) == 0)
			return "a blocked domain";
	for (unsigned i = 0; i < cfg->nproviders; i++)
		for (unsigned d = 0; d < cfg->providers[i].ndomains; d++)
			if (&cfg->providers[i].domains[d] != self &&
			    strcasecmp(cfg->providers[i].domains[d], domain) == 0)
				return "a provider's domain";
	return NULL;
}

static int load_allowed(struct loader *ld, const config_setting_t *root)
{
	struct edge_cfg *cfg = ld->cfg;
	const config_setting_t *list;
	static const char *const keys[] = { "domain", "proxy_fqdn", "address", "port",
	                                    "mark_for_monitoring", "comment",
	                                    "verification_level", NULL };
	unsigned n;
	if (get_group_list(ld, root, "allowed_domains", &list, &n) < 0 ||
	    alloc_array(ld, list, (void **)&cfg->allowed, n, sizeof(*cfg->allowed)) < 0)
		return -1;
	cfg->nallowed = n;
	for (unsigned i = 0; i < cfg->nallowed; i++) {
		const config_setting_t *g = config_setting_get_elem(list, i);
		struct cfg_allowed_domain *a = &cfg->allowed[i];
		const char *what;
		if (check_members(ld, g, keys) < 0 || get_domain(ld, g, "domain", &a->domain) < 0 ||
		    load_server(ld, g, "proxy_fqdn", 0, &a->server) < 0 ||
		    get_bool(ld, g, "mark_for_monitoring", 0, &a->mark_for_monitoring) < 0 ||
		    get_string(ld, g, "comment", "", &a->comment) < 0 ||
		    get_verification(ld, g, "verification_level", CFG_VERIFY_USE_SOURCE,
		                     &a->verification) < 0)
			return -1;
		if ((what = domain_claimed(cfg, a->domain, a)) != NULL)
			return fail(ld, setting(g, "domain"), "allowed domain '%s' is also %s",
			            a->domain, what);
	}
	return 0;
}

static int load_blocked(struct loader *ld, const config_setting_t *root)
{
	struct edge_cfg *cfg = ld->cfg;
	const config_setting_t *list;
	static const char *const keys[] = { "domain", "comment", NULL };
	unsigned n;
	if (get_group_list(ld, root, "blocked_domains", &list, &n) < 0 ||
	    alloc_array(ld, list, (void **)&cfg->blocked, n, sizeof(*cfg->blocked)) < 0)
		return -1;
	cfg->nblocked = n;
	for (unsigned i = 0; i < cfg->nblocked; i++) {
		const config_setting_t *g = config_setting_get_elem(list, i);
		struct cfg_blocked_domain *b = &cfg->blocked[i];
		const char *what;
		if (check_members(ld, g, keys) < 0 || get_domain(ld, g, "domain", &b->domain) < 0 ||
		    get_string(ld, g, "comment", "", &b->comment) < 0)
			return -1;
		if ((what = domain_claimed(cfg, b->domain, b)) != NULL)
			return fail(ld, setting(g, "domain"), "blocked domain '%s' is also %s",
			            b->domain, what);
	}
	return 0;
}

static int load_providers(struct loader *ld, const config_setting_t *root)
{
	struct edge_cfg *cfg = ld->cfg;
	const config_setting_t *hosting, *public;
	unsigned nh, np;
	static const char *const hosting_keys[] = { "identity", "proxy_fqdn", "address", "port",
	                                            "domains", "enabled",
	                                            "enabled_shared_address_space",
	                                            "hosts_ocs_users", "verification_level", NULL };
	static const char *const public_keys[] = { "identity", "proxy_fqdn", "address", "port",
	                                           "domains", "enabled", "verification_level", NULL };
	/* One array, hosting providers first: both kinds are looked up alike. */
	if (get_group_list(ld, root, "hosting_providers", &hosting, &nh) < 0 ||
	    get_group_list(ld, root, "public_providers", &public, &np) < 0 ||
	    alloc_array(ld, root, (void **)&cfg->providers, nh + np, sizeof(*cfg->providers)) < 0)
		return -1;
	cfg->nproviders = nh + np;
	for (unsigned i = 0; i < cfg->nproviders; i++) {
		int is_hosting = i < nh;
		const config_setting_t *g = config_setting_get_elem(is_hosting ? hosting : public,
		                                                    is_hosting ? i : i - nh);
		struct cfg_provider *o = &cfg->providers[i];
		o->kind = is_hosting ? CFG_HOSTING_PROVIDER : CFG_PUBLIC_PROVIDER;
		if (check_members(ld, g, is_hosting ? hosting_keys : public_keys) < 0 ||
		    get_string(ld, g, "identity", NULL, &o->identity) < 0 ||
		    load_server(ld, g, "proxy_fqdn", 1, &o->server) < 0 ||
		    get_strings(ld, g, "domains", 0, &o->domains, &o->ndomains) < 0 ||
		    get_bool(ld, g, "enabled", 1, &o->enabled) < 0 ||
		    get_bool(ld, g, "enabled_shared_address_space", 0, &o->shared_address_space) < 0 ||
		    get_bool(ld, g, "hosts_ocs_users", 0, &o->hosts_ocs_users) < 0 ||
		    get_verification(ld, g, "verification_level",
		                     is_hosting ? CFG_VERIFY_ALWAYS_VERIFIABLE : CFG_VERIFY_USE_SOURCE,
		                     &o->verification) < 0)
			return -1;
		for (unsigned q = 0; q < i; q++) {
			if (strcmp(cfg->providers[q].identity, o->identity) == 0)
				return fail(ld, setting(g, "identity"), "provider identity '%s' is used twice",
				            o->identity);
			if (strcasecmp(cfg->providers[q].server.fqdn, o->server.fqdn) == 0)
				return fail(ld, setting(g, "proxy_fqdn"),
				            "proxy_fqdn '%s' is already provider '%s'", o->server.fqdn,
				            cfg->providers[q].identity);
		}
		for (unsigned d = 0; d < o->ndomains; d++) {
			const char *what;
			if (!dom_valid(o->domains[d], strlen(o->domains[d])))
				return fail(ld, setting(g, "domains"), "'%s' is not a valid domain name",
				            o->domains[d]);
			if ((what = domain_claimed(cfg, o->domains[d], &o->domains[d])) != NULL)
				return fail(ld, setting(g, "domains"), "provider domain '%s' is also %s",
				            o->domains[d], what);
		}
	}
	return 0;
}

/* The external access policies; the global one goes first, all false when absent. */
static int load_policies(struct loader *ld, const config_setting_t *root)
{
	struct edge_cfg *cfg = ld->cfg;
	const config_setting_t *list;
	static const char *const keys[] = { "identity", "users", "enable_federation_access",
	                                    "enable_xmpp_access", "enable_public_cloud_access",
	                                    "enable_outside_access", NULL };
	unsigned count;
	if (get_group_list(ld, root, "external_access_policies", &list, &count) < 0 ||
	    alloc_array(ld, root, (void **)&cfg->policies, count, sizeof(*cfg->policies)) < 0)
		return -1;
	cfg->policies[0].identity = "global";
	cfg->npolicies = 1;
	int have_global = 0;
	for (unsigned i = 0; i < count; i++) {
		const config_setting_t *g = config_setting_get_elem(list, i);
		const char *identity;
		if (check_members(ld, g, keys) < 0 || get_string(ld, g, "identity", NULL, &identity) < 0)
			return -1;
		int global = strcmp(identity, "global") == 0;
		if (global && have_global)
			return fail(ld, setting(g, "identity"), "policy 'global' is defined twice");
		for (unsigned q = 1; q < cfg->npolicies; q++)
			if (strcmp(cfg->policies[q].identity, identity) == 0)
				return fail(ld, setting(g, "identity"), "policy '%s' is defined twice", identity);
		struct cfg_access_policy *o = global ? &cfg->policies[0] : &cfg->policies[cfg->npolicies++];
		have_global |= global;
		o->identity = identity;
		if (global && setting(g, "users"))
			return fail(ld, setting(g, "users"), "the global policy applies to every user: "
			            "remove 'users'");
		if (!global && get_strings(ld, g, "users", 1, &o->users, &o->nusers) < 0)
			return -1;
		for (unsigned u = 0; u < o->nusers; u++)
			if (!dom_user_pattern_valid(o->users[u]))
				return fail(ld, setting(g, "users"), "'%s' is not a user pattern "
				            "(user@domain, *@domain or *@*.domain)", o->users[u]);
		if (get_bool(ld, g, "enable_federation_access", 0, &o->federation) < 0 ||
		    get_bool(ld, g, "enable_xmpp_access", 0, &o->xmpp) < 0 ||
		    get_bool(ld, g, "enable_public_cloud_access", 0, &o->public_cloud) < 0 ||
		    get_bool(ld, g, "enable_outside_access", 0, &o->outside) < 0)
			return -1;
	}
	return 0;
}

static int load_access_edge(struct loader *ld, const config_setting_t *root)
{
	struct cfg_access_edge *e = &ld->cfg->edge;
	const config_setting_t *g = setting(root, "access_edge");
	const config_setting_t *route = setting(g, "default_route");
	static const char *const keys[] = {
		"allow_federated_users", "enable_partner_discovery", "routing", "default_route",
		"mark_source_verifiable_on_outgoing_messages", "enable_archiving_disclaimer",
		"outgoing_tls_count", "discovered_partner_standard_rate",
		"max_contacts_per_discovered_partner", "enable_discovered_partner_contacts_limit",
		"discovered_partner_report_period_minutes", "discovered_partner_verification_level",
		NULL };
	static const char *const route_keys[] = { "fqdn", "address", "port", "verification_level",
	                                          "is_public_provider", NULL };
	const char *routing;
	if (check_members(ld, g, keys) < 0 || check_members(ld, route, route_keys) < 0 ||
	    get_bool(ld, g, "allow_federated_users", 0, &e->allow_federated_users) < 0 ||
	    get_bool(ld, g, "enable_partner_discovery", 0, &e->enable_partner_discovery) < 0 ||
	    get_string(ld, g, "routing", "dns_srv", &routing) < 0 ||
	    get_bool(ld, g, "mark_source_verifiable_on_outgoing_messages", 1,
	             &e->mark_source_verifiable) < 0 ||
	    get_bool(ld, g, "enable_archiving_disclaimer", 0, &e->archiving_disclaimer) < 0 ||
	    get_uint(ld, g, "outgoing_tls_count", 1, 4, 4, &e->outgoing_tls_count) < 0 ||
	    get_uint(ld, g, "discovered_partner_standard_rate", 1, 100000, 20,
	             &e->discovered_rate) < 0 ||
	    get_uint(ld, g, "max_contacts_per_discovered_partner", 1, 1000000, 1000,
	             &e->discovered_max_contacts) < 0 ||
	    get_bool(ld, g, "enable_discovered_partner_contacts_limit", 1,
	             &e->discovered_contacts_limit) < 0 ||
	    get_uint(ld, g, "discovered_partner_report_period_minutes", 1, 1440, 60,
	             &e->discovered_report_period_min) < 0 ||
	    get_verification(ld, g, "discovered_partner_verification_level", CFG_VERIFY_USE_SOURCE,
	                     &e->discovered_verification) < 0)
		return -1;
	if (strcmp(routing, "dns_srv") == 0)
		e->use_default_route = 0;
	else if (strcmp(routing, "default_route") == 0)
		e->use_default_route = 1;
	else
		return fail(ld, setting(g, "routing"), "unknown routing '%s' (dns_srv or default_route)",
		            routing);
	if (e->use_default_route && !route)
		return fail(ld, setting(g, "routing"), "routing \"default_route\" needs "
		            "'default_route' = { fqdn = ...; }");
	if (route && !e->use_default_route)
		return fail(ld, route, "'default_route' is only used with routing = \"default_route\"");
	if (route && (load_server(ld, route, "fqdn", 1, &e->default_route) < 0 ||
	              get_verification(ld, route, "verification_level", CFG_VERIFY_ALWAYS_VERIFIABLE,
	                               &e->default_route_verification) < 0 ||
	              get_bool(ld, route, "is_public_provider", 0,
	                       &e->default_route_is_public_provider) < 0))
		return -1;
	if (e->use_default_route && e->enable_partner_discovery)
		return fail(ld, setting(g, "enable_partner_discovery"), "partner discovery needs "
		            "routing = \"dns_srv\": with a default route every request goes there");
	return 0;
}

/* "host:port" or "[v6]:port", numeric. */
static int parse_hostport(const char *s, struct cfg_addr *out)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s)
		return -1;
	size_t hlen = (size_t)(colon - s);
	if (s[0] == '[') {
		if (hlen < 3 || s[hlen - 1] != ']')
			return -1;
		s++;
		hlen -= 2;
	}
	if (hlen >= sizeof(host))
		return -1;
	memcpy(host, s, hlen);
	host[hlen] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port < 1 || port > 65535)
		return -1;
	return parse_numeric(host, (uint16_t)port, out);
}

static int load_cluster(struct loader *ld, const config_setting_t *root)
{
	const config_setting_t *g = setting(root, "cluster");
	static const char *const keys[] = { "name", "address", "port", "keys", "join",
	                                    "probe_interval_ms", "probe_timeout_ms",
	                                    "gossip_interval_ms", "pushpull_interval_s",
	                                    "suspicion_mult", "indirect_checks", "retransmit_mult",
	                                    "replication", "replication_timeout_ms", NULL };
	if (!g)
		return 0;
	if (check_members(ld, g, keys) < 0)
		return -1;
	struct cfg_cluster *c = calloc(1, sizeof(*c));
	if (!c)
		return fail(ld, g, "out of memory");
	ld->cfg->cluster = c;
	const char *address, **keytexts, **joins;
	unsigned port, nkeys, njoin;
	if (get_string(ld, g, "name", NULL, &c->name) < 0 ||
	    get_string(ld, g, "address", NULL, &address) < 0 ||
	    get_uint(ld, g, "port", 1, 65535, 7946, &port) < 0)
		return -1;
	if (!clu_name_valid(c->name))
		return fail(ld, setting(g, "name"), "'%s' is not a node name (letters, digits, '.', "
		            "'-', '_')", c->name);
	if (parse_numeric(address, (uint16_t)port, &c->addr) < 0)
		return fail(ld, setting(g, "address"), "'%s' is not a numeric IPv4 or IPv6 address",
		            address);
	int rc = get_strings(ld, g, "keys", 1, &keytexts, &nkeys);
	if (rc == 0 && nkeys > CLU_MAX_KEYS)
		rc = fail(ld, setting(g, "keys"), "at most %d keys", CLU_MAX_KEYS);
	if (rc == 0 && !(c->keys = calloc(nkeys, sizeof(*c->keys))))
		rc = fail(ld, g, "out of memory");
	for (unsigned i = 0; rc == 0 && i < nkeys; i++, c->nkeys++)
		if (clu_key_parse(keytexts[i], c->keys[i]) < 0)
			rc = fail(ld, setting(g, "keys"), "key %u is not 32 bytes in base64 "
			          "(openssl rand -base64 32)", i + 1);
	free(keytexts);
	if (rc < 0)
		return -1;
	if (get_strings(ld, g, "join", 0, &joins, &njoin) < 0)
		return -1;
	if (njoin && !(c->join = calloc(njoin, sizeof(*c->join))))
		rc = fail(ld, g, "out of memory");
	for (unsigned i = 0; rc == 0 && i < njoin; i++, c->njoin++)
		if (parse_hostport(joins[i], &c->join[i]) < 0)
			rc = fail(ld, setting(g, "join"), "'%s' is not a numeric address:port", joins[i]);
	free(joins);
	if (rc < 0)
		return -1;
	const char *mode;
	if (get_string(ld, g, "replication", "async", &mode) < 0 ||
	    get_uint(ld, g, "replication_timeout_ms", 10, 10000, 500, &c->replication_timeout_ms) < 0)
		return -1;
	if (strcmp(mode, "sync") == 0)
		c->sync_dialogs = 1;
	else if (strcmp(mode, "async") != 0)
		return fail(ld, setting(g, "replication"), "unknown replication '%s' (async or sync)",
		            mode);
	return get_uint(ld, g, "probe_interval_ms", 50, 60000, 1000, &c->probe_interval_ms) < 0 ||
	       get_uint(ld, g, "probe_timeout_ms", 10, 60000, 500, &c->probe_timeout_ms) < 0 ||
	       get_uint(ld, g, "gossip_interval_ms", 10, 60000, 200, &c->gossip_interval_ms) < 0 ||
	       get_uint(ld, g, "pushpull_interval_s", 1, 86400, 30, &c->pushpull_interval_s) < 0 ||
	       get_uint(ld, g, "suspicion_mult", 1, 100, 4, &c->suspicion_mult) < 0 ||
	       get_uint(ld, g, "indirect_checks", 0, 8, 3, &c->indirect_checks) < 0 ||
	       get_uint(ld, g, "retransmit_mult", 1, 100, 4, &c->retransmit_mult) < 0
	       ? -1 : 0;
}

static int load_dns(struct loader *ld, const config_setting_t *root)
{
	struct cfg_dns *d = &ld->cfg->dns;
	const config_setting_t *g = setting(root, "dns");
	static const char *const keys[] = { "server", "port", "timeout_ms", "tries",
	                                    "cache_record_count", "max_pending_lookups", NULL };
	unsigned port;
	if (check_members(ld, g, keys) < 0 ||
	    get_uint(ld, g, "port", 1, 65535, 53, &port) < 0 ||
	    get_uint(ld, g, "timeout_ms", 100, 60000, 2000, &d->timeout_ms) < 0 ||
	    get_uint(ld, g, "tries", 1, 10, 2, &d->tries) < 0 ||
	    get_uint(ld, g, "cache_record_count", 0, 1000000, 3000, &d->cache_records) < 0 ||
	    get_uint(ld, g, "max_pending_lookups", 1, 1000000, 4096, &d->max_pending) < 0)
		return -1;
	d->port = (uint16_t)port;
	if (setting(g, "server")) {
		if (get_string(ld, g, "server", NULL, &d->server) < 0)
			return -1;
		if (parse_numeric(d->server, d->port, &d->addr) < 0)
			return fail(ld, setting(g, "server"), "'%s' is not a numeric IPv4 or IPv6 address",
			            d->server);
	}
	return 0;
}

static int load(struct loader *ld)
{
	struct edge_cfg *cfg = ld->cfg;
	const config_setting_t *root = config_root_setting(ld->lc);
	const config_setting_t *node = setting(root, "node");
	const config_setting_t *logs = setting(root, "log");
	const config_setting_t *tls = setting(root, "tls");
	const config_setting_t *internal = setting(root, "internal");
	const config_setting_t *external = setting(root, "external");
	const config_setting_t *limits = setting(root, "limits");
	static const char *const known[] = { "node", "log", "tls", "internal", "external",
	                                     "access_edge", "allowed_domains", "blocked_domains",
	                                     "hosting_providers", "public_providers",
	                                     "external_access_policies", "dns", "cluster",
	                                     "limits", "status" };

	/* A misspelt section would otherwise be ignored silently. */
	for (int i = 0; i < config_setting_length(root); i++) {
		const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
		size_t k = 0;
		while (k < sizeof(known) / sizeof(known[0]) && strcmp(known[k], config_setting_name(s)))
			k++;
		if (k == sizeof(known) / sizeof(known[0]))
			return fail(ld, s, "unknown section '%s'", config_setting_name(s));
	}
	if (!node)
		return fail(ld, root, "section 'node' is required");
	if (!tls)
		return fail(ld, root, "section 'tls' is required");
	if (!internal)
		return fail(ld, root, "section 'internal' is required");
	if (!external)
		return fail(ld, root, "section 'external' is required");

	static const char *const node_keys[] = { "pool_fqdn", "sip_domains", NULL };
	static const char *const log_keys[] = { "level", "syslog", NULL };
	static const char *const tls_keys[] = { "ca_file", "cert_file", "key_file", NULL };
	static const char *const internal_keys[] = { "listen", "next_hop", "max_message_kb", "pool_fqdn",
	                                             NULL };
	static const char *const hop_keys[] = { "host", "fqdn", "port", "transport", NULL };
	static const char *const external_keys[] = { "listen", "max_message_kb", NULL };
	static const char *const status_keys[] = { "address", "port", NULL };
	static const char *const limits_keys[] = { "max_connections", "max_headers",
	                                           "max_line_bytes",
	                                           "connect_timeout_ms", "max_keep_alive_interval_s",
	                                           "enable_white_space_keep_alive",
	                                           "drain_timeout_s", NULL };
	if (check_members(ld, node, node_keys) < 0 || check_members(ld, logs, log_keys) < 0 ||
	    check_members(ld, tls, tls_keys) < 0 || check_members(ld, internal, internal_keys) < 0 ||
	    check_members(ld, setting(internal, "next_hop"), hop_keys) < 0 ||
	    check_members(ld, external, external_keys) < 0 ||
	    check_members(ld, setting(root, "status"), status_keys) < 0 ||
	    check_members(ld, limits, limits_keys) < 0)
		return -1;

	if (get_domain(ld, node, "pool_fqdn", &cfg->pool_fqdn) < 0 ||
	    get_strings(ld, node, "sip_domains", 1, &cfg->sip_domains, &cfg->nsip_domains) < 0)
		return -1;
	for (unsigned i = 0; i < cfg->nsip_domains; i++)
		if (!dom_valid(cfg->sip_domains[i], strlen(cfg->sip_domains[i])))
			return fail(ld, setting(node, "sip_domains"), "'%s' is not a valid domain name",
			            cfg->sip_domains[i]);

	const char *level;
	if (get_string(ld, logs, "level", "info", &level) < 0 ||
	    get_bool(ld, logs, "syslog", 0, &cfg->log_syslog) < 0)
		return -1;
	if (log_level_from_str(level, &cfg->log_level) < 0)
		return fail(ld, setting(logs, "level"),
		            "unknown log level '%s' (error, warning, notice, info, debug)", level);

	if (get_string(ld, tls, "ca_file", NULL, &cfg->ca_file) < 0 ||
	    get_string(ld, tls, "cert_file", NULL, &cfg->cert_file) < 0 ||
	    get_string(ld, tls, "key_file", NULL, &cfg->key_file) < 0)
		return -1;
	cfg->tls_lines[0] = config_setting_source_line(setting(tls, "ca_file"));
	cfg->tls_lines[1] = config_setting_source_line(setting(tls, "cert_file"));
	cfg->tls_lines[2] = config_setting_source_line(setting(tls, "key_file"));

	unsigned kb, port;
	if (load_listeners(ld, internal, 0, &cfg->internal_listen, &cfg->ninternal_listen) < 0 ||
	    get_uint(ld, internal, "max_message_kb", 64, 256, 128, &kb) < 0 ||
	    (setting(internal, "pool_fqdn") &&
	     get_domain(ld, internal, "pool_fqdn", &cfg->internal_pool_fqdn) < 0))
		return -1;
	cfg->internal_max_msg = (size_t)kb * 1024;

	const config_setting_t *hop = setting(internal, "next_hop");
	if (!hop || !config_setting_is_group(hop))
		return fail(ld, hop ? hop : internal, "'next_hop' = { host = ...; port = ...; } is required");
	if (get_string(ld, hop, "host", NULL, &cfg->next_hop.host) < 0 ||
	    get_string(ld, hop, "fqdn", cfg->next_hop.host, &cfg->next_hop.fqdn) < 0 ||
	    get_uint(ld, hop, "port", 1, 65535, 5061, &port) < 0 ||
	    get_transport(ld, hop, &cfg->next_hop.tls) < 0)
		return -1;
	cfg->next_hop.port = (uint16_t)port;
	if (resolve(ld, hop, cfg->next_hop.host, cfg->next_hop.port, &cfg->next_hop.addr) < 0)
		return -1;

	if (load_listeners(ld, external, 1, &cfg->external_listen, &cfg->nexternal_listen) < 0 ||
	    get_uint(ld, external, "max_message_kb", 1000, 20000, 5000, &kb) < 0)
		return -1;
	cfg->external_max_msg = (size_t)kb * 1024;

	if (load_access_edge(ld, root) < 0 || load_allowed(ld, root) < 0 ||
	    load_blocked(ld, root) < 0 || load_providers(ld, root) < 0 ||
	    load_policies(ld, root) < 0 || load_dns(ld, root) < 0 || load_cluster(ld, root) < 0)
		return -1;

	const config_setting_t *status = setting(root, "status");
	if (status) {
		unsigned sport;
		if (get_string(ld, status, "address", "127.0.0.1", &cfg->status.address) < 0 ||
		    get_uint(ld, status, "port", 1, 65535, 9100, &sport) < 0)
			return -1;
		cfg->status.port = (uint16_t)sport;
		if (parse_numeric(cfg->status.address, cfg->status.port, &cfg->status.addr) < 0)
			return fail(ld, setting(status, "address"),
			            "'%s' is not a numeric IPv4 or IPv6 address", cfg->status.address);
		cfg->status_enabled = 1;
	}

	if (get_uint(ld, limits, "max_connections", 1, 1000000, 10000, &cfg->max_connections) < 0 ||
	    get_uint(ld, limits, "max_headers", 8, 4096, 256, &cfg->max_headers) < 0 ||
	    get_uint(ld, limits, "max_line_bytes", 256, 1 << 20, 8192, &cfg->max_line_bytes) < 0 ||
	    get_uint(ld, limits, "connect_timeout_ms", 100, 600000, 5000, &cfg->connect_timeout_ms) < 0 ||
	    get_uint(ld, limits, "max_keep_alive_interval_s", 1, 86400, 1200, &cfg->keepalive_s) < 0 ||
	    get_bool(ld, limits, "enable_white_space_keep_alive", 1, &cfg->whitespace_keepalive) < 0 ||
	    get_uint(ld, limits, "drain_timeout_s", 1, 86400, 30, &cfg->drain_timeout_s) < 0)
		return -1;
	return 0;
}

/* Reads path, or text when path is NULL, naming it source. */
static int load_from(const char *path, const char *text, const char *source, int flags,
                     struct edge_cfg **out, char *err, size_t errlen)
{
	struct edge_cfg *cfg = calloc(1, sizeof(*cfg));
	config_t *lc = calloc(1, sizeof(*lc));
	*out = NULL;
	if (!cfg || !lc) {
		free(cfg);
		free(lc);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	config_init(lc);
	cfg->lc = lc;
	cfg->source = strdup(source);
	if (!cfg->source) {
		cfg_free(cfg);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int ok = path ? config_read_file(lc, path) : config_read_string(lc, text);
	if (ok != CONFIG_TRUE) {
		if (config_error_type(lc) == CONFIG_ERR_FILE_IO)
			snprintf(err, errlen, "%s: cannot read the file", cfg->source);
		else
			snprintf(err, errlen, "%s:%d: %s", cfg->source, config_error_line(lc),
			         config_error_text(lc));
		cfg_free(cfg);
		return -1;
	}
	struct loader ld = { .cfg = cfg, .lc = lc, .err = err, .errlen = errlen, .flags = flags };
	if (load(&ld) < 0) {
		cfg_free(cfg);
		return -1;
	}
	*out = cfg;
	return 0;
}

int cfg_load(const char *path, struct edge_cfg **out, char *err, size_t errlen)
{
	if (!path)
		return load_from(NULL, cfg_default_text, "(default)", 0, out, err, errlen);
	return load_from(path, NULL, path, 0, out, err, errlen);
}

int cfg_load_text(const char *text, const char *source, int flags, struct edge_cfg **out,
                  char *err, size_t errlen)
{
	return load_from(NULL, text, source, flags, out, err, errlen);
}

int cfg_check_files(const struct edge_cfg *cfg, char *err, size_t errlen)
{
	const char *const names[] = { "ca_file", "cert_file", "key_file" };
	const char *const paths[] = { cfg->ca_file, cfg->cert_file, cfg->key_file };
	for (int i = 0; i < 3; i++) {
		FILE *f = fopen(paths[i], "r");
		if (!f) {
			snprintf(err, errlen, "%s:%u: cannot read %s '%s': %s", cfg->source,
			         cfg->tls_lines[i], names[i], paths[i], strerror(errno));
			return -1;
		}
		fclose(f);
	}
	return 0;
}

void cfg_free(struct edge_cfg *cfg)
{
	if (!cfg)
		return;
	free(cfg->allowed);
	free(cfg->blocked);
	for (unsigned i = 0; cfg->providers && i < cfg->nproviders; i++)
		free(cfg->providers[i].domains);
	free(cfg->providers);
	for (unsigned i = 0; cfg->policies && i < cfg->npolicies; i++)
		free(cfg->policies[i].users);
	free(cfg->policies);
	if (cfg->cluster) {
		if (cfg->cluster->keys)
			explicit_bzero(cfg->cluster->keys, cfg->cluster->nkeys * sizeof(*cfg->cluster->keys));
		free(cfg->cluster->keys);
		free(cfg->cluster->join);
		free(cfg->cluster);
	}
	free(cfg->internal_listen);
	free(cfg->external_listen);
	free(cfg->sip_domains);
	free((char *)cfg->source);
	if (cfg->lc)
		config_destroy(cfg->lc);
	free(cfg->lc);
	free(cfg);
}
