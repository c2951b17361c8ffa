//! Settings that must never be shown: [`Secret`] (an API key, an HMAC secret, a bot token) and
//! [`SecretUrl`] (an engine URL that may carry a password). Each redacts itself wherever it is
//! printed — `Debug`, and serialization, which is how `herald check-config --print` shows the
//! effective configuration — so no list of fields to hide has to be kept in step with the
//! configuration. The value itself is reached through `Deref` (`&str`).

use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::ops::Deref;

/// What a secret shows instead of itself.
pub const REDACTED: &str = "<redacted>";

/// A secret string: read from configuration, shown as `<redacted>`.
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
}

impl Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(REDACTED)
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(REDACTED)
    }
}

impl From<&str> for Secret {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for Secret {
    fn from(s: String) -> Self {
        Self(s)
    }
}

/// A URL whose credentials are secret: `scheme://user:password@host` is shown as
/// `scheme://user:***@host` (and a lone `token@` as `***@`).
#[derive(Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretUrl(String);

impl SecretUrl {
    /// Wraps `url`.
    pub fn new(url: impl Into<String>) -> Self {
        Self(url.into())
    }

    /// The URL with its credentials replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = &self.0;
        let Some((scheme, rest)) = url.split_once("://") else {
            return url.clone();
        };
        let (authority, tail) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        let Some((creds, host)) = authority.rsplit_once('@') else {
            return url.clone();
        };
        let creds = match creds.split_once(':') {
            Some((user, _)) => format!("{user}:***"),
            None => "***".to_owned(),
        };
        format!("{scheme}://{creds}@{host}{tail}")
    }
}

impl Deref for SecretUrl {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.redacted())
    }
}

/// Shown (in logs and errors) without its credentials.
impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl Serialize for SecretUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.redacted())
    }
}

impl From<&str> for SecretUrl {
    fn from(s: &str) -> Self {
        Self::new(s)
    }
}

impl From<String> for SecretUrl {
    fn from(s: String) -> Self {
        Self(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_themselves() {
        let s = Secret::from("hunter2-hunter2-hunter2");
        assert_eq!(&*s, "hunter2-hunter2-hunter2");
        assert_eq!(format!("{s:?}"), REDACTED);
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        let back: Secret = serde_json::from_str("\"abc\"").unwrap();
        assert_eq!(&*back, "abc");
    }

    #[test]
    fn url_credentials_are_redacted() {
        let shown = |u: &str| SecretUrl::from(u).redacted();
        assert_eq!(shown("redis://:pw@h:1/0"), "redis://:***@h:1/0");
        assert_eq!(shown("redis://u:pw@h:1"), "redis://u:***@h:1");
        assert_eq!(shown("nats://token@h:4222"), "nats://***@h:4222");
        assert_eq!(shown("redis://h:1"), "redis://h:1");
        let url = SecretUrl::from("redis://u:pw@h:1");
        assert_eq!(&*url, "redis://u:pw@h:1");
        assert_eq!(url.to_string(), "redis://u:***@h:1");
        assert_eq!(format!("{url:?}"), "\"redis://u:***@h:1\"");
        assert_eq!(
            serde_json::to_string(&url).unwrap(),
            "\"redis://u:***@h:1\""
        );
    }
}
