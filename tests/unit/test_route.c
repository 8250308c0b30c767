/* Unit tests for edge/rt_static.c: the static federation routing rules. */
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

#include "route.h"

static const struct sip_limits LIM = { 65536, 4096, 64 };

static const char CONF[] =
	"node = { pool_fqdn = \"sip.contoso.test\"; sip_domains = [ \"contoso.test\" ]; };\n"
	"tls = { ca_file = \"ca.pem\"; cert_file = \"edge.pem\"; key_file = \"edge.key\"; };\n"
	"internal = {\n"
	"  listen = ( { address = \"127.0.0.1\"; port = 5060; } );\n"
	"  next_hop = { host = \"127.0.0.1\"; port = 5070; transport = \"tcp\"; };\n"
	"};\n"
	"external = { listen = ( { address = \"127.0.0.1\"; port = 5061; } ); };\n"
	"partners = (\n"
	"  { domains = [ \"fabrikam.test\" ]; fqdn = \"sip.fabrikam.test\"; address = \"127.0.0.2\"; },\n"
	"  { domains = [ \"northwind.test\", \"northwind.example\" ]; fqdn = \"sip.northwind.test\";\n"
	"    address = \"127.0.0.3\"; port = 5062; }\n"
	");\n"
	"limits = { outgoing_tls_count = 3; };\n";

struct fixture {
	struct edge_cfg *cfg;
	struct conn_limits internal_lim, external_lim;
	struct router *rt;
};

static int setup(void **state)
{
	static char path[] = "/tmp/test_route_XXXXXX"; /* cfg->source points here */
	char err[256];
	struct fixture *fx = calloc(1, sizeof(*fx));
	int fd = mkstemp(path);

	if (!fx || fd < 0)
		return -1;
	int ok = write(fd, CONF, sizeof(CONF) - 1) == (ssize_t)(sizeof(CONF) - 1);
	close(fd);
	if (ok && cfg_load(path, &fx->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "cfg_load: %s\n", err);
		ok = 0;
	}
	unlink(path);
	if (ok)
		fx->rt = rt_static_new(fx->cfg, NULL, &fx->internal_lim, &fx->external_lim);
	if (!fx->rt) {
		cfg_free(fx->cfg);
		free(fx);
		return -1;
	}
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	rt_destroy(fx->rt);
	cfg_free(fx->cfg);
	free(fx);
	return 0;
}

/* What a test request looks like; NULL fields take the defaults. */
struct req {
	enum conn_side side;
	const char *from;              /* sip:alice@contoso.test */
	const char *ruri;              /* sip:bob@fabrikam.test */
	const char *to_tag;            /* none */
	const char *route;             /* a Route URI that gives the target, or none */
	const char *const *peer_names;
	unsigned npeer_names;
};

/* Builds the message, fills an rt_request as the proxy does, and decides. */
static void decide(void **state, struct req r, struct rt_decision *d)
{
	struct fixture *fx = *state;
	char text[2048];
	const char *ruri = r.ruri ? r.ruri : "sip:bob@fabrikam.test";
	int n = snprintf(text, sizeof(text),
	                 "MESSAGE %s SIP/2.0\r\n"
	                 "Via: SIP/2.0/TLS 192.0.2.7:5061;branch=z9hG4bKr1\r\n"
	                 "%s%s%s"
	                 "Max-Forwards: 70\r\n"
	                 "From: <%s>;tag=f1\r\n"
	                 "To: <%s>%s%s\r\n"
	                 "Call-ID: r1@test\r\n"
	                 "CSeq: 1 MESSAGE\r\n"
	                 "Content-Length: 0\r\n\r\n",
	                 ruri,
	                 r.route ? "Route: <" : "", r.route ? r.route : "", r.route ? ">\r\n" : "",
	                 r.from ? r.from : "sip:alice@contoso.test",
	                 ruri, r.to_tag ? ";tag=" : "", r.to_tag ? r.to_tag : "");
	assert_true(n > 0 && (size_t)n < sizeof(text));

	struct sip_msg *m = NULL;
	assert_int_equal(sip_msg_parse(text, (size_t)n, &LIM, &m), SIP_OK);
	struct sip_uri u;
	if (r.route)
		assert_int_equal(sip_uri_parse((struct sip_str){ r.route, strlen(r.route) }, &u), 0);
	else
		assert_int_equal(sip_uri_parse(m->ruri, &u), 0);
	struct rt_request rq = {
		.msg = m,
		.from_side = r.side,
		.peer_names = r.peer_names,
		.npeer_names = r.npeer_names,
		.target_host = u.host,
		.target_from_route = r.route != NULL,
	};
	memset(d, 0x5a, sizeof(*d));
	rt_decide(fx->rt, &rq, d);
	sip_msg_free(m);
}

