//! [`Target`]: a backend's address as users write it (`http://host:port`, `https://host:port`,
//! `unix:/path`, or a socket address), parsed once when the pool is built.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use super::H2Error;

/// Where a backend is and how to speak to it.
///
/// | written as | transport | HTTP/2 |
/// |---|---|---|
/// | `127.0.0.1:9001`, `[::1]:9001` (a [`SocketAddr`]) | TCP | h2c (prior knowledge) |
/// | `http://host:port` (port defaults to 80) | TCP | h2c (prior knowledge) |
/// | `https://host:port` (port defaults to 443) | TCP + TLS, ALPN `h2` required | h2 |
/// | `unix:/path/to.sock` | Unix socket | h2c (prior knowledge) |
///
/// A host may be a name (resolved at each connect, so a DNS change reaches the next new
/// connection; IPv4 and IPv6 answers are tried in order), an IPv4 address or a bracketed
/// IPv6 address. A URI may end in `/` but carry no other path, query, or user info.
///
/// A `Target` is a reference-counted handle: cloning it costs one atomic increment. Each
/// connection keeps its own copy, so the per-request clones (a response keeps its backend's
/// address for its errors) touch a count private to that connection.
///
/// ```
/// use tokenpool::h2::Target;
///
/// let t: Target = "https://backend.internal:8443".parse()?;
/// assert!(t.is_tls());
/// assert_eq!(t.host(), Some("backend.internal"));
/// assert_eq!(t.port(), Some(8443));
/// assert_eq!(t.to_string(), "https://backend.internal:8443");
///
/// let t: Target = "unix:/run/app.sock".parse()?;
/// assert_eq!(t.unix_path().map(|p| p.to_str()), Some(Some("/run/app.sock")));
///
/// let t = Target::from(std::net::SocketAddr::from(([127, 0, 0, 1], 9001)));
/// assert_eq!(t.to_string(), "127.0.0.1:9001");
///
/// assert!("ftp://example.com".parse::<Target>().is_err());
/// # Ok::<(), tokenpool::h2::H2Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Target(Arc<Repr>);

#[derive(Clone, PartialEq, Eq, Hash)]
struct Repr {
    kind: Kind,
    /// What `Display` prints: the socket address, or the URI in its normal form.
    text: Box<str>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
enum Kind {
    Tcp { host: Host, port: u16, tls: bool },
    Unix(PathBuf),
}

/// A TCP host: an address, or a name resolved at connect time.
#[derive(Clone, PartialEq, Eq, Hash)]
pub(super) enum Host {
    Ip(IpAddr),
    Name(Box<str>),
}

impl Target {
    /// Parses a backend address; the same as `s.parse()`.
    ///
    /// # Errors
    /// [`H2Error::InvalidConfig`] naming `s` and the forms accepted.
    pub fn parse(s: &str) -> Result<Target, H2Error> {
        parse(s).map_err(|why| {
            H2Error::InvalidConfig(format!(
                "invalid backend address `{s}`: {why} (expected `http://host:port`, \
                 `https://host:port`, `unix:/path` or `ip:port`)"
            ))
        })
    }

    /// A Unix-socket backend (h2c prior knowledge).
    pub fn unix(path: impl Into<PathBuf>) -> Target {
        let path = path.into();
        let text = format!("unix:{}", path.display()).into();
        Target::new(Kind::Unix(path), text)
    }

    fn new(kind: Kind, text: Box<str>) -> Target {
        Target(Arc::new(Repr { kind, text }))
    }

    /// A copy with a count of its own (see the type's docs).
    pub(super) fn detached(&self) -> Target {
        Target(Arc::new((*self.0).clone()))
    }

    /// True for `https://` backends (TLS, ALPN `h2`).
    pub fn is_tls(&self) -> bool {
        matches!(self.0.kind, Kind::Tcp { tls: true, .. })
    }

    /// The host (name or address, without IPv6 brackets) of a TCP backend; `None` for a Unix
    /// socket.
    pub fn host(&self) -> Option<&str> {
        match &self.0.kind {
            Kind::Tcp {
                host: Host::Name(name),
                ..
            } => Some(name),
            Kind::Tcp {
                host: Host::Ip(_), ..
            } => {
                // The text holds the address as written in normal form; cut it out of it so
                // that no second string is kept.
                let text = self.0.text.strip_prefix("https://").unwrap_or(&self.0.text);
                let text = text.strip_prefix("http://").unwrap_or(text);
                let (host, _port) = text.rsplit_once(':')?;
                Some(host.trim_start_matches('[').trim_end_matches(']'))
            }
            Kind::Unix(_) => None,
        }
    }

