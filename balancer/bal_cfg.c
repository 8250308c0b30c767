#include "bal_cfg.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "clu_msg.h"
#include "clu_settings.h"
#include "domain.h"

struct loader {
	struct cfgu u;
	struct bal_cfg *cfg;
	config_t *lc;
};

/* A domain name setting: valid, no trailing dot. */
static int get_name(struct loader *ld, const config_setting_t *g, const char *name,
                    int required, const char **out)
{
	*out = NULL;
	if (!required && !cfgu_setting(g, name))
		return 0;
	if (cfgu_string(&ld->u, g, name, NULL, out) < 0)
		return -1;
	if (!dom_valid(*out, strlen(*out)))
		return cfgu_fail(&ld->u, cfgu_setting(g, name), "'%s' is not a valid domain name",
		                 *out);
	return 0;
}

static int get_port(struct loader *ld, const config_setting_t *g, const char *name, unsigned def,
                    uint16_t *out)
{
	unsigned v;
	if (cfgu_uint(&ld->u, g, name, 0, 65535, def, &v) < 0)
		return -1;
	*out = (uint16_t)v;
	return 0;
}

/* A list of numeric addresses of one family each, split into IPv4 and IPv6. */
static int get_ips(struct loader *ld, const config_setting_t *g, const char *name,
                   struct in_addr **v4, unsigned *n4, struct in6_addr **v6, unsigned *n6)
{
	const char **texts;
	unsigned n;
	*v4 = NULL;
	if (v6)
		*v6 = NULL;
	*n4 = *n6 = 0;
	if (cfgu_strings(&ld->u, g, name, 0, &texts, &n) < 0)
		return -1;
	int rc = 0;
	*v4 = calloc(n + 1, sizeof(**v4));
	if (v6)
		*v6 = calloc(n + 1, sizeof(**v6));
	if (!*v4 || (v6 && !*v6))
		rc = cfgu_fail(&ld->u, g, "out of memory");
	for (unsigned i = 0; rc == 0 && i < n; i++) {
		if (inet_pton(AF_INET, texts[i], &(*v4)[*n4]) == 1)
			(*n4)++;
		else if (v6 && inet_pton(AF_INET6, texts[i], &(*v6)[*n6]) == 1)
			(*n6)++;
		else
			rc = cfgu_fail(&ld->u, cfgu_setting(g, name), "'%s' is not a numeric %s address",
			               texts[i], v6 ? "IPv4 or IPv6" : "IPv4");
	}
	free(texts);
	return rc;
}

static int load_edges(struct loader *ld, const config_setting_t *root)
{
	static const char *const keys[] = { "name", "fqdn", "address", "sip_port", "xmpp_port",
	                                    "web_port", NULL };
	const config_setting_t *list;
	unsigned n;
	if (cfgu_group_list(&ld->u, root, "edges", &list, &n) < 0)
		return -1;
	if (n == 0)
		return cfgu_fail(&ld->u, list ? list : root, "'edges' must list the pool's edges");
	struct bal_cfg *cfg = ld->cfg;
	if (!(cfg->edges = calloc(n, sizeof(*cfg->edges))))
		return cfgu_fail(&ld->u, list, "out of memory");
	cfg->nedges = n;
	for (unsigned i = 0; i < n; i++) {
		const config_setting_t *g = config_setting_get_elem(list, i);
		struct bal_cfg_edge *e = &cfg->edges[i];
		const char *address;
		if (cfgu_check_members(&ld->u, g, keys) < 0 ||
		    cfgu_string(&ld->u, g, "name", NULL, &e->name) < 0 ||
		    get_name(ld, g, "fqdn", 1, &e->fqdn) < 0 ||
		    cfgu_string(&ld->u, g, "address", NULL, &address) < 0 ||
		    get_port(ld, g, "sip_port", 5061, &e->sip_port) < 0 ||
		    get_port(ld, g, "xmpp_port", 5269, &e->xmpp_port) < 0 ||
		    get_port(ld, g, "web_port", 443, &e->web_port) < 0)
			return -1;
		if (!clu_name_valid(e->name))
			return cfgu_fail(&ld->u, cfgu_setting(g, "name"), "'%s' is not a node name "
			                 "(letters, digits, '.', '-', '_'): the edge's cluster name",
			                 e->name);
		if (e->sip_port == 0)
			return cfgu_fail(&ld->u, g, "'sip_port' must not be 0: the health check uses it");
		if (cfgu_numeric(address, e->sip_port, &e->addr) < 0)
			return cfgu_fail(&ld->u, cfgu_setting(g, "address"),
			                 "'%s' is not a numeric IPv4 or IPv6 address", address);
		for (unsigned j = 0; j < i; j++)
			if (strcmp(cfg->edges[j].name, e->name) == 0)
				return cfgu_fail(&ld->u, cfgu_setting(g, "name"),
				                 "edge '%s' is listed twice", e->name);
	}
	return 0;
}

