//! The keys of a JSON Web Key Set (RFC 7517) served at a URL, for `--jwt-jwks-url`.
//!
//! Identity providers rotate their signing keys: a new key (with a new `kid`)
//! appears in the set, tokens start naming it, the old one goes later. So the
//! set is cached, and a token naming a `kid` the cache does not know makes it
//! be fetched again — but at most once per [`Jwks::min_refetch`], so a client
//! sending random `kid`s cannot make the gateway hammer the key server: every
//! such token in between is refused from the cache. Fetches are serialized (one
//! at a time), bounded in time and size, and a failed fetch keeps the keys
//! already known. The set is also fetched again when it is older than
//! [`Jwks::max_age`], at the next token check, so a removed key stops being
//! accepted. Only RS256 and ES256 (P-256) keys are taken; others are skipped.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::auth::{AuthError, KeyError};

/// Keys taken from one set at most: the set is remote input.
pub const MAX_KEYS: usize = 64;
/// The largest JWKS document read, in bytes.
pub const MAX_BODY_BYTES: usize = 256 * 1024;
/// How long one fetch of the set may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The default least time between two fetches.
pub const DEFAULT_MIN_REFETCH: Duration = Duration::from_secs(10);
/// The default age after which the set is fetched again at the next check.
pub const DEFAULT_MAX_AGE: Duration = Duration::from_secs(600);

/// One usable key of the set.
type Key = (Arc<DecodingKey>, Algorithm);

/// When the set was last fetched (tried, and succeeded).
#[derive(Debug, Default)]
struct Fetched {
    tried: Option<Instant>,
    succeeded: Option<Instant>,
}

/// A cached JWKS, fetched again on an unknown `kid` at most once per `min_refetch`.
pub struct Jwks {
    url: reqwest::Url,
    client: reqwest::Client,
    /// `kid` → key; replaced whole by each successful fetch.
    keys: RwLock<Arc<HashMap<String, Key>>>,
    /// When the set was last fetched.
    fetched: std::sync::Mutex<Fetched>,
    /// Held during a fetch, so concurrent checks wait for one fetch instead of starting many.
    fetching: tokio::sync::Mutex<()>,
    min_refetch: Duration,
    max_age: Duration,
    /// Fetches attempted, for tests and diagnostics.
    attempts: AtomicU64,
}

impl std::fmt::Debug for Jwks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwks")
            .field("url", &self.url.as_str())
            .field("min_refetch", &self.min_refetch)
            .finish_non_exhaustive()
    }
}

impl Jwks {
    /// A set served at `url` (http; see the README about https), nothing fetched yet.
    pub fn new(url: &str, min_refetch: Duration, max_age: Duration) -> Result<Self, KeyError> {
        let url = reqwest::Url::parse(url).map_err(|e| KeyError(format!("{url}: {e}")))?;
        match url.scheme() {
            "http" => {}
            // reqwest is built without TLS in this workspace (no TLS crate is vendored).
            "https" => {
                return Err(KeyError(format!(
                    "{url}: https is not supported by this build; serve the JWKS over http from a trusted host (e.g. a local proxy)"
                )));
            }
            other => return Err(KeyError(format!("{url}: unsupported scheme {other:?}"))),
        }
        let client = reqwest::Client::builder()
            .timeout(FETCH_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| KeyError(format!("{url}: {e}")))?;
        Ok(Jwks {
            url,
            client,
            keys: RwLock::new(Arc::new(HashMap::new())),
            fetched: std::sync::Mutex::new(Fetched::default()),
            fetching: tokio::sync::Mutex::new(()),
            min_refetch,
            max_age,
            attempts: AtomicU64::new(0),
        })
    }

    /// Where the set is served.
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    /// The least time between two fetches.
    pub fn min_refetch(&self) -> Duration {
        self.min_refetch
    }

    /// The age after which the set is fetched again at the next check.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// How many fetches were attempted so far.
    pub fn attempts(&self) -> u64 {
        self.attempts.load(Ordering::Relaxed)
    }

