#include "bal_update.h"

#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <ldns/ldns.h>

#define BACKOFF_MIN 0.5            /* seconds before the first retry */
#define BACKOFF_MAX 30.0
#define TSIG_FUDGE 300             /* RFC 8945 5.2.3 recommends 300 s */
#define DEFAULT_TIMEOUT_MS 5000    /* when the configuration gives 0 */
#define MSG_MAX 65535              /* TCP's two-byte length */

/* TSIG algorithms ldns signs with, under their RFC 8945 names. ldns 1.8
 * misspells hmac-sha384 and lacks hmac-sha224; hmac-md5 must not be used. */
static const struct {
	const char *name;
	const char *ldns;          /* the name as ldns wants it */
} tsig_algs[] = {
	{ "hmac-sha256", "hmac-sha256." },
	{ "hmac-sha512", "hmac-sha512." },
	{ "hmac-sha1", "hmac-sha1." },
};

struct key {
	const char *name;
	const char *secret;        /* base64 */
	const char *alg;           /* ldns's spelling */
};

struct bal_update {
	struct ev_loop *loop;
	const struct bal_cfg_update *cfg;
	const struct bal_cfg_zone *zone;
	uint32_t ttl, static_ttl;
	struct key key;
	double timeout;            /* seconds per attempt */
	char where[64];            /* the server, for reasons: "127.0.0.1:53" */
	bal_update_result_fn on_result;
	void *arg;

	struct bal_ip *want;       /* the newest set (owned) */
	unsigned nwant;
	unsigned long long gen;    /* bumped by every publish that changes the set */
	int published;             /* want is a set to send, not the empty start */
	int static_done;           /* an update carrying the static records succeeded */
	double backoff;            /* the wait after the next failure */
	ev_timer retry;            /* the next attempt: active means one is due */

	/* The attempt in flight: fd >= 0. */
	int fd;
	int connected;
	ev_io io;
	ev_timer deadline;
	unsigned long long sent_gen; /* the generation it carries */
	uint16_t id;
	ldns_rdf *req_mac;         /* our MAC: the response's TSIG covers it */
	uint8_t *out;              /* length prefix + message */
	size_t outlen, outoff;
	uint8_t inhdr[2];
	size_t inhdrlen;
	uint8_t *in;               /* the response, once its length is known */
	size_t inlen, inwant;

	struct bal_update_stats stats;
};

const char *bal_update_strerror(int err)
{
	switch (err) {
	case BAL_UPDATE_OK: return "success";
	case BAL_UPDATE_ENOMEM: return "out of memory";
	case BAL_UPDATE_ENAME: return "a name is invalid or outside the zone";
	case BAL_UPDATE_EKEY: return "the TSIG key is unusable";
	case BAL_UPDATE_ETOOBIG: return "the message would pass 65535 bytes";
	default: return "unknown error";
	}
}

__attribute__((format(printf, 3, 4)))
static void say(char *buf, size_t len, const char *fmt, ...)
{
	if (!buf || !len)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, len, fmt, ap);
	va_end(ap);
}

/* ---- the message ---- */

/* cfg's key in ldns's terms. Returns 0, or BAL_UPDATE_EKEY with why. */
static int key_of(const struct bal_cfg_update *cfg, struct key *k, char *why, size_t whylen)
{
	const char *alg = cfg->tsig_algorithm && *cfg->tsig_algorithm ? cfg->tsig_algorithm
	                                                                : "hmac-sha256";
	size_t alen = strlen(alg);
	if (alen && alg[alen - 1] == '.')
		alen--;
	k->alg = NULL;
	for (size_t i = 0; i < sizeof(tsig_algs) / sizeof(tsig_algs[0]); i++)
		if (strlen(tsig_algs[i].name) == alen && strncasecmp(alg, tsig_algs[i].name, alen) == 0)
			k->alg = tsig_algs[i].ldns;
	if (!k->alg) {
		say(why, whylen, "TSIG algorithm \"%s\" is not supported (hmac-sha256, hmac-sha512, "
		    "hmac-sha1)", alg);
		return BAL_UPDATE_EKEY;
	}
	ldns_rdf *name = cfg->tsig_name && *cfg->tsig_name ? ldns_dname_new_frm_str(cfg->tsig_name)
	                                                   : NULL;
	if (!name) {
		say(why, whylen, "TSIG key name \"%s\" is not a domain name",
		    cfg->tsig_name ? cfg->tsig_name : "");
		return BAL_UPDATE_EKEY;
	}
	ldns_rdf_deep_free(name);
	ldns_rdf *secret = NULL;
	if (!cfg->tsig_secret || !*cfg->tsig_secret ||
	    ldns_str2rdf_b64(&secret, cfg->tsig_secret) != LDNS_STATUS_OK || !secret ||
	    ldns_rdf_size(secret) == 0) {
		ldns_rdf_deep_free(secret);
		say(why, whylen, "TSIG secret of key \"%s\" is not base64", cfg->tsig_name);
		return BAL_UPDATE_EKEY;
	}
	ldns_rdf_deep_free(secret);
	k->name = cfg->tsig_name;
	k->secret = cfg->tsig_secret;
	return 0;
}

