//! Per-namespace channel options (history, latest state, presence, client publishing) and the
//! lookup from a channel to its options.

use crate::ChannelName;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

/// Options for the channels of one namespace.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NamespaceOptions {
    /// How many publications each channel keeps for resume and history (0 keeps none).
    pub history_size: usize,
    /// How long a publication stays in history.
    #[serde(with = "humantime_serde")]
    pub history_ttl: Duration,
    /// A new subscriber (not resuming) first receives the channel's last publication.
    pub latest_state: bool,
    /// Track who is subscribed and push join/leave events.
    pub presence: bool,
    /// Allow WebSocket clients to publish to channels of this namespace.
    pub client_publish: bool,
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            history_size: 100,
            history_ttl: Duration::from_secs(600),
            latest_state: false,
            presence: false,
            client_publish: false,
        }
    }
}

impl NamespaceOptions {
    /// How many publications to keep: latest state needs at least one.
    pub fn retained(&self) -> usize {
        if self.latest_state {
            self.history_size.max(1)
        } else {
            self.history_size
        }
    }
}

/// Channel options: defaults plus named namespaces.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Options for channels whose namespace is not listed (including names without `:`).
    pub defaults: NamespaceOptions,
    /// Options per namespace (the text before the first `:` of a channel name).
    pub namespaces: BTreeMap<String, NamespaceOptions>,
}

/// Upper bound on `history_size`, to keep one channel's memory bounded.
const MAX_HISTORY_SIZE: usize = 100_000;

impl ChannelsConfig {
    /// The options that apply to `channel`.
    pub fn options(&self, channel: &ChannelName) -> &NamespaceOptions {
        self.namespaces
            .get(channel.namespace())
            .unwrap_or(&self.defaults)
    }

    /// Every problem with these options.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let all = std::iter::once(("channels.defaults".to_owned(), &self.defaults)).chain(
            self.namespaces
                .iter()
                .map(|(k, v)| (format!("channels.namespaces.{k}"), v)),
        );
        for (path, o) in all {
            if o.history_size > MAX_HISTORY_SIZE {
                out.push(format!(
                    "{path}.history_size is {}; the limit is {MAX_HISTORY_SIZE}",
                    o.history_size
                ));
            }
            if o.history_size > 0 && o.history_ttl.is_zero() {
                out.push(format!(
                    "{path}.history_ttl must be more than 0s when history_size > 0"
                ));
            }
        }
        for name in self.namespaces.keys() {
            let ok = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.#@=/".contains(c));
            if !ok {
                out.push(format!(
                    "channels.namespaces.{name:?} is not a valid namespace name (ASCII letters, digits, _-.#@=/)"
                ));
            }
        }
        out
    }
}
