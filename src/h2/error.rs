//! [`H2Error`]: everything the HTTP/2 layer can fail with, in one enum.

use std::fmt;
use std::io;
use std::time::Duration;

use super::Target;

/// Why an [`H2Pool`](super::H2Pool) operation failed.
///
/// None of these is a panic, and after any of them no slot of the pool stays `in_use`: every
/// path (including a cancelled future) releases what it held.
///
/// [`is_retryable`](H2Error::is_retryable) tells whether the request was certainly not
/// processed by the backend, so that sending it again (to this or another backend) is safe
/// even for a non-idempotent request.
#[derive(Debug)]
#[non_exhaustive]
pub enum H2Error {
    /// A backend index outside `0..backends`.
    UnknownBackend {
        /// The index asked for.
        backend: usize,
        /// How many backends the pool has.
        backends: usize,
    },
    /// Opening the connection failed: the connector's error (TCP connect refused or
    /// unreachable, a host name that does not resolve, a Unix socket that is not there), or
    /// the peer closed or reset the connection during the TLS or HTTP/2 handshake.
    Connect {
        /// The backend's address.
        addr: Target,
        /// What the operating system said.
        source: io::Error,
    },
    /// Opening the connection (connector, TLS handshake, HTTP/2 handshake and its first PING
    /// round trip) took longer than the connect timeout.
    ConnectTimeout {
        /// The backend's address.
        addr: Target,
        /// The connect timeout that ran out.
        timeout: Duration,
    },
    /// The TCP connection was opened but the HTTP/2 handshake failed for a reason other than
    /// I/O (the peer does not speak HTTP/2, or sent an invalid frame).
    Handshake {
        /// The backend's address.
        addr: Target,
        /// The h2 error.
        source: ::h2::Error,
    },
    /// The request waited for a connect to its backend that another request had started
    /// (instead of opening a connection of its own; see "Connect coalescing" in the
    /// [module docs](super)), and that connect failed. Nothing was sent.
    JoinedConnectFailed {
        /// The backend's address.
        addr: Target,
        /// The error the connecting request got, as text.
        cause: String,
        /// Whether that error was retryable (a failed connect always is; a configuration
        /// error is not).
        retryable: bool,
    },
    /// The backend was removed or replaced (see
    /// [`H2Pool::remove_backend`](super::H2Pool::remove_backend)) while the request was on
    /// its way to it. Nothing was sent: retryable ([`H2Pool::dispatch`](super::H2Pool::dispatch)
    /// retries it on a current backend).
    BackendRemoved {
        /// The index it had.
        backend: usize,
        /// The address it had.
        addr: Target,
    },
    /// No backend was added under this key (see
    /// [`H2Pool::add_backend`](super::H2Pool::add_backend)), or it was removed.
    UnknownBackendKey(String),
    /// The backend is ejected after consecutive connect failures (see
    /// [`H2PoolBuilder::eject_after_connect_failures`](super::H2PoolBuilder::eject_after_connect_failures)),
    /// and the request needed a new connection: it failed at once instead of paying for
    /// another connect. Nothing was sent; another backend may serve it.
    BackendEjected {
        /// The backend index.
        backend: usize,
        /// The backend's address.
        addr: Target,
        /// When the next connect (a probe) will be let through.
        until: std::time::Instant,
        /// Consecutive connect failures so far.
        failures: u32,
    },
    /// [`H2Pool::dispatch`](super::H2Pool::dispatch): every attempt failed; each attempt's
    /// backend index and error, in order. Retryable as its last attempt.
    AllAttemptsFailed(Vec<(usize, H2Error)>),
    /// Every connection slot of the backend stayed busy (each connection carrying as many
    /// streams as it may, or being opened) for longer than the acquire timeout.
    AcquireTimeout {
        /// The backend index.
        backend: usize,
        /// The acquire timeout that ran out.
        timeout: Duration,
    },
    /// The connection carrying the request died or was shut down (GOAWAY, I/O error, EOF)
    /// before the exchange completed. Other connections are not affected.
    ConnectionLost {
        /// The backend's address.
        addr: Target,
        /// The h2 error that reported it.
        source: ::h2::Error,
        /// Sending the request again is safe: it never left (the connection failed as its
        /// stream was being opened), or it is idempotent and had no body (see
        /// [`H2Error::StreamReset`]'s field of the same name).
        replay_safe: bool,
    },
    /// [`H2Lease::send_request`](super::H2Lease::send_request): the leased connection
    /// already carries as many streams as it may.
    ConnectionFull {
        /// The backend's address.
        addr: Target,
        /// The connection's stream limit.
        limit: usize,
    },
    /// The backend reset the request's stream (`RST_STREAM`) after it was opened.
    StreamReset {
        /// The backend's address.
        addr: Target,
        /// The h2 error that reported it; its [`reason`](::h2::Error::reason) is the
        /// backend's error code.
        source: ::h2::Error,
        /// Sending the request again is safe although the backend may have processed it:
        /// it went through [`H2Pool::send`](super::H2Pool::send), its method is idempotent
        /// (`GET`, `HEAD`, `OPTIONS`, `TRACE`, `PUT`, `DELETE`; RFC 9110 §9.2.2) and it had
        /// no body (END_STREAM went with its headers), so the pool knows the whole request
        /// and a second copy changes nothing the first did not. Always `false` on the
        /// low-level path and from [`H2Error::from_h2`], which do not know the request.
        replay_safe: bool,
    },
    /// An HTTP/2 error that is neither the loss of the connection nor a reset by the
    /// backend: the request was malformed, h2 refused it, a frame was invalid, …
    Protocol(::h2::Error),
    /// [`H2Pool::send`](super::H2Pool::send): the request could not be made into an HTTP/2
    /// request (for example an origin-form request whose `Host` is not a valid authority).
    /// Nothing was sent.
    InvalidRequest(String),
    /// [`H2Pool::send`](super::H2Pool::send): the request body failed while it was being
    /// sent; the stream was reset. The backend may have processed part of the request.
    RequestBody(Box<dyn std::error::Error + Send + Sync>),
    /// [`H2Pool::shutdown`](super::H2Pool::shutdown) has begun: the pool takes no new
    /// requests. Nothing was sent. Not retryable on this pool.
    Shutdown,
    /// [`H2Pool::send`](super::H2Pool::send): the request's time limit
    /// ([`request_timeout`](super::H2PoolBuilder::request_timeout) or
    /// [`Timeouts::request`](super::Timeouts::request)) ran out. The stream, if one was
    /// opened, was reset with `CANCEL` and no longer counts against its connection.
    RequestTimeout {
        /// The backend's address.
        addr: Target,
        /// The limit that ran out.
        timeout: Duration,
        /// Whether the request head had been handed to a connection when the limit ran out
        /// (after that, the backend may have processed the request).
        sent: bool,
    },
    /// [`H2Pool::send`](super::H2Pool::send): no response head came within the response-header
    /// limit ([`response_header_timeout`](super::H2PoolBuilder::response_header_timeout) or
    /// [`Timeouts::response_header`](super::Timeouts::response_header)) after the request was
    /// sent. The stream was reset with `CANCEL` and no longer counts against its connection.
    /// Not retryable: the backend may be processing the request.
    ResponseHeaderTimeout {
        /// The backend's address.
        addr: Target,
        /// The limit that ran out.
        timeout: Duration,
    },
    /// `build` was called outside a tokio runtime (the pool spawns its sweeper on the
    /// runtime it is built in, and connection drivers there unless a `current_thread`
    /// runtime opens them).
    NoRuntime,
    /// A builder setting is out of range (for example zero connections per backend), or a
    /// backend address or TLS setting is invalid; the message names it.
    InvalidConfig(String),
    /// The TLS handshake with an `https://` backend failed: its certificate was rejected (the
    /// reason is in `failure`), or the backend rejected the handshake with an alert (for
    /// example because it requires a client certificate). Not retryable: the same
    /// configuration fails the same way.
    Tls {
        /// The backend's address.
        addr: Target,
        /// Why, typed.
        failure: TlsFailure,
        /// The I/O error carrying rustls's own error (`source().source()` is the
        /// `rustls::Error`).
        source: io::Error,
    },
    /// An `https://` backend did not agree to HTTP/2 in TLS ALPN: it refused `h2` with the
    /// `no_application_protocol` alert (it offers only other protocols, such as `http/1.1`),
    /// completed the handshake without choosing a protocol, or chose another one. The pool
    /// speaks only HTTP/2; the connection was closed and its slot freed. Not retryable.
    AlpnNotH2 {
        /// The backend's address.
        addr: Target,
        /// The protocol the backend chose; `None` when it chose none or refused.
        negotiated: Option<String>,
        /// True when it refused with the `no_application_protocol` alert.
        refused: bool,
    },
}

