/*
 * Tests for balancer/bal_dnsd.c: the responder on 127.0.0.1 and ::1 (ports
 * picked by the system), driven by one libev loop in this process, asked
 * over UDP and TCP by plain sockets: answers, truncation, TCP framing and
 * pipelining, half-close, the idle timeout (shortened), a length of 0, the
 * client limit, a client that does not read, bind errors.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "run_until.h"

#include <arpa/inet.h>
#include <errno.h>
#include <ldns/ldns.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bal_dnsd.h"

/* ---- the responder ---- */

static const char *ns[] = { "ns1.contoso.test", NULL };
static struct bal_cfg_zone zone = {
	.domain = "contoso.test", .pool_name = "sip.contoso.test", .ns = ns, .nns = 1,
	.hostmaster = "hostmaster.contoso.test", .serial = 1, .sip_port = 5061,
};
static struct bal_cfg_dns cfg = { .ttl = 5, .static_ttl = 300, .zones = &zone, .nzones = 1 };

struct fixture {
	struct ev_loop *loop;
	struct bal_dns *dns;
	struct bal_dnsd *srv;
	struct cfgu_listen listen[2];
	uint16_t port4, port6;
};

/* A pool of n AAAA (28 bytes each on the wire) and one A. */
static void set_pool(struct fixture *f, unsigned n)
{
	struct bal_ip *set = calloc(n + 1, sizeof(*set));
	assert_non_null(set);
	for (unsigned i = 0; i < n; i++) {
		char s[64];
		snprintf(s, sizeof(s), "fd00::3:%x", i + 1);
		set[i].family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, s, &set[i].u.v6), 1);
	}
	set[n].family = AF_INET;
	inet_pton(AF_INET, "198.18.2.1", &set[n].u.v4);
	assert_int_equal(bal_dns_set_pool(f->dns, "contoso.test", set, n + 1), 0);
	free(set);
}

static int setup_max(void **state, unsigned max_tcp)
{
	struct fixture *f = calloc(1, sizeof(*f));
	char err[200];
	assert_non_null(f);
	f->loop = ev_loop_new(EVFLAG_AUTO);
	f->dns = bal_dns_new(&cfg, 1, err, sizeof(err));
	assert_non_null(f->dns);
	f->listen[0].address = "127.0.0.1";
	f->listen[1].address = "::1";
	for (int i = 0; i < 2; i++)
		assert_int_equal(cfgu_numeric(f->listen[i].address, 0, &f->listen[i].addr), 0);
	f->srv = bal_dnsd_new(f->loop, f->dns, f->listen, 2, max_tcp, err, sizeof(err));
	if (!f->srv)
		fail_msg("bal_dnsd_new: %s", err);
	f->port4 = bal_dnsd_port(f->srv, 0);
	f->port6 = bal_dnsd_port(f->srv, 1);
	assert_int_not_equal(f->port4, 0);
	assert_int_not_equal(f->port6, 0);
	assert_int_equal(bal_dnsd_port(f->srv, 2), 0);
	set_pool(f, 3);
	*state = f;
	return 0;
}

static int setup(void **state)
{
	return setup_max(state, 64);
}

static int setup_two(void **state)
{
	return setup_max(state, 2);
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	bal_dnsd_free(f->srv);
	bal_dns_free(f->dns);
	ev_loop_destroy(f->loop);
	free(f);
	return 0;
}

static struct bal_dnsd_stats stats(const struct fixture *f)
{
	struct bal_dnsd_stats st;
	bal_dnsd_get_stats(f->srv, &st);
	return st;
}

/* ---- running the loop ---- */

static int never(void *arg)
{
	return 0;
}

/* ---- clients ---- */

static size_t query(uint8_t *buf, const char *name, ldns_rr_type type, uint16_t id, int edns)
{
	ldns_pkt *q = NULL;
	uint8_t *w = NULL;
	size_t len = 0;
	assert_int_equal(ldns_pkt_query_new_frm_str(&q, name, type, LDNS_RR_CLASS_IN, 0),
	                 LDNS_STATUS_OK);
	ldns_pkt_set_id(q, id);
	if (edns)
		ldns_pkt_set_edns_udp_size(q, (uint16_t)edns);
	assert_int_equal(ldns_pkt2wire(&w, q, &len), LDNS_STATUS_OK);
	memcpy(buf, w, len);
	free(w);
	ldns_pkt_free(q);
	return len;
}

