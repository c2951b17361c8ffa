//! Per-address connection counting (`server.max_connections_per_ip`) and the WebSocket origin
//! check. Loopback addresses are not counted: behind a reverse proxy on the same machine every
//! client would share one.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

/// Open connections per remote address.
#[derive(Debug)]
pub(crate) struct IpLimiter {
    max: usize,
    shards: Box<[Mutex<HashMap<IpAddr, usize>>]>,
    hasher: RandomState,
}

/// One counted connection; uncounted when dropped.
#[derive(Debug)]
pub(crate) struct IpGuard {
    limiter: Arc<IpLimiter>,
    ip: IpAddr,
}

impl IpLimiter {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            shards: (0..16).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        })
    }

    fn shard(&self, ip: IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, usize>> {
        let i = (self.hasher.hash_one(ip) as usize) % self.shards.len();
        self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a connection from `ip`: `Ok(None)` when it is not counted (no limit, loopback or
    /// unknown address), `Err(())` when the address is at the limit.
    pub(crate) fn acquire(self: &Arc<Self>, ip: Option<IpAddr>) -> Result<Option<IpGuard>, ()> {
        let Some(ip) = ip.filter(|ip| self.max > 0 && !ip.is_loopback()) else {
            return Ok(None);
        };
        let mut shard = self.shard(ip);
        let n = shard.entry(ip).or_insert(0);
        if *n >= self.max {
            return Err(());
        }
        *n += 1;
        Ok(Some(IpGuard {
            limiter: self.clone(),
            ip,
        }))
    }
}

impl Drop for IpGuard {
    fn drop(&mut self) {
        let mut shard = self.limiter.shard(self.ip);
        if let Some(n) = shard.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                shard.remove(&self.ip);
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
        let a = l.acquire(Some(ip)).unwrap();
        let b = l.acquire(Some(ip)).unwrap();
        assert!(a.is_some() && b.is_some());
        assert!(l.acquire(Some(ip)).is_err());
        assert!(l
            .acquire(Some("203.0.113.8".parse().unwrap()))
            .unwrap()
            .is_some());
        drop(a);
        assert!(l.acquire(Some(ip)).unwrap().is_some());
        // Loopback and unknown addresses are not counted.
        for _ in 0..5 {
            assert!(l
                .acquire(Some("127.0.0.1".parse().unwrap()))
                .unwrap()
                .is_none());
        }
        assert!(l.acquire(None).unwrap().is_none());
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