    /// The port of a TCP backend; `None` for a Unix socket.
    pub fn port(&self) -> Option<u16> {
        match &self.0.kind {
            Kind::Tcp { port, .. } => Some(*port),
            Kind::Unix(_) => None,
        }
    }

    /// The socket address when the host is an IP address (no resolution needed).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match &self.0.kind {
            Kind::Tcp {
                host: Host::Ip(ip),
                port,
                ..
            } => Some(SocketAddr::new(*ip, *port)),
            _ => None,
        }
    }

    /// The socket path of a `unix:` backend.
    pub fn unix_path(&self) -> Option<&Path> {
        match &self.0.kind {
            Kind::Unix(path) => Some(path),
            Kind::Tcp { .. } => None,
        }
    }

    /// The TCP host and port, for the connector.
    pub(super) fn tcp(&self) -> Option<(&Host, u16)> {
        match &self.0.kind {
            Kind::Tcp { host, port, .. } => Some((host, *port)),
            Kind::Unix(_) => None,
        }
    }

    /// The `:authority` an origin-form request without `Host` gets: `host:port` (IPv6 in
    /// brackets), or `localhost` for a Unix socket.
    pub(super) fn authority(&self) -> String {
        match &self.0.kind {
            Kind::Tcp {
                host: Host::Ip(ip),
                port,
                ..
            } => SocketAddr::new(*ip, *port).to_string(),
            Kind::Tcp {
                host: Host::Name(name),
                port,
                ..
            } => format!("{name}:{port}"),
            Kind::Unix(_) => "localhost".to_owned(),
        }
    }
}

/// Parses the forms in the table of [`Target`]; the error says what is wrong, without the
/// input (the caller names it).
fn parse(s: &str) -> Result<Target, &'static str> {
    if let Some(path) = s.strip_prefix("unix:") {
        // `unix:///path` is also seen in the wild; both mean the same path.
        let path = path.strip_prefix("//").unwrap_or(path);
        if path.is_empty() {
            return Err("the socket path is empty");
        }
        return Ok(Target::unix(path));
    }
    let (tls, rest) = if let Some(rest) = s.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = s.strip_prefix("http://") {
        (false, rest)
    } else if s.contains("://") {
        return Err("unsupported scheme");
    } else {
        return s
            .parse::<SocketAddr>()
            .map(Target::from)
            .map_err(|_| "neither a URI nor a socket address");
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains(['/', '?', '#']) {
        return Err("a backend URI has no path or query");
    }
    if authority.contains('@') {
        return Err("a backend URI has no user info");
    }
    let default_port = if tls { 443 } else { 80 };
    let (host, port) = split_host_port(authority, default_port)?;
    let host = match host.parse::<IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) if is_host_name(host) => Host::Name(host.to_ascii_lowercase().into()),
        Err(_) => return Err("the host is not a valid name or IP address"),
    };
    let scheme = if tls { "https" } else { "http" };
    let text = match &host {
        Host::Ip(ip) => format!("{scheme}://{}", SocketAddr::new(*ip, port)),
        Host::Name(name) => format!("{scheme}://{name}:{port}"),
    };
    Ok(Target::new(Kind::Tcp { host, port, tls }, text.into()))
}

/// `host[:port]` or `[v6][:port]`, the host without brackets.
fn split_host_port(authority: &str, default_port: u16) -> Result<(&str, u16), &'static str> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed `[` in the host")?;
        if host.parse::<std::net::Ipv6Addr>().is_err() {
            return Err("the bracketed host is not an IPv6 address");
        }
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':').ok_or("junk after `]`")?)),
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Err("the host is empty");
    }
    let port = match port {
        None => default_port,
        Some(p) => match p.parse::<u16>() {
            Ok(0) | Err(_) => return Err("the port is not in 1..=65535"),
            Ok(p) => p,
        },
    };
    Ok((host, port))
}

