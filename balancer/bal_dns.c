#include "bal_dns.h"

#include <ldns/ldns.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The SOA's timers (RFC 1912 values); its MINIMUM, the negative TTL, is cfg->ttl. */
#define SOA_REFRESH 3600
#define SOA_RETRY 600
#define SOA_EXPIRE 86400

/* Sizes a DNS message takes on the wire (RFC 1035 4.2.1, RFC 6891 6.2.5). */
#define DNS_UDP_PLAIN 512u
#define DNS_MSG_MAX 65535u

enum { SRV_SIPFED, SRV_SIPTLS, SRV_XMPP, NSRV };

static const char *const srv_label[NSRV] = {
	"_sipfederationtls._tcp", "_sip._tls", "_xmpp-server._tcp",
};

struct zone {
	const struct bal_cfg_zone *cfg;
	/* Names as configured (their case is what answers show); compared without case. */
	ldns_rdf *apex, *pool, *vip, *rname;
	ldns_rdf **ns;             /* cfg->nns */
	ldns_rdf *srv[NSRV];       /* NULL: its port is 0, no such record */
	uint16_t srv_port[NSRV];
	const ldns_rdf **names;    /* every name that holds data in the zone (borrowed from above) */
	unsigned nnames;
	struct in_addr *pool4;     /* the healthy edges, as bal_dns_set_pool() got them */
	unsigned npool4, rot4;     /* rot: where the next answer starts */
	struct in6_addr *pool6;
	unsigned npool6, rot6;
	uint32_t serial;
};

struct bal_dns {
	const struct bal_cfg_dns *cfg;
	struct zone *zones;
	unsigned nzones;
	struct bal_dns_stats stats;
};

/* ---- names ---- */

static int lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c + 32 : c;
}

/* Wire-format bytes without regard to ASCII case (RFC 4343); length octets are < 64,
 * so lowering them changes nothing. */
static int wire_eq(const uint8_t *a, const uint8_t *b, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (lower(a[i]) != lower(b[i]))
			return 0;
	return 1;
}

static int name_eq(const ldns_rdf *a, const ldns_rdf *b)
{
	return ldns_rdf_size(a) == ldns_rdf_size(b) &&
	       wire_eq(ldns_rdf_data(a), ldns_rdf_data(b), ldns_rdf_size(a));
}

/* n is parent or lies below it (label by label: "xcontoso.test" is not under "contoso.test"). */
static int name_under(const ldns_rdf *n, const ldns_rdf *parent)
{
	const uint8_t *a = ldns_rdf_data(n);
	size_t alen = ldns_rdf_size(n), plen = ldns_rdf_size(parent), off = 0;
	while (alen - off > plen && a[off] != 0)
		off += 1u + a[off];
	return alen - off == plen && wire_eq(a + off, ldns_rdf_data(parent), plen);
}

/* A configured name ("contoso.test", with or without the final dot), or NULL. */
static ldns_rdf *dname(const char *s)
{
	if (!s || !*s)
		return NULL;
	ldns_rdf *r = ldns_dname_new_frm_str(s);
	if (r && ldns_rdf_size(r) <= 1) { /* the root: no zone nor host of ours */
		ldns_rdf_deep_free(r);
		r = NULL;
	}
	return r;
}

/* A configured domain as given to bal_dns_set_pool(), without case nor final dot. */
static struct zone *zone_by_domain(const struct bal_dns *d, const char *domain)
{
	size_t len = domain ? strlen(domain) : 0;
	if (len > 0 && domain[len - 1] == '.')
		len--;
	for (unsigned i = 0; i < d->nzones; i++) {
		const char *c = d->zones[i].cfg->domain;
		size_t clen = strlen(c);
		if (clen > 0 && c[clen - 1] == '.')
			clen--;
		if (clen == len && wire_eq((const uint8_t *)c, (const uint8_t *)domain, len))
			return &d->zones[i];
	}
	return NULL;
}

