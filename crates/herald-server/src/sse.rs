//! `GET /sse`: Server-Sent Events. Channels are fixed by the query at connect time; every event
//! carries an `id:` holding the position of every channel of the connection, so a plain
//! `EventSource` resumes all of them through `Last-Event-ID`.
//!
//! The response body is the connection's single task: hyper polls it, and each poll waits on
//! the outbox, the keep-alive deadline and shutdown.

use crate::admission::{Held, Knock};
use crate::error::status_for;
use crate::instrumented::InstrumentStream;
use crate::timer::ConnTimer;
use crate::{ApiError, App};
use axum::body::{Body, Bytes};
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use herald_core::{Emit, Outbox, Outgoing, Publication, Session, Transport};
use herald_protocol::{
    write_sse_id, CloseCode, Disconnect, ErrorCode, ServerPush, StreamPosition,
    SSE_EVENT_CONNECTED, SSE_EVENT_DISCONNECT, SSE_EVENT_RESET,
};
use query::{last_event_id, positions, SseQuery};
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::task::Poll;
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// Largest chunk a batch or a replay is cut into, in bytes (approximately): also about the most
/// a stream holds of its own while its socket is full.
mod query;

const MAX_CHUNK_BYTES: usize = crate::scratch::MAX_WRITE_BYTES;

