/* Unit tests for cluster/clu_msg.c: decoding and checking the cluster's messages. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "clu_crypt.h"
#include "clu_msg.h"

typedef Edgepool__Cluster__V1__Ping Ping;
typedef Edgepool__Cluster__V1__Alive Alive;
typedef Edgepool__Cluster__V1__Alive__MetaEntry AliveMeta;
typedef Edgepool__Cluster__V1__Suspect Suspect;

static uint8_t ip4[4] = { 127, 0, 0, 1 };

/* A packet: ping from edge-1 to edge-2, with an alive, a suspect and a record. */
struct sample {
	clu_packet p;
	Ping ping;
	clu_gossip g[3], *gp[3];
	Alive alive;
	clu_address addr;
	AliveMeta meta, *metap;
	Suspect suspect;
	clu_record rec;
};

static void sample_init(struct sample *s)
{
	clu_packet p = EDGEPOOL__CLUSTER__V1__PACKET__INIT;
	Ping ping = EDGEPOOL__CLUSTER__V1__PING__INIT;
	Alive alive = EDGEPOOL__CLUSTER__V1__ALIVE__INIT;
	clu_address addr = EDGEPOOL__CLUSTER__V1__ADDRESS__INIT;
	AliveMeta meta = EDGEPOOL__CLUSTER__V1__ALIVE__META_ENTRY__INIT;
	Suspect suspect = EDGEPOOL__CLUSTER__V1__SUSPECT__INIT;
	clu_record rec = EDGEPOOL__CLUSTER__V1__RECORD__INIT;
	memset(s, 0, sizeof(*s));
	s->p = p;
	s->ping = ping;
	s->alive = alive;
	s->addr = addr;
	s->meta = meta;
	s->suspect = suspect;
	s->rec = rec;
	for (int i = 0; i < 3; i++) {
		clu_gossip g = EDGEPOOL__CLUSTER__V1__GOSSIP__INIT;
		s->g[i] = g;
		s->gp[i] = &s->g[i];
	}
	s->p.version = 1;
	s->p.from = "edge-1";
	s->p.probe_case = EDGEPOOL__CLUSTER__V1__PACKET__PROBE_PING;
	s->p.ping = &s->ping;
	s->ping.seq = 7;
	s->ping.target = "edge-2";
	s->addr.ip.data = ip4;
	s->addr.ip.len = 4;
	s->addr.port = 7946;
	s->meta.key = "role";
	s->meta.value = "edge";
	s->metap = &s->meta;
	s->alive.node = "edge-3";
	s->alive.incarnation = 4;
	s->alive.addr = &s->addr;
	s->alive.n_meta = 1;
	s->alive.meta = &s->metap;
	s->g[0].item_case = EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_ALIVE;
	s->g[0].alive = &s->alive;
	s->suspect.node = "edge-4";
	s->suspect.incarnation = 2;
	s->suspect.from = "edge-1";
	s->g[1].item_case = EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_SUSPECT;
	s->g[1].suspect = &s->suspect;
	s->rec.key = "dialog/abc";
	s->rec.value.data = (uint8_t *)"route";
	s->rec.value.len = 5;
	s->rec.version = 99;
	s->rec.origin = "edge-1";
	s->g[2].item_case = EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_RECORD;
	s->g[2].record = &s->rec;
	s->p.n_gossip = 3;
	s->p.gossip = s->gp;
}

/* Packs p and decodes it again; returns the decoded packet or NULL, with why. */
static clu_packet *round_trip(const clu_packet *p, char *why, size_t whylen)
{
	size_t len = edgepool__cluster__v1__packet__get_packed_size(p);
	uint8_t *buf = malloc(len ? len : 1);
	assert_non_null(buf);
	edgepool__cluster__v1__packet__pack(p, buf);
	clu_packet *d = clu_packet_decode(buf, len, why, whylen);
	free(buf);
	return d;
}

static void refused(const clu_packet *p, const char *reason)
{
	char why[200] = "";
	clu_packet *d = round_trip(p, why, sizeof(why));
	if (d) {
		clu_packet_free(d);
		fail_msg("accepted, expected \"%s\"", reason);
	}
	if (!strstr(why, reason))
		fail_msg("refused with \"%s\", expected \"%s\"", why, reason);
}

static void test_good_packet(void **state)
{
	struct sample s;
	char why[200];
	sample_init(&s);
	clu_packet *d = round_trip(&s.p, why, sizeof(why));
	assert_non_null(d);
	assert_string_equal(d->from, "edge-1");
	assert_int_equal(d->ping->seq, 7);
	assert_int_equal(d->n_gossip, 3);
	assert_string_equal(d->gossip[0]->alive->meta[0]->value, "edge");
	assert_int_equal(d->gossip[2]->record->value.len, 5);
	clu_packet_free(d);
}

