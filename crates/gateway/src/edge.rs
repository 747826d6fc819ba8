//! One origin for the browser: the built web app and the content API, next to the WebSocket.
//!
//! The web app (`web/`) calls same-origin URLs — `/api/content`,
//! `/ws/notifications`, `/healthz` — so whatever serves the page must also
//! answer those. Putting both on the gateway means no CORS, no extra reverse
//! proxy on a laptop, and the same URLs behind a load balancer:
//!
//! - [`content_proxy`] forwards `/api/content` and `/api/content/{*rest}` to
//!   the content service (any method, with the query, body, status and
//!   headers, less the hop-by-hop ones). An unreachable upstream answers
//!   `502 {"error":"upstream_unavailable",…}`, a slow one
//!   `504 {"error":"upstream_timeout",…}`, never a hung request.
//! - [`web_app`] serves the built app (`web/dist`) at `/`, with the content
//!   type of each file, a single-page-app fallback to `index.html`, and, while
//!   the app is not built, a small page that says how to build it.
//!
//! Both are plain [`Router`]s to merge with [`Gateway::router`](crate::Gateway::router).
//! [`web_app`] is a fallback (it answers every path no other route takes), so
//! merge it last and only once.
//!
//! # What the proxy does not pass on
//!
//! The proxy stands between the internet and a service that trusts it, so it
//! forwards only what it can vouch for:
//!
//! - **Paths** with a dot segment (`..`, `.`, in any percent-encoding such as
//!   `%2e%2E`), an encoded slash (`%2f`) or a backslash are refused with
//!   `400 invalid_path` before anything is sent: URL parsers resolve such
//!   segments, and an upstream base `http://host/prefix` must not be escaped to
//!   reach other paths of that host.
//! - **Credentials**: the client's `Authorization` never goes upstream. With JWT
//!   auth configured, a write (any method but `GET`, `HEAD`, `OPTIONS`) needs a
//!   token whose `roles` claim holds [`CONTENT_WRITE_ROLE`], or one of the
//!   gateway's API keys; the gateway then presents its own key
//!   ([`ProxyConfig::upstream_api_key`]) to the content service. The client's
//!   `Cookie` is dropped unless [`ProxyConfig::forward_cookies`].
//! - **Forwarding headers** (`X-Forwarded-For`, `X-Forwarded-Host`,
//!   `X-Forwarded-Proto`, `Forwarded`, `X-Real-IP`) written by the client are
//!   dropped unless the TCP peer is a trusted proxy ([`crate::peer`]);
//!   `X-Forwarded-For` is set to the real peer (appended to the trusted
//!   proxy's list).
//! - **Error details**: a 502 or 504 says only that the content service is
//!   unavailable or slow; its address and the OS error go to the log.
//!
//! Bodies are buffered, not streamed: content requests and pages are small
//! (a content item is at most about 61 KB), and a buffered body lets the
//! proxy apply one size limit and one timeout to the whole exchange.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use percent_encoding::percent_decode_str;
use subtle::ConstantTimeEq;
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};
use tracing::{debug, warn};

use crate::auth::{AuthError, Authenticator, token_from};
use crate::error::{ApiError, ErrorBody};
use crate::peer::{TrustedProxies, X_FORWARDED_FOR};

/// The JWT role (an entry of the token's `roles` claim) that may write content through the proxy.
pub const CONTENT_WRITE_ROLE: &str = "content:write";

/// Settings of the content proxy; [`ProxyConfig::default`] suits a LAN upstream
/// and leaves writing open (no JWT key, as in the tutorial and the demo).
#[derive(Clone)]
pub struct ProxyConfig {
    /// The longest a whole forwarded exchange (connect, request, response body) may take; then 504.
    pub timeout: Duration,
    /// The longest connecting to the upstream may take; then 502.
    pub connect_timeout: Duration,
    /// The largest request body forwarded; larger ones get 413 without reaching the upstream.
    pub max_request_bytes: usize,
    /// The largest response body accepted from the upstream; larger ones become a 502.
    pub max_response_bytes: usize,
    /// Who may write through the proxy.
    pub writers: Writers,
    /// Sent upstream as `Authorization: Bearer KEY` (the content service's `--api-key`),
    /// in place of whatever `Authorization` the client sent, which is never forwarded.
    pub upstream_api_key: Option<String>,
    /// Peers whose forwarding headers are believed and extended rather than replaced.
    pub trusted_proxies: TrustedProxies,
    /// Forward the client's `Cookie` header (off: a session cookie for this origin is
    /// not the content service's business unless it is made so on purpose).
    pub forward_cookies: bool,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            // The content service's own limit (herald_content::MAX_REQUEST_BYTES).
            max_request_bytes: 64 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
            writers: Writers::default(),
            upstream_api_key: None,
            trusted_proxies: TrustedProxies::default(),
            forward_cookies: false,
        }
    }
}

