//! Who a client is: JWT verification at the edge.
//!
//! A token is checked once, when the connection opens. What comes out is an
//! [`Identity`] — the user (`sub`), the channels the token grants, and when it
//! expires — which the rest of the gateway trusts without looking at the
//! token again. Which channels an identity may read is decided in
//! [`crate::policy`].

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The verified facts about a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// The user id from `sub`; `None` for an anonymous client.
    pub user: Option<String>,
    /// Channel names or patterns (`news:*`) the token grants.
    pub channels: Vec<String>,
    /// When the token expires, if it does.
    pub expires_at: Option<SystemTime>,
    /// The token's `roles` claim (e.g. `content:write`, which the content proxy requires for writes).
    pub roles: Vec<String>,
}

impl Identity {
    /// An anonymous client: public channels only.
    pub fn anonymous() -> Self {
        Identity::default()
    }

    /// How long until the token expires, if it does (zero if it already has).
    pub fn expires_in(&self) -> Option<Duration> {
        self.expires_at.map(|at| {
            at.duration_since(SystemTime::now())
                .unwrap_or(Duration::ZERO)
        })
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Malformed, wrongly signed, of a wrong algorithm, or no key is configured to check it.
    #[error("invalid token: {0}")]
    Invalid(String),
    /// The token's `exp` has passed.
    #[error("token expired")]
    Expired,
}

/// A key that checks tokens could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("JWT key: {0}")]
pub struct KeyError(String);

/// The claims Herald reads.
#[derive(Debug, Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    exp: Option<u64>,
    #[serde(default)]
    channels: Vec<String>,
    #[serde(default)]
    roles: Vec<String>,
}

/// Checks tokens with the configured key, or refuses every token when none is configured.
pub struct Authenticator {
    /// The key and the rules (algorithm, expiry) a token must satisfy.
    verifier: Option<(DecodingKey, Validation)>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let algorithm = self.verifier.as_ref().map(|(_, v)| v.algorithms.clone());
        f.debug_struct("Authenticator")
            .field("algorithms", &algorithm)
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
        Authenticator { verifier: None }
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

    /// Whether a key is configured, i.e. users can be told apart (and so may be required to be).
    pub fn verifies_tokens(&self) -> bool {
        self.verifier.is_some()
    }

    fn with(key: DecodingKey, algorithm: Algorithm) -> Self {
        let mut validation = Validation::new(algorithm);
        // `exp` is enforced when present; a token without one does not expire.
        validation.required_spec_claims = HashSet::from(["sub".to_owned()]);
        validation.validate_exp = true;
        validation.leeway = 0;
        validation.validate_aud = false;
        Authenticator {
            verifier: Some((key, validation)),
        }
    }

    /// The identity a request presents: anonymous without a token.
    pub fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(token) = token else {
            return Ok(Identity::anonymous());
        };
        let Some((key, validation)) = &self.verifier else {
            return Err(AuthError::Invalid(
                "this gateway has no JWT key configured".to_owned(),
            ));
        };
        let claims = jsonwebtoken::decode::<Claims>(token, key, validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?
            .claims;
        if claims.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".to_owned()));
        }
        Ok(Identity {
            user: Some(claims.sub),
            channels: claims.channels,
            roles: claims.roles,
            expires_at: claims.exp.map(|exp| UNIX_EPOCH + Duration::from_secs(exp)),
        })
    }
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
