/*
 * ppv2: the PROXY protocol version 2 header (HAProxy's proxy-protocol.txt,
 * section 2.2), with which the balancer tells an edge whom a forwarded
 * connection really comes from. Pure functions on bytes, no sockets:
 * balancerd builds headers, edged parses them.
 *
 * A header is the 12-byte signature \r\n\r\n\0\r\nQUIT\n, a version and
 * command byte (0x21 PROXY, 0x20 LOCAL), a family and protocol byte (0x11
 * TCP over IPv4, 0x21 TCP over IPv6), a 16-bit big-endian length, then that
 * many bytes: the addresses and ports, and optional TLVs. Only TCP over IPv4
 * or IPv6 is accepted: a balancer of SIP/TLS forwards nothing else.
 */
#ifndef COMMON_PPV2_H
#define COMMON_PPV2_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define PPV2_HDR_LEN 16          /* signature, version/command, family, length */
#define PPV2_MAX_BODY 520        /* addresses and TLVs: a bound well above any real header */
#define PPV2_MAX_LEN (PPV2_HDR_LEN + PPV2_MAX_BODY)

enum ppv2_error {
	PPV2_ERR_SIGNATURE = -1, /* not the v2 signature */
	PPV2_ERR_V1 = -2,        /* a version 1 (text) header */
	PPV2_ERR_VERSION = -3,   /* the signature, then a version other than 2 */
	PPV2_ERR_COMMAND = -4,   /* neither LOCAL nor PROXY */
	PPV2_ERR_FAMILY = -5,    /* PROXY for something else than TCP over IPv4 or IPv6 */
	PPV2_ERR_SHORT = -6,     /* the length leaves no room for the family's addresses */
	PPV2_ERR_TOO_LONG = -7,  /* the length is over PPV2_MAX_BODY */
	PPV2_ERR_TLV = -8,       /* a TLV runs past the end of the header */
};

enum ppv2_command {
	PPV2_LOCAL = 0, /* the balancer's own connection (a health check): no addresses */
	PPV2_PROXY = 1, /* relayed for src */
};

struct ppv2_header {
	enum ppv2_command command;
	/* PROXY: the client (src) and the address it connected to (dst), ports
	 * included. LOCAL: srclen and dstlen are 0. */
	struct sockaddr_storage src;
	socklen_t srclen;
	struct sockaddr_storage dst;
	socklen_t dstlen;
};

/*
 * Parses the header at the start of buf, reading no byte past len. Returns
 * the header's total length (> 0) when it is complete and valid, with *out
 * filled; 0 when buf is a prefix of a valid header (more bytes are needed);
 * or a negative enum ppv2_error as soon as the bytes in buf show that no
 * valid header can follow. TLVs are checked to fit and skipped.
 */
int ppv2_parse(const uint8_t *buf, size_t len, struct ppv2_header *out);

/*
 * How long the header that starts with buf[0..len) is, as far as buf tells:
 * PPV2_HDR_LEN until its length field is in, then the whole header's
 * length. A reader that asks for at most ppv2_wanted() - len more bytes
 * never takes a byte that follows the header. (Check ppv2_parse() first:
 * the length field of an invalid header may say up to 65551.)
 */
size_t ppv2_wanted(const uint8_t *buf, size_t len);

/*
 * Writes a PROXY header for TCP from src to dst (both AF_INET or both
 * AF_INET6, ports included, no TLVs) into buf. Returns its length, or 0
 * when it does not fit in len or the families differ or are neither.
 */
size_t ppv2_build(uint8_t *buf, size_t len, const struct sockaddr *src,
                  const struct sockaddr *dst);

/*
 * Writes a LOCAL header (the balancer speaking for itself: its health
 * checks) into buf. Returns PPV2_HDR_LEN, or 0 when it does not fit.
 */
size_t ppv2_build_local(uint8_t *buf, size_t len);

/* A static text for an enum ppv2_error. */
const char *ppv2_strerror(int err);

#endif
