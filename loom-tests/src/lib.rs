//! Loom model checks live in `tests/`; build with `RUSTFLAGS="--cfg loom"`.
