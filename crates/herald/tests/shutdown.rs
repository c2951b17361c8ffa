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
    let mut server = TestServer::start(
        "[server]\ndrain_window = \"0s\"\nshutdown_grace = \"5s\"\nheader_read_timeout = \"30s\"\n",
    )
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

/// What one client saw of a drain.
struct Told {
    /// When it was told to go (its `herald.disconnect` event or `disconnect` push).
    at: Instant,
    /// Whether the publication made mid-window reached it first.
    got_mid: bool,
    /// The delay it was asked to wait before coming back.
    delay_ms: u64,
}

/// A deploy that does not stampede: on SIGTERM readiness turns false and new connections are
/// refused at once, the API keeps publishing through `server.drain_window`, and the open
/// connections are told to go at an even pace over the window, each with its own delay.
#[tokio::test]
async fn sigterm_drains_connections_at_an_even_pace_over_the_window() {
    const WINDOW: Duration = Duration::from_secs(4);
    const EACH: usize = 100;
    let mut server = TestServer::start(
        "[server]\ndrain_window = \"4s\"\nshutdown_grace = \"10s\"\n[sse]\nretry = \"2s\"\n",
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..EACH {
        let mut sse = Sse::connect(&server, &["deploy"], None).await;
        sse.wait_raw(b"herald.connected").await;
        tasks.push(tokio::spawn(async move {
            let mut got_mid = false;
            loop {
                let e = sse.next().await.expect("stream ended before it was told");
                if e.event == "herald.disconnect" {
                    let at = Instant::now();
                    let data: Value = serde_json::from_str(&e.data).unwrap();
                    assert_eq!(data["code"], 4000);
                    let delay_ms = data["delay_ms"].as_u64().expect("a delay");
                    // The browser's EventSource waits as long: a `retry:` of that delay comes first.
                    let raw = String::from_utf8_lossy(&sse.raw).into_owned();
                    assert!(
                        raw.contains(&format!("retry: {delay_ms}\n\nevent: herald.disconnect")),
                        "{raw}"
                    );
                    return Told {
                        at,
                        got_mid,
                        delay_ms,
                    };
                }
                got_mid |= e.data.contains("mid-window");
            }
        }));
    }
    for _ in 0..EACH {
        let mut ws = subscribed_ws(&server, "deploy").await;
        tasks.push(tokio::spawn(async move {
            let mut got_mid = false;
            loop {
                let push = ws.next_push().await;
                if push["push"] == "disconnect" {
                    let at = Instant::now();
                    assert_eq!(
                        (push["code"].as_u64(), push["reconnect"].as_bool()),
                        (Some(4000), Some(true))
                    );
                    let delay_ms = push["delay_ms"].as_u64().expect("a delay");
                    assert_eq!(ws.close_code().await, Some(4000));
                    return Told {
                        at,
                        got_mid,
                        delay_ms,
                    };
                }
                got_mid |= push["data"] == "mid-window";
            }
        }));
    }
    server
        .wait_stats("every client connected", |s| {
            s["connections"]["ws"] == EACH && s["connections"]["sse"] == EACH
        })
        .await;
    let (status, _) = server.get("/health/ready").await;
    assert_eq!(status, 200);

    let signalled = Instant::now();
    server.terminate();
    // At once: not ready, and new connections get the shutdown answers.
    let (status, body) = server.get("/health/ready").await;
    assert_eq!(
        (status, body["status"].as_str()),
        (503, Some("shutting_down"))
    );
    let resp = server
        .http
        .get(common::sse_url(&server, &["deploy"]))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.text().await.unwrap();
    assert!(
        body.contains("event: herald.disconnect") && body.contains("4000"),
        "{body}"
    );
    match tokio_tungstenite::connect_async(server.ws_url()).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => assert_eq!(resp.status(), 503),
        other => panic!("a WebSocket opened while draining: {other:?}"),
    }
    // Mid-window the API still publishes.
    tokio::time::sleep_until(signalled + WINDOW / 2).await;
    let published = server.publish("deploy", None, json!("mid-window")).await;
    assert!(published["offset"].is_u64(), "{published}");
    let acked = Instant::now();

    let mut told = Vec::new();
    for t in tasks {
        told.push(within(WINDOW + Duration::from_secs(5), t).await.unwrap());
    }
    // Every connection not yet told when the publication was acknowledged received it
    // (a margin for the client's own reading).
    let late: Vec<&Told> = told
        .iter()
        .filter(|t| t.at > acked + Duration::from_millis(100))
        .collect();
    assert!(
        late.len() > EACH / 2,
        "only {} told after mid-window",
        late.len()
    );
    assert!(
        late.iter().all(|t| t.got_mid),
        "a connection told after the publication missed it"
    );
    // The told times cover at least the middle 80% of the window.
    let first = told.iter().map(|t| t.at).min().unwrap() - signalled;
    let last = told.iter().map(|t| t.at).max().unwrap() - signalled;
    assert!(first <= WINDOW / 10, "first told after {first:?}");
    assert!(last >= WINDOW * 9 / 10, "last told after {last:?}");
    // Each comes back after its own delay: within half to one and a half `sse.retry`, not all
    // the same.
    assert!(told.iter().all(|t| (1000..3000).contains(&t.delay_ms)));
    let distinct: std::collections::HashSet<u64> = told.iter().map(|t| t.delay_ms).collect();
    assert!(
        distinct.len() > told.len() / 4,
        "delays barely vary: {distinct:?}"
    );
    // Then the node exits cleanly, inside the grace period.
    let status = within(Duration::from_secs(8), server.child.wait())
        .await
        .unwrap();
    assert!(status.success(), "herald exited with {status}");
}

/// A connection's first push is its hello: connection id, node, server time and ping interval;
/// on SSE, a `herald.connected` event before anything else.
#[tokio::test]
async fn every_connection_starts_with_a_hello() {
    let server =
        TestServer::start("[ws]\nping_interval = \"7s\"\n[sse]\nkeepalive = \"9s\"\n").await;
    let mut ws = Ws::connect(&server).await;
    // The first frame, read raw: the hello, before any reply.
    let first = ws.next_json_raw().await;
    assert_eq!(first["push"], "connected", "{first}");
    assert_eq!(first["ping_interval_ms"], 7000);
    let mut sse = Sse::connect(&server, &["hello"], None).await;
    sse.wait_raw(b"herald.connected").await;
    let raw = String::from_utf8_lossy(&sse.raw).into_owned();
    // The hello is the stream's first event (after the `retry:` and starting-position block).
    let first_event = raw.split("\n\n").find(|b| b.contains("data:")).unwrap();
    assert!(
        first_event.starts_with("event: herald.connected\ndata: "),
        "{raw}"
    );
    let hello = sse.hello.clone().unwrap();
    assert_eq!(hello["ping_interval_ms"], 9000);
    // Both name the same node and their own connection; the time is the server's now.
    assert_eq!(hello["node"], first["node"]);
    assert_ne!(hello["conn_id"], first["conn_id"]);
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    for h in [&hello, &first] {
        assert!(h["conn_id"].as_str().is_some_and(|s| !s.is_empty()));
        let t = h["time"].as_u64().unwrap();
        assert!(t.abs_diff(now_ms) < 60_000, "{h}");
    }
    // The connection id is the one presence and `/api/disconnect` know.
    let (status, _) = server
        .post(
            "/api/disconnect",
            &json!({"conn_id": first["conn_id"]}).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    assert!(ws.close_code().await.is_some());
}
