#!/usr/bin/env bash
# tools/demo.sh start EDGED BALANCERD | stop
#
# The `make run` demo: two organizations federated on loopback.
#   contoso.test  a pool of two edge nodes: 127.0.0.1 (the configuration
#                 embedded in edged) and 127.0.0.3 (etc/contoso-2.conf),
#                 and its balancer (the configuration embedded in balancerd):
#                 DNS on 127.0.0.1:5353, the VIP 127.0.0.10:5061
#   fabrikam.test edge on 127.0.0.2 (etc/fabrikam.conf), a legacy partner
#                 of contoso's: it reaches contoso through the VIP
# each with a sipp on port 5070 as its internal SIP server, and
#   jabber.test   a Prosody XMPP server on 127.0.0.4:5269, contoso's XMPP
#                 partner, with the user juliet (password "juliet")
# Everything it starts is recorded in run/NAME.pid and stopped by
# `tools/demo.sh stop`.
# Run as `sh tools/demo.sh` too: bash features below ($SECONDS, local, pipefail).
[ -n "${BASH_VERSION:-}" ] || exec bash "$0" "$@"
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=run
SCENARIOS=tests/integration/scenarios
NAMES="contoso-balancer contoso-edge contoso-edge-2 fabrikam-edge contoso-sip fabrikam-sip jabber-xmpp"

# Whether run/NAME.pid names a live process that is still the one we started
# (edged, balancerd, sipp or Prosody), so that a recycled pid is never taken for ours.
ours() { # name -> pid on stdout
	local f=$RUN/$1.pid pid
	[ -s "$f" ] || return 1
	pid=$(cat "$f")
	kill -0 "$pid" 2>/dev/null || return 1
	tr '\0' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qE '(^|/)(edged|balancerd|sipp|prosody) ' || return 1
	echo "$pid"
}

running() {
	local n
	for n in $NAMES; do
		ours "$n" >/dev/null && return 0
	done
	return 1
}

wait_listening() { # name host port what
	local deadline=$((SECONDS + 15))
	until [ -n "$(ss -Hltn "src $2:$3")" ]; do
		if ! ours "$1" >/dev/null; then
			echo "demo: $4 exited; see $RUN/$1.log:" >&2
			tail -n 5 "$RUN/$1.log" >&2 || true
			stop
			exit 1
		fi
		if [ $SECONDS -ge $deadline ]; then
			echo "demo: $4 is not listening on $2:$3; see $RUN/$1.log" >&2
			stop
			exit 1
		fi
		sleep 0.05
	done
}

# The two contoso nodes see each other: each logs the other's joining.
wait_pool() {
	local deadline=$((SECONDS + 15))
	until grep -q "cluster: contoso-edge-2 joined" "$RUN/contoso-edge.log" &&
		grep -q "cluster: contoso-edge-1 joined" "$RUN/contoso-edge-2.log"; do
		if [ $SECONDS -ge $deadline ]; then
			echo "demo: the contoso nodes did not form a pool; see $RUN/contoso-edge*.log" >&2
			stop
			exit 1
		fi
		sleep 0.05
	done
	echo "contoso.test's two edge nodes form a pool (cluster port 7946)."
}

# The balancer's checks find both edges usable.
wait_usable() {
	local deadline=$((SECONDS + 15))
	until grep -q "(2 of 2 usable)" "$RUN/contoso-balancer.log"; do
		if [ $SECONDS -ge $deadline ]; then
			echo "demo: the balancer does not see both edges; see $RUN/contoso-balancer.log" >&2
			stop
			exit 1
		fi
		sleep 0.05
	done
	echo "contoso.test's balancer sees both edges usable."
}

start_bg() { # name command...
	local name=$1
	shift
	"$@" > "$RUN/$name.log" 2>&1 < /dev/null &
	echo $! > "$RUN/$name.pid"
}

stop() {
	local n pid pids=""
	for n in $NAMES; do
		if pid=$(ours "$n"); then
			kill "$pid" 2>/dev/null || true
			pids="$pids $pid"
		fi
		rm -f "$RUN/$n.pid"
	done
	# Wait (bounded) until they are gone, so that ports are free for a restart.
	local deadline=$((SECONDS + 10))
	for pid in $pids; do
		while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt $deadline ]; do
			sleep 0.05
		done
		kill -0 "$pid" 2>/dev/null && echo "demo: pid $pid did not stop" >&2
	done
	return 0
}

pid_of() { cat "$RUN/$1.pid"; }

