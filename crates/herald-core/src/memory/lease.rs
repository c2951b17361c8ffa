//! Leases of a single node: the node is the only holder there is, but a connector restarted
//! on the same node (or two connectors given one name) still takes turns.

use crate::{EngineError, Leases, LEASE_TTL};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Mutex;
use tokio::time::Instant;

/// Leases held in this process.
#[derive(Debug, Default)]
pub struct MemoryLeases {
    held: Mutex<HashMap<String, (String, Instant)>>,
}

#[async_trait]
impl Leases for MemoryLeases {
    async fn hold(&self, name: &str, holder: &str) -> Result<bool, EngineError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        match held.get_mut(name) {
            Some((h, until)) if h != holder && *until > now => Ok(false),
            Some((h, until)) => {
                holder.clone_into(h);
                *until = now + LEASE_TTL;
                Ok(true)
            }
            None => {
                held.insert(name.to_owned(), (holder.to_owned(), now + LEASE_TTL));
                Ok(true)
            }
        }
    }

    async fn release(&self, name: &str, holder: &str) -> Result<(), EngineError> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if held.get(name).is_some_and(|(h, _)| h == holder) {
            held.remove(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_holder_at_a_time_until_it_expires_or_is_released() {
        let l = MemoryLeases::default();
        assert!(l.hold("pg", "a").await.unwrap());
        assert!(!l.hold("pg", "b").await.unwrap());
        assert!(l.hold("pg", "a").await.unwrap());
        assert!(l.hold("other", "b").await.unwrap());
        tokio::time::advance(LEASE_TTL + std::time::Duration::from_millis(1)).await;
        assert!(l.hold("pg", "b").await.unwrap());
        assert!(!l.hold("pg", "a").await.unwrap());
        l.release("pg", "a").await.unwrap();
        assert!(!l.hold("pg", "a").await.unwrap());
        l.release("pg", "b").await.unwrap();
        assert!(l.hold("pg", "a").await.unwrap());
    }
}
