//! What each connector (a Postgres outbox, a Twitch account, a Redis source) reports: its
//! state, whether this node holds its lease, what it published and refused, its errors and
//! reconnects, when its last event came and how far behind its source it is. Shown in
//! `/api/stats` and `/metrics`.

use serde_json::{json, Value};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Where a connector is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ConnectorState {
    /// Another node holds its lease; this one waits to take over.
    Standby = 0,
    /// Connecting (or reconnecting after a failure, with backoff).
    Connecting = 1,
    /// Connected and consuming.
    Connected = 2,
    /// Stopped for shutdown.
    Stopped = 3,
}

impl ConnectorState {
    /// The name shown in stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Standby => "standby",
            Self::Connecting => "connecting",
            Self::Connected => "connected",
            Self::Stopped => "stopped",
        }
    }

    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Standby,
            1 => Self::Connecting,
            2 => Self::Connected,
            _ => Self::Stopped,
        }
    }
}

/// What a connector's events came to, counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectorOutcome {
    /// Published.
    Published,
    /// Already published (its idempotency key or message id was seen): nothing published.
    Duplicate,
    /// Refused for good (bad channel, not JSON, too large), and set aside where the source
    /// allows.
    Rejected,
}

impl ConnectorOutcome {
    /// Every outcome, in counter order.
    pub const ALL: [Self; 3] = [Self::Published, Self::Duplicate, Self::Rejected];

    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::Duplicate => "duplicate",
            Self::Rejected => "rejected",
        }
    }
}

/// One connector's live state.
#[derive(Debug)]
pub struct ConnectorStatus {
    /// `postgres`, `twitch`, `redis`.
    pub kind: &'static str,
    /// Its configured name.
    pub name: String,
    state: AtomicU8,
    leader: AtomicBool,
    outcomes: [AtomicU64; 3],
    errors: AtomicU64,
    reconnects: AtomicU64,
    last_event_ms: AtomicU64,
    lag_ms: AtomicU64,
    last_error: Mutex<Option<String>>,
    /// Counters particular to the kind (Twitch revocations, say), by name.
    extra: Mutex<Vec<(&'static str, u64)>>,
}

impl ConnectorStatus {
    /// A connector that has not started.
    pub fn new(kind: &'static str, name: impl Into<String>) -> Arc<Self> {
        Arc::new(Self {
            kind,
            name: name.into(),
            state: AtomicU8::new(ConnectorState::Standby as u8),
            leader: AtomicBool::new(false),
            outcomes: Default::default(),
            errors: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            last_event_ms: AtomicU64::new(0),
            lag_ms: AtomicU64::new(0),
            last_error: Mutex::new(None),
            extra: Mutex::new(Vec::new()),
        })
    }

    /// The lease's name: one per kind and name across the cluster.
    pub fn lease_name(&self) -> String {
        format!("connector.{}.{}", self.kind, self.name)
    }

    /// Sets the state.
    pub fn set_state(&self, s: ConnectorState) {
        self.state.store(s as u8, Relaxed);
    }

    /// The state.
    pub fn state(&self) -> ConnectorState {
        ConnectorState::from_u8(self.state.load(Relaxed))
    }

    /// Whether this node holds the lease.
    pub fn set_leader(&self, leader: bool) {
        self.leader.store(leader, Relaxed);
    }

    /// Whether this node holds the lease.
    pub fn leader(&self) -> bool {
        self.leader.load(Relaxed)
    }

    /// Counts `n` events with `outcome`, and stamps the last event's time.
    pub fn count(&self, outcome: ConnectorOutcome, n: u64) {
        self.outcomes[outcome as usize].fetch_add(n, Relaxed);
        self.last_event_ms.store(crate::now_ms(), Relaxed);
    }

    /// Events counted with `outcome`.
    pub fn counted(&self, outcome: ConnectorOutcome) -> u64 {
        self.outcomes[outcome as usize].load(Relaxed)
    }

    /// Records an error (logged by the caller).
    pub fn error(&self, e: impl std::fmt::Display) {
        self.errors.fetch_add(1, Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
    }

    /// Counts a reconnect (a lost connection, a watchdog, a hand-off).
    pub fn reconnected(&self) {
        self.reconnects.fetch_add(1, Relaxed);
    }

    /// How far behind its source the connector is (the oldest unpublished event's age).
    pub fn set_lag_ms(&self, ms: u64) {
        self.lag_ms.store(ms, Relaxed);
    }

    /// Adds `n` to the kind's own counter `name`.
    pub fn add(&self, name: &'static str, n: u64) {
        let mut extra = self.extra.lock().unwrap_or_else(|p| p.into_inner());
        match extra.iter_mut().find(|(k, _)| *k == name) {
            Some((_, v)) => *v += n,
            None => extra.push((name, n)),
        }
    }

    /// The kind's own counters.
    pub fn extra(&self) -> Vec<(&'static str, u64)> {
        self.extra.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Errors so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Relaxed)
    }

    /// Reconnects so far.
    pub fn reconnects(&self) -> u64 {
        self.reconnects.load(Relaxed)
    }

    /// The last event's time (Unix milliseconds), 0 before the first.
    pub fn last_event_ms(&self) -> u64 {
        self.last_event_ms.load(Relaxed)
    }

    /// The lag last measured.
    pub fn lag_ms(&self) -> u64 {
        self.lag_ms.load(Relaxed)
    }

    /// The whole state as JSON, for `/api/stats`.
    pub fn to_json(&self) -> Value {
        let mut counts = serde_json::Map::new();
        for o in ConnectorOutcome::ALL {
            counts.insert(o.as_str().to_owned(), json!(self.counted(o)));
        }
        for (k, v) in self.extra() {
            counts.insert(k.to_owned(), json!(v));
        }
        json!({
            "kind": self.kind,
            "name": self.name,
            "state": self.state().as_str(),
            "leader": self.leader(),
            "events": counts,
            "errors": self.errors(),
            "reconnects": self.reconnects(),
            "last_error": *self.last_error.lock().unwrap_or_else(|p| p.into_inner()),
            "last_event_ms": (self.last_event_ms() > 0).then(|| self.last_event_ms()),
            "lag_ms": self.lag_ms(),
        })
    }
}

/// Every connector of the node.
#[derive(Debug, Default)]
pub struct Connectors {
    /// In configuration order.
    pub list: Vec<Arc<ConnectorStatus>>,
}