static int load_health(struct loader *ld, const config_setting_t *root)
{
	static const char *const keys[] = { "interval_ms", "timeout_ms", "rise", "fall", NULL };
	const config_setting_t *g = cfgu_setting(root, "health");
	struct bal_cfg_health *h = &ld->cfg->health;
	return cfgu_check_members(&ld->u, g, keys) < 0 ||
	       cfgu_uint(&ld->u, g, "interval_ms", 50, 60000, 500, &h->interval_ms) < 0 ||
	       cfgu_uint(&ld->u, g, "timeout_ms", 50, 60000, 1000, &h->timeout_ms) < 0 ||
	       cfgu_uint(&ld->u, g, "rise", 1, 100, 2, &h->rise) < 0 ||
	       cfgu_uint(&ld->u, g, "fall", 1, 100, 2, &h->fall) < 0
	       ? -1 : 0;
}

/* Whether name is zone or lies inside it. */
static int in_zone(const char *name, const char *zone)
{
	size_t n = strlen(name), z = strlen(zone);
	return n >= z && strcasecmp(name + n - z, zone) == 0 && (n == z || name[n - z - 1] == '.');
}

static int load_zone(struct loader *ld, const config_setting_t *g, struct bal_cfg_zone *z)
{
	static const char *const keys[] = { "domain", "pool_name", "vip_name", "vip", "ns",
	                                    "ns_addresses", "hostmaster", "serial", "sip_port",
	                                    "sip_tls_port", "xmpp_port", NULL };
	unsigned serial, unused;
	if (cfgu_check_members(&ld->u, g, keys) < 0 || get_name(ld, g, "domain", 1, &z->domain) < 0 ||
	    get_name(ld, g, "pool_name", 1, &z->pool_name) < 0 ||
	    get_name(ld, g, "vip_name", 0, &z->vip_name) < 0 ||
	    get_ips(ld, g, "vip", &z->vip4, &z->nvip4, &z->vip6, &z->nvip6) < 0 ||
	    cfgu_strings(&ld->u, g, "ns", 1, &z->ns, &z->nns) < 0 ||
	    get_ips(ld, g, "ns_addresses", &z->ns4, &z->nns4, NULL, &unused) < 0 ||
	    cfgu_uint(&ld->u, g, "serial", 0, 4294967295LL, 0, &serial) < 0 ||
	    get_port(ld, g, "sip_port", 5061, &z->sip_port) < 0 ||
	    get_port(ld, g, "sip_tls_port", 443, &z->sip_tls_port) < 0 ||
	    get_port(ld, g, "xmpp_port", 5269, &z->xmpp_port) < 0)
		return -1;
	z->serial = serial;
	char hostmaster[300];
	snprintf(hostmaster, sizeof(hostmaster), "hostmaster.%s", z->domain);
	if (cfgu_setting(g, "hostmaster")) {
		if (get_name(ld, g, "hostmaster", 1, &z->hostmaster) < 0)
			return -1;
	} else if (!(z->hostmaster = strdup(hostmaster))) {
		return cfgu_fail(&ld->u, g, "out of memory");
	} else {
		z->owns_hostmaster = 1;
	}
	for (unsigned i = 0; i < z->nns; i++)
		if (!dom_valid(z->ns[i], strlen(z->ns[i])))
			return cfgu_fail(&ld->u, cfgu_setting(g, "ns"), "'%s' is not a valid domain name",
			                 z->ns[i]);
	if (!in_zone(z->pool_name, z->domain))
		return cfgu_fail(&ld->u, cfgu_setting(g, "pool_name"), "'%s' is not inside '%s'",
		                 z->pool_name, z->domain);
	if (z->vip_name && !in_zone(z->vip_name, z->domain))
		return cfgu_fail(&ld->u, cfgu_setting(g, "vip_name"), "'%s' is not inside '%s'",
		                 z->vip_name, z->domain);
	if (z->vip_name && z->nvip4 + z->nvip6 == 0)
		return cfgu_fail(&ld->u, g, "'vip_name' needs the VIP's addresses in 'vip'");
	if (in_zone(z->ns[0], z->domain) && z->nns4 == 0)
		return cfgu_fail(&ld->u, cfgu_setting(g, "ns"), "'%s' lies in the zone: its glue "
		                 "'ns_addresses' is required", z->ns[0]);
	return 0;
}

