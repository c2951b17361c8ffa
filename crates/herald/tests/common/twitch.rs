//! A fake Twitch written from the EventSub WebSocket and Helix references: an EventSub socket
//! server (welcome, keepalives, notifications, `session_reconnect` with a reconnect URL,
//! revocations, and a socket that goes silent), Helix (subscriptions, streams, followers,
//! subscribers; 401 for a stale token) and OAuth (`/validate`, refresh with a rotated
//! refresh token). Tests drive it through its methods.

#![allow(dead_code, unreachable_pub)]

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// One client socket, as the fake sees it.
struct Sock {
    session: String,
    tx: mpsc::UnboundedSender<Message>,
    /// Sends nothing more, keepalives included (the socket stays open).
    silent: Arc<std::sync::atomic::AtomicBool>,
    closed: Arc<std::sync::atomic::AtomicBool>,
}

#[derive(Default)]
struct Fake {
    access_token: String,
    refresh_token: String,
    refreshes: u32,
    unauthorized: u32,
    /// (subscription type, session id).
    subscriptions: Vec<(String, String)>,
    creates: u32,
    /// Every socket accepted, in order.
    sockets: Vec<Sock>,
    sessions: u64,
    /// What `/validate` says the access token has left, in seconds.
    validate_expires_in: u64,
    live: bool,
    viewers: u64,
    followers: u64,
    subs: u64,
}

/// The fake Twitch's two addresses and state.
#[derive(Clone)]
pub struct FakeTwitch {
    /// `http://127.0.0.1:PORT` (Helix below `/helix`, OAuth below `/oauth2`).
    pub http: String,
    /// `ws://127.0.0.1:PORT/ws`.
    pub ws: String,
    fake: Arc<Mutex<Fake>>,
}

fn envelope(kind: &str, id: &str, extra_meta: Value, payload: Value) -> Message {
    let mut meta = json!({
        "message_id": id,
        "message_type": kind,
        "message_timestamp": "2026-12-05T10:00:00.123456789Z",
    });
    if let (Some(m), Some(extra)) = (meta.as_object_mut(), extra_meta.as_object()) {
        m.extend(extra.clone());
    }
    Message::Text(
        json!({"metadata": meta, "payload": payload})
            .to_string()
            .into(),
    )
}

fn bearer(headers: &HeaderMap, scheme: &str) -> String {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix(scheme))
        .unwrap_or_default()
        .to_owned()
}

