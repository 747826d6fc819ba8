//! Flags of `herald gateway` for the Herald protocol: authentication, channels, history, publishing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use herald_broker::HistoryRules;
use herald_broker::history::is_valid_pattern;
use herald_gateway::auth::{Authenticator, TokenRules};
use herald_gateway::jwks::{self, Jwks};
use herald_gateway::origin::AllowedOrigins;
use herald_gateway::policy::ChannelPolicy;

use crate::gateway::positive_duration;

/// Who may connect, what they may read, what is kept, and who may publish.
#[derive(Debug, Args)]
pub(crate) struct ProtocolArgs {
    /// HS256 secret that client JWTs are signed with (at least 16 bytes).
    #[arg(
        long,
        env = "HERALD_JWT_SECRET",
        hide_env_values = true,
        conflicts_with_all = ["jwt_public_key_file", "jwt_jwks_url"]
    )]
    pub(crate) jwt_secret: Option<String>,

    /// PEM public key (RSA → RS256, P-256 EC → ES256) that client JWTs are signed for.
    #[arg(
        long,
        env = "HERALD_JWT_PUBLIC_KEY_FILE",
        conflicts_with = "jwt_jwks_url"
    )]
    pub(crate) jwt_public_key_file: Option<PathBuf>,

    /// A channel name or prefix pattern (`news:*`) anonymous clients may read; repeatable.
    #[arg(
        long = "public-channel",
        env = "HERALD_PUBLIC_CHANNELS",
        value_delimiter = ','
    )]
    pub(crate) public_channels: Vec<String>,

    /// History kept for matching channels, as PATTERN=SIZE[/TTL] (e.g. `news:*=1000/24h`); repeatable, first match wins.
    #[arg(long = "history", env = "HERALD_HISTORY", value_delimiter = ',')]
    pub(crate) history: Vec<String>,

    /// An API key that may use POST /api/publish (as `Authorization: Bearer KEY`); repeatable.
    #[arg(
        long = "api-key",
        env = "HERALD_API_KEYS",
        value_delimiter = ',',
        hide_env_values = true
    )]
    pub(crate) api_keys: Vec<String>,

    /// How long a publish's idempotency key is remembered.
    #[arg(long, env = "HERALD_IDEMPOTENCY_WINDOW", default_value = "5m", value_parser = positive_duration)]
    pub(crate) idempotency_window: Duration,

    /// Channels one client may hold at once.
    #[arg(long, env = "HERALD_MAX_SUBSCRIPTIONS", default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) max_subscriptions: u32,

    /// Frames per second a client may send on average (bursts of twice that); beyond, it is closed with 4006.
    #[arg(long, env = "HERALD_CLIENT_FRAME_RATE", default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub(crate) client_frame_rate: u32,

    /// The largest publish API request body, in bytes.
    #[arg(long, env = "HERALD_MAX_PUBLISH_BYTES", default_value_t = 65_536, value_parser = clap::value_parser!(u32).range(256..=16_777_216))]
    pub(crate) max_publish_bytes: u32,

    /// An http URL serving the JWKS whose RS256/ES256 keys (chosen by `kid`) sign client JWTs.
    #[arg(long, env = "HERALD_JWT_JWKS_URL")]
    pub(crate) jwt_jwks_url: Option<String>,

    /// An audience a client JWT's `aud` must name (any one of them); repeatable. Unset: `aud` is not checked.
    #[arg(
        long = "jwt-audience",
        env = "HERALD_JWT_AUDIENCES",
        value_delimiter = ','
    )]
    pub(crate) jwt_audiences: Vec<String>,

    /// An issuer a client JWT's `iss` must equal (any one of them); repeatable. Unset: `iss` is not checked.
    #[arg(long = "jwt-issuer", env = "HERALD_JWT_ISSUERS", value_delimiter = ',')]
    pub(crate) jwt_issuers: Vec<String>,

    /// Clock skew tolerated on a JWT's `exp` and `nbf` (0 allowed, at most 1h).
    #[arg(long, env = "HERALD_JWT_LEEWAY", default_value = "0s", value_parser = leeway)]
    pub(crate) jwt_leeway: Duration,

    /// How long a `/ws` client that must authenticate in its first frame may take before it is closed with 4007.
    #[arg(long, env = "HERALD_AUTH_TIMEOUT", default_value = "5s", value_parser = positive_duration)]
    pub(crate) auth_timeout: Duration,

    /// History reads for recovery that may run at once on this instance; more wait their turn.
    #[arg(long, env = "HERALD_MAX_CONCURRENT_RECOVERIES", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub(crate) max_concurrent_recoveries: u32,

    /// A browser origin (`https://app.example.com`) whose pages may open /ws, /ws/notifications
    /// and /sse besides this host's own; repeatable; `*` allows every origin.
    #[arg(
        long = "allowed-origin",
        env = "HERALD_ALLOWED_ORIGINS",
        value_delimiter = ','
    )]
    pub(crate) allowed_origins: Vec<String>,
}

/// Parses the JWT leeway: a duration from zero to one hour.
fn leeway(text: &str) -> Result<Duration, String> {
    let duration =
        humantime::parse_duration(text).map_err(|e| format!("{e} (write e.g. 0s, 30s, 1m)"))?;
    if duration > Duration::from_secs(3600) {
        return Err("at most 1h".to_owned());
    }
    Ok(duration)
}

impl ProtocolArgs {
    /// The authenticator the flags describe.
    pub(crate) fn authenticator(&self) -> Result<Arc<Authenticator>> {
        let auth = match (
            &self.jwt_secret,
            &self.jwt_public_key_file,
            &self.jwt_jwks_url,
        ) {
            (Some(secret), _, _) => {
                Authenticator::hs256(secret.as_bytes()).context("--jwt-secret")?
            }
            (None, Some(path), _) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("--jwt-public-key-file {}", path.display()))?;
                Authenticator::public_key_pem(&pem)
                    .with_context(|| format!("--jwt-public-key-file {}", path.display()))?
            }
            (None, None, Some(url)) => {
                let jwks = Jwks::new(url, jwks::DEFAULT_MIN_REFETCH, jwks::DEFAULT_MAX_AGE)
                    .context("--jwt-jwks-url")?;
                Authenticator::jwks(Arc::new(jwks))
            }
            (None, None, None) => {
                if !self.jwt_audiences.is_empty() || !self.jwt_issuers.is_empty() {
                    bail!(
                        "--jwt-audience/--jwt-issuer: no JWT key is configured (set --jwt-secret, --jwt-public-key-file or --jwt-jwks-url)"
                    );
                }
                Authenticator::anonymous_only()
            }
        };
        Ok(Arc::new(auth.with_rules(TokenRules {
            leeway: self.jwt_leeway,
            audiences: self.jwt_audiences.clone(),
            issuers: self.jwt_issuers.clone(),
        })))
    }

    /// The origins the flags allow.
    pub(crate) fn allowed_origins(&self) -> Result<AllowedOrigins> {
        AllowedOrigins::parse(self.allowed_origins.iter().map(String::as_str))
            .context("--allowed-origin")
    }

    /// The channel rules the flags describe.
    pub(crate) fn channel_policy(&self) -> Result<ChannelPolicy> {
        for pattern in &self.public_channels {
            if !is_valid_pattern(pattern) {
                bail!("--public-channel {pattern:?}: not a channel name or a prefix ending in '*'");
            }
        }
        let history = HistoryRules::parse(self.history.iter().map(String::as_str))?;
        Ok(ChannelPolicy {
            history,
            public: self.public_channels.clone(),
        })
    }
}
