#include "ppv2.h"

#include <netinet/in.h>
#include <string.h>

static const uint8_t signature[12] = { 0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a,
                                       0x51, 0x55, 0x49, 0x54, 0x0a };

#define VERSION_2 0x2
#define FAM_TCP4 0x11
#define FAM_TCP6 0x21
#define ADDRS_TCP4 12 /* two IPv4 addresses, two ports */
#define ADDRS_TCP6 36 /* two IPv6 addresses, two ports */
#define TLV_HEAD 3    /* type, 16-bit length */

_Static_assert(PPV2_MAX_LEN == 536, "ppv2_strerror() names the bound");

static unsigned get16(const uint8_t *p)
{
	return (unsigned)p[0] << 8 | p[1];
}

/* The bytes of the address block that the family byte of a PROXY command needs, or -1. */
static int family_needs(uint8_t fam)
{
	return fam == FAM_TCP4 ? ADDRS_TCP4 : fam == FAM_TCP6 ? ADDRS_TCP6 : -1;
}

/* TLVs carry nothing the edge uses (ALPN, authority, CRC, ...), but they must fit. */
static int skip_tlvs(const uint8_t *p, size_t len)
{
	while (len > 0) {
		if (len < TLV_HEAD)
			return PPV2_ERR_TLV;
		size_t tlen = get16(p + 1);
		if (tlen > len - TLV_HEAD)
			return PPV2_ERR_TLV;
		p += TLV_HEAD + tlen;
		len -= TLV_HEAD + tlen;
	}
	return 0;
}

static void fill_addrs(const uint8_t *a, uint8_t fam, struct ppv2_header *out)
{
	if (fam == FAM_TCP4) {
		struct sockaddr_in s = { .sin_family = AF_INET }, d = { .sin_family = AF_INET };
		memcpy(&s.sin_addr, a, 4);
		memcpy(&d.sin_addr, a + 4, 4);
		memcpy(&s.sin_port, a + 8, 2);
		memcpy(&d.sin_port, a + 10, 2);
		memcpy(&out->src, &s, sizeof(s));
		memcpy(&out->dst, &d, sizeof(d));
		out->srclen = out->dstlen = sizeof(s);
	} else {
		struct sockaddr_in6 s = { .sin6_family = AF_INET6 }, d = { .sin6_family = AF_INET6 };
		memcpy(&s.sin6_addr, a, 16);
		memcpy(&d.sin6_addr, a + 16, 16);
		memcpy(&s.sin6_port, a + 32, 2);
		memcpy(&d.sin6_port, a + 34, 2);
		memcpy(&out->src, &s, sizeof(s));
		memcpy(&out->dst, &d, sizeof(d));
		out->srclen = out->dstlen = sizeof(s);
	}
}

/*
 * Each field is checked as soon as it is in, so that a reader waiting for
 * a header learns of garbage from its first bytes rather than at a timeout.
 */
int ppv2_parse(const uint8_t *buf, size_t len, struct ppv2_header *out)
{
	if (len == 0)
		return 0;
	size_t sig = len < sizeof(signature) ? len : sizeof(signature);
	if (memcmp(buf, signature, sig) != 0)
		return len >= 6 && memcmp(buf, "PROXY ", 6) == 0 ? PPV2_ERR_V1 : PPV2_ERR_SIGNATURE;
	if (len <= 12)
		return 0;
	if (buf[12] >> 4 != VERSION_2)
		return PPV2_ERR_VERSION;
	unsigned cmd = buf[12] & 0x0f;
	if (cmd != PPV2_LOCAL && cmd != PPV2_PROXY)
		return PPV2_ERR_COMMAND;
	if (len <= 13)
		return 0;
	/* LOCAL: the family and whatever follows are ignored (section 2.2). */
	int need = cmd == PPV2_PROXY ? family_needs(buf[13]) : 0;
	if (need < 0)
		return PPV2_ERR_FAMILY;
	if (len < PPV2_HDR_LEN)
		return 0;
	size_t body = get16(buf + 14);
	if (body > PPV2_MAX_BODY)
		return PPV2_ERR_TOO_LONG;
	if (body < (size_t)need)
		return PPV2_ERR_SHORT;
	if (len < PPV2_HDR_LEN + body)
		return 0;
	if (cmd == PPV2_PROXY) {
		int rc = skip_tlvs(buf + PPV2_HDR_LEN + need, body - (size_t)need);
		if (rc < 0)
			return rc;
	}
	memset(out, 0, sizeof(*out));
	out->command = (enum ppv2_command)cmd;
	if (cmd == PPV2_PROXY)
		fill_addrs(buf + PPV2_HDR_LEN, buf[13], out);
	return (int)(PPV2_HDR_LEN + body);
}

