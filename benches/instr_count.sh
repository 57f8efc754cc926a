#!/usr/bin/env bash
# Instructions per single-thread checkout+return pair, counted by callgrind: figures that do
# not drift with the machine's load, so a hot-path regression shows even on a noisy box.
#
#   benches/instr_count.sh [impl ...]      (default: every impl of examples/instr_count.rs)
#
# Each impl runs twice, with N1 and N2 pairs; instructions per pair = (I(N2) - I(N1)) / (N2 - N1),
# which cancels process start-up and pool set-up. Needs valgrind.
set -euo pipefail
cd "$(dirname "$0")/.."

N1=${N1:-100000}
N2=${N2:-1100000}
IMPLS=("$@")
if [ ${#IMPLS[@]} -eq 0 ]; then
    IMPLS=(tokenpool tokenpool_lease arrayqueue parking_lot std_mutex deadpool)
fi

cargo build --release --example instr_count >&2
BIN=target/release/examples/instr_count

# Total instructions (Ir) of one run under callgrind.
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" "$1" "$2" 2>&1 \
        | sed -n 's/.*Collected : *\([0-9]*\).*/\1/p'
}

printf '| impl | instructions per pair |\n|---|---|\n'
for impl in "${IMPLS[@]}"; do
    a=$(count "$impl" "$N1")
    b=$(count "$impl" "$N2")
    awk -v a="$a" -v b="$b" -v n1="$N1" -v n2="$N2" -v impl="$impl" \
        'BEGIN { printf "| %s | %.1f |\n", impl, (b - a) / (n2 - n1) }'
done
