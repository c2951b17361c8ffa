//! Node-wide counters and gauges behind `GET /api/stats`, kept as relaxed atomics so the hot
//! path pays one add per fan-out.

use crate::Transport;
use herald_protocol::CloseCode;
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
    /// What limits and permissions refused.
    pub refused: Refusals,
    /// Connections accepted and closed, by transport and close code.
    pub connections: ConnectionCounts,
    /// Reset notices by reason: beyond retention, epoch changed.
    resets_by_reason: [AtomicU64; 2],
    /// Resumes that ended in a reset (a part of `resumes`).
    pub resume_resets: AtomicU64,
    /// What was written to sockets, and how long it took to get there.
    pub writes: Writes,
    /// Publications by source and event name.
    pub published: PublicationCounts,
}

/// Publications written to sockets and their bytes, by transport, and the delivery latency.
#[derive(Debug, Default)]
pub struct Writes {
    messages: [AtomicU64; 2],
    bytes: [AtomicU64; 2],
    /// From a publication accepted (or received from the engine) to its bytes handed to a
    /// subscriber's socket; sampled: one written batch in [`LATENCY_SAMPLE`] per worker thread.
    pub delivery_latency: crate::Histogram,
}

/// One written batch in this many records its delivery latency (per worker thread), so the
/// clock read and the histogram's shared counters stay off most batches.
pub const LATENCY_SAMPLE: u32 = 8;

thread_local! {
    static BATCHES: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

impl Writes {
    /// A batch was handed to a socket: `messages` publications in `bytes` bytes, the oldest
    /// accepted at `oldest`.
    pub fn written(&self, t: Transport, messages: u64, bytes: u64, oldest: Option<Instant>) {
        let i = transport_index(t);
        if messages > 0 {
            self.messages[i].fetch_add(messages, Relaxed);
        }
        self.bytes[i].fetch_add(bytes, Relaxed);
        if let Some(oldest) = oldest {
            let n = BATCHES.with(|c| {
                let n = c.get().wrapping_add(1);
                c.set(n);
                n
            });
            if n.is_multiple_of(LATENCY_SAMPLE) {
                self.delivery_latency.observe(oldest.elapsed());
            }
        }
    }

    /// Publications written on `t`.
    pub fn messages(&self, t: Transport) -> u64 {
        self.messages[transport_index(t)].load(Relaxed)
    }

    /// Bytes written on `t` (publications and every other push).
    pub fn bytes(&self, t: Transport) -> u64 {
        self.bytes[transport_index(t)].load(Relaxed)
    }
}

/// Where a publication came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The HTTP API (`/api/publish`, `/api/broadcast`, `/api/batch`).
    Http,
    /// A client's WebSocket `publish`.
    Client,
    /// The Redis engine's ingest of plain `PUBLISH`es and stream entries.
    RedisIngest,
    /// A signed webhook delivery (`POST /ingest/{source}`).
    Webhook,
    /// A Postgres connector (`[[connectors.postgres]]`).
    Postgres,
    /// A Twitch connector (`[[connectors.twitch]]`).
    Twitch,
    /// A Redis connector (`[[connectors.redis]]`).
    RedisConnector,
}

impl Source {
    /// Every source, in counter order.
    pub const ALL: [Source; 7] = [
        Source::Http,
        Source::Client,
        Source::RedisIngest,
        Source::Webhook,
        Source::Postgres,
        Source::Twitch,
        Source::RedisConnector,
    ];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Http => "http",
            Source::Client => "client",
            Source::RedisIngest => "redis_ingest",
            Source::Webhook => "webhook",
            Source::Postgres => "postgres",
            Source::Twitch => "twitch",
            Source::RedisConnector => "redis_connector",
        }
    }
}

/// Most distinct event names counted by name; publications of any other name count as `other`,
/// so a publisher inventing names cannot grow the metric without bound.
pub const MAX_EVENT_LABELS: usize = 100;

/// Publications accepted, by source and by event name.
#[derive(Debug, Default)]
pub struct PublicationCounts {
    by_source: [AtomicU64; Source::ALL.len()],
    /// Read-locked on every publication (a new name, at most 100 times, takes the write lock).
    by_event: std::sync::RwLock<std::collections::HashMap<Box<str>, AtomicU64>>,
    other_events: AtomicU64,
}

impl PublicationCounts {
    /// Counts one publication.
    pub fn count(&self, source: Source, event: &str) {
        let i = Source::ALL.iter().position(|s| *s == source).unwrap_or(0);
        self.by_source[i].fetch_add(1, Relaxed);
        {
            let map = self
                .by_event
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(n) = map.get(event) {
                n.fetch_add(1, Relaxed);
                return;
            }
        }
        let mut map = self
            .by_event
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get(event) {
            n.fetch_add(1, Relaxed);
        } else if map.len() < MAX_EVENT_LABELS {
            map.insert(event.into(), AtomicU64::new(1));
        } else {
            drop(map);
            self.other_events.fetch_add(1, Relaxed);
        }
    }

    /// Publications from `source`.
    pub fn from(&self, source: Source) -> u64 {
        let i = Source::ALL.iter().position(|s| *s == source).unwrap_or(0);
        self.by_source[i].load(Relaxed)
    }

    /// Publications by event name, sorted, then `other` for names beyond the first
    /// [`MAX_EVENT_LABELS`].
    pub fn by_event(&self) -> (Vec<(String, u64)>, u64) {
        let map = self
            .by_event
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut v: Vec<(String, u64)> = map
            .iter()
            .map(|(k, n)| (k.to_string(), n.load(Relaxed)))
            .collect();
        drop(map);
        v.sort();
        (v, self.other_events.load(Relaxed))
    }
}

