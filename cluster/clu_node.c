#include "clu_node.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "clu_msg.h"
#include "list.h"
#include "sockaddr.h"

#define RELAYS_MAX 64          /* indirect pings we relay at once */
#define RECV_MAX 65536
#define HOUSEKEEPING 0.1       /* seconds: suspicion deadlines, relay nacks */
#define EXPIRE_EVERY 10        /* housekeeping rounds between store expiries */
#define DIGEST_BUCKETS 256     /* push-pull compares the store in this many buckets */
#define LIFELINES_MAX 8        /* lifelines a node opens to others */
#define LIFELINE_ROUNDS 10     /* housekeeping rounds between lifeline upkeep */
#define CHECK_TIMEOUT 1.0      /* seconds a death check's connect may take */
#define CHECK_TRIES 3          /* an accepted connect is asked again this often */
#define CHECK_RETRY 0.05       /* seconds between those tries */
#define STREAMS_IN_MAX 32      /* accepted streams not yet known as lifelines; past it, closed */

/* Our probe of one member: direct, then indirect through relays. */
struct probe {
	int active;
	char target[CLU_NAME_MAX + 1];
	uint32_t seq;
	int acked;                 /* 0: not yet; 1: through a relay; 2: directly */
	unsigned nacks_expected, nacks_received;
};

/* An indirect ping we make for another member. */
struct relay {
	uint32_t our_seq, their_seq;
	struct sockaddr_storage requester;
	socklen_t requester_len;
	int want_nack;
	double deadline;
};

/* A push-pull exchange over TCP: both sides send a Header and an End. */
struct stream {
	struct list_node link;
	struct clu_node *node;
	int fd;
	int outbound, connected;
	ev_io io;
	ev_timer timer;
	uint8_t *out;              /* our frames, length-prefixed and sealed */
	size_t outlen, outoff;
	uint8_t *in;               /* what arrived, not yet a whole frame */
	size_t inlen, incap;
	int got_header, sent_end, got_end;
	int lifeline;              /* a lifeline to or from peer, not a push-pull */
	char peer[CLU_NAME_MAX + 1];
};

/*
 * A death check: a lifeline to peer ended, so we try its port. Refused
 * means no process listens there: it died, and we say so at once. An
 * answer means it lives (or came back); silence leaves it to SWIM.
 */
struct check {
	struct list_node link;
	struct clu_node *node;
	char peer[CLU_NAME_MAX + 1];
	uint64_t incarnation;      /* the one we suspect dead */
	unsigned tries;            /* connections accepted so far */
	int fd;                    /* -1 between tries */
	ev_io io;
	ev_timer timer;
};

/* A write waiting for another member to confirm it holds it. */
struct clu_confirm {
	struct list_node link;
	struct clu_node *node;
	char *key;
	uint32_t seq;                /* of the ping that carries it now */
	ev_timer attempt;            /* the next try */
	ev_timer deadline;
	clu_confirm_fn done;
	void *arg;
};

struct clu_node {
	struct ev_loop *loop;
	struct clu_config cfg;
	char name[CLU_NAME_MAX + 1];
	struct sockaddr_storage *seeds;
	unsigned next_seed;
	struct clu_keyring *kr;
	struct clu_members *m;
	struct clu_store *store;
	unsigned house_rounds;
	int udp, tcp;
	ev_io udp_io, tcp_io;
	ev_timer probe_timer, probe_timeout_timer, gossip_timer, house_timer, pushpull_timer;
	struct probe probe;
	uint32_t seq;
	struct relay relays[RELAYS_MAX];
	unsigned nrelays;
	struct list_node streams;
	struct list_node confirms;
	struct list_node checks;
	ev_timer eager_timer;      /* news of our own goes out now, not at the next round */
	ev_tstamp last_eager;
	struct clu_node_stats stats;
	int leaving;               /* lifelines that end now are ours */
	uint8_t *plain, *sealed;   /* packet_max bytes each: what we send */
	uint8_t *rbuf, *rplain;    /* RECV_MAX bytes each: what we receive */
};

void clu_config_lan(struct clu_config *c)
{
	memset(c, 0, sizeof(*c));
	clu_timing_lan(&c->timing);
	c->store.max_records = 1000000;
	c->store.max_bytes = 512u << 20;
	c->store.tombstone_ms = 60000;
	c->gossip_interval = 0.2;
	c->gossip_nodes = 3;
	c->pushpull_interval = 30;
	c->stream_timeout = 10;
	c->packet_max = 1400;
}

static double now_of(const struct clu_node *n)
{
	return ev_now(n->loop);
}

/* The wall clock, in ms, for record versions and expiry. */
static uint64_t wall_ms(const struct clu_node *n)
{
	return (uint64_t)(ev_time() * 1000.0);
}

/* ---- addresses ---- */

static socklen_t addr_from_msg(const clu_address *a, struct sockaddr_storage *out)
{
	memset(out, 0, sizeof(*out));
	if (a->ip.len == 16) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)out;
		s6->sin6_family = AF_INET6;
		memcpy(&s6->sin6_addr, a->ip.data, 16);
		s6->sin6_port = htons((uint16_t)a->port);
		return sizeof(*s6);
	}
	struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)out;
	s4->sin_family = AF_INET;
	memcpy(&s4->sin_addr, a->ip.data, 4);
	s4->sin_port = htons((uint16_t)a->port);
	return sizeof(*s4);
}

static void addr_to_msg(const struct sockaddr_storage *ss, clu_address *a, uint8_t ip[16])
{
	if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)(const void *)ss;
		memcpy(ip, &s6->sin6_addr, 16);
		a->ip.len = 16;
		a->port = ntohs(s6->sin6_port);
	} else {
		const struct sockaddr_in *s4 = (const struct sockaddr_in *)(const void *)ss;
		memcpy(ip, &s4->sin_addr, 4);
		a->ip.len = 4;
		a->port = ntohs(s4->sin_port);
	}
	a->ip.data = ip;
}

/* ---- packets ---- */

/*
 * Sends a packet to addr: the probe message p (may be NULL) and as much
 * queued news as fits. Returns 0, or -1 when it could not be sent.
 */
static int send_packet(struct clu_node *n, const struct sockaddr *addr, socklen_t len,
                       clu_packet *p)
{
	clu_packet empty = EDGEPOOL__CLUSTER__V1__PACKET__INIT;
	if (!p)
		p = &empty;
	p->version = CLU_PROTO_VERSION;
	p->from = n->name;
	size_t budget = n->cfg.packet_max - CLU_SEAL_OVERHEAD;
	size_t plen = edgepool__cluster__v1__packet__get_packed_size(p);
	if (plen > budget)
		return -1;
	edgepool__cluster__v1__packet__pack(p, n->plain);
	plen += clu_take_news(n->m, n->plain + plen, budget - plen);
	ssize_t slen = clu_seal(n->kr, CLU_PURPOSE_PACKET, n->plain, plen, n->sealed);
	if (slen < 0)
		return -1;
	if (sendto(n->udp, n->sealed, (size_t)slen, 0, addr, len) < 0)
		return -1;
	n->stats.packets_out++;
	n->stats.bytes_out += (unsigned long long)slen;
	return 0;
}