size_t ppv2_wanted(const uint8_t *buf, size_t len)
{
	return len < PPV2_HDR_LEN ? PPV2_HDR_LEN : PPV2_HDR_LEN + get16(buf + 14);
}

size_t ppv2_build_local(uint8_t *buf, size_t len)
{
	if (len < PPV2_HDR_LEN)
		return 0;
	memcpy(buf, signature, sizeof(signature));
	buf[12] = VERSION_2 << 4 | PPV2_LOCAL;
	buf[13] = 0;              /* AF_UNSPEC, UNSPEC: no addresses */
	buf[14] = 0;
	buf[15] = 0;
	return PPV2_HDR_LEN;
}

size_t ppv2_build(uint8_t *buf, size_t len, const struct sockaddr *src,
                  const struct sockaddr *dst)
{
	if (!src || !dst || src->sa_family != dst->sa_family)
		return 0;
	size_t body = src->sa_family == AF_INET ? ADDRS_TCP4
	            : src->sa_family == AF_INET6 ? ADDRS_TCP6 : 0;
	if (body == 0 || len < PPV2_HDR_LEN + body)
		return 0;
	uint8_t *a = buf + PPV2_HDR_LEN;
	memcpy(buf, signature, sizeof(signature));
	buf[12] = VERSION_2 << 4 | PPV2_PROXY;
	buf[13] = body == ADDRS_TCP4 ? FAM_TCP4 : FAM_TCP6;
	buf[14] = 0;
	buf[15] = (uint8_t)body;
	/* Copies, not casts: the caller's sockaddr need not be aligned for its family. */
	if (body == ADDRS_TCP4) {
		struct sockaddr_in s, d;
		memcpy(&s, src, sizeof(s));
		memcpy(&d, dst, sizeof(d));
		memcpy(a, &s.sin_addr, 4);
		memcpy(a + 4, &d.sin_addr, 4);
		memcpy(a + 8, &s.sin_port, 2);
		memcpy(a + 10, &d.sin_port, 2);
	} else {
		struct sockaddr_in6 s, d;
		memcpy(&s, src, sizeof(s));
		memcpy(&d, dst, sizeof(d));
		memcpy(a, &s.sin6_addr, 16);
		memcpy(a + 16, &d.sin6_addr, 16);
		memcpy(a + 32, &s.sin6_port, 2);
		memcpy(a + 34, &d.sin6_port, 2);
	}
	return PPV2_HDR_LEN + body;
}

const char *ppv2_strerror(int err)
{
	switch (err) {
	case 0:
		return "incomplete PROXY header";
	case PPV2_ERR_SIGNATURE:
		return "not a PROXY protocol v2 signature";
	case PPV2_ERR_V1:
		return "a PROXY protocol v1 (text) header: only v2 is accepted";
	case PPV2_ERR_VERSION:
		return "PROXY protocol version other than 2";
	case PPV2_ERR_COMMAND:
		return "PROXY header command neither LOCAL nor PROXY";
	case PPV2_ERR_FAMILY:
		return "PROXY header for another protocol than TCP over IPv4 or IPv6";
	case PPV2_ERR_SHORT:
		return "PROXY header address block shorter than its family needs";
	case PPV2_ERR_TOO_LONG:
		return "PROXY header longer than 536 bytes";
	case PPV2_ERR_TLV:
		return "PROXY header TLV runs past the header's end";
	}
	return "unknown PROXY header error";
}
