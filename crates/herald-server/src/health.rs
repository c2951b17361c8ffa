//! Liveness and readiness.

use crate::App;
use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

pub(crate) async fn live() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

/// Ready while the node accepts work: 503 from the moment shutdown (or its drain) begins, and while the engine is
/// unreachable (a shared engine is ready again once a canary made the round trip).
pub(crate) async fn ready(State(app): State<App>) -> (StatusCode, Json<Value>) {
    let engine = app.node.broker.status();
    if app.closing() {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting_down", "engine": engine.state})),
        )
    } else if !engine.ready {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "engine_unavailable", "engine": engine.state})),
        )
    } else {
        (
            StatusCode::OK,
            Json(json!({"status": "ready", "engine": engine.state})),
        )
    }
}
