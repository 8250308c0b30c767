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

#include "cfgu.h"
#include "log.h"

/* Lync's VerificationLevel: how messages from a source are marked for the front ends. */
enum cfg_verification {
	CFG_VERIFY_USE_SOURCE,            /* UseSourceVerification: verified when the source is */
	CFG_VERIFY_ALWAYS_VERIFIABLE,     /* AlwaysVerifiable */
	CFG_VERIFY_ALWAYS_UNVERIFIABLE,   /* AlwaysUnverifiable */
};

/* A federation server: a partner's edge, a provider's, or the default route. */
struct cfg_server {
	const char *fqdn;         /* the name its certificate must carry; NULL: DNS SRV */
	const char *address;      /* numeric; "" when fqdn is resolved through DNS */
	uint16_t port;
	struct cfgu_addr addr;     /* `address`, when set */
};

/* Lync New-CsAllowedDomain: a partner domain, direct (server.fqdn) or by DNS SRV. */
struct cfg_allowed_domain {
	const char *domain;
	struct cfg_server server;           /* ProxyFqdn */
	int mark_for_monitoring;
	const char *comment;
	enum cfg_verification verification;
};

/* Lync New-CsBlockedDomain. */
struct cfg_blocked_domain {
	const char *domain;
	const char *comment;
};

enum cfg_provider_kind { CFG_HOSTING_PROVIDER, CFG_PUBLIC_PROVIDER };

/* Lync New-CsHostingProvider and New-CsPublicProvider. */
struct cfg_provider {
	enum cfg_provider_kind kind;
	const char *identity;
	struct cfg_server server;           /* ProxyFqdn: always set */
	const char **domains;               /* domains routed to it outbound */
	unsigned ndomains;
	int enabled;
	int shared_address_space;           /* hosting: EnabledSharedAddressSpace */
	int hosts_ocs_users;                /* hosting: HostsOCSUsers */
	enum cfg_verification verification;
};

/* Lync New-CsExternalAccessPolicy, with the users it is granted to. */
struct cfg_access_policy {
	const char *identity;     /* "global", or the name of a per-user policy */
	const char **users;       /* dom_user_match() patterns; none for global */
	unsigned nusers;
	int federation;           /* EnableFederationAccess */
	int xmpp;                 /* EnableXmppAccess */
	int public_cloud;         /* EnablePublicCloudAccess */
	int outside;              /* EnableOutsideAccess */
};

/* Lync Set-CsAccessEdgeConfiguration. */
struct cfg_access_edge {
	int allow_federated_users;           /* AllowFederatedUsers */
	int enable_partner_discovery;        /* EnablePartnerDiscovery */
	int use_default_route;               /* UseDefaultRouting (else DNS SRV) */
	struct cfg_server default_route;     /* DefaultRouteFqdn */
	enum cfg_verification default_route_verification;
	int default_route_is_public_provider;
	int mark_source_verifiable;          /* MarkSourceVerifiableOnOutgoingMessages */
	int archiving_disclaimer;            /* EnableArchivingDisclaimer */
	unsigned outgoing_tls_count;         /* OutgoingTlsCountForFederatedPartners */
	unsigned discovered_rate;            /* DiscoveredPartnerStandardRate, per second */
	unsigned discovered_max_contacts;    /* MaxContactsPerDiscoveredPartner */
	int discovered_contacts_limit;       /* EnableDiscoveredPartnerContactsLimit */
	unsigned discovered_report_period_min; /* DiscoveredPartnerReportPeriodMinutes */
	enum cfg_verification discovered_verification; /* DiscoveredPartnerVerificationLevel */
};

/* The resolver of partner discovery (c-ares). */
struct cfg_dns {
	const char *server;       /* numeric address; NULL: the system's resolvers */
	uint16_t port;
	struct cfgu_addr addr;
	unsigned timeout_ms;      /* per try */
	unsigned tries;
	unsigned cache_records;   /* DnsCacheRecordCount */
	unsigned max_pending;     /* requests waiting for DNS at once; past it, 503 */
};

/* Lync New-CsXmppAllowedPartner's TlsNegotiation and SaslNegotiation. */
enum cfg_xmpp_nego {
	CFG_XMPP_REQUIRED = 0,            /* Required (Lync's default) */
	CFG_XMPP_OPTIONAL,                /* Optional: used when the partner offers it */
	CFG_XMPP_NOT_SUPPORTED,           /* NotSupported: never used, never offered */
};

/* Lync New-CsXmppAllowedPartner's PartnerType. */
enum cfg_xmpp_partner_type {
	CFG_XMPP_PUBLIC_UNVERIFIED = 0,   /* PublicUnverified (default): its users reach ours
	                                   * only once ours subscribed to them first */
	CFG_XMPP_PUBLIC_VERIFIED,         /* PublicVerified: may start a conversation */
	CFG_XMPP_FEDERATED,               /* Federated: may start a conversation */
};

