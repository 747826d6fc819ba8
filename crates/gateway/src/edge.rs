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
//! Bodies are buffered, not streamed: content requests and pages are small
//! (a content item is at most about 40 KB), and a buffered body lets the
//! proxy apply one size limit and one timeout to the whole exchange.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use axum::http::{Method, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use tower::ServiceExt;
use tower_http::services::{ServeDir, ServeFile};
use tracing::warn;

use crate::error::ErrorBody;

/// Settings of the content proxy; [`ProxyConfig::default`] suits a LAN upstream.
#[derive(Debug, Clone)]
pub struct ProxyConfig {
    /// The longest a whole forwarded exchange (connect, request, response body) may take; then 504.
    pub timeout: Duration,
    /// The longest connecting to the upstream may take; then 502.
    pub connect_timeout: Duration,
    /// The largest request body forwarded; larger ones get 413 without reaching the upstream.
    pub max_request_bytes: usize,
    /// The largest response body accepted from the upstream; larger ones become a 502.
    pub max_response_bytes: usize,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(2),
            // axum's own default body limit, which the content service applies too.
            max_request_bytes: 2 * 1024 * 1024,
            max_response_bytes: 16 * 1024 * 1024,
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

/// [`content_proxy`] with explicit timeouts and size limits.
pub fn content_proxy_with(upstream: &str, config: ProxyConfig) -> Result<Router, EdgeError> {
    let base = parse_upstream(upstream)?;
    let client = reqwest::Client::builder()
        .connect_timeout(config.connect_timeout)
        .timeout(config.timeout)
        // The browser must see the upstream's redirects, not their targets.
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let proxy = Arc::new(Proxy {
        base,
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
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

/// What the proxy's handler shares.
#[derive(Debug)]
struct Proxy {
    /// The upstream's base URL, without a trailing `/`.
    base: String,
    /// One pooled client for every forwarded request.
    client: reqwest::Client,
    /// Timeouts and limits.
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

/// Forwards one request to the upstream and its answer back.
async fn forward(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
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
                error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    format!("the request body could not be read: {e}"),
                )
            };
        }
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let url = format!("{}{}", proxy.base, path_and_query);

    let mut headers = end_to_end(&parts.headers);
    // The client sets Host (the upstream's) and Content-Length (of the buffered body).
    headers.remove(header::HOST);
    headers.remove(header::CONTENT_LENGTH);
    if let Some(host) = parts.headers.get(header::HOST) {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );

    let sent = proxy
        .client
        .request(parts.method.clone(), &url)
        .headers(headers)
        .body(body)
        .send()
        .await;
    let mut upstream = match sent {
        Ok(response) => response,
        Err(e) => return upstream_failed(&proxy, &parts.method, path_and_query, &e),
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
                        format!(
                            "the content service answered more than {} bytes",
                            proxy.config.max_response_bytes
                        ),
                    );
                }
                collected.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(e) => return upstream_failed(&proxy, &parts.method, path_and_query, &e),
        }
    }
    let mut response = Response::new(Body::from(Bytes::from(collected)));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// The 502 or 504 for a request the upstream did not answer.
fn upstream_failed(proxy: &Proxy, method: &Method, path: &str, e: &reqwest::Error) -> Response {
    warn!(upstream = %proxy.base, %method, path, error = %e, "content upstream failed");
    if e.is_timeout() {
        error(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!(
                "the content service at {} did not answer {method} {path} within {:?}",
                proxy.base, proxy.config.timeout
            ),
        )
    } else {
        error(
            StatusCode::BAD_GATEWAY,
            "upstream_unavailable",
            format!(
                "the content service at {} is unavailable ({})",
                proxy.base,
                error_chain(e)
            ),
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
