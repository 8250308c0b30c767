/*
 * libFuzzer driver for edge/xmpp_s2s.c's inbound negotiation: the input is
 * what a peer sends on a new inbound stream (plain TCP on a socketpair, one
 * libev loop), in reads of 1 + the first byte. b.test hears a.test and
 * c.test (dialback only, no TLS); each key it is asked to check is answered
 * at once, valid when the key's length is even. The stream must end, with
 * on_down once, after the peer's end; a stanza may only come from a pair
 * the stream authenticated.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "xmpp_s2s.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

struct req {
	char local[254], remote[254];
	int valid;
};

static struct {
	struct xmpp_s2s *s;
	unsigned downs;
	struct req reqs[XMPP_S2S_MAX_PAIRS * 2];
	unsigned nreqs;
} st;

static const struct xmpp_s2s_policy policy = {
	.tls = CFG_XMPP_NOT_SUPPORTED, .sasl = CFG_XMPP_NOT_SUPPORTED, .dialback = 1,
	.keepalive = 1,
};

static const struct xmpp_s2s_policy *partner(void *arg, struct xmpp_s2s *s, const char *local,
                                             const char *remote, enum xmpp_xml_cond *cond)
{
	if (strcmp(local, "b.test") != 0) {
		*cond = XMPP_XML_COND_HOST_UNKNOWN;
		return NULL;
	}
	if (strcmp(remote, "a.test") != 0 && strcmp(remote, "c.test") != 0) {
		*cond = XMPP_XML_COND_NOT_AUTHORIZED;
		return NULL;
	}
	return &policy;
}

static void ready(void *arg, struct xmpp_s2s *s, const char *local, const char *remote)
{
	if (!xmpp_s2s_carries(s, local, remote))
		abort();
}

static void verify(void *arg, struct xmpp_s2s *s, const char *local, const char *remote,
                   const char *id, const char *key)
{
	if (st.nreqs == sizeof(st.reqs) / sizeof(st.reqs[0]))
		abort(); /* one request per pair at a time, and pairs are bounded */
	struct req *r = &st.reqs[st.nreqs++];
	strcpy(r->local, local);
	strcpy(r->remote, remote);
	r->valid = strlen(key) % 2 == 0;
}

static void verified(void *arg, struct xmpp_s2s *s, const char *local, const char *remote,
                     const char *id, int valid)
{
	abort(); /* inbound streams never verify */
}

/* The domain of a JID, as xmpp_s2s takes it (the test's JIDs are ASCII). */
static void domain_of(const char *jid, char *out, size_t outsz)
{
	const char *slash = strchr(jid, '/');
	size_t end = slash ? (size_t)(slash - jid) : strlen(jid);
	const char *at = memchr(jid, '@', end);
	const char *d = at ? at + 1 : jid;
	size_t n = end - (size_t)(d - jid);
	if (n && d[n - 1] == '.')
		n--;
	if (n >= outsz)
		abort();
	for (size_t i = 0; i < n; i++)
		out[i] = (char)(d[i] >= 'A' && d[i] <= 'Z' ? d[i] + 32 : d[i]);
	out[n] = '\0';
}

static void stanza(void *arg, struct xmpp_s2s *s, struct xmpp_xml_elem *el)
{
	char from[300], to[300];
	domain_of(xmpp_xml_attr(el, "from"), from, sizeof(from));
	domain_of(xmpp_xml_attr(el, "to"), to, sizeof(to));
	if (!xmpp_s2s_carries(s, to, from))
		abort();
}

static void down(void *arg, struct xmpp_s2s *s, int failed, const char *why)
{
	if (s != st.s || st.downs++)
		abort();
	st.s = NULL;
}

static const struct xmpp_s2s_cbs cbs = {
	.partner = partner,
	.on_ready = ready,
	.verify = verify,
	.on_verified = verified,
	.on_stanza = stanza,
	.on_down = down,
};

static struct ev_loop *loop;
static struct xmpp_s2s_env env;

static void drain(int fd)
{
	char buf[16384];
	while (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) > 0)
		;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (!loop) {
		loop = ev_loop_new(EVFLAG_AUTO);
		env.loop = loop;
		memset(env.db_secret, 7, sizeof(env.db_secret));
		env.xml.max_stanza_bytes = 4096;
		env.negotiate_timeout = 60; /* no clock in the outcome */
		env.max_queued_bytes = 1 << 20;
		env.cbs = &cbs;
		xmpp_s2s_env_init(&env);
	}
	if (size < 1)
		return 0;
	size_t chunk = 1 + (size_t)data[0];
	data++;
	size--;
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0, sv) < 0)
		abort();
	memset(&st, 0, sizeof(st));
	st.s = xmpp_s2s_accept(&env, sv[0], "fuzz");
	if (!st.s)
		abort();
	size_t off = 0;
	int shut = 0;
	for (unsigned i = 0; i < 100000 && !st.downs; i++) {
		if (off < size) {
			size_t n = size - off < chunk ? size - off : chunk;
			ssize_t k = send(sv[1], data + off, n, MSG_NOSIGNAL | MSG_DONTWAIT);
			if (k > 0)
				off += (size_t)k;
			else if (k < 0 && errno != EAGAIN)
				off = size; /* the stream closed its end */
		} else if (!shut) {
			shutdown(sv[1], SHUT_WR);
			shut = 1;
		}
		ev_run(loop, EVRUN_NOWAIT);
		for (unsigned k = 0; k < st.nreqs && st.s; k++)
			xmpp_s2s_dialback_verdict(st.s, st.reqs[k].local, st.reqs[k].remote,
			                          st.reqs[k].valid);
		st.nreqs = 0;
		drain(sv[1]);
	}
	if (!st.downs)
		abort(); /* the peer's end came, the stream never ended */
	close(sv[1]);
	return 0;
}
