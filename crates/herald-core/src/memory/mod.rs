//! The embedded engine: in-process broker and history (one type, so that assigning an offset,
//! appending and fanning out are one step under the channel's lock), presence, and a state
//! store. With a [`Journal`] (a data directory) it keeps channels across restarts.
//! Used by single-node deployments and by tests; not a mock.

mod applier;
mod channel;
mod engine;
mod history;
mod journal;
mod lease;
mod presence;
mod publish;
mod state;
#[cfg(test)]
mod tests;
mod writer;

pub use engine::{MemoryEngine, MemoryEngineConfig};
pub use journal::{
    stored_publication, Entry, Journal, JournalError, Recovered, RecoveredChannel, StateValue,
};
pub use lease::MemoryLeases;
pub use presence::MemoryPresenceStore;
