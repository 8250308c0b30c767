/*
 * balancerd: the EdgePool front balancer.
 *
 *   balancerd [-c FILE] [-t] [-h]
 *   balancerd [-c FILE] -K         (writes keepalived.conf for this node)
 *   balancerd -C ADDRESS:PORT      (keepalived's track script)
 *
 * Knows which edges may take traffic (bal_health: the cluster's view, its
 * own checks, draining), and serves that knowledge three ways: an
 * authoritative DNS responder (bal_dnsd), RFC 2136 updates of an existing
 * DNS server (bal_update), and an L4 proxy on the VIP for legacy partners
 * (bal_proxy). Runs in the foreground on one libev loop; SIGTERM and SIGINT
 * stop it cleanly.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <ev.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "accept.h"
#include "bal_cfg.h"
#include "bal_dns.h"
#include "bal_dnsd.h"
#include "bal_health.h"
#include "bal_proxy.h"
#include "bal_update.h"
#include "bal_vrrp.h"
#include "clu_node.h"
#include "clu_settings.h"
#include "log.h"
#include "status.h"

#define STATUS_MAX (64 * 1024)

struct balancer {
	struct ev_loop *loop;
	const struct bal_cfg *cfg;
	struct clu_node *cluster;
	struct bal_health *health;
	struct bal_dns *dns;
	struct bal_dnsd *dnsd;
	struct bal_update *update;
	struct bal_proxy *proxy;
	ev_timer publish_timer;      /* coalesces health changes into one publication */
	ev_timer member_timer;       /* once: warns of edges the cluster never named */
	const char *state_file;      /* keepalived's: ready() as "0" or "1"; NULL without keepalived */
	int told_ready;              /* what the state file says now */
	unsigned long long publications;
};

static void usage(FILE *out)
{
	fprintf(out,
	        "usage: balancerd [-c FILE] [-t] [-h]\n"
	        "       balancerd [-c FILE] -K\n"
	        "       balancerd -C ADDRESS:PORT\n"
	        "  -c FILE  configuration file (default: the embedded one, as etc/balancerd.conf)\n"
	        "  -t       check the configuration, then exit\n"
	        "  -K       write keepalived.conf for this node (its `keepalived` section) to stdout\n"
	        "  -C A:P   ask the balancerd whose status listens on A:P whether it is ready\n"
	        "           (exit 0) or not (exit 1): keepalived's track script\n"
	        "  -h       this help\n");
}

/* The addresses DNS publishes: the usable edges, or every edge when none is and the configuration says so. */
static unsigned pool_addresses(const struct balancer *b, struct bal_ip *out)
{
	const struct bal_cfg *cfg = b->cfg;
	unsigned n = 0;
	int all = bal_health_usable_count(b->health) == 0 && cfg->dns.all_when_none_healthy;
	for (unsigned i = 0; i < cfg->nedges; i++) {
		if (!all && !bal_health_usable(b->health, i))
			continue;
		const struct sockaddr_storage *sa = &cfg->edges[i].addr.sa;
		out[n].family = sa->ss_family;
		if (sa->ss_family == AF_INET)
			out[n].u.v4 = ((const struct sockaddr_in *)sa)->sin_addr;
		else
			out[n].u.v6 = ((const struct sockaddr_in6 *)sa)->sin6_addr;
		n++;
	}
	return n;
}

static void publish(struct balancer *b)
{
	const struct bal_cfg *cfg = b->cfg;
	struct bal_ip *addrs = calloc(cfg->nedges + 1, sizeof(*addrs));
	if (!addrs) {
		log_err("out of memory: DNS not updated");
		return;
	}
	unsigned n = pool_addresses(b, addrs);
	for (unsigned z = 0; b->dns && z < cfg->dns.nzones; z++)
		if (bal_dns_set_pool(b->dns, cfg->dns.zones[z].domain, addrs, n) < 0)
			log_err("zone %s: cannot set the pool's addresses", cfg->dns.zones[z].domain);
	if (b->update)
		bal_update_publish(b->update, addrs, n);
	b->publications++;
	free(addrs);
}

/*
 * Ready: this balancer can carry traffic, so keepalived may give it the
 * VIP. It needs an edge to send it to: a balancer that reaches none while
 * the other one does should not hold the VIP.
 */
static int ready(const struct balancer *b)
{
	return b->health && bal_health_usable_count(b->health) > 0;
}

