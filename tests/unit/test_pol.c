/* Unit tests for edge/pol.c: the Access Edge's federation decisions over a configuration. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "pol.h"

/* The sections every configuration needs; a test adds the federation ones. */
#define BASE \
	"node = { pool_fqdn = \"sip.contoso.test\";\n" \
	"         sip_domains = [ \"contoso.test\", \"eu.contoso.test\" ]; };\n" \
	"tls = { ca_file = \"ca.pem\"; cert_file = \"edge.pem\"; key_file = \"edge.key\"; };\n" \
	"internal = { listen = ( { address = \"127.0.0.1\"; port = 5060; } );\n" \
	"             next_hop = { host = \"127.0.0.1\"; port = 5070; }; };\n" \
	"external = { listen = ( { address = \"127.0.0.1\"; port = 5061; } ); };\n"

/* Partners, a blocked domain, providers (one disabled) and per-user policies. */
#define PARTNERS \
	"allowed_domains = (\n" \
	"  { domain = \"fabrikam.test\"; proxy_fqdn = \"sip.fabrikam.test\"; address = \"127.0.0.2\";\n" \
	"    port = 5062; verification_level = \"AlwaysVerifiable\"; },\n" \
	"  { domain = \"litware.test\"; verification_level = \"AlwaysUnverifiable\"; }\n" \
	");\n" \
	"blocked_domains = ( { domain = \"spam.test\"; comment = \"abuse\"; } );\n" \
	"hosting_providers = (\n" \
	"  { identity = \"Online\"; proxy_fqdn = \"sipfed.online.test\";\n" \
	"    domains = [ \"hosted.test\", \"hosted2.test\" ]; },\n" \
	"  { identity = \"Old\"; proxy_fqdn = \"sipfed.old.test\"; enabled = false;\n" \
	"    domains = [ \"old.test\" ]; }\n" \
	");\n" \
	"public_providers = (\n" \
	"  { identity = \"Msgr\"; proxy_fqdn = \"fed.msgr.test\"; domains = [ \"msgr.test\" ];\n" \
	"    verification_level = \"AlwaysUnverifiable\"; }\n" \
	");\n"

/* Two policies name alice: the first one in the file wins. "global" comes last. */
#define POLICIES \
	"external_access_policies = (\n" \
	"  { identity = \"AliceFirst\"; users = [ \"alice@contoso.test\" ];\n" \
	"    enable_public_cloud_access = true; },\n" \
	"  { identity = \"Contoso\"; users = [ \"carol@fabrikam.test\", \"*@contoso.test\" ];\n" \
	"    enable_federation_access = true; enable_xmpp_access = true; },\n" \
	"  { identity = \"AliceSecond\"; users = [ \"alice@contoso.test\" ];\n" \
	"    enable_federation_access = true; enable_public_cloud_access = true; },\n" \
	"  { identity = \"Subdomains\"; users = [ \"*@*.contoso.test\" ];\n" \
	"    enable_outside_access = true; },\n" \
	"  { identity = \"global\"; enable_federation_access = true; }\n" \
	");\n"

#define EDGE_SRV(discovery, level) \
	"access_edge = { allow_federated_users = true; enable_partner_discovery = " discovery ";\n" \
	"                discovered_partner_verification_level = \"" level "\"; };\n"

#define EDGE_DEFAULT_ROUTE \
	"access_edge = { allow_federated_users = true; routing = \"default_route\";\n" \
	"  default_route = { fqdn = \"sip.upstream.test\"; address = \"127.0.0.9\"; port = 5071;\n" \
	"                    verification_level = \"AlwaysUnverifiable\"; is_public_provider = true; };\n" \
	"};\n"

static struct edge_cfg *load(const char *text)
{
	struct edge_cfg *cfg = NULL;
	char err[512] = "";

	if (cfg_load_text(text, "test", CFGU_NUMERIC_ONLY, &cfg, err, sizeof(err)) != 0)
		fail_msg("cfg_load_text: %s", err);
	assert_non_null(cfg);
	return cfg;
}

/* Discovery off. */
static int setup_static(void **state)
{
	*state = load(BASE EDGE_SRV("false", "AlwaysVerifiable") PARTNERS POLICIES);
	return 0;
}

/* Discovery on, discovered partners always verifiable. */
static int setup_discovery(void **state)
{
	*state = load(BASE EDGE_SRV("true", "AlwaysVerifiable") PARTNERS POLICIES);
	return 0;
}

static int setup_default_route(void **state)
{
	*state = load(BASE EDGE_DEFAULT_ROUTE PARTNERS POLICIES);
	return 0;
}

static int teardown(void **state)
{
	cfg_free(*state);
	*state = NULL;
	return 0;
}

/*
 * pol_classify_domain on a heap copy of name that is not NUL-terminated,
 * so that ASan sees a read past the slice.
 */
