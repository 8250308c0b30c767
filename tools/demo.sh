#!/usr/bin/env bash
# tools/demo.sh start EDGED | stop
#
# The `make run` demo: two organizations federated on loopback.
#   contoso.test  edge on 127.0.0.1 (the configuration embedded in edged)
#   fabrikam.test edge on 127.0.0.2 (etc/fabrikam.conf)
# each with a sipp on port 5070 as its internal SIP server. Everything it
# starts is recorded in run/*.pid and stopped by `tools/demo.sh stop`.
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=run
SCENARIOS=tests/integration/scenarios

running() {
	local f
	for f in "$RUN"/*.pid; do
		[ -e "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null && return 0
	done
	return 1
}

wait_listening() { # host port what
	local deadline=$((SECONDS + 15))
	until [ -n "$(ss -Hltn "src $1:$2")" ]; do
		if [ $SECONDS -ge $deadline ]; then
			echo "demo: $3 is not listening on $1:$2; see $RUN/" >&2
			stop
			exit 1
		fi
		sleep 0.05
	done
}

start_bg() { # name command...
	local name=$1
	shift
	"$@" > "$RUN/$name.log" 2>&1 &
	echo $! > "$RUN/$name.pid"
}

stop() {
	local f pid
	for f in "$RUN"/*.pid; do
		[ -e "$f" ] || continue
		pid=$(cat "$f")
		kill "$pid" 2>/dev/null || true
		rm -f "$f"
	done
}

start() {
	local edged=$1
	if running; then
		echo "demo: already running; stop it with: make stop" >&2
		exit 1
	fi
	mkdir -p "$RUN"
	tools/mkcerts.sh "$RUN/pki" sip.contoso.test sip.fabrikam.test
	start_bg contoso-edge "$edged"
	start_bg fabrikam-edge "$edged" -c etc/fabrikam.conf
	start_bg contoso-sip sipp -sf "$SCENARIOS/uas_message.xml" -t t1 -i 127.0.0.1 -p 5070 \
		-m 1000000 -nostdin
	start_bg fabrikam-sip sipp -sf "$SCENARIOS/uas_message.xml" -t t1 -i 127.0.0.2 -p 5070 \
		-m 1000000 -nostdin
	wait_listening 127.0.0.1 5060 "the contoso edge"
	wait_listening 127.0.0.2 5061 "the fabrikam edge"
	wait_listening 127.0.0.1 5070 "contoso's sipp"
	wait_listening 127.0.0.2 5070 "fabrikam's sipp"

	echo "Sending a MESSAGE from alice@contoso.test to bob@fabrikam.test ..."
	if sipp -sf "$SCENARIOS/uac_message.xml" -t t1 -i 127.0.0.1 -p 5080 127.0.0.1:5060 \
		-key from_user alice -key from_domain contoso.test \
		-key to_user bob -key to_domain fabrikam.test \
		-m 1 -nostdin -timeout 10s -timeout_error > "$RUN/demo-message.log" 2>&1; then
		echo "  200 OK: it crossed contoso's edge, mutual TLS, fabrikam's edge, and back."
	else
		echo "  FAILED: see $RUN/demo-message.log and the edge logs below." >&2
	fi
	cat <<EOT

What runs where (logs and pids in $RUN/):
  contoso.test   edge   internal TCP 127.0.0.1:5060, federation TLS 127.0.0.1:5061,
                        status http://127.0.0.1:9100/status       log $RUN/contoso-edge.log
  fabrikam.test  edge   internal TCP 127.0.0.2:5060, federation TLS 127.0.0.2:5061,
                        status http://127.0.0.2:9100/status       log $RUN/fabrikam-edge.log
  contoso.test   sipp   internal SIP server 127.0.0.1:5070        log $RUN/contoso-sip.log
  fabrikam.test  sipp   internal SIP server 127.0.0.2:5070        log $RUN/fabrikam-sip.log

Send more: sipp -sf $SCENARIOS/uac_message.xml -t t1 -i 127.0.0.1 -p 5080 127.0.0.1:5060 \\
             -key from_user alice -key from_domain contoso.test -key to_user bob \\
             -key to_domain fabrikam.test -m 10 -nostdin
Stop with: make stop
EOT
}

case "${1:-}" in
start) start "${2:?usage: $0 start EDGED}" ;;
stop) stop ;;
*) echo "usage: $0 start EDGED | stop" >&2; exit 2 ;;
esac
