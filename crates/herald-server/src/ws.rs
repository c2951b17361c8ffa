//! `GET /ws`: the WebSocket transport. One task per connection owns the socket, the session and
//! the outbox, and selects over shutdown, queued pushes, incoming frames and the heartbeat
//! deadline. The JSON protocol is in `docs/protocol.md`.

use crate::api::history_json;
use crate::{ApiError, App};
use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use herald_core::{ChannelName, Emit, Outgoing, Session, SessionError, Transport};
use herald_protocol::{ClientRequest, CloseCode, ErrorCode, Request, ServerPush};
use serde_json::json;
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tracing::Instrument;

/// tungstenite's read buffer per connection (its default is 128 KiB).
const READ_BUFFER_BYTES: usize = 1024;

/// Most publications one `history` request returns.
const MAX_HISTORY_LIMIT: u32 = 10_000;

pub(crate) async fn handler(
    State(app): State<App>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            return ApiError::new(
                rejection.status(),
                ErrorCode::BadRequest,
                format!("not a WebSocket upgrade: {}", rejection.body_text()),
            )
            .into_response()
        }
    };
    if app.shutdown.is_cancelled() {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "shutting down",
        )
        .into_response();
    }
    let Ok(permit) = app.connections.clone().try_acquire_owned() else {
        app.node.stats.connections_rejected.fetch_add(1, Relaxed);
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::ServerFull,
            "this node is at its connection limit",
        )
        .into_response();
    };
    let max = usize::try_from(app.ws.max_message.as_u64()).unwrap_or(usize::MAX);
    let tracker = app.tracker.clone();
    // tungstenite zero-fills its whole read buffer before every read attempt; client frames
    // are small, so a small buffer keeps both CPU per wake-up and idle memory low.
    ws.read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| tracker.track_future(run(app, socket, permit)))
}

type Sink = futures_util::stream::SplitSink<WebSocket, Message>;

fn text(bytes: &bytes::Bytes) -> Message {
    // Utf8Bytes validates once per send; the bytes themselves are shared, not copied.
    match Utf8Bytes::try_from(bytes.clone()) {
        Ok(t) => Message::Text(t),
        Err(_) => Message::Binary(bytes.clone()),
    }
}

async fn run(app: App, socket: WebSocket, _permit: OwnedSemaphorePermit) {
    let (mut session, mut outbox) = Session::new(app.node.clone(), Transport::Ws, app.limits);
    let span = tracing::debug_span!("conn", conn_id = %session.conn_id(), transport = "ws");
    async move {
        tracing::debug!("WebSocket connected.");
        let (mut sink, mut stream) = socket.split();
        let mut buf: Vec<Outgoing> = Vec::new();
        let mut emits: Vec<Emit> = Vec::new();
        let ping_every = app.ws.ping_interval;
        let idle = app.ws.idle_timeout;
        let mut last_seen = Instant::now();
        let mut last_ping = Instant::now();
        let heartbeat = tokio::time::sleep(ping_every);
        tokio::pin!(heartbeat);
        // Created once: each `cancelled()` call registers with the shared root token.
        let shutdown = app.shutdown.cancelled();
        tokio::pin!(shutdown);
        let close = loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break Some(CloseCode::ServerShutdown),
                r = outbox.recv(&mut buf) => match r {
                    Ok(()) => {
                        for item in buf.drain(..) {
                            session.accept(item, &mut emits).await;
                        }
                        if send_emits(&mut sink, &mut emits).await.is_err() {
                            break None;
                        }
                    }
                    Err(code) => break Some(code),
                },
                msg = stream.next() => {
                    last_seen = Instant::now();
                    match msg {
                        Some(Ok(Message::Text(t))) => {
                            let reply = handle(&mut session, t.as_str(), &mut emits).await;
                            if sink.feed(Message::Text(reply.into())).await.is_err()
                                || send_emits(&mut sink, &mut emits).await.is_err()
                            {
                                break None;
                            }
                        }
                        Some(Ok(Message::Binary(_))) => break Some(CloseCode::ProtocolError),
                        Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                        Some(Ok(Message::Close(_))) => {
                            // tungstenite queued the close reply; flush it so the client sees a
                            // clean close rather than a dropped connection.
                            let _ = sink.close().await;
                            break None;
                        }
                        None => break None,
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "WebSocket read failed.");
                            // tungstenite reports oversize frames as a capacity error.
                            let msg = e.to_string();
                            let too_big = msg.contains("too long") || msg.contains("Space limit");
                            break too_big.then_some(CloseCode::MessageTooBig);
                        }
                    }
                }
                () = &mut heartbeat => {
                    let now = Instant::now();
                    if now.duration_since(last_seen) >= idle {
                        break Some(CloseCode::HeartbeatTimeout);
                    }
                    if now.duration_since(last_ping) >= ping_every {
                        if sink.send(Message::Ping(bytes::Bytes::new())).await.is_err() {
                            break None;
                        }
                        last_ping = now;
                    }
                    let next = (last_ping + ping_every).min(last_seen + idle);
                    heartbeat.as_mut().reset(next.max(now + std::time::Duration::from_millis(1)));
                }
            }
        };
        if let Some(code) = close {
            tracing::debug!(
                code = code.code(),
                reason = code.reason(),
                "Closing WebSocket."
            );
            let frame = CloseFrame {
                code: code.code(),
                reason: Utf8Bytes::from_static(code.reason()),
            };
            let _ = sink.send(Message::Close(Some(frame))).await;
        }
        session.close().await;
        tracing::debug!("WebSocket ended.");
    }
    .instrument(span)
    .await;
}

