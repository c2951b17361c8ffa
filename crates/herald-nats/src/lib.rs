//! Herald's NATS engine: nodes share channels through a NATS server (v2.9 or later) with
//! JetStream enabled.
//!
//! # Layout on the server
//!
//! Channel and namespace names are written as lowercase hex in subjects and keys (`hex`), since
//! they may hold `.` and other characters subjects cannot.
//!
//! - History: one JetStream stream per namespace listed in `ChannelsConfig`, plus one for the
//!   default namespace: `{PREFIX}_H_{nshex}` / `{PREFIX}_H_DEFAULT`, subjects
//!   `{prefix}.h.{nshex or _}.{chanhex}`, one subject per channel, `max_messages_per_subject` =
//!   the namespace's retained count (at least 1), file storage, direct get allowed. Each message
//!   carries `Herald-Epoch`, `Herald-Offset`, `Herald-Event`, `Herald-Time` and `Herald-Prev`
//!   (the stream sequence of the channel's previous message) headers and the JSON payload.
//!   Existing streams are updated to the configuration at connect.
//! - Fan-out: core NATS on `{prefix}.f.{chanhex}`, one subscription per channel this node has
//!   subscribers for. Publications and presence join/leave events (`Herald-Kind`) share it.
//! - Epochs of channels with nothing in history: key-value bucket `{PREFIX}_EPOCHS`, key
//!   `{nshex or _}.{chanhex}`, written once with `create` (exactly one node wins).
//! - Presence: key-value bucket `{PREFIX}_PRESENCE`, key `{chanhex}.{connhex}`, value the member
//!   as JSON, bucket `max_age` = the presence lease.
//! - Canary: `{prefix}.canary.{node id}`.
//!
//! # Ordering authority
//!
//! The channel's history subject is the single ordering authority. A publish reads the last
//! message of the subject (direct get, or this node's cached copy of what it appended last),
//! and appends offset + 1 with `Nats-Expected-Last-Subject-Sequence` set to that message's
//! sequence (0 when the subject is empty). The append fails when any node appended in between,
//! and the publish starts over (at most 50 times, then `EngineError::Unavailable`). Offsets are
//! therefore assigned and stored in one atomic step per channel, across all nodes, and history
//! holds every offset below the newest one: a node that receives offset N+2 before N+1 on the
//! fan-out subject (two publishers on different nodes) finds N+1 in history when its session
//! fills the gap. Publishes of one channel on one node are serialized locally first (a fixed
//! set of 256 striped locks), so contention at the server is between nodes only.
//!
//! After the append is acknowledged, the publication goes to the fan-out subject, still under
//! the local lock so one node's publications leave in offset order.
//!
//! # Epochs, TTL and namespaces without history
//!
//! The epoch travels in every history message, so while a channel has a message in its subject
//! the last message defines the channel's position `(epoch, offset)`. nats-server 2.9 has no
//! per-message TTL, and a channel's position must outlive its history: if the last message
//! expired, offsets would restart at 1 in the same epoch and subscribers would drop them as
//! duplicates. So:
//!
//! - history streams get `max_age = max(history_ttl, channel_state_ttl + 60 s)`, and
//!   `history_ttl` is applied when reading (by `Herald-Time`): an older publication is treated
//!   as expired although the server still keeps it as the channel's position. Storage is
//!   therefore held up to `channel_state_ttl` after a channel's last publish, not `history_ttl`.
//! - a channel with an empty subject takes its epoch from `{PREFIX}_EPOCHS` (creating it when
//!   absent), whose bucket `max_age` is `channel_state_ttl`. The entry is never rewritten, and
//!   every message of an epoch is appended after its entry was created, so the entry expires
//!   before the epoch's last message does: an empty subject with an entry means the epoch was
//!   never used and the next offset is 1; an empty subject without one means the channel was
//!   forgotten and starts over under a new epoch (subscribers are told with a reset).
//!   A channel that is only read keeps the epoch its read created for `channel_state_ttl`.
//! - namespaces with `history_size` 0 (with latest state or not) still append every publication, as
//!   headers with an empty payload, to a stream with `max_messages_per_subject` = 1: the last
//!   message is the channel's position, and no history is ever served from it.
//!
//! # Idempotency keys
//!
//! A publish with an `idempotency_key` sends `{chanhex}.{key}` as its `Nats-Msg-Id` and the
//! digest of its event and payload as `Herald-Digest`. History streams keep message ids for
//! `publish.idempotency_window` (their `duplicate_window`, at most their `max_age`), so a
//! repeat on any node is acknowledged as a duplicate with the first message's sequence,
//! appends nothing, and is answered with that message's position, read back by a direct get
//! (503 if it already left the subject).
//!
//! # Reads
//!
//! A history read gets the channel's last message (direct get by subject) and, for up to 32
//! publications, walks back through `Herald-Prev` with direct gets; longer reads use a
//! short-lived ordered consumer on the channel's subject, deleted afterwards. Presence members
//! are read with direct gets over `{chanhex}.*` (newest value per key wins), which leaves no
//! state on the server and cannot be confused by leases refreshed during the read.
//!
//! # Delivery, recovery and health
//!
//! Delivery, recovery and the canary loop are herald-core's remote kit (`herald_core::Remote`),
//! which calls this engine through `RemoteBackend` (`remote.rs`).
//! `Broker::subscribe`/`unsubscribe` keep one core subscription per channel in step with the
//! hub (`RemoteSubscriptions`); each has a task that turns messages into deliveries to the hub,
//! and the kit records the newest position seen. After a reconnect (the client re-subscribes by
//! itself; a flush confirms it) or a slow-consumer drop, a recovery pass reads every subscribed
//! channel's history since its last seen position and fans out what was missed; sessions drop
//! duplicates by offset. If that position cannot be resumed, the newest publication is fanned
//! out so sessions notice the jump and reset.
//!
//! A canary makes a core NATS round trip every 500 ms; the engine is ready while it does, and
//! `Broker::publish` fails fast with `EngineError::Unavailable` while it is not. Every NATS call
//! is bounded by `command_timeout`. Counters: `recoveries`, `recovered_publications`,
//! `publish_retries` (appends that lost the race to another node), `slow_consumers`,
//! `bad_messages` (fan-out messages that were not Herald's) and `latest_failures` (publications
//! in history whose latest state could not be written; the state stays at the one before).
//!
//! # Latest state
//!
//! Kept apart from history in stream `{PREFIX}_LATEST`; see `latest.rs`. A channel whose history
//! subject is empty continues from its latest state's position before it consults
//! `{PREFIX}_EPOCHS`, so the state keeps the channel's epoch and offset.
//!
//! A publication acknowledged by JetStream but whose fan-out was lost (the publishing node died
//! in between) reaches subscribers with the channel's next publication, through the gap fill.

mod codec;
mod config;
mod engine;
mod history;
mod latest;
mod lease;
mod loops;
mod presence;
mod publish;
mod remote;
mod setup;
mod util;

pub use config::NatsEngineConfig;
pub use engine::NatsEngine;
pub use presence::NatsPresence;
