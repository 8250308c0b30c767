/* libFuzzer driver for edge/sip_msg.c: frame, parse, write, re-parse, clone, respond. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sip_msg.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes m, parses the output and aborts unless the headers come back the same. */
static void roundtrip(const struct sip_msg *m)
{
	/* the output may outgrow the input limits: split lists take more lines */
	static const struct sip_limits big = { 1 << 20, 1 << 20, 1 << 16 };
	size_t n = sip_msg_size(m);
	char *out = malloc(n + 1);
	struct sip_msg *r = NULL;

	if (!out || sip_msg_write(m, out) != n || sip_msg_parse(out, n, &big, &r) != SIP_OK ||
	    r->nhdrs != m->nhdrs || r->body.len != m->body.len)
		abort();
	for (unsigned i = 0; i < m->nhdrs; i++)
		if (r->hdrs[i].id != m->hdrs[i].id || r->hdrs[i].value.len != m->hdrs[i].value.len ||
		    memcmp(r->hdrs[i].value.s, m->hdrs[i].value.s, m->hdrs[i].value.len))
			abort();
	sip_msg_free(r);
	free(out); out = NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct sip_limits lim = { 4096, 512, 32 };
	const char *buf = (const char *)data;
	struct sip_msg *m = NULL, *c, *r;
	size_t used = 0;

	if (sip_frame(buf, size, &lim, &used) != SIP_FRAME_MSG)
		used = size; /* the parser must cope with unframed input too */
	if (sip_msg_parse(buf, used, &lim, &m) != SIP_OK) {
		if (m && m->is_request) /* the 400 path */
			sip_msg_free(sip_msg_response(m, 400, NULL, "t"));
		sip_msg_free(m);
		return 0;
	}
	roundtrip(m);
	c = sip_msg_clone(m);
	sip_msg_free(m);
	if (c && c->is_request) {
		if (!(r = sip_msg_response(c, 180, NULL, "tag1")))
			abort();
		roundtrip(r);
		sip_msg_free(r);
	}
	sip_msg_free(c);
	return 0;
}