/// Why a TLS handshake failed ([`H2Error::Tls`]), from rustls's error.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The backend's certificate chain does not lead to a trusted root (unknown or
    /// self-signed CA: the pool trusts the platform's roots, or the CA bundle it was given).
    UnknownIssuer,
    /// The certificate is not valid for the name the pool checked (the backend's host, or the
    /// `TlsConfig::server_name` override).
    WrongName {
        /// The name checked, when rustls reports it.
        expected: Option<String>,
        /// The names in the certificate, when rustls reports them.
        presented: Vec<String>,
    },
    /// The certificate has expired.
    Expired,
    /// The certificate is not valid yet.
    NotYetValid,
    /// The certificate has been revoked.
    Revoked,
    /// The certificate was rejected for another reason (rustls's description).
    BadCertificate(String),
    /// The backend ended the handshake with this TLS alert (RFC 8446 name, e.g.
    /// `certificate_required` when it requires a client certificate and none was given,
    /// `unknown_ca` or `bad_certificate` when it rejected the one given).
    AlertReceived(String),
    /// Any other TLS failure (rustls's description).
    Other(String),
}

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsFailure::UnknownIssuer => f.write_str(
                "the backend's certificate is not signed by a trusted CA (unknown issuer)",
            ),
            TlsFailure::WrongName {
                expected,
                presented,
            } => {
                f.write_str("the backend's certificate is not valid for ")?;
                match expected {
                    Some(name) => write!(f, "the name `{name}`")?,
                    None => f.write_str("the name checked")?,
                }
                if !presented.is_empty() {
                    write!(f, " (it is for {})", presented.join(", "))?;
                }
                Ok(())
            }
            TlsFailure::Expired => f.write_str("the backend's certificate has expired"),
            TlsFailure::NotYetValid => f.write_str("the backend's certificate is not valid yet"),
            TlsFailure::Revoked => f.write_str("the backend's certificate has been revoked"),
            TlsFailure::BadCertificate(why) => {
                write!(f, "the backend's certificate was rejected: {why}")
            }
            TlsFailure::AlertReceived(alert) => {
                write!(
                    f,
                    "the backend refused the handshake with the alert `{alert}`"
                )?;
                if alert == "certificate_required" {
                    f.write_str(" (it requires a client certificate)")?;
                }
                Ok(())
            }
            TlsFailure::Other(why) => f.write_str(why),
        }
    }
}

