//! Per-namespace channel options (history, latest state, presence, who may subscribe, publish
//! and read) and the lookup from a channel to its options.

use crate::{channel_owner, ChannelName, Grants, Identity};
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
    /// What a new subscriber (not resuming) first receives: nothing, the channel's last
    /// publication, or the last publication of each event name. Kept apart from history, until
    /// replaced (or `latest_state_ttl`).
    pub latest_state: LatestState,
    /// How long latest state is kept after its publication; 0s keeps it until replaced.
    #[serde(with = "humantime_serde")]
    pub latest_state_ttl: Duration,
    /// Who is subscribed, and what subscribers are told: nothing (`false`), each connection's
    /// join and leave (`true`), each user's (`"users"`), or totals (`"counts"`).
    pub presence: PresenceMode,
    /// Most subscribers one channel may hold (a room's cap), across the engine; 0 for no limit.
    pub max_subscribers: usize,
    /// Who may subscribe. Unset: anyone while no authentication is configured, and only
    /// holders of a grant once it is ("closed unless marked public").
    pub subscribe: Option<Access>,
    /// Who may publish from a client (WebSocket `publish`).
    pub publish: Access,
    /// Who may read history over WebSocket. Unset: whoever may subscribe.
    pub read_history: Option<Access>,
    /// Who may list presence over WebSocket. Unset: whoever may subscribe.
    pub read_presence: Option<Access>,
    /// Most client publishes per minute to this namespace by one user (by one connection when
    /// anonymous), across the user's connections on this node; 0 for no limit.
    pub publish_per_minute: u32,
    /// Most of those publishes at once (the bucket's size; it refills at `publish_per_minute`).
    /// 0: the whole minute's worth.
    pub publish_burst: u32,
    /// Each client publish is first sent to this URL of the app's backend, which allows it,
    /// replaces its data, or refuses it (see `proxy.rs`).
    pub publish_proxy: Option<String>,
    /// Each client subscribe is first sent to this URL of the app's backend, which allows or
    /// refuses it.
    pub subscribe_proxy: Option<String>,
    /// The part of a channel name after the namespace names the user who owns the channel
    /// (`alerts:user_789` belongs to `user_789`), with the rules of a `name#user` channel.
    pub user_scoped: bool,
}

/// What a channel tracks of its subscribers, and tells them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "PresenceRepr", into = "PresenceRepr")]
pub enum PresenceMode {
    /// Nothing (`false`).
    #[default]
    Off,
    /// Every connection is a member; its join and leave are pushed (`true` or `"connections"`).
    Connections,
    /// Every user is a member however many connections it holds: `join` with its first,
    /// `leave` after its last; connections without a token are counted apart (`"users"`).
    Users,
    /// Totals only, on request and pushed periodically; no join or leave (`"counts"`).
    Counts,
}