static void classify(const struct edge_cfg *cfg, const char *name, struct pol_domain *out)
{
	size_t len = strlen(name);
	char *s = malloc(len ? len : 1);
	assert_non_null(s);
	memcpy(s, name, len);
	memset(out, 0x5a, sizeof(*out)); /* every field must be set */
	pol_classify_domain(cfg, s, len, out);
	free(s); s = NULL;
}

static void assert_denied(const struct pol_domain *d)
{
	assert_int_equal(d->kind, POL_DOM_DENIED);
	assert_int_equal(d->source, POL_SRC_NONE);
	assert_null(d->server);
	assert_null(d->allowed);
	assert_null(d->blocked);
	assert_null(d->provider);
	assert_int_equal(d->discovered, 0);
}

/* A discovered partner: found by SRV, with the discovered verification level. */
static void assert_discovered(const struct edge_cfg *cfg, const struct pol_domain *d)
{
	assert_int_equal(d->kind, POL_DOM_SRV);
	assert_int_equal(d->source, POL_SRC_AUTO_FEDERATION);
	assert_int_equal(d->network, POL_NET_FEDERATION);
	assert_int_equal(d->discovered, 1);
	assert_int_equal(d->verification, cfg->edge.discovered_verification);
	assert_null(d->server);
	assert_null(d->allowed);
	assert_null(d->blocked);
	assert_null(d->provider);
}

static void test_domain_own(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_domain d;

	classify(cfg, "contoso.test", &d);
	assert_int_equal(d.kind, POL_DOM_OWN);
	assert_int_equal(d.source, POL_SRC_NONE);
	assert_null(d.server);
	assert_null(d.allowed);
	assert_null(d.provider);
	classify(cfg, "EU.Contoso.Test", &d);
	assert_int_equal(d.kind, POL_DOM_OWN);
	/* Subdomains of ours are not ours unless listed. */
	classify(cfg, "us.contoso.test", &d);
	assert_denied(&d);
}

static void test_domain_blocked(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_domain d;

	classify(cfg, "spam.test", &d);
	assert_int_equal(d.kind, POL_DOM_BLOCKED);
	assert_ptr_equal(d.blocked, &cfg->blocked[0]);
	assert_string_equal(d.blocked->comment, "abuse");
	assert_null(d.server);
	assert_null(d.allowed);
	classify(cfg, "SPAM.test", &d);
	assert_int_equal(d.kind, POL_DOM_BLOCKED);
}

static void test_domain_direct_partner(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_domain d;

	classify(cfg, "fabrikam.test", &d);
	assert_int_equal(d.kind, POL_DOM_SERVER);
	assert_int_equal(d.source, POL_SRC_DIRECT_PARTNER);
	assert_int_equal(d.network, POL_NET_FEDERATION);
	assert_ptr_equal(d.server, &cfg->allowed[0].server);
	assert_string_equal(d.server->fqdn, "sip.fabrikam.test");
	assert_int_equal(d.server->port, 5062);
	assert_ptr_equal(d.allowed, &cfg->allowed[0]);
	assert_null(d.blocked);
	assert_null(d.provider);
	assert_int_equal(d.discovered, 0);
	assert_int_equal(d.verification, CFG_VERIFY_ALWAYS_VERIFIABLE);

	classify(cfg, "Fabrikam.TEST", &d);
	assert_ptr_equal(d.allowed, &cfg->allowed[0]);
	/* The partner's subdomains and look-alikes are not the partner. */
	classify(cfg, "sip.fabrikam.test", &d);
	assert_denied(&d);
	classify(cfg, "evilfabrikam.test", &d);
	assert_denied(&d);
}

static void test_domain_allowed_by_srv(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_domain d;

	classify(cfg, "litware.test", &d);
	assert_int_equal(d.kind, POL_DOM_SRV);
	assert_int_equal(d.source, POL_SRC_AUTO_FEDERATION);
	assert_int_equal(d.network, POL_NET_FEDERATION);
	assert_ptr_equal(d.allowed, &cfg->allowed[1]);
	assert_null(d.server);
	assert_null(d.provider);
	assert_int_equal(d.discovered, 0);
	assert_int_equal(d.verification, CFG_VERIFY_ALWAYS_UNVERIFIABLE);
}

/* The domain is a slice of a URI: only len bytes count. */
static void test_domain_slice(void **state)
{
	const struct edge_cfg *cfg = *state;
	const char *uri = "fabrikam.test.evil;transport=tls";
	struct pol_domain d;

	pol_classify_domain(cfg, uri, 13, &d);
	assert_int_equal(d.kind, POL_DOM_SERVER);
	assert_ptr_equal(d.allowed, &cfg->allowed[0]);
	pol_classify_domain(cfg, uri, 18, &d);
	assert_denied(&d);
	pol_classify_domain(cfg, "contoso.tester", 12, &d);
	assert_int_equal(d.kind, POL_DOM_OWN);
	pol_classify_domain(cfg, "", 0, &d);
	assert_denied(&d);
}