static struct sockaddr_storage addr(int family, uint16_t port, socklen_t *len)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof(ss));
	if (family == AF_INET) {
		struct sockaddr_in *a = (struct sockaddr_in *)&ss;
		a->sin_family = AF_INET;
		a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		a->sin_port = htons(port);
		*len = sizeof(*a);
	} else {
		struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
		a->sin6_family = AF_INET6;
		a->sin6_addr = in6addr_loopback;
		a->sin6_port = htons(port);
		*len = sizeof(*a);
	}
	return ss;
}

struct udp_client {
	int fd;
	uint8_t buf[65536];
	ssize_t len;
};

static int udp_got(void *arg)
{
	struct udp_client *c = arg;
	if (c->len <= 0)
		c->len = recv(c->fd, c->buf, sizeof(c->buf), MSG_DONTWAIT);
	return c->len > 0;
}

/* Sends q over UDP and returns the answer parsed (the client keeps its bytes). */
static ldns_pkt *udp_ask(struct fixture *f, struct udp_client *c, int family, const uint8_t *q,
                         size_t qlen)
{
	socklen_t alen;
	struct sockaddr_storage to = addr(family, family == AF_INET ? f->port4 : f->port6, &alen);
	c->fd = socket(family, SOCK_DGRAM, 0);
	c->len = 0;
	assert_true(c->fd >= 0);
	assert_int_equal(connect(c->fd, (struct sockaddr *)&to, alen), 0);
	assert_int_equal(send(c->fd, q, qlen, 0), (ssize_t)qlen);
	assert_true(run_until(f->loop, udp_got, c, 2.0));
	close(c->fd);
	ldns_pkt *a = NULL;
	assert_int_equal(ldns_wire2pkt(&a, c->buf, (size_t)c->len), LDNS_STATUS_OK);
	assert_int_equal(ldns_pkt_id(a), ldns_read_uint16(q));
	return a;
}

struct tcp_client {
	int fd;
	uint8_t buf[1 << 20];
	size_t len;
	int closed;               /* EOF or reset seen */
	unsigned want;            /* answers to wait for */
};

static struct tcp_client *tcp_connect(struct fixture *f, int family, int rcvbuf)
{
	struct tcp_client *c = calloc(1, sizeof(*c));
	socklen_t alen;
	struct sockaddr_storage to = addr(family, family == AF_INET ? f->port4 : f->port6, &alen);
	assert_non_null(c);
	c->fd = socket(family, SOCK_STREAM, 0);
	assert_true(c->fd >= 0);
	if (rcvbuf)
		setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
	assert_int_equal(connect(c->fd, (struct sockaddr *)&to, alen), 0);
	return c;
}

static void tcp_close(struct tcp_client *c)
{
	close(c->fd);
	free(c);
}

static void tcp_read(struct tcp_client *c)
{
	while (!c->closed && c->len < sizeof(c->buf)) {
		ssize_t k = recv(c->fd, c->buf + c->len, sizeof(c->buf) - c->len, MSG_DONTWAIT);
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (k <= 0)
			c->closed = 1;
		else
			c->len += (size_t)k;
	}
}

/* Whole frames in c->buf. */
static unsigned frames(const struct tcp_client *c)
{
	unsigned n = 0;
	size_t off = 0;
	while (c->len - off >= 2) {
		size_t flen = (size_t)c->buf[off] << 8 | c->buf[off + 1];
		if (c->len - off - 2 < flen)
			break;
		off += 2 + flen;
		n++;
	}
	return n;
}

static int tcp_got(void *arg)
{
	struct tcp_client *c = arg;
	tcp_read(c);
	return frames(c) >= c->want;
}

static int tcp_closed(void *arg)
{
	struct tcp_client *c = arg;
	tcp_read(c);
	return c->closed;
}