/* Tells keepalived (the state file) when readiness changes. */
static void tell_keepalived(struct balancer *b)
{
	char err[256];
	int now = ready(b);
	if (!b->state_file || now == b->told_ready)
		return;
	if (bal_vrrp_set_state(b->state_file, now, err, sizeof(err)) < 0) {
		log_err("keepalived cannot be told: %s", err);
		return;
	}
	b->told_ready = now;
	log_notice("%s", now ? "an edge is usable: keepalived may give us the VIP"
	                     : "no usable edge: keepalived moves the VIP away");
}

static void on_publish_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	publish(w->data);
	tell_keepalived(w->data);
}

/* A configured edge the cluster never named: a typo in its name, or an edge not in the pool. */
static void on_member_timer(struct ev_loop *loop, ev_timer *w, int revents)
{
	struct balancer *b = w->data;
	for (unsigned i = 0; i < b->cfg->nedges; i++)
		if (!bal_health_member_known(b->health, i))
			log_warning("edge %s is not in the cluster (is it edged's cluster.name?): only "
			            "our own checks judge it", b->cfg->edges[i].name);
}

static void on_health_change(void *arg, unsigned edge, int usable)
{
	struct balancer *b = arg;
	log_notice("edge %s is %s (%u of %u usable)", b->cfg->edges[edge].name,
	           usable ? "usable" : "out of traffic", bal_health_usable_count(b->health),
	           b->cfg->nedges);
	/* Several edges often change in one loop iteration: publish once, right after. */
	if (!ev_is_active(&b->publish_timer)) {
		ev_timer_set(&b->publish_timer, 0., 0.);
		ev_timer_start(b->loop, &b->publish_timer);
	}
}

static void on_member_change(void *arg, const struct clu_member *m, enum clu_state old)
{
	struct balancer *b = arg;
	enum bal_member_view view = m->state == CLU_DEAD || m->state == CLU_LEFT ? BAL_MEMBER_GONE
	                                                                          : BAL_MEMBER_ALIVE;
	if (m->state == old)
		log_info("cluster: %s joined", m->name);
	else
		log_info("cluster: %s is %s (was %s)", m->name, clu_state_name(m->state),
		         clu_state_name(old));
	if (b->health)
		bal_health_set_member(b->health, m->name, view);
}

static void on_update_result(void *arg, int ok, const char *why)
{
	if (ok)
		log_info("dns update: the server holds the pool's addresses");
	else
		log_warning("dns update failed: %s (retrying)", why);
}

static size_t render_status(void *ctx, char *buf, size_t len)
{
	struct balancer *b = ctx;
	size_t off = 0;
#define PUT(...) (off += (size_t)snprintf(buf + off, off < len ? len - off : 0, __VA_ARGS__))
	PUT("{\"ready\":%s,\"usable_edges\":%u,\"publications\":%llu,\"edges\":",
	    ready(b) ? "true" : "false", bal_health_usable_count(b->health), b->publications);
	off += bal_health_status_json(b->health, buf + off, off < len ? len - off : 0);
	if (b->dns) {
		struct bal_dns_stats s;
		bal_dns_get_stats(b->dns, &s);
		PUT(",\"dns\":{\"queries\":%llu,\"answered\":%llu,\"nxdomain\":%llu,\"nodata\":%llu,"
		    "\"refused\":%llu,\"formerr\":%llu,\"notimp\":%llu,\"truncated\":%llu,"
		    "\"dropped\":%llu,\"serial\":%u}",
		    s.queries, s.answered, s.nxdomain, s.nodata, s.refused, s.formerr, s.notimp,
		    s.truncated, s.dropped, bal_dns_serial(b->dns, b->cfg->dns.zones[0].domain));
	}
	if (b->update) {
		struct bal_update_stats s;
		bal_update_get_stats(b->update, &s);
		PUT(",\"update\":{\"sent\":%llu,\"succeeded\":%llu,\"failed\":%llu,\"in_sync\":%s}",
		    s.sent, s.succeeded, s.failed, s.in_sync ? "true" : "false");
	}
	if (b->proxy) {
		PUT(",\"proxy\":");
		off += bal_proxy_status_json(b->proxy, buf + off, off < len ? len - off : 0);
	}
	if (b->cluster) {
		PUT(",\"cluster\":");
		off += clu_node_status_json(b->cluster, buf + off, off < len ? len - off : 0);
	}
	PUT("}\n");
#undef PUT
	return off < len ? off : (len ? len - 1 : 0);
}

/*
 * -C: one GET /status to a running balancerd; ready when it answers in time
 * with "ready":true. keepalived runs it every fraction of a second, so it is
 * a few system calls, with a short timeout.
 */
