/*
 * cfg: edged's configuration, read with libconfig and checked as a whole.
 *
 * cfg_load() returns a struct edge_cfg that owns every string it points to;
 * cfg_free() releases it. Errors name the file and line ("FILE:LINE: why").
 * Without a path, the default configuration compiled into the binary (a
 * copy of etc/edged.conf) is used.
 */
#ifndef EDGE_CFG_H
#define EDGE_CFG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "log.h"

struct cfg_addr {
	struct sockaddr_storage sa;
	socklen_t salen;
};

struct cfg_listen {
	const char *address;      /* numeric IPv4 or IPv6 */
	uint16_t port;
	int tls;                  /* the external side is always TLS */
	struct cfg_addr addr;
};

/* An allowed partner server (Lync: direct federation). */
struct cfg_partner {
	const char **domains;     /* SIP domains this partner speaks for */
	unsigned ndomains;
	const char *fqdn;         /* the name its certificate must carry */
	const char *address;      /* as configured; empty when fqdn is resolved */
	uint16_t port;
	struct cfg_addr addr;     /* `address`, or `fqdn` resolved at load */
};

struct cfg_next_hop {
	const char *host;
	const char *fqdn;         /* name verified on TLS; defaults to host */
	uint16_t port;
	int tls;
	struct cfg_addr addr;
};

struct edge_cfg {
	const char *source;       /* file name (a copy), or "(default)" */
	const char *pool_fqdn;
	const char **sip_domains;
	unsigned nsip_domains;

	enum log_level log_level;
	int log_syslog;

	const char *ca_file;
	const char *cert_file;
	const char *key_file;
	unsigned tls_lines[3];    /* where ca_file, cert_file and key_file are set */

	struct cfg_listen *internal_listen;
	unsigned ninternal_listen;
	struct cfg_next_hop next_hop;
	size_t internal_max_msg;  /* bytes */

	struct cfg_listen *external_listen;
	unsigned nexternal_listen;
	size_t external_max_msg;  /* bytes */

	struct cfg_partner *partners;
	unsigned npartners;

	int status_enabled;       /* the `status` section is present */
	struct cfg_listen status; /* HTTP JSON status endpoint */

	unsigned max_connections;
	unsigned max_headers;
	unsigned max_line_bytes;
	unsigned outgoing_tls_count;
	unsigned connect_timeout_ms;
	unsigned idle_timeout_s;

	void *lc;                 /* the libconfig tree that owns the strings */
};

/* The text of the embedded default configuration. */
extern const char cfg_default_text[];

/*
 * Loads and checks a configuration; path NULL means the embedded default.
 * On success returns 0 and a new configuration in *out (caller frees with
 * cfg_free()); on failure returns -1 with the reason in err.
 */
int cfg_load(const char *path, struct edge_cfg **out, char *err, size_t errlen);
void cfg_free(struct edge_cfg *cfg);

/*
 * Checks that the files the configuration names can be read, so that a
 * missing certificate is reported as "FILE:LINE: ..." like any other error.
 * Separate from cfg_load(): a configuration can be examined without them.
 */
int cfg_check_files(const struct edge_cfg *cfg, char *err, size_t errlen);

#endif