static void test_bad_names(void **state)
{
	struct sample s;
	char long_name[CLU_NAME_MAX + 2];
	sample_init(&s);
	s.p.from = "";
	refused(&s.p, "the sender is not a node name");
	s.p.from = "edge 1";
	refused(&s.p, "the sender");
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	s.p.from = long_name;
	refused(&s.p, "the sender");
	long_name[CLU_NAME_MAX] = '\0'; /* exactly CLU_NAME_MAX: fine */
	char why[200];
	clu_packet *d = round_trip(&s.p, why, sizeof(why));
	assert_non_null(d);
	clu_packet_free(d);
	sample_init(&s);
	s.ping.target = "x/y";
	refused(&s.p, "a ping's target");
	sample_init(&s);
	s.suspect.from = "";
	refused(&s.p, "a suspicion's sender");
}

static void test_bad_fields(void **state)
{
	struct sample s;
	uint8_t five[5] = { 0 };
	sample_init(&s);
	s.p.version = 0;
	refused(&s.p, "version 0");
	sample_init(&s);
	s.addr.ip.data = five;
	s.addr.ip.len = 5;
	refused(&s.p, "not IPv4 or IPv6");
	sample_init(&s);
	s.addr.port = 70000;
	refused(&s.p, "port 70000");
	sample_init(&s);
	s.rec.tombstone = 1;
	refused(&s.p, "a tombstone carries a value");
	sample_init(&s);
	s.rec.version = 0;
	refused(&s.p, "no version");
	sample_init(&s);
	s.rec.key = "";
	refused(&s.p, "a record key");
	sample_init(&s);
	uint8_t *big = calloc(1, CLU_VALUE_MAX + 1);
	s.rec.value.data = big;
	s.rec.value.len = CLU_VALUE_MAX + 1;
	refused(&s.p, "bytes (at most 65507)"); /* a datagram is smaller than a value may be */
	free(big);
	sample_init(&s);
	s.meta.key = "";
	refused(&s.p, "metadata");
}

static void test_too_many_items(void **state)
{
	struct sample s;
	sample_init(&s);
	clu_gossip **many = calloc(CLU_GOSSIP_MAX + 1, sizeof(*many));
	for (int i = 0; i <= CLU_GOSSIP_MAX; i++)
		many[i] = &s.g[1];
	s.p.gossip = many;
	s.p.n_gossip = CLU_GOSSIP_MAX + 1;
	refused(&s.p, "gossip items");
	s.p.n_gossip = CLU_GOSSIP_MAX;
	char why[200];
	clu_packet *d = round_trip(&s.p, why, sizeof(why));
	assert_non_null(d);
	clu_packet_free(d);
	free(many);
}

/* What a newer version adds is read past: a higher version, an unknown field, an unknown item. */
static void test_newer_versions_tolerated(void **state)
{
	/* version 2, from "n2", an unknown field 15, and a gossip item of unknown kind 9. */
	static const uint8_t wire[] = { 0x08, 0x02, 0x12, 0x02, 'n', '2', 0x78, 0x05,
	                                0x3a, 0x04, 0x4a, 0x02, 'h', 'i' };
	char why[200];
	clu_packet *d = clu_packet_decode(wire, sizeof(wire), why, sizeof(why));
	assert_non_null(d);
	assert_int_equal(d->version, 2);
	assert_int_equal(d->n_gossip, 1);
	assert_int_equal(d->gossip[0]->item_case, EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM__NOT_SET);
	clu_packet_free(d);
}

static void test_garbage(void **state)
{
	struct sample s;
	char why[200];
	sample_init(&s);
	size_t len = edgepool__cluster__v1__packet__get_packed_size(&s.p);
	uint8_t *buf = malloc(len);
	edgepool__cluster__v1__packet__pack(&s.p, buf);
	/* Every truncation is refused (a proto3 prefix can parse: then the checks refuse it). */
	for (size_t n = 0; n < len; n++) {
		clu_packet *d = clu_packet_decode(buf, n, why, sizeof(why));
		clu_packet_free(d);
	}
	static const uint8_t junk[] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01 };
	assert_null(clu_packet_decode(junk, sizeof(junk), why, sizeof(why)));
	assert_string_equal(why, "not a cluster packet");
	assert_null(clu_packet_decode(buf, CLU_PACKET_MAX + 1, why, sizeof(why)));
	free(buf);
}

