//! Who a client is: JWT verification at the edge.
//!
//! A token is checked when the connection opens (or when its first frame
//! carries it). What comes out is an [`Identity`] — the user (`sub`), the
//! channels the token grants, and when it expires — which the rest of the
//! gateway trusts without looking at the token again. Which channels an
//! identity may read is decided in [`crate::policy`].
//!
//! One place decides the time claims: `exp` and `nbf` are read here as RFC
//! 7519 NumericDates (any JSON number: negative, fractional or huge) and
//! compared with the clock, with the configured leeway, in floating point —
//! so no claim value can overflow anything. The `jsonwebtoken` crate checks
//! the signature, the algorithm, `sub`, and `aud`/`iss` when configured; its
//! own time checks are off, because it refuses a NumericDate beyond `u64`.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::jwks::Jwks;

/// The furthest an expiry is taken to be: an `exp` further away (up to
/// 2^1023 seconds is valid JSON) is "never in practice", and clamping it here
/// keeps every timer computed from it far from overflowing.
pub const FAR_FUTURE: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// The verified facts about a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user id from `sub`; `None` for an anonymous client.
    pub user: Option<String>,
    /// Channel names or patterns (`news:*`) the token grants.
    pub channels: Vec<String>,
    /// When the token stops being accepted (its `exp` plus the leeway), if it does;
    /// never further than [`FAR_FUTURE`] from when it was checked.
    pub expires_at: Option<SystemTime>,
    /// The token's `roles` claim (e.g. `content:write`, which the content proxy requires for writes).
    pub roles: Vec<String>,
}

impl Identity {
    /// An anonymous client: public channels only.
    pub fn anonymous() -> Self {
        Identity::default()
    }

    /// How long until the token expires, if it does (zero if it already has);
    /// never more than [`FAR_FUTURE`], so `Instant::now() + left` cannot overflow.
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_at.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
                .min(FAR_FUTURE)
        })
    }

    /// The instant a connection holding this identity must close, if any;
    /// saturates to "far future" rather than overflow.
    pub fn deadline(&self) -> Option<tokio::time::Instant> {
        let left = self.expires_in()?;
        let now = tokio::time::Instant::now();
        Some(
            now.checked_add(left)
                .unwrap_or_else(|| now + Duration::from_secs(365 * 24 * 3600)),
        )
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Malformed, wrongly signed, of a wrong algorithm, not yet valid (`nbf`), for another
    /// audience or issuer, or no key is configured to check it.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's `exp` (plus the leeway) has passed.
    #[error("token expired")]
    Expired,
}

impl AuthError {
    fn invalid(why: impl Into<String>) -> Self {
        AuthError::Invalid(why.into())
    }
}

/// A key that checks tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("JWT key: {0}")]
pub struct KeyError(pub(crate) String);

/// The claims Herald reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    /// `Some(Value::Null)` for `"exp": null`, which is refused; `None` when absent.
    #[serde(default, deserialize_with = "present")]
    exp: Option<Value>,
    #[serde(default, deserialize_with = "present")]
    nbf: Option<Value>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// Keeps a present `null` apart from an absent claim.
fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

/// Reads an RFC 7519 NumericDate: any JSON number of seconds since the epoch.
fn numeric_date(claim: &str, value: &Value) -> Result<f64, AuthError> {
    match value {
        // serde_json (without arbitrary precision) gives every number an f64,
        // and JSON has no NaN or infinity.
        Value::Number(n) => n
            .as_f64()
            .filter(|secs| secs.is_finite())
            .ok_or_else(|| AuthError::invalid(format!("{claim} is not a NumericDate"))),
        _ => Err(AuthError::invalid(format!(
            "{claim} is not a NumericDate (a JSON number of seconds)"
        ))),
    }
}

/// The rules every token must satisfy, whatever key signed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TokenRules {
    /// Clock skew tolerated on `exp` and `nbf`.
    pub leeway: Duration,
    /// When not empty, `aud` must name one of these.
    pub audiences: Vec<String>,
    /// When not empty, `iss` must be one of these.
    pub issuers: Vec<String>,
}

