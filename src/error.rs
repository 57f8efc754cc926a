//! The pool's errors: one small type per way an operation can fail, so that each function's
//! error admits only what it can return, and [`Error`] to gather them for `?`.

use std::fmt;

/// A pool size that cannot be built: returned by [`Pool::new`](crate::Pool::new) and
/// [`ConnectionPool::new`](crate::ConnectionPool::new).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SizeError {
    /// A count outside what a token can name or the pool allows.
    OutOfRange {
        /// Which count: `"slots"`, `"backends"` or `"slots in total"`.
        what: &'static str,
        /// What was asked for.
        requested: usize,
        /// What is allowed (`1..=max`).
        max: usize,
    },
    /// The slots could not be allocated (the allocator refused); nothing was built.
    Alloc {
        /// How many slots were asked for.
        slots: usize,
    },
}

impl SizeError {
    /// `Ok` if `1 <= requested <= max`.
    pub(crate) fn check(what: &'static str, requested: usize, max: usize) -> Result<(), SizeError> {
        if requested == 0 || requested > max {
            return Err(SizeError::OutOfRange {
                what,
                requested,
                max,
            });
        }
        Ok(())
    }
}

impl fmt::Display for SizeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SizeError::OutOfRange {
                what,
                requested,
                max,
            } => write!(
                f,
                "invalid number of {what}: {requested} (allowed: 1..={max})"
            ),
            SizeError::Alloc { slots } => write!(f, "could not allocate {slots} pool slots"),
        }
    }
}

impl std::error::Error for SizeError {}

/// A backend index outside `0..backends` of a [`ConnectionPool`](crate::ConnectionPool).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownBackend {
    /// The index asked for.
    pub backend: usize,
    /// How many backends the pool has.
    pub backends: usize,
}

impl fmt::Display for UnknownBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown backend {}: the pool has {} backends",
            self.backend, self.backends
        )
    }
}

impl std::error::Error for UnknownBackend {}

/// Waiting for a connection or a free slot took longer than the timeout
/// ([`Pool::acquire_timeout`](crate::Pool::acquire_timeout)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeout;

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("timed out waiting for a connection or a free slot")
    }
}

impl std::error::Error for Timeout {}

/// Any of this crate's errors, for callers that propagate them with `?` into one type.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// See [`SizeError`].
    Size(SizeError),
    /// See [`UnknownBackend`].
    UnknownBackend(UnknownBackend),
    /// See [`Timeout`].
    Timeout(Timeout),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Size(e) => e.fmt(f),
            Error::UnknownBackend(e) => e.fmt(f),
            Error::Timeout(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Size(e) => Some(e),
            Error::UnknownBackend(e) => Some(e),
            Error::Timeout(e) => Some(e),
        }
    }
}

impl From<SizeError> for Error {
    fn from(e: SizeError) -> Error {
        Error::Size(e)
    }
}

impl From<UnknownBackend> for Error {
    fn from(e: UnknownBackend) -> Error {
        Error::UnknownBackend(e)
    }
}

impl From<Timeout> for Error {
    fn from(e: Timeout) -> Error {
        Error::Timeout(e)
    }
}
