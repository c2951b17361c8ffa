//! SSE end to end against a real server: headers, typed events, several channels on one
//! connection, ids that carry every channel's position, keep-alive comments.

mod common;

use common::{within, Sse, TestServer, WAIT};
use serde_json::{json, Value};

const CONFIG: &str = r#"
[sse]
keepalive = "300ms"
retry = "1500ms"
"#;

#[tokio::test]
async fn sse_subscriber_receives_http_publications_with_headers_and_ids() {
    let server = TestServer::start(CONFIG).await;
    let mut sse = Sse::connect(&server, &["news"], None).await;
    assert_eq!(sse.headers["content-type"], "text/event-stream");
    assert_eq!(sse.headers["cache-control"], "no-cache");
    assert_eq!(sse.headers["x-accel-buffering"], "no");

    let published = server
        .publish("news", None, json!({"title": "hello"}))
        .await;
    let event = sse.next().await.expect("an event");
    assert_eq!(event.event, "message");
    let data: serde_json::Value = serde_json::from_str(&event.data).unwrap();
    assert_eq!(data["channel"], "news");
    assert_eq!(data["data"], json!({"title": "hello"}));
    assert_eq!(data["offset"], published["offset"]);
    assert_eq!(data["epoch"], published["epoch"]);
    // `sse.retry` (1500 ms here), jittered per connection by half of it either way.
    assert!(
        sse.decoder
            .retry_ms()
            .is_some_and(|ms| (750..2250).contains(&ms)),
        "{:?}",
        sse.decoder.retry_ms()
    );
    assert_eq!(
        event.id,
        format!("{}-1", published["epoch"].as_str().unwrap())
    );
    assert!(!event.id.contains('\0') && event.id.len() < 64);
}

#[tokio::test]
async fn several_channels_share_one_connection_and_typed_events_keep_their_names() {
    let server = TestServer::start(CONFIG).await;
    let mut sse = Sse::connect(&server, &["donations:s1", "queue:s1"], None).await;
    server
        .publish("donations:s1", Some("tts-completed"), json!({"id": 1}))
        .await;
    server
        .publish("queue:s1", Some("youtube-queue-updated"), json!({"len": 3}))
        .await;
    server.publish("other", None, json!("not for us")).await;
    server.publish("donations:s1", None, json!(2)).await;

    // In order within each channel; the protocol promises no order across channels.
    let mut got = Vec::new();
    for _ in 0..3 {
        let (ev, data) = sse.next_json().await;
        got.push((
            ev,
            data["channel"].as_str().unwrap().to_owned(),
            data["data"].clone(),
        ));
    }
    let of = |channel: &str| -> Vec<(String, Value)> {
        got.iter()
            .filter(|(_, c, _)| c == channel)
            .map(|(e, _, d)| (e.clone(), d.clone()))
            .collect()
    };
    assert_eq!(
        of("donations:s1"),
        [
            ("tts-completed".to_owned(), json!({"id": 1})),
            ("message".to_owned(), json!(2))
        ]
    );
    assert_eq!(
        of("queue:s1"),
        [("youtube-queue-updated".to_owned(), json!({"len": 3}))]
    );
    // The id names both channels: donations at offset 2, queue at offset 1.
    let id = sse.decoder.last_event_id().to_owned();
    let parts: Vec<&str> = id.split('.').collect();
    assert_eq!(parts.len(), 2, "{id}");
    assert!(parts[0].ends_with("-2") && parts[1].ends_with("-1"), "{id}");
}

#[tokio::test]
async fn idle_stream_gets_keepalive_comments() {
    let server = TestServer::start(CONFIG).await;
    let mut sse = Sse::connect(&server, &["quiet"], None).await;
    within(WAIT, sse.wait_raw(b"\n:\n\n")).await;
}

