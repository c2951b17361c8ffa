//! Subscriptions: joining (register, then read history, so nothing falls between), leaving,
//! adopting a token (which may revoke), and closing.

use super::policy::{consult, ProxyOp};
use super::state::{PendingSub, Session, Sub, MAX_REPLAY};
use super::types::{Emit, SessionError};
use crate::{
    roster, Action, ChannelName, EngineError, HistoryPage, HistoryQuery, HistoryStore, Identity,
    LatestState, Outgoing, PresenceMode, ResetReason,
};
use std::future::Future;
use std::pin::Pin;

/// What a new subscriber first receives: with `since`, what it missed (or a reset); without,
/// the channel's latest state where the namespace keeps it, else nothing; and the channel's
/// position either way.
///
/// A resume that history can no longer cover on a channel keeping latest state is answered
/// with the latest state published after `since` instead of a reset: what the client skipped
/// was replaced by what it now receives. Only when that state reaches the channel's position,
/// so nothing the state does not stand for is passed over.
async fn read_for_subscribe(
    history: &dyn HistoryStore,
    channel: &ChannelName,
    since: Option<StreamPosition>,
    latest: bool,
) -> Result<HistoryPage, EngineError> {
    let Some(since) = since else {
        if latest {
            return history.latest(channel).await;
        }
        let query = HistoryQuery {
            since: None,
            limit: 0,
        };
        return history.read(channel, query).await;
    };
    let query = HistoryQuery {
        since: Some(since.clone()),
        limit: MAX_REPLAY,
    };
    let page = history.read(channel, query).await?;
    if !latest || page.reset != Some(ResetReason::BeyondRetention) {
        return Ok(page);
    }
    let mut state = history.latest(channel).await?;
    let reaches_top = state
        .publications
        .last()
        .is_some_and(|p| p.position == state.top);
    if state.top.epoch != since.epoch || !reaches_top {
        return Ok(page);
    }
    state
        .publications
        .retain(|p| p.position.offset > since.offset);
    Ok(state)
}

/// A subscribe whose checks passed and whose engine part is to run: `read` (broker subscribe,
/// then the history read) borrows nothing from the session; `done` finishes it.
pub struct Joining {
    /// The engine's part.
    pub read: Pin<Box<dyn Future<Output = Result<HistoryPage, SessionError>> + Send + 'static>>,
    /// What [`Session::finish_subscribe`] needs.
    pub done: JoinDone,
}

/// What finishing a subscribe needs besides the engine's answer.
#[derive(Debug)]
pub struct JoinDone {
    channel: ChannelName,
    since: Option<StreamPosition>,
    by_subscription_token: bool,
}

impl std::fmt::Debug for Joining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Joining").field("done", &self.done).finish()
    }
}
use herald_protocol::StreamPosition;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

impl Session {
    /// Adopts a verified token's identity: the first one authenticates the connection; later
    /// ones (a refresh) must name the same user, and replace grants and expiry. Subscriptions
    /// the new token no longer allows are ended; their names are returned. (Those granted by a
    /// subscription token stand until unsubscribed.)
    pub async fn authenticate(&mut self, identity: Identity) -> Result<Vec<String>, SessionError> {
        if let Some(old) = &self.identity {
            if old.user != identity.user {
                return Err(SessionError::UserChanged {
                    old: old.user.to_string(),
                    new: identity.user.to_string(),
                });
            }
        }
        self.identity = Some(Arc::new(identity));
        self.node
            .hub
            .set_identity(self.conn_id, self.identity.clone());
        let (channels, who) = (&self.node.channels, self.identity.as_deref());
        let ended: Vec<Sub> = self
            .subs
            .extract_if(.., |sub| {
                !sub.by_subscription_token
                    && channels
                        .permits(Action::Subscribe, &sub.channel, who)
                        .is_err()
            })
            .collect();
        let mut revoked = Vec::with_capacity(ended.len());
        if !ended.is_empty() {
            self.node
                .stats
                .refused
                .revoked
                .fetch_add(ended.len() as u64, Relaxed);
        }
        for sub in ended {
            self.leave(&sub).await;
            revoked.push(sub.channel.to_string());
        }
        Ok(revoked)
    }