static void send_ping(struct clu_node *n, const struct clu_member *to, uint32_t seq)
{
	clu_packet p = EDGEPOOL__CLUSTER__V1__PACKET__INIT;
	Edgepool__Cluster__V1__Ping ping = EDGEPOOL__CLUSTER__V1__PING__INIT;
	ping.seq = seq;
	ping.target = (char *)to->name;
	p.probe_case = EDGEPOOL__CLUSTER__V1__PACKET__PROBE_PING;
	p.ping = &ping;
	send_packet(n, (const struct sockaddr *)&to->addr, to->addrlen, &p);
}

static void send_ack(struct clu_node *n, const struct sockaddr *to, socklen_t len, uint32_t seq,
                     int nack)
{
	clu_packet p = EDGEPOOL__CLUSTER__V1__PACKET__INIT;
	Edgepool__Cluster__V1__Ack ack = EDGEPOOL__CLUSTER__V1__ACK__INIT;
	Edgepool__Cluster__V1__Nack no = EDGEPOOL__CLUSTER__V1__NACK__INIT;
	if (nack) {
		no.seq = seq;
		p.probe_case = EDGEPOOL__CLUSTER__V1__PACKET__PROBE_NACK;
		p.nack = &no;
	} else {
		ack.seq = seq;
		p.probe_case = EDGEPOOL__CLUSTER__V1__PACKET__PROBE_ACK;
		p.ack = &ack;
	}
	send_packet(n, to, len, &p);
}

static struct clu_rec rec_from_msg(const clu_record *r)
{
	return (struct clu_rec){
		.key = r->key,
		.value = r->tombstone ? NULL : r->value.data,
		.len = r->tombstone ? 0 : r->value.len,
		.version = r->version,
		.origin = r->origin,
		.expires_ms = r->expires_ms,
		.tombstone = r->tombstone,
	};
}

static void rec_to_msg(const struct clu_rec *r, clu_record *out)
{
	clu_record init = EDGEPOOL__CLUSTER__V1__RECORD__INIT;
	*out = init;
	out->key = (char *)r->key;
	out->value.data = (uint8_t *)r->value;
	out->value.len = r->len;
	out->version = r->version;
	out->origin = (char *)r->origin;
	out->expires_ms = r->expires_ms;
	out->tombstone = r->tombstone;
}

/* Queues a record we wrote to be gossiped. */
static int gossip_record(struct clu_node *n, const struct clu_rec *r)
{
	clu_gossip g = EDGEPOOL__CLUSTER__V1__GOSSIP__INIT;
	clu_record msg;
	char about[CLU_KEY_MAX + 8];
	rec_to_msg(r, &msg);
	g.item_case = EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_RECORD;
	g.record = &msg;
	snprintf(about, sizeof(about), "record:%s", r->key);
	return clu_queue_news(n->m, about, &g);
}

/* Whether a member's metadata says it is an observer (CLU_ROLE_KEY). */
static int meta_observer(Edgepool__Cluster__V1__Alive__MetaEntry **alive_meta, size_t n_alive,
                         Edgepool__Cluster__V1__Member__MetaEntry **member_meta, size_t n_member)
{
	for (size_t i = 0; i < n_alive; i++)
		if (strcmp(alive_meta[i]->key, CLU_ROLE_KEY) == 0)
			return strcmp(alive_meta[i]->value, CLU_ROLE_OBSERVER) == 0;
	for (size_t i = 0; i < n_member; i++)
		if (strcmp(member_meta[i]->key, CLU_ROLE_KEY) == 0)
			return strcmp(member_meta[i]->value, CLU_ROLE_OBSERVER) == 0;
	return 0;
}

static void apply_gossip(struct clu_node *n, const clu_gossip *g)
{
	struct sockaddr_storage ss;
	socklen_t len;
	double now = now_of(n);
	switch (g->item_case) {
	case EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_ALIVE:
		len = addr_from_msg(g->alive->addr, &ss);
		clu_on_alive(n->m, g->alive->node, g->alive->incarnation, (struct sockaddr *)&ss, len,
		             meta_observer(g->alive->meta, g->alive->n_meta, NULL, 0), now);
		break;
	case EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_SUSPECT:
		clu_on_suspect(n->m, g->suspect->node, g->suspect->incarnation, g->suspect->from, now);
		break;
	case EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_DEAD:
		clu_on_dead(n->m, g->dead->node, g->dead->incarnation, g->dead->from, now);
		break;
	case EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_RECORD: {
		struct clu_rec r = rec_from_msg(g->record);
		/* What is new to us is new to others too: pass it on. */
		if (clu_store_apply(n->store, &r, wall_ms(n)) == 1)
			gossip_record(n, &r);
		break;
	}
	default:
		break; /* a newer kind of news */
	}
}

static void confirm_free(struct clu_confirm *c)
{
	list_del(&c->link);
	ev_timer_stop(c->node->loop, &c->attempt);
	ev_timer_stop(c->node->loop, &c->deadline);
	free(c->key);
	free(c);
}

static void confirm_finish(struct clu_confirm *c, int status)
{
	clu_confirm_fn done = c->done;
	void *arg = c->arg;
	confirm_free(c);
	done(arg, status);
}

/* Sends the record to a live member with a ping; its ack confirms it. */
static void confirm_attempt_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct clu_confirm *c = w->data;
	struct clu_node *n = c->node;
	const struct clu_member *peer;
	const struct clu_rec *r = clu_store_get(n->store, c->key, wall_ms(n));
	/* One of the pool's nodes must hold it: an observer (a balancer) does not count. */
	if (!r || clu_pick_nodes(n->m, &peer, 1) != 1) {
		confirm_finish(c, -1); /* gone meanwhile, or nobody to hold it */
		return;
	}
	clu_packet p = EDGEPOOL__CLUSTER__V1__PACKET__INIT;
	Edgepool__Cluster__V1__Ping ping = EDGEPOOL__CLUSTER__V1__PING__INIT;
	clu_gossip g = EDGEPOOL__CLUSTER__V1__GOSSIP__INIT, *gp = &g;
	clu_record msg;
	rec_to_msg(r, &msg);
	g.item_case = EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_RECORD;
	g.record = &msg;
	c->seq = ++n->seq;
	ping.seq = c->seq;
	ping.target = (char *)peer->name;
	p.probe_case = EDGEPOOL__CLUSTER__V1__PACKET__PROBE_PING;
	p.ping = &ping;
	p.n_gossip = 1;
	p.gossip = &gp;
	send_packet(n, (const struct sockaddr *)&peer->addr, peer->addrlen, &p);
	/* No ack within a probe timeout: another member, another try. */
	ev_timer_set(w, clu_probe_timeout(n->m), 0);
	ev_timer_start(loop, w);
}

static void confirm_deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	confirm_finish(w->data, -1);
}

