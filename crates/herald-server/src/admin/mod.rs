//! The admin page at `/admin`: off unless `[admin]` is configured. An operator logs in with the
//! admin password (kept as an Argon2 hash) or, when allowed, an API key; the session lives in
//! an HttpOnly, SameSite=Strict cookie scoped to `/admin`. Every state-changing request must
//! come from Herald's own origin and carry the session's CSRF token (SameSite alone lets a page
//! on another port of the same host through). The page's API reuses the HTTP API's handlers
//! with the operator's authority, plus a live tail of any channel.

mod tail;

use crate::{ApiError, App};
use argon2::password_hash::{PasswordHash, PasswordVerifier};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use herald_core::{KeyedBuckets, Take};
use herald_protocol::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use subtle::ConstantTimeEq;

/// The `[admin]` section.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// The admin password's Argon2 hash (a PHC string, from `herald hash-password`); the page
    /// is off while neither this nor `api_key_login` is set.
    pub password_hash: Option<herald_core::Secret>,
    /// Also accept any of `auth.api_keys` as the admin password.
    pub api_key_login: bool,
    /// How long a login lasts.
    #[serde(with = "humantime_serde")]
    pub session_ttl: Duration,
    /// Most login attempts one address may make in a minute (failed or not).
    pub logins_per_minute_per_ip: u32,
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            password_hash: None,
            api_key_login: false,
            session_ttl: Duration::from_secs(12 * 3600),
            logins_per_minute_per_ip: 5,
        }
    }
}

impl AdminConfig {
    /// Problems `check-config` reports.
    pub fn problems(&self, api_keys: usize) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(h) = &self.password_hash {
            if PasswordHash::new(h).is_err() {
                out.push(
                    "admin.password_hash: not an Argon2 PHC string; make one with `herald hash-password`"
                        .to_owned(),
                );
            }
        }
        if self.api_key_login && api_keys == 0 {
            out.push("admin.api_key_login: needs auth.api_keys".to_owned());
        }
        if self.session_ttl.is_zero() {
            out.push("admin.session_ttl: must be more than 0s".to_owned());
        }
        out
    }
}

/// The Argon2id hash (PHC string) of `password`, for `admin.password_hash`.
pub fn hash_password(password: &str) -> Result<String, String> {
    use argon2::password_hash::{rand_core::OsRng, PasswordHasher, SaltString};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Most admin sessions held at once; a login beyond it ends the oldest.
const MAX_SESSIONS: usize = 64;

/// The admin page's state, present only when it is configured.
#[derive(Debug)]
pub(crate) struct Admin {
    config: AdminConfig,
    /// API keys that may log in (`api_key_login`).
    keys: Vec<herald_core::Secret>,
    sessions: Mutex<HashMap<String, Session>>,
    logins: KeyedBuckets,
}

#[derive(Debug, Clone)]
struct Session {
    csrf: String,
    created: Instant,
    expires: Instant,
}

const COOKIE: &str = "herald_admin";

/// 32 random bytes from the operating system, in hex (session ids and CSRF tokens).
fn random_hex() -> String {
    use argon2::password_hash::rand_core::{OsRng, RngCore};
    let mut b = [0u8; 32];
    OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

impl Admin {
    /// The admin state when `config` turns the page on.
    pub(crate) fn new(config: &AdminConfig, api_keys: &[crate::ApiKey]) -> Option<Self> {
        let keys: Vec<herald_core::Secret> = if config.api_key_login {
            api_keys.iter().map(|k| k.key.clone()).collect()
        } else {
            Vec::new()
        };
        if config.password_hash.is_none() && keys.is_empty() {
            return None;
        }
        Some(Self {
            config: config.clone(),
            keys,
            sessions: Mutex::new(HashMap::new()),
            logins: KeyedBuckets::new(config.logins_per_minute_per_ip.max(1), 60.0, 10_000),
        })
    }

    fn password_ok(&self, password: &str) -> bool {
        let by_hash = self.config.password_hash.as_ref().is_some_and(|h| {
            PasswordHash::new(h).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        });
        let by_key = self
            .keys
            .iter()
            .any(|k| bool::from(k.as_bytes().ct_eq(password.as_bytes())));
        by_hash || by_key
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.sessions
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn start(&self) -> (String, Session) {
        let now = Instant::now();
        let id = random_hex();
        let session = Session {
            csrf: random_hex(),
            created: now,
            expires: now + self.config.session_ttl,
        };
        let mut all = self.sessions();
        all.retain(|_, s| s.expires > now);
        while all.len() >= MAX_SESSIONS {
            let Some(oldest) = all
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            all.remove(&oldest);
        }
        all.insert(id.clone(), session.clone());
        (id, session)
    }

    fn find(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        let all = self.sessions();
        let s = all.get(&id)?;
        (s.expires > Instant::now()).then(|| (id.clone(), s.clone()))
    }
}

/// The value of cookie `name`.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            let (k, v) = c.trim().split_once('=')?;
            (k == name).then(|| v.to_owned())
        })
}

