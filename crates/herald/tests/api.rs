//! The HTTP API against a real server: publish, broadcast, batch, history, channels, stats,
//! health, and the documented error for every kind of bad input.

mod common;

use common::{Sse, TestServer, Ws};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[channels.namespaces.small]
history_size = 5
"#;

/// The offsets of a history reply's publications.
fn offsets(history: &Value) -> Vec<u64> {
    history["publications"]
        .as_array()
        .expect("publications")
        .iter()
        .map(|p| p["offset"].as_u64().expect("offset"))
        .collect()
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<none>")
}

#[tokio::test]
async fn publish_broadcast_and_batch_deliver_in_order() {
    let server = TestServer::start(CONFIG).await;
    let mut sse = Sse::connect(&server, &["x", "y"], None).await;
    let mut ws = Ws::connect(&server).await;
    ws.request(json!({"op": "subscribe", "channel": "z"})).await;

    let (status, v) = server
        .post(
            "/api/broadcast",
            r#"{"channels":["x","y","z"],"event":"note","data":{"n":1}}"#,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let results = v["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert!(results.iter().all(|r| r["offset"] == 1));
    for want in ["x", "y"] {
        let (ev, d) = sse.next_json().await;
        assert_eq!((ev.as_str(), d["channel"].as_str()), ("note", Some(want)));
    }
    assert_eq!(ws.next_push().await["event"], "note");

    let commands: Vec<Value> = (1..=20)
        .map(|i| json!({"channel": "z", "data": i}))
        .collect();
    let (status, v) = server
        .post("/api/batch", &json!({"commands": commands}).to_string())
        .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"].as_array().unwrap().len(), 20);
    for i in 1..=20 {
        let p = ws.next_push().await;
        assert_eq!(p["data"], i);
        assert_eq!(p["offset"], i + 1);
    }
}

#[tokio::test]
async fn an_idempotency_key_publishes_once_and_a_changed_body_is_a_conflict() {
    let server = TestServer::start(CONFIG).await;
    let mut sse = Sse::connect(&server, &["jobs:1"], None).await;
    let body =
        r#"{"channel":"jobs:1","event":"progress","data":{"pct":10},"idempotency_key":"job-1-10"}"#;
    let (status, first) = server.post("/api/publish", body).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first.get("duplicate"), None);
    let (status, again) = server.post("/api/publish", body).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["duplicate"], true);
    assert_eq!(
        (&again["offset"], &again["epoch"], &again["time"]),
        (&first["offset"], &first["epoch"], &first["time"])
    );
    // The same key with another body is refused; nothing is published.
    let changed =
        r#"{"channel":"jobs:1","event":"progress","data":{"pct":20},"idempotency_key":"job-1-10"}"#;
    let (status, v) = server.post("/api/publish", changed).await;
    assert_eq!((status, code(&v)), (409, "conflict"), "{v}");
    // In a batch, each command has its own key; a repeat answers with its first position.
    let batch = json!({"commands": [
        {"channel": "jobs:1", "event": "progress", "data": {"pct": 10}, "idempotency_key": "job-1-10"},
        {"channel": "jobs:1", "event": "progress", "data": {"pct": 50}, "idempotency_key": "job-1-50"},
    ]});
    let (status, v) = server.post("/api/batch", &batch.to_string()).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["results"][0]["duplicate"], true);
    assert_eq!(v["results"][0]["offset"], first["offset"]);
    assert_eq!(v["results"][1]["offset"], 2);
    // Subscribers saw each publication once.
    for want in [10, 50] {
        let (event, p) = sse.next_json().await;
        assert_eq!(
            (event.as_str(), &p["data"]["pct"]),
            ("progress", &json!(want))
        );
    }
    let (_, history) = server.get("/api/history?channel=jobs:1").await;
    assert_eq!(offsets(&history), vec![1, 2]);
    for key in [json!(""), json!("x".repeat(257)), json!("a\nb")] {
        let body = json!({"channel": "jobs:1", "data": 1, "idempotency_key": key});
        let (status, v) = server.post("/api/publish", &body.to_string()).await;
        assert_eq!((status, code(&v)), (422, "bad_request"), "{v}");
    }
}

