#include "dns_msg.h"

#include <ares.h>
#include <string.h>

#define CNAME_HOPS 8

enum { RCODE_NOERROR = 0, RCODE_NXDOMAIN = 3 };

/* ---- small helpers ---- */

static uint32_t min32(uint32_t a, uint32_t b)
{
	return a < b ? a : b;
}

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* DNS names compare without regard to ASCII case (RFC 4343), whatever the locale. */
int dns_name_eq(const char *a, const char *b)
{
	for (; *a && lower((unsigned char)*a) == lower((unsigned char)*b); a++, b++)
		;
	return *a == *b;
}

/* Copies name without its trailing dot into key (DNS_NAME_MAX + 1 bytes).
 * Returns 0, or -1 when it is empty or too long. */
int dns_name_key(char *key, const char *name)
{
	size_t len = strlen(name);
	if (len > 0 && name[len - 1] == '.')
		len--;
	if (len == 0 || len > DNS_NAME_MAX)
		return -1;
	memcpy(key, name, len);
	key[len] = '\0';
	return 0;
}

/* Letters, digits, '-' and '_' in labels of 1 to 63: what a TLS name check
 * and a SIP URI can carry. ares_expand_name() escapes anything else. */
static int is_hostname(const char *s)
{
	size_t label = 0, total = 0;
	for (; *s; s++, total++) {
		unsigned char c = (unsigned char)*s;
		if (c == '.') {
			if (label == 0)
				return 0;
			label = 0;
			continue;
		}
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '-' || c == '_'))
			return 0;
		if (++label > 63)
			return 0;
	}
	return label > 0 && total <= 253;
}

/* ---- PRNG: splitmix64, enough to spread load, and repeatable from a seed ---- */

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* Uniform in [0, bound), without a bare modulo's bias. */
static uint32_t rng_below(uint64_t *s, uint32_t bound)
{
	uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
	uint64_t x;
	do
		x = rng_next(s);
	while (x >= limit);
	return (uint32_t)(x % bound);
}

/* ---- DNS messages ---- */

struct cursor {
	const unsigned char *buf;
	size_t len, off;              /* off <= len */
};