static void on_ack(struct clu_node *n, uint32_t seq)
{
	if (n->probe.active && n->probe.seq == seq && !n->probe.acked) {
		/* Before the timeout the target answered us; after, a relay got through. */
		n->probe.acked = ev_is_active(&n->probe_timeout_timer) ? 2 : 1;
		ev_timer_stop(n->loop, &n->probe_timeout_timer);
		return;
	}
	struct list_node *it;
	for (it = n->confirms.next; it != &n->confirms; it = it->next) {
		struct clu_confirm *c = list_entry(it, struct clu_confirm, link);
		if (c->seq == seq) {
			confirm_finish(c, 0);
			return;
		}
	}
	for (unsigned i = 0; i < n->nrelays; i++) {
		struct relay *r = &n->relays[i];
		if (r->our_seq == seq) {
			send_ack(n, (struct sockaddr *)&r->requester, r->requester_len, r->their_seq, 0);
			n->relays[i] = n->relays[--n->nrelays];
			return;
		}
	}
}

static void on_indirect_ping(struct clu_node *n, const Edgepool__Cluster__V1__IndirectPing *ip,
                             const struct sockaddr_storage *from, socklen_t fromlen)
{
	if (n->nrelays == RELAYS_MAX)
		return;
	struct relay *r = &n->relays[n->nrelays++];
	r->our_seq = ++n->seq;
	r->their_seq = ip->seq;
	memcpy(&r->requester, from, fromlen);
	r->requester_len = fromlen;
	r->want_nack = ip->want_nack;
	r->deadline = now_of(n) + clu_probe_timeout(n->m);
	struct clu_member target = { .name = ip->target };
	target.addrlen = addr_from_msg(ip->target_addr, &target.addr);
	send_ping(n, &target, r->our_seq);
}

static void handle_packet(struct clu_node *n, const clu_packet *p,
                          const struct sockaddr_storage *from, socklen_t fromlen)
{
	/* Gossip first: an ack may come with news that matters to the probe. */
	for (size_t i = 0; i < p->n_gossip; i++)
		apply_gossip(n, p->gossip[i]);
	switch (p->probe_case) {
	case EDGEPOOL__CLUSTER__V1__PACKET__PROBE_PING:
		/* Only for ourselves: an address may now belong to another node. */
		if (strcmp(p->ping->target, n->name) == 0)
			send_ack(n, (const struct sockaddr *)from, fromlen, p->ping->seq, 0);
		break;
	case EDGEPOOL__CLUSTER__V1__PACKET__PROBE_INDIRECT_PING:
		on_indirect_ping(n, p->indirect_ping, from, fromlen);
		break;
	case EDGEPOOL__CLUSTER__V1__PACKET__PROBE_ACK:
		on_ack(n, p->ack->seq);
		break;
	case EDGEPOOL__CLUSTER__V1__PACKET__PROBE_NACK:
		if (n->probe.active && n->probe.seq == p->nack->seq)
			n->probe.nacks_received++;
		break;
	default:
		break;
	}
}

static void udp_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct clu_node *n = w->data;
	uint8_t *buf = n->rbuf, *plain = n->rplain;
	for (int i = 0; i < 64; i++) {
		struct sockaddr_storage from;
		socklen_t fromlen = sizeof(from);
		ssize_t len = recvfrom(n->udp, buf, RECV_MAX, 0, (struct sockaddr *)&from, &fromlen);
		if (len < 0)
			return;
		n->stats.packets_in++;
		n->stats.bytes_in += (unsigned long long)len;
		char why[200];
		ssize_t plen = clu_open(n->kr, CLU_PURPOSE_PACKET, buf, (size_t)len, plain);
		clu_packet *p = plen < 0 ? NULL : clu_packet_decode(plain, (size_t)plen, why, sizeof(why));
		if (!p) {
			n->stats.dropped++;
			continue;
		}
		handle_packet(n, p, &from, fromlen);
		clu_packet_free(p);
	}
}

/* ---- probing ---- */

static void finish_probe(struct clu_node *n)
{
	if (!n->probe.active)
		return;
	n->probe.active = 0;
	ev_timer_stop(n->loop, &n->probe_timeout_timer);
	clu_probe_done(n->m, n->probe.target, n->probe.acked, n->probe.nacks_expected,
	               n->probe.nacks_received, now_of(n));
}

static void probe_timeout_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct clu_node *n = w->data;
	if (!n->probe.active || n->probe.acked)
		return;
	/* No direct ack: ask others to try, and to say so if they hear nothing. */
	const struct clu_member *relays[8];
	unsigned want = n->cfg.timing.indirect_checks < 8 ? n->cfg.timing.indirect_checks : 8;
	unsigned k = clu_pick_relays(n->m, n->probe.target, relays, want);
	const struct clu_member *target = clu_find(n->m, n->probe.target);
	if (!target)
		return;
	clu_packet p = EDGEPOOL__CLUSTER__V1__PACKET__INIT;
	Edgepool__Cluster__V1__IndirectPing ip = EDGEPOOL__CLUSTER__V1__INDIRECT_PING__INIT;
	clu_address addr = EDGEPOOL__CLUSTER__V1__ADDRESS__INIT;
	uint8_t ipbuf[16];
	addr_to_msg(&target->addr, &addr, ipbuf);
	ip.seq = n->probe.seq;
	ip.target = n->probe.target;
	ip.target_addr = &addr;
	ip.want_nack = 1;
	p.probe_case = EDGEPOOL__CLUSTER__V1__PACKET__PROBE_INDIRECT_PING;
	p.indirect_ping = &ip;
	for (unsigned i = 0; i < k; i++)
		if (send_packet(n, (const struct sockaddr *)&relays[i]->addr, relays[i]->addrlen, &p) == 0)
			n->probe.nacks_expected++;
}

static void probe_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct clu_node *n = w->data;
	finish_probe(n);
	const struct clu_member *t = clu_next_probe(n->m);
	if (t) {
		memset(&n->probe, 0, sizeof(n->probe));
		n->probe.active = 1;
		snprintf(n->probe.target, sizeof(n->probe.target), "%s", t->name);
		n->probe.seq = ++n->seq;
		send_ping(n, t, n->probe.seq);
		ev_timer_set(&n->probe_timeout_timer, clu_probe_timeout(n->m), 0);
		ev_timer_start(loop, &n->probe_timeout_timer);
	}
	/* Local health stretches the interval (Lifeguard). */
	w->repeat = clu_probe_interval(n->m);
	ev_timer_again(loop, w);
}

/* ---- gossip and housekeeping ---- */

/* Our own news goes out at once, at most four times per gossip interval. */
static void gossip_soon(struct clu_node *n)
{
	if (!ev_is_active(&n->eager_timer) &&
	    ev_now(n->loop) - n->last_eager >= n->cfg.gossip_interval / 4) {
		ev_timer_set(&n->eager_timer, 0, 0);
		ev_timer_start(n->loop, &n->eager_timer);
	}
}

static void gossip_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct clu_node *n = w->data;
	const struct clu_member *to[16];
	unsigned want = n->cfg.gossip_nodes < 16 ? n->cfg.gossip_nodes : 16;
	if (!clu_news_count(n->m))
		return;
	unsigned k = clu_pick_relays(n->m, "", to, want);
	if (w == &n->eager_timer)
		n->last_eager = ev_now(loop);
	for (unsigned i = 0; i < k && clu_news_count(n->m); i++)
		send_packet(n, (const struct sockaddr *)&to[i]->addr, to[i]->addrlen, NULL);
}

static void lifelines_upkeep(struct clu_node *n);

