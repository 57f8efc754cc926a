#!/usr/bin/env bash
# Instructions per single-thread checkout+return pair (and per end-to-end HTTP/2 request),
# counted by callgrind: figures that do not drift with the machine's load, so a hot-path
# regression shows even on a noisy box.
#
#   benches/instr_count.sh            the pools: tokenpool tokenpool_lease arrayqueue
#                                     parking_lot std_mutex deadpool
#   benches/instr_count.sh e2e        the HTTP/2 clients: h2pool h2pool_send h2pool_dispatch hyper_util
#                                     raw_h2_1conn raw_h2_4conn (16 in flight; client and server on one thread)
#   benches/instr_count.sh IMPL...    just those
#
# Each impl runs twice, with N1 and N2 pairs (requests); instructions per pair =
# (I(N2) - I(N1)) / (N2 - N1), which cancels process start-up and set-up. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

POOLS=(tokenpool tokenpool_lease arrayqueue parking_lot std_mutex deadpool)
CLIENTS=(h2pool h2pool_send h2pool_dispatch hyper_util raw_h2_1conn raw_h2_4conn)
IMPLS=("$@")
if [ ${#IMPLS[@]} -eq 0 ]; then
    IMPLS=("${POOLS[@]}")
elif [ "${IMPLS[*]}" = e2e ]; then
    IMPLS=("${CLIENTS[@]}")
fi

cargo build --release --example instr_count >&2
BIN=target/release/examples/instr_count

# Total instructions (Ir) of one run under callgrind.
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$@" 2>&1 \
        | sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}

printf '| impl | instructions per pair (per request for HTTP/2 clients) |\n|---|---|\n'
for impl in "${IMPLS[@]}"; do
    if [[ " ${CLIENTS[*]} " == *" $impl "* ]]; then
        n1=${E2E_N1:-2000} n2=${E2E_N2:-12000}
    else
        n1=${N1:-100000} n2=${N2:-1100000}
    fi
    a=$(count "$impl" "$n1")
    b=$(count "$impl" "$n2")
    awk -v a="$a" -v b="$b" -v n1="$n1" -v n2="$n2" -v impl="$impl" \
        'BEGIN { printf "| %s | %.1f |\n", impl, (b - a) / (n2 - n1) }'
done