#[tokio::test]
async fn bad_sse_requests_get_json_errors() {
    let server = TestServer::start(CONFIG).await;
    let (status, body) = server.get("/sse").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    let (status, body) = server.get("/sse?channel=bad%20name").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("bad_channel"))
    );
    let (status, body) = server.get("/sse?channel=a&channel=a").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("already_subscribed"))
    );
    let (status, body) = server.get("/sse?channel=a&colour=red").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("bad_request"))
    );
    for bad in [
        "nonsense",
        "ab-1.cd-2",
        "ab--5",
        "ab-zzzzzzzzzzzzzzzzz",
        "AB-1",
        "ab-1%00",
    ] {
        let (status, body) = server
            .get(&format!("/sse?channel=a&lastEventId={bad}"))
            .await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (400, Some("bad_position")),
            "{bad}"
        );
    }
    let huge = "a-1.".repeat(5000);
    let resp = server
        .http
        .get(format!("{}/sse?channel=a", server.url))
        .header("last-event-id", huge)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let (status, _) = server.get("/health/live").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_full_node_tells_sse_clients_to_retry_instead_of_failing_them() {
    let server = TestServer::start("[server]\nmax_connections = 1\n").await;
    let _first = Sse::connect(&server, &["a"], None).await;
    // A browser gives up for good on a non-200 answer, so the refusal is a stream that says
    // "retry later" and ends.
    let mut second = Sse::connect(&server, &["a"], None).await;
    let events = second.until_end().await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].event, "herald.disconnect");
    let data: serde_json::Value = serde_json::from_str(&events[0].data).unwrap();
    assert_eq!(data["reconnect"], true);
    assert_eq!(data["code"], 4005);
    // WebSocket clients get a plain 503 with the stable code.
    let (status, body) = server.get("/ws").await;
    assert_eq!(status, 400, "not an upgrade: {body}");
    assert_eq!(body["error"]["code"], "bad_request");
    let err = tokio_tungstenite::connect_async(server.ws_url())
        .await
        .unwrap_err();
    match err {
        tokio_tungstenite::tungstenite::Error::Http(resp) => {
            assert_eq!(resp.status(), 503);
            let body: serde_json::Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            assert_eq!(body["error"]["code"], "server_full");
        }
        other => panic!("expected a 503, got {other:?}"),
    }
    assert_eq!(server.stats().await["connections"]["rejected"], 2);
}

/// Opens `/sse` with `query` appended; fails the test unless the server answers 200.
async fn sse_with(server: &TestServer, query: &str, last_id: Option<&str>) -> Sse {
    let mut req = server.http.get(format!("{}/sse?{query}", server.url));
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let resp = within(WAIT, req.send()).await.expect("SSE request");
    assert_eq!(resp.status(), 200, "SSE refused: {:?}", resp.text().await);
    Sse::from_response(resp)
}

