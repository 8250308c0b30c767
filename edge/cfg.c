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
#include "clu_settings.h"
#include "domain.h"

/* One load in progress: the configuration it fills, where errors go. */
struct loader {
	struct cfgu u;
	struct edge_cfg *cfg;
	config_t *lc;
};

static int get_transport(struct loader *ld, const config_setting_t *group, int *tls)
{
	const char *t;
	if (cfgu_string(&ld->u, group, "transport", "tcp", &t) < 0)
		return -1;
	if (strcmp(t, "tcp") == 0)
		*tls = 0;
	else if (strcmp(t, "tls") == 0)
		*tls = 1;
	else
		return cfgu_fail(&ld->u, cfgu_setting(group, "transport"),
		            "unknown transport '%s' (tcp or tls)", t);
	return 0;
}

static int load_listeners(struct loader *ld, const config_setting_t *side, int external,
                          struct cfgu_listen **out, unsigned *n)
{
	static const char *const extra[] = { "transport", "proxy_protocol", NULL };
	if (cfgu_listeners(&ld->u, side, "listen", extra, out, n) < 0)
		return -1;
	const config_setting_t *list = cfgu_setting(side, "listen");
	for (unsigned i = 0; i < *n; i++) {
		const config_setting_t *l = config_setting_get_elem(list, i);
		/* Known on both sides so that the internal side can say why it is wrong there. */
		if (!external && cfgu_setting(l, "proxy_protocol"))
			return cfgu_fail(&ld->u, cfgu_setting(l, "proxy_protocol"),
			                 "only the balancer sends a PROXY header, on the external side: "
			                 "remove 'proxy_protocol'");
		if (!external)
			continue;
		(*out)[i].tls = 1;
		if (cfgu_setting(l, "transport"))
			return cfgu_fail(&ld->u, cfgu_setting(l, "transport"),
			                 "the external side is always mutual TLS: remove 'transport'");
		if (cfgu_bool(&ld->u, l, "proxy_protocol", 0, &(*out)[i].proxy_protocol) < 0)
			return -1;
	}
	for (unsigned i = 0; !external && i < *n; i++)
		if (get_transport(ld, config_setting_get_elem(list, i), &(*out)[i].tls) < 0)
			return -1;
	return 0;
}

/*
 * A setting that names one of names[0..n-1], compared case-insensitively as
 * Lync's cmdlets compare their enumerations: its index in *out (def when the
 * setting is absent).
 */
static int get_enum(struct loader *ld, const config_setting_t *group, const char *name,
                    const char *const *names, unsigned n, unsigned def, unsigned *out)
{
	const char *v;
	if (cfgu_string(&ld->u, group, name, names[def], &v) < 0)
		return -1;
	for (unsigned i = 0; i < n; i++)
		if (strcasecmp(v, names[i]) == 0) {
			*out = i;
			return 0;
		}
	char list[160] = "";
	size_t len = 0;
	for (unsigned i = 0; i < n && len < sizeof(list); i++)
		len += (size_t)snprintf(list + len, sizeof(list) - len, "%s%s",
		                        i == 0 ? "" : i + 1 < n ? ", " : " or ", names[i]);
	return cfgu_fail(&ld->u, cfgu_setting(group, name), "unknown %s '%s' (%s)", name, v, list);
}

/* One of Lync's VerificationLevel names. */
static int get_verification(struct loader *ld, const config_setting_t *group, const char *name,
                            enum cfg_verification def, enum cfg_verification *out)
{
	static const char *const names[] = { "UseSourceVerification", "AlwaysVerifiable",
	                                     "AlwaysUnverifiable" };
	unsigned v;
	if (get_enum(ld, group, name, names, 3, (unsigned)def, &v) < 0)
		return -1;
	*out = (enum cfg_verification)v;
	return 0;
}

static int get_domain(struct loader *ld, const config_setting_t *group, const char *name,
                      const char **out)
{
	if (cfgu_string(&ld->u, group, name, NULL, out) < 0)
		return -1;
	if (!dom_valid(*out, strlen(*out)))
		return cfgu_fail(&ld->u, cfgu_setting(group, name), "'%s' is not a valid domain name", *out);
	return 0;
}

/*
 * A server: `fqdn_key` (the name its certificate must carry), an optional
 * numeric `address` and `port` (default def_port). Without the fqdn (when
 * not required) the server is found by DNS SRV. Names are resolved when
 * used, not here.
 */
static int load_server(struct loader *ld, const config_setting_t *group, const char *fqdn_key,
                       int required, unsigned def_port, struct cfg_server *out)
{
	unsigned port;
	out->fqdn = NULL;
	if ((required || cfgu_setting(group, fqdn_key)) && get_domain(ld, group, fqdn_key, &out->fqdn) < 0)
		return -1;
	if (cfgu_string(&ld->u, group, "address", "", &out->address) < 0 ||
	    cfgu_uint(&ld->u, group, "port", 1, 65535, def_port, &port) < 0)
		return -1;
	out->port = (uint16_t)port;
	if (!out->fqdn && (cfgu_setting(group, "address") || cfgu_setting(group, "port")))
		return cfgu_fail(&ld->u, group, "'address' and 'port' need '%s'", fqdn_key);
	if (out->fqdn && strcasecmp(out->fqdn, ld->cfg->pool_fqdn) == 0)
		return cfgu_fail(&ld->u, cfgu_setting(group, fqdn_key), "'%s' is our own pool_fqdn", out->fqdn);
	if (*out->address && cfgu_numeric(out->address, out->port, &out->addr) < 0)
		return cfgu_fail(&ld->u, cfgu_setting(group, "address"),
		            "'%s' is not a numeric IPv4 or IPv6 address", out->address);
	return 0;
}