impl FakeTwitch {
    /// Starts both servers, with `access`/`refresh` as the valid token pair.
    pub async fn start(access: &str, refresh: &str) -> Self {
        let fake = Arc::new(Mutex::new(Fake {
            access_token: access.to_owned(),
            refresh_token: refresh.to_owned(),
            validate_expires_in: 3600,
            ..Fake::default()
        }));
        let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let me = Self {
            http: format!("http://{}", http.local_addr().unwrap()),
            ws: format!("ws://{}/ws", ws.local_addr().unwrap()),
            fake: fake.clone(),
        };
        let app = Router::new()
            .route("/oauth2/validate", get(validate))
            .route("/oauth2/token", post(token))
            .route("/helix/eventsub/subscriptions", post(subscribe))
            .route("/helix/streams", get(streams))
            .route("/helix/channels/followers", get(followers))
            .route("/helix/subscriptions", get(subscriptions))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(http, app).await });
        let server = me.clone();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = ws.accept().await {
                tokio::spawn(server.clone().socket(tcp));
            }
        });
        me
    }

    /// One client socket: the welcome (a fresh session, or the session named by
    /// `reconnect_id`), keepalives when nothing else was sent, and what the test sends.
    #[allow(clippy::result_large_err)] // The handshake callback's signature is the library's.
    async fn socket(self, tcp: tokio::net::TcpStream) {
        let mut query = String::new();
        let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(
            tcp,
            |req: &tokio_tungstenite::tungstenite::handshake::server::Request, resp| {
                query = req.uri().query().unwrap_or_default().to_owned();
                Ok(resp)
            },
        )
        .await
        else {
            return;
        };
        let params: HashMap<String, String> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let keepalive = params
            .get("keepalive_timeout_seconds")
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(10)
            .clamp(10, 600);
        let (tx, mut rx) = mpsc::unbounded_channel();
        let silent = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let closed = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let session = {
            let mut f = self.fake.lock().unwrap();
            let session = match params.get("reconnect_id") {
                Some(id) => id.clone(),
                None => {
                    f.sessions += 1;
                    format!("session-{}", f.sessions)
                }
            };
            f.sockets.push(Sock {
                session: session.clone(),
                tx,
                silent: silent.clone(),
                closed: closed.clone(),
            });
            session
        };
        let welcome = envelope(
            "session_welcome",
            &format!("welcome-{}", fastrand::u64(..)),
            json!({}),
            json!({"session": {
                "id": session,
                "status": "connected",
                "keepalive_timeout_seconds": keepalive,
                "reconnect_url": null,
                "connected_at": "2026-12-05T10:00:00.000000000Z",
            }}),
        );
        if ws.send(welcome).await.is_err() {
            return;
        }
        // Keepalives a little sooner than the timeout, as Twitch sends them.
        let every = Duration::from_secs(keepalive) * 3 / 4;
        let mut last_sent = tokio::time::Instant::now();
        loop {
            tokio::select! {
                m = rx.recv() => {
                    let Some(m) = m else { break };
                    if silent.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    if ws.send(m).await.is_err() {
                        break;
                    }
                    last_sent = tokio::time::Instant::now();
                }
                () = tokio::time::sleep_until(last_sent + every) => {
                    last_sent = tokio::time::Instant::now();
                    if silent.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    let k = envelope("session_keepalive", &format!("ka-{}", fastrand::u64(..)), json!({}), json!({}));
                    if ws.send(k).await.is_err() {
                        break;
                    }
                }
                got = ws.next() => match got {
                    Some(Ok(Message::Pong(_) | Message::Ping(_))) => {}
                    // The socket is receive-only: anything else is a client error (4001).
                    Some(Ok(Message::Text(_) | Message::Binary(_))) => {
                        let _ = ws.close(Some(tokio_tungstenite::tungstenite::protocol::CloseFrame {
                            code: 4001.into(),
                            reason: "client sent inbound traffic".into(),
                        })).await;
                        break;
                    }
                    _ => break,
                },
            }
        }
        closed.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Waits until `pred` holds of the fake's state (10 s at most).
    async fn until(&self, what: &str, pred: impl Fn(&Fake) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !pred(&self.fake.lock().unwrap()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "fake Twitch never saw {what}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until `n` subscriptions were created in all.
    pub async fn created(&self, n: u32) {
        self.until(&format!("{n} subscriptions created"), |f| f.creates >= n)
            .await;
    }

    /// Subscriptions created so far.
    pub fn creates(&self) -> u32 {
        self.fake.lock().unwrap().creates
    }

    /// Sockets accepted so far.
    pub fn sockets(&self) -> usize {
        self.fake.lock().unwrap().sockets.len()
    }

    /// Waits until `n` sockets were accepted.
    pub async fn socket_count(&self, n: usize) {
        self.until(&format!("{n} sockets"), |f| f.sockets.len() >= n)
            .await;
    }

    /// Whether socket `i` (in accept order) was closed.
    pub fn closed(&self, i: usize) -> bool {
        self.fake.lock().unwrap().sockets[i]
            .closed
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Token refreshes and 401s so far.
    pub fn refreshes(&self) -> (u32, u32) {
        let f = self.fake.lock().unwrap();
        (f.refreshes, f.unauthorized)
    }

    /// Sets what Helix reports.
    pub fn set_stats(&self, live: bool, viewers: u64, followers: u64, subs: u64) {
        let mut f = self.fake.lock().unwrap();
        (f.live, f.viewers, f.followers, f.subs) = (live, viewers, followers, subs);
    }

    fn send(&self, socket: usize, m: Message) {
        let f = self.fake.lock().unwrap();
        let _ = f.sockets[socket].tx.send(m);
    }

    /// The newest socket's index.
    pub fn newest(&self) -> usize {
        self.fake.lock().unwrap().sockets.len() - 1
    }

    /// Sends a notification of `kind` with `message_id` on socket `socket`; a follow also
    /// counts toward the followers Helix reports.
    pub fn notify_on(&self, socket: usize, kind: &str, message_id: &str, event: Value) {
        if kind == "channel.follow" {
            self.fake.lock().unwrap().followers += 1;
        }
        let session = self.fake.lock().unwrap().sockets[socket].session.clone();
        let m = envelope(
            "notification",
            message_id,
            json!({"subscription_type": kind, "subscription_version": "1"}),
            json!({
                "subscription": {"id": format!("sub-{kind}"), "status": "enabled", "type": kind,
                    "version": "1", "cost": 0, "condition": {"broadcaster_user_id": "1337"},
                    "transport": {"method": "websocket", "session_id": session},
                    "created_at": "2026-12-05T09:00:00Z"},
                "event": event,
            }),
        );
        self.send(socket, m);
    }

    /// [`Self::notify_on`] the newest socket.
    pub fn notify(&self, kind: &str, message_id: &str, event: Value) {
        self.notify_on(self.newest(), kind, message_id, event);
    }

    /// Sends `session_reconnect` on the newest socket, naming a URL that continues its session.
    pub fn ask_reconnect(&self) -> usize {
        let i = self.newest();
        let session = self.fake.lock().unwrap().sockets[i].session.clone();
        let url = format!("{}?reconnect_id={session}", self.ws);
        let m = envelope(
            "session_reconnect",
            &format!("rc-{}", fastrand::u64(..)),
            json!({}),
            json!({"session": {"id": session, "status": "reconnecting",
                "keepalive_timeout_seconds": null, "reconnect_url": url,
                "connected_at": "2026-12-05T10:00:00.000000000Z"}}),
        );
        self.send(i, m);
        i
    }

    /// Revokes the subscription of `kind` on the newest socket.
    pub fn revoke(&self, kind: &str) {
        let m = envelope(
            "revocation",
            &format!("rv-{}", fastrand::u64(..)),
            json!({"subscription_type": kind, "subscription_version": "1"}),
            json!({"subscription": {"id": format!("sub-{kind}"), "status": "authorization_revoked",
                "type": kind, "version": "1", "cost": 0, "condition": {},
                "transport": {"method": "websocket", "session_id": "x"},
                "created_at": "2026-12-05T09:00:00Z"}}),
        );
        self.send(self.newest(), m);
    }

    /// The newest socket stops sending anything, keepalives included, and stays open.
    pub fn silence(&self) {
        let f = self.fake.lock().unwrap();
        f.sockets
            .last()
            .unwrap()
            .silent
            .store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// The current access token stops working (as when it expired early or was revoked):
    /// Helix answers 401 until the client refreshes.
    pub fn expire_access_token(&self) {
        self.fake.lock().unwrap().access_token = format!("expired-{}", fastrand::u64(..));
    }

    /// The access token is about to expire: `/validate` says `secs` are left.
    pub fn expires_in(&self, secs: u64) {
        self.fake.lock().unwrap().validate_expires_in = secs;
    }

    /// The refresh token now valid.
    pub fn refresh_token(&self) -> String {
        self.fake.lock().unwrap().refresh_token.clone()
    }
}

type Shared = State<Arc<Mutex<Fake>>>;

async fn validate(State(fake): Shared, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let f = fake.lock().unwrap();
    if bearer(&headers, "OAuth ") == f.access_token {
        (
            StatusCode::OK,
            Json(
                json!({"client_id": "cid", "user_id": "1337", "expires_in": f.validate_expires_in, "scopes": []}),
            ),
        )
    } else {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"status": 401, "message": "invalid access token"})),
        )
    }
}