static void house_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct clu_node *n = w->data;
	double now = now_of(n);
	clu_tick(n->m, now);
	if (++n->house_rounds % EXPIRE_EVERY == 0)
		clu_store_expire(n->store, wall_ms(n));
	if (n->house_rounds % LIFELINE_ROUNDS == 0)
		lifelines_upkeep(n);
	for (unsigned i = 0; i < n->nrelays;) {
		struct relay *r = &n->relays[i];
		if (r->deadline > now) {
			i++;
			continue;
		}
		if (r->want_nack)
			send_ack(n, (struct sockaddr *)&r->requester, r->requester_len, r->their_seq, 1);
		n->relays[i] = n->relays[--n->nrelays];
	}
}

/* ---- push-pull streams ---- */

static void check_peer(struct clu_node *n, const char *peer);

static void stream_free(struct stream *s, int failed)
{
	struct clu_node *n = s->node;
	if (failed && !s->lifeline)
		n->stats.stream_failures++;
	if (s->lifeline && !n->leaving) {
		n->stats.lifelines_ended++;
		check_peer(n, s->peer);
	}
	list_del(&s->link);
	ev_io_stop(n->loop, &s->io);
	ev_timer_stop(n->loop, &s->timer);
	close(s->fd);
	free(s->out);
	free(s->in);
	free(s);
}

/* Appends frame f, sealed and length-prefixed, to the stream's output. */
static int stream_put(struct stream *s, const clu_frame *f)
{
	size_t plen = edgepool__cluster__v1__frame__get_packed_size(f);
	uint8_t *plain = malloc(plen ? plen : 1);
	uint8_t *grown = realloc(s->out, s->outlen + 4 + plen + CLU_SEAL_OVERHEAD);
	if (!plain || !grown) {
		free(plain);
		if (grown)
			s->out = grown;
		return -1;
	}
	s->out = grown;
	edgepool__cluster__v1__frame__pack(f, plain);
	ssize_t slen = clu_seal(s->node->kr, CLU_PURPOSE_STREAM, plain, plen, s->out + s->outlen + 4);
	free(plain);
	if (slen < 0)
		return -1;
	uint32_t be = htonl((uint32_t)slen);
	memcpy(s->out + s->outlen, &be, 4);
	s->outlen += 4 + (size_t)slen;
	return 0;
}

/* Our side of an exchange, first: every member we know, and the digest of our store. */
static int stream_put_state(struct stream *s, int join)
{
	struct clu_node *n = s->node;
	unsigned count = clu_count(n->m);
	clu_frame f = EDGEPOOL__CLUSTER__V1__FRAME__INIT;
	Edgepool__Cluster__V1__Header h = EDGEPOOL__CLUSTER__V1__HEADER__INIT;
	Edgepool__Cluster__V1__Member__MetaEntry observer_role =
		EDGEPOOL__CLUSTER__V1__MEMBER__META_ENTRY__INIT;
	Edgepool__Cluster__V1__Member__MetaEntry *observer_meta = &observer_role;
	observer_role.key = CLU_ROLE_KEY;
	observer_role.value = CLU_ROLE_OBSERVER;
	clu_member_msg *mm = calloc(count ? count : 1, sizeof(*mm));
	clu_member_msg **mp = calloc(count ? count : 1, sizeof(*mp));
	clu_address *addrs = calloc(count ? count : 1, sizeof(*addrs));
	uint8_t (*ips)[16] = calloc(count ? count : 1, sizeof(*ips));
	int rc = -1;
	if (mm && mp && addrs && ips) {
		for (unsigned i = 0; i < count; i++) {
			const struct clu_member *m = clu_member_at(n->m, i);
			clu_member_msg init = EDGEPOOL__CLUSTER__V1__MEMBER__INIT;
			clu_address ainit = EDGEPOOL__CLUSTER__V1__ADDRESS__INIT;
			mm[i] = init;
			addrs[i] = ainit;
			addr_to_msg(&m->addr, &addrs[i], ips[i]);
			mm[i].node = (char *)m->name;
			mm[i].incarnation = m->incarnation;
			mm[i].addr = &addrs[i];
			mm[i].state = (Edgepool__Cluster__V1__MemberState)m->state;
			if (m->observer) {
				mm[i].n_meta = 1;
				mm[i].meta = &observer_meta;
			}
			mp[i] = &mm[i];
		}
		uint64_t hashes[DIGEST_BUCKETS];
		Edgepool__Cluster__V1__Digest dg = EDGEPOOL__CLUSTER__V1__DIGEST__INIT;
		clu_store_digest(n->store, DIGEST_BUCKETS, hashes);
		dg.nbuckets = DIGEST_BUCKETS;
		dg.n_bucket_hash = DIGEST_BUCKETS;
		dg.bucket_hash = hashes;
		f.version = CLU_PROTO_VERSION;
		f.body_case = EDGEPOOL__CLUSTER__V1__FRAME__BODY_HEADER;
		f.header = &h;
		h.from = n->name;
		h.join = join;
		h.n_members = count;
		h.members = mp;
		h.digest = &dg;
		rc = stream_put(s, &f);
	}
	free(mm);
	free(mp);
	free(addrs);
	free(ips);
	return rc;
}

/* Merges a peer's member list, as memberlist does: its dead are only suspects to us. */
static void merge_members(struct clu_node *n, const Edgepool__Cluster__V1__Header *h)
{
	double now = now_of(n);
	for (size_t i = 0; i < h->n_members; i++) {
		const clu_member_msg *m = h->members[i];
		struct sockaddr_storage ss;
		socklen_t len = addr_from_msg(m->addr, &ss);
		switch (m->state) {
		case EDGEPOOL__CLUSTER__V1__MEMBER_STATE__ALIVE:
			clu_on_alive(n->m, m->node, m->incarnation, (struct sockaddr *)&ss, len,
			             meta_observer(NULL, 0, m->meta, m->n_meta), now);
			break;
		case EDGEPOOL__CLUSTER__V1__MEMBER_STATE__SUSPECT:
		case EDGEPOOL__CLUSTER__V1__MEMBER_STATE__DEAD:
			clu_on_suspect(n->m, m->node, m->incarnation, h->from, now);
			break;
		case EDGEPOOL__CLUSTER__V1__MEMBER_STATE__LEFT:
			clu_on_dead(n->m, m->node, m->incarnation, m->node, now);
			break;
		default:
			break; /* a state of a newer version: skipped */
		}
	}
}

/* The records of ours that the peer's digest says it may lack, in batches. */
struct batcher {
	struct stream *s;
	const uint64_t *theirs;          /* NULL: send everything */
	uint64_t ours[DIGEST_BUCKETS];
	clu_record *msgs;                /* CLU_BATCH_MAX of them */
	clu_record **ptrs;
	unsigned n;
	size_t bytes;
	unsigned long long sent;
	int failed;
};

static void batch_flush(struct batcher *b)
{
	if (!b->n || b->failed)
		return;
	clu_frame f = EDGEPOOL__CLUSTER__V1__FRAME__INIT;
	Edgepool__Cluster__V1__Batch batch = EDGEPOOL__CLUSTER__V1__BATCH__INIT;
	f.version = CLU_PROTO_VERSION;
	f.body_case = EDGEPOOL__CLUSTER__V1__FRAME__BODY_BATCH;
	f.batch = &batch;
	batch.n_records = b->n;
	batch.records = b->ptrs;
	if (stream_put(b->s, &f) < 0)
		b->failed = 1;
	b->sent += b->n;
	b->n = 0;
	b->bytes = 0;
}