/* An RR without rdata; the caller adds it. */
static ldns_rr *rr_new(const ldns_rdf *owner, ldns_rr_type type, ldns_rr_class cls, uint32_t ttl)
{
	ldns_rr *rr = ldns_rr_new();
	ldns_rdf *o = ldns_rdf_clone(owner);
	if (!rr || !o) {
		ldns_rr_free(rr);
		ldns_rdf_deep_free(o);
		return NULL;
	}
	ldns_rr_set_owner(rr, o);
	ldns_rr_set_type(rr, type);
	ldns_rr_set_class(rr, cls);
	ldns_rr_set_ttl(rr, ttl);
	return rr;
}

/* rdf onto rr (taken over either way); rr is freed on failure. */
static ldns_rr *rr_push(ldns_rr *rr, ldns_rdf *rdf)
{
	if (rr && rdf && ldns_rr_push_rdf(rr, rdf))
		return rr;
	ldns_rr_free(rr);
	ldns_rdf_deep_free(rdf);
	return NULL;
}

/* rr into pkt's update section (taken over either way). */
static int push(ldns_pkt *pkt, ldns_rr *rr)
{
	if (rr && ldns_pkt_push_rr(pkt, LDNS_SECTION_AUTHORITY, rr))
		return 0;
	ldns_rr_free(rr);
	return BAL_UPDATE_ENOMEM;
}

/* RFC 2136 2.5.2: class ANY, TTL 0, no rdata. */
static int push_delete(ldns_pkt *pkt, const ldns_rdf *owner, ldns_rr_type type)
{
	return push(pkt, rr_new(owner, type, LDNS_RR_CLASS_ANY, 0));
}

static int push_addr(ldns_pkt *pkt, const ldns_rdf *owner, int family, const void *addr,
                     uint32_t ttl)
{
	int v4 = family == AF_INET;
	ldns_rr *rr = rr_new(owner, v4 ? LDNS_RR_TYPE_A : LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_IN, ttl);
	rr = rr_push(rr, ldns_rdf_new_frm_data(v4 ? LDNS_RDF_TYPE_A : LDNS_RDF_TYPE_AAAA,
	                                       v4 ? 4 : 16, addr));
	return push(pkt, rr);
}

/* "delete the SRV RRset of _service._proto.zone, add 0 0 port target". */
static int push_srv(ldns_pkt *pkt, const char *service, const char *zone, uint16_t port,
                    const ldns_rdf *target, uint32_t ttl)
{
	char name[LDNS_MAX_DOMAINLEN + 64];
	snprintf(name, sizeof(name), "%s.%s", service, zone);
	ldns_rdf *owner = ldns_dname_new_frm_str(name);
	if (!owner)
		return BAL_UPDATE_ENAME;
	int rc = push_delete(pkt, owner, LDNS_RR_TYPE_SRV);
	if (rc == 0) {
		ldns_rr *rr = rr_new(owner, LDNS_RR_TYPE_SRV, LDNS_RR_CLASS_IN, ttl);
		rr = rr_push(rr, ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, 0)); /* priority */
		rr = rr_push(rr, ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, 0)); /* weight */
		rr = rr_push(rr, ldns_native2rdf_int16(LDNS_RDF_TYPE_INT16, port));
		rr = rr_push(rr, ldns_rdf_clone(target));
		rc = push(pkt, rr);
	}
	ldns_rdf_deep_free(owner);
	return rc;
}