/*
 * The list of groups `name` of the root and its length: 0 when absent, an
 * error when not a list of groups.
 */
/* calloc for n elements (and one more, so that no count gives NULL). */
static int alloc_array(struct loader *ld, const config_setting_t *at, void **out, unsigned n,
                       size_t size)
{
	*out = calloc((size_t)n + 1, size);
	return *out ? 0 : cfgu_fail(&ld->u, at, "out of memory");
}

/*
 * external.proxy_from: who may put a PROXY header before a partner's TLS.
 * Anyone else could claim any source address, so a proxy_protocol listener
 * without it is refused, and the list without such a listener is a mistake.
 */
static int load_proxy_from(struct loader *ld, const config_setting_t *external)
{
	struct edge_cfg *cfg = ld->cfg;
	const config_setting_t *at = cfgu_setting(external, "proxy_from");
	const config_setting_t *proxied = NULL;
	const config_setting_t *list = cfgu_setting(external, "listen");
	for (unsigned i = 0; !proxied && i < cfg->nexternal_listen; i++)
		if (cfg->external_listen[i].proxy_protocol)
			proxied = config_setting_get_elem(list, i);
	if (!proxied && at)
		return cfgu_fail(&ld->u, at, "'proxy_from' is only used with a listener that has "
		                 "proxy_protocol = true");
	if (!proxied)
		return 0;
	if (!at)
		return cfgu_fail(&ld->u, cfgu_setting(proxied, "proxy_protocol"),
		                 "a proxy_protocol listener needs external.proxy_from = [ ... ]: "
		                 "the balancers' addresses");
	if (cfgu_strings(&ld->u, external, "proxy_from", 1, &cfg->proxy_from, &cfg->nproxy_from) < 0 ||
	    alloc_array(ld, at, (void **)&cfg->proxy_from_addr, cfg->nproxy_from,
	                sizeof(*cfg->proxy_from_addr)) < 0)
		return -1;
	for (unsigned i = 0; i < cfg->nproxy_from; i++)
		if (cfgu_numeric(cfg->proxy_from[i], 0, &cfg->proxy_from_addr[i]) < 0)
			return cfgu_fail(&ld->u, at, "proxy_from: '%s' is not a numeric IPv4 or IPv6 address",
			                 cfg->proxy_from[i]);
	return 0;
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
	if (cfgu_group_list(&ld->u, root, "allowed_domains", &list, &n) < 0 ||
	    alloc_array(ld, list, (void **)&cfg->allowed, n, sizeof(*cfg->allowed)) < 0)
		return -1;
	cfg->nallowed = n;
	for (unsigned i = 0; i < cfg->nallowed; i++) {
		const config_setting_t *g = config_setting_get_elem(list, i);
		struct cfg_allowed_domain *a = &cfg->allowed[i];
		const char *what;
		if (cfgu_check_members(&ld->u, g, keys) < 0 || get_domain(ld, g, "domain", &a->domain) < 0 ||
		    load_server(ld, g, "proxy_fqdn", 0, 5061, &a->server) < 0 ||
		    cfgu_bool(&ld->u, g, "mark_for_monitoring", 0, &a->mark_for_monitoring) < 0 ||
		    cfgu_string(&ld->u, g, "comment", "", &a->comment) < 0 ||
		    get_verification(ld, g, "verification_level", CFG_VERIFY_USE_SOURCE,
		                     &a->verification) < 0)
			return -1;
		if ((what = domain_claimed(cfg, a->domain, a)) != NULL)
			return cfgu_fail(&ld->u, cfgu_setting(g, "domain"), "allowed domain '%s' is also %s",
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
	if (cfgu_group_list(&ld->u, root, "blocked_domains", &list, &n) < 0 ||
	    alloc_array(ld, list, (void **)&cfg->blocked, n, sizeof(*cfg->blocked)) < 0)
		return -1;
	cfg->nblocked = n;
	for (unsigned i = 0; i < cfg->nblocked; i++) {
		const config_setting_t *g = config_setting_get_elem(list, i);
		struct cfg_blocked_domain *b = &cfg->blocked[i];
		const char *what;
		if (cfgu_check_members(&ld->u, g, keys) < 0 || get_domain(ld, g, "domain", &b->domain) < 0 ||
		    cfgu_string(&ld->u, g, "comment", "", &b->comment) < 0)
			return -1;
		if ((what = domain_claimed(cfg, b->domain, b)) != NULL)
			return cfgu_fail(&ld->u, cfgu_setting(g, "domain"), "blocked domain '%s' is also %s",
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
	if (cfgu_group_list(&ld->u, root, "hosting_providers", &hosting, &nh) < 0 ||
	    cfgu_group_list(&ld->u, root, "public_providers", &public, &np) < 0 ||
	    alloc_array(ld, root, (void **)&cfg->providers, nh + np, sizeof(*cfg->providers)) < 0)
		return -1;
	cfg->nproviders = nh + np;
	for (unsigned i = 0; i < cfg->nproviders; i++) {
		int is_hosting = i < nh;
		const config_setting_t *g = config_setting_get_elem(is_hosting ? hosting : public,
		                                                    is_hosting ? i : i - nh);
		struct cfg_provider *o = &cfg->providers[i];
		o->kind = is_hosting ? CFG_HOSTING_PROVIDER : CFG_PUBLIC_PROVIDER;
		if (cfgu_check_members(&ld->u, g, is_hosting ? hosting_keys : public_keys) < 0 ||
		    cfgu_string(&ld->u, g, "identity", NULL, &o->identity) < 0 ||
		    load_server(ld, g, "proxy_fqdn", 1, 5061, &o->server) < 0 ||
		    cfgu_strings(&ld->u, g, "domains", 0, &o->domains, &o->ndomains) < 0 ||
		    cfgu_bool(&ld->u, g, "enabled", 1, &o->enabled) < 0 ||
		    cfgu_bool(&ld->u, g, "enabled_shared_address_space", 0, &o->shared_address_space) < 0 ||
		    cfgu_bool(&ld->u, g, "hosts_ocs_users", 0, &o->hosts_ocs_users) < 0 ||
		    get_verification(ld, g, "verification_level",
		                     is_hosting ? CFG_VERIFY_ALWAYS_VERIFIABLE : CFG_VERIFY_USE_SOURCE,
		                     &o->verification) < 0)
			return -1;
		for (unsigned q = 0; q < i; q++) {
			if (strcmp(cfg->providers[q].identity, o->identity) == 0)
				return cfgu_fail(&ld->u, cfgu_setting(g, "identity"), "provider identity '%s' is used twice",
				            o->identity);
			if (strcasecmp(cfg->providers[q].server.fqdn, o->server.fqdn) == 0)
				return cfgu_fail(&ld->u, cfgu_setting(g, "proxy_fqdn"),
				            "proxy_fqdn '%s' is already provider '%s'", o->server.fqdn,
				            cfg->providers[q].identity);
		}
		for (unsigned d = 0; d < o->ndomains; d++) {
			const char *what;
			if (!dom_valid(o->domains[d], strlen(o->domains[d])))
				return cfgu_fail(&ld->u, cfgu_setting(g, "domains"), "'%s' is not a valid domain name",
				            o->domains[d]);
			if ((what = domain_claimed(cfg, o->domains[d], &o->domains[d])) != NULL)
				return cfgu_fail(&ld->u, cfgu_setting(g, "domains"), "provider domain '%s' is also %s",
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
	if (cfgu_group_list(&ld->u, root, "external_access_policies", &list, &count) < 0 ||
	    alloc_array(ld, root, (void **)&cfg->policies, count, sizeof(*cfg->policies)) < 0)
		return -1;
	cfg->policies[0].identity = "global";
	cfg->npolicies = 1;
	int have_global = 0;
	for (unsigned i = 0; i < count; i++) {
		const config_setting_t *g = config_setting_get_elem(list, i);
		const char *identity;
		if (cfgu_check_members(&ld->u, g, keys) < 0 || cfgu_string(&ld->u, g, "identity", NULL, &identity) < 0)
			return -1;
		int global = strcmp(identity, "global") == 0;
		if (global && have_global)
			return cfgu_fail(&ld->u, cfgu_setting(g, "identity"), "policy 'global' is defined twice");
		for (unsigned q = 1; q < cfg->npolicies; q++)
			if (strcmp(cfg->policies[q].identity, identity) == 0)
				return cfgu_fail(&ld->u, cfgu_setting(g, "identity"), "policy '%s' is defined twice", identity);
		struct cfg_access_policy *o = global ? &cfg->policies[0] : &cfg->policies[cfg->npolicies++];
		have_global |= global;
		o->identity = identity;
		if (global && cfgu_setting(g, "users"))
			return cfgu_fail(&ld->u, cfgu_setting(g, "users"), "the global policy applies to every user: "
			            "remove 'users'");
		if (!global && cfgu_strings(&ld->u, g, "users", 1, &o->users, &o->nusers) < 0)
			return -1;
		for (unsigned u = 0; u < o->nusers; u++)
			if (!dom_user_pattern_valid(o->users[u]))
				return cfgu_fail(&ld->u, cfgu_setting(g, "users"), "'%s' is not a user pattern "
				            "(user@domain, *@domain or *@*.domain)", o->users[u]);
		if (cfgu_bool(&ld->u, g, "enable_federation_access", 0, &o->federation) < 0 ||
		    cfgu_bool(&ld->u, g, "enable_xmpp_access", 0, &o->xmpp) < 0 ||
		    cfgu_bool(&ld->u, g, "enable_public_cloud_access", 0, &o->public_cloud) < 0 ||
		    cfgu_bool(&ld->u, g, "enable_outside_access", 0, &o->outside) < 0)
			return -1;
	}
	return 0;
}

static int load_access_edge(struct loader *ld, const config_setting_t *root)
{
	struct cfg_access_edge *e = &ld->cfg->edge;
	const config_setting_t *g = cfgu_setting(root, "access_edge");
	const config_setting_t *route = cfgu_setting(g, "default_route");
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
	if (cfgu_check_members(&ld->u, g, keys) < 0 || cfgu_check_members(&ld->u, route, route_keys) < 0 ||
	    cfgu_bool(&ld->u, g, "allow_federated_users", 0, &e->allow_federated_users) < 0 ||
	    cfgu_bool(&ld->u, g, "enable_partner_discovery", 0, &e->enable_partner_discovery) < 0 ||
	    cfgu_string(&ld->u, g, "routing", "dns_srv", &routing) < 0 ||
	    cfgu_bool(&ld->u, g, "mark_source_verifiable_on_outgoing_messages", 1,
	             &e->mark_source_verifiable) < 0 ||
	    cfgu_bool(&ld->u, g, "enable_archiving_disclaimer", 0, &e->archiving_disclaimer) < 0 ||
	    cfgu_uint(&ld->u, g, "outgoing_tls_count", 1, 4, 4, &e->outgoing_tls_count) < 0 ||
	    cfgu_uint(&ld->u, g, "discovered_partner_standard_rate", 1, 100000, 20,
	             &e->discovered_rate) < 0 ||
	    cfgu_uint(&ld->u, g, "max_contacts_per_discovered_partner", 1, 1000000, 1000,
	             &e->discovered_max_contacts) < 0 ||
	    cfgu_bool(&ld->u, g, "enable_discovered_partner_contacts_limit", 1,
	             &e->discovered_contacts_limit) < 0 ||
	    cfgu_uint(&ld->u, g, "discovered_partner_report_period_minutes", 1, 1440, 60,
	             &e->discovered_report_period_min) < 0 ||
	    get_verification(ld, g, "discovered_partner_verification_level", CFG_VERIFY_USE_SOURCE,
	                     &e->discovered_verification) < 0)
		return -1;
	if (strcmp(routing, "dns_srv") == 0)
		e->use_default_route = 0;
	else if (strcmp(routing, "default_route") == 0)
		e->use_default_route = 1;
	else
		return cfgu_fail(&ld->u, cfgu_setting(g, "routing"), "unknown routing '%s' (dns_srv or default_route)",
		            routing);
	if (e->use_default_route && !route)
		return cfgu_fail(&ld->u, cfgu_setting(g, "routing"), "routing \"default_route\" needs "
		            "'default_route' = { fqdn = ...; }");
	if (route && !e->use_default_route)
		return cfgu_fail(&ld->u, route, "'default_route' is only used with routing = \"default_route\"");
	if (route && (load_server(ld, route, "fqdn", 1, 5061, &e->default_route) < 0 ||
	              get_verification(ld, route, "verification_level", CFG_VERIFY_ALWAYS_VERIFIABLE,
	                               &e->default_route_verification) < 0 ||
	              cfgu_bool(&ld->u, route, "is_public_provider", 0,
	                       &e->default_route_is_public_provider) < 0))
		return -1;
	if (e->use_default_route && e->enable_partner_discovery)
		return cfgu_fail(&ld->u, cfgu_setting(g, "enable_partner_discovery"), "partner discovery needs "
		            "routing = \"dns_srv\": with a default route every request goes there");
	return 0;
}

static int load_cluster(struct loader *ld, const config_setting_t *root)
{
	static const char *const edge_keys[] = { "replication", "replication_timeout_ms", NULL };
	const config_setting_t *g = cfgu_setting(root, "cluster");
	struct edge_cfg *cfg = ld->cfg;
	if (clu_settings_load(&ld->u, g, edge_keys, &cfg->cluster) < 0 || !g)
		return g ? -1 : 0;
	const char *mode;
	if (cfgu_string(&ld->u, g, "replication", "async", &mode) < 0 ||
	    cfgu_uint(&ld->u, g, "replication_timeout_ms", 10, 10000, 500,
	              &cfg->replication_timeout_ms) < 0)
		return -1;
	if (strcmp(mode, "sync") == 0)
		cfg->sync_dialogs = 1;
	else if (strcmp(mode, "async") != 0)
		return cfgu_fail(&ld->u, cfgu_setting(g, "replication"),
		                 "unknown replication '%s' (async or sync)", mode);
	return 0;
}

static int load_dns(struct loader *ld, const config_setting_t *root)
{
	struct cfg_dns *d = &ld->cfg->dns;
	const config_setting_t *g = cfgu_setting(root, "dns");
	static const char *const keys[] = { "server", "port", "timeout_ms", "tries",
	                                    "cache_record_count", "max_pending_lookups", NULL };
	unsigned port;
	if (cfgu_check_members(&ld->u, g, keys) < 0 ||
	    cfgu_uint(&ld->u, g, "port", 1, 65535, 53, &port) < 0 ||
	    cfgu_uint(&ld->u, g, "timeout_ms", 100, 60000, 2000, &d->timeout_ms) < 0 ||
	    cfgu_uint(&ld->u, g, "tries", 1, 10, 2, &d->tries) < 0 ||
	    cfgu_uint(&ld->u, g, "cache_record_count", 0, 1000000, 3000, &d->cache_records) < 0 ||
	    cfgu_uint(&ld->u, g, "max_pending_lookups", 1, 1000000, 4096, &d->max_pending) < 0)
		return -1;
	d->port = (uint16_t)port;
	if (cfgu_setting(g, "server")) {
		if (cfgu_string(&ld->u, g, "server", NULL, &d->server) < 0)
			return -1;
		if (cfgu_numeric(d->server, d->port, &d->addr) < 0)
			return cfgu_fail(&ld->u, cfgu_setting(g, "server"), "'%s' is not a numeric IPv4 or IPv6 address",
			            d->server);
	}
	return 0;
}

/* Where element i of list is set: its own line when libconfig has one, else the list's. */
static const config_setting_t *elem_at(const config_setting_t *list, unsigned i)
{
	const config_setting_t *e = list ? config_setting_get_elem(list, i) : NULL;
	return e && config_setting_source_line(e) ? e : list;
}

/*
 * xmpp.domains: our XMPP domains, by default node.sip_domains. Each must be
 * one of node.sip_domains: the gateway maps alice@domain to the same
 * address both ways (RFC 7247), so an XMPP-only domain would have no SIP
 * side. The array is x's (a copy of the pointers for the default), the
 * strings the libconfig tree's.
 */
static int load_xmpp_domains(struct loader *ld, const config_setting_t *g, struct cfg_xmpp *x)
{
	struct edge_cfg *cfg = ld->cfg;
	const config_setting_t *list = cfgu_setting(g, "domains");
	if (!list) {
		if (alloc_array(ld, g, (void **)&x->domains, cfg->nsip_domains, sizeof(*x->domains)) < 0)
			return -1;
		memcpy(x->domains, cfg->sip_domains, cfg->nsip_domains * sizeof(*x->domains));
		x->ndomains = cfg->nsip_domains;
		return 0;
	}
	if (cfgu_strings(&ld->u, g, "domains", 1, &x->domains, &x->ndomains) < 0)
		return -1;
	for (unsigned i = 0; i < x->ndomains; i++) {
		const char *d = x->domains[i];
		const config_setting_t *at = elem_at(list, i);
		unsigned s = 0;
		if (!dom_valid(d, strlen(d)))
			return cfgu_fail(&ld->u, at, "'%s' is not a valid domain name", d);
		while (s < cfg->nsip_domains && strcasecmp(cfg->sip_domains[s], d) != 0)
			s++;
		if (s == cfg->nsip_domains)
			return cfgu_fail(&ld->u, at, "XMPP domain '%s' is not one of node.sip_domains: the "
			                 "gateway maps user@domain to the same address in SIP and XMPP", d);
		for (unsigned q = 0; q < i; q++)
			if (strcasecmp(x->domains[q], d) == 0)
				return cfgu_fail(&ld->u, at, "XMPP domain '%s' is listed twice", d);
	}
	return 0;
}

/* Name k of an XMPP partner: its domain (k = 0), then its additional domains. */
static const char *xmpp_partner_name(const struct cfg_xmpp_partner *p, unsigned k)
{
	return k == 0 ? p->domain : p->additional_domains[k - 1];
}

/*
 * One entry of xmpp_partners (Lync New-CsXmppAllowedPartner), refused when
 * nothing could authenticate the partner's server: SASL EXTERNAL needs TLS
 * (it authenticates the certificate), and without SASL only Server
 * Dialback is left.
 */
static int load_xmpp_partner(struct loader *ld, const config_setting_t *g,
                             struct cfg_xmpp_partner *p)
{
	static const char *const keys[] = { "domain", "additional_domains", "partner_type",
	                                    "tls_negotiation", "sasl_negotiation",
	                                    "support_dialback", "enable_keepalive",
	                                    "connection_limit", "proxy_fqdn", "address", "port",
	                                    "comment", NULL };
	/* In the order of the enums. */
	static const char *const types[] = { "PublicUnverified", "PublicVerified", "Federated" };
	static const char *const negos[] = { "Required", "Optional", "NotSupported" };
	unsigned type, tls, sasl;
	if (cfgu_check_members(&ld->u, g, keys) < 0 || get_domain(ld, g, "domain", &p->domain) < 0 ||
	    cfgu_strings(&ld->u, g, "additional_domains", 0, &p->additional_domains,
	                 &p->nadditional_domains) < 0 ||
	    get_enum(ld, g, "partner_type", types, 3, CFG_XMPP_PUBLIC_UNVERIFIED, &type) < 0 ||
	    get_enum(ld, g, "tls_negotiation", negos, 3, CFG_XMPP_REQUIRED, &tls) < 0 ||
	    get_enum(ld, g, "sasl_negotiation", negos, 3, CFG_XMPP_REQUIRED, &sasl) < 0 ||
	    cfgu_bool(&ld->u, g, "support_dialback", 1, &p->dialback) < 0 ||
	    cfgu_bool(&ld->u, g, "enable_keepalive", 1, &p->keepalive) < 0 ||
	    cfgu_uint(&ld->u, g, "connection_limit", 1, 1000, 10, &p->connection_limit) < 0 ||
	    load_server(ld, g, "proxy_fqdn", 0, 5269, &p->server) < 0 ||
	    cfgu_string(&ld->u, g, "comment", "", &p->comment) < 0)
		return -1;
	p->type = (enum cfg_xmpp_partner_type)type;
	p->tls = (enum cfg_xmpp_nego)tls;
	p->sasl = (enum cfg_xmpp_nego)sasl;
	/* Each error points at the setting that must be set for it (defaults: Required, true). */
	if (p->tls == CFG_XMPP_NOT_SUPPORTED && p->sasl == CFG_XMPP_REQUIRED)
		return cfgu_fail(&ld->u, cfgu_setting(g, "tls_negotiation"), "XMPP partner '%s': "
		                 "sasl_negotiation \"Required\" needs TLS (SASL EXTERNAL authenticates "
		                 "the certificate), but tls_negotiation is \"NotSupported\"", p->domain);
	if (!p->dialback && (p->sasl == CFG_XMPP_NOT_SUPPORTED || p->tls == CFG_XMPP_NOT_SUPPORTED))
		return cfgu_fail(&ld->u, cfgu_setting(g, "support_dialback"), "XMPP partner '%s': "
		                 "nothing would authenticate it: without dialback only SASL EXTERNAL "
		                 "is left, and tls_negotiation or sasl_negotiation is \"NotSupported\"",
		                 p->domain);
	return 0;
}

/*
 * The top-level xmpp_partners list. Every domain a partner serves has that
 * one meaning: it is none of ours, no SIP partner's, blocked or a
 * provider's (all loaded before), and no other XMPP partner's.
 */
static int load_xmpp_partners(struct loader *ld, const config_setting_t *root)
{
	struct cfg_xmpp *x = ld->cfg->xmpp;
	const config_setting_t *list;
	unsigned n;
	if (cfgu_group_list(&ld->u, root, "xmpp_partners", &list, &n) < 0 ||
	    alloc_array(ld, list ? list : root, (void **)&x->partners, n, sizeof(*x->partners)) < 0)
		return -1;
	x->npartners = n;
	for (unsigned i = 0; i < n; i++) {
		const config_setting_t *g = config_setting_get_elem(list, i);
		struct cfg_xmpp_partner *p = &x->partners[i];
		if (load_xmpp_partner(ld, g, p) < 0)
			return -1;
		for (unsigned k = 0; k <= p->nadditional_domains; k++) {
			const char *name = xmpp_partner_name(p, k), *what;
			const config_setting_t *at = k == 0 ? cfgu_setting(g, "domain")
			                                    : elem_at(cfgu_setting(g, "additional_domains"), k - 1);
			if (!dom_valid(name, strlen(name)))
				return cfgu_fail(&ld->u, at, "'%s' is not a valid domain name", name);
			if ((what = domain_claimed(ld->cfg, name, NULL)) != NULL)
				return cfgu_fail(&ld->u, at, "XMPP partner domain '%s' is also %s", name, what);
			for (unsigned q = 0; q <= i; q++) {
				const struct cfg_xmpp_partner *o = &x->partners[q];
				unsigned upto = q < i ? o->nadditional_domains + 1 : k;
				for (unsigned j = 0; j < upto; j++)
					if (strcasecmp(xmpp_partner_name(o, j), name) == 0)
						return cfgu_fail(&ld->u, at, "XMPP partner domain '%s' is listed "
						                 "twice (first for partner '%s')", name, o->domain);
			}
		}
	}
	return 0;
}

/*
 * The `xmpp` section: XMPP server-to-server federation. Absent, cfg->xmpp
 * stays NULL, and an xmpp_partners list is refused rather than ignored.
 */
static int load_xmpp(struct loader *ld, const config_setting_t *root)
{
	static const char *const keys[] = { "listen", "domains", "cert_file", "key_file",
	                                    "dialback_secret", "max_stanza_kb", "keepalive_s",
	                                    "idle_timeout_s", NULL };
	struct edge_cfg *cfg = ld->cfg;
	const config_setting_t *g = cfgu_setting(root, "xmpp");
	const config_setting_t *partners = cfgu_setting(root, "xmpp_partners");
	if (!g && partners)
		return cfgu_fail(&ld->u, partners, "'xmpp_partners' needs the 'xmpp' section: without it "
		                 "edged speaks no XMPP");
	if (!g)
		return 0;
	if (cfgu_check_members(&ld->u, g, keys) < 0)
		return -1;
	if (!(cfg->xmpp = calloc(1, sizeof(*cfg->xmpp))))
		return cfgu_fail(&ld->u, g, "out of memory");
	struct cfg_xmpp *x = cfg->xmpp;
	unsigned kb;
	if (cfgu_listeners(&ld->u, g, "listen", NULL, &x->listen, &x->nlisten) < 0 ||
	    load_xmpp_domains(ld, g, x) < 0 ||
	    cfgu_string(&ld->u, g, "cert_file", cfg->cert_file, &x->cert_file) < 0 ||
	    cfgu_string(&ld->u, g, "key_file", cfg->key_file, &x->key_file) < 0 ||
	    (cfgu_setting(g, "dialback_secret") &&
	     cfgu_string(&ld->u, g, "dialback_secret", NULL, &x->dialback_secret) < 0) ||
	    cfgu_uint(&ld->u, g, "max_stanza_kb", 1, 10240, 64, &kb) < 0 ||
	    cfgu_uint(&ld->u, g, "keepalive_s", 0, 3600, 60, &x->keepalive_s) < 0 ||
	    cfgu_uint(&ld->u, g, "idle_timeout_s", 0, 86400, 600, &x->idle_timeout_s) < 0)
		return -1;
	x->max_stanza_bytes = (size_t)kb * 1024;
	if (x->dialback_secret && strlen(x->dialback_secret) < 16)
		return cfgu_fail(&ld->u, cfgu_setting(g, "dialback_secret"), "'dialback_secret' must be "
		                 "at least 16 characters (openssl rand -base64 24)");
	return load_xmpp_partners(ld, root);
}

static int load(struct loader *ld)
{
	struct edge_cfg *cfg = ld->cfg;
	const config_setting_t *root = config_root_setting(ld->lc);
	const config_setting_t *node = cfgu_setting(root, "node");
	const config_setting_t *tls = cfgu_setting(root, "tls");
	const config_setting_t *internal = cfgu_setting(root, "internal");
	const config_setting_t *external = cfgu_setting(root, "external");
	const config_setting_t *limits = cfgu_setting(root, "limits");
	static const char *const known[] = { "node", "log", "tls", "internal", "external",
	                                     "access_edge", "allowed_domains", "blocked_domains",
	                                     "hosting_providers", "public_providers",
	                                     "external_access_policies", "dns", "cluster",
	                                     "limits", "status", "xmpp", "xmpp_partners", NULL };

	if (cfgu_check_sections(&ld->u, root, known) < 0)
		return -1;
	if (!node)
		return cfgu_fail(&ld->u, root, "section 'node' is required");
	if (!tls)
		return cfgu_fail(&ld->u, root, "section 'tls' is required");
	if (!internal)
		return cfgu_fail(&ld->u, root, "section 'internal' is required");
	if (!external)
		return cfgu_fail(&ld->u, root, "section 'external' is required");

	static const char *const node_keys[] = { "pool_fqdn", "sip_domains", NULL };
	static const char *const tls_keys[] = { "ca_file", "cert_file", "key_file", NULL };
	static const char *const internal_keys[] = { "listen", "next_hop", "max_message_kb", "pool_fqdn",
	                                             NULL };
	static const char *const hop_keys[] = { "host", "fqdn", "port", "transport", NULL };
	static const char *const external_keys[] = { "listen", "max_message_kb", "proxy_from", NULL };
	static const char *const limits_keys[] = { "max_connections", "max_headers",
	                                           "max_line_bytes",
	                                           "connect_timeout_ms", "max_keep_alive_interval_s",
	                                           "enable_white_space_keep_alive",
	                                           "drain_timeout_s", NULL };
	if (cfgu_check_members(&ld->u, node, node_keys) < 0 ||
	    cfgu_check_members(&ld->u, tls, tls_keys) < 0 || cfgu_check_members(&ld->u, internal, internal_keys) < 0 ||
	    cfgu_check_members(&ld->u, cfgu_setting(internal, "next_hop"), hop_keys) < 0 ||
	    cfgu_check_members(&ld->u, external, external_keys) < 0 ||
	    cfgu_check_members(&ld->u, limits, limits_keys) < 0)
		return -1;

	if (get_domain(ld, node, "pool_fqdn", &cfg->pool_fqdn) < 0 ||
	    cfgu_strings(&ld->u, node, "sip_domains", 1, &cfg->sip_domains, &cfg->nsip_domains) < 0)
		return -1;
	for (unsigned i = 0; i < cfg->nsip_domains; i++)
		if (!dom_valid(cfg->sip_domains[i], strlen(cfg->sip_domains[i])))
			return cfgu_fail(&ld->u, cfgu_setting(node, "sip_domains"), "'%s' is not a valid domain name",
			            cfg->sip_domains[i]);

	if (cfgu_log(&ld->u, root, &cfg->log_level, &cfg->log_syslog) < 0)
		return -1;

	if (cfgu_string(&ld->u, tls, "ca_file", NULL, &cfg->ca_file) < 0 ||
	    cfgu_string(&ld->u, tls, "cert_file", NULL, &cfg->cert_file) < 0 ||
	    cfgu_string(&ld->u, tls, "key_file", NULL, &cfg->key_file) < 0)
		return -1;
	cfg->tls_lines[0] = config_setting_source_line(cfgu_setting(tls, "ca_file"));
	cfg->tls_lines[1] = config_setting_source_line(cfgu_setting(tls, "cert_file"));
	cfg->tls_lines[2] = config_setting_source_line(cfgu_setting(tls, "key_file"));

	unsigned kb, port;
	if (load_listeners(ld, internal, 0, &cfg->internal_listen, &cfg->ninternal_listen) < 0 ||
	    cfgu_uint(&ld->u, internal, "max_message_kb", 64, 256, 128, &kb) < 0 ||
	    (cfgu_setting(internal, "pool_fqdn") &&
	     get_domain(ld, internal, "pool_fqdn", &cfg->internal_pool_fqdn) < 0))
		return -1;
	cfg->internal_max_msg = (size_t)kb * 1024;

	const config_setting_t *hop = cfgu_setting(internal, "next_hop");
	if (!hop || !config_setting_is_group(hop))
		return cfgu_fail(&ld->u, hop ? hop : internal, "'next_hop' = { host = ...; port = ...; } is required");
	if (cfgu_string(&ld->u, hop, "host", NULL, &cfg->next_hop.host) < 0 ||
	    cfgu_string(&ld->u, hop, "fqdn", cfg->next_hop.host, &cfg->next_hop.fqdn) < 0 ||
	    cfgu_uint(&ld->u, hop, "port", 1, 65535, 5061, &port) < 0 ||
	    get_transport(ld, hop, &cfg->next_hop.tls) < 0)
		return -1;
	cfg->next_hop.port = (uint16_t)port;
	if (cfgu_resolve(&ld->u, hop, cfg->next_hop.host, cfg->next_hop.port, &cfg->next_hop.addr) < 0)
		return -1;

	if (load_listeners(ld, external, 1, &cfg->external_listen, &cfg->nexternal_listen) < 0 ||
	    load_proxy_from(ld, external) < 0 ||
	    cfgu_uint(&ld->u, external, "max_message_kb", 1000, 20000, 5000, &kb) < 0)
		return -1;
	cfg->external_max_msg = (size_t)kb * 1024;

	if (load_access_edge(ld, root) < 0 || load_allowed(ld, root) < 0 ||
	    load_blocked(ld, root) < 0 || load_providers(ld, root) < 0 ||
	    load_policies(ld, root) < 0 || load_dns(ld, root) < 0 || load_cluster(ld, root) < 0 ||
	    load_xmpp(ld, root) < 0)
		return -1;

	if (cfgu_status(&ld->u, root, 9100, &cfg->status_enabled, &cfg->status) < 0)
		return -1;

	if (cfgu_uint(&ld->u, limits, "max_connections", 1, 1000000, 10000, &cfg->max_connections) < 0 ||
	    cfgu_uint(&ld->u, limits, "max_headers", 8, 4096, 256, &cfg->max_headers) < 0 ||
	    cfgu_uint(&ld->u, limits, "max_line_bytes", 256, 1 << 20, 8192, &cfg->max_line_bytes) < 0 ||
	    cfgu_uint(&ld->u, limits, "connect_timeout_ms", 100, 600000, 5000, &cfg->connect_timeout_ms) < 0 ||
	    cfgu_uint(&ld->u, limits, "max_keep_alive_interval_s", 1, 86400, 1200, &cfg->keepalive_s) < 0 ||
	    cfgu_bool(&ld->u, limits, "enable_white_space_keep_alive", 1, &cfg->whitespace_keepalive) < 0 ||
	    cfgu_uint(&ld->u, limits, "drain_timeout_s", 1, 86400, 30, &cfg->drain_timeout_s) < 0)
		return -1;
	return 0;
}

/* Reads path, or text when path is NULL, naming it source. */
/* Reads path, or text when path is NULL, naming it source. */
static int load_from(const char *path, const char *text, const char *source, int flags,
                     struct edge_cfg **out, char *err, size_t errlen)
{
	struct edge_cfg *cfg = calloc(1, sizeof(*cfg));
	*out = NULL;
	if (!cfg || !(cfg->source = strdup(source))) {
		free(cfg);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	struct loader ld = { .u = { .source = cfg->source, .err = err, .errlen = errlen,
	                            .flags = flags }, .cfg = cfg };
	if (cfgu_open(&ld.u, path, text, &ld.lc) < 0) {
		cfg_free(cfg);
		return -1;
	}
	cfg->lc = ld.lc;
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

static int check_file(const struct edge_cfg *cfg, const char *name, const char *path,
                      unsigned line, char *err, size_t errlen)
{
	FILE *f = fopen(path, "r");
	if (!f) {
		snprintf(err, errlen, "%s:%u: cannot read %s '%s': %s", cfg->source, line, name, path,
		         strerror(errno));
		return -1;
	}
	fclose(f);
	return 0;
}

int cfg_check_files(const struct edge_cfg *cfg, char *err, size_t errlen)
{
	const char *const names[] = { "ca_file", "cert_file", "key_file" };
	const char *const paths[] = { cfg->ca_file, cfg->cert_file, cfg->key_file };
	for (int i = 0; i < 3; i++)
		if (check_file(cfg, names[i], paths[i], cfg->tls_lines[i], err, errlen) < 0)
			return -1;
	if (!cfg->xmpp)
		return 0;
	/* XMPP's own files, when set (the defaults are the tls ones, just checked); the
	 * tree still knows their lines. */
	const char *const xnames[] = { "xmpp.cert_file", "xmpp.key_file" };
	const char *const xpaths[] = { cfg->xmpp->cert_file, cfg->xmpp->key_file };
	for (int i = 0; i < 2; i++) {
		const config_setting_t *s = cfg->lc ? config_lookup(cfg->lc, xnames[i]) : NULL;
		if (s && check_file(cfg, xnames[i], xpaths[i], (unsigned)config_setting_source_line(s),
		                    err, errlen) < 0)
			return -1;
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
	clu_settings_free(cfg->cluster);
	/* The arrays are ours; the strings, the default domains' too, the libconfig tree's. */
	for (unsigned i = 0; cfg->xmpp && cfg->xmpp->partners && i < cfg->xmpp->npartners; i++)
		free(cfg->xmpp->partners[i].additional_domains);
	if (cfg->xmpp) {
		free(cfg->xmpp->partners);
		free(cfg->xmpp->domains);
		free(cfg->xmpp->listen);
	}
	free(cfg->xmpp); cfg->xmpp = NULL;
	free(cfg->internal_listen);
	free(cfg->external_listen);
	free(cfg->proxy_from);
	free(cfg->proxy_from_addr);
	free(cfg->sip_domains);
	free((char *)cfg->source);
	cfgu_close(cfg->lc);
	free(cfg);
}
