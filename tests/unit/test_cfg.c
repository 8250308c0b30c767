/* Unit tests for edge/cfg.c: the embedded default, checks and their error lines. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cfg.h"

/* The sections of a valid configuration; a test replaces one or adds lines. */
#define NODE "node = {\n  pool_fqdn = \"sip.contoso.test\";\n  sip_domains = [ \"contoso.test\" ];\n};\n"
#define LOG "log = { level = \"debug\"; syslog = true; };\n"
#define TLS "tls = {\n  ca_file = \"ca.pem\";\n  cert_file = \"edge.pem\";\n  key_file = \"edge.key\";\n};\n"
#define INTERNAL \
	"internal = {\n" \
	"  listen = ( { address = \"127.0.0.1\"; port = 5060; transport = \"tcp\"; } );\n" \
	"  next_hop = { host = \"127.0.0.1\"; port = 5070; transport = \"tcp\"; };\n" \
	"};\n"
#define EXTERNAL "external = {\n  listen = ( { address = \"127.0.0.1\"; port = 5061; } );\n};\n"
#define XMPP "xmpp = {\n  listen = ( { address = \"127.0.0.1\"; port = 5269; } );\n};\n"
/* A valid configuration with XMPP; a test appends its xmpp_partners. */
#define BASE_XMPP NODE TLS INTERNAL EXTERNAL XMPP

struct tmpconf {
	char path[64];
};

static void write_conf(struct tmpconf *t, const char *text)
{
	strcpy(t->path, "/tmp/test_cfg_XXXXXX");
	int fd = mkstemp(t->path);
	assert_true(fd >= 0);
	size_t len = strlen(text);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
}

static struct edge_cfg *load_ok(const char *text)
{
	struct tmpconf t;
	struct edge_cfg *cfg = NULL;
	char err[512] = "";

	write_conf(&t, text);
	int rc = cfg_load(t.path, &cfg, err, sizeof(err));
	unlink(t.path);
	if (rc != 0)
		fail_msg("cfg_load: %s", err);
	assert_non_null(cfg);
	return cfg;
}

/* The 1-based line of the first line of text that holds marker. */
static unsigned line_of(const char *text, const char *marker)
{
	const char *at = strstr(text, marker);
	unsigned line = 1;

	assert_non_null(at);
	for (const char *p = text; p < at; p++)
		line += *p == '\n';
	return line;
}

/*
 * Asserts that text fails to load with "PATH:LINE: ..." where LINE is the
 * line holding marker, and that the reason mentions `mention`.
 */
static void load_fails(const char *text, const char *marker, const char *mention)
{
	struct tmpconf t;
	struct edge_cfg *cfg = (struct edge_cfg *)1;
	char err[512] = "", want[128];

	write_conf(&t, text);
	int rc = cfg_load(t.path, &cfg, err, sizeof(err));
	unlink(t.path);
	assert_int_equal(rc, -1);
	assert_null(cfg);
	snprintf(want, sizeof(want), "%s:%u: ", t.path, line_of(text, marker));
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("error \"%s\" does not start with \"%s\"", err, want);
	if (mention && !strstr(err, mention))
		fail_msg("error \"%s\" does not mention \"%s\"", err, mention);
}

static void assert_addr(const struct cfgu_addr *a, const char *ip, uint16_t port)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)&a->sa;
	char got[INET_ADDRSTRLEN];

	assert_int_equal(a->salen, sizeof(struct sockaddr_in));
	assert_int_equal(sin->sin_family, AF_INET);
	assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, got, sizeof(got)));
	assert_string_equal(got, ip);
	assert_int_equal(ntohs(sin->sin_port), port);
}

