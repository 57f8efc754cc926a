//! [`H2Pool::send`]: a request in `http` + `http-body` types, its body streamed into the
//! HTTP/2 stream with flow control by an upload task, and its response as a [`Body`].
//!
//! **Why a spawned task for the request body.** The upload has to make progress while the
//! caller waits for the response head *and* while it reads the response body: a backend may
//! answer before it has read the whole request (an error, a redirect), or stream its answer
//! as it reads (an echo, a gRPC bidirectional call), and then waits for more request body
//! while the caller waits for more response body. Driving the upload from inside the
//! response future would stall the second case once the head has arrived (nobody polls the
//! upload while the caller reads the body), and driving it from both the future and the
//! body would still stall a caller that reads the head, then waits for something else. So a
//! request with a body gets one task (as hyper's client does), and one without a body (its
//! `is_end_stream()` true: END_STREAM goes with the headers) gets none.
//!
//! The task ends when the body is sent, when the stream is reset (by the backend, or by h2
//! when the connection fails), or when the response side is dropped before the response has
//! ended (the send future, or the [`Body`] half-way): then it resets the stream itself.
//! Once the response has ended, the upload may run on to the end of the request body; a
//! backend that wants no more of it resets the stream (an h2 server does when it drops the
//! request body unread). As with [`send_request`](H2Pool::send_request), a stream counts
//! against its connection's limit only while its response side is alive.

use std::future::{poll_fn, Future};
use std::pin::{pin, Pin};
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body::Body as HttpBody;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::normalize::normalize;
use super::pool::Opening;
use super::timeouts::Deadline;
use super::{Body, H2Error, H2Pool, Timeouts};

