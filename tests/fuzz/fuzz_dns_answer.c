/* libFuzzer driver for edge/dns.c: the SRV answer parser, then the RFC 2782 order of what it kept. */
#include <ares.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "dns_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct dns_srv_rrset rr;
	struct dns_srv_target in[DNS_MAX_SRV_TARGETS], out[DNS_MAX_SRV_TARGETS];
	uint64_t rng = size;
	char *q = NULL;
	long qlen;
	int rc;

	/* the question's name, so that real answers reach their records */
	if (size > 12 && size <= 65535)
		ares_expand_name(data + 12, data, (int)size, &q, &qlen);
	rc = dns_parse_srv_answer(data, size, q ? q : "_sipfederationtls._tcp.fabrikam.test", &rr);
	ares_free_string(q);
	if (rc != DNS_OK) {
		if (rr.n != 0 || (rc == DNS_ENOTFOUND && rr.ttl > 30) ||
		    (rc != DNS_ENOTFOUND && rc != DNS_ESERVFAIL && rc != DNS_ENOMEM))
			abort();
		return 0;
	}
	if (rr.n < 1 || rr.n > DNS_MAX_SRV_TARGETS)
		abort();
	for (unsigned i = 0; i < rr.n; i++) {
		size_t len = strlen(rr.rr[i].name);
		if (len == 0 || len > 253 || strspn(rr.rr[i].name, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") != len)
			abort();
		in[i] = (struct dns_srv_target){ rr.rr[i].name, rr.rr[i].port, rr.rr[i].priority, rr.rr[i].weight };
	}
	dns_srv_order(&rng, in, rr.n, out);
	for (unsigned i = 0, seen; i < rr.n; i++) {
		if (i > 0 && out[i - 1].priority > out[i].priority)
			abort();
		for (seen = 0; seen < rr.n && out[seen].name != in[i].name; seen++)
			;
		if (seen == rr.n) /* every record is in the order once: names are distinct pointers */
			abort();
	}
	return 0;
}