/* The values etc/edged.conf sets. */
static void assert_shipped_values(const struct edge_cfg *cfg)
{
	assert_string_equal(cfg->pool_fqdn, "sip.contoso.test");
	assert_int_equal(cfg->nsip_domains, 1);
	assert_string_equal(cfg->sip_domains[0], "contoso.test");
	assert_int_equal(cfg->log_level, LOG_LVL_INFO);
	assert_int_equal(cfg->log_syslog, 0);
	assert_string_equal(cfg->ca_file, "run/pki/ca.pem");
	assert_string_equal(cfg->cert_file, "run/pki/sip.contoso.test.pem");
	assert_string_equal(cfg->key_file, "run/pki/sip.contoso.test.key");

	assert_int_equal(cfg->ninternal_listen, 1);
	assert_string_equal(cfg->internal_listen[0].address, "127.0.0.1");
	assert_int_equal(cfg->internal_listen[0].port, 5060);
	assert_int_equal(cfg->internal_listen[0].tls, 0);
	assert_addr(&cfg->internal_listen[0].addr, "127.0.0.1", 5060);
	assert_string_equal(cfg->next_hop.host, "127.0.0.1");
	assert_string_equal(cfg->next_hop.fqdn, "127.0.0.1");
	assert_int_equal(cfg->next_hop.port, 5070);
	assert_int_equal(cfg->next_hop.tls, 0);
	assert_addr(&cfg->next_hop.addr, "127.0.0.1", 5070);
	assert_int_equal(cfg->internal_max_msg, 128 * 1024);

	assert_int_equal(cfg->nexternal_listen, 2);
	assert_string_equal(cfg->external_listen[0].address, "127.0.0.1");
	assert_int_equal(cfg->external_listen[0].port, 5061);
	assert_int_equal(cfg->external_listen[0].tls, 1);
	assert_false(cfg->external_listen[0].proxy_protocol);
	assert_addr(&cfg->external_listen[0].addr, "127.0.0.1", 5061);
	/* The balancer's listener: PROXY v2, from balancerd on 127.0.0.1 only. */
	assert_int_equal(cfg->external_listen[1].port, 5063);
	assert_true(cfg->external_listen[1].proxy_protocol);
	assert_int_equal(cfg->nproxy_from, 1);
	assert_int_equal(cfg->external_max_msg, 5000 * 1024);

	assert_int_equal(cfg->edge.allow_federated_users, 1);
	assert_int_equal(cfg->edge.enable_partner_discovery, 0);
	assert_int_equal(cfg->edge.outgoing_tls_count, 4);
	assert_int_equal(cfg->nallowed, 1);
	assert_string_equal(cfg->allowed[0].domain, "fabrikam.test");
	assert_string_equal(cfg->allowed[0].server.fqdn, "sip.fabrikam.test");
	assert_int_equal(cfg->allowed[0].server.port, 5061);
	assert_addr(&cfg->allowed[0].server.addr, "127.0.0.2", 5061);
	assert_int_equal(cfg->allowed[0].verification, CFG_VERIFY_USE_SOURCE);
	assert_int_equal(cfg->nblocked, 0);
	assert_int_equal(cfg->nproviders, 0);
	assert_int_equal(cfg->npolicies, 1);
	assert_int_equal(cfg->policies[0].federation, 1);
	assert_int_equal(cfg->policies[0].public_cloud, 0);
	assert_null(cfg->dns.server);
	assert_int_equal(cfg->dns.cache_records, 3000);

	assert_int_equal(cfg->max_connections, 10000);
	assert_int_equal(cfg->max_headers, 256);
	assert_int_equal(cfg->max_line_bytes, 8192);
	assert_int_equal(cfg->connect_timeout_ms, 5000);
	assert_int_equal(cfg->keepalive_s, 1200);
	assert_int_equal(cfg->whitespace_keepalive, 1);
	/* The demo's XMPP: its Prosody, jabber.test, as a Federated partner. */
	assert_non_null(cfg->xmpp);
	assert_int_equal(cfg->xmpp->nlisten, 1);
	assert_int_equal(cfg->xmpp->listen[0].port, 5269);
	assert_string_equal(cfg->xmpp->cert_file, "run/pki/contoso.test.pem");
	assert_int_equal(cfg->xmpp->ndomains, 1);
	assert_string_equal(cfg->xmpp->domains[0], "contoso.test");
	assert_int_equal(cfg->xmpp->npartners, 1);
	assert_string_equal(cfg->xmpp->partners[0].domain, "jabber.test");
	assert_int_equal(cfg->xmpp->partners[0].type, CFG_XMPP_FEDERATED);
	assert_int_equal(cfg->policies[0].xmpp, 1);
}

static void test_default(void **state)
{
	struct edge_cfg *cfg = NULL;
	char err[256] = "";

	if (cfg_load(NULL, &cfg, err, sizeof(err)) != 0)
		fail_msg("cfg_load(NULL): %s", err);
	assert_string_equal(cfg->source, "(default)");
	assert_shipped_values(cfg);
	cfg_free(cfg);
}

/* The embedded text is etc/edged.conf itself (tests run from the top folder). */
static void test_default_is_shipped_file(void **state)
{
	FILE *f = fopen("etc/edged.conf", "r");
	if (!f)
		skip();
	char *text = calloc(1, 65536);
	assert_non_null(text);
	size_t n = fread(text, 1, 65535, f);
	fclose(f);
	assert_true(n > 0 && n < 65535);
	assert_string_equal(cfg_default_text, text);
	free(text);

	struct edge_cfg *cfg = NULL;
	char err[256] = "";
	if (cfg_load("etc/edged.conf", &cfg, err, sizeof(err)) != 0)
		fail_msg("cfg_load: %s", err);
	assert_shipped_values(cfg);
	cfg_free(cfg);
}

static void test_defaults_when_absent(void **state)
{
	/* No log, limits or partners; no max_message_kb, next hop port or transport. */
	struct edge_cfg *cfg = load_ok(NODE TLS
		"internal = {\n"
		"  listen = ( { address = \"::1\"; port = 5060; } );\n"
		"  next_hop = { host = \"127.0.0.1\"; fqdn = \"fe.contoso.test\"; };\n"
		"};\n"
		EXTERNAL);

	assert_int_equal(cfg->log_level, LOG_LVL_INFO);
	assert_int_equal(cfg->log_syslog, 0);
	assert_int_equal(cfg->internal_listen[0].tls, 0);
	assert_int_equal(cfg->internal_listen[0].addr.sa.ss_family, AF_INET6);
	assert_int_equal(cfg->internal_listen[0].addr.salen, sizeof(struct sockaddr_in6));
	assert_string_equal(cfg->next_hop.fqdn, "fe.contoso.test");
	assert_int_equal(cfg->next_hop.port, 5061);
	assert_int_equal(cfg->next_hop.tls, 0);
	assert_int_equal(cfg->internal_max_msg, 128 * 1024);
	assert_int_equal(cfg->external_max_msg, 5000 * 1024);
	/* Lync's defaults: no federation of any kind. */
	assert_int_equal(cfg->nallowed, 0);
	assert_int_equal(cfg->edge.allow_federated_users, 0);
	assert_int_equal(cfg->edge.enable_partner_discovery, 0);
	assert_int_equal(cfg->edge.use_default_route, 0);
	assert_int_equal(cfg->edge.mark_source_verifiable, 1);
	assert_int_equal(cfg->edge.archiving_disclaimer, 0);
	assert_int_equal(cfg->edge.outgoing_tls_count, 4);
	assert_int_equal(cfg->edge.discovered_rate, 20);
	assert_int_equal(cfg->edge.discovered_max_contacts, 1000);
	assert_int_equal(cfg->edge.discovered_contacts_limit, 1);
	assert_int_equal(cfg->edge.discovered_report_period_min, 60);
	assert_int_equal(cfg->edge.discovered_verification, CFG_VERIFY_USE_SOURCE);
	assert_int_equal(cfg->npolicies, 1);
	assert_string_equal(cfg->policies[0].identity, "global");
	assert_int_equal(cfg->policies[0].federation + cfg->policies[0].xmpp +
	                 cfg->policies[0].public_cloud + cfg->policies[0].outside, 0);
	assert_int_equal(cfg->dns.port, 53);
	assert_int_equal(cfg->dns.cache_records, 3000);
	assert_int_equal(cfg->dns.max_pending, 4096);
	assert_int_equal(cfg->max_connections, 10000);
	assert_int_equal(cfg->max_headers, 256);
	assert_int_equal(cfg->max_line_bytes, 8192);
	assert_int_equal(cfg->connect_timeout_ms, 5000);
	assert_int_equal(cfg->keepalive_s, 1200);
	assert_int_equal(cfg->drain_timeout_s, 30);
	assert_int_equal(cfg->whitespace_keepalive, 1);
	assert_null(cfg->xmpp); /* no XMPP at all */
	cfg_free(cfg);
}

