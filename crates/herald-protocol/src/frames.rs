//! WebSocket requests (client to server) and the pushes and replies Herald sends. SSE carries
//! the same push objects as its `data:` lines, so a publication is serialized once for both.

use crate::{ErrorCode, StreamPosition};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// SSE event type announcing that some channels could not be resumed.
pub const SSE_EVENT_RESET: &str = "herald.reset";
/// SSE event type of a stream's first event: the connection's hello.
pub const SSE_EVENT_CONNECTED: &str = "herald.connected";
/// SSE event type sent just before Herald ends a stream on purpose.
pub const SSE_EVENT_DISCONNECT: &str = "herald.disconnect";
/// SSE event type announcing a presence join.
pub const SSE_EVENT_JOIN: &str = "herald.join";
/// SSE event type announcing a presence leave.
pub const SSE_EVENT_LEAVE: &str = "herald.leave";
/// SSE event type of a `presence = "counts"` channel's periodic totals.
pub const SSE_EVENT_COUNTS: &str = "herald.counts";
/// Event names starting with this prefix are reserved for Herald's own pushes.
pub const RESERVED_EVENT_PREFIX: &str = "herald.";

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRequest<'a> {
    id: Option<u64>,
    op: Option<&'a str>,
    channel: Option<String>,
    #[serde(borrow)]
    since: Option<&'a RawValue>,
    event: Option<String>,
    #[serde(borrow)]
    data: Option<&'a RawValue>,
    limit: Option<u32>,
    token: Option<String>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: Option<u64>,
}

/// One WebSocket request: its id and what it asks for.
#[derive(Debug)]
pub struct ClientRequest {
    /// The id the reply will carry.
    pub id: u64,
    /// The operation.
    pub request: Request,
}

/// The operations a WebSocket client can ask for. Channel names are checked by the engine.
#[derive(Debug)]
pub enum Request {
    /// Start receiving a channel, optionally resuming after `since`.
    Subscribe {
        /// Channel name.
        channel: String,
        /// Resume position.
        since: Option<StreamPosition>,
        /// A subscription token granting this channel to this connection's user.
        token: Option<String>,
    },
    /// Authenticate the connection with a token, or refresh it before it expires (the same
    /// user, new grants and expiry).
    Auth {
        /// The connection token (a JWT).
        token: String,
    },
    /// Stop receiving a channel.
    Unsubscribe {
        /// Channel name.
        channel: String,
    },
    /// Publish to a channel (only where the namespace allows client publishing).
    Publish {
        /// Channel name.
        channel: String,
        /// Event type; `message` when absent.
        event: Option<String>,
        /// The JSON payload.
        data: Box<RawValue>,
    },
    /// Read a channel's retained history.
    History {
        /// Channel name.
        channel: String,
        /// Only publications after this position.
        since: Option<StreamPosition>,
        /// At most this many publications.
        limit: Option<u32>,
    },
    /// List who is subscribed to a channel.
    Presence {
        /// Channel name.
        channel: String,
    },
    /// Application-level ping; answered with an empty result.
    Ping,
}

/// A request that could not be read, with the id to answer (when it could be found).
#[derive(Debug)]
pub struct RequestError {
    /// The request's id, when readable.
    pub id: Option<u64>,
    /// The error code.
    pub code: ErrorCode,
    /// A human-readable explanation.
    pub message: String,
}

