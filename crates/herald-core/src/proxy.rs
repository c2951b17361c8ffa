//! The app in the loop: a namespace may send each client publish (`publish_proxy`) and
//! subscribe (`subscribe_proxy`) to the application's backend first, which allows it, allows a
//! publish with other data, or refuses it with a reason the client receives. The core decides
//! when to ask and what the answer means; how to ask (signed HTTP) is the transport crate's
//! [`AppProxy`] implementation, so the core does no network IO.

use crate::ChannelName;
use async_trait::async_trait;
use serde_json::value::RawValue;

/// What Herald asks the app's backend.
#[derive(Debug, Clone)]
pub struct ProxyCall {
    /// Where to ask: the namespace's `publish_proxy` or `subscribe_proxy`.
    pub url: String,
    /// `publish` or `subscribe`.
    pub op: &'static str,
    /// The channel.
    pub channel: ChannelName,
    /// The event name, for a publish.
    pub event: Option<String>,
    /// The data, for a publish.
    pub data: Option<Box<RawValue>>,
    /// The connection's user; `None` without a token.
    pub user: Option<String>,
    /// The connection's id (as in presence).
    pub conn_id: String,
}

/// The backend's answer.
#[derive(Debug)]
pub enum ProxyVerdict {
    /// Go ahead.
    Allow,
    /// Go ahead with this data instead (a publish only).
    AllowWith(Box<RawValue>),
    /// Refused, with the reason the client receives.
    Refuse(String),
    /// No usable answer (unreachable, slow, an error status, a malformed body, too many calls
    /// in flight): refused, and the client is told the backend failed.
    Failed(String),
}

/// Asks the app's backend (herald-server implements it over HTTP).
#[async_trait]
pub trait AppProxy: Send + Sync + std::fmt::Debug + 'static {
    /// Asks about one client action; never longer than the proxy's timeout.
    async fn ask(&self, call: ProxyCall) -> ProxyVerdict;
}
