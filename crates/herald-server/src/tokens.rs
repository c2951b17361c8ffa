//! Connection tokens at the HTTP edge: where SSE and WebSocket requests carry them (a token in
//! the cookie only from a trusted origin), verifying them into an [`Identity`], counting
//! connections per user, and `POST /auth/telegram`, which turns Telegram Mini App `initData`
//! into a token.

use crate::api::JsonBody;
use crate::auth::{authorization, peer_ip};
use crate::limits::origin_standing;
use crate::{ApiError, App};
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use herald_auth::{unix_now, verify_init_data, MintRequest, TelegramError};
use herald_core::{Authenticator, Identity, Take};
use herald_protocol::ErrorCode;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The cookie a browser may carry its connection token in.
pub(crate) const TOKEN_COOKIE: &str = "herald_token";

/// Where a request carried its connection token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Carrier {
    /// `Authorization: Bearer <token>`.
    Header,
    /// The `herald_token` cookie, which a browser attaches by itself.
    Cookie,
    /// The `token` query parameter.
    Query,
}

/// The token a request presents and where: `Authorization: Bearer <token>`, then the
/// `herald_token` cookie, then the `token` query parameter (for `EventSource`, which cannot set
/// headers).
pub(crate) fn presented(
    headers: &HeaderMap,
    query_token: Option<&str>,
) -> Option<(String, Carrier)> {
    if let Some(t) = authorization(headers, "bearer") {
        return Some((t.to_owned(), Carrier::Header));
    }
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (name, value) = c.trim().split_once('=')?;
            (name == TOKEN_COOKIE).then(|| value.trim_matches('"'))
        });
    match cookie {
        Some(c) => Some((c.to_owned(), Carrier::Cookie)),
        None => query_token.map(|q| (q.to_owned(), Carrier::Query)),
    }
}

impl App {
    /// The identity an SSE or WebSocket request's token names (None without a token). A token
    /// in the cookie counts only from a request without `Origin` or from a trusted origin
    /// ([`crate::limits::OriginStanding::may_use_cookie`]), since a browser attaches the cookie
    /// to requests other sites' pages make too. From any other page the cookie is passed over
    /// for a token in the query, and without one the request is refused with 403.
    pub(crate) fn request_identity(
        &self,
        headers: &HeaderMap,
        query_token: Option<String>,
    ) -> Result<Option<Identity>, ApiError> {
        let Some((mut token, carrier)) = presented(headers, query_token.as_deref()) else {
            return Ok(None);
        };
        if carrier == Carrier::Cookie
            && !origin_standing(&self.server.cors_allowed_origins, headers).may_use_cookie()
        {
            let Some(query) = query_token else {
                self.node.stats.refused.origin.fetch_add(1, Relaxed);
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    ErrorCode::Forbidden,
                    "a token in the herald_token cookie counts only from Herald's own origin or one listed by name in server.cors_allowed_origins (a `*` does not count); send the token another way (the `token` query parameter, an Authorization header, or a WebSocket `auth` request)",
                ));
            };
            token = query;
        }
        self.verify_token(&token).map(Some)
    }

    /// Verifies a connection token; a refusal is a 401 naming the reason.
    pub(crate) fn verify_token(&self, token: &str) -> Result<Identity, ApiError> {
        let refused = |message: String| {
            self.node.stats.refused.bad_token.fetch_add(1, Relaxed);
            ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
        };
        let Some(verifier) = &self.shared.tokens else {
            return Err(refused(
                "this node accepts no connection tokens (auth.token is not configured)".to_owned(),
            ));
        };
        verifier.authenticate(token).map_err(|e| refused(e.0))
    }

    /// When a connection authenticated as `identity` must end: the first second its token no
    /// longer verifies (after `exp` plus the configured leeway), as a monotonic instant.
    pub(crate) fn expiry(&self, identity: &Identity) -> Option<Instant> {
        expiry(identity, self.auth.token.leeway)
    }
}

/// [`App::expiry`] with the token leeway given.
pub(crate) fn expiry(identity: &Identity, leeway: Duration) -> Option<Instant> {
    let exp = identity.expires_at?;
    let invalid_from = Duration::from_secs(exp.saturating_add(1)) + leeway;
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let left = invalid_from.saturating_sub(since_epoch);
    Some(Instant::now() + left.min(Duration::from_secs(10 * 365 * 86_400)))
}

/// Takes one from the per-address bucket of logins and renewals
/// (`auth.telegram.logins_per_minute_per_ip`); a caller on this machine is not counted.
fn charge_login(app: &App, req: &Request) -> Result<(), ApiError> {
    let client = app.client_addr(peer_ip(req.extensions()), req.headers());
    let Some(ip) = client.ip.filter(|_| !client.direct_loopback) else {
        return Ok(());
    };
    match app.shared.login_rates.take(&ip.to_string()) {
        Take::Allowed => Ok(()),
        Take::Overflow => {
            app.node.stats.refused.rate_map_full.fetch_add(1, Relaxed);
            Ok(())
        }
        Take::Limited => {
            app.node.stats.refused.login_rate.fetch_add(1, Relaxed);
            Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                ErrorCode::RateLimited,
                format!(
                    "this address may log in or renew a token at most {} times a minute",
                    app.auth.telegram.logins_per_minute_per_ip
                ),
            ))
        }
    }
}