impl ClientRequest {
    /// Parses one text frame.
    pub fn parse(text: &str) -> Result<Self, RequestError> {
        let raw: RawRequest<'_> = match serde_json::from_str(text) {
            Ok(raw) => raw,
            Err(err) => {
                let id = serde_json::from_str::<IdOnly>(text).ok().and_then(|r| r.id);
                let code = if err.is_syntax() || err.is_eof() {
                    ErrorCode::BadJson
                } else {
                    ErrorCode::BadRequest
                };
                return Err(RequestError {
                    id,
                    code,
                    message: err.to_string(),
                });
            }
        };
        let fail = |code, message: &str| RequestError {
            id: raw.id,
            code,
            message: message.to_owned(),
        };
        let id = raw
            .id
            .ok_or_else(|| fail(ErrorCode::BadRequest, "missing field `id`"))?;
        let op = raw
            .op
            .ok_or_else(|| fail(ErrorCode::BadRequest, "missing field `op`"))?;
        let since = match raw.since {
            None => None,
            Some(v) if v.get() == "null" => None,
            Some(v) => Some(
                serde_json::from_str::<StreamPosition>(v.get()).map_err(|e| RequestError {
                    id: raw.id,
                    code: ErrorCode::BadPosition,
                    message: format!("`since` is not a position: {e}"),
                })?,
            ),
        };
        let channel = |c: Option<String>| {
            c.ok_or_else(|| fail(ErrorCode::BadRequest, "missing field `channel`"))
        };
        let request = match op {
            "subscribe" => Request::Subscribe {
                channel: channel(raw.channel)?,
                since: since.clone(),
                token: raw.token,
            },
            "auth" => Request::Auth {
                token: raw
                    .token
                    .ok_or_else(|| fail(ErrorCode::BadRequest, "missing field `token`"))?,
            },
            "unsubscribe" => Request::Unsubscribe {
                channel: channel(raw.channel)?,
            },
            "publish" => Request::Publish {
                channel: channel(raw.channel)?,
                event: raw.event,
                data: raw
                    .data
                    .map(RawValue::to_owned)
                    .ok_or_else(|| fail(ErrorCode::BadRequest, "missing field `data`"))?,
            },
            "history" => Request::History {
                channel: channel(raw.channel)?,
                since: since.clone(),
                limit: raw.limit,
            },
            "presence" => Request::Presence {
                channel: channel(raw.channel)?,
            },
            "ping" => Request::Ping,
            other => {
                return Err(RequestError {
                    id: Some(id),
                    code: ErrorCode::UnknownOp,
                    message: format!("unknown op `{}`", other.escape_debug()),
                })
            }
        };
        Ok(Self { id, request })
    }
}

/// A presence member.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Member {
    /// The connection id (empty, and left out, for a user in a `presence = "users"` channel).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub conn_id: String,
    /// The user id, once the connection is authenticated.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub user_id: Option<String>,
    /// Public information about the user, from the token's `info` claim.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub info: Option<serde_json::Value>,
    /// `ws` or `sse` (empty, and left out, for a user).
    #[serde(skip_serializing_if = "String::is_empty", default)]
    pub transport: String,
}

/// A channel named in a reset push, with the position the stream continues from.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ResetChannel {
    /// Channel name.
    pub channel: String,
    /// Where the live stream continues from.
    pub position: StreamPosition,
}

/// Everything the server sends without being asked. Serialized with a `push` tag.
#[derive(Debug, Serialize)]
#[serde(tag = "push", rename_all = "snake_case")]
pub enum ServerPush<'a> {
    /// A publication on a subscribed channel.
    Publication {
        /// Channel name.
        channel: &'a str,
        /// Event type.
        event: &'a str,
        /// Offset inside the epoch.
        offset: u64,
        /// The channel's epoch.
        epoch: &'a str,
        /// Publication time, milliseconds since the Unix epoch.
        time: u64,
        /// The payload.
        data: &'a RawValue,
    },
    /// Some channels could not be resumed; missed publications are gone.
    Reset {
        /// Why (`beyond_retention`, `epoch_changed`).
        reason: &'a str,
        /// The channels and where each continues from.
        channels: &'a [ResetChannel],
    },
    /// Someone subscribed to a presence channel.
    Join {
        /// Channel name.
        channel: &'a str,
        /// Who.
        member: &'a Member,
    },
    /// Someone left a presence channel.
    Leave {
        /// Channel name.
        channel: &'a str,
        /// Who.
        member: &'a Member,
    },
    /// A `presence = "counts"` channel's totals.
    Counts {
        /// Channel name.
        channel: &'a str,
        /// The totals.
        #[serde(flatten)]
        counts: &'a PresenceCounts,
    },
}

/// A channel's presence totals.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct PresenceCounts {
    /// Connections subscribed.
    pub connections: u64,
    /// Distinct users among them.
    pub users: u64,
    /// Connections without a token.
    pub anonymous: u64,
}

/// A user in a `presence = "users"` channel: one entry however many connections it holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct UserPresence {
    /// The user id.
    pub user_id: String,
    /// Public information about the user, from the token's `info` claim.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub info: Option<serde_json::Value>,
    /// The user's connections subscribed to the channel.
    pub connections: u64,
}

/// The body of an error, on HTTP and in WebSocket error replies.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable code.
    pub code: String,
    /// Human-readable message.
    pub message: String,
}