/* name as a domain name inside zone (or NULL: fine when optional). */
static int name_in(const char *name, const ldns_rdf *zone, ldns_rdf **out)
{
	*out = NULL;
	if (!name)
		return 0;
	*out = ldns_dname_new_frm_str(name);
	if (!*out)
		return BAL_UPDATE_ENAME;
	if (ldns_dname_compare(*out, zone) != 0 && !ldns_dname_is_subdomain(*out, zone))
		return BAL_UPDATE_ENAME;
	return 0;
}

static int build_records(ldns_pkt *pkt, const struct bal_cfg_zone *zone, const ldns_rdf *pool,
                         const ldns_rdf *vip, uint32_t ttl, uint32_t static_ttl, int with_static,
                         const struct bal_ip *addrs, unsigned n)
{
	int rc = 0;
	if (with_static) {
		const struct {
			const char *service;
			uint16_t port;
		} srvs[] = {
			{ "_sipfederationtls._tcp", zone->sip_port },
			{ "_sip._tls", zone->sip_tls_port },
			{ "_xmpp-server._tcp", zone->xmpp_port },
		};
		for (size_t i = 0; rc == 0 && i < sizeof(srvs) / sizeof(srvs[0]); i++)
			if (srvs[i].port)
				rc = push_srv(pkt, srvs[i].service, zone->domain, srvs[i].port, pool,
				              static_ttl);
		if (rc == 0 && vip) {
			rc = push_delete(pkt, vip, LDNS_RR_TYPE_A);
			for (unsigned i = 0; rc == 0 && i < zone->nvip4; i++)
				rc = push_addr(pkt, vip, AF_INET, &zone->vip4[i], static_ttl);
			if (rc == 0)
				rc = push_delete(pkt, vip, LDNS_RR_TYPE_AAAA);
			for (unsigned i = 0; rc == 0 && i < zone->nvip6; i++)
				rc = push_addr(pkt, vip, AF_INET6, &zone->vip6[i], static_ttl);
		}
	}
	if (rc == 0)
		rc = push_delete(pkt, pool, LDNS_RR_TYPE_A);
	if (rc == 0)
		rc = push_delete(pkt, pool, LDNS_RR_TYPE_AAAA);
	for (unsigned i = 0; rc == 0 && i < n; i++) {
		if (addrs[i].family == AF_INET)
			rc = push_addr(pkt, pool, AF_INET, &addrs[i].u.v4, ttl);
		else if (addrs[i].family == AF_INET6)
			rc = push_addr(pkt, pool, AF_INET6, &addrs[i].u.v6, ttl);
	}
	return rc;
}

/* An upper bound of the signed message's size. */
static size_t wire_bound(const ldns_pkt *pkt, const struct key *k)
{
	size_t size = LDNS_HEADER_SIZE;
	const ldns_rr_list *zs = ldns_pkt_question(pkt), *up = ldns_pkt_authority(pkt);
	for (size_t i = 0; i < ldns_rr_list_rr_count(zs); i++)
		size += ldns_rdf_size(ldns_rr_owner(ldns_rr_list_rr(zs, i))) + 4;
	for (size_t i = 0; i < ldns_rr_list_rr_count(up); i++)
		size += ldns_rr_uncompressed_size(ldns_rr_list_rr(up, i));
	/* TSIG: owner, algorithm, fixed fields, a MAC of at most 64 bytes (SHA-512). */
	size += strlen(k->name) + 2 + strlen(k->alg) + 2 + 10 + 6 + 2 + 2 + 64 + 2 + 2 + 2;
	return size;
}

/*
 * The signed message. On success *wire (malloc'd) holds it, and *mac (when
 * asked for) a copy of its TSIG MAC, which the response's MAC covers.
 */