/* The zone qname lies in: the one with the longest apex, should zones nest. */
static struct zone *zone_of(const struct bal_dns *d, const ldns_rdf *qname)
{
	struct zone *best = NULL;
	for (unsigned i = 0; i < d->nzones; i++) {
		struct zone *z = &d->zones[i];
		if (name_under(qname, z->apex) &&
		    (!best || ldns_rdf_size(z->apex) > ldns_rdf_size(best->apex)))
			best = z;
	}
	return best;
}

/* ---- the responder's life ---- */

static void zone_free(struct zone *z)
{
	ldns_rdf_deep_free(z->apex);
	ldns_rdf_deep_free(z->pool);
	ldns_rdf_deep_free(z->vip);
	ldns_rdf_deep_free(z->rname);
	for (unsigned i = 0; z->ns && i < z->cfg->nns; i++)
		ldns_rdf_deep_free(z->ns[i]);
	free(z->ns); z->ns = NULL;
	for (unsigned i = 0; i < NSRV; i++)
		ldns_rdf_deep_free(z->srv[i]);
	free(z->names); z->names = NULL;
	free(z->pool4); z->pool4 = NULL;
	free(z->pool6); z->pool6 = NULL;
}

static void add_name(struct zone *z, const ldns_rdf *n)
{
	if (n && name_under(n, z->apex))
		z->names[z->nnames++] = n;
}

