/*
 * Tests for balancer/bal_update.c: the UPDATE message as ldns parses it
 * (zone section, deletes, adds, static records, TSIG that verifies with the
 * key and not with another), the checks of bal_update_new(), and the
 * updater on a libev loop against a fake primary in this process that
 * answers as told: success, coalescing while one is in flight, retry after
 * REFUSED, responses with another id, another key, no signature, none at
 * all, a refused connection with its backoff, a free while in flight.
 * tests/integration/test_bal_update.py does the same against a real BIND.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "run_until.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <ldns/ldns.h>

#include "bal_update.h"

#define KEY_NAME "balancer-key"
#define SECRET "c2VjcmV0IHNlY3JldCBzZWNyZXQgc2VjcmV0IDEyMzQ=" /* 32 bytes */
#define OTHER_SECRET "b3RoZXIgb3RoZXIgb3RoZXIgb3RoZXIgb3RoZXIgMTI=" /* 32 bytes */

static struct in_addr vip4[1];
static struct in6_addr vip6[1];

static struct bal_cfg_zone zone_cfg(void)
{
	inet_pton(AF_INET, "198.18.0.10", &vip4[0]);
	inet_pton(AF_INET6, "fd00::10", &vip6[0]);
	struct bal_cfg_zone z = {
		.domain = "contoso.test", .pool_name = "sip.contoso.test",
		.vip_name = "vip.contoso.test", .vip4 = vip4, .nvip4 = 1, .vip6 = vip6, .nvip6 = 1,
		.sip_port = 5061, .sip_tls_port = 443, .xmpp_port = 5269,
	};
	return z;
}

static struct bal_cfg_update update_cfg(uint16_t port)
{
	struct bal_cfg_update c = {
		.zone = "contoso.test", .tsig_name = KEY_NAME, .tsig_algorithm = "hmac-sha256",
		.tsig_secret = SECRET, .timeout_ms = 1000,
	};
	struct sockaddr_in *a = (struct sockaddr_in *)&c.server.sa;
	a->sin_family = AF_INET;
	a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a->sin_port = htons(port);
	c.server.salen = sizeof(*a);
	return c;
}

static struct bal_ip ip(const char *s)
{
	struct bal_ip r;
	memset(&r, 0, sizeof(r));
	r.family = strchr(s, ':') ? AF_INET6 : AF_INET;
	assert_int_equal(inet_pton(r.family, s, &r.u), 1);
	return r;
}

/* ---- the message ---- */

/* One RR of the update section as its bytes say, read without ldns. */
struct raw_rr {
	uint16_t type, cls, rdlength;
	uint32_t ttl;
};

static size_t skip_name(const uint8_t *w, size_t len, size_t pos)
{
	while (pos < len) {
		if ((w[pos] & 0xc0) == 0xc0)
			return pos + 2;
		if (w[pos] == 0)
			return pos + 1;
		pos += 1 + w[pos];
	}
	fail_msg("name runs past the message");
	return len;
}

/* The update section's RRs, in order; returns their count. */
static unsigned raw_updates(const uint8_t *w, size_t len, struct raw_rr *out, unsigned max)
{
	assert_true(len >= 12);
	unsigned qd = w[4] << 8 | w[5], an = w[6] << 8 | w[7], ns = w[8] << 8 | w[9];
	assert_int_equal(qd, 1);
	assert_int_equal(an, 0);
	assert_true(ns <= max);
	size_t pos = skip_name(w, len, 12) + 4;
	for (unsigned i = 0; i < ns; i++) {
		pos = skip_name(w, len, pos);
		assert_true(pos + 10 <= len);
		out[i].type = w[pos] << 8 | w[pos + 1];
		out[i].cls = w[pos + 2] << 8 | w[pos + 3];
		out[i].ttl = (uint32_t)w[pos + 4] << 24 | w[pos + 5] << 16 | w[pos + 6] << 8 | w[pos + 7];
		out[i].rdlength = w[pos + 8] << 8 | w[pos + 9];
		pos += 10 + out[i].rdlength;
		assert_true(pos <= len);
	}
	return ns;
}

static ldns_pkt *parse(const uint8_t *wire, size_t len)
{
	ldns_pkt *p = NULL;
	assert_int_equal(ldns_wire2pkt(&p, wire, len), LDNS_STATUS_OK);
	return p;
}

static int is_name(const ldns_rdf *rdf, const char *name)
{
	ldns_rdf *n = ldns_dname_new_frm_str(name);
	int same = n && ldns_dname_compare(rdf, n) == 0;
	ldns_rdf_deep_free(n);
	return same;
}