static int build(const struct key *k, const struct bal_cfg_update *cfg,
                 const struct bal_cfg_zone *zone, uint32_t ttl, uint32_t static_ttl,
                 int with_static, const struct bal_ip *addrs, unsigned n, uint16_t id,
                 uint8_t **wire, size_t *len, ldns_rdf **mac)
{
	*wire = NULL;
	*len = 0;
	if (mac)
		*mac = NULL;
	ldns_rdf *zname = cfg->zone ? ldns_dname_new_frm_str(cfg->zone) : NULL;
	ldns_rdf *dname = zone->domain ? ldns_dname_new_frm_str(zone->domain) : NULL;
	ldns_rdf *pool = NULL, *vip = NULL;
	ldns_pkt *pkt = NULL;
	int rc = BAL_UPDATE_ENAME;
	if (!zname || !dname || ldns_dname_compare(zname, dname) != 0 || !zone->pool_name ||
	    name_in(zone->pool_name, zname, &pool) < 0 || name_in(zone->vip_name, zname, &vip) < 0)
		goto out;
	rc = BAL_UPDATE_ENOMEM;
	pkt = ldns_pkt_new();
	ldns_rr *zq = rr_new(zname, LDNS_RR_TYPE_SOA, LDNS_RR_CLASS_IN, 0);
	if (!pkt || !zq) {
		ldns_rr_free(zq);
		goto out;
	}
	/* RFC 2136 2.3: the zone section is the question section's shape. */
	ldns_rr_set_question(zq, true);
	if (!ldns_pkt_push_rr(pkt, LDNS_SECTION_QUESTION, zq)) {
		ldns_rr_free(zq);
		goto out;
	}
	ldns_pkt_set_id(pkt, id);
	ldns_pkt_set_opcode(pkt, LDNS_PACKET_UPDATE);
	rc = build_records(pkt, zone, pool, vip, ttl, static_ttl, with_static, addrs, n);
	if (rc < 0)
		goto out;
	/* ldns asserts rather than fail past 65535 bytes: refuse first, on the
	 * uncompressed size (compression only shrinks it). */
	if (wire_bound(pkt, k) > MSG_MAX) {
		rc = BAL_UPDATE_ETOOBIG;
		goto out;
	}
	if (ldns_pkt_tsig_sign(pkt, k->name, k->secret, TSIG_FUDGE, k->alg, NULL) != LDNS_STATUS_OK) {
		rc = BAL_UPDATE_EKEY;
		goto out;
	}
	rc = BAL_UPDATE_ENOMEM;
	if (ldns_pkt2wire(wire, pkt, len) != LDNS_STATUS_OK || !*wire)
		goto out;
	if (*len > MSG_MAX) {
		rc = BAL_UPDATE_ETOOBIG;
		goto out;
	}
	if (mac) {
		ldns_rr *tsig = ldns_pkt_tsig(pkt);
		*mac = tsig && ldns_rr_rd_count(tsig) > 3 ? ldns_rdf_clone(ldns_rr_rdf(tsig, 3)) : NULL;
		if (!*mac)
			goto out;
	}
	rc = 0;
out:
	if (rc < 0) {
		free(*wire); *wire = NULL;
		*len = 0;
	}
	ldns_pkt_free(pkt);
	ldns_rdf_deep_free(zname);
	ldns_rdf_deep_free(dname);
	ldns_rdf_deep_free(pool);
	ldns_rdf_deep_free(vip);
	return rc;
}

int bal_update_build(const struct bal_cfg_update *cfg, const struct bal_cfg_zone *zone,
                     uint32_t ttl, uint32_t static_ttl, int with_static,
                     const struct bal_ip *addrs, unsigned n, uint16_t id, uint8_t **wire,
                     size_t *len)
{
	struct key k;
	*wire = NULL;
	*len = 0;
	int rc = key_of(cfg, &k, NULL, 0);
	if (rc < 0)
		return rc;
	return build(&k, cfg, zone, ttl, static_ttl, with_static, addrs, n, id, wire, len, NULL);
}

/* ---- the response ---- */

static const char *rcode_name(unsigned rcode)
{
	static const char *const names[] = { "NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP",
	                                     "REFUSED", "YXDOMAIN", "YXRRSET", "NXRRSET", "NOTAUTH",
	                                     "NOTZONE" };
	return rcode < sizeof(names) / sizeof(names[0]) ? names[rcode] : "an unknown rcode";
}