static int zone_init(struct zone *z, const struct bal_cfg_zone *c, uint32_t serial, char *err,
                     size_t errlen)
{
	const char *bad = NULL;
	char buf[300];
	z->cfg = c;
	z->serial = c->serial ? c->serial : serial;
	if (!(z->apex = dname(c->domain)))
		bad = c->domain;
	else if (!(z->pool = dname(c->pool_name)))
		bad = c->pool_name;
	else if (c->vip_name && !(z->vip = dname(c->vip_name)))
		bad = c->vip_name;
	if (!bad && c->hostmaster) {
		if (!(z->rname = dname(c->hostmaster)))
			bad = c->hostmaster;
	} else if (!bad) {
		snprintf(buf, sizeof(buf), "hostmaster.%s", c->domain);
		if (!(z->rname = dname(buf)))
			bad = buf;
	}
	if (!bad && !(z->ns = calloc(c->nns ? c->nns : 1, sizeof(*z->ns)))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (unsigned i = 0; !bad && i < c->nns; i++)
		if (!(z->ns[i] = dname(c->ns[i])))
			bad = c->ns[i];
	const uint16_t ports[NSRV] = { c->sip_port, c->sip_tls_port, c->xmpp_port };
	for (unsigned i = 0; !bad && i < NSRV; i++) {
		z->srv_port[i] = ports[i];
		if (!ports[i])
			continue;
		snprintf(buf, sizeof(buf), "%s.%s", srv_label[i], c->domain);
		if (!(z->srv[i] = dname(buf)))
			bad = buf;
	}
	if (bad) {
		snprintf(err, errlen, "zone %s: '%s' is not a DNS name", c->domain ? c->domain : "?",
		         bad ? bad : "");
		return -1;
	}
	if (!(z->names = calloc(3 + c->nns + NSRV, sizeof(*z->names)))) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	add_name(z, z->apex);
	add_name(z, z->pool);
	add_name(z, z->vip);
	for (unsigned i = 0; i < c->nns; i++)
		add_name(z, z->ns[i]);
	for (unsigned i = 0; i < NSRV; i++)
		add_name(z, z->srv[i]);
	return 0;
}

struct bal_dns *bal_dns_new(const struct bal_cfg_dns *cfg, uint32_t serial, char *err,
                            size_t errlen)
{
	struct bal_dns *d = calloc(1, sizeof(*d));
	if (d && cfg->nzones)
		d->zones = calloc(cfg->nzones, sizeof(*d->zones));
	if (!d || (cfg->nzones && !d->zones)) {
		free(d);
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	d->cfg = cfg;
	for (unsigned i = 0; i < cfg->nzones; i++) {
		d->nzones = i + 1; /* so that bal_dns_free() releases a half-built zone */
		if (zone_init(&d->zones[i], &cfg->zones[i], serial, err, errlen) < 0) {
			bal_dns_free(d);
			return NULL;
		}
	}
	return d;
}

void bal_dns_free(struct bal_dns *d)
{
	if (!d)
		return;
	for (unsigned i = 0; i < d->nzones; i++)
		zone_free(&d->zones[i]);
	free(d->zones); d->zones = NULL;
	free(d);
}

/* ---- the pool ---- */

/* Serial arithmetic (RFC 1982): adding 1 is always an increase, even across 2^32; 0 is
 * skipped, as BIND does, for secondaries that read it as "unset". */
static uint32_t serial_next(uint32_t s)
{
	return s + 1 ? s + 1 : 1;
}

static int has4(const struct in_addr *set, unsigned n, const struct in_addr *a)
{
	for (unsigned i = 0; i < n; i++)
		if (set[i].s_addr == a->s_addr)
			return 1;
	return 0;
}

static int has6(const struct in6_addr *set, unsigned n, const struct in6_addr *a)
{
	for (unsigned i = 0; i < n; i++)
		if (memcmp(&set[i], a, sizeof(*a)) == 0)
			return 1;
	return 0;
}

int bal_dns_set_pool(struct bal_dns *d, const char *zone, const struct bal_ip *addrs,
                     unsigned n)
{
	struct zone *z = zone_by_domain(d, zone);
	if (!z || (n && !addrs))
		return -1;
	struct in_addr *v4 = malloc((n ? n : 1) * sizeof(*v4));
	struct in6_addr *v6 = malloc((n ? n : 1) * sizeof(*v6));
	unsigned n4 = 0, n6 = 0;
	if (!v4 || !v6)
		goto fail;
	/* Duplicates dropped: an RRset holds each record once (RFC 2181 5). */
	for (unsigned i = 0; i < n; i++) {
		if (addrs[i].family == AF_INET) {
			if (!has4(v4, n4, &addrs[i].u.v4))
				v4[n4++] = addrs[i].u.v4;
		} else if (addrs[i].family == AF_INET6) {
			if (!has6(v6, n6, &addrs[i].u.v6))
				v6[n6++] = addrs[i].u.v6;
		} else {
			goto fail;
		}
	}
	int same = n4 == z->npool4 && n6 == z->npool6;
	for (unsigned i = 0; same && i < n4; i++)
		same = has4(z->pool4, z->npool4, &v4[i]);
	for (unsigned i = 0; same && i < n6; i++)
		same = has6(z->pool6, z->npool6, &v6[i]);
	free(z->pool4); z->pool4 = v4;
	free(z->pool6); z->pool6 = v6;
	z->npool4 = n4;
	z->npool6 = n6;
	if (!same)
		z->serial = serial_next(z->serial);
	return 0;
fail:
	free(v4);
	free(v6);
	return -1;
}

uint32_t bal_dns_serial(const struct bal_dns *d, const char *zone)
{
	const struct zone *z = zone_by_domain(d, zone);
	return z ? z->serial : 0;
}

void bal_dns_get_stats(const struct bal_dns *d, struct bal_dns_stats *out)
{
	*out = d->stats;
}

/* ---- records ---- */

/*
 * Records are built afresh for each answer: the packet owns (and frees) what it
 * holds, and an answer is a handful of records. Each helper returns 0, or -1
 * when memory ran out (what it had built is freed).
 */
static int push(ldns_pkt *p, ldns_pkt_section sec, ldns_rr *rr)
{
	if (!rr)
		return -1;
	if (!ldns_pkt_push_rr(p, sec, rr)) {
		ldns_rr_free(rr);
		return -1;
	}
	return 0;
}

/* A record of owner (copied) with rdata rd (taken over, freed on failure; NULL: failure). */
static ldns_rr *rr_make(const ldns_rdf *owner, ldns_rr_type type, uint32_t ttl, ldns_rdf **rd,
                        unsigned nrd)
{
	ldns_rr *rr = ldns_rr_new();
	ldns_rdf *o = ldns_rdf_clone(owner);
	int ok = rr && o;
	if (ok) {
		ldns_rr_set_owner(rr, o);
		o = NULL;
		ldns_rr_set_type(rr, type);
		ldns_rr_set_class(rr, LDNS_RR_CLASS_IN);
		ldns_rr_set_ttl(rr, ttl);
	}
	for (unsigned i = 0; i < nrd; i++) {
		if (ok && rd[i] && ldns_rr_push_rdf(rr, rd[i]))
			continue;
		ok = 0;
		ldns_rdf_deep_free(rd[i]);
	}
	ldns_rdf_deep_free(o);
	if (!ok) {
		ldns_rr_free(rr);
		return NULL;
	}
	return rr;
}

static int add_soa(const struct bal_dns *d, const struct zone *z, ldns_pkt *p,
                   ldns_pkt_section sec, uint32_t ttl)
{
	ldns_rdf *rd[7] = {
		ldns_rdf_clone(z->cfg->nns ? z->ns[0] : z->apex),
		ldns_rdf_clone(z->rname),
		ldns_native2rdf_int32(LDNS_RDF_TYPE_INT32, z->serial),
		ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, SOA_REFRESH),
		ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, SOA_RETRY),
		ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, SOA_EXPIRE),
		ldns_native2rdf_int32(LDNS_RDF_TYPE_PERIOD, d->cfg->ttl),
	};
	return push(p, sec, rr_make(z->apex, LDNS_RR_TYPE_SOA, ttl, rd, 7));
}

