#!/usr/bin/env bash
# The loom suite as CI runs it: every race scenario of the design, model-checked against the
# pool's real code compiled with loom's atomics (loom-tests/tests/scenarios.rs).
#
# - release mode: loom's exhaustive search is ~20x faster optimized;
# - with debug assertions on (`-C debug-assertions=on`, as sharded-slab's loom script does), so
#   the pool's own `debug_assert!`s run in every interleaving: a live token holds its slot word
#   (checked in every `get`/`get_mut`/`put`, which read no atomic otherwise), a held slot never
#   changes under its holder, and so on. Overflow checks come on with them. The model
#   `suite_runs_with_debug_assertions` fails if the flag is lost;
# - `--cfg loom` + the `loom` feature (set by loom-tests' dependency) switch src/sync.rs to loom;
# - its own target dir, so the cfg change does not invalidate the normal build;
# - bounds: each test sets its preemption bound explicitly through `loom_tests::check` (3 to
#   5; 0 for the single-threaded flag check; see each test's doc comment); env overrides are
#   cleared so CI always runs those bounds.
#
# Each model prints `loom-result <test> bound=<n> interleavings=<count> secs=<t>`.
# Extra arguments go to the test binary, e.g. `.ci/loom.sh double_close` runs one scenario.
# To measure the unbounded search of one model:
#   TOKENPOOL_LOOM_BOUND=none LOOM_MAX_DURATION=600 \
#     RUSTFLAGS="--cfg loom -C debug-assertions=on" CARGO_TARGET_DIR=target/loom \
#     cargo test --release -p loom-tests -- --nocapture <test name>
set -euo pipefail
cd "$(dirname "$0")/.."
unset TOKENPOOL_LOOM_BOUND LOOM_MAX_PREEMPTIONS LOOM_MAX_DURATION LOOM_MAX_BRANCHES \
    LOOM_MAX_PERMUTATIONS LOOM_CHECKPOINT_FILE
export RUSTFLAGS="${RUSTFLAGS:-} --cfg loom -C debug-assertions=on"
export CARGO_TARGET_DIR=target/loom
exec cargo test --release -p loom-tests -- --nocapture "$@"