/// Whether the request comes from a page of Herald's own origin (scheme and `Host`).
fn same_origin(headers: &HeaderMap) -> bool {
    let (Some(origin), Some(host)) = (
        headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        headers.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) else {
        return false;
    };
    origin
        .strip_prefix("http://")
        .or_else(|| origin.strip_prefix("https://"))
        .is_some_and(|rest| rest.eq_ignore_ascii_case(host))
}

fn refused(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    ApiError::new(status, code, message).into_response()
}

fn not_found() -> Response {
    refused(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "the admin page is off: configure [admin] (docs/protocol.md)",
    )
}

/// The routes under `/admin`.
pub(crate) fn routes(app: &App) -> Router<App> {
    let api = Router::new()
        .route("/admin/api/stats", get(crate::api::stats))
        .route("/admin/api/channels", get(crate::api::channels))
        .route("/admin/api/connections", get(crate::api::connections))
        .route("/admin/api/history", get(crate::api::history))
        .route("/admin/api/presence", get(crate::api::presence))
        .route("/admin/api/publish", post(crate::api::publish))
        .route("/admin/api/disconnect", post(crate::api::disconnect))
        .route("/admin/api/tail", get(tail::tail))
        .route("/admin/logout", post(logout))
        .route_layer(axum::middleware::from_fn_with_state(
            app.clone(),
            require_session,
        ));
    Router::new()
        .route("/admin", get(page))
        .route("/admin/", get(page))
        .route("/admin/app.js", get(script))
        .route("/admin/login", post(login))
        .route("/admin/api/session", get(session))
        .merge(api)
}

/// The page itself needs no build: it is embedded from its source.
const PAGE: &str = include_str!("../../../../admin/index.html");
const SCRIPT: &str = include_str!("../../assets/admin.js");

fn asset(body: &'static str, kind: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    // The page loads only its own script and talks only to its own origin.
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    resp
}

async fn page(State(app): State<App>) -> Response {
    if app.shared.admin.is_none() {
        return not_found();
    }
    asset(PAGE, "text/html; charset=utf-8")
}