static int add_ns(const struct bal_dns *d, const struct zone *z, const ldns_rdf *owner,
                  ldns_pkt *p)
{
	for (unsigned i = 0; i < z->cfg->nns; i++) {
		ldns_rdf *rd = ldns_rdf_clone(z->ns[i]);
		if (push(p, LDNS_SECTION_ANSWER, rr_make(owner, LDNS_RR_TYPE_NS, d->cfg->static_ttl,
		                                         &rd, 1)) < 0)
			return -1;
	}
	return 0;
}

/* n addresses from set, starting at start (mod n). */
static int add_v4(ldns_pkt *p, ldns_pkt_section sec, const ldns_rdf *owner, uint32_t ttl,
                  const struct in_addr *set, unsigned n, unsigned start)
{
	for (unsigned i = 0; i < n; i++) {
		ldns_rdf *rd = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_A, sizeof(*set),
		                                     &set[(start + i) % n]);
		if (push(p, sec, rr_make(owner, LDNS_RR_TYPE_A, ttl, &rd, 1)) < 0)
			return -1;
	}
	return 0;
}

static int add_v6(ldns_pkt *p, ldns_pkt_section sec, const ldns_rdf *owner, uint32_t ttl,
                  const struct in6_addr *set, unsigned n, unsigned start)
{
	for (unsigned i = 0; i < n; i++) {
		ldns_rdf *rd = ldns_rdf_new_frm_data(LDNS_RDF_TYPE_AAAA, sizeof(*set),
		                                     &set[(start + i) % n]);
		if (push(p, sec, rr_make(owner, LDNS_RR_TYPE_AAAA, ttl, &rd, 1)) < 0)
			return -1;
	}
	return 0;
}

/* The pool's addresses of type t (A or AAAA): each RRset starts one further than the last. */
static int add_pool(const struct bal_dns *d, struct zone *z, ldns_pkt *p, ldns_pkt_section sec,
                    const ldns_rdf *owner, ldns_rr_type t)
{
	if (t == LDNS_RR_TYPE_A && z->npool4)
		return add_v4(p, sec, owner, d->cfg->ttl, z->pool4, z->npool4, z->rot4++ % z->npool4);
	if (t == LDNS_RR_TYPE_AAAA && z->npool6)
		return add_v6(p, sec, owner, d->cfg->ttl, z->pool6, z->npool6, z->rot6++ % z->npool6);
	return 0;
}

