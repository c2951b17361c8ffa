//! Graceful shutdown of a real `herald serve` on SIGTERM: WebSocket clients get a close frame in
//! the reconnect range (4000, "server shutdown"), SSE clients get a `herald.disconnect` event that
//! tells them to reconnect and then the end of their stream, and the process exits with status 0
//! well within `server.shutdown_grace`.

mod common;

use common::{within, Sse, TestServer, Ws};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::time::Instant;

/// The configured grace period.
const GRACE: Duration = Duration::from_secs(5);
/// How long a clean shutdown may take: well inside the grace period.
const PROMPT: Duration = Duration::from_secs(3);

const CONFIG: &str = "[server]\ndrain_window = \"0s\"\nshutdown_grace = \"5s\"\n";

/// Waits for the server process to exit (bounded by `PROMPT`) and checks it exited cleanly.
async fn assert_clean_exit(server: &mut TestServer, since: Instant) {
    let status = within(PROMPT, server.child.wait())
        .await
        .expect("wait for herald");
    let took = since.elapsed();
    assert!(
        status.success(),
        "herald exited with {status} after SIGTERM"
    );
    assert!(took < GRACE, "shutdown took {took:?}, grace is {GRACE:?}");
}

async fn subscribed_ws(server: &TestServer, channel: &str) -> Ws {
    let mut ws = Ws::connect(server).await;
    let reply = ws
        .request(json!({"op": "subscribe", "channel": channel}))
        .await;
    assert_eq!(reply["result"]["channel"], channel, "{reply}");
    ws
}

#[tokio::test]
async fn sigterm_closes_websockets_with_4000_ends_sse_streams_and_exits_0() {
    let mut server = TestServer::start(CONFIG).await;
    let mut ws = subscribed_ws(&server, "x").await;
    let mut sse = Sse::connect(&server, &["x"], None).await;
    server
        .wait_stats("both clients connected", |s| {
            s["connections"]["ws"] == 1 && s["connections"]["sse"] == 1
        })
        .await;
    // Both are live before the signal.
    server.publish("x", None, json!("before")).await;
    assert_eq!(ws.next_push().await["data"], "before");
    let (event, data) = sse.next_json().await;
    assert_eq!(
        (event.as_str(), &data["data"]),
        ("message", &json!("before"))
    );

    let signalled = Instant::now();
    server.terminate();

    let code = ws.close_code().await;
    assert_eq!(code, Some(4000), "WebSocket close code");
    assert!(
        (4000..4500).contains(&code.unwrap()),
        "not a reconnect code"
    );

    let rest = within(PROMPT, sse.until_end()).await;
    let last = rest
        .last()
        .expect("a herald.disconnect event before the end");
    assert_eq!(last.event, "herald.disconnect", "{rest:?}");
    let data: Value = serde_json::from_str(&last.data).expect("disconnect data is JSON");
    assert_eq!(data["reconnect"], true, "{data}");
    assert_eq!(data["code"], 4000, "{data}");
    assert_eq!(data["reason"], "server shutdown", "{data}");
    // Nothing but the disconnect event (and no publication) arrived after the signal.
    assert!(
        rest.iter().all(|e| e.event == "herald.disconnect"),
        "{rest:?}"
    );
    assert_eq!(rest.len(), 1, "{rest:?}");

    assert_clean_exit(&mut server, signalled).await;
}

#[tokio::test]
async fn websocket_close_frame_names_the_reason() {
    let mut server = TestServer::start(CONFIG).await;
    let mut ws = subscribed_ws(&server, "reason").await;
    let signalled = Instant::now();
    server.terminate();
    let frame = loop {
        use futures_util::StreamExt;
        use tokio_tungstenite::tungstenite::Message;
        match within(PROMPT, ws.inner.next()).await {
            Some(Ok(Message::Close(frame))) => break frame.expect("a close frame with a code"),
            Some(Ok(_)) => continue,
            other => panic!("no close frame: {other:?}"),
        }
    };
    assert_eq!(u16::from(frame.code), 4000);
    assert_eq!(frame.reason.as_str(), "server shutdown");
    assert_clean_exit(&mut server, signalled).await;
}