/* The update RR at i: owner, type, class, ttl, and its rdata as text ("" for none). */
static void expect_rr(const ldns_pkt *p, size_t i, const char *owner, ldns_rr_type type,
                      ldns_rr_class cls, uint32_t ttl, const char *rdata)
{
	const ldns_rr *rr = ldns_rr_list_rr(ldns_pkt_authority(p), i);
	assert_non_null(rr);
	if (!is_name(ldns_rr_owner(rr), owner)) {
		char *o = ldns_rdf2str(ldns_rr_owner(rr));
		fail_msg("update %zu: owner %s, expected %s", i, o, owner);
	}
	assert_int_equal(ldns_rr_get_type(rr), type);
	assert_int_equal(ldns_rr_get_class(rr), cls);
	assert_int_equal(ldns_rr_ttl(rr), ttl);
	char text[300] = "";
	for (size_t k = 0; k < ldns_rr_rd_count(rr); k++) {
		char *s = ldns_rdf2str(ldns_rr_rdf(rr, k));
		snprintf(text + strlen(text), sizeof(text) - strlen(text), "%s%s", k ? " " : "", s);
		free(s);
	}
	if (strcmp(text, rdata) != 0)
		fail_msg("update %zu (%s): rdata \"%s\", expected \"%s\"", i, owner, text, rdata);
}

static void expect_tsig(ldns_pkt *p, const uint8_t *wire, size_t len, const char *alg)
{
	ldns_rr *tsig = ldns_pkt_tsig(p);
	assert_non_null(tsig);
	assert_true(is_name(ldns_rr_owner(tsig), KEY_NAME));
	assert_true(is_name(ldns_rr_rdf(tsig, 0), alg));
	assert_true(ldns_pkt_tsig_verify(p, wire, len, KEY_NAME, SECRET, NULL));
	assert_false(ldns_pkt_tsig_verify(p, wire, len, KEY_NAME, OTHER_SECRET, NULL));
	assert_false(ldns_pkt_tsig_verify(p, wire, len, "another-key", SECRET, NULL));
}

static void test_build_pool(void **state)
{
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update c = update_cfg(53);
	struct bal_ip addrs[3] = { ip("127.0.0.2"), ip("127.0.0.3"), ip("2001:db8::5") };
	uint8_t *wire;
	size_t len;
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 0, addrs, 3, 0x1234, &wire, &len), 0);

	ldns_pkt *p = parse(wire, len);
	assert_int_equal(ldns_pkt_get_opcode(p), LDNS_PACKET_UPDATE);
	assert_int_equal(ldns_pkt_id(p), 0x1234);
	assert_false(ldns_pkt_qr(p));
	assert_int_equal(ldns_update_zocount(p), 1);
	assert_int_equal(ldns_update_prcount(p), 0);
	assert_int_equal(ldns_update_upcount(p), 5);
	assert_int_equal(ldns_rr_list_rr_count(ldns_pkt_additional(p)), 0);
	const ldns_rr *zq = ldns_rr_list_rr(ldns_pkt_question(p), 0);
	assert_true(is_name(ldns_rr_owner(zq), "contoso.test."));
	assert_int_equal(ldns_rr_get_type(zq), LDNS_RR_TYPE_SOA);
	assert_int_equal(ldns_rr_get_class(zq), LDNS_RR_CLASS_IN);

	expect_rr(p, 0, "sip.contoso.test.", LDNS_RR_TYPE_A, LDNS_RR_CLASS_ANY, 0, "");
	expect_rr(p, 1, "sip.contoso.test.", LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_ANY, 0, "");
	expect_rr(p, 2, "sip.contoso.test.", LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, 5, "127.0.0.2");
	expect_rr(p, 3, "sip.contoso.test.", LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, 5, "127.0.0.3");
	expect_rr(p, 4, "sip.contoso.test.", LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_IN, 5, "2001:db8::5");
	expect_tsig(p, wire, len, "hmac-sha256.");

	/* The bytes themselves: deletes are class ANY, TTL 0, rdlength 0. */
	struct raw_rr raw[8];
	assert_int_equal(raw_updates(wire, len, raw, 8), 5);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(raw[i].type, i == 0 ? 1 : 28);
		assert_int_equal(raw[i].cls, 255);
		assert_int_equal(raw[i].ttl, 0);
		assert_int_equal(raw[i].rdlength, 0);
	}
	assert_int_equal(raw[2].rdlength, 4);
	assert_int_equal(raw[4].rdlength, 16);
	/* No flag set (RD belongs to queries), TSIG the one additional record. */
	assert_int_equal(wire[2] & 0x87, 0);
	assert_int_equal(wire[3], 0);
	assert_int_equal(wire[10] << 8 | wire[11], 1);
	ldns_pkt_free(p);
	free(wire);
}

