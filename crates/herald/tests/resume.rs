//! Continuity: a client that resumes gets exactly what it missed, in order, then the live
//! stream with no gap; where that is impossible it gets an explicit reset. SSE and WebSocket.

mod common;

use common::{Sse, TestServer, Ws};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[sse]
retry = "500ms"

[channels.defaults]
history_size = 1000

[channels.namespaces.short]
history_size = 3

[channels.namespaces.state]
latest_state = true
history_size = 0
"#;

fn offset(v: &Value) -> u64 {
    v["offset"].as_u64().expect("offset")
}

#[tokio::test]
async fn sse_resume_replays_exactly_the_missed_messages_on_every_channel_then_goes_live() {
    let server = TestServer::start(CONFIG).await;
    let mut sse = Sse::connect(&server, &["a", "b"], None).await;
    server.publish("a", None, json!("a1")).await;
    server.publish("b", None, json!("b1")).await;
    sse.next_json().await;
    sse.next_json().await;
    let last_id = sse.decoder.last_event_id().to_owned();
    drop(sse);
    server
        .wait_stats("the SSE connection gone", |s| s["connections"]["sse"] == 0)
        .await;

    for i in 2..=6 {
        server.publish("a", None, json!(format!("a{i}"))).await;
    }
    for i in 2..=4 {
        server.publish("b", None, json!(format!("b{i}"))).await;
    }
    let mut sse = Sse::connect(&server, &["a", "b"], Some(&last_id)).await;
    let mut got = Vec::new();
    for _ in 0..8 {
        let (_, v) = sse.next_json().await;
        got.push(v["data"].as_str().unwrap().to_owned());
    }
    assert_eq!(got, ["a2", "a3", "a4", "a5", "a6", "b2", "b3", "b4"]);
    server.publish("b", None, json!("b5")).await;
    let (_, v) = sse.next_json().await;
    assert_eq!(v["data"], "b5");
    assert_eq!(offset(&v), 5);
    let stats = server.stats().await;
    assert_eq!(stats["resumes"], 2);
    assert_eq!(stats["resets"], 0);
}

#[tokio::test]
async fn sse_resume_works_from_the_query_parameter_and_before_any_event() {
    let server = TestServer::start(CONFIG).await;
    // The first block carries the starting position, so even a client that received no event
    // resumes without loss.
    let mut sse = Sse::connect(&server, &["q"], None).await;
    sse.wait_raw(b"id: ").await;
    let start = sse.decoder.last_event_id().to_owned();
    assert!(start.ends_with("-0"), "{start}");
    drop(sse);
    server.publish("q", None, json!(1)).await;
    server.publish("q", None, json!(2)).await;
    let resp = server
        .http
        .get(format!("{}/sse?channel=q&lastEventId={start}", server.url))
        .send()
        .await
        .unwrap();
    let mut sse = Sse::from_response(resp);
    assert_eq!(sse.next_json().await.1["data"], 1);
    assert_eq!(sse.next_json().await.1["data"], 2);
}

#[tokio::test]
async fn sse_resume_beyond_retention_gets_a_reset_then_live_and_resumes_cleanly_after() {
    let server = TestServer::start(CONFIG).await;
    let mut sse = Sse::connect(&server, &["short:x", "a"], None).await;
    sse.wait_raw(b"id: ").await;
    let last_id = sse.decoder.last_event_id().to_owned();
    drop(sse);
    for i in 1..=10 {
        server.publish("short:x", None, json!(i)).await;
    }
    server.publish("a", None, json!("kept")).await;
    let mut sse = Sse::connect(&server, &["short:x", "a"], Some(&last_id)).await;
    let (event, reset) = sse.next_json().await;
    assert_eq!(event, "herald.reset");
    assert_eq!(reset["reason"], "beyond_retention");
    assert_eq!(reset["channels"][0]["channel"], "short:x");
    assert_eq!(reset["channels"][0]["position"]["offset"], 10);
    let (_, v) = sse.next_json().await;
    assert_eq!(v["data"], "kept", "the other channel still recovered");
    server.publish("short:x", None, json!(11)).await;
    let (_, v) = sse.next_json().await;
    assert_eq!(v["data"], 11);

    let last_id = sse.decoder.last_event_id().to_owned();
    drop(sse);
    server.publish("short:x", None, json!(12)).await;
    let mut sse = Sse::connect(&server, &["short:x", "a"], Some(&last_id)).await;
    let (event, v) = sse.next_json().await;
    assert_eq!((event.as_str(), &v["data"]), ("message", &json!(12)));
}

#[tokio::test]
async fn sse_resume_with_an_unknown_epoch_gets_an_epoch_reset() {
    let server = TestServer::start(CONFIG).await;
    server.publish("e", None, json!(1)).await;
    let mut sse = Sse::connect(&server, &["e"], Some("zzzz-5")).await;
    let (event, reset) = sse.next_json().await;
    assert_eq!(event, "herald.reset");
    assert_eq!(reset["reason"], "epoch_changed");
    assert_eq!(reset["channels"][0]["position"]["offset"], 1);
    server.publish("e", None, json!(2)).await;
    assert_eq!(sse.next_json().await.1["data"], 2);
}