static void test_domain_unknown_denied(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_domain d;

	assert_int_equal(cfg->edge.enable_partner_discovery, 0);
	classify(cfg, "unknown.test", &d);
	assert_denied(&d);
}

static void test_domain_hosting_provider(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_domain d;

	classify(cfg, "hosted2.test", &d);
	assert_int_equal(d.kind, POL_DOM_SERVER);
	assert_int_equal(d.source, POL_SRC_AUTHORIZED_SERVER);
	assert_int_equal(d.network, POL_NET_FEDERATION);
	assert_ptr_equal(d.provider, &cfg->providers[0]);
	assert_string_equal(d.provider->identity, "Online");
	assert_int_equal(d.provider->kind, CFG_HOSTING_PROVIDER);
	assert_ptr_equal(d.server, &cfg->providers[0].server);
	assert_string_equal(d.server->fqdn, "sipfed.online.test");
	assert_null(d.allowed);
	assert_int_equal(d.discovered, 0);
	assert_int_equal(d.verification, CFG_VERIFY_ALWAYS_VERIFIABLE); /* hosting default */
	classify(cfg, "HOSTED.test", &d);
	assert_ptr_equal(d.provider, &cfg->providers[0]);
	classify(cfg, "sip.hosted.test", &d);
	assert_denied(&d);
}

static void test_domain_public_provider(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_domain d;

	classify(cfg, "msgr.test", &d);
	assert_int_equal(d.kind, POL_DOM_SERVER);
	assert_int_equal(d.source, POL_SRC_AUTHORIZED_SERVER);
	assert_int_equal(d.network, POL_NET_PUBLIC_CLOUD);
	assert_string_equal(d.provider->identity, "Msgr");
	assert_int_equal(d.provider->kind, CFG_PUBLIC_PROVIDER);
	assert_ptr_equal(d.server, &d.provider->server);
	assert_int_equal(d.verification, CFG_VERIFY_ALWAYS_UNVERIFIABLE);
}

/* A disabled provider's domains are nobody's: denied, or discovered when discovery is on. */
static void test_domain_disabled_provider(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_domain d;

	assert_string_equal(cfg->providers[1].identity, "Old");
	assert_int_equal(cfg->providers[1].enabled, 0);
	classify(cfg, "old.test", &d);
	if (cfg->edge.enable_partner_discovery)
		assert_discovered(cfg, &d);
	else
		assert_denied(&d);
}

static void test_domain_discovered(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_domain d;

	assert_int_equal(cfg->edge.enable_partner_discovery, 1);
	assert_int_equal(cfg->edge.discovered_verification, CFG_VERIFY_ALWAYS_VERIFIABLE);
	classify(cfg, "unknown.test", &d);
	assert_discovered(cfg, &d);
	/* Discovery changes nothing for configured domains. */
	classify(cfg, "litware.test", &d);
	assert_int_equal(d.kind, POL_DOM_SRV);
	assert_int_equal(d.discovered, 0);
	assert_ptr_equal(d.allowed, &cfg->allowed[1]);
	assert_int_equal(d.verification, CFG_VERIFY_ALWAYS_UNVERIFIABLE);
	classify(cfg, "fabrikam.test", &d);
	assert_int_equal(d.source, POL_SRC_DIRECT_PARTNER);
	classify(cfg, "spam.test", &d);
	assert_int_equal(d.kind, POL_DOM_BLOCKED);
	classify(cfg, "contoso.test", &d);
	assert_int_equal(d.kind, POL_DOM_OWN);
	classify(cfg, "msgr.test", &d);
	assert_int_equal(d.network, POL_NET_PUBLIC_CLOUD);
}