static void test_build_static(void **state)
{
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update c = update_cfg(53);
	struct bal_ip addrs[1] = { ip("127.0.0.2") };
	uint8_t *wire;
	size_t len;
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 1, addrs, 1, 7, &wire, &len), 0);
	ldns_pkt *p = parse(wire, len);
	assert_int_equal(ldns_update_upcount(p), 13);
	size_t i = 0;
	expect_rr(p, i++, "_sipfederationtls._tcp.contoso.test.", LDNS_RR_TYPE_SRV,
	          LDNS_RR_CLASS_ANY, 0, "");
	expect_rr(p, i++, "_sipfederationtls._tcp.contoso.test.", LDNS_RR_TYPE_SRV,
	          LDNS_RR_CLASS_IN, 300, "0 0 5061 sip.contoso.test.");
	expect_rr(p, i++, "_sip._tls.contoso.test.", LDNS_RR_TYPE_SRV, LDNS_RR_CLASS_ANY, 0, "");
	expect_rr(p, i++, "_sip._tls.contoso.test.", LDNS_RR_TYPE_SRV, LDNS_RR_CLASS_IN, 300,
	          "0 0 443 sip.contoso.test.");
	expect_rr(p, i++, "_xmpp-server._tcp.contoso.test.", LDNS_RR_TYPE_SRV, LDNS_RR_CLASS_ANY, 0,
	          "");
	expect_rr(p, i++, "_xmpp-server._tcp.contoso.test.", LDNS_RR_TYPE_SRV, LDNS_RR_CLASS_IN, 300,
	          "0 0 5269 sip.contoso.test.");
	expect_rr(p, i++, "vip.contoso.test.", LDNS_RR_TYPE_A, LDNS_RR_CLASS_ANY, 0, "");
	expect_rr(p, i++, "vip.contoso.test.", LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, 300, "198.18.0.10");
	expect_rr(p, i++, "vip.contoso.test.", LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_ANY, 0, "");
	expect_rr(p, i++, "vip.contoso.test.", LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_IN, 300, "fd00::10");
	expect_rr(p, i++, "sip.contoso.test.", LDNS_RR_TYPE_A, LDNS_RR_CLASS_ANY, 0, "");
	expect_rr(p, i++, "sip.contoso.test.", LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_ANY, 0, "");
	expect_rr(p, i++, "sip.contoso.test.", LDNS_RR_TYPE_A, LDNS_RR_CLASS_IN, 5, "127.0.0.2");
	expect_tsig(p, wire, len, "hmac-sha256.");
	ldns_pkt_free(p);
	free(wire);

	/* Port 0 and no VIP name: those records are not ours, untouched. */
	z.xmpp_port = 0;
	z.sip_tls_port = 0;
	z.vip_name = NULL;
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 1, NULL, 0, 7, &wire, &len), 0);
	p = parse(wire, len);
	assert_int_equal(ldns_update_upcount(p), 4);
	expect_rr(p, 0, "_sipfederationtls._tcp.contoso.test.", LDNS_RR_TYPE_SRV,
	          LDNS_RR_CLASS_ANY, 0, "");
	expect_rr(p, 2, "sip.contoso.test.", LDNS_RR_TYPE_A, LDNS_RR_CLASS_ANY, 0, "");
	expect_rr(p, 3, "sip.contoso.test.", LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_ANY, 0, "");
	ldns_pkt_free(p);
	free(wire);
}

static void test_build_algorithms(void **state)
{
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update c = update_cfg(53);
	uint8_t *wire;
	size_t len;
	const char *ok[][2] = { { "hmac-sha512", "hmac-sha512." }, { "HMAC-SHA1.", "hmac-sha1." },
	                        { NULL, "hmac-sha256." } };
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		c.tsig_algorithm = ok[i][0];
		assert_int_equal(bal_update_build(&c, &z, 5, 300, 0, NULL, 0, 1, &wire, &len), 0);
		ldns_pkt *p = parse(wire, len);
		expect_tsig(p, wire, len, ok[i][1]);
		ldns_pkt_free(p);
		free(wire);
	}
	const char *bad[] = { "hmac-md5", "hmac-sha384", "hmac-sha224", "gss-tsig", "sha256" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		c.tsig_algorithm = bad[i];
		assert_int_equal(bal_update_build(&c, &z, 5, 300, 0, NULL, 0, 1, &wire, &len),
		                 BAL_UPDATE_EKEY);
		assert_null(wire);
	}
}