static uint16_t rd16(const unsigned char *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

static int get16(struct cursor *c, uint16_t *v)
{
	if (c->len - c->off < 2)
		return -1;
	*v = rd16(c->buf + c->off);
	c->off += 2;
	return 0;
}

static int get32(struct cursor *c, uint32_t *v)
{
	const unsigned char *p = c->buf + c->off;
	if (c->len - c->off < 4)
		return -1;
	*v = (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
	c->off += 4;
	return 0;
}

/* Steps over an encoded name; a compression pointer ends it and is not followed. */
static int skip_name(struct cursor *c)
{
	while (c->off < c->len) {
		unsigned char l = c->buf[c->off];
		if (l == 0) {
			c->off++;
			return 0;
		}
		if ((l & 0xc0) == 0xc0) {
			if (c->len - c->off < 2)
				return -1;
			c->off += 2;
			return 0;
		}
		if (l & 0xc0)
			return -1; /* the obsolete extended label types */
		if (c->len - c->off < (size_t)l + 1)
			return -1;
		c->off += (size_t)l + 1;
	}
	return -1;
}

enum { NAME_OK = 0, NAME_LONG = 1, NAME_BAD = -1, NAME_NOMEM = -2 };

/*
 * Expands the name at off (ares_expand_name() follows compression) into out,
 * DNS_NAME_MAX + 1 bytes, and its encoded length into *enclen. A name that
 * does not fit is NAME_LONG, out empty.
 */
static int expand_at(const unsigned char *buf, size_t len, size_t off, char *out, size_t *enclen)
{
	char *s = NULL;
	long n = 0;
	int rc;

	out[0] = '\0';
	if (off >= len)
		return NAME_BAD;
	rc = ares_expand_name(buf + off, buf, (int)len, &s, &n);
	if (rc != ARES_SUCCESS || n <= 0 || (size_t)n > len - off) {
		ares_free_string(s);
		return rc == ARES_ENOMEM ? NAME_NOMEM : NAME_BAD;
	}
	*enclen = (size_t)n;
	size_t slen = strlen(s);
	if (slen > DNS_NAME_MAX) {
		rc = NAME_LONG;
	} else {
		memcpy(out, s, slen + 1);
		rc = NAME_OK;
	}
	ares_free_string(s);
	return rc;
}

static int get_name(struct cursor *c, char *out)
{
	size_t n = 0;
	int rc = expand_at(c->buf, c->len, c->off, out, &n);
	if (rc >= 0)
		c->off += n;
	return rc;
}

struct rr {
	uint16_t type, cls, rdlen;
	uint32_t ttl;
	size_t rdoff;
};

/* Reads a record's fields after its owner name and steps over its data. */
static int get_rr(struct cursor *c, struct rr *rr)
{
	if (get16(c, &rr->type) < 0 || get16(c, &rr->cls) < 0 || get32(c, &rr->ttl) < 0 ||
	    get16(c, &rr->rdlen) < 0 || c->len - c->off < rr->rdlen)
		return -1;
	rr->rdoff = c->off;
	c->off += rr->rdlen;
	if (rr->ttl > 0x7fffffff)
		rr->ttl = 0; /* RFC 2181 section 8 */
	return 0;
}

/* Positions c after the header and the questions. */
static int skip_questions(struct cursor *c)
{
	unsigned qd = rd16(c->buf + 4);
	c->off = 12;
	for (unsigned i = 0; i < qd; i++) {
		if (skip_name(c) < 0 || c->len - c->off < 4)
			return -1;
		c->off += 4;
	}
	return 0;
}

/* How long to remember a negative answer: min(SOA TTL, SOA minimum) of the
 * authority section (RFC 2308 section 5), at most DNS_NEG_TTL_MAX. */
uint32_t dns_negative_ttl(const unsigned char *buf, size_t len)
{
	struct cursor c = { buf, len, 0 };
	struct rr rr;
	unsigned an, ns;

	if (len < 12 || skip_questions(&c) < 0)
		return DNS_NEG_TTL_DEFAULT;
	an = rd16(buf + 6);
	ns = rd16(buf + 8);
	for (unsigned i = 0; i < an; i++)
		if (skip_name(&c) < 0 || get_rr(&c, &rr) < 0)
			return DNS_NEG_TTL_DEFAULT;
	for (unsigned i = 0; i < ns; i++) {
		if (skip_name(&c) < 0 || get_rr(&c, &rr) < 0)
			return DNS_NEG_TTL_DEFAULT;
		if (rr.type != DNS_RR_SOA || rr.cls != DNS_CLASS_IN)
			continue;
		/* The SOA's data alone: mname, rname, then five 32-bit numbers. */
		struct cursor d = { buf, rr.rdoff + rr.rdlen, rr.rdoff };
		uint32_t v[5];
		if (skip_name(&d) < 0 || skip_name(&d) < 0)
			return DNS_NEG_TTL_DEFAULT;
		for (unsigned k = 0; k < 5; k++)
			if (get32(&d, &v[k]) < 0)
				return DNS_NEG_TTL_DEFAULT;
		return min32(min32(rr.ttl, v[4]), DNS_NEG_TTL_MAX);
	}
	return DNS_NEG_TTL_DEFAULT;
}

/* Adds a record to out; when full, it replaces the one of highest priority
 * value if its own is lower, so the bound keeps the targets tried first. */
static void srv_keep(struct dns_srv_rrset *out, uint16_t prio, uint16_t weight, uint16_t port,
                     const char *name)
{
	unsigned i = out->n;
	if (i == DNS_MAX_SRV_TARGETS) {
		unsigned worst = 0;
		for (unsigned k = 1; k < out->n; k++)
			if (out->rr[k].priority > out->rr[worst].priority)
				worst = k;
		if (out->rr[worst].priority <= prio)
			return;
		i = worst;
	} else {
		out->n++;
	}
	out->rr[i].priority = prio;
	out->rr[i].weight = weight;
	out->rr[i].port = port;
	strcpy(out->rr[i].name, name); /* both DNS_NAME_MAX + 1 */
}

static int name_error(int rc)
{
	return rc == NAME_NOMEM ? DNS_ENOMEM : DNS_ESERVFAIL;
}

static int parse_srv(const unsigned char *buf, size_t len, const char *qname,
                     struct dns_srv_rrset *out)
{
	char want[DNS_NAME_MAX + 1], owner[DNS_NAME_MAX + 1], target[DNS_NAME_MAX + 1];
	struct cursor c = { buf, len, 0 };
	uint32_t ttl = UINT32_MAX;
	unsigned an, seen = 0, dots = 0;
	size_t answers, enclen;
	struct rr rr;
	int rc;

	out->n = 0;
	out->ttl = 0;
	if (len < 12 || len > 65535 || !(buf[2] & 0x80))
		return DNS_ESERVFAIL; /* no header, more than DNS allows, or not a response */
	if ((buf[3] & 0x0f) == RCODE_NXDOMAIN) {
		out->ttl = dns_negative_ttl(buf, len);
		return DNS_ENOTFOUND;
	}
	if ((buf[3] & 0x0f) != RCODE_NOERROR)
		return DNS_ESERVFAIL;
	if (dns_name_key(want, qname) < 0)
		return DNS_ENOTFOUND; /* no record can have such an owner */
	if (skip_questions(&c) < 0)
		return DNS_ESERVFAIL;
	answers = c.off;
	an = rd16(buf + 6);

	/* A CNAME in the answer leads on from qname: one pass per hop. */
	for (int hop = 0; hop < CNAME_HOPS; hop++) {
		int found = 0;
		c.off = answers;
		for (unsigned i = 0; i < an && !found; i++) {
			if ((rc = get_name(&c, owner)) < 0)
				return name_error(rc);
			if (get_rr(&c, &rr) < 0)
				return DNS_ESERVFAIL;
			if (rc != NAME_OK || rr.type != DNS_RR_CNAME || rr.cls != DNS_CLASS_IN || !dns_name_eq(owner, want))
				continue;
			rc = expand_at(buf, len, rr.rdoff, target, &enclen);
			if (rc < 0 || enclen > rr.rdlen)
				return rc < 0 ? name_error(rc) : DNS_ESERVFAIL;
			if (rc != NAME_OK || target[0] == '\0')
				continue;
			strcpy(want, target);
			ttl = min32(ttl, rr.ttl);
			found = 1;
		}
		if (!found)
			break;
	}

	c.off = answers;
	for (unsigned i = 0; i < an; i++) {
		uint16_t prio, weight, port;
		if ((rc = get_name(&c, owner)) < 0)
			return name_error(rc);
		if (get_rr(&c, &rr) < 0)
			return DNS_ESERVFAIL;
		if (rc != NAME_OK || rr.type != DNS_RR_SRV || rr.cls != DNS_CLASS_IN || !dns_name_eq(owner, want))
			continue;
		if (rr.rdlen < 7)
			return DNS_ESERVFAIL;
		prio = rd16(buf + rr.rdoff);
		weight = rd16(buf + rr.rdoff + 2);
		port = rd16(buf + rr.rdoff + 4);
		rc = expand_at(buf, len, rr.rdoff + 6, target, &enclen);
		if (rc < 0 || enclen > (size_t)rr.rdlen - 6)
			return rc < 0 ? name_error(rc) : DNS_ESERVFAIL;
		seen++;
		ttl = min32(ttl, rr.ttl);
		if (rc == NAME_OK && target[0] == '\0')
			dots++;
		else if (rc == NAME_OK && is_hostname(target))
			srv_keep(out, prio, weight, port, target);
	}

	if (seen == 0) {
		out->ttl = dns_negative_ttl(buf, len);
		return DNS_ENOTFOUND;
	}
	if (out->n == 0) {
		if (dots < seen)
			return DNS_ESERVFAIL; /* records, but no target we could use */
		out->ttl = min32(ttl, DNS_NEG_TTL_MAX);
		return DNS_ENOTFOUND; /* "." : decidedly not available (RFC 2782) */
	}
	out->ttl = ttl;
	return DNS_OK;
}

int dns_parse_srv_answer(const unsigned char *buf, size_t len, const char *qname,
                         struct dns_srv_rrset *out)
{
	int rc = parse_srv(buf, len, qname, out);
	if (rc != DNS_OK && rc != DNS_ENOTFOUND)
		out->ttl = 0;
	if (rc != DNS_OK)
		out->n = 0; /* a record found before a malformed one is no answer */
	return rc;
}

/* ---- RFC 2782 order ---- */

/*
 * Moves to t[from] a record drawn from t[from..to) (one priority) as RFC 2782
 * says: with the weight-0 records first in the running sum, draw r in
 * [0, sum] and take the first record whose running sum reaches r. r = 0 is
 * the weight-0 records' small chance; any of them may be first, so one is
 * drawn among them. Without weight-0 records, that extra value would only
 * favour whichever record comes first, so r is drawn in [1, sum]: each record
 * is then chosen with probability weight / sum.
 */
static void srv_pick(uint64_t *rng, struct dns_srv_target *t, unsigned from, unsigned to)
{
	uint32_t sum = 0, r;
	unsigned zeros = 0, k = from;
	struct dns_srv_target tmp;

	for (unsigned i = from; i < to; i++) {
		sum += t[i].weight;
		zeros += t[i].weight == 0;
	}
	if (sum == 0) {
		k = from + rng_below(rng, to - from);
	} else if ((r = zeros ? rng_below(rng, sum + 1) : 1 + rng_below(rng, sum)) == 0) {
		unsigned z = rng_below(rng, zeros);
		for (k = from; t[k].weight != 0 || z-- > 0; k++)
			;
	} else {
		uint32_t run = 0;
		for (k = from; (run += t[k].weight) < r; k++)
			;
	}
	tmp = t[from];
	t[from] = t[k];
	t[k] = tmp;
}

void dns_srv_order(uint64_t *rng, const struct dns_srv_target *in, unsigned n,
                   struct dns_srv_target *out)
{
	if (n > DNS_MAX_SRV_TARGETS)
		n = DNS_MAX_SRV_TARGETS;
	/* A stable insertion sort by priority: n is small. */
	for (unsigned i = 0; i < n; i++) {
		unsigned j = i;
		for (; j > 0 && out[j - 1].priority > in[i].priority; j--)
			out[j] = out[j - 1];
		out[j] = in[i];
	}
	for (unsigned start = 0, end; start < n; start = end) {
		for (end = start + 1; end < n && out[end].priority == out[start].priority; end++)
			;
		for (unsigned i = start; i + 1 < end; i++)
			srv_pick(rng, out, i, end);
	}
}