/* Frame i of c->buf, parsed. */
static ldns_pkt *frame(const struct tcp_client *c, unsigned i)
{
	size_t off = 0;
	for (unsigned k = 0; k < i; k++)
		off += 2 + ((size_t)c->buf[off] << 8 | c->buf[off + 1]);
	size_t flen = (size_t)c->buf[off] << 8 | c->buf[off + 1];
	ldns_pkt *a = NULL;
	assert_int_equal(ldns_wire2pkt(&a, c->buf + off + 2, flen), LDNS_STATUS_OK);
	return a;
}

/* Appends q framed (2-byte length) to buf at *len. */
static void framed(uint8_t *buf, size_t *len, const uint8_t *q, size_t qlen)
{
	buf[*len] = (uint8_t)(qlen >> 8);
	buf[*len + 1] = (uint8_t)qlen;
	memcpy(buf + *len + 2, q, qlen);
	*len += 2 + qlen;
}

static void tcp_send(struct tcp_client *c, const uint8_t *b, size_t len)
{
	assert_int_equal(send(c->fd, b, len, MSG_NOSIGNAL), (ssize_t)len);
}

/* ---- tests ---- */

static void test_udp(void **state)
{
	struct fixture *f = *state;
	struct udp_client *c = calloc(1, sizeof(*c));
	uint8_t q[512];
	const int families[] = { AF_INET, AF_INET6 };
	for (int i = 0; i < 2; i++) {
		size_t len = query(q, "sip.contoso.test", LDNS_RR_TYPE_A, (uint16_t)(100 + i), 0);
		ldns_pkt *a = udp_ask(f, c, families[i], q, len);
		assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_NOERROR);
		assert_true(ldns_pkt_aa(a));
		assert_int_equal(ldns_pkt_ancount(a), 1);
		ldns_pkt_free(a);
	}
	/* out of zone, over UDP too */
	size_t len = query(q, "example.org", LDNS_RR_TYPE_A, 7, 0);
	ldns_pkt *a = udp_ask(f, c, AF_INET, q, len);
	assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_REFUSED);
	ldns_pkt_free(a);

	/* a response is not answered */
	len = query(q, "sip.contoso.test", LDNS_RR_TYPE_A, 8, 0);
	q[2] |= 0x80;
	socklen_t alen;
	struct sockaddr_storage to = addr(AF_INET, f->port4, &alen);
	c->fd = socket(AF_INET, SOCK_DGRAM, 0);
	c->len = 0;
	assert_int_equal(sendto(c->fd, q, len, 0, (struct sockaddr *)&to, alen), (ssize_t)len);
	assert_false(run_until(f->loop, udp_got, c, 0.2));
	close(c->fd);

	struct bal_dnsd_stats st = stats(f);
	assert_int_equal(st.udp_queries, 4);
	assert_int_equal(st.udp_answers, 3);
	free(c);
}

static void test_udp_truncation(void **state)
{
	struct fixture *f = *state;
	struct udp_client *c = calloc(1, sizeof(*c));
	uint8_t q[512];
	set_pool(f, 30); /* 30 AAAA: about 900 bytes */
	size_t len = query(q, "sip.contoso.test", LDNS_RR_TYPE_AAAA, 1, 0);
	ldns_pkt *a = udp_ask(f, c, AF_INET, q, len);
	assert_true(ldns_pkt_tc(a));
	assert_true(c->len <= 512);
	assert_int_equal(ldns_pkt_ancount(a), 0);
	ldns_pkt_free(a);
	len = query(q, "sip.contoso.test", LDNS_RR_TYPE_AAAA, 2, 4096);
	a = udp_ask(f, c, AF_INET6, q, len);
	assert_false(ldns_pkt_tc(a));
	assert_int_equal(ldns_pkt_ancount(a), 30);
	ldns_pkt_free(a);
	/* 60 AAAA: past 1232, our limit over UDP, whatever the client offers */
	set_pool(f, 60);
	a = udp_ask(f, c, AF_INET6, q, len);
	assert_true(ldns_pkt_tc(a));
	assert_true(c->len <= BAL_DNS_UDP_SIZE);
	ldns_pkt_free(a);
	free(c);
}