static void test_build_errors(void **state)
{
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update c = update_cfg(53);
	uint8_t *wire;
	size_t len;
	c.tsig_secret = "not base64!";
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 0, NULL, 0, 1, &wire, &len), BAL_UPDATE_EKEY);
	c.tsig_secret = "";
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 0, NULL, 0, 1, &wire, &len), BAL_UPDATE_EKEY);
	c = update_cfg(53);
	z.pool_name = "sip.fabrikam.test";
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 0, NULL, 0, 1, &wire, &len), BAL_UPDATE_ENAME);
	z = zone_cfg();
	z.vip_name = "vip.example.test";
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 1, NULL, 0, 1, &wire, &len), BAL_UPDATE_ENAME);
	z = zone_cfg();
	c.zone = "fabrikam.test";
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 0, NULL, 0, 1, &wire, &len), BAL_UPDATE_ENAME);
	/* The apex itself as the pool name is in the zone; case does not matter. */
	c = update_cfg(53);
	z.pool_name = "CONTOSO.test";
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 0, NULL, 0, 1, &wire, &len), 0);
	free(wire);
	z = zone_cfg();

	/* More addresses than a DNS message can carry. */
	unsigned n = 3000;
	struct bal_ip *many = calloc(n, sizeof(*many));
	assert_non_null(many);
	for (unsigned i = 0; i < n; i++) {
		many[i].family = AF_INET6;
		many[i].u.v6.s6_addr[0] = 0xfd;
		many[i].u.v6.s6_addr[14] = (uint8_t)(i >> 8);
		many[i].u.v6.s6_addr[15] = (uint8_t)i;
	}
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 0, many, n, 1, &wire, &len),
	                 BAL_UPDATE_ETOOBIG);
	assert_null(wire);
	/* A thousand fit, compressed, and still verify. */
	assert_int_equal(bal_update_build(&c, &z, 5, 300, 1, many, 1000, 1, &wire, &len), 0);
	assert_true(len > 28000 && len <= 65535);
	ldns_pkt *p = parse(wire, len);
	assert_int_equal(ldns_update_upcount(p), 12 + 1000);
	expect_rr(p, 1011, "sip.contoso.test.", LDNS_RR_TYPE_AAAA, LDNS_RR_CLASS_IN, 5, "fd00::3e7");
	expect_tsig(p, wire, len, "hmac-sha256.");
	ldns_pkt_free(p);
	free(wire);
	free(many);
	assert_string_equal(bal_update_strerror(BAL_UPDATE_ETOOBIG), "the message would pass 65535 bytes");
}

static void test_new_checks(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update c = update_cfg(53);
	char err[200] = "";
	struct bal_update *u = bal_update_new(loop, &c, &z, 5, 300, err, sizeof(err));
	assert_non_null(u);
	struct bal_update_stats st;
	bal_update_get_stats(u, &st);
	assert_int_equal(st.sent, 0);
	assert_false(st.in_sync);
	assert_string_equal(st.last_error, "");
	bal_update_free(u);
	bal_update_free(NULL);

	c.tsig_algorithm = "hmac-sha384";
	assert_null(bal_update_new(loop, &c, &z, 5, 300, err, sizeof(err)));
	assert_non_null(strstr(err, "hmac-sha384"));
	c = update_cfg(53);
	c.tsig_secret = "%%%";
	assert_null(bal_update_new(loop, &c, &z, 5, 300, err, sizeof(err)));
	assert_non_null(strstr(err, "base64"));
	c = update_cfg(53);
	c.tsig_name = "bad..name";
	assert_null(bal_update_new(loop, &c, &z, 5, 300, err, sizeof(err)));
	assert_non_null(strstr(err, "key name"));
	c = update_cfg(53);
	z.pool_name = "sip.fabrikam.test";
	assert_null(bal_update_new(loop, &c, &z, 5, 300, err, sizeof(err)));
	assert_non_null(strstr(err, "sip.fabrikam.test"));
	z = zone_cfg();
	z.vip_name = z.pool_name;
	assert_null(bal_update_new(loop, &c, &z, 5, 300, err, sizeof(err)));
	z = zone_cfg();
	c.server.salen = 0;
	c.server.sa.ss_family = AF_UNSPEC;
	assert_null(bal_update_new(loop, &c, &z, 5, 300, err, sizeof(err)));
	ev_loop_destroy(loop);
}

