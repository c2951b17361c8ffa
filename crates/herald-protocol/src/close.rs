//! WebSocket close codes. 4000–4499 mean "reconnect (and resume)"; 4500–4999 mean "do not
//! reconnect without changing something first". Herald also sends one standard code (RFC 6455
//! §7.4.1): 1007 for a text frame that is not UTF-8, which is not a reason to reconnect either.

use serde::Serialize;

/// Why Herald closed a WebSocket, with its wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseCode {
    /// The server is shutting down or restarting; reconnect, ideally with jitter.
    ServerShutdown,
    /// The client did not read fast enough and its outbound queue overflowed; reconnect and resume.
    SlowConsumer,
    /// The peer sent nothing (not even a pong) within the idle timeout.
    HeartbeatTimeout,
    /// An operator disconnected the connection and allows it to come back.
    DisconnectReconnect,
    /// The node cannot take the connection now (full, shutting down, engine down); retry later.
    TryLater,
    /// The connection's token expired without a refresh; reconnect with a fresh token.
    TokenExpired,
    /// The client broke the protocol (binary frames, for example).
    ProtocolError,
    /// A frame was larger than the configured maximum.
    MessageTooBig,
    /// A text frame was not valid UTF-8 (the standard code 1007, invalid frame payload data).
    InvalidPayload,
    /// An operator disconnected the connection and does not want it back.
    DisconnectTerminal,
}

impl CloseCode {
    /// Every code, in declaration order (an index for counters kept per code).
    pub const ALL: [CloseCode; 10] = [
        Self::ServerShutdown,
        Self::SlowConsumer,
        Self::HeartbeatTimeout,
        Self::DisconnectReconnect,
        Self::TryLater,
        Self::TokenExpired,
        Self::ProtocolError,
        Self::MessageTooBig,
        Self::InvalidPayload,
        Self::DisconnectTerminal,
    ];

    /// The numeric WebSocket close code.
    pub fn code(self) -> u16 {
        match self {
            Self::ServerShutdown => 4000,
            Self::SlowConsumer => 4001,
            Self::HeartbeatTimeout => 4002,
            Self::DisconnectReconnect => 4003,
            Self::TryLater => 4005,
            Self::TokenExpired => 4006,
            Self::ProtocolError => 4500,
            Self::MessageTooBig => 4501,
            Self::InvalidPayload => 1007,
            Self::DisconnectTerminal => 4503,
        }
    }

    /// Whether a client should reconnect after this close (codes 4000–4499).
    pub fn should_reconnect(self) -> bool {
        (4000..4500).contains(&self.code())
    }

    /// A short, stable reason sent in the close frame.
    pub fn reason(self) -> &'static str {
        match self {
            Self::ServerShutdown => "server shutdown",
            Self::SlowConsumer => "slow consumer",
            Self::HeartbeatTimeout => "heartbeat timeout",
            Self::DisconnectReconnect => "disconnected",
            Self::TryLater => "try again later",
            Self::TokenExpired => "token expired",
            Self::ProtocolError => "protocol error",
            Self::MessageTooBig => "message too big",
            Self::InvalidPayload => "text frame is not valid utf-8",
            Self::DisconnectTerminal => "disconnected",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_split_reconnect_from_terminal() {
        assert!(CloseCode::SlowConsumer.should_reconnect());
        assert!(CloseCode::ServerShutdown.should_reconnect());
        assert!(!CloseCode::ProtocolError.should_reconnect());
        assert!(!CloseCode::DisconnectTerminal.should_reconnect());
        assert!(!CloseCode::InvalidPayload.should_reconnect());
    }
}
