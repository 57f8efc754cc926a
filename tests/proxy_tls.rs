//! The proxy example's service (`examples/proxy/server.rs`) in front of the example backend
//! (`examples/proxy/backend.rs`) serving HTTP/2 over TLS and h2c on a Unix socket, driven by
//! curl: what `cargo run --example proxy -- --backend https://… --ca-file … --backend unix:…`
//! does. Needs the `curl` binary.
#![cfg(feature = "rustls")]

#[path = "../examples/proxy/backend.rs"]
mod backend;
#[path = "../examples/proxy/server.rs"]
mod server;

use std::net::SocketAddr;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tokenpool::h2::{H2Pool, TlsConfig};

const LOOPBACK: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// A CA's PEM and a TLS server configuration (ALPN `h2`) with a leaf it signed for 127.0.0.1.
fn tls_backend_identity() -> (String, Arc<rustls::ServerConfig>) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )
        .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec()];
    (ca.pem(), Arc::new(config))
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .expect("run curl (apt-get install curl)");
    assert!(out.status.success(), "curl {args:?}: {out:?}");
    String::from_utf8(out.stdout)
        .unwrap()
        .trim_end()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_through_the_proxy_reaches_a_tls_backend_and_a_unix_socket_backend() {
    let (ca_pem, acceptor) = tls_backend_identity();
    let tls = backend::Backend::start_tls(LOOPBACK, "tls-b", 128, Arc::default(), Some(acceptor))
        .await
        .unwrap();

    let dir = std::env::temp_dir().join(format!("tokenpool-proxy-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let sock = dir.join("b.sock");
    let _ = std::fs::remove_file(&sock);
    let listener = tokio::net::UnixListener::bind(&sock).unwrap();
    let unix = tokio::spawn(async move {
        let counters: Arc<backend::BackendCounters> = Arc::default();
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((s, _)) = listener.accept().await {
            conns.spawn(backend::serve_stream(
                s,
                Arc::from("unix-b"),
                128,
                Arc::clone(&counters),
            ));
        }
    });

    let pool = H2Pool::builder([
        format!("https://127.0.0.1:{}", tls.addr().port()),
        format!("unix:{}", sock.display()),
    ])
    .tls(TlsConfig::new().ca_pem(ca_pem.as_bytes()).unwrap())
    .connect_timeout(Duration::from_secs(2))
    .build()
    .unwrap();
    let listener = tokio::net::TcpListener::bind(LOOPBACK).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let proxy = server::Proxy::new(pool.clone());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server::serve(listener, Arc::clone(&proxy), async {
        let _ = stopped.await;
    }));

    let bodies = tokio::task::spawn_blocking(move || {
        let mut bodies = Vec::new();
        for i in 0..4 {
            let url = format!("http://{addr}/r{i}");
            bodies.push(curl(&["--http2-prior-knowledge", &url]));
        }
        bodies.push(curl(&[&format!("http://{addr}/h1")]));
        bodies
    })
    .await
    .unwrap();
    // Round robin: backend 0 (TLS), 1 (Unix), 0, 1, 0.
    assert_eq!(
        bodies,
        [
            "tls-b GET /r0",
            "unix-b GET /r1",
            "tls-b GET /r2",
            "unix-b GET /r3",
            "tls-b GET /h1"
        ]
    );
    assert_eq!(tls.requests(), 3);

    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(10), serving).await;
    for b in 0..2 {
        assert_eq!(pool.stats(b).unwrap().in_use, 0);
    }
    unix.abort();
    tls.stop().await;
    let _ = std::fs::remove_dir_all(&dir);
}
