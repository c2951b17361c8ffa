//! The WebSocket opening handshake (RFC 6455 §4.2.1): the checks on the upgrade request and
//! the refusal a request that is not one gets.

use crate::ApiError;
use axum::extract::Request;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use herald_protocol::ErrorCode;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

pub(super) fn not_upgrade(status: StatusCode, why: &str) -> Response {
    ApiError::new(
        status,
        ErrorCode::BadRequest,
        format!("not a WebSocket upgrade: {why}"),
    )
    .into_response()
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// Checks the upgrade request (RFC 6455 §4.2.1); returns the `Sec-WebSocket-Accept` value.
pub(super) fn check_upgrade(req: &Request) -> Result<HeaderValue, (StatusCode, &'static str)> {
    if req.method() != Method::GET {
        return Err((
            StatusCode::METHOD_NOT_ALLOWED,
            "the request method must be GET",
        ));
    }
    let h = req.headers();
    if !header_has_token(h, header::CONNECTION, "upgrade") {
        return Err((
            StatusCode::BAD_REQUEST,
            "`Connection` header did not include `upgrade`",
        ));
    }
    if !header_has_token(h, header::UPGRADE, "websocket") {
        return Err((
            StatusCode::BAD_REQUEST,
            "`Upgrade` header did not include `websocket`",
        ));
    }
    if h.get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        return Err((
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Version` header did not include `13`",
        ));
    }
    let Some(key) = h.get(header::SEC_WEBSOCKET_KEY) else {
        return Err((
            StatusCode::BAD_REQUEST,
            "`Sec-WebSocket-Key` header missing",
        ));
    };
    // Invariant: the accept key is base64, always a valid header value.
    Ok(HeaderValue::from_str(&derive_accept_key(key.as_bytes())).expect("base64 header value"))
}
