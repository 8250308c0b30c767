/*
 * edged: the EdgePool edge node.
 *
 *   edged [-c FILE] [-t] [-h]
 *
 * Runs in the foreground (a service manager keeps it running) on one libev
 * loop; SIGTERM and SIGINT stop it cleanly; SIGUSR1 drains it first (no new
 * dialogs, its state handed to the pool, then it leaves and stops).
 */
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "accept.h"
#include "cfg.h"
#include "clu_node.h"
#include "clu_settings.h"
#include "log.h"
#include "proxy.h"
#include "status.h"

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: edged [-c FILE] [-t] [-h]\n"
	        "  -c FILE  configuration file (default: the embedded one, as etc/edged.conf)\n"
	        "  -t       check the configuration and its TLS files, then exit\n"
	        "  -h       this help\n");
}

static size_t render_status(void *ctx, char *buf, size_t len)
{
	return proxy_status_json(ctx, buf, len);
}

static void on_member_change(void *arg, const struct clu_member *m, enum clu_state old)
{
	if (m->state == old)
		log_notice("cluster: %s joined (incarnation %llu)", m->name,
		           (unsigned long long)m->incarnation);
	else
		log_notice("cluster: %s is %s (was %s, incarnation %llu)", m->name,
		           clu_state_name(m->state), clu_state_name(old),
		           (unsigned long long)m->incarnation);
}

/* Joins the pool's gossip cluster as the configuration says; NULL with err on failure. */
static struct clu_node *join_cluster(struct ev_loop *loop, const struct clu_settings *c,
                                     char *err, size_t errlen)
{
	struct clu_config cc;
	struct sockaddr_storage *seeds = calloc(c->njoin ? c->njoin : 1, sizeof(*seeds));
	if (!seeds) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	clu_config_lan(&cc);
	clu_settings_apply(c, &cc, seeds);
	cc.on_change = on_member_change;
	struct clu_node *node = clu_node_new(loop, &cc, err, errlen);
	free(seeds);
	return node;
}

struct drain {
	ev_signal signal;
	ev_timer check;
	ev_tstamp deadline;
	double timeout;              /* limits.drain_timeout_s */
	struct proxy *px;
	struct clu_node *cluster;
};

/* Draining ends when nothing is under way any more, or at the deadline: then the node stops. */
static void drain_check_cb(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct drain *d = w->data;
	int busy = proxy_busy(d->px) || (d->cluster && clu_node_busy(d->cluster));
	if (busy && ev_now(loop) < d->deadline)
		return;
	log_notice("drained%s: stopping", busy ? " (the deadline came first)" : "");
	ev_break(loop, EVBREAK_ALL);
}

/* SIGUSR1: stop taking new dialogs, hand our state to the pool, leave when done. */
static void on_drain_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	struct drain *d = w->data;
	if (ev_is_active(&d->check))
		return;
	log_notice("draining: no new dialogs; handing the state to the pool");
	proxy_drain(d->px);
	if (d->cluster)
		clu_node_handoff(d->cluster, 2);
	d->deadline = ev_now(loop) + d->timeout;
	ev_timer_start(loop, &d->check);
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	log_notice("signal %d: stopping", w->signum);
	ev_break(loop, EVBREAK_ALL);
}

int main(int argc, char **argv)
{
	const char *path = NULL;
	int check_only = 0;
	int opt;
	while ((opt = getopt(argc, argv, "c:th")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check_only = 1;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}

	char err[512];
	struct edge_cfg *cfg;
	if (cfg_load(path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "edged: %s\n", err);
		return 1;
	}
	if (cfg_check_files(cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "edged: %s\n", err);
		cfg_free(cfg);
		return 1;
	}
	if (check_only) {
		int rc = proxy_check(cfg, err, sizeof(err));
		if (rc < 0)
			fprintf(stderr, "edged: %s: %s\n", cfg->source, err);
		else
			printf("edged: %s: configuration OK\n", cfg->source);
		cfg_free(cfg);
		return rc < 0 ? 1 : 0;
	}

	log_open("edged", cfg->log_level, cfg->log_syslog);
	signal(SIGPIPE, SIG_IGN);
	/* Each connection is a socket; DNS, the cluster and logs need a few more. */
	unsigned long want = (unsigned long)cfg->max_connections + 256,
	              got = accept_raise_fd_limit(want);
	if (got < want)
		log_warning("open files are limited to %lu, below the %lu that max_connections "
		            "needs: connections past it wait", got, want);
	struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
	struct clu_node *cluster = NULL;
	if (cfg->cluster) {
		cluster = join_cluster(loop, cfg->cluster, err, sizeof(err));
		if (!cluster) {
			log_err("cannot start: %s", err);
			cfg_free(cfg);
			return 1;
		}
		log_info("cluster member %s, joining through %u seed(s)", cfg->cluster->name,
		         cfg->cluster->njoin);
	}
	struct proxy *px = proxy_new(loop, cfg, cluster, err, sizeof(err));
	if (!px) {
		log_err("cannot start: %s", err);
		clu_node_leave_and_free(cluster);
		cfg_free(cfg);
		return 1;
	}
	struct status_server *status = NULL;
	if (cfg->status_enabled) {
		status = status_listen(loop, (const struct sockaddr *)&cfg->status.addr.sa,
		                       cfg->status.addr.salen, render_status, px, err, sizeof(err));
		if (!status) {
			log_err("cannot start: %s", err);
			proxy_free(px);
			clu_node_leave_and_free(cluster);
			cfg_free(cfg);
			return 1;
		}
		log_info("status on http://%s:%u/status", cfg->status.address, cfg->status.port);
	}
	ev_signal sigterm, sigint;
	ev_signal_init(&sigterm, on_stop_signal, SIGTERM);
	ev_signal_init(&sigint, on_stop_signal, SIGINT);
	ev_signal_start(loop, &sigterm);
	ev_signal_start(loop, &sigint);
	struct drain drain = { .px = px, .cluster = cluster, .timeout = cfg->drain_timeout_s };
	ev_signal_init(&drain.signal, on_drain_signal, SIGUSR1);
	drain.signal.data = &drain;
	ev_timer_init(&drain.check, drain_check_cb, 0.1, 0.1);
	drain.check.data = &drain;
	ev_signal_start(loop, &drain.signal);
	log_notice("ready: pool %s, configuration %s", cfg->pool_fqdn, cfg->source);

	ev_run(loop, 0);

	ev_signal_stop(loop, &sigterm);
	ev_signal_stop(loop, &sigint);
	ev_signal_stop(loop, &drain.signal);
	ev_timer_stop(loop, &drain.check);
	status_close(status);
	proxy_free(px);
	clu_node_leave_and_free(cluster);
	cfg_free(cfg);
	ev_loop_destroy(loop);
	log_notice("stopped");
	log_close();
	return 0;
}
