//! What a session speaks in: its transport, its bounds, what it emits and how it fails.

use crate::{
    ChannelError, Denied, EngineError, OutboxLimits, PresenceEvent, Publication, PublishError,
    ResetReason,
};
use herald_protocol::{ErrorCode, ResetChannel};
use serde::{Deserialize, Serialize};
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
    /// The app's backend refused it, with this reason.
    #[error("refused by the app: {0}")]
    ProxyRefused(String),
    /// The app's backend gave no usable answer.
    #[error("the app's backend did not answer: {0}")]
    ProxyFailed(String),
    /// The channel holds its namespace's `max_subscribers`.
    #[error("channel {channel:?} is full: it holds at most {max} subscribers")]
    ChannelFull {
        /// The channel.
        channel: String,
        /// Its namespace's `max_subscribers`.
        max: usize,
    },
    /// Publishing failed.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// Too many publishes from this connection.
    #[error("this connection may publish at most {0} messages a minute")]
    RateLimited(u32),
    /// Too many publishes to a namespace from this user.
    #[error(
        "one user may publish at most {per_minute} messages a minute, {burst} at once, to namespace {namespace:?}"
    )]
    NamespaceRateLimited {
        /// The namespace.
        namespace: String,
        /// Its `publish_per_minute`.
        per_minute: u32,
        /// Its burst.
        burst: u32,
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
    /// A token that did not verify.
    #[error("{0}")]
    TokenRefused(String),
    /// This node has no keys to verify tokens with.
    #[error("this node accepts no connection tokens (auth.token is not configured)")]
    NoTokens,
    /// The user already holds as many connections as they may.
    #[error("this user holds as many connections as it may (connection.max_per_user)")]
    UserConnections,
    /// A request's arguments are out of range.
    #[error("{0}")]
    BadRequest(String),
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
            Self::ChannelFull { .. } => ErrorCode::ChannelFull,
            Self::ProxyRefused(_) => ErrorCode::Refused,
            Self::ProxyFailed(_) => ErrorCode::Unavailable,
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
            Self::TokenRefused(_) | Self::NoTokens => ErrorCode::Unauthorized,
            Self::UserConnections => ErrorCode::RateLimited,
            Self::BadRequest(_) => ErrorCode::BadRequest,
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
        PublishError::BadKey(_) | PublishError::Engine(EngineError::Unsupported(_)) => {
            ErrorCode::BadRequest
        }
        PublishError::Engine(EngineError::Conflict) => ErrorCode::Conflict,
        PublishError::ShuttingDown | PublishError::Engine(_) => ErrorCode::Unavailable,
    }
}