/* ---- a fake primary on the loop ---- */

enum mode { ANSWER_OK, ANSWER_REFUSED, ANSWER_OTHER_ID, ANSWER_OTHER_KEY, ANSWER_UNSIGNED,
            ANSWER_NONE, ANSWER_CLOSE, ANSWER_HOLD };

struct fake {
	struct ev_loop *loop;
	int lfd;
	uint16_t port;
	ev_io accept_io;
	enum mode mode;            /* for the next request */
	int conn;                  /* the connection being served, or -1 */
	ev_io conn_io;
	uint8_t buf[65537];
	size_t len;
	unsigned requests;         /* complete requests received */
	int bad_requests;          /* unparsable or not verifying */
	char last_pool[256];       /* the pool name's addresses in the last request */
	int last_static;           /* it carried SRV records */
	ldns_pkt *held;            /* ANSWER_HOLD: the request held back */
	ldns_rdf *held_mac;
	int closed_by_peer;
};

static void fake_close_conn(struct fake *f)
{
	if (f->conn < 0)
		return;
	ev_io_stop(f->loop, &f->conn_io);
	close(f->conn);
	f->conn = -1;
	f->len = 0;
}

static void fake_respond(struct fake *f, ldns_pkt *req, const ldns_rdf *mac, enum mode mode)
{
	ldns_pkt *r = ldns_pkt_new();
	assert_non_null(r);
	ldns_pkt_set_id(r, ldns_pkt_id(req) + (mode == ANSWER_OTHER_ID));
	ldns_pkt_set_qr(r, true);
	ldns_pkt_set_opcode(r, LDNS_PACKET_UPDATE);
	ldns_pkt_set_rcode(r, mode == ANSWER_REFUSED ? LDNS_RCODE_REFUSED : LDNS_RCODE_NOERROR);
	ldns_rr *zq = ldns_rr_clone(ldns_rr_list_rr(ldns_pkt_question(req), 0));
	ldns_rr_set_question(zq, true);
	assert_true(ldns_pkt_push_rr(r, LDNS_SECTION_QUESTION, zq));
	if (mode != ANSWER_UNSIGNED)
		assert_int_equal(ldns_pkt_tsig_sign(r, KEY_NAME, mode == ANSWER_OTHER_KEY ? OTHER_SECRET
		                                    : SECRET, 300, "hmac-sha256.", mac), LDNS_STATUS_OK);
	uint8_t *wire;
	size_t len;
	assert_int_equal(ldns_pkt2wire(&wire, r, &len), LDNS_STATUS_OK);
	uint8_t hdr[2] = { (uint8_t)(len >> 8), (uint8_t)len };
	assert_int_equal(send(f->conn, hdr, 2, MSG_NOSIGNAL), 2);
	assert_int_equal(send(f->conn, wire, len, MSG_NOSIGNAL), (ssize_t)len);
	free(wire);
	ldns_pkt_free(r);
}

/* What the request asks of the pool name, and whether it carries the static records. */
static void fake_note(struct fake *f, const ldns_pkt *req)
{
	f->last_pool[0] = '\0';
	f->last_static = 0;
	const ldns_rr_list *up = ldns_pkt_authority(req);
	for (size_t i = 0; i < ldns_rr_list_rr_count(up); i++) {
		const ldns_rr *rr = ldns_rr_list_rr(up, i);
		f->last_static |= ldns_rr_get_type(rr) == LDNS_RR_TYPE_SRV;
		if (ldns_rr_get_class(rr) != LDNS_RR_CLASS_IN || !is_name(ldns_rr_owner(rr), "sip.contoso.test"))
			continue;
		char *s = ldns_rdf2str(ldns_rr_rdf(rr, 0));
		size_t l = strlen(f->last_pool);
		snprintf(f->last_pool + l, sizeof(f->last_pool) - l, "%s%s", l ? " " : "", s);
		free(s);
	}
}