/* Lync New-CsXmppAllowedPartner: an XMPP partner domain. */
struct cfg_xmpp_partner {
	const char *domain;                 /* Identity: the partner's XMPP domain */
	const char **additional_domains;    /* AdditionalDomains: more domains it serves */
	unsigned nadditional_domains;
	enum cfg_xmpp_partner_type type;    /* PartnerType */
	enum cfg_xmpp_nego tls;             /* TlsNegotiation */
	enum cfg_xmpp_nego sasl;            /* SaslNegotiation (SASL EXTERNAL) */
	int dialback;                       /* SupportDialbackNegotiation (default true) */
	int keepalive;                      /* EnableKeepAlive (default true) */
	unsigned connection_limit;          /* ConnectionLimit: its streams into us at once (10) */
	/* ProxyFqdn: its server, whose certificate must name the domain; fqdn
	 * NULL: DNS SRV _xmpp-server._tcp.<domain>, else the domain itself. */
	struct cfg_server server;
	const char *comment;
};

/* The XMPP proxy and gateway (the `xmpp` section; absent: no XMPP at all). */
struct cfg_xmpp {
	struct cfgu_listen *listen;         /* server-to-server listeners (required; port 5269) */
	unsigned nlisten;
	const char **domains;               /* our XMPP domains, each one of node.sip_domains (default:
	                                     * all of them); the array is ours, the strings the tree's */
	unsigned ndomains;
	const char *cert_file;              /* default: tls.cert_file; must name every domain */
	const char *key_file;               /* default: tls.key_file */
	/* Server Dialback keys (XEP-0185) are HMACs under this secret. Unset:
	 * derived from the cluster's first key, so every node of the pool can
	 * verify another's; in a pool of one, random at each start. */
	const char *dialback_secret;
	size_t max_stanza_bytes;            /* max_stanza_kb: a larger stanza ends the stream */
	unsigned keepalive_s;               /* whitespace keep-alive on idle streams (60) */
	unsigned idle_timeout_s;            /* an idle outbound stream is closed (600) */
	struct cfg_xmpp_partner *partners;  /* the top-level xmpp_partners list (needs this section) */
	unsigned npartners;
};

struct cfg_next_hop {
	const char *host;
	const char *fqdn;         /* name verified on TLS; defaults to host */
	uint16_t port;
	int tls;
	struct cfgu_addr addr;
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

	struct cfgu_listen *internal_listen;
	unsigned ninternal_listen;
	/* The pool's name on the internal side (Lync's internal edge pool FQDN):
	 * the internal Record-Route carries it, so the front ends' in-dialog
	 * requests reach any node. NULL: this node's internal listener. */
	const char *internal_pool_fqdn;
	struct cfg_next_hop next_hop;
	size_t internal_max_msg;  /* bytes */

	struct cfgu_listen *external_listen;
	unsigned nexternal_listen;
	/* external.proxy_from: the balancers, the only sources a proxy_protocol
	 * listener accepts (numeric; port 0 in the addresses: not compared). */
	const char **proxy_from;
	struct cfgu_addr *proxy_from_addr;
	unsigned nproxy_from;
	size_t external_max_msg;  /* bytes */

	struct cfg_access_edge edge;
	struct cfg_allowed_domain *allowed;
	unsigned nallowed;
	struct cfg_blocked_domain *blocked;
	unsigned nblocked;
	struct cfg_provider *providers;    /* hosting and public IM providers */
	unsigned nproviders;
	struct cfg_access_policy *policies; /* [0] is the global policy */
	unsigned npolicies;
	struct cfg_dns dns;
	struct cfg_xmpp *xmpp;    /* the `xmpp` section, or NULL: no XMPP federation (owned) */

	struct clu_settings *cluster; /* the `cluster` section, or NULL: a pool of one (owned) */
	int sync_dialogs;         /* replication = "sync": a 2xx waits until a peer holds the dialog */
	unsigned replication_timeout_ms; /* how long it waits at most */

	int status_enabled;       /* the `status` section is present */
	struct cfgu_listen status; /* HTTP JSON status endpoint */

	unsigned max_connections;
	unsigned max_headers;
	unsigned max_line_bytes;
	unsigned connect_timeout_ms;
	unsigned keepalive_s;               /* MaxKeepAliveInterval, in seconds */
	unsigned drain_timeout_s;           /* a draining node stops after this at most */
	int whitespace_keepalive;           /* EnableWhiteSpaceKeepAlive */

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

/*
 * As cfg_load(), from text, naming it `source` in errors. With
 * CFGU_NUMERIC_ONLY host names are refused rather than resolved, so that a
 * fuzzer never sends a DNS query.
 */
int cfg_load_text(const char *text, const char *source, int flags, struct edge_cfg **out,
                  char *err, size_t errlen);
void cfg_free(struct edge_cfg *cfg);

/*
 * Checks that the files the configuration names can be read, so that a
 * missing certificate is reported as "FILE:LINE: ..." like any other error.
 * Separate from cfg_load(): a configuration can be examined without them.
 */
int cfg_check_files(const struct edge_cfg *cfg, char *err, size_t errlen);

#endif
