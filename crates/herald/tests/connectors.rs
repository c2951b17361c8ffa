//! Connectors as a user runs them, against real sources: a Postgres started by the test (one
//! per test binary) and a Redis of its own.

mod common;

use common::backends::{Backend, Kind};
use common::postgres::Postgres;
use common::{TestServer, WAIT};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

const CHANNELS: [&str; 4] = ["feed:a", "feed:b", "feed:c", "feed:d"];

const HISTORY: &str = r#"
[channels.defaults]
history_size = 5000
history_ttl = "10m"
"#;

/// Waits until the connector named `name` reports `state`.
async fn connector_state(server: &TestServer, name: &str, state: &str) -> Value {
    server
        .wait_stats(&format!("connector {name} {state}"), |s| {
            s["connectors"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|c| c["name"] == name && c["state"] == state)
        })
        .await
}

/// What the application's transactions came to, per (writer, sequence number).
#[derive(Default)]
struct Ledger {
    committed: HashSet<(u64, u64)>,
    /// Each transaction's place in its channel's commit order.
    order: HashMap<(u64, u64), i64>,
    rolled_back: HashSet<(u64, u64)>,
    /// COMMIT was sent but its answer lost (Postgres restarted): either outcome is right.
    uncertain: HashSet<(u64, u64)>,
}

