//! The settings this crate owns: listener and HTTP limits, SSE and WebSocket timings.

use bytesize::ByteSize;
use herald_auth::{TelegramConfig, TokenConfig, TokenVerifier};
use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::time::Duration;
use tower_http::cors::{AllowOrigin, Any, CorsLayer};

/// Serializes a size exactly (`4 MiB`, `1000000 B`), so a printed configuration reads back to
/// the same value; `ByteSize`'s own form rounds to one decimal (`976.6 KiB`).
pub fn exact_size<S: serde::Serializer>(size: &ByteSize, s: S) -> Result<S::Ok, S::Error> {
    let n = size.as_u64();
    for (unit, mult) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
        if n >= mult && n.is_multiple_of(mult) {
            return s.serialize_str(&format!("{} {unit}", n / mult));
        }
    }
    s.serialize_str(&format!("{n} B"))
}

/// Listener and HTTP settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Most simultaneous SSE and WebSocket connections; more are refused with 503.
    pub max_connections: usize,
    /// Most simultaneous SSE and WebSocket connections from one remote address; more are
    /// refused with 429. Loopback is not counted (a local reverse proxy); 0 for no limit.
    pub max_connections_per_ip: usize,
    /// Largest HTTP request body.
    #[serde(serialize_with = "exact_size")]
    pub max_body: ByteSize,
    /// A client must send its request headers within this time; a connection that does not
    /// is closed without an answer.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// A write to a client that makes no progress for this long ends the connection.
    #[serde(with = "humantime_serde")]
    pub write_timeout: Duration,
    /// How long shutdown waits for connections to finish before exiting anyway, counted from
    /// the signal (so it includes `drain_window`).
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// On SIGTERM, how long the node drains before it shuts down: readiness is false and new
    /// connections are refused at once, the HTTP API keeps accepting publications, and the
    /// open connections are told to reconnect at an even pace over the window (each with a
    /// jittered delay). Must be shorter than `shutdown_grace`; 0 tells every connection at
    /// once.
    #[serde(with = "humantime_serde")]
    pub drain_window: Duration,
    /// Browser origins allowed by CORS and for WebSocket upgrades (`*` for any; empty for
    /// same-origin only). Herald's own origin (the request's `Host`) is always allowed for
    /// WebSocket upgrades; a token in the `herald_token` cookie counts only from Herald's own
    /// origin or one listed by name (`*` does not count).
    pub cors_allowed_origins: Vec<String>,
    /// Reverse proxies in front of Herald (addresses or CIDR blocks, e.g. `["127.0.0.1",
    /// "10.0.0.0/8"]`). For a request from one of them the client is the right-most address
    /// of `X-Forwarded-For` that is not a trusted proxy; from any other peer the header is
    /// ignored. Empty: no proxy is trusted.
    pub trusted_proxies: Vec<String>,
    /// Which header a trusted proxy names the client in: `x-forwarded-for`, or `x-real-ip`
    /// (one address, set by the proxy).
    pub client_ip_header: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7077)),
            max_connections: 100_000,
            max_connections_per_ip: 1000,
            max_body: ByteSize::mib(1),
            header_read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            drain_window: Duration::from_secs(5),
            cors_allowed_origins: vec!["*".to_owned()],
            trusted_proxies: Vec::new(),
            client_ip_header: "x-forwarded-for".to_owned(),
        }
    }
}

/// Who may use the HTTP API, and whether the node may run open on a public address.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Keys for the HTTP API (`Authorization: Bearer <key>`). With none, the API answers
    /// loopback callers only.
    pub api_keys: Vec<ApiKey>,
    /// Allow listening on a non-loopback address with no authentication configured.
    pub allow_insecure: bool,
    /// Connection tokens (JWT) for SSE and WebSocket clients.
    pub token: TokenConfig,
    /// Telegram Mini App login (`POST /auth/telegram`), which issues connection tokens.
    pub telegram: TelegramConfig,
}

/// One named API key; several may be valid at once, so a key can be rotated.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    /// A name for logs and rotation (`backend`, `worker-2025`).
    pub name: String,
    /// The secret (at least 16 characters).
    pub key: herald_core::Secret,
    /// Most HTTP API requests per second with this key (a token bucket holding a second's
    /// worth); 0 for no limit.
    #[serde(default)]
    pub requests_per_second: u32,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .field("requests_per_second", &self.requests_per_second)
            .finish()
    }
}

impl AuthConfig {
    /// Whether any authentication is configured (API keys, token keys, Telegram login). Once
    /// it is, namespaces without an explicit `subscribe` are closed.
    pub fn configured(&self) -> bool {
        !self.api_keys.is_empty() || self.token.configured() || self.telegram.configured()
    }

