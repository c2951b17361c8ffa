//! `MemoryPresenceStore`: who is subscribed to each presence channel on this node.

use crate::{ChannelName, EngineError, PresenceStore};
use async_trait::async_trait;
use herald_protocol::Member;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

/// In-process presence: channel → connection id → member. Entries leave with their connection.
#[derive(Debug, Default)]
pub struct MemoryPresenceStore {
    channels: Mutex<HashMap<ChannelName, BTreeMap<String, Member>>>,
}

#[async_trait]
impl PresenceStore for MemoryPresenceStore {
    async fn join(&self, channel: &ChannelName, member: &Member) -> Result<(), EngineError> {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        map.entry(channel.clone())
            .or_default()
            .insert(member.conn_id.clone(), member.clone());
        Ok(())
    }

    async fn leave(&self, channel: &ChannelName, conn_id: &str) -> Result<(), EngineError> {
        let mut map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(members) = map.get_mut(channel) {
            members.remove(conn_id);
            if members.is_empty() {
                map.remove(channel);
            }
        }
        Ok(())
    }

    async fn members(&self, channel: &ChannelName) -> Result<Vec<Member>, EngineError> {
        let map = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        Ok(map
            .get(channel)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default())
    }
}
