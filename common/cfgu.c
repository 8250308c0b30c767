#include "cfgu.h"

#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cfgu_open(struct cfgu *u, const char *path, const char *text, config_t **out)
{
	config_t *lc = calloc(1, sizeof(*lc));
	*out = NULL;
	if (!lc) {
		snprintf(u->err, u->errlen, "out of memory");
		return -1;
	}
	config_init(lc);
	if ((path ? config_read_file(lc, path) : config_read_string(lc, text)) != CONFIG_TRUE) {
		if (config_error_type(lc) == CONFIG_ERR_FILE_IO)
			snprintf(u->err, u->errlen, "%s: cannot read the file", u->source);
		else
			snprintf(u->err, u->errlen, "%s:%d: %s", u->source, config_error_line(lc),
			         config_error_text(lc));
		cfgu_close(lc);
		return -1;
	}
	*out = lc;
	return 0;
}

void cfgu_close(config_t *lc)
{
	if (!lc)
		return;
	config_destroy(lc);
	free(lc);
}

int cfgu_fail(struct cfgu *u, const config_setting_t *at, const char *fmt, ...)
{
	char why[256];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	unsigned line = at ? config_setting_source_line(at) : 0;
	snprintf(u->err, u->errlen, "%s:%u: %s", u->source, line, why);
	return -1;
}

const config_setting_t *cfgu_setting(const config_setting_t *group, const char *name)
{
	return group ? config_setting_get_member(group, name) : NULL;
}

static int known_name(const char *const *known, const char *name)
{
	while (*known && strcmp(*known, name) != 0)
		known++;
	return *known != NULL;
}

int cfgu_check_sections(struct cfgu *u, const config_setting_t *root, const char *const *known)
{
	/* A misspelt section would otherwise be ignored silently. */
	for (int i = 0; i < config_setting_length(root); i++) {
		const config_setting_t *s = config_setting_get_elem(root, (unsigned)i);
		if (!known_name(known, config_setting_name(s)))
			return cfgu_fail(u, s, "unknown section '%s'", config_setting_name(s));
	}
	return 0;
}

/* libconfig accepts any name, and a misspelt setting must not be silently ignored. */
int cfgu_check_members(struct cfgu *u, const config_setting_t *group, const char *const *known)
{
	if (group && !config_setting_is_group(group)) {
		const char *name = config_setting_name(group);
		return cfgu_fail(u, group, "'%s' must be a group { ... }",
		                 name ? name : "each element");
	}
	for (int i = 0; group && i < config_setting_length(group); i++) {
		const config_setting_t *s = config_setting_get_elem(group, (unsigned)i);
		if (!known_name(known, config_setting_name(s)))
			return cfgu_fail(u, s, "unknown setting '%s'", config_setting_name(s));
	}
	return 0;
}

int cfgu_string(struct cfgu *u, const config_setting_t *group, const char *name,
                const char *def, const char **out)
{
	const config_setting_t *s = cfgu_setting(group, name);
	if (!s) {
		if (!def)
			return cfgu_fail(u, group, "'%s' is required", name);
		*out = def;
		return 0;
	}
	const char *v = config_setting_get_string(s);
	if (!v)
		return cfgu_fail(u, s, "'%s' must be a string", name);
	if (!*v)
		return cfgu_fail(u, s, "'%s' must not be empty", name);
	*out = v;
	return 0;
}

int cfgu_uint(struct cfgu *u, const config_setting_t *group, const char *name,
              long long min, long long max, long long def, unsigned *out)
{
	const config_setting_t *s = cfgu_setting(group, name);
	if (!s) {
		*out = (unsigned)def;
		return 0;
	}
	int type = config_setting_type(s);
	if (type != CONFIG_TYPE_INT && type != CONFIG_TYPE_INT64)
		return cfgu_fail(u, s, "'%s' must be an integer", name);
	long long v = config_setting_get_int64(s);
	if (v < min || v > max)
		return cfgu_fail(u, s, "'%s' = %lld is out of range %lld-%lld", name, v, min, max);
	*out = (unsigned)v;
	return 0;
}

int cfgu_bool(struct cfgu *u, const config_setting_t *group, const char *name, int def,
              int *out)
{
	const config_setting_t *s = cfgu_setting(group, name);
	if (!s) {
		*out = def;
		return 0;
	}
	if (config_setting_type(s) != CONFIG_TYPE_BOOL)
		return cfgu_fail(u, s, "'%s' must be true or false", name);
	*out = config_setting_get_bool(s);
	return 0;
}

int cfgu_strings(struct cfgu *u, const config_setting_t *group, const char *name, int required,
                 const char ***out, unsigned *n)
{
	const config_setting_t *s = cfgu_setting(group, name);
	*out = NULL;
	*n = 0;
	if (!s)
		return required ? cfgu_fail(u, group, "'%s' is required", name) : 0;
	if (!config_setting_is_aggregate(s))
		return cfgu_fail(u, s, "'%s' must be a list of strings", name);
	int count = config_setting_length(s);
	if (required && count == 0)
		return cfgu_fail(u, s, "'%s' must not be empty", name);
	*out = calloc((size_t)count + 1, sizeof(**out));
	if (!*out)
		return cfgu_fail(u, s, "out of memory");
	for (int i = 0; i < count; i++) {
		const char *v = config_setting_get_string_elem(s, i);
		if (!v || !*v) {
			free(*out);
			*out = NULL;
			return cfgu_fail(u, s, "'%s' element %d must be a non-empty string", name, i + 1);
		}
		(*out)[i] = v;
	}
	*n = (unsigned)count;
	return 0;
}