static void test_sealed_round_trip(void **state)
{
	static const uint8_t key[CLU_KEY_LEN] = { 42 };
	struct clu_keyring *kr = clu_keyring_new(key);
	struct sample s;
	char why[200];
	sample_init(&s);
	size_t len = edgepool__cluster__v1__packet__get_packed_size(&s.p);
	uint8_t *plain = malloc(len), *sealed = malloc(len + CLU_SEAL_OVERHEAD), *opened = malloc(len);
	edgepool__cluster__v1__packet__pack(&s.p, plain);
	ssize_t n = clu_seal(kr, CLU_PURPOSE_PACKET, plain, len, sealed);
	assert_int_equal(n, len + CLU_SEAL_OVERHEAD);
	assert_int_equal(clu_open(kr, CLU_PURPOSE_PACKET, sealed, (size_t)n, opened), len);
	clu_packet *d = clu_packet_decode(opened, len, why, sizeof(why));
	assert_non_null(d);
	assert_string_equal(d->gossip[2]->record->key, "dialog/abc");
	clu_packet_free(d);
	free(plain);
	free(sealed);
	free(opened);
	clu_keyring_free(kr);
}

static clu_frame *frame_round_trip(const clu_frame *f, char *why, size_t whylen)
{
	size_t len = edgepool__cluster__v1__frame__get_packed_size(f);
	uint8_t *buf = malloc(len ? len : 1);
	edgepool__cluster__v1__frame__pack(f, buf);
	clu_frame *d = clu_frame_decode(buf, len, why, whylen);
	free(buf);
	return d;
}

static void test_frames(void **state)
{
	char why[200];
	clu_frame f = EDGEPOOL__CLUSTER__V1__FRAME__INIT;
	Edgepool__Cluster__V1__Header h = EDGEPOOL__CLUSTER__V1__HEADER__INIT;
	Edgepool__Cluster__V1__Digest dg = EDGEPOOL__CLUSTER__V1__DIGEST__INIT;
	uint64_t hashes[2] = { 1, 2 };
	f.version = 1;
	f.body_case = EDGEPOOL__CLUSTER__V1__FRAME__BODY_HEADER;
	f.header = &h;
	h.from = "edge-1";
	h.join = 1;
	h.digest = &dg;
	dg.nbuckets = 2;
	dg.n_bucket_hash = 2;
	dg.bucket_hash = hashes;
	clu_frame *d = frame_round_trip(&f, why, sizeof(why));
	assert_non_null(d);
	assert_true(d->header->join);
	clu_frame_free(d);
	dg.nbuckets = 3; /* the hashes must match the buckets */
	assert_null(frame_round_trip(&f, why, sizeof(why)));
	assert_non_null(strstr(why, "digest"));

	Edgepool__Cluster__V1__Batch b = EDGEPOOL__CLUSTER__V1__BATCH__INIT;
	clu_record r = EDGEPOOL__CLUSTER__V1__RECORD__INIT;
	clu_record **many = calloc(CLU_BATCH_MAX + 1, sizeof(*many));
	r.key = "k";
	r.version = 1;
	r.origin = "edge-2";
	for (int i = 0; i <= CLU_BATCH_MAX; i++)
		many[i] = &r;
	f.body_case = EDGEPOOL__CLUSTER__V1__FRAME__BODY_BATCH;
	f.batch = &b;
	b.records = many;
	b.n_records = CLU_BATCH_MAX;
	d = frame_round_trip(&f, why, sizeof(why));
	assert_non_null(d);
	clu_frame_free(d);
	b.n_records = CLU_BATCH_MAX + 1;
	assert_null(frame_round_trip(&f, why, sizeof(why)));
	/* Values are bounded in a stream too. */
	uint8_t *big = calloc(1, CLU_VALUE_MAX + 1);
	r.value.data = big;
	r.value.len = CLU_VALUE_MAX + 1;
	b.n_records = 1;
	assert_null(frame_round_trip(&f, why, sizeof(why)));
	assert_non_null(strstr(why, "a record value"));
	free(big);
	free(many);

	/* A frame of a kind this version cannot read ends the conversation. */
	static const uint8_t unknown[] = { 0x08, 0x01, 0x4a, 0x00 };
	assert_null(clu_frame_decode(unknown, sizeof(unknown), why, sizeof(why)));
	assert_non_null(strstr(why, "unknown kind"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_packet),
		cmocka_unit_test(test_bad_names),
		cmocka_unit_test(test_bad_fields),
		cmocka_unit_test(test_too_many_items),
		cmocka_unit_test(test_newer_versions_tolerated),
		cmocka_unit_test(test_garbage),
		cmocka_unit_test(test_sealed_round_trip),
		cmocka_unit_test(test_frames),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
