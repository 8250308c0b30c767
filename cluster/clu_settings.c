#include "clu_settings.h"

#include <stdlib.h>
#include <string.h>

#include "clu_msg.h"

int clu_settings_load(struct cfgu *u, const config_setting_t *g, const char *const *extra,
                      struct clu_settings **out)
{
	const char *known[24] = { "name", "address", "port", "keys", "join", "probe_interval_ms",
	                          "probe_timeout_ms", "gossip_interval_ms", "pushpull_interval_s",
	                          "suspicion_mult", "indirect_checks", "retransmit_mult" };
	unsigned k = 12;
	for (; extra && *extra && k < 23; extra++)
		known[k++] = *extra;
	*out = NULL;
	if (!g)
		return 0;
	if (cfgu_check_members(u, g, known) < 0)
		return -1;
	struct clu_settings *c = calloc(1, sizeof(*c));
	if (!c)
		return cfgu_fail(u, g, "out of memory");
	*out = c;
	const char *address, **keytexts, **joins;
	unsigned port, nkeys, njoin;
	if (cfgu_string(u, g, "name", NULL, &c->name) < 0 ||
	    cfgu_string(u, g, "address", NULL, &address) < 0 ||
	    cfgu_uint(u, g, "port", 1, 65535, 7946, &port) < 0)
		return -1;
	if (!clu_name_valid(c->name))
		return cfgu_fail(u, cfgu_setting(g, "name"), "'%s' is not a node name (letters, "
		                 "digits, '.', '-', '_')", c->name);
	if (cfgu_numeric(address, (uint16_t)port, &c->addr) < 0)
		return cfgu_fail(u, cfgu_setting(g, "address"),
		                 "'%s' is not a numeric IPv4 or IPv6 address", address);
	int rc = cfgu_strings(u, g, "keys", 1, &keytexts, &nkeys);
	if (rc == 0 && nkeys > CLU_MAX_KEYS)
		rc = cfgu_fail(u, cfgu_setting(g, "keys"), "at most %d keys", CLU_MAX_KEYS);
	if (rc == 0 && !(c->keys = calloc(nkeys, sizeof(*c->keys))))
		rc = cfgu_fail(u, g, "out of memory");
	for (unsigned i = 0; rc == 0 && i < nkeys; i++, c->nkeys++)
		if (clu_key_parse(keytexts[i], c->keys[i]) < 0)
			rc = cfgu_fail(u, cfgu_setting(g, "keys"), "key %u is not 32 bytes in base64 "
			               "(openssl rand -base64 32)", i + 1);
	free(keytexts);
	if (rc < 0)
		return -1;
	if (cfgu_strings(u, g, "join", 0, &joins, &njoin) < 0)
		return -1;
	if (njoin && !(c->join = calloc(njoin, sizeof(*c->join))))
		rc = cfgu_fail(u, g, "out of memory");
	for (unsigned i = 0; rc == 0 && i < njoin; i++, c->njoin++)
		if (cfgu_hostport(joins[i], &c->join[i]) < 0)
			rc = cfgu_fail(u, cfgu_setting(g, "join"), "'%s' is not a numeric address:port",
			               joins[i]);
	free(joins);
	if (rc < 0)
		return -1;
	return cfgu_uint(u, g, "probe_interval_ms", 50, 60000, 1000, &c->probe_interval_ms) < 0 ||
	       cfgu_uint(u, g, "probe_timeout_ms", 10, 60000, 500, &c->probe_timeout_ms) < 0 ||
	       cfgu_uint(u, g, "gossip_interval_ms", 10, 60000, 200, &c->gossip_interval_ms) < 0 ||
	       cfgu_uint(u, g, "pushpull_interval_s", 1, 86400, 30, &c->pushpull_interval_s) < 0 ||
	       cfgu_uint(u, g, "suspicion_mult", 1, 100, 4, &c->suspicion_mult) < 0 ||
	       cfgu_uint(u, g, "indirect_checks", 0, 8, 3, &c->indirect_checks) < 0 ||
	       cfgu_uint(u, g, "retransmit_mult", 1, 100, 4, &c->retransmit_mult) < 0
	       ? -1 : 0;
}

void clu_settings_free(struct clu_settings *s)
{
	if (!s)
		return;
	if (s->keys)
		explicit_bzero(s->keys, s->nkeys * sizeof(*s->keys));
	free(s->keys);
	free(s->join);
	free(s);
}

void clu_settings_apply(const struct clu_settings *s, struct clu_config *cc,
                        struct sockaddr_storage *seeds)
{
	cc->name = s->name;
	memcpy(&cc->bind, &s->addr.sa, s->addr.salen);
	cc->bindlen = s->addr.salen;
	cc->keys = (const uint8_t (*)[CLU_KEY_LEN])s->keys;
	cc->nkeys = s->nkeys;
	for (unsigned i = 0; i < s->njoin; i++)
		memcpy(&seeds[i], &s->join[i].sa, s->join[i].salen);
	cc->seeds = seeds;
	cc->nseeds = s->njoin;
	cc->timing.probe_interval = s->probe_interval_ms / 1000.0;
	cc->timing.probe_timeout = s->probe_timeout_ms / 1000.0;
	cc->timing.suspicion_mult = s->suspicion_mult;
	cc->timing.indirect_checks = s->indirect_checks;
	cc->timing.retransmit_mult = s->retransmit_mult;
	cc->gossip_interval = s->gossip_interval_ms / 1000.0;
	cc->pushpull_interval = s->pushpull_interval_s;
}