static void test_values_read(void **state)
{
	struct edge_cfg *cfg = load_ok(NODE LOG TLS
		"internal = {\n"
		"  listen = ( { address = \"127.0.0.1\"; port = 5060; },\n"
		"             { address = \"127.0.0.1\"; port = 5063; transport = \"tls\"; } );\n"
		"  next_hop = { host = \"127.0.0.1\"; port = 5070; transport = \"tls\"; };\n"
		"  max_message_kb = 256;\n"
		"};\n"
		"external = { listen = ( { address = \"127.0.0.1\"; port = 5061; } ); max_message_kb = 1000; };\n"
		"access_edge = { allow_federated_users = true; enable_partner_discovery = true;\n"
		"                outgoing_tls_count = 2; discovered_partner_standard_rate = 5;\n"
		"                discovered_partner_verification_level = \"AlwaysUnverifiable\"; };\n"
		"allowed_domains = (\n"
		"  { domain = \"fabrikam.test\"; proxy_fqdn = \"sip.fabrikam.test\";\n"
		"    address = \"127.0.0.2\"; port = 5062; verification_level = \"AlwaysVerifiable\"; },\n"
		"  { domain = \"fabrikam.example\"; mark_for_monitoring = true; }\n"
		");\n"
		"blocked_domains = ( { domain = \"spam.test\"; comment = \"abuse\"; } );\n"
		"hosting_providers = ( { identity = \"Online\"; proxy_fqdn = \"sipfed.online.test\";\n"
		"                        domains = [ \"hosted.test\" ]; } );\n"
		"public_providers = ( { identity = \"Msgr\"; proxy_fqdn = \"fed.msgr.test\"; enabled = false; } );\n"
		"external_access_policies = (\n"
		"  { identity = \"Partners\"; users = [ \"*@*.contoso.test\" ]; enable_federation_access = true; },\n"
		"  { identity = \"global\"; enable_public_cloud_access = true; }\n"
		");\n"
		"dns = { server = \"::1\"; port = 5353; tries = 3; cache_record_count = 0; };\n"
		"limits = { max_connections = 7; max_headers = 9; max_line_bytes = 300;\n"
		"           connect_timeout_ms = 100; max_keep_alive_interval_s = 60;\n"
		"           enable_white_space_keep_alive = false; };\n");

	assert_int_equal(cfg->log_level, LOG_LVL_DEBUG);
	assert_int_equal(cfg->log_syslog, 1);
	assert_int_equal(cfg->ninternal_listen, 2);
	assert_int_equal(cfg->internal_listen[0].tls, 0);
	assert_int_equal(cfg->internal_listen[1].tls, 1);
	assert_int_equal(cfg->internal_listen[1].port, 5063);
	assert_int_equal(cfg->next_hop.tls, 1);
	assert_int_equal(cfg->internal_max_msg, 256 * 1024);
	assert_int_equal(cfg->external_max_msg, 1000 * 1024);
	assert_int_equal(cfg->edge.outgoing_tls_count, 2);
	assert_int_equal(cfg->edge.discovered_rate, 5);
	assert_int_equal(cfg->edge.discovered_verification, CFG_VERIFY_ALWAYS_UNVERIFIABLE);
	assert_int_equal(cfg->nallowed, 2);
	assert_addr(&cfg->allowed[0].server.addr, "127.0.0.2", 5062);
	assert_int_equal(cfg->allowed[0].verification, CFG_VERIFY_ALWAYS_VERIFIABLE);
	assert_null(cfg->allowed[1].server.fqdn);
	assert_int_equal(cfg->allowed[1].mark_for_monitoring, 1);
	assert_int_equal(cfg->nblocked, 1);
	assert_string_equal(cfg->blocked[0].comment, "abuse");
	assert_int_equal(cfg->nproviders, 2);
	assert_int_equal(cfg->providers[0].kind, CFG_HOSTING_PROVIDER);
	assert_int_equal(cfg->providers[0].verification, CFG_VERIFY_ALWAYS_VERIFIABLE);
	assert_int_equal(cfg->providers[0].enabled, 1);
	assert_int_equal(cfg->providers[1].kind, CFG_PUBLIC_PROVIDER);
	assert_int_equal(cfg->providers[1].enabled, 0);
	assert_int_equal(cfg->providers[1].verification, CFG_VERIFY_USE_SOURCE);
	/* The global policy goes first, wherever the file has it. */
	assert_int_equal(cfg->npolicies, 2);
	assert_string_equal(cfg->policies[0].identity, "global");
	assert_int_equal(cfg->policies[0].public_cloud, 1);
	assert_string_equal(cfg->policies[1].identity, "Partners");
	assert_int_equal(cfg->policies[1].nusers, 1);
	assert_string_equal(cfg->dns.server, "::1");
	assert_int_equal(cfg->dns.addr.sa.ss_family, AF_INET6);
	assert_int_equal(ntohs(((const struct sockaddr_in6 *)(const void *)&cfg->dns.addr.sa)->sin6_port),
	                 5353);
	assert_int_equal(cfg->dns.tries, 3);
	assert_int_equal(cfg->dns.cache_records, 0);
	assert_int_equal(cfg->max_connections, 7);
	assert_int_equal(cfg->max_headers, 9);
	assert_int_equal(cfg->max_line_bytes, 300);
	assert_int_equal(cfg->connect_timeout_ms, 100);
	assert_int_equal(cfg->keepalive_s, 60);
	assert_int_equal(cfg->whitespace_keepalive, 0);
	cfg_free(cfg);
}

