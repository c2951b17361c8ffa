//! The Redis engine's own tasks: the pub/sub message loop, the watcher that reports reconnects,
//! and the presence refresher. (Canary, recovery and re-subscription are the shared
//! remote-engine tasks; the worker stream consumer is `ingest.rs`.)

use crate::engine::RedisEngine;
use fred::interfaces::EventInterface;
use fred::prelude::Value;
use herald_core::{ChannelName, EventName, Outgoing, PresenceEvent, PresenceKind, Publication};
use herald_protocol::{Epoch, Member, StreamPosition};
use serde_json::value::RawValue;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Spawns the message loop, the reconnect watcher and the presence refresher on `tracker`,
/// each stopping when `token` is cancelled.
pub(crate) fn spawn(engine: &Arc<RedisEngine>, token: &CancellationToken, tracker: &TaskTracker) {
    tracker.spawn(message_loop(engine.clone(), token.clone()));
    tracker.spawn(reconnect_loop(engine.clone(), token.clone()));
    tracker.spawn(presence_loop(engine.clone(), token.clone()));
}

async fn message_loop(engine: Arc<RedisEngine>, token: CancellationToken) {
    let mut rx = engine.subscriber.message_rx();
    loop {
        let message = tokio::select! {
            () = token.cancelled() => return,
            m = rx.recv() => m,
        };
        match message {
            Ok(m) => on_message(&engine, &m.channel, &m.value),
            Err(RecvError::Lagged(n)) => {
                engine.remote.health().count("lagged_messages", n);
                tracing::warn!(
                    missed = n,
                    "Redis pub/sub receiver lagged; recovering from history."
                );
                engine.remote.lost_messages();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

fn on_message(engine: &RedisEngine, channel: &str, value: &Value) {
    if channel == engine.canary_channel {
        if let Some(n) = value.as_u64() {
            engine.canary_seen.fetch_max(n, Relaxed);
            engine.canary_arrived.notify_waiters();
        }
        return;
    }
    let decoded = engine
        .channel_of(channel)
        .and_then(|c| value.as_bytes().and_then(|b| decode(c, b)));
    match decoded {
        Some(item) => {
            let to = match &item {
                Outgoing::Publication(p) => p.channel.clone(),
                Outgoing::Presence(e) => e.channel.clone(),
            };
            engine.remote.deliver(&to, &item);
        }
        None => {
            engine.remote.health().count("bad_messages", 1);
            tracing::warn!(
                channel,
                "Ignored a malformed message on a Herald pub/sub channel."
            );
        }
    }
}

/// Reports every reconnect: the subscriber's is followed by a re-subscription and a recovery,
/// the command client's is only counted.
async fn reconnect_loop(engine: Arc<RedisEngine>, token: CancellationToken) {
    let mut sub_rx = engine.subscriber.reconnect_rx();
    let mut client_rx = engine.client.reconnect_rx();
    loop {
        let subscriber = tokio::select! {
            () = token.cancelled() => return,
            r = sub_rx.recv() => match r {
                Ok(_) | Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
            r = client_rx.recv() => match r {
                Ok(_) | Err(RecvError::Lagged(_)) => false,
                Err(RecvError::Closed) => return,
            },
        };
        if subscriber {
            tracing::info!("Reconnected to Redis; re-subscribing and recovering.");
            engine.remote.reconnected();
        } else {
            engine.remote.health().reconnected();
        }
    }
}

/// Refreshes this node's presence leases; members of a node that died are announced as
/// leaving to every node's subscribers.
async fn presence_loop(engine: Arc<RedisEngine>, token: CancellationToken) {
    let mut tick = tokio::time::interval(engine.presence.refresh_every());
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        for (channel, member) in engine.presence.refresh().await {
            let mode = engine.channels.options(&channel).presence;
            let told =
                herald_core::roster::gone(&*engine.presence, &*engine, &channel, member, mode)
                    .await;
            if let Err(e) = told {
                tracing::debug!(error = %e, "Announcing an expired presence member failed.");
            }
        }
    }
}

/// Decodes a message from a channel's pub/sub channel: `P epoch offset time event\ndata` for
/// a publication, `J member` or `L member` for presence.
fn decode(channel: ChannelName, bytes: &[u8]) -> Option<Outgoing> {
    let text = std::str::from_utf8(bytes).ok()?;
    let (kind, rest) = text.split_at_checked(2)?;
    match kind {
        "P " => {
            let (head, data) = rest.split_once('\n')?;
            let mut f = head.split(' ');
            let epoch = Epoch::parse(f.next()?).ok()?;
            let offset = f.next()?.parse().ok()?;
            let time = f.next()?.parse().ok()?;
            let event = EventName::parse(f.next()?).ok()?;
            let data = RawValue::from_string(data.to_owned()).ok()?;
            Some(Outgoing::Publication(Arc::new(Publication::new(
                channel,
                event,
                data,
                StreamPosition::new(epoch, offset),
                time,
            ))))
        }
        "J " | "L " => {
            let member: Member = serde_json::from_str(rest).ok()?;
            let kind = if kind == "J " {
                PresenceKind::Join
            } else {
                PresenceKind::Leave
            };
            Some(Outgoing::Presence(Arc::new(PresenceEvent::new(
                channel, kind, member,
            ))))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_what_the_publish_script_sends() {
        let c = ChannelName::parse("news").unwrap();
        let Some(Outgoing::Publication(p)) = decode(c.clone(), b"P abc 7 1700 update\n{\"a\":\n1}")
        else {
            panic!("not a publication");
        };
        assert_eq!(p.position.offset, 7);
        assert_eq!(p.position.epoch.as_str(), "abc");
        assert_eq!(p.event.as_str(), "update");
        assert_eq!(p.data.get(), "{\"a\":\n1}");
        assert!(decode(c.clone(), b"P abc x 1 e\n{}").is_none());
        assert!(decode(c.clone(), b"P abc 1 1 e\nnot json").is_none());
        assert!(decode(c.clone(), b"X").is_none());
        let member = br#"J {"conn_id":"00000000000000aa","transport":"ws"}"#;
        assert!(matches!(decode(c, member), Some(Outgoing::Presence(_))));
    }
}
