//! A small h2c (HTTP/2 with prior knowledge) backend on `h2::server`, for the `demo` and
//! `backend` examples and the proxy tests (each includes this file with `#[path]`).
//!
//! Every request is answered `200` with `x-backend: NAME`:
//! - `/echo`: the request body, echoed;
//! - anything else: `NAME METHOD PATH\n` (the request body, if any, is read and counted).
//!
//! A running backend can send GOAWAY on all its connections ([`Backend::goaway`]), or be
//! stopped abruptly, listener and connections closed ([`Backend::stop`]), and started again on
//! the same address ([`Backend::restart`]).
#![allow(dead_code)] // each includer uses a different part of this module

use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::{header, HeaderValue, Response, StatusCode};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::{JoinHandle, JoinSet};

/// `SETTINGS_MAX_CONCURRENT_STREAMS` a backend advertises unless told otherwise.
pub const DEFAULT_MAX_STREAMS: u32 = 128;

/// Counters of one backend (kept across restarts).
#[derive(Debug, Default)]
pub struct BackendCounters {
    /// TCP connections accepted.
    pub connections: AtomicU64,
    /// Requests answered (counted as the response head goes out).
    pub requests: AtomicU64,
}

/// A running backend. Dropping it without [`Backend::stop`] leaves it running until the
/// runtime ends.
#[derive(Debug)]
pub struct Backend {
    name: Arc<str>,
    addr: SocketAddr,
    max_streams: u32,
    counters: Arc<BackendCounters>,
    /// Serves TLS with this when set (kept for [`Backend::restart`]).
    tls: Option<Arc<rustls::ServerConfig>>,
    goaway: watch::Sender<u64>,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Backend {
    /// Binds `addr` (port 0 picks a free one) and starts serving.
    pub async fn start(addr: SocketAddr, name: &str) -> io::Result<Backend> {
        Self::start_with(addr, name, DEFAULT_MAX_STREAMS, Arc::default()).await
    }

    /// Like [`Backend::start`], advertising `max_streams` concurrent streams per connection and
    /// counting into `counters`.
    pub async fn start_with(
        addr: SocketAddr,
        name: &str,
        max_streams: u32,
        counters: Arc<BackendCounters>,
    ) -> io::Result<Backend> {
        Self::start_tls(addr, name, max_streams, counters, None).await
    }

    /// Like [`Backend::start_with`], serving HTTP/2 over TLS when `tls` is given (its ALPN
    /// list should offer `h2`).
    pub async fn start_tls(
        addr: SocketAddr,
        name: &str,
        max_streams: u32,
        counters: Arc<BackendCounters>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Backend> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let name: Arc<str> = Arc::from(name);
        let (goaway, goaway_rx) = watch::channel(0u64);
        let (stop, stop_rx) = oneshot::channel();
        let task = tokio::spawn(accept_loop(
            listener,
            tls.clone().map(tokio_rustls::TlsAcceptor::from),
            Arc::clone(&name),
            max_streams,
            Arc::clone(&counters),
            goaway_rx,
            stop_rx,
        ));
        Ok(Backend {
            name,
            addr,
            max_streams,
            counters,
            tls,
            goaway,
            stop,
            task,
        })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Its name (sent as `x-backend`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its counters.
    pub fn counters(&self) -> &Arc<BackendCounters> {
        &self.counters
    }

    /// Requests answered so far.
    pub fn requests(&self) -> u64 {
        // Relaxed: statistics only.
        self.counters.requests.load(Ordering::Relaxed)
    }

    /// Sends GOAWAY (graceful: streams already open finish) on every open connection. The
    /// listener keeps accepting new connections.
    pub fn goaway(&self) {
        self.goaway.send_modify(|epoch| *epoch += 1);
    }

    /// Closes the listener and every connection at once (no GOAWAY, streams cut off), and
    /// waits until all of it is closed.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }

    /// [`Backend::stop`], stays down for `down_for`, then binds the same address again
    /// (retrying for up to 5 s while the port is not free yet).
    pub async fn restart(self, down_for: Duration) -> io::Result<Backend> {
        let (addr, name, max_streams, counters, tls) = (
            self.addr,
            Arc::clone(&self.name),
            self.max_streams,
            Arc::clone(&self.counters),
            self.tls.clone(),
        );
        self.stop().await;
        tokio::time::sleep(down_for).await;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let counters = Arc::clone(&counters);
            match Self::start_tls(addr, &name, max_streams, counters, tls.clone()).await {
                Ok(b) => return Ok(b),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    name: Arc<str>,
    max_streams: u32,
    counters: Arc<BackendCounters>,
    goaway: watch::Receiver<u64>,
    mut stop: oneshot::Receiver<()>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok((sock, _)) => {
                    // Relaxed: statistics only.
                    counters.connections.fetch_add(1, Ordering::Relaxed);
                    let _ = sock.set_nodelay(true);
                    let (name, counters, goaway) =
                        (Arc::clone(&name), Arc::clone(&counters), goaway.clone());
                    match &tls {
                        None => conns.spawn(serve_conn(sock, name, max_streams, counters, goaway)),
                        Some(tls) => {
                            let accept = tls.accept(sock);
                            conns.spawn(async move {
                                if let Ok(sock) = accept.await {
                                    serve_conn(sock, name, max_streams, counters, goaway).await;
                                }
                            })
                        }
                    };
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
    drop(listener);
    // Aborts every connection task and waits until each is dropped (its socket closed).
    conns.shutdown().await;
}

/// Serves one h2c connection on a stream accepted elsewhere (a Unix socket), with no GOAWAY
/// control.
pub async fn serve_stream<T>(
    sock: T,
    name: Arc<str>,
    max_streams: u32,
    counters: Arc<BackendCounters>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (_keep, goaway) = watch::channel(0u64);
    serve_conn(sock, name, max_streams, counters, goaway).await;
}

async fn serve_conn<T>(
    sock: T,
    name: Arc<str>,
    max_streams: u32,
    counters: Arc<BackendCounters>,
    mut goaway: watch::Receiver<u64>,
) where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut conn = match h2::server::Builder::new()
        .max_concurrent_streams(max_streams)
        .handshake::<_, Bytes>(sock)
        .await
    {
        Ok(conn) => conn,
        Err(_) => return,
    };
    // Only GOAWAY requests made after this connection opened apply to it.
    goaway.borrow_and_update();
    let mut going_away = false;
    let mut streams = JoinSet::new();
    loop {
        tokio::select! {
            next = conn.accept() => match next {
                Some(Ok((req, respond))) => {
                    streams.spawn(answer(req, respond, Arc::clone(&name), Arc::clone(&counters)));
                }
                // Closed (after a GOAWAY once the open streams finished) or failed.
                Some(Err(_)) | None => break,
            },
            changed = goaway.changed(), if !going_away => {
                going_away = true;
                if changed.is_ok() {
                    conn.graceful_shutdown();
                }
            }
            Some(_) = streams.join_next(), if !streams.is_empty() => {}
        }
    }
}

async fn answer(
    req: http::Request<h2::RecvStream>,
    mut respond: h2::server::SendResponse<Bytes>,
    name: Arc<str>,
    counters: Arc<BackendCounters>,
) {
    let (parts, mut body) = req.into_parts();
    let echo = parts.uri.path() == "/echo";
    let mut echoed = BytesMut::new();
    while let Some(chunk) = body.data().await {
        let Ok(chunk) = chunk else { return };
        let _ = body.flow_control().release_capacity(chunk.len());
        if echo {
            echoed.extend_from_slice(&chunk);
        }
    }
    let payload = if echo {
        echoed.freeze()
    } else {
        Bytes::from(format!("{name} {} {}\n", parts.method, parts.uri.path()))
    };
    let mut resp = Response::new(());
    *resp.status_mut() = StatusCode::OK;
    if let Ok(v) = HeaderValue::from_str(&name) {
        resp.headers_mut().insert("x-backend", v);
    }
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(payload.len()));
    // Counted before the response goes out, so whoever sees the response sees the count.
    // Relaxed: statistics only; the h2 connection's lock and the socket order it before the
    // response reaches the client.
    counters.requests.fetch_add(1, Ordering::Relaxed);
    // A response to HEAD carries the length of the GET response but no body.
    let send_body = !payload.is_empty() && parts.method != http::Method::HEAD;
    let Ok(mut send) = respond.send_response(resp, !send_body) else {
        return;
    };
    if send_body {
        let _ = send_all(&mut send, payload).await;
    }
}

/// Sends `data` and ends the stream, chunk by chunk as flow control allows.
pub async fn send_all(send: &mut h2::SendStream<Bytes>, mut data: Bytes) -> Result<(), h2::Error> {
    while !data.is_empty() {
        send.reserve_capacity(data.len());
        let cap = match poll_fn(|cx| send.poll_capacity(cx)).await {
            Some(cap) => cap?,
            None => return Err(h2::Error::from(h2::Reason::CANCEL)),
        };
        if cap == 0 {
            continue;
        }
        let chunk = data.split_to(cap.min(data.len()));
        send.send_data(chunk, data.is_empty())?;
    }
    Ok(())
}
