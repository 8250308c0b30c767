#include "clu_msg.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

__attribute__((format(printf, 3, 4)))
static int bad(char *why, size_t whylen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	return -1;
}

int clu_name_valid(const char *name)
{
	size_t n = 0;
	for (const char *p = name; *p; p++, n++) {
		char c = *p;
		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '-' || c == '_') || n >= CLU_NAME_MAX)
			return 0;
	}
	return n > 0;
}

static int check_name(const char *name, const char *what, char *why, size_t whylen)
{
	if (!name || !clu_name_valid(name))
		return bad(why, whylen, "%s is not a node name", what);
	return 0;
}

static int check_addr(const clu_address *a, char *why, size_t whylen)
{
	if (!a || (a->ip.len != 4 && a->ip.len != 16))
		return bad(why, whylen, "an address is not IPv4 or IPv6");
	if (a->port == 0 || a->port > 65535)
		return bad(why, whylen, "an address has port %u", a->port);
	return 0;
}

static int check_meta_entry(const char *key, const char *value, char *why, size_t whylen)
{
	if (!key || !*key || strlen(key) > CLU_META_LEN_MAX || !value ||
	    strlen(value) > CLU_META_LEN_MAX)
		return bad(why, whylen, "a metadata entry is empty or too long");
	return 0;
}

static int check_meta_count(size_t n, char *why, size_t whylen)
{
	if (n > CLU_META_MAX)
		return bad(why, whylen, "%zu metadata entries (at most %d)", n, CLU_META_MAX);
	return 0;
}

static int check_record(const clu_record *r, char *why, size_t whylen)
{
	size_t klen = r->key ? strlen(r->key) : 0;
	if (klen == 0 || klen > CLU_KEY_MAX)
		return bad(why, whylen, "a record key is empty or over %d bytes", CLU_KEY_MAX);
	if (r->value.len > CLU_VALUE_MAX)
		return bad(why, whylen, "a record value is %zu bytes (at most %d)", r->value.len,
		           CLU_VALUE_MAX);
	if (r->tombstone && r->value.len)
		return bad(why, whylen, "a tombstone carries a value");
	if (r->version == 0)
		return bad(why, whylen, "a record has no version");
	return check_name(r->origin, "a record's origin", why, whylen);
}

static int check_gossip(const clu_gossip *g, char *why, size_t whylen)
{
	switch (g->item_case) {
	case EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_ALIVE:
		if (check_name(g->alive->node, "an alive node", why, whylen) < 0 ||
		    check_addr(g->alive->addr, why, whylen) < 0 ||
		    check_meta_count(g->alive->n_meta, why, whylen) < 0)
			return -1;
		for (size_t i = 0; i < g->alive->n_meta; i++)
			if (check_meta_entry(g->alive->meta[i]->key, g->alive->meta[i]->value, why,
			                     whylen) < 0)
				return -1;
		return 0;
	case EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_SUSPECT:
		if (check_name(g->suspect->node, "a suspect node", why, whylen) < 0)
			return -1;
		return check_name(g->suspect->from, "a suspicion's sender", why, whylen);
	case EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_DEAD:
		if (check_name(g->dead->node, "a dead node", why, whylen) < 0)
			return -1;
		return check_name(g->dead->from, "a death's sender", why, whylen);
	case EDGEPOOL__CLUSTER__V1__GOSSIP__ITEM_RECORD:
		return check_record(g->record, why, whylen);
	default:
		return 0; /* a newer kind of item: skipped by whoever reads it */
	}
}

static int check_packet(const clu_packet *p, char *why, size_t whylen)
{
	if (p->version < CLU_PROTO_VERSION)
		return bad(why, whylen, "version %u", p->version);
	if (check_name(p->from, "the sender", why, whylen) < 0)
		return -1;
	switch (p->probe_case) {
	case EDGEPOOL__CLUSTER__V1__PACKET__PROBE_PING:
		if (check_name(p->ping->target, "a ping's target", why, whylen) < 0)
			return -1;
		break;
	case EDGEPOOL__CLUSTER__V1__PACKET__PROBE_INDIRECT_PING:
		if (check_name(p->indirect_ping->target, "an indirect ping's target", why, whylen) < 0 ||
		    check_addr(p->indirect_ping->target_addr, why, whylen) < 0)
			return -1;
		break;
	default:
		break; /* acks carry a seq only; a newer probe is skipped */
	}
	if (p->n_gossip > CLU_GOSSIP_MAX)
		return bad(why, whylen, "%zu gossip items (at most %d)", p->n_gossip, CLU_GOSSIP_MAX);
	for (size_t i = 0; i < p->n_gossip; i++)
		if (check_gossip(p->gossip[i], why, whylen) < 0)
			return -1;
	return 0;
}