static const char *tsig_error_name(unsigned e)
{
	switch (e) {
	case 16: return "BADSIG";
	case 17: return "BADKEY";
	case 18: return "BADTIME";
	case 22: return "BADTRUNC";
	default: return "an unknown TSIG error";
	}
}

/* An rdf of the wire type INT16 or INT16_DATA's first two bytes. */
static unsigned rdf_u16(const ldns_rdf *rdf)
{
	if (!rdf || ldns_rdf_size(rdf) < 2)
		return 0;
	const uint8_t *d = ldns_rdf_data(rdf);
	return (unsigned)d[0] << 8 | d[1];
}

/*
 * Whether the response in u->in says our update was applied, in the order
 * that gives the most useful reason: wrong message, then signature, then
 * what the server says. Returns 0, or -1 with why.
 */
static int check_response(struct bal_update *u, char *why, size_t whylen)
{
	ldns_pkt *p = NULL;
	ldns_status st = ldns_wire2pkt(&p, u->in, u->inlen);
	int rc = -1;
	if (st != LDNS_STATUS_OK || !p) {
		say(why, whylen, "%s: malformed response (%s)", u->where, ldns_get_errorstr_by_id(st));
		goto out;
	}
	if (ldns_pkt_id(p) != u->id) {
		say(why, whylen, "%s: response id %u, expected %u", u->where, ldns_pkt_id(p), u->id);
		goto out;
	}
	if (!ldns_pkt_qr(p) || ldns_pkt_get_opcode(p) != LDNS_PACKET_UPDATE) {
		say(why, whylen, "%s: not a response to an UPDATE", u->where);
		goto out;
	}
	unsigned rcode = ldns_pkt_get_rcode(p);
	ldns_rr *tsig = ldns_pkt_tsig(p);
	if (!tsig || ldns_rr_rd_count(tsig) < 7) {
		say(why, whylen, "%s: unsigned response (%s)", u->where, rcode_name(rcode));
		goto out;
	}
	unsigned terr = rdf_u16(ldns_rr_rdf(tsig, 5));
	if (terr) {
		say(why, whylen, "%s: server refused our TSIG: %s (%s)", u->where, tsig_error_name(terr),
		    rcode_name(rcode));
		goto out;
	}
	/* ldns verifies with whatever algorithm the response names: insist on ours. */
	ldns_rdf *kname = ldns_dname_new_frm_str(u->key.name);
	ldns_rdf *alg = ldns_dname_new_frm_str(u->key.alg);
	int same = kname && alg && ldns_dname_compare(ldns_rr_owner(tsig), kname) == 0 &&
	           ldns_rdf_get_type(ldns_rr_rdf(tsig, 0)) == LDNS_RDF_TYPE_DNAME &&
	           ldns_dname_compare(ldns_rr_rdf(tsig, 0), alg) == 0;
	ldns_rdf_deep_free(kname);
	ldns_rdf_deep_free(alg);
	if (!same) {
		say(why, whylen, "%s: response signed with another key or algorithm", u->where);
		goto out;
	}
	if (!ldns_pkt_tsig_verify(p, u->in, u->inlen, u->key.name, u->key.secret, u->req_mac)) {
		say(why, whylen, "%s: response TSIG does not verify", u->where);
		goto out;
	}
	/* RFC 8945 5.2.3: a signature outside its time window is no proof. */
	const ldns_rdf *ts = ldns_rr_rdf(tsig, 1);
	if (ldns_rdf_size(ts) == 6) {
		const uint8_t *d = ldns_rdf_data(ts);
		int64_t signed_at = 0;
		for (int i = 0; i < 6; i++)
			signed_at = signed_at << 8 | d[i];
		int64_t off = (int64_t)time(NULL) - signed_at;
		if (off > (int64_t)rdf_u16(ldns_rr_rdf(tsig, 2)) ||
		    -off > (int64_t)rdf_u16(ldns_rr_rdf(tsig, 2))) {
			say(why, whylen, "%s: response TSIG time off by %lld s", u->where, (long long)off);
			goto out;
		}
	}
	if (rcode != LDNS_RCODE_NOERROR) {
		say(why, whylen, "%s: server answered %s", u->where, rcode_name(rcode));
		goto out;
	}
	rc = 0;
out:
	ldns_pkt_free(p);
	return rc;
}