static void fake_conn_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct fake *f = w->data;
	ssize_t k = recv(f->conn, f->buf + f->len, sizeof(f->buf) - f->len, 0);
	if (k <= 0) {
		if (k == 0 || (errno != EAGAIN && errno != EINTR)) {
			f->closed_by_peer++;
			fake_close_conn(f);
		}
		return;
	}
	f->len += (size_t)k;
	if (f->len < 2 || f->len < 2 + (size_t)(f->buf[0] << 8 | f->buf[1]))
		return;
	size_t mlen = (size_t)(f->buf[0] << 8 | f->buf[1]);
	f->requests++;
	ldns_pkt *req = NULL;
	if (ldns_wire2pkt(&req, f->buf + 2, mlen) != LDNS_STATUS_OK || !ldns_pkt_tsig(req) ||
	    !ldns_pkt_tsig_verify(req, f->buf + 2, mlen, KEY_NAME, SECRET, NULL)) {
		f->bad_requests++;
		ldns_pkt_free(req);
		fake_close_conn(f);
		return;
	}
	fake_note(f, req);
	ldns_rdf *mac = ldns_rdf_clone(ldns_rr_rdf(ldns_pkt_tsig(req), 3));
	f->len = 0;
	switch (f->mode) {
	case ANSWER_NONE:
		break; /* the client's deadline closes it */
	case ANSWER_CLOSE:
		fake_close_conn(f);
		break;
	case ANSWER_HOLD:
		f->held = req;
		f->held_mac = mac;
		return;
	default:
		fake_respond(f, req, mac, f->mode);
		break;
	}
	ldns_rdf_deep_free(mac);
	ldns_pkt_free(req);
}

static void fake_release(struct fake *f, enum mode mode)
{
	assert_non_null(f->held);
	fake_respond(f, f->held, f->held_mac, mode);
	ldns_pkt_free(f->held);
	ldns_rdf_deep_free(f->held_mac);
	f->held = NULL;
	f->held_mac = NULL;
}

static void fake_accept_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct fake *f = w->data;
	int fd = accept4(f->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd < 0)
		return;
	fake_close_conn(f); /* one client at a time, the newest */
	f->conn = fd;
	f->len = 0;
	ev_io_init(&f->conn_io, fake_conn_cb, fd, EV_READ);
	f->conn_io.data = f;
	ev_io_start(loop, &f->conn_io);
}

static struct fake *fake_new(struct ev_loop *loop, enum mode mode)
{
	struct fake *f = calloc(1, sizeof(*f));
	assert_non_null(f);
	f->loop = loop;
	f->mode = mode;
	f->conn = -1;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t alen = sizeof(a);
	f->lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	assert_true(f->lfd >= 0);
	assert_int_equal(bind(f->lfd, (struct sockaddr *)&a, alen), 0);
	assert_int_equal(listen(f->lfd, 8), 0);
	assert_int_equal(getsockname(f->lfd, (struct sockaddr *)&a, &alen), 0);
	f->port = ntohs(a.sin_port);
	ev_io_init(&f->accept_io, fake_accept_cb, f->lfd, EV_READ);
	f->accept_io.data = f;
	ev_io_start(loop, &f->accept_io);
	return f;
}

static void fake_free(struct fake *f)
{
	fake_close_conn(f);
	ev_io_stop(f->loop, &f->accept_io);
	close(f->lfd);
	ldns_pkt_free(f->held);
	ldns_rdf_deep_free(f->held_mac);
	free(f);
}

/* ---- running the loop until something holds ---- */

static int never(void *arg)
{
	return 0;
}

struct ctx {
	struct bal_update *u;
	struct fake *f;
	unsigned want;             /* requests, or failures */
	int results, oks;          /* what the callback saw */
	char why[128];
};

static int in_sync(void *arg)
{
	struct ctx *c = arg;
	struct bal_update_stats st;
	bal_update_get_stats(c->u, &st);
	return st.in_sync;
}

static int failed(void *arg)
{
	struct ctx *c = arg;
	struct bal_update_stats st;
	bal_update_get_stats(c->u, &st);
	return st.failed >= c->want;
}

static int requests(void *arg)
{
	struct ctx *c = arg;
	return c->f->requests >= c->want;
}

static void on_result(void *arg, int ok, const char *why)
{
	struct ctx *c = arg;
	c->results++;
	c->oks += ok;
	snprintf(c->why, sizeof(c->why), "%s", why ? why : "");
	/* Once ok, a reason is never given; a failure always has one. */
	assert_true(ok ? why == NULL : why && *why);
}

static struct bal_update *updater(struct ev_loop *loop, struct ctx *c,
                                  const struct bal_cfg_update *cfg, const struct bal_cfg_zone *z)
{
	char err[200];
	c->u = bal_update_new(loop, cfg, z, 5, 300, err, sizeof(err));
	if (!c->u)
		fail_msg("bal_update_new: %s", err);
	bal_update_on_result(c->u, on_result, c);
	return c->u;
}

