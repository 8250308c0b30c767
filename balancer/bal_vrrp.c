#include "bal_vrrp.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "sockaddr.h"

int bal_vrrp_set_state(const char *state_file, int ok, char *err, size_t errlen)
{
	/* Truncated and written in place: two bytes, so keepalived's inotify
	 * watch reads either the old word or the new one. */
	int fd = open(state_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s", state_file, strerror(errno));
		return -1;
	}
	const char *text = ok ? "0\n" : "1\n";
	ssize_t n = write(fd, text, 2);
	close(fd);
	if (n != 2) {
		snprintf(err, errlen, "%s: cannot write", state_file);
		return -1;
	}
	return 0;
}

/* The watchdog: waits for the end of the pipe, which comes when balancerd ends. */
static void watchdog(int fd, const char *state_file)
{
	char byte, err[160];
	prctl(PR_SET_NAME, "balancerd-watch", 0, 0, 0);
	signal(SIGTERM, SIG_IGN);
	signal(SIGINT, SIG_IGN);
	signal(SIGHUP, SIG_IGN);
	while (read(fd, &byte, 1) < 0 && errno == EINTR)
		;
	bal_vrrp_set_state(state_file, 0, err, sizeof(err));
	_exit(0);
}

int bal_vrrp_watchdog_start(const char *state_file, char *err, size_t errlen)
{
	int fds[2];
	if (pipe2(fds, O_CLOEXEC) < 0) {
		snprintf(err, errlen, "pipe: %s", strerror(errno));
		return -1;
	}
	pid_t pid = fork();
	if (pid < 0) {
		snprintf(err, errlen, "fork: %s", strerror(errno));
		close(fds[0]);
		close(fds[1]);
		return -1;
	}
	if (pid == 0) {
		close(fds[1]);
		watchdog(fds[0], state_file);
	}
	/* The write end stays open in balancerd, unused, until it ends. */
	close(fds[0]);
	return (int)pid;
}

int bal_vrrp_write_keepalived(const struct bal_cfg *cfg, const char *balancerd_path,
                              const char *config_path, FILE *out, char *err, size_t errlen)
{
	const struct bal_cfg_keepalived *k = cfg->keepalived;
	if (!k || !cfg->vip) {
		snprintf(err, errlen, "%s: no 'keepalived' section", cfg->source);
		return -1;
	}
	if (!cfg->status_enabled) {
		snprintf(err, errlen, "%s: the track script reads the status: section 'status' is "
		         "required", cfg->source);
		return -1;
	}
	const char *name = cfg->cluster ? cfg->cluster->name : "edgepool-balancer";
	fprintf(out,
	        "# keepalived configuration for balancerd %s, written by `balancerd -c %s -K`.\n"
	        "# Regenerate it rather than editing it: balancerd's configuration is the source.\n"
	        "global_defs {\n"
	        "  router_id %s\n"
	        "  script_user root\n"
	        "  enable_script_security\n"
	        "  vrrp_garp_master_refresh 60\n"
	        "}\n\n"
	        "# \"0\" while balancerd serves; its watchdog writes \"1\" the moment it dies.\n"
	        "# A missing file starts as a fault; balancerd's own word is never overwritten.\n"
	        "# Keep it on a tmpfs (/run): no word survives a reboot.\n"
	        "track_file balancerd_state {\n"
	        "  file \"%s\"\n"
	        "  weight 0\n"
	        "  init_file 1\n"
	        "}\n\n"
	        "# A balancerd that hangs: its status stops answering.\n"
	        "vrrp_script balancerd_ready {\n"
	        "  script \"%s -C %s:%u\"\n"
	        "  interval 1\n"
	        "  timeout 1\n"
	        "  fall 2\n"
	        "  rise 1\n"
	        "}\n\n",
	        name, config_path, name, k->state_file, balancerd_path, cfg->status.address,
	        cfg->status.port);
	fprintf(out,
	        "vrrp_instance edgepool_vip {\n"
	        "  state BACKUP\n"
	        "  interface %s\n"
	        "  virtual_router_id %u\n"
	        "  priority %u\n"
	        "  advert_int %u.%02u\n"
	        "  version 3\n"
	        "%s",
	        k->interface, k->virtual_router_id, k->priority, k->advert_ms / 1000,
	        k->advert_ms % 1000 / 10,
	        k->preempt ? "" : "  # The VIP stays where it is when a higher priority returns:\n"
	                          "  # every move resets the legacy partners' connections.\n"
	                          "  nopreempt\n");
	if (k->nunicast_peers) {
		if (k->unicast_src)
			fprintf(out, "  unicast_src_ip %s\n", k->unicast_src);
		fprintf(out, "  unicast_peer {\n");
		for (unsigned i = 0; i < k->nunicast_peers; i++)
			fprintf(out, "    %s\n", k->unicast_peers[i]);
		fprintf(out, "  }\n");
	}
	fprintf(out, "  virtual_ipaddress {\n");
	for (unsigned i = 0; i < cfg->vip->naddrs; i++) {
		const struct sockaddr_storage *sa = &cfg->vip->addrs[i].sa;
		char host[INET6_ADDRSTRLEN];
		fprintf(out, "    %s/%u dev %s\n", sa_ip(sa, host, sizeof(host)),
		        sa->ss_family == AF_INET ? k->prefix_len : 128, k->interface);
	}
	fprintf(out, "  }\n"
	        "  track_file {\n    balancerd_state\n  }\n"
	        "  track_script {\n    balancerd_ready\n  }\n");
	if (k->notify)
		fprintf(out, "  notify \"%s\"\n", k->notify);
	fprintf(out, "}\n");
	if (ferror(out)) {
		snprintf(err, errlen, "cannot write the keepalived configuration");
		return -1;
	}
	return 0;
}
