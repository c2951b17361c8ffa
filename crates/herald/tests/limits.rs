//! Limits: publish rate per connection, browser origins (WebSocket upgrades and CORS),
//! connections per address.

mod common;

use common::{sse_url, within, Sse, TestServer, Ws, WAIT};
use serde_json::{json, Value};
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
async fn a_namespace_burst_allows_that_many_at_once_then_the_rate() {
    let server = TestServer::start(
        "[channels.namespaces.chat]\npublish = \"public\"\npublish_per_minute = 30\npublish_burst = 3\n",
    )
    .await;
    let mut ws = Ws::connect(&server).await;
    for i in 0..3 {
        let reply = ws
            .request(json!({"op": "publish", "channel": "chat:room", "data": i}))
            .await;
        assert!(reply.get("error").is_none(), "publish {i} refused: {reply}");
    }
    let reply = ws
        .request(json!({"op": "publish", "channel": "chat:room", "data": 3}))
        .await;
    assert_eq!(reply["error"]["code"], "rate_limited", "{reply}");
    let message = reply["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("30 messages a minute, 3 at once"),
        "{message}"
    );
    // The rate refills one every 2 s.
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let reply = ws
        .request(json!({"op": "publish", "channel": "chat:room", "data": 4}))
        .await;
    assert!(reply.get("error").is_none(), "refilled: {reply}");
    assert_eq!(server.stats().await["refused"]["namespace_publish_rate"], 1);
}

/// A WebSocket upgrade to `server` with `Origin: origin` (none when None).
async fn ws_from(
    server: &TestServer,
    origin: Option<&str>,
) -> Result<Ws, tokio_tungstenite::tungstenite::Error> {
    let mut req = server.ws_url().into_client_request().unwrap();
    if let Some(o) = origin {
        req.headers_mut().insert("origin", o.parse().unwrap());
    }
    let (inner, _) = within(WAIT, tokio_tungstenite::connect_async(req)).await?;
    Ok(Ws::from_stream(inner))
}

/// The status and JSON error code of a refused upgrade; fails the test if it was accepted.
fn refusal(r: Result<Ws, tokio_tungstenite::tungstenite::Error>) -> (u16, Value) {
    match r {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body: Value =
                serde_json::from_slice(resp.body().as_deref().unwrap_or_default()).unwrap();
            (resp.status().as_u16(), body["error"]["code"].clone())
        }
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(_) => panic!("expected a refusal, the upgrade was accepted"),
    }
}

