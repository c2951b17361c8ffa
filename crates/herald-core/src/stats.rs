//! Node-wide counters and gauges behind `GET /api/stats`, kept as relaxed atomics so the hot
//! path pays one add per fan-out.

use serde::Serialize;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Instant;

/// Counters and gauges for this node.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    /// Open WebSocket connections.
    pub connections_ws: AtomicI64,
    /// Open SSE connections.
    pub connections_sse: AtomicI64,
    /// Publications accepted so far.
    pub publications: AtomicU64,
    /// Messages queued to subscribers so far.
    pub deliveries: AtomicU64,
    /// Connections evicted because their outbox overflowed.
    pub slow_consumer_evictions: AtomicU64,
    /// Subscriptions that resumed from a position.
    pub resumes: AtomicU64,
    /// Reset notices sent (a resume or gap that could not be filled).
    pub resets: AtomicU64,
    /// Connections refused because the node was full.
    pub connections_rejected: AtomicU64,
    /// WebSocket upgrades refused because their `Origin` is not allowed.
    pub refused_origin: AtomicU64,
    /// Connections refused because their address held `server.max_connections_per_ip`.
    pub refused_per_ip: AtomicU64,
    /// Client publishes refused by `connection.publish_per_minute`.
    pub refused_publish_rate: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            connections_ws: AtomicI64::new(0),
            connections_sse: AtomicI64::new(0),
            publications: AtomicU64::new(0),
            deliveries: AtomicU64::new(0),
            slow_consumer_evictions: AtomicU64::new(0),
            resumes: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            connections_rejected: AtomicU64::new(0),
            refused_origin: AtomicU64::new(0),
            refused_per_ip: AtomicU64::new(0),
            refused_publish_rate: AtomicU64::new(0),
        }
    }
}

/// A point-in-time copy of [`Stats`].
#[derive(Debug, Clone, Serialize)]
pub struct StatsSnapshot {
    /// Seconds since the node started.
    pub uptime_seconds: u64,
    /// Open WebSocket connections.
    pub connections_ws: i64,
    /// Open SSE connections.
    pub connections_sse: i64,
    /// Publications accepted.
    pub publications: u64,
    /// Messages queued to subscribers.
    pub deliveries: u64,
    /// Slow-consumer evictions.
    pub slow_consumer_evictions: u64,
    /// Resumed subscriptions.
    pub resumes: u64,
    /// Reset notices sent.
    pub resets: u64,
    /// Connections refused because the node was full.
    pub connections_rejected: u64,
    /// WebSocket upgrades refused for their origin.
    pub refused_origin: u64,
    /// Connections refused by the per-address limit.
    pub refused_per_ip: u64,
    /// Client publishes refused by the rate limit.
    pub refused_publish_rate: u64,
}

impl Stats {
    /// Copies the current values.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            uptime_seconds: self.started.elapsed().as_secs(),
            connections_ws: self.connections_ws.load(Relaxed),
            connections_sse: self.connections_sse.load(Relaxed),
            publications: self.publications.load(Relaxed),
            deliveries: self.deliveries.load(Relaxed),
            slow_consumer_evictions: self.slow_consumer_evictions.load(Relaxed),
            resumes: self.resumes.load(Relaxed),
            resets: self.resets.load(Relaxed),
            connections_rejected: self.connections_rejected.load(Relaxed),
            refused_origin: self.refused_origin.load(Relaxed),
            refused_per_ip: self.refused_per_ip.load(Relaxed),
            refused_publish_rate: self.refused_publish_rate.load(Relaxed),
        }
    }
}
