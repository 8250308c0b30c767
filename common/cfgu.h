/*
 * cfgu: what edged's and balancerd's configuration loaders share on top of
 * libconfig: reading a file or text, typed settings with ranges and
 * defaults, refusal of unknown settings, numeric addresses. Every error is
 * written as "FILE:LINE: why" into the loader's buffer, and the function
 * returns -1, so that a loader can `return cfgu_fail(...)`.
 */
#ifndef COMMON_CFGU_H
#define COMMON_CFGU_H

#include <libconfig.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "log.h"

struct cfgu_addr {
	struct sockaddr_storage sa;
	socklen_t salen;
};

/* A listener: a numeric address and a port. */
struct cfgu_listen {
	const char *address;      /* numeric IPv4 or IPv6 */
	uint16_t port;
	int tls;                  /* edged: the external side is always TLS */
	int proxy_protocol;       /* edged: a PROXY v2 header comes first (the balancer's listener) */
	struct cfgu_addr addr;
};

/* Host names are refused rather than resolved (a fuzzer never sends a DNS query). */
#define CFGU_NUMERIC_ONLY 1

/* One load in progress: where errors go. */
struct cfgu {
	const char *source;       /* file name, or "(default)" */
	char *err;
	size_t errlen;
	int flags;                /* CFGU_NUMERIC_ONLY */
};

/*
 * Reads path, or text when path is NULL, into a new libconfig tree (*out,
 * freed with cfgu_close()). Returns 0, or -1 with the error in u->err.
 */
int cfgu_open(struct cfgu *u, const char *path, const char *text, config_t **out);
void cfgu_close(config_t *lc);

__attribute__((format(printf, 3, 4)))
int cfgu_fail(struct cfgu *u, const config_setting_t *at, const char *fmt, ...);
const config_setting_t *cfgu_setting(const config_setting_t *group, const char *name);

/* Refuses names of root's sections missing from known (NULL-terminated). */
int cfgu_check_sections(struct cfgu *u, const config_setting_t *root, const char *const *known);
/* Checks that group, when present, is a group of known settings only (known NULL-terminated). */
int cfgu_check_members(struct cfgu *u, const config_setting_t *group, const char *const *known);

/* Typed settings of group. def NULL (strings) means the setting is required. */
int cfgu_string(struct cfgu *u, const config_setting_t *group, const char *name,
                const char *def, const char **out);
int cfgu_uint(struct cfgu *u, const config_setting_t *group, const char *name,
              long long min, long long max, long long def, unsigned *out);
int cfgu_bool(struct cfgu *u, const config_setting_t *group, const char *name, int def,
              int *out);
/* A list or array of non-empty strings; *out is a new NULL-terminated array (caller frees;
 * NULL on failure). */
int cfgu_strings(struct cfgu *u, const config_setting_t *group, const char *name, int required,
                 const char ***out, unsigned *n);
/* A list of groups ( {...}, {...} ): *n = 0 when absent. */
int cfgu_group_list(struct cfgu *u, const config_setting_t *root, const char *name,
                    const config_setting_t **out, unsigned *n);
/* A list of listeners { address; port; } (extra: settings a caller reads itself, or NULL). */
int cfgu_listeners(struct cfgu *u, const config_setting_t *group, const char *name,
                   const char *const *extra, struct cfgu_listen **out, unsigned *n);

/* address:port, numeric only. Returns 0 or -1 (no message). */
int cfgu_numeric(const char *address, uint16_t port, struct cfgu_addr *out);
/* "host:port" or "[v6]:port", numeric. Returns 0 or -1 (no message). */
int cfgu_hostport(const char *s, struct cfgu_addr *out);
/* A host name resolved once, at load time (refused under CFGU_NUMERIC_ONLY). */
int cfgu_resolve(struct cfgu *u, const config_setting_t *at, const char *host, uint16_t port,
                 struct cfgu_addr *out);

/* The `log` section { level; syslog; } (see log.h). */
int cfgu_log(struct cfgu *u, const config_setting_t *root, enum log_level *level,
             int *use_syslog);
/* The `status` section { address; port; }: *enabled is 0 when it is absent. */
int cfgu_status(struct cfgu *u, const config_setting_t *root, uint16_t def_port, int *enabled,
                struct cfgu_listen *out);

#endif