/// What a request body's error converts into.
pub(super) type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl H2Pool {
    /// Sends `request` to `backend` and returns the response, with its body as a [`Body`].
    ///
    /// The request is first made valid for HTTP/2, so that an HTTP/1.1 request can be
    /// forwarded as it came. Exactly this is changed:
    /// - `Connection`, every header it names, `Keep-Alive`, `Proxy-Connection`,
    ///   `Transfer-Encoding` and `Upgrade` are removed; `TE` is kept only as `TE: trailers`,
    ///   and only if `trailers` was among its values;
    /// - a URI without scheme and authority (origin form, `/path?query`) becomes
    ///   `http://{authority}/path?query`, the authority taken from `Host`, else the
    ///   backend's address; a URI with an authority is kept;
    /// - `Host` is removed (its value travels as `:authority`), and the version is set to
    ///   HTTP/2.
    ///
    /// Nothing else is touched: other headers, the method and the body go as they are.
    ///
    /// A body whose [`is_end_stream`](http_body::Body::is_end_stream) is true is not polled:
    /// END_STREAM goes with the headers. Any other body is streamed into the stream by a task
    /// spawned on the pool's runtime (or the caller's, if it is a `current_thread` one),
    /// chunk by chunk as the backend's flow-control window allows (nothing is buffered beyond
    /// the frame in hand), with its trailers at the end.
    /// The upload runs on while the response is read; it stops (and resets the stream) if
    /// the backend resets the stream, the connection fails, or the response side (this
    /// future, or the [`Body`] before its end) is dropped.
    ///
    /// The connection is found as by [`send_request`](H2Pool::send_request). Dropping this
    /// future at any point leaves no slot in use and no stream open.
    ///
    /// # Errors
    /// Every failure, before or after the response head, is an [`H2Error`], and
    /// [`H2Error::is_retryable`] is true exactly when the backend certainly did not process
    /// the request. Before a stream is opened: as [`send_request`](H2Pool::send_request),
    /// plus [`H2Error::InvalidRequest`] when `Host` is not a valid authority. After:
    /// [`H2Error::StreamReset`] when the backend reset the stream, [`H2Error::ConnectionLost`]
    /// when the connection failed, both retryable when the backend refused the stream
    /// (`REFUSED_STREAM`, or a GOAWAY that excluded it) or when the request is idempotent and
    /// had no body; [`H2Error::RequestBody`] when the request body failed.
    ///
    /// **Time limits.** The pool's [`request_timeout`](super::H2PoolBuilder::request_timeout)
    /// and [`response_header_timeout`](super::H2PoolBuilder::response_header_timeout), or the
    /// request's [`Timeouts`] extension, bound the exchange: [`H2Error::RequestTimeout`]
    /// (retryable only if it ran out before the request head was handed to a connection;
    /// after the head, the response [`Body`] yields it), [`H2Error::ResponseHeaderTimeout`]
    /// (never retryable: the backend may be processing the request). On either the stream
    /// is reset with `RST_STREAM(CANCEL)`, the upload stops, and the stream stops counting
    /// against its connection.
    ///
    /// # Examples
    /// ```
    /// # use bytes::Bytes;
    /// # use tokenpool::h2::H2Pool;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    /// # let addr = listener.local_addr()?;
    /// # tokio::spawn(async move {
    /// #     while let Ok((tcp, _)) = listener.accept().await {
    /// #         tokio::spawn(async move {
    /// #             let mut conn = h2::server::handshake(tcp).await?;
    /// #             while let Some((req, mut respond)) = conn.accept().await.transpose()? {
    /// #                 assert!(req.headers().get("connection").is_none());
    /// #                 let mut body = respond.send_response(http::Response::new(()), false)?;
    /// #                 body.send_data(Bytes::from(req.uri().to_string()), true)?;
    /// #             }
    /// #             Ok::<_, h2::Error>(())
    /// #         });
    /// #     }
    /// # });
    /// use http_body_util::{BodyExt, Full};
    ///
    /// let pool = H2Pool::builder([addr]).build()?;
    /// // An HTTP/1.1 request as a proxy receives it.
    /// let request = http::Request::post("/upload?x=1")
    ///     .version(http::Version::HTTP_11)
    ///     .header("host", "api.example")
    ///     .header("connection", "keep-alive")
    ///     .body(Full::new(Bytes::from("payload")))?;
    /// let response = pool.send(0, request).await?;
    /// assert_eq!(response.status(), 200);
    /// let body = response.into_body().collect().await?.to_bytes();
    /// assert_eq!(body, "http://api.example/upload?x=1");
    /// # Ok(()) }
    /// ```
    pub async fn send<B>(
        &self,
        backend: usize,
        request: http::Request<B>,
    ) -> Result<http::Response<Body>, H2Error>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let entry = self.entry(backend)?;
        let addr = &entry.target;
        let (mut parts, body) = request.into_parts();
        let timeouts = parts
            .extensions
            .get::<Timeouts>()
            .copied()
            .unwrap_or_default()
            .or(self.default_timeouts());
        let request_deadline = Deadline::after(Instant::now(), timeouts.request);
        normalize(&mut parts, addr)?;
        let addr = addr.clone();
        let head = parts.method == Method::HEAD;
        let end_of_stream = body.is_end_stream();
        let replay_safe = end_of_stream && parts.method.is_idempotent();
        let request = http::Request::from_parts(parts, ());
        let (response, send_stream) = match self.open_now(&entry, request, end_of_stream)? {
            Opening::Opened(opened) => opened,
            // A connect or a wait: boxed, so that this future holds no room for them.
            Opening::Later(request) => {
                let opening = self.open_later(&entry, request, end_of_stream);
                match request_deadline {
                    Some(d) => Box::pin(tokio::time::timeout_at(d.at, opening))
                        .await
                        .map_err(|_| H2Error::RequestTimeout {
                            addr: addr.clone(),
                            timeout: d.timeout,
                            sent: false,
                        })??,
                    None => Box::pin(opening).await?,
                }
            }
        };
        let upload = if end_of_stream {
            drop((send_stream, body));
            Upload::none(replay_safe)
        } else {
            let (upload, end) = Upload::new();
            self.spawn(pump(body, send_stream, end));
            upload
        };
        // The head is with the connection: from here a timeout is not retryable.
        let header_deadline = Deadline::after(Instant::now(), timeouts.response_header);
        let first = match (request_deadline, header_deadline) {
            (Some(r), Some(h)) if h.at < r.at => Some((h, true)),
            (Some(r), _) => Some((r, false)),
            (None, h) => h.map(|h| (h, true)),
        };
        let response = match first {
            Some((d, header)) => match tokio::time::timeout_at(d.at, response).await {
                Ok(r) => r,
                Err(_) => {
                    // The upload stops and resets the stream with CANCEL; the response
                    // future is dropped on return, which uncounts the stream (and, with no
                    // upload holding the stream, makes h2 reset it with CANCEL itself).
                    upload.cancel();
                    return Err(if header {
                        H2Error::ResponseHeaderTimeout {
                            addr,
                            timeout: d.timeout,
                        }
                    } else {
                        H2Error::RequestTimeout {
                            addr,
                            timeout: d.timeout,
                            sent: true,
                        }
                    });
                }
            },
            None => response.await,
        };
        let response = match response {
            Ok(response) => response,
            Err(e) => return Err(upload.error(addr, e)),
        };
        let content_length = if head || !has_body(response.status()) {
            None
        } else {
            response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok())
        };
        Ok(response.map(|recv| Body::new(recv, upload, content_length, request_deadline)))
    }
}