static int add_srv(const struct bal_dns *d, const struct zone *z, ldns_pkt *p,
                   const ldns_rdf *owner, unsigned k)
{
	ldns_rdf *rd[4] = {
		ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, 0), /* priority */
		ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, 0), /* weight: one target, the pool name */
		ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, z->srv_port[k]),
		ldns_rdf_clone(z->pool),
	};
	return push(p, LDNS_SECTION_ANSWER, rr_make(owner, LDNS_RR_TYPE_SRV, d->cfg->static_ttl,
	                                            rd, 4));
}

static int wants(ldns_rr_type qtype, ldns_rr_type t)
{
	return qtype == t || qtype == LDNS_RR_TYPE_ANY;
}

/*
 * Puts in p's answer section what zone z holds at qname of qtype (every type
 * for ANY: see bal_dns.h), with qname's case as the owner, and what the
 * additional section should carry. *exists: qname holds records of some type,
 * or is an empty non-terminal (RFC 8020: NODATA, never NXDOMAIN, below it
 * there are names). Returns 0, or -1 when memory ran out.
 */
static int lookup(const struct bal_dns *d, struct zone *z, const ldns_rdf *qname,
                  ldns_rr_type qtype, ldns_pkt *p, int *exists)
{
	const struct bal_cfg_zone *c = z->cfg;
	uint32_t sttl = d->cfg->static_ttl;
	int glue = 0, pool_addrs = 0, rc = 0;
	*exists = 0;
	for (unsigned i = 0; i < z->nnames && !*exists; i++)
		*exists = name_under(z->names[i], qname);
	if (!*exists)
		return 0;
	if (name_eq(qname, z->apex)) {
		if (wants(qtype, LDNS_RR_TYPE_SOA))
			rc |= add_soa(d, z, p, LDNS_SECTION_ANSWER, sttl);
		if (wants(qtype, LDNS_RR_TYPE_NS)) {
			rc |= add_ns(d, z, qname, p);
			glue = 1;
		}
	}
	if (name_eq(qname, z->pool)) {
		if (wants(qtype, LDNS_RR_TYPE_A))
			rc |= add_pool(d, z, p, LDNS_SECTION_ANSWER, qname, LDNS_RR_TYPE_A);
		if (wants(qtype, LDNS_RR_TYPE_AAAA))
			rc |= add_pool(d, z, p, LDNS_SECTION_ANSWER, qname, LDNS_RR_TYPE_AAAA);
	}
	if (z->vip && name_eq(qname, z->vip)) {
		if (wants(qtype, LDNS_RR_TYPE_A))
			rc |= add_v4(p, LDNS_SECTION_ANSWER, qname, sttl, c->vip4, c->nvip4, 0);
		if (wants(qtype, LDNS_RR_TYPE_AAAA))
			rc |= add_v6(p, LDNS_SECTION_ANSWER, qname, sttl, c->vip6, c->nvip6, 0);
	}
	if (c->nns && name_eq(qname, z->ns[0]) && wants(qtype, LDNS_RR_TYPE_A))
		rc |= add_v4(p, LDNS_SECTION_ANSWER, qname, sttl, c->ns4, c->nns4, 0);
	for (unsigned k = 0; k < NSRV; k++) {
		if (z->srv[k] && name_eq(qname, z->srv[k]) && wants(qtype, LDNS_RR_TYPE_SRV)) {
			rc |= add_srv(d, z, p, qname, k);
			pool_addrs = 1;
		}
	}
	/* Additional section (RFC 1034 4.3.2 step 6): the addresses of the names the
	 * answer points to, when they are ours and not in the answer already. */
	int in_answer = qtype == LDNS_RR_TYPE_ANY;
	if (glue && c->nns && name_under(z->ns[0], z->apex) &&
	    !(in_answer && name_eq(qname, z->ns[0])))
		rc |= add_v4(p, LDNS_SECTION_ADDITIONAL, z->ns[0], sttl, c->ns4, c->nns4, 0);
	if (pool_addrs && name_under(z->pool, z->apex) && !(in_answer && name_eq(qname, z->pool))) {
		rc |= add_pool(d, z, p, LDNS_SECTION_ADDITIONAL, z->pool, LDNS_RR_TYPE_A);
		rc |= add_pool(d, z, p, LDNS_SECTION_ADDITIONAL, z->pool, LDNS_RR_TYPE_AAAA);
	}
	return rc ? -1 : 0;
}