/* cfg_load() returns a configuration that owns every string it points to. */
static void test_owns_source(void **state)
{
	struct tmpconf t;
	struct edge_cfg *cfg = NULL;
	char err[256] = "", path[sizeof(t.path)], got[sizeof(t.path)];

	write_conf(&t, NODE TLS INTERNAL EXTERNAL);
	strcpy(path, t.path);
	int rc = cfg_load(path, &cfg, err, sizeof(err));
	unlink(t.path);
	if (rc != 0)
		fail_msg("cfg_load: %s", err);
	memset(path, 'x', strlen(path));
	snprintf(got, sizeof(got), "%s", cfg->source);
	cfg_free(cfg);
	assert_string_equal(got, t.path);
}

static void test_missing_file(void **state)
{
	struct edge_cfg *cfg = (struct edge_cfg *)1;
	char err[256] = "";

	assert_int_equal(cfg_load("/nonexistent/edged.conf", &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	assert_non_null(strstr(err, "/nonexistent/edged.conf"));
}

static void test_err_syntax(void **state)
{
	load_fails(NODE TLS "internal = {\n  listen = ( { address = \"127.0.0.1\"; port = 5060 5061; } );\n};\n"
	           EXTERNAL, "port = 5060", NULL);
}

static void test_err_unknown_section(void **state)
{
	load_fails(NODE TLS INTERNAL EXTERNAL "limit = { max_connections = 5; };\n", "limit =", "limit");
}

static void test_err_port_range(void **state)
{
	load_fails(NODE TLS INTERNAL
	           "external = {\n  listen = (\n    { address = \"127.0.0.1\";\n      port = 70000; }\n  );\n};\n",
	           "70000", "port");
}

static void test_err_transport(void **state)
{
	load_fails(NODE TLS
	           "internal = {\n"
	           "  listen = ( { address = \"127.0.0.1\"; port = 5060;\n"
	           "               transport = \"udp\"; } );\n"
	           "  next_hop = { host = \"127.0.0.1\"; port = 5070; };\n"
	           "};\n" EXTERNAL,
	           "\"udp\"", "udp");
	load_fails(NODE TLS
	           "internal = {\n"
	           "  listen = ( { address = \"127.0.0.1\"; port = 5060; } );\n"
	           "  next_hop = { host = \"127.0.0.1\";\n    transport = \"sctp\"; };\n"
	           "};\n" EXTERNAL,
	           "\"sctp\"", "sctp");
}

static void test_err_external_transport(void **state)
{
	load_fails(NODE TLS INTERNAL
	           "external = {\n  listen = ( { address = \"127.0.0.1\"; port = 5061;\n"
	           "    transport = \"tls\"; } );\n};\n",
	           "transport = \"tls\"", "transport");
}

static void test_err_allowed_domain_twice(void **state)
{
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "allowed_domains = (\n"
	           "  { domain = \"fabrikam.test\"; proxy_fqdn = \"sip.fabrikam.test\"; },\n"
	           "  { domain = \"Fabrikam.Test\"; }\n"
	           ");\n",
	           "\"Fabrikam.Test\"", "Fabrikam.Test");
}

static void test_err_allowed_domain_ours(void **state)
{
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "allowed_domains = (\n"
	           "  { domain = \"contoso.test\"; proxy_fqdn = \"sip.fabrikam.test\"; address = \"127.0.0.2\"; }\n"
	           ");\n",
	           "\"contoso.test\"; proxy", "node.sip_domains");
}

static void test_err_blocked_and_allowed(void **state)
{
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "allowed_domains = ( { domain = \"fabrikam.test\"; } );\n"
	           "blocked_domains = (\n  { domain = \"fabrikam.test\"; comment = \"x\"; }\n);\n",
	           "comment = \"x\"", "also an allowed domain");
}

static void test_err_provider_domain_taken(void **state)
{
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "blocked_domains = ( { domain = \"spam.test\"; } );\n"
	           "public_providers = (\n  { identity = \"P\"; proxy_fqdn = \"fed.p.test\";\n"
	           "    domains = [ \"spam.test\" ]; }\n);\n",
	           "[ \"spam.test\" ]", "a blocked domain");
}

static void test_err_proxy_fqdn_is_ours(void **state)
{
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "allowed_domains = (\n  { domain = \"fabrikam.test\";\n"
	           "    proxy_fqdn = \"SIP.contoso.test\"; }\n);\n",
	           "SIP.contoso.test", "pool_fqdn");
}

static void test_err_bad_names(void **state)
{
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "allowed_domains = (\n  { domain = \"-bad-.test\"; }\n);\n",
	           "-bad-.test", "not a valid domain");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "allowed_domains = (\n  { domain = \"ok.test\"; address = \"127.0.0.9\"; }\n);\n",
	           "ok.test", "need 'proxy_fqdn'");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "external_access_policies = (\n  { identity = \"x\";\n"
	           "    users = [ \"a*@contoso.test\" ]; }\n);\n",
	           "a*@contoso.test", "user pattern");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "external_access_policies = (\n  { identity = \"global\";\n"
	           "    users = [ \"*@contoso.test\" ]; }\n);\n",
	           "*@contoso.test", "remove 'users'");
}