static int load_update(struct loader *ld, const config_setting_t *g)
{
	static const char *const keys[] = { "server", "port", "zone", "tsig_name", "tsig_algorithm",
	                                    "tsig_secret", "timeout_ms", NULL };
	struct bal_cfg_dns *d = &ld->cfg->dns;
	struct bal_cfg_update *up = calloc(1, sizeof(*up));
	const char *server;
	unsigned port;
	if (!up)
		return cfgu_fail(&ld->u, g, "out of memory");
	d->update = up;
	if (cfgu_check_members(&ld->u, g, keys) < 0 ||
	    cfgu_string(&ld->u, g, "server", NULL, &server) < 0 ||
	    cfgu_uint(&ld->u, g, "port", 1, 65535, 53, &port) < 0 ||
	    get_name(ld, g, "zone", 1, &up->zone) < 0 ||
	    cfgu_string(&ld->u, g, "tsig_name", NULL, &up->tsig_name) < 0 || /* bal_update checks */
	    cfgu_string(&ld->u, g, "tsig_algorithm", "hmac-sha256", &up->tsig_algorithm) < 0 ||
	    cfgu_string(&ld->u, g, "tsig_secret", NULL, &up->tsig_secret) < 0 ||
	    cfgu_uint(&ld->u, g, "timeout_ms", 100, 60000, 2000, &up->timeout_ms) < 0)
		return -1;
	if (cfgu_numeric(server, (uint16_t)port, &up->server) < 0)
		return cfgu_fail(&ld->u, cfgu_setting(g, "server"),
		                 "'%s' is not a numeric IPv4 or IPv6 address", server);
	for (unsigned i = 0; i < d->nzones; i++)
		if (strcasecmp(d->zones[i].domain, up->zone) == 0)
			return 0;
	return cfgu_fail(&ld->u, cfgu_setting(g, "zone"), "'%s' is not one of dns.zones", up->zone);
}

static int load_dns(struct loader *ld, const config_setting_t *root)
{
	static const char *const keys[] = { "listen", "ttl", "static_ttl", "all_when_none_healthy",
	                                    "max_tcp_clients", "zones", "update", NULL };
	const config_setting_t *g = cfgu_setting(root, "dns");
	struct bal_cfg_dns *d = &ld->cfg->dns;
	unsigned ttl, static_ttl;
	if (!g)
		return 0;
	if (cfgu_check_members(&ld->u, g, keys) < 0 ||
	    (cfgu_setting(g, "listen") &&
	     cfgu_listeners(&ld->u, g, "listen", NULL, &d->listen, &d->nlisten) < 0) ||
	    cfgu_uint(&ld->u, g, "ttl", 0, 86400, 5, &ttl) < 0 ||
	    cfgu_uint(&ld->u, g, "static_ttl", 0, 604800, 300, &static_ttl) < 0 ||
	    cfgu_bool(&ld->u, g, "all_when_none_healthy", 1, &d->all_when_none_healthy) < 0 ||
	    cfgu_uint(&ld->u, g, "max_tcp_clients", 1, 100000, 64, &d->max_tcp_clients) < 0)
		return -1;
	d->ttl = ttl;
	d->static_ttl = static_ttl;
	const config_setting_t *zones;
	unsigned n;
	if (cfgu_group_list(&ld->u, g, "zones", &zones, &n) < 0)
		return -1;
	if (n == 0)
		return cfgu_fail(&ld->u, zones ? zones : g, "'zones' must list at least one zone");
	if (!(d->zones = calloc(n, sizeof(*d->zones))))
		return cfgu_fail(&ld->u, zones, "out of memory");
	d->nzones = n;
	for (unsigned i = 0; i < n; i++) {
		if (load_zone(ld, config_setting_get_elem(zones, i), &d->zones[i]) < 0)
			return -1;
		for (unsigned j = 0; j < i; j++)
			if (strcasecmp(d->zones[j].domain, d->zones[i].domain) == 0)
				return cfgu_fail(&ld->u, config_setting_get_elem(zones, i),
				                 "zone '%s' is listed twice", d->zones[i].domain);
	}
	const config_setting_t *update = cfgu_setting(g, "update");
	if (update && load_update(ld, update) < 0)
		return -1;
	if (d->nlisten == 0 && !d->update)
		return cfgu_fail(&ld->u, g, "'dns' needs 'listen' (a responder), 'update' "
		                 "(RFC 2136), or both");
	return 0;
}

