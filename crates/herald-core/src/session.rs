//! `Session`: one connection's protocol state, independent of its transport. It subscribes
//! (with or without a resume position), filters what fan-out queued (dropping duplicates,
//! filling gaps from history, announcing resets), and cleans up on close.
//!
//! The transport (herald-server's `ws.rs` or `sse.rs`) owns the socket and the outbox receiver,
//! turns [`Emit`]s into wire bytes, and calls the session from its single connection task.

use crate::{
    outbox, Action, ChannelError, ChannelName, ConnId, Denied, EngineError, Grants, HistoryPage,
    HistoryQuery, Identity, Node, Outbox, OutboxLimits, OutboxTx, Outgoing, PresenceEvent,
    PresenceKind, Publication, PublishError, ResetReason, Take, TokenBucket,
};
use herald_protocol::{ErrorCode, Member, ResetChannel, StreamPosition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

/// Which transport carries a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// WebSocket.
    Ws,
    /// Server-Sent Events.
    Sse,
}

impl Transport {
    /// `ws` or `sse`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ws => "ws",
            Self::Sse => "sse",
        }
    }
}

/// Per-connection bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionLimits {
    /// Most channels one connection may subscribe to.
    pub max_channels: usize,
    /// The outbound queue bounds.
    pub outbox: OutboxLimits,
    /// Most publishes one connection may make in a minute (a token bucket holding a minute's
    /// worth); 0 for no limit.
    pub publish_per_minute: u32,
    /// Most subscribe requests one connection may make in a minute (a token bucket); 0 for no
    /// limit.
    pub subscribe_per_minute: u32,
    /// Most open connections one user (token `sub`) may hold on this node; 0 for no limit.
    pub max_per_user: usize,
}

impl Default for SessionLimits {
    fn default() -> Self {
        Self {
            max_channels: 128,
            outbox: OutboxLimits::default(),
            publish_per_minute: 600,
            subscribe_per_minute: 600,
            max_per_user: 100,
        }
    }
}

/// What the transport must send, in order.
#[derive(Debug, Clone)]
pub enum Emit {
    /// A publication.
    Publication(Arc<Publication>),
    /// Some channels could not be resumed or had a gap that history could not fill.
    Reset {
        /// Why.
        reason: ResetReason,
        /// Which channels, and where each continues from.
        channels: Vec<ResetChannel>,
    },
    /// A presence change.
    Presence(Arc<PresenceEvent>),
}

/// Why a session request failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// Invalid channel name.
    #[error("{0}")]
    BadChannel(#[from] ChannelError),
    /// Already subscribed.
    #[error("already subscribed to {0:?}")]
    AlreadySubscribed(String),
    /// Not subscribed.
    #[error("not subscribed to {0:?}")]
    NotSubscribed(String),
    /// Channel limit.
    #[error("a connection may hold at most {0} channels")]
    TooManyChannels(usize),
    /// Presence is off for the namespace.
    #[error("presence is not enabled for namespace {0:?}")]
    PresenceDisabled(String),
    /// Publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Too many publishes from this connection.
    #[error("this connection may publish at most {0} messages a minute")]
    RateLimited(u32),
    /// Too many publishes to a namespace from this user.
    #[error(
        "one user may publish at most {per_minute} messages a minute to namespace {namespace:?}"
    )]
    NamespaceRateLimited {
        /// The namespace.
        namespace: String,
        /// Its `publish_per_minute`.
        per_minute: u32,
    },
    /// Too many subscribe requests from this connection.
    #[error("this connection may subscribe (or have a token checked) at most {0} times a minute")]
    SubscribeRateLimited(u32),
    /// The connection lacks the permission.
    #[error(transparent)]
    Denied(Denied),
    /// The connection lacks the permission to publish.
    #[error("{0}")]
    PublishDenied(Denied),
    /// A token for a different user than the connection's.
    #[error("the token names user {new:?}, but this connection belongs to {old:?}")]
    UserChanged {
        /// The connection's user.
        old: String,
        /// The token's user.
        new: String,
    },
    /// The engine failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
}