static void test_tcp_pipelined(void **state)
{
	struct fixture *f = *state;
	set_pool(f, 60); /* the AAAA answer takes about 1.7 kB: never truncated over TCP */
	struct tcp_client *c = tcp_connect(f, AF_INET, 0);
	uint8_t q[512], b[4096];
	size_t blen = 0, len;
	const char *names[] = { "sip.contoso.test", "nothere.contoso.test", "contoso.test",
	                        "sip.contoso.test" };
	const ldns_rr_type types[] = { LDNS_RR_TYPE_AAAA, LDNS_RR_TYPE_A, LDNS_RR_TYPE_SOA,
	                               LDNS_RR_TYPE_A };
	for (unsigned i = 0; i < 4; i++) {
		len = query(q, names[i], types[i], (uint16_t)(i + 1), 0);
		framed(b, &blen, q, len);
	}
	tcp_send(c, b, blen); /* four queries in one segment */
	c->want = 4;
	assert_true(run_until(f->loop, tcp_got, c, 2.0));
	assert_int_equal(frames(c), 4);
	for (unsigned i = 0; i < 4; i++) {
		ldns_pkt *a = frame(c, i);
		assert_int_equal(ldns_pkt_id(a), i + 1); /* in order */
		assert_false(ldns_pkt_tc(a));
		ldns_pkt_free(a);
	}
	ldns_pkt *a = frame(c, 0);
	assert_int_equal(ldns_pkt_ancount(a), 60);
	ldns_pkt_free(a);
	a = frame(c, 1);
	assert_int_equal(ldns_pkt_get_rcode(a), LDNS_RCODE_NXDOMAIN);
	ldns_pkt_free(a);

	/* one query a byte at a time, the loop running in between */
	c->len = 0;
	c->want = 1;
	blen = 0;
	len = query(q, "contoso.test", LDNS_RR_TYPE_NS, 77, 0);
	framed(b, &blen, q, len);
	for (size_t i = 0; i < blen; i++) {
		assert_false(run_until(f->loop, tcp_got, c, 0.002));
		tcp_send(c, b + i, 1);
	}
	assert_true(run_until(f->loop, tcp_got, c, 2.0));
	a = frame(c, 0);
	assert_int_equal(ldns_pkt_id(a), 77);
	assert_int_equal(ldns_pkt_ancount(a), 1);
	ldns_pkt_free(a);
	tcp_close(c);

	/* IPv6 too */
	c = tcp_connect(f, AF_INET6, 0);
	blen = 0;
	len = query(q, "_sipfederationtls._tcp.contoso.test", LDNS_RR_TYPE_SRV, 9, 0);
	framed(b, &blen, q, len);
	tcp_send(c, b, blen);
	c->want = 1;
	assert_true(run_until(f->loop, tcp_got, c, 2.0));
	a = frame(c, 0);
	assert_int_equal(ldns_pkt_ancount(a), 1);
	assert_int_equal(ldns_pkt_arcount(a), 61); /* over TCP the additional addresses all fit */
	ldns_pkt_free(a);
	tcp_close(c);

	struct bal_dnsd_stats st = stats(f);
	assert_int_equal(st.tcp_accepted, 2);
	assert_int_equal(st.tcp_queries, 6);
	assert_int_equal(st.tcp_answers, 6);
}

/* Answers of 64 kB, the most TCP carries: ten asked at once are more than the output
 * bound, and the queries all come in one read. */
static void test_tcp_large_answers(void **state)
{
	struct fixture *f = *state;
	set_pool(f, 2300);
	uint8_t q[512], b[1024];
	size_t blen = 0, len = query(q, "sip.contoso.test", LDNS_RR_TYPE_AAAA, 1, 0);
	for (int i = 0; i < 10; i++)
		framed(b, &blen, q, len);
	for (int half = 0; half < 2; half++) {
		struct tcp_client *c = tcp_connect(f, AF_INET, 0);
		tcp_send(c, b, blen);
		if (half)
			shutdown(c->fd, SHUT_WR);
		c->want = 10;
		assert_true(run_until(f->loop, half ? tcp_closed : tcp_got, c, 5.0));
		assert_int_equal(frames(c), 10);
		ldns_pkt *a = frame(c, 9);
		assert_false(ldns_pkt_tc(a));
		assert_int_equal(ldns_pkt_ancount(a), 2300);
		ldns_pkt_free(a);
		tcp_close(c);
	}
	struct bal_dnsd_stats st = stats(f);
	assert_int_equal(st.tcp_answers, 20);
	assert_int_equal(st.tcp_bad_closed, 0);
}

