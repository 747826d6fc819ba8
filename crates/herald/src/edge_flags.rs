//! The gateway's edge flags: what a gateway serves besides the WebSocket.
//!
//! Kept apart from `gateway.rs` (and flattened into `GatewayArgs`) so the
//! browser-facing extras — the built web app and the content proxy — are
//! configured in one place, and the demo can reuse the same defaults.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::Router;
use clap::Args;
use herald_gateway::GatewayConfig;
use herald_gateway::edge::{CONTENT_WRITE_ROLE, ProxyConfig, Writers, content_proxy_with, web_app};
use tracing::warn;

use crate::gateway::positive_duration;

/// The default `--web-dir`: the web app's build output, relative to the repository root.
pub(crate) const DEFAULT_WEB_DIR: &str = "web/dist";

/// Flags of `herald gateway` for the web app and the content proxy.
#[derive(Debug, Args)]
pub(crate) struct EdgeArgs {
    /// Forward `/api/content` and `/api/content/*` to the content service at this URL (e.g. `http://127.0.0.1:8090`).
    #[arg(long, env = "HERALD_CONTENT_UPSTREAM")]
    pub(crate) content_upstream: Option<String>,

    /// How long a forwarded content request may take before the gateway answers 504.
    #[arg(long, env = "HERALD_CONTENT_TIMEOUT", default_value = "10s", value_parser = positive_duration)]
    pub(crate) content_timeout: Duration,

    /// The key the gateway presents to the content service (its `--api-key`) on every forwarded
    /// request, in place of the client's `Authorization`, which is never forwarded.
    #[arg(long, env = "HERALD_CONTENT_API_KEY", hide_env_values = true)]
    pub(crate) content_api_key: Option<String>,

    /// Forward the browser's `Cookie` header to the content service (off: cookies stay at the gateway).
    #[arg(long, env = "HERALD_CONTENT_FORWARD_COOKIES")]
    pub(crate) content_forward_cookies: bool,

    /// The built web app to serve at `/` (while it has no index.html, `/` says how to build it).
    #[arg(long, env = "HERALD_WEB_DIR", default_value = DEFAULT_WEB_DIR)]
    pub(crate) web_dir: PathBuf,
}

impl EdgeArgs {
    /// The edge routes to merge into the gateway's router: the content proxy if asked for, then the web app.
    ///
    /// The proxy trusts what the gateway trusts: its JWT key decides who may
    /// write, its API keys may write too, and its `--trusted-proxy` peers may
    /// speak for the client in forwarding headers.
    pub(crate) fn router(&self, gateway: &GatewayConfig) -> Result<Router> {
        let mut router = Router::new();
        if let Some(upstream) = &self.content_upstream {
            let config = ProxyConfig {
                timeout: self.content_timeout,
                writers: Writers {
                    auth: gateway.auth.clone(),
                    api_keys: gateway.api_keys.clone(),
                },
                upstream_api_key: self
                    .content_api_key
                    .clone()
                    .filter(|k| !k.trim().is_empty()),
                trusted_proxies: gateway.trusted_proxies.clone(),
                forward_cookies: self.content_forward_cookies,
                ..ProxyConfig::default()
            };
            if config.writers.is_open() {
                warn!(
                    "content writes through /api/content are open to anyone: no JWT key is configured \
                     (with --jwt-secret, --jwt-public-key-file or --jwt-jwks-url a write needs the {CONTENT_WRITE_ROLE:?} role or an --api-key)"
                );
            }
            router = router.merge(
                content_proxy_with(upstream, config)
                    .with_context(|| format!("--content-upstream {upstream}"))?,
            );
        }
        Ok(router.merge(web_app(self.web_dir.clone())))
    }
}
