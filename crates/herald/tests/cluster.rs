//! Many nodes over a shared engine (Redis, NATS): fan-out between nodes, one order for every
//! subscriber, resume on any node, presence leases, engine outages, and worker publishing
//! through Redis alone. Each test starts its own engine server on a free port.

mod common;

use common::backends::{Backend, Kind};
use common::{within, Sse, TestServer, Ws, WAIT};
use serde_json::{json, Value};
use std::time::Duration;

fn config(backend: &Backend, extra: &str) -> String {
    let kind = match backend.kind {
        Kind::Redis => "redis",
        Kind::Nats => "nats",
    };
    format!(
        r#"
[sse]
retry = "200ms"

[engine]
kind = "{kind}"
url = "{url}"
presence_lease = "2s"

[channels.defaults]
history_size = 1000

[channels.namespaces.room]
presence = true
{extra}
"#,
        url = backend.url()
    )
}

async fn nodes(backend: &Backend, n: usize) -> Vec<TestServer> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.push(started(&config(backend, "")).await);
    }
    out
}

/// A node, once ready. A node refuses publishes until its engine's first canary has come back
/// (503, "not ready"), which a loaded machine can delay past a test's first request.
async fn started(config: &str) -> TestServer {
    let node = TestServer::start(config).await;
    wait_get(&node, "/health/ready", "the node ready", |s, _| s == 200).await;
    node
}

/// Polls `GET path` until `pred(status, body)` holds.
async fn wait_get(server: &TestServer, path: &str, what: &str, pred: impl Fn(u16, &Value) -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = server.get(path).await;
        if pred(status, &body) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never saw {what}: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn ws_subscribe(server: &TestServer, channel: &str, since: Option<Value>) -> Ws {
    let mut ws = Ws::connect(server).await;
    let mut req = json!({"op": "subscribe", "channel": channel});
    if let Some(s) = since {
        req["since"] = s;
    }
    let reply = ws.request(req).await;
    assert!(reply.get("error").is_none(), "subscribe failed: {reply}");
    ws
}

async fn fan_out_between_nodes_in_one_order(kind: Kind) {
    let Some(backend) = Backend::start(kind) else {
        return;
    };
    let n = nodes(&backend, 3).await;
    let mut sse = Sse::connect(&n[0], &["news"], None).await;
    sse.wait_raw(b"id: ").await;
    let mut ws = ws_subscribe(&n[1], "news", None).await;

    let first = n[2]
        .publish("news", Some("headline"), json!({"n": 0}))
        .await;
    assert_eq!(first["offset"], 1);
    let (event, v) = sse.next_json().await;
    assert_eq!(event, "headline");
    assert_eq!(v["data"], json!({"n": 0}));
    let push = ws.next_push().await;
    assert_eq!(push["data"], json!({"n": 0}));
    assert_eq!(push["offset"], 1);

    // Two nodes publish to one channel at once; everyone must see the offsets' order.
    const EACH: u64 = 100;
    let publish_many = |server: &TestServer, tag: &'static str| {
        let http = server.http.clone();
        let url = format!("{}/api/publish", server.url);
        async move {
            for i in 0..EACH {
                let resp = http
                    .post(&url)
                    .json(&json!({"channel": "news", "data": {"tag": tag, "i": i}}))
                    .send()
                    .await
                    .expect("publish");
                let status = resp.status();
                let body = resp.text().await.unwrap_or_default();
                assert_eq!(status, 200, "publish {tag}{i} refused: {body}");
            }
        }
    };
    tokio::join!(publish_many(&n[0], "a"), publish_many(&n[1], "b"));

    let mut sse_offsets = Vec::new();
    let mut per_tag = [0u64, 0u64];
    for _ in 0..2 * EACH {
        let (_, v) = sse.next_json().await;
        sse_offsets.push(v["offset"].as_u64().unwrap());
        // Each publisher's own messages stay in the order it sent them.
        let tag = usize::from(v["data"]["tag"] == "b");
        assert_eq!(v["data"]["i"], per_tag[tag], "publisher order broken: {v}");
        per_tag[tag] += 1;
    }
    let mut ws_offsets = Vec::new();
    for _ in 0..2 * EACH {
        ws_offsets.push(ws.next_push().await["offset"].as_u64().unwrap());
    }
    let expected: Vec<u64> = (2..=2 * EACH + 1).collect();
    assert_eq!(sse_offsets, expected);
    assert_eq!(ws_offsets, expected);

    // Readiness follows the canary, which a loaded machine can delay: wait for it.
    wait_get(&n[0], "/health/ready", "the node ready", |s, _| s == 200).await;
    let stats = n[0].stats().await;
    assert!(
        stats["engine"]["publish_latency"]["count"]
            .as_u64()
            .unwrap()
            >= EACH
    );
}

