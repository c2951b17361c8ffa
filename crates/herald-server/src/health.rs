//! Liveness and readiness.

use crate::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

pub(crate) async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready while the node accepts work; 503 once shutdown has begun.
pub(crate) async fn ready(State(app): State<App>) -> (StatusCode, Json<Value>) {
    if app.shutdown.is_cancelled() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down"})),
        )
    } else {
        (StatusCode::OK, Json(json!({"status": "ready"})))
    }
}
