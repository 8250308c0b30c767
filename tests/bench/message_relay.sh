#!/bin/bash
# MESSAGE relay throughput, edged against Kamailio, side by side in one run:
#   sipp (TCP, -t t1) -> relay under test (internal TCP side) -> mutual TLS
#   -> partner (Kamailio, sl_send_reply 200, client certificate verified).
# Relays: edged; Kamailio tm relay (record_route, t_relay over TLS) with
# children=tcp_children=1, with 8 (Kamailio's default), and with 1 on
# Kamailio's default allocator. Relay pinned to CPU 0; sipp, partner and the
# latency probe to CPU 1. Rising rates, 5 s per step, 3 repeats (medians).
#
#   tests/bench/message_relay.sh [--out DIR] [--repeats N] [--seconds S]
#                                [--rates R1,R2,...] [--relays edged,kamailio-1,...]
#
# edged: $EDGED, else build/edged. Markdown summary on stdout, progress on
# stderr, raw data under --out (default: a new folder under $TMPDIR).
# Every process started is stopped by pid on exit, error or signal.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export EDGED="${EDGED:-$repo/build/edged}"
# One sipp connection, the probe and the relays' sockets: far below this,
# but sipp warns when -l (open calls) comes near the limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
exec /usr/bin/python3 "$here/bench.py" relay "$@"
