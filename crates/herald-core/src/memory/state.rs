//! The embedded engine's state store: values in memory and, with a data directory, in the
//! journal, written in queue order by the writer.

use super::engine::{MemoryEngine, STOPPED};
use super::journal::{Entry, StateValue};
use super::writer::{lock, Op, Then};
use crate::{EngineError, StateStore, STATE_KEYS_BOUND};
use async_trait::async_trait;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// Longest state-store key (scope and key together), in bytes.
const MAX_STATE_KEY: usize = 512;
/// Largest state-store value, in bytes.
const MAX_STATE_VALUE: usize = 64 * 1024;

#[async_trait]
impl StateStore for MemoryEngine {
    async fn get(&self, scope: &str, key: &str) -> Result<Option<Arc<[u8]>>, EngineError> {
        let now_ms = crate::now_ms();
        let map = lock(&self.state);
        Ok(map
            .get(&(scope.to_owned(), key.to_owned()))
            .filter(|v| v.expires_ms.is_none_or(|e| e > now_ms))
            .map(|v| v.bytes.clone()))
    }

    async fn put(
        &self,
        scope: &str,
        key: &str,
        value: &[u8],
        ttl: Option<Duration>,
    ) -> Result<(), EngineError> {
        if scope.len() + key.len() > MAX_STATE_KEY || value.len() > MAX_STATE_VALUE {
            return Err(EngineError::LimitReached(
                "state store: key over 512 bytes or value over 64 KiB",
            ));
        }
        let key = (scope.to_owned(), key.to_owned());
        {
            let map = lock(&self.state);
            if !map.contains_key(&key) && map.len() >= self.config.max_state_keys {
                return Err(EngineError::LimitReached(STATE_KEYS_BOUND));
            }
        }
        let expires_ms = ttl.map(|t| {
            crate::now_ms().saturating_add(u64::try_from(t.as_millis()).unwrap_or(u64::MAX))
        });
        let value = StateValue {
            bytes: Arc::from(value),
            expires_ms,
        };
        self.change_state(key, Some(value)).await
    }

    async fn remove(&self, scope: &str, key: &str) -> Result<(), EngineError> {
        self.change_state((scope.to_owned(), key.to_owned()), None)
            .await
    }
}

impl MemoryEngine {
    async fn change_state(
        &self,
        key: (String, String),
        value: Option<StateValue>,
    ) -> Result<(), EngineError> {
        let Some(w) = &self.writer else {
            let mut map = lock(&self.state);
            match value {
                Some(v) => map.insert(key, v),
                None => map.remove(&key),
            };
            return Ok(());
        };
        let permit = w.admit().await?;
        let (reply, rx) = oneshot::channel();
        w.push(Op {
            entry: Some(Entry::State {
                scope: key.0.clone(),
                key: key.1.clone(),
                value: value.clone(),
            }),
            then: Then::State {
                map: self.state.clone(),
                key,
                value,
                reply,
                _permit: permit,
            },
        })?;
        rx.await.unwrap_or(Err(STOPPED))
    }
}
