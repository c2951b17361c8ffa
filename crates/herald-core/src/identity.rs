//! Who a connection is: the user a verified token names, what it may read and publish, and
//! when it stops being valid. herald-auth builds an [`Identity`] from a token; sessions and
//! namespaces decide with it.

use crate::ChannelName;
use serde_json::value::RawValue;
use std::sync::Arc;

/// Most grant patterns one identity may carry (per list).
pub const MAX_GRANTS: usize = 256;

/// Channel patterns: an exact channel name, or a prefix ending in `*` (`room:*`; `*` alone
/// matches every channel).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Grants(Vec<Box<str>>);

/// Why a grant pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    /// Too many patterns.
    #[error("at most {MAX_GRANTS} channel patterns are allowed")]
    TooMany,
    /// A pattern that is neither a channel name nor a prefix ending in `*`.
    #[error("{0:?} is not a channel name or a prefix ending in `*`")]
    Bad(String),
}

impl Grants {
    /// Validates patterns.
    pub fn new<I, S>(patterns: I) -> Result<Self, GrantError>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut out = Vec::new();
        for p in patterns {
            let p = p.as_ref();
            if out.len() == MAX_GRANTS {
                return Err(GrantError::TooMany);
            }
            let ok = match p.strip_suffix('*') {
                Some("") => true,
                Some(prefix) => ChannelName::parse(prefix).is_ok(),
                None => ChannelName::parse(p).is_ok(),
            };
            if !ok {
                return Err(GrantError::Bad(p.chars().take(300).collect()));
            }
            out.push(Box::from(p));
        }
        Ok(Self(out))
    }

    /// Whether a pattern matches `channel`.
    pub fn allows(&self, channel: &ChannelName) -> bool {
        let c = channel.as_str();
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => c.starts_with(prefix),
            None => **p == *c,
        })
    }

    /// The patterns.
    pub fn patterns(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|p| &**p)
    }

    /// No patterns.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An authenticated user, as a verified connection token describes it.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The user id (the token's `sub`).
    pub user: Arc<str>,
    /// Optional public information shown in presence (a JSON object).
    pub info: Option<Arc<RawValue>>,
    /// Channels the user may subscribe to (and read history and presence of) where a
    /// namespace asks for a grant.
    pub subscribe: Grants,
    /// Channels the user may publish to from the client where a namespace asks for a grant.
    pub publish: Grants,
    /// When the identity stops being valid (Unix seconds), if ever.
    pub expires_at: Option<u64>,
    /// When the user logged in (Unix seconds): the token's `auth_time`, else its `iat`. A
    /// renewed token keeps it, so a session's age is bounded however often it is renewed.
    pub session_start: Option<u64>,
}

/// The user a channel belongs to: the text after the first `#` (`alerts#user_789` → `user_789`).
/// Such a channel is readable only by that user.
pub fn channel_owner(channel: &ChannelName) -> Option<&str> {
    channel.as_str().split_once('#').map(|(_, user)| user)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ch(s: &str) -> ChannelName {
        ChannelName::parse(s).unwrap()
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let g = Grants::new(["room:42", "chat:*"]).unwrap();
        assert!(g.allows(&ch("room:42")));
        assert!(!g.allows(&ch("room:420")));
        assert!(g.allows(&ch("chat:lobby")));
        assert!(!g.allows(&ch("chatter")));
        assert!(Grants::new(["*"]).unwrap().allows(&ch("anything")));
        assert!(!Grants::default().allows(&ch("x")));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(matches!(Grants::new(["a b"]), Err(GrantError::Bad(_))));
        assert!(matches!(Grants::new(["ro*m"]), Err(GrantError::Bad(_))));
        assert!(matches!(Grants::new([""]), Err(GrantError::Bad(_))));
        let many: Vec<String> = (0..=MAX_GRANTS).map(|i| format!("c{i}")).collect();
        assert_eq!(Grants::new(&many), Err(GrantError::TooMany));
    }

    #[test]
    fn the_owner_follows_the_first_hash() {
        assert_eq!(channel_owner(&ch("alerts#user_789")), Some("user_789"));
        assert_eq!(channel_owner(&ch("alerts")), None);
    }
}