static int load_forwards(struct loader *ld, const config_setting_t *g, struct bal_cfg_vip *v)
{
	static const char *const keys[] = { "port", "edge_port", "proxy_protocol", NULL };
	const config_setting_t *list;
	unsigned n;
	if (cfgu_group_list(&ld->u, g, "forward", &list, &n) < 0)
		return -1;
	if (n == 0)
		return cfgu_fail(&ld->u, list ? list : g, "'forward' must list at least one port");
	if (!(v->forwards = calloc(n, sizeof(*v->forwards))))
		return cfgu_fail(&ld->u, list, "out of memory");
	v->nforwards = n;
	for (unsigned i = 0; i < n; i++) {
		const config_setting_t *f = config_setting_get_elem(list, i);
		struct bal_cfg_forward *fw = &v->forwards[i];
		unsigned port, edge_port;
		if (cfgu_check_members(&ld->u, f, keys) < 0 ||
		    cfgu_uint(&ld->u, f, "port", 1, 65535, 0, &port) < 0 ||
		    cfgu_uint(&ld->u, f, "edge_port", 1, 65535, 0, &edge_port) < 0 ||
		    cfgu_bool(&ld->u, f, "proxy_protocol", 1, &fw->proxy_protocol) < 0)
			return -1;
		if (port == 0 || edge_port == 0)
			return cfgu_fail(&ld->u, f, "'port' and 'edge_port' are required");
		fw->listen_port = (uint16_t)port;
		fw->edge_port = (uint16_t)edge_port;
		for (unsigned j = 0; j < i; j++)
			if (v->forwards[j].listen_port == fw->listen_port)
				return cfgu_fail(&ld->u, f, "port %u is forwarded twice", port);
	}
	return 0;
}

static int load_vip(struct loader *ld, const config_setting_t *root)
{
	static const char *const keys[] = { "addresses", "forward", "affinity_idle_s",
	                                    "connect_timeout_ms", "max_connections", "buffer_kb",
	                                    NULL };
	const config_setting_t *g = cfgu_setting(root, "vip");
	if (!g)
		return 0;
	struct bal_cfg_vip *v = calloc(1, sizeof(*v));
	if (!v)
		return cfgu_fail(&ld->u, g, "out of memory");
	ld->cfg->vip = v;
	const char **texts;
	unsigned n, kb;
	if (cfgu_check_members(&ld->u, g, keys) < 0 ||
	    cfgu_strings(&ld->u, g, "addresses", 1, &texts, &n) < 0)
		return -1;
	int rc = 0;
	if (!(v->addrs = calloc(n, sizeof(*v->addrs))))
		rc = cfgu_fail(&ld->u, g, "out of memory");
	for (unsigned i = 0; rc == 0 && i < n; i++, v->naddrs++)
		if (cfgu_numeric(texts[i], 0, &v->addrs[i]) < 0)
			rc = cfgu_fail(&ld->u, cfgu_setting(g, "addresses"),
			               "'%s' is not a numeric IPv4 or IPv6 address", texts[i]);
	free(texts);
	if (rc < 0 || load_forwards(ld, g, v) < 0 ||
	    cfgu_uint(&ld->u, g, "affinity_idle_s", 0, 86400, 1200, &v->affinity_idle_s) < 0 ||
	    cfgu_uint(&ld->u, g, "connect_timeout_ms", 50, 60000, 2000, &v->connect_timeout_ms) < 0 ||
	    cfgu_uint(&ld->u, g, "max_connections", 1, 1000000, 10000, &v->max_connections) < 0 ||
	    cfgu_uint(&ld->u, g, "buffer_kb", 4, 1024, 64, &kb) < 0)
		return -1;
	v->buffer_bytes = (size_t)kb * 1024;
	return 0;
}

