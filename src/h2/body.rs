//! [`Body`]: the response body of [`H2Pool::send`](super::H2Pool::send), as an
//! [`http_body::Body`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};

use super::send::Upload;
use super::timeouts::Deadline;
use super::{H2Error, RecvStream, Target};

/// The body of a response from [`H2Pool::send`](super::H2Pool::send) or the pool's
/// [`Service`](tower_service::Service): an [`http_body::Body`] of [`Bytes`] whose errors are
/// [`H2Error`]s.
///
/// - **Flow control is handled**: each data frame's bytes are given back to the backend's
///   flow-control window as the frame is taken, so a body of any size streams through at
///   the pace the reader takes it; the reader never calls `release_capacity`.
/// - **Trailers** come as the last frame, when the backend sends them.
/// - [`is_end_stream`](http_body::Body::is_end_stream) is true once nothing more will come
///   (END_STREAM received and every frame taken); [`size_hint`](http_body::Body::size_hint)
///   is exact when the response has a `Content-Length` (h2 rejects a body that does not
///   match it) and after the end, and unknown otherwise.
/// - **The stream counts against its connection** until the body has ended (or failed) or
///   is dropped. Dropping it before the end resets the stream (`RST_STREAM` with `CANCEL`)
///   and stops the request body's upload, if one is still running.
/// - **The request's time limit** ([`request_timeout`](super::H2PoolBuilder::request_timeout)
///   or [`Timeouts::request`](super::Timeouts::request)) bounds the body too: when it runs
///   out, the next poll yields [`H2Error::RequestTimeout`] and the stream is reset as if the
///   body had been dropped.
///
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
/// #             while let Some((_req, mut respond)) = conn.accept().await.transpose()? {
/// #                 let mut body = respond.send_response(http::Response::new(()), false)?;
/// #                 body.send_data(Bytes::from_static(b"hello"), true)?;
/// #             }
/// #             Ok::<_, h2::Error>(())
/// #         });
/// #     }
/// # });
/// use http_body_util::BodyExt;
///
/// let pool = H2Pool::builder([addr]).build()?;
/// let response = pool.send(0, http::Request::get("/").body(http_body_util::Empty::new())?).await?;
/// let body = response.into_body().collect().await?.to_bytes();
/// assert_eq!(body, "hello");
/// # Ok(()) }
/// ```
#[derive(Default)]
pub struct Body {
    /// `None` once the body has ended or failed (or for an empty body).
    stream: Option<Stream>,
}

struct Stream {
    recv: RecvStream,
    /// Every data frame has been taken; trailers (if any) come next.
    data_done: bool,
    /// Bytes still to come, from `Content-Length`.
    remaining: Option<u64>,
    /// The request body's upload: reset if this body is dropped before its end.
    upload: Upload,
    addr: Target,
    /// The request's time limit, when it has one: the body fails when it runs out.
    deadline: Option<Limit>,
}

