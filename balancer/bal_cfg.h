/*
 * bal_cfg: balancerd's configuration, read with libconfig and checked as a
 * whole, as edged's is (common/cfgu.h holds the helpers both use).
 *
 * bal_cfg_load() returns a struct bal_cfg that owns every string and array
 * it points to; bal_cfg_free() releases it. Errors name the file and line.
 * Without a path, the default configuration compiled into the binary (a
 * copy of etc/balancerd.conf) is used.
 */
#ifndef BALANCER_BAL_CFG_H
#define BALANCER_BAL_CFG_H

#include <netinet/in.h>
#include <stddef.h>
#include <stdint.h>

#include "cfgu.h"
#include "clu_settings.h"
#include "log.h"

/* An edge of the pool, as the balancer reaches it. */
struct bal_cfg_edge {
	const char *name;          /* its cluster name (cluster.name in its edged.conf) */
	const char *fqdn;          /* the name on its certificate, checked by the health check */
	struct cfgu_addr addr;     /* its external address, port = sip_port (the VIP's
	                            * forwarded ports use the same address) */
	uint16_t sip_port;         /* external SIP/TLS listener: 5061 */
	uint16_t xmpp_port;        /* XMPP s2s: 5269 */
	uint16_t web_port;         /* 443 */
};

/* Active health checks: a TLS handshake and a SIP OPTIONS on each edge. */
struct bal_cfg_health {
	unsigned interval_ms;      /* between two checks of one edge */
	unsigned timeout_ms;       /* a check (connect, handshake, answer) must end within it */
	unsigned rise;             /* consecutive successes that make a down edge up */
	unsigned fall;             /* consecutive failures that make an up edge down */
};

/* One zone the DNS responder is authoritative for, or the updater maintains. */
struct bal_cfg_zone {
	const char *domain;        /* "contoso.test": no trailing dot */
	const char *pool_name;     /* A/AAAA of the healthy edges: "sip.contoso.test" */
	const char *vip_name;      /* A/AAAA of the VIP for legacy partners, or NULL */
	struct in_addr *vip4;      /* the VIP's addresses (owned) */
	unsigned nvip4;
	struct in6_addr *vip6;
	unsigned nvip6;
	const char **ns;           /* NS names; the first is the SOA's MNAME */
	unsigned nns;
	struct in_addr *ns4;       /* glue: ns[0]'s addresses when inside the zone */
	unsigned nns4;
	const char *hostmaster;    /* SOA RNAME as a name: "hostmaster.contoso.test" */
	int owns_hostmaster;       /* hostmaster is the default, allocated */
	uint32_t serial;           /* SOA serial; 0: the start time, in seconds */
	uint16_t sip_port;         /* SRV _sipfederationtls._tcp -> pool_name:5061; 0: none */
	uint16_t sip_tls_port;     /* SRV _sip._tls -> pool_name:443; 0: none */
	uint16_t xmpp_port;        /* SRV _xmpp-server._tcp -> pool_name:5269; 0: none */
};

/* RFC 2136 dynamic updates of an existing DNS server, signed with TSIG. */
struct bal_cfg_update {
	struct cfgu_addr server;   /* the primary: address and port */
	const char *zone;          /* the zone to update; one of zones[].domain */
	const char *tsig_name;     /* key name */
	const char *tsig_algorithm; /* "hmac-sha256" (default), "hmac-sha512", ... */
	const char *tsig_secret;   /* base64, as in BIND's key statement */
	unsigned timeout_ms;       /* per attempt; failed attempts are retried */
};

struct bal_cfg_dns {
	struct cfgu_listen *listen; /* UDP and TCP on each; none: no responder */
	unsigned nlisten;
	uint32_t ttl;              /* of the health-driven records: short */
	uint32_t static_ttl;       /* of SOA, NS, SRV and the VIP's name */
	int all_when_none_healthy; /* no edge healthy: answer with all of them */
	struct bal_cfg_zone *zones;
	unsigned nzones;
	struct bal_cfg_update *update; /* NULL: no updates */
	unsigned max_tcp_clients;
};

/* One port of the VIP, forwarded to a port of the chosen edge. */
struct bal_cfg_forward {
	uint16_t listen_port;      /* on the VIP: 5061, 5269, 443 */
	uint16_t edge_port;        /* on the edge: its balancer listener */
	int proxy_protocol;        /* send a PROXY v2 header first */
};

struct bal_cfg_vip {
	struct cfgu_addr *addrs;   /* the VIP's addresses: bound before they are ours */
	unsigned naddrs;
	struct bal_cfg_forward *forwards;
	unsigned nforwards;
	unsigned affinity_idle_s;  /* source affinity is forgotten after this idle time */
	unsigned connect_timeout_ms;
	unsigned max_connections;
	size_t buffer_bytes;       /* per direction of a proxied connection */
};

/*
 * keepalived (VRRPv3) moving the VIP between two balancers: what
 * `balancerd -K` writes keepalived's configuration from, and the state file
 * through which balancerd tells keepalived it may hold the VIP.
 */
struct bal_cfg_keepalived {
	const char *interface;     /* where the VIP lives: "eth0" */
	unsigned virtual_router_id; /* 1-255, the same on both balancers */
	unsigned priority;         /* 1-254: the higher one takes the VIP first */
	unsigned advert_ms;        /* VRRP advertisement interval (VRRPv3: 10 ms steps) */
	unsigned prefix_len;       /* of the VIP's IPv4 addresses on the interface */
	const char *state_file;    /* "0": balancerd serves; anything else: fault */
	const char **unicast_peers; /* the other balancer(s); none: multicast */
	unsigned nunicast_peers;
	const char *unicast_src;   /* our address toward them, with unicast_peers */
	const char *notify;        /* a script run on every VRRP state change, or NULL */
	int preempt;               /* a higher priority takes the VIP back (default false) */
};

struct bal_cfg {
	const char *source;        /* file name (a copy), or "(default)" */
	enum log_level log_level;
	int log_syslog;

	const char *ca_file, *cert_file, *key_file; /* the health checks' TLS client */

	struct bal_cfg_edge *edges;
	unsigned nedges;
	struct bal_cfg_health health;
	struct bal_cfg_dns dns;
	struct bal_cfg_vip *vip;   /* NULL: no proxy */
	struct bal_cfg_keepalived *keepalived; /* NULL: the VIP is not moved by keepalived */
	struct clu_settings *cluster; /* the pool's cluster, joined as an observer; or NULL */

	int status_enabled;
	struct cfgu_listen status;

	void *lc;                  /* the libconfig tree that owns the strings */
};

extern const char bal_cfg_default_text[];

/* As cfg_load() and cfg_load_text() of edged (flags: CFGU_NUMERIC_ONLY). */
int bal_cfg_load(const char *path, struct bal_cfg **out, char *err, size_t errlen);
int bal_cfg_load_text(const char *text, const char *source, int flags, struct bal_cfg **out,
                      char *err, size_t errlen);
void bal_cfg_free(struct bal_cfg *cfg);

#endif