impl H2Error {
    /// Sorts an error reported by h2 for a request on a connection to `addr`: a GOAWAY or an
    /// I/O error means the connection is gone ([`H2Error::ConnectionLost`]); a reset from the
    /// backend is [`H2Error::StreamReset`]; anything else is about the request or the
    /// protocol ([`H2Error::Protocol`]). `replay_safe` is `false`: h2's error says nothing
    /// of the request.
    ///
    /// Proxies that drive [`ResponseFuture`](super::ResponseFuture) and
    /// [`RecvStream`](super::RecvStream) themselves can use this to report h2 errors in the
    /// pool's terms.
    pub fn from_h2(addr: Target, err: ::h2::Error) -> H2Error {
        H2Error::from_h2_sent(addr, err, false)
    }

    /// [`from_h2`](H2Error::from_h2) for a request whose replay safety is known.
    pub(super) fn from_h2_sent(addr: Target, err: ::h2::Error, replay_safe: bool) -> H2Error {
        if err.is_go_away() || err.is_io() {
            H2Error::ConnectionLost {
                addr,
                source: err,
                replay_safe,
            }
        } else if err.is_reset() && err.is_remote() {
            H2Error::StreamReset {
                addr,
                source: err,
                replay_safe,
            }
        } else {
            H2Error::Protocol(err)
        }
    }