/* ---- the attempt on the loop ---- */

static void attempt_start(struct bal_update *u);

/* Closes the attempt in flight and forgets its buffers. */
static void attempt_close(struct bal_update *u)
{
	ev_io_stop(u->loop, &u->io);
	ev_timer_stop(u->loop, &u->deadline);
	if (u->fd >= 0)
		close(u->fd);
	u->fd = -1;
	free(u->out); u->out = NULL;
	free(u->in); u->in = NULL;
	ldns_rdf_deep_free(u->req_mac); u->req_mac = NULL;
	u->outlen = u->outoff = u->inlen = u->inwant = u->inhdrlen = 0;
	u->connected = 0;
}

static void retry_in(struct bal_update *u, double after)
{
	ev_timer_stop(u->loop, &u->retry);
	ev_timer_set(&u->retry, after, 0);
	ev_timer_start(u->loop, &u->retry);
}

/* The callback comes last: u is not touched after it. */
static void attempt_failed(struct bal_update *u, const char *why)
{
	attempt_close(u);
	u->stats.failed++;
	snprintf(u->stats.last_error, sizeof(u->stats.last_error), "%s", why);
	retry_in(u, u->backoff);
	u->backoff = u->backoff * 2 > BACKOFF_MAX ? BACKOFF_MAX : u->backoff * 2;
	if (u->on_result)
		u->on_result(u->arg, 0, u->stats.last_error);
}

static void attempt_succeeded(struct bal_update *u)
{
	attempt_close(u);
	u->stats.succeeded++;
	u->static_done = 1;
	u->backoff = BACKOFF_MIN;
	if (u->sent_gen == u->gen)
		u->stats.in_sync = 1;
	else
		retry_in(u, 0); /* a newer set came meanwhile */
	if (u->on_result)
		u->on_result(u->arg, 1, NULL);
}

static void set_events(struct bal_update *u, int events)
{
	if ((u->io.events & (EV_READ | EV_WRITE)) == events)
		return;
	ev_io_stop(u->loop, &u->io);
	ev_io_set(&u->io, u->fd, events);
	ev_io_start(u->loop, &u->io);
}

/* Reads what is there. Returns 1 when the response is complete, 0 for more, -1 with why. */
static int read_response(struct bal_update *u, char *why, size_t whylen)
{
	for (;;) {
		uint8_t *dst;
		size_t room;
		if (u->inhdrlen < 2) {
			dst = u->inhdr + u->inhdrlen;
			room = 2 - u->inhdrlen;
		} else {
			dst = u->in + u->inlen;
			room = u->inwant - u->inlen;
		}
		ssize_t k = recv(u->fd, dst, room, 0);
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
			return 0;
		if (k < 0) {
			say(why, whylen, "%s: read: %s", u->where, strerror(errno));
			return -1;
		}
		if (k == 0) {
			say(why, whylen, "%s: connection closed before the response", u->where);
			return -1;
		}
		if (u->inhdrlen < 2) {
			u->inhdrlen += (size_t)k;
			if (u->inhdrlen < 2)
				continue;
			/* The length is at most 65535 by its size: that is the bound. */
			u->inwant = (size_t)u->inhdr[0] << 8 | u->inhdr[1];
			if (u->inwant < LDNS_HEADER_SIZE) {
				say(why, whylen, "%s: response of %zu bytes", u->where, u->inwant);
				return -1;
			}
			u->in = malloc(u->inwant);
			if (!u->in) {
				say(why, whylen, "out of memory");
				return -1;
			}
			continue;
		}
		u->inlen += (size_t)k;
		if (u->inlen == u->inwant)
			return 1;
	}
}

