//! The `Origin` check: which web pages may open the WebSocket and SSE routes.
//!
//! A browser attaches its cookies and its network position to a WebSocket
//! opened by *any* page, and the WebSocket handshake is not subject to CORS,
//! so without this check a page on another site could open `/ws` in a
//! visitor's name (cross-site WebSocket hijacking). Browsers always send
//! `Origin` on a WebSocket handshake and on a cross-origin `EventSource`, and a
//! page cannot forge it; servers and command-line clients send none. So:
//!
//! - no `Origin` header: allowed (not a browser, nobody's ambient credentials);
//! - `Origin` naming the request's own host (compared with `Host`): allowed;
//! - `Origin` listed with `--allowed-origin` (or the list is `*`): allowed;
//! - anything else, `null` included: `403 origin_not_allowed`, before any upgrade.

use axum::Json;
use axum::http::uri::{Authority, Scheme};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tracing::debug;

use crate::error::ErrorBody;

/// The stable code of a refused origin, in the JSON body of the 403.
pub const ORIGIN_NOT_ALLOWED: &str = "origin_not_allowed";

/// An `--allowed-origin` value that is not an origin.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not an origin: write scheme://host[:port] (e.g. https://app.example.com) or *")]
pub struct OriginError(String);

/// The origins, besides a request's own host, whose pages may connect.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowedOrigins {
    /// `*`: every origin.
    any: bool,
    /// Exact origins, normalized (lowercase, default port dropped).
    exact: Vec<Origin>,
}

/// A parsed origin: scheme, host and port (the scheme's default when absent).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

impl Origin {
    /// Parses `scheme://host[:port]`, nothing more (no path, no user info).
    fn parse(text: &str) -> Option<Origin> {
        let uri: Uri = text.parse().ok()?;
        let scheme = uri.scheme()?;
        let authority = uri.authority()?;
        let bare = uri.path().is_empty() || uri.path() == "/";
        if !bare || uri.query().is_some() || authority.as_str().contains('@') {
            return None;
        }
        // `Uri` keeps a trailing `/` out of the authority; an origin has none.
        if text.ends_with('/') {
            return None;
        }
        Some(Origin {
            scheme: scheme.as_str().to_ascii_lowercase(),
            host: authority.host().to_ascii_lowercase(),
            port: authority
                .port_u16()
                .or_else(|| default_port(scheme.as_str())),
        })
    }

    /// Whether this origin is the host a request was sent to (its `Host` header).
    fn is_host(&self, host: &str) -> bool {
        let Ok(authority) = host.parse::<Authority>() else {
            return false;
        };
        let port = authority.port_u16().or_else(|| default_port(&self.scheme));
        authority.host().eq_ignore_ascii_case(&self.host) && port == self.port
    }
}

fn default_port(scheme: &str) -> Option<u16> {
    if scheme.eq_ignore_ascii_case(Scheme::HTTP.as_str()) || scheme.eq_ignore_ascii_case("ws") {
        Some(80)
    } else if scheme.eq_ignore_ascii_case(Scheme::HTTPS.as_str())
        || scheme.eq_ignore_ascii_case("wss")
    {
        Some(443)
    } else {
        None
    }
}

impl AllowedOrigins {
    /// Every origin may connect: `--allowed-origin '*'`.
    pub fn any() -> Self {
        AllowedOrigins {
            any: true,
            exact: Vec::new(),
        }
    }

    /// The list the flags give: exact origins, or `*` for all.
    pub fn parse<'a>(origins: impl IntoIterator<Item = &'a str>) -> Result<Self, OriginError> {
        let mut allowed = AllowedOrigins::default();
        for text in origins {
            let text = text.trim();
            if text == "*" {
                allowed.any = true;
                continue;
            }
            let origin = Origin::parse(text).ok_or_else(|| OriginError(text.to_owned()))?;
            allowed.exact.push(origin);
        }
        Ok(allowed)
    }

    /// Whether a request with these headers may go on.
    pub fn check(&self, headers: &HeaderMap) -> Result<(), OriginRefused> {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return Ok(());
        };
        if self.any {
            return Ok(());
        }
        let text = origin.to_str().unwrap_or_default();
        if let Some(parsed) = Origin::parse(text) {
            let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
            if host.is_some_and(|host| parsed.is_host(host)) || self.exact.contains(&parsed) {
                return Ok(());
            }
        }
        debug!(origin = %text, "refusing a cross-origin request");
        Err(OriginRefused)
    }
}

/// A request from a page whose origin may not connect; answered 403 `origin_not_allowed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginRefused;

impl IntoResponse for OriginRefused {
    fn into_response(self) -> Response {
        // The refused origin is not echoed: it is whatever the page's browser sent.
        let body = ErrorBody {
            error: ORIGIN_NOT_ALLOWED,
            message: "this origin may not connect: the page must be served from this host \
                      or from an origin listed with --allowed-origin"
                .to_owned(),
        };
        (StatusCode::FORBIDDEN, Json(body)).into_response()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(origin: Option<&str>, host: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, host.parse().unwrap());
        if let Some(origin) = origin {
            headers.insert(header::ORIGIN, origin.parse().unwrap());
        }
        headers
    }

    fn allowed(list: &AllowedOrigins, origin: Option<&str>, host: &str) -> bool {
        list.check(&headers(origin, host)).is_ok()
    }

    #[test]
    fn the_own_host_and_no_origin_are_allowed_and_others_refused() {
        let none = AllowedOrigins::default();
        assert!(allowed(&none, None, "herald.example:8080"));
        assert!(allowed(
            &none,
            Some("http://herald.example:8080"),
            "herald.example:8080"
        ));
        assert!(allowed(
            &none,
            Some("https://Herald.Example"),
            "herald.example"
        ));
        assert!(allowed(
            &none,
            Some("https://herald.example:443"),
            "herald.example"
        ));
        assert!(!allowed(
            &none,
            Some("http://herald.example:9090"),
            "herald.example:8080"
        ));
        assert!(!allowed(
            &none,
            Some("https://evil.example"),
            "herald.example"
        ));
        assert!(!allowed(&none, Some("null"), "herald.example"));
        assert!(!allowed(
            &none,
            Some("http://herald.example.evil.example"),
            "herald.example"
        ));
    }

    #[test]
    fn listed_origins_and_the_wildcard_are_allowed() {
        let list =
            AllowedOrigins::parse(["https://app.example.com", "http://localhost:5173"]).unwrap();
        assert!(allowed(&list, Some("https://app.example.com"), "gw:8080"));
        assert!(allowed(&list, Some("http://localhost:5173"), "gw:8080"));
        // Scheme and port are part of an origin.
        assert!(!allowed(&list, Some("http://app.example.com"), "gw:8080"));
        assert!(!allowed(&list, Some("http://localhost:5174"), "gw:8080"));
        let any = AllowedOrigins::parse(["*"]).unwrap();
        assert!(allowed(&any, Some("https://evil.example"), "gw:8080"));
        assert!(allowed(&any, Some("null"), "gw:8080"));
    }

    #[test]
    fn what_is_not_an_origin_is_refused_as_a_flag() {
        for bad in [
            "app.example.com",
            "https://app.example.com/",
            "https://app.example.com/path",
            "https://user@app.example.com",
            "",
        ] {
            assert!(AllowedOrigins::parse([bad]).is_err(), "{bad:?}");
        }
    }
}
