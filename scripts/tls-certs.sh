#!/usr/bin/env bash
# Make the certificates of the TLS tests (openssl; EC P-256 keys), into DIR:
#
#   scripts/tls-certs.sh DIR
#
#   ca.pem ca.key                 the test CA
#   server.pem server.key         the broker's certificate, for the name localhost only (so a
#                                 connect to 127.0.0.1 is a wrong host name), by the CA
#   client.pem client.key         a client certificate, CN=ra-tls-client, by the CA (EXTERNAL)
#   expired/ca.pem server.pem server.key
#                                 the same CA, a server certificate for localhost that
#                                 expired in 2020 (a broker directory of its own)
#   other-ca.pem other-ca.key     another CA, which signed nothing of the broker's
#   other-client.pem other-client.key
#                                 a client certificate, CN=ra-tls-client, by the other CA
#
# DIR and its broker directories are what scripts/broker.sh takes as RA_BROKER_TLS_DIR.
# Test material only: the keys are unencrypted and world-readable in DIR.
set -euo pipefail

DIR=${1:?usage: tls-certs.sh DIR}
command -v openssl >/dev/null || {
    echo "tls-certs.sh: openssl not found (apt-get install openssl)" >&2
    exit 1
}
mkdir -p "$DIR/expired"
cd "$DIR"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

# ca NAME CN: a self-signed CA
ca() {
    key "$1.key"
    openssl req -x509 -new -key "$1.key" -sha256 -days 3650 -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -out "$1.pem" 2>/dev/null
}

# leaf NAME CN CA EXTENSIONS [START END]: a certificate signed by CA (openssl ca, so the
# validity can be set to any dates)
leaf() {
    local name=$1 cn=$2 ca=$3 ext=$4 start=${5:-} end=${6:-}
    key "$name.key"
    openssl req -new -key "$name.key" -subj "/CN=$cn" -out "$WORK/$$.csr" 2>/dev/null
    printf '%s\n' "$ext" >"$WORK/ext"
    : >"$WORK/index.txt"
    mkdir -p "$WORK/new"
    cat >"$WORK/ca.cnf" <<EOF
[ ca ]
default_ca = test
[ test ]
database = $WORK/index.txt
new_certs_dir = $WORK/new
rand_serial = yes
default_md = sha256
default_days = 3650
policy = any
unique_subject = no
[ any ]
commonName = supplied
EOF
    local dates=()
    [[ -z $start ]] || dates=(-startdate "$start" -enddate "$end")
    openssl ca -batch -notext -config "$WORK/ca.cnf" -cert "$ca.pem" -keyfile "$ca.key" \
        -extfile "$WORK/ext" "${dates[@]}" -in "$WORK/$$.csr" -out "$name.pem" 2>"$WORK/err" || {
        cat "$WORK/err" >&2
        exit 1
    }
}

SERVER_EXT="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost"
CLIENT_EXT="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth"

ca ca "resilient-amqp test CA"
ca other-ca "resilient-amqp other test CA"
leaf server localhost ca "$SERVER_EXT"
leaf client ra-tls-client ca "$CLIENT_EXT"
leaf other-client ra-tls-client other-ca "$CLIENT_EXT"
leaf expired/server localhost ca "$SERVER_EXT" 20200101000000Z 20200201000000Z
cp ca.pem expired/ca.pem
echo "tls-certs.sh: certificates in $(pwd)" >&2
