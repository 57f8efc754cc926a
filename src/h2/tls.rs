//! TLS to `https://` backends ([`TlsConfig`]), through rustls with the `ring` provider: ALPN
//! `h2` offered and required, SNI, server verification, client certificates.

use std::fmt;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_rustls::client::TlsStream;

use super::target::Host;
use super::{H2Error, Target, TlsFailure};

/// The ALPN protocol id of HTTP/2 over TLS (RFC 9113 §3.2).
const ALPN_H2: &[u8] = b"h2";

/// How the pool speaks TLS to its `https://` backends; given to
/// [`H2PoolBuilder::tls`](super::H2PoolBuilder::tls). Without it, `https://` backends are
/// verified against the platform's trust store with no client certificate.
///
/// The pool always offers ALPN `h2` and only `h2`, and refuses a backend that does not pick
/// it ([`H2Error::AlpnNotH2`]). The rustls `ring` provider is used, with rustls's safe
/// defaults (TLS 1.3 and 1.2).
///
/// ```no_run
/// use tokenpool::h2::{H2Pool, TlsConfig};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tokenpool::h2::H2Error> {
/// let tls = TlsConfig::new()
///     .ca_file("ca.pem")? // trust this CA instead of the platform's roots
///     .client_cert_files("client.pem", "client.key")?; // mutual TLS
/// let pool = H2Pool::builder(["https://10.0.0.7:9443", "https://backend.internal"])
///     .tls(tls)
///     .build()?;
/// # Ok(()) }
/// ```
pub struct TlsConfig {
    source: Source,
    server_name: Option<ServerName<'static>>,
}

enum Source {
    /// Built by the pool: roots (`None`: the platform's), optional client certificate.
    Parts {
        roots: Option<Vec<CertificateDer<'static>>>,
        client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
    },
    /// The user's own configuration (its ALPN list is replaced by `h2`).
    Custom(Arc<ClientConfig>),
}

impl TlsConfig {
    /// Verification against the platform's trust store (read by `rustls-native-certs` when
    /// the pool is built), SNI from each backend's host, no client certificate.
    pub fn new() -> TlsConfig {
        TlsConfig {
            source: Source::Parts {
                roots: None,
                client: None,
            },
            server_name: None,
        }
    }

    /// Escape hatch: a `rustls::ClientConfig` built by the caller (its own verifier, key log,
    /// session cache, provider, …). Its ALPN list is replaced by `["h2"]`, since the pool
    /// speaks only HTTP/2; everything else is used as given.
    pub fn from_client_config(config: impl Into<Arc<ClientConfig>>) -> TlsConfig {
        TlsConfig {
            source: Source::Custom(config.into()),
            server_name: None,
        }
    }

    /// Trusts the CA certificates in this PEM bundle, instead of the platform's roots (calls
    /// add up).
    ///
    /// # Errors
    /// [`H2Error::InvalidConfig`] when the bundle holds no certificate or a malformed one, or
    /// after [`from_client_config`](TlsConfig::from_client_config).
    pub fn ca_pem(self, pem: &[u8]) -> Result<TlsConfig, H2Error> {
        let certs = certs_from_pem(pem, "the CA bundle")?;
        self.add_roots(certs)
    }

    /// [`ca_pem`](TlsConfig::ca_pem) with the bundle read from `path`.
    ///
    /// # Errors
    /// As `ca_pem`, and when the file cannot be read; the message names the file.
    pub fn ca_file(self, path: impl AsRef<Path>) -> Result<TlsConfig, H2Error> {
        let path = path.as_ref();
        let certs = certs_from_pem(&read(path)?, &format!("CA file `{}`", path.display()))?;
        self.add_roots(certs)
    }

