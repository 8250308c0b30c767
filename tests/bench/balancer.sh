#!/bin/bash
# The balancer's benchmarks, each side by side with its peer in one run:
#   failover (tests/bench/balancer_failover.py): the VIP lab of
#     tests/integration/vip_lab.py in network namespaces; kill -9 of balancerd
#     or keepalived on the VRRP master, and of an edge, under a legacy
#     partner's load; balancerd's keepalived configuration against
#     keepalived's defaults (advert_int 1, vrrp_script interval 1 fall 2).
#     Needs root and keepalived; about 3 minutes.
#   proxy (tests/bench/balancer_proxy.py): wrk -> balancerd or HAProxy (TCP
#     mode, PROXY v2 to the backend) -> nginx, and wrk -> nginx directly, on
#     loopback; keep-alive, one connection per request, bulk, one connection.
#     Needs wrk, nginx, haproxy (tools/deps.sh); about 5 minutes.
#
#   tests/bench/balancer.sh [--out DIR] [--repeats N] [--only failover|proxy]
#
# --repeats goes to both (default: theirs, 5); BENCH_FAILOVER_ARGS and
# BENCH_PROXY_ARGS add options of each (e.g. "--seconds 2"). edged and
# balancerd: $EDGED and $BALANCERD, else build/. Markdown summary on stdout,
# progress on stderr, raw data under --out (default: a new folder under
# $TMPDIR): failover/ and proxy/. Every process started is stopped by pid,
# and the namespaces removed, on exit, error or signal.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export EDGED="${EDGED:-$repo/build/edged}"
export BALANCERD="${BALANCERD:-$(dirname "$EDGED")/balancerd}"
[ -x "$BALANCERD" ] || BALANCERD="$repo/build/balancerd"

out=''
repeats=''
only='failover proxy'
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out=$2; shift 2 ;;
	--repeats) repeats=$2; shift 2 ;;
	--only) only=$2; shift 2 ;;
	*) echo "usage: $0 [--out DIR] [--repeats N] [--only failover|proxy]" >&2; exit 2 ;;
	esac
done
out=${out:-$(mktemp -d "${TMPDIR:-/tmp}/edgepool-bench-balancer-XXXXXX")}
mkdir -p "$out"
# 2 x 8000 proxied connections at most (HAProxy maxconn, balancerd max_connections).
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

child=
# shellcheck disable=SC2317 # called by the trap
on_signal() {
	if [ -n "$child" ]; then
		kill -TERM "$child" 2>/dev/null || true
		wait "$child" 2>/dev/null || true
	fi
	exit 130
}
trap on_signal INT TERM HUP

# Runs one driver in the background, so that a signal reaches it through the trap.
run() {
	"$@" &
	child=$!
	local rc=0
	wait "$child" || rc=$?
	child=
	return "$rc"
}

rc=0
rep=()
[ -n "$repeats" ] && rep=(--repeats "$repeats")
if [[ " $only " == *" failover "* ]]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "## Balancer failover: skipped (needs root: network namespaces, keepalived)"
		echo
	else
		# shellcheck disable=SC2086 # the extra options are words on purpose
		run /usr/bin/python3 "$here/balancer_failover.py" --out "$out/failover" "${rep[@]}" \
			${BENCH_FAILOVER_ARGS:-} || rc=1
		echo
	fi
fi
if [[ " $only " == *" proxy "* ]]; then
	# shellcheck disable=SC2086
	run /usr/bin/python3 "$here/balancer_proxy.py" --out "$out/proxy" "${rep[@]}" \
		${BENCH_PROXY_ARGS:-} || rc=1
fi
exit "$rc"
