//! Open connections counted per key (an address, a user), with a limit per key. The map holds
//! only keys with open connections, so the node's connection cap bounds it.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::sync::{Arc, Mutex, PoisonError};

/// A key already holds as many connections as it may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AtLimit;

/// Open connections per key; the map holds only keys with open connections.
#[derive(Debug)]
pub struct CountLimiter<K> {
    max: usize,
    shards: Box<[Mutex<HashMap<K, usize>>]>,
    hasher: RandomState,
}

/// Open connections per user.
pub type UserLimiter = CountLimiter<Arc<str>>;

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub struct CountGuard<K: Hash + Eq + Clone> {
    limiter: Arc<CountLimiter<K>>,
    key: K,
}

/// A connection counted against its user.
pub type UserGuard = CountGuard<Arc<str>>;

impl<K: Hash + Eq + Clone> CountLimiter<K> {
    /// At most `max` open connections per key; 0 for no limit.
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            shards: (0..16).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        })
    }

    fn shard(&self, key: &K) -> std::sync::MutexGuard<'_, HashMap<K, usize>> {
        let i = (self.hasher.hash_one(key) as usize) % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a connection for `key`: `Ok(None)` when it is not counted (no limit or no key),
    /// `Err(AtLimit)` when the key is at the limit.
    pub fn acquire(self: &Arc<Self>, key: Option<K>) -> Result<Option<CountGuard<K>>, AtLimit> {
        let Some(key) = key.filter(|_| self.max > 0) else {
            return Ok(None);
        };
        let mut shard = self.shard(&key);
        let n = shard.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return Err(AtLimit);
        }
        *n += 1;
        Ok(Some(CountGuard {
            limiter: self.clone(),
            key,
        }))
    }
}

impl<K> CountLimiter<K> {
    /// How many keys hold an open connection (none are counted without a limit).
    pub fn keys(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(PoisonError::into_inner).len())
            .sum()
    }
}

impl<K: Hash + Eq + Clone> Drop for CountGuard<K> {
    fn drop(&mut self) {
        let mut shard = self.limiter.shard(&self.key);
        if let Some(n) = shard.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&self.key);
            }
        }
    }
}