static void test_loop_publish(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct ctx c = { 0 };
	c.f = fake_new(loop, ANSWER_OK);
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update cfg = update_cfg(c.f->port);
	updater(loop, &c, &cfg, &z);

	/* Nothing before the first publish; the callback never from publish itself. */
	assert_false(run_until(loop, never, NULL, 0.05));
	assert_int_equal(c.f->requests, 0);
	struct bal_ip a[2] = { ip("127.0.0.2"), ip("2001:db8::2") };
	bal_update_publish(c.u, a, 2);
	assert_int_equal(c.results, 0);
	assert_true(run_until(loop, in_sync, &c, 3));
	assert_int_equal(c.f->requests, 1);
	assert_true(c.f->last_static);
	assert_string_equal(c.f->last_pool, "127.0.0.2 2001:db8::2");

	/* The static records go once; then only the pool name. */
	struct bal_ip b[1] = { ip("127.0.0.3") };
	bal_update_publish(c.u, b, 1);
	struct bal_update_stats st;
	bal_update_get_stats(c.u, &st);
	assert_false(st.in_sync);
	assert_true(run_until(loop, in_sync, &c, 3));
	assert_int_equal(c.f->requests, 2);
	assert_false(c.f->last_static);
	assert_string_equal(c.f->last_pool, "127.0.0.3");

	/* The same set again sends nothing; an empty set empties the name. */
	bal_update_publish(c.u, b, 1);
	assert_false(run_until(loop, never, NULL, 0.1));
	assert_int_equal(c.f->requests, 2);
	bal_update_publish(c.u, NULL, 0);
	assert_true(run_until(loop, in_sync, &c, 3));
	assert_int_equal(c.f->requests, 3);
	assert_string_equal(c.f->last_pool, "");

	bal_update_get_stats(c.u, &st);
	assert_int_equal(st.sent, 3);
	assert_int_equal(st.succeeded, 3);
	assert_int_equal(st.failed, 0);
	assert_int_equal(c.results, 3);
	assert_int_equal(c.oks, 3);
	assert_int_equal(c.f->bad_requests, 0);
	bal_update_free(c.u);
	fake_free(c.f);
	ev_loop_destroy(loop);
}

static void test_loop_coalesce(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct ctx c = { 0 };
	c.f = fake_new(loop, ANSWER_HOLD);
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update cfg = update_cfg(c.f->port);
	updater(loop, &c, &cfg, &z);

	struct bal_ip a[1] = { ip("127.0.0.2") }, b[1] = { ip("127.0.0.3") }, d[1] = { ip("127.0.0.4") };
	bal_update_publish(c.u, a, 1);
	c.want = 1;
	assert_true(run_until(loop, requests, &c, 3));
	/* While A is in flight: B, then D. Only D must follow. */
	bal_update_publish(c.u, b, 1);
	bal_update_publish(c.u, d, 1);
	assert_false(run_until(loop, never, NULL, 0.1));
	assert_int_equal(c.f->requests, 1);
	c.f->mode = ANSWER_OK;
	fake_release(c.f, ANSWER_OK);
	assert_true(run_until(loop, in_sync, &c, 3));
	assert_int_equal(c.f->requests, 2);
	assert_string_equal(c.f->last_pool, "127.0.0.4");
	struct bal_update_stats st;
	bal_update_get_stats(c.u, &st);
	assert_int_equal(st.sent, 2);
	assert_int_equal(st.succeeded, 2);
	bal_update_free(c.u);
	fake_free(c.f);
	ev_loop_destroy(loop);
}

static void test_loop_retry(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct ctx c = { 0 };
	c.f = fake_new(loop, ANSWER_REFUSED);
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update cfg = update_cfg(c.f->port);
	updater(loop, &c, &cfg, &z);

	struct bal_ip a[1] = { ip("127.0.0.2") }, b[1] = { ip("127.0.0.3") };
	bal_update_publish(c.u, a, 1);
	c.want = 1;
	assert_true(run_until(loop, failed, &c, 3));
	struct bal_update_stats st;
	bal_update_get_stats(c.u, &st);
	assert_non_null(strstr(st.last_error, "REFUSED"));
	assert_string_equal(c.why, st.last_error);
	assert_false(st.in_sync);
	/* The retry waits its backoff and carries the newest set, statics still. */
	ev_tstamp t0 = ev_time();
	c.f->mode = ANSWER_OK;
	bal_update_publish(c.u, b, 1);
	assert_true(run_until(loop, in_sync, &c, 3));
	assert_true(ev_time() - t0 > 0.3);
	assert_int_equal(c.f->requests, 2);
	assert_true(c.f->last_static);
	assert_string_equal(c.f->last_pool, "127.0.0.3");
	bal_update_get_stats(c.u, &st);
	assert_int_equal(st.sent, 2);
	assert_int_equal(st.failed, 1);
	assert_int_equal(st.succeeded, 1);
	bal_update_free(c.u);
	fake_free(c.f);
	ev_loop_destroy(loop);
}

