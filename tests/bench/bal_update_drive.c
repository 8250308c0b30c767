/*
 * bal_update_drive: balancer/bal_update.c against a real DNS server, for
 * tests/integration/test_bal_update.py (BIND) and by hand.
 *
 *   bal_update_drive -k NAME:SECRET [-a ALGORITHM] [-p POOL_NAME]
 *                    [-v VIP_NAME=ADDR[,ADDR...]] [-s SIP_PORT] [-S SIP_TLS_PORT]
 *                    [-x XMPP_PORT] [-l TTL] [-L STATIC_TTL] [-t TIMEOUT_MS]
 *                    [-T SECONDS] [-f FAILURES] [-c]
 *                    SERVER:PORT ZONE SET...
 *
 * A SET is a comma-separated list of IPv4/IPv6 addresses, "-" the empty
 * set. The sets are published one after another, each once the one before
 * is on the server (in_sync); with -c all at once, so that only the last
 * must reach the server (coalescing). Defaults: hmac-sha256, pool name
 * sip.ZONE, no VIP name, ports 5061/443/5269, TTL 5, static TTL 300,
 * timeout 2000 ms, 30 s in all, failures retried until then.
 *
 * Lines on stdout, flushed at once:
 *   result ok | result failed WHY      every attempt's end
 *   synced I                            set I (from 0) is on the server
 *   stats {"sent":N,"succeeded":N,"failed":N,"in_sync":B,"last_error":"..."}  last
 * Exit status: 0 when every set reached the server in turn; 1 after
 * FAILURES failures or SECONDS seconds (the stats say why); 2 for bad usage.
 */
#include <arpa/inet.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bal_update.h"
#include "cfgu.h"

struct drive {
	struct ev_loop *loop;
	struct bal_update *u;
	struct bal_ip **sets;
	unsigned *nsets;
	unsigned count, next;     /* sets; the next to publish */
	int all_at_once;
	unsigned max_failures;    /* 0: no limit */
	unsigned long long failures;
	int rc;                   /* the exit status once the loop ends */
	ev_timer poll, deadline;
};

static void usage(void)
{
	fprintf(stderr, "usage: bal_update_drive -k NAME:SECRET [-a ALGORITHM] [-p POOL_NAME] "
	        "[-v VIP_NAME=ADDR[,ADDR...]] [-s SIP_PORT] [-S SIP_TLS_PORT] [-x XMPP_PORT] "
	        "[-l TTL] [-L STATIC_TTL] [-t TIMEOUT_MS] [-T SECONDS] [-f FAILURES] [-c] "
	        "SERVER:PORT ZONE SET...\n");
	exit(2);
}

static unsigned long number(const char *s, unsigned long max)
{
	char *end;
	unsigned long v = strtoul(s, &end, 10);
	if (!*s || *end || v > max)
		usage();
	return v;
}

/* "a,b,c" or "-" into a new array. Returns the count, or -1 for a bad address. */
static int parse_set(const char *s, struct bal_ip **out)
{
	*out = calloc(strlen(s) / 2 + 1, sizeof(**out));
	if (!*out)
		return -1;
	if (strcmp(s, "-") == 0)
		return 0;
	char *copy = strdup(s), *save = NULL;
	int n = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		struct bal_ip *ip = &(*out)[n];
		ip->family = strchr(t, ':') ? AF_INET6 : AF_INET;
		if (inet_pton(ip->family, t, &ip->u) != 1) {
			fprintf(stderr, "bal_update_drive: bad address %s\n", t);
			n = -1;
			break;
		}
		n++;
	}
	free(copy);
	return n;
}

static void json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void print_stats(const struct bal_update *u)
{
	struct bal_update_stats st;
	bal_update_get_stats(u, &st);
	printf("stats {\"sent\":%llu,\"succeeded\":%llu,\"failed\":%llu,\"in_sync\":%s,"
	       "\"last_error\":", st.sent, st.succeeded, st.failed, st.in_sync ? "true" : "false");
	json_string(st.last_error);
	printf("}\n");
	fflush(stdout);
}

static void publish_next(struct drive *d)
{
	bal_update_publish(d->u, d->sets[d->next], d->nsets[d->next]);
	d->next++;
}

static void on_result(void *arg, int ok, const char *why)
{
	struct drive *d = arg;
	printf("result %s%s%s\n", ok ? "ok" : "failed", ok ? "" : " ", ok ? "" : why);
	fflush(stdout);
	if (!ok && d->max_failures && ++d->failures >= d->max_failures) {
		d->rc = 1;
		ev_break(d->loop, EVBREAK_ONE);
	}
}

/* in_sync is a state, not an event: looked at every few milliseconds. */
static void poll_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct drive *d = w->data;
	struct bal_update_stats st;
	bal_update_get_stats(d->u, &st);
	if (!st.in_sync)
		return;
	printf("synced %u\n", d->next - 1);
	fflush(stdout);
	if (d->next == d->count) {
		d->rc = 0;
		ev_break(loop, EVBREAK_ONE);
		return;
	}
	publish_next(d);
}