static void test_tcp_half_close(void **state)
{
	struct fixture *f = *state;
	struct tcp_client *c = tcp_connect(f, AF_INET, 0);
	uint8_t q[512], b[2048];
	size_t blen = 0;
	for (uint16_t i = 1; i <= 2; i++) {
		size_t len = query(q, "sip.contoso.test", LDNS_RR_TYPE_A, i, 0);
		framed(b, &blen, q, len);
	}
	tcp_send(c, b, blen);
	shutdown(c->fd, SHUT_WR);
	/* both answers, then the server closes */
	assert_true(run_until(f->loop, tcp_closed, c, 2.0));
	assert_int_equal(frames(c), 2);
	tcp_close(c);
	struct bal_dnsd_stats st = stats(f);
	assert_int_equal(st.tcp_answers, 2);
	assert_int_equal(st.tcp_bad_closed, 0);
	assert_int_equal(st.tcp_clients, 0);

	/* half a message, then EOF: closed as cut */
	c = tcp_connect(f, AF_INET, 0);
	tcp_send(c, b, 5);
	shutdown(c->fd, SHUT_WR);
	assert_true(run_until(f->loop, tcp_closed, c, 2.0));
	assert_int_equal(c->len, 0);
	tcp_close(c);
	assert_int_equal(stats(f).tcp_bad_closed, 1);

	/* more answers than the output bound (300 x 1.7 kB), asked at once, then EOF: all of
	 * them come, then the close */
	set_pool(f, 60);
	c = tcp_connect(f, AF_INET, 0);
	static uint8_t many[300 * 64];
	size_t mlen = 0, len = query(q, "sip.contoso.test", LDNS_RR_TYPE_AAAA, 1, 0);
	for (int i = 0; i < 300; i++)
		framed(many, &mlen, q, len);
	tcp_send(c, many, mlen);
	shutdown(c->fd, SHUT_WR);
	assert_true(run_until(f->loop, tcp_closed, c, 5.0));
	assert_int_equal(frames(c), 300);
	tcp_close(c);
	st = stats(f);
	assert_int_equal(st.tcp_bad_closed, 1);
	assert_int_equal(st.tcp_answers, 302);

	/* the same without EOF */
	c = tcp_connect(f, AF_INET6, 0);
	tcp_send(c, many, mlen);
	c->want = 300;
	assert_true(run_until(f->loop, tcp_got, c, 5.0));
	assert_false(c->closed);
	tcp_close(c);
}

static void test_tcp_idle(void **state)
{
	struct fixture *f = *state;
	bal_dnsd_set_tcp_idle(f->srv, 0.2);
	/* silent */
	struct tcp_client *c = tcp_connect(f, AF_INET, 0);
	ev_tstamp t0 = ev_time();
	assert_true(run_until(f->loop, tcp_closed, c, 2.0));
	assert_true(ev_time() - t0 >= 0.15);
	tcp_close(c);
	assert_int_equal(stats(f).tcp_idle_closed, 1);

	/* a whole query, then a stall in the middle of the next one */
	c = tcp_connect(f, AF_INET6, 0);
	uint8_t q[512], b[1024];
	size_t blen = 0, len = query(q, "contoso.test", LDNS_RR_TYPE_SOA, 3, 0);
	framed(b, &blen, q, len);
	framed(b, &blen, q, len);
	tcp_send(c, b, blen - 4);
	c->want = 1;
	assert_true(run_until(f->loop, tcp_got, c, 2.0));
	assert_true(run_until(f->loop, tcp_closed, c, 2.0));
	assert_int_equal(frames(c), 1);
	tcp_close(c);
	assert_int_equal(stats(f).tcp_idle_closed, 2);

	/* a client that keeps asking stays */
	c = tcp_connect(f, AF_INET, 0);
	for (int i = 0; i < 6; i++) {
		blen = 0;
		framed(b, &blen, q, len);
		tcp_send(c, b, blen);
		c->want = (unsigned)i + 1;
		assert_true(run_until(f->loop, tcp_got, c, 2.0));
		assert_false(run_until(f->loop, never, NULL, 0.1));
		assert_false(c->closed);
	}
	tcp_close(c);
	assert_int_equal(stats(f).tcp_idle_closed, 2);
}

