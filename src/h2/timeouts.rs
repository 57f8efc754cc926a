//! [`Timeouts`]: the request extension that sets a request's time limits, and the deadlines
//! [`H2Pool::send`](super::H2Pool::send) derives from it and from the pool's defaults.

use std::time::Duration;

use tokio::time::Instant;

/// A request extension that sets the time limits of one request sent with
/// [`H2Pool::send`](super::H2Pool::send) or through the pool's
/// [`Service`](tower_service::Service), in place of the pool's
/// [`request_timeout`](super::H2PoolBuilder::request_timeout) and
/// [`response_header_timeout`](super::H2PoolBuilder::response_header_timeout). A field left
/// `None` keeps the pool's setting.
///
/// - `request` bounds **the whole exchange**: finding a connection, sending the request, the
///   response head *and* the response body. When it runs out before the head, `send` fails
///   with [`H2Error::RequestTimeout`](super::H2Error::RequestTimeout); after the head, the
///   [`Body`](super::Body) yields that error. A long download or stream needs a longer
///   limit (or none).
/// - `response_header` bounds the wait for the response head once the request head has been
///   handed to the connection (the time to find a connection is bounded by the acquire and
///   connect timeouts). When it runs out, `send` fails with
///   [`H2Error::ResponseHeaderTimeout`](super::H2Error::ResponseHeaderTimeout).
///
/// Either way the stream is reset with `RST_STREAM(CANCEL)`, the request body's upload
/// stops, and the stream stops counting against its connection at once.
///
/// ```
/// use std::time::Duration;
/// use tokenpool::h2::Timeouts;
///
/// let mut request = http::Request::get("/slow").body(()).unwrap();
/// request.extensions_mut().insert(Timeouts {
///     request: Some(Duration::from_secs(30)),
///     response_header: Some(Duration::from_secs(2)),
/// });
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Timeouts {
    /// The limit on the whole exchange, response body included; `None`: the pool's
    /// [`request_timeout`](super::H2PoolBuilder::request_timeout).
    pub request: Option<Duration>,
    /// The limit on the wait for the response head after the request was sent; `None`: the
    /// pool's [`response_header_timeout`](super::H2PoolBuilder::response_header_timeout).
    pub response_header: Option<Duration>,
}

impl Timeouts {
    /// `self`'s limits, each unset one taken from `defaults`.
    pub(super) fn or(self, defaults: Timeouts) -> Timeouts {
        Timeouts {
            request: self.request.or(defaults.request),
            response_header: self.response_header.or(defaults.response_header),
        }
    }
}

/// A limit and the instant it runs out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Deadline {
    pub(super) at: Instant,
    pub(super) timeout: Duration,
}

impl Deadline {
    /// `timeout` from `start`; `None` for no limit, or one too far off to represent.
    pub(super) fn after(start: Instant, timeout: Option<Duration>) -> Option<Deadline> {
        let timeout = timeout?;
        Some(Deadline {
            at: start.checked_add(timeout)?,
            timeout,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_fields_take_the_pool_defaults() {
        let pool = Timeouts {
            request: Some(Duration::from_secs(9)),
            response_header: Some(Duration::from_secs(1)),
        };
        let mine = Timeouts {
            request: None,
            response_header: Some(Duration::from_millis(5)),
        };
        assert_eq!(
            mine.or(pool),
            Timeouts {
                request: Some(Duration::from_secs(9)),
                response_header: Some(Duration::from_millis(5)),
            }
        );
        assert_eq!(
            Timeouts::default().or(Timeouts::default()),
            Timeouts::default()
        );
    }
}