    /// Subscribes to `channel`. With `since`, replays what was missed after it (or emits a
    /// reset when that is impossible); without, emits the latest publication where the
    /// namespace keeps latest state. Returns the position the live stream continues from.
    /// `grant` is a verified subscription token: for the connection's own user, its `channels`
    /// stand in for the connection token's where the namespace asks for a grant.
    ///
    /// [`Session::begin_subscribe`], the engine's part awaited here, then
    /// [`Session::finish_subscribe`]; a WebSocket runs the engine's part in flight instead.
    pub async fn subscribe(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
        grant: Option<&Identity>,
        out: &mut Vec<Emit>,
    ) -> Result<StreamPosition, SessionError> {
        let joining = self.begin_subscribe(channel, since, grant)?;
        let read = joining.read.await;
        self.finish_subscribe(joining.done, read, out).await
    }

    /// The checks of a subscribe (channel, limits, permission, rate), then its registration
    /// in the hub, so nothing published from here on is missed: until it is finished, what
    /// fan-out queues for the channel is held (see `ordering.rs`). Returns the engine's part
    /// (broker subscribe, then the history read), which borrows nothing from the session.
    pub fn begin_subscribe(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
        grant: Option<&Identity>,
    ) -> Result<Joining, SessionError> {
        let channel = ChannelName::parse(channel)?;
        if self.subs.iter().any(|s| s.channel == channel) || self.joining(&channel).is_some() {
            return Err(SessionError::AlreadySubscribed(channel.to_string()));
        }
        let held = self.subs.len() + self.pending.as_ref().map_or(0, |p| p.len());
        if held >= self.limits.max_channels {
            self.node
                .stats
                .refused
                .too_many_channels
                .fetch_add(1, Relaxed);
            return Err(SessionError::TooManyChannels(self.limits.max_channels));
        }
        match grant {
            None => self.permit(Action::Subscribe, &channel)?,
            Some(g) => self.permit_granted(&channel, g)?,
        }
        if !self.operator {
            self.charge_subscribe()?;
        }
        let latest = self.node.channels.options(&channel).latest_state != LatestState::Off;
        // Register first: anything published from here on is queued in the outbox, and the
        // history read covers what came before. Duplicates are dropped by offset.
        self.node
            .hub
            .subscribe(&channel, self.conn_id, self.tx.clone());
        self.pending
            .get_or_insert_with(Box::default)
            .push(PendingSub {
                channel: channel.clone(),
                held: Vec::new(),
                cancelled: false,
            });
        // The broker is told every time (not only for the node's first subscriber) so the
        // read starts only once the engine delivers the channel to this node.
        let (broker, history) = (self.node.broker.clone(), self.node.history.clone());
        let name = channel.clone();
        let from = since.clone();
        let proxy = if self.operator {
            None
        } else {
            self.proxy_call(ProxyOp::Subscribe, &channel, None, None)
        };
        let stats = self.node.stats.clone();
        let read = Box::pin(async move {
            if let Some((proxy, call)) = proxy {
                consult(&*proxy, call, &stats).await?;
            }
            broker.subscribe(&name).await?;
            Ok(read_for_subscribe(&*history, &name, from, latest).await?)
        });
        Ok(Joining {
            read,
            done: JoinDone {
                channel,
                since,
                by_subscription_token: grant.is_some(),
            },
        })
    }

