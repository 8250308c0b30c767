/*
 * libFuzzer driver for edge/xmpp_sub.c's record parser: a subscription as
 * another node of the pool wrote it into the store. What decodes must
 * encode back to the same bytes, and decode to the same subscription.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "clu_node.h"
#include "xmpp_sub.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The codec needs no cluster: these keep the gossip code out of the fuzzer. */
int clu_node_put(struct clu_node *n, const char *key, const void *value, size_t len,
                 uint64_t ttl_ms)
{
	abort();
}
int clu_node_delete(struct clu_node *n, const char *key)
{
	abort();
}
const struct clu_rec *clu_node_get(const struct clu_node *n, const char *key)
{
	abort();
}
const struct clu_store *clu_node_store(const struct clu_node *n)
{
	abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct xmpp_sub sub, again;
	char buf[4096];
	if (xmpp_sub_decode((const char *)data, size, &sub) != 0)
		return 0;
	size_t n = xmpp_sub_encode(&sub, buf, sizeof(buf));
	if (n == 0 || xmpp_sub_decode(buf, n, &again) != 0 || memcmp(&sub, &again, sizeof(sub)) != 0)
		abort();
	return 0;
}
