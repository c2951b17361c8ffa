//! Herald's wire protocol, defined once: stream positions and their SSE id form, WebSocket
//! client requests and server frames, SSE event names, close codes and error codes.
//!
//! This crate knows nothing about sockets or the engine; it is serde types and small codecs that
//! the server, the CLI and tests share. The prose specification is `docs/protocol.md`.

mod close;
mod errors;
mod frames;
mod position;
mod replies;
mod sse;
mod wsframe;

pub use close::CloseCode;
pub use errors::ErrorCode;
pub use frames::{
    ClientRequest, ErrorBody, Member, PresenceCounts, Request, RequestError, ResetChannel,
    ServerPush, UserPresence, RESERVED_EVENT_PREFIX, SSE_EVENT_CONNECTED, SSE_EVENT_COUNTS,
    SSE_EVENT_DISCONNECT, SSE_EVENT_JOIN, SSE_EVENT_LEAVE, SSE_EVENT_RESET,
};
pub use position::{
    format_sse_id, parse_channel_position, parse_sse_id, write_sse_id, Epoch, EpochError,
    SseIdError, StreamPosition, MAX_EPOCH_BYTES, MAX_SSE_ID_BYTES,
};
pub use replies::{Connected, Disconnect, HistoryResult, Reply, ReplyResult};
pub use sse::{SseDecoder, SseEvent};
pub use wsframe::{ws_text_frame, ws_text_frame_with, WS_HEADER_ROOM};
