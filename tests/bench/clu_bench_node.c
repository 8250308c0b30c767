/*
 * clu_bench_node: one cluster node in its own process, for the cluster
 * benchmark (tests/bench/cluster_bench.py), so that kill -9 is real.
 *
 *   clu_bench_node --name NAME --bind IP:PORT [--seed IP:PORT]... [--key BASE64]
 *                  [--probe-interval S] [--probe-timeout S] [--suspicion-mult X]
 *                  [--gossip-interval S] [--pushpull-interval S]
 *                  [--watch PREFIX] [--expect N]
 *
 * Timings are the LAN defaults (clu_config_lan) unless an option says
 * otherwise. Commands, one a line on stdin:
 *   put KEY VALUE    write a record (gossiped)
 *   fill N [SIZE]    write N records shaped like dialogs: "dlg/<call-id>/<tag>",
 *                    a SIZE-byte value (20)
 *   stats            print the counters (see below)
 *   quit             leave the cluster and exit; so does the end of stdin
 * Events, one a line on stdout, T a CLOCK_REALTIME time in seconds:
 *   ready NAME T
 *   member NAME STATE OLD T        every change of a member's state
 *   record KEY T                   every change of a record whose key starts with
 *                                  the watch prefix ("bench/"), our own writes too
 *   synced N T                     the store holds N records (--expect N), once
 *   put KEY RC T / filled N RC SECONDS T
 *   stats packets_in P packets_out P bytes_in B bytes_out B records R streams_in S
 *         streams_out S stream_failures F dropped D alive A awareness W rss_kb K
 *         heap_bytes H T
 * heap_bytes is malloc's in-use bytes (mallinfo2: arena in use + mmapped).
 * Exit status: 0 after quit, 1 on a start-up error.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "clu_node.h"

#define SEEDS_MAX 8
#define LINE_MAX_LEN 4096

struct bench {
	struct ev_loop *loop;
	struct clu_node *node;
	const char *watch;
	size_t watch_len;
	size_t expect;
	int synced;
	char line[LINE_MAX_LEN];
	size_t linelen;
	uint64_t rng;
	ev_io in_io;
	ev_signal sigterm, sigint;
};

static double realtime(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[64];
	const char *colon = strrchr(s, ':');
	if (!colon || (size_t)(colon - s) >= sizeof(host))
		return -1;
	memcpy(host, s, (size_t)(colon - s));
	host[colon - s] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end || port <= 0 || port > 65535)
		return -1;
	struct sockaddr_in *a = (struct sockaddr_in *)(void *)ss;
	memset(ss, 0, sizeof(*ss));
	a->sin_family = AF_INET;
	a->sin_port = htons((uint16_t)port);
	if (inet_pton(AF_INET, host, &a->sin_addr) != 1)
		return -1;
	/* Loopback only: this program is for benchmarks on one machine. */
	if ((ntohl(a->sin_addr.s_addr) >> 24) != 127)
		return -1;
	*len = sizeof(*a);
	return 0;
}

static void on_change(void *arg, const struct clu_member *m, enum clu_state old)
{
	printf("member %s %s %s %.6f\n", m->name, clu_state_name(m->state), clu_state_name(old),
	       realtime());
	fflush(stdout);
}

static void on_record(void *arg, const struct clu_rec *r)
{
	struct bench *b = arg;
	if (b->watch_len && strncmp(r->key, b->watch, b->watch_len) == 0) {
		printf("record %s %.6f\n", r->key, realtime());
		fflush(stdout);
	}
	if (b->expect && !b->synced && b->node) {
		struct clu_store_stats st;
		clu_store_get_stats(clu_node_store(b->node), &st);
		if (st.records >= b->expect) {
			b->synced = 1;
			printf("synced %zu %.6f\n", st.records, realtime());
			fflush(stdout);
		}
	}
}

static long rss_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void print_stats(struct bench *b)
{
	struct clu_node_stats ns;
	struct clu_store_stats st;
	struct mallinfo2 mi = mallinfo2();
	clu_node_get_stats(b->node, &ns);
	clu_store_get_stats(clu_node_store(b->node), &st);
	const struct clu_members *m = clu_node_members(b->node);
	printf("stats packets_in %llu packets_out %llu bytes_in %llu bytes_out %llu records %zu "
	       "streams_in %llu streams_out %llu stream_failures %llu dropped %llu alive %u "
	       "awareness %u rss_kb %ld heap_bytes %zu %.6f\n",
	       ns.packets_in, ns.packets_out, ns.bytes_in, ns.bytes_out, st.records, ns.streams_in,
	       ns.streams_out, ns.stream_failures, ns.dropped, clu_alive_count(m), clu_awareness(m),
	       rss_kb(), mi.uordblks + mi.hblkhd, realtime());
}