static void test_err_section_not_a_group(void **state)
{
	/* A list where a group belongs has unnamed elements: refused, not a crash. */
	load_fails(NODE TLS INTERNAL EXTERNAL "log = ( 1 );\n", "log = (", "must be a group");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "access_edge = {\n  routing = \"default_route\";\n  default_route = ( \"x\" );\n};\n",
	           "default_route = (", "must be a group");
	load_fails(NODE TLS INTERNAL EXTERNAL "dns = [ 1, 2 ];\n", "dns = [", "must be a group");
}

static void test_err_node_names(void **state)
{
	load_fails("node = {\n  pool_fqdn = \"sip..contoso.test\";\n  sip_domains = [ \"contoso.test\" ];\n};\n"
	           TLS INTERNAL EXTERNAL, "sip..contoso.test", "not a valid domain");
	load_fails("node = {\n  pool_fqdn = \"sip.contoso.test\";\n  sip_domains = [ \"contoso.test.\" ];\n};\n"
	           TLS INTERNAL EXTERNAL, "sip_domains", "not a valid domain");
}

static void test_err_access_edge(void **state)
{
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "access_edge = {\n  routing = \"default_route\";\n};\n",
	           "routing", "default_route");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "access_edge = {\n  enable_partner_discovery = true;\n  routing = \"default_route\";\n"
	           "  default_route = { fqdn = \"up.test\"; };\n};\n",
	           "enable_partner_discovery", "partner discovery needs");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "access_edge = {\n  outgoing_tls_count = 5;\n};\n",
	           "outgoing_tls_count", "out of range 1-4");
}

static void test_err_missing_pool_fqdn(void **state)
{
	load_fails("# no pool name\n\nnode = {\n  sip_domains = [ \"contoso.test\" ];\n};\n"
	           TLS INTERNAL EXTERNAL, "node = {", "pool_fqdn");
}

static void test_err_listen_address(void **state)
{
	load_fails(NODE TLS
	           "internal = {\n"
	           "  listen = ( { port = 5060;\n               address = \"localhost\"; } );\n"
	           "  next_hop = { host = \"127.0.0.1\"; port = 5070; };\n"
	           "};\n" EXTERNAL,
	           "\"localhost\"", "localhost");
}

static void test_err_max_message_kb(void **state)
{
	load_fails(NODE TLS
	           "internal = {\n"
	           "  listen = ( { address = \"127.0.0.1\"; port = 5060; } );\n"
	           "  next_hop = { host = \"127.0.0.1\"; port = 5070; };\n"
	           "  max_message_kb = 257;\n"
	           "};\n" EXTERNAL,
	           "257", "max_message_kb");
	load_fails(NODE TLS INTERNAL
	           "external = {\n  listen = ( { address = \"127.0.0.1\"; port = 5061; } );\n"
	           "  max_message_kb = 999;\n};\n",
	           "max_message_kb = 999", "out of range 1000-20000");
}

static void test_err_log_level(void **state)
{
	load_fails(NODE "log = {\n  syslog = false;\n  level = \"verbose\";\n};\n" TLS INTERNAL EXTERNAL,
	           "\"verbose\"", "verbose");
}

static void test_err_limits(void **state)
{
	load_fails(NODE TLS INTERNAL EXTERNAL "limits = {\n  max_keep_alive_interval_s = \"20m\";\n};\n",
	           "max_keep_alive_interval_s", "max_keep_alive_interval_s");
}

/* The xmpp section with nothing but its listener: every default. */
static void test_xmpp_defaults(void **state)
{
	struct edge_cfg *cfg = load_ok(
		"node = {\n  pool_fqdn = \"sip.contoso.test\";\n"
		"  sip_domains = [ \"contoso.test\", \"eu.contoso.test\" ];\n};\n"
		TLS INTERNAL EXTERNAL XMPP);
	const struct cfg_xmpp *x = cfg->xmpp;

	assert_non_null(x);
	assert_int_equal(x->nlisten, 1);
	assert_string_equal(x->listen[0].address, "127.0.0.1");
	assert_int_equal(x->listen[0].port, 5269);
	assert_int_equal(x->listen[0].tls, 0); /* STARTTLS, inside the stream */
	assert_int_equal(x->listen[0].proxy_protocol, 0);
	assert_addr(&x->listen[0].addr, "127.0.0.1", 5269);
	/* Our SIP domains, in an array of its own (cfg_free frees both). */
	assert_int_equal(x->ndomains, 2);
	assert_ptr_not_equal(x->domains, cfg->sip_domains);
	assert_string_equal(x->domains[0], "contoso.test");
	assert_string_equal(x->domains[1], "eu.contoso.test");
	assert_string_equal(x->cert_file, "edge.pem");
	assert_string_equal(x->key_file, "edge.key");
	assert_null(x->dialback_secret);
	assert_int_equal(x->max_stanza_bytes, 64 * 1024);
	assert_int_equal(x->keepalive_s, 60);
	assert_int_equal(x->idle_timeout_s, 600);
	assert_int_equal(x->npartners, 0);
	cfg_free(cfg);
}

