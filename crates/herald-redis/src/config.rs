//! `RedisEngineConfig`: the `[engine]` section with `kind = "redis"`.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Settings of the Redis engine (`[engine]` with `kind = "redis"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisEngineConfig {
    /// `redis://[user:password@]host:port[/db]`.
    pub url: herald_core::SecretUrl,
    /// Prefix of every key and pub/sub channel, so several Herald deployments can share one
    /// Redis.
    pub prefix: String,
    /// How long a presence member lives without its node refreshing it.
    #[serde(with = "humantime_serde")]
    pub presence_lease: Duration,
    /// How long a channel's epoch and offset are kept after its last publish or read; a
    /// channel forgotten this way restarts under a new epoch (clients get a reset).
    #[serde(with = "humantime_serde")]
    pub channel_state_ttl: Duration,
    /// Longest wait for one Redis command before it fails with 503.
    #[serde(with = "humantime_serde")]
    pub command_timeout: Duration,
    /// Consume the worker stream (`PREFIX:ingest`) on this node.
    pub ingest: bool,
}

impl Default for RedisEngineConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "herald".to_owned(),
            presence_lease: Duration::from_secs(30),
            channel_state_ttl: Duration::from_secs(24 * 3600),
            command_timeout: Duration::from_secs(2),
            ingest: true,
        }
    }
}
