//! Who may call the HTTP API: with keys configured, a request must carry
//! `Authorization: Bearer <key>` with one of them (compared in constant time); with none, only
//! loopback callers are served, and of those no browser page from another origin: the
//! loopback address is ambient authority, like a cookie, that any site a local browser visits
//! would otherwise borrow.

use crate::limits::OriginStanding;
use crate::{ApiError, ApiKey, App, AuthConfig};
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use herald_core::Take;
use herald_protocol::ErrorCode;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use subtle::ConstantTimeEq;

pub(crate) async fn require_api_key(State(app): State<App>, req: Request, next: Next) -> Response {
    let client = app.client_addr(peer_ip(req.extensions()), req.headers());
    let origin = api_origin(&app.server.cors_allowed_origins, req.headers());
    match authorize(&app.auth, client.direct_loopback, origin, req.headers()) {
        Ok(None) => next.run(req).await,
        Ok(Some(key)) => {
            tracing::trace!(key = key.name, "API request authorized.");
            match app
                .shared
                .api_rates
                .take_n(&key.name, key.requests_per_second)
            {
                Take::Allowed => next.run(req).await,
                Take::Overflow => {
                    app.node.stats.refused.rate_map_full.fetch_add(1, Relaxed);
                    next.run(req).await
                }
                Take::Limited => {
                    app.node.stats.refused.api_rate.fetch_add(1, Relaxed);
                    let mut resp = ApiError::new(
                        StatusCode::TOO_MANY_REQUESTS,
                        ErrorCode::RateLimited,
                        format!(
                            "the API key {:?} may make at most {} requests a second",
                            key.name, key.requests_per_second
                        ),
                    )
                    .into_response();
                    resp.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                    resp
                }
            }
        }
        Err(e) => {
            if e.code == ErrorCode::Forbidden && client.direct_loopback {
                app.node.stats.refused.origin.fetch_add(1, Relaxed);
            }
            let unauthorized = e.status == StatusCode::UNAUTHORIZED;
            let mut resp = e.into_response();
            if unauthorized {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"herald\""),
                );
            }
            resp
        }
    }
}

/// Where a request's `Origin` stands for the key-less API, which trusts loopback callers: a
/// page counts as this node's own only when it was reached by a loopback name, since a page
/// reaching a loopback listener under any other name came through DNS rebinding.
fn api_origin(allowed: &[String], headers: &HeaderMap) -> OriginStanding {
    match crate::limits::origin_standing(allowed, headers) {
        OriginStanding::Own if !crate::limits::host_is_loopback(headers) => OriginStanding::Refused,
        other => other,
    }
}

/// The credentials of an `Authorization: <scheme> <credentials>` header, when its scheme is
/// `scheme` (compared without case).
pub(crate) fn authorization<'a>(headers: &'a HeaderMap, scheme: &str) -> Option<&'a str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (s, credentials) = value.split_once(' ')?;
    s.eq_ignore_ascii_case(scheme).then(|| credentials.trim())
}

/// The remote address of a request, as the listener recorded it.
pub(crate) fn peer_ip(extensions: &axum::http::Extensions) -> Option<std::net::IpAddr> {
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// Decides one request; returns the matching key (None when no keys are configured).
/// `loopback`: the caller is on this machine (a loopback peer that is not a trusted proxy).
pub(crate) fn authorize<'a>(
    auth: &'a AuthConfig,
    loopback: bool,
    origin: OriginStanding,
    headers: &HeaderMap,
) -> Result<Option<&'a ApiKey>, ApiError> {
    if auth.api_keys.is_empty() {
        return if !loopback {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "the HTTP API answers loopback callers only until API keys are configured (auth.api_keys)",
            ))
        } else if origin.may_use_cookie() {
            Ok(None)
        } else {
            // A page on another site, in a browser on this machine: without keys it could
            // publish as the machine itself.
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "without API keys the HTTP API does not answer browser pages from other origins; list the origin by name in server.cors_allowed_origins or configure auth.api_keys",
            ))
        };
    }
    let Some(presented) = authorization(headers, "bearer") else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "send `Authorization: Bearer <key>` with one of the configured API keys",
        ));
    };
    // Every key is compared, so the time taken does not tell which one nearly matched.
    let mut found = None;
    for k in &auth.api_keys {
        if bool::from(k.key.as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(k);
        }
    }
    found.map(Some).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "the API key is not valid",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        if let Some(a) = auth {
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
        }
        h
    }

    #[test]
    fn without_keys_only_loopback_is_served() {
        let auth = AuthConfig::default();
        let absent = OriginStanding::Absent;
        assert!(authorize(&auth, true, absent, &headers(None)).is_ok());
        assert!(authorize(&auth, true, OriginStanding::Own, &headers(None)).is_ok());
        assert!(authorize(&auth, true, OriginStanding::Listed, &headers(None)).is_ok());
        let e = authorize(&auth, false, absent, &headers(None)).unwrap_err();
        assert_eq!(
            (e.status, e.code),
            (StatusCode::FORBIDDEN, ErrorCode::Forbidden)
        );
        assert!(authorize(&auth, false, absent, &headers(None)).is_err());
        // A page from another site, in a browser on this machine, is not the machine.
        for other in [OriginStanding::Wildcard, OriginStanding::Refused] {
            let e = authorize(&auth, true, other, &headers(None)).unwrap_err();
            assert_eq!(e.code, ErrorCode::Forbidden);
        }
    }

    #[test]
    fn with_keys_a_valid_bearer_key_is_needed_from_anywhere() {
        let auth = AuthConfig {
            api_keys: vec![
                ApiKey {
                    name: "old".into(),
                    key: "0123456789abcdef-old".into(),
                    requests_per_second: 0,
                },
                ApiKey {
                    name: "new".into(),
                    key: "0123456789abcdef-new".into(),
                    requests_per_second: 0,
                },
            ],
            ..AuthConfig::default()
        };
        let ok = |h| {
            authorize(&auth, false, OriginStanding::Wildcard, &headers(h))
                .map(|k| k.map(|k| k.name.as_str()))
                .map_err(|e| e.code)
        };
        assert_eq!(ok(Some("Bearer 0123456789abcdef-new")), Ok(Some("new")));
        assert_eq!(ok(Some("bearer 0123456789abcdef-old")), Ok(Some("old")));
        assert_eq!(
            ok(Some("Bearer 0123456789abcdef")),
            Err(ErrorCode::Unauthorized)
        );
        assert_eq!(
            ok(Some("Basic 0123456789abcdef-new")),
            Err(ErrorCode::Unauthorized)
        );
        assert_eq!(ok(None), Err(ErrorCode::Unauthorized));
    }
}