static void deadline_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct drive *d = w->data;
	d->rc = 1;
	ev_break(loop, EVBREAK_ONE);
}

static int vip_option(char *arg, struct bal_cfg_zone *z)
{
	char *eq = strchr(arg, '=');
	if (!eq)
		return -1;
	*eq = '\0';
	z->vip_name = arg;
	struct bal_ip *ips;
	int n = parse_set(eq + 1, &ips);
	if (n < 0) {
		free(ips);
		return -1;
	}
	z->vip4 = calloc((size_t)n + 1, sizeof(*z->vip4));
	z->vip6 = calloc((size_t)n + 1, sizeof(*z->vip6));
	for (int i = 0; i < n; i++) {
		if (ips[i].family == AF_INET)
			z->vip4[z->nvip4++] = ips[i].u.v4;
		else
			z->vip6[z->nvip6++] = ips[i].u.v6;
	}
	free(ips);
	return 0;
}

int main(int argc, char **argv)
{
	struct bal_cfg_update cfg = { .tsig_algorithm = "hmac-sha256", .timeout_ms = 2000 };
	struct bal_cfg_zone zone = { .sip_port = 5061, .sip_tls_port = 443, .xmpp_port = 5269 };
	struct drive d = { .rc = 1 };
	uint32_t ttl = 5, static_ttl = 300;
	double seconds = 30;
	char *key = NULL;
	const char *pool = NULL;
	int opt;
	while ((opt = getopt(argc, argv, "k:a:p:v:s:S:x:l:L:t:T:f:c")) != -1) {
		switch (opt) {
		case 'k': key = optarg; break;
		case 'a': cfg.tsig_algorithm = optarg; break;
		case 'p': pool = optarg; break;
		case 'v': if (vip_option(optarg, &zone) < 0) usage(); break;
		case 's': zone.sip_port = (uint16_t)number(optarg, 65535); break;
		case 'S': zone.sip_tls_port = (uint16_t)number(optarg, 65535); break;
		case 'x': zone.xmpp_port = (uint16_t)number(optarg, 65535); break;
		case 'l': ttl = (uint32_t)number(optarg, 0x7fffffff); break;
		case 'L': static_ttl = (uint32_t)number(optarg, 0x7fffffff); break;
		case 't': cfg.timeout_ms = (unsigned)number(optarg, 600000); break;
		case 'T': seconds = (double)number(optarg, 86400); break;
		case 'f': d.max_failures = (unsigned)number(optarg, 1000000); break;
		case 'c': d.all_at_once = 1; break;
		default: usage();
		}
	}
	if (!key || argc - optind < 3)
		usage();
	char *colon = strchr(key, ':');
	if (!colon)
		usage();
	*colon = '\0';
	cfg.tsig_name = key;
	cfg.tsig_secret = colon + 1;
	if (cfgu_hostport(argv[optind], &cfg.server) < 0) {
		fprintf(stderr, "bal_update_drive: bad server %s\n", argv[optind]);
		return 2;
	}
	cfg.zone = zone.domain = argv[optind + 1];
	char pool_buf[300];
	if (!pool) {
		snprintf(pool_buf, sizeof(pool_buf), "sip.%s", zone.domain);
		pool = pool_buf;
	}
	zone.pool_name = pool;

	d.count = (unsigned)(argc - optind - 2);
	d.sets = calloc(d.count, sizeof(*d.sets));
	d.nsets = calloc(d.count, sizeof(*d.nsets));
	for (unsigned i = 0; i < d.count; i++) {
		int n = parse_set(argv[optind + 2 + i], &d.sets[i]);
		if (n < 0)
			usage();
		d.nsets[i] = (unsigned)n;
	}

	d.loop = ev_loop_new(EVFLAG_AUTO);
	char err[256];
	d.u = bal_update_new(d.loop, &cfg, &zone, ttl, static_ttl, err, sizeof(err));
	if (!d.u) {
		fprintf(stderr, "bal_update_drive: %s\n", err);
		d.rc = 2;
	} else {
		bal_update_on_result(d.u, on_result, &d);
		if (d.all_at_once)
			while (d.next < d.count)
				publish_next(&d);
		else
			publish_next(&d);
		ev_timer_init(&d.poll, poll_cb, 0.005, 0.005);
		d.poll.data = &d;
		ev_timer_start(d.loop, &d.poll);
		ev_timer_init(&d.deadline, deadline_cb, seconds, 0);
		d.deadline.data = &d;
		ev_timer_start(d.loop, &d.deadline);
		ev_run(d.loop, 0);
		print_stats(d.u);
		ev_timer_stop(d.loop, &d.poll);
		ev_timer_stop(d.loop, &d.deadline);
		bal_update_free(d.u);
	}
	ev_loop_destroy(d.loop);
	for (unsigned i = 0; i < d.count; i++)
		free(d.sets[i]);
	free(d.sets);
	free(d.nsets);
	free(zone.vip4);
	free(zone.vip6);
	return d.rc;
}