static void assert_addr(const struct conn_dest *dest, const char *ip, uint16_t port)
{
	const struct sockaddr_in *sin = (const struct sockaddr_in *)(const void *)dest->addr;
	char got[INET_ADDRSTRLEN];

	assert_non_null(dest->addr);
	assert_int_equal(dest->addrlen, sizeof(struct sockaddr_in));
	assert_int_equal(sin->sin_family, AF_INET);
	assert_non_null(inet_ntop(AF_INET, &sin->sin_addr, got, sizeof(got)));
	assert_string_equal(got, ip);
	assert_int_equal(ntohs(sin->sin_port), port);
}

static void assert_to_partner(void **state, const struct rt_decision *d, const char *fqdn,
                              const char *ip, uint16_t port)
{
	struct fixture *fx = *state;

	assert_int_equal(d->action, RT_FORWARD);
	assert_string_equal(d->dest.name, fqdn);
	assert_int_equal(d->dest.side, CONN_EXTERNAL);
	assert_int_equal(d->dest.max_conns, fx->cfg->outgoing_tls_count);
	assert_int_equal(d->dest.max_conns, 3);
	assert_ptr_equal(d->dest.lim, &fx->external_lim);
	assert_null(d->dest.tls); /* the router copies the client context it was given */
	assert_addr(&d->dest, ip, port);
}

static void assert_to_next_hop(void **state, const struct rt_decision *d)
{
	struct fixture *fx = *state;

	assert_int_equal(d->action, RT_FORWARD);
	assert_string_equal(d->dest.name, "127.0.0.1");
	assert_int_equal(d->dest.side, CONN_INTERNAL);
	assert_ptr_equal(d->dest.lim, &fx->internal_lim);
	assert_null(d->dest.tls); /* transport tcp */
	assert_addr(&d->dest, "127.0.0.1", 5070);
}

static void assert_reject(const struct rt_decision *d, unsigned status, const char *mention)
{
	if (d->action != RT_REJECT)
		fail_msg("forwarded to %s, want a %u", d->dest.name, status);
	assert_int_equal(d->status, status);
	assert_non_null(memchr(d->reason, '\0', sizeof(d->reason)));
	assert_true(strlen(d->reason) > 0);
	if (mention && !strstr(d->reason, mention))
		fail_msg("reason \"%s\" does not mention \"%s\"", d->reason, mention);
}

static void test_out_to_partner(void **state)
{
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_INTERNAL }, &d);
	assert_to_partner(state, &d, "sip.fabrikam.test", "127.0.0.2", 5061);
	decide(state, (struct req){ .side = CONN_INTERNAL, .ruri = "sip:carol@northwind.example" }, &d);
	assert_to_partner(state, &d, "sip.northwind.test", "127.0.0.3", 5062);
	/* Domains compare case-insensitively, on both sides. */
	decide(state, (struct req){ .side = CONN_INTERNAL, .ruri = "sip:carol@NorthWind.Test",
	                            .from = "sip:alice@CONTOSO.test" }, &d);
	assert_to_partner(state, &d, "sip.northwind.test", "127.0.0.3", 5062);
}