#[derive(Serialize)]
struct ReplyFrame<'a, T: Serialize> {
    id: u64,
    result: &'a T,
}

#[derive(Serialize)]
struct ErrorFrame<'a> {
    id: Option<u64>,
    error: ErrorRef<'a>,
}

#[derive(Serialize)]
struct ErrorRef<'a> {
    code: &'a str,
    message: &'a str,
}

impl ServerPush<'_> {
    /// Serializes the push as JSON.
    pub fn to_json(&self) -> String {
        // Invariant: these types hold only strings, integers and valid raw JSON.
        serde_json::to_string(self).expect("push serializes")
    }

    /// Serializes the push as a WebSocket text frame; returns `(frame, json)`, two views of
    /// one allocation.
    pub fn to_ws_frame(&self) -> (bytes::Bytes, bytes::Bytes) {
        crate::ws_text_frame_with(|buf| {
            // Invariant: as in `to_json`.
            serde_json::to_writer(buf, self).expect("push serializes");
        })
    }

    /// A successful reply to request `id`.
    pub fn reply(id: u64, result: &impl Serialize) -> String {
        serde_json::to_string(&ReplyFrame { id, result }).unwrap_or_else(|_| {
            format!(r#"{{"id":{id},"error":{{"code":"internal","message":"reply failed"}}}}"#)
        })
    }

    /// An error reply to request `id` (or `null` when the id could not be read).
    pub fn error(id: Option<u64>, code: ErrorCode, message: &str) -> String {
        let frame = ErrorFrame {
            id,
            error: ErrorRef {
                code: code.as_str(),
                message,
            },
        };
        // Invariant: strings and integers always serialize.
        serde_json::to_string(&frame).expect("error serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_op() {
        let r = ClientRequest::parse(
            r#"{"id":1,"op":"subscribe","channel":"a","since":{"epoch":"x1","offset":4}}"#,
        )
        .unwrap();
        assert_eq!(r.id, 1);
        assert!(matches!(
            r.request,
            Request::Subscribe { since: Some(_), .. }
        ));
        let r = ClientRequest::parse(r#"{"id":2,"op":"publish","channel":"a","data":{"x":[1]}}"#)
            .unwrap();
        match r.request {
            Request::Publish { data, .. } => assert_eq!(data.get(), r#"{"x":[1]}"#),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            ClientRequest::parse(r#"{"id":3,"op":"ping"}"#)
                .unwrap()
                .request,
            Request::Ping
        ));
    }

    #[test]
    fn bad_frames_get_codes_and_ids_where_possible() {
        let e = ClientRequest::parse(r#"{"id":7,"op":"fly"}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(7), ErrorCode::UnknownOp));
        let e = ClientRequest::parse(r#"{"id":8,"op":"ping","extra":1}"#).unwrap_err();
        assert_eq!((e.id, e.code), (Some(8), ErrorCode::BadRequest));
        let e = ClientRequest::parse(r#"{"id":9,"op":"#).unwrap_err();
        assert_eq!((e.id, e.code), (None, ErrorCode::BadJson));
        let e = ClientRequest::parse(r#"{"op":"ping"}"#).unwrap_err();
        assert_eq!((e.id, e.code), (None, ErrorCode::BadRequest));
        let e = ClientRequest::parse(r#"{"id":-1,"op":"ping"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = ClientRequest::parse(
            r#"{"id":1,"op":"subscribe","channel":"a","since":{"epoch":"x","offset":1e99}}"#,
        )
        .unwrap_err();
        assert_eq!((e.id, e.code), (Some(1), ErrorCode::BadPosition));
    }

    #[test]
    fn pushes_serialize_with_tag() {
        let data = RawValue::from_string("{\"a\":1}".into()).unwrap();
        let p = ServerPush::Publication {
            channel: "c",
            event: "message",
            offset: 3,
            epoch: "e",
            time: 5,
            data: &data,
        };
        assert_eq!(
            p.to_json(),
            r#"{"push":"publication","channel":"c","event":"message","offset":3,"epoch":"e","time":5,"data":{"a":1}}"#
        );
        assert_eq!(
            ServerPush::error(None, ErrorCode::BadJson, "x"),
            r#"{"id":null,"error":{"code":"bad_json","message":"x"}}"#
        );
    }
}