static void batch_add(void *arg, const struct clu_rec *r)
{
	struct batcher *b = arg;
	unsigned bucket = clu_store_bucket(r->key, DIGEST_BUCKETS);
	if (b->failed || (b->theirs && b->theirs[bucket] == b->ours[bucket]))
		return;
	rec_to_msg(r, &b->msgs[b->n]);
	b->ptrs[b->n] = &b->msgs[b->n];
	b->n++;
	b->bytes += strlen(r->key) + r->len + 32;
	/* Frames stay far below CLU_FRAME_MAX: a megabyte at most. */
	if (b->n == CLU_BATCH_MAX || b->bytes > (1u << 20))
		batch_flush(b);
}

/* Our side of an exchange, second: what the peer lacks, then End. */
static int stream_put_records(struct stream *s, const Edgepool__Cluster__V1__Header *h)
{
	struct batcher *b = calloc(1, sizeof(*b));
	int rc = -1;
	if (b) {
		b->s = s;
		b->msgs = calloc(CLU_BATCH_MAX, sizeof(*b->msgs));
		b->ptrs = calloc(CLU_BATCH_MAX, sizeof(*b->ptrs));
	}
	if (b && b->msgs && b->ptrs) {
		if (h->digest && h->digest->nbuckets == DIGEST_BUCKETS)
			b->theirs = h->digest->bucket_hash;
		clu_store_digest(s->node->store, DIGEST_BUCKETS, b->ours);
		clu_store_foreach(s->node->store, batch_add, b);
		batch_flush(b);
		clu_frame f = EDGEPOOL__CLUSTER__V1__FRAME__INIT;
		Edgepool__Cluster__V1__End end = EDGEPOOL__CLUSTER__V1__END__INIT;
		f.version = CLU_PROTO_VERSION;
		f.body_case = EDGEPOOL__CLUSTER__V1__FRAME__BODY_END;
		f.end = &end;
		end.records_sent = b->sent;
		rc = b->failed ? -1 : stream_put(s, &f);
	}
	if (b) {
		free(b->msgs);
		free(b->ptrs);
	}
	free(b);
	return rc;
}

/* Takes the whole frames out of the input. Returns -1 when the stream is bad. */
static int stream_frames(struct stream *s)
{
	size_t off = 0;
	while (s->inlen - off >= 4) {
		uint32_t be;
		memcpy(&be, s->in + off, 4);
		size_t flen = ntohl(be);
		if (flen < CLU_SEAL_OVERHEAD || flen > CLU_FRAME_MAX)
			return -1;
		if (s->inlen - off - 4 < flen)
			break;
		uint8_t *plain = malloc(flen);
		char why[200];
		ssize_t plen = plain ? clu_open(s->node->kr, CLU_PURPOSE_STREAM, s->in + off + 4, flen,
		                                plain) : -1;
		clu_frame *f = plen < 0 ? NULL : clu_frame_decode(plain, (size_t)plen, why, sizeof(why));
		free(plain);
		if (!f)
			return -1;
		int rc = 0;
		if (s->lifeline) {
			/* A lifeline carries nothing: whatever comes is read past. */
		} else if (f->body_case == EDGEPOOL__CLUSTER__V1__FRAME__BODY_LIFELINE && !s->got_header &&
		    !s->lifeline && !s->outbound) {
			/* A lifeline from a peer: kept open, no deadline, nothing to say. */
			s->lifeline = 1;
			snprintf(s->peer, sizeof(s->peer), "%s", f->lifeline->from);
			ev_timer_stop(s->node->loop, &s->timer);
			s->outlen = s->outoff = 0;
		} else if (f->body_case == EDGEPOOL__CLUSTER__V1__FRAME__BODY_HEADER && !s->got_header) {
			s->got_header = 1;
			merge_members(s->node, f->header);
			rc = stream_put_records(s, f->header);
			s->sent_end = rc == 0;
		} else if (f->body_case == EDGEPOOL__CLUSTER__V1__FRAME__BODY_BATCH && s->got_header) {
			uint64_t now = wall_ms(s->node);
			for (size_t i = 0; i < f->batch->n_records; i++) {
				struct clu_rec r = rec_from_msg(f->batch->records[i]);
				clu_store_apply(s->node->store, &r, now);
			}
		} else if (f->body_case == EDGEPOOL__CLUSTER__V1__FRAME__BODY_END && s->got_header) {
			s->got_end = 1;
		} else {
			rc = -1; /* out of order */
		}
		clu_frame_free(f);
		if (rc < 0)
			return -1;
		off += 4 + flen;
	}
	memmove(s->in, s->in + off, s->inlen - off);
	s->inlen -= off;
	return 0;
}

static void stream_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct stream *s = w->data;
	if (s->outbound && !s->connected) {
		int err = 0;
		socklen_t len = sizeof(err);
		if (getsockopt(s->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0 || err) {
			stream_free(s, 1);
			return;
		}
		s->connected = 1;
	}
	while (s->outoff < s->outlen) {
		ssize_t k = send(s->fd, s->out + s->outoff, s->outlen - s->outoff, MSG_NOSIGNAL);
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (k < 0) {
			stream_free(s, 1);
			return;
		}
		s->outoff += (size_t)k;
	}
	for (;;) {
		if (s->incap - s->inlen < 65536) {
			size_t cap = s->incap ? 2 * s->incap : 65536;
			if (cap > 2 * (CLU_FRAME_MAX + 4)) {
				stream_free(s, 1);
				return;
			}
			uint8_t *grown = realloc(s->in, cap);
			if (!grown) {
				stream_free(s, 1);
				return;
			}
			s->in = grown;
			s->incap = cap;
		}
		ssize_t k = recv(s->fd, s->in + s->inlen, s->incap - s->inlen, 0);
		if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			break;
		if (k <= 0) {
			stream_free(s, !s->got_end);
			return;
		}
		s->inlen += (size_t)k;
		if (stream_frames(s) < 0) {
			stream_free(s, 1);
			return;
		}
	}
	if (s->got_end && s->sent_end && s->outoff == s->outlen) {
		stream_free(s, 0);
		return;
	}
	if (s->lifeline && s->connected && s->outoff == s->outlen)
		ev_timer_stop(loop, &s->timer); /* established: it lasts as long as both nodes */
	int want = EV_READ | (s->outoff < s->outlen || !s->connected ? EV_WRITE : 0);
	if (want != (s->io.events & (EV_READ | EV_WRITE))) {
		ev_io_stop(loop, &s->io);
		ev_io_set(&s->io, s->fd, want);
		ev_io_start(loop, &s->io);
	}
}

static void stream_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	stream_free(w->data, 1);
}

static struct stream *stream_new(struct clu_node *n, int fd, int outbound)
{
	struct stream *s = calloc(1, sizeof(*s));
	if (!s) {
		close(fd);
		return NULL;
	}
	s->node = n;
	s->fd = fd;
	s->outbound = outbound;
	s->connected = !outbound;
	list_add_tail(&n->streams, &s->link);
	ev_io_init(&s->io, stream_io_cb, fd, EV_READ | EV_WRITE);
	s->io.data = s;
	ev_io_start(n->loop, &s->io);
	ev_timer_init(&s->timer, stream_timer_cb, n->cfg.stream_timeout, 0);
	s->timer.data = s;
	ev_timer_start(n->loop, &s->timer);
	return s;
}

