#!/bin/sh
# keepalived's notify script for the EdgePool VIP (balancerd -K names it):
#   notify.sh [LOGFILE] TYPE NAME STATE PRIORITY
# keepalived appends TYPE (INSTANCE or GROUP), NAME, STATE (MASTER, BACKUP,
# FAULT, STOP) and PRIORITY. It logs the change to syslog and, with LOGFILE,
# appends "<unix time> NAME STATE" there, so operators and tests can see when
# this node took or gave the VIP. balancerd itself needs no notification: it
# listens on the VIP whether it holds it or not (IP_FREEBIND).
log=""
case "${1:-}" in
/*) log=$1; shift ;;
esac
[ $# -ge 3 ] || { echo "usage: $0 [LOGFILE] TYPE NAME STATE [PRIORITY]" >&2; exit 2; }
logger -t edgepool-vrrp "VRRP $1 $2 is now $3${4:+ (priority $4)}" 2>/dev/null || true
[ -n "$log" ] && echo "$(date +%s.%N) $2 $3" >> "$log"
exit 0
