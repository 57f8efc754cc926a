//! Backends beyond cleartext TCP: TLS (ALPN, verification, mutual TLS, handshake timeouts),
//! Unix sockets and host names. Certificates are made at test time with rcgen; the backends
//! are in-process tokio-rustls + h2 servers. Every test ends with no slot in use.
#![cfg(feature = "rustls")]

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::{get, within};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokenpool::h2::{H2Error, H2Pool, Target, TlsConfig, TlsFailure};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

// ---------------------------------------------------------------- certificates

/// A CA that signs leaf certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A leaf for `names` (DNS names or IP addresses), valid now unless `expired`.
    fn leaf(&self, names: &[&str], expired: bool) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let names: Vec<String> = names.iter().map(|s| s.to_string()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params.distinguished_name.push(DnType::CommonName, "leaf");
        if expired {
            params.not_before = rcgen::date_time_ymd(2001, 1, 1);
            params.not_after = rcgen::date_time_ymd(2002, 1, 1);
        }
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf { cert, key }
    }
}

struct Leaf {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Leaf {
    fn chain(&self) -> Vec<CertificateDer<'static>> {
        vec![self.cert.der().clone()]
    }

    fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key.serialize_der()))
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A server configuration: `leaf` as its certificate, `alpn` offered, and client
/// certificates signed by `client_ca` required when given.
fn server_config(leaf: &Leaf, alpn: &[&[u8]], client_ca: Option<&Ca>) -> rustls::ServerConfig {
    let builder = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider(),
            )
            .build()
            .unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder.with_single_cert(leaf.chain(), leaf.key()).unwrap();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config
}

// ---------------------------------------------------------------- backends

/// An h2 backend (TLS, h2c over TCP, or h2c over a Unix socket) that answers every request
/// `200` with its path; killable. Counts completed TLS handshakes and requests.
struct Backend {
    addr: SocketAddr,
    tasks: Arc<Mutex<JoinSet<()>>>,
    handshakes: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
}

impl Backend {
    async fn tls(config: rustls::ServerConfig) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Backend::tls_on(listener, Arc::new(config))
    }

    fn tls_on(listener: TcpListener, config: Arc<rustls::ServerConfig>) -> Backend {
        let backend = Backend {
            addr: listener.local_addr().unwrap(),
            tasks: Arc::default(),
            handshakes: Arc::default(),
            requests: Arc::default(),
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let (tasks, handshakes, requests) = (
            backend.tasks.clone(),
            backend.handshakes.clone(),
            backend.requests.clone(),
        );
        backend.tasks.lock().unwrap().spawn({
            let tasks = tasks.clone();
            async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let (acceptor, handshakes, requests) =
                        (acceptor.clone(), handshakes.clone(), requests.clone());
                    tasks.lock().unwrap().spawn(async move {
                        let Ok(tls) = acceptor.accept(tcp).await else {
                            return;
                        };
                        handshakes.fetch_add(1, SeqCst);
                        serve_h2(tls, requests).await;
                    });
                }
            }
        });
        backend
    }

    async fn h2c_tcp() -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let backend = Backend {
            addr: listener.local_addr().unwrap(),
            tasks: Arc::default(),
            handshakes: Arc::default(),
            requests: Arc::default(),
        };
        let (tasks, requests) = (backend.tasks.clone(), backend.requests.clone());
        backend.tasks.lock().unwrap().spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tasks.lock().unwrap().spawn(serve_h2(tcp, requests.clone()));
            }
        });
        backend
    }

    /// Closes the listener and every connection abruptly.
    fn kill(&self) {
        self.tasks.lock().unwrap().abort_all();
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn serve_h2<T>(io: T, requests: Arc<AtomicUsize>)
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Ok(mut conn) = h2::server::handshake(io).await else {
        return;
    };
    while let Some(Ok((request, mut respond))) = conn.accept().await {
        requests.fetch_add(1, SeqCst);
        let body = Bytes::from(request.uri().path().to_owned());
        let response = http::Response::new(());
        if let Ok(mut send) = respond.send_response(response, false) {
            let _ = send.send_data(body, true);
        }
    }
}

