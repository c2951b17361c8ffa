//! The query of `GET /sse` (channels, `lastEventId`, `since`, `token`, `format`) and where
//! each channel of it resumes.

use crate::ApiError;
use axum::http::{HeaderMap, StatusCode};
use herald_protocol::{parse_channel_position, parse_sse_id, ErrorCode, StreamPosition};

/// What an SSE request's query asks for.
pub(super) struct SseQuery {
    /// In URL order, comma lists expanded in place.
    pub(super) channels: Vec<String>,
    /// `lastEventId` (or `last_event_id`).
    pub(super) query_id: Option<String>,
    pub(super) query_token: Option<String>,
    /// `format=payload`.
    pub(super) payload: bool,
    /// `since` items: a channel and its position.
    pub(super) since: Vec<(String, StreamPosition)>,
}

impl SseQuery {
    pub(super) fn parse(raw: Option<&str>) -> Result<Self, ApiError> {
        let mut channels: Vec<String> = Vec::new();
        let mut query_id = None;
        let mut query_token = None;
        let mut payload = false;
        let mut since: Vec<(String, StreamPosition)> = Vec::new();
        for (k, v) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            match &*k {
                "channel" => channels.extend(v.split(',').map(str::to_owned)),
                "lastEventId" | "last_event_id" => query_id = Some(v.into_owned()),
                "token" => query_token = Some(v.into_owned()),
                "since" => {
                    for item in v.split(',') {
                        let (channel, position) = parse_channel_position(item).map_err(|e| {
                            bad_position(format!(
                                "`since` item `{}`: {e}; write CHANNEL~EPOCH-OFFSET",
                                item.escape_debug()
                            ))
                        })?;
                        since.push((channel.to_owned(), position));
                    }
                }
                "format" => {
                    payload = match &*v {
                        "payload" => true,
                        "envelope" => false,
                        other => {
                            return Err(ApiError::bad_request(format!(
                                "unknown format `{}`; allowed: envelope (the default), payload",
                                other.escape_debug()
                            )))
                        }
                    }
                }
                k if k.starts_with('_') => {}
                other => {
                    return Err(ApiError::bad_request(format!(
                "unknown query parameter `{}`; allowed: channel, lastEventId, since, token, format",
                other.escape_debug()
            )))
                }
            }
        }
        Ok(Self {
            channels,
            query_id,
            query_token,
            payload,
            since,
        })
    }
}

/// The last event id: the `Last-Event-ID` header, else `lastEventId`; empty means none.
pub(super) fn last_event_id(
    headers: &HeaderMap,
    query_id: Option<String>,
) -> Result<Option<String>, ApiError> {
    let header_id = match headers.get("last-event-id") {
        Some(v) => Some(
            v.to_str()
                .map_err(|_| bad_position("Last-Event-ID is not ASCII".to_owned()))?
                .to_owned(),
        ),
        None => None,
    };
    Ok(header_id
        .filter(|s| !s.is_empty())
        .or(query_id.filter(|s| !s.is_empty())))
}

/// Where each channel of the request resumes: the last event id (header, else `lastEventId`)
/// holds one position per channel and wins for all of them; without it, a channel resumes from
/// its `since` item, if it has one. A `since` item must name a channel of the request, once.
pub(super) fn positions(
    channels: &[String],
    last_id: Option<&str>,
    since: Vec<(String, StreamPosition)>,
) -> Result<Vec<Option<StreamPosition>>, ApiError> {
    let mut out: Vec<Option<StreamPosition>> = vec![None; channels.len()];
    for (channel, position) in since {
        let Some(i) = channels.iter().position(|c| *c == channel) else {
            return Err(bad_position(format!(
                "`since` names `{}`, which is not a `channel` of the request",
                channel.escape_debug()
            )));
        };
        if out[i].replace(position).is_some() {
            return Err(bad_position(format!(
                "`since` names `{}` twice",
                channel.escape_debug()
            )));
        }
    }
    if let Some(id) = last_id {
        let from_id = parse_sse_id(id, channels.len()).map_err(|e| bad_position(e.to_string()))?;
        return Ok(from_id.into_iter().map(Some).collect());
    }
    Ok(out)
}

pub(super) fn bad_position(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, ErrorCode::BadPosition, message)
}
