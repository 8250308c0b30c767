/*
 * libFuzzer driver for edge/xmpp_presence.c: a PIDF document off the wire
 * becomes an XMPP presence, which must serialize back into PIDF.
 */
#include <stdint.h>
#include <stdlib.h>

#include "xmpp_presence.h"
#include "xmpp_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct xmpp_xml_elem *pres = NULL;
	if (xmpp_presence_from_pidf("sip:alice@contoso.test", "sip:bob@fabrikam.test",
	                            (const char *)data, size, &pres) != 0) {
		if (pres)
			abort(); /* a failure leaves nothing behind */
		return 0;
	}
	/* What the parser accepted, the gateway must be able to send back. */
	struct xmpp_presence_pidf out = { 0 };
	int rc = xmpp_presence_to_pidf(pres, &out);
	xmpp_presence_pidf_free(&out);
	xmpp_xml_free(pres);
	if (rc != 0 && rc != XMPP_PRESENCE_ERR_CHAR)
		abort();
	return 0;
}