clu_packet *clu_packet_decode(const uint8_t *buf, size_t len, char *why, size_t whylen)
{
	if (len > CLU_PACKET_MAX) {
		bad(why, whylen, "%zu bytes (at most %d)", len, CLU_PACKET_MAX);
		return NULL;
	}
	clu_packet *p = edgepool__cluster__v1__packet__unpack(NULL, len, buf);
	if (!p) {
		bad(why, whylen, "not a cluster packet");
		return NULL;
	}
	if (check_packet(p, why, whylen) < 0) {
		clu_packet_free(p);
		return NULL;
	}
	return p;
}

void clu_packet_free(clu_packet *p)
{
	if (p)
		edgepool__cluster__v1__packet__free_unpacked(p, NULL);
}

static int check_member(const clu_member_msg *m, char *why, size_t whylen)
{
	if (check_name(m->node, "a member", why, whylen) < 0 || check_addr(m->addr, why, whylen) < 0 ||
	    check_meta_count(m->n_meta, why, whylen) < 0)
		return -1;
	for (size_t i = 0; i < m->n_meta; i++)
		if (check_meta_entry(m->meta[i]->key, m->meta[i]->value, why, whylen) < 0)
			return -1;
	return 0;
}

static int check_frame(const clu_frame *f, char *why, size_t whylen)
{
	if (f->version < CLU_PROTO_VERSION)
		return bad(why, whylen, "version %u", f->version);
	switch (f->body_case) {
	case EDGEPOOL__CLUSTER__V1__FRAME__BODY_HEADER: {
		const Edgepool__Cluster__V1__Header *h = f->header;
		if (check_name(h->from, "the sender", why, whylen) < 0)
			return -1;
		if (h->n_members > CLU_MEMBERS_MAX)
			return bad(why, whylen, "%zu members (at most %d)", h->n_members, CLU_MEMBERS_MAX);
		for (size_t i = 0; i < h->n_members; i++)
			if (check_member(h->members[i], why, whylen) < 0)
				return -1;
		if (h->digest && (h->digest->nbuckets > CLU_BUCKETS_MAX ||
		                  h->digest->n_bucket_hash != h->digest->nbuckets))
			return bad(why, whylen, "a digest of %zu hashes for %u buckets",
			           h->digest->n_bucket_hash, h->digest->nbuckets);
		return 0;
	}
	case EDGEPOOL__CLUSTER__V1__FRAME__BODY_BATCH:
		if (f->batch->n_records > CLU_BATCH_MAX)
			return bad(why, whylen, "%zu records in a batch (at most %d)", f->batch->n_records,
			           CLU_BATCH_MAX);
		for (size_t i = 0; i < f->batch->n_records; i++)
			if (check_record(f->batch->records[i], why, whylen) < 0)
				return -1;
		return 0;
	case EDGEPOOL__CLUSTER__V1__FRAME__BODY_END:
		return 0;
	case EDGEPOOL__CLUSTER__V1__FRAME__BODY_LIFELINE:
		return check_name(f->lifeline->from, "the sender", why, whylen);
	default:
		/* A stream is a conversation: a frame this version cannot read breaks it. */
		return bad(why, whylen, "a frame of an unknown kind");
	}
}

clu_frame *clu_frame_decode(const uint8_t *buf, size_t len, char *why, size_t whylen)
{
	if (len > CLU_FRAME_MAX) {
		bad(why, whylen, "%zu bytes (at most %d)", len, CLU_FRAME_MAX);
		return NULL;
	}
	clu_frame *f = edgepool__cluster__v1__frame__unpack(NULL, len, buf);
	if (!f) {
		bad(why, whylen, "not a cluster stream frame");
		return NULL;
	}
	if (check_frame(f, why, whylen) < 0) {
		clu_frame_free(f);
		return NULL;
	}
	return f;
}

void clu_frame_free(clu_frame *f)
{
	if (f)
		edgepool__cluster__v1__frame__free_unpacked(f, NULL);
}