    /// True when the request can be sent again safely (to this backend or another):
    /// - the backend certainly did not process it, whatever its method: it was never sent
    ///   (connect failed or timed out, no connection had room in time, its time limit ran
    ///   out before its head was handed to a connection: [`H2Error::RequestTimeout`] with
    ///   `sent: false`), or the backend refused the stream (`REFUSED_STREAM`, or a GOAWAY
    ///   from the backend whose last stream id excluded it; RFC 9113 §8.7);
    /// - or it was lost after it was sent (stream reset, connection failed) but it is
    ///   idempotent and had no body, as [`H2Pool::send`](super::H2Pool::send) records in
    ///   `replay_safe` (see [`H2Error::StreamReset`]).
    ///
    /// Otherwise a stream reset or a failed connection may have left the request processed,
    /// and it is not retryable. A time limit that ran out after the head was sent is never
    /// retryable, whatever the method: the backend may still be processing the request
    /// (a proxy may still choose to send an idempotent request elsewhere, RFC 9110 §9.2.2).
    ///
    /// A failed connect that retrying cannot fix is not retryable although nothing was sent:
    /// [`H2Error::Tls`] (a rejected certificate, a refused handshake) and
    /// [`H2Error::AlpnNotH2`] fail the same way every time.
    pub fn is_retryable(&self) -> bool {
        match self {
            H2Error::Connect { .. }
            | H2Error::ConnectTimeout { .. }
            | H2Error::Handshake { .. }
            | H2Error::AcquireTimeout { .. }
            | H2Error::ConnectionFull { .. } => true,
            H2Error::JoinedConnectFailed { retryable, .. } => *retryable,
            H2Error::BackendEjected { .. } | H2Error::BackendRemoved { .. } => true,
            H2Error::AllAttemptsFailed(attempts) => {
                attempts.last().is_some_and(|(_, e)| e.is_retryable())
            }
            // Before the head was handed to a connection nothing reached the backend; after,
            // it may be processing the request (a stuck backend looks the same as a slow one).
            H2Error::RequestTimeout { sent, .. } => !sent,
            H2Error::ConnectionLost {
                source,
                replay_safe,
                ..
            }
            | H2Error::StreamReset {
                source,
                replay_safe,
                ..
            } => *replay_safe || refused(source),
            H2Error::Protocol(source) => refused(source),
            H2Error::UnknownBackend { .. }
            | H2Error::UnknownBackendKey(_)
            | H2Error::InvalidRequest(_)
            | H2Error::RequestBody(_)
            | H2Error::ResponseHeaderTimeout { .. }
            | H2Error::NoRuntime
            | H2Error::Shutdown
            | H2Error::InvalidConfig(_)
            | H2Error::Tls { .. }
            | H2Error::AlpnNotH2 { .. } => false,
        }
    }
}

/// The backend refused the stream before processing it: `REFUSED_STREAM`, or its GOAWAY
/// (h2 reports a remote GOAWAY only to the streams above its last stream id; streams it kept
/// finish normally or fail with another error).
fn refused(source: &::h2::Error) -> bool {
    source.reason() == Some(::h2::Reason::REFUSED_STREAM)
        || (source.is_go_away() && source.is_remote())
}

impl fmt::Display for H2Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            H2Error::UnknownBackend { backend, backends } => {
                write!(
                    f,
                    "unknown backend {backend}: the pool has {backends} backends"
                )
            }
            H2Error::Connect { addr, source } => write!(f, "connecting to {addr} failed: {source}"),
            H2Error::ConnectTimeout { addr, timeout } => {
                write!(f, "connecting to {addr} timed out after {timeout:?}")
            }
            H2Error::Handshake { addr, source } => {
                write!(f, "HTTP/2 handshake with {addr} failed: {source}")
            }
            H2Error::JoinedConnectFailed { addr, cause, .. } => {
                write!(
                    f,
                    "the connect to {addr} that this request waited for failed: {cause}"
                )
            }
            H2Error::UnknownBackendKey(key) => write!(f, "no backend with the key `{key}`"),
            H2Error::BackendRemoved { backend, addr } => {
                write!(f, "backend {backend} ({addr}) was removed")
            }
            H2Error::AllAttemptsFailed(attempts) => {
                write!(f, "all {} attempts failed:", attempts.len())?;
                for (i, (backend, e)) in attempts.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ";" };
                    write!(f, "{sep} #{} (backend {backend}): {e}", i + 1)?;
                }
                Ok(())
            }
            H2Error::BackendEjected {
                backend,
                addr,
                until,
                failures,
            } => write!(
                f,
                "backend {backend} ({addr}) is ejected after {failures} consecutive connect \
                 failures; the next connect is allowed in {:?}",
                until.saturating_duration_since(std::time::Instant::now())
            ),
            H2Error::AcquireTimeout { backend, timeout } => write!(
                f,
                "no connection to backend {backend} could take a request within {timeout:?}"
            ),
            H2Error::ConnectionLost { addr, source, .. } => {
                write!(f, "connection to {addr} lost: {source}")
            }
            H2Error::StreamReset { addr, source, .. } => {
                write!(f, "backend {addr} reset the stream: {source}")
            }
            H2Error::ConnectionFull { addr, limit } => write!(
                f,
                "the connection to {addr} already carries its limit of {limit} streams"
            ),
            H2Error::Protocol(source) => write!(f, "HTTP/2 error: {source}"),
            H2Error::InvalidRequest(what) => write!(f, "invalid request: {what}"),
            H2Error::RequestBody(e) => write!(f, "the request body failed: {e}"),
            H2Error::Shutdown => f.write_str("the pool is shut down"),
            H2Error::RequestTimeout {
                addr,
                timeout,
                sent,
            } => write!(
                f,
                "the request to {addr} timed out after {timeout:?} ({})",
                if *sent {
                    "after it was sent"
                } else {
                    "before it was sent"
                }
            ),
            H2Error::ResponseHeaderTimeout { addr, timeout } => write!(
                f,
                "no response head from {addr} within {timeout:?} of sending the request"
            ),
            H2Error::NoRuntime => {
                f.write_str("H2Pool::build must be called from within a tokio runtime")
            }
            H2Error::InvalidConfig(what) => write!(f, "invalid H2Pool configuration: {what}"),
            H2Error::Tls { addr, failure, .. } => {
                write!(f, "TLS handshake with {addr} failed: {failure}")
            }
            H2Error::AlpnNotH2 {
                addr,
                negotiated,
                refused,
            } => {
                write!(f, "{addr} does not speak HTTP/2 over TLS: ")?;
                match (negotiated, refused) {
                    (Some(p), _) => write!(f, "ALPN chose `{p}` instead of `h2`"),
                    (None, true) => f.write_str(
                        "it refused ALPN `h2` (alert `no_application_protocol`: it offers \
                         other protocols only, such as `http/1.1`)",
                    ),
                    (None, false) => f.write_str("ALPN chose no protocol (`h2` required)"),
                }
            }
        }
    }
}

