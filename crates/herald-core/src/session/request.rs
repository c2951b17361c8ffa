//! One WebSocket request in, one typed reply out. The transport parses the frame and writes the
//! reply; everything between is here.
//!
//! `auth` and `unsubscribe` are answered in turn. Requests that wait on the engine (or on the
//! app's backend, where a namespace names a proxy) once their checks have passed (`subscribe`,
//! `publish`, `history`, `presence`) become a [`Pending`]
//! future that holds no borrow of the session: the transport keeps delivering and reading while
//! it runs, with a bound on how many it holds at once (`ws.rs`), and hands its [`Completion`] to
//! [`Session::complete`] for the reply. A subscribe in flight is registered in the hub already;
//! what arrives for its channel meanwhile is held and delivered, in order, once it finishes.

use super::policy::publish_through;
use super::state::Session;
use super::subscriptions::JoinDone;
use super::types::{Emit, SessionError};
use crate::{
    Authenticator, ChannelName, HistoryPage, HistoryQuery, Identity, UserGuard, UserLimiter,
};
use herald_protocol::{HistoryResult, Reply, ReplyResult, Request};
use serde_json::value::RawValue;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

/// Most publications one `history` request returns.
pub const MAX_HISTORY_LIMIT: u32 = 10_000;

/// What a request needs from the connection's surroundings.
#[derive(Debug)]
pub struct RequestContext<'a> {
    /// Verifies tokens (`auth`, subscription tokens); None when the node has no token keys.
    pub tokens: Option<&'a dyn Authenticator>,
    /// Open connections per user (`connection.max_per_user`).
    pub users: &'a Arc<UserLimiter>,
    /// The connection's count against its user, taken by its first `auth`.
    pub user_slot: &'a mut Option<UserGuard>,
}

/// How a request was handled.
#[derive(Debug)]
pub enum Handled {
    /// Answered.
    Done(Reply),
    /// Its checks passed and it now waits on the engine; hand what this resolves to to
    /// [`Session::complete`] for the reply.
    Wait(Pending),
}