impl std::fmt::Debug for ProxyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a key: Debug output ends up in logs.
        f.debug_struct("ProxyConfig")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("writers", &self.writers)
            .field("upstream_api_key", &self.upstream_api_key.is_some())
            .field("trusted_proxies", &self.trusted_proxies)
            .field("forward_cookies", &self.forward_cookies)
            .finish()
    }
}

/// Who may write content through the proxy.
///
/// Writing is open while `auth` verifies no tokens (no JWT key configured):
/// then users cannot be told apart, and the tutorial and the demo post
/// content from an anonymous page. Once a key is configured, a write needs a
/// token with [`CONTENT_WRITE_ROLE`] or one of `api_keys`.
#[derive(Clone, Default)]
pub struct Writers {
    /// Checks user tokens: the gateway's own authenticator.
    pub auth: Arc<Authenticator>,
    /// Keys of services and scripts that may write too (the gateway's `--api-key`).
    pub api_keys: Vec<String>,
}

impl std::fmt::Debug for Writers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writers")
            .field("auth", &self.auth)
            .field("api_keys", &self.api_keys.len())
            .finish()
    }
}

impl Writers {
    /// Whether anyone may write (no JWT key configured).
    pub fn is_open(&self) -> bool {
        !self.auth.is_configured()
    }

    /// Whether the request may write: always when [open](Self::is_open), else with a
    /// gateway API key or a token holding [`CONTENT_WRITE_ROLE`] in `Authorization: Bearer`.
    async fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        if self.is_open() {
            return Ok(());
        }
        let Some(token) = token_from(headers, None) else {
            return Err(ApiError::Unauthorized(format!(
                "writing content needs Authorization: Bearer with a token holding the {CONTENT_WRITE_ROLE:?} role, or an API key"
            )));
        };
        let is_key = self.api_keys.iter().fold(false, |found, key| {
            found | bool::from(key.as_bytes().ct_eq(token.as_bytes()))
        });
        if is_key {
            return Ok(());
        }
        match self.auth.verify(Some(token)).await {
            Ok(identity) if identity.roles.iter().any(|r| r == CONTENT_WRITE_ROLE) => Ok(()),
            Ok(_) => Err(ApiError::Forbidden(format!(
                "writing content needs the {CONTENT_WRITE_ROLE:?} role in the token's \"roles\" claim"
            ))),
            Err(AuthError::Expired) => Err(ApiError::TokenExpired),
            Err(e) => Err(ApiError::Unauthorized(e.to_string())),
        }
    }
}

/// Why an edge router could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EdgeError {
    /// The upstream is not an absolute `http://host[:port]` URL.
    #[error("content upstream {url:?} {problem} (write e.g. http://127.0.0.1:8090)")]
    BadUpstream {
        /// What was given.
        url: String,
        /// What is wrong with it, as a phrase.
        problem: &'static str,
    },
    /// The key for the upstream cannot be sent as a header value.
    #[error("the content API key must be printable ASCII without spaces")]
    BadApiKey,
    /// The HTTP client could not be built.
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}

/// Routes forwarding `/api/content` and `/api/content/{*rest}` to the content service at `upstream`.
///
/// `upstream` is the service's base URL, e.g. `http://127.0.0.1:8090`; a path
/// in it (`http://host/prefix`) is put in front of every forwarded path.
/// Uses [`ProxyConfig::default`].
pub fn content_proxy(upstream: &str) -> Result<Router, EdgeError> {
    content_proxy_with(upstream, ProxyConfig::default())
}

