#include "htab.h"

#include <stdlib.h>

static int grow(struct htab *t)
{
	size_t n = t->nbuckets ? t->nbuckets * 2 : 64;
	struct htab_node **b = calloc(n, sizeof(*b));
	if (!b)
		return -1;
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct htab_node *e = t->buckets[i];
		while (e) {
			struct htab_node *next = e->next;
			size_t j = e->hash & (n - 1);
			e->next = b[j];
			b[j] = e;
			e = next;
		}
	}
	free(t->buckets);
	t->buckets = b;
	t->nbuckets = n;
	return 0;
}

int htab_insert(struct htab *t, struct htab_node *n, uint64_t hash)
{
	int rc = 0;
	if (t->count >= t->nbuckets && grow(t) < 0) {
		rc = -1;
		if (t->nbuckets == 0)
			return -1; /* nowhere to put it at all */
	}
	size_t i = hash & (t->nbuckets - 1);
	n->hash = hash;
	n->next = t->buckets[i];
	t->buckets[i] = n;
	t->count++;
	return rc;
}

void htab_remove(struct htab *t, struct htab_node *n)
{
	if (t->nbuckets == 0)
		return;
	struct htab_node **pp = &t->buckets[n->hash & (t->nbuckets - 1)];
	for (; *pp; pp = &(*pp)->next) {
		if (*pp == n) {
			*pp = n->next;
			n->next = NULL;
			t->count--;
			return;
		}
	}
}

struct htab_node *htab_find(const struct htab *t, uint64_t hash, htab_eq_fn eq, const void *key)
{
	if (t->nbuckets == 0)
		return NULL;
	for (struct htab_node *e = t->buckets[hash & (t->nbuckets - 1)]; e; e = e->next)
		if (e->hash == hash && eq(e, key))
			return e;
	return NULL;
}

void htab_free(struct htab *t)
{
	free(t->buckets);
	t->buckets = NULL;
	t->nbuckets = 0;
	t->count = 0;
}

void htab_foreach(const struct htab *t, void (*fn)(struct htab_node *n, void *arg), void *arg)
{
	for (size_t i = 0; i < t->nbuckets; i++) {
		struct htab_node *e = t->buckets[i];
		while (e) {
			struct htab_node *next = e->next;
			fn(e, arg);
			e = next;
		}
	}
}

uint64_t htab_hash(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++) {
		h ^= p[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

uint64_t htab_hash_nocase(uint64_t h, const void *data, size_t len)
{
	const unsigned char *p = data;
	for (size_t i = 0; i < len; i++) {
		unsigned char c = p[i];
		if (c >= 'A' && c <= 'Z')
			c = (unsigned char)(c + 32);
		h ^= c;
		h *= 0x100000001b3ULL;
	}
	return h;
}
