//! The embedded engine: in-process broker and history (one type, so that assigning an offset,
//! appending and fanning out are one step under the channel's lock) and presence.
//! Used by single-node deployments and by tests; not a mock.

mod engine;
mod presence;

pub use engine::{MemoryEngine, MemoryEngineConfig};
pub use presence::MemoryPresenceStore;
