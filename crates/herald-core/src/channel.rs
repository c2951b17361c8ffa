//! Validated channel and event names. The namespace of a channel is the text before its first
//! `:`; channels without one belong to the default namespace.

use herald_protocol::RESERVED_EVENT_PREFIX;
use std::fmt;
use std::sync::Arc;

/// Longest channel name, in bytes.
pub const MAX_CHANNEL_BYTES: usize = 255;
/// Longest event name, in bytes.
pub const MAX_EVENT_BYTES: usize = 64;

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// Empty name.
    #[error("the {0} name is empty")]
    Empty(&'static str),
    /// Too long.
    #[error("the {kind} name is {len} bytes; the limit is {max}")]
    TooLong {
        /// `channel` or `event`.
        kind: &'static str,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A character outside the allowed set.
    #[error("the {kind} name contains {ch:?}; allowed are ASCII letters, digits and {allowed}")]
    BadChar {
        /// `channel` or `event`.
        kind: &'static str,
        /// The offending character.
        ch: char,
        /// The allowed punctuation.
        allowed: &'static str,
    },
    /// The event name uses the reserved `herald.` prefix.
    #[error("event names starting with `herald.` are reserved")]
    Reserved,
}

const CHANNEL_PUNCT: &str = "_-:.#@=/";
const EVENT_PUNCT: &str = "_-:.";

fn check(s: &str, kind: &'static str, max: usize, punct: &'static str) -> Result<(), ChannelError> {
    if s.is_empty() {
        return Err(ChannelError::Empty(kind));
    }
    if s.len() > max {
        return Err(ChannelError::TooLong {
            kind,
            len: s.len(),
            max,
        });
    }
    if let Some(ch) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || punct.contains(*c)))
    {
        return Err(ChannelError::BadChar {
            kind,
            ch,
            allowed: punct,
        });
    }
    Ok(())
}

/// A valid channel name: 1 to 255 bytes of ASCII letters, digits and `_-:.#@=/`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ChannelName(Arc<str>);

impl ChannelName {
    /// Validates `s` as a channel name.
    pub fn parse(s: &str) -> Result<Self, ChannelError> {
        check(s, "channel", MAX_CHANNEL_BYTES, CHANNEL_PUNCT)?;
        Ok(Self(Arc::from(s)))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The namespace: the text before the first `:`, or `""` for the default namespace.
    pub fn namespace(&self) -> &str {
        self.0.split_once(':').map_or("", |(ns, _)| ns)
    }
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

/// A valid event type: 1 to 64 bytes of ASCII letters, digits and `_-:.`, not starting with
/// `herald.`. Defaults to `message`.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct EventName(Arc<str>);

impl EventName {
    /// Validates `s` as an event name.
    pub fn parse(s: &str) -> Result<Self, ChannelError> {
        check(s, "event", MAX_EVENT_BYTES, EVENT_PUNCT)?;
        if s.starts_with(RESERVED_EVENT_PREFIX) {
            return Err(ChannelError::Reserved);
        }
        Ok(Self(Arc::from(s)))
    }

    /// The default event type, `message`.
    pub fn message() -> Self {
        Self(Arc::from("message"))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_validated() {
        let c = ChannelName::parse("job_progress:job_123").unwrap();
        assert_eq!(c.namespace(), "job_progress");
        assert_eq!(ChannelName::parse("plain").unwrap().namespace(), "");
        assert_eq!(ChannelName::parse("a:b:c").unwrap().namespace(), "a");
        assert!(ChannelName::parse("alerts#user_789").is_ok());
        assert_eq!(ChannelName::parse(""), Err(ChannelError::Empty("channel")));
        assert!(matches!(
            ChannelName::parse("a b"),
            Err(ChannelError::BadChar { ch: ' ', .. })
        ));
        assert!(matches!(
            ChannelName::parse("a,b"),
            Err(ChannelError::BadChar { .. })
        ));
        assert!(matches!(
            ChannelName::parse("é"),
            Err(ChannelError::BadChar { .. })
        ));
        assert!(ChannelName::parse(&"x".repeat(255)).is_ok());
        assert!(matches!(
            ChannelName::parse(&"x".repeat(256)),
            Err(ChannelError::TooLong { .. })
        ));
    }

    #[test]
    fn event_names_are_validated() {
        assert!(EventName::parse("tts-completed").is_ok());
        assert_eq!(
            EventName::parse("herald.reset"),
            Err(ChannelError::Reserved)
        );
        assert!(EventName::parse("a\nb").is_err());
        assert!(EventName::parse(&"e".repeat(65)).is_err());
    }
}