impl std::error::Error for H2Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            H2Error::Connect { source, .. } | H2Error::Tls { source, .. } => Some(source),
            H2Error::Handshake { source, .. }
            | H2Error::ConnectionLost { source, .. }
            | H2Error::StreamReset { source, .. }
            | H2Error::Protocol(source) => Some(source),
            H2Error::RequestBody(e) => Some(&**e),
            _ => None,
        }
    }
}

impl From<crate::UnknownBackend> for H2Error {
    fn from(e: crate::UnknownBackend) -> H2Error {
        H2Error::UnknownBackend {
            backend: e.backend,
            backends: e.backends,
        }
    }
}

impl From<crate::SizeError> for H2Error {
    fn from(e: crate::SizeError) -> H2Error {
        H2Error::InvalidConfig(e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_the_backend_and_the_cause() {
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let e = H2Error::Connect {
            addr: addr.into(),
            source: io::Error::from(io::ErrorKind::ConnectionRefused),
        };
        assert!(e
            .to_string()
            .starts_with("connecting to 127.0.0.1:9 failed"));
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.is_retryable());
        let e = H2Error::UnknownBackend {
            backend: 3,
            backends: 2,
        };
        assert_eq!(e.to_string(), "unknown backend 3: the pool has 2 backends");
        assert!(!e.is_retryable());
    }

    #[test]
    fn stream_resets_are_protocol_errors_and_refused_ones_retryable() {
        // GOAWAY and I/O errors cannot be built outside h2; the integration tests see them.
        let addr: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
        let reset = ::h2::Error::from(::h2::Reason::CANCEL);
        assert!(matches!(
            H2Error::from_h2(addr.into(), reset),
            H2Error::Protocol(_)
        ));
        let refused = ::h2::Error::from(::h2::Reason::REFUSED_STREAM);
        assert!(H2Error::from_h2(addr.into(), refused).is_retryable());
    }

    #[test]
    fn timeouts_are_retryable_only_before_the_request_was_sent() {
        let addr: Target = "127.0.0.1:9"
            .parse::<std::net::SocketAddr>()
            .unwrap()
            .into();
        let timeout = Duration::from_millis(5);
        let unsent = H2Error::RequestTimeout {
            addr: addr.clone(),
            timeout,
            sent: false,
        };
        assert!(unsent.is_retryable());
        assert!(unsent.to_string().contains("before it was sent"));
        let sent = H2Error::RequestTimeout {
            addr: addr.clone(),
            timeout,
            sent: true,
        };
        assert!(!sent.is_retryable());
        assert!(!H2Error::ResponseHeaderTimeout { addr, timeout }.is_retryable());
    }
}
