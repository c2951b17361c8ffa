//! Durable storage (`--data-dir`) as a user runs it: a node killed with `kill -9` in the middle
//! of a stream restarts on its directory and every subscriber resumes with nothing lost, nothing
//! doubled and no reset; a store that cannot be opened stops start-up with its reason; a full
//! disk refuses publishes with 503 while subscribers keep what was accepted.

mod common;

use common::{TestServer, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = r#"
[channels.defaults]
history_size = 5000
history_ttl = "10m"

[channels.namespaces.state]
latest_state = "per_event"
"#;

const CHANNELS: [&str; 4] = ["room:a", "room:b", "room:c", "room:d"];

/// A fresh directory, removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("herald-durable-{name}-{}", fastrand::u64(..)));
        Self(dir)
    }

    fn flag(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

async fn start(dir: &Dir) -> TestServer {
    start_with(dir, true).await
}

async fn start_with(dir: &Dir, fsync: bool) -> TestServer {
    let fsync = if fsync { "true" } else { "false" };
    TestServer::start_with(
        CONFIG,
        "127.0.0.1:0",
        &["--data-dir", &dir.flag()],
        &[("HERALD_ENGINE__FSYNC", fsync)],
    )
    .await
}

async fn kill9(mut server: TestServer) {
    server.child.start_kill().expect("SIGKILL");
    let _ = server.child.wait().await;
}

/// What one subscriber received, per channel: (offset, the publisher's sequence number).
type Received = BTreeMap<String, Vec<(u64, u64)>>;

fn record(into: &mut Received, v: &Value) {
    let channel = v["channel"].as_str().expect("channel").to_owned();
    let offset = v["offset"].as_u64().expect("offset");
    let seq = v["data"]["seq"].as_u64().expect("seq");
    into.entry(channel).or_default().push((offset, seq));
}

/// The publishers' sequence numbers of what a follower received.
fn seqs(f: common::Followed) -> Received {
    f.into_iter()
        .map(|(c, v)| {
            let v = v
                .into_iter()
                .map(|(o, d)| (o, d["seq"].as_u64().expect("seq")))
                .collect();
            (c, v)
        })
        .collect()
}

fn done(got: &Received, targets: &Option<HashMap<String, u64>>) -> bool {
    targets.as_ref().is_some_and(|t| {
        t.iter().all(|(c, top)| {
            got.get(c)
                .and_then(|v| v.last())
                .is_some_and(|(o, _)| o >= top)
        })
    })
}

/// Follows every channel over WebSocket, resubscribing with `since` to whatever node is up.
async fn ws_follower(
    url: watch::Receiver<String>,
    targets: watch::Receiver<Option<HashMap<String, u64>>>,
) -> Received {
    let mut got = Received::new();
    let mut positions: HashMap<String, (String, u64)> = HashMap::new();
    loop {
        if done(&got, &targets.borrow()) {
            return got;
        }
        let ws_url = format!("{}/ws", url.borrow().replacen("http://", "ws://", 1));
        let Ok((mut ws, _)) = tokio_tungstenite::connect_async(&ws_url).await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        for (id, c) in CHANNELS.iter().enumerate() {
            let mut req = json!({"op": "subscribe", "channel": c, "id": id + 1});
            if let Some((epoch, offset)) = positions.get(*c) {
                req["since"] = json!({"epoch": epoch, "offset": offset});
            }
            if ws
                .send(Message::Text(req.to_string().into()))
                .await
                .is_err()
            {
                break;
            }
        }
        loop {
            if done(&got, &targets.borrow()) {
                return got;
            }
            let frame = match tokio::time::timeout(Duration::from_millis(200), ws.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(_))) => continue,
                Ok(_) => break,
            };
            let v: Value = serde_json::from_str(&frame).expect("JSON");
            match v["push"].as_str() {
                Some("publication") => {
                    record(&mut got, &v);
                    let c = v["channel"].as_str().unwrap().to_owned();
                    let epoch = v["epoch"].as_str().unwrap().to_owned();
                    positions.insert(c, (epoch, v["offset"].as_u64().unwrap()));
                }
                Some("reset") => panic!("WS reset after a restart: {v}"),
                Some(_) => {}
                None => {
                    if let Some(err) = v.get("error") {
                        // The node died between the upgrade and the subscribe.
                        panic!("WS subscribe refused: {err}");
                    }
                    let result = &v["result"];
                    let c = CHANNELS[v["id"].as_u64().unwrap() as usize - 1];
                    if positions.contains_key(c) {
                        assert_eq!(result["recovered"], true, "WS resume of {c}: {v}");
                    } else {
                        let p = &result["position"];
                        positions.insert(
                            c.to_owned(),
                            (
                                p["epoch"].as_str().unwrap().to_owned(),
                                p["offset"].as_u64().unwrap(),
                            ),
                        );
                    }
                }
            }
        }
    }
}