/* The default route takes what DNS SRV would; configured servers keep theirs. */
static void test_domain_default_route(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_domain d;

	assert_int_equal(cfg->edge.use_default_route, 1);
	classify(cfg, "litware.test", &d);
	assert_int_equal(d.kind, POL_DOM_SERVER);
	assert_int_equal(d.source, POL_SRC_AUTHORIZED_SERVER);
	assert_int_equal(d.network, POL_NET_PUBLIC_CLOUD);
	assert_ptr_equal(d.server, &cfg->edge.default_route);
	assert_string_equal(d.server->fqdn, "sip.upstream.test");
	assert_int_equal(d.server->port, 5071);
	assert_ptr_equal(d.allowed, &cfg->allowed[1]);
	assert_null(d.provider);
	assert_int_equal(d.discovered, 0);
	assert_int_equal(d.verification, CFG_VERIFY_ALWAYS_UNVERIFIABLE);

	classify(cfg, "fabrikam.test", &d);
	assert_int_equal(d.source, POL_SRC_DIRECT_PARTNER);
	assert_ptr_equal(d.server, &cfg->allowed[0].server);
	assert_int_equal(d.verification, CFG_VERIFY_ALWAYS_VERIFIABLE);
	classify(cfg, "hosted.test", &d);
	assert_ptr_equal(d.server, &cfg->providers[0].server);
	assert_int_equal(d.network, POL_NET_FEDERATION);
	classify(cfg, "spam.test", &d);
	assert_int_equal(d.kind, POL_DOM_BLOCKED);
	classify(cfg, "contoso.test", &d);
	assert_int_equal(d.kind, POL_DOM_OWN);
	/* No discovery with a default route: unknown domains stay denied. */
	classify(cfg, "unknown.test", &d);
	assert_denied(&d);
	classify(cfg, "old.test", &d);
	assert_denied(&d);
}

/* A default route that is not a public provider, with its default verification level. */
static void test_domain_default_route_federation(void **state)
{
	struct edge_cfg *cfg = load(BASE
		"access_edge = { allow_federated_users = true; routing = \"default_route\";\n"
		"                default_route = { fqdn = \"sip.upstream.test\"; }; };\n"
		"allowed_domains = ( { domain = \"litware.test\"; } );\n");
	struct pol_domain d;

	classify(cfg, "litware.test", &d);
	assert_int_equal(d.kind, POL_DOM_SERVER);
	assert_int_equal(d.source, POL_SRC_AUTHORIZED_SERVER);
	assert_int_equal(d.network, POL_NET_FEDERATION);
	assert_ptr_equal(d.server, &cfg->edge.default_route);
	assert_int_equal(d.server->port, 5061);
	assert_int_equal(d.verification, CFG_VERIFY_ALWAYS_VERIFIABLE);
	cfg_free(cfg);
}

/* Lync's defaults: nothing configured, nothing federates. */
static void test_domain_empty_config(void **state)
{
	struct edge_cfg *cfg = load(BASE);
	struct pol_domain d;

	classify(cfg, "fabrikam.test", &d);
	assert_denied(&d);
	classify(cfg, "contoso.test", &d);
	assert_int_equal(d.kind, POL_DOM_OWN);
	assert_null(pol_provider_by_fqdn(cfg, "sip.fabrikam.test", 17));
	struct pol_peer p;
	const char *names[] = { "sip.fabrikam.test" };
	pol_classify_peer(cfg, names, 1, &p);
	assert_int_equal(p.source, POL_SRC_NONE);
	cfg_free(cfg);
}

static void test_provider_by_fqdn(void **state)
{
	const struct edge_cfg *cfg = *state;
	const char *uri = "sipfed.online.test:5061";

	assert_ptr_equal(pol_provider_by_fqdn(cfg, "sipfed.online.test", 18), &cfg->providers[0]);
	assert_ptr_equal(pol_provider_by_fqdn(cfg, "SIPFED.Online.test", 18), &cfg->providers[0]);
	assert_ptr_equal(pol_provider_by_fqdn(cfg, uri, 18), &cfg->providers[0]);
	assert_null(pol_provider_by_fqdn(cfg, uri, 23));
	assert_null(pol_provider_by_fqdn(cfg, uri, 17));
	assert_ptr_equal(pol_provider_by_fqdn(cfg, "fed.msgr.test", 13), &cfg->providers[2]);
	assert_null(pol_provider_by_fqdn(cfg, "sipfed.old.test", 15));     /* disabled */
	assert_null(pol_provider_by_fqdn(cfg, "sip.fabrikam.test", 17));   /* a partner, not a provider */
	assert_null(pol_provider_by_fqdn(cfg, "online.test", 11));
	assert_null(pol_provider_by_fqdn(cfg, "", 0));
}