/// The request's time limit over the body. Its timer is armed only when the body first has
/// to wait or returns a frame with more to come: a body that has arrived whole (the usual
/// small response, read in one frame) costs no timer.
struct Limit {
    deadline: Deadline,
    /// Armed at the first wait.
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl Body {
    /// `content_length`: the response's `Content-Length` when it describes this body (not
    /// for a response to HEAD, nor a 204 or 304).
    /// `deadline`: the request's time limit, which bounds the body too.
    pub(super) fn new(
        recv: RecvStream,
        upload: Upload,
        content_length: Option<u64>,
        deadline: Option<Deadline>,
    ) -> Body {
        let addr = recv.backend_addr().clone();
        let deadline = deadline.map(|deadline| Limit {
            deadline,
            sleep: None,
        });
        Body {
            stream: Some(Stream {
                recv,
                data_done: false,
                remaining: content_length,
                upload,
                addr,
                deadline,
            }),
        }
    }

    /// An empty body (already ended).
    pub fn empty() -> Body {
        Body::default()
    }

    /// The body has ended: the stream stops counting; the upload, if any, may finish.
    fn finish(&mut self) {
        if let Some(stream) = self.stream.take() {
            stream.upload.finished();
        }
    }

    /// The body failed: the stream stops counting and the upload is stopped.
    fn fail(&mut self, e: ::h2::Error) -> H2Error {
        match self.stream.take() {
            Some(stream) => stream.upload.error(stream.addr, e),
            None => H2Error::Protocol(e),
        }
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = H2Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, H2Error>>> {
        let this = self.get_mut();
        // Once armed, the limit is looked at first: past it, nothing more is read.
        if let Some(out) = this.ran_out(cx, false) {
            return out;
        }
        match this.poll_stream(cx) {
            // About to wait: the limit must be able to wake this body.
            Poll::Pending => this.ran_out(cx, true).unwrap_or(Poll::Pending),
            ready => {
                // More to come: the limit is armed now, and looked at from the next poll on,
                // even if this body never has to wait (a reader slower than the backend).
                if this
                    .stream
                    .as_ref()
                    .is_some_and(|s| !s.recv.is_end_stream())
                {
                    this.arm();
                }
                ready
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // h2 says so only when END_STREAM has arrived and no data or trailers are left.
        self.stream.as_ref().is_none_or(|s| s.recv.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        match &self.stream {
            None => SizeHint::with_exact(0),
            Some(Stream {
                remaining: Some(n), ..
            }) => SizeHint::with_exact(*n),
            Some(_) => SizeHint::default(),
        }
    }
}

impl Body {
    /// The request's time limit, if it has run out: then the body fails (the stream is
    /// dropped before its end: the upload stops, h2 resets the stream with CANCEL, and the
    /// stream stops counting against its connection). `arm`: set its timer if not yet set.
    #[allow(clippy::type_complexity)]
    fn ran_out(
        &mut self,
        cx: &mut Context<'_>,
        arm: bool,
    ) -> Option<Poll<Option<Result<Frame<Bytes>, H2Error>>>> {
        let stream = self.stream.as_mut()?;
        let limit = stream.deadline.as_mut()?;
        let sleep = match &mut limit.sleep {
            Some(sleep) => sleep,
            None if arm => limit
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(limit.deadline.at))),
            None => return None,
        };
        if sleep.as_mut().poll(cx).is_pending() {
            return None;
        }
        let timeout = limit.deadline.timeout;
        let addr = stream.addr.clone();
        self.stream = None;
        Some(Poll::Ready(Some(Err(H2Error::RequestTimeout {
            addr,
            timeout,
            sent: true,
        }))))
    }

    /// Sets the time limit's timer, if there is a limit and its timer is not set yet (it is
    /// polled, and so registered, by the next [`ran_out`](Body::ran_out)).
    fn arm(&mut self) {
        if let Some(limit) = self.stream.as_mut().and_then(|s| s.deadline.as_mut()) {
            if limit.sleep.is_none() {
                limit.sleep = Some(Box::pin(tokio::time::sleep_until(limit.deadline.at)));
            }
        }
    }

    /// The next frame of the stream, with no regard to the time limit.
    fn poll_stream(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, H2Error>>> {
        let this = self;
        let Some(stream) = this.stream.as_mut() else {
            return Poll::Ready(None);
        };
        if !stream.data_done {
            match ready!(stream.recv.poll_data(cx)) {
                Some(Ok(data)) => {
                    // Taken by the reader: the backend may send this much more. An error
                    // here means the stream is gone, which the next poll reports.
                    let _ = stream.recv.flow_control().release_capacity(data.len());
                    if let Some(left) = &mut stream.remaining {
                        *left = left.saturating_sub(data.len() as u64);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(data))));
                }
                Some(Err(e)) => return Poll::Ready(Some(Err(this.fail(e)))),
                None => stream.data_done = true,
            }
        }
        match ready!(stream.recv.poll_trailers(cx)) {
            Ok(trailers) => {
                this.finish();
                Poll::Ready(trailers.map(|t| Ok(Frame::trailers(t))))
            }
            Err(e) => Poll::Ready(Some(Err(this.fail(e)))),
        }
    }
}

impl Drop for Body {
    fn drop(&mut self) {
        // Dropped with nothing left to read: the response has ended, so an upload still
        // running may finish. Otherwise `Upload`'s own drop stops it.
        if self.stream.as_ref().is_some_and(|s| s.recv.is_end_stream()) {
            self.finish();
        }
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Body");
        match &self.stream {
            Some(s) => d
                .field("stream_id", &s.recv.stream_id())
                .field("backend_addr", &s.addr)
                .field("data_done", &s.data_done)
                .finish(),
            None => d.field("ended", &true).finish(),
        }
    }
}