int cfgu_group_list(struct cfgu *u, const config_setting_t *root, const char *name,
                    const config_setting_t **out, unsigned *n)
{
	*out = cfgu_setting(root, name);
	*n = 0;
	if (!*out)
		return 0;
	if (!config_setting_is_list(*out))
		return cfgu_fail(u, *out, "'%s' must be a list ( {...}, {...} )", name);
	int count = config_setting_length(*out);
	for (int i = 0; i < count; i++)
		if (!config_setting_is_group(config_setting_get_elem(*out, (unsigned)i)))
			return cfgu_fail(u, config_setting_get_elem(*out, (unsigned)i),
			                 "each element of '%s' is a group { ... }", name);
	*n = (unsigned)count;
	return 0;
}

int cfgu_listeners(struct cfgu *u, const config_setting_t *group, const char *name,
                   const char *const *extra, struct cfgu_listen **out, unsigned *n)
{
	const config_setting_t *list = cfgu_setting(group, name);
	*out = NULL;
	*n = 0;
	if (!list || !config_setting_is_list(list) || config_setting_length(list) == 0)
		return cfgu_fail(u, list ? list : group, "'%s' must be a non-empty list of listeners",
		                 name);
	int count = config_setting_length(list);
	*out = calloc((size_t)count, sizeof(**out));
	if (!*out)
		return cfgu_fail(u, list, "out of memory");
	*n = (unsigned)count;
	for (int i = 0; i < count; i++) {
		const config_setting_t *l = config_setting_get_elem(list, (unsigned)i);
		struct cfgu_listen *o = &(*out)[i];
		const char *known[16] = { "address", "port" };
		unsigned k = 2, port;
		for (const char *const *e = extra; e && *e && k < 15; e++)
			known[k++] = *e;
		if (!config_setting_is_group(l))
			return cfgu_fail(u, l, "a listener is a group { address = ...; port = ...; }");
		if (cfgu_check_members(u, l, known) < 0 ||
		    cfgu_string(u, l, "address", NULL, &o->address) < 0 ||
		    cfgu_uint(u, l, "port", 1, 65535, 0, &port) < 0)
			return -1;
		if (port == 0)
			return cfgu_fail(u, l, "'port' is required");
		o->port = (uint16_t)port;
		if (cfgu_numeric(o->address, o->port, &o->addr) < 0)
			return cfgu_fail(u, cfgu_setting(l, "address"),
			                 "'%s' is not a numeric IPv4 or IPv6 address", o->address);
	}
	return 0;
}

int cfgu_numeric(const char *address, uint16_t port, struct cfgu_addr *out)
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

int cfgu_hostport(const char *s, struct cfgu_addr *out)
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
	return cfgu_numeric(host, (uint16_t)port, out);
}

/* Resolved once, at load time; later DNS is the resolver module's job. */
int cfgu_resolve(struct cfgu *u, const config_setting_t *at, const char *host, uint16_t port,
                 struct cfgu_addr *out)
{
	if (cfgu_numeric(host, port, out) == 0)
		return 0;
	if (u->flags & CFGU_NUMERIC_ONLY)
		return cfgu_fail(u, at, "'%s' is not a numeric address", host);
	struct addrinfo hints = { .ai_flags = AI_NUMERICSERV, .ai_socktype = SOCK_STREAM };
	struct addrinfo *ai;
	char service[8];
	snprintf(service, sizeof(service), "%u", port);
	int rc = getaddrinfo(host, service, &hints, &ai);
	if (rc != 0)
		return cfgu_fail(u, at, "cannot resolve '%s': %s", host, gai_strerror(rc));
	memcpy(&out->sa, ai->ai_addr, ai->ai_addrlen);
	out->salen = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

int cfgu_log(struct cfgu *u, const config_setting_t *root, enum log_level *level,
             int *use_syslog)
{
	static const char *const keys[] = { "level", "syslog", NULL };
	const config_setting_t *logs = cfgu_setting(root, "log");
	const char *name;
	if (cfgu_check_members(u, logs, keys) < 0 ||
	    cfgu_string(u, logs, "level", "info", &name) < 0 ||
	    cfgu_bool(u, logs, "syslog", 0, use_syslog) < 0)
		return -1;
	if (log_level_from_str(name, level) < 0)
		return cfgu_fail(u, cfgu_setting(logs, "level"),
		                 "unknown log level '%s' (error, warning, notice, info, debug)", name);
	return 0;
}

int cfgu_status(struct cfgu *u, const config_setting_t *root, uint16_t def_port, int *enabled,
                struct cfgu_listen *out)
{
	static const char *const keys[] = { "address", "port", NULL };
	const config_setting_t *status = cfgu_setting(root, "status");
	unsigned port;
	*enabled = 0;
	if (!status)
		return 0;
	if (cfgu_check_members(u, status, keys) < 0 ||
	    cfgu_string(u, status, "address", "127.0.0.1", &out->address) < 0 ||
	    cfgu_uint(u, status, "port", 1, 65535, def_port, &port) < 0)
		return -1;
	out->port = (uint16_t)port;
	if (cfgu_numeric(out->address, out->port, &out->addr) < 0)
		return cfgu_fail(u, cfgu_setting(status, "address"),
		                 "'%s' is not a numeric IPv4 or IPv6 address", out->address);
	*enabled = 1;
	return 0;
}