/// The pool trusts `ca` only.
fn tls_with(ca: &Ca) -> TlsConfig {
    TlsConfig::new().ca_pem(ca.pem().as_bytes()).unwrap()
}

async fn assert_ok(pool: &H2Pool, path: &str) {
    let response = within(10, path, pool.request(0, get(path)))
        .await
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(response.status(), 200);
    assert_eq!(response.body(), path.as_bytes());
}

fn assert_no_slot_in_use(pool: &H2Pool) {
    for b in 0..pool.backends() {
        let s = pool.stats(b).unwrap();
        assert_eq!(s.in_use, 0, "backend {b}: {s:?}");
    }
}

/// Sends one request, expects it to fail, checks the slot came back, returns the error.
async fn failing_request(pool: &H2Pool) -> H2Error {
    let err = within(10, "failing request", pool.request(0, get("/x")))
        .await
        .expect_err("the request must fail");
    assert_no_slot_in_use(pool);
    err
}

// ---------------------------------------------------------------- tests

#[tokio::test]
async fn tls_backend_with_alpn_h2_serves_requests_over_one_connection() {
    let ca = Ca::new("ca");
    let leaf = ca.leaf(&["127.0.0.1", "localhost"], false);
    let backend = Backend::tls(server_config(&leaf, &[b"h2"], None)).await;
    let target = format!("https://127.0.0.1:{}", backend.addr.port());
    let pool = H2Pool::builder([target.as_str()])
        .tls(tls_with(&ca))
        .build()
        .unwrap();
    for i in 0..20 {
        assert_ok(&pool, &format!("/r{i}")).await;
    }
    assert_eq!(
        backend.handshakes.load(SeqCst),
        1,
        "one TLS connection reused"
    );
    assert_eq!(backend.requests.load(SeqCst), 20);
    assert_eq!(pool.backend_addr(0).unwrap().to_string(), target);
    assert_no_slot_in_use(&pool);
}

#[tokio::test]
async fn backend_choosing_http11_or_no_alpn_is_a_non_retryable_alpn_error() {
    let ca = Ca::new("ca");
    let leaf = ca.leaf(&["127.0.0.1"], false);
    // Offers only http/1.1: rustls refuses our `h2`-only offer with no_application_protocol.
    // Offers nothing: the handshake completes with no protocol chosen.
    for (alpn, label, refusal) in [
        (&[&b"http/1.1"[..]][..], "http/1.1 only", true),
        (&[][..], "no ALPN", false),
    ] {
        let backend = Backend::tls(server_config(&leaf, alpn, None)).await;
        let pool = H2Pool::builder([format!("https://127.0.0.1:{}", backend.addr.port())])
            .tls(tls_with(&ca))
            .build()
            .unwrap();
        let err = failing_request(&pool).await;
        match &err {
            H2Error::AlpnNotH2 {
                addr,
                negotiated,
                refused,
            } => {
                assert_eq!(addr.port(), Some(backend.addr.port()), "{label}");
                assert_eq!(negotiated, &None, "{label}");
                assert_eq!(*refused, refusal, "{label}");
            }
            other => panic!("{label}: expected AlpnNotH2, got {other:?}"),
        }
        assert!(!err.is_retryable(), "{label}");
        let text = err.to_string();
        assert!(text.contains(&backend.addr.to_string()), "{text}");
        assert!(text.contains("does not speak HTTP/2 over TLS"), "{text}");
        assert_eq!(backend.requests.load(SeqCst), 0);
    }
}