static uint64_t rng_next(uint64_t *s)
{
	uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

/* n lowercase hex digits. */
static void hex(struct bench *b, char *out, size_t n)
{
	static const char digits[] = "0123456789abcdef";
	uint64_t r = 0;
	for (size_t i = 0; i < n; i++) {
		if (i % 16 == 0)
			r = rng_next(&b->rng);
		out[i] = digits[r & 15];
		r >>= 4;
	}
}

/* A dialog-shaped key: "dlg/" + a UUID-like call-id (36) + "/" + a 16-digit tag. */
static void dialog_key(struct bench *b, char key[64])
{
	char *p = key;
	memcpy(p, "dlg/", 4);
	p += 4;
	hex(b, p, 36);
	p[8] = p[13] = p[18] = p[23] = '-';
	p += 36;
	*p++ = '/';
	hex(b, p, 16);
	p[16] = '\0';
}

static void fill(struct bench *b, long n, long size)
{
	char key[64], value[256];
	double t0 = realtime();
	int rc = 0;
	if (size < 1 || size > (long)sizeof(value))
		size = 20;
	for (long i = 0; i < n && rc == 0; i++) {
		dialog_key(b, key);
		hex(b, value, (size_t)size);
		rc = clu_node_put(b->node, key, value, (size_t)size, 0);
	}
	double t1 = realtime();
	printf("filled %ld %d %.6f %.6f\n", n, rc, t1 - t0, t1);
}

static void quit(struct bench *b)
{
	ev_break(b->loop, EVBREAK_ALL);
}

static void command(struct bench *b, char *line)
{
	char *save = NULL;
	char *cmd = strtok_r(line, " \t\r", &save);
	if (!cmd)
		return;
	if (strcmp(cmd, "put") == 0) {
		char *key = strtok_r(NULL, " \t\r", &save);
		char *value = strtok_r(NULL, " \t\r", &save);
		if (!key || !value) {
			printf("error put KEY VALUE\n");
		} else {
			double t = realtime();
			int rc = clu_node_put(b->node, key, value, strlen(value), 0);
			printf("put %s %d %.6f\n", key, rc, t);
		}
	} else if (strcmp(cmd, "fill") == 0) {
		char *n = strtok_r(NULL, " \t\r", &save);
		char *size = strtok_r(NULL, " \t\r", &save);
		fill(b, n ? atol(n) : 0, size ? atol(size) : 20);
	} else if (strcmp(cmd, "stats") == 0) {
		print_stats(b);
	} else if (strcmp(cmd, "quit") == 0) {
		quit(b);
	} else {
		printf("error unknown command %s\n", cmd);
	}
	fflush(stdout);
}

static void stdin_cb(struct ev_loop *loop, ev_io *w, int revents)
{
	struct bench *b = w->data;
	for (int i = 0; i < 64; i++) {
		ssize_t k = read(0, b->line + b->linelen, sizeof(b->line) - 1 - b->linelen);
		if (k < 0 && (errno == EAGAIN || errno == EINTR))
			return;
		if (k <= 0) {
			quit(b); /* the driver is gone: so are we */
			return;
		}
		b->linelen += (size_t)k;
		char *nl;
		while ((nl = memchr(b->line, '\n', b->linelen))) {
			*nl = '\0';
			command(b, b->line);
			size_t used = (size_t)(nl - b->line) + 1;
			memmove(b->line, nl + 1, b->linelen - used);
			b->linelen -= used;
		}
		if (b->linelen == sizeof(b->line) - 1)
			b->linelen = 0; /* an overlong line: dropped */
	}
}

static void signal_cb(struct ev_loop *loop, ev_signal *w, int revents)
{
	quit(w->data);
}

static double number(const char *opt, const char *s)
{
	char *end;
	double v = strtod(s, &end);
	if (*end || v <= 0) {
		fprintf(stderr, "clu_bench_node: %s wants a positive number, not %s\n", opt, s);
		exit(1);
	}
	return v;
}

static void usage(void)
{
	fprintf(stderr, "usage: clu_bench_node --name NAME --bind IP:PORT [--seed IP:PORT]... "
	        "[--key BASE64] [--probe-interval S] [--probe-timeout S] [--suspicion-mult X] "
	        "[--gossip-interval S] [--pushpull-interval S] [--watch PREFIX] [--expect N]\n");
	exit(1);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "name", required_argument, NULL, 'n' },
		{ "bind", required_argument, NULL, 'b' },
		{ "seed", required_argument, NULL, 's' },
		{ "key", required_argument, NULL, 'k' },
		{ "probe-interval", required_argument, NULL, 'P' },
		{ "probe-timeout", required_argument, NULL, 'T' },
		{ "suspicion-mult", required_argument, NULL, 'S' },
		{ "gossip-interval", required_argument, NULL, 'G' },
		{ "pushpull-interval", required_argument, NULL, 'U' },
		{ "watch", required_argument, NULL, 'w' },
		{ "expect", required_argument, NULL, 'e' },
		{ NULL, 0, NULL, 0 },
	};
	struct clu_config c;
	struct sockaddr_storage seeds[SEEDS_MAX];
	uint8_t key[1][CLU_KEY_LEN];
	const char *key_b64 = "ZWRnZXBvb2wtYmVuY2gtY2x1c3Rlci1rZXktMzJieXQ="; /* 32 bytes */
	struct bench b = { .watch = "bench/" };
	int opt;
	clu_config_lan(&c);
	while ((opt = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (opt) {
		case 'n': c.name = optarg; break;
		case 'b':
			if (parse_addr(optarg, &c.bind, &c.bindlen) < 0)
				usage();
			break;
		case 's': {
			socklen_t len;
			if (c.nseeds == SEEDS_MAX || parse_addr(optarg, &seeds[c.nseeds], &len) < 0)
				usage();
			c.nseeds++;
			break;
		}
		case 'k': key_b64 = optarg; break;
		case 'P': c.timing.probe_interval = number("--probe-interval", optarg); break;
		case 'T': c.timing.probe_timeout = number("--probe-timeout", optarg); break;
		case 'S': c.timing.suspicion_mult = number("--suspicion-mult", optarg); break;
		case 'G': c.gossip_interval = number("--gossip-interval", optarg); break;
		case 'U': c.pushpull_interval = number("--pushpull-interval", optarg); break;
		case 'w': b.watch = optarg; break;
		case 'e': b.expect = (size_t)atol(optarg); break;
		default: usage();
		}
	}
	if (!c.name || !c.bindlen || optind != argc)
		usage();
	if (clu_key_parse(key_b64, key[0]) < 0) {
		fprintf(stderr, "clu_bench_node: --key wants %d bytes in base64\n", CLU_KEY_LEN);
		return 1;
	}
	b.watch_len = strlen(b.watch);
	b.rng = (uint64_t)getpid() ^ (uint64_t)(realtime() * 1e6);
	c.keys = key;
	c.nkeys = 1;
	c.seeds = seeds;
	c.on_change = on_change;
	c.change_arg = &b;
	c.on_record = on_record;
	c.record_arg = &b;

	/* Event lines are read as they come: line-buffered even into a pipe. */
	setvbuf(stdout, NULL, _IOLBF, 0);
	b.loop = ev_default_loop(EVFLAG_AUTO);
	char err[256];
	b.node = clu_node_new(b.loop, &c, err, sizeof(err));
	if (!b.node) {
		fprintf(stderr, "clu_bench_node: %s\n", err);
		return 1;
	}
	fcntl(0, F_SETFL, fcntl(0, F_GETFL) | O_NONBLOCK);
	ev_io_init(&b.in_io, stdin_cb, 0, EV_READ);
	b.in_io.data = &b;
	ev_io_start(b.loop, &b.in_io);
	ev_signal_init(&b.sigterm, signal_cb, SIGTERM);
	ev_signal_init(&b.sigint, signal_cb, SIGINT);
	b.sigterm.data = b.sigint.data = &b;
	ev_signal_start(b.loop, &b.sigterm);
	ev_signal_start(b.loop, &b.sigint);
	printf("ready %s %.6f\n", c.name, realtime());

	ev_run(b.loop, 0);

	clu_node_leave_and_free(b.node);
	b.node = NULL;
	printf("bye %.6f\n", realtime());
	return 0;
}
