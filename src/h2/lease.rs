//! [`H2Lease`]: exclusive use of one pooled connection.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;

use super::admission::{give_back, send_on};
use super::conn::{Conn, Shared, StreamTicket};
use super::{H2Error, ResponseFuture, Target};
use crate::{Pool, Token};

/// Exclusive use of one pooled connection, for callers that want to choose which streams
/// share it (for example to keep a client's requests on one backend connection, or to take
/// a misbehaving connection out of service). Made by [`H2Pool::lease`](super::H2Pool::lease).
///
/// While leased, no other request opens a stream on the connection. Dropping the lease gives
/// the connection back (kept if it still works, closed otherwise); streams opened through it
/// run on independently.
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
/// #                 respond.send_response(http::Response::new(()), true)?;
/// #             }
/// #             Ok::<_, h2::Error>(())
/// #         });
/// #     }
/// # });
/// let pool = H2Pool::builder([addr]).build()?;
/// let mut lease = pool.lease(0).await?;
/// let id = lease.conn_id();
/// // Two streams on the same connection.
/// let (a, _) = lease.send_request(http::Request::get("http://b/a").body(())?, true)?;
/// let (b, _) = lease.send_request(http::Request::get("http://b/b").body(())?, true)?;
/// drop(lease); // back to the pool
/// assert_eq!(a.await?.status(), 200);
/// assert_eq!(b.await?.status(), 200);
/// assert_eq!(pool.lease(0).await?.conn_id(), id, "the same connection again");
/// # Ok(()) }
/// ```
#[must_use = "a lease holds its connection until dropped"]
pub struct H2Lease {
    pool: Arc<Pool<Conn>>,
    /// Always `Some` until drop.
    token: Option<Token>,
    shared: Arc<Shared>,
    /// False once the connection failed under us: closed at drop.
    usable: bool,
}

impl H2Lease {
    /// Holds the slot of `token`, a connection of `pool`, with no stream counted for it.
    pub(super) fn new(pool: Arc<Pool<Conn>>, token: Token, shared: Arc<Shared>) -> Self {
        H2Lease {
            pool,
            token: Some(token),
            shared,
            usable: true,
        }
    }

    /// Opens a stream on the leased connection; see
    /// [`H2Pool::send_request`](super::H2Pool::send_request).
    ///
    /// This is the low-level path: the request head goes out as given (no normalisation), the
    /// request body is the caller's to send with flow control, and the response body is an
    /// h2 stream whose capacity the caller releases.
    ///
    /// # Errors
    /// [`H2Error::ConnectionFull`] when the connection already carries as many streams as it
    /// may (wait for one to end, or drop the lease and use another connection);
    /// [`H2Error::ConnectionLost`] if the connection has failed or received GOAWAY (the
    /// request was not sent; the connection is closed when the lease is dropped);
    /// [`H2Error::Protocol`] if h2 rejected the request.
    pub fn send_request(
        &mut self,
        request: http::Request<()>,
        end_of_stream: bool,
    ) -> Result<(ResponseFuture, ::h2::SendStream<Bytes>), H2Error> {
        let token = self.token.as_mut().expect(LEASED);
        let Some(conn) = self.pool.get_mut(token) else {
            unreachable!("a leased token is live until the lease is dropped")
        };
        let ticket =
            StreamTicket::count_if_room(&self.shared).map_err(|limit| H2Error::ConnectionFull {
                addr: self.shared.addr.clone(),
                limit,
            })?;
        let sent = send_on(conn, ticket, request, end_of_stream);
        if let Err((_, false)) = &sent {
            self.usable = false;
        }
        sent.map_err(|(e, _)| e)
    }

    /// How many more streams the connection may carry now.
    pub fn streams_available(&self) -> usize {
        let s = self.shared.streams();
        s.limit.saturating_sub(s.in_flight)
    }

    /// The leased connection's id (stable for its whole life; see [`ConnId`](crate::ConnId)).
    pub fn conn_id(&self) -> crate::ConnId {
        self.token.as_ref().expect(LEASED).conn_id()
    }

    /// The backend index.
    pub fn backend(&self) -> usize {
        self.pool.backend()
    }

    /// The backend's address.
    pub fn backend_addr(&self) -> &Target {
        &self.shared.addr
    }

    /// Takes the connection out of the pool: no new stream goes to it; its running streams
    /// finish, then it closes.
    pub fn drain(mut self) {
        self.usable = false;
    }
}

/// The token is taken only in `drop`.
const LEASED: &str = "a lease holds its token until dropped";

impl Drop for H2Lease {
    fn drop(&mut self) {
        if let Some(token) = self.token.take() {
            give_back(&self.pool, token, &self.shared, self.usable);
        }
    }
}

impl fmt::Debug for H2Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("H2Lease")
            .field("backend", &self.pool.backend())
            .field("addr", &self.shared.addr)
            .field("token", &self.token)
            .finish()
    }
}