async fn token(State(fake): Shared, body: String) -> (StatusCode, Json<Value>) {
    let form: HashMap<String, String> = form_urlencoded::parse(body.as_bytes())
        .into_owned()
        .collect();
    let mut f = fake.lock().unwrap();
    let ok = form.get("grant_type").map(String::as_str) == Some("refresh_token")
        && form.get("refresh_token") == Some(&f.refresh_token)
        && form.get("client_id").map(String::as_str) == Some("cid")
        && form.get("client_secret").map(String::as_str) == Some("csecret");
    if !ok {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": 400, "message": "Invalid refresh token"})),
        );
    }
    f.refreshes += 1;
    // Refresh tokens rotate: the old one stops working.
    f.access_token = format!("access-{}", f.refreshes);
    f.refresh_token = format!("refresh-{}", f.refreshes);
    (
        StatusCode::OK,
        Json(
            json!({"access_token": f.access_token, "refresh_token": f.refresh_token,
            "expires_in": 14_000, "scope": [], "token_type": "bearer"}),
        ),
    )
}

/// Checks the bearer token and client id of a Helix call.
fn authorized(f: &mut Fake, headers: &HeaderMap) -> Result<(), (StatusCode, Json<Value>)> {
    let client = headers.get("client-id").and_then(|v| v.to_str().ok());
    if bearer(headers, "Bearer ") != f.access_token || client != Some("cid") {
        f.unauthorized += 1;
        return Err((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": "Unauthorized", "status": 401, "message": "Invalid OAuth token"})),
        ));
    }
    Ok(())
}