impl TokenRules {
    /// The `jsonwebtoken` validation for `algorithm`: signature, `sub`, `aud` and `iss`.
    fn validation(&self, algorithm: Algorithm) -> Validation {
        let mut validation = Validation::new(algorithm);
        let mut required = HashSet::from(["sub".to_owned()]);
        // The time claims are decided in `check_times`, not here.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        if self.audiences.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audiences);
            required.insert("aud".to_owned());
        }
        if !self.issuers.is_empty() {
            validation.set_issuer(&self.issuers);
            required.insert("iss".to_owned());
        }
        validation.required_spec_claims = required;
        validation
    }

    /// Checks `exp` and `nbf` against `now` (seconds since the epoch) and returns
    /// how long the token stays acceptable, `None` when it has no `exp`.
    fn check_times(
        &self,
        exp: Option<&Value>,
        nbf: Option<&Value>,
        now: f64,
    ) -> Result<Option<Duration>, AuthError> {
        let leeway = self.leeway.as_secs_f64();
        if let Some(nbf) = nbf {
            let nbf = numeric_date("nbf", nbf)?;
            if now + leeway < nbf {
                return Err(AuthError::invalid("token not valid yet (nbf)"));
            }
        }
        let Some(exp) = exp else {
            // A token without `exp` does not expire (unchanged policy).
            return Ok(None);
        };
        let exp = numeric_date("exp", exp)?;
        let left = exp + leeway - now;
        if left.is_nan() || left <= 0.0 {
            return Err(AuthError::Expired);
        }
        Ok(Some(
            Duration::try_from_secs_f64(left)
                .unwrap_or(FAR_FUTURE)
                .min(FAR_FUTURE),
        ))
    }
}

/// Where the keys that check tokens come from.
enum Keys {
    /// No key: every token is refused.
    None,
    /// One configured key of one algorithm.
    Static(Box<DecodingKey>, Algorithm),
    /// Keys fetched from a JWKS URL, chosen by the token's `kid`.
    Jwks(Arc<Jwks>),
}

/// Checks tokens with the configured key, or refuses every token when none is configured.
pub struct Authenticator {
    keys: Keys,
    rules: TokenRules,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let keys = match &self.keys {
            Keys::None => "none".to_owned(),
            Keys::Static(_, algorithm) => format!("{algorithm:?}"),
            Keys::Jwks(jwks) => format!("jwks {}", jwks.url()),
        };
        f.debug_struct("Authenticator")
            .field("keys", &keys)
            .field("rules", &self.rules)
            .finish()
    }
}

impl Default for Authenticator {
    fn default() -> Self {
        Authenticator::anonymous_only()
    }
}

impl Authenticator {
    /// No key: every client is anonymous, and a client that presents a token is refused.
    pub fn anonymous_only() -> Self {
        Authenticator {
            keys: Keys::None,
            rules: TokenRules::default(),
        }
    }

    /// HS256 tokens signed with `secret`.
    pub fn hs256(secret: &[u8]) -> Result<Self, KeyError> {
        if secret.len() < 16 {
            return Err(KeyError(
                "the HS256 secret must be at least 16 bytes".to_owned(),
            ));
        }
        Ok(Authenticator::with(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// RS256 or ES256 tokens, checked with the PEM public key (RSA or P-256 EC).
    pub fn public_key_pem(pem: &[u8]) -> Result<Self, KeyError> {
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Authenticator::with(key, Algorithm::RS256));
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(key) => Ok(Authenticator::with(key, Algorithm::ES256)),
            Err(e) => Err(KeyError(format!(
                "not an RSA or EC public key in PEM form: {e}"
            ))),
        }
    }

    /// RS256 or ES256 tokens checked with the keys of a JWKS, chosen by `kid`.
    pub fn jwks(jwks: Arc<Jwks>) -> Self {
        Authenticator {
            keys: Keys::Jwks(jwks),
            rules: TokenRules::default(),
        }
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        Authenticator {
            keys: Keys::Static(Box::new(key), algorithm),
            rules: TokenRules::default(),
        }
    }

    /// The same keys, checking tokens with `rules`.
    pub fn with_rules(mut self, rules: TokenRules) -> Self {
        self.rules = rules;
        self
    }

    /// Whether a key is configured, i.e. whether a client can be anything but anonymous.
    pub fn is_configured(&self) -> bool {
        !matches!(self.keys, Keys::None)
    }

    /// The identity a request presents: anonymous without a token.
    ///
    /// With a JWKS, only keys already fetched are used; [`Authenticator::verify`]
    /// also fetches the set again for an unknown `kid`.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(token) = token else {
            return Ok(Identity::anonymous());
        };
        match &self.keys {
            Keys::None => Err(no_key()),
            Keys::Static(key, algorithm) => self.check(token, key, *algorithm),
            Keys::Jwks(jwks) => {
                let (key, algorithm) = jwks.cached(&kid_of(token)?)?;
                self.check(token, &key, algorithm)
            }
        }
    }

    /// Like [`Authenticator::authenticate`], but a token whose `kid` the cached JWKS
    /// does not know makes the set be fetched again (rate limited, see [`Jwks`]).
    pub async fn verify(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(token) = token else {
            return Ok(Identity::anonymous());
        };
        let Keys::Jwks(jwks) = &self.keys else {
            return self.authenticate(Some(token));
        };
        let (key, algorithm) = jwks.key(&kid_of(token)?).await?;
        self.check(token, &key, algorithm)
    }

    fn check(
        &self,
        token: &str,
        key: &DecodingKey,
        algorithm: Algorithm,
    ) -> Result<Identity, AuthError> {
        let validation = self.rules.validation(algorithm);
        let claims = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?
            .claims;
        if claims.sub.is_empty() {
            return Err(AuthError::invalid("empty sub"));
        }
        let left = self
            .rules
            .check_times(claims.exp.as_ref(), claims.nbf.as_ref(), unix_now())?;
        Ok(Identity {
            user: Some(claims.sub),
            channels: claims.channels,
            roles: claims.roles,
            expires_at: left.map(|left| SystemTime::now() + left),
        })
    }
}

