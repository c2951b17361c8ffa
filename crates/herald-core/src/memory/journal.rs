//! What the embedded engine keeps across restarts when it has a data directory: the records it
//! hands its journal, and what the journal gives back when the node starts again.
//!
//! The engine decides *what* is kept (it applies retention in memory and reports what left);
//! a [`Journal`] decides *how* it lies on disk. The engine's writer thread calls
//! [`Journal::write`] with every record of a group commit, and fans the publications out only
//! once it returned `Ok`.

use crate::{ChannelName, EventName, LatestState, Publication};
use herald_protocol::{Epoch, StreamPosition};
use serde_json::value::RawValue;
use std::sync::Arc;

/// One record for the journal.
#[derive(Debug, Clone)]
pub enum Entry {
    /// `channel` exists under `epoch` at offset 0 (a read handed out its position before
    /// anything was published).
    Channel {
        /// The channel.
        channel: ChannelName,
        /// Its epoch.
        epoch: Epoch,
    },
    /// A publication was accepted: its channel's epoch and newest offset are now its
    /// position's.
    Publication {
        /// The publication.
        publication: Arc<Publication>,
        /// `Some(expiry)`: kept in history until then (Unix milliseconds).
        history: Option<u64>,
        /// `Some`: kept as latest state in this mode, until the expiry if any.
        latest: Option<(LatestState, Option<u64>)>,
        /// Its idempotency key's record (scope, key, value), kept with it in one step.
        once: Option<(String, String, StateValue)>,
    },
    /// `channel`'s history at or below offset `through` left (trimmed or expired).
    Trim {
        /// The channel.
        channel: ChannelName,
        /// The newest offset that left.
        through: u64,
    },
    /// The latest-state entry at `offset` of `channel` left (replaced, evicted or expired).
    DropLatest {
        /// The channel.
        channel: ChannelName,
        /// Its offset.
        offset: u64,
    },
    /// `channel` was forgotten: nothing of it is kept any more.
    Forget {
        /// The channel.
        channel: ChannelName,
    },
    /// A value of the state store was set (`Some`) or removed (`None`).
    State {
        /// Who owns the key (a connector's name).
        scope: String,
        /// The key within the scope.
        key: String,
        /// The new value.
        value: Option<StateValue>,
    },
}

/// A value of the state store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateValue {
    /// The bytes.
    pub bytes: Arc<[u8]>,
    /// When it expires (Unix milliseconds); `None`: never.
    pub expires_ms: Option<u64>,
}

/// Why the journal failed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct JournalError(pub String);

/// Durable storage for the embedded engine.
pub trait Journal: Send + 'static {
    /// Writes `entries`, in order, as one transaction: all of them or none. Returns once they
    /// are on stable storage (they survive a crash of the process and of the machine).
    fn write(&mut self, entries: &[Entry]) -> Result<(), JournalError>;
    /// Called once the engine stops writing (a clean shutdown).
    fn close(&mut self) {}
}

/// One channel as the journal kept it.
#[derive(Debug)]
pub struct RecoveredChannel {
    /// The channel.
    pub channel: ChannelName,
    /// Its epoch.
    pub epoch: Epoch,
    /// Its newest offset.
    pub top: u64,
    /// Its history, oldest first, each with its expiry (Unix milliseconds).
    pub history: Vec<(Arc<Publication>, u64)>,
    /// Its latest-state entries, oldest first, each with the mode and expiry it was kept with.
    pub latest: Vec<(Arc<Publication>, LatestState, Option<u64>)>,
}

/// What a journal held when it was opened.
#[derive(Debug, Default)]
pub struct Recovered {
    /// Every channel with an epoch.
    pub channels: Vec<RecoveredChannel>,
    /// The state store's values.
    pub state: Vec<(String, String, StateValue)>,
}

impl Recovered {
    /// Publications in history, over every channel.
    pub fn history_len(&self) -> usize {
        self.channels.iter().map(|c| c.history.len()).sum()
    }
}

/// Rebuilds a stored publication; `None` when a stored name or payload is no longer valid.
pub fn stored_publication(
    channel: &ChannelName,
    epoch: &Epoch,
    offset: u64,
    event: &str,
    data: String,
    time_ms: u64,
) -> Option<Arc<Publication>> {
    let event = EventName::parse(event).ok()?;
    let data = RawValue::from_string(data).ok()?;
    Some(Arc::new(Publication::new(
        channel.clone(),
        event,
        data,
        StreamPosition::new(epoch.clone(), offset),
        time_ms,
    )))
}
