//! Slow consumers: a client that stops reading is evicted (WS close 4001, SSE stream end)
//! while other subscribers keep receiving everything, the server's memory stays bounded, and
//! the evicted client recovers by resuming.

mod common;

use common::{within, TestServer, Ws, WAIT};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = r#"
[connection]
outbox_messages = 256
outbox_bytes = "2MiB"

[server]
write_timeout = "2s"

[channels.defaults]
history_size = 100

[channels.namespaces.keep]
history_size = 20000
"#;

const PAYLOAD_BYTES: usize = 8 * 1024;
const BATCH: usize = 100;

fn rss(stats: &Value) -> u64 {
    stats["memory"]["rss_bytes"].as_u64().expect("rss")
}

/// Publishes `batches` batches of `BATCH` messages to `channel`, waiting after each batch
/// until the fast reader has received it, so only the slow clients fall behind.
async fn publish_in_step(server: &TestServer, fast: &mut Ws, channel: &str, batches: usize) -> u64 {
    let pad = "p".repeat(PAYLOAD_BYTES);
    let mut next = 1u64;
    for _ in 0..batches {
        let commands: Vec<Value> = (0..BATCH)
            .map(|i| json!({"channel": channel, "data": {"i": next + i as u64, "pad": pad}}))
            .collect();
        let (status, v) = server
            .post("/api/batch", &json!({"commands": commands}).to_string())
            .await;
        assert_eq!(status, 200, "{v}");
        for _ in 0..BATCH {
            let p = fast.next_push().await;
            assert_eq!(
                p["data"]["i"], next,
                "the fast reader got every message in order"
            );
            next += 1;
        }
    }
    next - 1
}

/// A reader of channel `flood`, and a WebSocket and a raw-TCP SSE subscriber of it that never
/// read again.
async fn fast_and_two_that_never_read(server: &TestServer) -> (Ws, Ws, tokio::net::TcpStream) {
    let mut fast = Ws::connect(server).await;
    fast.request(json!({"op": "subscribe", "channel": "flood"}))
        .await;
    let mut ws = Ws::connect(server).await;
    ws.request(json!({"op": "subscribe", "channel": "flood"}))
        .await;
    let mut sse = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    sse.write_all(
        format!(
            "GET /sse?channel=flood HTTP/1.1\r\nHost: {}\r\n\r\n",
            server.addr()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    server
        .wait_stats("three subscriptions", |s| s["subscriptions"] == 3)
        .await;
    (fast, ws, sse)
}

#[tokio::test]
async fn a_client_that_never_reads_is_evicted_and_others_keep_receiving_with_bounded_memory() {
    let server = TestServer::start(CONFIG).await;
    // A WebSocket client and an SSE client that subscribe and then never read again.
    let (mut fast, mut slow_ws, slow_sse) = fast_and_two_that_never_read(&server).await;
    let before = rss(&server.stats().await);

    // 100 batches x 100 messages x 8 KiB = about 80 MB through the node.
    let total = publish_in_step(&server, &mut fast, "flood", 100).await;
    assert_eq!(total, 10_000);

    let stats = server
        .wait_stats("both slow clients evicted", |s| {
            s["slow_consumer_evictions"].as_u64() >= Some(2)
        })
        .await;
    assert_eq!(
        stats["subscriptions"], 1,
        "only the fast reader is left: {stats}"
    );
    // The same counter in /metrics.
    server
        .wait_metrics(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("herald_slow_consumer_evictions_total "))
                .and_then(|v| v.parse::<u64>().ok())
                >= Some(2)
        })
        .await;
    let grown = rss(&stats).saturating_sub(before);
    assert!(
        grown < 40 * 1024 * 1024,
        "server memory grew by {grown} bytes while 80 MB went to a client that never read"
    );

    // The evicted WebSocket client, once it reads, finds a close frame with a reconnect code.
    let code = within(WAIT, async {
        loop {
            match slow_ws.inner.next().await {
                Some(Ok(Message::Close(f))) => return f.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return None,
            }
        }
    })
    .await;
    // Either the close frame got through (4001), or the write timeout cut the socket first.
    assert!(matches!(code, Some(4001) | None), "{code:?}");
    drop(slow_sse);
    assert_eq!(server.get("/health/live").await.0, 200);
}

#[tokio::test]
async fn an_evicted_client_recovers_everything_by_resuming() {
    let server = TestServer::start(CONFIG).await;
    let mut fast = Ws::connect(&server).await;
    fast.request(json!({"op": "subscribe", "channel": "keep:log"}))
        .await;
    let mut slow = Ws::connect(&server).await;
    let reply = slow
        .request(json!({"op": "subscribe", "channel": "keep:log"}))
        .await;
    let epoch = reply["result"]["position"]["epoch"]
        .as_str()
        .unwrap()
        .to_owned();

    let total = publish_in_step(&server, &mut fast, "keep:log", 60).await;
    server
        .wait_stats("the slow client evicted", |s| {
            s["slow_consumer_evictions"].as_u64() >= Some(1)
        })
        .await;

    // Read what the slow client did get before its close, remembering the last offset.
    let mut last = 0u64;
    within(WAIT, async {
        loop {
            match slow.inner.next().await {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(&t).unwrap();
                    if let Some(o) = v["offset"].as_u64() {
                        assert_eq!(o, last + 1, "in order, no gap before eviction");
                        last = o;
                    }
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return,
            }
        }
    })
    .await;
    assert!(last < total, "the slow client was evicted before the end");

    let mut again = Ws::connect(&server).await;
    let reply = again
        .request(json!({"op": "subscribe", "channel": "keep:log", "since": {"epoch": epoch, "offset": last}}))
        .await;
    assert_eq!(reply["result"]["recovered"], true, "{reply}");
    for want in last + 1..=total {
        let p = again.next_push().await;
        assert_eq!(p["offset"].as_u64(), Some(want));
    }
}

/// A client that stops reading while its lag is still inside the ring's bound is not evicted;
/// once its socket has taken nothing for `server.write_timeout`, the node drops it (no close
/// frame can get through a full socket) and counts it in `write_timeouts`, so the operator
/// sees what the client sees as a dropped connection.
#[tokio::test]
async fn a_socket_that_takes_nothing_is_dropped_by_the_write_timeout_and_counted() {
    let server = TestServer::start(
        r#"
[connection]
outbox_messages = 100000
outbox_bytes = "512MiB"

[server]
write_timeout = "1s"

[channels.defaults]
history_size = 100
"#,
    )
    .await;
    let (mut fast, stuck_ws, stuck_sse) = fast_and_two_that_never_read(&server).await;

    // 20 batches x 100 messages x 8 KiB = about 16 MB: far more than the stuck sockets'
    // buffers hold, far less than the ring's bound.
    publish_in_step(&server, &mut fast, "flood", 20).await;
    let stats = server
        .wait_stats("both stuck clients dropped by the write timeout", |s| {
            s["write_timeouts"].as_u64() >= Some(2)
        })
        .await;
    assert_eq!(stats["slow_consumer_evictions"], 0, "{stats}");
    assert_eq!(stats["subscriptions"], 1, "{stats}");
    drop((stuck_ws, stuck_sse));
    // The fast reader is unaffected.
    server.publish("flood", None, json!("after")).await;
    assert_eq!(fast.next_push().await["data"], "after");
}