/* ---- messages ---- */

/* A header alone, for a query ldns could not read: its id, opcode and RD; no question. */
static size_t raw_reply(const uint8_t *q, uint8_t rcode, uint8_t *out)
{
	memset(out, 0, LDNS_HEADER_SIZE);
	out[0] = q[0];
	out[1] = q[1];
	out[2] = 0x80 | (q[2] & 0x79); /* QR; opcode and RD as asked */
	out[3] = rcode & 0x0f;
	return LDNS_HEADER_SIZE;
}

/* The reply's header as RFC 1035 4.1.1 says: id, opcode, RD (and CD) from the query. */
static ldns_pkt *reply_new(const ldns_pkt *query, int echo_question)
{
	ldns_pkt *r = ldns_pkt_new();
	if (!r)
		return NULL;
	ldns_pkt_set_id(r, ldns_pkt_id(query));
	ldns_pkt_set_qr(r, true);
	ldns_pkt_set_opcode(r, ldns_pkt_get_opcode(query));
	ldns_pkt_set_rd(r, ldns_pkt_rd(query));
	ldns_pkt_set_cd(r, ldns_pkt_cd(query));
	if (echo_question) {
		/* A copy of the question as it came: its case too (RFC 1035 7.3, 0x20 bits). */
		const ldns_rr *qrr = ldns_rr_list_rr(ldns_pkt_question(query), 0);
		ldns_rr *copy = qrr ? ldns_rr_clone(qrr) : NULL;
		if (!copy || !ldns_pkt_push_rr(r, LDNS_SECTION_QUESTION, copy)) {
			ldns_rr_free(copy);
			ldns_pkt_free(r);
			return NULL;
		}
	}
	return r;
}

/* The OPT record of our answers (RFC 6891 6.1): our size, version 0, DO as asked. */
static void reply_edns(ldns_pkt *r, const ldns_pkt *query, uint8_t ext_rcode)
{
	ldns_pkt_set_edns_udp_size(r, BAL_DNS_UDP_SIZE);
	ldns_pkt_set_edns_version(r, 0);
	ldns_pkt_set_edns_extended_rcode(r, ext_rcode);
	ldns_pkt_set_edns_do(r, ldns_pkt_edns_do(query)); /* RFC 3225 3 */
}

/* r on the wire into out when it takes at most limit bytes. Returns its length, or 0. */
static size_t wire_out(const ldns_pkt *r, size_t limit, uint8_t *out, int *too_big)
{
	uint8_t *w = NULL;
	size_t wlen = 0;
	*too_big = 0;
	if (ldns_pkt2wire(&w, r, &wlen) != LDNS_STATUS_OK || !w) {
		free(w);
		return 0;
	}
	if (wlen > limit) {
		*too_big = 1;
		wlen = 0;
	} else {
		memcpy(out, w, wlen);
	}
	free(w);
	return wlen;
}

