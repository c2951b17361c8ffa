//! Presence in Redis with leases: a sorted set of connection ids scored by lease expiry and a
//! hash of their member records, per channel. The node holding a connection refreshes its
//! lease; members of a node that died vanish once their lease has run out.

use crate::config::RedisEngineConfig;
use crate::scripts::{self, Lua};
use async_trait::async_trait;
use fred::interfaces::{ClientLike, HashesInterface, SortedSetsInterface};
use fred::prelude::{Client, Value};
use fred::types::config::Options;
use herald_core::{ChannelName, EngineError, PresenceStore};
use herald_protocol::Member;
use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

/// Presence members shared by every node through Redis.
#[derive(Debug)]
pub struct RedisPresence {
    client: Client,
    prefix: String,
    lease: Duration,
    timeout: Duration,
    join: Lua,
    members: Lua,
    sweep: Lua,
    /// Members whose connection is on this node, to refresh: channel → conn id → JSON.
    local: Mutex<HashMap<ChannelName, HashMap<String, String>>>,
}

fn unavailable(e: &fred::error::Error) -> EngineError {
    tracing::debug!(error = %e, "Redis presence command failed.");
    EngineError::Unavailable("redis engine unreachable")
}

impl RedisPresence {
    pub(crate) fn new(client: Client, config: &RedisEngineConfig) -> Self {
        Self {
            client,
            prefix: config.prefix.clone(),
            lease: config.presence_lease,
            timeout: config.command_timeout,
            join: Lua::new(scripts::PRESENCE_JOIN),
            members: Lua::new(scripts::PRESENCE_MEMBERS),
            sweep: Lua::new(scripts::PRESENCE_SWEEP),
            local: Mutex::new(HashMap::new()),
        }
    }

    fn keys(&self, channel: &ChannelName) -> Vec<String> {
        vec![
            format!("{}:{{{}}}:z", self.prefix, channel.as_str()),
            format!("{}:{{{}}}:u", self.prefix, channel.as_str()),
        ]
    }

    fn fast(&self) -> Options {
        Options {
            fail_fast: true,
            timeout: Some(self.timeout),
            max_attempts: Some(2),
            ..Options::default()
        }
    }

    async fn eval(
        &self,
        script: &Lua,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> Result<Value, EngineError> {
        script
            .run(&self.client, &self.fast(), keys, args)
            .await
            .map_err(|e| unavailable(&e))
    }

    async fn put(
        &self,
        channel: &ChannelName,
        conn_id: &str,
        json: &str,
    ) -> Result<(), EngineError> {
        self.eval(
            &self.join,
            self.keys(channel),
            vec![
                conn_id.to_owned(),
                json.to_owned(),
                self.lease.as_millis().max(1).to_string(),
            ],
        )
        .await
        .map(|_| ())
    }

    /// How often [`RedisPresence::refresh`] should run: a third of the lease.
    pub(crate) fn refresh_every(&self) -> Duration {
        (self.lease / 3).max(Duration::from_millis(100))
    }

    /// Re-puts every local member, so live members never expire and members lost with a
    /// Redis restart come back; then removes the members whose lease ran out on the channels
    /// this node has members in, and returns them so their leave can be announced (once, by
    /// whichever node removed them).
    pub(crate) async fn refresh(&self) -> Vec<(ChannelName, Member)> {
        let all: Vec<(ChannelName, String, String)> = self
            .local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .flat_map(|(c, m)| m.iter().map(|(id, j)| (c.clone(), id.clone(), j.clone())))
            .collect();
        let mut channels: Vec<ChannelName> = Vec::new();
        for (channel, conn_id, json) in all {
            if let Err(e) = self.put(&channel, &conn_id, &json).await {
                tracing::debug!(error = %e, "Presence refresh failed; retrying next round.");
                return Vec::new();
            }
            if channels.last() != Some(&channel) {
                channels.push(channel);
            }
        }
        let mut gone = Vec::new();
        for channel in channels {
            let Ok(removed) = self
                .eval(&self.sweep, self.keys(&channel), Vec::new())
                .await
            else {
                break;
            };
            for v in removed.into_array() {
                if let Some(member) = v.as_str().and_then(|s| serde_json::from_str(&s).ok()) {
                    gone.push((channel.clone(), member));
                }
            }
        }
        gone
    }
}

#[async_trait]
impl PresenceStore for RedisPresence {
    async fn join(&self, channel: &ChannelName, member: &Member) -> Result<(), EngineError> {
        let json = serde_json::to_string(member)
            .map_err(|_| EngineError::Unavailable("presence member is not serializable"))?;
        self.local
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(channel.clone())
            .or_default()
            .insert(member.conn_id.clone(), json.clone());
        self.put(channel, &member.conn_id, &json).await
    }

    async fn leave(&self, channel: &ChannelName, conn_id: &str) -> Result<(), EngineError> {
        {
            let mut local = self.local.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(members) = local.get_mut(channel) {
                members.remove(conn_id);
                if members.is_empty() {
                    local.remove(channel);
                }
            }
        }
        let [zset, hash]: [String; 2] = self
            .keys(channel)
            .try_into()
            .map_err(|_| EngineError::Unavailable("presence keys"))?;
        let client = self.client.with_options(&self.fast());
        let removed: Result<i64, _> = client.zrem(zset, conn_id).await;
        removed.map_err(|e| unavailable(&e))?;
        let removed: Result<i64, _> = client.hdel(hash, conn_id).await;
        removed.map(|_| ()).map_err(|e| unavailable(&e))
    }

    async fn members(&self, channel: &ChannelName) -> Result<Vec<Member>, EngineError> {
        let reply = self
            .eval(&self.members, self.keys(channel), Vec::new())
            .await?;
        Ok(reply
            .into_array()
            .into_iter()
            .filter_map(|v| v.as_str().and_then(|s| serde_json::from_str(&s).ok()))
            .collect())
    }
}
