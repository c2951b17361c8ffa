//! `GET /sdk/herald.js`: the browser client (`sdk/js`), built into one minified file that is
//! committed and embedded here, so a page without a bundler (an OBS widget) loads it from the
//! node it talks to, and `cargo build` needs no npm.

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use std::sync::OnceLock;

/// The bundle `npm run build` in `sdk/js` writes (CI fails when it differs from a fresh build).
const BUNDLE: &str = include_str!("../assets/herald.js");

/// A strong validator for the embedded bundle: the same for every request of this binary.
fn etag() -> &'static HeaderValue {
    static ETAG: OnceLock<HeaderValue> = OnceLock::new();
    ETAG.get_or_init(|| {
        // FNV-1a over the bundle: stable across runs and builds of the same file.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in BUNDLE.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        HeaderValue::from_str(&format!("\"{h:016x}\"")).expect("hex is a valid header value")
    })
}

pub(crate) async fn bundle(headers: HeaderMap) -> Response {
    let tag = etag();
    let fresh = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim() == "*" || t.trim().trim_start_matches("W/") == tag);
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        BUNDLE.into_response()
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/javascript; charset=utf-8"),
    );
    // Revalidated after five minutes, so a page picks up a new node's client soon after it.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    h.insert(header::ETAG, tag.clone());
    resp
}
