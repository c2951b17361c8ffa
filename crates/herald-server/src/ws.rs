//! `GET /ws`: the WebSocket transport. One task per connection owns the socket, the session and
//! the outbox, and selects over queued pushes (shutdown arrives as a closed outbox), incoming
//! frames and the heartbeat deadline. The JSON protocol is in `docs/protocol.md`.
//!
//! tungstenite reads and parses client frames and writes control frames (ping, pong, close).
//! Pushes bypass it: each publication carries its complete text frame, built once
//! ([`herald_core::Publication::ws_frame`]), and the connection writes those shared bytes
//! straight to the socket: a batch is copied into the worker thread's scratch buffer and
//! written in pieces of at most 64 KiB, so a connection keeps no write buffer of its own
//! (`scratch.rs`).

use crate::admission::{Held, Knock};
use crate::gate::ReadGate;
use crate::timer::ConnTimer;
use crate::App;
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::stream::FuturesUnordered;
use futures_util::{SinkExt, StreamExt};
use herald_core::{Emit, Outbox, Outgoing, Session, Transport, Writes};
use herald_protocol::{ws_text_frame, CloseCode, Disconnect, ServerPush};
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use std::sync::atomic::Ordering::Relaxed;
use tokio::io::AsyncWriteExt;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WireCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_tungstenite::WebSocketStream;
use tracing::Instrument;

/// tungstenite's read buffer per connection (its default is 128 KiB).
const READ_BUFFER_BYTES: usize = 256;

/// Most requests one connection may have waiting on the engine at once; past it, its socket
/// is not read until one is answered (backpressure, not an error).
const MAX_IN_FLIGHT: usize = 16;

mod requests;
mod upgrade;

use requests::{handle_text, next_reply, Answer, InFlight, WsCtx};
use upgrade::{check_upgrade, not_upgrade};

type Ws = WebSocketStream<TokioIo<Upgraded>>;

