//! One WebSocket request in, one typed reply out. The transport parses the frame and writes the
//! reply; everything between is here.
//!
//! Requests that change the session (`auth`, `subscribe`, `unsubscribe`) are answered in turn,
//! since what follows them depends on their outcome. Requests that only wait on the engine once
//! their checks have passed (`publish`, `history`, `presence`) become a [`Pending`] future that
//! holds no borrow of the session: the transport keeps delivering and reading while it runs,
//! with a bound on how many it holds at once (`ws.rs`).

use super::state::Session;
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
    /// Answered; any pushes it produced (a subscribe's replay) are in `out`, after the reply.
    Done(Reply),
    /// Its checks passed and it now waits on the engine; the reply comes when this resolves.
    Wait(Pending),
}

/// A request in flight: a future that owns what it needs, so the session stays free.
pub struct Pending(Pin<Box<dyn Future<Output = Reply> + Send + 'static>>);

impl std::fmt::Debug for Pending {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pending")
    }
}

impl Future for Pending {
    type Output = Reply;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
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
    /// Handles one request. A subscribe's replay is left in `out`, to be sent after the reply.
    pub async fn request(
        &mut self,
        request: Request,
        ctx: RequestContext<'_>,
        out: &mut Vec<Emit>,
    ) -> Handled {
        match request {
            Request::Auth { token } => Handled::Done(answer(self.auth_request(&token, ctx).await)),
            Request::Subscribe {
                channel,
                since,
                token,
            } => Handled::Done(answer(
                self.subscribe_request(channel, since, token, ctx, out)
                    .await,
            )),
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
                    let publisher = self.node.publisher.clone();
                    Handled::Wait(Pending(Box::pin(async move {
                        answer(
                            publisher
                                .publish(prepared)
                                .await
                                .map(|p| ReplyResult::Published {
                                    channel: p.channel.to_string(),
                                    offset: p.position.offset,
                                    epoch: p.position.epoch.to_string(),
                                    time: p.time_ms,
                                })
                                .map_err(SessionError::from),
                        )
                    })))
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
                        Handled::Wait(Pending(Box::pin(async move {
                            answer(
                                history
                                    .read(&name, query)
                                    .await
                                    .map(|page| ReplyResult::History(history_result(&name, &page)))
                                    .map_err(SessionError::from),
                            )
                        })))
                    }
                }
            }
            Request::Presence { channel } => match self.may_read_presence(&channel) {
                Err(e) => Handled::Done(failed(&e)),
                Ok(name) => {
                    let presence = self.node.presence.clone();
                    Handled::Wait(Pending(Box::pin(async move {
                        answer(
                            presence
                                .members(&name)
                                .await
                                .map(|members| ReplyResult::Presence {
                                    channel: name.to_string(),
                                    members,
                                })
                                .map_err(SessionError::from),
                        )
                    })))
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
    /// charged as the subscribe itself).
    async fn subscribe_request(
        &mut self,
        channel: String,
        since: Option<herald_protocol::StreamPosition>,
        token: Option<String>,
        ctx: RequestContext<'_>,
        out: &mut Vec<Emit>,
    ) -> Result<ReplyResult, SessionError> {
        let grant = match token {
            None => None,
            Some(t) => {
                self.may_check_token()?;
                match self.verify(&t, &ctx) {
                    Ok(g) => Some(g),
                    Err(e) => {
                        let _ = self.charge_token_check();
                        return Err(e);
                    }
                }
            }
        };
        let resumed = since.is_some();
        let position = self.subscribe(&channel, since, grant.as_ref(), out).await?;
        let recovered = resumed && !out.iter().any(|e| matches!(e, Emit::Reset { .. }));
        Ok(ReplyResult::Subscribed {
            channel,
            position,
            recovered,
        })
    }
}