/// Whether a response with this status may carry a body (RFC 9110 §6.4.1).
fn has_body(status: StatusCode) -> bool {
    !(status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED)
}

/// The response side's end of a request's upload: dropped before [`finished`](Self::finished),
/// it stops the upload task, which resets the stream.
pub(super) struct Upload {
    /// Sending on it stops the upload; dropping it unsent lets the upload finish.
    stop: Option<oneshot::Sender<()>>,
    /// The request body's error, if it failed (read by the response side to report it);
    /// `None` without a body (no allocation for the usual GET).
    failed: Option<Arc<Mutex<Option<BoxError>>>>,
    /// The request may be sent again after a reset: idempotent, and no body.
    replay_safe: bool,
}

/// The upload task's end of an [`Upload`].
struct UploadEnd {
    stop: oneshot::Receiver<()>,
    failed: Arc<Mutex<Option<BoxError>>>,
}

impl Upload {
    /// For a request without a body: nothing to stop. `replay_safe`: its method is
    /// idempotent.
    fn none(replay_safe: bool) -> Upload {
        Upload {
            stop: None,
            failed: None,
            replay_safe,
        }
    }

    fn new() -> (Upload, UploadEnd) {
        let (tx, rx) = oneshot::channel();
        let failed = Arc::<Mutex<Option<BoxError>>>::default();
        let end = UploadEnd {
            stop: rx,
            failed: Arc::clone(&failed),
        };
        let upload = Upload {
            stop: Some(tx),
            failed: Some(failed),
            replay_safe: false,
        };
        (upload, end)
    }

    /// The exchange is abandoned (a time limit ran out): stops the upload now, which resets
    /// the stream with `CANCEL`.
    pub(super) fn cancel(self) {
        drop(self);
    }

    /// The response has ended: the upload may run to its end.
    pub(super) fn finished(mut self) {
        self.stop = None;
    }

    /// The response side failed with `e`: reports the request body's error if that is what
    /// reset the stream, else `e` in the pool's terms. Stops the upload.
    pub(super) fn error(self, addr: super::Target, e: ::h2::Error) -> H2Error {
        match self
            .failed
            .as_ref()
            .and_then(|f| crate::sync::lock(f).take())
        {
            Some(body_error) => H2Error::RequestBody(body_error),
            None => H2Error::from_h2_sent(addr, e, self.replay_safe),
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            // The task may have ended already; then there is nothing to stop.
            let _ = stop.send(());
        }
    }
}