impl SessionError {
    /// The stable error code for the wire.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::BadChannel(_) => ErrorCode::BadChannel,
            Self::AlreadySubscribed(_) => ErrorCode::AlreadySubscribed,
            Self::NotSubscribed(_) => ErrorCode::NotSubscribed,
            Self::TooManyChannels(_) => ErrorCode::TooManyChannels,
            Self::PresenceDisabled(_) => ErrorCode::PresenceDisabled,
            Self::Publish(e) => publish_error_code(e),
            Self::RateLimited(_)
            | Self::NamespaceRateLimited { .. }
            | Self::SubscribeRateLimited(_) => ErrorCode::RateLimited,
            Self::Denied(Denied::Unauthenticated { .. }) => ErrorCode::Unauthorized,
            Self::Denied(Denied::Forbidden { .. }) | Self::UserChanged { .. } => {
                ErrorCode::Forbidden
            }
            Self::PublishDenied(_) => ErrorCode::PublishForbidden,
            Self::Engine(_) => ErrorCode::Unavailable,
        }
    }
}

/// The stable code for a publish error.
pub fn publish_error_code(e: &PublishError) -> ErrorCode {
    match e {
        PublishError::BadChannel(_) => ErrorCode::BadChannel,
        PublishError::BadEvent(_) => ErrorCode::BadEvent,
        PublishError::BadData(_) => ErrorCode::BadRequest,
        PublishError::TooLarge { .. } => ErrorCode::TooLarge,
        PublishError::ShuttingDown | PublishError::Engine(_) => ErrorCode::Unavailable,
    }
}

#[derive(Debug)]
struct Sub {
    channel: ChannelName,
    position: StreamPosition,
    presence: bool,
    /// Granted by a subscription token rather than the connection's own token.
    by_subscription_token: bool,
    /// The member announced at join (where the namespace has presence), so the leave names
    /// the same member even if the connection authenticated in between. Boxed: most
    /// subscriptions have no presence, and every connection holds its subscriptions.
    member: Option<Box<Member>>,
}

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    node: Node,
    conn_id: ConnId,
    transport: Transport,
    limits: SessionLimits,
    tx: OutboxTx,
    subs: Vec<Sub>,
    /// Who the connection's token names; None for an anonymous connection.
    identity: Option<Arc<Identity>>,
    publish_tokens: TokenBucket,
    subscribe_tokens: TokenBucket,
}

/// Upper bound on publications replayed for one channel in one resume.
const MAX_REPLAY: usize = 100_000;

impl Session {
    /// A new session and the outbox its connection task drains.
    pub fn new(node: Node, transport: Transport, limits: SessionLimits) -> (Self, Outbox) {
        let conn_id = ConnId::random();
        let (tx, rx) = outbox(conn_id, limits.outbox);
        let gauge = match transport {
            Transport::Ws => &node.stats.connections_ws,
            Transport::Sse => &node.stats.connections_sse,
        };
        gauge.fetch_add(1, Relaxed);
        node.hub.register(conn_id, tx.clone());
        let session = Self {
            node,
            conn_id,
            transport,
            limits,
            tx,
            subs: Vec::new(),
            identity: None,
            publish_tokens: TokenBucket::full(limits.publish_per_minute),
            subscribe_tokens: TokenBucket::full(limits.subscribe_per_minute),
        };
        (session, rx)
    }

    /// This connection's id.
    pub fn conn_id(&self) -> ConnId {
        self.conn_id
    }

    /// The engine parts.
    pub fn node(&self) -> &Node {
        &self.node
    }

    /// The current position of every subscription, in subscription order.
    pub fn positions(&self) -> impl Iterator<Item = &StreamPosition> {
        self.subs.iter().map(|s| &s.position)
    }

    /// Subscribed channel names, in subscription order.
    pub fn channels(&self) -> impl Iterator<Item = &ChannelName> {
        self.subs.iter().map(|s| &s.channel)
    }

