//! The one admission path for SSE and WebSocket connections (and any later transport): every
//! check a new connection passes, in one order, with one refusal type each transport maps to
//! its own answer (an HTTP status with a JSON body, or SSE's short "retry later" stream).
//!
//! The order is: shutdown (or drain) → `Origin` (WebSocket only; SSE answers cross-origin reads
//! through CORS) → token (with the cookie rule) → per-address count → per-user count → the
//! node's connection cap. A request with several refusal causes gets the first in this order on
//! every transport.

use crate::client_addr::ClientAddr;
use crate::limits::{origin_standing, IpGuard};
use crate::{ApiError, App};
use axum::http::{HeaderMap, StatusCode};
use herald_core::UserGuard;
use herald_core::{Identity, Transport};
use herald_protocol::{CloseCode, ErrorCode};
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;

/// A request to open a connection, as the transport read it.
#[derive(Debug)]
pub(crate) struct Knock<'a> {
    /// Which transport asks.
    pub transport: Transport,
    /// Where the request comes from (the forwarded address behind a trusted proxy).
    pub client: ClientAddr,
    /// The request's headers (token, cookie, `Origin`, `Host`).
    pub headers: &'a HeaderMap,
    /// A token from the query string (`?token=`).
    pub query_token: Option<String>,
}

/// What an admitted connection holds for its whole life: its slot in the node's cap and its
/// counts per address and per user, each given back when dropped.
#[derive(Debug)]
pub(crate) struct Held {
    _slot: OwnedSemaphorePermit,
    _ip: Option<IpGuard>,
    /// Replaced when a WebSocket's first `auth` request names its user.
    pub user: Option<UserGuard>,
}

impl Held {
    /// Only a slot of the node's connection cap (`server.max_connections`): an operator's
    /// stream (the admin page's tail), which no address or user limit applies to; `None` when
    /// the node is full.
    pub(crate) fn operator(app: &App) -> Option<Self> {
        let slot = app.shared.connections.clone().try_acquire_owned().ok()?;
        Some(Self {
            _slot: slot,
            _ip: None,
            user: None,
        })
    }
}

/// An admitted connection.
#[derive(Debug)]
pub(crate) struct Admitted {
    /// Who the connection's token names, if it presented one.
    pub identity: Option<Identity>,
    /// When that token stops verifying.
    pub expires: Option<Instant>,
    /// The counts it holds.
    pub held: Held,
}

/// Why a connection was refused. Each cause is counted once, in [`App::admit`].
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The node is shutting down or draining for a restart.
    ShuttingDown,
    /// A browser page from an origin not allowed to open WebSockets.
    Origin,
    /// The token was refused (401), or a cookie token came from an untrusted page (403).
    Token(ApiError),
    /// The address holds as many connections as it may.
    PerIp,
    /// The user holds as many connections as they may.
    PerUser,
    /// The node holds as many connections as it may.
    Full,
}

impl Refusal {
    /// For the causes a client should simply retry later (on another node, most likely): the
    /// close code SSE's short stream names. A browser never retries an `EventSource` after a
    /// non-200 answer, so SSE answers these with a stream that says "retry".
    pub(crate) fn retry_later(&self) -> Option<CloseCode> {
        match self {
            Self::ShuttingDown => Some(CloseCode::ServerShutdown),
            Self::Full => Some(CloseCode::TryLater),
            _ => None,
        }
    }

    /// The HTTP answer: status, stable code and message.
    pub(crate) fn into_api_error(self) -> ApiError {
        match self {
            Self::ShuttingDown => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::Unavailable,
                "shutting down",
            ),
            Self::Origin => ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "this origin may not open WebSocket connections (server.cors_allowed_origins)",
            ),
            Self::Token(e) => e,
            Self::PerIp => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "this address holds as many connections as it may (server.max_connections_per_ip)",
            ),
            Self::PerUser => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                "this user holds as many connections as it may (connection.max_per_user)",
            ),
            Self::Full => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ServerFull,
                "this node is at its connection limit",
            ),
        }
    }
}

impl App {
    /// Whether new connections are refused: from the moment shutdown (or its drain) begins.
    pub(crate) fn closing(&self) -> bool {
        self.draining.is_cancelled() || self.shutdown.is_cancelled()
    }

    /// Runs every admission check, in the order of the module documentation.
    pub(crate) fn admit(&self, knock: Knock<'_>) -> Result<Admitted, Refusal> {
        if self.closing() {
            return Err(Refusal::ShuttingDown);
        }
        if knock.transport == Transport::Ws
            && !origin_standing(&self.server.cors_allowed_origins, knock.headers).may_connect()
        {
            self.node.stats.refused.origin.fetch_add(1, Relaxed);
            return Err(Refusal::Origin);
        }
        let identity = self
            .request_identity(knock.headers, knock.query_token)
            .map_err(Refusal::Token)?;
        let ip = crate::limits::acquire_ip(&self.shared.per_ip, knock.client).map_err(|_| {
            self.node.stats.refused.per_ip.fetch_add(1, Relaxed);
            Refusal::PerIp
        })?;
        let user = match &identity {
            Some(i) => self.count_user(i).map_err(|_| Refusal::PerUser)?,
            None => None,
        };
        let Ok(slot) = self.shared.connections.clone().try_acquire_owned() else {
            self.node.stats.connections_rejected.fetch_add(1, Relaxed);
            return Err(Refusal::Full);
        };
        let expires = identity.as_ref().and_then(|i| self.expiry(i));
        Ok(Admitted {
            identity,
            expires,
            held: Held {
                _slot: slot,
                _ip: ip,
                user,
            },
        })
    }
}
