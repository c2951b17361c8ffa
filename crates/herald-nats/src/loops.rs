//! The NATS engine's own tasks: one receive task per channel this node receives, which turns
//! fan-out messages into deliveries, and the presence lease refresher. (Canary, recovery and
//! re-subscription are the shared remote-engine tasks.)

use crate::codec::{Stored, KIND};
use crate::engine::NatsEngine;
use async_nats::Subscriber;
use futures_util::StreamExt;
use herald_core::{ChannelName, Outgoing, PresenceEvent, PresenceKind, Remote};
use herald_protocol::Member;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Spawns the presence refresher on `tracker`, stopping when `token` is cancelled.
pub(crate) fn spawn(engine: &Arc<NatsEngine>, token: &CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(refresh_loop(engine.clone(), token.clone()));
}

/// Refreshes this node's presence leases every third of the lease.
async fn refresh_loop(engine: Arc<NatsEngine>, token: CancellationToken) {
    let mut tick = tokio::time::interval(engine.config.presence_lease / 3);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        tokio::select! {
            () = token.cancelled() => return,
            () = engine.presence.refresh() => {}
        }
    }
}

/// Receives one channel's fan-out subject until `stop`.
pub(crate) async fn forward(
    remote: Arc<Remote>,
    channel: ChannelName,
    mut sub: Subscriber,
    stop: CancellationToken,
) {
    loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break,
            msg = sub.next() => msg,
        };
        let Some(msg) = msg else { break };
        if !deliver(&remote, &channel, msg) {
            remote.health().count("bad_messages", 1);
            tracing::debug!(channel = %channel, "Dropped a malformed fan-out message.");
        }
    }
    // Dropping the subscriber unsubscribes at the server.
}

/// Delivers one fan-out message; false when it is not one of ours.
fn deliver(remote: &Remote, channel: &ChannelName, msg: async_nats::Message) -> bool {
    let Some(headers) = msg.headers.as_ref() else {
        return false;
    };
    let kind = match headers.get(KIND).map(|v| v.as_str()) {
        Some("p") => {
            let publication =
                Stored::decode(headers, msg.payload, 0).and_then(|s| s.publication(channel));
            let Some(p) = publication else { return false };
            remote.deliver(channel, &Outgoing::Publication(p));
            return true;
        }
        Some("j") => PresenceKind::Join,
        Some("l") => PresenceKind::Leave,
        _ => return false,
    };
    let Ok(member) = serde_json::from_slice::<Member>(&msg.payload) else {
        return false;
    };
    let event = PresenceEvent::new(channel.clone(), kind, member);
    remote.deliver(channel, &Outgoing::Presence(Arc::new(event)));
    true
}
