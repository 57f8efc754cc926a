//! The pool as a [`tower_service::Service`], and the [`Backend`] request extension.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::Body as HttpBody;

use super::send::BoxError;
use super::{Body, H2Error, H2Pool};

/// A request extension that pins a request sent through the pool's
/// [`Service`](tower_service::Service) to one backend (by index). Without it, the pool picks
/// the backend round robin.
///
/// ```
/// use tokenpool::h2::Backend;
///
/// let mut request = http::Request::get("/").body(()).unwrap();
/// request.extensions_mut().insert(Backend(1));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Backend(pub usize);

/// A request extension that pins a request sent through [`H2Pool::dispatch`] or the pool's
/// `Service` to the backend added under this key (see
/// [`H2Pool::add_backend`](super::H2Pool::add_backend); backends given to the builder have
/// their address as written as key). Looked up without a lock; an unknown key fails with
/// [`H2Error::UnknownBackendKey`]. [`Backend`] wins if both are present.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BackendKey(pub String);

/// The future of the pool's [`Service::call`](tower_service::Service::call): the response of
/// [`H2Pool::send`].
#[must_use = "futures do nothing unless polled"]
pub struct ServiceFuture {
    inner: Pin<Box<dyn Future<Output = Result<http::Response<Body>, H2Error>> + Send>>,
}

impl Future for ServiceFuture {
    type Output = Result<http::Response<Body>, H2Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ServiceFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceFuture").finish_non_exhaustive()
    }
}

/// The pool as a [`Service`](tower_service::Service): each call is [`H2Pool::send`] to the
/// backend named by the request's [`Backend`] extension, or else the next backend round
/// robin.
///
/// [`poll_ready`](tower_service::Service::poll_ready) is always ready: the pool has no
/// queue of its own to fill. Back-pressure comes from the requests themselves: a request
/// that finds every connection of its backend full waits up to the acquire timeout for room
/// and then fails with [`H2Error::AcquireTimeout`]. To bound the requests in flight, put a
/// `ConcurrencyLimit` in front. A request's time is bounded by the pool's
/// [`request_timeout`](super::H2PoolBuilder::request_timeout) and
/// [`response_header_timeout`](super::H2PoolBuilder::response_header_timeout), or its
/// [`Timeouts`](super::Timeouts) extension, as for [`H2Pool::send`]: unlike a tower
/// `Timeout`, these also bound the response body and say whether a retry is safe. Cloning the
/// pool is cheap (an `Arc`), as tower's middleware expects.
///
/// ```
/// # use bytes::Bytes;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
/// # let addr = listener.local_addr()?;
/// # tokio::spawn(async move {
/// #     while let Ok((tcp, _)) = listener.accept().await {
/// #         tokio::spawn(async move {
/// #             let mut conn = h2::server::handshake(tcp).await?;
/// #             while let Some((_req, mut respond)) = conn.accept().await.transpose()? {
/// #                 respond.send_response(http::Response::new(()), true)?;
/// #             }
/// #             Ok::<_, h2::Error>(())
/// #         });
/// #     }
/// # });
/// use tokenpool::h2::{Backend, H2Pool};
/// use tower::ServiceExt;
///
/// let pool = H2Pool::builder([addr]).build()?;
/// let mut request = http::Request::get("/").body(http_body_util::Empty::<Bytes>::new())?;
/// request.extensions_mut().insert(Backend(0));
/// let response = pool.oneshot(request).await?;
/// assert_eq!(response.status(), 200);
/// # Ok(()) }
/// ```
impl<B> tower_service::Service<http::Request<B>> for H2Pool
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = H2Error;
    type Future = ServiceFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), H2Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> ServiceFuture {
        let pool = self.clone();
        ServiceFuture {
            inner: Box::pin(async move { pool.dispatch(request).await }),
        }
    }
}
