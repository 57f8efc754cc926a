//! A tiny HTTP/2 backend (h2c prior knowledge, or TLS with ALPN `h2`, over TCP or a Unix
//! socket) for trying the proxy by hand or under h2load.
//!
//! ```text
//! cargo run --release --example backend -- --listen 127.0.0.1:9001 [--name backend-1]
//! cargo run --release --example backend -- --listen 127.0.0.1:9443 --tls-cert cert.pem --tls-key key.pem
//! cargo run --release --example backend -- --listen unix:/tmp/backend.sock
//! ```
//!
//! Answers every request `200`: `/echo` echoes the request body, any other path gets
//! `NAME METHOD PATH`. Stops on Ctrl-C.

#[path = "proxy/backend.rs"]
mod backend;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

const USAGE: &str = "\
usage: backend [--listen ADDR] [--name NAME] [--max-streams N] [--tls-cert PEM --tls-key PEM]

A tiny HTTP/2 backend: `/echo` echoes the request body, other paths get `NAME METHOD PATH`.

options:
  --listen ADDR       IP:PORT or unix:/path to listen on (default 127.0.0.1:9001)
  --tls-cert FILE     serve TLS (ALPN h2) with this PEM certificate chain (TCP only)
  --tls-key FILE      ... and this PEM private key
  --name NAME         sent in the body and as `x-backend` (default: backend-PORT)
  --max-streams N     SETTINGS_MAX_CONCURRENT_STREAMS per connection (default 128)
  -h, --help          this text";

fn main() -> ExitCode {
    let mut listen = SocketAddr::from(([127, 0, 0, 1], 9001));
    let mut unix: Option<std::path::PathBuf> = None;
    let (mut tls_cert, mut tls_key) = (None, None);
    let mut name = None;
    let mut max_streams = backend::DEFAULT_MAX_STREAMS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let (flag, mut inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg, None),
        };
        if flag == "-h" || flag == "--help" {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        let value = inline.take().or_else(|| args.next());
        let parsed = match (flag.as_str(), value) {
            (_, None)
                if [
                    "--listen",
                    "--name",
                    "--max-streams",
                    "--tls-cert",
                    "--tls-key",
                ]
                .contains(&flag.as_str()) =>
            {
                Err(format!("{flag} needs a value"))
            }
            ("--listen", Some(v)) if v.starts_with("unix:") => {
                unix = Some(v["unix:".len()..].into());
                Ok(())
            }
            ("--tls-cert", Some(v)) => {
                tls_cert = Some(v);
                Ok(())
            }
            ("--tls-key", Some(v)) => {
                tls_key = Some(v);
                Ok(())
            }
            ("--listen", Some(v)) => v
                .parse()
                .map(|a| listen = a)
                .map_err(|_| format!("--listen needs an IP:PORT address, got '{v}'")),
            ("--name", Some(v)) if !v.is_empty() => {
                name = Some(v);
                Ok(())
            }
            ("--max-streams", Some(v)) => match v.parse::<u32>() {
                Ok(n) if n > 0 => {
                    max_streams = n;
                    Ok(())
                }
                _ => Err(format!("--max-streams needs a positive integer, got '{v}'")),
            },
            _ => Err(format!("unknown argument '{flag}'")),
        };
        if let Err(e) = parsed {
            eprintln!("backend: {e}\n(see --help)");
            return ExitCode::from(2);
        }
    }
    let tls = match (tls_cert, tls_key) {
        (None, None) => None,
        (Some(cert), Some(key)) => match tls_acceptor(&cert, &key) {
            Ok(acceptor) => Some(acceptor),
            Err(e) => {
                eprintln!("backend: {e}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("backend: --tls-cert and --tls-key go together\n(see --help)");
            return ExitCode::from(2);
        }
    };
    if unix.is_some() && tls.is_some() {
        eprintln!("backend: TLS is served on TCP only\n(see --help)");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("backend: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(path) = unix {
        let name = name.unwrap_or_else(|| "backend-unix".to_string());
        return runtime.block_on(serve_unix(path, name, max_streams));
    }
    runtime.block_on(async move {
        let name = name.unwrap_or_else(|| format!("backend-{}", listen.port()));
        let kind = if tls.is_some() { "TLS, ALPN h2" } else { "h2c" };
        let b = match backend::Backend::start_tls(listen, &name, max_streams, Arc::default(), tls)
            .await
        {
            Ok(b) => b,
            Err(e) => {
                eprintln!("backend: cannot listen on {listen}: {e}");
                return ExitCode::FAILURE;
            }
        };
        println!("backend {name}: listening on {} ({kind})", b.addr());
        let _ = tokio::signal::ctrl_c().await;
        println!("backend {name}: {} requests answered", b.requests());
        b.stop().await;
        ExitCode::SUCCESS
    })
}

/// A TLS server configuration offering ALPN `h2` with the PEM certificate chain and key in these files.
fn tls_acceptor(cert: &str, key: &str) -> Result<Arc<rustls::ServerConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("--tls-cert {cert}: {e}"))?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("--tls-key {key}: {e}"))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
        .map_err(|e| format!("TLS: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(Arc::new(config))
}

/// Serves h2c on a Unix socket until Ctrl-C.
async fn serve_unix(path: std::path::PathBuf, name: String, max_streams: u32) -> ExitCode {
    let _ = std::fs::remove_file(&path);
    let listener = match tokio::net::UnixListener::bind(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("backend: cannot listen on unix:{}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    println!("backend {name}: listening on unix:{} (h2c)", path.display());
    let name: Arc<str> = Arc::from(name);
    let counters: Arc<backend::BackendCounters> = Arc::default();
    let mut conns = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            accepted = listener.accept() => {
                if let Ok((sock, _)) = accepted {
                    conns.spawn(backend::serve_stream(
                        sock,
                        Arc::clone(&name),
                        max_streams,
                        Arc::clone(&counters),
                    ));
                }
            }
        }
    }
    conns.shutdown().await;
    let _ = std::fs::remove_file(&path);
    ExitCode::SUCCESS
}
