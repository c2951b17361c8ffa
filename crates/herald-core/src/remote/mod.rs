//! What the engines that connect nodes (Redis, NATS) share, so that each writes only what is
//! its own (how to subscribe to a channel, how to make a canary round trip, how to subscribe
//! again after a reconnect) and gets the rest from here:
//!
//! - [`RemoteSubscriptions`] keeps the engine's per-channel subscriptions in step with the hub;
//! - the last position seen on each received channel, where a recovery reads on from;
//! - recovery: re-reading each received channel's history from that position and fanning out
//!   what this node missed, woken by reconnects and lagging receivers, with one pending request
//!   at most;
//! - re-subscription after a reconnect, which then asks for a recovery;
//! - the readiness canary, and [`EngineHealth`] (readiness, link state, reconnects, publish
//!   latency, counters).
//!
//! An engine implements [`RemoteBackend`], creates one [`Remote`] before it connects (so its
//! connection's callbacks can report to it), hands it what arrives through [`Remote::deliver`],
//! and calls [`Remote::start`] once it is connected.

mod backend;
mod canary;
mod health;
mod last_seen;
mod recovery;
mod resubscribe;
mod shared;
mod start;
mod subscriptions;

pub use backend::{Canary, RemoteBackend};
pub use canary::{CANARY_EVERY, CANARY_WAIT};
pub use health::{EngineHealth, LinkState, READY_FOR};
pub use shared::Remote;
pub use subscriptions::{RemoteSubscriber, RemoteSubscriptions};
