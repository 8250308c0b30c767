#!/bin/bash
# The XMPP gateway (issue 6), side by side with Prosody in one run:
#   rate     sipp (TCP) -> edged's internal listener -> gateway -> s2s stream
#            (TLS, SASL EXTERNAL) -> Prosody 0.12 -> a c2s receiver, against
#            Prosody's own acceptance on one s2s stream (a raw s2s sender of
#            the benchmark, same receiver): rising rates, 8 s per step, then
#            one overload step; delivered rate, loss, SIP and end-to-end latency.
#   memory   memory per idle authenticated s2s stream (500 streams, STARTTLS +
#            SASL EXTERNAL), edged against Prosody.
# Prosody on CPU 0, everything else on CPU 1. About 8 minutes.
#
#   tests/bench/xmpp.sh [--out DIR] [--repeats N] [--seconds S] [--rates R1,R2,...]
#                       [--fractions F1,F2,...] [--overload F] [--streams N]
#                       [--only rate|memory]
#
# Needs prosody, sipp, and Debian's /usr/bin/python3 (python3-cryptography
# for the test CA). edged: $EDGED, else build/edged. Markdown summary on
# stdout, progress on stderr, raw data under --out (default: a new folder
# under $TMPDIR). Every process started is stopped by pid on exit, error or
# signal.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export EDGED="${EDGED:-$repo/build/edged}"
# 500 idle streams: their client sockets here, their server sockets in edged
# and Prosody (which inherit this limit).
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 16384 ]; then ulimit -n 16384; else ulimit -n "$hard"; fi
if [ "$(ulimit -n)" -lt 1200 ]; then
	echo "$0: open files limit $(ulimit -n) is too low for 500 streams" >&2
	exit 1
fi
for tool in prosody prosodyctl sipp ss; do
	command -v "$tool" >/dev/null || { echo "$0: $tool is missing" >&2; exit 1; }
done
exec /usr/bin/python3 "$here/xmpp_gateway.py" "$@"