/* One attempt against a server answering in mode; the reason must hold `reason`. */
static void one_failure(enum mode mode, const char *reason)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct ctx c = { 0 };
	c.f = fake_new(loop, mode);
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update cfg = update_cfg(c.f->port);
	cfg.timeout_ms = 200;
	updater(loop, &c, &cfg, &z);
	struct bal_ip a[1] = { ip("127.0.0.2") };
	bal_update_publish(c.u, a, 1);
	c.want = 1;
	assert_true(run_until(loop, failed, &c, 3));
	struct bal_update_stats st;
	bal_update_get_stats(c.u, &st);
	if (!strstr(st.last_error, reason))
		fail_msg("mode %d: \"%s\" lacks \"%s\"", mode, st.last_error, reason);
	assert_int_equal(st.failed, 1);
	assert_int_equal(st.succeeded, 0);
	assert_int_equal(st.sent, 1);
	assert_false(st.in_sync);
	assert_int_equal(c.f->requests, 1);
	assert_int_equal(c.f->bad_requests, 0);
	bal_update_free(c.u);
	fake_free(c.f);
	ev_loop_destroy(loop);
}

static void test_loop_bad_answers(void **state)
{
	one_failure(ANSWER_OTHER_ID, "response id");
	one_failure(ANSWER_OTHER_KEY, "does not verify");
	one_failure(ANSWER_UNSIGNED, "unsigned response (NOERROR)");
	one_failure(ANSWER_NONE, "no answer within 200 ms (waiting)");
	one_failure(ANSWER_CLOSE, "closed before the response");
}

static void test_loop_refused_backoff(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct ctx c = { 0 };
	/* A port nobody listens on: a listener closed at once. */
	struct fake *f = fake_new(loop, ANSWER_OK);
	uint16_t port = f->port;
	fake_free(f);
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update cfg = update_cfg(port);
	updater(loop, &c, &cfg, &z);
	struct bal_ip a[1] = { ip("127.0.0.2") };
	bal_update_publish(c.u, a, 1);
	/* Failures at 0, 0.5 and 1.5 s; the next one not before 3.5 s. */
	run_until(loop, never, NULL, 2.5);
	struct bal_update_stats st;
	bal_update_get_stats(c.u, &st);
	assert_int_equal(st.failed, 3);
	assert_int_equal(st.sent, 3);
	assert_non_null(strstr(st.last_error, "connect"));
	assert_non_null(strstr(st.last_error, "refused"));
	bal_update_free(c.u);
	ev_loop_destroy(loop);
}

static void test_loop_free_in_flight(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	struct ctx c = { 0 };
	c.f = fake_new(loop, ANSWER_HOLD);
	struct bal_cfg_zone z = zone_cfg();
	struct bal_cfg_update cfg = update_cfg(c.f->port);
	updater(loop, &c, &cfg, &z);
	struct bal_ip a[1] = { ip("127.0.0.2") };
	bal_update_publish(c.u, a, 1);
	c.want = 1;
	assert_true(run_until(loop, requests, &c, 3));
	bal_update_free(c.u);
	/* The connection is closed, and nothing of the updater runs any more. */
	assert_false(run_until(loop, never, NULL, 0.1));
	assert_int_equal(c.f->closed_by_peer, 1);
	assert_int_equal(c.results, 0);
	fake_free(c.f);
	ev_loop_destroy(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_build_pool),
		cmocka_unit_test(test_build_static),
		cmocka_unit_test(test_build_algorithms),
		cmocka_unit_test(test_build_errors),
		cmocka_unit_test(test_new_checks),
		cmocka_unit_test(test_loop_publish),
		cmocka_unit_test(test_loop_coalesce),
		cmocka_unit_test(test_loop_retry),
		cmocka_unit_test(test_loop_bad_answers),
		cmocka_unit_test(test_loop_refused_backoff),
		cmocka_unit_test(test_loop_free_in_flight),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
