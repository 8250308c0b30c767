/*
 * pol: the federation policy of Lync Server 2013's Access Edge, as pure
 * decisions over the configuration: what a partner domain is, what a peer
 * is from its verified certificate, which external access policy applies
 * to a user, and how a source is marked. No I/O: where a decision needs
 * DNS (partner discovery, source verification by SRV), the caller looks
 * the record up and asks again with the answer.
 *
 * Every pointer a result holds points into the configuration.
 */
#ifndef EDGE_POL_H
#define EDGE_POL_H

#include <stddef.h>

#include "cfg.h"

/*
 * The headers of the Access Edge. The trust header goes to the front ends
 * only (MS-SIPRE 2.2.15); the verifiable mark goes to partners on every
 * request (MarkSourceVerifiableOnOutgoingMessages) and is what their
 * UseSourceVerification reads; the archiving notice goes to partners when
 * EnableArchivingDisclaimer is on. Diagnostics never leave.
 */
#define POL_TRUST_HEADER "ms-edge-proxy-message-trust"
#define POL_VERIFIED_HEADER "ms-source-verified-user"
#define POL_ARCHIVING_HEADER "ms-archiving-disclaimer"
#define POL_DIAGNOSTICS_HEADER "ms-diagnostics"

/* Lync's ms-source-type of a federation peer. */
enum pol_source {
	POL_SRC_NONE,
	POL_SRC_DIRECT_PARTNER,     /* allowed domain with a ProxyFqdn */
	POL_SRC_AUTO_FEDERATION,    /* allowed domain found by DNS SRV, or discovered */
	POL_SRC_AUTHORIZED_SERVER,  /* hosting or public IM provider, or the default route */
};
const char *pol_source_name(enum pol_source s); /* "DirectPartner", ... */

/* Which policy flag a federation route needs; Lync's ms-source-network. */
enum pol_network {
	POL_NET_FEDERATION,         /* EnableFederationAccess */
	POL_NET_PUBLIC_CLOUD,       /* EnablePublicCloudAccess */
};
const char *pol_network_name(enum pol_network n); /* "federation", "publiccloud" */

/* What a domain outside the organization is, for a request going out to it. */
enum pol_domain_kind {
	POL_DOM_OWN,                /* one of ours: internal traffic never crosses the edge */
	POL_DOM_BLOCKED,
	POL_DOM_SERVER,             /* a configured server: allowed ProxyFqdn, provider, default route */
	POL_DOM_SRV,                /* found by DNS SRV: allowed without ProxyFqdn, or discovered */
	POL_DOM_DENIED,             /* none of the above */
};

struct pol_domain {
	enum pol_domain_kind kind;
	enum pol_source source;
	enum pol_network network;
	const struct cfg_server *server;           /* POL_DOM_SERVER */
	const struct cfg_allowed_domain *allowed;  /* when the domain is allowed */
	const struct cfg_blocked_domain *blocked;  /* POL_DOM_BLOCKED */
	const struct cfg_provider *provider;       /* a provider's domain */
	int discovered;                            /* POL_DOM_SRV by partner discovery */
	enum cfg_verification verification;
};

/* Classifies domain (a slice of a SIP URI: not NUL-terminated). */
void pol_classify_domain(const struct edge_cfg *cfg, const char *domain, size_t len,
                         struct pol_domain *out);

/* The enabled provider whose ProxyFqdn is name, or NULL. */
const struct cfg_provider *pol_provider_by_fqdn(const struct edge_cfg *cfg, const char *name,
                                                size_t len);

/*
 * Whether a discovered SRV target may serve domain: it lies in the domain
 * (RFC 2782 targets of a partner are its own hosts), or it is an enabled
 * provider's ProxyFqdn (a domain hosted by Lync Online and the like). In
 * the second case *provider is set.
 */
int pol_srv_target_ok(const struct edge_cfg *cfg, const char *domain, size_t len,
                      const char *target, const struct cfg_provider **provider);

/* The external access policy of user@host: the first per-user policy that matches, else global. */
const struct cfg_access_policy *pol_user_policy(const struct edge_cfg *cfg,
                                                const char *user, size_t userlen,
                                                const char *host, size_t hostlen);
int pol_policy_permits(const struct cfg_access_policy *p, enum pol_network net);

/* What an inbound peer is, from the names of its verified certificate. */
struct pol_peer {
	enum pol_source source;     /* NONE: no configured server; AutoFederation is decided by SRV */
	const char *fqdn;           /* the certificate name that matched, or the first name */
	const struct cfg_provider *provider;     /* AuthorizedServer */
};
void pol_classify_peer(const struct edge_cfg *cfg, const char *const *names, unsigned n,
                       struct pol_peer *out);

/* Whether one of the certificate names is name (case-insensitive). */
int pol_names_have(const char *const *names, unsigned n, const char *name);

/* Lync's marking: verified unless AlwaysUnverifiable, or UseSourceVerification unproven. */
int pol_is_verified(enum cfg_verification level, int source_verified);

/*
 * The value of ms-edge-proxy-message-trust (MS-SIPRE 2.2.15) for a request
 * from a federation peer. Returns the length written (truncated to len-1).
 */
size_t pol_trust_value(char *buf, size_t len, enum pol_source source, const char *edge_fqdn,
                       int verified, enum pol_network net, const char *remote_fqdn);

#endif