impl PresenceMode {
    /// Whether the channel's members are tracked at all.
    pub fn tracked(self) -> bool {
        self != Self::Off
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum PresenceRepr {
    Flag(bool),
    Named(PresenceName),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum PresenceName {
    Off,
    Connections,
    Users,
    Counts,
}

impl From<PresenceRepr> for PresenceMode {
    fn from(r: PresenceRepr) -> Self {
        match r {
            PresenceRepr::Flag(false) | PresenceRepr::Named(PresenceName::Off) => Self::Off,
            PresenceRepr::Flag(true) | PresenceRepr::Named(PresenceName::Connections) => {
                Self::Connections
            }
            PresenceRepr::Named(PresenceName::Users) => Self::Users,
            PresenceRepr::Named(PresenceName::Counts) => Self::Counts,
        }
    }
}

impl From<PresenceMode> for PresenceRepr {
    fn from(m: PresenceMode) -> Self {
        match m {
            PresenceMode::Off => Self::Flag(false),
            PresenceMode::Connections => Self::Flag(true),
            PresenceMode::Users => Self::Named(PresenceName::Users),
            PresenceMode::Counts => Self::Named(PresenceName::Counts),
        }
    }
}

/// What latest state a channel keeps for new subscribers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "LatestRepr", into = "LatestRepr")]
pub enum LatestState {
    /// None (`false`).
    #[default]
    Off,
    /// The channel's last publication (`true` or `"last"`).
    Last,
    /// The last publication of each event name, at most [`MAX_LATEST_EVENTS`] names
    /// (`"per_event"`); a new name beyond them replaces the one published longest ago.
    PerEvent,
}

/// Most event names a `per_event` channel keeps latest state for.
pub const MAX_LATEST_EVENTS: usize = 32;

/// How `latest_state` is written in the config: a boolean, or a mode's name.
#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum LatestRepr {
    Flag(bool),
    Named(LatestName),
}

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum LatestName {
    Off,
    Last,
    PerEvent,
}

impl From<LatestRepr> for LatestState {
    fn from(r: LatestRepr) -> Self {
        match r {
            LatestRepr::Flag(false) | LatestRepr::Named(LatestName::Off) => Self::Off,
            LatestRepr::Flag(true) | LatestRepr::Named(LatestName::Last) => Self::Last,
            LatestRepr::Named(LatestName::PerEvent) => Self::PerEvent,
        }
    }
}

impl From<LatestState> for LatestRepr {
    fn from(s: LatestState) -> Self {
        match s {
            LatestState::Off => Self::Flag(false),
            LatestState::Last => Self::Flag(true),
            LatestState::PerEvent => Self::Named(LatestName::PerEvent),
        }
    }
}

/// The latest state one publication keeps (see [`LatestState`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeepLatest {
    /// Which.
    pub mode: LatestState,
    /// How long; `None` until replaced.
    pub ttl: Option<Duration>,
}

impl KeepLatest {
    /// No latest state.
    pub const OFF: KeepLatest = KeepLatest {
        mode: LatestState::Off,
        ttl: None,
    };
}

/// Who may do something on a namespace's channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Anyone, with or without a token.
    Public,
    /// Any connection with a valid token.
    Authenticated,
    /// Only a token whose grants (`channels` for reading, `publish` for publishing) match.
    Granted,
    /// No client; only the HTTP API.
    None,
}

/// What a client asks to do on a channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Subscribe (including resume).
    Subscribe,
    /// Publish from the client.
    Publish,
    /// Read history.
    History,
    /// List presence.
    Presence,
}

impl Action {
    fn verb(self) -> &'static str {
        match self {
            Self::Subscribe => "subscribe to",
            Self::Publish => "publish to",
            Self::History => "read the history of",
            Self::Presence => "read the presence of",
        }
    }
}

/// Why a client may not do something.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    /// The action needs a token and the connection has none.
    #[error("a token is needed to {verb} {channel:?}")]
    Unauthenticated {
        /// What was asked.
        verb: &'static str,
        /// The channel.
        channel: String,
    },
    /// The token does not allow it.
    #[error("this connection may not {verb} {channel:?}")]
    Forbidden {
        /// What was asked.
        verb: &'static str,
        /// The channel.
        channel: String,
    },
}

impl Default for NamespaceOptions {
    fn default() -> Self {
        Self {
            history_size: 100,
            history_ttl: Duration::from_secs(600),
            latest_state: LatestState::Off,
            latest_state_ttl: Duration::ZERO,
            presence: PresenceMode::Off,
            max_subscribers: 0,
            subscribe: None,
            publish: Access::None,
            read_history: None,
            read_presence: None,
            publish_per_minute: 0,
            publish_burst: 0,
            publish_proxy: None,
            subscribe_proxy: None,
            user_scoped: false,
        }
    }
}

impl NamespaceOptions {
    /// The burst a client publish rate allows: `publish_burst`, or the whole minute's worth.
    pub fn publish_burst(&self) -> u32 {
        if self.publish_burst == 0 {
            self.publish_per_minute
        } else {
            self.publish_burst
        }
    }

    /// How many publications to keep in history.
    pub fn retained(&self) -> usize {
        self.history_size
    }

    /// The latest state a publication to these channels keeps.
    pub fn keep_latest(&self) -> KeepLatest {
        KeepLatest {
            mode: self.latest_state,
            ttl: (!self.latest_state_ttl.is_zero()).then_some(self.latest_state_ttl),
        }
    }
}

/// Channel options: defaults plus named namespaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ChannelsConfig {
    /// Options for channels whose namespace is not listed (including names without `:`).
    pub defaults: NamespaceOptions,
    /// Options per namespace (the text before the first `:` of a channel name).
    pub namespaces: BTreeMap<String, NamespaceOptions>,
    /// How often subscribers of a `presence = "counts"` channel are sent its totals.
    #[serde(with = "humantime_serde")]
    pub presence_counts_interval: Duration,
    /// Most channels that keep latest state at once, across the engine; a publication that
    /// would add one more is refused (503) and counted (`refused.latest_state_channels`).
    pub max_latest_state_channels: usize,
    /// Authentication is configured, so namespaces without an explicit `subscribe` are closed.
    /// Set by the binary from the auth settings, not read from the file.
    #[serde(skip)]
    pub closed: bool,
}

