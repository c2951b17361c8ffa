//! `GET /admin/api/tail?channel=`: a live SSE stream of any channel with the operator's
//! authority (closed namespaces and user channels included), for the admin page's inspector.
//! It is an operator session: it is no presence member and no limit or proxy applies.

use crate::App;
use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};

pub(super) async fn tail(State(app): State<App>, RawQuery(raw): RawQuery) -> Response {
    let channel = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "channel")
        .map(|(_, v)| v.into_owned());
    let Some(channel) = channel else {
        return crate::ApiError::bad_request("name the `channel` to tail").into_response();
    };
    match crate::sse::operator_stream(app, channel).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}