static void test_srv_target(void **state)
{
	const struct edge_cfg *cfg = *state;
	static const struct cfg_provider sentinel;
	const struct cfg_provider *pv = &sentinel;

	/* A partner's own hosts. */
	assert_true(pol_srv_target_ok(cfg, "litware.test", 12, "sip.litware.test", &pv));
	assert_null(pv);
	pv = &sentinel;
	assert_true(pol_srv_target_ok(cfg, "litware.test", 12, "litware.test", &pv));
	assert_null(pv);
	assert_true(pol_srv_target_ok(cfg, "litware.test", 12, "a.b.LITWARE.test", &pv));
	assert_true(pol_srv_target_ok(cfg, "LITWARE.TEST", 12, "sip.litware.test", &pv));
	/* Anyone else's host. */
	pv = &sentinel;
	assert_false(pol_srv_target_ok(cfg, "litware.test", 12, "sip.evil.test", &pv));
	assert_null(pv);
	assert_false(pol_srv_target_ok(cfg, "litware.test", 12, "evillitware.test", &pv));
	assert_false(pol_srv_target_ok(cfg, "litware.test", 12, "sip.litware.test.evil", &pv));
	assert_false(pol_srv_target_ok(cfg, "litware.test", 12, "test", &pv));
	assert_false(pol_srv_target_ok(cfg, "litware.test", 12, "sip.fabrikam.test", &pv));
	assert_null(pv);
	/* A provider's server may serve any domain; a disabled one none. */
	assert_true(pol_srv_target_ok(cfg, "litware.test", 12, "sipfed.online.test", &pv));
	assert_ptr_equal(pv, &cfg->providers[0]);
	assert_true(pol_srv_target_ok(cfg, "unknown.test", 12, "FED.MSGR.TEST", &pv));
	assert_ptr_equal(pv, &cfg->providers[2]);
	assert_false(pol_srv_target_ok(cfg, "unknown.test", 12, "sipfed.old.test", &pv));
	assert_null(pv);
}

/* The domain is a slice; names of 256 bytes and more are refused. */
static void test_srv_target_slice(void **state)
{
	const struct edge_cfg *cfg = *state;
	static const struct cfg_provider sentinel;
	const struct cfg_provider *pv;
	char *d = malloc(12);
	assert_non_null(d);
	memcpy(d, "litware.test", 12);
	assert_true(pol_srv_target_ok(cfg, d, 12, "sip.litware.test", &pv));
	assert_false(pol_srv_target_ok(cfg, d, 11, "sip.litware.test", &pv));
	assert_true(pol_srv_target_ok(cfg, d + 8, 4, "x.test", &pv)); /* "test" */
	free(d); d = NULL;

	char big[300], target[310];
	memset(big, 'a', sizeof(big));
	for (size_t i = 60; i < sizeof(big); i += 61) /* labels of 60: big[0..255) is a valid name */
		big[i] = '.';
	snprintf(target, sizeof(target), "x.%.255s", big);
	assert_true(pol_srv_target_ok(cfg, big, 255, target, &pv));
	pv = &sentinel;
	assert_false(pol_srv_target_ok(cfg, big, 256, "x.aaa", &pv));
	assert_null(pv);
	assert_false(pol_srv_target_ok(cfg, big, sizeof(big), "sipfed.online.test", &pv));
}

/* pol_user_policy's identity for user@host given as slices. */
static const char *policy_of(const struct edge_cfg *cfg, const char *user, const char *host)
{
	size_t ul = strlen(user), hl = strlen(host);
	char *u = malloc(ul + 1), *h = malloc(hl + 1);
	assert_non_null(u);
	assert_non_null(h);
	memcpy(u, user, ul);
	memcpy(h, host, hl);
	const struct cfg_access_policy *p = pol_user_policy(cfg, u, ul, h, hl);
	free(u); u = NULL;
	free(h); h = NULL;
	assert_non_null(p);
	return p->identity;
}

static void test_user_policy(void **state)
{
	const struct edge_cfg *cfg = *state;

	/* "global" is listed last in the file and is still policies[0]. */
	assert_int_equal(cfg->npolicies, 5);
	assert_string_equal(cfg->policies[0].identity, "global");
	assert_string_equal(cfg->policies[1].identity, "AliceFirst");

	assert_string_equal(policy_of(cfg, "alice", "contoso.test"), "AliceFirst");
	assert_string_equal(policy_of(cfg, "alice", "Contoso.TEST"), "AliceFirst");
	assert_string_equal(policy_of(cfg, "bob", "contoso.test"), "Contoso");
	assert_string_equal(policy_of(cfg, "Alice", "contoso.test"), "Contoso");
	assert_string_equal(policy_of(cfg, "carol", "fabrikam.test"), "Contoso");
	assert_string_equal(policy_of(cfg, "alice", "eu.contoso.test"), "Subdomains");
	assert_string_equal(policy_of(cfg, "bob", "a.b.contoso.test"), "Subdomains");
	assert_string_equal(policy_of(cfg, "bob", "fabrikam.test"), "global");
	assert_string_equal(policy_of(cfg, "bob", "evilcontoso.test"), "global");
	assert_string_equal(policy_of(cfg, "", "contoso.test"), "Contoso");
	assert_string_equal(policy_of(cfg, "alice", ""), "global");
	assert_ptr_equal(pol_user_policy(cfg, "bob", 3, "fabrikam.test", 13), &cfg->policies[0]);
	/* Slices: the bytes after the lengths do not count. */
	assert_string_equal(pol_user_policy(cfg, "alice2", 5, "contoso.test.x", 12)->identity,
	                    "AliceFirst");
	assert_string_equal(pol_user_policy(cfg, "alice2", 6, "contoso.test.x", 12)->identity,
	                    "Contoso");
	assert_string_equal(pol_user_policy(cfg, "alice", 5, "contoso.test.x", 14)->identity,
	                    "global");
}