/// A request in flight: a future that owns what it needs, so the session stays free. Its
/// outcome goes to [`Session::complete`] for the reply.
pub struct Pending(Pin<Box<dyn Future<Output = Completion> + Send + 'static>>);

/// How a request in flight ended.
#[derive(Debug)]
pub enum Completion {
    /// Answered; nothing left to do in the session.
    Reply(Reply),
    /// A subscribe's engine part answered; the session finishes it.
    Subscribed {
        /// What finishing needs.
        done: JoinDone,
        /// The engine's answer (or the app's refusal).
        read: Result<HistoryPage, SessionError>,
        /// The channel as the client named it.
        channel: String,
        /// Whether the client gave a position to resume from.
        resumed: bool,
    },
}

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl Pending {
    fn reply(fut: impl Future<Output = Reply> + Send + 'static) -> Self {
        Self(Box::pin(async move { Completion::Reply(fut.await) }))
    }
}

impl Future for Pending {
    type Output = Completion;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Completion> {
        self.0.as_mut().poll(cx)
    }
}

fn failed(e: &SessionError) -> Reply {
    Reply::error(e.code(), e.to_string())
}

fn answer(r: Result<ReplyResult, SessionError>) -> Reply {
    match r {
        Ok(result) => Reply::Ok(result),
        Err(e) => failed(&e),
    }
}

/// A history page as the wire has it (shared with the HTTP API's `GET /api/history`).
pub fn history_result(channel: &ChannelName, page: &HistoryPage) -> HistoryResult {
    HistoryResult {
        channel: channel.to_string(),
        position: page.top.clone(),
        reset: page.reset.map(|r| r.as_str()),
        publications: page
            .publications
            .iter()
            .filter_map(|p| {
                let json = std::str::from_utf8(p.json()).ok()?;
                RawValue::from_string(json.to_owned()).ok()
            })
            .collect(),
    }
}

impl Session {
    /// Handles one request: answered now, or in flight ([`Handled::Wait`]).
    pub async fn request(&mut self, request: Request, ctx: RequestContext<'_>) -> Handled {
        match request {
            Request::Auth { token } => Handled::Done(answer(self.auth_request(&token, ctx).await)),
            Request::Subscribe {
                channel,
                since,
                token,
            } => match self.subscribe_request(channel, since, token, &ctx) {
                Ok(pending) => Handled::Wait(pending),
                Err(e) => Handled::Done(failed(&e)),
            },
            Request::Unsubscribe { channel } => Handled::Done(answer(
                self.unsubscribe(&channel)
                    .await
                    .map(|()| ReplyResult::Empty {}),
            )),
            Request::Publish {
                channel,
                event,
                data,
            } => match self.prepare_publish(&channel, event.as_deref(), data) {
                Err(e) => Handled::Done(failed(&e)),
                Ok(prepared) => {
                    let proxy = self.publish_proxy_call(&prepared);
                    let (publisher, stats) = (self.node.publisher.clone(), self.node.stats.clone());
                    Handled::Wait(Pending::reply(async move {
                        answer(
                            publish_through(publisher, stats, prepared, proxy)
                                .await
                                .map(|p| ReplyResult::Published {
                                    channel: p.channel.to_string(),
                                    offset: p.position.offset,
                                    epoch: p.position.epoch.to_string(),
                                    time: p.time_ms,
                                }),
                        )
                    }))
                }
            },
            Request::History {
                channel,
                since,
                limit,
            } => {
                let limit = limit.unwrap_or(100);
                if !(1..=MAX_HISTORY_LIMIT).contains(&limit) {
                    return Handled::Done(failed(&SessionError::BadRequest(format!(
                        "`limit` must be from 1 to {MAX_HISTORY_LIMIT}"
                    ))));
                }
                match self.may_read_history(&channel) {
                    Err(e) => Handled::Done(failed(&e)),
                    Ok(name) => {
                        let history = self.node.history.clone();
                        let query = HistoryQuery {
                            since,
                            limit: limit as usize,
                        };
                        Handled::Wait(Pending::reply(async move {
                            answer(
                                history
                                    .read(&name, query)
                                    .await
                                    .map(|page| ReplyResult::History(history_result(&name, &page)))
                                    .map_err(SessionError::from),
                            )
                        }))
                    }
                }
            }
            Request::Presence { channel } => match self.may_read_presence(&channel) {
                Err(e) => Handled::Done(failed(&e)),
                Ok(name) => {
                    let presence = self.node.presence.clone();
                    let mode = self.node.channels.options(&name).presence;
                    Handled::Wait(Pending::reply(async move {
                        answer(
                            presence
                                .members(&name)
                                .await
                                .map(|members| crate::roster::presence_result(&name, mode, members))
                                .map_err(SessionError::from),
                        )
                    }))
                }
            },
            Request::Ping => Handled::Done(Reply::Ok(ReplyResult::Empty {})),
        }
    }

    /// Verifies a token through the node's [`Authenticator`]; a refusal is counted in
    /// `refused.bad_token`.
    fn verify(&self, token: &str, ctx: &RequestContext<'_>) -> Result<Identity, SessionError> {
        let verified = match ctx.tokens {
            None => Err(SessionError::NoTokens),
            Some(a) => a
                .authenticate(token)
                .map_err(|e| SessionError::TokenRefused(e.0)),
        };
        if verified.is_err() {
            self.node.stats.refused.bad_token.fetch_add(1, Relaxed);
        }
        verified
    }

    /// `auth`: charged to the subscribe budget, verified, counted against the user on the
    /// connection's first identity, then adopted (a refresh may revoke subscriptions).
    async fn auth_request(
        &mut self,
        token: &str,
        ctx: RequestContext<'_>,
    ) -> Result<ReplyResult, SessionError> {
        self.charge_token_check()?;
        let identity = self.verify(token, &ctx)?;
        if self.identity.is_none() {
            match ctx.users.acquire(Some(identity.user.clone())) {
                Ok(slot) => *ctx.user_slot = slot,
                Err(_) => {
                    self.node.stats.refused.per_user.fetch_add(1, Relaxed);
                    return Err(SessionError::UserConnections);
                }
            }
        }
        let (user, expires_at) = (identity.user.to_string(), identity.expires_at);
        match self.authenticate(identity).await {
            Ok(revoked) => Ok(ReplyResult::Authenticated {
                user,
                expires_at,
                revoked,
            }),
            Err(e) => {
                self.node.stats.refused.bad_token.fetch_add(1, Relaxed);
                Err(e)
            }
        }
    }

    /// `subscribe`, with an optional subscription token: a token is checked only while the
    /// subscribe budget has room, and one that fails is charged to it (one that verifies is
    /// charged as the subscribe itself). Its engine part runs in flight.
    fn subscribe_request(
        &mut self,
        channel: String,
        since: Option<herald_protocol::StreamPosition>,
        token: Option<String>,
        ctx: &RequestContext<'_>,
    ) -> Result<Pending, SessionError> {
        let grant = match token {
            None => None,
            Some(t) => {
                self.may_check_token()?;
                match self.verify(&t, ctx) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        let _ = self.charge_token_check();
                        return Err(e);
                    }
                }
            }
        };
        let resumed = since.is_some();
        let joining = self.begin_subscribe(&channel, since, grant.as_ref())?;
        Ok(Pending(Box::pin(async move {
            let read = joining.read.await;
            Completion::Subscribed {
                done: joining.done,
                read,
                channel,
                resumed,
            }
        })))
    }

    /// Finishes a request that was in flight; pushes it produced (a subscribe's replay) are
    /// left in `out`, to be sent after the reply.
    pub async fn complete(&mut self, completion: Completion, out: &mut Vec<Emit>) -> Reply {
        match completion {
            Completion::Reply(reply) => reply,
            Completion::Subscribed {
                done,
                read,
                channel,
                resumed,
            } => {
                let from = out.len();
                let position = self.finish_subscribe(done, read, out).await;
                let pushed = &out[from..];
                answer(position.map(|position| {
                    ReplyResult::Subscribed {
                        recovered: resumed
                            && !pushed.iter().any(|e| matches!(e, Emit::Reset { .. })),
                        replayed: pushed
                            .iter()
                            .filter(|e| matches!(e, Emit::Publication(_)))
                            .count(),
                        channel,
                        position,
                    }
                }))
            }
        }
    }
}