/// Every acknowledged publication exactly once, in order: offsets run 1, 2, 3… with no gap and
/// no repeat, and the acknowledged ones carry what was published at them.
fn check(who: &str, got: &Received, acked: &HashMap<String, BTreeMap<u64, u64>>) {
    for c in CHANNELS {
        let seen = got.get(c).map(Vec::as_slice).unwrap_or_default();
        for (i, (offset, _)) in seen.iter().enumerate() {
            assert_eq!(
                *offset,
                i as u64 + 1,
                "{who} {c}: offsets out of order at {i}"
            );
        }
        for (offset, seq) in acked.get(c).into_iter().flatten() {
            let at = usize::try_from(*offset).unwrap() - 1;
            assert_eq!(
                seen.get(at).map(|s| s.1),
                Some(*seq),
                "{who} {c}: acknowledged publication at offset {offset} missing or different"
            );
        }
    }
}

#[tokio::test]
async fn kill_9_three_times_mid_stream_loses_nothing_acknowledged() {
    kill_9_three_times(true).await;
}

/// Without fsync a publication is in the operating system when acknowledged, which a killed
/// process cannot lose either.
#[tokio::test]
async fn kill_9_without_fsync_loses_nothing_acknowledged_either() {
    kill_9_three_times(false).await;
}