impl Default for ChannelsConfig {
    fn default() -> Self {
        Self {
            defaults: NamespaceOptions::default(),
            namespaces: BTreeMap::new(),
            presence_counts_interval: Duration::from_secs(5),
            max_latest_state_channels: 100_000,
            closed: false,
        }
    }
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

    /// Who may subscribe to channels with these options.
    pub fn subscribe_access(&self, options: &NamespaceOptions) -> Access {
        options.subscribe.unwrap_or(if self.closed {
            Access::Granted
        } else {
            Access::Public
        })
    }

    /// Decides whether `who` (None: no token) may do `action` on `channel`. A user channel
    /// (`name#user`) is readable only by its user, and publishable only by its user where the
    /// namespace lets clients publish at all.
    pub fn permits(
        &self,
        action: Action,
        channel: &ChannelName,
        who: Option<&Identity>,
    ) -> Result<(), Denied> {
        self.permits_granted(action, channel, who, None)
    }

    /// [`ChannelsConfig::permits`], with `grant` (a subscription token's channels) standing in
    /// for `who`'s subscribe grants where a namespace asks for a grant to subscribe or read.
    pub fn permits_granted(
        &self,
        action: Action,
        channel: &ChannelName,
        who: Option<&Identity>,
        grant: Option<&Grants>,
    ) -> Result<(), Denied> {
        let o = self.options(channel);
        let sub = self.subscribe_access(o);
        let access = match action {
            Action::Subscribe => sub,
            Action::Publish => o.publish,
            Action::History => o.read_history.unwrap_or(sub),
            Action::Presence => o.read_presence.unwrap_or(sub),
        };
        let unauthenticated = || Denied::Unauthenticated {
            verb: action.verb(),
            channel: channel.to_string(),
        };
        let forbidden = || Denied::Forbidden {
            verb: action.verb(),
            channel: channel.to_string(),
        };
        if access == Access::None {
            return Err(forbidden());
        }
        let owner = if o.user_scoped {
            channel
                .as_str()
                .split_once(':')
                .map(|(_, rest)| rest)
                .filter(|rest| !rest.is_empty())
        } else {
            channel_owner(channel)
        };
        if let Some(owner) = owner {
            let who = who.ok_or_else(unauthenticated)?;
            if *who.user != *owner {
                return Err(forbidden());
            }
            // The owner reads its own channel whatever else the namespace asks.
            if action != Action::Publish {
                return Ok(());
            }
        }
        match access {
            Access::Public => Ok(()),
            Access::Authenticated => who.map(|_| ()).ok_or_else(unauthenticated),
            Access::Granted => {
                let who = who.ok_or_else(unauthenticated)?;
                let grants = match action {
                    Action::Publish => &who.publish,
                    _ => grant.unwrap_or(&who.subscribe),
                };
                if grants.allows(channel) {
                    Ok(())
                } else {
                    Err(forbidden())
                }
            }
            Access::None => Err(forbidden()),
        }
    }

    /// Whether any namespace names a publish or subscribe proxy.
    pub fn uses_proxy(&self) -> bool {
        std::iter::once(&self.defaults)
            .chain(self.namespaces.values())
            .any(|o| o.publish_proxy.is_some() || o.subscribe_proxy.is_some())
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
            if o.publish_burst > 0 && o.publish_per_minute == 0 {
                out.push(format!(
                    "{path}.publish_burst needs publish_per_minute (the rate it refills at)"
                ));
            }
            for (key, url) in [
                ("publish_proxy", &o.publish_proxy),
                ("subscribe_proxy", &o.subscribe_proxy),
            ] {
                if let Some(url) = url {
                    if !url.starts_with("http://") || url.len() <= "http://".len() {
                        out.push(format!(
                            "{path}.{key} must be an http:// URL of the app's backend, not {url:?}"
                        ));
                    }
                }
            }
            if o.history_size > 0 && o.history_ttl.is_zero() {
                out.push(format!(
                    "{path}.history_ttl must be more than 0s when history_size > 0"
                ));
            }
        }
        if self.presence_counts_interval < Duration::from_millis(100) {
            out.push("channels.presence_counts_interval must be at least 100ms".to_owned());
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

#[cfg(test)]
mod tests;