async fn resume_on_another_node(kind: Kind) {
    let Some(backend) = Backend::start(kind) else {
        return;
    };
    let n = nodes(&backend, 3).await;
    let mut sse = Sse::connect(&n[0], &["feed", "other"], None).await;
    sse.wait_raw(b"id: ").await;
    n[2].publish("feed", None, json!("before")).await;
    let (_, v) = sse.next_json().await;
    assert_eq!(v["data"], "before");
    let last_id = sse.decoder.last_event_id().to_owned();
    drop(sse);

    const N: usize = 7;
    for i in 0..N {
        n[2].publish("feed", None, json!(format!("missed-{i}")))
            .await;
    }
    n[2].publish("other", None, json!("other-missed")).await;
    let mut sse = Sse::connect(&n[1], &["feed", "other"], Some(&last_id)).await;
    let mut got = Vec::new();
    for _ in 0..=N {
        let (event, v) = sse.next_json().await;
        assert_eq!(event, "message", "unexpected {event}: {v}");
        got.push(v["data"].as_str().unwrap().to_owned());
    }
    let mut want: Vec<String> = (0..N).map(|i| format!("missed-{i}")).collect();
    want.push("other-missed".to_owned());
    assert_eq!(got, want);
    n[0].publish("feed", None, json!("live")).await;
    assert_eq!(sse.next_json().await.1["data"], "live");

    // A WebSocket client resumes on the third node from a position taken on the first.
    let mut ws = ws_subscribe(&n[0], "feed", None).await;
    n[1].publish("feed", None, json!("ws-1")).await;
    let push = ws.next_push().await;
    let since = json!({"epoch": push["epoch"], "offset": push["offset"]});
    drop(ws);
    n[1].publish("feed", None, json!("ws-2")).await;
    n[1].publish("feed", None, json!("ws-3")).await;
    let mut ws = ws_subscribe(&n[2], "feed", Some(since)).await;
    assert_eq!(ws.next_push().await["data"], "ws-2");
    assert_eq!(ws.next_push().await["data"], "ws-3");
}

async fn dead_node_leaves_no_ghost_and_its_clients_resume_elsewhere(kind: Kind) {
    let Some(backend) = Backend::start(kind) else {
        return;
    };
    let mut n = nodes(&backend, 2).await;
    // A member on the surviving node, to see the dead node's members join and leave.
    let mut watcher = ws_subscribe(&n[1], "room:1", None).await;
    let me = watcher
        .request(json!({"op": "presence", "channel": "room:1"}))
        .await["result"]["members"][0]["conn_id"]
        .as_str()
        .expect("the watcher is a member")
        .to_owned();
    let _member = ws_subscribe(&n[0], "room:1", None).await;
    let mut sse = Sse::connect(&n[0], &["room:1"], None).await;
    sse.wait_raw(b"id: ").await;
    wait_get(
        &n[1],
        "/api/presence?channel=room:1",
        "three members",
        |s, b| s == 200 && b["members"].as_array().is_some_and(|m| m.len() == 3),
    )
    .await;
    let mut dead_members = Vec::new();
    while dead_members.len() < 2 {
        let push = watcher.next_push().await;
        let id = push["member"]["conn_id"].as_str().unwrap_or_default();
        if push["push"] == "join" && id != me {
            dead_members.push(id.to_owned());
        }
    }
    n[1].publish("room:1", None, json!("seen")).await;
    loop {
        let (event, v) = sse.next_json().await;
        if event == "message" {
            assert_eq!(v["data"], "seen");
            break;
        }
    }
    let last_id = sse.decoder.last_event_id().to_owned();

    // kill -9: no goodbye, no leave.
    n[0].child.start_kill().expect("kill node");
    let _ = n[0].child.wait().await;
    for i in 0..5 {
        n[1].publish("room:1", None, json!(i)).await;
    }
    wait_get(
        &n[1],
        "/api/presence?channel=room:1",
        "the dead node's members gone",
        |s, b| s == 200 && b["members"].as_array().is_some_and(|m| m.len() == 1),
    )
    .await;
    if kind == Kind::Redis {
        // The node that removed them announces their leave.
        let mut left = Vec::new();
        while left.len() < 2 {
            let push = watcher.next_push().await;
            if push["push"] == "leave" {
                left.push(push["member"]["conn_id"].as_str().unwrap().to_owned());
            }
        }
        left.sort();
        dead_members.sort();
        assert_eq!(left, dead_members);
    }
    let mut sse = Sse::connect(&n[1], &["room:1"], Some(&last_id)).await;
    let mut got = Vec::new();
    while got.len() < 5 {
        let (event, v) = sse.next_json().await;
        if event == "message" {
            got.push(v["data"].clone());
        }
    }
    assert_eq!(got, (0..5).map(|i| json!(i)).collect::<Vec<_>>());
    n.truncate(1);
}