static void pushpull_with(struct clu_node *n, const struct sockaddr_storage *to, socklen_t len,
                          int join)
{
	int fd = socket(to->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (connect(fd, (const struct sockaddr *)to, len) < 0 && errno != EINPROGRESS) {
		close(fd);
		n->stats.stream_failures++;
		return;
	}
	struct stream *s = stream_new(n, fd, 1);
	if (s && stream_put_state(s, join) < 0)
		stream_free(s, 1);
	else if (s)
		n->stats.streams_out++;
}

/* Accepted streams that are push-pulls (or not yet known as lifelines). */
static unsigned streams_unknown(const struct clu_node *n)
{
	unsigned k = 0;
	const struct list_node *it;
	for (it = n->streams.next; it != &n->streams; it = it->next) {
		const struct stream *s = list_entry(it, const struct stream, link);
		k += !s->outbound && !s->lifeline;
	}
	return k;
}

static void tcp_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct clu_node *n = w->data;
	for (int i = 0; i < 16; i++) {
		int fd = accept4(n->tcp, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0)
			return;
		if (streams_unknown(n) >= STREAMS_IN_MAX) {
			/* A flood of connections costs a close each, not a state each. */
			close(fd);
			n->stats.streams_refused++;
			continue;
		}
		struct stream *s = stream_new(n, fd, 0);
		if (s && stream_put_state(s, 0) < 0)
			stream_free(s, 1);
		else if (s)
			n->stats.streams_in++;
		/* If it turns out a lifeline, what we queued is dropped unsent (stream_frames). */
	}
}

static socklen_t sockaddr_len(const struct sockaddr_storage *ss)
{
	return ss->ss_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* Alone: try the seeds in turn, every second. With company: a random member, now and then. */
static void pushpull_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct clu_node *n = w->data;
	if (clu_alive_count(n->m) <= 1 && n->cfg.nseeds) {
		const struct sockaddr_storage *seed = &n->seeds[n->next_seed++ % n->cfg.nseeds];
		pushpull_with(n, seed, sockaddr_len(seed), 1);
		w->repeat = 1.0;
	} else {
		const struct clu_member *peer;
		if (clu_pick_relays(n->m, "", &peer, 1) == 1)
			pushpull_with(n, &peer->addr, peer->addrlen, 0);
		/* Reach out to one we think dead: after a partition, the other side is. */
		if ((peer = clu_pick_dead(n->m)) != NULL)
			pushpull_with(n, &peer->addr, peer->addrlen, 0);
		w->repeat = n->cfg.pushpull_interval;
	}
	ev_timer_again(loop, w);
}

/* ---- lifelines and death checks ---- */

static int has_lifeline(const struct clu_node *n, const char *peer)
{
	const struct list_node *it;
	for (it = n->streams.next; it != &n->streams; it = it->next) {
		const struct stream *s = list_entry(it, const struct stream, link);
		if (s->lifeline && strcmp(s->peer, peer) == 0)
			return 1;
	}
	return 0;
}

static void lifeline_open(struct clu_node *n, const struct clu_member *to)
{
	int fd = socket(to->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return;
	if (connect(fd, (const struct sockaddr *)&to->addr, to->addrlen) < 0 && errno != EINPROGRESS) {
		close(fd);
		check_peer(n, to->name);
		return;
	}
	struct stream *s = stream_new(n, fd, 1);
	if (!s)
		return;
	s->lifeline = 1;
	snprintf(s->peer, sizeof(s->peer), "%s", to->name);
	clu_frame f = EDGEPOOL__CLUSTER__V1__FRAME__INIT;
	Edgepool__Cluster__V1__Lifeline l = EDGEPOOL__CLUSTER__V1__LIFELINE__INIT;
	f.version = CLU_PROTO_VERSION;
	f.body_case = EDGEPOOL__CLUSTER__V1__FRAME__BODY_LIFELINE;
	f.lifeline = &l;
	l.from = n->name;
	if (stream_put(s, &f) < 0)
		stream_free(s, 0);
}

/* Lifelines to up to LIFELINES_MAX live members: their end is news at once. */
static void lifelines_upkeep(struct clu_node *n)
{
	unsigned open = 0;
	struct list_node *it, *next;
	for (it = n->streams.next; it != &n->streams; it = next) {
		struct stream *s = list_entry(it, struct stream, link);
		const struct clu_member *m = s->lifeline ? clu_find(n->m, s->peer) : NULL;
		next = it->next;
		if (s->lifeline && (!m || m->state > CLU_SUSPECT)) {
			stream_free(s, 0); /* to a dead member: a restarted one gets a new lifeline */
			continue;
		}
		open += s->lifeline && s->outbound;
	}
	for (unsigned i = 0; i < clu_count(n->m) && open < LIFELINES_MAX; i++) {
		const struct clu_member *m = clu_member_at(n->m, i);
		if (m == clu_self(n->m) || m->state != CLU_ALIVE || has_lifeline(n, m->name))
			continue;
		lifeline_open(n, m);
		open++;
	}
}

static void check_free(struct check *c)
{
	list_del(&c->link);
	ev_io_stop(c->node->loop, &c->io);
	ev_timer_stop(c->node->loop, &c->timer);
	if (c->fd >= 0)
		close(c->fd);
	free(c);
}

/* The port refused: nothing listens where it did, so that process is gone. */
static void check_proved_dead(struct check *c)
{
	struct clu_node *n = c->node;
	char peer[CLU_NAME_MAX + 1];
	uint64_t inc = c->incarnation;
	snprintf(peer, sizeof(peer), "%s", c->peer);
	check_free(c);
	n->stats.deaths_seen++;
	if (clu_on_dead(n->m, peer, inc, n->name, ev_now(n->loop)) == 1)
		gossip_soon(n);
}

static void check_connect(struct check *c);

static void check_io_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct check *c = w->data;
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) == 0 && err == ECONNREFUSED) {
		check_proved_dead(c);
		return;
	}
	/* Accepted: a dying process may not have closed its listener yet. Ask again shortly. */
	ev_io_stop(loop, &c->io);
	close(c->fd);
	c->fd = -1;
	if (++c->tries >= CHECK_TRIES) {
		check_free(c);
		return;
	}
	ev_timer_stop(loop, &c->timer);
	ev_timer_set(&c->timer, CHECK_RETRY, 0);
	ev_timer_start(loop, &c->timer);
}

static void check_timer_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct check *c = w->data;
	if (c->fd >= 0)
		check_free(c); /* silence: SWIM's probes will tell */
	else
		check_connect(c);
}