pub(crate) async fn handler(
    State(app): State<App>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let peer = peer.map(|axum::Extension(c)| c.0.ip());
    match open(app, peer, &headers, raw.as_deref()).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn open(
    app: App,
    peer: Option<std::net::IpAddr>,
    headers: &HeaderMap,
    raw: Option<&str>,
) -> Result<Response, ApiError> {
    let SseQuery {
        channels,
        query_id,
        query_token,
        payload,
        since,
    } = SseQuery::parse(raw)?;
    if channels.is_empty() {
        return Err(ApiError::bad_request("name at least one `channel`"));
    }
    if channels.len() > app.limits.max_channels {
        app.node
            .stats
            .refused
            .too_many_channels
            .fetch_add(1, Relaxed);
        return Err(ApiError::new(
            status_for(ErrorCode::TooManyChannels),
            ErrorCode::TooManyChannels,
            format!(
                "a connection may hold at most {} channels",
                app.limits.max_channels
            ),
        ));
    }
    let last_id = last_event_id(headers, query_id)?;
    let positions = positions(&channels, last_id.as_deref(), since)?;
    let client = app.client_addr(peer, headers);
    let admitted = match app.admit(Knock {
        transport: Transport::Sse,
        client,
        headers,
        query_token,
    }) {
        Ok(a) => a,
        // Temporary refusals are a short stream that tells the client to retry: a browser
        // never retries an EventSource after a non-200 answer.
        Err(refusal) => match refusal.retry_later() {
            Some(code) => return Ok(try_later(&app, code)),
            None => return Err(refusal.into_api_error()),
        },
    };
    let (mut session, outbox) = Session::new(app.node.clone(), Transport::Sse, app.limits);
    app.close_if_closing(&session);
    let expires = admitted.expires;
    if let Some(identity) = admitted.identity {
        // No subscriptions yet, so nothing can be revoked.
        session.authenticate(identity).await?;
    }
    let resumed = last_id.is_some();
    start(
        app,
        session,
        outbox,
        Opening {
            channels,
            positions,
            payload,
            held: admitted.held,
            expires,
            client: client.ip,
            resumed,
        },
    )
    .await
}

/// What a stream starts from, besides its session.
struct Opening {
    channels: Vec<String>,
    positions: Vec<Option<StreamPosition>>,
    payload: bool,
    /// The admission's slot and counts (an operator's stream: its slot only).
    held: Held,
    expires: Option<Instant>,
    client: Option<std::net::IpAddr>,
    resumed: bool,
}

/// The admin page's tail of one channel: an operator session (any channel, no presence, no
/// limits) that is not admitted as a client connection.
pub(crate) async fn operator_stream(app: App, channel: String) -> Result<Response, ApiError> {
    // It takes a slot of the node's connection cap like any stream, so tails are bounded too.
    let Some(held) = Held::operator(&app) else {
        app.node.stats.connections_rejected.fetch_add(1, Relaxed);
        return Ok(try_later(&app, CloseCode::TryLater));
    };
    let (session, outbox) = Session::operator(app.node.clone(), Transport::Sse, app.limits);
    app.close_if_closing(&session);
    start(
        app,
        session,
        outbox,
        Opening {
            channels: vec![channel],
            positions: vec![None],
            payload: false,
            held,
            expires: None,
            client: None,
            resumed: false,
        },
    )
    .await
}

/// Subscribes the stream's channels and builds its response: the first block (positions and
/// the hello), any replay, then live events.
async fn start(
    app: App,
    mut session: Session,
    outbox: Outbox,
    o: Opening,
) -> Result<Response, ApiError> {
    let Opening {
        channels,
        positions,
        payload,
        held,
        expires,
        client,
        resumed,
    } = o;
    let span = tracing::debug_span!(
        "conn",
        conn_id = %session.conn_id(),
        transport = "sse",
        client = ?client
    );
    let mut emits = Vec::new();
    for (i, channel) in channels.iter().enumerate() {
        let since = positions[i].clone();
        if let Err(e) = session.subscribe(channel, since, None, &mut emits).await {
            session.close().await;
            if e.code() == ErrorCode::Unavailable {
                tracing::warn!(error = %e, "SSE subscribe failed; asking the client to retry.");
                return Ok(try_later(&app, CloseCode::TryLater));
            }
            return Err(e.into());
        }
    }
    span.in_scope(|| tracing::debug!(channels = channels.len(), resumed, "SSE stream opened."));

    let ids: Vec<StreamPosition> = session.positions().cloned().collect();
    let session_id = session.conn_id();
    let mut st = SseStream {
        ids,
        session: Some(session),
        outbox,
        buf: Vec::new(),
        emits: Vec::new(),
        keepalive: Box::pin(ConnTimer::new(wake(
            Instant::now() + app.sse.keepalive,
            expires,
        ))),
        keepalive_ms: u32::try_from(app.sse.keepalive.as_millis()).unwrap_or(u32::MAX),
        expires,
        tracker: app.tracker.clone(),
        retry_ms: u32::try_from(app.sse.retry.as_millis()).unwrap_or(u32::MAX),
        first: None,
        done: false,
        payload,
        _held: held,
    };
    // The first chunk: the reconnection delay and the starting positions in one block (a block
    // without data sets the browser's last event id without firing an event), then any replay.
    let mut first = BytesMut::from(format!("retry: {}\n", app.retry_ms()).as_bytes());
    // Positions before replay, per channel: what the client sent; else the live start, or, on a
    // channel whose latest state follows, just before its first push, so the id never moves
    // backwards and a stream cut before the pushes resumes with them. In request order: whether
    // the client sent a position, whether a reset follows, whether latest state follows.
    let mut sent = vec![false; st.ids.len()];
    let mut reset = vec![false; st.ids.len()];
    let mut pushed = vec![false; st.ids.len()];
    for (i, p) in positions.into_iter().enumerate() {
        if let Some(p) = p {
            sent[i] = true;
            st.ids[i] = p;
        }
    }
    for e in &emits {
        let named = |c: &str| channels.iter().position(|n| n == c);
        match e {
            Emit::Publication(p) => {
                let Some(i) = named(p.channel.as_str()) else {
                    continue;
                };
                if !sent[i] && !pushed[i] {
                    pushed[i] = true;
                    st.ids[i] = StreamPosition::new(
                        p.position.epoch.clone(),
                        p.position.offset.saturating_sub(1),
                    );
                }
            }
            Emit::Reset { channels: rc, .. } => {
                for r in rc {
                    if let Some(i) = named(r.channel.as_str()) {
                        reset[i] = true;
                    }
                }
            }
            Emit::Presence(_) => {}
        }
    }
    push_id(&mut first, &st.ids);
    first.extend_from_slice(b"\n");
    // The hello: an event of its own type, so a page that does not listen for it never sees it.
    first.extend_from_slice(b"event: ");
    first.extend_from_slice(SSE_EVENT_CONNECTED.as_bytes());
    first.extend_from_slice(b"\ndata: ");
    let mut hello = app.hello(session_id, app.sse.keepalive);
    if sent.contains(&true) {
        hello.recovered = Some(sent.iter().zip(&reset).map(|(s, r)| *s && !r).collect());
    }
    first.extend_from_slice(hello.to_json().as_bytes());
    first.extend_from_slice(b"\n\n");
    st.emits = emits;
    let replay = st.encode();
    first.extend_from_slice(&replay);
    st.first = Some(first.freeze());

    let stream = futures_util::stream::unfold(st, |mut st| async move {
        let chunk = st.next_chunk().await?;
        Some((Ok::<Bytes, Infallible>(chunk), st))
    });
    let body = Body::from_stream(stream.instrument_stream(span));
    let mut resp = Response::new(body);
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-accel-buffering", HeaderValue::from_static("no"));
    Ok(resp)
}

fn push_id(out: &mut BytesMut, ids: &[StreamPosition]) {
    out.extend_from_slice(b"id: ");
    write_sse_id(ids, out);
    out.extend_from_slice(b"\n");
}

struct SseStream {
    /// Positions as of the last event written, in channel order. A one-channel stream's
    /// publications carry their own id, so there it is kept up to date only by resets (the
    /// one event whose id is built here).
    ids: Vec<StreamPosition>,
    session: Option<Session>,
    outbox: Outbox,
    buf: Vec<Outgoing>,
    emits: Vec<Emit>,
    keepalive: Pin<Box<ConnTimer>>,
    /// `sse.keepalive` in milliseconds (4 bytes where a `Duration` takes 16).
    keepalive_ms: u32,
    /// When the connection's token expires (plus leeway); the keep-alive timer wakes for it.
    expires: Option<Instant>,
    tracker: TaskTracker,
    /// `sse.retry` in milliseconds: jittered per connection when the node shuts down, so a
    /// restart's clients do not return all at once.
    retry_ms: u32,
    first: Option<Bytes>,
    done: bool,
    /// `format=payload`: a publication's `data:` is its payload alone.
    payload: bool,
    _held: Held,
}

/// The next keep-alive, or the token's expiry if that comes first.
fn wake(keepalive: Instant, expires: Option<Instant>) -> Instant {
    expires.map_or(keepalive, |e| e.min(keepalive))
}

impl SseStream {
    async fn next_chunk(&mut self) -> Option<Bytes> {
        if let Some(first) = self.first.take() {
            return Some(first);
        }
        if !self.emits.is_empty() {
            // The rest of a long replay goes out before anything new is read.
            return Some(self.encode());
        }
        if self.done {
            return None;
        }
        loop {
            // Deliveries first; the timer is looked at only when nothing is queued.
            let due = std::future::poll_fn(|cx| match self.outbox.poll_recv(cx, &mut self.buf) {
                Poll::Ready(r) => Poll::Ready(Some(r)),
                Poll::Pending => self.keepalive.as_mut().poll_due(cx).map(|()| None),
            })
            .await;
            match due {
                Some(Ok(())) => {
                    let session = self.session.as_mut()?;
                    self.emits.reserve(self.buf.len());
                    for item in self.buf.drain(..) {
                        session.accept(item, &mut self.emits).await;
                    }
                    crate::scratch::trim(&mut self.buf);
                    if self.emits.is_empty() {
                        continue;
                    }
                    // The keep-alive keeps its fixed period: re-arming it on every event would
                    // cost a clock read and a timer update per delivery.
                    return Some(self.encode());
                }
                Some(Err(code)) => {
                    tracing::debug!(
                        code = code.code(),
                        reason = code.reason(),
                        "SSE stream ended by the server."
                    );
                    self.done = true;
                    if let Some(s) = &mut self.session {
                        s.closing(code);
                    }
                    let delay = (code == CloseCode::ServerShutdown).then(|| {
                        crate::lifecycle::jitter(Duration::from_millis(self.retry_ms.into()))
                    });
                    return Some(disconnect_event(code, delay));
                }
                None => {
                    let now = Instant::now();
                    if self.expires.is_some_and(|e| e <= now) {
                        tracing::debug!("SSE stream ended: the token expired.");
                        if let Some(s) = &mut self.session {
                            s.node().stats.refused.token_expired.fetch_add(1, Relaxed);
                            s.closing(CloseCode::TokenExpired);
                        }
                        self.done = true;
                        return Some(disconnect_event(CloseCode::TokenExpired, None));
                    }
                    self.keepalive.as_mut().reset(wake(
                        now + Duration::from_millis(self.keepalive_ms.into()),
                        self.expires,
                    ));
                    return Some(Bytes::from_static(b":\n\n"));
                }
            }
        }
    }

    /// Encodes pending emits, each publication followed by the id of all positions so far,
    /// stopping after about [`MAX_CHUNK_BYTES`] so a long replay is written in bounded pieces.
    ///
    /// A one-channel stream's events are the publications' shared bytes
    /// ([`Publication::sse_event`](herald_core::Publication::sse_event)): a lone event goes out
    /// as those bytes themselves, several are copied into one chunk. Only a stream of several
    /// channels builds its `id:` lines per connection.
    fn encode(&mut self) -> Bytes {
        let Some(session) = self.session.as_ref() else {
            return Bytes::new();
        };
        let single = self.ids.len() == 1;
        let payload = self.payload;
        let event = if payload {
            Publication::sse_payload_event
        } else {
            Publication::sse_event
        };
        let writes = &session.node().stats.writes;
        if single && self.emits.len() == 1 {
            if let Emit::Publication(p) = &self.emits[0] {
                let bytes = event(p).clone();
                writes.written(Transport::Sse, 1, bytes.len() as u64, Some(p.accepted));
                self.emits.clear();
                return bytes;
            }
        }
        let (mut messages, mut oldest) = (0, None);
        let mut bytes = 0usize;
        let take = self
            .emits
            .iter()
            .take_while(|e| {
                if bytes >= MAX_CHUNK_BYTES {
                    return false;
                }
                bytes += match e {
                    Emit::Publication(p) if single => event(p).len(),
                    Emit::Publication(p) if payload => p.data.get().len() + 32,
                    Emit::Publication(p) => p.sse().len(),
                    _ => 256,
                };
                true
            })
            .count();
        // Room for the events and, on several channels, an id line after each, so the chunk is
        // built in one allocation.
        let id_line = if single { 0 } else { 6 + self.ids.len() * 16 };
        let mut out = BytesMut::with_capacity(bytes + take * id_line);
        for emit in self.emits.drain(..take) {
            if let Emit::Publication(p) = &emit {
                messages += 1;
                oldest.get_or_insert(p.accepted);
            }
            match emit {
                Emit::Publication(p) if single => out.extend_from_slice(event(&p)),
                Emit::Publication(p) => {
                    if let Some(i) = session.channels().position(|c| *c == p.channel) {
                        self.ids[i] = p.position.clone();
                    }
                    if payload {
                        p.write_sse_payload_fields(&mut out);
                    } else {
                        out.extend_from_slice(p.sse());
                    }
                    push_id(&mut out, &self.ids);
                    out.extend_from_slice(b"\n");
                }
                Emit::Reset { reason, channels } => {
                    for rc in &channels {
                        if let Some(i) = session.channels().position(|c| c.as_str() == rc.channel) {
                            self.ids[i] = rc.position.clone();
                        }
                    }
                    let json = ServerPush::Reset {
                        reason: reason.as_str(),
                        channels: &channels,
                    }
                    .to_json();
                    out.extend_from_slice(b"event: ");
                    out.extend_from_slice(SSE_EVENT_RESET.as_bytes());
                    out.extend_from_slice(b"\ndata: ");
                    out.extend_from_slice(json.as_bytes());
                    out.extend_from_slice(b"\n");
                    push_id(&mut out, &self.ids);
                    out.extend_from_slice(b"\n");
                }
                Emit::Presence(e) => out.extend_from_slice(e.sse()),
            }
        }
        if self.emits.is_empty() {
            crate::scratch::trim(&mut self.emits);
        }
        // Counted as the chunk goes to the HTTP connection, which writes it to the socket next.
        writes.written(Transport::Sse, messages, out.len() as u64, oldest);
        out.freeze()
    }
}

/// A complete stream that only says "retry later": `retry:`, `herald.disconnect`, end.
fn try_later(app: &App, code: CloseCode) -> Response {
    let mut body = format!("retry: {}\n\n", app.retry_ms()).into_bytes();
    body.extend_from_slice(&disconnect_event(code, None));
    let mut resp = Response::new(Body::from(body));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    resp
}

/// `herald.disconnect`; with a delay (a node draining for a restart), preceded by a `retry:`
/// of that delay, so a browser's `EventSource` waits that long before it comes back.
fn disconnect_event(code: CloseCode, delay: Option<Duration>) -> Bytes {
    let delay_ms = delay.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    let json = Disconnect {
        code: code.code(),
        reason: code.reason().to_owned(),
        reconnect: code.should_reconnect(),
        delay_ms,
    }
    .to_json();
    let retry = delay_ms.map_or(String::new(), |ms| format!("retry: {ms}\n\n"));
    Bytes::from(format!(
        "{retry}event: {SSE_EVENT_DISCONNECT}\ndata: {json}\n\n"
    ))
}

impl Drop for SseStream {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            // Presence leave and broker unsubscribe are async; finish them in a tracked task.
            self.tracker.spawn(session.close());
        }
    }
}