static void test_out_unknown_domain(void **state)
{
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_INTERNAL, .ruri = "sip:eve@litware.test" }, &d);
	assert_reject(&d, 403, "litware.test");
}

static void test_out_sender_not_ours(void **state)
{
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_INTERNAL, .from = "sip:mallory@litware.test" }, &d);
	assert_reject(&d, 403, "litware.test");
	/* A partner's domain is not ours either. */
	decide(state, (struct req){ .side = CONN_INTERNAL, .from = "sip:bob@fabrikam.test" }, &d);
	assert_reject(&d, 403, "fabrikam.test");
}

static void test_out_own_domain(void **state)
{
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_INTERNAL, .ruri = "sip:carl@contoso.test" }, &d);
	assert_reject(&d, 404, "contoso.test");
}

static void test_out_route(void **state)
{
	struct rt_decision d;

	/* In-dialog: the R-URI is the partner user's contact, the Route its edge. */
	decide(state, (struct req){ .side = CONN_INTERNAL, .ruri = "sip:bob@198.51.100.9:5061",
	                            .to_tag = "t1", .route = "sip:SIP.Fabrikam.Test;lr" }, &d);
	assert_to_partner(state, &d, "sip.fabrikam.test", "127.0.0.2", 5061);
	decide(state, (struct req){ .side = CONN_INTERNAL, .ruri = "sip:bob@fabrikam.test",
	                            .route = "sip:proxy.litware.test;lr" }, &d);
	assert_reject(&d, 404, "proxy.litware.test");
}

static const char *const FABRIKAM_PEER[] = { "SIP.FABRIKAM.test" };

static void test_in_to_own_domain(void **state)
{
	static const char *const two[] = { "other.test", "sip.northwind.test" };
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:bob@fabrikam.test",
	                            .ruri = "sip:alice@contoso.test",
	                            .peer_names = FABRIKAM_PEER, .npeer_names = 1 }, &d);
	assert_to_next_hop(state, &d);
	/* Any of the certificate's names may be the partner's; any of its domains. */
	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:carol@Northwind.Example",
	                            .ruri = "sip:alice@contoso.test",
	                            .peer_names = two, .npeer_names = 2 }, &d);
	assert_to_next_hop(state, &d);
}

static void test_in_unknown_peer(void **state)
{
	static const char *const names[] = { "sip.litware.test", "mx.litware.test" };
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:eve@litware.test",
	                            .ruri = "sip:alice@contoso.test",
	                            .peer_names = names, .npeer_names = 2 }, &d);
	assert_reject(&d, 403, "sip.litware.test");
	assert_reject(&d, 403, "mx.litware.test");
	/* A partner's domain as a certificate name is not its server's name. */
	static const char *const domain[] = { "fabrikam.test" };
	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:bob@fabrikam.test",
	                            .ruri = "sip:alice@contoso.test",
	                            .peer_names = domain, .npeer_names = 1 }, &d);
	assert_reject(&d, 403, "fabrikam.test");
}

static void test_in_many_peer_names(void **state)
{
	char store[40][32];
	const char *names[40];
	struct rt_decision d;

	for (unsigned i = 0; i < 40; i++) {
		snprintf(store[i], sizeof(store[i]), "host%02u.a-rather-long-name.test", i);
		names[i] = store[i];
	}
	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:eve@litware.test",
	                            .ruri = "sip:alice@contoso.test",
	                            .peer_names = names, .npeer_names = 40 }, &d);
	assert_reject(&d, 403, "host00.a-rather-long-name.test");
}

static void test_in_no_peer_names(void **state)
{
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:bob@fabrikam.test",
	                            .ruri = "sip:alice@contoso.test" }, &d);
	assert_reject(&d, 403, NULL);
}