#[tokio::test]
async fn certificate_from_an_unknown_ca_is_rejected_as_unknown_issuer() {
    let (ca, other_ca) = (Ca::new("ca"), Ca::new("other"));
    let backend = Backend::tls(server_config(
        &other_ca.leaf(&["127.0.0.1"], false),
        &[b"h2"],
        None,
    ))
    .await;
    let pool = H2Pool::builder([format!("https://127.0.0.1:{}", backend.addr.port())])
        .tls(tls_with(&ca))
        .build()
        .unwrap();
    let err = failing_request(&pool).await;
    assert!(
        matches!(
            &err,
            H2Error::Tls {
                failure: TlsFailure::UnknownIssuer,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_retryable());
    assert!(err.to_string().contains("unknown issuer"), "{err}");
    assert_eq!(backend.handshakes.load(SeqCst), 0);
}

#[tokio::test]
async fn certificate_for_another_name_is_rejected_naming_both() {
    let ca = Ca::new("ca");
    let backend = Backend::tls(server_config(
        &ca.leaf(&["other.example"], false),
        &[b"h2"],
        None,
    ))
    .await;
    let pool = H2Pool::builder([format!("https://localhost:{}", backend.addr.port())])
        .tls(tls_with(&ca))
        .build()
        .unwrap();
    let err = failing_request(&pool).await;
    match &err {
        H2Error::Tls {
            failure:
                TlsFailure::WrongName {
                    expected,
                    presented,
                },
            ..
        } => {
            assert_eq!(expected.as_deref(), Some("localhost"));
            assert_eq!(presented, &["other.example"]);
        }
        other => panic!("expected WrongName, got {other:?}"),
    }
    assert!(!err.is_retryable());
    // With the name overridden to the certificate's, the same backend is accepted.
    let pool = H2Pool::builder([format!("https://localhost:{}", backend.addr.port())])
        .tls(tls_with(&ca).server_name("other.example").unwrap())
        .build()
        .unwrap();
    assert_ok(&pool, "/renamed").await;
    assert_no_slot_in_use(&pool);
}

#[tokio::test]
async fn expired_certificate_is_rejected_as_expired() {
    let ca = Ca::new("ca");
    let backend = Backend::tls(server_config(
        &ca.leaf(&["127.0.0.1"], true),
        &[b"h2"],
        None,
    ))
    .await;
    let pool = H2Pool::builder([format!("https://127.0.0.1:{}", backend.addr.port())])
        .tls(tls_with(&ca))
        .build()
        .unwrap();
    let err = failing_request(&pool).await;
    assert!(
        matches!(
            &err,
            H2Error::Tls {
                failure: TlsFailure::Expired,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("expired"), "{err}");
}

#[tokio::test]
async fn mutual_tls_backend_refuses_a_pool_without_client_certificate_and_serves_one_with() {
    let (ca, client_ca) = (Ca::new("ca"), Ca::new("client ca"));
    let server_leaf = ca.leaf(&["127.0.0.1"], false);
    let backend = Backend::tls(server_config(&server_leaf, &[b"h2"], Some(&client_ca))).await;
    let target = format!("https://127.0.0.1:{}", backend.addr.port());

    let pool = H2Pool::builder([target.as_str()])
        .tls(tls_with(&ca))
        .build()
        .unwrap();
    let err = failing_request(&pool).await;
    match &err {
        H2Error::Tls {
            failure: TlsFailure::AlertReceived(alert),
            ..
        } => assert_eq!(alert, "certificate_required"),
        other => panic!("expected the certificate_required alert, got {other:?}"),
    }
    assert!(!err.is_retryable());
    assert!(
        err.to_string().contains("requires a client certificate"),
        "{err}"
    );

    // A client certificate from a CA the backend does not trust: rejected too.
    let stranger = Ca::new("stranger").leaf(&["client"], false);
    let pool = H2Pool::builder([target.as_str()])
        .tls(
            tls_with(&ca)
                .client_cert_pem(
                    stranger.cert.pem().as_bytes(),
                    stranger.key.serialize_pem().as_bytes(),
                )
                .unwrap(),
        )
        .build()
        .unwrap();
    let err = failing_request(&pool).await;
    match &err {
        H2Error::Tls {
            failure: TlsFailure::AlertReceived(alert),
            ..
        } => assert_eq!(alert, "unknown_ca"),
        other => panic!("expected the unknown_ca alert, got {other:?}"),
    }

    let client = client_ca.leaf(&["client"], false);
    let pool = H2Pool::builder([target.as_str()])
        .tls(
            tls_with(&ca)
                .client_cert_pem(
                    client.cert.pem().as_bytes(),
                    client.key.serialize_pem().as_bytes(),
                )
                .unwrap(),
        )
        .build()
        .unwrap();
    assert_ok(&pool, "/mtls").await;
    assert_no_slot_in_use(&pool);
}

#[tokio::test]
async fn user_built_client_config_gets_alpn_h2_forced() {
    let ca = Ca::new("ca");
    let backend = Backend::tls(server_config(
        &ca.leaf(&["127.0.0.1"], false),
        &[b"h2"],
        None,
    ))
    .await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    // Wrong on purpose: the pool must replace it with `h2`.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let pool = H2Pool::builder([format!("https://127.0.0.1:{}", backend.addr.port())])
        .tls(TlsConfig::from_client_config(config))
        .build()
        .unwrap();
    assert_ok(&pool, "/custom").await;
    assert_no_slot_in_use(&pool);
}

#[cfg(unix)]
#[tokio::test]
async fn unix_socket_backend_serves_requests() {
    let dir = std::env::temp_dir().join(format!("tokenpool-h2-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("backend.sock");
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path).unwrap();
    let requests = Arc::new(AtomicUsize::new(0));
    let server = tokio::spawn({
        let requests = requests.clone();
        async move {
            let mut conns = JoinSet::new();
            while let Ok((unix, _)) = listener.accept().await {
                conns.spawn(serve_h2(unix, requests.clone()));
            }
        }
    });
    let target = format!("unix:{}", path.display());
    let pool = H2Pool::builder([target.as_str()]).build().unwrap();
    for i in 0..5 {
        assert_ok(&pool, &format!("/unix{i}")).await;
    }
    assert_eq!(requests.load(SeqCst), 5);
    assert_no_slot_in_use(&pool);
    server.abort();
    drop(pool);
    let _ = std::fs::remove_dir_all(&dir);

    // A socket path with nothing there: a retryable connect error naming the path.
    let pool = H2Pool::builder([target.as_str()]).build().unwrap();
    let err = failing_request(&pool).await;
    assert!(matches!(&err, H2Error::Connect { .. }), "{err:?}");
    assert!(err.is_retryable());
    assert!(err.to_string().contains(&target), "{err}");
}

#[tokio::test]
async fn localhost_host_name_is_resolved_for_h2c_and_tls_backends() {
    // The backends listen on 127.0.0.1 only; where `localhost` also resolves to ::1 (first),
    // this also checks that every resolved address is tried.
    let h2c = Backend::h2c_tcp().await;
    let ca = Ca::new("ca");
    let tls = Backend::tls(server_config(
        &ca.leaf(&["localhost"], false),
        &[b"h2"],
        None,
    ))
    .await;
    let pool = H2Pool::builder([
        format!("http://localhost:{}", h2c.addr.port()),
        format!("https://localhost:{}", tls.addr.port()),
    ])
    .tls(tls_with(&ca))
    .build()
    .unwrap();
    for b in 0..2 {
        let response = within(10, "localhost", pool.request(b, get("/name")))
            .await
            .unwrap();
        assert_eq!(response.body().as_ref(), b"/name");
    }
    assert_eq!(
        (h2c.requests.load(SeqCst), tls.requests.load(SeqCst)),
        (1, 1)
    );
    assert_no_slot_in_use(&pool);

    // A name that does not resolve: a retryable connect error naming it.
    let pool = H2Pool::builder(["http://no-such-host.invalid:1"])
        .build()
        .unwrap();
    let err = failing_request(&pool).await;
    assert!(matches!(&err, H2Error::Connect { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-host.invalid"), "{err}");
}

#[tokio::test]
async fn backend_that_never_finishes_the_tls_handshake_times_out_and_frees_the_slot() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    // Accepts TCP and then says nothing (holds the sockets open).
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = listener.accept().await {
            held.push(tcp);
        }
    });
    let ca = Ca::new("ca");
    let pool = H2Pool::builder([format!("https://127.0.0.1:{}", addr.port())])
        .tls(tls_with(&ca))
        .connect_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    for _ in 0..3 {
        let err = failing_request(&pool).await;
        match &err {
            H2Error::ConnectTimeout { timeout, .. } => {
                assert_eq!(*timeout, Duration::from_millis(200))
            }
            other => panic!("expected ConnectTimeout, got {other:?}"),
        }
        assert!(err.is_retryable());
    }
    assert_eq!(pool.stats(0).unwrap().in_use, 0);
    silent.abort();
}

#[tokio::test]
async fn invalid_backend_addresses_fail_the_build_naming_them() {
    for bad in [
        "https://",
        "unix:",
        "tcp://a:1",
        "http://a:99999",
        "localhost",
    ] {
        match H2Pool::builder(["http://127.0.0.1:1", bad]).build() {
            Err(H2Error::InvalidConfig(msg)) => assert!(msg.contains(bad), "{msg}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert!("https://[::1]:443".parse::<Target>().unwrap().is_tls());
}

/// Kills a TLS backend between rounds of 8 clients sending requests through the pool, sends
/// a round while it is down, restarts it on the same port during that round, and checks that
/// every request was answered: a request that fails with a retryable error is sent again (as
/// the proxy example does), and none fails otherwise. (A request in flight at the kill would
/// fail with `ConnectionLost`, which is not retryable since the backend may have processed
/// it; the kill waits for a quiet moment, as a backend restart that drains first would.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_backend_killed_and_restarted_under_load_loses_nothing() {
    let ca = Ca::new("ca");
    let config = Arc::new(server_config(
        &ca.leaf(&["127.0.0.1"], false),
        &[b"h2"],
        None,
    ));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut backend = Some(Backend::tls_on(listener, config.clone()));
    let pool = H2Pool::builder([format!("https://127.0.0.1:{}", addr.port())])
        .tls(tls_with(&ca))
        .max_connections_per_backend(4)
        .connect_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    let answered = Arc::new(AtomicUsize::new(0));
    let retries = Arc::new(AtomicUsize::new(0));
    for round in 0..3 {
        if round == 1 {
            let b = backend.take().unwrap();
            b.kill();
            // The pool's drivers see their connections end and free the slots.
            within(10, "the pool sees the kill", async {
                while pool.stats(0).unwrap().available > 0 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
        }
        let mut clients = JoinSet::new();
        for c in 0..8 {
            let (pool, answered, retries) = (pool.clone(), answered.clone(), retries.clone());
            clients.spawn(async move {
                for i in 0..25 {
                    let path = format!("/r{round}c{c}i{i}");
                    loop {
                        match pool.request(0, get(&path)).await {
                            Ok(r) => {
                                assert_eq!(r.body().as_ref(), path.as_bytes());
                                answered.fetch_add(1, SeqCst);
                                break;
                            }
                            Err(e) if e.is_retryable() => {
                                retries.fetch_add(1, SeqCst);
                                tokio::time::sleep(Duration::from_millis(2)).await;
                            }
                            Err(e) => panic!("{path}: not retryable: {e}"),
                        }
                    }
                }
            });
        }
        if round == 1 {
            // The clients find the backend down; bring it back on the same port.
            within(10, "clients seeing the backend down", async {
                while retries.load(SeqCst) < 8 {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            })
            .await;
            let listener = TcpListener::bind(addr).await.unwrap();
            backend = Some(Backend::tls_on(listener, config.clone()));
        }
        within(30, "a round of clients", async {
            while let Some(r) = clients.join_next().await {
                r.unwrap();
            }
        })
        .await;
    }
    assert_eq!(answered.load(SeqCst), 3 * 8 * 25);
    assert!(retries.load(SeqCst) >= 8, "the kill must have been seen");
    let handshakes = backend.as_ref().unwrap().handshakes.load(SeqCst);
    assert!(handshakes >= 1, "reconnected over TLS after the restart");
    assert_no_slot_in_use(&pool);
}