static void test_tcp_zero_length(void **state)
{
	struct fixture *f = *state;
	struct tcp_client *c = tcp_connect(f, AF_INET, 0);
	uint8_t q[512], b[1024];
	size_t blen = 0, len = query(q, "contoso.test", LDNS_RR_TYPE_SOA, 5, 0);
	framed(b, &blen, q, len);
	b[blen++] = 0;
	b[blen++] = 0;
	tcp_send(c, b, blen);
	assert_true(run_until(f->loop, tcp_closed, c, 2.0));
	assert_int_equal(frames(c), 1);
	tcp_close(c);
	struct bal_dnsd_stats st = stats(f);
	assert_int_equal(st.tcp_bad_closed, 1);
	assert_int_equal(st.tcp_answers, 1);
	assert_int_equal(st.tcp_clients, 0);
}

static int one_client(void *arg)
{
	return stats(arg).tcp_clients == 1;
}

static void test_tcp_limit(void **state)
{
	struct fixture *f = *state; /* at most two clients */
	struct tcp_client *c[3];
	for (int i = 0; i < 3; i++) {
		c[i] = tcp_connect(f, AF_INET, 0);
		assert_false(run_until(f->loop, never, NULL, 0.05));
	}
	assert_true(run_until(f->loop, tcp_closed, c[2], 2.0));
	struct bal_dnsd_stats st = stats(f);
	assert_int_equal(st.tcp_refused, 1);
	assert_int_equal(st.tcp_accepted, 2);
	assert_int_equal(st.tcp_clients, 2);
	/* the two others are served */
	uint8_t q[512], b[1024];
	size_t blen = 0, len = query(q, "contoso.test", LDNS_RR_TYPE_SOA, 5, 0);
	framed(b, &blen, q, len);
	for (int i = 0; i < 2; i++) {
		tcp_send(c[i], b, blen);
		c[i]->want = 1;
		assert_true(run_until(f->loop, tcp_got, c[i], 2.0));
	}
	/* one leaves: room for a new one */
	tcp_close(c[0]);
	tcp_close(c[2]);
	assert_true(run_until(f->loop, one_client, f, 2.0));
	c[2] = tcp_connect(f, AF_INET, 0);
	assert_false(run_until(f->loop, never, NULL, 0.1));
	tcp_send(c[2], b, blen);
	c[2]->want = 1;
	assert_true(run_until(f->loop, tcp_got, c[2], 2.0));
	assert_int_equal(stats(f).tcp_refused, 1);
	tcp_close(c[1]);
	tcp_close(c[2]);
}

static int no_client(void *arg)
{
	return stats(arg).tcp_clients == 0;
}

