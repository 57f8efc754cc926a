//! Shared pieces of the loom model checks in `tests/` (build with `RUSTFLAGS="--cfg loom"`;
//! `.ci/loom.sh` runs the suite as CI does).
//!
//! - [`check`]: the one entry point every model goes through. It sets the preemption bound
//!   explicitly, counts the interleavings loom explored and prints them with the wall time.
//! - [`Tracker`] and [`Conn`]: a connection that counts its drops and records while it is
//!   borrowed, so a model can assert "dropped exactly once" and "never dropped while borrowed".
//!
//! Without `--cfg loom` this crate is empty, so `cargo test --workspace` builds nothing here.

#[cfg(loom)]
mod imp;

#[cfg(loom)]
pub use imp::*;
