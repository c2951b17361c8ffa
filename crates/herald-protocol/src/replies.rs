//! Typed replies to WebSocket requests, and the two pushes that frame a connection's life: the
//! `connected` hello and the `disconnect` notice. Every reply is one of these types, so the
//! shape of each is written down once (docs/protocol.md) and checked by the compiler.

use crate::{ErrorCode, Member, PresenceCounts, StreamPosition, UserPresence};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The result of a request that succeeded, by operation.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum ReplyResult {
    /// `subscribe`.
    Subscribed {
        /// Channel name.
        channel: String,
        /// Where the live stream continues from.
        position: StreamPosition,
        /// Whether `since` was given and everything after it was replayed.
        recovered: bool,
        /// How many publications (a replay, or latest state) follow this reply before live
        /// ones: a client cut before they all arrived resumes from the last it received.
        replayed: usize,
    },
    /// `auth`.
    Authenticated {
        /// The user the token names.
        user: String,
        /// When the token expires (Unix seconds).
        expires_at: Option<u64>,
        /// Channels the new token no longer allows, now unsubscribed.
        revoked: Vec<String>,
    },
    /// `publish`.
    Published {
        /// Channel name.
        channel: String,
        /// The publication's offset.
        offset: u64,
        /// The channel's epoch.
        epoch: String,
        /// Publication time, milliseconds since the Unix epoch.
        time: u64,
    },
    /// `history` (and the HTTP API's `GET /api/history`).
    History(HistoryResult),
    /// `presence` on a `presence = true` channel.
    Presence {
        /// Channel name.
        channel: String,
        /// Who is subscribed.
        members: Vec<Member>,
    },
    /// `presence` on a `presence = "users"` channel.
    PresenceUsers {
        /// Channel name.
        channel: String,
        /// The users subscribed, each once.
        users: Vec<UserPresence>,
        /// Connections without a token, counted apart.
        anonymous: u64,
    },
    /// `presence` on a `presence = "counts"` channel.
    PresenceCounts {
        /// Channel name.
        channel: String,
        /// The totals.
        #[serde(flatten)]
        counts: PresenceCounts,
    },
    /// `unsubscribe`, `ping`.
    Empty {},
}

/// A history page on the wire: publications as push objects, copied as raw JSON.
#[derive(Debug, Serialize)]
pub struct HistoryResult {
    /// Channel name.
    pub channel: String,
    /// The channel's current position.
    pub position: StreamPosition,
    /// Why `since` could not be continued (`beyond_retention`, `epoch_changed`), if so.
    pub reset: Option<&'static str>,
    /// The publications, oldest first, each a publication push object.
    pub publications: Vec<Box<RawValue>>,
}

/// The answer to one request: a result or an error.
#[derive(Debug)]
pub enum Reply {
    /// The request succeeded.
    Ok(ReplyResult),
    /// The request failed.
    Err {
        /// Stable code.
        code: ErrorCode,
        /// Human-readable explanation.
        message: String,
    },
}

impl Reply {
    /// An error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::Err {
            code,
            message: message.into(),
        }
    }

    /// The error code, for a failed request.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            Self::Ok(_) => None,
            Self::Err { code, .. } => Some(*code),
        }
    }

    /// The reply as JSON text for request `id`.
    pub fn to_json(&self, id: u64) -> String {
        match self {
            Self::Ok(result) => crate::ServerPush::reply(id, result),
            Self::Err { code, message } => crate::ServerPush::error(Some(id), *code, message),
        }
    }
}

/// A connection's first push: who answered and how often it pings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Connected {
    /// The connection's id (as in presence members and logs).
    pub conn_id: String,
    /// The node that serves the connection.
    pub node: String,
    /// The server's time, milliseconds since the Unix epoch.
    pub time: u64,
    /// How often the server pings (WebSocket) or sends a keep-alive (SSE), in milliseconds.
    pub ping_interval_ms: u64,
    /// SSE only, when the request resumed any channel: per channel in request order, whether
    /// it resumed from its position with nothing missed (a reset follows for those that did not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovered: Option<Vec<bool>>,
}

/// Sent just before the server ends a connection on purpose.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Disconnect {
    /// The close code (also the WebSocket close frame's code).
    pub code: u16,
    /// Why.
    pub reason: String,
    /// Whether the client should connect again.
    pub reconnect: bool,
    /// How long to wait before connecting again, in milliseconds (present when the server
    /// asks for a delay, as while it drains for a restart).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub delay_ms: Option<u64>,
}

#[derive(Serialize)]
struct Tagged<'a, T: Serialize> {
    push: &'static str,
    #[serde(flatten)]
    body: &'a T,
}

impl Connected {
    /// The WebSocket push: `{"push":"connected",...}`.
    pub fn to_push_json(&self) -> String {
        // Invariant: strings and integers always serialize.
        serde_json::to_string(&Tagged {
            push: "connected",
            body: self,
        })
        .expect("hello serializes")
    }

    /// The SSE `data:` of the `herald.connected` event.
    pub fn to_json(&self) -> String {
        // Invariant: as above.
        serde_json::to_string(self).expect("hello serializes")
    }
}

impl Disconnect {
    /// The WebSocket push: `{"push":"disconnect",...}`.
    pub fn to_push_json(&self) -> String {
        // Invariant: strings and integers always serialize.
        serde_json::to_string(&Tagged {
            push: "disconnect",
            body: self,
        })
        .expect("disconnect serializes")
    }

    /// The SSE `data:` of the `herald.disconnect` event.
    pub fn to_json(&self) -> String {
        // Invariant: as above.
        serde_json::to_string(self).expect("disconnect serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_keep_their_wire_shapes() {
        let r = Reply::Ok(ReplyResult::Empty {});
        assert_eq!(r.to_json(3), r#"{"id":3,"result":{}}"#);
        let r = Reply::Ok(ReplyResult::Published {
            channel: "a".into(),
            offset: 2,
            epoch: "e1".into(),
            time: 9,
        });
        assert_eq!(
            r.to_json(1),
            r#"{"id":1,"result":{"channel":"a","offset":2,"epoch":"e1","time":9}}"#
        );
        let r = Reply::error(ErrorCode::Forbidden, "no");
        assert_eq!(
            r.to_json(4),
            r#"{"id":4,"error":{"code":"forbidden","message":"no"}}"#
        );
    }

    #[test]
    fn the_hello_and_the_notice_are_tagged_pushes() {
        let hello = Connected {
            conn_id: "c1".into(),
            node: "n1".into(),
            time: 5,
            ping_interval_ms: 25_000,
            recovered: None,
        };
        assert_eq!(
            hello.to_push_json(),
            r#"{"push":"connected","conn_id":"c1","node":"n1","time":5,"ping_interval_ms":25000}"#
        );
        let resumed = Connected {
            recovered: Some(vec![true, false]),
            ..hello
        };
        assert!(resumed.to_json().ends_with(r#""recovered":[true,false]}"#));
        let bye = Disconnect {
            code: 4000,
            reason: "server shutdown".into(),
            reconnect: true,
            delay_ms: Some(1500),
        };
        assert_eq!(
            bye.to_push_json(),
            r#"{"push":"disconnect","code":4000,"reason":"server shutdown","reconnect":true,"delay_ms":1500}"#
        );
        let plain = Disconnect {
            delay_ms: None,
            ..bye
        };
        assert_eq!(
            plain.to_json(),
            r#"{"code":4000,"reason":"server shutdown","reconnect":true}"#
        );
    }
}