static void test_xmpp_values_read(void **state)
{
	struct edge_cfg *cfg = load_ok(
		"node = {\n  pool_fqdn = \"sip.contoso.test\";\n"
		"  sip_domains = [ \"contoso.test\", \"eu.contoso.test\", \"us.contoso.test\" ];\n};\n"
		TLS INTERNAL EXTERNAL
		"allowed_domains = ( { domain = \"fabrikam.test\"; } );\n"
		"xmpp = {\n"
		"  listen = ( { address = \"127.0.0.1\"; port = 5269; }, { address = \"::1\"; port = 5270; } );\n"
		"  domains = [ \"EU.contoso.test\", \"contoso.test\" ];\n"
		"  cert_file = \"xmpp.pem\"; key_file = \"xmpp.key\";\n"
		"  dialback_secret = \"0123456789abcdef\";\n"
		"  max_stanza_kb = 10240; keepalive_s = 0; idle_timeout_s = 86400;\n"
		"};\n"
		"xmpp_partners = (\n"
		"  { domain = \"jabber.test\"; additional_domains = [ \"conference.jabber.test\", \"j.test\" ];\n"
		"    partner_type = \"Federated\"; tls_negotiation = \"Optional\";\n"
		"    sasl_negotiation = \"NotSupported\"; support_dialback = true;\n"
		"    enable_keepalive = false; connection_limit = 1000;\n"
		"    proxy_fqdn = \"xmpp.jabber.test\"; address = \"127.0.0.4\"; port = 5299;\n"
		"    comment = \"Prosody\"; },\n"
		"  { domain = \"chat.test\"; partner_type = \"publicverified\"; tls_negotiation = \"REQUIRED\";\n"
		"    sasl_negotiation = \"optional\"; support_dialback = false; connection_limit = 1;\n"
		"    proxy_fqdn = \"xmpp.chat.test\"; },\n"
		"  { domain = \"im.test\"; additional_domains = [ ]; }\n"
		");\n");
	const struct cfg_xmpp *x = cfg->xmpp;

	assert_non_null(x);
	assert_int_equal(x->nlisten, 2);
	assert_int_equal(x->listen[1].addr.sa.ss_family, AF_INET6);
	assert_int_equal(x->listen[1].port, 5270);
	assert_int_equal(x->ndomains, 2);
	assert_string_equal(x->domains[0], "EU.contoso.test");
	assert_string_equal(x->domains[1], "contoso.test");
	assert_string_equal(x->cert_file, "xmpp.pem");
	assert_string_equal(x->key_file, "xmpp.key");
	assert_string_equal(x->dialback_secret, "0123456789abcdef");
	assert_int_equal(x->max_stanza_bytes, 10240 * 1024);
	assert_int_equal(x->keepalive_s, 0);
	assert_int_equal(x->idle_timeout_s, 86400);
	assert_int_equal(x->npartners, 3);

	const struct cfg_xmpp_partner *p = &x->partners[0];
	assert_string_equal(p->domain, "jabber.test");
	assert_int_equal(p->nadditional_domains, 2);
	assert_string_equal(p->additional_domains[0], "conference.jabber.test");
	assert_string_equal(p->additional_domains[1], "j.test");
	assert_null(p->additional_domains[2]);
	assert_int_equal(p->type, CFG_XMPP_FEDERATED);
	assert_int_equal(p->tls, CFG_XMPP_OPTIONAL);
	assert_int_equal(p->sasl, CFG_XMPP_NOT_SUPPORTED);
	assert_int_equal(p->dialback, 1);
	assert_int_equal(p->keepalive, 0);
	assert_int_equal(p->connection_limit, 1000);
	assert_string_equal(p->server.fqdn, "xmpp.jabber.test");
	assert_string_equal(p->server.address, "127.0.0.4");
	assert_int_equal(p->server.port, 5299);
	assert_addr(&p->server.addr, "127.0.0.4", 5299);
	assert_string_equal(p->comment, "Prosody");

	/* Names compared case-insensitively, as Lync's cmdlets do. */
	p = &x->partners[1];
	assert_string_equal(p->domain, "chat.test");
	assert_int_equal(p->nadditional_domains, 0);
	assert_int_equal(p->type, CFG_XMPP_PUBLIC_VERIFIED);
	assert_int_equal(p->tls, CFG_XMPP_REQUIRED);
	assert_int_equal(p->sasl, CFG_XMPP_OPTIONAL);
	assert_int_equal(p->dialback, 0);
	assert_int_equal(p->connection_limit, 1);
	/* A server name without an address: found by DNS when used, on 5269. */
	assert_string_equal(p->server.fqdn, "xmpp.chat.test");
	assert_string_equal(p->server.address, "");
	assert_int_equal(p->server.port, 5269);

	/* Lync's defaults. */
	p = &x->partners[2];
	assert_string_equal(p->domain, "im.test");
	assert_int_equal(p->nadditional_domains, 0);
	assert_int_equal(p->type, CFG_XMPP_PUBLIC_UNVERIFIED);
	assert_int_equal(p->tls, CFG_XMPP_REQUIRED);
	assert_int_equal(p->sasl, CFG_XMPP_REQUIRED);
	assert_int_equal(p->dialback, 1);
	assert_int_equal(p->keepalive, 1);
	assert_int_equal(p->connection_limit, 10);
	assert_null(p->server.fqdn);
	assert_string_equal(p->server.address, "");
	assert_int_equal(p->server.port, 5269);
	assert_string_equal(p->comment, "");
	cfg_free(cfg);
}

static void test_err_xmpp_section(void **state)
{
	load_fails(NODE TLS INTERNAL EXTERNAL "\nxmpp_partners = (\n  { domain = \"jabber.test\"; }\n);\n",
	           "xmpp_partners", "needs the 'xmpp' section");
	load_fails(NODE TLS INTERNAL EXTERNAL "xmpp_partners = ( );\n", "xmpp_partners", "'xmpp' section");
	load_fails(NODE TLS INTERNAL EXTERNAL "xmpp = {\n  max_stanza_kb = 64;\n};\n", "xmpp = {",
	           "'listen' must be a non-empty list");
	load_fails(NODE TLS INTERNAL EXTERNAL "xmpp = {\n  listen = ( );\n};\n", "listen = ( )",
	           "non-empty list");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "xmpp = {\n  listen = ( { address = \"127.0.0.1\";\n    port = 5269; transport = \"tls\"; } );\n};\n",
	           "port = 5269; transport", "unknown setting 'transport'");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "xmpp = {\n  listen = ( { address = \"127.0.0.1\"; port = 5269; } );\n  dialback = true;\n};\n",
	           "dialback = true", "unknown setting 'dialback'");
	load_fails(NODE TLS INTERNAL EXTERNAL "xmpp = [ 5269 ];\n", "xmpp = [", "must be a group");
}

