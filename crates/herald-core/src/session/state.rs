//! The session's state: its subscriptions, identity, rate budgets and its place in the hub.
//! What the other files of this module build on; it depends on none of them.

use super::types::{SessionLimits, Transport};
use crate::{
    outbox, ChannelName, ConnId, Identity, Node, Outbox, OutboxTx, Publication, TokenBucket,
};
use herald_protocol::{Member, StreamPosition};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

#[derive(Debug)]
pub(super) struct Sub {
    pub(super) channel: ChannelName,
    pub(super) position: StreamPosition,
    /// How its members are tracked and told (a capped channel without presence tracks them
    /// as `Counts`, telling no one).
    pub(super) presence: crate::PresenceMode,
    /// Granted by a subscription token rather than the connection's own token.
    pub(super) by_subscription_token: bool,
    /// The member announced at join (where the namespace has presence), so the leave names
    /// the same member even if the connection authenticated in between. Boxed: most
    /// subscriptions have no presence, and every connection holds its subscriptions.
    pub(super) member: Option<Box<Member>>,
}

/// A subscribe in flight: registered in the hub, waiting for the engine.
#[derive(Debug)]
pub(super) struct PendingSub {
    pub(super) channel: ChannelName,
    /// Publications fan-out queued for the channel meanwhile, oldest first; past
    /// [`MAX_HELD`] only the newest is kept, and the gap before it is filled from history when
    /// the subscribe finishes (or announced as a reset).
    pub(super) held: Vec<Arc<Publication>>,
    /// Unsubscribed while in flight: it ends unsubscribed.
    pub(super) cancelled: bool,
}

/// Most publications held for one subscribe in flight.
pub(super) const MAX_HELD: usize = 1024;

/// One connection's protocol state.
#[derive(Debug)]
pub struct Session {
    pub(super) node: Node,
    pub(super) conn_id: ConnId,
    pub(super) transport: Transport,
    /// The code the server closes the connection with, once the transport has chosen one;
    /// `None` when the peer ended it (counted when the session is dropped).
    pub(super) close: Option<herald_protocol::CloseCode>,
    /// An operator's session (the admin page's inspector): every channel may be read, it is
    /// not a presence member, and neither the app's proxy nor the rate limits apply.
    pub(super) operator: bool,
    pub(super) limits: SessionLimits,
    pub(super) tx: OutboxTx,
    pub(super) subs: Vec<Sub>,
    /// Subscribes in flight (boxed: most connections never have one, and it costs an idle
    /// connection 8 bytes instead of 24).
    #[allow(clippy::box_collection)]
    pub(super) pending: Option<Box<Vec<PendingSub>>>,
    /// Who the connection's token names; None for an anonymous connection.
    pub(super) identity: Option<Arc<Identity>>,
    pub(super) publish_tokens: TokenBucket,
    pub(super) subscribe_tokens: TokenBucket,
}

/// Upper bound on publications replayed for one channel in one resume.
pub(super) const MAX_REPLAY: usize = 100_000;

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
        node.stats.connections.accepted(transport);
        node.hub.register(conn_id, tx.clone());
        let session = Self {
            node,
            conn_id,
            transport,
            close: None,
            operator: false,
            limits,
            tx,
            subs: Vec::new(),
            pending: None,
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

    /// When the connection's token expires (Unix seconds).
    pub fn expires_at(&self) -> Option<u64> {
        self.identity.as_ref().and_then(|i| i.expires_at)
    }

    /// The subscribe in flight for `channel`, if any.
    pub(super) fn joining(&mut self, channel: &ChannelName) -> Option<&mut PendingSub> {
        self.pending
            .as_mut()?
            .iter_mut()
            .find(|p| p.channel == *channel)
    }

    /// The presence member this connection is.
    pub(super) fn member(&self) -> Member {
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
}

impl Session {
    /// A session for an operator (see `operator`): it reads any channel, and is no member of
    /// any presence.
    pub fn operator(node: Node, transport: Transport, limits: SessionLimits) -> (Self, Outbox) {
        let (mut session, outbox) = Self::new(node, transport, limits);
        session.operator = true;
        (session, outbox)
    }

    /// Records the code the server closes this connection with (counted when it ends).
    pub fn closing(&mut self, code: herald_protocol::CloseCode) {
        self.close = Some(code);
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Normally `close` already emptied `subs`; this covers a connection task that ended
        // early (panic, cancellation) so the hub holds no dead subscriber.
        for sub in &self.subs {
            self.node.hub.unsubscribe(&sub.channel, self.conn_id);
        }
        for p in self.pending.iter().flat_map(|p| p.iter()) {
            self.node.hub.unsubscribe(&p.channel, self.conn_id);
        }
        self.node.hub.deregister(self.conn_id);
        let gauge = match self.transport {
            Transport::Ws => &self.node.stats.connections_ws,
            Transport::Sse => &self.node.stats.connections_sse,
        };
        gauge.fetch_sub(1, Relaxed);
        self.node
            .stats
            .connections
            .closed(self.transport, self.close);
    }
}
