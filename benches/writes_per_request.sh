#!/usr/bin/env bash
# Socket writes per request from an HTTP/2 client to its backend, on tokio's multi-thread
# runtime (one worker for the client, one for the loopback h2c server, as in
# benches/end_to_end.rs), counted with strace: a figure that does not drift with the load.
#
#   benches/writes_per_request.sh [CLIENT...] [-- IN_FLIGHT]
#       CLIENT: h2pool h2pool_send hyper_util raw_h2_1conn raw_h2_4conn (default: h2pool_send hyper_util)
#       IN_FLIGHT: requests in flight (default 16)
#
# Each client runs twice, with N1 and N2 requests; writes per request =
# (W(N2) - W(N1)) / (N2 - N1), counting write/writev/sendto/sendmsg calls made by the client's
# worker thread only (the example prints each worker's thread id). Needs strace.
set -euo pipefail
cd "$(dirname "$0")/.."

CLIENTS=()
IN_FLIGHT=16
while [ $# -gt 0 ]; do
    if [ "$1" = "--" ]; then IN_FLIGHT=${2:-16}; break; fi
    CLIENTS+=("$1"); shift
done
[ ${#CLIENTS[@]} -eq 0 ] && CLIENTS=(h2pool_send hyper_util)
N1=${N1:-2000} N2=${N2:-12000}

cargo build --release --example instr_count >&2
BIN=target/release/examples/instr_count
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Client-thread socket writes of one run.
writes() {
    E2E_RUNTIME=multi strace -f -o "$tmp/trace" -e trace=write,writev,sendto,sendmsg \
        "$BIN" "$1" "$2" "$IN_FLIGHT" 2>"$tmp/err" >/dev/null
    local tid
    tid=$(sed -n 's/^client tid \([0-9]*\)$/\1/p' "$tmp/err")
    # strace -f: "<tid> syscall(fd, ...) = n"; fd 2 is the example's own stderr.
    awk -v tid="$tid" '$1 == tid && $2 !~ /^write\(2,/ { n++ } END { print n + 0 }' "$tmp/trace"
}

printf '| client | in flight | client socket writes per request |\n|---|---|---|\n'
for c in "${CLIENTS[@]}"; do
    a=$(writes "$c" "$N1")
    b=$(writes "$c" "$N2")
    awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" -v c="$c" -v f="$IN_FLIGHT" \
        'BEGIN { printf "| %s | %d | %.3f |\n", c, f, (b - a) / (n2 - n1) }'
done