static void test_err_xmpp_domains(void **state)
{
	/* The line of the element at fault. */
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "xmpp = {\n  listen = ( { address = \"127.0.0.1\"; port = 5269; } );\n"
	           "  domains = [ \"contoso.test\",\n                \"jabber.contoso.test\" ];\n};\n",
	           "\"jabber.contoso.test\"", "not one of node.sip_domains");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "xmpp = {\n  listen = ( { address = \"127.0.0.1\"; port = 5269; } );\n"
	           "  domains = [ \"contoso..test\" ];\n};\n",
	           "contoso..test", "not a valid domain");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "xmpp = {\n  listen = ( { address = \"127.0.0.1\"; port = 5269; } );\n"
	           "  domains = [ \"contoso.test\",\n    \"CONTOSO.test\" ];\n};\n",
	           "CONTOSO.test", "listed twice");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "xmpp = {\n  listen = ( { address = \"127.0.0.1\"; port = 5269; } );\n"
	           "  domains = [ ];\n};\n",
	           "domains = [ ]", "must not be empty");
}

static void test_err_xmpp_values(void **state)
{
	static const struct {
		const char *setting, *mention;
	} bad[] = {
		{ "dialback_secret = \"0123456789abcde\";", "at least 16 characters" },
		{ "dialback_secret = \"\";", "must not be empty" },
		{ "max_stanza_kb = 0;", "out of range 1-10240" },
		{ "max_stanza_kb = 10241;", "out of range 1-10240" },
		{ "keepalive_s = 3601;", "out of range 0-3600" },
		{ "idle_timeout_s = 86401;", "out of range 0-86400" },
		{ "idle_timeout_s = -1;", "out of range 0-86400" },
		{ "cert_file = 5;", "must be a string" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		char text[1024];
		snprintf(text, sizeof(text), "%s%s%s%s"
		         "xmpp = {\n  listen = ( { address = \"127.0.0.1\"; port = 5269; } );\n  %s\n};\n",
		         NODE, TLS, INTERNAL, EXTERNAL, bad[i].setting);
		load_fails(text, bad[i].setting, bad[i].mention);
	}
}

static void test_err_xmpp_partner_values(void **state)
{
	load_fails(BASE_XMPP "xmpp_partners = (\n  { comment = \"no domain\"; }\n);\n",
	           "no domain", "'domain' is required");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber\"; }\n);\n",
	           "\"jabber\"", "not a valid domain");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    additional_domains = [ \"a.test\",\n      \"-b.test\" ]; }\n);\n",
	           "-b.test", "not a valid domain");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    partner_type = \"Trusted\"; }\n);\n",
	           "Trusted", "(PublicUnverified, PublicVerified or Federated)");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    tls_negotiation = \"Sometimes\"; }\n);\n",
	           "Sometimes", "(Required, Optional or NotSupported)");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    sasl_negotiation = \"Never\"; }\n);\n",
	           "Never", "unknown sasl_negotiation");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    support_dialback = \"yes\"; }\n);\n",
	           "\"yes\"", "true or false");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    connection_limit = 0; }\n);\n",
	           "connection_limit", "out of range 1-1000");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    connection_limit = 1001; }\n);\n",
	           "connection_limit", "out of range 1-1000");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    enable_keep_alive = true; }\n);\n",
	           "enable_keep_alive", "unknown setting");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\"; address = \"127.0.0.4\"; }\n);\n",
	           "jabber.test", "need 'proxy_fqdn'");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    proxy_fqdn = \"sip.contoso.test\"; }\n);\n",
	           "proxy_fqdn", "our own pool_fqdn");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\"; proxy_fqdn = \"x.jabber.test\";\n"
	           "    address = \"xmpp.jabber.test\"; }\n);\n",
	           "address = \"xmpp.jabber.test\"", "not a numeric");
	load_fails(BASE_XMPP "xmpp_partners = { domain = \"jabber.test\"; };\n",
	           "xmpp_partners", "must be a list");
}

static void test_err_xmpp_partner_twice(void **state)
{
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\"; },\n"
	           "  { domain = \"Jabber.Test\"; }\n);\n",
	           "Jabber.Test", "listed twice");
	/* An additional domain is a domain like the others, in either order. */
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    additional_domains = [ \"muc.jabber.test\" ]; },\n"
	           "  { domain = \"muc.jabber.test\"; }\n);\n",
	           "{ domain = \"muc.jabber.test\"", "first for partner 'jabber.test'");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\"; },\n"
	           "  { domain = \"chat.test\";\n    additional_domains = [ \"jabber.test\" ]; }\n);\n",
	           "[ \"jabber.test\" ]", "listed twice");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    additional_domains = [ \"muc.jabber.test\",\n      \"MUC.jabber.test\" ]; }\n);\n",
	           "MUC.jabber.test", "listed twice");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    additional_domains = [ \"jabber.test\" ]; }\n);\n",
	           "[ \"jabber.test\" ]", "listed twice");
}

/* Every domain has one meaning: XMPP partners are not ours, nor SIP partners, blocked or providers'. */
static void test_err_xmpp_partner_claimed(void **state)
{
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"contoso.test\"; }\n);\n",
	           "\"contoso.test\"; }", "also one of node.sip_domains");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "allowed_domains = ( { domain = \"fabrikam.test\"; } );\n" XMPP
	           "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    additional_domains = [ \"fabrikam.test\" ]; }\n);\n",
	           "additional_domains", "also an allowed domain");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "blocked_domains = ( { domain = \"spam.test\"; } );\n" XMPP
	           "xmpp_partners = (\n  { comment = \"x\";\n    domain = \"spam.test\"; }\n);\n",
	           "    domain = \"spam.test\"", "also a blocked domain");
	load_fails(NODE TLS INTERNAL EXTERNAL
	           "public_providers = ( { identity = \"P\"; proxy_fqdn = \"fed.p.test\";\n"
	           "                       domains = [ \"p.test\" ]; } );\n" XMPP
	           "xmpp_partners = (\n  { comment = \"x\";\n    domain = \"P.test\"; }\n);\n",
	           "\"P.test\"", "also a provider's domain");
}