    /// A client certificate chain and its private key (PKCS#8, PKCS#1 or SEC1), in PEM, for
    /// backends that require mutual TLS.
    ///
    /// # Errors
    /// [`H2Error::InvalidConfig`] when either holds nothing usable, or after
    /// [`from_client_config`](TlsConfig::from_client_config).
    pub fn client_cert_pem(self, cert_pem: &[u8], key_pem: &[u8]) -> Result<TlsConfig, H2Error> {
        let chain = certs_from_pem(cert_pem, "the client certificate")?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
            H2Error::InvalidConfig(format!("the client key holds no usable private key: {e}"))
        })?;
        self.set_client(chain, key)
    }

    /// [`client_cert_pem`](TlsConfig::client_cert_pem) with both read from files.
    ///
    /// # Errors
    /// As `client_cert_pem`, and when a file cannot be read; the message names the file.
    pub fn client_cert_files(
        self,
        cert: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Result<TlsConfig, H2Error> {
        let (cert, key) = (cert.as_ref(), key.as_ref());
        let chain = certs_from_pem(
            &read(cert)?,
            &format!("client certificate file `{}`", cert.display()),
        )?;
        let key = PrivateKeyDer::from_pem_slice(&read(key)?).map_err(|e| {
            H2Error::InvalidConfig(format!(
                "client key file `{}` holds no usable private key: {e}",
                key.display()
            ))
        })?;
        self.set_client(chain, key)
    }

    /// The name sent as SNI and checked against every backend's certificate, instead of each
    /// backend's host (for backends reached by address whose certificates carry a name).
    ///
    /// # Errors
    /// [`H2Error::InvalidConfig`] when `name` is neither a DNS name nor an IP address.
    pub fn server_name(mut self, name: &str) -> Result<TlsConfig, H2Error> {
        let name = ServerName::try_from(name.to_owned()).map_err(|e| {
            H2Error::InvalidConfig(format!("invalid TLS server name `{name}`: {e}"))
        })?;
        self.server_name = Some(name);
        Ok(self)
    }

    fn add_roots(mut self, certs: Vec<CertificateDer<'static>>) -> Result<TlsConfig, H2Error> {
        match &mut self.source {
            Source::Parts { roots, .. } => roots.get_or_insert_with(Vec::new).extend(certs),
            Source::Custom(_) => return Err(custom_conflict("a CA bundle")),
        }
        Ok(self)
    }

    fn set_client(
        mut self,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
    ) -> Result<TlsConfig, H2Error> {
        match &mut self.source {
            Source::Parts { client, .. } => *client = Some((chain, key)),
            Source::Custom(_) => return Err(custom_conflict("a client certificate")),
        }
        Ok(self)
    }

    /// The rustls configuration and connector the pool uses (done once, at `build`).
    pub(super) fn connector(&self) -> Result<Tls, H2Error> {
        let mut config = match &self.source {
            Source::Custom(config) => (**config).clone(),
            Source::Parts { roots, client } => {
                let roots = match roots {
                    Some(certs) => root_store(certs.iter().cloned(), "the CA bundle")?,
                    None => platform_roots()?,
                };
                let provider = Arc::new(rustls::crypto::ring::default_provider());
                let builder = ClientConfig::builder_with_provider(provider)
                    .with_safe_default_protocol_versions()
                    .map_err(|e| H2Error::InvalidConfig(format!("TLS: {e}")))?
                    .with_root_certificates(roots);
                match client {
                    None => builder.with_no_client_auth(),
                    Some((chain, key)) => builder
                        .with_client_auth_cert(chain.clone(), key.clone_key())
                        .map_err(|e| {
                            H2Error::InvalidConfig(format!("the client certificate: {e}"))
                        })?,
                }
            }
        };
        config.alpn_protocols = vec![ALPN_H2.to_vec()];
        Ok(Tls {
            connector: tokio_rustls::TlsConnector::from(Arc::new(config)),
            server_name: self.server_name.clone(),
        })
    }
}

impl Default for TlsConfig {
    fn default() -> TlsConfig {
        TlsConfig::new()
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("TlsConfig");
        match &self.source {
            Source::Parts { roots, client } => d
                .field(
                    "roots",
                    &roots.as_ref().map_or("platform".into(), |r| {
                        format!("{} CA certificates", r.len())
                    }),
                )
                .field("client_cert", &client.is_some()),
            Source::Custom(_) => d.field("client_config", &"custom"),
        };
        d.field("server_name", &self.server_name).finish()
    }
}

fn custom_conflict(what: &str) -> H2Error {
    H2Error::InvalidConfig(format!(
        "{what} cannot be added to a TlsConfig made from a rustls ClientConfig; \
         put it in that ClientConfig"
    ))
}

fn read(path: &Path) -> Result<Vec<u8>, H2Error> {
    std::fs::read(path)
        .map_err(|e| H2Error::InvalidConfig(format!("cannot read `{}`: {e}", path.display())))
}

fn certs_from_pem(pem: &[u8], what: &str) -> Result<Vec<CertificateDer<'static>>, H2Error> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| H2Error::InvalidConfig(format!("{what}: {e}")))?;
    if certs.is_empty() {
        return Err(H2Error::InvalidConfig(format!(
            "{what} holds no PEM certificate"
        )));
    }
    Ok(certs)
}

fn root_store(
    certs: impl IntoIterator<Item = CertificateDer<'static>>,
    what: &str,
) -> Result<RootCertStore, H2Error> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| H2Error::InvalidConfig(format!("{what}: {e}")))?;
    }
    Ok(roots)
}