impl Stats {
    /// Counts one reset notice.
    pub fn reset(&self, reason: crate::ResetReason) {
        self.resets.fetch_add(1, Relaxed);
        let i = match reason {
            crate::ResetReason::BeyondRetention => 0,
            crate::ResetReason::EpochChanged => 1,
        };
        self.resets_by_reason[i].fetch_add(1, Relaxed);
    }

    /// Reset notices by reason: `(beyond_retention, epoch_changed)`.
    pub fn resets_by_reason(&self) -> (u64, u64) {
        (
            self.resets_by_reason[0].load(Relaxed),
            self.resets_by_reason[1].load(Relaxed),
        )
    }
}

/// Connections accepted and closed per transport (index: [`transport_index`]); closes by the
/// server's close code (index in [`CloseCode::ALL`]) or, in the last slot, ended by the peer
/// (a client that closed or went away, or a failed write).
#[derive(Debug, Default)]
pub struct ConnectionCounts {
    accepted: [AtomicU64; 2],
    closed: [[AtomicU64; CloseCode::ALL.len() + 1]; 2],
}

/// The counters' index of a transport.
pub fn transport_index(t: Transport) -> usize {
    match t {
        Transport::Sse => 0,
        Transport::Ws => 1,
    }
}

impl ConnectionCounts {
    /// A connection was accepted.
    pub fn accepted(&self, t: Transport) {
        self.accepted[transport_index(t)].fetch_add(1, Relaxed);
    }

    /// A connection closed: with the server's `code`, or by its peer (`None`).
    pub fn closed(&self, t: Transport, code: Option<CloseCode>) {
        let i = code.map_or(CloseCode::ALL.len(), |c| {
            CloseCode::ALL.iter().position(|&x| x == c).unwrap_or(0)
        });
        self.closed[transport_index(t)][i].fetch_add(1, Relaxed);
    }

    /// Accepted so far on `t`.
    pub fn accepted_count(&self, t: Transport) -> u64 {
        self.accepted[transport_index(t)].load(Relaxed)
    }

    /// Closed so far on `t`: `(code, count)` for each close code, then `(None, count)` for
    /// closes by the peer.
    pub fn closed_counts(&self, t: Transport) -> Vec<(Option<CloseCode>, u64)> {
        let row = &self.closed[transport_index(t)];
        CloseCode::ALL
            .iter()
            .map(|c| Some(*c))
            .chain([None])
            .zip(row.iter().map(|a| a.load(Relaxed)))
            .collect()
    }
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
            refused: Refusals::default(),
            connections: ConnectionCounts::default(),
            resets_by_reason: Default::default(),
            resume_resets: AtomicU64::new(0),
            writes: Writes::default(),
            published: PublicationCounts::default(),
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
    /// What limits and permissions refused.
    pub refused: RefusalsSnapshot,
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
            refused: self.refused.snapshot(),
        }
    }
}

/// Declares a struct of counters and its snapshot, field for field.
macro_rules! counters {
    ($(#[$m:meta])* $name:ident / $snap:ident { $($(#[$fm:meta])* $f:ident,)* }) => {
        $(#[$m])*
        #[derive(Debug, Default)]
        pub struct $name {
            $($(#[$fm])* pub $f: AtomicU64,)*
        }

        /// A point-in-time copy of the counters.
        #[derive(Debug, Clone, Serialize)]
        pub struct $snap {
            $($(#[$fm])* pub $f: u64,)*
        }

        impl $name {
            /// Copies the current values.
            pub fn snapshot(&self) -> $snap {
                $snap { $($f: self.$f.load(Relaxed),)* }
            }
        }
    };
}

counters! {
    /// Requests refused by a limit or a permission, one counter per limit (each documented in
    /// docs/protocol.md with the error it answers).
    Refusals / RefusalsSnapshot {
        /// WebSocket upgrades refused because their `Origin` is not allowed.
        origin,
        /// Connections refused because their address held `server.max_connections_per_ip`.
        per_ip,
        /// Connections refused because their user held `connection.max_per_user`.
        per_user,
        /// Client publishes refused by `connection.publish_per_minute`.
        publish_rate,
        /// Client publishes refused by a namespace's `publish_per_minute` (per user).
        namespace_publish_rate,
        /// Subscriptions refused by `connection.subscribe_per_minute`.
        subscribe_rate,
        /// HTTP API requests refused by a key's `requests_per_second`.
        api_rate,
        /// Telegram logins and token renewals refused by `auth.telegram.logins_per_minute_per_ip`.
        login_rate,
        /// Token renewals refused because the session is older than `auth.token.max_session_age`
        /// (or its age is unknown).
        session_expired,
        /// Tokens refused (bad signature, expired, wrong audience ...).
        bad_token,
        /// Requests refused because the connection lacked the permission.
        permission,
        /// Connections ended because their token expired.
        token_expired,
        /// Subscriptions ended because a refreshed token no longer allows them.
        revoked,
        /// Publishes, request bodies and WebSocket messages refused for their size.
        too_large,
        /// Subscriptions refused by `connection.max_channels`.
        too_many_channels,
        /// Subscriptions refused because the channel held its namespace's `max_subscribers`.
        channel_full,
        /// Client publishes and subscribes the app's backend refused.
        proxy_refused,
        /// Client publishes and subscribes refused because the app's backend gave no usable
        /// answer (down, slow, an error, too many calls in flight).
        proxy_failed,
        /// Rate checks let through unmetered because the rate map was full.
        rate_map_full,
        /// Publications refused because one more channel would keep latest state beyond
        /// `channels.max_latest_state_channels`.
        latest_state_channels,
        /// Publications with a new idempotency key refused because the embedded engine's
        /// state store held `engine.max_state_keys`.
        state_keys,
    }
}