static void test_in_spoofed_sender(void **state)
{
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:carol@northwind.test",
	                            .ruri = "sip:alice@contoso.test",
	                            .peer_names = FABRIKAM_PEER, .npeer_names = 1 }, &d);
	assert_reject(&d, 403, "northwind.test");
	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:ceo@contoso.test",
	                            .ruri = "sip:alice@contoso.test",
	                            .peer_names = FABRIKAM_PEER, .npeer_names = 1 }, &d);
	assert_reject(&d, 403, "contoso.test");
}

static void test_in_relay_denied(void **state)
{
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:bob@fabrikam.test",
	                            .ruri = "sip:eve@litware.test",
	                            .peer_names = FABRIKAM_PEER, .npeer_names = 1 }, &d);
	assert_reject(&d, 403, "litware.test");
	/* Nor back to another partner. */
	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:bob@fabrikam.test",
	                            .ruri = "sip:carol@northwind.test",
	                            .peer_names = FABRIKAM_PEER, .npeer_names = 1 }, &d);
	assert_reject(&d, 403, "northwind.test");
}

/*
 * A pre-loaded Route does not make an initial request (no To tag) an
 * in-dialog one: the target must still be one of our domains.
 */
static void test_in_preloaded_route(void **state)
{
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:bob@fabrikam.test",
	                            .ruri = "sip:eve@litware.test", .route = "sip:proxy.litware.test;lr",
	                            .peer_names = FABRIKAM_PEER, .npeer_names = 1 }, &d);
	assert_reject(&d, 403, "litware.test");
	/* With a To tag it is in-dialog: the Route set leads inside. */
	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:bob@fabrikam.test",
	                            .ruri = "sip:alice@10.1.2.3:5060", .route = "sip:fe.contoso.test;lr",
	                            .to_tag = "t1", .peer_names = FABRIKAM_PEER, .npeer_names = 1 }, &d);
	assert_to_next_hop(state, &d);
}

static void test_in_dialog(void **state)
{
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:bob@fabrikam.test",
	                            .ruri = "sip:alice@10.1.2.3:5060;transport=tcp", .to_tag = "t1",
	                            .peer_names = FABRIKAM_PEER, .npeer_names = 1 }, &d);
	assert_to_next_hop(state, &d);
	/* In dialog or not, the sender must still be the partner's. */
	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "sip:carol@northwind.test",
	                            .ruri = "sip:alice@10.1.2.3:5060;transport=tcp", .to_tag = "t1",
	                            .peer_names = FABRIKAM_PEER, .npeer_names = 1 }, &d);
	assert_reject(&d, 403, "northwind.test");
}

static void test_from_without_sip_uri(void **state)
{
	struct rt_decision d;

	decide(state, (struct req){ .side = CONN_INTERNAL, .from = "tel:+15550100" }, &d);
	assert_reject(&d, 400, NULL);
	decide(state, (struct req){ .side = CONN_EXTERNAL, .from = "tel:+15550100",
	                            .ruri = "sip:alice@contoso.test",
	                            .peer_names = FABRIKAM_PEER, .npeer_names = 1 }, &d);
	assert_reject(&d, 400, NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_out_to_partner),
		cmocka_unit_test(test_out_unknown_domain),
		cmocka_unit_test(test_out_sender_not_ours),
		cmocka_unit_test(test_out_own_domain),
		cmocka_unit_test(test_out_route),
		cmocka_unit_test(test_in_to_own_domain),
		cmocka_unit_test(test_in_unknown_peer),
		cmocka_unit_test(test_in_many_peer_names),
		cmocka_unit_test(test_in_no_peer_names),
		cmocka_unit_test(test_in_spoofed_sender),
		cmocka_unit_test(test_in_relay_denied),
		cmocka_unit_test(test_in_preloaded_route),
		cmocka_unit_test(test_in_dialog),
		cmocka_unit_test(test_from_without_sip_uri),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
