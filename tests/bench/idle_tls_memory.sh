#!/bin/bash
# Memory per idle mutual-TLS connection: 1000 connections (client
# certificate of the configured partner sip.fabrikam.test, required and
# verified by the server) opened and held idle by a Python client, to edged's
# external listener and to Kamailio's TLS listener (require_certificate and
# verify_certificate on); the growth of the PSS summed over all the server's
# processes (and of their VmRSS), divided by the number of connections.
#
#   tests/bench/idle_tls_memory.sh [--out DIR] [--connections N] [--repeats N]
#                                  [--servers edged,kamailio-1,kamailio-1-qm]
#
# edged: $EDGED, else build/edged. Markdown summary on stdout, raw data under
# --out (default: a new folder under $TMPDIR).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
export EDGED="${EDGED:-$repo/build/edged}"
# 1000+ client sockets in this process; the servers inherit it too.
hard=$(ulimit -Hn)
if [ "$hard" = unlimited ] || [ "$hard" -ge 16384 ]; then ulimit -n 16384; else ulimit -n "$hard"; fi
if [ "$(ulimit -n)" -lt 2100 ]; then
	echo "$0: open files limit $(ulimit -n) is too low for 1000 connections" >&2
	exit 1
fi
exec /usr/bin/python3 "$here/bench.py" memory "$@"
