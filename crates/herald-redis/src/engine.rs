//! `RedisEngine`: the broker and history store over Redis, the state they share, and how keys,
//! pub/sub channels and commands are named and bounded. Set-up is in `setup.rs`, publishing in
//! `publish.rs`, reads in `history.rs`, the node's own tasks in `loops.rs`, and what the shared
//! remote-engine parts call in `remote.rs`.

use crate::config::RedisEngineConfig;
use crate::presence::RedisPresence;
use crate::scripts::Lua;
use fred::clients::SubscriberClient;
use fred::error::Error as RedisError;
use fred::prelude::{Client, Value};
use fred::types::config::Options;
use herald_core::{ChannelName, EngineError, Remote};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Notify;

/// The Redis broker and history store. Started with [`RedisEngine::start`].
#[derive(Debug)]
pub struct RedisEngine {
    pub(crate) config: RedisEngineConfig,
    pub(crate) client: Client,
    pub(crate) subscriber: SubscriberClient,
    /// What this engine shares with the other remote engines' parts: delivery, health,
    /// subscriptions, recovery.
    pub(crate) remote: Arc<Remote>,
    pub(crate) presence: Arc<RedisPresence>,
    /// Namespace options: how a dead node's members are announced.
    pub(crate) channels: Arc<herald_core::ChannelsConfig>,
    pub(crate) publish_script: Lua,
    pub(crate) publish_once_script: Lua,
    pub(crate) read_script: Lua,
    pub(crate) latest_script: Lua,
    pub(crate) count_latest_script: Lua,
    pub(crate) lease_hold_script: Lua,
    pub(crate) lease_release_script: Lua,
    /// Channels this node counted among those keeping latest state until replaced (no
    /// `latest_state_ttl`), so it counts each once; cleared when it reaches
    /// [`LATEST_COUNTED_CACHE`].
    pub(crate) latest_counted: std::sync::Mutex<std::collections::HashSet<ChannelName>>,
    pub(crate) canary_channel: String,
    pub(crate) canary_seen: AtomicU64,
    pub(crate) canary_arrived: Notify,
    pub(crate) sharded: bool,
}

/// Most channels a node remembers having counted among those keeping latest state.
pub(crate) const LATEST_COUNTED_CACHE: usize = 65_536;

/// Logs a failed command and turns it into the error callers see.
pub(crate) fn unavailable(e: &RedisError) -> EngineError {
    tracing::debug!(error = %e, "Redis command failed.");
    EngineError::Unavailable("redis engine unreachable")
}

impl RedisEngine {
    pub(crate) fn key(&self, channel: &ChannelName, suffix: &str) -> String {
        format!("{}:{{{}}}:{suffix}", self.config.prefix, channel.as_str())
    }

    /// The keys every channel script starts with: meta, stream (history), latest state.
    pub(crate) fn channel_keys(&self, channel: &ChannelName) -> Vec<String> {
        vec![
            self.key(channel, "m"),
            self.key(channel, "h"),
            self.key(channel, "l"),
        ]
    }

    /// The arguments every channel script starts with (`channel_state!`): a fresh epoch for a
    /// channel without one, and how long the channel's state is kept.
    pub(crate) fn state_args(&self) -> [String; 2] {
        [
            herald_core::new_epoch().as_str().to_owned(),
            Self::ms(self.config.channel_state_ttl),
        ]
    }

    pub(crate) fn pubsub_channel(&self, channel: &ChannelName) -> String {
        self.key(channel, "p")
    }

    pub(crate) fn channel_of(&self, pubsub: &str) -> Option<ChannelName> {
        let rest = pubsub.strip_prefix(self.config.prefix.as_str())?;
        let name = rest.strip_prefix(":{")?.strip_suffix("}:p")?;
        ChannelName::parse(name).ok()
    }

    pub(crate) fn fast(&self) -> Options {
        Options {
            fail_fast: true,
            timeout: Some(self.config.command_timeout),
            max_attempts: Some(2),
            ..Options::default()
        }
    }

    pub(crate) fn ms(d: Duration) -> String {
        d.as_millis().max(1).to_string()
    }

    pub(crate) async fn eval(
        &self,
        script: &Lua,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, RedisError> {
        script.run(&self.client, &self.fast(), keys, args).await
    }
}