/* A partner that nothing could authenticate: the line of the setting that makes it so. */
static void test_err_xmpp_partner_unauthenticated(void **state)
{
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\";\n"
	           "    tls_negotiation = \"NotSupported\"; }\n);\n",
	           "tls_negotiation", "needs TLS");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\"; sasl_negotiation = \"Required\";\n"
	           "    tls_negotiation = \"notsupported\"; }\n);\n",
	           "tls_negotiation", "needs TLS");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\"; sasl_negotiation = \"NotSupported\";\n"
	           "    support_dialback = false; }\n);\n",
	           "support_dialback", "nothing would authenticate");
	load_fails(BASE_XMPP "xmpp_partners = (\n  { domain = \"jabber.test\"; tls_negotiation = \"NotSupported\";\n"
	           "    sasl_negotiation = \"Optional\";\n    support_dialback = false; }\n);\n",
	           "support_dialback", "nothing would authenticate");
	/* Each alone is fine: dialback without TLS, SASL without dialback. */
	cfg_free(load_ok(BASE_XMPP "xmpp_partners = (\n"
	                 "  { domain = \"a.test\"; tls_negotiation = \"NotSupported\"; sasl_negotiation = \"NotSupported\"; },\n"
	                 "  { domain = \"b.test\"; support_dialback = false; }\n);\n"));
}

/* A temporary file that exists (for cfg_check_files), named into path. */
static void make_file(char *path)
{
	strcpy(path, "/tmp/test_cfg_file_XXXXXX");
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	close(fd);
}

static void test_xmpp_check_files(void **state)
{
	char ca[32], cert[32], key[32], xcert[32], text[2048], err[512] = "", want[128];
	struct tmpconf t;
	struct edge_cfg *cfg = NULL;

	make_file(ca);
	make_file(cert);
	make_file(key);
	make_file(xcert);
	/* The defaults are the tls files. */
	snprintf(text, sizeof(text), NODE "tls = { ca_file = \"%s\"; cert_file = \"%s\"; key_file = \"%s\"; };\n"
	         INTERNAL EXTERNAL XMPP, ca, cert, key);
	cfg = load_ok(text);
	assert_string_equal(cfg->xmpp->cert_file, cert);
	assert_int_equal(cfg_check_files(cfg, err, sizeof(err)), 0);
	cfg_free(cfg);

	snprintf(text, sizeof(text), NODE "tls = { ca_file = \"%s\"; cert_file = \"%s\"; key_file = \"%s\"; };\n"
	         INTERNAL EXTERNAL "xmpp = {\n  listen = ( { address = \"127.0.0.1\"; port = 5269; } );\n"
	         "  cert_file = \"%s\";\n  key_file = \"/nonexistent/xmpp.key\";\n};\n", ca, cert, key, xcert);
	write_conf(&t, text);
	cfg = NULL;
	if (cfg_load(t.path, &cfg, err, sizeof(err)) != 0)
		fail_msg("cfg_load: %s", err);
	assert_int_equal(cfg_check_files(cfg, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:%u: cannot read xmpp.key_file '/nonexistent/xmpp.key'", t.path,
	         line_of(text, "/nonexistent/xmpp.key"));
	if (strncmp(err, want, strlen(want)) != 0)
		fail_msg("error \"%s\" does not start with \"%s\"", err, want);
	cfg_free(cfg);
	unlink(t.path);

	/* And without the xmpp section, nothing more is checked. */
	cfg_free(NULL);
	unlink(ca);
	unlink(cert);
	unlink(key);
	unlink(xcert);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_default),
		cmocka_unit_test(test_default_is_shipped_file),
		cmocka_unit_test(test_defaults_when_absent),
		cmocka_unit_test(test_values_read),
		cmocka_unit_test(test_owns_source),
		cmocka_unit_test(test_missing_file),
		cmocka_unit_test(test_err_syntax),
		cmocka_unit_test(test_err_unknown_section),
		cmocka_unit_test(test_err_port_range),
		cmocka_unit_test(test_err_transport),
		cmocka_unit_test(test_err_external_transport),
		cmocka_unit_test(test_err_allowed_domain_twice),
		cmocka_unit_test(test_err_allowed_domain_ours),
		cmocka_unit_test(test_err_blocked_and_allowed),
		cmocka_unit_test(test_err_provider_domain_taken),
		cmocka_unit_test(test_err_proxy_fqdn_is_ours),
		cmocka_unit_test(test_err_bad_names),
		cmocka_unit_test(test_err_access_edge),
		cmocka_unit_test(test_err_section_not_a_group),
		cmocka_unit_test(test_err_node_names),
		cmocka_unit_test(test_err_missing_pool_fqdn),
		cmocka_unit_test(test_err_listen_address),
		cmocka_unit_test(test_err_max_message_kb),
		cmocka_unit_test(test_err_log_level),
		cmocka_unit_test(test_err_limits),
		cmocka_unit_test(test_xmpp_defaults),
		cmocka_unit_test(test_xmpp_values_read),
		cmocka_unit_test(test_err_xmpp_section),
		cmocka_unit_test(test_err_xmpp_domains),
		cmocka_unit_test(test_err_xmpp_values),
		cmocka_unit_test(test_err_xmpp_partner_values),
		cmocka_unit_test(test_err_xmpp_partner_twice),
		cmocka_unit_test(test_err_xmpp_partner_claimed),
		cmocka_unit_test(test_err_xmpp_partner_unauthenticated),
		cmocka_unit_test(test_xmpp_check_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
