//! Request normalisation for [`H2Pool::send`](super::H2Pool::send): what turns an HTTP/1.1
//! request, forwarded as is, into a valid HTTP/2 request head.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme, Uri};
use http::{Method, Version};

use super::{H2Error, Target};

/// Headers that only make sense on one HTTP/1.x connection (RFC 9110 §7.6.1, RFC 9113
/// §8.2.2), besides `Connection` itself and the headers it names.
const CONNECTION_SPECIFIC: [&str; 4] = [
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Rewrites `parts` in place for HTTP/2, exactly as the docs of
/// [`H2Pool::send`](super::H2Pool::send) list:
/// 1. removes `Connection`, every header it names, `Keep-Alive`, `Proxy-Connection`,
///    `Transfer-Encoding` and `Upgrade`;
/// 2. keeps `TE` only as `TE: trailers`, and only if `trailers` was among its values;
/// 3. gives a URI without scheme and authority (origin form, `/path?query`) the scheme
///    `https` for a TLS backend, else `http`, and the authority from `Host`, else `backend`'s address; an empty path becomes
///    `/`. A URI that has an authority is kept as it is (`CONNECT` included);
/// 4. removes `Host` (its value travels as `:authority`);
/// 5. sets the version to HTTP/2, so that h2 encodes the authority as `:authority`.
///
/// # Errors
/// [`H2Error::InvalidRequest`] when an origin-form request's `Host` is not a valid authority.
pub(super) fn normalize(parts: &mut http::request::Parts, backend: &Target) -> Result<(), H2Error> {
    strip_connection_specific(&mut parts.headers);
    let host = parts.headers.remove(header::HOST);
    if parts.uri.authority().is_none() {
        let authority = match host {
            Some(host) => Authority::try_from(host.as_bytes()).map_err(|e| {
                H2Error::InvalidRequest(format!("the Host header is not an authority: {e}"))
            })?,
            None => Authority::try_from(backend.authority()).map_err(|e| {
                H2Error::InvalidRequest(format!("the backend address is not an authority: {e}"))
            })?,
        };
        let path = parts
            .uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        parts.uri = Uri::builder()
            .scheme(scheme(backend))
            .authority(authority)
            .path_and_query(path)
            .build()
            .map_err(|e| H2Error::InvalidRequest(e.to_string()))?;
    } else if parts.uri.scheme().is_none() && parts.method != Method::CONNECT {
        // Authority form on a request other than CONNECT: give it a scheme and a path.
        let mut uri = std::mem::take(&mut parts.uri).into_parts();
        uri.scheme = Some(scheme(backend));
        uri.path_and_query = Some(PathAndQuery::from_static("/"));
        parts.uri = Uri::from_parts(uri).map_err(|e| H2Error::InvalidRequest(e.to_string()))?;
    }
    parts.version = Version::HTTP_2;
    Ok(())
}

/// Whether `name` is one that [`strip_connection_specific`] removes or rewrites.
fn is_connection_specific(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || CONNECTION_SPECIFIC.contains(&name.as_str())
}

/// Steps 1 and 2 of [`normalize`]. One pass over the names first: a request without any of
/// these headers (every h2 request, most HTTP/1.1 ones) costs no lookups, where removing
/// each by name cost six hash lookups and four name parses per request.
fn strip_connection_specific(headers: &mut HeaderMap) {
    if !headers.keys().any(is_connection_specific) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    headers.remove(header::CONNECTION);
    for name in CONNECTION_SPECIFIC {
        headers.remove(name);
    }
    let trailers = headers.get_all(header::TE).iter().any(|v| {
        v.to_str().is_ok_and(|s| {
            s.split(',').any(|t| {
                let token = t.split(';').next().unwrap_or("").trim();
                token.eq_ignore_ascii_case("trailers")
            })
        })
    });
    if headers.remove(header::TE).is_some() && trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
}

/// The `:scheme` of a request given none: `https` to a TLS backend (RFC 9113 §8.3.1: the
/// scheme of the target URI), else `http`.
fn scheme(backend: &Target) -> Scheme {
    if backend.is_tls() {
        Scheme::HTTPS
    } else {
        Scheme::HTTP
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(req: http::request::Builder) -> http::request::Parts {
        req.body(()).unwrap().into_parts().0
    }

    fn backend() -> Target {
        Target::parse("10.0.0.7:8080").unwrap()
    }

    #[test]
    fn connection_specific_headers_and_those_connection_names_are_removed() {
        let mut p = parts(
            http::Request::get("http://a/")
                .header("connection", "keep-alive, X-Hop")
                .header("connection", "close")
                .header("keep-alive", "timeout=5")
                .header("x-hop", "1")
                .header("proxy-connection", "keep-alive")
                .header("transfer-encoding", "chunked")
                .header("upgrade", "websocket")
                .header("te", "gzip, trailers;q=0.5")
                .header("x-end-to-end", "kept"),
        );
        normalize(&mut p, &backend()).unwrap();
        let mut names: Vec<&str> = p.headers.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(names, ["te", "x-end-to-end"]);
        assert_eq!(p.headers["te"], "trailers");
    }

    #[test]
    fn te_without_trailers_is_removed() {
        let mut p = parts(http::Request::get("http://a/").header("te", "gzip, deflate"));
        normalize(&mut p, &backend()).unwrap();
        assert!(p.headers.get("te").is_none());
    }

    #[test]
    fn origin_form_takes_its_authority_from_host_and_host_is_removed() {
        let mut p = parts(
            http::Request::post("/v1/items?x=1")
                .version(Version::HTTP_11)
                .header("host", "example.test:81"),
        );
        normalize(&mut p, &backend()).unwrap();
        assert_eq!(p.uri, "http://example.test:81/v1/items?x=1");
        assert!(p.headers.get("host").is_none());
        assert_eq!(p.version, Version::HTTP_2);
    }

    #[test]
    fn origin_form_without_host_takes_the_backend_address() {
        let mut p = parts(http::Request::get("/"));
        normalize(&mut p, &backend()).unwrap();
        assert_eq!(p.uri, "http://10.0.0.7:8080/");
    }

    #[test]
    fn absolute_form_is_kept_and_host_dropped() {
        let mut p = parts(http::Request::get("https://x.test/p").header("host", "other.test"));
        normalize(&mut p, &backend()).unwrap();
        assert_eq!(p.uri, "https://x.test/p");
        assert!(p.headers.get("host").is_none());
    }

    #[test]
    fn invalid_host_is_an_error_not_a_panic() {
        let mut p = parts(http::Request::get("/").header("host", "bad host"));
        let e = normalize(&mut p, &backend()).unwrap_err();
        assert!(matches!(e, H2Error::InvalidRequest(_)), "{e}");
        assert!(!e.is_retryable());
    }
}
