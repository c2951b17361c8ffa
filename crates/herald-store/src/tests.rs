//! The embedded engine on a real SQLite store: what a restart keeps, what retention trims on
//! disk, and the stores start-up refuses.

use crate::{database_path, open, StoreError};
use herald_core::memory::{MemoryEngine, MemoryEngineConfig};
use herald_core::{
    Broker, ChannelName, EventName, HistoryQuery, HistoryStore, Hub, KeepLatest, LatestState,
    Retention, StateStore, Stats,
};
use herald_protocol::StreamPosition;
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

/// A fresh directory under the system's temporary directory, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "herald-store-{name}-{}-{}",
            std::process::id(),
            fastrand_suffix()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        Self(dir)
    }
}

fn fastrand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Node {
    engine: Arc<MemoryEngine>,
    stop: CancellationToken,
    closed: oneshot::Receiver<()>,
}

fn start(dir: &Path) -> Node {
    start_with(dir, true)
}

fn start_with(dir: &Path, fsync: bool) -> Node {
    let (journal, recovered) = open(dir, fsync).expect("store opens");
    let stop = CancellationToken::new();
    let (tx, closed) = oneshot::channel();
    let engine = Arc::new(MemoryEngine::durable(
        Arc::new(Hub::new(Arc::new(Stats::default()))),
        MemoryEngineConfig::default(),
        Box::new(journal),
        recovered,
        stop.clone(),
        tx,
    ));
    Node {
        engine,
        stop,
        closed,
    }
}

impl Node {
    async fn stop(self) {
        self.stop.cancel();
        drop(self.engine);
        let _ = self.closed.await;
    }
}

fn data(n: u64) -> Box<RawValue> {
    RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap()
}

fn channel(s: &str) -> ChannelName {
    ChannelName::parse(s).unwrap()
}

const KEEP: Retention = Retention::history(100, Duration::from_secs(600));