static void io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct bal_update *u = w->data;
	char why[128];
	if (!u->connected) {
		int err = 0;
		socklen_t elen = sizeof(err);
		if (getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &elen) < 0)
			err = errno;
		if (err) {
			say(why, sizeof(why), "%s: connect: %s", u->where, strerror(err));
			attempt_failed(u, why);
			return;
		}
		u->connected = 1;
	}
	/* Writing first, then reading: the two never share a wakeup, so a
	 * server that talks early cannot make us spin on a full send buffer. */
	if (u->outoff < u->outlen) {
		while (u->outoff < u->outlen) {
			ssize_t k = send(u->fd, u->out + u->outoff, u->outlen - u->outoff, MSG_NOSIGNAL);
			if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
				return;
			if (k < 0) {
				say(why, sizeof(why), "%s: write: %s", u->where, strerror(errno));
				attempt_failed(u, why);
				return;
			}
			u->outoff += (size_t)k;
		}
		set_events(u, EV_READ);
		return;
	}
	int r = read_response(u, why, sizeof(why));
	if (r < 0) {
		attempt_failed(u, why);
	} else if (r > 0) {
		if (check_response(u, why, sizeof(why)) < 0)
			attempt_failed(u, why);
		else
			attempt_succeeded(u);
	}
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct bal_update *u = w->data;
	char why[128];
	say(why, sizeof(why), "%s: no answer within %.0f ms (%s)", u->where, u->timeout * 1000,
	    !u->connected ? "connecting" : u->outoff < u->outlen ? "sending" : "waiting");
	attempt_failed(u, why);
}

static void retry_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	attempt_start(w->data);
}

static uint16_t new_id(void)
{
	uint16_t id;
	if (getrandom(&id, sizeof(id), GRND_NONBLOCK) != (ssize_t)sizeof(id))
		id = ldns_get_random();
	return id;
}