async fn kill_9_three_times(fsync: bool) {
    let dir = Dir::new("kill9");
    let mut server = start_with(&dir, fsync).await;
    let (url_tx, url_rx) = watch::channel(server.url.clone());
    let (targets_tx, targets_rx) = watch::channel(None);
    let (u, t) = (url_rx.clone(), targets_rx.clone());
    let sse = tokio::spawn(async move { seqs(common::follow_sse(u, &CHANNELS, t).await) });
    let ws = tokio::spawn(ws_follower(url_rx.clone(), targets_rx.clone()));
    // Followers first hold positions at offset 0: those must survive the first kill too.
    tokio::time::sleep(Duration::from_millis(300)).await;

    const TOTAL: u64 = 10_000;
    const PUBLISHERS: u64 = 8;
    let acked: Arc<Mutex<HashMap<String, BTreeMap<u64, u64>>>> = Arc::default();
    let count = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut publishers = Vec::new();
    for p in 0..PUBLISHERS {
        let url = url_rx.clone();
        let acked = acked.clone();
        let count = count.clone();
        publishers.push(tokio::spawn(async move {
            let http = reqwest::Client::new();
            for seq in (p..TOTAL).step_by(PUBLISHERS as usize) {
                let channel = CHANNELS[(seq % 4) as usize];
                let base = url.borrow().clone();
                let body = json!({"channel": channel, "data": {"seq": seq}}).to_string();
                let sent = http
                    .post(format!("{base}/api/publish"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await;
                let Ok(resp) = sent else {
                    // The node is down: this one may or may not have been kept.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                };
                if resp.status() != 200 {
                    continue;
                }
                let Ok(v) = resp.json::<Value>().await else {
                    continue;
                };
                let offset = v["offset"].as_u64().expect("offset");
                let prev = acked
                    .lock()
                    .unwrap()
                    .entry(channel.to_owned())
                    .or_default()
                    .insert(offset, seq);
                assert_eq!(prev, None, "{channel}: offset {offset} acknowledged twice");
                count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        }));
    }
    // Three kills at random points of the stream, each restarting on the same directory.
    let mut at = 0;
    for _ in 0..3 {
        at += fastrand::u64(1_000..2_800);
        // Bounded: a publisher that failed its checks stops counting.
        common::within(WAIT * 3, async {
            while count.load(std::sync::atomic::Ordering::Relaxed) < at {
                assert!(
                    publishers.iter().all(|p| !p.is_finished()),
                    "a publisher stopped early"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        tokio::time::sleep(Duration::from_millis(fastrand::u64(0..20))).await;
        kill9(server).await;
        server = start_with(&dir, fsync).await;
        url_tx.send(server.url.clone()).unwrap();
    }
    for p in publishers {
        common::within(WAIT * 3, p).await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    let total: usize = acked.values().map(BTreeMap::len).sum();
    assert!(
        total > 9_000,
        "only {total} of {TOTAL} publications acknowledged"
    );
    // Each channel's newest offset, which both followers must reach.
    let mut tops = HashMap::new();
    for c in CHANNELS {
        let (status, page) = server
            .get(&format!("/api/history?channel={c}&limit=1"))
            .await;
        assert_eq!(status, 200);
        tops.insert(c.to_owned(), page["position"]["offset"].as_u64().unwrap());
    }
    targets_tx.send(Some(tops)).unwrap();
    let sse = common::within(WAIT * 3, sse).await.unwrap();
    let ws = common::within(WAIT * 3, ws).await.unwrap();
    check("SSE", &sse, &acked);
    check("WS", &ws, &acked);
    // What is kept is also what history serves after the restarts.
    let (_, page) = server.get("/api/history?channel=room:a&limit=5000").await;
    let kept = page["publications"].as_array().unwrap();
    assert_eq!(
        kept.len() as u64,
        page["position"]["offset"].as_u64().unwrap()
    );
}

#[tokio::test]
async fn latest_state_and_positions_survive_a_clean_restart() {
    let dir = Dir::new("latest");
    let server = start(&dir).await;
    server
        .publish("state:stream", Some("stats"), json!({"viewers": 3}))
        .await;
    server
        .publish("state:stream", Some("queue"), json!(["a"]))
        .await;
    let last = server
        .publish("state:stream", Some("stats"), json!({"viewers": 4}))
        .await;
    server.terminate();
    drop(server);
    let server = start(&dir).await;
    let mut ws = common::Ws::connect(&server).await;
    let reply = ws
        .request(json!({"op": "subscribe", "channel": "state:stream"}))
        .await;
    assert_eq!(reply["result"]["position"]["epoch"], last["epoch"]);
    assert_eq!(reply["result"]["position"]["offset"], 3);
    let first = ws.next_push().await;
    let second = ws.next_push().await;
    assert_eq!(
        (first["event"].as_str(), first["offset"].as_u64()),
        (Some("queue"), Some(2))
    );
    assert_eq!(second["data"]["viewers"], 4);
}

#[tokio::test]
async fn a_lost_directory_gives_resuming_clients_an_explicit_reset() {
    let dir = Dir::new("lost");
    let server = start(&dir).await;
    let mut sse = common::Sse::connect(&server, &["room:lost"], None).await;
    server.publish("room:lost", None, json!(1)).await;
    sse.next_json().await;
    let last_id = sse.decoder.last_event_id().to_owned();
    server.terminate();
    drop(server);
    std::fs::remove_dir_all(&dir.0).unwrap();
    let server = start(&dir).await;
    let mut sse = common::Sse::connect(&server, &["room:lost"], Some(&last_id)).await;
    let (event, reset) = sse.next_json().await;
    assert_eq!(event, "herald.reset", "{reset}");
    assert_eq!(reset["reason"], "epoch_changed");
}

fn start_fails(dir: &Path) -> String {
    let out = std::process::Command::new(common::herald_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("HERALD_LOG", "warn")
        .output()
        .expect("run herald");
    assert!(!out.status.success(), "herald started on {}", dir.display());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[tokio::test]
async fn a_locked_or_corrupt_store_stops_start_up_with_its_reason() {
    let dir = Dir::new("refused");
    let server = start(&dir).await;
    let err = start_fails(&dir.0);
    assert!(err.contains("in use by another Herald process"), "{err}");
    drop(server);

    let corrupt = Dir::new("corrupt");
    std::fs::create_dir_all(&corrupt.0).unwrap();
    let db = corrupt.0.join("herald.db");
    std::fs::write(&db, b"not a database, not at all".repeat(400)).unwrap();
    let err = start_fails(&corrupt.0);
    assert!(
        err.contains("does not reset a store it cannot read"),
        "{err}"
    );
    assert!(err.contains("herald.db"), "{err}");
    // Left as it was.
    assert_eq!(
        std::fs::read(&db).unwrap(),
        b"not a database, not at all".repeat(400)
    );
}

/// A small tmpfs, unmounted on drop.
struct Tmpfs(Dir);

impl Tmpfs {
    /// Mounts `size` of tmpfs; `None` when this user cannot mount.
    fn mount(size: &str) -> Option<Self> {
        let dir = Dir::new("tmpfs");
        std::fs::create_dir_all(&dir.0).unwrap();
        let ok = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "herald-test"])
            .arg(&dir.0)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        ok.then_some(Self(dir))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0 .0)
            .status();
    }
}

#[tokio::test]
async fn a_full_disk_refuses_publishes_with_503_and_keeps_serving() {
    let Some(disk) = Tmpfs::mount("2m") else {
        assert!(
            !common::require_backends(),
            "cannot mount a tmpfs (the full-disk test needs root)"
        );
        eprintln!("skipped: cannot mount a tmpfs (the full-disk test needs root)");
        return;
    };
    let data = disk.0 .0.join("data");
    let server = TestServer::start_with(
        CONFIG,
        "127.0.0.1:0",
        &["--data-dir", &data.display().to_string()],
        &[],
    )
    .await;
    let mut sse = common::Sse::connect(&server, &["fill"], None).await;
    // Most of the disk goes to another file, which is removed later to free it again.
    let filler = disk.0 .0.join("filler");
    std::fs::write(&filler, vec![0u8; 1536 * 1024]).unwrap();
    let pad = "x".repeat(8 * 1024);
    let mut accepted = Vec::new();
    let mut refusal = None;
    for seq in 0..400u64 {
        let body = json!({"channel": "fill", "data": {"seq": seq, "pad": pad}}).to_string();
        let (status, v) = server.post("/api/publish", &body).await;
        if status == 200 {
            accepted.push((v["offset"].as_u64().unwrap(), seq));
        } else {
            refusal = Some((status, v));
            break;
        }
    }
    let (status, body) = refusal.expect("the disk never filled");
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "unavailable", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("storage failed")),
        "{body}"
    );
    assert!(
        !accepted.is_empty(),
        "nothing fitted before the disk filled"
    );
    server
        .wait_stats("a counted write error", |s| {
            s["engine"]["counters"]["store_write_errors"]
                .as_u64()
                .is_some_and(|n| n >= 1)
        })
        .await;
    server
        .wait_metrics(|m| {
            m.lines().any(|l| {
                l.starts_with("herald_engine_events_total{event=\"store_write_errors\"}")
                    && !l.ends_with(" 0")
            })
        })
        .await;
    // Subscribers got exactly what was accepted; history still serves it.
    for (offset, seq) in &accepted {
        let (_, v) = sse.next_json().await;
        assert_eq!(
            (v["offset"].as_u64(), v["data"]["seq"].as_u64()),
            (Some(*offset), Some(*seq))
        );
    }
    let (status, page) = server.get("/api/history?channel=fill&limit=1000").await;
    assert_eq!(status, 200);
    assert_eq!(
        page["publications"].as_array().unwrap().len(),
        accepted.len()
    );
    // Space again: the next publication continues right after the last accepted one, and the
    // subscriber sees it without a gap or a reset.
    std::fs::remove_file(&filler).unwrap();
    let (status, v) = server
        .post(
            "/api/publish",
            &json!({"channel": "fill", "data": {"seq": 999}}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let next = accepted.last().unwrap().0 + 1;
    assert_eq!(v["offset"].as_u64(), Some(next));
    let (event, v) = sse.next_json().await;
    assert_eq!(event, "message", "{v}");
    assert_eq!(
        (v["offset"].as_u64(), v["data"]["seq"].as_u64()),
        (Some(next), Some(999))
    );
    drop(server);
}