/// [`content_proxy`] with explicit timeouts, limits and trust.
pub fn content_proxy_with(upstream: &str, config: ProxyConfig) -> Result<Router, EdgeError> {
    let base = parse_upstream(upstream)?;
    let upstream_authorization = match &config.upstream_api_key {
        Some(key) => {
            let mut value = HeaderValue::from_str(&format!("Bearer {}", key.trim()))
                .map_err(|_| EdgeError::BadApiKey)?;
            value.set_sensitive(true);
            Some(value)
        }
        None => None,
    };
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(config.timeout)
        // The browser must see the upstream's redirects, not their targets.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let proxy = Arc::new(Proxy {
        base,
        upstream_authorization,
        client,
        config,
    });
    Ok(Router::new()
        .route("/api/content", any(forward))
        .route("/api/content/{*rest}", any(forward))
        .with_state(proxy))
}

/// Checks `upstream` and returns it without a trailing `/`, ready to have a path appended.
fn parse_upstream(upstream: &str) -> Result<String, EdgeError> {
    let bad = |problem| EdgeError::BadUpstream {
        url: upstream.to_owned(),
        problem,
    };
    let url = reqwest::Url::parse(upstream).map_err(|_| bad("is not a URL"))?;
    if url.scheme() != "http" {
        return Err(bad("must start with http://"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(bad("has no host"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    if check_path(url.path()).is_err() {
        return Err(bad(
            "must not have dot segments, encoded slashes or backslashes",
        ));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// What the proxy's handler shares.
struct Proxy {
    /// The upstream's base URL, without a trailing `/`.
    base: String,
    /// `Bearer <upstream_api_key>`, marked sensitive, if a key is configured.
    upstream_authorization: Option<HeaderValue>,
    /// One pooled client for every forwarded request.
    client: reqwest::Client,
    /// Timeouts, limits and trust.
    config: ProxyConfig,
}

/// Headers that describe one hop of a connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Headers that say who the client is and how it connected: believed only from a trusted proxy.
const FORWARDING: [&str; 5] = [
    X_FORWARDED_FOR,
    "x-forwarded-host",
    "x-forwarded-proto",
    "forwarded",
    "x-real-ip",
];

/// `headers` less the hop-by-hop ones, `Upgrade`, and those the `Connection` header names.
fn end_to_end(headers: &HeaderMap) -> HeaderMap {
    let mut out = headers.clone();
    for value in headers.get_all(header::CONNECTION) {
        if let Ok(names) = value.to_str() {
            for name in names.split(',') {
                if let Ok(name) = HeaderName::try_from(name.trim()) {
                    out.remove(name);
                }
            }
        }
    }
    for name in HOP_BY_HOP {
        out.remove(name);
    }
    out.remove(header::UPGRADE);
    out
}

/// Why a path is not forwarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BadPath;

/// Refuses a path that a URL parser or the upstream could resolve to somewhere else:
/// a `.` or `..` segment in any percent-encoding, an encoded `/`, or a `\` (raw or encoded).
fn check_path(path: &str) -> Result<(), BadPath> {
    for segment in path.split('/') {
        let decoded: Vec<u8> = percent_decode_str(segment).collect();
        if decoded == b"." || decoded == b".." || decoded.iter().any(|b| matches!(b, b'/' | b'\\'))
        {
            return Err(BadPath);
        }
    }
    Ok(())
}

/// Whether a request only reads (and so needs no write permission).
fn is_read(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Forwards one request to the upstream and its answer back.
async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    if check_path(parts.uri.path()).is_err() {
        debug!(path = parts.uri.path(), "content proxy refused a path");
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the path must not contain dot segments, encoded slashes or backslashes".to_owned(),
        );
    }
    if !is_read(&parts.method)
        && let Err(e) = proxy.config.writers.authorize(&parts.headers).await
    {
        return e.into_response();
    }
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let Some(url) = upstream_url(&proxy.base, path_and_query) else {
        debug!(
            path_and_query,
            "content proxy refused a path outside the upstream base"
        );
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_path",
            "the path does not stay below /api/content".to_owned(),
        );
    };
    let body = match axum::body::to_bytes(body, proxy.config.max_request_bytes).await {
        Ok(body) => body,
        Err(e) => {
            let too_large = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            return if too_large {
                error(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!(
                        "the request body is larger than {} bytes",
                        proxy.config.max_request_bytes
                    ),
                )
            } else {
                debug!(error = %e, "content proxy could not read a request body");
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "the request body could not be read".to_owned(),
                )
            };
        }
    };

    let peer = parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr);
    let headers = upstream_headers(&proxy, &parts.headers, peer);
    let sent = proxy
        .client
        .request(parts.method.clone(), url.clone())
        .headers(headers)
        .body(body)
        .send()
        .await;
    let mut upstream = match sent {
        Ok(response) => response,
        Err(e) => return upstream_failed(&proxy, &parts.method, url.as_str(), &e),
    };

    let status = upstream.status();
    let headers = end_to_end(upstream.headers());
    let mut collected = Vec::new();
    loop {
        match upstream.chunk().await {
            Ok(Some(chunk)) => {
                if collected.len() + chunk.len() > proxy.config.max_response_bytes {
                    warn!(%url, limit = proxy.config.max_response_bytes, "content upstream response too large");
                    return error(
                        StatusCode::BAD_GATEWAY,
                        "upstream_response_too_large",
                        "the content service answered more than the gateway accepts".to_owned(),
                    );
                }
                collected.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return upstream_failed(&proxy, &parts.method, url.as_str(), &e),
        }
    }
    let mut response = Response::new(Body::from(Bytes::from(collected)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The upstream URL for `path_and_query`, or `None` if it would leave `base`'s `/api/content`.
///
/// [`check_path`] already refuses what a URL parser resolves; this checks the
/// parsed result once more, so a parser's surprise cannot reach another path.
fn upstream_url(base: &str, path_and_query: &str) -> Option<reqwest::Url> {
    let url = reqwest::Url::parse(&format!("{base}{path_and_query}")).ok()?;
    let base_path = reqwest::Url::parse(base)
        .ok()?
        .path()
        .trim_end_matches('/')
        .to_owned();
    let rest = url
        .path()
        .strip_prefix(&base_path)?
        .strip_prefix("/api/content")?;
    (rest.is_empty() || rest.starts_with('/')).then_some(url)
}

/// The headers sent upstream: the client's end-to-end ones, less credentials it
/// may not pass on and forwarding headers it may not write, plus the proxy's own.
fn upstream_headers(proxy: &Proxy, client: &HeaderMap, peer: Option<SocketAddr>) -> HeaderMap {
    let mut headers = end_to_end(client);
    // The client sets Host (the upstream's) and Content-Length (of the buffered body).
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::AUTHORIZATION);
    if let Some(value) = &proxy.upstream_authorization {
        headers.insert(header::AUTHORIZATION, value.clone());
    }
    if !proxy.config.forward_cookies {
        headers.remove(header::COOKIE);
    }
    let trusted = peer.is_some_and(|peer| proxy.config.trusted_proxies.is_trusted(peer.ip()));
    if !trusted {
        for name in FORWARDING {
            headers.remove(name);
        }
    }
    if let Some(peer) = peer {
        // A trusted proxy's list is extended with the address it connected from; anyone else's
        // was removed above, so the list starts at the real peer.
        let mut hops: Vec<String> = headers
            .get_all(X_FORWARDED_FOR)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .map(|value| value.trim().to_owned())
            .filter(|value| !value.is_empty())
            .collect();
        hops.push(peer.ip().to_canonical().to_string());
        if let Ok(value) = HeaderValue::from_str(&hops.join(", ")) {
            headers.insert(X_FORWARDED_FOR, value);
        }
    }
    if !headers.contains_key("x-forwarded-host")
        && let Some(host) = client.get(header::HOST)
    {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    if !headers.contains_key("x-forwarded-proto") {
        headers.insert(
            HeaderName::from_static("x-forwarded-proto"),
            HeaderValue::from_static("http"),
        );
    }
    headers
}

/// The 502 or 504 for a request the upstream did not answer: generic for the client, detailed in the log.
fn upstream_failed(proxy: &Proxy, method: &Method, url: &str, e: &reqwest::Error) -> Response {
    warn!(%method, url, timeout = ?proxy.config.timeout, error = %error_chain(e), "content upstream failed");
    if e.is_timeout() {
        error(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            "the content service did not answer in time".to_owned(),
        )
    } else {
        error(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            "the content service is unavailable".to_owned(),
        )
    }
}

/// An error and its causes, `: `-separated, for messages a person reads.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// The gateway's one error shape, `{"error","message"}`, with `status`.
fn error(status: StatusCode, code: &'static str, message: String) -> Response {
    (
        status,
        Json(ErrorBody {
            error: code,
            message,
        }),
    )
        .into_response()
}

/// A fallback router serving the built web app in `dir` (normally `web/dist`) at `/`.
///
/// - Files are served with the content type of their extension; `index.html`
///   answers `/`. Vite's content-hashed `/assets/*` are cached for a year,
///   pages are revalidated on every load.
/// - Any other page-like path (no extension, not under `/api/` or `/ws/`)
///   gets `index.html`, so a reload on a client-side route works.
/// - A missing file with an extension, or an unknown `/api/…` path, is a 404.
/// - While `dir/index.html` does not exist, pages answer a short HTML note
///   saying how to build the app (`cd web && npm ci && npm run build`). This
///   is checked on every request, so building while the gateway runs works.
pub fn web_app(dir: PathBuf) -> Router {
    let index = dir.join("index.html");
    let files = ServeDir::new(&dir);
    let app = Arc::new(WebApp { dir, index, files });
    Router::new().fallback(serve_web).with_state(app)
}

/// What [`serve_web`] shares.
#[derive(Debug)]
struct WebApp {
    /// The directory served.
    dir: PathBuf,
    /// `dir/index.html`, the page for `/` and for client-side routes.
    index: PathBuf,
    /// The static file service over `dir`.
    files: ServeDir,
}

/// Serves one request for the web app.
async fn serve_web(State(app): State<Arc<WebApp>>, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let page_like = is_page_path(&path);
    if !matches!(*request.method(), Method::GET | Method::HEAD) {
        return error(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no route for {} {path}", request.method()),
        );
    }
    if !tokio::fs::metadata(&app.index)
        .await
        .is_ok_and(|m| m.is_file())
    {
        return if page_like {
            not_built_page(&app.dir)
        } else {
            not_found(&path)
        };
    }
    let method = request.method().clone();
    let headers = request.headers().clone();
    let response = match app.files.clone().oneshot(request).await {
        Ok(response) => response.map(Body::new),
        Err(never) => match never {},
    };
    if response.status() != StatusCode::NOT_FOUND {
        return with_cache_policy(&path, response);
    }
    if !page_like {
        return not_found(&path);
    }
    // A client-side route: the app's page, which routes in the browser.
    let mut index_request = Request::new(Body::empty());
    *index_request.method_mut() = method;
    *index_request.headers_mut() = headers;
    match ServeFile::new(&app.index).oneshot(index_request).await {
        Ok(response) => with_cache_policy("/index.html", response.map(Body::new)),
        Err(never) => match never {},
    }
}

/// Whether `path` names a page of the app rather than a file or an API route.
fn is_page_path(path: &str) -> bool {
    if path.starts_with("/api/") || path == "/api" || path.starts_with("/ws/") {
        return false;
    }
    let last = path.rsplit('/').next().unwrap_or_default();
    !last.contains('.') || last.ends_with(".html")
}

/// Sets `Cache-Control`: hashed assets forever, everything else revalidated.
fn with_cache_policy(path: &str, mut response: Response) -> Response {
    if !response.status().is_success() {
        return response;
    }
    let policy = if path.starts_with("/assets/") {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static(policy));
    response
}

/// A 404 in the gateway's error shape.
fn not_found(path: &str) -> Response {
    error(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("nothing at {path}"),
    )
}

/// The page shown while the web app has not been built.
fn not_built_page(dir: &Path) -> Response {
    let dir = html_escape(&dir.display().to_string());
    let page = format!(
        r#"<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Herald: the web app is not built</title>
<style>body{{font-family:system-ui,sans-serif;max-width:40rem;margin:4rem auto;padding:0 1rem;line-height:1.5}}code,pre{{background:#f3f3f3;padding:.1rem .3rem;border-radius:4px}}pre{{padding:.75rem}}</style>
</head>
<body>
<h1>Herald is running</h1>
<p>The web app is not built yet: there is no <code>index.html</code> in <code>{dir}</code>.</p>
<p>Build it (Node.js 20.19 or newer), then reload this page:</p>
<pre>cd web &amp;&amp; npm ci &amp;&amp; npm run build</pre>
<p>Everything else already works: the WebSocket at <code>/ws/notifications</code>,
<a href="/healthz"><code>/healthz</code></a> and <a href="/readyz"><code>/readyz</code></a>.</p>
</body>
</html>
"#
    );
    let mut response = Html(page).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// Escapes text for an HTML element's content.
fn html_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_urls_are_checked() {
        assert_eq!(
            parse_upstream("http://127.0.0.1:8090/").ok().as_deref(),
            Some("http://127.0.0.1:8090")
        );
        assert_eq!(
            parse_upstream("http://content:8090/prefix/")
                .ok()
                .as_deref(),
            Some("http://content:8090/prefix")
        );
        for bad in [
            "127.0.0.1:8090",
            "ftp://host",
            "https://host",
            "http://host/?q=1",
            "",
        ] {
            assert!(parse_upstream(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dot_segments_encoded_slashes_and_backslashes_are_bad_paths() {
        for bad in [
            "/api/content/..",
            "/api/content/../x",
            "/api/content/./x",
            "/api/content/%2e%2e/x",
            "/api/content/%2E%2e/x",
            "/api/content/.%2E/x",
            "/api/content/%2e",
            "/api/content/a%2fb",
            "/api/content/a%2Fb",
            "/api/content/a\\b",
            "/api/content/a%5cb",
            "/api/content/a%5Cb",
        ] {
            assert_eq!(check_path(bad), Err(BadPath), "{bad}");
        }
        for good in [
            "/api/content",
            "/api/content/",
            "/api/content/abc",
            "/api/content/...",
            "/api/content/v1.2..3",
            "/api/content/%2e%2e%2e",
            "/api/content/a%20b",
        ] {
            assert_eq!(check_path(good), Ok(()), "{good}");
        }
        assert!(
            parse_upstream("http://host/a/../b").is_ok(),
            "the URL parser resolves it"
        );
        assert!(parse_upstream("http://host/a%2fb").is_err());
    }

    #[test]
    fn upstream_urls_stay_below_the_base() {
        let url = |base, path| upstream_url(base, path).map(|u| u.to_string());
        assert_eq!(
            url("http://h:1/prefix", "/api/content/x?q=1").as_deref(),
            Some("http://h:1/prefix/api/content/x?q=1")
        );
        assert_eq!(
            url("http://h:1", "/api/content").as_deref(),
            Some("http://h:1/api/content")
        );
        // What check_path refuses is caught here too, should it ever get through.
        assert_eq!(url("http://h:1/prefix", "/api/content/../../x"), None);
        assert_eq!(
            url("http://h:1/prefix", "/api/content/%2e%2e/%2e%2e/x"),
            None
        );
        assert_eq!(url("http://h:1/prefix", "/api/contentx"), None);
    }

    #[tokio::test]
    async fn writes_are_open_without_a_jwt_key_only() {
        let open = Writers::default();
        assert!(open.is_open());
        assert!(open.authorize(&HeaderMap::new()).await.is_ok());
        let closed = Writers {
            auth: Arc::new(Authenticator::hs256(b"a-unit-test-secret-of-32-bytes!!").unwrap()),
            api_keys: vec!["k".to_owned()],
        };
        assert!(!closed.is_open());
        assert!(matches!(
            closed.authorize(&HeaderMap::new()).await,
            Err(ApiError::Unauthorized(_))
        ));
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer k"));
        assert!(closed.authorize(&headers).await.is_ok());
        let text = format!(
            "{closed:?} {:?}",
            ProxyConfig {
                writers: closed.clone(),
                upstream_api_key: Some("upstream-secret".to_owned()),
                ..ProxyConfig::default()
            }
        );
        assert!(
            !text.contains("upstream-secret") && !text.contains("\"k\""),
            "{text}"
        );
    }

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        headers.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        headers.insert("x-secret", HeaderValue::from_static("1"));
        headers.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        let kept = end_to_end(&headers);
        assert_eq!(kept.len(), 1, "{kept:?}");
        assert!(kept.contains_key(header::CONTENT_TYPE));
    }

    #[test]
    fn pages_and_files_are_told_apart() {
        for page in ["/", "/feed", "/content/42", "/index.html"] {
            assert!(is_page_path(page), "{page}");
        }
        for file in ["/assets/app.js", "/favicon.ico", "/api/other", "/ws/x"] {
            assert!(!is_page_path(file), "{file}");
        }
    }
}