static int load_keepalived(struct loader *ld, const config_setting_t *root)
{
	static const char *const keys[] = { "interface", "virtual_router_id", "priority",
	                                    "advert_ms", "prefix_len", "state_file",
	                                    "unicast_peers", "unicast_src", "notify", "preempt",
	                                    NULL };
	const config_setting_t *g = cfgu_setting(root, "keepalived");
	if (!g)
		return 0;
	if (!ld->cfg->vip)
		return cfgu_fail(&ld->u, g, "'keepalived' moves the VIP: section 'vip' is required");
	struct bal_cfg_keepalived *k = calloc(1, sizeof(*k));
	if (!k)
		return cfgu_fail(&ld->u, g, "out of memory");
	ld->cfg->keepalived = k;
	if (cfgu_check_members(&ld->u, g, keys) < 0 ||
	    cfgu_string(&ld->u, g, "interface", NULL, &k->interface) < 0 ||
	    cfgu_uint(&ld->u, g, "virtual_router_id", 1, 255, 51, &k->virtual_router_id) < 0 ||
	    cfgu_uint(&ld->u, g, "priority", 1, 254, 100, &k->priority) < 0 ||
	    cfgu_uint(&ld->u, g, "advert_ms", 10, 40950, 200, &k->advert_ms) < 0 ||
	    cfgu_uint(&ld->u, g, "prefix_len", 1, 32, 24, &k->prefix_len) < 0 ||
	    cfgu_string(&ld->u, g, "state_file", NULL, &k->state_file) < 0 ||
	    cfgu_strings(&ld->u, g, "unicast_peers", 0, &k->unicast_peers, &k->nunicast_peers) < 0 ||
	    cfgu_bool(&ld->u, g, "preempt", 0, &k->preempt) < 0)
		return -1;
	if (k->advert_ms % 10)
		return cfgu_fail(&ld->u, cfgu_setting(g, "advert_ms"),
		                 "'advert_ms' must be a multiple of 10 (VRRPv3 counts centiseconds)");
	if (cfgu_setting(g, "unicast_src") &&
	    cfgu_string(&ld->u, g, "unicast_src", NULL, &k->unicast_src) < 0)
		return -1;
	if (cfgu_setting(g, "notify") && cfgu_string(&ld->u, g, "notify", NULL, &k->notify) < 0)
		return -1;
	/* One VRRP instance carries one address family: keepalived drops the others. */
	int family = ld->cfg->vip->addrs[0].sa.ss_family;
	for (unsigned i = 1; i < ld->cfg->vip->naddrs; i++)
		if (ld->cfg->vip->addrs[i].sa.ss_family != family)
			return cfgu_fail(&ld->u, g, "the VIP's addresses mix IPv4 and IPv6: keepalived moves "
			                 "one family per instance");
	struct cfgu_addr a;
	for (unsigned i = 0; i < k->nunicast_peers; i++)
		if (cfgu_numeric(k->unicast_peers[i], 0, &a) < 0 || a.sa.ss_family != family)
			return cfgu_fail(&ld->u, cfgu_setting(g, "unicast_peers"),
			                 "'%s' is not a numeric address of the VIP's family",
			                 k->unicast_peers[i]);
	if (k->unicast_src && (cfgu_numeric(k->unicast_src, 0, &a) < 0 || a.sa.ss_family != family))
		return cfgu_fail(&ld->u, cfgu_setting(g, "unicast_src"),
		                 "'%s' is not a numeric address of the VIP's family", k->unicast_src);
	/* keepalived's configuration has its own syntax: nothing may break out of a
	 * line or a quoted string (notify is a command line: spaces are fine). */
	const char *texts[] = { k->interface, k->state_file, k->notify };
	for (unsigned i = 0; i < 3; i++)
		if (texts[i] && strpbrk(texts[i], i == 2 ? "\"'{}#!\n\t" : "\"'{}#!\n\t "))
			return cfgu_fail(&ld->u, g, "'%s' holds a character keepalived's configuration "
			                 "cannot carry", texts[i]);
	return 0;
}

