//! [`H2Pool::dispatch`]: a request routed by the pool's picker (or pinned by the
//! [`Backend`] extension) and retried on another backend when that is safe, within a retry
//! budget.
//!
//! **When a request is retried.** Only after an error that [`H2Error::is_retryable`] calls
//! safe: never sent (connect failure, ejected backend, no room in time), refused by the
//! backend (`REFUSED_STREAM`, a GOAWAY above its stream id), or lost but idempotent and
//! without a body. And only when the pool can send the body again: an empty body, or one
//! whose size hint says it fits in the retry buffer, which is then read whole before the
//! first attempt (so nothing of it is lost to a failed attempt). A larger body streams, and
//! its request gets one attempt.
//!
//! **The retry budget** (as Envoy's): a retry may start only while the retries in progress are
//! fewer than a share of the requests in progress (20 % by default), or fewer than a small
//! floor (3), so that when a backend fails every request, retries add at most that share to
//! the load instead of multiplying it.

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;

use super::counters::bump;
use super::send::BoxError;
use super::{Backend, BackendKey, Body, H2Error, H2Pool};

/// Default for [`H2PoolBuilder::max_attempts`](super::H2PoolBuilder::max_attempts).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
/// Default for [`H2PoolBuilder::retry_buffer`](super::H2PoolBuilder::retry_buffer): request
/// bodies up to this size are read whole so that they can be sent again.
pub const DEFAULT_RETRY_BUFFER: usize = 64 * 1024;

/// How many attempts a response took: a response extension set by
/// [`H2Pool::dispatch`] (and the pool's `Service`). `Attempts(1)`: no retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Attempts(pub u32);

/// Retry settings of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct RetryPolicy {
    pub(super) max_attempts: u32,
    pub(super) buffer: usize,
    /// Retries in progress may be this percentage of the requests in progress...
    pub(super) budget_percent: u32,
    /// ... or this many, whichever is more.
    pub(super) budget_floor: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            buffer: DEFAULT_RETRY_BUFFER,
            budget_percent: 20,
            budget_floor: 3,
        }
    }
}

/// Requests and retries in progress, for the retry budget. Relaxed counters: the budget is
/// a rate limit, and a few requests' slack in a race changes nothing it promises.
#[derive(Debug, Default)]
pub(super) struct RetryBudget {
    requests: AtomicUsize,
    retries: AtomicUsize,
}

/// Counts one item of a [`RetryBudget`] while alive.
struct InProgress<'a>(&'a AtomicUsize);

impl Drop for InProgress<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

impl RetryBudget {
    fn request(&self) -> InProgress<'_> {
        self.requests.fetch_add(1, Relaxed);
        InProgress(&self.requests)
    }

    /// A retry, if the budget allows one now.
    fn retry(&self, policy: &RetryPolicy) -> Option<InProgress<'_>> {
        let requests = self.requests.load(Relaxed);
        let allowed = (requests * policy.budget_percent as usize / 100).max(policy.budget_floor);
        let retries = self.retries.fetch_add(1, Relaxed);
        if retries < allowed {
            Some(InProgress(&self.retries))
        } else {
            self.retries.fetch_sub(1, Relaxed);
            None
        }
    }
}

/// A request body the pool can send again: empty, or read whole (with its trailers).
#[derive(Debug, Clone, Default)]
pub(super) struct Replayed {
    data: Option<Bytes>,
    trailers: Option<HeaderMap>,
}

impl HttpBody for Replayed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if let Some(data) = self.data.take() {
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        Poll::Ready(self.trailers.take().map(|t| Ok(Frame::trailers(t))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.data.as_ref().map_or(0, |d| d.len() as u64))
    }
}

/// The body of a dispatched request: one the pool can replay, or one that streams (one
/// attempt).
enum Payload<B> {
    Replayable(Replayed),
    Streamed(B),
}