static void test_tcp_not_reading(void **state)
{
	struct fixture *f = *state;
	set_pool(f, 60); /* each answer about 1.7 kB */
	struct tcp_client *c = tcp_connect(f, AF_INET, 4096);
	int sndbuf = 4096;
	setsockopt(c->fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	uint8_t q[512], b[512];
	size_t blen = 0, len = query(q, "sip.contoso.test", LDNS_RR_TYPE_AAAA, 1, 0);
	framed(b, &blen, q, len);
	/* queries, never reading an answer, until the server stops reading them */
	unsigned sent = 0, blocked = 0;
	for (int round = 0; round < 2000 && !blocked; round++) {
		for (int i = 0; i < 50; i++) {
			if (send(c->fd, b, blen, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)blen) {
				blocked++;
				break;
			}
			sent++;
		}
		assert_false(run_until(f->loop, never, NULL, 0.001));
	}
	assert_true(blocked > 0);
	struct bal_dnsd_stats st = stats(f);
	assert_true(st.tcp_queries < sent); /* it stopped reading */
	assert_int_equal(st.tcp_clients, 1);
	/* and after the idle timeout, closed (watched from the server: reading would help it) */
	assert_false(run_until(f->loop, no_client, f, 0.2));
	bal_dnsd_set_tcp_idle(f->srv, 0.3);
	ev_tstamp t0 = ev_time();
	assert_true(run_until(f->loop, no_client, f, 3.0));
	assert_true(ev_time() - t0 >= 0.25);
	st = stats(f);
	assert_int_equal(st.tcp_clients, 0);
	assert_int_equal(st.tcp_idle_closed, 1);
	tcp_close(c);
}

static void test_bind(void **state)
{
	struct ev_loop *loop = ev_loop_new(EVFLAG_AUTO);
	char err[200];
	struct bal_dns *dns = bal_dns_new(&cfg, 1, err, sizeof(err));
	struct cfgu_listen l = { .address = "127.0.0.1" };
	assert_non_null(dns);

	/* a port held by another listener */
	int other = socket(AF_INET, SOCK_STREAM, 0);
	socklen_t alen;
	struct sockaddr_storage ss = addr(AF_INET, 0, &alen);
	assert_int_equal(bind(other, (struct sockaddr *)&ss, alen), 0);
	assert_int_equal(listen(other, 1), 0);
	assert_int_equal(getsockname(other, (struct sockaddr *)&ss, &alen), 0);
	uint16_t port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
	assert_int_equal(cfgu_numeric("127.0.0.1", port, &l.addr), 0);
	assert_null(bal_dnsd_new(loop, dns, &l, 1, 4, err, sizeof(err)));
	assert_non_null(strstr(err, "127.0.0.1"));
	assert_non_null(strstr(err, "in use"));
	close(other);

	/* an address not ours yet (a VIP before keepalived moves it): bound all the same */
	l.address = "198.18.255.1";
	assert_int_equal(cfgu_numeric(l.address, 0, &l.addr), 0);
	struct bal_dnsd *s = bal_dnsd_new(loop, dns, &l, 1, 4, err, sizeof(err));
	if (!s)
		fail_msg("IP_FREEBIND: %s", err);
	assert_int_not_equal(bal_dnsd_port(s, 0), 0);
	bal_dnsd_free(s);

	/* wildcards, both families at once */
	struct cfgu_listen w[2] = { { .address = "0.0.0.0" }, { .address = "::" } };
	assert_int_equal(cfgu_numeric("0.0.0.0", 0, &w[0].addr), 0);
	assert_int_equal(cfgu_numeric("::", 0, &w[1].addr), 0);
	s = bal_dnsd_new(loop, dns, w, 2, 4, err, sizeof(err));
	if (!s)
		fail_msg("wildcards: %s", err);
	struct fixture f = { .loop = loop, .dns = dns, .srv = s, .port4 = bal_dnsd_port(s, 0),
	                     .port6 = bal_dnsd_port(s, 1) };
	struct udp_client *c = calloc(1, sizeof(*c));
	uint8_t q[512];
	size_t len = query(q, "contoso.test", LDNS_RR_TYPE_SOA, 11, 0);
	for (int fam = 0; fam < 2; fam++) {
		/* answered from the address asked (connect() filters on it) */
		ldns_pkt *a = udp_ask(&f, c, fam ? AF_INET6 : AF_INET, q, len);
		assert_int_equal(ldns_pkt_ancount(a), 1);
		ldns_pkt_free(a);
	}
	free(c);
	bal_dnsd_free(s);
	bal_dnsd_free(NULL);
	bal_dns_free(dns);
	ev_loop_destroy(loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_udp, setup, teardown),
		cmocka_unit_test_setup_teardown(test_udp_truncation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_pipelined, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_large_answers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_half_close, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_idle, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_zero_length, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_limit, setup_two, teardown),
		cmocka_unit_test_setup_teardown(test_tcp_not_reading, setup, teardown),
		cmocka_unit_test(test_bind),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