static int check_ready(const char *target)
{
	struct cfgu_addr a;
	if (cfgu_hostport(target, &a) < 0) {
		fprintf(stderr, "balancerd: '%s' is not a numeric address:port\n", target);
		return 2;
	}
	int fd = socket(a.sa.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { .tv_sec = 0, .tv_usec = 500000 };
	if (fd < 0)
		return 1;
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	static const char req[] = "GET /status HTTP/1.0\r\n\r\n";
	char buf[STATUS_MAX];
	size_t got = 0;
	if (connect(fd, (struct sockaddr *)&a.sa, a.salen) < 0 ||
	    send(fd, req, sizeof(req) - 1, MSG_NOSIGNAL) != (ssize_t)(sizeof(req) - 1)) {
		close(fd);
		return 1;
	}
	for (;;) {
		ssize_t n = recv(fd, buf + got, sizeof(buf) - 1 - got, 0);
		if (n <= 0)
			break;
		got += (size_t)n;
		if (got == sizeof(buf) - 1)
			break;
	}
	close(fd);
	buf[got] = '\0';
	return strstr(buf, "\"ready\":true") ? 0 : 1;
}

/* -K: keepalived's configuration for this node, on stdout. */
static int write_keepalived(struct bal_cfg *cfg, const char *path)
{
	char self[4096], conf[4096], err[512];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	self[n > 0 ? n : 0] = '\0';
	if (!path)
		snprintf(conf, sizeof(conf), "(default)");
	else if (!realpath(path, conf))
		snprintf(conf, sizeof(conf), "%s", path);
	int rc = bal_vrrp_write_keepalived(cfg, n > 0 ? self : "balancerd", conf, stdout, err,
	                                   sizeof(err));
	if (rc < 0)
		fprintf(stderr, "balancerd: %s\n", err);
	bal_cfg_free(cfg);
	return rc < 0 ? 1 : 0;
}

static void on_stop_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
	log_notice("signal %d: stopping", w->signum);
	ev_break(loop, EVBREAK_ALL);
}

static struct clu_node *join_cluster(struct balancer *b, char *err, size_t errlen)
{
	const struct clu_settings *c = b->cfg->cluster;
	struct clu_config cc;
	struct sockaddr_storage *seeds = calloc(c->njoin ? c->njoin : 1, sizeof(*seeds));
	if (!seeds) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	clu_config_lan(&cc);
	clu_settings_apply(c, &cc, seeds);
	cc.on_change = on_member_change;
	cc.change_arg = b;
	cc.observer = 1;    /* not one of the pool's nodes: no share of its limits, no dialogs to hold */
	struct clu_node *node = clu_node_new(b->loop, &cc, err, errlen);
	free(seeds);
	return node;
}

static void stop_all(struct balancer *b)
{
	ev_timer_stop(b->loop, &b->publish_timer);
	ev_timer_stop(b->loop, &b->member_timer);
	bal_proxy_free(b->proxy);
	/* Leaving calls on_member_change(): health must still be there. */
	clu_node_leave_and_free(b->cluster);
	bal_dnsd_free(b->dnsd);
	bal_update_free(b->update);
	bal_dns_free(b->dns);
	bal_health_free(b->health);
	*b = (struct balancer){ .loop = b->loop, .cfg = b->cfg, .state_file = b->state_file };
}

static int start_all(struct balancer *b, char *err, size_t errlen)
{
	const struct bal_cfg *cfg = b->cfg;
	ev_init(&b->publish_timer, on_publish_timer);
	b->publish_timer.data = b;
	ev_init(&b->member_timer, on_member_timer);
	b->member_timer.data = b;
	/* Health first: the cluster's callbacks feed it. */
	if (!(b->health = bal_health_new(b->loop, cfg, on_health_change, b, err, errlen)))
		return -1;
	if (cfg->cluster) {
		if (!(b->cluster = join_cluster(b, err, errlen)))
			return -1;
		/* Long enough for the push-pull of a join, and then some. */
		ev_timer_set(&b->member_timer, 10., 0.);
		ev_timer_start(b->loop, &b->member_timer);
	}
	if (cfg->dns.nzones) {
		if (!(b->dns = bal_dns_new(&cfg->dns, (uint32_t)time(NULL), err, errlen)))
			return -1;
		if (cfg->dns.nlisten &&
		    !(b->dnsd = bal_dnsd_new(b->loop, b->dns, cfg->dns.listen, cfg->dns.nlisten,
		                             cfg->dns.max_tcp_clients, err, errlen)))
			return -1;
	}
	if (cfg->dns.update) {
		const struct bal_cfg_zone *zone = NULL;
		for (unsigned z = 0; z < cfg->dns.nzones; z++)
			if (strcasecmp(cfg->dns.zones[z].domain, cfg->dns.update->zone) == 0)
				zone = &cfg->dns.zones[z];
		b->update = bal_update_new(b->loop, cfg->dns.update, zone, cfg->dns.ttl,
		                           cfg->dns.static_ttl, err, errlen);
		if (!b->update)
			return -1;
		bal_update_on_result(b->update, on_update_result, b);
	}
	if (cfg->vip && !(b->proxy = bal_proxy_new(b->loop, cfg, b->health, b->cluster, err, errlen)))
		return -1;
	/* Until the first checks end, DNS answers as if no edge were healthy. */
	publish(b);
	return 0;
}

