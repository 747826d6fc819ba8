//! Flags of `herald gateway` for the Herald protocol: authentication, channels, history, publishing.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::Args;
use herald_broker::HistoryRules;
use herald_broker::history::is_valid_pattern;
use herald_gateway::auth::Authenticator;
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
        conflicts_with = "jwt_public_key_file"
    )]
    pub(crate) jwt_secret: Option<String>,

    /// PEM public key (RSA → RS256, P-256 EC → ES256) that client JWTs are signed for.
    #[arg(long, env = "HERALD_JWT_PUBLIC_KEY_FILE")]
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

impl ProtocolArgs {
    /// The authenticator the flags describe.
    pub(crate) fn authenticator(&self) -> Result<Arc<Authenticator>> {
        let auth = match (&self.jwt_secret, &self.jwt_public_key_file) {
            (Some(secret), _) => Authenticator::hs256(secret.as_bytes()).context("--jwt-secret")?,
            (None, Some(path)) => {
                let pem = std::fs::read(path)
                    .with_context(|| format!("--jwt-public-key-file {}", path.display()))?;
                Authenticator::public_key_pem(&pem)
                    .with_context(|| format!("--jwt-public-key-file {}", path.display()))?
            }
            (None, None) => Authenticator::anonymous_only(),
        };
        Ok(Arc::new(auth))
    }

    /// Whether a JWT key is configured: then the tutorial's endpoint obeys the channel policy too.
    pub(crate) fn jwt_configured(&self) -> bool {
        self.jwt_secret.is_some() || self.jwt_public_key_file.is_some()
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