pub(crate) async fn handler(State(app): State<App>, mut req: Request) -> Response {
    let accept = match check_upgrade(&req) {
        Ok(a) => a,
        Err((status, why)) => return not_upgrade(status, why),
    };
    let Some(on_upgrade) = req.extensions_mut().remove::<OnUpgrade>() else {
        return not_upgrade(
            StatusCode::UPGRADE_REQUIRED,
            "this connection cannot be upgraded",
        );
    };
    let query_token = req.uri().query().and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "token")
            .map(|(_, v)| v.into_owned())
    });
    let client = app.client_addr(crate::auth::peer_ip(req.extensions()), req.headers());
    let admitted = match app.admit(Knock {
        transport: Transport::Ws,
        client,
        headers: req.headers(),
        query_token,
    }) {
        Ok(a) => a,
        Err(refusal) => return refusal.into_api_error().into_response(),
    };
    let max = usize::try_from(app.ws.max_message.as_u64()).unwrap_or(usize::MAX);
    // tungstenite zero-fills its whole read buffer before every read attempt; client frames
    // are small, so a small buffer keeps both CPU per wake-up and idle memory low.
    let config = WebSocketConfig::default()
        .read_buffer_size(READ_BUFFER_BYTES)
        .max_message_size(Some(max))
        .max_frame_size(Some(max));
    // The session exists from here, so the connection's span carries its id from the start;
    // if the upgrade fails, dropping the session undoes its registration.
    let (mut session, outbox) = Session::new(app.node.clone(), Transport::Ws, app.limits);
    app.close_if_closing(&session);
    if let Some(identity) = admitted.identity {
        // The first identity of a session is always adopted, and it has no subscriptions yet.
        if let Err(e) = session.authenticate(identity).await {
            tracing::warn!(error = %e, "Adopting the first identity failed.");
        }
    }
    let span = tracing::debug_span!(
        "conn",
        conn_id = %session.conn_id(),
        transport = "ws",
        client = ?client.ip
    );
    let tracker = app.tracker.clone();
    let fut = connection(
        WsCtx::new(&app),
        on_upgrade,
        admitted.held,
        config,
        session,
        outbox,
    )
    .instrument(span);
    tracker.spawn(fut);
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept)
        .body(axum::body::Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

/// The connection's whole life as one future, spawned as is. It is a plain fn returning one
/// `async` block, not an `async fn`: an `async fn` copies its arguments into the future's
/// locals and keeps both (rustc issue 62958), and this future is most of what an idle
/// connection costs (measured: 4.3 KB per connection as an `async fn`, 3.8 KB like this).
#[allow(clippy::manual_async_fn)]
fn connection(
    app: WsCtx,
    on_upgrade: OnUpgrade,
    mut held: Held,
    config: WebSocketConfig,
    mut session: Session,
    mut outbox: Outbox,
) -> impl std::future::Future<Output = ()> + Send {
    async move {
        // Borrowed whole, so the task holds all of it: its slot and address count must live as
        // long as the connection, not only the field a request uses.
        let held = &mut held;
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "WebSocket upgrade failed.");
                return;
            }
        };
        let mut ws: Ws =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config))
                .await;
        tracing::debug!("WebSocket connected.");
        // The hello goes out through the worker thread's scratch buffer: the connection keeps
        // nothing of it, and only a socket that would not take it at once (never, in practice,
        // right after the upgrade) makes it wait, boxed.
        let conn_id = session.conn_id();
        let sent = crate::scratch::write_now(ws.get_mut(), |out| {
            crate::lifecycle::write_ws_hello(
                &app.shared.node_id,
                conn_id,
                app.ws.ping_interval,
                out,
            );
        });
        let sent = match sent {
            Ok(None) => Ok(()),
            Ok(Some(rest)) => {
                let io = ws.get_mut();
                Box::pin(async move { io.write_all(&rest).await }).await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            count_write_failure(&e);
            return;
        }
        let mut buf: Vec<Outgoing> = Vec::new();
        // Requests waiting on the engine (publish, history, presence); created at the first.
        let mut in_flight: Option<InFlight> = None;
        let mut emits: Vec<Emit> = Vec::new();
        // Whether tungstenite may hold bytes of its own that must go out before raw frames.
        let mut tungstenite_wrote = false;
        // The socket's read side is polled only after it woke the task, not on every delivery.
        let mut read_gate = ReadGate::new();
        let ping_every = app.ws.ping_interval;
        let idle = app.ws.idle_timeout;
        let mut last_seen = Instant::now();
        let mut last_ping = Instant::now();
        // The token's expiry shares the heartbeat timer.
        let mut expires_at = session.expires_at();
        let mut expires = session.identity().and_then(|i| app.expiry(i));
        let first = Instant::now() + ping_every;
        let heartbeat = ConnTimer::new(expires.map_or(first, |e| e.min(first)));
        tokio::pin!(heartbeat);
        // Shutdown arrives through the outbox (`Hub::close_all`), so the loop polls no
        // cancellation token on every wake-up.
        let close = loop {
            tokio::select! {
                biased;
                r = outbox.recv(&mut buf) => match r {
                    Ok(()) => {
                        emits.reserve(buf.len());
                        for item in buf.drain(..) {
                            session.accept(item, &mut emits).await;
                        }
                        crate::scratch::trim(&mut buf);
                        if let Err(e) = send_emits(&mut ws, &session.node().stats.writes, &mut emits, None, &mut tungstenite_wrote).await {
                            count_write_failure(&e);
                            break None;
                        }
                        crate::scratch::trim(&mut emits);
                    }
                    Err(code) => break Some(code),
                },
                (id, completion) = std::future::poll_fn(|cx| next_reply(cx, &mut in_flight)) => {
                    // Boxed: finishing a request (a subscribe's replay and presence join) is a
                    // large future that an idle connection need not carry.
                    // The set's allocation is given back once it is empty: most connections
                    // make a request or two at the start (their subscribes) and then only read.
                    if in_flight.as_ref().is_some_and(|f| f.is_empty()) {
                        in_flight = None;
                    }
                    let reply = Box::pin(session.complete(*completion, &mut emits))
                        .await
                        .to_json(id);
                    if let Err(e) = send_emits(&mut ws, &session.node().stats.writes, &mut emits, Some(reply), &mut tungstenite_wrote).await {
                        count_write_failure(&e);
                        break None;
                    }
                }
                msg = std::future::poll_fn(|cx| read_gate.poll(cx, |cx| ws.poll_next_unpin(cx))),
                    if in_flight.as_ref().is_none_or(|f| f.len() < MAX_IN_FLIGHT) => {
                    last_seen = Instant::now();
                    // Reading may have queued a pong in tungstenite.
                    tungstenite_wrote = true;
                    match msg {
                        Some(Ok(Message::Text(t))) => {
                            // Boxed: a request's future (parsing, auth with revocation) is
                            // larger than everything else an idle connection holds, and
                            // requests are rare next to deliveries.
                            let reply = match Box::pin(handle_text(&app, &mut session, &mut held.user, t.as_str())).await {
                                Answer::Now(reply) => Some(reply),
                                // An engine that answers at once (the embedded one) is
                                // finished here, without the in-flight set's allocations.
                                Answer::Later(id, mut pending) => match futures_util::FutureExt::now_or_never(&mut pending) {
                                    Some(done) => Some(
                                        Box::pin(session.complete(done, &mut emits))
                                            .await
                                            .to_json(id),
                                    ),
                                    None => {
                                        in_flight
                                            .get_or_insert_with(FuturesUnordered::new)
                                            .push(Box::pin(async move { (id, Box::new(pending.await)) }));
                                        None
                                    }
                                },
                            };
                            if let Err(e) = send_emits(&mut ws, &session.node().stats.writes, &mut emits, reply, &mut tungstenite_wrote).await {
                                count_write_failure(&e);
                                break None;
                            }
                            if session.expires_at() != expires_at {
                                expires_at = session.expires_at();
                                expires = session.identity().and_then(|i| app.expiry(i));
                                let next = (last_ping + ping_every).min(last_seen + idle);
                                let next = expires.map_or(next, |e| e.min(next));
                                heartbeat.as_mut().reset(next);
                            }
                        }
                        Some(Ok(Message::Binary(_))) => break Some(CloseCode::ProtocolError),
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                        Some(Ok(Message::Close(_))) => {
                            // tungstenite queued the close reply; flush it so the client sees a
                            // clean close rather than a dropped connection.
                            let _ = ws.flush().await;
                            break None;
                        }
                        None => break None,
                        Some(Err(tokio_tungstenite::tungstenite::Error::Utf8(e))) => {
                            tracing::debug!(error = %e, "WebSocket text frame is not UTF-8.");
                            break Some(CloseCode::InvalidPayload);
                        }
                        Some(Err(e)) => {
                            tracing::debug!(error = %e, "WebSocket read failed.");
                            // tungstenite reports oversize frames as a capacity error.
                            let msg = e.to_string();
                            let too_big = msg.contains("too long") || msg.contains("Space limit");
                            if too_big {
                                session.node().stats.refused.too_large.fetch_add(1, Relaxed);
                            }
                            break too_big.then_some(CloseCode::MessageTooBig);
                        }
                    }
                }
                () = heartbeat.as_mut().due() => {
                    let now = Instant::now();
                    if now.duration_since(last_seen) >= idle {
                        break Some(CloseCode::HeartbeatTimeout);
                    }
                    if expires.is_some_and(|e| e <= now) {
                        session.node().stats.refused.token_expired.fetch_add(1, Relaxed);
                        break Some(CloseCode::TokenExpired);
                    }
                    if now.duration_since(last_ping) >= ping_every {
                        tungstenite_wrote = true;
                        if let Err(e) = ws.send(Message::Ping(Bytes::new())).await {
                            if let tokio_tungstenite::tungstenite::Error::Io(e) = &e {
                                count_write_failure(e);
                            }
                            break None;
                        }
                        last_ping = now;
                    }
                    let next = (last_ping + ping_every).min(last_seen + idle);
                    let next = expires.map_or(next, |e| e.min(next));
                    heartbeat.as_mut().reset(next.max(now + std::time::Duration::from_millis(1)));
                }
            }
        };
        if let Some(code) = close {
            session.closing(code);
            if code == CloseCode::ServerShutdown {
                // Each client gets its own delay, so a restart's clients do not all come back
                // in the same instant.
                let notice = Disconnect {
                    code: code.code(),
                    reason: code.reason().to_owned(),
                    reconnect: true,
                    delay_ms: Some(
                        u64::try_from(crate::lifecycle::jitter(app.retry).as_millis())
                            .unwrap_or(u64::MAX),
                    ),
                }
                .to_push_json();
                // Boxed: written once, at the end.
                let _ = Box::pin(send_emits(
                    &mut ws,
                    &session.node().stats.writes,
                    &mut emits,
                    Some(notice),
                    &mut tungstenite_wrote,
                ))
                .await;
            }
            tracing::debug!(
                code = code.code(),
                reason = code.reason(),
                "Closing WebSocket."
            );
            let frame = CloseFrame {
                code: WireCloseCode::from(code.code()),
                reason: Utf8Bytes::from_static(code.reason()),
            };
            let _ = ws.close(Some(frame)).await;
        }
        // Boxed: leaving presence channels is async work an idle connection need not carry.
        Box::pin(session.close()).await;
        tracing::debug!("WebSocket ended.");
    }
}

