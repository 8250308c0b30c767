/* libFuzzer driver for balancer/bal_dns.c: any bytes as a query, over UDP and TCP, for two zones. */
#include <arpa/inet.h>
#include <ldns/ldns.h>
#include <stdint.h>
#include <stdlib.h>

#include "bal_dns.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static struct in_addr v4[1] = { { 0x0a0012c6 } };
static const char *ns[] = { "ns1.contoso.test", "ns.example.net" };
static struct bal_cfg_zone zones[2] = {
	{ .domain = "contoso.test", .pool_name = "sip.contoso.test", .vip_name = "vip.contoso.test",
	  .vip4 = v4, .nvip4 = 1, .ns = ns, .nns = 2, .ns4 = v4, .nns4 = 1, .sip_port = 5061,
	  .sip_tls_port = 443, .xmpp_port = 5269 },
	{ .domain = "fabrikam.test", .pool_name = "sip.fabrikam.test", .ns = ns + 1, .nns = 1,
	  .sip_port = 5061 },
};
static struct bal_cfg_dns cfg = { .ttl = 5, .static_ttl = 300, .zones = zones, .nzones = 2 };
static uint8_t out[65535];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct bal_dns *d;
	char err[200];
	if (!d) {
		struct bal_ip pool[40];
		for (unsigned i = 0; i < 40; i++)
			pool[i] = (struct bal_ip){ .family = i % 2 ? AF_INET6 : AF_INET,
			                           .u.v6.s6_addr = { 0xfd, [15] = (uint8_t)i } };
		if (!(d = bal_dns_new(&cfg, 1, err, sizeof(err))) ||
		    bal_dns_set_pool(d, "contoso.test", pool, 40) < 0)
			abort();
	}
	for (int tcp = 0; tcp < 2; tcp++) {
		size_t outlen = tcp ? sizeof(out) : size % 2 ? BAL_DNS_UDP_SIZE : 512;
		size_t len = bal_dns_answer(d, data, size, tcp, out, outlen);
		ldns_pkt *a = NULL;
		if (len > outlen || (len > 0 && ldns_wire2pkt(&a, out, len) != LDNS_STATUS_OK))
			abort();
		if (a && (!ldns_pkt_qr(a) || ldns_pkt_id(a) != ldns_read_uint16(data) ||
		          (tcp && ldns_pkt_tc(a))))
			abort();
		ldns_pkt_free(a);
	}
	return 0;
}
