//! The pool's error type.

use std::fmt;

/// Why a pool operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A backend index outside `0..backends`.
    UnknownBackend {
        /// The index asked for.
        backend: usize,
        /// How many backends the pool has.
        backends: usize,
    },
    /// A pool size or backend count outside what a token can name.
    InvalidSize {
        /// What was asked for.
        requested: usize,
        /// What is allowed (`1..=max`).
        max: usize,
        /// Which size: `"slots"` or `"backends"`.
        what: &'static str,
    },
    /// Every slot of the backend holds a connection; nothing was added.
    PoolFull,
    /// No connection is available right now (`acquire` does not wait).
    NoneAvailable,
    /// Waiting for a connection or a free slot took longer than the timeout.
    Timeout,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::UnknownBackend { backend, backends } => {
                write!(
                    f,
                    "unknown backend {backend}: the pool has {backends} backends"
                )
            }
            Error::InvalidSize {
                requested,
                max,
                what,
            } => {
                write!(
                    f,
                    "invalid number of {what}: {requested} (allowed: 1..={max})"
                )
            }
            Error::PoolFull => {
                f.write_str("pool full: every slot of the backend holds a connection")
            }
            Error::NoneAvailable => f.write_str("no connection available"),
            Error::Timeout => f.write_str("timed out waiting for a connection or a free slot"),
        }
    }
}

impl std::error::Error for Error {}

/// A connection that could not be added, handed back with the reason: nothing is lost.
pub struct AddError<T> {
    /// Why it was not added ([`Error::PoolFull`] or [`Error::UnknownBackend`]).
    pub reason: Error,
    /// The connection, untouched.
    pub conn: T,
}

impl<T> AddError<T> {
    /// The connection that was not added.
    pub fn into_inner(self) -> T {
        self.conn
    }
}

impl<T> fmt::Debug for AddError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AddError")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl<T> fmt::Display for AddError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "connection not added: {}", self.reason)
    }
}

impl<T> std::error::Error for AddError<T> {}