/* Drops the last RRset of the additional section. */
static void drop_additional(ldns_pkt *r)
{
	ldns_rr_list *l = ldns_pkt_additional(r);
	size_t n = ldns_rr_list_rr_count(l);
	const ldns_rr *last = ldns_rr_list_rr(l, n - 1);
	ldns_rr_type t = ldns_rr_get_type(last);
	ldns_rdf *owner = ldns_rdf_clone(ldns_rr_owner(last));
	while (n > 0 && ldns_rr_get_type(ldns_rr_list_rr(l, n - 1)) == t &&
	       (!owner || name_eq(ldns_rr_owner(ldns_rr_list_rr(l, n - 1)), owner))) {
		ldns_rr_free(ldns_rr_list_pop_rr(l));
		n--;
	}
	ldns_rdf_deep_free(owner);
	ldns_pkt_set_arcount(r, (uint16_t)n);
}

/* What every reply counts (taking r over): the answer's length, 0 for none. */
static size_t reply_send(struct bal_dns *d, ldns_pkt *r, const ldns_pkt *query, int edns,
                         size_t limit, int over_tcp, uint8_t *out)
{
	int too_big;
	size_t len = wire_out(r, limit, out, &too_big);
	/* Addresses of the additional section that do not fit are left out, a whole RRset
	 * at a time, without TC: the answer itself is complete (RFC 2181 9). */
	while (too_big && ldns_rr_list_rr_count(ldns_pkt_additional(r)) > 0) {
		drop_additional(r);
		len = wire_out(r, limit, out, &too_big);
	}
	if (too_big) {
		/* UDP: the header and the question with TC, so that the client asks again over
		 * TCP (RFC 2181 9: no partial RRsets). TCP: it cannot be sent at all. */
		ldns_pkt *t = reply_new(query, 1);
		if (t) {
			ldns_pkt_set_aa(t, ldns_pkt_aa(r));
			ldns_pkt_set_rcode(t, over_tcp ? LDNS_RCODE_SERVFAIL : ldns_pkt_get_rcode(r));
			ldns_pkt_set_tc(t, !over_tcp);
			if (edns)
				reply_edns(t, query, ldns_pkt_edns_extended_rcode(r));
			len = wire_out(t, limit, out, &too_big);
			ldns_pkt_free(t);
		}
		if (len && over_tcp)
			d->stats.servfail++;
		else if (len)
			d->stats.truncated++;
	}
	ldns_pkt_free(r);
	if (len)
		d->stats.answered++;
	else
		d->stats.dropped++;
	return len;
}

/* How many OPT records the query held: ldns keeps one and lowers ARCOUNT by all of them. */
static unsigned opt_count(const uint8_t *q, const ldns_pkt *query)
{
	unsigned wire_ar = LDNS_ARCOUNT(q), left = ldns_pkt_arcount(query);
	left += ldns_pkt_tsig(query) ? 1 : 0;
	return wire_ar > left ? wire_ar - left : 0;
}

