//! One EventSub WebSocket session: welcome, subscriptions, notifications, the keepalive
//! watchdog and the `session_reconnect` hand-off.

use super::Account;
use crate::run::Backoff;
use futures_util::StreamExt;
use herald_core::ConnectorState;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Longest wait for a new socket's welcome.
const WELCOME_WAIT: Duration = Duration::from_secs(10);

/// The subscription version Herald creates for `kind`, or `None` when it does not know it.
pub(crate) fn version(kind: &str) -> Option<&'static str> {
    match kind {
        "channel.follow" => Some("2"),
        "channel.subscribe"
        | "channel.subscription.gift"
        | "channel.cheer"
        | "channel.raid"
        | "stream.online"
        | "stream.offline" => Some("1"),
        _ => None,
    }
}

fn condition(kind: &str, broadcaster: &str) -> Value {
    match kind {
        "channel.follow" => {
            json!({"broadcaster_user_id": broadcaster, "moderator_user_id": broadcaster})
        }
        "channel.raid" => json!({"to_broadcaster_user_id": broadcaster}),
        _ => json!({"broadcaster_user_id": broadcaster}),
    }
}

/// Silence tolerated beyond the keepalive timeout before the socket is taken for dead.
fn margin(keepalive: Duration) -> Duration {
    (keepalive / 4).max(Duration::from_secs(2))
}

async fn connect(url: &str) -> Result<Socket, String> {
    let (socket, _) = tokio::time::timeout(WELCOME_WAIT, tokio_tungstenite::connect_async(url))
        .await
        .map_err(|_| format!("connecting to {url} timed out"))?
        .map_err(|e| format!("connecting to {url}: {e}"))?;
    Ok(socket)
}

/// A text frame's envelope, or why the socket ended.
async fn next_envelope(socket: &mut Socket) -> Result<Option<Value>, String> {
    match socket.next().await {
        None => Err("the socket closed".to_owned()),
        Some(Err(e)) => Err(format!("reading the socket: {e}")),
        Some(Ok(Message::Text(t))) => serde_json::from_str(&t)
            .map(Some)
            .map_err(|e| format!("a frame that is not JSON: {e}")),
        Some(Ok(Message::Close(c))) => Err(match c {
            Some(c) => format!("closed by Twitch: {} {}", u16::from(c.code), c.reason),
            None => "closed by Twitch".to_owned(),
        }),
        // Pings are answered by the library; nothing else is expected.
        Some(Ok(_)) => Ok(None),
    }
}

/// Waits for the welcome on a new socket: its session id and keepalive timeout.
async fn welcome(socket: &mut Socket) -> Result<(String, Duration), String> {
    let wait = async {
        loop {
            if let Some(v) = next_envelope(socket).await? {
                if v["metadata"]["message_type"] == "session_welcome" {
                    let session = &v["payload"]["session"];
                    let id = session["id"].as_str().unwrap_or_default().to_owned();
                    let secs = session["keepalive_timeout_seconds"].as_u64().unwrap_or(10);
                    return Ok::<_, String>((id, Duration::from_secs(secs)));
                }
            }
        }
    };
    tokio::time::timeout(WELCOME_WAIT, wait)
        .await
        .map_err(|_| "no session_welcome within 10s".to_owned())?
}

/// Creates every configured subscription on `session`, side by side (Twitch closes a
/// session that has none after its first keepalive window).
async fn subscribe_all(account: &Account, session: &str) -> Result<(), String> {
    let calls = account.config.events.iter().map(|kind| async move {
        let body = json!({
            "type": kind,
            "version": version(kind).unwrap_or("1"),
            "condition": condition(kind, &account.config.broadcaster_id),
            "transport": {"method": "websocket", "session_id": session},
        });
        let r = account
            .helix
            .call(Method::POST, "/eventsub/subscriptions", Some(&body))
            .await;
        (kind, r)
    });
    let mut created = 0;
    for (kind, r) in futures_util::future::join_all(calls).await {
        match r {
            Ok((StatusCode::ACCEPTED | StatusCode::CONFLICT, _)) => created += 1,
            Ok((status, v)) => {
                let e = format!("subscribing to {kind}: Helix answered {status}: {v}");
                account.status.error(&e);
                tracing::warn!(connector = %account.config.name, error = %e, "A Twitch subscription was refused.");
            }
            Err(e) => return Err(format!("subscribing to {kind}: {e}")),
        }
    }
    account.status.add("subscriptions_created", created);
    tracing::info!(connector = %account.config.name, session, created, "Twitch EventSub subscriptions created.");
    Ok(())
}

/// What a message asks of the session.
enum Next {
    Continue,
    /// `session_reconnect`: move to this URL.
    MoveTo(String),
}