/// Writes an optional reply and then the pushes in `emits`, in order, as raw text frames.
///
/// A lone push is written from its shared bytes. Several are copied, up to
/// [`MAX_WRITE_BYTES`](crate::scratch::MAX_WRITE_BYTES) at a time, into the worker thread's
/// scratch buffer and offered to the socket at once, without waiting; only what the socket did
/// not take is copied out and awaited. So a connection holds no write buffer of its own unless
/// its socket is full, and then only the unsent rest (one contiguous write costs the kernel
/// less than a vectored write of many small slices, and a buffer per connection grown to its
/// largest batch cost page faults at saturation). `tungstenite_wrote` says whether tungstenite
/// itself may hold unsent bytes (a pong, a ping): only then is it flushed first, so frames
/// never interleave.
async fn send_emits(
    ws: &mut Ws,
    writes: &Writes,
    emits: &mut Vec<Emit>,
    reply: Option<String>,
    tungstenite_wrote: &mut bool,
) -> std::io::Result<()> {
    if emits.is_empty() && reply.is_none() {
        return Ok(());
    }
    // What this batch hands to the socket, counted once it is written.
    let (mut messages, mut bytes, mut oldest) = (0, reply.as_ref().map_or(0, String::len), None);
    for e in emits.iter() {
        match e {
            Emit::Publication(p) => {
                messages += 1;
                bytes += p.ws_frame().len();
                oldest.get_or_insert(p.accepted);
            }
            Emit::Presence(e) => bytes += e.ws_frame().len(),
            Emit::Reset { .. } => {}
        }
    }
    let written = || writes.written(Transport::Ws, messages, bytes as u64, oldest);
    if std::mem::take(tungstenite_wrote) {
        ws.flush()
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))?;
    }
    let io = ws.get_mut();
    if reply.is_none() && emits.len() == 1 {
        let lone = match &emits[0] {
            Emit::Publication(p) => Some(p.ws_frame()),
            Emit::Presence(e) => Some(e.ws_frame()),
            Emit::Reset { .. } => None,
        };
        if let Some(frame) = lone {
            io.write_all(frame).await?;
            emits.clear();
            io.flush().await?;
            written();
            return Ok(());
        }
    }
    // At most `MAX_WRITE_BYTES` per write, so a connection whose socket is full holds at most
    // that much of its own; the pushes not yet copied stay shared until the next write.
    let mut reply = reply;
    let mut next = 0;
    while next < emits.len() || reply.is_some() {
        let rest = crate::scratch::write_now(io, |out| {
            if let Some(r) = reply.take() {
                out.extend_from_slice(&ws_text_frame(r.as_bytes()));
            }
            while next < emits.len() && out.len() < crate::scratch::MAX_WRITE_BYTES {
                match &emits[next] {
                    Emit::Publication(p) => out.extend_from_slice(p.ws_frame()),
                    Emit::Presence(e) => out.extend_from_slice(e.ws_frame()),
                    Emit::Reset { reason, channels } => out.extend_from_slice(
                        &ServerPush::Reset {
                            reason: reason.as_str(),
                            channels,
                        }
                        .to_ws_frame()
                        .0,
                    ),
                }
                next += 1;
            }
        })?;
        if let Some(rest) = rest {
            io.write_all(&rest).await?;
        }
    }
    emits.clear();
    io.flush().await?;
    written();
    Ok(())
}

/// Counts a write that failed because the socket took nothing for `server.write_timeout` (the
/// listener's timeout on the upgraded stream): the connection ends without a close frame, as
/// none could be written, so the client sees it drop and resumes.
fn count_write_failure(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::TimedOut {
        crate::write_timeouts::write_timed_out();
    }
}