# jabber.test's Prosody: its own directory, configuration and user, trusting
# the demo's CA; run as whoever runs the demo, in the foreground. Prints the
# configuration's path.
prosody_config() {
	local dir=$PWD/$RUN/prosody
	mkdir -p "$dir/data"
	cat > "$dir/prosody.cfg.lua" <<EOT
-- Written by tools/demo.sh: jabber.test, contoso.test's XMPP partner.
$( [ "$(id -u)" -eq 0 ] && echo "run_as_root = true" )
pidfile = "$dir/prosody.pid"
data_path = "$dir/data"
log = { { levels = { min = "info" }, to = "file", filename = "$PWD/$RUN/jabber-xmpp.log" } }
daemonize = false
interfaces = { "127.0.0.4" }
c2s_ports = { 5222 }
c2s_direct_tls_ports = { }
s2s_ports = { 5269 }
s2s_direct_tls_ports = { }
s2s_secure_auth = true
ssl = { cafile = "$PWD/$RUN/pki/ca.pem" }
-- No DNS here: contoso.test's XMPP servers are named by an SRV record of the demo's own.
unbound = { resolvconf = false; hoststxt = false;
            options = { ["local-data:"] = "_xmpp-server._tcp.contoso.test. 60 IN SRV 0 0 5269 localhost." } }
modules_enabled = { "roster", "saslauth", "tls", "dialback", "disco", "presence", "message",
                    "offline", "ping", "posix" }
authentication = "internal_plain"
certificates = "$dir"
VirtualHost "jabber.test"
    ssl = { certificate = "$PWD/$RUN/pki/jabber.test.pem"; key = "$PWD/$RUN/pki/jabber.test.key" }
EOT
	echo "$dir/prosody.cfg.lua"
}