static void check_connect(struct check *c)
{
	struct clu_node *n = c->node;
	const struct clu_member *m = clu_find(n->m, c->peer);
	if (!m || m->state > CLU_SUSPECT || m->incarnation != c->incarnation) {
		check_free(c); /* settled meanwhile */
		return;
	}
	c->fd = socket(m->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		check_free(c);
		return;
	}
	if (connect(c->fd, (const struct sockaddr *)&m->addr, m->addrlen) < 0 && errno != EINPROGRESS) {
		if (errno == ECONNREFUSED)
			check_proved_dead(c);
		else
			check_free(c);
		return;
	}
	ev_io_set(&c->io, c->fd, EV_WRITE);
	ev_io_start(n->loop, &c->io);
	ev_timer_stop(n->loop, &c->timer);
	ev_timer_set(&c->timer, CHECK_TIMEOUT, 0);
	ev_timer_start(n->loop, &c->timer);
}

static void check_peer(struct clu_node *n, const char *peer)
{
	const struct clu_member *m = clu_find(n->m, peer);
	if (!m || m == clu_self(n->m) || m->state > CLU_SUSPECT)
		return;
	struct list_node *it;
	for (it = n->checks.next; it != &n->checks; it = it->next)
		if (strcmp(list_entry(it, struct check, link)->peer, peer) == 0)
			return;
	struct check *c = calloc(1, sizeof(*c));
	if (!c)
		return;
	c->node = n;
	c->fd = -1;
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	c->incarnation = m->incarnation;
	list_add_tail(&n->checks, &c->link);
	ev_init(&c->io, check_io_cb);
	c->io.data = c;
	ev_init(&c->timer, check_timer_cb);
	c->timer.data = c;
	/* Not at once: a member that leaves says so by UDP as it closes its lifelines. */
	ev_timer_set(&c->timer, CHECK_RETRY, 0);
	ev_timer_start(n->loop, &c->timer);
}

/* ---- life cycle ---- */