fn rows(dir: &Path, sql: &str) -> i64 {
    let conn = rusqlite::Connection::open(database_path(dir)).unwrap();
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[tokio::test]
async fn a_restart_continues_every_channel_where_it_was() {
    let dir = TempDir::new("restart");
    let node = start(&dir.0);
    let c = channel("room:1");
    let latest = Retention {
        latest: KeepLatest {
            mode: LatestState::PerEvent,
            ttl: None,
        },
        max_latest_channels: 10,
        ..KEEP
    };
    let mut last = None;
    for n in 1..=5 {
        let event = EventName::parse(if n % 2 == 0 { "even" } else { "odd" }).unwrap();
        last = Some(
            node.engine
                .publish(c.clone(), event, data(n), latest)
                .await
                .unwrap(),
        );
    }
    let last = last.unwrap();
    let empty = channel("room:empty");
    let handed_out = node.engine.latest(&empty).await.unwrap().top;
    node.engine
        .put("twitch", "cursor", b"abc", None)
        .await
        .unwrap();
    node.engine
        .put("twitch", "gone", b"x", Some(Duration::from_millis(1)))
        .await
        .unwrap();
    node.stop().await;

    let node = start(&dir.0);
    let since = StreamPosition::new(last.position.epoch.clone(), 2);
    let page = node
        .engine
        .read(
            &c,
            HistoryQuery {
                since: Some(since),
                limit: 100,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.reset, None);
    assert_eq!(page.top, last.position);
    let got: Vec<(u64, String)> = page
        .publications
        .iter()
        .map(|p| (p.position.offset, p.data.get().to_owned()))
        .collect();
    assert_eq!(
        got,
        vec![
            (3, r#"{"n":3}"#.to_owned()),
            (4, r#"{"n":4}"#.to_owned()),
            (5, r#"{"n":5}"#.to_owned())
        ]
    );
    let state = node.engine.latest(&c).await.unwrap();
    let kept: Vec<(&str, u64)> = state
        .publications
        .iter()
        .map(|p| (p.event.as_str(), p.position.offset))
        .collect();
    assert_eq!(kept, vec![("even", 4), ("odd", 5)]);
    // A position handed out before anything was published is still this channel's.
    assert_eq!(node.engine.latest(&empty).await.unwrap().top, handed_out);
    let next = node
        .engine
        .publish(c.clone(), EventName::message(), data(6), KEEP)
        .await
        .unwrap();
    assert_eq!(next.position.epoch, last.position.epoch);
    assert_eq!(next.position.offset, 6);
    assert_eq!(
        node.engine
            .get("twitch", "cursor")
            .await
            .unwrap()
            .as_deref(),
        Some(&b"abc"[..])
    );
    assert_eq!(node.engine.get("twitch", "gone").await.unwrap(), None);
    node.stop().await;
}

#[tokio::test]
async fn retention_trims_on_disk_as_in_memory() {
    let dir = TempDir::new("retention");
    let node = start(&dir.0);
    let c = channel("feed");
    let three = Retention::history(3, Duration::from_secs(600));
    for n in 1..=10 {
        node.engine
            .publish(c.clone(), EventName::message(), data(n), three)
            .await
            .unwrap();
    }
    let short = channel("short");
    let brief = Retention::history(100, Duration::from_millis(50));
    node.engine
        .publish(short.clone(), EventName::message(), data(1), brief)
        .await
        .unwrap();
    // Trims of the last group are written with the next one, or when the writer is idle.
    tokio::time::sleep(Duration::from_millis(200)).await;
    node.engine.sweep();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        rows(
            &dir.0,
            "SELECT count(*) FROM history WHERE channel = 'feed'"
        ),
        3
    );
    assert_eq!(
        rows(
            &dir.0,
            "SELECT min(seq) FROM history WHERE channel = 'feed'"
        ),
        8
    );
    assert_eq!(
        rows(
            &dir.0,
            "SELECT count(*) FROM history WHERE channel = 'short'"
        ),
        0
    );
    node.stop().await;
}

#[tokio::test]
async fn a_store_held_by_another_process_is_refused() {
    let dir = TempDir::new("locked");
    let node = start(&dir.0);
    let err = open(&dir.0, true).expect_err("second open");
    assert!(matches!(err, StoreError::Locked(_)), "{err}");
    assert!(err.to_string().contains("in use by another Herald process"));
    node.stop().await;
    // Released with the journal.
    drop(open(&dir.0, true).expect("opens once the first let go"));
}

#[tokio::test]
async fn a_corrupt_or_foreign_store_is_refused_and_left_alone() {
    let dir = TempDir::new("corrupt");
    std::fs::create_dir_all(&dir.0).unwrap();
    let db = database_path(&dir.0);
    std::fs::write(&db, vec![0x5a; 8192]).unwrap();
    let err = open(&dir.0, true).expect_err("garbage");
    assert!(matches!(err, StoreError::Unreadable { .. }), "{err}");
    assert!(err.to_string().contains("does not reset"), "{err}");
    assert_eq!(std::fs::read(&db).unwrap(), vec![0x5a; 8192]);

    std::fs::remove_file(&db).unwrap();
    drop(open(&dir.0, true).unwrap());
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute(
        "UPDATE herald_meta SET value = '9' WHERE key = 'format'",
        [],
    )
    .unwrap();
    drop(conn);
    let err = open(&dir.0, true).expect_err("newer format");
    assert!(matches!(err, StoreError::Format { .. }), "{err}");
    assert!(err.to_string().contains("newer Herald"), "{err}");
}

#[tokio::test]
async fn without_fsync_a_machine_stop_under_a_run_starts_new_epochs() {
    let dir = TempDir::new("nofsync");
    let c = channel("room:1");
    let node = start_with(&dir.0, false);
    let first = node
        .engine
        .publish(c.clone(), EventName::message(), data(1), KEEP)
        .await
        .unwrap();
    node.stop().await;
    // Killed, same machine: everything continues.
    let conn = rusqlite::Connection::open(database_path(&dir.0)).unwrap();
    conn.execute(
        "UPDATE herald_meta SET value = '1' WHERE key = 'running'",
        [],
    )
    .unwrap();
    let node = start_with(&dir.0, false);
    let page = node.engine.latest(&c).await.unwrap();
    assert_eq!(page.top, first.position);
    node.stop().await;
    // The machine restarted under a run: the last writes may be lost, so a new epoch.
    conn.execute_batch(
        "UPDATE herald_meta SET value = '1' WHERE key = 'running';
         UPDATE herald_meta SET value = 'another-boot' WHERE key = 'boot_id';",
    )
    .unwrap();
    let node = start_with(&dir.0, true);
    let page = node.engine.latest(&c).await.unwrap();
    assert_ne!(page.top.epoch, first.position.epoch);
    assert_eq!(page.top.offset, 0);
    assert_eq!(rows(&dir.0, "SELECT count(*) FROM history"), 0);
    node.stop().await;
    // A clean stop, flushed: the next start keeps the new epoch.
    conn.execute(
        "UPDATE herald_meta SET value = 'yet-another-boot' WHERE key = 'boot_id'",
        [],
    )
    .unwrap();
    let node = start_with(&dir.0, false);
    assert_eq!(node.engine.latest(&c).await.unwrap().top, page.top);
    node.stop().await;
}

#[tokio::test]
async fn an_idempotency_key_outlives_a_restart_and_concurrent_repeats_get_one_position() {
    let dir = TempDir::new("once");
    let c = channel("jobs:1");
    let once = herald_core::Once {
        key: "job-1-step-3".into(),
        digest: "00ff".into(),
        window: Duration::from_secs(600),
    };
    let node = start(&dir.0);
    // Ten at once: the first is written, the others wait for it and answer its position.
    let tries = (0..10).map(|_| {
        node.engine
            .publish_once(c.clone(), EventName::message(), data(1), KEEP, &once)
    });
    let results = futures_join(tries).await;
    let mut positions = Vec::new();
    let mut new = 0;
    for r in results {
        match r.unwrap() {
            herald_core::Published::New(p) => {
                new += 1;
                positions.push(p.position.clone());
            }
            herald_core::Published::Repeat { position, .. } => positions.push(position),
        }
    }
    assert_eq!(new, 1);
    assert!(positions.windows(2).all(|w| w[0] == w[1]), "{positions:?}");
    node.stop().await;
    let node = start(&dir.0);
    match node
        .engine
        .publish_once(c.clone(), EventName::message(), data(1), KEEP, &once)
        .await
        .unwrap()
    {
        herald_core::Published::Repeat { position, .. } => assert_eq!(position, positions[0]),
        herald_core::Published::New(_) => panic!("published again after a restart"),
    }
    assert_eq!(node.engine.latest(&c).await.unwrap().top.offset, 1);
    node.stop().await;
}

/// Runs every future to completion, concurrently, in order of their results.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futs.map(Box::pin).collect();
    let mut out = Vec::new();
    let mut pending: Vec<_> = handles.into_iter().map(Some).collect();
    let mut results: Vec<Option<F::Output>> = (0..pending.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut left = false;
        for (i, slot) in pending.iter_mut().enumerate() {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => {
                        results[i] = Some(v);
                        *slot = None;
                    }
                    std::task::Poll::Pending => left = true,
                }
            }
        }
        if left {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    for r in results {
        out.extend(r);
    }
    out
}
