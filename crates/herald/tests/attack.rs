//! The attack suite: a real node with connection tokens, Telegram login, channel permissions
//! and limits, attacked over SSE, WebSocket and HTTP. Each attack asserts the exact refusal,
//! and the legitimate clients on the same node must keep receiving throughout.

mod common;

use common::{require_backends, sse_url, urlencode, within, Sse, TempFile, TestServer, Ws, WAIT};
use futures_util::SinkExt;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

const SECRET: &str = "attack-suite-hmac-secret-0123456789abcdef";
const BOT_TOKEN: &str = "123456789:made-up-bot-token-for-herald-tests";
const KEYS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../herald-auth/tests/keys");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn config() -> String {
    format!(
        r#"
[connection]
max_per_user = 2

[publish]
max_data = "1KiB"

[auth.token]
hmac_secrets = ["{SECRET}"]
public_keys = ["{KEYS}/rsa.pub.pem"]
issuer = "https://auth.test"
audience = "herald"
leeway = "0s"
max_session_age = "1h"
refresh_ttl = "10m"

[auth.telegram]
bot_token = "{BOT_TOKEN}"
channels = ["watch:*"]

[channels.namespaces.widget]
subscribe = "public"

[channels.namespaces.room]
subscribe = "granted"
publish = "granted"
presence = true

[channels.namespaces.chat]
subscribe = "authenticated"
publish = "authenticated"
publish_per_minute = 30

[channels.namespaces.watch]
subscribe = "granted"

[channels.namespaces.alerts]
subscribe = "authenticated"
user_scoped = true
"#
    )
}