/// `POST /auth/refresh`: renews the still valid connection token in `Authorization: Bearer`
/// for `auth.token.refresh_ttl`, with the same user, `info` and grants, until
/// `auth.token.max_session_age` after the user logged in (the token's `auth_time`, else its
/// `iat`, carried into the renewed token as `auth_time`).
pub(crate) async fn refresh(State(app): State<App>, req: Request) -> Result<Json<Value>, ApiError> {
    let config = &app.auth.token;
    let Some(minter) = app
        .shared
        .minter
        .as_ref()
        .filter(|_| !config.max_session_age.is_zero())
    else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "token renewal is not configured on this node (auth.token.max_session_age and hmac_secrets)",
        ));
    };
    charge_login(&app, &req)?;
    let Some(token) = authorization(req.headers(), "bearer") else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "send the token to renew as `Authorization: Bearer <token>`",
        ));
    };
    let identity = app.verify_token(token)?;
    let refused = |message: String| {
        app.node.stats.refused.session_expired.fetch_add(1, Relaxed);
        ApiError::new(StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized, message)
    };
    let Some(start) = identity.session_start else {
        return Err(refused(
            "the token has neither `auth_time` nor `iat`, so its session's age is unknown; log in again"
                .to_owned(),
        ));
    };
    let now = unix_now();
    let ends = start.saturating_add(config.max_session_age.as_secs());
    if now >= ends {
        return Err(refused(format!(
            "the session began {}s ago, and auth.token.max_session_age is {}s; log in again",
            now.saturating_sub(start),
            config.max_session_age.as_secs()
        )));
    }
    let ttl = config.refresh_ttl.as_secs().min(ends - now);
    let request = MintRequest {
        user: identity.user.to_string(),
        info: match &identity.info {
            Some(raw) => Some(serde_json::from_str(raw.get()).map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    ErrorCode::Internal,
                    "the token's info could not be carried over",
                )
            })?),
            None => None,
        },
        channels: identity.subscribe.patterns().map(str::to_owned).collect(),
        publish: identity.publish.patterns().map(str::to_owned).collect(),
        ttl: Duration::from_secs(ttl),
        session_start: Some(start),
    };
    let token = minter.mint(&request, now).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("could not issue a token: {e}"),
        )
    })?;
    tracing::debug!(user = %identity.user, "Token renewed.");
    Ok(Json(json!({
        "token": token,
        "user_id": request.user,
        "expires_at": now + ttl,
        "session_expires_at": ends,
    })))
}

/// `POST /auth/telegram` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TelegramBody {
    init_data: String,
}

/// `POST /auth/telegram`: verifies Telegram Mini App `initData` (in the JSON body as
/// `init_data`, or as `Authorization: tma <initData>`) and returns a connection token for that
/// Telegram user.
pub(crate) async fn telegram_login(
    State(app): State<App>,
    req: Request,
) -> Result<Json<Value>, ApiError> {
    let config = &app.auth.telegram;
    let (Some(check), Some(minter)) = (config.check(), app.shared.minter.as_ref()) else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            ErrorCode::NotFound,
            "Telegram login is not configured on this node (auth.telegram)",
        ));
    };
    charge_login(&app, &req)?;
    let raw = match authorization(req.headers(), "tma").map(str::to_owned) {
        Some(raw) => raw,
        None => {
            let JsonBody(body) = JsonBody::<TelegramBody>::from_request(req, &app).await?;
            body.init_data
        }
    };
    let refused = |e: TelegramError| {
        app.node.stats.refused.bad_token.fetch_add(1, Relaxed);
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            format!("initData refused ({}): {e}", e.reason()),
        )
    };
    let now = unix_now();
    let login = verify_init_data(&raw, &check, Some(config.max_age), now).map_err(refused)?;
    let Some(user) = login.user else {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            ErrorCode::BadRequest,
            "initData names no user (a Mini App opened without one cannot log in)",
        ));
    };
    let (channels, publish) = config.grants_for(user.id);
    // The public fields Telegram sent (absent ones are left out, not null).
    let mut info = json!({"telegram_id": user.id, "first_name": user.first_name});
    for (key, value) in [
        ("last_name", &user.last_name),
        ("username", &user.username),
        ("photo_url", &user.photo_url),
    ] {
        if let Some(v) = value {
            info[key] = json!(v);
        }
    }
    let request = MintRequest {
        user: user.id.to_string(),
        info: Some(info),
        channels,
        publish,
        ttl: config.token_ttl,
        session_start: None,
    };
    let token = minter.mint(&request, now).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("could not issue a token: {e}"),
        )
    })?;
    tracing::debug!(telegram_user = user.id, "Telegram login.");
    Ok(Json(json!({
        "token": token,
        "user_id": request.user,
        "expires_at": now + config.token_ttl.as_secs(),
        "user": user,
        "start_param": login.start_param,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn the_header_wins_then_the_cookie_then_the_query() {
        let mut h = HeaderMap::new();
        let q = || Some("from-query");
        assert_eq!(
            presented(&h, q()),
            Some(("from-query".to_owned(), Carrier::Query))
        );
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; herald_token=from-cookie; b=2"),
        );
        assert_eq!(
            presented(&h, q()),
            Some(("from-cookie".to_owned(), Carrier::Cookie))
        );
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer from-header"),
        );
        assert_eq!(
            presented(&h, q()),
            Some(("from-header".to_owned(), Carrier::Header))
        );
        assert_eq!(presented(&HeaderMap::new(), None), None);
    }
}