/// What one subscriber saw, in order: publication sequence numbers and resets.
#[derive(Debug, PartialEq)]
enum Seen {
    Seq(u64),
    Reset,
}

/// Every accepted sequence number was received, or falls in a gap announced by a reset.
fn silent_losses(accepted: &[u64], seen: &[Seen]) -> Vec<u64> {
    let mut lost = Vec::new();
    let mut next = 0;
    let mut reset_since_last = false;
    for s in seen {
        match s {
            Seen::Reset => reset_since_last = true,
            Seen::Seq(x) => {
                while next < accepted.len() && accepted[next] < *x {
                    if !reset_since_last {
                        lost.push(accepted[next]);
                    }
                    next += 1;
                }
                if next < accepted.len() && accepted[next] == *x {
                    next += 1;
                }
                reset_since_last = false;
            }
        }
    }
    lost.extend(&accepted[next..]);
    lost
}

/// What an SSE subscriber receives up to and including publication `last` (the data of each
/// publication is its sequence number), resets included.
async fn sse_seen_until(sse: &mut Sse, last: u64) -> Vec<Seen> {
    let mut seen = Vec::new();
    within(WAIT * 3, async {
        loop {
            let (event, v) = sse.next_json().await;
            match event.as_str() {
                "herald.reset" => seen.push(Seen::Reset),
                "message" => {
                    let x = v["data"].as_u64().unwrap();
                    seen.push(Seen::Seq(x));
                    if x == last {
                        break;
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    seen
}

/// As [`sse_seen_until`], for a WebSocket subscriber.
async fn ws_seen_until(ws: &mut Ws, last: u64) -> Vec<Seen> {
    let mut seen = Vec::new();
    within(WAIT * 3, async {
        loop {
            let push = ws.next_push().await;
            match push["push"].as_str() {
                Some("reset") => seen.push(Seen::Reset),
                Some("publication") => {
                    let x = push["data"].as_u64().unwrap();
                    seen.push(Seen::Seq(x));
                    if x == last {
                        break;
                    }
                }
                _ => {}
            }
        }
    })
    .await;
    seen
}

/// How the engine fails in an outage test.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outage {
    /// Killed and restarted on the same port: connections are refused, then come back.
    Restart,
    /// Frozen and continued: connections stay open but nothing answers, as on a dead network
    /// path, so only the canary's round trip (not a connection error) can tell.
    Silence,
}

async fn engine_outage_is_loud_and_lossless(kind: Kind, outage: Outage) {
    let Some(mut backend) = Backend::start(kind) else {
        return;
    };
    let n = nodes(&backend, 2).await;
    let mut sse = Sse::connect(&n[0], &["ticks"], None).await;
    sse.wait_raw(b"id: ").await;
    let mut ws = ws_subscribe(&n[1], "ticks", None).await;
    let mut accepted = Vec::new();
    let mut refused = 0;
    let mut seq = 0;
    let mut publish = |server: &TestServer| {
        seq += 1;
        let s = seq;
        let http = server.http.clone();
        let url = format!("{}/api/publish", server.url);
        async move {
            let resp = http
                .post(url)
                .json(&json!({"channel": "ticks", "data": s}))
                .send()
                .await
                .expect("publish");
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.expect("JSON body");
            (s, status, body)
        }
    };
    for _ in 0..20 {
        let (s, status, _) = publish(&n[1]).await;
        assert_eq!(status, 200);
        accepted.push(s);
    }

    match outage {
        Outage::Restart => backend.kill(),
        Outage::Silence => backend.freeze(),
    }
    wait_get(&n[0], "/health/ready", "readiness false", |s, _| s == 503).await;
    // A publish to a silent engine waits out its command timeout before it is refused.
    let tries = if outage == Outage::Silence { 2 } else { 5 };
    for _ in 0..tries {
        let (s, status, body) = publish(&n[1]).await;
        if status == 200 {
            accepted.push(s);
        } else {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            refused += 1;
        }
    }
    assert!(refused > 0, "no publish was refused during the outage");

    match outage {
        Outage::Restart => backend.restart(),
        Outage::Silence => backend.thaw(),
    }
    for server in &n {
        wait_get(server, "/health/ready", "readiness true", |s, _| s == 200).await;
    }
    for _ in 0..20 {
        let (s, status, body) = publish(&n[1]).await;
        assert_eq!(status, 200, "{body}");
        accepted.push(s);
    }
    if kind == Kind::Redis {
        // The worker stream is read again too: an entry added after the outage is published.
        seq += 1;
        let data = seq.to_string();
        backend.redis_cli(&[
            "XADD",
            "herald:ingest",
            "*",
            "channel",
            "ticks",
            "data",
            &data,
        ]);
        accepted.push(seq);
    }
    let last = *accepted.last().unwrap();

    let sse_seen = sse_seen_until(&mut sse, last).await;
    let ws_seen = ws_seen_until(&mut ws, last).await;
    assert_eq!(
        silent_losses(&accepted, &sse_seen),
        Vec::<u64>::new(),
        "SSE saw {sse_seen:?}"
    );
    assert_eq!(
        silent_losses(&accepted, &ws_seen),
        Vec::<u64>::new(),
        "WS saw {ws_seen:?}"
    );
    if outage == Outage::Restart {
        let stats = n[0].stats().await;
        assert!(
            stats["engine"]["reconnects"].as_u64().unwrap() >= 1,
            "{stats}"
        );
    }
}

/// Per-event latest state shared by two nodes: read on another node long after history expired
/// (and, on Redis, after the channel's state TTL), resumed right after the first push without a
/// reset or duplicate, and continued in the same epoch.
async fn latest_state_lasts_across_nodes(kind: Kind) {
    let Some(backend) = Backend::start(kind) else {
        return;
    };
    let extra = r#"
[channels.namespaces.w]
history_size = 1
history_ttl = "1s"
latest_state = "per_event"
"#;
    let config = config(&backend, extra).replace(
        "presence_lease = \"2s\"",
        "presence_lease = \"2s\"\nchannel_state_ttl = \"1s\"",
    );
    let a = started(&config).await;
    let b = started(&config).await;
    for event in ["queue", "status", "tts", "queue", "status", "tts"] {
        a.publish("w:stream", Some(event), json!(event)).await;
    }
    tokio::time::sleep(Duration::from_millis(2200)).await;

    let mut sse = Sse::connect(&b, &["w:stream"], None).await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let e = sse.next().await.expect("a latest-state push");
        let v: Value = serde_json::from_str(&e.data).unwrap();
        got.push((e.event, v["offset"].as_u64().unwrap(), e.id));
    }
    let names: Vec<(&str, u64)> = got.iter().map(|(e, o, _)| (e.as_str(), *o)).collect();
    assert_eq!(names, [("queue", 4), ("status", 5), ("tts", 6)]);
    let epoch = got[2].2.split('-').next().unwrap().to_owned();
    assert_eq!(
        got[2].2,
        format!("{epoch}-6"),
        "the id ends at the channel's position"
    );

    // Cut right after the first push, resumed with its id on the other node.
    let mut resumed = Sse::connect(&a, &["w:stream"], Some(&got[0].2)).await;
    let (e1, v1) = resumed.next_json().await;
    let (e2, v2) = resumed.next_json().await;
    assert_eq!((e1.as_str(), v1["offset"].clone()), ("status", json!(5)));
    assert_eq!((e2.as_str(), v2["offset"].clone()), ("tts", json!(6)));

    // The next publication continues the same epoch, and reaches both without a reset.
    let next = b.publish("w:stream", Some("queue"), json!("again")).await;
    assert_eq!(
        (next["epoch"].as_str().unwrap(), next["offset"].clone()),
        (epoch.as_str(), json!(7))
    );
    assert_eq!(sse.next_json().await.1["offset"], 7);
    let (event, v) = resumed.next_json().await;
    assert_eq!(
        (event.as_str(), v["offset"].clone()),
        ("queue", json!(7)),
        "no reset, no duplicate"
    );
}

const USERS_SECRET: &str = "cluster-presence-secret-0123456789abcdef";

fn token_for(user: &str) -> String {
    let claims = json!({
        "sub": user,
        "exp": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 3600,
        "info": {"name": user},
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(USERS_SECRET.as_bytes()),
    )
    .unwrap()
}

/// Presence by user across two nodes: one user with a tab on each node is one member, its
/// `leave` comes only after both tabs closed.
async fn presence_by_user_across_nodes(kind: Kind) {
    let Some(backend) = Backend::start(kind) else {
        return;
    };
    let extra = format!(
        r#"
[channels.namespaces.people]
presence = "users"
subscribe = "public"

[auth.token]
hmac_secrets = ["{USERS_SECRET}"]
"#
    );
    let config = config(&backend, &extra);
    let a = started(&config).await;
    let b = started(&config).await;
    let mut watcher = ws_subscribe(&a, "people:party", None).await;
    let mut tab1 = Ws::connect_url(&format!("{}?token={}", a.ws_url(), token_for("alice"))).await;
    let r = tab1
        .request(json!({"op": "subscribe", "channel": "people:party"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let joined = watcher.next_push().await;
    assert_eq!(joined["push"], "join", "{joined}");
    assert_eq!(
        joined["member"],
        json!({"user_id": "alice", "info": {"name": "alice"}})
    );
    let url = format!(
        "{}/sse?channel=people:party&token={}",
        b.url,
        token_for("alice")
    );
    let resp = b.http.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut tab2 = Sse::from_response(resp);
    tab2.wait_raw(b"herald.connected").await;
    // Alice's second tab is not news; the list shows her once, with two connections.
    let listed = watcher
        .request(json!({"op": "presence", "channel": "people:party"}))
        .await;
    assert_eq!(
        listed["result"],
        json!({"channel": "people:party", "anonymous": 1, "users": [
            {"user_id": "alice", "info": {"name": "alice"}, "connections": 2}
        ]}),
        "{listed}"
    );
    drop(tab1);
    let mut bob = Ws::connect_url(&format!("{}?token={}", b.ws_url(), token_for("bob"))).await;
    bob.request(json!({"op": "subscribe", "channel": "people:party"}))
        .await;
    let next = watcher.next_push().await;
    assert_eq!(
        (next["push"].clone(), next["member"]["user_id"].clone()),
        (json!("join"), json!("bob")),
        "no leave while alice has a tab: {next}"
    );
    drop(tab2);
    let next = watcher.next_push().await;
    assert_eq!(
        (next["push"].clone(), next["member"]["user_id"].clone()),
        (json!("leave"), json!("alice")),
        "{next}"
    );
}

/// A retry with the same idempotency key on another node publishes nothing and answers with
/// the first publication's position; another body under the key is a conflict.
async fn idempotency_key_across_nodes(kind: Kind) {
    let Some(backend) = Backend::start(kind) else {
        return;
    };
    let config = config(&backend, "");
    let a = started(&config).await;
    let b = started(&config).await;
    let mut sse = Sse::connect(&b, &["jobs:9"], None).await;
    let body = r#"{"channel":"jobs:9","data":{"pct":10},"idempotency_key":"job-9-10"}"#;
    let (status, first) = a.post("/api/publish", body).await;
    assert_eq!(status, 200, "{first}");
    let (status, again) = b.post("/api/publish", body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(
        (&again["epoch"], &again["offset"]),
        (&first["epoch"], &first["offset"])
    );
    let changed = r#"{"channel":"jobs:9","data":{"pct":11},"idempotency_key":"job-9-10"}"#;
    let (status, v) = b.post("/api/publish", changed).await;
    assert_eq!(
        (status, &v["error"]["code"]),
        (409, &json!("conflict")),
        "{v}"
    );
    b.publish("jobs:9", None, json!({"pct": 20})).await;
    let (_, p) = sse.next_json().await;
    assert_eq!(p["data"]["pct"], 10);
    let (_, p) = sse.next_json().await;
    assert_eq!(
        (p["data"]["pct"].clone(), p["offset"].clone()),
        (json!(20), json!(2))
    );
}

#[tokio::test]
async fn redis_idempotency_key_across_nodes() {
    idempotency_key_across_nodes(Kind::Redis).await;
}

#[tokio::test]
async fn nats_idempotency_key_across_nodes() {
    idempotency_key_across_nodes(Kind::Nats).await;
}

#[tokio::test]
async fn redis_presence_by_user_across_nodes() {
    presence_by_user_across_nodes(Kind::Redis).await;
}

#[tokio::test]
async fn nats_presence_by_user_across_nodes() {
    presence_by_user_across_nodes(Kind::Nats).await;
}

#[tokio::test]
async fn redis_latest_state_lasts_across_nodes() {
    latest_state_lasts_across_nodes(Kind::Redis).await;
}

#[tokio::test]
async fn nats_latest_state_lasts_across_nodes() {
    latest_state_lasts_across_nodes(Kind::Nats).await;
}

#[test]
fn silent_loss_accounting() {
    use Seen::{Reset, Seq};
    assert!(silent_losses(&[1, 2, 3], &[Seq(1), Seq(2), Seq(3)]).is_empty());
    assert_eq!(silent_losses(&[1, 2, 3], &[Seq(1), Seq(3)]), vec![2]);
    assert!(silent_losses(&[1, 2, 3, 4], &[Seq(1), Reset, Seq(4)]).is_empty());
    assert_eq!(silent_losses(&[1, 2, 3], &[Seq(1), Seq(2)]), vec![3]);
}

#[tokio::test]
async fn redis_fan_out_between_nodes_in_one_order() {
    fan_out_between_nodes_in_one_order(Kind::Redis).await;
}

#[tokio::test]
async fn redis_resume_on_another_node() {
    resume_on_another_node(Kind::Redis).await;
}

#[tokio::test]
async fn redis_dead_node_leaves_no_ghost_and_its_clients_resume_elsewhere() {
    dead_node_leaves_no_ghost_and_its_clients_resume_elsewhere(Kind::Redis).await;
}

#[tokio::test]
async fn redis_outage_is_loud_and_lossless() {
    engine_outage_is_loud_and_lossless(Kind::Redis, Outage::Restart).await;
}

#[tokio::test]
async fn redis_silence_is_loud_and_lossless() {
    engine_outage_is_loud_and_lossless(Kind::Redis, Outage::Silence).await;
}

#[tokio::test]
async fn nats_fan_out_between_nodes_in_one_order() {
    fan_out_between_nodes_in_one_order(Kind::Nats).await;
}

#[tokio::test]
async fn nats_resume_on_another_node() {
    resume_on_another_node(Kind::Nats).await;
}

#[tokio::test]
async fn nats_dead_node_leaves_no_ghost_and_its_clients_resume_elsewhere() {
    dead_node_leaves_no_ghost_and_its_clients_resume_elsewhere(Kind::Nats).await;
}

#[tokio::test]
async fn nats_outage_is_loud_and_lossless() {
    engine_outage_is_loud_and_lossless(Kind::Nats, Outage::Restart).await;
}

#[tokio::test]
async fn nats_silence_is_loud_and_lossless() {
    engine_outage_is_loud_and_lossless(Kind::Nats, Outage::Silence).await;
}

#[tokio::test]
async fn a_worker_publishes_with_redis_cli_alone() {
    let Some(backend) = Backend::start(Kind::Redis) else {
        return;
    };
    // The command README documents, word for word.
    let readme_xadd = [
        "XADD",
        "herald:ingest",
        "*",
        "channel",
        "donations:s1",
        "event",
        "tts-completed",
        "data",
        r#"{"id":42}"#,
    ];
    // A worker may add entries before any node runs (a first deploy, or all nodes restarting):
    // they wait in the stream and are published once a node starts.
    let id = backend.redis_cli(&readme_xadd);
    assert!(id.trim().contains('-'), "XADD returned {id:?}");
    let n = nodes(&backend, 2).await;
    wait_get(
        &n[0],
        "/api/history?channel=donations:s1",
        "the entry added before any node ran",
        |s, b| s == 200 && b["publications"].as_array().map(Vec::len) == Some(1),
    )
    .await;

    let mut sse = Sse::connect(&n[0], &["donations:s1"], None).await;
    sse.wait_raw(b"id: ").await;
    let mut ws = ws_subscribe(&n[1], "donations:s1", None).await;
    backend.redis_cli(&readme_xadd);
    let (event, v) = sse.next_json().await;
    assert_eq!(event, "tts-completed");
    assert_eq!(v["data"], json!({"id": 42}));
    assert_eq!(v["offset"], 2);
    let push = ws.next_push().await;
    assert_eq!(push["event"], "tts-completed");
    assert_eq!(push["data"], json!({"id": 42}));
    assert_eq!(push["offset"], 2);
    // Published exactly once though both nodes consume the stream.
    let a = n[0].get("/api/history?channel=donations:s1").await.1;
    assert_eq!(a["publications"].as_array().map(Vec::len), Some(2), "{a}");

    // A bad entry is set aside with its reason, and the next good one still goes through.
    backend.redis_cli(&[
        "XADD",
        "herald:ingest",
        "*",
        "channel",
        "bad channel!",
        "data",
        "1",
    ]);
    backend.redis_cli(&[
        "XADD",
        "herald:ingest",
        "*",
        "channel",
        "donations:s1",
        "data",
        "2",
    ]);
    assert_eq!(sse.next_json().await.1["data"], 2);
    let rejected = backend.redis_cli(&["XRANGE", "herald:ingest:rejected", "-", "+"]);
    assert!(rejected.contains("bad channel!"), "{rejected}");
}

/// The channel-name pub/sub channels a Redis server has sharded subscribers for.
fn shard_channels(b: &Backend) -> Vec<String> {
    b.redis_cli(&["PUBSUB", "SHARDCHANNELS", "herald:*"])
        .lines()
        .map(str::to_owned)
        .filter(|l| !l.is_empty())
        .collect()
}

#[tokio::test]
async fn redis_cluster_spreads_channels_over_shards() {
    let Some(cluster) = common::backends::RedisCluster::start() else {
        return;
    };
    let config = format!(
        "[engine]\nkind = \"redis\"\nurl = \"{}\"\n[channels.defaults]\nhistory_size = 100\n",
        cluster.url()
    );
    let a = started(&config).await;
    let b = started(&config).await;
    // Enough channels that every shard owns some.
    let channels: Vec<String> = (0..12).map(|i| format!("shard-{i}")).collect();
    let names: Vec<&str> = channels.iter().map(String::as_str).collect();
    let mut sse = Sse::connect(&a, &names, None).await;
    sse.wait_raw(b"id: ").await;
    for c in &channels {
        b.publish(c, None, json!(c)).await;
    }
    let mut got = Vec::new();
    for _ in &channels {
        got.push(sse.next_json().await.1["data"].as_str().unwrap().to_owned());
    }
    got.sort();
    let mut want = channels.clone();
    want.sort();
    assert_eq!(got, want);
    // Node a receives each channel by sharded pub/sub from the shard that owns it: the
    // channels are spread over more than one shard, and every one is subscribed exactly once.
    let per_shard: Vec<Vec<String>> = cluster.nodes.iter().map(shard_channels).collect();
    let shards_used = per_shard.iter().filter(|c| !c.is_empty()).count();
    assert!(
        shards_used >= 2,
        "channels on one shard only: {per_shard:?}"
    );
    let mut subscribed: Vec<String> = per_shard.concat();
    subscribed.sort();
    let mut expected: Vec<String> = channels
        .iter()
        .map(|c| format!("herald:{{{c}}}:p"))
        .collect();
    expected.sort();
    assert_eq!(subscribed, expected);

    // Resume on the other node, and a worker entry through the cluster.
    let last_id = sse.decoder.last_event_id().to_owned();
    drop(sse);
    // The last subscriber left: node a unsubscribes every channel from its shard.
    let deadline = tokio::time::Instant::now() + WAIT;
    while cluster.nodes.iter().any(|b| !shard_channels(b).is_empty()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "shard channels still subscribed after the last subscriber left"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.publish("shard-3", None, json!("missed")).await;
    let mut sse = Sse::connect(&b, &names, Some(&last_id)).await;
    assert_eq!(sse.next_json().await.1["data"], "missed");
    let out = std::process::Command::new("redis-cli")
        .args(["-c", "-p", &cluster.nodes[0].port.to_string()])
        .args([
            "XADD",
            "herald:ingest",
            "*",
            "channel",
            "shard-7",
            "data",
            "\"from a worker\"",
        ])
        .output()
        .expect("redis-cli");
    assert!(out.status.success());
    let (_, v) = sse.next_json().await;
    assert_eq!(v["data"], "from a worker");
    assert_eq!(v["channel"], "shard-7");
    assert_eq!(v["offset"], 2);
}

/// `herald serve --engine KIND --engine-url URL` on one node and `HERALD_ENGINE__KIND` /
/// `HERALD_ENGINE__URL` on another, with no configuration file: both join the same engine.
async fn engine_chosen_by_flags_or_environment(kind: Kind) {
    let Some(backend) = Backend::start(kind) else {
        return;
    };
    let name = match kind {
        Kind::Redis => "redis",
        Kind::Nats => "nats",
    };
    let url = backend.url();
    let a = TestServer::start_with(
        "",
        "127.0.0.1:0",
        &["--engine", name, "--engine-url", &url],
        &[],
    )
    .await;
    let b = TestServer::start_with(
        "",
        "127.0.0.1:0",
        &[],
        &[("HERALD_ENGINE__KIND", name), ("HERALD_ENGINE__URL", &url)],
    )
    .await;
    for node in [&a, &b] {
        // Readiness follows the canary, which a loaded machine can delay: wait for it.
        wait_get(node, "/health/ready", "the node ready", |s, _| s == 200).await;
        let stats = node.stats().await;
        assert_eq!(stats["engine"]["kind"], name, "{stats}");
    }
    let mut ws = ws_subscribe(&b, "news", None).await;
    a.publish("news", None, json!("through the engine")).await;
    assert_eq!(ws.next_push().await["data"], "through the engine");

    if kind == Kind::Redis {
        // Node b subscribes to a channel at the engine while it has subscribers, and
        // unsubscribes when the last one leaves.
        let subscribed = || backend.redis_cli(&["PUBSUB", "CHANNELS", "herald:{*"]);
        assert!(subscribed().contains("herald:{news}:p"), "{}", subscribed());
        drop(ws);
        let deadline = tokio::time::Instant::now() + WAIT;
        while subscribed().contains("herald:{news}:p") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "still subscribed after the last subscriber left"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test]
async fn redis_engine_chosen_by_flags_or_environment() {
    engine_chosen_by_flags_or_environment(Kind::Redis).await;
}

#[tokio::test]
async fn nats_engine_chosen_by_flags_or_environment() {
    engine_chosen_by_flags_or_environment(Kind::Nats).await;
}

/// A Redis Cluster primary dies and its replica takes over: the nodes find the new owner of
/// the channel's slot, re-establish their sharded subscriptions there, and subscribers get
/// every publication accepted before and after, or an explicit reset — none silently lost.
#[tokio::test]
async fn redis_cluster_failover_keeps_subscribers_receiving() {
    let Some(mut cluster) = common::backends::RedisCluster::start_with_replicas(1) else {
        return;
    };
    let config = format!(
        "[sse]\nretry = \"200ms\"\n[engine]\nkind = \"redis\"\nurl = \"{}\"\n[channels.defaults]\nhistory_size = 1000\n",
        cluster.url()
    );
    // A channel whose slot is served by a primary other than the node in the URL.
    let (channel, owner) = (0..100)
        .map(|i| format!("failover-{i}"))
        .map(|c| {
            let owner = cluster.primary_of(&format!("{{{c}}}"));
            (c, owner)
        })
        .find(|(_, owner)| *owner != 0)
        .expect("a channel on another shard");
    let a = started(&config).await;
    let b = started(&config).await;
    let mut sse = Sse::connect(&a, &[&channel], None).await;
    sse.wait_raw(b"id: ").await;
    let mut ws = ws_subscribe(&b, &channel, None).await;

    let mut accepted = Vec::new();
    let mut seq = 0u64;
    for _ in 0..10 {
        seq += 1;
        b.publish(&channel, None, json!(seq)).await;
        accepted.push(seq);
    }
    cluster.nodes[owner].kill();
    // Publish until the replica took over, the nodes found it and they accept again.
    let deadline = tokio::time::Instant::now() + WAIT * 3;
    let mut after = 0;
    while after < 10 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishing never resumed after the failover"
        );
        seq += 1;
        let (status, body) = b
            .post(
                "/api/publish",
                &json!({"channel": channel, "data": seq}).to_string(),
            )
            .await;
        if status == 200 {
            accepted.push(seq);
            after += 1;
        } else {
            assert_eq!(status, 503, "{body}");
            assert_eq!(body["error"]["code"], "unavailable", "{body}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    assert_ne!(
        cluster.primary_of(&format!("{{{channel}}}")),
        owner,
        "the replica was promoted"
    );
    let last = *accepted.last().unwrap();
    let sse_seen = sse_seen_until(&mut sse, last).await;
    let ws_seen = ws_seen_until(&mut ws, last).await;
    assert_eq!(
        silent_losses(&accepted, &sse_seen),
        Vec::<u64>::new(),
        "SSE saw {sse_seen:?}"
    );
    assert_eq!(
        silent_losses(&accepted, &ws_seen),
        Vec::<u64>::new(),
        "WS saw {ws_seen:?}"
    );
}