    /// The key `kid` from the cache only.
    pub fn cached(&self, kid: &str) -> Result<Key, AuthError> {
        self.lookup(kid)
            .ok_or_else(|| AuthError::Invalid(format!("no key {kid:?} in the JWKS")))
    }

    fn lookup(&self, kid: &str) -> Option<Key> {
        // A poisoned lock only means a panic elsewhere mid-replace; the map itself is whole.
        let keys = self.keys.read().unwrap_or_else(|e| e.into_inner());
        keys.get(kid).cloned()
    }

    /// The key `kid`, fetching the set again when it is unknown or the cache is
    /// old — unless a fetch was tried less than `min_refetch` ago.
    pub async fn key(&self, kid: &str) -> Result<Key, AuthError> {
        if let Some(key) = self.lookup(kid)
            && !self.is_stale()
        {
            return Ok(key);
        }
        let _one_fetch_at_a_time = self.fetching.lock().await;
        // Another check may have fetched while this one waited.
        if let Some(key) = self.lookup(kid)
            && !self.is_stale()
        {
            return Ok(key);
        }
        if self.may_fetch()
            && let Err(why) = self.fetch_and_store().await
        {
            warn!(url = %self.url, %why, "could not fetch the JWKS; keeping the keys known");
        }
        self.cached(kid)
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Fetched> {
        // Two timestamps; a poisoned lock cannot leave them inconsistent.
        self.fetched.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_stale(&self) -> bool {
        self.times()
            .succeeded
            .is_none_or(|at| at.elapsed() >= self.max_age)
    }

    /// Whether the rate limit allows a fetch now; if so, counts it as tried.
    fn may_fetch(&self) -> bool {
        let mut times = self.times();
        if times
            .tried
            .is_some_and(|at| at.elapsed() < self.min_refetch)
        {
            return false;
        }
        times.tried = Some(Instant::now());
        true
    }

    /// Fetches the set now (at start, so the first tokens need not wait); the error says why not.
    pub async fn refresh(&self) -> Result<usize, String> {
        let _one_fetch_at_a_time = self.fetching.lock().await;
        self.times().tried = Some(Instant::now());
        self.fetch_and_store().await
    }

    async fn fetch_and_store(&self) -> Result<usize, String> {
        let keys = self.fetch().await?;
        let count = keys.len();
        debug!(url = %self.url, keys = count, "fetched the JWKS");
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(keys);
        self.times().succeeded = Some(Instant::now());
        Ok(count)
    }

    async fn fetch(&self) -> Result<HashMap<String, Key>, String> {
        self.attempts.fetch_add(1, Ordering::Relaxed);
        let mut response = self
            .client
            .get(self.url.clone())
            .send()
            .await
            .map_err(|e| e.to_string())?;
        if !response.status().is_success() {
            return Err(format!("HTTP {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_BODY_BYTES {
                return Err(format!("the JWKS is larger than {MAX_BODY_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let set: JwkSet = serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))?;
        Ok(usable_keys(&set))
    }
}

/// The RS256 and ES256 keys of `set` that carry a `kid`, at most [`MAX_KEYS`].
fn usable_keys(set: &JwkSet) -> HashMap<String, Key> {
    set.keys
        .iter()
        .filter_map(|jwk| {
            let kid = jwk.common.key_id.clone()?;
            let algorithm = algorithm_of(jwk)?;
            let key = DecodingKey::from_jwk(jwk).ok()?;
            Some((kid, (Arc::new(key), algorithm)))
        })
        .take(MAX_KEYS)
        .collect()
}

/// RS256 for an RSA key, ES256 for a P-256 key; a key that declares another `alg` is skipped.
fn algorithm_of(jwk: &Jwk) -> Option<Algorithm> {
    let algorithm = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => Algorithm::RS256,
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            Algorithm::ES256
        }
        _ => return None,
    };
    match jwk.common.key_algorithm {
        None => Some(algorithm),
        Some(KeyAlgorithm::RS256) if algorithm == Algorithm::RS256 => Some(algorithm),
        Some(KeyAlgorithm::ES256) if algorithm == Algorithm::ES256 => Some(algorithm),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Authenticator;
    use axum::Json;
    use axum::extract::State;
    use axum::routing::get;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;
    use std::sync::Mutex;

    fn pem(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    /// A signing key of the test fixtures and its public JWK under `kid`.
    fn signing_key(algorithm: Algorithm, kid: &str) -> (EncodingKey, Jwk) {
        let key = match algorithm {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(&pem("rs256-private.pem")).unwrap(),
            _ => EncodingKey::from_ec_pem(&pem("es256-private.pem")).unwrap(),
        };
        let mut jwk = Jwk::from_encoding_key(&key, algorithm).unwrap();
        jwk.common.key_id = Some(kid.to_owned());
        (key, jwk)
    }

    fn token(key: &EncodingKey, algorithm: Algorithm, kid: &str) -> String {
        let mut header = Header::new(algorithm);
        header.kid = Some(kid.to_owned());
        let exp = SystemTimeNow::secs() + 600;
        encode(&header, &json!({"sub": "7", "exp": exp}), key).unwrap()
    }

    struct SystemTimeNow;
    impl SystemTimeNow {
        fn secs() -> u64 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_secs()
        }
    }

    #[derive(Clone, Default)]
    struct Served {
        set: Arc<Mutex<JwkSet>>,
        requests: Arc<AtomicU64>,
    }

    /// A real HTTP key server on a loopback port, stopped on drop.
    struct KeyServer {
        url: String,
        served: Served,
        task: tokio::task::JoinHandle<()>,
    }

    impl Drop for KeyServer {
        fn drop(&mut self) {
            self.task.abort();
        }
    }

    impl KeyServer {
        async fn start(keys: Vec<Jwk>) -> Self {
            let served = Served::default();
            served.set.lock().unwrap().keys = keys;
            let app = axum::Router::new()
                .route(
                    "/jwks.json",
                    get(|State(served): State<Served>| async move {
                        served.requests.fetch_add(1, Ordering::SeqCst);
                        let set = served.set.lock().unwrap().clone();
                        Json(set)
                    }),
                )
                .with_state(served.clone());
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
            let task = tokio::spawn(async move {
                axum::serve(listener, app).await.unwrap();
            });
            KeyServer { url, served, task }
        }

        fn rotate(&self, keys: Vec<Jwk>) {
            self.served.set.lock().unwrap().keys = keys;
        }

        fn requests(&self) -> u64 {
            self.served.requests.load(Ordering::SeqCst)
        }
    }

    #[tokio::test]
    async fn a_key_rotated_in_is_accepted_and_the_one_rotated_out_is_not() {
        let (old_key, old_jwk) = signing_key(Algorithm::RS256, "old");
        let (new_key, new_jwk) = signing_key(Algorithm::ES256, "new");
        let server = KeyServer::start(vec![old_jwk]).await;
        let min_refetch = Duration::from_millis(200);
        let jwks = Arc::new(Jwks::new(&server.url, min_refetch, DEFAULT_MAX_AGE).unwrap());
        let auth = Authenticator::jwks(jwks.clone());

        let old = token(&old_key, Algorithm::RS256, "old");
        assert_eq!(
            auth.verify(Some(&old)).await.unwrap().user.as_deref(),
            Some("7")
        );
        // Cached: checking again fetches nothing.
        assert!(auth.verify(Some(&old)).await.is_ok());
        assert!(auth.authenticate(Some(&old)).is_ok());
        assert_eq!(server.requests(), 1);

        server.rotate(vec![new_jwk]);
        let new = token(&new_key, Algorithm::ES256, "new");
        // Not fetched yet: the cache alone does not know the new kid.
        assert!(auth.authenticate(Some(&new)).is_err());
        tokio::time::sleep(min_refetch + Duration::from_millis(50)).await;
        assert_eq!(
            auth.verify(Some(&new)).await.unwrap().user.as_deref(),
            Some("7")
        );
        assert_eq!(server.requests(), 2);
        // The set replaced the cache: the rotated-out key no longer verifies.
        assert!(matches!(
            auth.authenticate(Some(&old)),
            Err(AuthError::Invalid(why)) if why.contains("old")
        ));
        // A token signed by the new key but naming the old kid is refused too.
        assert!(
            auth.verify(Some(&token(&new_key, Algorithm::ES256, "old")))
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_flood_of_unknown_kids_fetches_the_set_once_per_interval() {
        let (key, jwk) = signing_key(Algorithm::RS256, "k1");
        let server = KeyServer::start(vec![jwk]).await;
        let jwks = Arc::new(Jwks::new(&server.url, DEFAULT_MIN_REFETCH, DEFAULT_MAX_AGE).unwrap());
        let auth = Arc::new(Authenticator::jwks(jwks.clone()));
        // 500 concurrent tokens naming random kids, on an empty cache. Their
        // signature does not matter (the kid is looked up first), and HS256 signs fast.
        let cheap = EncodingKey::from_secret(b"any-secret-of-sixteen-bytes");
        let mut flood = tokio::task::JoinSet::new();
        for i in 0..500 {
            let auth = auth.clone();
            let forged = token(&cheap, Algorithm::HS256, &format!("random-{i}"));
            flood.spawn(async move { auth.verify(Some(&forged)).await });
        }
        while let Some(result) = flood.join_next().await {
            assert!(matches!(result.unwrap(), Err(AuthError::Invalid(_))));
        }
        assert_eq!(server.requests(), 1, "one fetch for the whole flood");
        // The known key still works, from the cache.
        assert!(
            auth.verify(Some(&token(&key, Algorithm::RS256, "k1")))
                .await
                .is_ok()
        );
        assert_eq!(server.requests(), 1);
        assert_eq!(jwks.attempts(), 1);
    }

    #[tokio::test]
    async fn a_dead_key_server_keeps_the_keys_known_and_refuses_clearly() {
        let (key, jwk) = signing_key(Algorithm::ES256, "k1");
        let server = KeyServer::start(vec![jwk]).await;
        let jwks = Arc::new(Jwks::new(&server.url, Duration::ZERO, Duration::ZERO).unwrap());
        assert_eq!(jwks.refresh().await, Ok(1));
        let url = server.url.clone();
        drop(server);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let auth = Authenticator::jwks(jwks);
        // max_age zero: every check tries a fetch, which fails; the cached key still verifies.
        assert!(
            auth.verify(Some(&token(&key, Algorithm::ES256, "k1")))
                .await
                .is_ok()
        );
        assert!(
            auth.verify(Some(&token(&key, Algorithm::ES256, "k2")))
                .await
                .is_err()
        );
        assert!(
            Jwks::new(
                "https://id.example/jwks",
                DEFAULT_MIN_REFETCH,
                DEFAULT_MAX_AGE
            )
            .is_err()
        );
        assert!(Jwks::new("ftp://x/jwks", DEFAULT_MIN_REFETCH, DEFAULT_MAX_AGE).is_err());
        assert!(Jwks::new(&url, DEFAULT_MIN_REFETCH, DEFAULT_MAX_AGE).is_ok());
    }

    #[test]
    fn only_rs256_and_p256_keys_are_taken() {
        let (_, rsa) = signing_key(Algorithm::RS256, "a");
        let (_, ec) = signing_key(Algorithm::ES256, "b");
        let mut no_kid = rsa.clone();
        no_kid.common.key_id = None;
        let mut mislabelled = rsa.clone();
        mislabelled.common.key_id = Some("c".into());
        mislabelled.common.key_algorithm = Some(KeyAlgorithm::ES256);
        let hmac: Jwk =
            serde_json::from_value(json!({"kty": "oct", "k": "c2VjcmV0", "kid": "d"})).unwrap();
        let keys = usable_keys(&JwkSet {
            keys: vec![rsa, ec, no_kid, mislabelled, hmac],
        });
        let mut kids: Vec<_> = keys.keys().cloned().collect();
        kids.sort();
        assert_eq!(kids, ["a", "b"]);
        assert_eq!(keys["a"].1, Algorithm::RS256);
        assert_eq!(keys["b"].1, Algorithm::ES256);
    }
}
