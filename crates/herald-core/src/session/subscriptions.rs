//! Subscriptions: joining (register, then read history, so nothing falls between), leaving,
//! adopting a token (which may revoke), and closing.

use super::state::{Session, Sub, MAX_REPLAY};
use super::types::{Emit, SessionError};
use crate::{Action, ChannelName, HistoryQuery, Identity, PresenceEvent, PresenceKind};
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
    pub async fn subscribe(
        &mut self,
        channel: &str,
        since: Option<StreamPosition>,
        grant: Option<&Identity>,
        out: &mut Vec<Emit>,
    ) -> Result<StreamPosition, SessionError> {
        let channel = ChannelName::parse(channel)?;
        if self.subs.iter().any(|s| s.channel == channel) {
            return Err(SessionError::AlreadySubscribed(channel.to_string()));
        }
        if self.subs.len() >= self.limits.max_channels {
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
        self.charge_subscribe()?;
        let options = self.node.channels.options(&channel).clone();
        // Register first: anything published from here on is queued in the outbox, and the
        // history read below covers what came before. Duplicates are dropped by offset.
        // The broker is told every time (not only for the node's first subscriber) so this
        // call returns only once the engine delivers the channel to this node.
        self.node
            .hub
            .subscribe(&channel, self.conn_id, self.tx.clone());
        if let Err(e) = self.node.broker.subscribe(&channel).await {
            self.release(&channel).await;
            return Err(e.into());
        }
        let read = match &since {
            Some(p) => HistoryQuery {
                since: Some(p.clone()),
                limit: MAX_REPLAY,
            },
            None => HistoryQuery {
                since: None,
                limit: usize::from(options.latest_state),
            },
        };
        let page = match self.node.history.read(&channel, read).await {
            Ok(page) => page,
            Err(e) => {
                self.release(&channel).await;
                return Err(e.into());
            }
        };
        let position = if since.is_some() {
            self.node.stats.resumes.fetch_add(1, Relaxed);
            self.replay(&channel, page, out)
        } else {
            out.extend(page.publications.into_iter().map(Emit::Publication));
            page.top
        };
        let member = options.presence.then(|| self.member());
        // Grow one at a time at first: most connections hold one or two channels, and a
        // first push would otherwise reserve room for four.
        if self.subs.len() == self.subs.capacity() {
            self.subs.reserve_exact(self.subs.len().max(1));
        }
        self.subs.push(Sub {
            channel: channel.clone(),
            position: position.clone(),
            presence: options.presence,
            by_subscription_token: grant.is_some(),
            member: member.clone().map(Box::new),
        });
        if let Some(member) = member {
            self.node.presence.join(&channel, &member).await?;
            self.node
                .broker
                .publish_presence(PresenceEvent::new(channel, PresenceKind::Join, member))
                .await?;
        }
        Ok(position)
    }
    /// Stops receiving `channel`.
    pub async fn unsubscribe(&mut self, channel: &str) -> Result<(), SessionError> {
        let name = ChannelName::parse(channel)?;
        let Some(i) = self.subs.iter().position(|s| s.channel == name) else {
            return Err(SessionError::NotSubscribed(name.to_string()));
        };
        let sub = self.subs.remove(i);
        self.leave(&sub).await;
        Ok(())
    }

    pub(super) async fn leave(&self, sub: &Sub) {
        self.release(&sub.channel).await;
        if sub.presence {
            let member = sub
                .member
                .as_deref()
                .cloned()
                .unwrap_or_else(|| self.member());
            let left = self
                .node
                .presence
                .leave(&sub.channel, &member.conn_id)
                .await;
            let told = self
                .node
                .broker
                .publish_presence(PresenceEvent::new(
                    sub.channel.clone(),
                    PresenceKind::Leave,
                    member,
                ))
                .await;
            if let Err(error) = left.and(told) {
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
    }
}