/// Handles one envelope: publishes notifications (retrying while the engine cannot take
/// them; the socket waits meanwhile) and records revocations.
async fn handle(account: &Account, token: &CancellationToken, v: &Value) -> Next {
    let meta = &v["metadata"];
    match meta["message_type"].as_str().unwrap_or_default() {
        "notification" => {
            let id = meta["message_id"].as_str().unwrap_or_default();
            let kind = meta["subscription_type"]
                .as_str()
                .or_else(|| v["payload"]["subscription"]["type"].as_str())
                .unwrap_or_default();
            let event = &v["payload"]["event"];
            if let Some(sent) = meta["message_timestamp"]
                .as_str()
                .and_then(|t| humantime::parse_rfc3339_weak(t).ok())
            {
                let lag = std::time::SystemTime::now()
                    .duration_since(sent)
                    .unwrap_or_default();
                account
                    .status
                    .set_lag_ms(u64::try_from(lag.as_millis()).unwrap_or(u64::MAX));
            }
            if id.is_empty() || kind.is_empty() {
                account
                    .status
                    .count(herald_core::ConnectorOutcome::Rejected, 1);
                return Next::Continue;
            }
            let mut backoff = Backoff::default();
            let new = loop {
                match account.publish_event(id, kind, event).await {
                    Ok(new) => break new,
                    Err(e) => account.status.error(&e),
                }
                tokio::select! {
                    () = token.cancelled() => {
                        tracing::error!(connector = %account.config.name, kind, id, "A Twitch notification was not published before shutdown.");
                        return Next::Continue;
                    }
                    () = tokio::time::sleep(backoff.next()) => {}
                }
            };
            if !new {
                return Next::Continue;
            }
            match kind {
                "channel.follow" => account.update_stats(|s| s.followers += 1).await,
                // One per new subscriber, gifted ones included (the gift's own event is the
                // gifter's, so counting it too would count them twice); an ended one leaves
                // the count at the next poll.
                "channel.subscribe" => account.update_stats(|s| s.subs += 1).await,
                "stream.online" => account.update_stats(|s| s.live = true).await,
                "stream.offline" => {
                    account
                        .update_stats(|s| {
                            s.live = false;
                            s.viewers = 0;
                        })
                        .await;
                }
                _ => {}
            }
            Next::Continue
        }
        "session_reconnect" => match v["payload"]["session"]["reconnect_url"].as_str() {
            Some(url) => Next::MoveTo(url.to_owned()),
            None => Next::Continue,
        },
        "revocation" => {
            let sub = &v["payload"]["subscription"];
            let e = format!(
                "subscription {} revoked: {}",
                sub["type"].as_str().unwrap_or("?"),
                sub["status"].as_str().unwrap_or("?")
            );
            account.status.add("revocations", 1);
            account.status.error(&e);
            tracing::warn!(connector = %account.config.name, reason = %e, "Twitch revoked a subscription; no more of its events will come until it is authorized again.");
            Next::Continue
        }
        _ => Next::Continue,
    }
}

/// Runs one session from a fresh connection until `token` is cancelled (`Ok`) or the
/// session is lost (`Err`, after which the caller connects again and subscribes anew).
pub(super) async fn session(
    account: &Account,
    token: &CancellationToken,
    backoff: &mut Backoff,
) -> Result<(), String> {
    let base = &account.config.eventsub_url;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!(
        "{base}{sep}keepalive_timeout_seconds={}",
        account.config.keepalive_timeout.as_secs()
    );
    let mut current = connect(&url).await?;
    let (session_id, mut keepalive) = welcome(&mut current).await?;
    subscribe_all(account, &session_id).await?;
    account.status.set_state(ConnectorState::Connected);
    backoff.reset();
    let mut deadline = Instant::now() + keepalive + margin(keepalive);
    // The socket being moved to after `session_reconnect`, before its welcome.
    let mut moving: Option<tokio::task::JoinHandle<Result<Socket, String>>> = None;
    let mut next: Option<Socket> = None;
    loop {
        tokio::select! {
            () = token.cancelled() => {
                let _ = current.close(None).await;
                return Ok(());
            }
            () = tokio::time::sleep_until(deadline) => {
                return Err(format!(
                    "no message for {:?} (keepalive timeout {keepalive:?})",
                    keepalive + margin(keepalive)
                ));
            }
            got = next_envelope(&mut current) => {
                deadline = Instant::now() + keepalive + margin(keepalive);
                if let Some(v) = got? {
                    if let Next::MoveTo(url) = handle(account, token, &v).await {
                        tracing::info!(connector = %account.config.name, "Twitch asked to reconnect; moving to the new socket.");
                        moving = Some(tokio::spawn(async move { connect(&url).await }));
                    }
                }
            }
            joined = async { moving.as_mut().expect("guarded").await }, if moving.is_some() => {
                moving = None;
                next = Some(joined.map_err(|e| e.to_string())??);
            }
            got = async { next_envelope(next.as_mut().expect("guarded")).await }, if next.is_some() => {
                let Some(v) = got? else { continue };
                if v["metadata"]["message_type"] == "session_welcome" {
                    let secs = v["payload"]["session"]["keepalive_timeout_seconds"].as_u64();
                    keepalive = secs.map_or(keepalive, Duration::from_secs);
                    let mut old = std::mem::replace(&mut current, next.take().expect("guarded"));
                    let _ = old.close(None).await;
                    account.status.reconnected();
                    deadline = Instant::now() + keepalive + margin(keepalive);
                    tracing::info!(connector = %account.config.name, "Moved to the new Twitch socket; subscriptions carried over.");
                } else {
                    handle(account, token, &v).await;
                }
            }
        }
    }
}
