//! Service-to-service trust: who may call a write route, by bearer API key.
//!
//! Herald trusts users by JWT at the gateway only; the services behind it
//! (the content service's `POST /api/content`, the notifier's `POST /invoke`)
//! trust their callers by a shared key sent as `Authorization: Bearer KEY`.
//! Keys are compared in constant time, so response timing tells an attacker
//! nothing about how much of a guess was right. One type serves both services
//! so that both answer a missing or wrong key the same way.

use axum::http::HeaderMap;
use axum::http::header::AUTHORIZATION;
use subtle::ConstantTimeEq;

/// The keys a route accepts. Empty means the route is open to every caller:
/// the caller of [`ApiKeys::new`] decides whether that is allowed.
#[derive(Clone, Default)]
pub struct ApiKeys {
    /// The accepted keys, never empty strings.
    keys: Vec<String>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a key: Debug output ends up in logs.
        f.debug_struct("ApiKeys")
            .field("keys", &self.keys.len())
            .finish()
    }
}

/// Why a request was refused; every case is answered `401 {"error":"unauthorized"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyRefusal {
    /// No `Authorization: Bearer …` header.
    #[error("this route needs an API key: send Authorization: Bearer KEY")]
    Missing,
    /// A key was sent, but it is not one of the configured keys.
    #[error("unknown API key")]
    Unknown,
}

impl KeyRefusal {
    /// The stable error code of every refusal.
    pub const CODE: &'static str = "unauthorized";
}

impl ApiKeys {
    /// The keys given, less empty ones (an empty `HERALD_*_API_KEYS` must not open a route by accident
    /// nor be a key anyone can guess).
    pub fn new<I, S>(keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let keys = keys
            .into_iter()
            .map(Into::into)
            .map(|key| key.trim().to_owned())
            .filter(|key| !key.is_empty())
            .collect();
        ApiKeys { keys }
    }

    /// Whether no key is configured, i.e. the route is open.
    pub fn is_open(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether `headers` carry one of the keys; always `Ok` when the route [is open](Self::is_open).
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), KeyRefusal> {
        if self.is_open() {
            return Ok(());
        }
        let presented = headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|key| !key.is_empty())
            .ok_or(KeyRefusal::Missing)?;
        if self.accepts(presented) {
            Ok(())
        } else {
            Err(KeyRefusal::Unknown)
        }
    }

    /// Whether `presented` is one of the keys; every key is compared, in constant time.
    pub fn accepts(&self, presented: &str) -> bool {
        self.keys.iter().fold(false, |found, key| {
            found | bool::from(key.as_bytes().ct_eq(presented.as_bytes()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn bearer(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        headers
    }

    #[test]
    fn no_keys_is_open_and_empty_keys_do_not_count() {
        assert!(ApiKeys::default().is_open());
        assert!(ApiKeys::new(["", "  "]).is_open());
        assert_eq!(ApiKeys::default().authorize(&HeaderMap::new()), Ok(()));
    }

    #[test]
    fn only_a_configured_key_passes() {
        let keys = ApiKeys::new(["k1", "second-key"]);
        assert_eq!(keys.authorize(&bearer("Bearer k1")), Ok(()));
        assert_eq!(keys.authorize(&bearer("Bearer second-key ")), Ok(()));
        assert_eq!(
            keys.authorize(&bearer("Bearer k2")),
            Err(KeyRefusal::Unknown)
        );
        assert_eq!(
            keys.authorize(&bearer("Bearer k1x")),
            Err(KeyRefusal::Unknown)
        );
        assert_eq!(
            keys.authorize(&bearer("Basic k1")),
            Err(KeyRefusal::Missing)
        );
        assert_eq!(keys.authorize(&bearer("Bearer ")), Err(KeyRefusal::Missing));
        assert_eq!(keys.authorize(&HeaderMap::new()), Err(KeyRefusal::Missing));
    }

    #[test]
    fn debug_never_shows_a_key() {
        let text = format!("{:?}", ApiKeys::new(["super-secret"]));
        assert!(!text.contains("super-secret"), "{text}");
    }
}
