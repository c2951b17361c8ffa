//! Open-connection counting per remote address (`server.max_connections_per_ip`; loopback is
//! not counted: behind a reverse proxy on the same machine every client would share one) and
//! per user (`connection.max_per_user`), and the WebSocket origin check.

use crate::{ApiError, App};
use axum::http::StatusCode;
use herald_core::Identity;
use herald_protocol::ErrorCode;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, RandomState};
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per key; the map holds only keys with open connections.
#[derive(Debug)]
pub(crate) struct CountLimiter<K> {
    max: usize,
    shards: Box<[Mutex<HashMap<K, usize>>]>,
    hasher: RandomState,
}

/// Open connections per remote address.
pub(crate) type IpLimiter = CountLimiter<IpAddr>;
/// Open connections per user.
pub(crate) type UserLimiter = CountLimiter<Arc<str>>;

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct CountGuard<K: Hash + Eq + Clone> {
    limiter: Arc<CountLimiter<K>>,
    key: K,
}

/// A connection counted against its address.
pub(crate) type IpGuard = CountGuard<IpAddr>;
/// A connection counted against its user.
pub(crate) type UserGuard = CountGuard<Arc<str>>;

impl<K: Hash + Eq + Clone> CountLimiter<K> {
    /// At most `max` open connections per key; 0 for no limit.
    pub(crate) fn new(max: usize) -> Arc<Self> {
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
    /// `Err(())` when the key is at the limit.
    pub(crate) fn acquire(self: &Arc<Self>, key: Option<K>) -> Result<Option<CountGuard<K>>, ()> {
        let Some(key) = key.filter(|_| self.max > 0) else {
            return Ok(None);
        };
        let mut shard = self.shard(&key);
        let n = shard.entry(key.clone()).or_insert(0);
        if *n >= self.max {
            return Err(());
        }
        *n += 1;
        Ok(Some(CountGuard {
            limiter: self.clone(),
            key,
        }))
    }
}

impl IpLimiter {
    /// Counts a connection from `ip`, except from loopback.
    pub(crate) fn acquire_ip(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Option<IpGuard>, ()> {
        self.acquire(ip.filter(|ip| !ip.is_loopback()))
    }
}

impl App {
    /// Counts an SSE or WebSocket connection against its address
    /// (`server.max_connections_per_ip`; loopback is not counted).
    pub(crate) fn count_ip(&self, peer: Option<IpAddr>) -> Result<Option<IpGuard>, ApiError> {
        self.per_ip.acquire_ip(peer).map_err(|()| {
            self.node.stats.refused.per_ip.fetch_add(1, Relaxed);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "this address holds as many connections as it may (server.max_connections_per_ip)",
            )
        })
    }

    /// Counts a connection against its user (`connection.max_per_user`).
    pub(crate) fn count_user(&self, identity: &Identity) -> Result<Option<UserGuard>, ApiError> {
        self.per_user
            .acquire(Some(identity.user.clone()))
            .map_err(|()| {
                self.node.stats.refused.per_user.fetch_add(1, Relaxed);
                ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    ErrorCode::RateLimited,
                    "this user holds as many connections as it may (connection.max_per_user)",
                )
            })
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

/// Whether a browser page from `origin` may open a WebSocket: any origin when `allowed` holds
/// `*`, else an exact match; requests without `Origin` (not from a browser) pass.
pub(crate) fn origin_allowed(allowed: &[String], origin: Option<&[u8]>) -> bool {
    match origin {
        None => true,
        Some(o) => allowed
            .iter()
            .any(|a| a == "*" || a.as_bytes().eq_ignore_ascii_case(o)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_address_and_forgets_on_drop() {
        let l = IpLimiter::new(2);
        let ip: IpAddr = "203.0.113.7".parse().unwrap();
        let a = l.acquire_ip(Some(ip)).unwrap();
        let b = l.acquire_ip(Some(ip)).unwrap();
        assert!(a.is_some() && b.is_some());
        assert!(l.acquire_ip(Some(ip)).is_err());
        assert!(l
            .acquire_ip(Some("203.0.113.8".parse().unwrap()))
            .unwrap()
            .is_some());
        drop(a);
        assert!(l.acquire_ip(Some(ip)).unwrap().is_some());
        // Loopback and unknown addresses are not counted.
        for _ in 0..5 {
            assert!(l
                .acquire_ip(Some("127.0.0.1".parse().unwrap()))
                .unwrap()
                .is_none());
        }
        assert!(l.acquire_ip(None).unwrap().is_none());
    }

    #[test]
    fn origins() {
        let any = vec!["*".to_owned()];
        let list = vec!["https://app.example".to_owned()];
        assert!(origin_allowed(&any, Some(b"https://x")));
        assert!(origin_allowed(&list, Some(b"https://app.example")));
        assert!(!origin_allowed(&list, Some(b"https://evil.example")));
        assert!(origin_allowed(&list, None));
    }
}