#[tokio::test]
async fn a_websocket_from_an_origin_not_on_the_list_is_refused() {
    let server =
        TestServer::start("[server]\ncors_allowed_origins = [\"https://app.example\"]\n").await;
    let mut sse = Sse::connect(&server, &["news"], None).await;
    sse.wait_raw(b"id: ").await;
    let mut ws = ws_from(&server, Some("https://app.example")).await.unwrap();
    let r = ws
        .request(json!({"op": "subscribe", "channel": "news"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");

    assert_eq!(
        refusal(ws_from(&server, Some("https://evil.example")).await),
        (403, json!("forbidden"))
    );
    assert!(
        ws_from(&server, None).await.is_ok(),
        "non-browser clients send no Origin"
    );
    // Herald's own origin is always allowed.
    let own = format!("http://{}", server.addr());
    assert!(ws_from(&server, Some(&own)).await.is_ok());
    assert_eq!(server.stats().await["refused"]["origin"], 1);
    // The subscribers on the same node kept receiving.
    server.publish("news", None, json!("after")).await;
    assert_eq!(sse.next_json().await.1["data"], "after");
    assert_eq!(ws.next_push().await["data"], "after");
}

#[tokio::test]
async fn with_no_origins_listed_only_herald_s_own_origin_may_open_a_websocket() {
    let server = TestServer::start("[server]\ncors_allowed_origins = []\n").await;
    let own = format!("http://{}", server.addr());
    let mut ws = ws_from(&server, Some(&own)).await.unwrap();
    let r = ws.request(json!({"op": "ping"})).await;
    assert!(r.get("result").is_some(), "{r}");
    for other in [
        "https://evil.example",
        // Another port on the same host is another origin.
        "http://127.0.0.1:1",
    ] {
        assert_eq!(
            refusal(ws_from(&server, Some(other)).await),
            (403, json!("forbidden")),
            "{other}"
        );
    }
    assert!(ws_from(&server, None).await.is_ok());
    assert_eq!(server.stats().await["refused"]["origin"], 2);
}

/// The `access-control-allow-origin` a response carried, if any.
fn allowed_origin(resp: &reqwest::Response) -> Option<String> {
    resp.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn cors_admits_listed_origins_on_sse_and_the_api_and_no_others() {
    let server =
        TestServer::start("[server]\ncors_allowed_origins = [\"https://app.example\"]\n").await;
    let app = "https://app.example";
    let evil = "https://evil.example";
    for (origin, expected) in [(app, Some(app.to_owned())), (evil, None)] {
        // An SSE stream (the first request on its connection) and one on a connection that
        // already carried a request.
        let resp = within(
            WAIT,
            server
                .http
                .get(sse_url(&server, &["news"]))
                .header("origin", origin)
                .send(),
        )
        .await
        .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(allowed_origin(&resp), expected, "SSE from {origin}");
        let mut sse = Sse::from_response(resp);
        sse.wait_raw(b"id: ").await;
        // The API, answered and refused alike.
        for (method, path) in [("GET", "/api/stats"), ("GET", "/api/nowhere")] {
            let resp = server
                .http
                .request(method.parse().unwrap(), format!("{}{path}", server.url))
                .header("origin", origin)
                .send()
                .await
                .unwrap();
            assert_eq!(allowed_origin(&resp), expected, "{path} from {origin}");
        }
        let resp = server
            .http
            .post(format!("{}/api/publish", server.url))
            .header("origin", origin)
            .json(&json!({"channel": "news", "data": origin}))
            .send()
            .await
            .unwrap();
        assert_eq!(allowed_origin(&resp), expected, "publish from {origin}");
        if expected.is_some() {
            assert_eq!(resp.status(), 200);
        } else {
            // Without API keys, a page from an origin not listed is refused even on loopback.
            assert_eq!(resp.status(), 403);
            let body: Value = resp.json().await.unwrap();
            assert_eq!(body["error"]["code"], "forbidden", "{body}");
            server.publish("news", None, json!(origin)).await;
        }
        assert_eq!(sse.next_json().await.1["data"], origin);
        // Preflights for the API and for SSE with `Last-Event-ID`.
        for (path, method, headers) in [
            ("/api/publish", "POST", "content-type, authorization"),
            ("/sse?channel=news", "GET", "last-event-id"),
        ] {
            let resp = server
                .http
                .request(reqwest::Method::OPTIONS, format!("{}{path}", server.url))
                .header("origin", origin)
                .header("access-control-request-method", method)
                .header("access-control-request-headers", headers)
                .send()
                .await
                .unwrap();
            assert!(
                resp.status().is_success(),
                "preflight {path}: {}",
                resp.status()
            );
            assert_eq!(
                allowed_origin(&resp),
                expected,
                "preflight {path} from {origin}"
            );
            if expected.is_some() {
                let methods = resp.headers()["access-control-allow-methods"]
                    .to_str()
                    .unwrap()
                    .to_owned();
                assert!(methods.contains(method), "{methods}");
            }
        }
    }
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

/// Without API keys the HTTP API trusts the loopback address; a page on another site, open in
/// a browser on the same machine, must not borrow that trust, even with `*` in the list.
#[tokio::test]
async fn a_page_from_another_origin_cannot_use_the_keyless_api_on_loopback() {
    let server = TestServer::start("").await;
    let port = server.addr().rsplit_once(':').unwrap().1.to_owned();
    // A publish with an optional `Origin` and `Host` (reqwest sends the URL's host otherwise).
    let post = |origin: Option<String>, host: Option<String>| {
        let mut req = server
            .http
            .post(format!("{}/api/publish", server.url))
            .json(&json!({"channel": "news", "data": 1}));
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        if let Some(h) = host {
            req = req.header("host", h);
        }
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = post(Some("https://evil.example".into()), None).await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    assert_eq!(server.stats().await["refused"]["origin"], 1);
    // Herald's own origin (a page it serves) and callers that are not browser pages are served.
    assert_eq!(post(Some(server.url.clone()), None).await.0, 200);
    assert_eq!(post(None, None).await.0, 200);
    // A page that reached the loopback listener by DNS rebinding: its name resolves to
    // 127.0.0.1, so its origin matches the Host it sends, but that name is not a loopback one.
    let (status, body) = post(
        Some(format!("http://rebind.example:{port}")),
        Some(format!("rebind.example:{port}")),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "forbidden", "{body}");
    // The same page reached as localhost is Herald's own.
    let (status, body) = post(
        Some(format!("http://localhost:{port}")),
        Some(format!("localhost:{port}")),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // With API keys, the key is what counts, from any origin.
    let keyed =
        TestServer::start("[[auth.api_keys]]\nname = \"ci\"\nkey = \"0123456789abcdef0123\"\n")
            .await;
    let resp = keyed
        .http
        .post(format!("{}/api/publish", keyed.url))
        .header("origin", "https://evil.example")
        .header("authorization", "Bearer 0123456789abcdef0123")
        .json(&json!({"channel": "news", "data": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
