#include "sip_txn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAGIC_COOKIE "z9hG4bK"

/* Appends a span, lower-cased when fold is set; returns the new length or -1. */
static int put(char *key, size_t cap, int at, struct sip_str s, int fold)
{
	if (at < 0 || (size_t)at + s.len + 2 > cap)
		return -1;
	for (size_t i = 0; i < s.len; i++) {
		char c = s.s[i];
		key[at++] = fold && c >= 'A' && c <= 'Z' ? (char)(c + 32) : c;
	}
	key[at++] = '\x01'; /* cannot occur in a SIP token or header value */
	key[at] = '\0';
	return at;
}

static struct sip_str method_of(const struct sip_msg *m, enum sip_method method)
{
	if (method != SIP_METHOD_UNKNOWN) {
		const char *name = sip_method_name(method);
		return (struct sip_str){ name, strlen(name) };
	}
	return m->is_request ? m->method_name : m->cseq_method_name;
}

static int top_via(const struct sip_msg *m, struct sip_via *via)
{
	int i = sip_msg_find(m, SIP_HDR_VIA, 0);
	return i < 0 ? -1 : sip_via_parse(m->hdrs[i].value, via);
}

int sip_txn_server_key(const struct sip_msg *req, enum sip_method as_method,
                       char *key, size_t len)
{
	struct sip_via via;
	if (top_via(req, &via) < 0)
		return -1;
	enum sip_method method = as_method != SIP_METHOD_UNKNOWN ? as_method
	                       : req->method == SIP_ACK ? SIP_INVITE : req->method;
	char portbuf[8];
	int n = snprintf(portbuf, sizeof(portbuf), "%u", via.port);
	struct sip_str port = { portbuf, (size_t)n };
	int at = 0;
	if (via.branch.len > 7 && memcmp(via.branch.s, MAGIC_COOKIE, 7) == 0) {
		at = put(key, len, at, via.branch, 0);
	} else {
		/* RFC 2543 peers: the fields that identify a transaction there. */
		char cseq[12];
		n = snprintf(cseq, sizeof(cseq), "%u", req->cseq);
		at = put(key, len, at, SIP_STR_LIT("2543"), 0);
		at = put(key, len, at, req->call_id, 0);
		at = put(key, len, at, (struct sip_str){ cseq, (size_t)n }, 0);
		at = put(key, len, at, req->from_tag, 0);
		at = put(key, len, at, via.branch, 0);
	}
	at = put(key, len, at, via.host, 1);
	at = put(key, len, at, port, 0);
	at = put(key, len, at, method_of(req, method), 0);
	return at;
}

int sip_txn_client_key(const struct sip_msg *resp, char *key, size_t len)
{
	struct sip_via via;
	if (top_via(resp, &via) < 0 || via.branch.len == 0)
		return -1;
	int at = put(key, len, 0, via.branch, 0);
	return put(key, len, at, method_of(resp, resp->cseq_method), 0);
}

int sip_txn_client_key_of(const char *branch, const struct sip_msg *req, char *key, size_t len)
{
	int at = put(key, len, 0, (struct sip_str){ branch, strlen(branch) }, 0);
	return put(key, len, at, method_of(req, req->method), 0);
}

uint64_t sip_txn_loop_hash(const struct sip_msg *req)
{
	uint64_t h = HTAB_SEED;
	h = htab_hash(h, req->ruri.s, req->ruri.len);
	h = htab_hash(h, "\x01", 1);
	h = htab_hash(h, req->from_tag.s, req->from_tag.len);
	h = htab_hash(h, "\x01", 1);
	h = htab_hash(h, req->to_tag.s, req->to_tag.len);
	h = htab_hash(h, "\x01", 1);
	h = htab_hash(h, req->call_id.s, req->call_id.len);
	h = htab_hash(h, &req->cseq, sizeof(req->cseq));
	for (unsigned i = 0; i < req->nhdrs; i++) {
		const struct sip_hdr *hd = &req->hdrs[i];
		if (hd->id == SIP_HDR_ROUTE || hd->id == SIP_HDR_PROXY_REQUIRE) {
			h = htab_hash(h, &hd->id, sizeof(hd->id));
			h = htab_hash(h, hd->value.s, hd->value.len);
		}
	}
	return h;
}

void sip_txn_branch(const struct sip_msg *req, char *out)
{
	/* The top Via holds what the server key holds (branch, sent-by), with
	 * no size limit; the method tells an INVITE from its CANCEL. */
	uint64_t txn = HTAB_SEED;
	int via = sip_msg_find(req, SIP_HDR_VIA, 0);
	if (via >= 0)
		txn = htab_hash(txn, req->hdrs[via].value.s, req->hdrs[via].value.len);
	txn = htab_hash(txn, req->method_name.s, req->method_name.len);
	if (via < 0 || req->hdrs[via].value.len == 0) {
		txn = htab_hash(txn, req->call_id.s, req->call_id.len);
		txn = htab_hash(txn, &req->cseq, sizeof(req->cseq));
	}
	snprintf(out, SIP_TXN_BRANCH_LEN + 1, MAGIC_COOKIE "%016llx.%016llx",
	         (unsigned long long)sip_txn_loop_hash(req), (unsigned long long)txn);
}

int sip_txn_branch_has_loop(struct sip_str branch, uint64_t loop_hash)
{
	char expect[7 + 16 + 2];
	snprintf(expect, sizeof(expect), MAGIC_COOKIE "%016llx.", (unsigned long long)loop_hash);
	return branch.len == SIP_TXN_BRANCH_LEN && memcmp(branch.s, expect, 7 + 16 + 1) == 0;
}

static int link_eq(const struct htab_node *n, const void *key)
{
	return strcmp(((const struct sip_txn_link *)(const void *)n)->key, key) == 0;
}

int sip_txn_add(struct sip_txn_table *t, struct sip_txn_link *n, const char *key)
{
	n->key = strdup(key);
	if (!n->key)
		return -1;
	htab_insert(&t->by_key, &n->node, htab_hash(HTAB_SEED, key, strlen(key)));
	return 0;
}

struct sip_txn_link *sip_txn_find(const struct sip_txn_table *t, const char *key)
{
	struct htab_node *n = htab_find(&t->by_key, htab_hash(HTAB_SEED, key, strlen(key)),
	                                link_eq, key);
	return (struct sip_txn_link *)(void *)n;
}

void sip_txn_del(struct sip_txn_table *t, struct sip_txn_link *n)
{
	if (!n->key)
		return;
	htab_remove(&t->by_key, &n->node);
	free(n->key);
	n->key = NULL;
}

size_t sip_txn_count(const struct sip_txn_table *t)
{
	return t->by_key.count;
}

void sip_txn_table_free(struct sip_txn_table *t)
{
	htab_free(&t->by_key);
}