impl H2Pool {
    /// Sends `request` to the backend its [`Backend`] extension names, or else to the one
    /// the pool's picker chooses ([`Balance`](super::Balance): round robin by default,
    /// skipping ejected backends), and retries it on another backend (another connection if
    /// pinned) when that is safe: an error
    /// [`is_retryable`](H2Error::is_retryable) says nothing was processed (or the request is
    /// idempotent without a body), the body is empty or fits the
    /// [`retry_buffer`](super::H2PoolBuilder::retry_buffer), fewer than
    /// [`max_attempts`](super::H2PoolBuilder::max_attempts) were made, and the retry budget
    /// allows one. The response carries an [`Attempts`] extension.
    ///
    /// # Errors
    /// As [`send`](H2Pool::send), for the last attempt; after more than one attempt,
    /// [`H2Error::AllAttemptsFailed`] with each attempt's backend and error, retryable as its
    /// last. A body whose reading fails before the first attempt is
    /// [`H2Error::RequestBody`].
    pub async fn dispatch<B>(
        &self,
        request: http::Request<B>,
    ) -> Result<http::Response<Body>, H2Error>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let policy = self.retry_policy();
        let _request = self.retry_budget().request();
        let pinned = match (
            request.extensions().get::<Backend>(),
            request.extensions().get::<BackendKey>(),
        ) {
            (Some(b), _) => Some(b.0),
            (None, Some(BackendKey(key))) => Some(
                self.backend_index(key)
                    .ok_or_else(|| H2Error::UnknownBackendKey(key.clone()))?,
            ),
            (None, None) => None,
        };
        let (parts, body) = request.into_parts();
        let payload = if body.is_end_stream() {
            Payload::Replayable(Replayed::default())
        } else if body
            .size_hint()
            .upper()
            .is_some_and(|n| n <= policy.buffer as u64)
            && policy.max_attempts > 1
        {
            let collected = body
                .collect()
                .await
                .map_err(|e| H2Error::RequestBody(e.into()))?;
            let trailers = collected.trailers().cloned();
            let data = collected.to_bytes();
            Payload::Replayable(Replayed {
                data: (!data.is_empty()).then_some(data),
                trailers,
            })
        } else {
            Payload::Streamed(body)
        };
        let mut failed: Vec<(usize, H2Error)> = Vec::new();
        let mut _retry = None;
        let mut backend = match pinned.or_else(|| self.pick()) {
            Some(b) => b,
            None => {
                return Err(H2Error::UnknownBackend {
                    backend: 0,
                    backends: 0,
                })
            }
        };
        let single = policy.max_attempts <= 1 || matches!(payload, Payload::Streamed(_));
        if single {
            // One attempt: the head moves as it is, no copy kept for a retry.
            let request = match payload {
                Payload::Replayable(body) => {
                    return self
                        .attempt(backend, http::Request::from_parts(parts, body), 1)
                        .await
                }
                Payload::Streamed(body) => http::Request::from_parts(parts, body),
            };
            return self.attempt(backend, request, 1).await;
        }
        let Payload::Replayable(body) = &payload else {
            unreachable!("several attempts only with a replayable body")
        };
        for attempt in 1..=policy.max_attempts {
            let request = http::Request::from_parts(copy_parts(&parts), body.clone());
            let e = match self.attempt(backend, request, attempt).await {
                Ok(response) => return Ok(response),
                Err(e) => e,
            };
            let retry = e.is_retryable() && attempt < policy.max_attempts;
            failed.push((backend, e));
            if !retry {
                break;
            }
            let Some(slot) = self.retry_budget().retry(&policy) else {
                tracing::debug!(backend, "retry budget exhausted: no retry");
                break;
            };
            _retry = Some(slot);
            if pinned.is_none() {
                backend = self.pick_other(backend);
            }
            if let Ok(entry) = self.entry(backend) {
                bump(&entry.counters.retries);
            }
            tracing::debug!(
                backend,
                attempt = attempt + 1,
                "retrying on another connection or backend"
            );
        }
        Err(match failed.len() {
            1 => failed.pop().map(|(_, e)| e).unwrap_or(H2Error::Shutdown),
            _ => H2Error::AllAttemptsFailed(failed),
        })
    }

    /// One attempt: [`send`](H2Pool::send), its response marked with the attempt's number.
    async fn attempt<B>(
        &self,
        backend: usize,
        request: http::Request<B>,
        attempt: u32,
    ) -> Result<http::Response<Body>, H2Error>
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let mut response = self.send(backend, request).await?;
        response.extensions_mut().insert(Attempts(attempt));
        Ok(response)
    }

    /// A backend other than `failed` if the picker finds one in a few tries.
    fn pick_other(&self, failed: usize) -> usize {
        let mut b = self.pick().unwrap_or(failed);
        for _ in 0..self.backends() {
            if b != failed {
                break;
            }
            b = self.pick().unwrap_or(failed);
        }
        b
    }
}

/// A copy of a request head (method, URI, version, headers, extensions) for another attempt.
fn copy_parts(parts: &http::request::Parts) -> http::request::Parts {
    let (mut copy, ()) = http::Request::new(()).into_parts();
    copy.method = parts.method.clone();
    copy.uri = parts.uri.clone();
    copy.version = parts.version;
    copy.headers = parts.headers.clone();
    copy.extensions = parts.extensions.clone();
    copy
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_allows_a_share_of_requests_or_the_floor() {
        let policy = RetryPolicy {
            budget_percent: 20,
            budget_floor: 2,
            ..RetryPolicy::default()
        };
        let budget = RetryBudget::default();
        let requests: Vec<_> = (0..20).map(|_| budget.request()).collect();
        // 20 % of 20 = 4 retries at once.
        let retries: Vec<_> = (0..10).filter_map(|_| budget.retry(&policy)).collect();
        assert_eq!(retries.len(), 4);
        drop(retries);
        drop(requests);
        // With no other request, the floor.
        let _one = budget.request();
        let retries: Vec<_> = (0..10).filter_map(|_| budget.retry(&policy)).collect();
        assert_eq!(retries.len(), 2);
    }

    #[test]
    fn a_replayed_body_yields_its_data_then_its_trailers() {
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        let body = Replayed {
            data: Some(Bytes::from_static(b"abc")),
            trailers: Some(trailers.clone()),
        };
        assert_eq!(body.size_hint().exact(), Some(3));
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let collected = rt.block_on(body.clone().collect()).unwrap();
        assert_eq!(collected.trailers(), Some(&trailers));
        assert_eq!(collected.to_bytes(), "abc");
        assert!(Replayed::default().is_end_stream());
    }
}