/// One application process: `count` transactions, each calling `herald_publish` on a random
/// channel, holding the transaction open a random moment (so transactions commit out of id
/// order) and rolling one in ten back. Reconnects when Postgres restarts.
async fn writer(
    pg_url: String,
    w: u64,
    count: u64,
    ledger: Arc<Mutex<Ledger>>,
    done: Arc<AtomicU64>,
) {
    let mut client: Option<tokio_postgres::Client> = None;
    for s in 0..count {
        let c = match &client {
            Some(c) if !c.is_closed() => c,
            _ => loop {
                match tokio_postgres::connect(&pg_url, tokio_postgres::NoTls).await {
                    Ok((c, conn)) => {
                        tokio::spawn(conn);
                        break client.insert(c);
                    }
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            },
        };
        let channel = CHANNELS[fastrand::usize(..CHANNELS.len())];
        let data = json!({"w": w, "s": s}).to_string();
        let rollback = fastrand::u8(..10) == 0;
        let body = async {
            c.batch_execute("BEGIN").await?;
            c.execute(
                "SELECT herald_publish($1, 'change', $2::text::jsonb)",
                &[&channel, &data],
            )
            .await?;
            // The row lock is held until commit, so `n` numbers the channel's commits.
            let n: i64 = c
                .query_one(
                    "UPDATE commit_order SET n = n + 1 WHERE channel = $1 RETURNING n",
                    &[&channel],
                )
                .await?
                .get(0);
            tokio::time::sleep(Duration::from_micros(fastrand::u64(0..3000))).await;
            Ok::<_, tokio_postgres::Error>(n)
        }
        .await;
        let mut ledger_now = None;
        if let Ok(n) = body {
            ledger.lock().unwrap().order.insert((w, s), n);
        }
        if body.is_err() || rollback {
            let _ = c.batch_execute("ROLLBACK").await;
            ledger_now = Some(false);
        }
        let mut l = ledger.lock().unwrap();
        match ledger_now {
            Some(_) => {
                l.rolled_back.insert((w, s));
            }
            None => {
                drop(l);
                let committed = c.batch_execute("COMMIT").await;
                l = ledger.lock().unwrap();
                if committed.is_ok() {
                    l.committed.insert((w, s));
                } else {
                    l.uncertain.insert((w, s));
                }
            }
        }
        drop(l);
        done.fetch_add(1, Relaxed);
    }
}

/// How a Herald for the outbox test is started, again and again on the same state.
#[derive(Clone)]
enum Engine {
    Durable(std::path::PathBuf),
    Redis(String),
}

async fn start_herald(engine: &Engine, extra: &str) -> TestServer {
    let config = format!("{HISTORY}\n{extra}");
    match engine {
        Engine::Durable(dir) => {
            TestServer::start_with(
                &config,
                "127.0.0.1:0",
                &["--data-dir", &dir.display().to_string()],
                &[],
            )
            .await
        }
        Engine::Redis(url) => {
            let config = format!("[engine]\nkind = \"redis\"\nurl = \"{url}\"\n{config}");
            TestServer::start(&config).await
        }
    }
}

async fn kill9(mut server: TestServer) {
    server.child.start_kill().expect("SIGKILL");
    let _ = server.child.wait().await;
}

/// 10,000 `herald_publish` calls from 8 concurrent writers while Herald is killed with
/// `kill -9` twice and Postgres restarted once: an SSE subscriber resuming with
/// `Last-Event-ID` gets every committed call exactly once, none rolled back, each channel in
/// commit order, without a gap or a reset.
async fn outbox_exactly_once(pg: &Postgres, engine: Engine, database: &str) {
    let pg_url = pg.create_database(database).await;
    let connector = format!(
        "[[connectors.postgres]]\nname = \"app\"\nurl = \"{pg_url}\"\npoll_interval = \"200ms\"\n"
    );
    let mut server = start_herald(&engine, &connector).await;
    connector_state(&server, "app", "connected").await;
    let client = pg.connect(database).await;
    client
        .batch_execute(
            "CREATE TABLE commit_order (channel text PRIMARY KEY, n bigint NOT NULL);
             INSERT INTO commit_order SELECT unnest(ARRAY['feed:a','feed:b','feed:c','feed:d']), 0;",
        )
        .await
        .unwrap();
    let (url_tx, url_rx) = watch::channel(server.url.clone());
    let (targets_tx, targets_rx) = watch::channel(None);
    let follower = tokio::spawn(common::follow_sse(url_rx, &CHANNELS, targets_rx));
    // The follower holds positions at offset 0 before the first row is published.
    tokio::time::sleep(Duration::from_millis(300)).await;

    const WRITERS: u64 = 8;
    const EACH: u64 = 1250;
    let ledger: Arc<Mutex<Ledger>> = Arc::default();
    let done = Arc::new(AtomicU64::new(0));
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            tokio::spawn(writer(
                pg_url.clone(),
                w,
                EACH,
                ledger.clone(),
                done.clone(),
            ))
        })
        .collect();
    let reach = |n: u64| {
        let done = done.clone();
        async move {
            common::within(WAIT * 6, async {
                while done.load(Relaxed) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
            .await;
        }
    };
    reach(2_000 + fastrand::u64(..1000)).await;
    kill9(server).await;
    server = start_herald(&engine, &connector).await;
    url_tx.send(server.url.clone()).unwrap();
    reach(5_000).await;
    pg.restart();
    reach(7_000 + fastrand::u64(..1000)).await;
    kill9(server).await;
    server = start_herald(&engine, &connector).await;
    url_tx.send(server.url.clone()).unwrap();
    for w in writers {
        common::within(WAIT * 6, w).await.unwrap();
    }
    // Everything committed leaves the outbox.
    let client = pg.connect(database).await;
    common::within(WAIT * 6, async {
        loop {
            let left: i64 = client
                .query_one("SELECT count(*) FROM herald_outbox", &[])
                .await
                .unwrap()
                .get(0);
            if left == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let rejected: i64 = client
        .query_one("SELECT count(*) FROM herald_rejected", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(rejected, 0, "rows were rejected");
    let mut tops = HashMap::new();
    for c in CHANNELS {
        let (status, page) = server
            .get(&format!("/api/history?channel={c}&limit=1"))
            .await;
        assert_eq!(status, 200);
        tops.insert(c.to_owned(), page["position"]["offset"].as_u64().unwrap());
    }
    targets_tx.send(Some(tops)).unwrap();
    let got = common::within(WAIT * 6, follower).await.unwrap();

    let ledger = ledger.lock().unwrap();
    assert!(
        ledger.committed.len() > 8_000,
        "only {} committed",
        ledger.committed.len()
    );
    let mut seen = HashSet::new();
    for (channel, events) in &got {
        let mut last: BTreeMap<u64, u64> = BTreeMap::new();
        let mut last_n = 0;
        for (i, (offset, data)) in events.iter().enumerate() {
            assert_eq!(*offset, i as u64 + 1, "{channel}: a gap or a repeat at {i}");
            let (w, s) = (data["w"].as_u64().unwrap(), data["s"].as_u64().unwrap());
            assert!(seen.insert((w, s)), "({w}, {s}) delivered twice");
            assert!(
                !ledger.rolled_back.contains(&(w, s)),
                "rolled-back ({w}, {s}) delivered"
            );
            assert!(
                ledger.committed.contains(&(w, s)) || ledger.uncertain.contains(&(w, s)),
                "({w}, {s}) was never written"
            );
            let n = ledger.order[&(w, s)];
            assert!(
                n > last_n,
                "{channel}: ({w}, {s}) committed as {n} but delivered after {last_n}"
            );
            last_n = n;
            if let Some(prev) = last.insert(w, s) {
                assert!(prev < s, "{channel}: writer {w}'s {s} after its {prev}");
            }
        }
    }
    let missing: Vec<_> = ledger.committed.difference(&seen).take(5).collect();
    assert!(
        missing.is_empty(),
        "committed calls never delivered: {missing:?}"
    );
    eprintln!(
        "outbox: {} committed, {} rolled back, {} uncertain, {} delivered",
        ledger.committed.len(),
        ledger.rolled_back.len(),
        ledger.uncertain.len(),
        seen.len()
    );
}

/// Story 4's triggers, unchanged: `pg_notify('realtime_events', …)` on insert, mapped by
/// template to `{table}:{data.room_id}` and `{action}`; a payload that is not JSON is counted
/// as rejected.
async fn trigger_mode(pg: &Postgres) {
    let pg_url = pg.create_database("social").await;
    let app = pg.connect("social").await;
    app.batch_execute(
        r#"
        CREATE TABLE messages (id serial PRIMARY KEY, room_id int NOT NULL, body text NOT NULL);
        CREATE FUNCTION notify_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            PERFORM pg_notify('realtime_events', json_build_object(
                'action', TG_OP, 'table', TG_TABLE_NAME, 'data', row_to_json(NEW))::text);
            RETURN NEW;
        END $$;
        CREATE TRIGGER messages_changed AFTER INSERT OR UPDATE ON messages
            FOR EACH ROW EXECUTE FUNCTION notify_change();
        "#,
    )
    .await
    .unwrap();
    let connector = format!(
        r#"
[[connectors.postgres]]
name = "social"
url = "{pg_url}"
mode = "trigger"
listen = ["realtime_events"]
channel = "{{table}}:{{data.room_id}}"
event = "{{action}}"
data = "data"
"#
    );
    let server = TestServer::start(&format!("{HISTORY}\n{connector}")).await;
    connector_state(&server, "social", "connected").await;
    let mut sse = common::Sse::connect(&server, &["messages:7"], None).await;
    app.batch_execute(
        "INSERT INTO messages (room_id, body) VALUES (7, 'hi'), (8, 'elsewhere'), (7, 'again');
         UPDATE messages SET body = 'edited' WHERE id = 1;
         SELECT pg_notify('realtime_events', 'not json');",
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    while got.len() < 3 {
        let (event, v) = common::within(WAIT, sse.next_json()).await;
        if event.starts_with("herald.") {
            continue;
        }
        got.push((event, v["data"]["body"].as_str().unwrap().to_owned()));
    }
    assert_eq!(
        got,
        [
            ("INSERT".to_owned(), "hi".to_owned()),
            ("INSERT".to_owned(), "again".to_owned()),
            ("UPDATE".to_owned(), "edited".to_owned())
        ]
    );
    let stats = server
        .wait_stats("the bad payload counted", |s| {
            s["connectors"][0]["events"]["rejected"] == 1
        })
        .await;
    assert_eq!(stats["connectors"][0]["events"]["published"], 4);
    server
        .wait_metrics(|m| {
            m.contains(r#"herald_connector_events_total{kind="postgres",name="social",outcome="published"} 4"#)
                && m.contains(r#"herald_connector_up{kind="postgres",name="social"} 1"#)
                && m.contains(r#"herald_publications_total{source="postgres"} 4"#)
        })
        .await;
}

/// One Postgres for the binary: the trigger mapping, the outbox on the durable embedded
/// storage and on the Redis engine, then the outbox's node killed in a two-node cluster on
/// Redis and on NATS.
#[tokio::test]
async fn postgres_outbox_and_triggers() {
    let Some(pg) = Postgres::start() else { return };
    trigger_mode(&pg).await;
    let dir = std::env::temp_dir().join(format!("herald-outbox-{:016x}", fastrand::u64(..)));
    outbox_exactly_once(&pg, Engine::Durable(dir.clone()), "outbox_durable").await;
    let _ = std::fs::remove_dir_all(&dir);
    let Some(redis) = Backend::start(Kind::Redis) else {
        return;
    };
    outbox_exactly_once(&pg, Engine::Redis(redis.url()), "outbox_redis").await;
    for (kind, database) in [
        (Kind::Redis, "takeover_redis"),
        (Kind::Nats, "takeover_nats"),
    ] {
        let url = pg.create_database(database).await;
        let client = pg.connect(database).await;
        let connector = format!("[[connectors.postgres]]\nname = \"app\"\nurl = \"{url}\"\n");
        let client = &client;
        takeover(kind, &connector, |channel, seq| async move {
            let data = json!({"seq": seq}).to_string();
            client
                .execute(
                    "SELECT herald_publish($1, 'change', $2::text::jsonb)",
                    &[&channel, &data],
                )
                .await
                .unwrap();
        })
        .await;
    }
}

/// A lossless source in a two-node cluster on `kind`: node A runs the connector, node B
/// stands by; A is killed with `kill -9` mid-stream, B takes the lease over and a subscriber
/// on B receives every event once, in order.
async fn takeover<F, Fut>(kind: Kind, connector: &str, produce: F)
where
    F: Fn(&'static str, u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let Some(engine) = Backend::start(kind) else {
        return;
    };
    let engine_kind = match kind {
        Kind::Redis => "redis",
        Kind::Nats => "nats",
    };
    let config = format!(
        "[engine]\nkind = \"{engine_kind}\"\nurl = \"{}\"\n{HISTORY}\n{connector}",
        engine.url()
    );
    let a = TestServer::start(&config).await;
    a.wait_stats("A leads", |s| s["connectors"][0]["leader"] == true)
        .await;
    let b = TestServer::start(&config).await;
    b.wait_stats("B stands by", |s| s["connectors"][0]["state"] == "standby")
        .await;
    const JOBS: [&str; 2] = ["jobs:a", "jobs:b"];
    let (_url_tx, url_rx) = watch::channel(b.url.clone());
    let (targets_tx, targets_rx) = watch::channel(None);
    let follower = tokio::spawn(common::follow_sse(url_rx, &JOBS, targets_rx));
    tokio::time::sleep(Duration::from_millis(300)).await;
    const EACH: u64 = 600;
    let mut a = Some(a);
    for seq in 0..EACH {
        for channel in JOBS {
            produce(channel, seq).await;
        }
        if seq == EACH / 3 {
            kill9(a.take().unwrap()).await;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    targets_tx
        .send(Some(JOBS.iter().map(|c| (c.to_string(), EACH)).collect()))
        .unwrap();
    let got = common::within(WAIT * 6, follower).await.unwrap();
    let stats = b.stats().await;
    eprintln!("takeover on {kind:?}: B {}", stats["connectors"][0]);
    assert_eq!(stats["connectors"][0]["leader"], true);
    for c in JOBS {
        let seen: Vec<(u64, u64)> = got[c]
            .iter()
            .map(|(o, d)| (*o, d["seq"].as_u64().unwrap()))
            .collect();
        let want: Vec<(u64, u64)> = (0..EACH).map(|s| (s + 1, s)).collect();
        assert_eq!(
            seen, want,
            "{c} on {kind:?}: not every event once, in order"
        );
    }
}

/// Plain Redis as a source, beside the memory engine: PSUBSCRIBEd messages (non-JSON refused
/// and counted) and stream entries (a bad one set aside with its reason).
#[tokio::test]
async fn redis_patterns_and_stream_on_the_memory_engine() {
    let Some(mut source) = Backend::start(Kind::Redis) else {
        return;
    };
    let config = format!(
        r#"{HISTORY}
[[connectors.redis]]
name = "workers"
url = "{}"
patterns = ["job_progress:*"]
event = "{{data.type}}"
stream = "jobs"
"#,
        source.url()
    );
    let server = TestServer::start(&config).await;
    server
        .wait_stats("connected", |s| s["connectors"][0]["state"] == "connected")
        .await;
    let mut sse = common::Sse::connect(&server, &["job_progress:job_123"], None).await;
    // The state may say connected before PSUBSCRIBE took effect: publish until one arrives.
    let mut first = None;
    for _ in 0..100 {
        source.redis_cli(&[
            "PUBLISH",
            "job_progress:job_123",
            r#"{"type":"job_progress","progress":0.1}"#,
        ]);
        let next = tokio::time::timeout(Duration::from_millis(100), sse.next_json()).await;
        if let Ok((e, v)) = next {
            if e == "job_progress" {
                first = Some(v);
                break;
            }
        }
    }
    assert_eq!(first.expect("a PUBLISH arrived")["data"]["progress"], 0.1);
    source.redis_cli(&["PUBLISH", "job_progress:job_123", "not json"]);
    source.redis_cli(&[
        "PUBLISH",
        "job_progress:job_123",
        r#"{"type":"job_progress","progress":0.5}"#,
    ]);
    job_done(&source, r#"{"url":"/out.mp4"}"#);
    source.redis_cli(&["XADD", "jobs", "*", "data", "{}"]);
    let mut got = Vec::new();
    while got.len() < 2 {
        let (e, v) = common::within(WAIT, sse.next_json()).await;
        if e.starts_with("herald.") || v["data"]["progress"] == 0.1 {
            continue;
        }
        got.push((e, v["data"].clone()));
    }
    // Pub/sub and the stream are read side by side: compare as a set.
    got.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(got[0], ("job_done".to_owned(), json!({"url": "/out.mp4"})));
    assert_eq!(
        got[1],
        (
            "job_progress".to_owned(),
            json!({"type": "job_progress", "progress": 0.5})
        )
    );
    server
        .wait_stats("both refusals", |s| {
            s["connectors"][0]["events"]["rejected"] == 2
        })
        .await;
    let rejected = source.redis_cli(&["XRANGE", "jobs:rejected", "-", "+"]);
    assert!(
        rejected.contains("the entry has no channel field"),
        "{rejected}"
    );
    assert_eq!(source.redis_cli(&["XLEN", "jobs"]).trim(), "0");
    // An idle stream is not a lost connection: blocking reads that time out (1 s each) are
    // quiet.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let c = &server.stats().await["connectors"][0];
    assert_eq!(
        (
            c["state"].as_str(),
            c["errors"].as_u64(),
            c["reconnects"].as_u64()
        ),
        (Some("connected"), Some(0), Some(0)),
        "{c}"
    );

    // Redis restarts (empty): both sides connect again, the stream's group is made anew, and
    // what is published afterwards arrives.
    source.restart();
    server
        .wait_stats("reconnected", |s| {
            let c = &s["connectors"][0];
            c["state"] == "connected" && c["reconnects"].as_u64() >= Some(1)
        })
        .await;
    job_done(&source, r#"{"after":"restart"}"#);
    let mut after = (false, false);
    for _ in 0..100 {
        if !after.1 {
            source.redis_cli(&[
                "PUBLISH",
                "job_progress:job_123",
                r#"{"type":"job_progress","progress":0.9}"#,
            ]);
        }
        let Ok((e, v)) = tokio::time::timeout(Duration::from_millis(100), sse.next_json()).await
        else {
            continue;
        };
        match e.as_str() {
            "job_done" if v["data"] == json!({"after": "restart"}) => after.0 = true,
            "job_progress" if v["data"]["progress"] == 0.9 => after.1 = true,
            _ => {}
        }
        if after == (true, true) {
            break;
        }
    }
    assert_eq!(
        after,
        (true, true),
        "(stream entry, PUBLISH) after the restart"
    );
}

/// Adds a `job_done` entry with `data` to the `jobs` stream.
fn job_done(source: &Backend, data: &str) {
    source.redis_cli(&[
        "XADD",
        "jobs",
        "*",
        "channel",
        "job_progress:job_123",
        "event",
        "job_done",
        "data",
        data,
    ]);
}

fn xadd(source: &Backend, channel: &str, seq: u64) {
    let data = json!({"seq": seq}).to_string();
    source.redis_cli(&["XADD", "work", "*", "channel", channel, "data", &data]);
}

fn stream_connector(source: &Backend) -> String {
    format!(
        "[[connectors.redis]]\nname = \"work\"\nurl = \"{}\"\nstream = \"work\"\n",
        source.url()
    )
}

/// The Redis stream connector's node killed mid-stream, on a Redis engine cluster.
#[tokio::test]
async fn redis_stream_survives_its_node_on_redis() {
    let Some(source) = Backend::start(Kind::Redis) else {
        return;
    };
    takeover(Kind::Redis, &stream_connector(&source), |c, s| {
        xadd(&source, c, s);
        std::future::ready(())
    })
    .await;
}

/// The Redis stream connector's node killed mid-stream, on a NATS engine cluster.
#[tokio::test]
async fn redis_stream_survives_its_node_on_nats() {
    let Some(source) = Backend::start(Kind::Redis) else {
        return;
    };
    takeover(Kind::Nats, &stream_connector(&source), |c, s| {
        xadd(&source, c, s);
        std::future::ready(())
    })
    .await;
}
