//! WebSocket end to end: subscribe, receive, client publish, history, presence, bad input,
//! heartbeats and dead-peer detection, against a real server.

mod common;

use common::{within, TestServer, Ws, WAIT};
use futures_util::SinkExt;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = r#"
[ws]
ping_interval = "200ms"
idle_timeout = "700ms"
max_message = "80KiB"

[channels.namespaces.chat]
publish = "public"
presence = true
history_size = 50
"#;

#[tokio::test]
async fn ws_subscriber_receives_http_publications() {
    let server = TestServer::start(CONFIG).await;
    let mut ws = Ws::connect(&server).await;
    let reply = ws
        .request(json!({"op": "subscribe", "channel": "jobs:1"}))
        .await;
    assert_eq!(reply["result"]["channel"], "jobs:1");
    assert_eq!(reply["result"]["position"]["offset"], 0);
    let published = server
        .publish("jobs:1", Some("job_progress"), json!({"pct": 10}))
        .await;
    let push = ws.next_push().await;
    assert_eq!(push["push"], "publication");
    assert_eq!(push["channel"], "jobs:1");
    assert_eq!(push["event"], "job_progress");
    assert_eq!(push["data"], json!({"pct": 10}));
    assert_eq!(push["offset"], 1);
    assert_eq!(push["epoch"], published["epoch"]);
    assert_eq!(reply["result"]["position"]["epoch"], published["epoch"]);

    let reply = ws
        .request(json!({"op": "unsubscribe", "channel": "jobs:1"}))
        .await;
    assert_eq!(reply["result"], json!({}));
    server.publish("jobs:1", None, json!(2)).await;
    let pong = ws.request(json!({"op": "ping"})).await;
    assert_eq!(
        pong["result"],
        json!({}),
        "no push may arrive after unsubscribe"
    );
}

#[tokio::test]
async fn client_publish_only_where_the_namespace_allows_it() {
    let server = TestServer::start(CONFIG).await;
    let mut a = Ws::connect(&server).await;
    let mut b = Ws::connect(&server).await;
    b.request(json!({"op": "subscribe", "channel": "chat:room1"}))
        .await;
    let reply = a
        .request(json!({"op": "publish", "channel": "news", "data": {"x": 1}}))
        .await;
    assert_eq!(reply["error"]["code"], "publish_forbidden");
    let reply = a
        .request(json!({"op": "publish", "channel": "chat:room1", "event": "chat", "data": {"text": "hi"}}))
        .await;
    assert_eq!(reply["result"]["offset"], 1);
    // b first sees a join push for itself (presence namespace), then the message.
    let mut push = b.next_push().await;
    if push["push"] == "join" {
        push = b.next_push().await;
    }
    assert_eq!(push["push"], "publication");
    assert_eq!(push["data"]["text"], "hi");
    let reply = a
        .request(json!({"op": "history", "channel": "chat:room1", "limit": 10}))
        .await;
    let pubs = reply["result"]["publications"].as_array().unwrap();
    assert_eq!(pubs.len(), 1);
    assert_eq!(pubs[0]["data"]["text"], "hi");
}

#[tokio::test]
async fn presence_tracks_members_with_join_and_leave_pushes() {
    let server = TestServer::start(CONFIG).await;
    let mut a = Ws::connect(&server).await;
    a.request(json!({"op": "subscribe", "channel": "chat:lobby"}))
        .await;
    let own = a.next_push().await;
    assert_eq!(own["push"], "join");
    let mut b = Ws::connect(&server).await;
    b.request(json!({"op": "subscribe", "channel": "chat:lobby"}))
        .await;
    let join = a.next_push().await;
    assert_eq!(join["push"], "join");
    assert_eq!(join["channel"], "chat:lobby");
    let b_conn = join["member"]["conn_id"].as_str().unwrap().to_owned();
    assert_eq!(join["member"]["transport"], "ws");

    let (status, body) = server.get("/api/presence?channel=chat:lobby").await;
    assert_eq!(status, 200);
    assert_eq!(body["members"].as_array().unwrap().len(), 2);
    let reply = a
        .request(json!({"op": "presence", "channel": "chat:lobby"}))
        .await;
    assert_eq!(reply["result"]["members"].as_array().unwrap().len(), 2);

    b.inner.close(None).await.unwrap();
    let leave = a.next_push().await;
    assert_eq!(leave["push"], "leave");
    assert_eq!(leave["member"]["conn_id"], b_conn.as_str());
    let (_, body) = server.get("/api/presence?channel=chat:lobby").await;
    assert_eq!(body["members"].as_array().unwrap().len(), 1);

    let reply = a
        .request(json!({"op": "presence", "channel": "news"}))
        .await;
    assert_eq!(reply["error"]["code"], "presence_disabled");
    let (status, body) = server.get("/api/presence?channel=news").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("presence_disabled"))
    );
}