size_t bal_dns_answer(struct bal_dns *d, const uint8_t *q, size_t qlen, int over_tcp,
                      uint8_t *out, size_t outlen)
{
	d->stats.queries++;
	if (qlen < LDNS_HEADER_SIZE || outlen < LDNS_HEADER_SIZE || LDNS_QR_WIRE(q)) {
		d->stats.dropped++; /* not a query, or a response (which never gets one: RFC 1035 7.3) */
		return 0;
	}
	size_t limit = outlen < DNS_MSG_MAX ? outlen : DNS_MSG_MAX;
	ldns_pkt *query = NULL;
	if (ldns_wire2pkt(&query, q, qlen) != LDNS_STATUS_OK || !query) {
		ldns_pkt_free(query);
		int notimp = LDNS_OPCODE_WIRE(q) != LDNS_PACKET_QUERY;
		if (notimp)
			d->stats.notimp++;
		else
			d->stats.formerr++;
		d->stats.answered++;
		return raw_reply(q, notimp ? LDNS_RCODE_NOTIMPL : LDNS_RCODE_FORMERR, out);
	}
	int one_question = ldns_rr_list_rr_count(ldns_pkt_question(query)) == 1 &&
	                   ldns_pkt_qdcount(query) == 1;
	unsigned nopt = opt_count(q, query);
	int edns = nopt > 0; /* an OPT in the query, one in the answer (RFC 6891 7) */
	if (!over_tcp) {
		/* The client's buffer: 512 without EDNS0, what its OPT says (never less) with it. */
		size_t client = DNS_UDP_PLAIN;
		if (nopt == 1 && ldns_pkt_edns_udp_size(query) > client)
			client = ldns_pkt_edns_udp_size(query);
		if (client < limit)
			limit = client;
	}

	ldns_rr_type qtype = 0;
	const ldns_rdf *qname = NULL;
	ldns_pkt_rcode rcode = LDNS_RCODE_NOERROR;
	int echo = one_question, aa = 0, answer = 0;
	uint8_t ext_rcode = 0;
	if (one_question) {
		const ldns_rr *qrr = ldns_rr_list_rr(ldns_pkt_question(query), 0);
		qname = ldns_rr_owner(qrr);
		qtype = ldns_rr_get_type(qrr);
	}
	if (ldns_pkt_get_opcode(query) != LDNS_PACKET_QUERY) {
		rcode = LDNS_RCODE_NOTIMPL; /* NOTIFY, UPDATE...: we are no secondary, nor a primary */
		d->stats.notimp++;
	} else if (!one_question || nopt > 1 || qtype == LDNS_RR_TYPE_OPT) {
		rcode = LDNS_RCODE_FORMERR; /* RFC 1035 4.1.2 (one question in practice), RFC 6891 6.1.1 */
		echo = 0;
		d->stats.formerr++;
	} else if (edns && ldns_pkt_edns_version(query) > 0) {
		ext_rcode = 1; /* BADVERS, 16: 1 in the OPT's upper bits, 0 in the header (RFC 6891 6.1.3) */
		d->stats.badvers++;
	} else if (ldns_rr_get_class(ldns_rr_list_rr(ldns_pkt_question(query), 0)) !=
	           LDNS_RR_CLASS_IN || qtype == LDNS_RR_TYPE_AXFR || qtype == LDNS_RR_TYPE_IXFR) {
		rcode = LDNS_RCODE_REFUSED; /* CH, HS, ANY: no data of ours; no zone transfers */
		d->stats.refused++;
	} else if (!zone_of(d, qname)) {
		rcode = LDNS_RCODE_REFUSED; /* not ours: we are no resolver (RFC 1034 4.3.1) */
		d->stats.refused++;
	} else {
		answer = 1;
	}

	ldns_pkt *r = reply_new(query, echo);
	if (r && answer) {
		struct zone *z = zone_of(d, qname);
		int exists;
		aa = 1;
		if (lookup(d, z, qname, qtype, r, &exists) < 0) {
			ldns_pkt_free(r);
			r = NULL;
		} else if (ldns_pkt_ancount(r) == 0) {
			/* Negative answers carry the SOA, its TTL the smaller of its own and its
			 * MINIMUM (RFC 2308 3), so that resolvers cache them only that long. */
			uint32_t negttl = d->cfg->ttl < d->cfg->static_ttl ? d->cfg->ttl :
			                  d->cfg->static_ttl;
			rcode = exists ? LDNS_RCODE_NOERROR : LDNS_RCODE_NXDOMAIN;
			if (exists)
				d->stats.nodata++;
			else
				d->stats.nxdomain++;
			if (add_soa(d, z, r, LDNS_SECTION_AUTHORITY, negttl) < 0) {
				ldns_pkt_free(r);
				r = NULL;
			}
		}
	}
	if (!r) {
		/* Out of memory: a bare SERVFAIL tells the client to try the other server. */
		ldns_pkt_free(query);
		d->stats.servfail++;
		d->stats.answered++;
		return raw_reply(q, LDNS_RCODE_SERVFAIL, out);
	}
	ldns_pkt_set_aa(r, aa);
	ldns_pkt_set_rcode(r, rcode);
	if (edns)
		reply_edns(r, query, ext_rcode);
	size_t len = reply_send(d, r, query, edns, limit, over_tcp, out);
	ldns_pkt_free(query);
	return len;
}