    /// Finishes a subscribe begun with [`Session::begin_subscribe`], given the engine's answer:
    /// emits the replay (or reset, or latest state), then what was held while it was in
    /// flight (in order, duplicates dropped, gaps filled from history).
    pub async fn finish_subscribe(
        &mut self,
        done: JoinDone,
        read: Result<HistoryPage, SessionError>,
        out: &mut Vec<Emit>,
    ) -> Result<StreamPosition, SessionError> {
        let JoinDone {
            channel,
            since,
            by_subscription_token,
        } = done;
        let Some(pending) = self.take_joining(&channel) else {
            // Invariant-free fallback: a finish without its begin registers nothing.
            return Err(SessionError::NotSubscribed(channel.to_string()));
        };
        if pending.cancelled {
            self.release(&channel).await;
            return Err(SessionError::NotSubscribed(format!(
                "{channel} (unsubscribed before the subscription completed)"
            )));
        }
        // A refreshed token may have taken the channel away while the subscribe was in flight.
        if !by_subscription_token {
            if let Err(e) = self.permit(Action::Subscribe, &channel) {
                self.release(&channel).await;
                return Err(e);
            }
        }
        let page = match read {
            Ok(page) => page,
            Err(e) => {
                self.release(&channel).await;
                return Err(e);
            }
        };
        let position = if since.is_some() {
            self.node.stats.resumes.fetch_add(1, Relaxed);
            self.replay(&channel, page, out)
        } else {
            out.extend(page.publications.into_iter().map(Emit::Publication));
            page.top
        };
        let options = self.node.channels.options(&channel);
        // A capped channel tracks its members even where nobody is told of them.
        let presence = match options.presence {
            _ if self.operator => PresenceMode::Off,
            PresenceMode::Off if options.max_subscribers > 0 => PresenceMode::Counts,
            mode => mode,
        };
        if options.max_subscribers > 0 && !self.operator {
            let max = options.max_subscribers;
            let full = match self.node.presence.members(&channel).await {
                Ok(members) => members.len() >= max,
                Err(e) => {
                    self.release(&channel).await;
                    return Err(e.into());
                }
            };
            if full {
                self.release(&channel).await;
                self.node.stats.refused.channel_full.fetch_add(1, Relaxed);
                return Err(SessionError::ChannelFull {
                    channel: channel.to_string(),
                    max,
                });
            }
        }
        let member = presence.tracked().then(|| self.member());
        // Grow one at a time at first: most connections hold one or two channels, and a
        // first push would otherwise reserve room for four.
        if self.subs.len() == self.subs.capacity() {
            self.subs.reserve_exact(self.subs.len().max(1));
        }
        self.subs.push(Sub {
            channel: channel.clone(),
            position: position.clone(),
            presence,
            by_subscription_token,
            member: member.clone().map(Box::new),
        });
        for p in pending.held {
            self.accept(Outgoing::Publication(p), out).await;
        }
        if let Some(member) = member {
            roster::join(
                &*self.node.presence,
                &*self.node.broker,
                &channel,
                member,
                presence,
            )
            .await?;
        }
        Ok(position)
    }

    fn take_joining(&mut self, channel: &ChannelName) -> Option<PendingSub> {
        let list = self.pending.as_mut()?;
        let i = list.iter().position(|p| p.channel == *channel)?;
        let p = list.swap_remove(i);
        if list.is_empty() {
            self.pending = None;
        }
        Some(p)
    }

    /// Stops receiving `channel`.
    pub async fn unsubscribe(&mut self, channel: &str) -> Result<(), SessionError> {
        let name = ChannelName::parse(channel)?;
        if let Some(p) = self.joining(&name) {
            // In flight: it ends unsubscribed when the engine answers.
            p.cancelled = true;
            return Ok(());
        }
        let Some(i) = self.subs.iter().position(|s| s.channel == name) else {
            return Err(SessionError::NotSubscribed(name.to_string()));
        };
        let sub = self.subs.remove(i);
        self.leave(&sub).await;
        Ok(())
    }

    pub(super) async fn leave(&self, sub: &Sub) {
        self.release(&sub.channel).await;
        if sub.presence.tracked() {
            let member = sub
                .member
                .as_deref()
                .cloned()
                .unwrap_or_else(|| self.member());
            let left = roster::leave(
                &*self.node.presence,
                &*self.node.broker,
                &sub.channel,
                member,
                sub.presence,
            )
            .await;
            if let Err(error) = left {
                tracing::warn!(channel = %sub.channel, error = %error, "Presence leave failed.");
            }
        }
    }

    pub(super) async fn release(&self, channel: &ChannelName) {
        self.node.hub.unsubscribe(channel, self.conn_id);
        if let Err(error) = self.node.broker.unsubscribe(channel).await {
            tracing::warn!(channel = %channel, error = %error, "Broker unsubscribe failed.");
        }
    }
    /// Leaves every channel; call once when the connection ends.
    pub async fn close(mut self) {
        let subs = std::mem::take(&mut self.subs);
        for sub in &subs {
            self.leave(sub).await;
        }
        for p in self.pending.take().map(|b| *b).unwrap_or_default() {
            self.release(&p.channel).await;
        }
    }
}
