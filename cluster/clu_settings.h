/*
 * clu_settings: the `cluster` section of a daemon's configuration, the same
 * in edged and balancerd, and the struct clu_config it gives.
 *
 *   cluster = { name = "edge-1"; address = "198.18.0.11"; port = 7946;
 *               keys = [ "base64 of 32 bytes", ... ]; join = [ "198.18.0.12:7946" ];
 *               probe_interval_ms = 1000; ... };
 */
#ifndef CLUSTER_CLU_SETTINGS_H
#define CLUSTER_CLU_SETTINGS_H

#include "cfgu.h"
#include "clu_node.h"

struct clu_settings {
	const char *name;         /* this node's, unique in the pool (libconfig's string) */
	struct cfgu_addr addr;    /* UDP and TCP, numeric */
	uint8_t (*keys)[CLU_KEY_LEN]; /* keys[0] seals, all open (owned) */
	unsigned nkeys;
	struct cfgu_addr *join;   /* seeds (owned) */
	unsigned njoin;
	unsigned probe_interval_ms, probe_timeout_ms, gossip_interval_ms, pushpull_interval_s;
	unsigned suspicion_mult, indirect_checks, retransmit_mult;
};

/*
 * Reads the `cluster` group g (NULL: *out = NULL, no cluster). extra names
 * settings of the group that the caller reads itself (NULL-terminated, or
 * NULL). The strings stay owned by libconfig's tree; free *out with
 * clu_settings_free(), which wipes the keys.
 */
int clu_settings_load(struct cfgu *u, const config_setting_t *g, const char *const *extra,
                      struct clu_settings **out);
void clu_settings_free(struct clu_settings *s);

/*
 * Fills *cc from s: start from clu_config_lan(cc), which gives the rest. The seeds are written to
 * seeds, which must hold s->njoin entries and outlive *cc's use.
 */
void clu_settings_apply(const struct clu_settings *s, struct clu_config *cc,
                        struct sockaddr_storage *seeds);

#endif
