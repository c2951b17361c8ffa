//! Stable error codes shared by the HTTP API and WebSocket error replies.

use serde::Serialize;

/// A stable, machine-readable error code. The HTTP status for each lives in herald-server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The body or frame is not valid JSON.
    BadJson,
    /// Valid JSON, but the wrong shape: missing or unknown fields, wrong types.
    BadRequest,
    /// The `op` of a WebSocket request is not one Herald knows.
    UnknownOp,
    /// A channel name is invalid.
    BadChannel,
    /// An event name is invalid or reserved.
    BadEvent,
    /// A resume position (SSE id, `since`) is malformed.
    BadPosition,
    /// A body or frame is larger than allowed.
    TooLarge,
    /// The request's content type is not `application/json`.
    UnsupportedMediaType,
    /// The connection is already subscribed to the channel.
    AlreadySubscribed,
    /// The connection is not subscribed to the channel.
    NotSubscribed,
    /// The connection holds as many channels as it may.
    TooManyChannels,
    /// This connection may not publish to the channel (namespace `publish` access, grants, user
    /// channels).
    PublishForbidden,
    /// Presence is not enabled for this namespace.
    PresenceDisabled,
    /// The channel holds its namespace's `max_subscribers`.
    ChannelFull,
    /// The app's backend (a namespace's publish or subscribe proxy) refused the request.
    Refused,
    /// A credential is missing or refused: the HTTP API's key, a connection token, Telegram
    /// initData; or the channel needs a token and the connection has none.
    Unauthorized,
    /// The caller is known but not allowed: a channel without its grant, another user's
    /// channel, a refresh for another user, a browser origin not on the list, or the API
    /// without keys from beyond loopback.
    Forbidden,
    /// The route does not exist.
    NotFound,
    /// The route exists but not for this method.
    MethodNotAllowed,
    /// The node is at its connection limit.
    ServerFull,
    /// A rate or per-address limit was reached; slow down.
    RateLimited,
    /// The request repeats an earlier one's idempotency key with a different body.
    Conflict,
    /// The engine cannot take the request now (shutting down, backend down).
    Unavailable,
    /// Something failed inside Herald; details are in the server log.
    Internal,
}

impl ErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadJson => "bad_json",
            Self::BadRequest => "bad_request",
            Self::UnknownOp => "unknown_op",
            Self::BadChannel => "bad_channel",
            Self::BadEvent => "bad_event",
            Self::BadPosition => "bad_position",
            Self::TooLarge => "too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::AlreadySubscribed => "already_subscribed",
            Self::NotSubscribed => "not_subscribed",
            Self::TooManyChannels => "too_many_channels",
            Self::PublishForbidden => "publish_forbidden",
            Self::PresenceDisabled => "presence_disabled",
            Self::ChannelFull => "channel_full",
            Self::Refused => "refused",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::ServerFull => "server_full",
            Self::RateLimited => "rate_limited",
            Self::Conflict => "conflict",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }
}