/* Without policies every user gets an all-false global policy. */
static void test_user_policy_default(void **state)
{
	struct edge_cfg *cfg = load(BASE);
	const struct cfg_access_policy *p = pol_user_policy(cfg, "alice", 5, "contoso.test", 12);

	assert_ptr_equal(p, &cfg->policies[0]);
	assert_string_equal(p->identity, "global");
	assert_false(pol_policy_permits(p, POL_NET_FEDERATION));
	assert_false(pol_policy_permits(p, POL_NET_PUBLIC_CLOUD));
	cfg_free(cfg);
}

static void test_policy_permits(void **state)
{
	const struct edge_cfg *cfg = *state;
	const struct cfg_access_policy *global = &cfg->policies[0];
	const struct cfg_access_policy *alice = pol_user_policy(cfg, "alice", 5, "contoso.test", 12);
	const struct cfg_access_policy *bob = pol_user_policy(cfg, "bob", 3, "contoso.test", 12);
	const struct cfg_access_policy *sub = pol_user_policy(cfg, "bob", 3, "eu.contoso.test", 15);

	assert_true(pol_policy_permits(global, POL_NET_FEDERATION));
	assert_false(pol_policy_permits(global, POL_NET_PUBLIC_CLOUD));
	assert_false(pol_policy_permits(alice, POL_NET_FEDERATION));
	assert_true(pol_policy_permits(alice, POL_NET_PUBLIC_CLOUD));
	assert_true(pol_policy_permits(bob, POL_NET_FEDERATION));
	assert_false(pol_policy_permits(bob, POL_NET_PUBLIC_CLOUD));
	assert_int_equal(bob->xmpp, 1);
	/* Outside access is neither federation nor public cloud. */
	assert_int_equal(sub->outside, 1);
	assert_false(pol_policy_permits(sub, POL_NET_FEDERATION));
	assert_false(pol_policy_permits(sub, POL_NET_PUBLIC_CLOUD));

	struct cfg_access_policy p = { .identity = "x" };
	assert_false(pol_policy_permits(&p, POL_NET_FEDERATION));
	p.public_cloud = 1;
	assert_false(pol_policy_permits(&p, POL_NET_FEDERATION));
	assert_true(pol_policy_permits(&p, POL_NET_PUBLIC_CLOUD));
	p.federation = 1;
	p.public_cloud = 0;
	assert_true(pol_policy_permits(&p, POL_NET_FEDERATION));
	assert_false(pol_policy_permits(&p, POL_NET_PUBLIC_CLOUD));
}

static void test_peer(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_peer p;

	const char *direct[] = { "fabrikam.test", "SIP.Fabrikam.TEST" };
	memset(&p, 0x5a, sizeof(p));
	pol_classify_peer(cfg, direct, 2, &p);
	assert_int_equal(p.source, POL_SRC_DIRECT_PARTNER);
	assert_ptr_equal(p.fqdn, cfg->allowed[0].server.fqdn); /* the configuration's copy */
	assert_null(p.provider);

	const char *hosting[] = { "sipfed.online.test" };
	memset(&p, 0x5a, sizeof(p));
	pol_classify_peer(cfg, hosting, 1, &p);
	assert_int_equal(p.source, POL_SRC_AUTHORIZED_SERVER);
	assert_ptr_equal(p.provider, &cfg->providers[0]);
	assert_ptr_equal(p.fqdn, cfg->providers[0].server.fqdn);

	const char *public[] = { "x.msgr.test", "Fed.Msgr.Test" };
	pol_classify_peer(cfg, public, 2, &p);
	assert_int_equal(p.source, POL_SRC_AUTHORIZED_SERVER);
	assert_ptr_equal(p.provider, &cfg->providers[2]);
	assert_string_equal(p.fqdn, "fed.msgr.test");

	/* A direct partner's name wins over a provider's, wherever it is in the list. */
	const char *both[] = { "sipfed.online.test", "sip.fabrikam.test" };
	pol_classify_peer(cfg, both, 2, &p);
	assert_int_equal(p.source, POL_SRC_DIRECT_PARTNER);
	assert_null(p.provider);

	/* Unknown names: no configured server; fqdn is the first name. */
	const char *unknown[] = { "sip.litware.test", "litware.test" };
	memset(&p, 0x5a, sizeof(p));
	pol_classify_peer(cfg, unknown, 2, &p);
	assert_int_equal(p.source, POL_SRC_NONE);
	assert_ptr_equal(p.fqdn, unknown[0]);
	assert_null(p.provider);

	const char *disabled[] = { "sipfed.old.test" };
	pol_classify_peer(cfg, disabled, 1, &p);
	assert_int_equal(p.source, POL_SRC_NONE);
	assert_null(p.provider);

	/* Look-alikes of configured names. */
	const char *near[] = { "sip.fabrikam.test.", "xsip.fabrikam.test", "sip.fabrikam.tes",
	                       "*.fabrikam.test", "sipfed.online.test\n" };
	pol_classify_peer(cfg, near, 5, &p);
	assert_int_equal(p.source, POL_SRC_NONE);

	/* The default route is not in use: its name means nothing. */
	const char *route[] = { "sip.upstream.test" };
	pol_classify_peer(cfg, route, 1, &p);
	assert_int_equal(p.source, POL_SRC_NONE);
}

