//! The connector seam ([`Connect`]): what opens a backend's byte stream, and the built-in
//! one ([`DefaultConnector`]: TCP with `TCP_NODELAY`, host names resolved per connect, Unix
//! sockets).

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

use super::target::Host;
use super::Target;

/// Opens the byte stream to a backend; the pool runs TLS (for `https://` targets), the
/// HTTP/2 handshake, the first PING and the connection's driver task on top of it, all
/// within the connect timeout.
///
/// The built-in [`DefaultConnector`] covers TCP and Unix sockets. Write your own to set
/// socket options, send a PROXY protocol header, connect through a tunnel, or pick a source
/// address; give it to [`H2PoolBuilder::connector`](super::H2PoolBuilder::connector).
///
/// This is a trait of the pool's own rather than a `tower_service::Service<Target>`: a
/// connector needs neither readiness (`poll_ready`) nor `&mut self`, and an `async fn`
/// returning `io::Result` is what a connector body naturally is. The pool calls it from
/// many tasks at once through a shared reference. Its stream type stays concrete: each
/// connection's driver task is compiled for it, so no frame goes through a `dyn` call.
///
/// ```
/// use std::io;
/// use tokenpool::h2::{Connect, DefaultConnector, H2Pool, Target};
/// use tokio::io::AsyncWriteExt;
///
/// /// Sends a PROXY protocol v1 header before HTTP/2 starts.
/// struct ProxyProtocol;
///
/// impl Connect for ProxyProtocol {
///     type Io = tokio::net::TcpStream;
///
///     async fn connect(&self, target: &Target) -> io::Result<Self::Io> {
///         let addr = target.socket_addr().ok_or(io::ErrorKind::Unsupported)?;
///         let mut tcp = tokio::net::TcpStream::connect(addr).await?;
///         tcp.set_nodelay(true)?;
///         let me = tcp.local_addr()?;
///         let header =
///             format!("PROXY TCP4 {} {} {} {}\r\n", me.ip(), addr.ip(), me.port(), addr.port());
///         tcp.write_all(header.as_bytes()).await?;
///         Ok(tcp)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), tokenpool::h2::H2Error> {
/// let pool = H2Pool::builder(["http://127.0.0.1:9001"]).connector(ProxyProtocol).build()?;
/// # let _ = DefaultConnector;
/// # Ok(()) }
/// ```
pub trait Connect: Send + Sync + 'static {
    /// The byte stream.
    type Io: AsyncRead + AsyncWrite + Send + Unpin + 'static;

    /// Opens a stream to `target`. Errors become [`H2Error::Connect`](super::H2Error::Connect)
    /// (retryable); time is bounded by the pool's connect timeout.
    fn connect(&self, target: &Target) -> impl Future<Output = io::Result<Self::Io>> + Send;
}

/// The built-in connector: TCP with `TCP_NODELAY` for `http://`, `https://` and socket
/// address targets (a host name is resolved at each connect with the system resolver, and
/// its addresses, IPv4 and IPv6, are tried in the order returned until one connects), a Unix
/// stream socket for `unix:` targets.
#[derive(Debug, Clone, Copy, Default)]
pub struct DefaultConnector;

impl Connect for DefaultConnector {
    type Io = DefaultStream;

    async fn connect(&self, target: &Target) -> io::Result<DefaultStream> {
        let Some((host, port)) = target.tcp() else {
            return connect_unix(target).await;
        };
        let tcp = match host {
            Host::Ip(ip) => connect_tcp(SocketAddr::new(*ip, port)).await?,
            Host::Name(name) => {
                let mut last = None;
                let mut found = None;
                for addr in tokio::net::lookup_host((&**name, port)).await? {
                    match connect_tcp(addr).await {
                        Ok(tcp) => {
                            found = Some(tcp);
                            break;
                        }
                        Err(e) => last = Some(e),
                    }
                }
                match (found, last) {
                    (Some(tcp), _) => tcp,
                    (None, Some(e)) => return Err(e),
                    (None, None) => {
                        return Err(io::Error::new(
                            io::ErrorKind::NotFound,
                            format!("`{name}` resolved to no address"),
                        ))
                    }
                }
            }
        };
        Ok(DefaultStream(Stream::Tcp(tcp)))
    }
}

async fn connect_tcp(addr: SocketAddr) -> io::Result<TcpStream> {
    let tcp = TcpStream::connect(addr).await?;
    tcp.set_nodelay(true)?;
    Ok(tcp)
}

#[cfg(unix)]
async fn connect_unix(target: &Target) -> io::Result<DefaultStream> {
    let path = target
        .unix_path()
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let unix = tokio::net::UnixStream::connect(path).await?;
    Ok(DefaultStream(Stream::Unix(unix)))
}

#[cfg(not(unix))]
async fn connect_unix(_target: &Target) -> io::Result<DefaultStream> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "Unix sockets are not supported on this platform",
    ))
}

/// The stream [`DefaultConnector`] opens: a TCP or a Unix socket. Reads and writes go to the
/// socket through one `match` (no allocation, no `dyn` call).
pub struct DefaultStream(Stream);

enum Stream {
    Tcp(TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl DefaultStream {
    /// The TCP stream, unless this is a Unix socket.
    pub fn as_tcp(&self) -> Option<&TcpStream> {
        match &self.0 {
            Stream::Tcp(tcp) => Some(tcp),
            #[cfg(unix)]
            Stream::Unix(_) => None,
        }
    }
}

impl fmt::Debug for DefaultStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Stream::Tcp(s) => s.fmt(f),
            #[cfg(unix)]
            Stream::Unix(s) => s.fmt(f),
        }
    }
}

/// Forwards one `AsyncRead`/`AsyncWrite` method to whichever socket is inside.
macro_rules! forward {
    ($self:ident, $s:ident => $call:expr) => {
        match &mut $self.get_mut().0 {
            Stream::Tcp($s) => $call,
            #[cfg(unix)]
            Stream::Unix($s) => $call,
        }
    };
}

impl AsyncRead for DefaultStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        forward!(self, s => Pin::new(s).poll_read(cx, buf))
    }
}

impl AsyncWrite for DefaultStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        forward!(self, s => Pin::new(s).poll_write(cx, buf))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        forward!(self, s => Pin::new(s).poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match &self.0 {
            Stream::Tcp(s) => s.is_write_vectored(),
            #[cfg(unix)]
            Stream::Unix(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, s => Pin::new(s).poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        forward!(self, s => Pin::new(s).poll_shutdown(cx))
    }
}
