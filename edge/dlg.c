#include "dlg.h"

#include <ev.h>
#include <stdio.h>
#include <stdlib.h>
#include <strings.h>

#include "clu_node.h"
#include "clu_store.h"

/* A pool of one keeps this many dialogs at most: enough for an edge of its size. */
#define OWN_RECORDS 1000000
#define OWN_BYTES (256u << 20)
/* Its own store is swept of expired dialogs once every so many writes. */
#define SWEEP_EVERY 1024

struct dlg_registry {
	struct clu_node *cluster;     /* not owned */
	struct clu_store *own;        /* without a cluster */
	unsigned writes;
};

#define SPAN(str) (int)(str).len, (str).s

static uint64_t wall_ms(void)
{
	return (uint64_t)(ev_time() * 1000.0);
}

/* "dlg/<call-id>/<tag>"; -1 when it does not fit a record key. */
static int key_of(char *key, size_t len, struct sip_str call_id, struct sip_str tag)
{
	int n = snprintf(key, len, "dlg/%.*s/%.*s", SPAN(call_id), SPAN(tag));
	return n < 0 || (size_t)n >= len || call_id.len == 0 || tag.len == 0 ? -1 : 0;
}

struct dlg_registry *dlg_new(struct clu_node *cluster)
{
	struct dlg_registry *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->cluster = cluster;
	if (!cluster) {
		struct clu_store_limits lim = { .max_records = OWN_RECORDS, .max_bytes = OWN_BYTES,
		                                .tombstone_ms = 1000 };
		r->own = clu_store_new("self", &lim);
		if (!r->own) {
			free(r);
			return NULL;
		}
	}
	return r;
}

void dlg_free(struct dlg_registry *r)
{
	if (!r)
		return;
	clu_store_free(r->own);
	free(r);
}

int dlg_note(struct dlg_registry *r, struct sip_str call_id, struct sip_str internal_tag,
             struct sip_str partner_domain, uint64_t ttl_ms)
{
	char key[520];
	if (key_of(key, sizeof(key), call_id, internal_tag) < 0)
		return -1;
	if (r->cluster)
		return clu_node_put(r->cluster, key, partner_domain.s, partner_domain.len, ttl_ms);
	uint64_t now = wall_ms();
	if (++r->writes % SWEEP_EVERY == 0)
		clu_store_expire(r->own, now);
	return clu_store_put(r->own, key, partner_domain.s, partner_domain.len, ttl_ms, now)
	       ? 0 : -1;
}

struct clu_confirm *dlg_note_confirmed(struct dlg_registry *r, struct sip_str call_id,
                                       struct sip_str internal_tag, struct sip_str partner_domain,
                                       uint64_t ttl_ms, double timeout,
                                       void (*done)(void *arg, int status), void *arg)
{
	char key[520];
	if (!r->cluster) {
		dlg_note(r, call_id, internal_tag, partner_domain, ttl_ms);
		return NULL;
	}
	if (key_of(key, sizeof(key), call_id, internal_tag) < 0)
		return NULL;
	return clu_node_put_confirmed(r->cluster, key, partner_domain.s, partner_domain.len, ttl_ms,
	                              timeout, done, arg);
}

void dlg_cancel(struct clu_confirm *c)
{
	clu_node_cancel_confirm(c);
}

enum dlg_verdict dlg_check(const struct dlg_registry *r, struct sip_str call_id,
                           struct sip_str internal_tag, struct sip_str partner_domain)
{
	char key[520];
	if (key_of(key, sizeof(key), call_id, internal_tag) < 0)
		return DLG_UNKNOWN;
	const struct clu_rec *rec = r->cluster ? clu_node_get(r->cluster, key)
	                                       : clu_store_get(r->own, key, wall_ms());
	if (!rec)
		return DLG_UNKNOWN;
	if (rec->len != partner_domain.len ||
	    strncasecmp((const char *)rec->value, partner_domain.s, rec->len) != 0)
		return DLG_OTHER_PARTNER;
	return DLG_KNOWN;
}

void dlg_end(struct dlg_registry *r, struct sip_str call_id, struct sip_str internal_tag)
{
	char key[520];
	if (key_of(key, sizeof(key), call_id, internal_tag) < 0)
		return;
	if (r->cluster)
		clu_node_delete(r->cluster, key);
	else
		clu_store_delete(r->own, key, wall_ms());
}