start() {
	local edged=$1 balancerd=$2
	if running; then
		echo "demo: already running; stop it with: make stop" >&2
		exit 1
	fi
	[ -x "$edged" ] || { echo "demo: $edged is not an executable; build it with make" >&2; exit 1; }
	[ -x "$balancerd" ] || { echo "demo: $balancerd is not an executable; build it with make" >&2; exit 1; }
	command -v sipp >/dev/null || { echo "demo: sipp is missing (package sip-tester)" >&2; exit 1; }
	mkdir -p "$RUN"
	rm -f "$RUN"/*.pid
	tools/mkcerts.sh "$RUN/pki" sip.contoso.test sip.fabrikam.test contoso.test jabber.test
	local prosody_cfg=""
	if command -v prosody >/dev/null; then
		prosody_cfg=$(prosody_config)
		prosodyctl --config "$prosody_cfg" register juliet jabber.test juliet > /dev/null 2>&1 || true
		start_bg jabber-xmpp prosody --config "$prosody_cfg" -F
	else
		echo "demo: prosody is missing: no XMPP partner (tools/deps.sh installs it)" >&2
	fi
	# No -c: the embedded default, which is etc/edged.conf (paths relative to here).
	start_bg contoso-edge "$edged"
	start_bg contoso-edge-2 "$edged" -c etc/contoso-2.conf
	start_bg fabrikam-edge "$edged" -c etc/fabrikam.conf
	start_bg contoso-sip sipp -sf "$SCENARIOS/uas_message.xml" -t t1 -i 127.0.0.1 -p 5070 \
		-m 1000000 -nostdin
	start_bg fabrikam-sip sipp -sf "$SCENARIOS/uas_message.xml" -t t1 -i 127.0.0.2 -p 5070 \
		-m 1000000 -nostdin
	wait_listening contoso-edge 127.0.0.1 5060 "the contoso edge"
	wait_listening contoso-edge 127.0.0.1 5061 "the contoso edge"
	wait_listening contoso-edge-2 127.0.0.3 5061 "the second contoso edge"
	wait_pool
	wait_listening fabrikam-edge 127.0.0.2 5060 "the fabrikam edge"
	wait_listening fabrikam-edge 127.0.0.2 5061 "the fabrikam edge"
	[ -z "$prosody_cfg" ] || wait_listening jabber-xmpp 127.0.0.4 5269 "jabber.test's Prosody"
	wait_listening contoso-sip 127.0.0.1 5070 "contoso's sipp"
	wait_listening fabrikam-sip 127.0.0.2 5070 "fabrikam's sipp"
	# No -c: the embedded default, which is etc/balancerd.conf.
	start_bg contoso-balancer "$balancerd"
	wait_listening contoso-balancer 127.0.0.10 5061 "contoso's balancer"
	wait_usable

	echo "Sending a MESSAGE from alice@contoso.test to bob@fabrikam.test ..."
	if sipp -sf "$SCENARIOS/uac_message.xml" -t t1 -i 127.0.0.1 -p 5080 127.0.0.1:5060 \
		-key from_user alice -key from_domain contoso.test \
		-key to_user bob -key to_domain fabrikam.test \
		-m 1 -nostdin -timeout 10s -timeout_error > "$RUN/demo-message.log" 2>&1 < /dev/null; then
		echo "  200 OK: it crossed contoso's edge, mutual TLS, fabrikam's edge, and back."
	else
		echo "  FAILED: no 200; see $RUN/demo-message.log and the logs listed below." >&2
	fi
	echo "Sending a MESSAGE from bob@fabrikam.test to alice@contoso.test through the VIP ..."
	if sipp -sf "$SCENARIOS/uac_message.xml" -t t1 -i 127.0.0.2 -p 5080 127.0.0.2:5060 \
		-key from_user bob -key from_domain fabrikam.test \
		-key to_user alice -key to_domain contoso.test \
		-m 1 -nostdin -timeout 10s -timeout_error > "$RUN/demo-message-2.log" 2>&1 < /dev/null; then
		echo "  200 OK: fabrikam's edge -> the VIP 127.0.0.10 -> balancerd (PROXY v2) -> a contoso edge."
	else
		echo "  FAILED: no 200; see $RUN/demo-message-2.log and the logs listed below." >&2
	fi
	if [ -n "$prosody_cfg" ]; then
		echo "Sending a MESSAGE from alice@contoso.test to juliet@jabber.test (XMPP) ..."
		if sipp -sf "$SCENARIOS/uac_message.xml" -t t1 -i 127.0.0.1 -p 5080 127.0.0.1:5060 \
			-key from_user alice -key from_domain contoso.test \
			-key to_user juliet -key to_domain jabber.test \
			-m 1 -nostdin -timeout 10s -timeout_error > "$RUN/demo-xmpp.log" 2>&1 < /dev/null; then
			echo "  200 OK: contoso's edge made it an XMPP message on a TLS + SASL EXTERNAL"
			echo "  stream to jabber.test's Prosody (kept for juliet until she logs in)."
		else
			echo "  FAILED: no 200; see $RUN/demo-xmpp.log and $RUN/contoso-edge.log." >&2
		fi
	fi
	echo
	echo "What runs where:"
	row() { printf '  %-7s %-14s %-9s %-50s %s\n' "$@"; }
	row pid org what addresses log
	row "$(pid_of contoso-edge)" contoso.test edged \
		"internal TCP 127.0.0.1:5060, federation TLS :5061, balancer :5063" \
		"$RUN/contoso-edge.log"
	row "" "" "" "status http://127.0.0.1:9100/status" ""
	row "$(pid_of contoso-edge-2)" contoso.test edged \
		"internal TCP 127.0.0.3:5060, federation TLS :5061, balancer :5063" \
		"$RUN/contoso-edge-2.log"
	row "" "" "" "status http://127.0.0.3:9100/status" ""
	row "$(pid_of fabrikam-edge)" fabrikam.test edged \
		"internal TCP 127.0.0.2:5060, federation TLS :5061" "$RUN/fabrikam-edge.log"
	row "" "" "" "status http://127.0.0.2:9100/status" ""
	row "$(pid_of contoso-balancer)" contoso.test balancerd \
		"DNS 127.0.0.1:5353 (dig -p 5353 @127.0.0.1 sip.contoso.test), VIP 127.0.0.10:5061" \
		"$RUN/contoso-balancer.log"
	row "" "" "" "status http://127.0.0.1:9190/status" ""
	row "$(pid_of contoso-sip)" contoso.test sipp "its SIP server (UAS), TCP 127.0.0.1:5070" \
		"$RUN/contoso-sip.log"
	row "$(pid_of fabrikam-sip)" fabrikam.test sipp "its SIP server (UAS), TCP 127.0.0.2:5070" \
		"$RUN/fabrikam-sip.log"
	if [ -n "$prosody_cfg" ]; then
		row "$(pid_of jabber-xmpp)" jabber.test prosody \
			"XMPP s2s 127.0.0.4:5269, c2s :5222 (juliet@jabber.test, password juliet)" \
			"$RUN/jabber-xmpp.log"
		row "" contoso.test edged "XMPP s2s 127.0.0.1:5269 and 127.0.0.3:5269" ""
	fi
	cat <<EOT
Certificates: $RUN/pki/ (test CA ca.pem; sip.contoso.test, sip.fabrikam.test, contoso.test, jabber.test)

Send more: sipp -sf $SCENARIOS/uac_message.xml -t t1 -i 127.0.0.1 -p 5080 127.0.0.1:5060 \\
             -key from_user alice -key from_domain contoso.test -key to_user bob \\
             -key to_domain fabrikam.test -m 10 -nostdin
Stop with: make stop
EOT
}

case "${1:-}" in
start) start "${2:?usage: $0 start EDGED BALANCERD}" "${3:?usage: $0 start EDGED BALANCERD}" ;;
stop) stop ;;
*) echo "usage: $0 start EDGED BALANCERD | stop" >&2; exit 2 ;;
esac
