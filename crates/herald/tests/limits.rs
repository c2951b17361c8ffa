//! Limits: publish rate per connection, WebSocket origins, connections per address.

mod common;

use common::{within, Sse, TestServer, Ws, WAIT};
use serde_json::json;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

#[tokio::test]
async fn the_31st_chat_message_in_a_minute_is_refused_and_the_others_delivered() {
    let server = TestServer::start(
        "[connection]\npublish_per_minute = 30\n[channels.namespaces.chat]\npublish = \"public\"\n",
    )
    .await;
    let mut sse = Sse::connect(&server, &["chat:room"], None).await;
    sse.wait_raw(b"id: ").await;
    let mut ws = Ws::connect(&server).await;
    for i in 0..30 {
        let reply = ws
            .request(json!({"op": "publish", "channel": "chat:room", "data": i}))
            .await;
        assert!(reply.get("error").is_none(), "publish {i} refused: {reply}");
    }
    let reply = ws
        .request(json!({"op": "publish", "channel": "chat:room", "data": 30}))
        .await;
    assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
    // The listener got exactly the 30 accepted, and a publish over HTTP still goes through.
    for i in 0..30 {
        assert_eq!(sse.next_json().await.1["data"], i);
    }
    server.publish("chat:room", None, json!("http")).await;
    assert_eq!(sse.next_json().await.1["data"], "http");
    assert_eq!(server.stats().await["refused"]["publish_rate"], 1);
}

#[tokio::test]
async fn a_websocket_from_an_origin_not_on_the_list_is_refused() {
    let server =
        TestServer::start("[server]\ncors_allowed_origins = [\"https://app.example\"]\n").await;
    let connect = |origin: Option<&'static str>| {
        let mut req = server.ws_url().into_client_request().unwrap();
        if let Some(o) = origin {
            req.headers_mut().insert("origin", o.parse().unwrap());
        }
        within(WAIT, tokio_tungstenite::connect_async(req))
    };
    match connect(Some("https://evil.example")).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403);
        }
        other => panic!("expected 403, got {other:?}"),
    }
    assert!(connect(Some("https://app.example")).await.is_ok());
    assert!(
        connect(None).await.is_ok(),
        "non-browser clients send no Origin"
    );
    assert_eq!(server.stats().await["refused"]["origin"], 1);
}

#[tokio::test]
async fn loopback_is_not_counted_per_address() {
    // Behind a reverse proxy on the same machine every client comes from loopback.
    let server = TestServer::start("[server]\nmax_connections_per_ip = 1\n").await;
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(Sse::connect(&server, &["a"], None).await);
    }
    assert_eq!(server.stats().await["refused"]["per_ip"], 0);
}
