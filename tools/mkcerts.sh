#!/bin/sh
# mkcerts.sh DIR [NAME...]
# Makes a local test CA (DIR/ca.pem, DIR/ca.key) once, and for each NAME a
# key and certificate (DIR/NAME.key, DIR/NAME.pem): EC P-256, 825 days,
# subjectAltName DNS:NAME and both serverAuth and clientAuth extended key
# usage, as an edge needs: it serves partners and connects to them.
# Idempotent: what exists and still chains to DIR/ca.pem is kept; a
# certificate of an earlier CA (ca.pem was removed) or one without its key is
# made again. For tests and the demo only: the CA key lies unprotected.
set -eu
[ $# -ge 1 ] || { echo "usage: $0 DIR [NAME...]" >&2; exit 2; }
dir=$1
shift
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.pem" ] || [ ! -f "$dir/ca.key" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/ca.key" -out "$dir/ca.pem" -days 825 -sha256 \
		-subj "/O=EdgePool test/CN=EdgePool test CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" \
		-addext "subjectKeyIdentifier=hash" 2>/dev/null
fi

for name in "$@"; do
	case $name in
	*/* | "" ) echo "$0: bad name: '$name'" >&2; exit 2 ;;
	esac
	if [ -f "$dir/$name.pem" ] && [ -f "$dir/$name.key" ] &&
		openssl verify -CAfile "$dir/ca.pem" "$dir/$name.pem" >/dev/null 2>&1; then
		continue
	fi
	ext=$(mktemp)
	printf '%s\n' "subjectAltName=DNS:$name" \
		"extendedKeyUsage=serverAuth,clientAuth" \
		"keyUsage=critical,digitalSignature" \
		"basicConstraints=critical,CA:FALSE" \
		"subjectKeyIdentifier=hash" \
		"authorityKeyIdentifier=keyid" > "$ext"
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/O=EdgePool test/CN=$name" 2>/dev/null
	# A random serial rather than ca.srl: nothing to keep in step between runs.
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
		-set_serial "0x$(openssl rand -hex 16)" -days 825 -sha256 -extfile "$ext" \
		-out "$dir/$name.pem" 2>/dev/null
	rm -f "$ext" "$dir/$name.csr"
done
chmod 644 "$dir"/*.pem