    /// Who the connection is, once a token was verified.
    pub fn identity(&self) -> Option<&Arc<Identity>> {
        self.identity.as_ref()
    }

    /// Charges one token check (an `auth` request, or a subscription token that failed to
    /// verify) to the connection's subscribe budget, so a client cannot make the node verify
    /// signatures without bound; refuses once the budget is spent.
    pub fn charge_token_check(&mut self) -> Result<(), SessionError> {
        let rate = self.limits.subscribe_per_minute;
        if self
            .subscribe_tokens
            .take(rate, 60.0, tokio::time::Instant::now())
        {
            Ok(())
        } else {
            self.node.stats.refused.subscribe_rate.fetch_add(1, Relaxed);
            Err(SessionError::SubscribeRateLimited(rate))
        }
    }

    /// Refuses a token check while the subscribe budget is spent (without charging).
    pub fn may_check_token(&self) -> Result<(), SessionError> {
        let rate = self.limits.subscribe_per_minute;
        if self
            .subscribe_tokens
            .has_one(rate, 60.0, tokio::time::Instant::now())
        {
            Ok(())
        } else {
            self.node.stats.refused.subscribe_rate.fetch_add(1, Relaxed);
            Err(SessionError::SubscribeRateLimited(rate))
        }
    }

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

    /// When the connection's token expires (Unix seconds).
    pub fn expires_at(&self) -> Option<u64> {
        self.identity.as_ref().and_then(|i| i.expires_at)
    }

    fn permit(&self, action: Action, channel: &ChannelName) -> Result<(), SessionError> {
        let who = self.identity.as_deref();
        let mut decision = self.node.channels.permits(action, channel, who);
        // A channel subscribed with a subscription token is readable as that token granted it.
        if decision.is_err()
            && matches!(action, Action::History | Action::Presence)
            && self
                .subs
                .iter()
                .any(|s| s.channel == *channel && s.by_subscription_token)
        {
            if let (Some(me), Ok(grant)) = (who, Grants::new([channel.as_str()])) {
                let merged = Identity {
                    subscribe: grant,
                    ..me.clone()
                };
                decision = self.node.channels.permits(action, channel, Some(&merged));
            }
        }
        decision.map_err(|d| {
            self.node.stats.refused.permission.fetch_add(1, Relaxed);
            match action {
                Action::Publish => SessionError::PublishDenied(d),
                _ => SessionError::Denied(d),
            }
        })
    }

    /// The subscribe check with a subscription token's grants in place of the connection's.
    fn permit_granted(&self, channel: &ChannelName, grant: &Identity) -> Result<(), SessionError> {
        let Some(me) = &self.identity else {
            self.node.stats.refused.permission.fetch_add(1, Relaxed);
            return Err(SessionError::Denied(Denied::Unauthenticated {
                verb: "use a subscription token for",
                channel: channel.to_string(),
            }));
        };
        if me.user != grant.user {
            self.node.stats.refused.permission.fetch_add(1, Relaxed);
            return Err(SessionError::UserChanged {
                old: me.user.to_string(),
                new: grant.user.to_string(),
            });
        }
        let merged = Identity {
            subscribe: grant.subscribe.clone(),
            ..Identity::clone(me)
        };
        self.node
            .channels
            .permits(Action::Subscribe, channel, Some(&merged))
            .map_err(|d| {
                self.node.stats.refused.permission.fetch_add(1, Relaxed);
                SessionError::Denied(d)
            })
    }

