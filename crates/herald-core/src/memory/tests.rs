//! The embedded engine without a data directory.

use super::engine::*;
use crate::ResetReason;
use crate::Stats;
use crate::{
    Broker, ChannelName, EngineError, EventName, HistoryQuery, HistoryStore, Hub, Retention,
};
use herald_protocol::{Epoch, StreamPosition};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;

fn engine() -> MemoryEngine {
    MemoryEngine::new(
        Arc::new(Hub::new(Arc::new(Stats::default()))),
        MemoryEngineConfig::default(),
    )
}

fn data() -> Box<RawValue> {
    RawValue::from_string("{}".into()).unwrap()
}

const KEEP3: Retention = Retention::history(3, Duration::from_secs(60));

#[tokio::test(start_paused = true)]
async fn offsets_history_and_resets() {
    let e = engine();
    let c = ChannelName::parse("c").unwrap();
    let mut last = None;
    for _ in 0..5 {
        last = Some(
            e.publish(c.clone(), EventName::message(), data(), KEEP3)
                .await
                .unwrap(),
        );
    }
    let last = last.unwrap();
    assert_eq!(last.position.offset, 5);
    let epoch = last.position.epoch.clone();
    let since = |o| HistoryQuery {
        since: Some(StreamPosition::new(epoch.clone(), o)),
        limit: 100,
    };
    let page = e.read(&c, since(2)).await.unwrap();
    assert_eq!(page.reset, None);
    let offs: Vec<u64> = page
        .publications
        .iter()
        .map(|p| p.position.offset)
        .collect();
    assert_eq!(offs, vec![3, 4, 5]);
    assert_eq!(
        e.read(&c, since(1)).await.unwrap().reset,
        Some(ResetReason::BeyondRetention)
    );
    assert_eq!(
        e.read(&c, since(9)).await.unwrap().reset,
        Some(ResetReason::EpochChanged)
    );
    let other = HistoryQuery {
        since: Some(StreamPosition::new(Epoch::parse("zz").unwrap(), 5)),
        limit: 10,
    };
    assert_eq!(
        e.read(&c, other).await.unwrap().reset,
        Some(ResetReason::EpochChanged)
    );
    let newest = e
        .read(
            &c,
            HistoryQuery {
                since: None,
                limit: 1,
            },
        )
        .await
        .unwrap();
    assert_eq!(newest.publications[0].position.offset, 5);
    assert_eq!(newest.top.offset, 5);
}

#[tokio::test(start_paused = true)]
async fn history_expires_and_idle_channels_are_forgotten() {
    let e = engine();
    let c = ChannelName::parse("c").unwrap();
    let p = e
        .publish(c.clone(), EventName::message(), data(), KEEP3)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(61)).await;
    let page = e
        .read(
            &c,
            HistoryQuery {
                since: Some(StreamPosition::new(p.position.epoch.clone(), 0)),
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.reset, Some(ResetReason::BeyondRetention));
    e.sweep();
    assert_eq!(e.channel_count(), 1);
    tokio::time::advance(Duration::from_secs(3600)).await;
    e.sweep();
    assert_eq!(e.channel_count(), 0);
    let p2 = e
        .publish(c.clone(), EventName::message(), data(), KEEP3)
        .await
        .unwrap();
    assert_ne!(p2.position.epoch, p.position.epoch);
    assert_eq!(p2.position.offset, 1);
}

#[tokio::test]
async fn channel_bound_is_enforced() {
    let e = MemoryEngine::new(
        Arc::new(Hub::new(Arc::new(Stats::default()))),
        MemoryEngineConfig {
            max_channels: 1,
            ..MemoryEngineConfig::default()
        },
    );
    let a = ChannelName::parse("a").unwrap();
    let b = ChannelName::parse("b").unwrap();
    e.publish(a, EventName::message(), data(), KEEP3)
        .await
        .unwrap();
    assert!(matches!(
        e.publish(b, EventName::message(), data(), KEEP3).await,
        Err(EngineError::LimitReached(_))
    ));
}

fn once(key: &str, digest: &str, window: Duration) -> crate::Once {
    crate::Once {
        key: key.to_owned(),
        digest: digest.to_owned(),
        window,
    }
}

#[tokio::test]
async fn a_key_publishes_once_within_its_window() {
    let e = engine();
    let c = ChannelName::parse("c").unwrap();
    let minute = Duration::from_secs(60);
    let first = e
        .publish_once(
            c.clone(),
            EventName::message(),
            data(),
            KEEP3,
            &once("k", "d1", minute),
        )
        .await
        .unwrap();
    let crate::Published::New(first) = first else {
        panic!("first publish was taken for a repeat")
    };
    let again = e
        .publish_once(
            c.clone(),
            EventName::message(),
            data(),
            KEEP3,
            &once("k", "d1", minute),
        )
        .await
        .unwrap();
    match again {
        crate::Published::Repeat { position, time_ms } => {
            assert_eq!(position, first.position);
            assert_eq!(time_ms, first.time_ms);
        }
        crate::Published::New(_) => panic!("a repeat was published"),
    }
    assert_eq!(
        e.read(
            &c,
            HistoryQuery {
                since: None,
                limit: 10
            }
        )
        .await
        .unwrap()
        .publications
        .len(),
        1
    );
    // Another body under the same key is a conflict; the key on another channel is its own.
    assert!(matches!(
        e.publish_once(
            c.clone(),
            EventName::message(),
            data(),
            KEEP3,
            &once("k", "d2", minute)
        )
        .await,
        Err(EngineError::Conflict)
    ));
    let other = ChannelName::parse("other").unwrap();
    assert!(matches!(
        e.publish_once(
            other,
            EventName::message(),
            data(),
            KEEP3,
            &once("k", "d1", minute)
        )
        .await,
        Ok(crate::Published::New(_))
    ));
    // Past its window the key publishes again.
    let brief = once("brief", "d", Duration::from_millis(30));
    e.publish_once(c.clone(), EventName::message(), data(), KEEP3, &brief)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert!(matches!(
        e.publish_once(c.clone(), EventName::message(), data(), KEEP3, &brief)
            .await,
        Ok(crate::Published::New(p)) if p.position.offset == 3
    ));
}
