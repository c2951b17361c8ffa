//! Herald's engine: channel names and namespace options, the publisher, the local hub, bounded
//! per-connection outboxes, transport-independent sessions, and the engine traits (broker,
//! history, presence) with their in-memory implementations.
//!
//! Nothing here opens a socket or speaks HTTP; herald-server drives sessions over SSE and
//! WebSocket, and the binary chooses the engine backends.

mod authn;
mod channel;
mod conn_id;
mod connector;
mod counts;
mod engine;
mod histogram;
mod hub;
mod identity;
pub mod memory;
mod namespace;
mod node;
mod outbox;
mod parts;
mod proxy;
mod publication;
mod publisher;
mod rate;
mod remote;
pub mod roster;
mod secret;
mod session;
mod stats;
pub mod template;
mod topic;

pub use authn::{Authenticator, TokenRefused};
pub use channel::{ChannelError, ChannelName, EventName, MAX_CHANNEL_BYTES, MAX_EVENT_BYTES};
pub use conn_id::ConnId;
pub use connector::{ConnectorOutcome, ConnectorState, ConnectorStatus, Connectors};
pub use counts::{AtLimit, CountGuard, CountLimiter, UserGuard, UserLimiter};
pub use engine::{
    resume_reset, Broker, EngineError, EngineStatus, HistoryPage, HistoryQuery, HistoryStore,
    LatencySummary, Leases, Once, OnceRecord, PresenceStore, Published, ResetReason, Retention,
    StateStore, LATEST_STATE_BOUND, LEASE_TTL, STATE_KEYS_BOUND,
};
pub use histogram::{Histogram, HistogramSnapshot, Percentiles, BUCKETS_US};
pub use hub::{ConnectionInfo, Hub};
pub use identity::{channel_owner, GrantError, Grants, Identity, MAX_GRANTS};
pub use namespace::{
    Access, Action, ChannelsConfig, Denied, KeepLatest, LatestState, NamespaceOptions,
    PresenceMode, MAX_LATEST_EVENTS,
};
pub use node::{ClientRules, Node};
pub use outbox::{outbox, Outbox, OutboxLimits, OutboxTx, Outgoing, PushError};
pub use parts::{EngineParts, NodeParts};
pub use proxy::{AppProxy, ProxyCall, ProxyVerdict};
pub use publication::{PresenceEvent, PresenceKind, Publication};
pub use publisher::{Prepared, PublishError, Publisher, PublisherLimits, MAX_IDEMPOTENCY_KEY};
pub use rate::{KeyedBuckets, Take, TokenBucket};
pub use remote::{
    Canary, EngineHealth, LinkState, Remote, RemoteBackend, RemoteSubscriber, RemoteSubscriptions,
    CANARY_EVERY, CANARY_WAIT, READY_FOR,
};
pub use secret::{Secret, SecretUrl, REDACTED};
pub use session::{
    history_result, publish_error_code, Completion, Emit, Handled, JoinDone, Joining, Pending,
    RequestContext, Session, SessionError, SessionLimits, Transport, MAX_HISTORY_LIMIT,
};
pub use stats::{
    transport_index, ConnectionCounts, PublicationCounts, Refusals, RefusalsSnapshot, Source,
    Stats, StatsSnapshot, Writes, LATENCY_SAMPLE, MAX_EVENT_LABELS,
};

/// A new random epoch: 8 base36 characters.
pub fn new_epoch() -> herald_protocol::Epoch {
    let s: String = (0..8)
        .map(|_| {
            let d = fastrand::u8(..36);
            char::from(if d < 10 { b'0' + d } else { b'a' + d - 10 })
        })
        .collect();
    // Invariant: 8 characters of [0-9a-z] is a valid epoch.
    herald_protocol::Epoch::parse(&s).expect("generated epoch is valid")
}

/// Milliseconds since the Unix epoch, for publication timestamps.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}