async fn subscribe(
    State(fake): Shared,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut f = fake.lock().unwrap();
    if let Err(e) = authorized(&mut f, &headers) {
        return e;
    }
    let kind = body["type"].as_str().unwrap_or_default().to_owned();
    let session = body["transport"]["session_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let version_ok = match kind.as_str() {
        "channel.follow" => {
            body["version"] == "2" && body["condition"]["moderator_user_id"] == "1337"
        }
        _ => body["version"] == "1",
    };
    if !version_ok || !f.sockets.iter().any(|s| s.session == session) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": 400, "message": "bad version, condition or session"})),
        );
    }
    if f.subscriptions.contains(&(kind.clone(), session.clone())) {
        return (
            StatusCode::CONFLICT,
            Json(json!({"status": 409, "message": "subscription already exists"})),
        );
    }
    f.subscriptions.push((kind.clone(), session.clone()));
    f.creates += 1;
    (
        StatusCode::ACCEPTED,
        Json(
            json!({"data": [{"id": format!("sub-{}", f.creates), "status": "enabled",
            "type": kind, "version": body["version"], "condition": body["condition"],
            "transport": {"method": "websocket", "session_id": session}, "cost": 0}],
            "total": f.subscriptions.len(), "total_cost": 0, "max_total_cost": 10}),
        ),
    )
}

async fn streams(
    State(fake): Shared,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> (StatusCode, Json<Value>) {
    let mut f = fake.lock().unwrap();
    if let Err(e) = authorized(&mut f, &headers) {
        return e;
    }
    assert_eq!(q.get("user_id").map(String::as_str), Some("1337"));
    let data = if f.live {
        json!([{"id": "s1", "user_id": "1337", "user_login": "kai", "type": "live",
            "viewer_count": f.viewers, "title": "hello"}])
    } else {
        json!([])
    };
    (
        StatusCode::OK,
        Json(json!({"data": data, "pagination": {}})),
    )
}

async fn followers(State(fake): Shared, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let mut f = fake.lock().unwrap();
    if let Err(e) = authorized(&mut f, &headers) {
        return e;
    }
    (
        StatusCode::OK,
        Json(json!({"total": f.followers, "data": [], "pagination": {}})),
    )
}

async fn subscriptions(State(fake): Shared, headers: HeaderMap) -> (StatusCode, Json<Value>) {
    let mut f = fake.lock().unwrap();
    if let Err(e) = authorized(&mut f, &headers) {
        return e;
    }
    (
        StatusCode::OK,
        Json(json!({"total": f.subs, "points": f.subs, "data": [], "pagination": {}})),
    )
}
