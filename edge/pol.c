#include "pol.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "domain.h"

const char *pol_source_name(enum pol_source s)
{
	switch (s) {
	case POL_SRC_DIRECT_PARTNER: return "DirectPartner";
	case POL_SRC_AUTO_FEDERATION: return "AutoFederation";
	case POL_SRC_AUTHORIZED_SERVER: return "AuthorizedServer";
	case POL_SRC_NONE: break;
	}
	return "None";
}

const char *pol_network_name(enum pol_network n)
{
	return n == POL_NET_PUBLIC_CLOUD ? "publiccloud" : "federation";
}

static enum pol_network provider_network(const struct cfg_provider *p)
{
	return p->kind == CFG_PUBLIC_PROVIDER ? POL_NET_PUBLIC_CLOUD : POL_NET_FEDERATION;
}

const struct cfg_provider *pol_provider_by_fqdn(const struct edge_cfg *cfg, const char *name,
                                                size_t len)
{
	for (unsigned i = 0; i < cfg->nproviders; i++)
		if (cfg->providers[i].enabled && dom_eq(name, len, cfg->providers[i].server.fqdn))
			return &cfg->providers[i];
	return NULL;
}

void pol_classify_domain(const struct edge_cfg *cfg, const char *domain, size_t len,
                         struct pol_domain *out)
{
	const struct cfg_access_edge *e = &cfg->edge;
	memset(out, 0, sizeof(*out));
	out->network = POL_NET_FEDERATION;
	for (unsigned i = 0; i < cfg->nsip_domains; i++)
		if (dom_eq(domain, len, cfg->sip_domains[i])) {
			out->kind = POL_DOM_OWN;
			return;
		}
	for (unsigned i = 0; i < cfg->nblocked; i++)
		if (dom_eq(domain, len, cfg->blocked[i].domain)) {
			out->kind = POL_DOM_BLOCKED;
			out->blocked = &cfg->blocked[i];
			return;
		}
	for (unsigned i = 0; i < cfg->nproviders; i++) {
		const struct cfg_provider *p = &cfg->providers[i];
		for (unsigned d = 0; p->enabled && d < p->ndomains; d++)
			if (dom_eq(domain, len, p->domains[d])) {
				out->kind = POL_DOM_SERVER;
				out->source = POL_SRC_AUTHORIZED_SERVER;
				out->network = provider_network(p);
				out->server = &p->server;
				out->provider = p;
				out->verification = p->verification;
				return;
			}
	}
	for (unsigned i = 0; i < cfg->nallowed; i++) {
		const struct cfg_allowed_domain *a = &cfg->allowed[i];
		if (!dom_eq(domain, len, a->domain))
			continue;
		out->allowed = a;
		out->verification = a->verification;
		if (a->server.fqdn) {
			out->kind = POL_DOM_SERVER;
			out->source = POL_SRC_DIRECT_PARTNER;
			out->server = &a->server;
			return;
		}
		break;
	}
	if (!out->allowed && !e->enable_partner_discovery) {
		out->kind = POL_DOM_DENIED;
		return;
	}
	if (!out->allowed) {
		out->discovered = 1;
		out->verification = e->discovered_verification;
	}
	/* A default route replaces the SRV lookup: the upstream server decides. */
	if (e->use_default_route) {
		out->kind = POL_DOM_SERVER;
		out->source = POL_SRC_AUTHORIZED_SERVER;
		out->server = &e->default_route;
		out->network = e->default_route_is_public_provider ? POL_NET_PUBLIC_CLOUD
		                                                   : POL_NET_FEDERATION;
		out->verification = e->default_route_verification;
		return;
	}
	out->kind = POL_DOM_SRV;
	out->source = POL_SRC_AUTO_FEDERATION;
}

int pol_srv_target_ok(const struct edge_cfg *cfg, const char *domain, size_t len,
                      const char *target, const struct cfg_provider **provider)
{
	char d[256];
	*provider = NULL;
	if (len >= sizeof(d))
		return 0;
	memcpy(d, domain, len);
	d[len] = '\0';
	if (dom_within(target, strlen(target), d))
		return 1;
	*provider = pol_provider_by_fqdn(cfg, target, strlen(target));
	return *provider != NULL;
}

const struct cfg_access_policy *pol_user_policy(const struct edge_cfg *cfg,
                                                const char *user, size_t userlen,
                                                const char *host, size_t hostlen)
{
	for (unsigned i = 1; i < cfg->npolicies; i++) {
		const struct cfg_access_policy *p = &cfg->policies[i];
		for (unsigned u = 0; u < p->nusers; u++)
			if (dom_user_match(p->users[u], user, userlen, host, hostlen))
				return p;
	}
	return &cfg->policies[0];
}

int pol_policy_permits(const struct cfg_access_policy *p, enum pol_network net)
{
	return net == POL_NET_PUBLIC_CLOUD ? p->public_cloud : p->federation;
}

int pol_names_have(const char *const *names, unsigned n, const char *name)
{
	for (unsigned i = 0; i < n; i++)
		if (strcasecmp(names[i], name) == 0)
			return 1;
	return 0;
}

void pol_classify_peer(const struct edge_cfg *cfg, const char *const *names, unsigned n,
                       struct pol_peer *out)
{
	memset(out, 0, sizeof(*out));
	out->fqdn = n ? names[0] : NULL;
	for (unsigned i = 0; i < cfg->nallowed; i++) {
		const char *fqdn = cfg->allowed[i].server.fqdn;
		if (fqdn && pol_names_have(names, n, fqdn)) {
			out->source = POL_SRC_DIRECT_PARTNER;
			out->fqdn = fqdn;
			return;
		}
	}
	for (unsigned i = 0; i < cfg->nproviders; i++) {
		const struct cfg_provider *p = &cfg->providers[i];
		if (p->enabled && pol_names_have(names, n, p->server.fqdn)) {
			out->source = POL_SRC_AUTHORIZED_SERVER;
			out->fqdn = p->server.fqdn;
			out->provider = p;
			return;
		}
	}
	const struct cfg_server *route = &cfg->edge.default_route;
	if (cfg->edge.use_default_route && pol_names_have(names, n, route->fqdn)) {
		out->source = POL_SRC_AUTHORIZED_SERVER;
		out->fqdn = route->fqdn;
	}
}

int pol_is_verified(enum cfg_verification level, int source_verified)
{
	switch (level) {
	case CFG_VERIFY_ALWAYS_VERIFIABLE: return 1;
	case CFG_VERIFY_ALWAYS_UNVERIFIABLE: return 0;
	case CFG_VERIFY_USE_SOURCE: break;
	}
	return source_verified;
}

size_t pol_trust_value(char *buf, size_t len, enum pol_source source, const char *edge_fqdn,
                       int verified, enum pol_network net, const char *remote_fqdn)
{
	int n = snprintf(buf, len, "ms-source-type=%s;ms-ep-fqdn=%s;ms-source-verified-user=%s;"
	                 "ms-source-network=%s;ms-remote-fqdn=%s", pol_source_name(source),
	                 edge_fqdn, verified ? "verified" : "unverified", pol_network_name(net),
	                 remote_fqdn ? remote_fqdn : "");
	if (n < 0 || len == 0)
		return 0;
	return (size_t)n < len ? (size_t)n : len - 1;
}
