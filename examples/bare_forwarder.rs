//! The floor under the proxy example's cost per request: hyper's HTTP/2 server (as the
//! proxy runs it, requests in the connection's task) in front of one raw `h2` client
//! connection per backend, round robin, and nothing else: no pool, no limits, no header
//! work, no retries, no time limits, GET only (a request body is not forwarded). Not a
//! proxy to use: a measuring stick. `scripts/proxy_bench.sh instr` counts its instructions
//! per request beside the proxy's and HAProxy's (docs/throughput.md).
//!
//! ```text
//! cargo run --release --example bare_forwarder -- --listen 127.0.0.1:8082 \
//!     --backend 127.0.0.1:9001 --backend 127.0.0.1:9002
//! ```
//!
//! One `current_thread` runtime (the proxy's `--threads 1`); Ctrl-C or SIGTERM ends it.

// The proxy's connection task; its graceful-shutdown hooks go unused here.
#[allow(dead_code)]
#[path = "proxy/conn_task.rs"]
mod conn_task;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use conn_task::{Inline, Serve};
use http::{Request, Response, StatusCode};
use hyper::body::{Body, Frame, Incoming};
use hyper_util::rt::TokioIo;

fn main() -> Result<(), String> {
    let mut listen = None;
    let mut backends = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or(format!("{flag} needs a value"))?;
        let addr: SocketAddr = value.parse().map_err(|e| format!("{flag} {value}: {e}"))?;
        match flag.as_str() {
            "--listen" => listen = Some(addr),
            "--backend" => backends.push(addr),
            _ => return Err(format!("unknown flag {flag}; see the module docs")),
        }
    }
    let listen = listen.ok_or("--listen ADDR is required")?;
    if backends.is_empty() {
        return Err("at least one --backend ADDR is required".into());
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        let mut senders = Vec::new();
        for b in &backends {
            let tcp = tokio::net::TcpStream::connect(b)
                .await
                .map_err(|e| format!("{b}: {e}"))?;
            let _ = tcp.set_nodelay(true);
            let (send, conn) = h2::client::handshake(tcp)
                .await
                .map_err(|e| format!("{b}: {e}"))?;
            tokio::spawn(conn);
            senders.push(send);
        }
        let senders: Arc<[h2::client::SendRequest<Bytes>]> = senders.into();
        let next = Arc::new(AtomicUsize::new(0));
        let listener = tokio::net::TcpListener::bind(listen)
            .await
            .map_err(|e| format!("{listen}: {e}"))?;
        println!("bare_forwarder: listening on {listen}");
        let stop = async {
            #[cfg(unix)]
            {
                use tokio::signal::unix::{signal, SignalKind};
                let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            #[cfg(not(unix))]
            let _ = tokio::signal::ctrl_c().await;
            Ok::<_, String>(())
        };
        let mut stop = std::pin::pin!(stop);
        loop {
            let (tcp, _) = tokio::select! {
                r = &mut stop => return r,
                a = listener.accept() => a.map_err(|e| e.to_string())?,
            };
            let _ = tcp.set_nodelay(true);
            let (senders, next) = (Arc::clone(&senders), Arc::clone(&next));
            let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                // Relaxed: a round-robin counter.
                let i = next.fetch_add(1, Ordering::Relaxed) % senders.len();
                forward(senders[i].clone(), request)
            });
            let exec = Inline::new();
            let conn = hyper::server::conn::http2::Builder::new(exec.clone())
                .serve_connection(TokioIo::new(tcp), service);
            tokio::spawn(Serve::new(conn, &exec));
        }
    })
}

/// Sends the request's head to the backend and its response back: the two codecs' work.
async fn forward(
    send: h2::client::SendRequest<Bytes>,
    request: Request<Incoming>,
) -> Result<Response<RecvBody>, Infallible> {
    let (parts, _) = request.into_parts();
    let answer = async {
        let mut send = send.ready().await?;
        let (response, _) = send.send_request(Request::from_parts(parts, ()), true)?;
        let (head, body) = response.await?.into_parts();
        Ok::<_, h2::Error>(Response::from_parts(head, RecvBody(Some(body))))
    };
    Ok(answer.await.unwrap_or_else(|_| {
        let mut r = Response::new(RecvBody(None));
        *r.status_mut() = StatusCode::BAD_GATEWAY;
        r
    }))
}

/// A backend's response body as an `http_body::Body`.
struct RecvBody(Option<h2::RecvStream>);

impl Body for RecvBody {
    type Data = Bytes;
    type Error = h2::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, h2::Error>>> {
        let Some(body) = self.0.as_mut() else {
            return Poll::Ready(None);
        };
        match body.poll_data(cx) {
            Poll::Ready(Some(Ok(data))) => {
                let _ = body.flow_control().release_capacity(data.len());
                Poll::Ready(Some(Ok(Frame::data(data))))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => {
                self.0 = None;
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.0.as_ref().is_none_or(h2::RecvStream::is_end_stream)
    }
}