#[tokio::test]
async fn a_batch_with_one_bad_command_applies_nothing() {
    let server = TestServer::start(CONFIG).await;
    let body = json!({"commands": [
        {"channel": "ok", "data": 1},
        {"channel": "not ok", "data": 2},
    ]});
    let (status, v) = server.post("/api/batch", &body.to_string()).await;
    assert_eq!((status, code(&v)), (422, "bad_channel"));
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("commands[1]"));
    let (_, h) = server.get("/api/history?channel=ok").await;
    assert_eq!(h["publications"], json!([]));
}

#[tokio::test]
async fn history_channels_stats_and_health() {
    let server = TestServer::start(CONFIG).await;
    let mut epoch = String::new();
    for i in 1..=8 {
        epoch = server.publish("small:h", None, json!(i)).await["epoch"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    let (status, h) = server.get("/api/history?channel=small:h").await;
    assert_eq!(status, 200);
    let offs = offsets(&h);
    assert_eq!(
        offs,
        [4, 5, 6, 7, 8],
        "history keeps the newest history_size"
    );
    assert_eq!(h["position"]["offset"], 8);
    let (_, h) = server
        .get(&format!(
            "/api/history?channel=small:h&since={epoch}-5&limit=2"
        ))
        .await;
    let offs = offsets(&h);
    assert_eq!(offs, [6, 7]);
    assert_eq!(h["reset"], Value::Null);
    let (_, h) = server
        .get(&format!("/api/history?channel=small:h&since={epoch}-1"))
        .await;
    assert_eq!(h["reset"], "beyond_retention");

    let _sse = Sse::connect(&server, &["small:h", "other"], None).await;
    let mut ws = Ws::connect(&server).await;
    ws.request(json!({"op": "subscribe", "channel": "other"}))
        .await;
    let (status, c) = server.get("/api/channels").await;
    assert_eq!(status, 200);
    assert_eq!(c["total"], 2);
    assert_eq!(
        c["channels"],
        json!([{"channel": "other", "subscribers": 2}, {"channel": "small:h", "subscribers": 1}])
    );
    let s = server.stats().await;
    assert_eq!(s["connections"]["sse"], 1);
    assert_eq!(s["connections"]["ws"], 1);
    assert_eq!(s["connections"]["total"], 2);
    assert_eq!(s["channels"], 2);
    assert_eq!(s["subscriptions"], 3);
    assert_eq!(s["publications"], 8);
    assert!(s["memory"]["rss_bytes"].as_u64().unwrap() > 1_000_000);
    assert!(s["uptime_seconds"].is_u64());
    assert!(s["deliveries"].is_u64());
    let hello = ws.hello.as_ref().expect("the WebSocket's hello was read");
    assert!(s["node"].as_str().is_some_and(|n| !n.is_empty()));
    assert_eq!(
        s["node"], hello["node"],
        "stats name the node the hello names"
    );

    assert_eq!(server.get("/health/live").await.0, 200);
    let (status, r) = server.get("/health/ready").await;
    assert_eq!((status, r["status"].as_str()), (200, Some("ready")));
}

#[tokio::test]
async fn every_bad_input_gets_its_documented_error_and_the_server_stays_healthy() {
    let server = TestServer::start(CONFIG).await;
    let cases: &[(&str, &str, u16, &str)] = &[
        ("/api/publish", r#"{"channel":"a","data":"#, 400, "bad_json"),
        ("/api/publish", "{{{{", 400, "bad_json"),
        ("/api/publish", "", 400, "bad_json"),
        ("/api/publish", r#"{"channel":"a"}"#, 422, "bad_request"),
        (
            "/api/publish",
            r#"{"channel":5,"data":1}"#,
            422,
            "bad_request",
        ),
        (
            "/api/publish",
            r#"{"channel":"a","data":1,"colour":"red"}"#,
            422,
            "bad_request",
        ),
        (
            "/api/publish",
            r#"{"channel":"","data":1}"#,
            422,
            "bad_channel",
        ),
        (
            "/api/publish",
            r#"{"channel":"a b","data":1}"#,
            422,
            "bad_channel",
        ),
        (
            "/api/publish",
            r#"{"channel":"a","event":"bad\nevent","data":1}"#,
            422,
            "bad_event",
        ),
        (
            "/api/publish",
            r#"{"channel":"a","event":"herald.reset","data":1}"#,
            422,
            "bad_event",
        ),
        (
            "/api/broadcast",
            r#"{"channels":[],"data":1}"#,
            422,
            "bad_request",
        ),
        ("/api/batch", r#"{"commands":[]}"#, 422, "bad_request"),
        ("/api/disconnect", r#"{}"#, 422, "bad_request"),
        (
            "/api/disconnect",
            r#"{"conn_id":"xyz"}"#,
            422,
            "bad_request",
        ),
    ];
    for (path, body, status, want) in cases {
        let (got, v) = server.post(path, body).await;
        assert_eq!((got, code(&v)), (*status, *want), "{path} {body} -> {v}");
    }
    let long = format!(r#"{{"channel":"{}","data":1}}"#, "c".repeat(300));
    let (status, v) = server.post("/api/publish", &long).await;
    assert_eq!((status, code(&v)), (422, "bad_channel"));

    // Oversized payload (over publish.max_data) and oversized body (over server.max_body).
    let big = json!({"channel": "a", "data": "x".repeat(70 * 1024)}).to_string();
    let (status, v) = server.post("/api/publish", &big).await;
    assert_eq!((status, code(&v)), (413, "too_large"));
    let huge = json!({"channel": "a", "data": "x".repeat(2 * 1024 * 1024)}).to_string();
    // On its own connection: the server answers before reading the whole body and closes the
    // connection, which a pooled client could otherwise pick up again for the next request.
    let resp = reqwest::Client::new()
        .post(format!("{}/api/publish", server.url))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let v: Value = resp.json().await.unwrap();
    assert_eq!((status, code(&v)), (413, "too_large"));

    // Invalid UTF-8, wrong content type, unknown route, wrong method, bad query parameters.
    let resp = server
        .http
        .post(format!("{}/api/publish", server.url))
        .header("content-type", "application/json")
        .body(vec![b'{', 0xff, 0xfe, b'}'])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let resp = server
        .http
        .post(format!("{}/api/publish", server.url))
        .header("content-type", "text/plain")
        .body(r#"{"channel":"a","data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 415);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(code(&v), "unsupported_media_type");
    let (status, v) = server.get("/api/nothing-here").await;
    assert_eq!((status, code(&v)), (404, "not_found"));
    let (status, v) = server.get("/api/publish").await;
    assert_eq!((status, code(&v)), (405, "method_not_allowed"));
    for q in [
        "/api/history",
        "/api/history?channel=a&limit=-1",
        "/api/history?channel=a&limit=0",
        "/api/history?channel=a&limit=99999999999999999999999",
        "/api/history?channel=a&colour=red",
        "/api/history?channel=a&channel=b",
    ] {
        let (status, v) = server.get(q).await;
        assert_eq!((status, code(&v)), (400, "bad_request"), "{q}");
    }
    for q in [
        "/api/history?channel=a&since=-1",
        "/api/history?channel=a&since=ab-99999999999999999999",
    ] {
        let (status, v) = server.get(q).await;
        assert_eq!((status, code(&v)), (400, "bad_position"), "{q}");
    }

    // Numbers beyond a 64-bit float would break subscribers: refused. Long integers that fit
    // are kept as published.
    let (status, v) = server
        .post("/api/publish", r#"{"channel":"nums","data":{"n":1e400}}"#)
        .await;
    assert_eq!((status, code(&v)), (422, "bad_request"));
    let (status, _) = server
        .post(
            "/api/publish",
            r#"{"channel":"nums","data":{"m":-123456789012345678901234567890}}"#,
        )
        .await;
    assert_eq!(status, 200);
    let (_, h) = server.get("/api/history?channel=nums").await;
    assert_eq!(h["publications"].as_array().unwrap().len(), 1);
    assert!(h["publications"][0]["data"]["m"].is_number());

    assert_eq!(server.get("/health/live").await.0, 200);
    assert_eq!(server.get("/health/ready").await.0, 200);
}

#[tokio::test]
async fn disconnect_by_connection_id_and_by_channel() {
    let server = TestServer::start(CONFIG).await;
    let mut ws = Ws::connect(&server).await;
    ws.request(json!({"op": "subscribe", "channel": "chat:a"}))
        .await;
    let (_, v) = server
        .post(
            "/api/disconnect",
            r#"{"channel":"chat:a","reconnect":false}"#,
        )
        .await;
    assert_eq!(v["disconnected"], 1);
    assert_eq!(ws.close_code().await, Some(4503));

    let (status, v) = server
        .post("/api/disconnect", r#"{"conn_id":"0123456789abcdef"}"#)
        .await;
    assert_eq!((status, &v["disconnected"]), (200, &json!(0)));
}

#[tokio::test]
async fn the_browser_client_is_served_with_a_validator() {
    let server = TestServer::start("").await;
    let url = format!("{}/sdk/herald.js", server.url);
    let resp = server.http.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(h["cache-control"], "public, max-age=300");
    let etag = h["etag"].to_str().unwrap().to_owned();
    let body = resp.text().await.unwrap();
    assert!(body.contains("HeraldClient"), "the SDK bundle");
    assert_eq!(
        body,
        include_str!("../../herald-server/assets/herald.js"),
        "the committed bundle"
    );
    let again = server
        .http
        .get(&url)
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.text().await.unwrap().is_empty());
}

const CONN_SECRET: &str = "connections-api-secret-0123456789abcdef";

fn token_of(user: &str) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &json!({"sub": user, "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(CONN_SECRET.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn a_user_s_connections_are_listed_and_disconnected_together() {
    let server = TestServer::start(&format!(
        "[auth.token]\nhmac_secrets = [\"{CONN_SECRET}\"]\n[channels.defaults]\nsubscribe = \"public\"\n"
    ))
    .await;
    // Alice: a WebSocket with her token on the upgrade, and one that authenticates later.
    let mut a1 = Ws::connect_url(&format!("{}?token={}", server.ws_url(), token_of("alice"))).await;
    let mut a2 = Ws::connect(&server).await;
    let r = a2
        .request(json!({"op": "auth", "token": token_of("alice")}))
        .await;
    assert_eq!(r["result"]["user"], "alice", "{r}");
    let mut bob = Ws::connect_url(&format!("{}?token={}", server.ws_url(), token_of("bob"))).await;
    let mut anon = Ws::connect(&server).await;

    let (status, body) = server.get("/api/connections?user=alice").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["total"], 2);
    let listed: Vec<&str> = body["connections"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["alice", "alice"]);
    let (_, all) = server.get("/api/connections").await;
    assert_eq!(all["total"], 4);
    let (status, _) = server.get("/api/connections?user=").await;
    assert_eq!(status, 400);

    let (status, body) = server
        .post("/api/disconnect", r#"{"user":"alice","reconnect":false}"#)
        .await;
    assert_eq!((status, body["disconnected"].clone()), (200, json!(2)));
    assert_eq!(a1.close_code().await, Some(4503));
    assert_eq!(a2.close_code().await, Some(4503));
    // The others stay.
    for ws in [&mut bob, &mut anon] {
        let r = ws.request(json!({"op": "ping"})).await;
        assert!(r.get("result").is_some(), "{r}");
    }
    // A closed connection leaves the registry when its task ends, just after its close frame.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let (_, left) = server.get("/api/connections?user=alice").await;
        if left["total"] == 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{left}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