static int load(struct loader *ld)
{
	static const char *const known[] = { "log", "tls", "edges", "health", "dns", "vip",
	                                     "keepalived", "cluster", "status", NULL };
	static const char *const tls_keys[] = { "ca_file", "cert_file", "key_file", NULL };
	struct bal_cfg *cfg = ld->cfg;
	const config_setting_t *root = config_root_setting(ld->lc);
	const config_setting_t *tls = cfgu_setting(root, "tls");
	if (cfgu_check_sections(&ld->u, root, known) < 0 ||
	    cfgu_log(&ld->u, root, &cfg->log_level, &cfg->log_syslog) < 0)
		return -1;
	if (!tls)
		return cfgu_fail(&ld->u, root, "section 'tls' is required (the health checks' client)");
	if (cfgu_check_members(&ld->u, tls, tls_keys) < 0 ||
	    cfgu_string(&ld->u, tls, "ca_file", NULL, &cfg->ca_file) < 0 ||
	    cfgu_string(&ld->u, tls, "cert_file", NULL, &cfg->cert_file) < 0 ||
	    cfgu_string(&ld->u, tls, "key_file", NULL, &cfg->key_file) < 0)
		return -1;
	if (load_edges(ld, root) < 0 || load_health(ld, root) < 0 || load_dns(ld, root) < 0 ||
	    load_vip(ld, root) < 0 || load_keepalived(ld, root) < 0 ||
	    clu_settings_load(&ld->u, cfgu_setting(root, "cluster"), NULL, &cfg->cluster) < 0 ||
	    cfgu_status(&ld->u, root, 9190, &cfg->status_enabled, &cfg->status) < 0)
		return -1;
	if (!cfgu_setting(root, "dns") && !cfg->vip)
		return cfgu_fail(&ld->u, root, "nothing to do: configure 'dns', 'vip', or both");
	return 0;
}

static int load_from(const char *path, const char *text, const char *source, int flags,
                     struct bal_cfg **out, char *err, size_t errlen)
{
	struct bal_cfg *cfg = calloc(1, sizeof(*cfg));
	*out = NULL;
	if (!cfg || !(cfg->source = strdup(source))) {
		free(cfg);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	struct loader ld = { .u = { .source = cfg->source, .err = err, .errlen = errlen,
	                            .flags = flags }, .cfg = cfg };
	if (cfgu_open(&ld.u, path, text, &ld.lc) < 0) {
		bal_cfg_free(cfg);
		return -1;
	}
	cfg->lc = ld.lc;
	if (load(&ld) < 0) {
		bal_cfg_free(cfg);
		return -1;
	}
	*out = cfg;
	return 0;
}

int bal_cfg_load(const char *path, struct bal_cfg **out, char *err, size_t errlen)
{
	if (!path)
		return load_from(NULL, bal_cfg_default_text, "(default)", 0, out, err, errlen);
	return load_from(path, NULL, path, 0, out, err, errlen);
}

int bal_cfg_load_text(const char *text, const char *source, int flags, struct bal_cfg **out,
                      char *err, size_t errlen)
{
	return load_from(NULL, text, source, flags, out, err, errlen);
}

void bal_cfg_free(struct bal_cfg *cfg)
{
	if (!cfg)
		return;
	for (unsigned i = 0; cfg->dns.zones && i < cfg->dns.nzones; i++) {
		struct bal_cfg_zone *z = &cfg->dns.zones[i];
		free(z->vip4);
		free(z->vip6);
		free(z->ns);
		free(z->ns4);
		if (z->owns_hostmaster)
			free((char *)z->hostmaster);
	}
	free(cfg->dns.zones);
	free(cfg->dns.listen);
	free(cfg->dns.update);
	if (cfg->keepalived)
		free(cfg->keepalived->unicast_peers);
	free(cfg->keepalived);
	if (cfg->vip) {
		free(cfg->vip->addrs);
		free(cfg->vip->forwards);
		free(cfg->vip);
	}
	clu_settings_free(cfg->cluster);
	free(cfg->edges);
	free((char *)cfg->source);
	cfgu_close(cfg->lc);
	free(cfg);
}
