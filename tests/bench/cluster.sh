#!/bin/bash
# The gossip cluster against HashiCorp serf, side by side in one run: failure
# detection after kill -9, dissemination of an update, bytes per node at
# rest, for pools of 5, 10 and 20 processes on loopback; and, ours only, a
# push-pull join of 100,000 records and the memory per record.
#
#   tests/bench/cluster.sh [--out DIR] [--repeats N] [--sizes 5,10,20]
#                          [--systems ours,ours-fast,serf] [--quiet S] [--records N]
#
# Ours: $CLU_BENCH_NODE, else build/bench/clu_bench_node (built here if
# missing). serf: Debian `serf`. Bytes on the wire: iptables, as root.
# Markdown summary on stdout, progress on stderr, raw data under --out
# (default: a new folder under $TMPDIR). The iptables chain it creates
# (EPCLU<pid of this script>) is removed on exit, error or signal, here too
# in case the driver could not.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
if [ -z "${CLU_BENCH_NODE:-}" ]; then
	make -C "$repo" --no-print-directory SAN=0 build/bench/clu_bench_node >&2
	export CLU_BENCH_NODE="$repo/build/bench/clu_bench_node"
fi
# A pool of 20 nodes and its RPC and handler sockets: far below this anyway.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true

chain="EPCLU$$"
child=
# shellcheck disable=SC2317 # called by the traps
remove_chain() {
	command -v iptables >/dev/null 2>&1 || return 0
	iptables -w 5 -n -L "$chain" >/dev/null 2>&1 || return 0
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		iptables -w 5 -D OUTPUT -o lo -j "$chain" 2>/dev/null || break
	done
	iptables -w 5 -F "$chain" 2>/dev/null || true
	iptables -w 5 -X "$chain" 2>/dev/null || true
}
# shellcheck disable=SC2317
on_signal() {
	if [ -n "$child" ]; then
		kill -TERM "$child" 2>/dev/null || true
		wait "$child" 2>/dev/null || true
	fi
	remove_chain
	exit 130
}
trap on_signal INT TERM HUP
trap remove_chain EXIT

/usr/bin/python3 "$here/cluster_bench.py" --chain "$chain" "$@" &
child=$!
rc=0
wait "$child" || rc=$?
child=
exit "$rc"