/// The platform's trust store. Certificates it cannot parse are skipped (as curl does); an
/// empty result is an error, since nothing could then be verified.
fn platform_roots() -> Result<RootCertStore, H2Error> {
    let found = rustls_native_certs::load_native_certs();
    let mut roots = RootCertStore::empty();
    let (_added, _skipped) = roots.add_parsable_certificates(found.certs);
    if roots.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(H2Error::InvalidConfig(format!(
            "no platform root certificates ({why}); give a CA bundle with TlsConfig::ca_file"
        )));
    }
    Ok(roots)
}

/// The TLS step of the pool's connect, made once from a [`TlsConfig`].
pub(super) struct Tls {
    connector: tokio_rustls::TlsConnector,
    server_name: Option<ServerName<'static>>,
}

impl Tls {
    /// Runs the TLS handshake over `io` and checks that ALPN chose `h2`.
    ///
    /// # Errors
    /// [`H2Error::Tls`] for a failed handshake (the reason typed), [`H2Error::AlpnNotH2`],
    /// [`H2Error::Connect`] when the connection broke (EOF, reset) during it.
    pub(super) async fn handshake<T>(&self, io: T, target: &Target) -> Result<TlsIo<T>, H2Error>
    where
        T: AsyncRead + AsyncWrite + Unpin,
    {
        let name = match &self.server_name {
            Some(name) => name.clone(),
            None => server_name(target)?,
        };
        let stream = self
            .connector
            .connect(name, io)
            .await
            .map_err(|e| io_error(target, e))?;
        match stream.get_ref().1.alpn_protocol() {
            Some(ALPN_H2) => Ok(TlsIo {
                stream,
                seen: Arc::default(),
            }),
            other => Err(H2Error::AlpnNotH2 {
                addr: target.clone(),
                negotiated: other.map(|p| String::from_utf8_lossy(p).into_owned()),
                refused: false,
            }),
        }
    }
}

/// The client TLS stream the pool runs HTTP/2 on: the tokio-rustls stream, plus a note of
/// the first rustls error it reported.
///
/// With TLS 1.3 the client's handshake is done before the server has checked the client's
/// certificate, so a backend that requires one answers our first HTTP/2 bytes with a
/// `certificate_required` alert. h2 hands that on (to the driver) as an I/O error that keeps
/// only its kind and text, and tells the PING a made-up "broken pipe"; the note keeps the
/// typed rustls error for the connect step. Reads and writes go straight through; only an
/// error pays for the check.
pub(super) struct TlsIo<T> {
    stream: TlsStream<T>,
    /// The first rustls error this stream reported, kept typed for the connect step (h2
    /// keeps only an I/O error's kind and text).
    seen: Arc<OnceLock<rustls::Error>>,
}

impl<T> TlsIo<T> {
    /// Where the first rustls error will be.
    pub(super) fn seen(&self) -> Arc<OnceLock<rustls::Error>> {
        Arc::clone(&self.seen)
    }

    /// Notes a rustls error in `seen`.
    fn note<R>(&self, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if let Poll::Ready(Err(e)) = &r {
            if let Some(tls) = rustls_of(e) {
                let _ = self.seen.set(tls.clone());
            }
        }
        r
    }
}

/// The rustls error tokio-rustls wrapped in `e`, if any.
fn rustls_of(e: &io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_read(cx, buf);
        this.note(r)
    }
}

impl<T: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.note(r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.note(r)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.stream).poll_flush(cx);
        this.note(r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// SNI and the name the certificate must carry: the backend's host.
fn server_name(target: &Target) -> Result<ServerName<'static>, H2Error> {
    match target.tcp() {
        Some((Host::Ip(ip), _)) => Ok(ServerName::IpAddress((*ip).into())),
        Some((Host::Name(name), _)) => ServerName::try_from(name.to_string())
            .map_err(|e| H2Error::InvalidConfig(format!("`{target}`: {e}"))),
        None => Err(H2Error::InvalidConfig(format!(
            "`{target}`: TLS needs a host name"
        ))),
    }
}

/// An I/O error on a TLS connection to `target`: a rustls error (which tokio-rustls wraps in
/// `io::Error`) is a TLS failure, typed by what rustls reported; any other is a broken
/// connection.
fn io_error(target: &Target, source: io::Error) -> H2Error {
    match rustls_of(&source).cloned() {
        Some(tls) => rustls_error(target, &tls, source),
        None => H2Error::Connect {
            addr: target.clone(),
            source,
        },
    }
}

