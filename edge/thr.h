/*
 * thr: protection against discovered partners, as Lync's Access Edge does
 * it. A partner found through DNS SRV (not an allowed domain) is held to
 * DiscoveredPartnerStandardRate requests per second; one that addresses
 * more than MaxContactsPerDiscoveredPartner distinct internal users within
 * DiscoveredPartnerReportPeriodMinutes is blocked until the period ends
 * (user enumeration); one whose final responses are mostly failures is
 * suspicious and held to 1 request per second until the period ends.
 *
 * In a pool, each node counts its own part and learns the others' parts
 * (thr_take_changes(), thr_set_remote()): contacts and responses are summed
 * over the pool, and each node takes an equal share of the rate. Periods
 * are aligned on the wall clock, so every node counts the same one. Time
 * is passed in, in wall-clock seconds, so the table needs no clock.
 */
#ifndef EDGE_THR_H
#define EDGE_THR_H

#include <stddef.h>
#include <stdint.h>

struct thr_limits {
	unsigned rate;              /* requests per second; the burst is one second's worth */
	unsigned max_contacts;      /* distinct internal users per period */
	int contacts_limit;         /* EnableDiscoveredPartnerContactsLimit */
	double period_s;            /* the report period */
};

/* A partner is suspicious after this many final responses in a period, */
#define THR_SUSPICIOUS_MIN_RESPONSES 20
/* when more than this share of them (percent) are failures (>= 400). */
#define THR_SUSPICIOUS_FAILED_PERCENT 50
/* Partners tracked at once; the least recently seen is forgotten first. */
#define THR_MAX_PARTNERS 10000

struct thr_table;

/* Returns a new table (free with thr_free()), or NULL when out of memory. */
struct thr_table *thr_new(const struct thr_limits *lim);
void thr_free(struct thr_table *t);

enum thr_verdict {
	THR_PASS,
	THR_RATE,                   /* over the rate: 503 with Retry-After */
	THR_BLOCKED,                /* over the contacts limit: 403 until the period ends */
};

struct thr_result {
	enum thr_verdict verdict;
	unsigned retry_after;       /* seconds, for THR_RATE and THR_BLOCKED */
	int changed;                /* the partner was blocked by this request */
	int suspicious;             /* the partner is held to 1 request per second */
	unsigned rate;              /* the rate that applies to it now */
};

/*
 * Admits one request from the discovered partner `domain` to the internal
 * user `contact` (user@host, compared as given). now is in seconds.
 */
void thr_admit(struct thr_table *t, const char *domain, const char *contact, size_t contact_len,
               double now, struct thr_result *out);

/* Notes a final response status to a request of domain's. Returns 1 when
 * the partner just became suspicious. */
int thr_response(struct thr_table *t, const char *domain, unsigned status, double now);

/* One node's part of a partner's counts in a period. */
struct thr_part {
	unsigned contacts;          /* distinct internal users it addressed */
	unsigned responses, failures;
};

/* The live nodes of the pool: each enforces rate / nodes. */
void thr_set_pool_size(struct thr_table *t, unsigned nodes);

/* Another node's part for domain in period (now / period_s, rounded down). */
void thr_set_remote(struct thr_table *t, const char *domain, const char *node, uint64_t period,
                    const struct thr_part *part, double now);

/* Calls fn for every partner whose part of ours changed since the last call. */
typedef void (*thr_part_fn)(void *arg, const char *domain, uint64_t period,
                            const struct thr_part *part);
void thr_take_changes(struct thr_table *t, thr_part_fn fn, void *arg);

struct thr_stats {
	unsigned partners;          /* tracked now */
	unsigned blocked;           /* of them, over the contacts limit */
	unsigned suspicious;        /* of them, suspicious */
	unsigned pool_contacts;     /* their contacts in this period, summed over the pool */
	unsigned long long rate_refused;
	unsigned long long contacts_refused;
};
void thr_get_stats(const struct thr_table *t, double now, struct thr_stats *out);

#endif