/// Why the upload stopped before the body was sent.
enum Interrupted {
    /// The stream was reset or the connection failed: nothing more can be sent.
    Reset,
    /// The response side is gone before the response ended.
    Stopped,
}

impl UploadEnd {
    /// Whether the upload must stop; registers `cx` for both causes. `self.stop` is polled
    /// only until it resolves (a `finished` upload is never stopped).
    fn interrupted(
        &mut self,
        send: &mut ::h2::SendStream<Bytes>,
        watching: &mut bool,
        cx: &mut Context<'_>,
    ) -> Option<Interrupted> {
        if *watching {
            match Pin::new(&mut self.stop).poll(cx) {
                Poll::Ready(Ok(())) => return Some(Interrupted::Stopped),
                Poll::Ready(Err(_)) => *watching = false,
                Poll::Pending => {}
            }
        }
        send.poll_reset(cx).is_ready().then_some(Interrupted::Reset)
    }
}

/// The upload task: copies `body` into `send`, waiting for flow-control capacity before each
/// chunk, and ends the stream with the body's end (or its trailers). See the module docs for
/// when it stops early.
async fn pump<B>(body: B, mut send: ::h2::SendStream<Bytes>, mut end: UploadEnd)
where
    B: HttpBody<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let mut body = pin!(body);
    let mut watching = true;
    let outcome: Result<(), Interrupted> = async {
        loop {
            let frame = poll_fn(|cx| match end.interrupted(&mut send, &mut watching, cx) {
                Some(why) => Poll::Ready(Err(why)),
                // The error converted at once: `B::Error` need not be `Send`.
                None => body
                    .as_mut()
                    .poll_frame(cx)
                    .map(|f| Ok(f.map(|f| f.map_err(Into::<BoxError>::into)))),
            })
            .await?;
            let frame = match frame {
                None => {
                    // Ended without trailers (and not yet marked ended below).
                    let _ = send.send_data(Bytes::new(), true);
                    return Ok(());
                }
                Some(Err(e)) => {
                    *crate::sync::lock(&end.failed) = Some(e);
                    return Err(Interrupted::Stopped);
                }
                Some(Ok(frame)) => frame,
            };
            match frame.into_data() {
                Ok(mut data) => {
                    let last = body.is_end_stream();
                    if data.is_empty() && last {
                        let _ = send.send_data(Bytes::new(), true);
                        return Ok(());
                    }
                    while !data.is_empty() {
                        send.reserve_capacity(data.len());
                        let granted = poll_fn(|cx| {
                            if let Some(why) = end.interrupted(&mut send, &mut watching, cx) {
                                return Poll::Ready(Err(why));
                            }
                            loop {
                                let granted = send.capacity();
                                if granted > 0 {
                                    return Poll::Ready(Ok(granted));
                                }
                                // Pending registers the waker; a Ready with no capacity
                                // (taken back) is looked at again.
                                match ready!(send.poll_capacity(cx)) {
                                    Some(Ok(_)) => {}
                                    Some(Err(_)) | None => {
                                        return Poll::Ready(Err(Interrupted::Reset))
                                    }
                                }
                            }
                        })
                        .await?;
                        let chunk = data.split_to(granted.min(data.len()));
                        send.send_data(chunk, last && data.is_empty())
                            .map_err(|_| Interrupted::Reset)?;
                    }
                    if last {
                        return Ok(());
                    }
                }
                Err(frame) => {
                    if let Ok(trailers) = frame.into_trailers() {
                        let _ = send.send_trailers(trailers);
                        return Ok(());
                    }
                    // A frame kind this version does not know: skipped.
                }
            }
        }
    }
    .await;
    if let Err(Interrupted::Stopped) = outcome {
        send.send_reset(::h2::Reason::CANCEL);
    }
}