#[tokio::test]
async fn bad_requests_get_error_replies_and_the_connection_survives() {
    let server = TestServer::start(CONFIG).await;
    let mut ws = Ws::connect(&server).await;
    let cases = [
        (
            r#"{"id":1,"op":"subscribe","channel":"a""#,
            json!(null),
            "bad_json",
        ),
        ("not json at all", json!(null), "bad_json"),
        (r#"{"id":2,"op":"teleport"}"#, json!(2), "unknown_op"),
        (r#"{"op":"ping"}"#, json!(null), "bad_request"),
        (
            r#"{"id":3,"op":"ping","extra":true}"#,
            json!(3),
            "bad_request",
        ),
        (r#"{"id":4,"op":"subscribe"}"#, json!(4), "bad_request"),
        (
            r#"{"id":5,"op":"subscribe","channel":42}"#,
            json!(5),
            "bad_request",
        ),
        (
            r#"{"id":6,"op":"subscribe","channel":"bad name"}"#,
            json!(6),
            "bad_channel",
        ),
        (
            r#"{"id":7,"op":"unsubscribe","channel":"never"}"#,
            json!(7),
            "not_subscribed",
        ),
        (
            r#"{"id":8,"op":"subscribe","channel":"a","since":{"epoch":"x","offset":-1}}"#,
            json!(8),
            "bad_position",
        ),
        (
            r#"{"id":9,"op":"subscribe","channel":"a","since":{"epoch":"x","offset":99999999999999999999999}}"#,
            json!(9),
            "bad_position",
        ),
        (
            r#"{"id":10,"op":"subscribe","channel":"a","since":{"epoch":"NOT VALID","offset":1}}"#,
            json!(10),
            "bad_position",
        ),
        (
            r#"{"id":11,"op":"publish","channel":"chat:x","event":"herald.reset","data":1}"#,
            json!(11),
            "bad_event",
        ),
        (
            r#"{"id":99999999999999999999999,"op":"ping"}"#,
            json!(null),
            "bad_request",
        ),
    ];
    for (frame, id, code) in cases {
        ws.send_text(frame).await;
        let reply = ws.next_json().await;
        assert_eq!(reply["id"], id, "{frame} -> {reply}");
        assert_eq!(reply["error"]["code"], code, "{frame} -> {reply}");
    }
    let big = "x".repeat(70 * 1024);
    let reply = ws
        .request(json!({"op": "publish", "channel": "chat:x", "data": big}))
        .await;
    assert_eq!(reply["error"]["code"], "too_large");
    ws.request(json!({"op": "subscribe", "channel": "a"})).await;
    let again = ws.request(json!({"op": "subscribe", "channel": "a"})).await;
    assert_eq!(again["error"]["code"], "already_subscribed");
    let pong = ws.request(json!({"op": "ping"})).await;
    assert_eq!(pong["result"], json!({}));
}

#[tokio::test]
async fn binary_and_oversized_frames_close_with_terminal_codes() {
    let server = TestServer::start(CONFIG).await;
    let mut ws = Ws::connect(&server).await;
    ws.inner
        .send(Message::Binary(vec![1, 2, 3].into()))
        .await
        .unwrap();
    assert_eq!(ws.close_code().await, Some(4500));

    let mut ws = Ws::connect(&server).await;
    let huge = format!(
        r#"{{"id":1,"op":"ping","pad":"{}"}}"#,
        "y".repeat(200 * 1024)
    );
    let _ = ws.inner.send(Message::Text(huge.into())).await;
    assert_eq!(ws.close_code().await, Some(4501));

    let (status, _) = server.get("/health/live").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn live_peer_answering_pings_stays_connected() {
    let server = TestServer::start(CONFIG).await;
    let mut ws = Ws::connect(&server).await;
    assert_eq!(ws.next_json_raw().await["push"], "connected");
    // tungstenite answers pings while we read; wait for several ping intervals' worth.
    let mut pings = 0;
    while pings < 5 {
        match within(WAIT, futures_util::StreamExt::next(&mut ws.inner)).await {
            Some(Ok(Message::Ping(_))) => pings += 1,
            other => panic!("expected pings, got {other:?}"),
        }
    }
    let pong = ws.request(json!({"op": "ping"})).await;
    assert_eq!(pong["result"], json!({}));
}

/// A raw client that completes the handshake and then never answers anything.
#[tokio::test]
async fn silent_peer_is_pinged_then_closed_with_heartbeat_timeout() {
    let server = TestServer::start(CONFIG).await;
    let mut tcp = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let req = format!(
        "GET /ws HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        server.addr()
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    // Read the handshake response, then frames until the server's close frame.
    let (opcodes, close_code) = within(WAIT, async {
        loop {
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed without a close frame");
            buf.extend_from_slice(&chunk[..n]);
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                assert!(buf.starts_with(b"HTTP/1.1 101"));
                buf.drain(..end + 4);
                break;
            }
        }
        let mut opcodes = Vec::new();
        loop {
            while buf.len() >= 2 {
                let op = buf[0] & 0x0f;
                let len = usize::from(buf[1] & 0x7f);
                assert!(len < 126, "small control frames expected");
                if buf.len() < 2 + len {
                    break;
                }
                let payload: Vec<u8> = buf[2..2 + len].to_vec();
                buf.drain(..2 + len);
                opcodes.push(op);
                if op == 0x8 {
                    return (opcodes, u16::from_be_bytes([payload[0], payload[1]]));
                }
            }
            let n = tcp.read(&mut chunk).await.unwrap();
            assert!(n > 0, "server closed without a close frame");
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await;
    assert!(
        opcodes.contains(&0x9),
        "the server pinged first: {opcodes:?}"
    );
    assert_eq!(close_code, 4002);
}

#[tokio::test]
async fn a_client_close_is_answered_with_a_close_frame() {
    let server = TestServer::start(CONFIG).await;
    let mut ws = Ws::connect(&server).await;
    assert_eq!(ws.next_json_raw().await["push"], "connected");
    ws.inner.close(None).await.unwrap();
    let answer = within(WAIT, futures_util::StreamExt::next(&mut ws.inner)).await;
    assert!(
        matches!(answer, Some(Ok(Message::Close(_))) | None),
        "expected the server's close reply, got {answer:?}"
    );
    let pong_from_server = server.get("/health/live").await.0;
    assert_eq!(pong_from_server, 200);
}

#[tokio::test]
async fn a_counts_channel_sends_totals_not_members_and_a_capped_one_refuses_the_extra() {
    let server = TestServer::start(
        r#"
[channels]
presence_counts_interval = "150ms"

[channels.namespaces.hall]
presence = "counts"
max_subscribers = 2
"#,
    )
    .await;
    let mut first = Ws::connect(&server).await;
    let r = first
        .request(json!({"op": "subscribe", "channel": "hall:main"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let totals = first.next_push().await;
    assert_eq!(
        totals,
        json!({"push": "counts", "channel": "hall:main", "connections": 1, "users": 0, "anonymous": 1})
    );
    let mut sse = common::Sse::connect(&server, &["hall:main"], None).await;
    let e = loop {
        let e = sse.next().await.expect("an event");
        if e.event == "herald.counts" {
            break e;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(v["connections"], 2, "{v}");
    let next = first.next_push().await;
    assert_eq!(
        (next["push"].clone(), next["connections"].clone()),
        (json!("counts"), json!(2)),
        "totals, never a join: {next}"
    );
    let r = first
        .request(json!({"op": "presence", "channel": "hall:main"}))
        .await;
    assert_eq!(
        r["result"],
        json!({"channel": "hall:main", "connections": 2, "users": 0, "anonymous": 2})
    );
    // The third is refused, over both transports.
    let (status, body) = server.get("/sse?channel=hall:main").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (403, json!("channel_full")),
        "{body}"
    );
    let mut third = Ws::connect(&server).await;
    let r = third
        .request(json!({"op": "subscribe", "channel": "hall:main"}))
        .await;
    assert_eq!(r["error"]["code"], "channel_full", "{r}");
    assert_eq!(server.stats().await["refused"]["channel_full"], 2);
}
