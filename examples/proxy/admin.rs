//! The proxy's admin endpoint (`--admin ADDR`): `GET /metrics` answers the pool's figures
//! for every backend in the Prometheus text format, read from [`H2Pool::metrics`] without a
//! lock. Plain HTTP/1.1 on its own listener, away from the proxied traffic.

use std::convert::Infallible;
use std::fmt::Write as _;
use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokenpool::h2::H2Pool;

/// Serves `/metrics` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, pool: H2Pool) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            // Out of descriptors or similar: the admin port is not worth a log storm.
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let pool = pool.clone();
        tokio::spawn(async move {
            let service =
                hyper::service::service_fn(move |request: Request<hyper::body::Incoming>| {
                    let pool = pool.clone();
                    async move { Ok::<_, Infallible>(answer(&pool, request.uri().path())) }
                });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}

/// Binds the admin listener.
pub async fn bind(addr: SocketAddr) -> Result<tokio::net::TcpListener, String> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr} for --admin: {e}"))
}

fn answer(pool: &H2Pool, path: &str) -> Response<Full<Bytes>> {
    if path != "/metrics" {
        let mut r = Response::new(Full::new(Bytes::from_static(b"try /metrics\n")));
        *r.status_mut() = StatusCode::NOT_FOUND;
        return r;
    }
    let mut r = Response::new(Full::new(Bytes::from(prometheus_text(pool))));
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// Every backend's figures in the Prometheus text exposition format.
pub fn prometheus_text(pool: &H2Pool) -> String {
    let all: Vec<_> = (0..pool.backends())
        .filter_map(|b| {
            let addr = escape(&pool.backend_addr(b)?.to_string());
            Some((b, addr, pool.metrics(b).ok()?))
        })
        .collect();
    let mut out = String::new();
    let mut family = |name: &str,
                      kind: &str,
                      help: &str,
                      value: &dyn Fn(&tokenpool::h2::BackendMetrics) -> u64| {
        let _ = writeln!(out, "# HELP tokenpool_h2_{name} {help}");
        let _ = writeln!(out, "# TYPE tokenpool_h2_{name} {kind}");
        for (b, addr, m) in &all {
            let _ = writeln!(
                out,
                "tokenpool_h2_{name}{{backend=\"{b}\",addr=\"{addr}\"}} {}",
                value(m)
            );
        }
    };
    family(
        "connections_available",
        "gauge",
        "Connections with room for another stream.",
        &|m| m.available as u64,
    );
    family(
        "connections_in_use",
        "gauge",
        "Slots in use (full connections, connects in progress).",
        &|m| m.in_use as u64,
    );
    family("waiters", "gauge", "Requests waiting for room.", &|m| {
        m.waiters as u64
    });
    family(
        "streams_in_flight",
        "gauge",
        "Streams open through the pool.",
        &|m| m.streams_in_flight as u64,
    );
    family(
        "connects_in_progress",
        "gauge",
        "Connects in progress.",
        &|m| m.connects_in_progress as u64,
    );
    family(
        "ejected",
        "gauge",
        "1 while the backend is ejected.",
        &|m| u64::from(m.ejected),
    );
    family(
        "requests_total",
        "counter",
        "Requests that asked for a stream.",
        &|m| m.requests,
    );
    family("connects_total", "counter", "Connections opened.", &|m| {
        m.connects
    });
    family(
        "connect_failures_total",
        "counter",
        "Connects that failed.",
        &|m| m.connect_failures,
    );
    family(
        "goaways_total",
        "counter",
        "Connections found with GOAWAY received.",
        &|m| m.goaways,
    );
    family(
        "evicted_idle_total",
        "counter",
        "Idle connections closed.",
        &|m| m.evicted_idle,
    );
    family(
        "evicted_lifetime_total",
        "counter",
        "Connections closed past their lifetime.",
        &|m| m.evicted_lifetime,
    );
    family(
        "evicted_keepalive_total",
        "counter",
        "Connections closed for an unanswered PING.",
        &|m| m.evicted_keepalive,
    );
    family(
        "retries_total",
        "counter",
        "Retried attempts sent to this backend.",
        &|m| m.retries,
    );
    family(
        "acquire_timeouts_total",
        "counter",
        "Requests that found no room in time.",
        &|m| m.acquire_timeouts,
    );
    family(
        "ejections_total",
        "counter",
        "Times the backend was ejected.",
        &|m| m.ejections,
    );
    out
}

/// A label value as the text format wants it: backslash, quote and newline escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
