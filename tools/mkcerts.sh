#!/bin/sh
# mkcerts.sh DIR NAME...
# Makes a local test CA (DIR/ca.pem, DIR/ca.key) once, and for each NAME a
# key and certificate (DIR/NAME.key, DIR/NAME.pem) with subjectAltName
# DNS:NAME and both serverAuth and clientAuth extended key usage, as an edge
# needs: it serves partners and connects to them. Existing files are kept.
# For tests and the demo only: the CA key lies unprotected next to the rest.
set -eu
[ $# -ge 2 ] || { echo "usage: $0 DIR NAME..." >&2; exit 2; }
dir=$1
shift
mkdir -p "$dir"
umask 077

if [ ! -f "$dir/ca.pem" ]; then
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/ca.key" -out "$dir/ca.pem" -days 825 \
		-subj "/O=EdgePool test/CN=EdgePool test CA" \
		-addext "basicConstraints=critical,CA:TRUE" \
		-addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
fi

for name in "$@"; do
	[ -f "$dir/$name.pem" ] && continue
	ext=$(mktemp)
	printf 'subjectAltName=DNS:%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n' \
		"$name" > "$ext"
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-keyout "$dir/$name.key" -out "$dir/$name.csr" -subj "/O=EdgePool test/CN=$name" 2>/dev/null
	openssl x509 -req -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
		-CAcreateserial -days 825 -extfile "$ext" -out "$dir/$name.pem" 2>/dev/null
	rm -f "$ext" "$dir/$name.csr"
done
chmod 644 "$dir"/*.pem