/// A DNS name: dot-separated labels of letters, digits, `-` and `_`, at most 253 bytes.
fn is_host_name(host: &str) -> bool {
    host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

impl From<SocketAddr> for Target {
    /// An h2c backend at `addr`; it prints as the plain socket address.
    fn from(addr: SocketAddr) -> Target {
        Target::new(
            Kind::Tcp {
                host: Host::Ip(addr.ip()),
                port: addr.port(),
                tls: false,
            },
            addr.to_string().into(),
        )
    }
}

impl From<&Target> for Target {
    fn from(t: &Target) -> Target {
        t.clone()
    }
}

impl FromStr for Target {
    type Err = H2Error;

    fn from_str(s: &str) -> Result<Target, H2Error> {
        Target::parse(s)
    }
}

impl PartialEq<SocketAddr> for Target {
    /// True for an h2c TCP backend at exactly that address.
    fn eq(&self, addr: &SocketAddr) -> bool {
        !self.is_tls() && self.socket_addr() == Some(*addr)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.text)
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({})", self.0.text)
    }
}

/// What [`H2Pool::builder`](super::H2Pool::builder) accepts as a backend: a [`Target`], a
/// [`SocketAddr`], or a string in one of the forms of [`Target`]. A string that does not
/// parse makes [`build`](super::H2PoolBuilder::build) fail with
/// [`H2Error::InvalidConfig`] naming it.
pub trait IntoTarget {
    /// The target, or why the address is invalid.
    ///
    /// # Errors
    /// [`H2Error::InvalidConfig`] naming the address.
    fn into_target(self) -> Result<Target, H2Error>;
}

impl IntoTarget for Target {
    fn into_target(self) -> Result<Target, H2Error> {
        Ok(self)
    }
}

impl IntoTarget for &Target {
    fn into_target(self) -> Result<Target, H2Error> {
        Ok(self.clone())
    }
}

impl IntoTarget for SocketAddr {
    fn into_target(self) -> Result<Target, H2Error> {
        Ok(Target::from(self))
    }
}

impl IntoTarget for &str {
    fn into_target(self) -> Result<Target, H2Error> {
        Target::parse(self)
    }
}

impl IntoTarget for String {
    fn into_target(self) -> Result<Target, H2Error> {
        Target::parse(&self)
    }
}

impl IntoTarget for &String {
    fn into_target(self) -> Result<Target, H2Error> {
        Target::parse(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uris_parse_into_their_parts() {
        let t = Target::parse("http://LocalHost:9001/").unwrap();
        assert_eq!(
            (t.is_tls(), t.host(), t.port()),
            (false, Some("localhost"), Some(9001))
        );
        assert_eq!(t.to_string(), "http://localhost:9001");
        let t = Target::parse("https://[::1]:8443").unwrap();
        assert_eq!(
            (t.is_tls(), t.host(), t.port()),
            (true, Some("::1"), Some(8443))
        );
        assert_eq!(t.socket_addr(), Some("[::1]:8443".parse().unwrap()));
        assert_eq!(t.authority(), "[::1]:8443");
        let t = Target::parse("https://example.com").unwrap();
        assert_eq!(t.port(), Some(443));
        assert_eq!(Target::parse("http://10.0.0.1").unwrap().port(), Some(80));
        let t = Target::parse("unix:///tmp/a.sock").unwrap();
        assert_eq!(t.unix_path(), Some(Path::new("/tmp/a.sock")));
        assert_eq!(t.authority(), "localhost");
        let addr: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert_eq!(Target::parse("127.0.0.1:9").unwrap(), addr);
        assert_eq!(Target::from(addr).to_string(), "127.0.0.1:9");
        assert_eq!(Target::from(addr).host(), Some("127.0.0.1"));
    }

    #[test]
    fn invalid_addresses_are_config_errors_naming_them() {
        for bad in [
            "",
            "unix:",
            "ftp://a:1",
            "http://",
            "http://a:0",
            "http://a:65536",
            "http://a:x",
            "http://a/path",
            "http://u@a:1",
            "http://[::1",
            "http://[zz]:1",
            "http://a b:1",
            "http://-a:1",
            "localhost:9000",
            "https://a..b:1",
        ] {
            match Target::parse(bad) {
                Err(H2Error::InvalidConfig(msg)) => {
                    assert!(msg.contains(&format!("`{bad}`")), "{msg}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }
}
