//! `Session`: one connection's protocol state, independent of its transport. It subscribes
//! (with or without a resume position), filters what fan-out queued (dropping duplicates,
//! filling gaps from history, announcing resets), answers the WebSocket requests, and cleans
//! up on close.
//!
//! The transport (herald-server's `ws.rs` or `sse.rs`) owns the socket and the outbox receiver,
//! turns [`Emit`]s and replies into wire bytes, and calls the session from its single
//! connection task.
//!
//! The files, each depending only on those above it: `types.rs` (transport, bounds, emits,
//! errors), `state.rs` (the session's fields), `policy.rs` (permissions and rates, and the
//! requests that are policy plus one engine call), `ordering.rs` (replay and the filter that
//! keeps each channel in order), `subscriptions.rs` (join, leave, adopt a token, close) and
//! `request.rs` (one WebSocket request in, one typed reply out).

mod ordering;
mod policy;
mod request;
mod state;
mod subscriptions;
mod types;

pub use request::{
    history_result, Completion, Handled, Pending, RequestContext, MAX_HISTORY_LIMIT,
};
pub use state::Session;
pub use subscriptions::{JoinDone, Joining};
pub use types::{publish_error_code, Emit, SessionError, SessionLimits, Transport};

#[cfg(test)]
mod tests;
