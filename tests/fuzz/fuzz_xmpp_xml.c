/*
 * libFuzzer driver for edge/xmpp_xml.c. The first byte says where to cut the
 * rest in two reads; small limits. Every stanza is written into a stream of
 * its own and parsed again by a fresh parser, which must give the same tree
 * as a clone of it. <success/> stops the parser, which is reset and takes
 * the rest, as on SASL. A stream error must be writable as it was given.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "xmpp_xml.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct ctx {
	const char *ns;                      /* the stream's content namespace */
	struct xmpp_xml_elem *want;          /* the re-parse: the tree to get back */
	int got;
};

static int opened(void *arg, const struct xmpp_xml_header *h)
{
	((struct ctx *)arg)->ns = strcmp(h->content_ns, XMPP_XML_NS_CLIENT) ? XMPP_XML_NS_SERVER
	                                                                    : XMPP_XML_NS_CLIENT;
	return 0;
}

static int same(void *arg, struct xmpp_xml_elem *el)
{
	struct ctx *c = arg;

	if (c->got++ || !xmpp_xml_equal(el, c->want))
		abort();
	return 0;
}

static int stanza(void *arg, struct xmpp_xml_elem *el)
{
	/* the output may outgrow the input limits: escapes, declarations */
	static const struct xmpp_xml_limits big = { 1 << 20, 1 << 16, 1 << 20, 64, 1024, 1 << 16 };
	static const struct xmpp_xml_cbs cbs = { NULL, same, NULL, NULL };
	struct ctx *c = arg, r = { NULL, xmpp_xml_clone(el), 0 };
	struct xmpp_xml_header_out h = { .version = "1.0", .content_ns = c->ns, .dialback = 1 };
	struct xmpp_xml_ctx wc = { c->ns, 1 };
	struct xmpp_xml_buf b = { 0 };
	struct xmpp_xml_parser *p = xmpp_xml_parser_new(&big, &cbs, &r);

	if (!p || !r.want || !xmpp_xml_text(el, NULL) || xmpp_xml_write_header(&b, &h) ||
	    xmpp_xml_write_elem(&b, el, &wc) || xmpp_xml_write_close(&b) ||
	    xmpp_xml_feed(p, b.data, b.len, NULL) != XMPP_XML_OK || r.got != 1)
		abort();
	xmpp_xml_parser_free(p);
	xmpp_xml_free(r.want);
	xmpp_xml_buf_free(&b);
	return strcmp(el->name, "success") == 0;
}

/* Feeds buf, resetting after each stop and going on with the rest. */
static int feed(struct xmpp_xml_parser *p, const uint8_t *buf, size_t len)
{
	size_t used;
	int rc;

	while ((rc = xmpp_xml_feed(p, buf, len, &used)) == XMPP_XML_STOPPED) {
		if (used > len || xmpp_xml_reset(p) != 0)
			abort();
		buf += used;
		len -= used;
	}
	return rc;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct xmpp_xml_limits small = { 2048, 512, 512, 8, 16, 64 };
	static const struct xmpp_xml_cbs cbs = { opened, stanza, NULL, NULL };
	struct ctx c = { XMPP_XML_NS_SERVER, NULL, 0 };
	struct xmpp_xml_buf b = { 0 };
	struct xmpp_xml_parser *p;
	const char *text;
	size_t cut;

	if (size == 0)
		return 0;
	cut = 1 + (size_t)data[0] * (size - 1) / 255;
	if (!(p = xmpp_xml_parser_new(&small, &cbs, &c)))
		abort();
	if (feed(p, data + 1, cut - 1) == XMPP_XML_OK)
		feed(p, data + cut, size - cut);
	if (xmpp_xml_write_error(&b, xmpp_xml_error(p, &text), text) != 0)
		abort();
	xmpp_xml_buf_free(&b);
	xmpp_xml_parser_free(p);
	return 0;
}