static int bind_socket(int type, const struct clu_config *cfg, char *err, size_t errlen)
{
	char where[80];
	sa_str(&cfg->bind, where, sizeof(where));
	int fd = socket(cfg->bind.ss_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	int one = 1;
	if (fd < 0) {
		snprintf(err, errlen, "cluster socket: %s", strerror(errno));
		return -1;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&cfg->bind, cfg->bindlen) < 0 ||
	    (type == SOCK_STREAM && listen(fd, 64) < 0)) {
		snprintf(err, errlen, "cluster %s on %s: %s", type == SOCK_STREAM ? "TCP" : "UDP",
		         where, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

struct clu_node *clu_node_new(struct ev_loop *loop, const struct clu_config *cfg, char *err,
                              size_t errlen)
{
	if (!clu_name_valid(cfg->name) || cfg->nkeys == 0 || cfg->packet_max < 512 ||
	    cfg->packet_max > CLU_PACKET_MAX) {
		snprintf(err, errlen, "cluster: a node name, a key and a packet size of 512-%d bytes "
		         "are needed", CLU_PACKET_MAX);
		return NULL;
	}
	struct clu_node *n = calloc(1, sizeof(*n));
	if (!n) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	n->loop = loop;
	n->cfg = *cfg;
	n->udp = n->tcp = -1;
	list_init(&n->streams);
	list_init(&n->confirms);
	list_init(&n->checks);
	snprintf(n->name, sizeof(n->name), "%s", cfg->name);
	n->cfg.name = n->name;
	n->cfg.keys = NULL;
	n->seeds = calloc(cfg->nseeds ? cfg->nseeds : 1, sizeof(*n->seeds));
	n->plain = malloc(cfg->packet_max);
	n->sealed = malloc(cfg->packet_max);
	n->rbuf = malloc(RECV_MAX);
	n->rplain = malloc(RECV_MAX);
	n->kr = clu_keyring_new(cfg->keys[0]);
	if (!n->seeds || !n->plain || !n->sealed || !n->rbuf || !n->rplain || !n->kr)
		goto nomem;
	if (cfg->nseeds)
		memcpy(n->seeds, cfg->seeds, cfg->nseeds * sizeof(*n->seeds));
	n->cfg.seeds = n->seeds;
	for (unsigned i = 1; i < cfg->nkeys; i++)
		if (clu_keyring_add(n->kr, cfg->keys[i]) < 0) {
			snprintf(err, errlen, "cluster: at most %d keys", CLU_MAX_KEYS);
			goto fail;
		}
	if ((n->udp = bind_socket(SOCK_DGRAM, cfg, err, errlen)) < 0 ||
	    (n->tcp = bind_socket(SOCK_STREAM, cfg, err, errlen)) < 0)
		goto fail;
	n->m = clu_members_new(n->name, (const struct sockaddr *)&cfg->bind, cfg->bindlen,
	                       &cfg->timing, 0, ev_now(loop));
	if (!n->m || (cfg->observer && clu_set_observer(n->m) < 0))
		goto nomem;
	clu_members_on_change(n->m, cfg->on_change, cfg->change_arg);
	n->store = clu_store_new(n->name, &cfg->store);
	if (!n->store)
		goto nomem;
	clu_store_on_change(n->store, cfg->on_record, cfg->record_arg);

	ev_io_init(&n->udp_io, udp_cb, n->udp, EV_READ);
	ev_io_init(&n->tcp_io, tcp_cb, n->tcp, EV_READ);
	ev_init(&n->probe_timer, probe_cb);
	ev_init(&n->probe_timeout_timer, probe_timeout_cb);
	ev_timer_init(&n->gossip_timer, gossip_cb, cfg->gossip_interval, cfg->gossip_interval);
	ev_timer_init(&n->house_timer, house_cb, HOUSEKEEPING, HOUSEKEEPING);
	ev_timer_init(&n->pushpull_timer, pushpull_cb, 0, 0);
	ev_init(&n->eager_timer, gossip_cb);
	n->eager_timer.data = n;
	n->udp_io.data = n->tcp_io.data = n;
	n->probe_timer.data = n->probe_timeout_timer.data = n->gossip_timer.data = n;
	n->house_timer.data = n->pushpull_timer.data = n;
	ev_io_start(loop, &n->udp_io);
	ev_io_start(loop, &n->tcp_io);
	n->probe_timer.repeat = cfg->timing.probe_interval;
	ev_timer_again(loop, &n->probe_timer);
	ev_timer_start(loop, &n->gossip_timer);
	ev_timer_start(loop, &n->house_timer);
	ev_timer_start(loop, &n->pushpull_timer);  /* at once: join through the seeds */
	return n;
nomem:
	snprintf(err, errlen, "out of memory");
fail:
	clu_node_leave_and_free(n);
	return NULL;
}

void clu_node_leave_and_free(struct clu_node *n)
{
	if (!n)
		return;
	n->leaving = 1;
	if (n->m && n->udp >= 0 && clu_leave(n->m, now_of(n)) == 0) {
		/* Say it to a few members now: there is no later for us. */
		const struct clu_member *to[8];
		unsigned k = clu_pick_relays(n->m, "", to, 8);
		for (unsigned i = 0; i < k; i++)
			send_packet(n, (const struct sockaddr *)&to[i]->addr, to[i]->addrlen, NULL);
		/* Every member with a lifeline to us sees it end: each must have heard
		 * the leave first (its check waits CHECK_RETRY), or it proves us dead. */
		struct list_node *it;
		for (it = n->streams.next; it != &n->streams; it = it->next) {
			const struct stream *s = list_entry(it, const struct stream, link);
			const struct clu_member *peer = s->lifeline ? clu_find(n->m, s->peer) : NULL;
			if (peer && clu_repeat_leave(n->m) == 0)
				send_packet(n, (const struct sockaddr *)&peer->addr, peer->addrlen, NULL);
		}
	}
	while (!list_empty(&n->streams))
		stream_free(list_entry(n->streams.next, struct stream, link), 0);
	while (!list_empty(&n->confirms))
		confirm_free(list_entry(n->confirms.next, struct clu_confirm, link));
	while (!list_empty(&n->checks))
		check_free(list_entry(n->checks.next, struct check, link));
	ev_timer_stop(n->loop, &n->eager_timer);
	ev_io_stop(n->loop, &n->udp_io);
	ev_io_stop(n->loop, &n->tcp_io);
	ev_timer_stop(n->loop, &n->probe_timer);
	ev_timer_stop(n->loop, &n->probe_timeout_timer);
	ev_timer_stop(n->loop, &n->gossip_timer);
	ev_timer_stop(n->loop, &n->house_timer);
	ev_timer_stop(n->loop, &n->pushpull_timer);
	if (n->udp >= 0)
		close(n->udp);
	if (n->tcp >= 0)
		close(n->tcp);
	clu_members_free(n->m);
	clu_store_free(n->store);
	clu_keyring_free(n->kr);
	free(n->seeds);
	free(n->plain);
	free(n->sealed);
	free(n->rbuf);
	free(n->rplain);
	free(n);
}

int clu_node_put(struct clu_node *n, const char *key, const void *value, size_t len,
                 uint64_t ttl_ms)
{
	const struct clu_rec *r = clu_store_put(n->store, key, value, len, ttl_ms, wall_ms(n));
	if (!r || gossip_record(n, r) < 0)
		return -1;
	gossip_soon(n);
	return 0;
}

int clu_node_delete(struct clu_node *n, const char *key)
{
	const struct clu_rec *r = clu_store_delete(n->store, key, wall_ms(n));
	if (!r || gossip_record(n, r) < 0)
		return -1;
	gossip_soon(n);
	return 0;
}

const struct clu_rec *clu_node_get(const struct clu_node *n, const char *key)
{
	return clu_store_get(n->store, key, wall_ms(n));
}

struct clu_confirm *clu_node_put_confirmed(struct clu_node *n, const char *key, const void *value,
                                           size_t len, uint64_t ttl_ms, double timeout,
                                           clu_confirm_fn done, void *arg)
{
	struct clu_confirm *c = calloc(1, sizeof(*c));
	if (!c || !(c->key = strdup(key)) || clu_node_put(n, key, value, len, ttl_ms) < 0) {
		if (c)
			free(c->key);
		free(c);
		return NULL;
	}
	c->node = n;
	c->done = done;
	c->arg = arg;
	list_add_tail(&n->confirms, &c->link);
	ev_timer_init(&c->attempt, confirm_attempt_cb, 0, 0); /* from the loop, never from here */
	ev_timer_init(&c->deadline, confirm_deadline_cb, timeout, 0);
	c->attempt.data = c->deadline.data = c;
	ev_timer_start(n->loop, &c->attempt);
	ev_timer_start(n->loop, &c->deadline);
	return c;
}

void clu_node_handoff(struct clu_node *n, unsigned peers)
{
	const struct clu_member *to[8];
	/* To nodes that stay in the pool and carry its sessions: not to observers. */
	unsigned k = clu_pick_nodes(n->m, to, peers < 8 ? peers : 8);
	for (unsigned i = 0; i < k; i++)
		pushpull_with(n, &to[i]->addr, to[i]->addrlen, 0);
}

int clu_node_busy(const struct clu_node *n)
{
	const struct list_node *it;
	for (it = n->streams.next; it != &n->streams; it = it->next)
		if (!list_entry(it, const struct stream, link)->lifeline)
			return 1; /* a push-pull: the handoff may be in it */
	return !list_empty(&n->confirms);
}

void clu_node_cancel_confirm(struct clu_confirm *c)
{
	if (c)
		confirm_free(c);
}

void clu_node_on_record(struct clu_node *n, clu_store_fn fn, void *arg)
{
	clu_store_on_change(n->store, fn, arg);
}

const char *clu_node_name(const struct clu_node *n)
{
	return n->name;
}

const struct clu_store *clu_node_store(const struct clu_node *n)
{
	return n->store;
}

const struct clu_members *clu_node_members(const struct clu_node *n)
{
	return n->m;
}

void clu_node_get_stats(const struct clu_node *n, struct clu_node_stats *out)
{
	*out = n->stats;
}

size_t clu_node_status_json(const struct clu_node *n, char *buf, size_t len)
{
	size_t at = 0;
	int k = snprintf(buf, len, "{\"name\": \"%s\", \"incarnation\": %llu, \"awareness\": %u, "
	                 "\"alive\": %u, \"members\": [", n->name,
	                 (unsigned long long)clu_self(n->m)->incarnation, clu_awareness(n->m),
	                 clu_alive_count(n->m));
	for (unsigned i = 0; k >= 0 && i < clu_count(n->m); i++) {
		at += (size_t)k;
		if (at >= len)
			break;
		const struct clu_member *m = clu_member_at(n->m, i);
		char where[80];
		sa_str(&m->addr, where, sizeof(where));
		/* Node names are checked (clu_name_valid): nothing to escape. */
		k = snprintf(buf + at, len - at, "%s{\"name\": \"%s\", \"addr\": \"%s\", \"state\": \"%s\", "
		             "\"incarnation\": %llu, \"lifeline\": %s, \"observer\": %s}", i ? ", " : "",
		             m->name, where, clu_state_name(m->state), (unsigned long long)m->incarnation,
		             has_lifeline(n, m->name) ? "true" : "false", m->observer ? "true" : "false");
	}
	struct clu_store_stats st;
	unsigned lifelines = 0;
	const struct list_node *it;
	clu_store_get_stats(n->store, &st);
	for (it = n->streams.next; it != &n->streams; it = it->next)
		lifelines += list_entry(it, const struct stream, link)->lifeline;
	if (k >= 0 && (at += (size_t)k) < len)
		k = snprintf(buf + at, len - at, "], \"lifelines\": %u, "
		             "\"packets_in\": %llu, \"packets_out\": %llu, "
		             "\"dropped\": %llu, \"streams_in\": %llu, \"streams_out\": %llu, "
		             "\"stream_failures\": %llu, \"streams_refused\": %llu, \"lifelines_ended\": %llu, "
		             "\"deaths_seen\": %llu, \"store\": {\"records\": %zu, "
		             "\"tombstones\": %zu, \"bytes\": %zu, \"applied\": %llu, "
		             "\"refused_full\": %llu, \"refused_clock\": %llu}}",
		             lifelines, n->stats.packets_in, n->stats.packets_out, n->stats.dropped,
		             n->stats.streams_in, n->stats.streams_out, n->stats.stream_failures,
		             n->stats.streams_refused, n->stats.lifelines_ended, n->stats.deaths_seen,
		             st.records, st.tombstones, st.bytes, st.applied, st.refused_full,
		             st.refused_clock);
	if (k < 0 || len == 0)
		return 0;
	at += (size_t)k;
	return at < len ? at : len - 1;
}
