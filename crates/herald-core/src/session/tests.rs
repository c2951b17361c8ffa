use super::*;
use crate::memory::{MemoryEngine, MemoryEngineConfig, MemoryPresenceStore};
use crate::{ChannelName, Node, Outgoing, Publication};
use crate::{ChannelsConfig, EventName, Hub, NamespaceOptions, Publisher, PublisherLimits, Stats};
use herald_protocol::StreamPosition;
use serde_json::value::RawValue;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

fn node(history_size: usize) -> Node {
    let stats = Arc::new(Stats::default());
    let hub = Arc::new(Hub::new(stats.clone()));
    let engine = Arc::new(MemoryEngine::new(
        hub.clone(),
        MemoryEngineConfig::default(),
    ));
    let channels = Arc::new(ChannelsConfig {
        defaults: NamespaceOptions {
            history_size,
            ..NamespaceOptions::default()
        },
        ..ChannelsConfig::default()
    });
    let publisher = Arc::new(Publisher::new(
        engine.clone(),
        channels.clone(),
        PublisherLimits {
            max_data_bytes: 1024,
        },
        stats.clone(),
    ));
    Node {
        hub,
        broker: engine.clone(),
        history: engine,
        presence: Arc::new(MemoryPresenceStore::default()),
        publisher,
        channels,
        stats,
        user_rates: Arc::new(crate::KeyedBuckets::new(0, 60.0, 1000)),
    }
}

async fn publish(node: &Node, n: usize) {
    for i in 0..n {
        let data = RawValue::from_string(i.to_string()).unwrap();
        let p = node.publisher.prepare("c", None, data).unwrap();
        node.publisher.publish(p).await.unwrap();
    }
}

fn offsets(emits: &[Emit]) -> Vec<String> {
    emits
        .iter()
        .map(|e| match e {
            Emit::Publication(p) => p.position.offset.to_string(),
            Emit::Reset { reason, .. } => reason.as_str().to_owned(),
            Emit::Presence(_) => "presence".to_owned(),
        })
        .collect()
}

#[tokio::test]
async fn a_gap_is_filled_from_history_and_duplicates_are_dropped() {
    let node = node(100);
    let (mut s, mut outbox) = Session::new(node.clone(), Transport::Ws, SessionLimits::default());
    let mut out = Vec::new();
    s.subscribe("c", None, None, &mut out).await.unwrap();
    publish(&node, 3).await;
    let mut queued = Vec::new();
    outbox.recv(&mut queued).await.unwrap();
    assert_eq!(queued.len(), 3);
    // Deliver only the third: the first two come from history, in order.
    s.accept(queued[2].clone(), &mut out).await;
    assert_eq!(offsets(&out), ["1", "2", "3"]);
    out.clear();
    s.accept(queued[0].clone(), &mut out).await;
    s.accept(queued[2].clone(), &mut out).await;
    assert!(out.is_empty(), "duplicates are dropped");
    s.close().await;
}

#[tokio::test]
async fn a_gap_history_cannot_fill_is_announced_as_a_reset() {
    let node = node(1);
    let (mut s, mut outbox) = Session::new(node.clone(), Transport::Sse, SessionLimits::default());
    let mut out = Vec::new();
    s.subscribe("c", None, None, &mut out).await.unwrap();
    publish(&node, 3).await;
    let mut queued = Vec::new();
    outbox.recv(&mut queued).await.unwrap();
    s.accept(queued[2].clone(), &mut out).await;
    assert_eq!(offsets(&out), ["beyond_retention", "3"]);
    let Emit::Reset { channels, .. } = &out[0] else {
        unreachable!()
    };
    assert_eq!(channels[0].position.offset, 2);
    assert_eq!(s.positions().next().unwrap().offset, 3);
    assert_eq!(node.stats.resets.load(Relaxed), 1);
}

#[tokio::test]
async fn a_new_epoch_is_announced_as_a_reset() {
    let node = node(10);
    let (mut s, _outbox) = Session::new(node.clone(), Transport::Ws, SessionLimits::default());
    let mut out = Vec::new();
    s.subscribe("c", None, None, &mut out).await.unwrap();
    let foreign = Arc::new(Publication::new(
        ChannelName::parse("c").unwrap(),
        EventName::message(),
        RawValue::from_string("1".into()).unwrap(),
        StreamPosition::new(herald_protocol::Epoch::parse("other").unwrap(), 4),
        0,
    ));
    s.accept(Outgoing::Publication(foreign), &mut out).await;
    assert_eq!(offsets(&out), ["epoch_changed", "4"]);
}

#[tokio::test]
async fn the_channel_limit_is_enforced() {
    let node = node(10);
    let limits = SessionLimits {
        max_channels: 1,
        ..SessionLimits::default()
    };
    let (mut s, _outbox) = Session::new(node, Transport::Ws, limits);
    let mut out = Vec::new();
    s.subscribe("a", None, None, &mut out).await.unwrap();
    assert!(matches!(
        s.subscribe("b", None, None, &mut out).await,
        Err(SessionError::TooManyChannels(1))
    ));
}