int main(int argc, char **argv)
{
	const char *path = NULL, *check_target = NULL;
	int check_only = 0, keepalived_conf = 0;
	int opt;
	while ((opt = getopt(argc, argv, "c:tKC:h")) != -1) {
		switch (opt) {
		case 'c':
			path = optarg;
			break;
		case 't':
			check_only = 1;
			break;
		case 'K':
			keepalived_conf = 1;
			break;
		case 'C':
			check_target = optarg;
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
	if (check_target)
		return check_ready(check_target);

	char err[512];
	struct bal_cfg *cfg;
	if (bal_cfg_load(path, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "balancerd: %s\n", err);
		return 1;
	}
	if (check_only) {
		printf("balancerd: %s: configuration OK\n", cfg->source);
		bal_cfg_free(cfg);
		return 0;
	}
	if (keepalived_conf)
		return write_keepalived(cfg, path);

	const char *state_file = cfg->keepalived ? cfg->keepalived->state_file : NULL;
	/* Before any socket is opened, syslog's included: the watchdog must hold none. */
	if (state_file && (bal_vrrp_set_state(state_file, 0, err, sizeof(err)) < 0 ||
	                   bal_vrrp_watchdog_start(state_file, err, sizeof(err)) < 0)) {
		fprintf(stderr, "balancerd: cannot start: %s\n", err);
		bal_cfg_free(cfg);
		return 1;
	}
	log_open("balancerd", cfg->log_level, cfg->log_syslog);
	signal(SIGPIPE, SIG_IGN);
	/* Two sockets a relayed connection, the DNS clients, and room for the rest. */
	unsigned long want = (cfg->vip ? 2ul * cfg->vip->max_connections : 0) +
	                     cfg->dns.max_tcp_clients + 256, got = accept_raise_fd_limit(want);
	if (got < want)
		log_warning("open files are limited to %lu, below the %lu the configured limits "
		            "need: connections past it wait", got, want);
	struct balancer b = { .loop = ev_default_loop(EVFLAG_AUTO), .cfg = cfg,
	                      .state_file = state_file };
	struct status_server *status = NULL;
	int rc = start_all(&b, err, sizeof(err));
	if (rc == 0 && cfg->status_enabled) {
		status = status_listen(b.loop, (const struct sockaddr *)&cfg->status.addr.sa,
		                       cfg->status.addr.salen, render_status, &b, err, sizeof(err));
		rc = status ? 0 : -1;
	}
	if (rc < 0) {
		log_err("cannot start: %s", err);
		stop_all(&b);
		bal_cfg_free(cfg);
		return 1;
	}
	ev_signal sigterm, sigint;
	ev_signal_init(&sigterm, on_stop_signal, SIGTERM);
	ev_signal_init(&sigint, on_stop_signal, SIGINT);
	ev_signal_start(b.loop, &sigterm);
	ev_signal_start(b.loop, &sigint);
	log_notice("ready: %u edges, %u zones%s%s, configuration %s", cfg->nedges, cfg->dns.nzones,
	           b.update ? ", dynamic updates" : "", b.proxy ? ", VIP proxy" : "", cfg->source);

	ev_run(b.loop, 0);

	/* Tell keepalived first: the VIP goes to the other balancer as we stop. The
	 * connections we relay end with us (their packets would reach the other
	 * balancer, which does not know them, anyway). */
	if (state_file && bal_vrrp_set_state(state_file, 0, err, sizeof(err)) < 0)
		log_err("%s", err);
	ev_signal_stop(b.loop, &sigterm);
	ev_signal_stop(b.loop, &sigint);
	status_close(status);
	stop_all(&b);
	ev_loop_destroy(b.loop);
	bal_cfg_free(cfg);
	log_notice("stopped");
	log_close();
	return 0;
}