    /// Problems a type cannot express.
    pub fn problems(&self, listen: SocketAddr) -> Vec<String> {
        let mut out = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        for k in &self.api_keys {
            if k.name.is_empty() {
                out.push("auth.api_keys: every key needs a name".to_owned());
            } else if !names.insert(k.name.as_str()) {
                out.push(format!(
                    "auth.api_keys: the name {:?} is used twice",
                    k.name
                ));
            }
            if k.key.chars().count() < 16 {
                out.push(format!(
                    "auth.api_keys: the key named {:?} is shorter than 16 characters",
                    k.name
                ));
            }
        }
        // Building the verifier checks everything `TokenConfig::problems` does, and the key files.
        if self.token.configured() {
            if let Err(errors) = TokenVerifier::new(&self.token) {
                out.extend(errors);
            }
        } else {
            out.extend(self.token.problems());
        }
        out.extend(self.telegram.problems());
        if self.telegram.configured() && self.token.hmac_secrets.is_empty() {
            out.push(
                "auth.telegram needs auth.token.hmac_secrets: the first secret signs the tokens Telegram logins receive"
                    .to_owned(),
            );
        }
        if !listen.ip().is_loopback() && !self.configured() && !self.allow_insecure {
            out.push(format!(
                "server.listen {listen} is reachable from other machines and no authentication is configured; configure authentication (auth.api_keys, auth.token or auth.telegram), listen on a loopback address, or pass --allow-insecure (auth.allow_insecure = true) to run open on purpose"
            ));
        }
        out
    }
}

/// Server-Sent Events settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SseConfig {
    /// A comment line is sent this often (a fixed period) so proxies keep the stream open.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// The reconnection delay advertised to clients (`retry:`).
    #[serde(with = "humantime_serde")]
    pub retry: Duration,
}

impl Default for SseConfig {
    fn default() -> Self {
        Self {
            keepalive: Duration::from_secs(15),
            retry: Duration::from_secs(2),
        }
    }
}

/// WebSocket settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WsConfig {
    /// The server sends a WebSocket ping this often.
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// A peer that sends nothing (not even a pong) for this long is closed.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// Largest incoming WebSocket message.
    #[serde(serialize_with = "exact_size")]
    pub max_message: ByteSize,
}

impl Default for WsConfig {
    fn default() -> Self {
        Self {
            ping_interval: Duration::from_secs(25),
            idle_timeout: Duration::from_secs(60),
            max_message: ByteSize::kib(128),
        }
    }
}

impl ServerConfig {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.max_connections == 0 {
            out.push("server.max_connections must be at least 1".to_owned());
        }
        if let Err(problems) = crate::client_addr::TrustedProxies::parse(&self.trusted_proxies) {
            out.extend(problems);
        }
        if !["x-forwarded-for", "x-real-ip"]
            .iter()
            .any(|h| h.eq_ignore_ascii_case(&self.client_ip_header))
        {
            out.push(format!(
                "server.client_ip_header must be \"x-forwarded-for\" or \"x-real-ip\", not {:?}",
                self.client_ip_header
            ));
        }
        if !self.drain_window.is_zero() && self.drain_window >= self.shutdown_grace {
            out.push(format!(
                "server.drain_window ({}) must be shorter than server.shutdown_grace ({}), which counts from the signal",
                humantime::format_duration(self.drain_window),
                humantime::format_duration(self.shutdown_grace)
            ));
        }
        for o in &self.cors_allowed_origins {
            if o != "*" && o.parse::<axum::http::HeaderValue>().is_err() {
                out.push(format!(
                    "server.cors_allowed_origins: {o:?} is not a valid origin"
                ));
            }
        }
        out
    }
}

impl WsConfig {
    /// Every problem with these settings.
    pub fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.ping_interval.is_zero() || self.ping_interval >= self.idle_timeout {
            out.push(
                "ws.ping_interval must be more than 0s and less than ws.idle_timeout".to_owned(),
            );
        }
        out
    }
}

pub(crate) fn cors_layer(origins: &[String]) -> CorsLayer {
    let base = CorsLayer::new()
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([
            axum::http::header::CONTENT_TYPE,
            axum::http::header::AUTHORIZATION,
            axum::http::HeaderName::from_static("last-event-id"),
        ]);
    if origins.iter().any(|o| o == "*") {
        base.allow_origin(Any)
    } else {
        let list = origins.iter().filter_map(|o| o.parse().ok());
        base.allow_origin(AllowOrigin::list(list))
    }
}
