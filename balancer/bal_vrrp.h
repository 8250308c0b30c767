/*
 * bal_vrrp: balancerd's side of keepalived, which moves the VIP between two
 * balancers with VRRPv3.
 *
 * keepalived learns whether this balancerd may hold the VIP from a state
 * file it watches with inotify (track_file, weight 0): "0" while balancerd
 * serves, "1" otherwise. balancerd writes "0" when it is ready and "1" when
 * it stops; a watchdog process forked at start writes "1" the moment
 * balancerd dies in any way (kill -9 included: its end of a pipe closes), so
 * the VIP leaves this node within milliseconds, not a script interval. A
 * hung balancerd is caught by the track script (`balancerd -C`), every
 * second.
 *
 * `balancerd -K` writes the keepalived configuration for this node from
 * balancerd's own (bal_vrrp_write_keepalived()).
 */
#ifndef BALANCER_BAL_VRRP_H
#define BALANCER_BAL_VRRP_H

#include <stdio.h>

#include "bal_cfg.h"

/*
 * Forks the watchdog for state_file. Call it before opening any socket or
 * file the watchdog must not hold. Returns its pid, or -1 with err set.
 */
int bal_vrrp_watchdog_start(const char *state_file, char *err, size_t errlen);

/* Writes "0" (ok) or "1" into state_file. Returns 0, or -1 with err set. */
int bal_vrrp_set_state(const char *state_file, int ok, char *err, size_t errlen);

/*
 * Writes keepalived.conf for cfg (which has a keepalived section) to out.
 * balancerd_path and config_path: this binary and its configuration, for
 * the track script. Returns 0, or -1 with err set.
 */
int bal_vrrp_write_keepalived(const struct bal_cfg *cfg, const char *balancerd_path,
                              const char *config_path, FILE *out, char *err, size_t errlen);

#endif