#[tokio::test]
async fn ws_resume_replays_exactly_what_was_missed_then_goes_live() {
    let server = TestServer::start(CONFIG).await;
    let first = server.publish("w", None, json!(1)).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    for i in 2..=7 {
        server.publish("w", None, json!(i)).await;
    }
    let mut ws = Ws::connect(&server).await;
    let reply = ws
        .request(json!({"op": "subscribe", "channel": "w", "since": {"epoch": epoch, "offset": 3}}))
        .await;
    assert_eq!(reply["result"]["recovered"], true);
    assert_eq!(reply["result"]["position"]["offset"], 7);
    for want in 4..=7 {
        let p = ws.next_push().await;
        assert_eq!(
            (p["push"].as_str(), offset(&p)),
            (Some("publication"), want)
        );
    }
    server.publish("w", None, json!(8)).await;
    assert_eq!(offset(&ws.next_push().await), 8);
}

#[tokio::test]
async fn ws_resume_beyond_retention_gets_a_reset_push() {
    let server = TestServer::start(CONFIG).await;
    let first = server.publish("short:w", None, json!(1)).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    for i in 2..=9 {
        server.publish("short:w", None, json!(i)).await;
    }
    let mut ws = Ws::connect(&server).await;
    let reply = ws
        .request(json!({"op": "subscribe", "channel": "short:w", "since": {"epoch": epoch, "offset": 1}}))
        .await;
    assert_eq!(reply["result"]["recovered"], false);
    let reset = ws.next_push().await;
    assert_eq!(reset["push"], "reset");
    assert_eq!(reset["reason"], "beyond_retention");
    assert_eq!(reset["channels"][0]["channel"], "short:w");
    assert_eq!(reset["channels"][0]["position"]["offset"], 9);
    server.publish("short:w", None, json!(10)).await;
    assert_eq!(offset(&ws.next_push().await), 10);
}

#[tokio::test]
async fn latest_state_is_delivered_first_to_new_subscribers() {
    let server = TestServer::start(CONFIG).await;
    for i in 1..=3 {
        server
            .publish("state:viewers", Some("stats"), json!({"viewers": i}))
            .await;
    }
    let mut sse = Sse::connect(&server, &["state:viewers"], None).await;
    let (event, v) = sse.next_json().await;
    assert_eq!(
        (event.as_str(), &v["data"]["viewers"]),
        ("stats", &json!(3))
    );
    let mut ws = Ws::connect(&server).await;
    ws.request(json!({"op": "subscribe", "channel": "state:viewers"}))
        .await;
    assert_eq!(ws.next_push().await["data"]["viewers"], 3);
    server
        .publish("state:viewers", Some("stats"), json!({"viewers": 4}))
        .await;
    assert_eq!(sse.next_json().await.1["data"]["viewers"], 4);
    assert_eq!(ws.next_push().await["data"]["viewers"], 4);
}

/// A subscriber resuming while publications stream in sees every offset once, in order: the
/// hand-over from replay to live leaves no gap and no duplicate.
#[tokio::test]
async fn resume_during_a_publishing_burst_has_no_gap_and_no_duplicate() {
    let server = TestServer::start(CONFIG).await;
    let first = server.publish("burst", None, json!(1)).await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    let total = 400u64;
    let publisher = {
        let http = server.http.clone();
        let url = server.url.clone();
        tokio::spawn(async move {
            for i in 2..=total {
                let body = json!({"channel": "burst", "data": i}).to_string();
                let r = http
                    .post(format!("{url}/api/publish"))
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        })
    };
    // Join mid-burst on both transports, each resuming from the very start.
    let mut sse = Sse::connect(&server, &["burst"], Some(&format!("{epoch}-0"))).await;
    let mut ws = Ws::connect(&server).await;
    ws.request(
        json!({"op": "subscribe", "channel": "burst", "since": {"epoch": epoch, "offset": 0}}),
    )
    .await;
    for want in 1..=total {
        let (_, v) = sse.next_json().await;
        assert_eq!(offset(&v), want, "SSE");
        assert_eq!(offset(&ws.next_push().await), want, "WS");
    }
    publisher.await.unwrap();
}

/// A replay larger than one write is sent in pieces, still complete and in order.
#[tokio::test]
async fn a_long_sse_replay_arrives_complete_and_in_order() {
    let server = TestServer::start(CONFIG).await;
    let pad = "z".repeat(2048);
    let first = server
        .publish("long", None, json!({"i": 1, "pad": pad}))
        .await;
    let epoch = first["epoch"].as_str().unwrap().to_owned();
    for range in [2..=300, 301..=600] {
        let commands: Vec<Value> = range
            .map(|i| json!({"channel": "long", "data": {"i": i, "pad": pad}}))
            .collect();
        let (status, _) = server
            .post("/api/batch", &json!({"commands": commands}).to_string())
            .await;
        assert_eq!(status, 200);
    }
    let mut sse = Sse::connect(&server, &["long"], Some(&format!("{epoch}-0"))).await;
    for want in 1..=600u64 {
        let (_, v) = sse.next_json().await;
        assert_eq!(offset(&v), want);
    }
    assert!(sse
        .decoder
        .last_event_id()
        .ends_with(&format!("-{}", base36(600))));
}

fn base36(mut n: u64) -> String {
    let mut s = Vec::new();
    loop {
        let d = (n % 36) as u8;
        s.push(if d < 10 { b'0' + d } else { b'a' + d - 10 });
        n /= 36;
        if n == 0 {
            break;
        }
    }
    s.reverse();
    String::from_utf8(s).unwrap()
}
