//! A WebSocket connection's requests: what its task needs of the [`App`], parsing a text frame
//! into a request for [`Session::request`], and the set of requests waiting on the engine.

use crate::App;
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use herald_core::{Completion, Handled, RequestContext, Session};
use herald_protocol::{ClientRequest, ServerPush};
use tokio::time::Instant;

/// What an open WebSocket's task needs of the [`App`]: a few pointers, not the whole `App`
/// (every idle connection holds this for its whole life).
pub(super) struct WsCtx {
    pub(super) shared: std::sync::Arc<crate::Shared>,
    pub(super) ws: std::sync::Arc<crate::WsConfig>,
    pub(super) auth: std::sync::Arc<crate::AuthConfig>,
    /// `sse.retry`, the base of the delay a closing node asks for.
    pub(super) retry: std::time::Duration,
}

impl WsCtx {
    pub(super) fn new(app: &App) -> Self {
        Self {
            shared: app.shared.clone(),
            ws: app.ws.clone(),
            auth: app.auth.clone(),
            retry: app.sse.retry,
        }
    }

    /// When a connection authenticated as `identity` must end (see [`App::expiry`]).
    pub(super) fn expiry(&self, identity: &herald_core::Identity) -> Option<Instant> {
        crate::tokens::expiry(identity, self.auth.token.leeway)
    }
}

/// What one text frame asks for: a reply now, or a request in flight with its id.
pub(super) enum Answer {
    Now(String),
    Later(u64, herald_core::Pending),
}

/// Parses one text frame and hands it to the session. Boxed by the caller, so the parsed
/// request takes no room in the connection's future.
pub(super) async fn handle_text(
    app: &WsCtx,
    session: &mut Session,
    user_slot: &mut Option<herald_core::UserGuard>,
    text: &str,
) -> Answer {
    {
        let req = match ClientRequest::parse(text) {
            Ok(r) => r,
            Err(e) => return Answer::Now(ServerPush::error(e.id, e.code, &e.message)),
        };
        let ctx = RequestContext {
            tokens: app
                .shared
                .tokens
                .as_deref()
                .map(|t| t as &dyn herald_core::Authenticator),
            users: &app.shared.per_user,
            user_slot,
        };
        let id = req.id;
        match session.request(req.request, ctx).await {
            Handled::Done(reply) => Answer::Now(reply.to_json(id)),
            Handled::Wait(pending) => Answer::Later(id, pending),
        }
    }
}

pub(super) type InFlight = FuturesUnordered<
    std::pin::Pin<Box<dyn std::future::Future<Output = (u64, Box<Completion>)> + Send>>,
>;

/// The next request in flight the engine answered; pending while none is (a closure over the
/// set, polled by `select!`, so the connection's future holds no future of its own for it).
pub(super) fn next_reply(
    cx: &mut std::task::Context<'_>,
    in_flight: &mut Option<InFlight>,
) -> std::task::Poll<(u64, Box<Completion>)> {
    match in_flight.as_mut() {
        Some(f) if !f.is_empty() => match f.poll_next_unpin(cx) {
            std::task::Poll::Ready(Some(done)) => std::task::Poll::Ready(done),
            _ => std::task::Poll::Pending,
        },
        _ => std::task::Poll::Pending,
    }
}