    fn member(&self) -> Member {
        Member {
            conn_id: self.conn_id.to_string(),
            user_id: self.identity.as_ref().map(|i| i.user.to_string()),
            info: self
                .identity
                .as_ref()
                .and_then(|i| i.info.as_ref())
                .and_then(|raw| serde_json::from_str(raw.get()).ok()),
            transport: self.transport.as_str().to_owned(),
        }
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
        let rate = self.limits.subscribe_per_minute;
        if !self
            .subscribe_tokens
            .take(rate, 60.0, tokio::time::Instant::now())
        {
            self.node.stats.refused.subscribe_rate.fetch_add(1, Relaxed);
            return Err(SessionError::SubscribeRateLimited(rate));
        }
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

    /// Emits a resume page; returns the position reached.
    fn replay(
        &self,
        channel: &ChannelName,
        page: HistoryPage,
        out: &mut Vec<Emit>,
    ) -> StreamPosition {
        match page.reset {
            Some(reason) => {
                self.node.stats.resets.fetch_add(1, Relaxed);
                out.push(Emit::Reset {
                    reason,
                    channels: vec![ResetChannel {
                        channel: channel.to_string(),
                        position: page.top.clone(),
                    }],
                });
                page.top
            }
            None => {
                let position = match page.publications.last() {
                    Some(p) => p.position.clone(),
                    None => page.top,
                };
                out.extend(page.publications.into_iter().map(Emit::Publication));
                position
            }
        }
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

    async fn leave(&self, sub: &Sub) {
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

    async fn release(&self, channel: &ChannelName) {
        self.node.hub.unsubscribe(channel, self.conn_id);
        if let Err(error) = self.node.broker.unsubscribe(channel).await {
            tracing::warn!(channel = %channel, error = %error, "Broker unsubscribe failed.");
        }
    }

    /// Filters one queued item into what the client must see: drops duplicates and items for
    /// channels no longer subscribed, fills gaps from history, and announces what cannot be
    /// recovered.
    pub async fn accept(&mut self, item: Outgoing, out: &mut Vec<Emit>) {
        let p = match item {
            Outgoing::Presence(e) => {
                if self.subs.iter().any(|s| s.channel == e.channel) {
                    out.push(Emit::Presence(e));
                }
                return;
            }
            Outgoing::Publication(p) => p,
        };
        let Some(i) = self.subs.iter().position(|s| s.channel == p.channel) else {
            return;
        };
        let cur = &self.subs[i].position;
        if p.position.epoch == cur.epoch {
            if p.position.offset <= cur.offset {
                return;
            }
            if p.position.offset == cur.offset + 1 {
                // Same epoch: only the offset moves (no reference count traffic per delivery).
                self.subs[i].position.offset = p.position.offset;
                out.push(Emit::Publication(p));
                return;
            }
        }
        // A gap, or a new epoch: fill from history when possible, else announce a reset.
        let since = cur.clone();
        let missing = usize::try_from(p.position.offset.saturating_sub(since.offset))
            .unwrap_or(MAX_REPLAY)
            .min(MAX_REPLAY);
        let page = self
            .node
            .history
            .read(
                &p.channel,
                HistoryQuery {
                    since: Some(since),
                    limit: missing,
                },
            )
            .await;
        let same_epoch = p.position.epoch == self.subs[i].position.epoch;
        let mut next = self.subs[i].position.offset + 1;
        let mut fill = Vec::new();
        if let Ok(page) = page {
            if same_epoch && page.reset.is_none() {
                for q in page.publications {
                    if q.position.offset == next && next < p.position.offset {
                        fill.push(Emit::Publication(q));
                        next += 1;
                    }
                }
            }
        }
        let filled = same_epoch && next == p.position.offset;
        if filled {
            out.extend(fill);
        }
        if !filled {
            let reason = if same_epoch {
                ResetReason::BeyondRetention
            } else {
                ResetReason::EpochChanged
            };
            self.node.stats.resets.fetch_add(1, Relaxed);
            out.push(Emit::Reset {
                reason,
                channels: vec![ResetChannel {
                    channel: p.channel.to_string(),
                    position: StreamPosition::new(p.position.epoch.clone(), p.position.offset - 1),
                }],
            });
        }
        self.subs[i].position = p.position.clone();
        out.push(Emit::Publication(p));
    }

    /// Publishes from the client (the namespace must allow it, and the connection must be
    /// within `publish_per_minute`).
    pub async fn publish(
        &mut self,
        channel: &str,
        event: Option<&str>,
        data: Box<RawValue>,
    ) -> Result<Arc<Publication>, SessionError> {
        let name = ChannelName::parse(channel)?;
        self.permit(Action::Publish, &name)?;
        let rate = self.limits.publish_per_minute;
        if !self
            .publish_tokens
            .take(rate, 60.0, tokio::time::Instant::now())
        {
            self.node.stats.refused.publish_rate.fetch_add(1, Relaxed);
            return Err(SessionError::RateLimited(rate));
        }
        let per_user = self.node.channels.options(&name).publish_per_minute;
        if per_user > 0 {
            let key = match &self.identity {
                Some(i) => format!("{}\n{}", name.namespace(), i.user),
                None => format!("{}\n#{}", name.namespace(), self.conn_id),
            };
            match self.node.user_rates.take_n(&key, per_user) {
                Take::Allowed => {}
                Take::Overflow => {
                    self.node.stats.refused.rate_map_full.fetch_add(1, Relaxed);
                }
                Take::Limited => {
                    self.node
                        .stats
                        .refused
                        .namespace_publish_rate
                        .fetch_add(1, Relaxed);
                    return Err(SessionError::NamespaceRateLimited {
                        namespace: name.namespace().to_owned(),
                        per_minute: per_user,
                    });
                }
            }
        }
        let publisher = &self.node.publisher;
        let prepared = publisher.prepare(channel, event, data)?;
        Ok(publisher.publish(prepared).await?)
    }

    /// Reads history for the client.
    pub async fn history(
        &self,
        channel: &str,
        since: Option<StreamPosition>,
        limit: usize,
    ) -> Result<HistoryPage, SessionError> {
        let channel = ChannelName::parse(channel)?;
        self.permit(Action::History, &channel)?;
        Ok(self
            .node
            .history
            .read(&channel, HistoryQuery { since, limit })
            .await?)
    }

    /// Lists presence members of `channel`.
    pub async fn presence(&self, channel: &str) -> Result<Vec<Member>, SessionError> {
        let channel = ChannelName::parse(channel)?;
        self.permit(Action::Presence, &channel)?;
        if !self.node.channels.options(&channel).presence {
            return Err(SessionError::PresenceDisabled(
                channel.namespace().to_owned(),
            ));
        }
        Ok(self.node.presence.members(&channel).await?)
    }

    /// Leaves every channel; call once when the connection ends.
    pub async fn close(mut self) {
        let subs = std::mem::take(&mut self.subs);
        for sub in &subs {
            self.leave(sub).await;
        }
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Normally `close` already emptied `subs`; this covers a connection task that ended
        // early (panic, cancellation) so the hub holds no dead subscriber.
        for sub in &self.subs {
            self.node.hub.unsubscribe(&sub.channel, self.conn_id);
        }
        self.node.hub.deregister(self.conn_id);
        let gauge = match self.transport {
            Transport::Ws => &self.node.stats.connections_ws,
            Transport::Sse => &self.node.stats.connections_sse,
        };
        gauge.fetch_sub(1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::{MemoryEngine, MemoryEngineConfig, MemoryPresenceStore};
    use crate::{
        ChannelsConfig, EventName, Hub, NamespaceOptions, Publisher, PublisherLimits, Stats,
    };

    fn node(history_size: usize) -> Node {
        let stats = Arc::new(Stats::default());
        let hub = Arc::new(Hub::new(stats.clone()));
        let engine = Arc::new(MemoryEngine::new(
            hub.clone(),
            MemoryEngineConfig::default(),
        ));
        let channels = Arc::new(ChannelsConfig {
            defaults: NamespaceOptions {
                history_size,
                ..NamespaceOptions::default()
            },
            ..ChannelsConfig::default()
        });
        let publisher = Arc::new(Publisher::new(
            engine.clone(),
            channels.clone(),
            PublisherLimits {
                max_data_bytes: 1024,
            },
            stats.clone(),
        ));
        Node {
            hub,
            broker: engine.clone(),
            history: engine,
            presence: Arc::new(MemoryPresenceStore::default()),
            publisher,
            channels,
            stats,
            user_rates: Arc::new(crate::KeyedBuckets::new(0, 60.0, 1000)),
        }
    }

    async fn publish(node: &Node, n: usize) {
        for i in 0..n {
            let data = RawValue::from_string(i.to_string()).unwrap();
            let p = node.publisher.prepare("c", None, data).unwrap();
            node.publisher.publish(p).await.unwrap();
        }
    }

    fn offsets(emits: &[Emit]) -> Vec<String> {
        emits
            .iter()
            .map(|e| match e {
                Emit::Publication(p) => p.position.offset.to_string(),
                Emit::Reset { reason, .. } => reason.as_str().to_owned(),
                Emit::Presence(_) => "presence".to_owned(),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_gap_is_filled_from_history_and_duplicates_are_dropped() {
        let node = node(100);
        let (mut s, mut outbox) =
            Session::new(node.clone(), Transport::Ws, SessionLimits::default());
        let mut out = Vec::new();
        s.subscribe("c", None, None, &mut out).await.unwrap();
        publish(&node, 3).await;
        let mut queued = Vec::new();
        outbox.recv(&mut queued).await.unwrap();
        assert_eq!(queued.len(), 3);
        // Deliver only the third: the first two come from history, in order.
        s.accept(queued[2].clone(), &mut out).await;
        assert_eq!(offsets(&out), ["1", "2", "3"]);
        out.clear();
        s.accept(queued[0].clone(), &mut out).await;
        s.accept(queued[2].clone(), &mut out).await;
        assert!(out.is_empty(), "duplicates are dropped");
        s.close().await;
    }

    #[tokio::test]
    async fn a_gap_history_cannot_fill_is_announced_as_a_reset() {
        let node = node(1);
        let (mut s, mut outbox) =
            Session::new(node.clone(), Transport::Sse, SessionLimits::default());
        let mut out = Vec::new();
        s.subscribe("c", None, None, &mut out).await.unwrap();
        publish(&node, 3).await;
        let mut queued = Vec::new();
        outbox.recv(&mut queued).await.unwrap();
        s.accept(queued[2].clone(), &mut out).await;
        assert_eq!(offsets(&out), ["beyond_retention", "3"]);
        let Emit::Reset { channels, .. } = &out[0] else {
            unreachable!()
        };
        assert_eq!(channels[0].position.offset, 2);
        assert_eq!(s.positions().next().unwrap().offset, 3);
        assert_eq!(node.stats.resets.load(Relaxed), 1);
    }

    #[tokio::test]
    async fn a_new_epoch_is_announced_as_a_reset() {
        let node = node(10);
        let (mut s, _outbox) = Session::new(node.clone(), Transport::Ws, SessionLimits::default());
        let mut out = Vec::new();
        s.subscribe("c", None, None, &mut out).await.unwrap();
        let foreign = Arc::new(Publication::new(
            ChannelName::parse("c").unwrap(),
            EventName::message(),
            RawValue::from_string("1".into()).unwrap(),
            StreamPosition::new(herald_protocol::Epoch::parse("other").unwrap(), 4),
            0,
        ));
        s.accept(Outgoing::Publication(foreign), &mut out).await;
        assert_eq!(offsets(&out), ["epoch_changed", "4"]);
    }

    #[tokio::test]
    async fn the_channel_limit_is_enforced() {
        let node = node(10);
        let limits = SessionLimits {
            max_channels: 1,
            ..SessionLimits::default()
        };
        let (mut s, _outbox) = Session::new(node, Transport::Ws, limits);
        let mut out = Vec::new();
        s.subscribe("a", None, None, &mut out).await.unwrap();
        assert!(matches!(
            s.subscribe("b", None, None, &mut out).await,
            Err(SessionError::TooManyChannels(1))
        ));
    }
}
