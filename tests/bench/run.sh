#!/bin/bash
# make bench: every benchmark of tests/bench, edged side by side with
# Kamailio, on build/edged (or $EDGED), the gossip cluster side by side
# with serf (build/bench/clu_bench_node, built by cluster.sh), and the
# balancer (build/balancerd, or $BALANCERD): failover against keepalived's
# defaults, the VIP's proxy against HAProxy; and the XMPP gateway against
# Prosody's own s2s acceptance. Prints a summary; raw results go
# to $BENCH_OUT (default: a new folder under $TMPDIR), never into the tree.
#   BENCH_MEMORY_ARGS / BENCH_RELAY_ARGS / BENCH_CLUSTER_ARGS /
#   BENCH_BALANCER_ARGS / BENCH_XMPP_ARGS: extra options for each benchmark, e.g.
#   BENCH_RELAY_ARGS="--repeats 1 --seconds 2" for a quick look;
#   BENCH_ONLY="cluster" (or "balancer", "xmpp", ...) runs only the benchmarks named.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export EDGED="${EDGED:-$repo/build/edged}"
export BALANCERD="${BALANCERD:-$repo/build/balancerd}"
out=${BENCH_OUT:-$(mktemp -d "${TMPDIR:-/tmp}/edgepool-bench-XXXXXX")}
mkdir -p "$out"
# One copy of edged (and balancerd) for every benchmark: a rebuild during the
# run must not split it between two binaries.
cp "$EDGED" "$out/edged"
chmod a-w "$out/edged"
export EDGED="$out/edged"
if [ -x "$BALANCERD" ]; then
	cp "$BALANCERD" "$out/balancerd"
	chmod a-w "$out/balancerd"
	export BALANCERD="$out/balancerd"
fi

child=
# shellcheck disable=SC2317 # called by the trap
stop_child() {
	[ -n "$child" ] && kill -TERM "$child" 2>/dev/null && wait "$child" 2>/dev/null
	exit 130
}
trap stop_child INT TERM HUP

# Runs one benchmark in the background (so that a signal reaches it through
# the trap), its summary to $out/NAME.md, its progress to $out/NAME.log.
bench() {
	local name=$1; shift
	echo "== $name (progress: $out/$name.log)" >&2
	"$@" > "$out/$name.md" 2> "$out/$name.log" &
	child=$!
	local rc=0
	wait "$child" || rc=$?
	child=
	if [ "$rc" -ne 0 ]; then
		echo "$name failed ($rc):" >&2
		tail -n 20 "$out/$name.log" >&2
	fi
	return "$rc"
}

only=" ${BENCH_ONLY:-idle_tls_memory message_relay cluster balancer xmpp} "
rc=0
# shellcheck disable=SC2086 # the extra options are words on purpose
[[ $only == *" idle_tls_memory "* ]] &&
	{ bench idle_tls_memory "$here/idle_tls_memory.sh" --out "$out/idle_tls_memory" ${BENCH_MEMORY_ARGS:-} || rc=1; }
# shellcheck disable=SC2086
[[ $only == *" message_relay "* ]] &&
	{ bench message_relay "$here/message_relay.sh" --out "$out/message_relay" ${BENCH_RELAY_ARGS:-} || rc=1; }
# About 50 minutes: 27 pools of 5-20 nodes (each 100 s: a 30 s window at rest
# from 62 s after the start), and three 100,000-record joins.
# shellcheck disable=SC2086
[[ $only == *" cluster "* ]] &&
	{ bench cluster "$here/cluster.sh" --out "$out/cluster" ${BENCH_CLUSTER_ARGS:-} || rc=1; }
# About 8 minutes: failover in network namespaces (needs root), then the
# proxy against HAProxy.
# shellcheck disable=SC2086
[[ $only == *" balancer "* ]] &&
	{ bench balancer "$here/balancer.sh" --out "$out/balancer" ${BENCH_BALANCER_ARGS:-} || rc=1; }
# About 8 minutes: Prosody 0.12 and sipp, loopback only.
# shellcheck disable=SC2086
[[ $only == *" xmpp "* ]] &&
	{ bench xmpp "$here/xmpp.sh" --out "$out/xmpp" ${BENCH_XMPP_ARGS:-} || rc=1; }

echo
echo "# EdgePool benchmarks ($(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) CPUs, $(sed -n 's/^model name\s*: //p' /proc/cpuinfo | head -n 1))"
echo
for f in idle_tls_memory message_relay cluster balancer xmpp; do
	[ -s "$out/$f.md" ] && cat "$out/$f.md" && echo
done

# Safety net: nothing we started may outlive us. Our processes name a file
# under $out on their command line, or (sipp, wrk, nginx's worker) run in a
# folder under it. Prosody runs as lua5.4, the XMPP receiver as python3.
left=()
for p in $(for n in edged kamailio sipp clu_bench_node serf balancerd keepalived haproxy nginx wrk lua5.4 python3; do
	pgrep -x "$n"; done); do
	if tr '\0' ' ' < "/proc/$p/cmdline" 2>/dev/null | grep -qF "$out/" ||
		[[ "$(readlink "/proc/$p/cwd" 2>/dev/null)" == "$out"/* ]]; then
		left+=("$p")
	fi
done
if [ "${#left[@]}" -gt 0 ]; then
	echo "left behind, now killed: ${left[*]}" >&2
	kill -KILL "${left[@]}" 2>/dev/null || true
	rc=1
fi
echo "Raw results: $out"
exit "$rc"
