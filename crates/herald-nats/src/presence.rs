//! `NatsPresence`: members in a key-value bucket whose entries expire after the lease unless the
//! node that holds them refreshes them.

use crate::codec::hex;
use crate::util::{call, unavailable, within};
use async_nats::jetstream::kv;
use async_nats::jetstream::stream::{DirectGetErrorKind, Stream};
use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use herald_core::{ChannelName, EngineError, PresenceStore};
use herald_protocol::Member;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

/// Most entries `members` reads for one channel (one direct get each).
const MAX_MEMBERS: usize = 10_000;
/// Refresh puts in flight at once.
const REFRESH_CONCURRENCY: usize = 32;

/// Presence shared by every node through a NATS key-value bucket.
pub struct NatsPresence {
    kv: kv::Store,
    /// The bucket's underlying stream, read per channel by `members`.
    stream: Stream,
    bucket: String,
    timeout: Duration,
    /// This node's members (key → member JSON), re-put by [`NatsPresence::refresh`]; entries
    /// leave with their connection.
    local: Mutex<HashMap<String, Bytes>>,
}

impl fmt::Debug for NatsPresence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsPresence")
            .field("bucket", &self.bucket)
            .field("local", &self.lock().len())
            .finish_non_exhaustive()
    }
}

fn key(channel: &ChannelName, conn_id: &str) -> String {
    format!("{}.{}", hex(channel.as_str()), hex(conn_id))
}

impl NatsPresence {
    pub(crate) fn new(kv: kv::Store, stream: Stream, bucket: String, timeout: Duration) -> Self {
        Self {
            kv,
            stream,
            bucket,
            timeout,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Bytes>> {
        self.local.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Re-puts every member this node holds, so their entries outlive the lease. A member that
    /// left while its refresh was in flight is deleted again.
    pub(crate) async fn refresh(&self) {
        let members: Vec<(String, Bytes)> = self
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        futures_util::stream::iter(members)
            .for_each_concurrent(REFRESH_CONCURRENCY, |(key, value)| async move {
                let put = call(
                    self.timeout,
                    "nats presence refresh failed",
                    self.kv.put(&key, value),
                );
                if let Err(error) = put.await {
                    tracing::warn!(error = %error, "Presence refresh failed.");
                    return;
                }
                if !self.lock().contains_key(&key) {
                    let delete = call(
                        self.timeout,
                        "nats presence leave failed",
                        self.kv.delete(&key),
                    );
                    let _ = delete.await;
                }
            })
            .await;
    }
}

#[async_trait]
impl PresenceStore for NatsPresence {
    async fn join(&self, channel: &ChannelName, member: &Member) -> Result<(), EngineError> {
        let key = key(channel, &member.conn_id);
        let value = Bytes::from(
            serde_json::to_vec(member).map_err(|e| unavailable("presence encoding failed")(&e))?,
        );
        self.lock().insert(key.clone(), value.clone());
        call(
            self.timeout,
            "nats presence join failed",
            self.kv.put(&key, value),
        )
        .await?;
        Ok(())
    }

    async fn leave(&self, channel: &ChannelName, conn_id: &str) -> Result<(), EngineError> {
        let key = key(channel, conn_id);
        self.lock().remove(&key);
        call(
            self.timeout,
            "nats presence leave failed",
            self.kv.delete(&key),
        )
        .await
    }

    /// Walks the channel's keys with direct gets (no consumer: its pending count goes stale
    /// while leases are refreshed, and it would leave state on the server). A key re-put or
    /// deleted during the walk shows up again further on, and its newest value wins.
    async fn members(&self, channel: &ChannelName) -> Result<Vec<Member>, EngineError> {
        let filter = format!("$KV.{}.{}.*", self.bucket, hex(channel.as_str()));
        let mut newest: BTreeMap<String, Option<Member>> = BTreeMap::new();
        let mut seq = 1;
        for _ in 0..MAX_MEMBERS {
            let next = self.stream.direct_get_next_for_subject(&filter, Some(seq));
            let m = match within(self.timeout, "nats presence read timed out", next).await? {
                Ok(m) => m,
                Err(e) if matches!(e.kind(), DirectGetErrorKind::NotFound) => break,
                Err(e) => return Err(unavailable("nats presence read failed")(&e)),
            };
            seq = m.sequence + 1;
            // Deleted keys keep a marker until it expires.
            let op = m.headers.get("KV-Operation").map(|v| v.as_str());
            let member = match op {
                Some("DEL" | "PURGE") => None,
                _ => serde_json::from_slice(&m.payload).ok(),
            };
            newest.insert(m.subject.to_string(), member);
        }
        Ok(newest.into_values().flatten().collect())
    }
}
