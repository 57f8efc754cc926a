#!/usr/bin/env bash
# Requests/s through the proxy example and through HAProxy, each to an h2c backend and to a
# TLS backend (the example backend on both), side by side, ROUNDS rounds of DURATION seconds.
# Needs h2load (nghttp2-client), haproxy and openssl; see docs/tls.md.
#
#   scripts/tls_bench.sh                 # 3 rounds of 4 s
#   BASE_PROXY=/path/to/old/proxy scripts/tls_bench.sh   # also an older proxy build, h2c
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-4}
E=${CARGO_TARGET_DIR:-target}/release/examples
cargo build --release --example proxy --example backend >&2
W=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; rm -rf "$W"' EXIT

# A CA and a certificate for 127.0.0.1 (P-256).
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/ca.key" \
    -out "$W/ca.pem" -days 2 -subj "/CN=bench CA" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$W/key.pem" \
    -out "$W/leaf.csr" -subj "/CN=127.0.0.1" 2>/dev/null
echo "subjectAltName=IP:127.0.0.1" > "$W/ext"
openssl x509 -req -in "$W/leaf.csr" -CA "$W/ca.pem" -CAkey "$W/ca.key" -CAcreateserial \
    -out "$W/cert.pem" -days 2 -extfile "$W/ext" 2>/dev/null

cat > "$W/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend fe_tls
    bind 127.0.0.1:28443 proto h2
    default_backend be_tls
frontend fe_h2c
    bind 127.0.0.1:28001 proto h2
    default_backend be_h2c
backend be_tls
    server s1 127.0.0.1:19443 ssl alpn h2 ca-file $W/ca.pem verify required
backend be_h2c
    server s1 127.0.0.1:19001 proto h2
EOF

"$E/backend" --listen 127.0.0.1:19443 --tls-cert "$W/cert.pem" --tls-key "$W/key.pem" \
    --name tls >"$W/b-tls.log" 2>&1 &
"$E/backend" --listen 127.0.0.1:19001 --name h2c >"$W/b-h2c.log" 2>&1 &
sleep 0.5
"$E/proxy" --listen 127.0.0.1:18443 --backend https://127.0.0.1:19443 --ca-file "$W/ca.pem" \
    --threads 1 >"$W/p-tls.log" 2>&1 &
"$E/proxy" --listen 127.0.0.1:18001 --backend 127.0.0.1:19001 --threads 1 >"$W/p-h2c.log" 2>&1 &
targets="proxy-h2c:18001 proxy-tls:18443 haproxy-h2c:28001 haproxy-tls:28443"
if [ -n "${BASE_PROXY:-}" ]; then
    "$BASE_PROXY" --listen 127.0.0.1:18002 --backend 127.0.0.1:19001 --threads 1 \
        >"$W/p-base.log" 2>&1 &
    targets="base-proxy-h2c:18002 $targets"
fi
haproxy -f "$W/haproxy.cfg" >"$W/haproxy.log" 2>&1 &
sleep 1
for t in $targets; do
    body=$(curl -sS --http2-prior-knowledge "http://127.0.0.1:${t#*:}/")
    echo "check ${t%%:*}: $body" >&2
done

for round in $(seq "$ROUNDS"); do
    for t in $targets; do
        out=$(h2load -c 16 -m 32 -t 1 -D "$DURATION" --warm-up-time=1 "http://127.0.0.1:${t#*:}/" 2>&1)
        rps=$(echo "$out" | awk '/^finished in/ {print $4}')
        failed=$(echo "$out" | awk '/^requests:/ {print $10}')
        echo "$round ${t%%:*} $rps req/s, $failed failed, load $(cut -d' ' -f1 /proc/loadavg)"
    done
done
