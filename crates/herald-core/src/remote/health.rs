//! `EngineHealth`: the readiness, link state and counters of a remote engine, updated lock-free
//! from its tasks and reported in `/health/ready` and `/api/stats`.

use crate::{EngineStatus, Histogram, LatencySummary};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

/// Connection state of a remote engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum LinkState {
    /// Not connected yet.
    Connecting = 0,
    /// Connected.
    Connected = 1,
    /// Lost; reconnecting.
    Disconnected = 2,
}

/// How long one successful canary round trip vouches for the engine. The engines send a canary
/// every 500 ms; if none succeeds for this long (the engine died, or the network went silent
/// and the canary's commands are still waiting on their timeouts), the node reports itself not
/// ready, so `/health/ready` turns 503 within this bound of the last round trip, whatever the
/// canary task is doing.
pub const READY_FOR: Duration = Duration::from_millis(1500);

/// Health and counters of a remote engine, updated lock-free from its tasks.
#[derive(Debug)]
pub struct EngineHealth {
    kind: &'static str,
    ready: AtomicBool,
    /// Publishing is refused: no canary has come back since start-up, or since the engine's
    /// client reported its connection lost.
    publish_blocked: AtomicBool,
    /// When `EngineHealth::new` ran; `vouched_until_ms` counts from it.
    born: Instant,
    /// Milliseconds after `born` until which the last successful canary vouches for the engine.
    vouched_until_ms: AtomicU64,
    state: AtomicU8,
    reconnects: AtomicU64,
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
    latency_max_us: AtomicU64,
    /// Publish round trips to the engine.
    publish_durations: Histogram,
    /// From a publication's time (the publishing node's clock) to its arrival here from the
    /// engine: the cross-node lag, clocks permitting.
    lag: Histogram,
    counters: BTreeMap<&'static str, AtomicU64>,
}

impl EngineHealth {
    /// Health for an engine of `kind` with the named counters, all zero and not ready.
    pub fn new(kind: &'static str, counters: &[&'static str]) -> Self {
        Self {
            kind,
            ready: AtomicBool::new(false),
            publish_blocked: AtomicBool::new(true),
            born: Instant::now(),
            vouched_until_ms: AtomicU64::new(0),
            state: AtomicU8::new(LinkState::Connecting as u8),
            reconnects: AtomicU64::new(0),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
            latency_max_us: AtomicU64::new(0),
            publish_durations: Histogram::default(),
            lag: Histogram::default(),
            counters: counters.iter().map(|c| (*c, AtomicU64::new(0))).collect(),
        }
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the node may call itself ready: the last canary made the round trip, no longer
    /// than [`READY_FOR`] ago. This is what `/health/ready` and `/api/stats` report.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Relaxed) && self.now_ms() <= self.vouched_until_ms.load(Relaxed)
    }

    /// Whether publishing may go to the engine: a canary has come back since start-up and since
    /// the engine's client last reported its connection lost ([`EngineHealth::link_lost`]).
    /// A late or failed canary refuses nothing: on a busy node (a loaded machine, a burst of
    /// fan-out) the round trip can take seconds while the engine answers commands, and a
    /// publish to an engine that is really gone fails on its own, on a refused connection or
    /// its command timeout (503).
    pub fn accepts_publishes(&self) -> bool {
        !self.publish_blocked.load(Relaxed)
    }

    /// Records a canary result.
    pub fn set_ready(&self, ready: bool) {
        if ready {
            self.publish_blocked.store(false, Relaxed);
            let until = self
                .now_ms()
                .saturating_add(u64::try_from(READY_FOR.as_millis()).unwrap_or(u64::MAX));
            self.vouched_until_ms.store(until, Relaxed);
        }
        let was = self.ready.swap(ready, Relaxed);
        if was != ready {
            if ready {
                tracing::info!(engine = self.kind, "Engine is ready.");
            } else {
                tracing::warn!(engine = self.kind, "Engine is not ready.");
            }
        }
    }

    /// Records a connection the engine's client reported lost: not ready, and publishing
    /// refused at once, until a canary comes back.
    pub fn link_lost(&self) {
        self.set_state(LinkState::Disconnected);
        self.set_ready(false);
        self.publish_blocked.store(true, Relaxed);
    }

    /// Records the connection state.
    pub fn set_state(&self, state: LinkState) {
        self.state.store(state as u8, Relaxed);
    }

    /// Counts a re-established connection.
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
        self.set_state(LinkState::Connected);
    }

    /// Records one publish round trip.
    pub fn publish_took(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.latency_count.fetch_add(1, Relaxed);
        self.latency_sum_us.fetch_add(us, Relaxed);
        self.latency_max_us.fetch_max(us, Relaxed);
        self.publish_durations.observe(d);
    }

    /// Records a publication's arrival from the engine, published at `time_ms` (Unix ms).
    pub fn arrived(&self, time_ms: u64) {
        let lag = crate::now_ms().saturating_sub(time_ms);
        self.lag.observe(Duration::from_millis(lag));
    }

    /// Adds `n` to the named counter (which must be one given to [`EngineHealth::new`]).
    pub fn count(&self, name: &'static str, n: u64) {
        if let Some(c) = self.counters.get(name) {
            c.fetch_add(n, Relaxed);
        } else {
            debug_assert!(false, "unknown engine counter {name}");
        }
    }

    /// The status for `/api/stats`.
    pub fn status(&self) -> EngineStatus {
        let count = self.latency_count.load(Relaxed);
        let state = match self.state.load(Relaxed) {
            1 => "connected",
            2 => "disconnected",
            _ => "connecting",
        };
        EngineStatus {
            kind: self.kind,
            ready: self.is_ready(),
            state,
            reconnects: self.reconnects.load(Relaxed),
            publish_latency: LatencySummary {
                count,
                mean_us: self
                    .latency_sum_us
                    .load(Relaxed)
                    .checked_div(count)
                    .unwrap_or(0),
                max_us: self.latency_max_us.load(Relaxed),
            },
            publish_durations: self.publish_durations.snapshot(),
            lag: self.lag.snapshot(),
            counters: self
                .counters
                .iter()
                .map(|(k, v)| (*k, v.load(Relaxed)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_canary_vouches_for_the_engine_only_for_a_while() {
        let h = EngineHealth::new("test", &[]);
        assert!(
            !h.is_ready() && !h.accepts_publishes(),
            "not ready before a canary"
        );
        h.set_ready(false);
        assert!(!h.accepts_publishes(), "a failure before the first success");
        h.set_ready(true);
        assert!(h.is_ready());
        tokio::time::advance(READY_FOR - Duration::from_millis(10)).await;
        assert!(h.is_ready(), "still within the bound");
        // No canary came back for longer than the bound: not ready, although the last result
        // was a success (its task may be stuck on a silent network).
        tokio::time::advance(Duration::from_millis(20)).await;
        assert!(!h.is_ready() && !h.status().ready);
        assert!(
            h.accepts_publishes(),
            "publishing is gated on canary results only"
        );
        h.set_ready(true);
        assert!(h.is_ready(), "a new round trip vouches again");
    }

    #[test]
    fn late_canaries_refuse_no_publish_and_a_lost_link_does_until_one_comes_back() {
        let h = EngineHealth::new("test", &[]);
        h.set_ready(true);
        for _ in 0..10 {
            h.set_ready(false);
            assert!(!h.is_ready(), "readiness follows the last canary");
            assert!(h.accepts_publishes(), "a late canary refuses nothing");
        }
        h.link_lost();
        assert!(!h.accepts_publishes());
        h.set_ready(true);
        assert!(h.accepts_publishes(), "one round trip opens it again");
    }
}