#[tokio::test]
async fn an_idle_server_exits_0_promptly() {
    let mut server = TestServer::start(CONFIG).await;
    // Leave an idle keep-alive HTTP connection open: shutdown must not wait for it.
    let (status, _) = server.get("/health/live").await;
    assert_eq!(status, 200);
    let signalled = Instant::now();
    server.terminate();
    assert_clean_exit(&mut server, signalled).await;
}

#[tokio::test]
async fn every_client_of_many_is_told_to_reconnect() {
    let mut server = TestServer::start(CONFIG).await;
    let mut wss = Vec::new();
    let mut sses = Vec::new();
    for i in 0..5 {
        wss.push(subscribed_ws(&server, &format!("many:{i}")).await);
        sses.push(Sse::connect(&server, &[&format!("many:{i}"), "many:all"], None).await);
    }
    server
        .wait_stats("every client connected", |s| {
            s["connections"]["total"] == 10
        })
        .await;
    let signalled = Instant::now();
    server.terminate();
    for ws in &mut wss {
        assert_eq!(ws.close_code().await, Some(4000));
    }
    for sse in &mut sses {
        let rest = within(PROMPT, sse.until_end()).await;
        let last = rest.last().expect("a herald.disconnect event");
        assert_eq!(last.event, "herald.disconnect");
        let data: Value = serde_json::from_str(&last.data).unwrap();
        assert_eq!(data["reconnect"], true, "{data}");
    }
    assert_clean_exit(&mut server, signalled).await;
}

#[tokio::test]
async fn clients_that_never_read_do_not_hold_up_shutdown() {
    let mut server = TestServer::start(CONFIG).await;
    // Connected and subscribed, but never read after the signal (and the WebSocket never
    // answers the close handshake).
    let _ws = subscribed_ws(&server, "deaf").await;
    let _sse = Sse::connect(&server, &["deaf"], None).await;
    server
        .wait_stats("both clients connected", |s| s["connections"]["total"] == 2)
        .await;
    let signalled = Instant::now();
    server.terminate();
    assert_clean_exit(&mut server, signalled).await;
}

/// The grace period runs from the signal, not from startup: a server that has been up longer
/// than `shutdown_grace` still gives a connection stuck in a write (here until its
/// `write_timeout`, well inside the grace period) the time to finish, and exits with 0.
#[tokio::test]
async fn grace_period_counts_from_the_signal_not_from_startup() {
    let mut server = TestServer::start(
        "[server]\ndrain_window = \"0s\"\nshutdown_grace = \"3s\"\nwrite_timeout = \"1500ms\"\n[connection]\noutbox_bytes = \"512KiB\"\n",
    )
    .await;
    // Not synchronisation: the condition under test is an uptime longer than the grace period.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    // A subscriber that never reads. Publish until the server evicts it as a slow consumer:
    // its outbox overflowed, so its connection task is blocked writing to the full socket
    // (until the write timeout) when the signal comes.
    let _deaf = subscribed_ws(&server, "deaf").await;
    let big = "x".repeat(60 * 1024);
    let mut blocked = false;
    for _ in 0..1000 {
        server.publish("deaf", None, json!(big)).await;
        if server.stats().await["slow_consumer_evictions"] == 1 {
            blocked = true;
            break;
        }
    }
    assert!(blocked, "the deaf subscriber was never evicted");
    let signalled = Instant::now();
    server.terminate();
    assert_clean_exit(&mut server, signalled).await;
}

#[tokio::test]
async fn a_connection_that_never_sends_a_request_does_not_hold_up_shutdown() {
    let mut server =
        TestServer::start("[server]\ndrain_window = \"0s\"\nshutdown_grace = \"5s\"\nheader_read_timeout = \"30s\"\n")
            .await;
    let _silent = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    server
        .wait_stats("the server answering", |s| s["uptime_seconds"].is_u64())
        .await;
    server.terminate();
    let status = within(std::time::Duration::from_secs(3), server.child.wait())
        .await
        .unwrap();
    assert!(status.success(), "{status:?}");
}
