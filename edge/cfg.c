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

/* What a failed check reports: the line of the setting that is wrong. */
struct loader {
	struct edge_cfg *cfg;
	config_t *lc;
	char *err;
	size_t errlen;
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

/* A string member; `def` when absent; error when present but not a string. */
/* libconfig accepts any name: a misspelt setting must not be silently ignored. */
static int check_members(struct loader *ld, const config_setting_t *group,
                         const char *const *known)
{
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

static int load_partners(struct loader *ld, const config_setting_t *root)
{
	struct edge_cfg *cfg = ld->cfg;
	const config_setting_t *list = setting(root, "partners");
	if (!list)
		return 0;
	if (!config_setting_is_list(list))
		return fail(ld, list, "'partners' must be a list ( {...}, {...} )");
	int count = config_setting_length(list);
	cfg->partners = calloc((size_t)count + 1, sizeof(*cfg->partners));
	if (!cfg->partners)
		return fail(ld, list, "out of memory");
	cfg->npartners = (unsigned)count;
	for (int i = 0; i < count; i++) {
		const config_setting_t *p = config_setting_get_elem(list, (unsigned)i);
		struct cfg_partner *o = &cfg->partners[i];
		unsigned port;
		static const char *const partner_keys[] = { "domains", "fqdn", "address", "port", NULL };
		if (!config_setting_is_group(p))
			return fail(ld, p, "a partner is a group { domains = [...]; fqdn = ...; }");
		if (check_members(ld, p, partner_keys) < 0)
			return -1;
		if (get_strings(ld, p, "domains", 1, &o->domains, &o->ndomains) < 0 ||
		    get_string(ld, p, "fqdn", NULL, &o->fqdn) < 0 ||
		    get_uint(ld, p, "port", 1, 65535, 5061, &port) < 0 ||
		    get_string(ld, p, "address", "", &o->address) < 0)
			return -1;
		o->port = (uint16_t)port;
		if (strcasecmp(o->fqdn, cfg->pool_fqdn) == 0)
			return fail(ld, setting(p, "fqdn"), "partner fqdn '%s' is our own pool_fqdn",
			            o->fqdn);
		if (resolve(ld, p, *o->address ? o->address : o->fqdn, o->port, &o->addr) < 0)
			return -1;
		/* A domain served by two partners, or by us, has no single route. */
		for (unsigned d = 0; d < o->ndomains; d++) {
			for (unsigned e = 0; e < d; e++)
				if (strcasecmp(o->domains[d], o->domains[e]) == 0)
					return fail(ld, p, "domain '%s' is listed twice", o->domains[d]);
			for (unsigned s = 0; s < cfg->nsip_domains; s++)
				if (strcasecmp(o->domains[d], cfg->sip_domains[s]) == 0)
					return fail(ld, p, "partner domain '%s' is one of node.sip_domains",
					            o->domains[d]);
			for (int q = 0; q < i; q++)
				for (unsigned e = 0; e < cfg->partners[q].ndomains; e++)
					if (strcasecmp(o->domains[d], cfg->partners[q].domains[e]) == 0)
						return fail(ld, p, "domain '%s' is listed by two partners",
						            o->domains[d]);
		}
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
	                                     "partners", "limits", "status" };

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
	static const char *const internal_keys[] = { "listen", "next_hop", "max_message_kb", NULL };
	static const char *const hop_keys[] = { "host", "fqdn", "port", "transport", NULL };
	static const char *const external_keys[] = { "listen", "max_message_kb", NULL };
	static const char *const status_keys[] = { "address", "port", NULL };
	static const char *const limits_keys[] = { "max_connections", "max_headers",
	                                           "max_line_bytes", "outgoing_tls_count",
	                                           "connect_timeout_ms", "idle_timeout_s", NULL };
	if (check_members(ld, node, node_keys) < 0 || check_members(ld, logs, log_keys) < 0 ||
	    check_members(ld, tls, tls_keys) < 0 || check_members(ld, internal, internal_keys) < 0 ||
	    check_members(ld, setting(internal, "next_hop"), hop_keys) < 0 ||
	    check_members(ld, external, external_keys) < 0 ||
	    check_members(ld, setting(root, "status"), status_keys) < 0 ||
	    check_members(ld, limits, limits_keys) < 0)
		return -1;

	if (get_string(ld, node, "pool_fqdn", NULL, &cfg->pool_fqdn) < 0 ||
	    get_strings(ld, node, "sip_domains", 1, &cfg->sip_domains, &cfg->nsip_domains) < 0)
		return -1;

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
	    get_uint(ld, internal, "max_message_kb", 1, 256, 128, &kb) < 0)
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
	    get_uint(ld, external, "max_message_kb", 1, 20000, 5000, &kb) < 0)
		return -1;
	cfg->external_max_msg = (size_t)kb * 1024;

	if (load_partners(ld, root) < 0)
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
	    get_uint(ld, limits, "outgoing_tls_count", 1, 64, 4, &cfg->outgoing_tls_count) < 0 ||
	    get_uint(ld, limits, "connect_timeout_ms", 100, 600000, 5000, &cfg->connect_timeout_ms) < 0 ||
	    get_uint(ld, limits, "idle_timeout_s", 1, 86400, 1200, &cfg->idle_timeout_s) < 0)
		return -1;
	return 0;
}

int cfg_load(const char *path, struct edge_cfg **out, char *err, size_t errlen)
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
	cfg->source = strdup(path ? path : "(default)");
	if (!cfg->source) {
		cfg_free(cfg);
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	int ok = path ? config_read_file(lc, path) : config_read_string(lc, cfg_default_text);
	if (ok != CONFIG_TRUE) {
		if (config_error_type(lc) == CONFIG_ERR_FILE_IO)
			snprintf(err, errlen, "%s: cannot read the file", cfg->source);
		else
			snprintf(err, errlen, "%s:%d: %s", cfg->source, config_error_line(lc),
			         config_error_text(lc));
		cfg_free(cfg);
		return -1;
	}
	struct loader ld = { .cfg = cfg, .lc = lc, .err = err, .errlen = errlen };
	if (load(&ld) < 0) {
		cfg_free(cfg);
		return -1;
	}
	*out = cfg;
	return 0;
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
	for (unsigned i = 0; cfg->partners && i < cfg->npartners; i++)
		free(cfg->partners[i].domains);
	free(cfg->partners);
	free(cfg->internal_listen);
	free(cfg->external_listen);
	free(cfg->sip_domains);
	free((char *)cfg->source);
	if (cfg->lc)
		config_destroy(cfg->lc);
	free(cfg->lc);
	free(cfg);
}