async fn send_emits(sink: &mut Sink, emits: &mut Vec<Emit>) -> Result<(), axum::Error> {
    if emits.is_empty() {
        return sink.flush().await;
    }
    for emit in emits.drain(..) {
        let msg = match emit {
            Emit::Publication(p) => text(p.json()),
            Emit::Presence(e) => text(e.json()),
            Emit::Reset { reason, channels } => Message::Text(
                ServerPush::Reset {
                    reason: reason.as_str(),
                    channels: &channels,
                }
                .to_json()
                .into(),
            ),
        };
        sink.feed(msg).await?;
    }
    sink.flush().await
}

fn error_reply(id: Option<u64>, e: &SessionError) -> String {
    ServerPush::error(id, e.code(), &e.to_string())
}

/// Handles one text frame; returns the reply and leaves pushes (replay) in `emits`.
async fn handle(session: &mut Session, text: &str, emits: &mut Vec<Emit>) -> String {
    let req = match ClientRequest::parse(text) {
        Ok(r) => r,
        Err(e) => return ServerPush::error(e.id, e.code, &e.message),
    };
    let id = req.id;
    match req.request {
        Request::Subscribe { channel, since } => {
            match session.subscribe(&channel, since.clone(), emits).await {
                Ok(position) => {
                    let recovered =
                        since.is_some() && !emits.iter().any(|e| matches!(e, Emit::Reset { .. }));
                    ServerPush::reply(
                        id,
                        &json!({"channel": channel, "position": position, "recovered": recovered}),
                    )
                }
                Err(e) => error_reply(Some(id), &e),
            }
        }
        Request::Unsubscribe { channel } => match session.unsubscribe(&channel).await {
            Ok(()) => ServerPush::reply(id, &json!({})),
            Err(e) => error_reply(Some(id), &e),
        },
        Request::Publish {
            channel,
            event,
            data,
        } => match session.publish(&channel, event.as_deref(), data).await {
            Ok(p) => ServerPush::reply(
                id,
                &json!({"channel": p.channel.as_str(), "offset": p.position.offset, "epoch": p.position.epoch, "time": p.time_ms}),
            ),
            Err(e) => error_reply(Some(id), &e),
        },
        Request::History {
            channel,
            since,
            limit,
        } => {
            let limit = limit.unwrap_or(100);
            if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
                return ServerPush::error(
                    Some(id),
                    ErrorCode::BadRequest,
                    &format!("`limit` must be from 1 to {MAX_HISTORY_LIMIT}"),
                );
            }
            match session.history(&channel, since, limit as usize).await {
                Ok(page) => match ChannelName::parse(&channel) {
                    Ok(name) => ServerPush::reply(id, &history_json(&name, &page)),
                    Err(e) => error_reply(Some(id), &SessionError::BadChannel(e)),
                },
                Err(e) => error_reply(Some(id), &e),
            }
        }
        Request::Presence { channel } => match session.presence(&channel).await {
            Ok(members) => ServerPush::reply(id, &json!({"channel": channel, "members": members})),
            Err(e) => error_reply(Some(id), &e),
        },
        Request::Ping => ServerPush::reply(id, &json!({})),
    }
}
