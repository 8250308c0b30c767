/*
 * bal_update: keeps the pool's records in an existing DNS server (the zone's
 * primary: BIND, Knot, PowerDNS...) by RFC 2136 dynamic updates signed with
 * TSIG (RFC 8945), on ldns and libev: for sites whose zone lives elsewhere,
 * instead of (or as well as) answering DNS ourselves (bal_dns.h).
 *
 * Each UPDATE goes over TCP to cfg->server and carries, in order:
 *   - the zone section: cfg->zone, type SOA, class IN; no prerequisite;
 *   - with the static records (until an update carrying them succeeded):
 *     for each of SRV _sipfederationtls._tcp.<zone> (sip_port),
 *     _sip._tls.<zone> (sip_tls_port) and _xmpp-server._tcp.<zone>
 *     (xmpp_port) whose port is not 0, "delete the RRset" (class ANY) then
 *     "0 0 port pool_name."; for the VIP name (when set), delete its A and
 *     AAAA RRsets then add vip4/vip6; all with static_ttl. An SRV whose port
 *     is 0 is left alone: it is not ours;
 *   - delete the pool name's A and AAAA RRsets, then add each address with ttl.
 * RFC 2136 applies a message as a whole, so resolvers never see the pool
 * name empty between the delete and the adds, and replacing RRsets (rather
 * than adding to them) means a restart of balancerd piles nothing up.
 *
 * One UPDATE is in flight at a time. A set published while one is in
 * flight, or while a retry waits, is what the next attempt sends (only the
 * newest set matters). A failed attempt (connect refused, no complete
 * answer within cfg->timeout_ms, an rcode other than NOERROR, a response
 * that is unsigned, signed with another key, whose TSIG does not verify or
 * is out of its time window, or that has another id) is retried with the
 * newest set after 0.5 s, doubling up to 30 s, forever; a success resets
 * the delay. Nothing is logged here: failures are counted and the last
 * reason kept in the stats, and an optional callback reports every result.
 */
#ifndef BALANCER_BAL_UPDATE_H
#define BALANCER_BAL_UPDATE_H

#include <ev.h>
#include <stddef.h>
#include <stdint.h>

#include "bal_cfg.h"
#include "bal_dns.h"

/* Errors of bal_update_build(); bal_update_new() writes a sentence instead. */
enum bal_update_err {
	BAL_UPDATE_OK = 0,
	BAL_UPDATE_ENOMEM = -1,
	BAL_UPDATE_ENAME = -2,    /* a name ldns refuses, or one outside the zone */
	BAL_UPDATE_EKEY = -3,     /* TSIG key name, algorithm or secret unusable */
	BAL_UPDATE_ETOOBIG = -4,  /* the message would pass 65535 bytes (TCP's limit) */
};

const char *bal_update_strerror(int err);

struct bal_update_stats {
	unsigned long long sent;      /* attempts begun: each ends as succeeded or failed (or freed) */
	unsigned long long succeeded;
	unsigned long long failed;
	char last_error[128];         /* why the last attempt failed; "" before any failure */
	int in_sync;                  /* the server holds the newest published set */
};

/*
 * Called at the end of every attempt: ok 1 (why NULL) or 0 (why: the same
 * text as last_error, valid during the call only). It runs from the loop,
 * never from bal_update_publish(); it must not free the updater.
 */
typedef void (*bal_update_result_fn)(void *arg, int ok, const char *why);

struct bal_update;

/*
 * An updater of zone in cfg->server. cfg and zone must outlive it (their
 * strings are used in place); zone->domain must name cfg->zone. ttl is that
 * of the pool name's addresses, static_ttl that of the SRV and VIP records.
 * The TSIG key is checked now: algorithm hmac-sha256 (the default, when
 * NULL), hmac-sha512 or hmac-sha1 (hmac-md5 is refused, as RFC 8945 asks;
 * hmac-sha224 and hmac-sha384 are not available in ldns), a key name ldns
 * accepts, a non-empty base64 secret. Nothing is sent before the first
 * bal_update_publish(). Returns NULL with err set on failure.
 */
struct bal_update *bal_update_new(struct ev_loop *loop, const struct bal_cfg_update *cfg,
                                  const struct bal_cfg_zone *zone, uint32_t ttl,
                                  uint32_t static_ttl, char *err, size_t errlen);

/* The callback of every result from now on (fn NULL: none). */
void bal_update_on_result(struct bal_update *u, bal_update_result_fn fn, void *arg);

/*
 * From now on the pool name must resolve to exactly addrs (copied; entries
 * of a family other than AF_INET/AF_INET6, and repeats, are skipped; n may
 * be 0: the name then has no address). The update starts from the loop, at once when none
 * is in flight and no retry is waiting. Publishing the same set as the
 * newest one (in any order) changes nothing. Out of memory: the set is
 * kept as it was, and the failure is counted with its reason.
 */
void bal_update_publish(struct bal_update *u, const struct bal_ip *addrs, unsigned n);

void bal_update_get_stats(const struct bal_update *u, struct bal_update_stats *out);

/* Closes the update in flight, if any, and frees u. NULL is fine. */
void bal_update_free(struct bal_update *u);

/*
 * The UPDATE message an attempt sends, signed with cfg's TSIG key at the
 * current time (pure but for the clock: for tests). with_static adds the
 * static records. On success returns 0 and *wire (malloc'd, the caller
 * frees it) holds *len bytes, without TCP's length prefix; otherwise a
 * negative enum bal_update_err and *wire is NULL.
 */
int bal_update_build(const struct bal_cfg_update *cfg, const struct bal_cfg_zone *zone,
                     uint32_t ttl, uint32_t static_ttl, int with_static,
                     const struct bal_ip *addrs, unsigned n, uint16_t id, uint8_t **wire,
                     size_t *len);

#endif