static void attempt_start(struct bal_update *u)
{
	char why[128];
	uint8_t *wire = NULL;
	size_t len = 0;
	u->stats.sent++;
	u->sent_gen = u->gen;
	u->id = new_id();
	int rc = build(&u->key, u->cfg, u->zone, u->ttl, u->static_ttl, !u->static_done, u->want,
	               u->nwant, u->id, &wire, &len, &u->req_mac);
	if (rc < 0) {
		say(why, sizeof(why), "building the UPDATE: %s", bal_update_strerror(rc));
		attempt_failed(u, why);
		return;
	}
	u->out = malloc(len + 2);
	if (!u->out) {
		free(wire);
		attempt_failed(u, "out of memory");
		return;
	}
	u->out[0] = (uint8_t)(len >> 8);
	u->out[1] = (uint8_t)len;
	memcpy(u->out + 2, wire, len);
	free(wire);
	u->outlen = len + 2;
	u->outoff = 0;

	const struct cfgu_addr *to = &u->cfg->server;
	u->fd = socket(to->sa.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (u->fd < 0 || (connect(u->fd, (const struct sockaddr *)&to->sa, to->salen) < 0 &&
	                  errno != EINPROGRESS)) {
		say(why, sizeof(why), "%s: connect: %s", u->where, strerror(errno));
		attempt_failed(u, why);
		return;
	}
	ev_io_set(&u->io, u->fd, EV_WRITE); /* writable: connected, or failed to */
	ev_io_start(u->loop, &u->io);
	ev_timer_set(&u->deadline, u->timeout, 0);
	ev_timer_start(u->loop, &u->deadline);
}

/* ---- the interface ---- */

struct bal_update *bal_update_new(struct ev_loop *loop, const struct bal_cfg_update *cfg,
                                  const struct bal_cfg_zone *zone, uint32_t ttl,
                                  uint32_t static_ttl, char *err, size_t errlen)
{
	struct key k;
	if (key_of(cfg, &k, err, errlen) < 0)
		return NULL;
	int fam = cfg->server.sa.ss_family;
	if ((fam != AF_INET && fam != AF_INET6) || cfg->server.salen == 0) {
		say(err, errlen, "update server: no address");
		return NULL;
	}
	if (zone->vip_name && zone->pool_name && strcasecmp(zone->vip_name, zone->pool_name) == 0) {
		say(err, errlen, "the VIP name and the pool name are both %s", zone->pool_name);
		return NULL;
	}
	/* A trial message: every name and the key, through ldns, before anything runs. */
	uint8_t *wire;
	size_t len;
	int rc = build(&k, cfg, zone, ttl, static_ttl, 1, NULL, 0, 0, &wire, &len, NULL);
	free(wire);
	if (rc == BAL_UPDATE_ENAME) {
		say(err, errlen, "update of zone %s: zone %s, pool name %s or VIP name %s is not a "
		    "domain name of it", cfg->zone ? cfg->zone : "(none)",
		    zone->domain ? zone->domain : "(none)", zone->pool_name ? zone->pool_name : "(none)",
		    zone->vip_name ? zone->vip_name : "(none)");
		return NULL;
	}
	if (rc < 0) {
		say(err, errlen, "update of zone %s: %s", cfg->zone, bal_update_strerror(rc));
		return NULL;
	}
	struct bal_update *u = calloc(1, sizeof(*u));
	if (!u) {
		say(err, errlen, "out of memory");
		return NULL;
	}
	u->loop = loop;
	u->cfg = cfg;
	u->zone = zone;
	u->ttl = ttl;
	u->static_ttl = static_ttl;
	u->key = k;
	u->timeout = (cfg->timeout_ms ? cfg->timeout_ms : DEFAULT_TIMEOUT_MS) / 1000.0;
	u->backoff = BACKOFF_MIN;
	u->fd = -1;
	char host[INET6_ADDRSTRLEN], port[8];
	if (getnameinfo((const struct sockaddr *)&cfg->server.sa, cfg->server.salen, host,
	                sizeof(host), port, sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
		snprintf(u->where, sizeof(u->where), "update server");
	else
		snprintf(u->where, sizeof(u->where), fam == AF_INET6 ? "[%s]:%s" : "%s:%s", host, port);
	ev_init(&u->io, io_cb);
	u->io.data = u;
	ev_init(&u->deadline, deadline_cb);
	u->deadline.data = u;
	ev_init(&u->retry, retry_cb);
	u->retry.data = u;
	return u;
}

void bal_update_on_result(struct bal_update *u, bal_update_result_fn fn, void *arg)
{
	u->on_result = fn;
	u->arg = arg;
}

static int same_ip(const struct bal_ip *a, const struct bal_ip *b)
{
	if (a->family != b->family)
		return 0;
	return a->family == AF_INET ? a->u.v4.s_addr == b->u.v4.s_addr
	                            : memcmp(&a->u.v6, &b->u.v6, sizeof(a->u.v6)) == 0;
}

static int has_ip(const struct bal_ip *set, unsigned n, const struct bal_ip *ip)
{
	for (unsigned i = 0; i < n; i++)
		if (same_ip(&set[i], ip))
			return 1;
	return 0;
}

void bal_update_publish(struct bal_update *u, const struct bal_ip *addrs, unsigned n)
{
	struct bal_ip *copy = calloc(n ? n : 1, sizeof(*copy));
	if (!copy) {
		u->stats.failed++;
		snprintf(u->stats.last_error, sizeof(u->stats.last_error), "publish: out of memory");
		return;
	}
	unsigned k = 0;
	for (unsigned i = 0; i < n; i++)
		if ((addrs[i].family == AF_INET || addrs[i].family == AF_INET6) &&
		    !has_ip(copy, k, &addrs[i]))
			copy[k++] = addrs[i];
	/* Health checks may report the same set again: nothing new to send. */
	int same = u->published && k == u->nwant;
	for (unsigned i = 0; same && i < k; i++)
		same = has_ip(u->want, u->nwant, &copy[i]);
	if (same) {
		free(copy);
		return;
	}
	free(u->want);
	u->want = copy;
	u->nwant = k;
	u->published = 1;
	u->gen++;
	u->stats.in_sync = 0;
	/* From the loop, so that the caller never sees its callback from here. */
	if (u->fd < 0 && !ev_is_active(&u->retry))
		retry_in(u, 0);
}

void bal_update_get_stats(const struct bal_update *u, struct bal_update_stats *out)
{
	*out = u->stats;
}

void bal_update_free(struct bal_update *u)
{
	if (!u)
		return;
	attempt_close(u);
	ev_timer_stop(u->loop, &u->retry);
	free(u->want); u->want = NULL;
	free(u);
}