static void test_peer_empty(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_peer p;

	memset(&p, 0x5a, sizeof(p));
	pol_classify_peer(cfg, NULL, 0, &p);
	assert_int_equal(p.source, POL_SRC_NONE);
	assert_null(p.fqdn);
	assert_null(p.provider);

	const char *empty[] = { "" };
	memset(&p, 0x5a, sizeof(p));
	pol_classify_peer(cfg, empty, 1, &p);
	assert_int_equal(p.source, POL_SRC_NONE);
	assert_string_equal(p.fqdn, "");
	assert_null(p.provider);

	/* Only the first n names are looked at. */
	const char *names[] = { "x.test", "sip.fabrikam.test" };
	pol_classify_peer(cfg, names, 1, &p);
	assert_int_equal(p.source, POL_SRC_NONE);
	assert_ptr_equal(p.fqdn, names[0]);
}

static void test_peer_default_route(void **state)
{
	const struct edge_cfg *cfg = *state;
	struct pol_peer p;

	const char *route[] = { "x.test", "SIP.UPSTREAM.TEST" };
	pol_classify_peer(cfg, route, 2, &p);
	assert_int_equal(p.source, POL_SRC_AUTHORIZED_SERVER);
	assert_ptr_equal(p.fqdn, cfg->edge.default_route.fqdn);
	assert_null(p.provider);
	const char *direct[] = { "sip.fabrikam.test" };
	pol_classify_peer(cfg, direct, 1, &p);
	assert_int_equal(p.source, POL_SRC_DIRECT_PARTNER);
	const char *hosting[] = { "sipfed.online.test" };
	pol_classify_peer(cfg, hosting, 1, &p);
	assert_ptr_equal(p.provider, &cfg->providers[0]);
	const char *unknown[] = { "upstream.test" };
	pol_classify_peer(cfg, unknown, 1, &p);
	assert_int_equal(p.source, POL_SRC_NONE);
}

static void test_names_have(void **state)
{
	const char *names[] = { "a.test", "B.Test" };

	assert_true(pol_names_have(names, 2, "a.test"));
	assert_true(pol_names_have(names, 2, "A.TEST"));
	assert_true(pol_names_have(names, 2, "b.test"));
	assert_false(pol_names_have(names, 1, "b.test"));
	assert_false(pol_names_have(names, 2, "c.test"));
	assert_false(pol_names_have(names, 2, "test"));
	assert_false(pol_names_have(names, 2, ""));
	assert_false(pol_names_have(NULL, 0, "a.test"));
}

static void test_is_verified(void **state)
{
	assert_true(pol_is_verified(CFG_VERIFY_ALWAYS_VERIFIABLE, 0));
	assert_true(pol_is_verified(CFG_VERIFY_ALWAYS_VERIFIABLE, 1));
	assert_false(pol_is_verified(CFG_VERIFY_ALWAYS_UNVERIFIABLE, 0));
	assert_false(pol_is_verified(CFG_VERIFY_ALWAYS_UNVERIFIABLE, 1));
	assert_false(pol_is_verified(CFG_VERIFY_USE_SOURCE, 0));
	assert_true(pol_is_verified(CFG_VERIFY_USE_SOURCE, 1));
}

static void test_names(void **state)
{
	assert_string_equal(pol_source_name(POL_SRC_NONE), "None");
	assert_string_equal(pol_source_name(POL_SRC_DIRECT_PARTNER), "DirectPartner");
	assert_string_equal(pol_source_name(POL_SRC_AUTO_FEDERATION), "AutoFederation");
	assert_string_equal(pol_source_name(POL_SRC_AUTHORIZED_SERVER), "AuthorizedServer");
	assert_string_equal(pol_network_name(POL_NET_FEDERATION), "federation");
	assert_string_equal(pol_network_name(POL_NET_PUBLIC_CLOUD), "publiccloud");
}