async fn script(State(app): State<App>) -> Response {
    if app.shared.admin.is_none() {
        return not_found();
    }
    asset(SCRIPT, "text/javascript; charset=utf-8")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct LoginBody {
    password: String,
}

async fn login(
    State(app): State<App>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    headers: HeaderMap,
    crate::api::JsonBody(body): crate::api::JsonBody<LoginBody>,
) -> Response {
    let Some(admin) = app.shared.admin.as_ref() else {
        return not_found();
    };
    if !same_origin(&headers) {
        return refused(
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            "log in from the admin page itself",
        );
    }
    let peer = peer.map(|axum::Extension(c)| c.0.ip());
    let client = app.client_addr(peer, &headers);
    let key = client
        .ip
        .map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    // A full map of addresses refuses too: logins fail closed.
    if admin.logins.take(&key) != Take::Allowed {
        return refused(
            StatusCode::TOO_MANY_REQUESTS,
            ErrorCode::RateLimited,
            "too many login attempts from this address; wait a minute",
        );
    }
    if !admin.password_ok(&body.password) {
        tracing::warn!(client = ?client.ip, "Admin login refused: wrong password.");
        return refused(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "wrong password",
        );
    }
    let (id, session) = admin.start();
    tracing::info!(client = ?client.ip, "Admin logged in.");
    let secure = headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|o| o.starts_with("https://"));
    let cookie = format!(
        "{COOKIE}={id}; Path=/admin; HttpOnly; SameSite=Strict; Max-Age={}{}",
        admin.config.session_ttl.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut resp = Json(json!({"csrf": session.csrf})).into_response();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// `GET /admin/api/session`: the CSRF token of the current login (a reloaded page's).
async fn session(State(app): State<App>, headers: HeaderMap) -> Response {
    let Some(admin) = app.shared.admin.as_ref() else {
        return not_found();
    };
    match admin.find(&headers) {
        Some((_, s)) => Json(json!({"csrf": s.csrf})).into_response(),
        None => refused(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "not logged in",
        ),
    }
}

async fn logout(State(app): State<App>, headers: HeaderMap) -> Response {
    if let (Some(admin), Some((id, _))) = (
        app.shared.admin.as_ref(),
        app.shared.admin.as_ref().and_then(|a| a.find(&headers)),
    ) {
        admin.sessions().remove(&id);
    }
    let mut resp = Json(json!({})).into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "herald_admin=; Path=/admin; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    resp
}

/// Lets a request through only with a live login; a state-changing one also needs Herald's
/// own `Origin` and the login's CSRF token in `X-Herald-CSRF`.
async fn require_session(State(app): State<App>, req: Request, next: Next) -> Response {
    let Some(admin) = app.shared.admin.as_ref() else {
        return not_found();
    };
    let Some((_, session)) = admin.find(req.headers()) else {
        return refused(
            StatusCode::UNAUTHORIZED,
            ErrorCode::Unauthorized,
            "not logged in",
        );
    };
    if req.method() != Method::GET {
        let token_ok = req
            .headers()
            .get("x-herald-csrf")
            .is_some_and(|v| bool::from(v.as_bytes().ct_eq(session.csrf.as_bytes())));
        if !same_origin(req.headers()) || !token_ok {
            return refused(
                StatusCode::FORBIDDEN,
                ErrorCode::Forbidden,
                "a cross-site request to the admin page was refused",
            );
        }
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn only_herald_s_own_origin_is_the_same_origin() {
        let host = ("host", "127.0.0.1:7077");
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:7077")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "https://127.0.0.1:7077")
        ])));
        // Same site, another port: another origin.
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "http://127.0.0.1:8080")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[host])));
    }

    #[test]
    fn a_password_matches_its_hash_and_an_allowed_key_only() {
        let hash = hash_password("correct horse battery staple").unwrap();
        let config = AdminConfig {
            password_hash: Some(herald_core::Secret::new(hash)),
            api_key_login: true,
            ..AdminConfig::default()
        };
        assert!(config.problems(1).is_empty());
        let key = crate::ApiKey {
            name: "ops".into(),
            key: herald_core::Secret::new("an-api-key-of-some-length"),
            requests_per_second: 0,
        };
        let admin = Admin::new(&config, &[key]).unwrap();
        assert!(admin.password_ok("correct horse battery staple"));
        assert!(admin.password_ok("an-api-key-of-some-length"));
        assert!(!admin.password_ok("correct horse battery stapl"));
        assert!(!admin.password_ok(""));
        assert!(
            Admin::new(&AdminConfig::default(), &[]).is_none(),
            "off by default"
        );
        let bad = AdminConfig {
            password_hash: Some(herald_core::Secret::new("plain text")),
            api_key_login: true,
            ..AdminConfig::default()
        };
        assert_eq!(bad.problems(0).len(), 2);
    }

    #[test]
    fn the_cookie_is_read_among_others() {
        let h = headers(&[("cookie", "a=1; herald_admin=abc; b=2")]);
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert_eq!(cookie(&headers(&[]), COOKIE), None);
    }
}