fn no_key() -> AuthError {
    AuthError::invalid("this gateway has no JWT key configured")
}

/// The `kid` of a token's header, which a JWKS needs to pick the key.
fn kid_of(token: &str) -> Result<String, AuthError> {
    let header =
        jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
    header
        .kid
        .ok_or_else(|| AuthError::invalid("the token names no key (kid) of the JWKS"))
}

/// Seconds since the UNIX epoch, as a float (a clock before 1970 reads as 0).
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// The token a request carries: `Authorization: Bearer …` wins over the `token` query parameter.
pub fn token_from<'a>(headers: &'a HeaderMap, query_token: Option<&'a str>) -> Option<&'a str> {
    let header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    header.or(query_token).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    const SECRET: &[u8] = b"a-test-secret-of-32-bytes-length";

    fn now() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn token(claims: serde_json::Value, secret: &[u8]) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    }

    fn hs(rules: TokenRules) -> Authenticator {
        Authenticator::hs256(SECRET).unwrap().with_rules(rules)
    }

    #[test]
    fn a_valid_token_gives_its_user_and_channels() {
        let auth = Authenticator::hs256(SECRET).unwrap();
        let identity = auth
            .authenticate(Some(&token(
                json!({"sub": "42", "exp": now() + 60, "channels": ["news:*"]}),
                SECRET,
            )))
            .unwrap();
        assert_eq!(identity.user.as_deref(), Some("42"));
        assert_eq!(identity.channels, ["news:*"]);
        assert!(identity.expires_in().unwrap() > Duration::from_secs(30));
    }

    #[test]
    fn expired_wrongly_signed_and_malformed_tokens_are_refused() {
        let auth = Authenticator::hs256(SECRET).unwrap();
        assert_eq!(
            auth.authenticate(Some(&token(json!({"sub": "42", "exp": now() - 5}), SECRET))),
            Err(AuthError::Expired)
        );
        assert!(matches!(
            auth.authenticate(Some(&token(
                json!({"sub": "42"}),
                b"another-secret-of-32-bytes-long!"
            ))),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.authenticate(Some("not.a.token")),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            auth.authenticate(Some(&token(json!({"exp": now() + 60}), SECRET))),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn no_token_is_anonymous_and_no_key_refuses_tokens() {
        assert_eq!(
            Authenticator::hs256(SECRET).unwrap().authenticate(None),
            Ok(Identity::anonymous())
        );
        assert!(matches!(
            Authenticator::anonymous_only().authenticate(Some("x")),
            Err(AuthError::Invalid(_))
        ));
        assert!(Authenticator::hs256(b"short").is_err());
    }

    /// The time rules, at a fixed `now`, for every edge of a NumericDate.
    #[test]
    fn exp_is_any_numeric_date_and_never_overflows() {
        let rules = TokenRules::default();
        let now = 1_700_000_000.0;
        let check = |exp: Value| rules.check_times(Some(&exp), None, now);
        // Fractional: valid per RFC 7519, and its fraction counts.
        assert_eq!(
            check(json!(now + 1.5)).unwrap(),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(check(json!(now - 0.5)), Err(AuthError::Expired));
        // Exactly now is no longer "before exp".
        assert_eq!(check(json!(now)), Err(AuthError::Expired));
        assert_eq!(check(json!(-1)), Err(AuthError::Expired));
        assert_eq!(check(json!(i64::MIN)), Err(AuthError::Expired));
        // 2^63, u64::MAX and 1e300 are far future, clamped — no overflow anywhere.
        for huge in [json!(1_u64 << 63), json!(u64::MAX), json!(1e300)] {
            assert_eq!(check(huge.clone()).unwrap(), Some(FAR_FUTURE), "{huge}");
        }
        // Not numbers: refused with a clear error.
        for bad in [
            json!("1700000100"),
            json!(null),
            json!(true),
            json!([1]),
            json!({}),
        ] {
            match check(bad.clone()) {
                Err(AuthError::Invalid(why)) => assert!(why.contains("NumericDate"), "{why}"),
                other => panic!("{bad} gave {other:?}"),
            }
        }
        // No exp: the token does not expire (unchanged policy).
        assert_eq!(rules.check_times(None, None, now), Ok(None));
    }

    #[test]
    fn nbf_is_enforced_with_the_leeway() {
        let now = 1_700_000_000.0;
        let strict = TokenRules::default();
        let lenient = TokenRules {
            leeway: Duration::from_secs(30),
            ..TokenRules::default()
        };
        let nbf = |rules: &TokenRules, nbf: Value| rules.check_times(None, Some(&nbf), now);
        assert_eq!(nbf(&strict, json!(now)), Ok(None));
        assert_eq!(nbf(&strict, json!(-5.25)), Ok(None));
        assert!(
            matches!(nbf(&strict, json!(now + 0.5)), Err(AuthError::Invalid(why)) if why.contains("nbf"))
        );
        assert!(matches!(
            nbf(&strict, json!(1e300)),
            Err(AuthError::Invalid(_))
        ));
        assert_eq!(nbf(&lenient, json!(now + 29.0)), Ok(None));
        assert!(matches!(
            nbf(&lenient, json!(now + 31.0)),
            Err(AuthError::Invalid(_))
        ));
        assert!(
            matches!(nbf(&strict, json!("soon")), Err(AuthError::Invalid(why)) if why.contains("NumericDate"))
        );
    }

    #[test]
    fn the_leeway_extends_exp_and_the_connection_deadline() {
        let now = 1_700_000_000.0;
        let lenient = TokenRules {
            leeway: Duration::from_secs(30),
            ..TokenRules::default()
        };
        assert_eq!(
            lenient.check_times(Some(&json!(now - 10.0)), None, now),
            Ok(Some(Duration::from_secs(20)))
        );
        assert_eq!(
            lenient.check_times(Some(&json!(now - 31.0)), None, now),
            Err(AuthError::Expired)
        );
        // Through a real token: expired 10 s ago, accepted with 30 s of leeway.
        let auth = hs(lenient);
        let identity = auth
            .authenticate(Some(&token(
                json!({"sub": "1", "exp": now_f() - 10.0}),
                SECRET,
            )))
            .unwrap();
        assert!(identity.expires_in().unwrap() <= Duration::from_secs(20));
        assert_eq!(
            hs(TokenRules::default()).authenticate(Some(&token(
                json!({"sub": "1", "exp": now_f() - 10.0}),
                SECRET
            ))),
            Err(AuthError::Expired)
        );
    }

    fn now_f() -> f64 {
        unix_now()
    }

    #[test]
    fn signed_tokens_with_extreme_claims_neither_panic_nor_overflow() {
        let auth = hs(TokenRules::default());
        // A fractional exp, refused by the code before this change.
        let identity = auth
            .authenticate(Some(&token(
                json!({"sub": "1", "exp": now_f() + 60.5}),
                SECRET,
            )))
            .unwrap();
        assert!(identity.expires_in().unwrap() > Duration::from_secs(59));
        // exp ≥ 2^63: used to panic in the expiry timer ("overflow when adding duration to instant").
        for huge in [json!(1_u64 << 63), json!(u64::MAX), json!(1e300)] {
            let identity = auth
                .authenticate(Some(&token(json!({"sub": "1", "exp": huge}), SECRET)))
                .unwrap();
            assert!(identity.expires_in().unwrap() <= FAR_FUTURE);
            assert!(identity.deadline().unwrap() > tokio::time::Instant::now());
        }
        // A number JSON cannot hold in an f64 is a malformed token, not a panic.
        let forged = forge_hs256(r#"{"sub":"1","exp":1e400}"#);
        assert!(matches!(
            auth.authenticate(Some(&forged)),
            Err(AuthError::Invalid(_))
        ));
        let string_exp = token(json!({"sub": "1", "exp": "never"}), SECRET);
        assert!(
            matches!(auth.authenticate(Some(&string_exp)), Err(AuthError::Invalid(why)) if why.contains("NumericDate"))
        );
    }

    /// An HS256 token over a raw claims text (for JSON serde_json would not write).
    fn forge_hs256(claims: &str) -> String {
        use jsonwebtoken::crypto::sign;
        let b64 = |bytes: &[u8]| {
            let mut out = String::new();
            const ALPHABET: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                    << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        };
        let signing_input = format!(
            "{}.{}",
            b64(br#"{"alg":"HS256","typ":"JWT"}"#),
            b64(claims.as_bytes())
        );
        let signature = sign(
            signing_input.as_bytes(),
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
        .unwrap();
        format!("{signing_input}.{signature}")
    }

    #[test]
    fn audience_and_issuer_are_checked_when_configured() {
        let auth = hs(TokenRules {
            audiences: vec!["herald".into(), "herald-staging".into()],
            issuers: vec!["https://id.example".into()],
            ..TokenRules::default()
        });
        let ok = |claims: Value| auth.authenticate(Some(&token(claims, SECRET)));
        let iss = "https://id.example";
        assert!(ok(json!({"sub": "1", "aud": "herald", "iss": iss})).is_ok());
        assert!(ok(json!({"sub": "1", "aud": ["web", "herald-staging"], "iss": iss})).is_ok());
        for bad in [
            json!({"sub": "1", "aud": "web", "iss": iss}),
            json!({"sub": "1", "iss": iss}),
            json!({"sub": "1", "aud": "herald", "iss": "https://evil.example"}),
            json!({"sub": "1", "aud": "herald"}),
        ] {
            assert!(
                matches!(ok(bad.clone()), Err(AuthError::Invalid(_))),
                "{bad}"
            );
        }
        // Unset, neither is looked at (as before): a token with an audience is still accepted.
        let open = hs(TokenRules::default());
        assert!(
            open.authenticate(Some(&token(
                json!({"sub": "1", "aud": "x", "iss": "y"}),
                SECRET
            )))
            .is_ok()
        );
    }

    fn key(name: &str) -> Vec<u8> {
        std::fs::read(format!("{}/tests/keys/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    }

    #[test]
    fn rs256_and_es256_tokens_are_checked_with_the_public_key() {
        for (algorithm, private, public) in [
            (Algorithm::RS256, "rs256-private.pem", "rs256-public.pem"),
            (Algorithm::ES256, "es256-private.pem", "es256-public.pem"),
        ] {
            let encoding = match algorithm {
                Algorithm::RS256 => EncodingKey::from_rsa_pem(&key(private)).unwrap(),
                _ => EncodingKey::from_ec_pem(&key(private)).unwrap(),
            };
            let auth = Authenticator::public_key_pem(&key(public)).unwrap();
            let signed = encode(
                &Header::new(algorithm),
                &json!({"sub": "7", "exp": now() + 60}),
                &encoding,
            )
            .unwrap();
            assert_eq!(
                auth.authenticate(Some(&signed)).unwrap().user.as_deref(),
                Some("7"),
                "{algorithm:?}"
            );
            // An HS256 token is refused by a public-key gateway, whatever its secret.
            let hs = token(json!({"sub": "7"}), SECRET);
            assert!(
                matches!(auth.authenticate(Some(&hs)), Err(AuthError::Invalid(_))),
                "{algorithm:?}"
            );
        }
        assert!(Authenticator::public_key_pem(b"not a key").is_err());
    }

    #[test]
    fn the_header_wins_over_the_query() {
        let mut headers = HeaderMap::new();
        assert_eq!(token_from(&headers, Some("q")), Some("q"));
        headers.insert(
            axum::http::header::AUTHORIZATION,
            "Bearer h".parse().unwrap(),
        );
        assert_eq!(token_from(&headers, Some("q")), Some("h"));
    }
}