/// A TLS failure with `target`: `tls` is what rustls reported, `source` the I/O error that
/// carried it.
pub(super) fn rustls_error(target: &Target, tls: &rustls::Error, source: io::Error) -> H2Error {
    let failure = match tls {
        rustls::Error::AlertReceived(rustls::AlertDescription::NoApplicationProtocol)
        | rustls::Error::NoApplicationProtocol => {
            return H2Error::AlpnNotH2 {
                addr: target.clone(),
                negotiated: None,
                refused: true,
            };
        }
        rustls::Error::InvalidCertificate(cert) => certificate_failure(cert),
        rustls::Error::AlertReceived(alert) => TlsFailure::AlertReceived(alert_name(*alert)),
        other => TlsFailure::Other(other.to_string()),
    };
    H2Error::Tls {
        addr: target.clone(),
        failure,
        source,
    }
}

fn certificate_failure(cert: &rustls::CertificateError) -> TlsFailure {
    use rustls::CertificateError as C;
    match cert {
        C::UnknownIssuer => TlsFailure::UnknownIssuer,
        C::NotValidForName => TlsFailure::WrongName {
            expected: None,
            presented: Vec::new(),
        },
        C::NotValidForNameContext {
            expected,
            presented,
        } => TlsFailure::WrongName {
            expected: Some(server_name_text(expected)),
            presented: presented.iter().map(|n| name_text(n)).collect(),
        },
        C::Expired | C::ExpiredContext { .. } => TlsFailure::Expired,
        C::NotValidYet | C::NotValidYetContext { .. } => TlsFailure::NotYetValid,
        C::Revoked => TlsFailure::Revoked,
        other => {
            TlsFailure::BadCertificate(rustls::Error::InvalidCertificate(other.clone()).to_string())
        }
    }
}

fn server_name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_owned(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

/// A name rustls reports as presented in a certificate, without the wrapper its `Debug`
/// adds (`DnsName("a.example")` becomes `a.example`).
fn name_text(presented: &str) -> String {
    for wrapper in ["DnsName(\"", "IpAddress(\""] {
        if let Some(inner) = presented
            .strip_prefix(wrapper)
            .and_then(|s| s.strip_suffix("\")"))
        {
            return inner.to_owned();
        }
    }
    presented.to_owned()
}

/// The RFC 8446 name of an alert (`certificate_required`), by its code.
fn alert_name(alert: rustls::AlertDescription) -> String {
    let code = u8::from(alert);
    let name = match code {
        0 => "close_notify",
        10 => "unexpected_message",
        20 => "bad_record_mac",
        21 => "decryption_failed",
        22 => "record_overflow",
        30 => "decompression_failure",
        40 => "handshake_failure",
        41 => "no_certificate",
        42 => "bad_certificate",
        43 => "unsupported_certificate",
        44 => "certificate_revoked",
        45 => "certificate_expired",
        46 => "certificate_unknown",
        47 => "illegal_parameter",
        48 => "unknown_ca",
        49 => "access_denied",
        50 => "decode_error",
        51 => "decrypt_error",
        60 => "export_restriction",
        70 => "protocol_version",
        71 => "insufficient_security",
        80 => "internal_error",
        86 => "inappropriate_fallback",
        90 => "user_canceled",
        100 => "no_renegotiation",
        109 => "missing_extension",
        110 => "unsupported_extension",
        111 => "certificate_unobtainable",
        112 => "unrecognized_name",
        113 => "bad_certificate_status_response",
        114 => "bad_certificate_hash_value",
        115 => "unknown_psk_identity",
        116 => "certificate_required",
        120 => "no_application_protocol",
        121 => "ech_required",
        _ => return format!("alert {code}"),
    };
    name.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_names_are_the_rfc_spelling() {
        assert_eq!(
            alert_name(rustls::AlertDescription::CertificateRequired),
            "certificate_required"
        );
        assert_eq!(
            alert_name(rustls::AlertDescription::BadCertificate),
            "bad_certificate"
        );
        assert_eq!(
            alert_name(rustls::AlertDescription::UnknownCA),
            "unknown_ca"
        );
        assert_eq!(name_text("DnsName(\"a.example\")"), "a.example");
        assert_eq!(name_text("10.0.0.1"), "10.0.0.1");
    }

    #[test]
    fn pem_without_certificates_is_a_config_error() {
        let err = TlsConfig::new().ca_pem(b"not a pem").unwrap_err();
        assert!(err.to_string().contains("no PEM certificate"), "{err}");
        let err = TlsConfig::new().ca_file("/nonexistent/ca.pem").unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }
}
