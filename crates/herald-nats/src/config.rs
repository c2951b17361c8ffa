//! `NatsEngineConfig`, and the checks that refuse, before connecting, settings the NATS engine
//! cannot honour.

use herald_core::{ChannelsConfig, EngineError, NamespaceOptions};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How much longer than `channel_state_ttl` history streams keep a channel's last message, so
/// it always outlives the channel's epoch entry (see the crate docs).
pub(crate) const STATE_MARGIN: Duration = Duration::from_secs(60);
/// Most publications a namespace may keep per channel.
pub(crate) const MAX_HISTORY: usize = 100_000;

/// Settings of the NATS engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NatsEngineConfig {
    /// The NATS server to connect to; JetStream must be enabled on it.
    pub url: herald_core::SecretUrl,
    /// Prefix of every subject, stream and bucket this engine uses (lowercase letters, digits,
    /// `_` and `-`); nodes sharing channels must use the same one.
    pub prefix: String,
    /// How long a presence entry lives without being refreshed; a node refreshes its members
    /// every third of it, so members of a node that died vanish within one lease.
    #[serde(with = "humantime_serde")]
    pub presence_lease: Duration,
    /// How long a channel's position (epoch and offset) is kept after its last publish, and the
    /// epoch a read created for a channel nothing was published to yet.
    #[serde(with = "humantime_serde")]
    pub channel_state_ttl: Duration,
    /// Upper bound on each call to NATS; a call that takes longer fails as unavailable.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
}

impl Default for NatsEngineConfig {
    fn default() -> Self {
        Self {
            url: "nats://127.0.0.1:4222".into(),
            prefix: "herald".to_owned(),
            presence_lease: Duration::from_secs(30),
            channel_state_ttl: Duration::from_secs(24 * 3600),
            command_timeout: Duration::from_secs(2),
        }
    }
}

pub(crate) fn label(namespace: &str) -> String {
    if namespace.is_empty() {
        "channels.defaults".to_owned()
    } else {
        format!("channels.namespaces.{namespace}")
    }
}

/// How long a namespace's stream keeps messages (see the crate docs).
pub(crate) fn stream_max_age(config: &NatsEngineConfig, options: &NamespaceOptions) -> Duration {
    options
        .history_ttl
        .max(config.channel_state_ttl.saturating_add(STATE_MARGIN))
}

/// Refuses, before connecting, settings this engine cannot honour.
pub(crate) fn check_config(
    config: &NatsEngineConfig,
    channels: &ChannelsConfig,
) -> Result<(), EngineError> {
    let ok = !config.prefix.is_empty()
        && config
            .prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-');
    if !ok {
        return Err(EngineError::Config(format!(
            "engine.prefix {:?} must be lowercase letters, digits, `_` and `-` for NATS",
            config.prefix
        )));
    }
    // NATS carries durations as i64 nanoseconds.
    let fits = |d: Duration| i64::try_from(d.as_nanos()).is_ok();
    for (name, d) in [
        ("presence_lease", config.presence_lease),
        ("channel_state_ttl", config.channel_state_ttl),
        ("command_timeout", config.command_timeout),
    ] {
        if d < Duration::from_millis(10) || !fits(d.saturating_add(STATE_MARGIN)) {
            return Err(EngineError::Config(format!(
                "engine.{name} must be between 10ms and 200 years for NATS"
            )));
        }
    }
    let all = std::iter::once(("", &channels.defaults))
        .chain(channels.namespaces.iter().map(|(k, v)| (k.as_str(), v)));
    for (name, options) in all {
        let label = label(name);
        let retained = options.retained();
        if retained > MAX_HISTORY {
            return Err(EngineError::Config(format!(
                "{label}.history_size is {retained}; the NATS engine keeps at most {MAX_HISTORY} per channel"
            )));
        }
        if retained > 0 && options.history_ttl.is_zero() {
            return Err(EngineError::Config(format!(
                "{label}.history_ttl must be more than 0s when history is kept"
            )));
        }
        if !fits(stream_max_age(config, options)) {
            return Err(EngineError::Config(format!(
                "{label}.history_ttl is longer than NATS can keep messages"
            )));
        }
        // The stream's directory is named after it: `{PREFIX}_H_{nshex}` must fit a file name.
        if config.prefix.len() + 3 + 2 * name.len() > 255 {
            return Err(EngineError::Config(format!(
                "{label}: the namespace name is too long for a NATS stream name"
            )));
        }
    }
    Ok(())
}