#[tokio::test]
async fn payload_only_sse_carries_the_bare_payload_and_resumes_after_a_cut() {
    let server = TestServer::start(CONFIG).await;
    let mut sse = sse_with(&server, "channel=queue:s1&format=payload", None).await;
    let first = server
        .publish(
            "queue:s1",
            Some("youtube-queue-updated"),
            json!({"items": ["a"]}),
        )
        .await;
    // A payload with line breaks between its tokens still makes one `data:` line.
    let (status, _) = server
        .post(
            "/api/publish",
            "{\"channel\":\"queue:s1\",\"event\":\"video-status-changed\",\"data\":{\"playing\":\n true}}",
        )
        .await;
    assert_eq!(status, 200);
    let e = sse.next().await.expect("an event");
    assert_eq!(e.event, "youtube-queue-updated");
    let data: serde_json::Value = serde_json::from_str(&e.data).unwrap();
    assert_eq!(data, json!({"items": ["a"]}), "the payload itself");
    let id = e.id;
    assert_eq!(id, format!("{}-1", first["epoch"].as_str().unwrap()));
    let (event, data) = sse.next_json().await;
    assert_eq!(
        (event.as_str(), data),
        ("video-status-changed", json!({"playing": true}))
    );
    drop(sse);

    // Cut after the second; two more published meanwhile; resumed from the first's id.
    server.publish("queue:s1", None, json!(3)).await;
    server.publish("queue:s1", None, json!(4)).await;
    let mut sse = sse_with(&server, "channel=queue:s1&format=payload", Some(&id)).await;
    let got: Vec<_> = [
        sse.next_json().await,
        sse.next_json().await,
        sse.next_json().await,
    ]
    .into_iter()
    .map(|(_, v)| v)
    .collect();
    assert_eq!(got, vec![json!({"playing": true}), json!(3), json!(4)]);
    assert!(sse.decoder.last_event_id().ends_with("-4"));

    // Several channels: the payload alone, and the id says which channel moved.
    let mut multi = sse_with(
        &server,
        "channel=queue:s1&channel=tts:s1&format=payload",
        None,
    )
    .await;
    server
        .publish("tts:s1", Some("tts-completed"), json!({"id": 9}))
        .await;
    let (event, data) = multi.next_json().await;
    assert_eq!((event.as_str(), data), ("tts-completed", json!({"id": 9})));
    let id = multi.decoder.last_event_id().to_owned();
    let parts: Vec<&str> = id.split('.').collect();
    assert!(parts[0].ends_with("-4") && parts[1].ends_with("-1"), "{id}");

    let (status, body) = server.get("/sse?channel=x&format=xml").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["code"], "bad_request", "{body}");
}

#[tokio::test]
async fn since_resumes_channels_the_last_event_id_does_not_cover() {
    let server = TestServer::start("").await;
    let mut epoch = String::new();
    for i in 1..=3 {
        epoch = server.publish("a", None, json!(i)).await["epoch"]
            .as_str()
            .unwrap()
            .to_owned();
    }
    server.publish("b", None, json!("old")).await;

    // `a` resumes after offset 1, `b` starts fresh; the hello says which recovered.
    let mut sse = sse_with(
        &server,
        &format!("channel=a&channel=b&since=a~{epoch}-1"),
        None,
    )
    .await;
    let (_, first) = sse.next_json().await;
    let (_, second) = sse.next_json().await;
    assert_eq!(
        (first["data"].clone(), second["data"].clone()),
        (json!(2), json!(3))
    );
    let hello = sse.hello.clone().expect("the hello");
    assert_eq!(hello["recovered"], json!([true, false]));
    server.publish("b", None, json!("new")).await;
    let (_, live) = sse.next_json().await;
    assert_eq!(
        (live["channel"].clone(), live["data"].clone()),
        (json!("b"), json!("new"))
    );
    drop(sse);

    // A last event id covers every channel and wins over a stale `since` (a browser's own
    // reconnect of an EventSource opened with one).
    let mut sse = sse_with(
        &server,
        &format!("channel=a&since=a~{epoch}-0"),
        Some(&format!("{epoch}-2")),
    )
    .await;
    let (_, only) = sse.next_json().await;
    assert_eq!(
        only["offset"],
        json!(3),
        "resumed from the header's position"
    );
    drop(sse);

    // A `since` beyond what the channel kept is a reset, not an error.
    let mut sse = sse_with(&server, "channel=a&since=a~zz-5", None).await;
    let (event, reset) = sse.next_json().await;
    assert_eq!(
        (event.as_str(), reset["reason"].clone()),
        ("herald.reset", json!("epoch_changed"))
    );
    assert_eq!(sse.hello.clone().unwrap()["recovered"], json!([false]));
    drop(sse);

    for bad in [
        "channel=a&since=a".to_owned(),
        format!("channel=a&since=b~{epoch}-1"),
        format!("channel=a&since=a~{epoch}-1,a~{epoch}-2"),
        "channel=a&since=a~EE-1".to_owned(),
    ] {
        let (status, body) = server.get(&format!("/sse?{bad}")).await;
        assert_eq!(status, 400, "{bad}");
        assert_eq!(body["error"]["code"], "bad_position", "{bad}");
    }
}
