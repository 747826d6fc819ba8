//! The channel-name grammar, checked once where a name enters the system.
//!
//! A channel name is 1 to [`MAX_CHANNEL_LEN`] bytes of ASCII letters, digits and
//! `_ - . : @ = /`. A `:` separates a namespace from the rest (`news:sport`,
//! `user:42`). Anything else is refused, so that names are safe to use as
//! Redis keys, in logs and in URLs without escaping.

use std::fmt;
use std::sync::Arc;

/// The longest channel name accepted, in bytes.
///
/// Long enough for `namespace:` plus a UUID or a long id, short enough that
/// a client cannot make the gateway hold kilobytes per subscription.
pub const MAX_CHANNEL_LEN: usize = 128;

/// Why a string is not a channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelNameError {
    /// The name was empty.
    #[error("channel name is empty")]
    Empty,
    /// The name was longer than [`MAX_CHANNEL_LEN`].
    #[error("channel name is longer than {MAX_CHANNEL_LEN} bytes")]
    TooLong,
    /// The name held a character outside the grammar.
    #[error("channel name contains {0:?}; allowed are ASCII letters, digits and _-.:@=/")]
    BadCharacter(char),
}

/// A validated channel name, cheap to clone and share between subscriptions.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Validates `name` against the grammar.
    pub fn new(name: &str) -> Result<Self, ChannelNameError> {
        if name.is_empty() {
            return Err(ChannelNameError::Empty);
        }
        if name.len() > MAX_CHANNEL_LEN {
            return Err(ChannelNameError::TooLong);
        }
        if let Some(bad) = name.chars().find(|c| !is_channel_char(*c)) {
            return Err(ChannelNameError::BadCharacter(bad));
        }
        Ok(ChannelName(Arc::from(name)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before the first `:`, if there is one (`news` for `news:sport`).
    pub fn namespace(&self) -> Option<&str> {
        self.0.split_once(':').map(|(ns, _)| ns)
    }
}

fn is_channel_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':' | '@' | '=' | '/')
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl std::str::FromStr for ChannelName {
    type Err = ChannelNameError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelName::new(s)
    }
}

impl AsRef<str> for ChannelName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_namespaced_and_personal_names() {
        for ok in ["events", "news:sport", "user:42", "a.b-c_d@e=f/g"] {
            assert_eq!(
                ChannelName::new(ok).map(|c| c.to_string()),
                Ok(ok.to_owned())
            );
        }
        assert_eq!(
            ChannelName::new("news:sport").unwrap().namespace(),
            Some("news")
        );
        assert_eq!(ChannelName::new("events").unwrap().namespace(), None);
    }

    #[test]
    fn refuses_what_is_outside_the_grammar() {
        assert_eq!(ChannelName::new(""), Err(ChannelNameError::Empty));
        assert_eq!(
            ChannelName::new(&"a".repeat(129)),
            Err(ChannelNameError::TooLong)
        );
        assert!(ChannelName::new(&"a".repeat(128)).is_ok());
        assert_eq!(
            ChannelName::new("a b"),
            Err(ChannelNameError::BadCharacter(' '))
        );
        assert_eq!(
            ChannelName::new("news:*"),
            Err(ChannelNameError::BadCharacter('*'))
        );
        assert_eq!(
            ChannelName::new("é"),
            Err(ChannelNameError::BadCharacter('é'))
        );
    }
}