/// Standard claims for `user`, valid for an hour, overridden by `extra`.
fn claims(user: &str, extra: Value) -> Value {
    let mut c = json!({
        "sub": user,
        "iss": "https://auth.test",
        "aud": "herald",
        "exp": now() + 3600,
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

fn hs256(claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn rs256(claims: &Value) -> String {
    let pem = std::fs::read(format!("{KEYS}/rsa.pem")).unwrap();
    encode(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `alg: none`: a header and claims with an empty signature.
fn unsigned(claims: &Value) -> String {
    format!(
        "{}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims.to_string().as_bytes())
    )
}

/// HS256 signed with the RSA public key's PEM text as the secret (algorithm confusion).
fn confused(claims: &Value) -> String {
    let pem = std::fs::read(format!("{KEYS}/rsa.pub.pem")).unwrap();
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(&pem),
    )
    .unwrap()
}

async fn sse_status(server: &TestServer, channels: &[&str], token: Option<&str>) -> (u16, Value) {
    let mut url = sse_url(server, channels);
    if let Some(t) = token {
        url.push_str(&format!("&token={}", urlencode(t)));
    }
    let resp = within(WAIT, server.http.get(url).send()).await.unwrap();
    let status = resp.status().as_u16();
    if status == 200 {
        return (status, Value::Null);
    }
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn sse_with(server: &TestServer, channels: &[&str], token: &str) -> Sse {
    let url = format!("{}&token={}", sse_url(server, channels), urlencode(token));
    let resp = within(WAIT, server.http.get(url).send()).await.unwrap();
    assert_eq!(resp.status(), 200, "SSE refused: {:?}", resp.text().await);
    Sse::from_response(resp)
}

fn ws_url_with(server: &TestServer, token: &str) -> String {
    format!("{}?token={}", server.ws_url(), urlencode(token))
}

/// The status a refused WebSocket upgrade answered with; fails the test if it was accepted.
async fn upgrade_refused(url: impl AsRef<str>) -> u16 {
    match within(WAIT, tokio_tungstenite::connect_async(url.as_ref())).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => resp.status().as_u16(),
        other => panic!("expected a refused upgrade, got {other:?}"),
    }
}

/// `POST /auth/telegram` with `init_data`; returns status and body.
async fn login(server: &TestServer, init_data: &str) -> (u16, Value) {
    server
        .post(
            "/auth/telegram",
            &json!({ "init_data": init_data }).to_string(),
        )
        .await
}

/// The legitimate clients that must keep receiving while the node is attacked.
struct Bystanders {
    widget: Sse,
    host: Ws,
    next: u64,
}

impl Bystanders {
    async fn join(server: &TestServer) -> Self {
        let mut widget = Sse::connect(server, &["widget:alerts"], None).await;
        widget.wait_raw(b"id: ").await;
        let token = hs256(&claims(
            "host",
            json!({"channels": ["room:1"], "publish": ["room:1"]}),
        ));
        let mut host = Ws::connect_url(&ws_url_with(server, &token)).await;
        let r = host
            .request(json!({"op": "subscribe", "channel": "room:1"}))
            .await;
        assert!(r.get("error").is_none(), "{r}");
        Self {
            widget,
            host,
            next: 0,
        }
    }

    /// Publishes one message to each bystander's channel and checks both arrive.
    async fn still_receive(&mut self, server: &TestServer) {
        self.next += 1;
        let n = self.next;
        server.publish("widget:alerts", None, json!(n)).await;
        server.publish("room:1", None, json!(n)).await;
        assert_eq!(self.widget.next_json().await.1["data"], json!(n));
        loop {
            let p = self.host.next_push().await;
            if p["push"] == "publication" {
                assert_eq!(p["data"], json!(n));
                break;
            }
        }
    }
}

#[tokio::test]
async fn bad_tokens_are_refused_with_their_reason_and_bystanders_keep_receiving() {
    let server = TestServer::start(&config()).await;
    let mut by = Bystanders::join(&server).await;
    let grant = json!({"channels": ["room:1"]});
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "expired",
            hs256(&claims("mallory", json!({"exp": now() - 30}))),
            "expired",
        ),
        (
            "not yet valid",
            hs256(&claims("mallory", json!({"nbf": now() + 3600}))),
            "not_yet_valid",
        ),
        (
            "wrong key",
            encode(
                &Header::new(Algorithm::HS256),
                &claims("mallory", grant.clone()),
                &EncodingKey::from_secret(b"another-secret-0123456789abcdefghij"),
            )
            .unwrap(),
            "bad_signature",
        ),
        (
            "wrong audience",
            hs256(&claims("mallory", json!({"aud": "another-service"}))),
            "wrong_audience",
        ),
        (
            "wrong issuer",
            hs256(&claims("mallory", json!({"iss": "https://evil.test"}))),
            "wrong_issuer",
        ),
        (
            "alg none",
            unsigned(&claims("mallory", grant.clone())),
            "unsupported_algorithm",
        ),
        (
            "algorithm confusion",
            confused(&claims("mallory", grant.clone())),
            "bad_signature",
        ),
        ("garbage", "not.a.token".to_owned(), "malformed"),
    ];
    for (what, token, reason) in &cases {
        // SSE: 401 before any stream.
        let (status, body) = sse_status(&server, &["room:1"], Some(token)).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(message.contains(reason), "{what}: {message}");
        // WebSocket, token in the query: 401 instead of the upgrade.
        assert_eq!(
            upgrade_refused(ws_url_with(&server, token)).await,
            401,
            "{what}"
        );
        // WebSocket, token in the first frame: an error reply, and the connection stays
        // anonymous (a closed namespace stays closed).
        let mut ws = Ws::connect(&server).await;
        let r = ws.request(json!({"op": "auth", "token": token})).await;
        assert_eq!(r["error"]["code"], "unauthorized", "{what}: {r}");
        let r = ws
            .request(json!({"op": "subscribe", "channel": "room:1"}))
            .await;
        assert_eq!(r["error"]["code"], "unauthorized", "{what}: {r}");
        by.still_receive(&server).await;
    }
    // A valid token is read from the Authorization header and from the `herald_token` cookie
    // as well as from the query.
    let (h, c) = (
        hs256(&claims("eve-h", grant.clone())),
        hs256(&claims("eve-c", grant.clone())),
    );
    for (name, value) in [
        ("authorization", format!("Bearer {h}")),
        ("cookie", format!("theme=dark; herald_token={c}")),
    ] {
        let resp = server
            .http
            .get(sse_url(&server, &["room:1"]))
            .header(name, value)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "token in {name}");
    }
    // The same claims, properly signed (HS256 and RS256), are accepted.
    let (status, _) = sse_status(
        &server,
        &["room:1"],
        Some(&hs256(&claims("eve", grant.clone()))),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = sse_status(&server, &["room:1"], Some(&rs256(&claims("eve", grant)))).await;
    assert_eq!(status, 200);
    let refused = server.stats().await["refused"]["bad_token"]
        .as_u64()
        .unwrap();
    assert_eq!(refused, 3 * cases.len() as u64);
}

#[tokio::test]
async fn a_user_scoped_channel_is_read_by_its_user_alone() {
    let server = TestServer::start(&config()).await;
    let owner = hs256(&claims("user_789", json!({})));
    let other = hs256(&claims("user_1", json!({"channels": ["*"]})));
    let (status, body) = sse_status(&server, &["alerts:user_789"], None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    let (status, body) = sse_status(&server, &["alerts:user_789"], Some(&other)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("forbidden")),
        "a wildcard grant opens no one else's"
    );
    let mut ws = Ws::connect_url(&ws_url_with(&server, &other)).await;
    let r = ws
        .request(json!({"op": "subscribe", "channel": "alerts:user_789"}))
        .await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");
    // The owner reads what a worker publishes there.
    let mut mine = sse_with(&server, &["alerts:user_789"], &owner).await;
    mine.wait_raw(b"id: ").await;
    server
        .publish(
            "alerts:user_789",
            Some("alert"),
            json!({"text": "job done"}),
        )
        .await;
    let (event, v) = mine.next_json().await;
    assert_eq!(
        (event.as_str(), &v["data"]["text"]),
        ("alert", &json!("job done"))
    );
}

#[tokio::test]
async fn channels_are_read_and_published_only_as_granted() {
    let server = TestServer::start(&config()).await;
    let mut by = Bystanders::join(&server).await;
    let guest = hs256(&claims("guest", json!({})));

    // Anonymous: the public widget namespace only, read-only.
    let (status, body) = sse_status(&server, &["room:1"], None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    let mut anon = Ws::connect(&server).await;
    let r = anon
        .request(json!({"op": "subscribe", "channel": "widget:alerts"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let r = anon
        .request(json!({"op": "publish", "channel": "widget:alerts", "data": 1}))
        .await;
    assert_eq!(r["error"]["code"], "publish_forbidden", "{r}");

    // Authenticated without a grant: refused on granted channels, over SSE and WebSocket.
    let (status, body) = sse_status(&server, &["room:1"], Some(&guest)).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    let mut ws = Ws::connect(&server).await;
    let r = ws.request(json!({"op": "auth", "token": guest})).await;
    assert_eq!(r["result"]["user"], "guest", "{r}");
    for op in ["subscribe", "history", "presence"] {
        let r = ws.request(json!({"op": op, "channel": "room:1"})).await;
        assert_eq!(r["error"]["code"], "forbidden", "{op}: {r}");
    }
    let r = ws
        .request(json!({"op": "publish", "channel": "room:1", "data": "takeover"}))
        .await;
    assert_eq!(r["error"]["code"], "publish_forbidden", "{r}");

    // A subscription token for the same user grants one channel; one for another user does not.
    let sub_token = hs256(&claims("guest", json!({"channels": ["room:1"]})));
    let r = ws
        .request(json!({"op": "subscribe", "channel": "room:1", "token": sub_token}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let r = ws
        .request(json!({"op": "history", "channel": "room:1"}))
        .await;
    assert!(
        r.get("error").is_none(),
        "a subscription token also grants reading: {r}"
    );
    let foreign = hs256(&claims("host", json!({"channels": ["room:2"]})));
    let r = ws
        .request(json!({"op": "subscribe", "channel": "room:2", "token": foreign}))
        .await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");

    // Only the room host (a publish grant) publishes; the guest receives it.
    let r = by
        .host
        .request(json!({"op": "publish", "channel": "room:1", "data": "play"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    loop {
        let p = ws.next_push().await;
        if p["push"] == "publication" {
            assert_eq!(p["data"], "play");
            break;
        }
    }
    // The host's own publication reached the host too.
    loop {
        let p = by.host.next_push().await;
        if p["push"] == "publication" {
            assert_eq!(p["data"], "play");
            break;
        }
    }

    // User channels: only the named user reads them, whatever the grants.
    let bob = hs256(&claims("bob", json!({})));
    let alice_everything = hs256(&claims("alice", json!({"channels": ["*"]})));
    let mut bob_alerts = sse_with(&server, &["alerts#bob"], &bob).await;
    bob_alerts.wait_raw(b"id: ").await;
    let (status, body) = sse_status(&server, &["alerts#bob"], Some(&alice_everything)).await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    let (status, _) = sse_status(&server, &["alerts#bob"], None).await;
    assert_eq!(status, 401);
    server.publish("alerts#bob", None, json!("for bob")).await;
    assert_eq!(bob_alerts.next_json().await.1["data"], "for bob");

    // A refresh that drops a grant ends that subscription at once.
    let with_room = hs256(&claims("gina", json!({"channels": ["room:5"]})));
    let mut gina = Ws::connect_url(&ws_url_with(&server, &with_room)).await;
    let r = gina
        .request(json!({"op": "subscribe", "channel": "room:5"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let without = hs256(&claims("gina", json!({"channels": []})));
    let r = gina.request(json!({"op": "auth", "token": without})).await;
    assert_eq!(r["result"]["revoked"], json!(["room:5"]), "{r}");
    let r = gina
        .request(json!({"op": "unsubscribe", "channel": "room:5"}))
        .await;
    assert_eq!(r["error"]["code"], "not_subscribed", "{r}");

    by.still_receive(&server).await;
    let stats = server.stats().await;
    assert!(stats["refused"]["permission"].as_u64().unwrap() >= 9);
    assert_eq!(stats["refused"]["revoked"], 1, "{stats}");
}

#[tokio::test]
async fn the_31st_chat_message_from_one_user_in_a_minute_is_refused_across_connections() {
    let server = TestServer::start(&config()).await;
    let mut by = Bystanders::join(&server).await;
    let carol = hs256(&claims("carol", json!({})));
    let dave = hs256(&claims("dave", json!({})));
    let mut listener = sse_with(&server, &["chat:lobby"], &dave).await;
    listener.wait_raw(b"id: ").await;
    let mut a = Ws::connect_url(&ws_url_with(&server, &carol)).await;
    let mut b = Ws::connect_url(&ws_url_with(&server, &carol)).await;
    for i in 0..30 {
        // Alternate connections: the limit is per user, not per connection.
        let ws = if i % 2 == 0 { &mut a } else { &mut b };
        let r = ws
            .request(json!({"op": "publish", "channel": "chat:lobby", "data": i}))
            .await;
        assert!(r.get("error").is_none(), "message {i}: {r}");
    }
    let r = b
        .request(json!({"op": "publish", "channel": "chat:lobby", "data": 30}))
        .await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    // Another user is not affected.
    let mut d = Ws::connect_url(&ws_url_with(&server, &dave)).await;
    let r = d
        .request(json!({"op": "publish", "channel": "chat:lobby", "data": "dave"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    for i in 0..30 {
        assert_eq!(listener.next_json().await.1["data"], json!(i));
    }
    assert_eq!(listener.next_json().await.1["data"], "dave");
    assert_eq!(server.stats().await["refused"]["namespace_publish_rate"], 1);
    by.still_receive(&server).await;
}

#[tokio::test]
async fn oversize_messages_and_connection_floods_are_refused() {
    let server = TestServer::start(&config()).await;
    let mut by = Bystanders::join(&server).await;
    let carol = hs256(&claims("carol", json!({})));

    // Oversize: over HTTP 413, over WebSocket an error reply (the connection stays).
    let big = "x".repeat(2048);
    let (status, body) = server
        .post(
            "/api/publish",
            &json!({"channel": "chat:x", "data": big}).to_string(),
        )
        .await;
    assert_eq!((status, &body["error"]["code"]), (413, &json!("too_large")));
    let mut ws = Ws::connect_url(&ws_url_with(&server, &carol)).await;
    let r = ws
        .request(json!({"op": "publish", "channel": "chat:x", "data": big}))
        .await;
    assert_eq!(r["error"]["code"], "too_large", "{r}");
    let r = ws.request(json!({"op": "ping"})).await;
    assert!(r.get("result").is_some());

    // Connections per user: carol holds one; a second is allowed, a third is refused.
    let _second = sse_with(&server, &["chat:x"], &carol).await;
    let (status, body) = sse_status(&server, &["chat:x"], Some(&carol)).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("rate_limited"))
    );
    assert_eq!(upgrade_refused(ws_url_with(&server, &carol)).await, 429);
    let mut third = Ws::connect(&server).await;
    let r = third.request(json!({"op": "auth", "token": carol})).await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    // Closing one frees a place.
    drop(ws);
    let stats = server
        .wait_stats("carol's connection closed", |s| {
            s["connections"]["total"].as_u64() == Some(4)
        })
        .await;
    assert_eq!(stats["refused"]["per_user"], 3);
    let r = third.request(json!({"op": "auth", "token": carol})).await;
    assert_eq!(r["result"]["user"], "carol", "{r}");
    by.still_receive(&server).await;
}

#[tokio::test]
async fn an_expired_token_ends_the_connection_unless_refreshed() {
    let server = TestServer::start(&config()).await;
    let mut by = Bystanders::join(&server).await;
    let soon = now() + 2;
    let short = hs256(&claims(
        "erin",
        json!({"exp": soon, "channels": ["room:1"]}),
    ));
    let short_sse = hs256(&claims(
        "erin-sse",
        json!({"exp": soon, "channels": ["room:1"]}),
    ));
    let mut sse = sse_with(&server, &["room:1"], &short_sse).await;
    let mut lapsing = Ws::connect_url(&ws_url_with(&server, &short)).await;
    let mut refreshed = Ws::connect_url(&ws_url_with(&server, &short)).await;
    let fresh = hs256(&claims("erin", json!({"channels": ["room:1"]})));
    let r = refreshed
        .request(json!({"op": "auth", "token": fresh}))
        .await;
    assert!(r.get("result").is_some(), "{r}");
    // A refresh for another user is refused.
    let other = hs256(&claims("frank", json!({})));
    let r = refreshed
        .request(json!({"op": "auth", "token": other}))
        .await;
    assert_eq!(r["error"]["code"], "forbidden", "{r}");

    assert_eq!(lapsing.close_code().await, Some(4006));
    let events = sse.until_end().await;
    let last = events.last().expect("a disconnect event");
    assert_eq!(last.event, "herald.disconnect");
    let data: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(data["code"], 4006);
    assert_eq!(data["reconnect"], true);
    // The refreshed connection outlived the first token.
    assert!(now() > soon);
    let r = refreshed.request(json!({"op": "ping"})).await;
    assert!(r.get("result").is_some(), "{r}");
    assert_eq!(server.stats().await["refused"]["token_expired"], 2);
    by.still_receive(&server).await;
}

/// `POST /auth/refresh` with `token` as the bearer.
async fn refresh(server: &TestServer, token: &str) -> (u16, Value) {
    let resp = server
        .http
        .post(format!("{}/auth/refresh", server.url))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_token_is_renewed_without_fresh_login_data_and_the_connection_kept() {
    let server = TestServer::start(&config()).await;
    let user = r#"{"id":1001,"first_name":"Host"}"#;
    let init_data = herald_auth::sign_init_data(
        &[("user", user), ("auth_date", &now().to_string())],
        BOT_TOKEN,
    );
    let (status, login) = login(&server, &init_data).await;
    assert_eq!(status, 200, "{login}");
    let first = login["token"].as_str().unwrap();
    let mut ws = Ws::connect_url(&ws_url_with(&server, first)).await;
    let r = ws
        .request(json!({"op": "subscribe", "channel": "watch:party"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");

    // Renewed with the current token alone: same user and grants, a new expiry, the session's
    // end fixed by the login.
    let (status, renewed) = refresh(&server, first).await;
    assert_eq!(status, 200, "{renewed}");
    assert_eq!(renewed["user_id"], "1001");
    let started = now();
    let expires = renewed["expires_at"].as_u64().unwrap();
    assert!(
        (started + 590..=started + 600).contains(&expires),
        "{renewed}"
    );
    let ends = renewed["session_expires_at"].as_u64().unwrap();
    assert!(
        (started + 3590..=started + 3600).contains(&ends),
        "{renewed}"
    );
    let second = renewed["token"].as_str().unwrap().to_owned();
    // The open connection takes it without reconnecting and keeps its subscription.
    let r = ws.request(json!({"op": "auth", "token": second})).await;
    assert_eq!(r["result"]["user"], "1001", "{r}");
    server
        .publish("watch:party", None, json!("still here"))
        .await;
    assert_eq!(ws.next_push().await["data"], "still here");
    // A renewed token renews again, and the session's end does not move.
    let (status, again) = refresh(&server, &second).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(again["session_expires_at"], ends);

    // A session older than max_session_age is over; so is one whose age is unknown.
    let old = hs256(&claims(
        "olga",
        json!({"iat": now() - 3601, "channels": ["room:1"]}),
    ));
    let (status, body) = refresh(&server, &old).await;
    assert_eq!(status, 401, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("max_session_age"));
    let ageless = hs256(&claims("olga", json!({})));
    let (status, body) = refresh(&server, &ageless).await;
    assert_eq!(status, 401, "{body}");
    // An expired or forged token is not renewed.
    let expired = hs256(&claims(
        "olga",
        json!({"iat": now() - 60, "exp": now() - 1}),
    ));
    assert_eq!(refresh(&server, &expired).await.0, 401);
    assert_eq!(refresh(&server, "not-a-token").await.0, 401);
    assert_eq!(server.stats().await["refused"]["session_expired"], 2);
}

#[tokio::test]
async fn telegram_login_issues_a_token_for_that_user() {
    let server = TestServer::start(&config()).await;
    let user = r#"{"id":279058397,"first_name":"Vlad","username":"vdk"}"#;
    let auth_date = now().to_string();
    let init_data =
        herald_auth::sign_init_data(&[("user", user), ("auth_date", &auth_date)], BOT_TOKEN);
    let (status, body) = login(&server, &init_data).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "279058397");
    let token = body["token"].as_str().unwrap();
    // The token reads the user's own channel and the granted namespace, nothing else.
    let mut own = sse_with(&server, &["alerts#279058397", "watch:party"], token).await;
    own.wait_raw(b"id: ").await;
    let (status, _) = sse_status(&server, &["alerts#1"], Some(token)).await;
    assert_eq!(status, 403);
    // Presence shows the Telegram name.
    let mut ws = Ws::connect_url(&ws_url_with(&server, token)).await;
    let r = ws.request(json!({"op": "auth", "token": token})).await;
    assert_eq!(r["result"]["user"], "279058397");

    // Tampered, stale, or signed with another bot's token: 401 with the reason.
    let tampered = init_data.replace("Vlad", "Vlax");
    let stale = herald_auth::sign_init_data(
        &[("user", user), ("auth_date", &(now() - 7200).to_string())],
        BOT_TOKEN,
    );
    let other_bot = herald_auth::sign_init_data(
        &[("user", user), ("auth_date", &auth_date)],
        "987654321:another-bot-token",
    );
    for (what, data, reason) in [
        ("tampered", tampered, "bad_hash"),
        ("stale", stale, "stale"),
        ("other bot", other_bot, "bad_hash"),
    ] {
        let (status, body) = login(&server, &data).await;
        assert_eq!(status, 401, "{what}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(reason),
            "{what}: {body}"
        );
    }
    // The `Authorization: tma` form works as well.
    let resp = server
        .http
        .post(format!("{}/auth/telegram", server.url))
        .header("authorization", format!("tma {init_data}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn an_api_key_over_its_rate_gets_429() {
    let config = "[channels.defaults]\nsubscribe = \"public\"\n[[auth.api_keys]]\nname = \"worker\"\nkey = \"0123456789abcdef-worker\"\nrequests_per_second = 3\n";
    let server = TestServer::start(config).await;
    let mut listener = Sse::connect(&server, &["jobs"], None).await;
    listener.wait_raw(b"id: ").await;
    let mut statuses = Vec::new();
    for i in 0..4 {
        let resp = server
            .http
            .post(format!("{}/api/publish", server.url))
            .bearer_auth("0123456789abcdef-worker")
            .json(&json!({"channel": "jobs", "data": i}))
            .send()
            .await
            .unwrap();
        if resp.status() == 429 {
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        statuses.push(resp.status().as_u16());
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    for i in 0..3 {
        assert_eq!(listener.next_json().await.1["data"], json!(i));
    }
    let stats = server
        .http
        .get(format!("{}/api/stats", server.url))
        .bearer_auth("0123456789abcdef-worker")
        .send()
        .await
        .unwrap();
    // The stats request itself may be over the rate; either way the refusal was counted.
    if stats.status() == 200 {
        let v: Value = stats.json().await.unwrap();
        assert!(v["refused"]["api_rate"].as_u64().unwrap() >= 1);
    }
}

/// Runs the herald binary with `args` and then `--config FILE`; returns exit code, stdout and
/// stderr.
fn herald_with(args: &[&str], config: &TempFile) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(common::herald_bin())
        .args(args)
        .arg("--config")
        .arg(&config.0)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn check_config_reports_token_problems_and_redacts_secrets() {
    let bad = TempFile::with(
        "[auth.token]\nhmac_secrets = [\"short\"]\nalgorithms = [\"none\"]\npublic_keys = [\"/nonexistent/key.pem\"]\n",
    );
    let (code, _, err) = herald_with(&["check-config"], &bad);
    assert_eq!(code, Some(2));
    assert!(err.contains("hmac_secrets"), "{err}");
    assert!(err.contains("none"), "{err}");
    assert!(err.contains("/nonexistent/key.pem"), "{err}");
    let good = TempFile::with(&config());
    let (code, shown, err) = herald_with(&["check-config"], &good);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        !shown.contains(SECRET) && !shown.contains("made-up-bot-token"),
        "{shown}"
    );
    // `herald token` mints with the configured secret.
    let (code, token, err) = herald_with(&["token", "--user", "zoe", "--channel", "room:*"], &good);
    assert_eq!(code, Some(0), "{err}");
    let server = TestServer::start(&config()).await;
    let (status, _) = sse_status(&server, &["room:7"], Some(token.trim())).await;
    assert_eq!(status, 200);
}

/// Reads from `tcp` until the server closes it; returns what it sent.
async fn read_bytes_to_close(tcp: &mut tokio::net::TcpStream) -> Vec<u8> {
    use tokio::io::AsyncReadExt;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match within(WAIT, tcp.read(&mut buf)).await {
            Ok(0) | Err(_) => return out,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// Reads from `tcp` until the server closes it; returns what it sent, as text.
async fn read_to_close(tcp: &mut tokio::net::TcpStream) -> String {
    String::from_utf8_lossy(&read_bytes_to_close(tcp).await).into_owned()
}

#[tokio::test]
async fn hostile_transport_input_gets_a_timely_answer_and_bystanders_keep_receiving() {
    use tokio::io::AsyncWriteExt;
    let server = TestServer::start(&format!(
        "{}\n[server]\nheader_read_timeout = \"1s\"\n",
        config()
    ))
    .await;
    let mut by = Bystanders::join(&server).await;

    // Slowloris: a request head trickled a byte at a time never completes; the node closes
    // the connection after the header timeout instead of holding it.
    let mut slow = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    slow.write_all(b"GET /sse?channel=widget:alerts HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let trickle = async {
        for _ in 0..100 {
            if slow.write_all(b"X").await.is_err() {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        false
    };
    assert!(
        within(WAIT, trickle).await,
        "a trickled request head was still accepted after 10 s"
    );

    // A header flood: far more header bytes than any real request.
    let mut flood = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    let mut head = String::from("GET /api/stats HTTP/1.1\r\nHost: x\r\n");
    for i in 0..20_000 {
        head.push_str(&format!("X-Flood-{i}: {}\r\n", "v".repeat(40)));
    }
    head.push_str("\r\n");
    let _ = flood.write_all(head.as_bytes()).await;
    let answer = read_to_close(&mut flood).await;
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "header flood answered {:?}",
        answer.lines().next()
    );

    // Resume ids crafted to be huge or negative: 400 bad_position (or 431 for the header size).
    for id in [
        "-1".to_owned(),
        "abc--5".to_owned(),
        format!("e1-{}", "9".repeat(40)),
        format!("e1-{}", "1".repeat(20_000)),
    ] {
        let resp = server
            .http
            .get(sse_url(&server, &["widget:alerts"]))
            .header("last-event-id", id.as_str())
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        assert!(status == 400 || status == 431, "{id:.40}: {status}");
    }

    // WebSocket: a binary frame closes the connection with 4500 and invalid UTF-8 in a text
    // frame with 1007; a position beyond 64 bits gets bad_position and the connection stays.
    let mut ws = Ws::connect(&server).await;
    let r = ws
        .request(json!({"op": "subscribe", "channel": "widget:alerts",
            "since": {"epoch": "e1", "offset": 1e30}}))
        .await;
    assert_eq!(r["error"]["code"], "bad_position", "{r}");
    ws.inner
        .send(tokio_tungstenite::tungstenite::Message::Binary(
            vec![0xff, 0xfe].into(),
        ))
        .await
        .unwrap();
    assert_eq!(ws.close_code().await, Some(4500));
    let mut raw = tokio::net::TcpStream::connect(server.addr()).await.unwrap();
    raw.write_all(
        b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
          Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
    )
    .await
    .unwrap();
    // A masked text frame whose payload is not UTF-8 (mask key 0: payload as is) is answered
    // with a close frame: 1007 (invalid frame payload data) and a reason.
    raw.write_all(&[0x81, 0x82, 0, 0, 0, 0, 0xc3, 0x28])
        .await
        .unwrap();
    let answer = read_bytes_to_close(&mut raw).await;
    assert!(answer.starts_with(b"HTTP/1.1 101"), "{answer:?}");
    let head_end = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a complete response head")
        + 4;
    let mut frame = &answer[head_end..];
    // The hello (an unmasked text frame) comes first; skip it.
    if frame.first() == Some(&0x81) {
        let (len, header) = match frame[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([frame[2], frame[3]])), 4),
            n => (usize::from(n), 2),
        };
        assert!(frame[header..].starts_with(br#"{"push":"connected""#));
        frame = &frame[header + len..];
    }
    // An unmasked close frame (0x88) with a payload under 126 bytes: the code, then the reason.
    assert!(
        frame.len() >= 4 && frame[0] == 0x88,
        "no close frame: {frame:?}"
    );
    let len = usize::from(frame[1]);
    assert_eq!(frame.len(), 2 + len, "{frame:?}");
    assert_eq!(u16::from_be_bytes([frame[2], frame[3]]), 1007);
    let reason = std::str::from_utf8(&frame[4..]).unwrap();
    assert!(reason.contains("utf-8"), "{reason:?}");

    by.still_receive(&server).await;
    let (status, _) = server.get("/health/ready").await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn a_subscribe_flood_is_refused_past_its_rate() {
    let server = TestServer::start(&format!(
        "{}\n[connection]\nsubscribe_per_minute = 3\n",
        config().replace("[connection]\nmax_per_user = 2\n", "")
    ))
    .await;
    let mut by = Bystanders::join(&server).await;
    let mut ws = Ws::connect(&server).await;
    for i in 0..3 {
        let r = ws
            .request(json!({"op": "subscribe", "channel": format!("widget:{i}")}))
            .await;
        assert!(r.get("error").is_none(), "{r}");
    }
    let r = ws
        .request(json!({"op": "subscribe", "channel": "widget:3"}))
        .await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    assert_eq!(server.stats().await["refused"]["subscribe_rate"], 1);
    by.still_receive(&server).await;
}

/// Token checks cost the node a signature verification each, so a connection's `auth`
/// requests and its subscription tokens that fail share its subscribe budget: a client
/// cannot make the node verify without bound.
#[tokio::test]
async fn a_flood_of_token_checks_is_refused_past_the_subscribe_rate() {
    let server = TestServer::start(&format!(
        "{}\n[connection]\nsubscribe_per_minute = 3\n",
        config().replace("[connection]\nmax_per_user = 2\n", "")
    ))
    .await;
    let mut by = Bystanders::join(&server).await;
    let forged = unsigned(&claims("mallory", json!({"channels": ["room:1"]})));
    let mut ws = Ws::connect(&server).await;
    for _ in 0..2 {
        let r = ws.request(json!({"op": "auth", "token": forged})).await;
        assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    }
    let r = ws
        .request(json!({"op": "subscribe", "channel": "room:1", "token": forged}))
        .await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    // The budget is spent: further checks are refused before any verification.
    let r = ws.request(json!({"op": "auth", "token": forged})).await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    let r = ws
        .request(json!({"op": "subscribe", "channel": "room:1", "token": forged}))
        .await;
    assert_eq!(r["error"]["code"], "rate_limited", "{r}");
    assert_eq!(server.stats().await["refused"]["subscribe_rate"], 2);
    // Another connection has its own budget; bystanders kept receiving.
    let mut other = Ws::connect(&server).await;
    let r = other.request(json!({"op": "auth", "token": forged})).await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    by.still_receive(&server).await;
}

/// A WebSocket upgrade with extra request headers: the connection, or the refusal's status and
/// JSON body.
async fn ws_with_headers(
    server: &TestServer,
    headers: &[(&str, &str)],
) -> Result<Ws, (u16, Value)> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = server.ws_url().into_client_request().unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    match within(WAIT, tokio_tungstenite::connect_async(req)).await {
        Ok((inner, _)) => Ok(Ws::from_stream(inner)),
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            let body = resp.body().as_deref().unwrap_or_default();
            Err((
                resp.status().as_u16(),
                serde_json::from_slice(body).unwrap_or(Value::Null),
            ))
        }
        Err(e) => panic!("WebSocket upgrade failed: {e}"),
    }
}

/// An SSE request for `channels` with extra request headers: status and JSON body (Null for a
/// stream).
async fn sse_with_headers(
    server: &TestServer,
    channels: &[&str],
    query_token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut url = sse_url(server, channels);
    if let Some(t) = query_token {
        url.push_str(&format!("&token={}", urlencode(t)));
    }
    let mut req = server.http.get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = within(WAIT, req.send()).await.unwrap();
    let status = resp.status().as_u16();
    if status == 200 {
        return (status, Value::Null);
    }
    (status, resp.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn a_token_in_the_cookie_counts_only_from_a_trusted_origin() {
    // The default `cors_allowed_origins = ["*"]`: any page may connect, but not as its visitor.
    let server = TestServer::start(&config()).await;
    let mut by = Bystanders::join(&server).await;
    // Each case its own user, so `max_per_user` plays no part.
    let token = |user: &str| hs256(&claims(user, json!({"channels": ["room:1"]})));
    let cookie = |user: &str| format!("theme=dark; herald_token={}", token(user));
    let own = format!("http://{}", server.addr());
    let evil = "https://evil.example";

    // A page on another site, with the visitor's cookie: refused on both transports.
    let (status, body) = ws_with_headers(&server, &[("origin", evil), ("cookie", &cookie("v1"))])
        .await
        .err()
        .expect("a cross-site upgrade carrying the cookie was accepted");
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("cookie"),
        "{body}"
    );
    let (status, body) = sse_with_headers(
        &server,
        &["room:1"],
        None,
        &[("origin", evil), ("cookie", &cookie("v2"))],
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
    // The same page may still connect anonymously (the `*`), and with a token it holds itself
    // (query, header, first frame): the cookie is passed over for the query token.
    let mut anon = ws_with_headers(&server, &[("origin", evil)]).await.unwrap();
    let r = anon
        .request(json!({"op": "subscribe", "channel": "room:1"}))
        .await;
    assert_eq!(r["error"]["code"], "unauthorized", "{r}");
    let r = anon
        .request(json!({"op": "auth", "token": token("v3")}))
        .await;
    assert_eq!(r["result"]["user"], "v3", "{r}");
    let (status, body) = sse_with_headers(
        &server,
        &["room:1"],
        Some(&token("v4")),
        &[("origin", evil), ("cookie", &cookie("v5"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let bearer = format!("Bearer {}", token("v6"));
    let (status, body) = sse_with_headers(
        &server,
        &["room:1"],
        None,
        &[("origin", evil), ("authorization", &bearer)],
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Herald's own origin, and requests without `Origin`: the cookie counts (room:1 needs the
    // token's grant).
    let mut own_ws = ws_with_headers(&server, &[("origin", &own), ("cookie", &cookie("v7"))])
        .await
        .unwrap();
    let r = own_ws
        .request(json!({"op": "subscribe", "channel": "room:1"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let mut plain_ws = ws_with_headers(&server, &[("cookie", &cookie("v8"))])
        .await
        .unwrap();
    let r = plain_ws
        .request(json!({"op": "subscribe", "channel": "room:1"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    for headers in [
        vec![("origin", own.as_str()), ("cookie", &cookie("v9"))],
        vec![("cookie", &cookie("v10"))],
    ] {
        let (status, body) = sse_with_headers(&server, &["room:1"], None, &headers).await;
        assert_eq!(status, 200, "{headers:?}: {body}");
    }
    assert_eq!(server.stats().await["refused"]["origin"], 2);
    by.still_receive(&server).await;

    // An origin listed by name may use the cookie; others are refused.
    let listed = TestServer::start(&format!(
        "{}\n[server]\ncors_allowed_origins = [\"https://app.example\"]\n",
        config()
    ))
    .await;
    let app = "https://app.example";
    let mut app_ws = ws_with_headers(&listed, &[("origin", app), ("cookie", &cookie("w1"))])
        .await
        .unwrap();
    let r = app_ws
        .request(json!({"op": "subscribe", "channel": "room:1"}))
        .await;
    assert!(r.get("error").is_none(), "{r}");
    let (status, body) = sse_with_headers(
        &listed,
        &["room:1"],
        None,
        &[("origin", app), ("cookie", &cookie("w2"))],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = sse_with_headers(
        &listed,
        &["room:1"],
        None,
        &[("origin", evil), ("cookie", &cookie("w3"))],
    )
    .await;
    assert_eq!((status, &body["error"]["code"]), (403, &json!("forbidden")));
}

#[tokio::test]
async fn a_connection_past_its_channel_limit_is_refused() {
    let server = TestServer::start(&config().replace(
        "[connection]\nmax_per_user = 2\n",
        "[connection]\nmax_per_user = 2\nmax_channels = 2\n",
    ))
    .await;
    let mut by = Bystanders::join(&server).await;
    // SSE: three channels, as repeated parameters or as one comma list, before any stream.
    for channels in [
        &["widget:a", "widget:b", "widget:c"][..],
        &["widget:a,widget:b,widget:c"][..],
    ] {
        let (status, body) = sse_status(&server, channels, None).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (422, &json!("too_many_channels")),
            "{channels:?}: {body}"
        );
    }
    let mut two = Sse::connect(&server, &["widget:a", "widget:b"], None).await;
    two.wait_raw(b"id: ").await;
    // WebSocket: the third subscribe gets an error reply, and the connection keeps its two.
    let mut ws = Ws::connect(&server).await;
    for channel in ["widget:a", "widget:b"] {
        let r = ws
            .request(json!({"op": "subscribe", "channel": channel}))
            .await;
        assert!(r.get("error").is_none(), "{r}");
    }
    let r = ws
        .request(json!({"op": "subscribe", "channel": "widget:c"}))
        .await;
    assert_eq!(r["error"]["code"], "too_many_channels", "{r}");
    server.publish("widget:b", None, json!("b")).await;
    let p = ws.next_push().await;
    assert_eq!(
        (&p["channel"], &p["data"]),
        (&json!("widget:b"), &json!("b"))
    );
    assert_eq!(two.next_json().await.1["data"], "b");
    assert_eq!(server.stats().await["refused"]["too_many_channels"], 3);
    by.still_receive(&server).await;
}

/// An address of this machine that is not loopback (no packet is sent to find it).
fn non_loopback_address() -> Option<std::net::IpAddr> {
    let probe = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    probe.connect("192.0.2.1:9").ok()?;
    let ip = probe.local_addr().ok()?.ip();
    (!ip.is_loopback() && !ip.is_unspecified()).then_some(ip)
}

#[tokio::test]
async fn a_connection_flood_from_one_address_is_refused_past_its_limit() {
    let Some(ip) = non_loopback_address() else {
        assert!(
            !require_backends(),
            "HERALD_TEST_REQUIRE_BACKENDS=1 but this machine has no non-loopback address to connect from"
        );
        println!("skipped: this machine has no non-loopback address to connect from");
        return;
    };
    // Listening on that address makes the node see a non-loopback peer, which is what the
    // per-address limit counts; the API then needs a key, as it would in production.
    const KEY: &str = "attack-suite-api-key-0123456789";
    let server = TestServer::start_on(
        &format!(
            "{}\n[server]\nmax_connections_per_ip = 2\n[[auth.api_keys]]\nname = \"suite\"\nkey = \"{KEY}\"\n",
            config().replace(
                "channels = [\"watch:*\"]",
                "channels = [\"watch:*\"]\nlogins_per_minute_per_ip = 2"
            )
        ),
        &format!("{ip}:0"),
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = Sse::connect(&server, &["widget:alerts"], None).await;
        s.wait_raw(b"id: ").await;
        held.push(s);
    }
    let (status, body) = sse_status(&server, &["widget:alerts"], None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (429, &json!("rate_limited"))
    );
    assert_eq!(upgrade_refused(server.ws_url()).await, 429);
    // The two held streams still receive.
    let resp = server
        .http
        .post(format!("{}/api/publish", server.url))
        .bearer_auth(KEY)
        .json(&json!({"channel": "widget:alerts", "data": "still here"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for s in &mut held {
        assert_eq!(s.next_json().await.1["data"], "still here");
    }
    let stats: Value = server
        .http
        .get(format!("{}/api/stats", server.url))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["refused"]["per_ip"], 2);
    // Telegram logins from one address are rate limited too (2 a minute here).
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let (status, _) = login(&server, "auth_date=1&hash=00").await;
        statuses.push(status);
    }
    assert_eq!(statuses, [401, 401, 429]);
}

#[tokio::test]
async fn telegram_login_checks_the_ed25519_signature_with_only_a_bot_id() {
    // Telegram's published third-party example (bot id 7342037359, signed with the production
    // key). It dates from 2024, so the freshness window is widened for this test only.
    const INIT_DATA: &str = "user=%7B%22id%22%3A279058397%2C%22first_name%22%3A%22Vladislav%20%2B%20-%20%3F%20%5C%2F%22%2C%22last_name%22%3A%22Kibenko%22%2C%22username%22%3A%22vdkfrost%22%2C%22language_code%22%3A%22ru%22%2C%22is_premium%22%3Atrue%2C%22allows_write_to_pm%22%3Atrue%2C%22photo_url%22%3A%22https%3A%5C%2F%5C%2Ft.me%5C%2Fi%5C%2Fuserpic%5C%2F320%5C%2F4FPEE4tmP3ATHa57u6MqTDih13LTOiMoKoLDRG4PnSA.svg%22%7D&chat_instance=8134722200314281151&chat_type=private&auth_date=1733584787&hash=2174df5b000556d044f3f020384e879c8efcab55ddea2ced4eb752e93e7080d6&signature=zL-ucjNyREiHDE8aihFwpfR9aggP2xiAo3NSpfe-p7IbCisNlDKlo7Kb6G4D0Ao2mBrSgEk4maLSdv6MLIlADQ";
    let config = config().replace(
        &format!("bot_token = \"{BOT_TOKEN}\""),
        "bot_id = 7342037359\nmax_age = \"36500days\"",
    );
    let server = TestServer::start(&config).await;
    let (status, body) = login(&server, INIT_DATA).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "279058397");
    assert_eq!(body["user"]["first_name"], "Vladislav + - ? /");
    // One changed character, and the signature no longer verifies.
    let forged = INIT_DATA.replace("Kibenko", "Kibenka");
    let (status, body) = login(&server, &forged).await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("bad_signature"),
        "{body}"
    );
}

/// How one admission attempt ended, the same way for both transports: admitted (the held
/// connection), or refused with a status and stable code. SSE's "retry later" refusals are a
/// short 200 stream ending in `herald.disconnect`; they are reported with that close code.
enum Admission {
    /// Admitted; the connection is held open until dropped.
    Sse(#[allow(dead_code)] Box<Sse>),
    /// Admitted; the connection is held open until dropped.
    Ws(#[allow(dead_code)] Box<Ws>),
    Refused(u16, String),
}

impl Admission {
    fn refusal(&self) -> Option<(u16, &str)> {
        match self {
            Self::Refused(status, code) => Some((*status, code.as_str())),
            _ => None,
        }
    }
}

/// Opens an SSE stream of `widget:alerts` with `headers` (and `?token=`), reading past its
/// first block; a stream that says "retry later" is a refusal named by its close code.
async fn knock_sse(
    server: &TestServer,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Admission {
    let mut url = sse_url(server, &["widget:alerts"]);
    if let Some(t) = token {
        url.push_str(&format!("&token={}", urlencode(t)));
    }
    let mut req = server.http.get(url);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let resp = within(WAIT, req.send()).await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        return Admission::Refused(status, body["error"]["code"].as_str().unwrap_or("").into());
    }
    let mut sse = Sse::from_response(resp);
    sse.wait_raw(b"\n\n").await;
    if sse.hello.is_none() {
        // No hello: a "retry later" stream.
        let events = sse.until_end().await;
        let last = events
            .last()
            .expect("a refusal stream ends with herald.disconnect");
        assert_eq!(last.event, "herald.disconnect");
        let data: Value = serde_json::from_str(&last.data).unwrap();
        return Admission::Refused(200, format!("close {}", data["code"]));
    }
    Admission::Sse(Box::new(sse))
}

async fn knock_ws(server: &TestServer, token: Option<&str>, headers: &[(&str, &str)]) -> Admission {
    let bearer = token.map(|t| format!("Bearer {t}"));
    let mut all = headers.to_vec();
    if let Some(b) = &bearer {
        all.push(("authorization", b));
    }
    match ws_with_headers(server, &all).await {
        Ok(ws) => Admission::Ws(Box::new(ws)),
        Err((status, body)) => {
            Admission::Refused(status, body["error"]["code"].as_str().unwrap_or("").into())
        }
    }
}

async fn knock(
    transport: &str,
    server: &TestServer,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Admission {
    match transport {
        "sse" => knock_sse(server, token, headers).await,
        _ => knock_ws(server, token, headers).await,
    }
}

/// One admission path for every transport: each refusal cause, and a request with two, get the
/// same cause on SSE and WebSocket, mapped to each one's answer.
#[tokio::test]
async fn every_admission_refusal_is_the_same_cause_on_sse_and_websocket() {
    // Room for 3 connections, 1 per user, 1 per forwarded address (the node trusts loopback as
    // its proxy, so `X-Forwarded-For` names the client, and the test's own API calls need a
    // key), and one listed origin.
    const KEY: &str = "admission-suite-api-key-0123456789";
    let server = TestServer::start(&format!(
        "{}\n[server]\nmax_connections = 3\nmax_connections_per_ip = 1\ntrusted_proxies = [\"127.0.0.1\"]\ncors_allowed_origins = [\"https://app.example\"]\n[[auth.api_keys]]\nname = \"suite\"\nkey = \"{KEY}\"\n",
        config().replace("max_per_user = 2", "max_per_user = 1")
    ))
    .await;
    let stats = || async {
        let resp = server
            .http
            .get(format!("{}/api/stats", server.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        resp.json::<Value>().await.unwrap()
    };
    let solo = hs256(&claims("solo", json!({})));
    let other = hs256(&claims("other", json!({})));
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    for transport in ["sse", "ws"] {
        let evil = [("origin", "https://evil.example")];
        let origin = knock(transport, &server, None, &evil).await;
        match transport {
            // SSE answers cross-origin reads through CORS; the Origin rule is WebSocket's.
            "sse" => assert!(origin.refusal().is_none(), "SSE refused by origin"),
            _ => assert_eq!(origin.refusal(), Some((403, "forbidden"))),
        }
        drop(origin);
        let bad = knock(transport, &server, Some("not.a.token"), &[]).await;
        assert_eq!(bad.refusal(), Some((401, "unauthorized")), "{transport}");

        // Per address: the second connection from one forwarded address is refused; another
        // address is not.
        let first = knock(transport, &server, None, &from("203.0.113.7")).await;
        assert!(first.refusal().is_none(), "{transport}");
        let again = knock(transport, &server, None, &from("203.0.113.7")).await;
        assert_eq!(
            again.refusal(),
            Some((429, "rate_limited")),
            "{transport} per ip"
        );
        // Two causes (a bad token from an address at its limit): the token, on both.
        let both = knock(
            transport,
            &server,
            Some("not.a.token"),
            &from("203.0.113.7"),
        )
        .await;
        assert_eq!(
            both.refusal(),
            Some((401, "unauthorized")),
            "{transport} two causes"
        );
        drop(first);

        // Per user.
        let mine = knock(transport, &server, Some(&solo), &from("203.0.113.8")).await;
        assert!(mine.refusal().is_none(), "{transport}");
        let twice = knock(transport, &server, Some(&solo), &from("203.0.113.9")).await;
        assert_eq!(
            twice.refusal(),
            Some((429, "rate_limited")),
            "{transport} per user"
        );

        // The node's cap: two more fill it (3 in all); the next is told to retry later.
        let fill_a = knock(transport, &server, None, &from("203.0.113.10")).await;
        let fill_b = knock(transport, &server, Some(&other), &from("203.0.113.11")).await;
        assert!(fill_a.refusal().is_none() && fill_b.refusal().is_none());
        let full = knock(transport, &server, None, &from("203.0.113.12")).await;
        match transport {
            "sse" => assert_eq!(full.refusal(), Some((200, "close 4005"))),
            _ => assert_eq!(full.refusal(), Some((503, "server_full"))),
        }
        // Two causes again (a user at its limit on a full node): the user, on both.
        let user_and_full = knock(transport, &server, Some(&solo), &from("203.0.113.13")).await;
        assert_eq!(
            user_and_full.refusal(),
            Some((429, "rate_limited")),
            "{transport}"
        );
        drop((mine, fill_a, fill_b));
        // Every slot is given back once the connections close.
        let deadline = Instant::now() + WAIT;
        loop {
            let s = stats().await;
            if s["connections"]["sse"] == 0 && s["connections"]["ws"] == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "connections not closed: {s}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let stats = stats().await;
    let refused = &stats["refused"];
    assert_eq!(refused["origin"], 1);
    assert_eq!(refused["per_ip"], 2);
    assert_eq!(refused["per_user"], 4);
    assert_eq!(stats["connections"]["rejected"], 2);
}
