//! Herald's Redis engine: many nodes share channels through one Redis.
//!
//! - **Ordering and history.** Each channel has a meta hash (`e` epoch, `t` newest offset) and
//!   a stream whose entry ids are the offsets. One Lua script assigns the offset, appends to
//!   the stream and PUBLISHes the publication, so every node sees the order of the offsets.
//! - **Fan-out.** A node SUBSCRIBEs only to the channels its clients use
//!   ([`herald_core::RemoteSubscriptions`] keeps Redis in step with the hub) and fans each
//!   message out to its local subscribers. After a reconnect or a lagging receiver it re-reads
//!   history from the last offset it saw on each channel, so nothing published while it was
//!   cut off is lost silently (sessions drop duplicates by offset).
//! - **Presence** lives in a lease sorted set per channel, refreshed by the node that holds the
//!   connection; members of a node that dies vanish once their lease runs out.
//! - **Workers** publish by adding an entry to the ingest stream; nodes consume it as one
//!   group; the publish script records the entry id so a retried entry is not published twice.
//! - **Health.** A canary goes through pub/sub every 500 ms; the engine is ready only while it
//!   comes back, and publishing is refused (503) while it is not.
//!
//! Keys (with the default prefix `herald`): `herald:{CHANNEL}:m` (meta), `herald:{CHANNEL}:h`
//! (history stream), `herald:{CHANNEL}:p` (pub/sub channel), `herald:{CHANNEL}:z` and
//! `herald:{CHANNEL}:u` (presence leases and members), `herald:{CHANNEL}:i` (ids of worker
//! entries published in the last hour), `herald:ingest` (worker stream),
//! `herald:ingest:rejected`.

mod config;
mod engine;
mod history;
mod ingest;
mod lease;
mod loops;
mod presence;
mod publish;
mod remote;
mod scripts;
mod setup;

pub use config::RedisEngineConfig;
pub use engine::RedisEngine;
pub use presence::RedisPresence;
