/*
 * htab: an intrusive chained hash table. Elements embed a struct htab_node;
 * the caller computes hashes and supplies the equality test, so one table
 * type serves every key. The table owns only its bucket array.
 */
#ifndef COMMON_HTAB_H
#define COMMON_HTAB_H

#include <stddef.h>
#include <stdint.h>

struct htab_node {
	struct htab_node *next;
	uint64_t hash;
};

struct htab {
	struct htab_node **buckets;
	size_t nbuckets; /* a power of two, or 0 before the first insert */
	size_t count;
};

/* Returns 0, or -1 when the bucket array could not grow (it still inserts). */
int htab_insert(struct htab *t, struct htab_node *n, uint64_t hash);
void htab_remove(struct htab *t, struct htab_node *n);
typedef int (*htab_eq_fn)(const struct htab_node *n, const void *key);
struct htab_node *htab_find(const struct htab *t, uint64_t hash, htab_eq_fn eq, const void *key);
void htab_free(struct htab *t); /* frees the buckets, not the elements */

/* Iterates every element; fn may remove or free the element it is given, no other. */
void htab_foreach(const struct htab *t, void (*fn)(struct htab_node *n, void *arg), void *arg);

/* 64-bit FNV-1a, chained: h = htab_hash(h, data, len); start from HTAB_SEED. */
#define HTAB_SEED 0xcbf29ce484222325ULL
uint64_t htab_hash(uint64_t h, const void *data, size_t len);
uint64_t htab_hash_nocase(uint64_t h, const void *data, size_t len);

#endif
