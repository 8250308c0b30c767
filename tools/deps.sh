#!/bin/sh
# Installs the Debian packages EdgePool needs to build, run and test.
# As root it runs apt-get; otherwise it prints the command to run.
set -eu

BUILD_PKGS="gcc make pkg-config libssl-dev libev-dev libconfig-dev libc-ares-dev protobuf-c-compiler libprotobuf-c-dev libldns-dev libexpat1-dev"
RUN_PKGS="openssl sip-tester keepalived"
TEST_PKGS="libcmocka-dev python3-pytest python3-cryptography clang libclang-rt-14-dev kamailio kamailio-tls-modules valgrind iproute2 procps bind9 bind9-dnsutils serf iptables haproxy nginx-light wrk prosody lua-unbound python3-slixmpp"

missing=""
for p in $BUILD_PKGS $RUN_PKGS $TEST_PKGS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' \
		|| missing="$missing $p"
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "EdgePool needs these Debian packages:$missing" >&2
	echo "Install them as root with:  apt-get install -y$missing" >&2
	exit 1
fi
echo "installing:$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Kamailio, HAProxy and nginx are only test peers: their services must not
# start on the shared ports.
if [ ! -e /usr/sbin/policy-rc.d ]; then
	printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d
	chmod +x /usr/sbin/policy-rc.d
	trap 'rm -f /usr/sbin/policy-rc.d' EXIT
fi
# shellcheck disable=SC2086
apt-get install -y -qq --no-install-recommends $missing