#define TRUST_DIRECT \
	"ms-source-type=DirectPartner;ms-ep-fqdn=sip.contoso.test;ms-source-verified-user=verified;" \
	"ms-source-network=federation;ms-remote-fqdn=sip.fabrikam.test"

static void test_trust_value(void **state)
{
	char buf[512];
	size_t n;

	n = pol_trust_value(buf, sizeof(buf), POL_SRC_DIRECT_PARTNER, "sip.contoso.test", 1,
	                    POL_NET_FEDERATION, "sip.fabrikam.test");
	assert_string_equal(buf, TRUST_DIRECT);
	assert_int_equal(n, strlen(TRUST_DIRECT));

	n = pol_trust_value(buf, sizeof(buf), POL_SRC_AUTHORIZED_SERVER, "sip.contoso.test", 0,
	                    POL_NET_PUBLIC_CLOUD, "fed.msgr.test");
	assert_string_equal(buf, "ms-source-type=AuthorizedServer;ms-ep-fqdn=sip.contoso.test;"
	                         "ms-source-verified-user=unverified;ms-source-network=publiccloud;"
	                         "ms-remote-fqdn=fed.msgr.test");
	assert_int_equal(n, strlen(buf));

	n = pol_trust_value(buf, sizeof(buf), POL_SRC_AUTO_FEDERATION, "sip.contoso.test", 1,
	                    POL_NET_FEDERATION, NULL);
	assert_string_equal(buf, "ms-source-type=AutoFederation;ms-ep-fqdn=sip.contoso.test;"
	                         "ms-source-verified-user=verified;ms-source-network=federation;"
	                         "ms-remote-fqdn=");
	assert_int_equal(n, strlen(buf));
}

/* A short buffer gets a NUL-terminated prefix and the length written (len - 1). */
static void test_trust_value_truncated(void **state)
{
	const size_t full = strlen(TRUST_DIRECT);
	char *buf;
	size_t n;

	for (size_t len = 1; len <= full + 1; len++) {
		buf = malloc(len); /* exact size: ASan catches a write past it */
		assert_non_null(buf);
		n = pol_trust_value(buf, len, POL_SRC_DIRECT_PARTNER, "sip.contoso.test", 1,
		                    POL_NET_FEDERATION, "sip.fabrikam.test");
		assert_int_equal(n, len - 1);
		assert_int_equal(buf[len - 1], '\0');
		assert_memory_equal(buf, TRUST_DIRECT, len - 1);
		free(buf); buf = NULL;
	}

	char small[16];
	memset(small, 'x', sizeof(small));
	n = pol_trust_value(small, 10, POL_SRC_DIRECT_PARTNER, "sip.contoso.test", 1,
	                    POL_NET_FEDERATION, "sip.fabrikam.test");
	assert_int_equal(n, 9);
	assert_string_equal(small, "ms-source");
	assert_int_equal(small[10], 'x');

	/* Nothing is written to an empty buffer. */
	memset(small, 'x', sizeof(small));
	n = pol_trust_value(small, 0, POL_SRC_DIRECT_PARTNER, "sip.contoso.test", 1,
	                    POL_NET_FEDERATION, "sip.fabrikam.test");
	assert_int_equal(n, 0);
	assert_int_equal(small[0], 'x');
	assert_int_equal(pol_trust_value(NULL, 0, POL_SRC_NONE, "e.test", 0, POL_NET_FEDERATION,
	                                 NULL), 0);
}

#define ON(cfg, t) cmocka_unit_test_setup_teardown(t, setup_##cfg, teardown)

int main(void)
{
	const struct CMUnitTest tests[] = {
		ON(static, test_domain_own),
		ON(static, test_domain_blocked),
		ON(static, test_domain_direct_partner),
		ON(static, test_domain_allowed_by_srv),
		ON(static, test_domain_slice),
		ON(static, test_domain_unknown_denied),
		ON(static, test_domain_hosting_provider),
		ON(static, test_domain_public_provider),
		ON(static, test_domain_disabled_provider),
		ON(discovery, test_domain_disabled_provider),
		ON(discovery, test_domain_discovered),
		ON(default_route, test_domain_default_route),
		cmocka_unit_test(test_domain_default_route_federation),
		cmocka_unit_test(test_domain_empty_config),
		ON(static, test_provider_by_fqdn),
		ON(static, test_srv_target),
		ON(static, test_srv_target_slice),
		ON(static, test_user_policy),
		cmocka_unit_test(test_user_policy_default),
		ON(static, test_policy_permits),
		ON(static, test_peer),
		ON(static, test_peer_empty),
		ON(default_route, test_peer_default_route),
		cmocka_unit_test(test_names_have),
		cmocka_unit_test(test_is_verified),
		cmocka_unit_test(test_names),
		cmocka_unit_test(test_trust_value),
		cmocka_unit_test(test_trust_value_truncated),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
