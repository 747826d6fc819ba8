//! Which channels a client may read, and which keep history.
//!
//! One place decides authorization, so the WebSocket and SSE transports can
//! never disagree: a user may always read its own `user:<sub>` channel and
//! never another user's; otherwise a channel is readable when the token grants
//! it (`channels` claim) or configuration marks it public.

use herald_broker::history::pattern_matches;
use herald_broker::{HistoryPolicy, HistoryRules};
use herald_protocol::ChannelName;

use crate::auth::Identity;

/// The namespace of personal channels.
pub const PERSONAL_NAMESPACE: &str = "user";

/// The channel rules of one gateway.
#[derive(Debug, Clone, Default)]
pub struct ChannelPolicy {
    /// Which channels keep history, and how much.
    pub history: HistoryRules,
    /// Channel names or patterns anyone, even anonymous, may read.
    pub public: Vec<String>,
}

impl ChannelPolicy {
    /// The history `channel` keeps, if any.
    pub fn history(&self, channel: &ChannelName) -> Option<HistoryPolicy> {
        self.history.policy(channel)
    }

    /// Whether `identity` may subscribe to `channel`; the error says why not.
    pub fn authorize(&self, identity: &Identity, channel: &ChannelName) -> Result<(), String> {
        if let Some(owner) = channel
            .as_str()
            .strip_prefix(PERSONAL_NAMESPACE)
            .and_then(|rest| rest.strip_prefix(':'))
        {
            return match &identity.user {
                Some(user) if user == owner => Ok(()),
                Some(_) => Err(format!("{channel} is another user's personal channel")),
                None => Err(format!(
                    "{channel} is a personal channel; connect with a token"
                )),
            };
        }
        let granted = identity
            .channels
            .iter()
            .any(|pattern| pattern_matches(pattern, channel.as_str()));
        if granted || self.is_public(channel) {
            return Ok(());
        }
        Err(match identity.user {
            Some(_) => format!("the token does not grant {channel}"),
            None => format!("{channel} is not public; connect with a token that grants it"),
        })
    }

    /// Whether configuration marks `channel` public.
    pub fn is_public(&self, channel: &ChannelName) -> bool {
        self.public
            .iter()
            .any(|pattern| pattern_matches(pattern, channel.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(name: &str) -> ChannelName {
        ChannelName::new(name).unwrap()
    }

    fn user(id: &str, channels: &[&str]) -> Identity {
        Identity {
            user: Some(id.to_owned()),
            channels: channels.iter().map(|c| (*c).to_owned()).collect(),
            expires_at: None,
            roles: Vec::new(),
        }
    }

    #[test]
    fn personal_channels_belong_to_their_user_only() {
        let policy = ChannelPolicy {
            public: vec!["*".into()],
            ..ChannelPolicy::default()
        };
        assert!(policy.authorize(&user("42", &[]), &ch("user:42")).is_ok());
        // Not even a public wildcard or a grant opens another user's channel.
        assert!(
            policy
                .authorize(&user("42", &["user:*"]), &ch("user:7"))
                .is_err()
        );
        assert!(
            policy
                .authorize(&Identity::anonymous(), &ch("user:42"))
                .is_err()
        );
    }

    #[test]
    fn public_channels_are_open_and_grants_open_the_rest() {
        let policy = ChannelPolicy {
            public: vec!["news:*".into()],
            ..ChannelPolicy::default()
        };
        assert!(
            policy
                .authorize(&Identity::anonymous(), &ch("news:sport"))
                .is_ok()
        );
        assert!(
            policy
                .authorize(&Identity::anonymous(), &ch("orders"))
                .is_err()
        );
        assert!(
            policy
                .authorize(&user("1", &["orders"]), &ch("orders"))
                .is_ok()
        );
        assert!(
            policy
                .authorize(&user("1", &["ord*"]), &ch("orders:eu"))
                .is_ok()
        );
        assert!(policy.authorize(&user("1", &[]), &ch("orders")).is_err());
    }
}
