//! Token buckets: one per connection ([`TokenBucket`], owned by its session), and a bounded,
//! sharded map of them shared across connections ([`KeyedBuckets`]: per user and namespace,
//! per API key).

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Mutex, PoisonError};
use tokio::time::Instant;

/// A bucket holding up to `capacity` tokens, refilled at `capacity` per `period`, full at first.
#[derive(Debug, Clone, Copy)]
pub struct TokenBucket {
    tokens: f32,
    last: Option<Instant>,
}

impl TokenBucket {
    /// A full bucket.
    pub fn full(capacity: u32) -> Self {
        Self {
            tokens: capacity as f32,
            last: None,
        }
    }

    /// Takes one token; false when none is left. A capacity of 0 means no limit.
    pub fn take(&mut self, capacity: u32, period_secs: f32, now: Instant) -> bool {
        self.take_burst(capacity, capacity, period_secs, now)
    }

    /// Takes one token from a bucket that refills at `rate` per `period_secs` and holds at most
    /// `burst` (at least 1); false when none is left. A rate of 0 means no limit.
    pub fn take_burst(&mut self, rate: u32, burst: u32, period_secs: f32, now: Instant) -> bool {
        if rate == 0 {
            return true;
        }
        if let Some(last) = self.last {
            let refill = now.duration_since(last).as_secs_f32() * rate as f32 / period_secs;
            self.tokens = (self.tokens + refill).min(burst.max(1) as f32);
        }
        self.last = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Whether a token is there to take at `now`, without taking it.
    pub fn has_one(&self, capacity: u32, period_secs: f32, now: Instant) -> bool {
        let refill = self.last.map_or(0.0, |last| {
            now.duration_since(last).as_secs_f32() * capacity as f32 / period_secs
        });
        capacity == 0 || self.tokens + refill >= 1.0
    }

    /// Whether the bucket would be full again at `now` (so forgetting it changes nothing).
    fn refilled(&self, rate: u32, burst: u32, period_secs: f32, now: Instant) -> bool {
        match self.last {
            None => true,
            Some(last) => {
                self.tokens + now.duration_since(last).as_secs_f32() * rate as f32 / period_secs
                    >= burst.max(1) as f32
            }
        }
    }
}

/// One shard: key → (its rate, its burst, its bucket).
type Shard = HashMap<Box<str>, (u32, u32, TokenBucket)>;

/// Shards of the map; a power of two.
const SHARDS: usize = 16;

/// Token buckets by key, shared by every connection of the node. Bounded: when a shard is
/// full, buckets that have refilled are forgotten (no behaviour change); if none has, the new
/// key is let through without a bucket and [`KeyedBuckets::take`] reports the overflow.
#[derive(Debug)]
pub struct KeyedBuckets {
    capacity: u32,
    period_secs: f32,
    max_per_shard: usize,
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
}

/// What [`KeyedBuckets::take`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// A token was taken.
    Allowed,
    /// The key is over its rate.
    Limited,
    /// The map was full; let through unmetered.
    Overflow,
}

impl KeyedBuckets {
    /// `capacity` tokens per `period_secs` per key, at most `max_keys` keys remembered.
    pub fn new(capacity: u32, period_secs: f32, max_keys: usize) -> Self {
        Self {
            capacity,
            period_secs,
            max_per_shard: max_keys.div_ceil(SHARDS).max(1),
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Takes a token from `key`'s bucket.
    pub fn take(&self, key: &str) -> Take {
        self.take_n(key, self.capacity)
    }

    /// Takes a token from `key`'s bucket with `capacity` per period (a per-namespace rate
    /// sharing the map).
    pub fn take_n(&self, key: &str, capacity: u32) -> Take {
        self.take_burst(key, capacity, capacity)
    }

    /// Takes a token from `key`'s bucket, which refills at `rate` per period and holds at most
    /// `burst`.
    pub fn take_burst(&self, key: &str, rate: u32, burst: u32) -> Take {
        let capacity = rate;
        if capacity == 0 {
            return Take::Allowed;
        }
        let now = Instant::now();
        let i = (self.hasher.hash_one(key) as usize) & (SHARDS - 1);
        let mut shard = self.shards[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some((_, _, b)) = shard.get_mut(key) {
            return if b.take_burst(rate, burst, self.period_secs, now) {
                Take::Allowed
            } else {
                Take::Limited
            };
        }
        if shard.len() >= self.max_per_shard {
            let period = self.period_secs;
            shard.retain(|_, (rate, burst, b)| !b.refilled(*rate, *burst, period, now));
            if shard.len() >= self.max_per_shard {
                return Take::Overflow;
            }
        }
        let mut b = TokenBucket::full(burst.max(1));
        let ok = b.take_burst(rate, burst, self.period_secs, now);
        shard.insert(Box::from(key), (rate, burst, b));
        if ok {
            Take::Allowed
        } else {
            Take::Limited
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn a_bucket_refills_at_its_rate() {
        let mut b = TokenBucket::full(3);
        let now = Instant::now();
        assert!((0..3).all(|_| b.take(3, 60.0, now)));
        assert!(!b.take(3, 60.0, now));
        assert!(b.take(3, 60.0, now + Duration::from_secs(20)));
        assert!(!b.take(3, 60.0, now + Duration::from_secs(21)));
        assert!(TokenBucket::full(0).take(0, 60.0, now), "0 is no limit");
    }

    #[tokio::test(start_paused = true)]
    async fn a_burst_is_the_most_at_once_and_the_rate_refills_it() {
        // "At most 30 a minute, 3 at once."
        let k = KeyedBuckets::new(0, 60.0, 64);
        for _ in 0..3 {
            assert_eq!(k.take_burst("u", 30, 3), Take::Allowed);
        }
        assert_eq!(
            k.take_burst("u", 30, 3),
            Take::Limited,
            "the burst is spent"
        );
        tokio::time::advance(Duration::from_millis(2100)).await;
        assert_eq!(k.take_burst("u", 30, 3), Take::Allowed, "one every 2 s");
        assert_eq!(k.take_burst("u", 30, 3), Take::Limited);
        // A long quiet spell refills the burst, not the minute.
        tokio::time::advance(Duration::from_secs(600)).await;
        for _ in 0..3 {
            assert_eq!(k.take_burst("u", 30, 3), Take::Allowed);
        }
        assert_eq!(k.take_burst("u", 30, 3), Take::Limited);
    }

    #[tokio::test(start_paused = true)]
    async fn keys_have_their_own_buckets_and_the_map_stays_bounded() {
        // Room for both keys whatever shards they hash to.
        let roomy = KeyedBuckets::new(2, 60.0, 2 * SHARDS);
        assert_eq!(roomy.take("a"), Take::Allowed);
        assert_eq!(roomy.take("a"), Take::Allowed);
        assert_eq!(roomy.take("a"), Take::Limited);
        assert_eq!(roomy.take("b"), Take::Allowed);
        let k = KeyedBuckets::new(2, 60.0, SHARDS);
        // One key per shard: a full shard whose bucket has not refilled lets others through.
        let mut overflowed = false;
        for i in 0..200 {
            let key = format!("k{i}");
            match k.take(&key) {
                Take::Overflow => overflowed = true,
                Take::Allowed => {}
                Take::Limited => panic!("a new key is never limited"),
            }
        }
        assert!(overflowed);
        let total: usize = k.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total <= SHARDS);
        // Once buckets refill, they are forgotten to make room.
        tokio::time::advance(Duration::from_secs(61)).await;
        assert_eq!(k.take("fresh"), Take::Allowed);
    }
}
