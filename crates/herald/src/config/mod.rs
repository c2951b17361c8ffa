//! Configuration: defaults ← TOML file (`--config`) ← `HERALD_*` environment variables
//! (`__` separates sections: `HERALD_SERVER__LISTEN`) ← command-line flags. Unknown keys are
//! errors, and every problem is reported at once.

use anyhow::Context;
use bytesize::ByteSize;
use figment::providers::{Env, Format, Serialized, Toml};
use figment::value::{Dict, Value};
use figment::{Figment, Provider};
use herald_core::memory::MemoryEngineConfig;
use herald_core::{ChannelsConfig, OutboxLimits, SessionLimits};
use herald_nats::NatsEngineConfig;
use herald_redis::RedisEngineConfig;
use herald_server::{AuthConfig, ProxyConfig, ServerConfig, SseConfig, WsConfig};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

/// The whole configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Config {
    pub(crate) server: ServerConfig,
    pub(crate) sse: SseConfig,
    pub(crate) ws: WsConfig,
    pub(crate) connection: ConnectionConfig,
    pub(crate) publish: PublishConfig,
    pub(crate) channels: ChannelsConfig,
    pub(crate) engine: EngineConfig,
    pub(crate) auth: AuthConfig,
    pub(crate) proxy: ProxyConfig,
    pub(crate) metrics: MetricsConfig,
    pub(crate) admin: herald_server::AdminConfig,
    pub(crate) connectors: ConnectorsConfig,
    pub(crate) log: LogConfig,
}

/// Where events come from besides the HTTP API.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ConnectorsConfig {
    /// Signed webhooks, each POSTed to `/ingest/NAME`.
    pub(crate) webhook: Vec<herald_server::WebhookConfig>,
    /// Postgres outboxes and NOTIFY triggers.
    pub(crate) postgres: Vec<herald_connectors::PostgresConfig>,
    /// Pub/sub patterns and streams on any Redis.
    pub(crate) redis: Vec<herald_connectors::RedisSourceConfig>,
    /// Twitch accounts: EventSub and the stats poll.
    pub(crate) twitch: Vec<herald_connectors::TwitchConfig>,
}

impl ConnectorsConfig {
    /// The connectors that pull from a source (run under a lease), beside `engine`.
    pub(crate) fn pulled(&self, engine: &EngineConfig) -> herald_connectors::ConnectorSet {
        herald_connectors::ConnectorSet {
            postgres: self.postgres.clone(),
            redis: self.redis.clone(),
            twitch: self.twitch.clone(),
            engine_prefix: match engine {
                EngineConfig::Redis(r) => Some(r.prefix.clone()),
                _ => None,
            },
        }
    }
}

/// Per-connection bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct ConnectionConfig {
    /// Most channels one connection may subscribe to.
    pub(crate) max_channels: usize,
    /// Most publications a connection may fall behind on one channel (and most presence events
    /// queued for it) before it is evicted as too slow.
    pub(crate) outbox_messages: usize,
    /// Most bytes a connection may fall behind on one channel (and of presence events queued for
    /// it) before it is evicted as too slow.
    #[serde(serialize_with = "herald_server::exact_size")]
    pub(crate) outbox_bytes: ByteSize,
    /// Most publishes one connection may make in a minute; 0 for no limit.
    pub(crate) publish_per_minute: u32,
    /// Most subscribe requests one connection may make in a minute; 0 for no limit.
    pub(crate) subscribe_per_minute: u32,
    /// Most open connections one user (token `sub`) may hold on this node; 0 for no limit.
    pub(crate) max_per_user: usize,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        let d = SessionLimits::default();
        Self {
            max_channels: d.max_channels,
            outbox_messages: d.outbox.messages,
            outbox_bytes: ByteSize::b(d.outbox.bytes as u64),
            publish_per_minute: d.publish_per_minute,
            subscribe_per_minute: d.subscribe_per_minute,
            max_per_user: d.max_per_user,
        }
    }
}

impl ConnectionConfig {
    pub(crate) fn limits(&self) -> SessionLimits {
        SessionLimits {
            max_channels: self.max_channels,
            outbox: OutboxLimits {
                messages: self.outbox_messages,
                bytes: usize::try_from(self.outbox_bytes.as_u64()).unwrap_or(usize::MAX),
            },
            publish_per_minute: self.publish_per_minute,
            subscribe_per_minute: self.subscribe_per_minute,
            max_per_user: self.max_per_user,
        }
    }
}

/// Publishing bounds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PublishConfig {
    /// Largest `data` payload of one publication.
    #[serde(serialize_with = "herald_server::exact_size")]
    pub(crate) max_data: ByteSize,
    /// How long a publication's `idempotency_key` is remembered: a repeat within it publishes
    /// nothing and answers with the first one's position.
    #[serde(with = "humantime_serde")]
    pub(crate) idempotency_window: std::time::Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            max_data: ByteSize::kib(64),
            idempotency_window: std::time::Duration::from_secs(600),
        }
    }
}

/// Which engine carries publications, history and presence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(crate) enum EngineConfig {
    /// In-process: one node, history in memory.
    Memory(MemoryEngineConfig),
    /// Many nodes over one Redis.
    Redis(RedisEngineConfig),
    /// Many nodes over NATS with JetStream.
    Nats(NatsEngineConfig),
}

/// The engine kinds, as named in `engine.kind` and `--engine`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum EngineKind {
    /// In-process (the default).
    Memory,
    /// Redis.
    Redis,
    /// NATS with JetStream.
    Nats,
}

impl EngineConfig {
    /// The defaults of the engine named `kind`.
    fn defaults(kind: &str) -> Option<Self> {
        match kind {
            "memory" => Some(Self::Memory(MemoryEngineConfig::default())),
            "redis" => Some(Self::Redis(RedisEngineConfig::default())),
            "nats" => Some(Self::Nats(NatsEngineConfig::default())),
            _ => None,
        }
    }

    /// `memory`, `redis` or `nats`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Self::Memory(_) => "memory",
            Self::Redis(_) => "redis",
            Self::Nats(_) => "nats",
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self::Memory(MemoryEngineConfig::default())
    }
}

/// Prometheus metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct MetricsConfig {
    /// Also serve `GET /metrics` on this address, without the API's authentication (for
    /// scrapers inside the network); unset, `/metrics` is served with the API only.
    pub(crate) listen: Option<std::net::SocketAddr>,
}

/// Log output.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct LogConfig {
    /// `pretty` or `json`. The level comes from `HERALD_LOG` (default `info`).
    pub(crate) format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub(crate) enum LogFormat {
    /// Human-readable.
    #[default]
    Pretty,
    /// One JSON object per line.
    Json,
}

/// Values given as command-line flags; they win over everything else.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Overrides {
    pub(crate) listen: Option<SocketAddr>,
    pub(crate) log_format: Option<LogFormat>,
    pub(crate) engine: Option<EngineKind>,
    pub(crate) engine_url: Option<String>,
    pub(crate) data_dir: Option<std::path::PathBuf>,
    pub(crate) allow_insecure: bool,
}

/// Environment variables with the `HERALD_` prefix that are not configuration keys.
const NON_CONFIG_ENV: &[&str] = &["log", "config", "url", "api_key", "token"];

/// Every problem found while loading the configuration.
#[derive(Debug)]
pub(crate) struct Problems(Vec<String>);

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "The configuration has {} problem(s):", self.0.len())?;
        for p in &self.0 {
            writeln!(f, "  - {p}")?;
        }
        Ok(())
    }
}

fn env_provider() -> Env {
    Env::prefixed("HERALD_")
        .filter(|k| {
            let k = k.as_str().to_ascii_lowercase();
            !NON_CONFIG_ENV.contains(&k.as_str()) && !k.starts_with("test_")
        })
        .split("__")
}

/// Loads the configuration from defaults, `file`, the environment and `flags`.
pub(crate) fn load(file: Option<&Path>, flags: &Overrides) -> Result<Config, Problems> {
    let mut problems = Vec::new();
    // The engine section's defaults depend on its kind, so the base layer names only the
    // kind; the chosen engine's own defaults fill in the rest when it is read.
    let mut base = dict_of(Config::default());
    base.insert(
        "engine".to_owned(),
        Value::from(Dict::from([("kind".to_owned(), Value::from("memory"))])),
    );
    let mut figment = Figment::from(Serialized::defaults(Value::from(base)));
    if let Some(path) = file {
        if !path.exists() {
            return Err(Problems(vec![format!(
                "the configuration file {} does not exist",
                path.display()
            )]));
        }
        figment = figment.merge(Toml::file_exact(path));
    }
    figment = figment.merge(env_provider());
    if let Some(listen) = flags.listen {
        figment = figment.merge(Serialized::default("server.listen", listen.to_string()));
    }
    if let Some(format) = flags.log_format {
        figment = figment.merge(Serialized::default("log.format", format));
    }
    if let Some(kind) = flags.engine {
        figment = figment.merge(Serialized::default("engine.kind", kind));
    }
    if let Some(url) = &flags.engine_url {
        figment = figment.merge(Serialized::default("engine.url", url));
    }
    if let Some(dir) = &flags.data_dir {
        figment = figment.merge(Serialized::default("engine.data_dir", dir));
    }
    if flags.allow_insecure {
        figment = figment.merge(Serialized::default("auth.allow_insecure", true));
    }
    // Unknown keys: report all of them, then drop them so the rest can still be checked.
    let merged = match figment.data() {
        Ok(data) => data.into_values().next().unwrap_or_default(),
        Err(e) => return Err(Problems(e.into_iter().map(|e| e.to_string()).collect())),
    };
    let mut schema = dict_of(Config::default());
    let kind = match merged.get("engine") {
        Some(Value::Dict(_, e)) => e.get("kind").and_then(|k| k.as_str().map(str::to_owned)),
        _ => None,
    };
    match kind.as_deref().map(EngineConfig::defaults) {
        Some(Some(engine)) => {
            schema.insert("engine".to_owned(), Value::from(dict_of(engine)));
        }
        Some(None) => {
            problems.push(format!(
                "engine.kind: unknown engine {:?}; expected memory, redis or nats",
                kind.unwrap_or_default()
            ));
            return Err(Problems(problems));
        }
        None => {}
    }
    let mut merged = merged;
    if kind.as_deref().is_some_and(|k| k != "memory") {
        if let Some(Value::Dict(_, e)) = merged.get_mut("engine") {
            if e.remove("data_dir").is_some() {
                problems.push(format!(
                    "engine.data_dir (--data-dir) keeps the memory engine's channels on disk; the {} engine keeps them in its server, so remove it",
                    kind.as_deref().unwrap_or_default()
                ));
            }
        }
    }
    let known = unknown_keys(&merged, &schema, "", &mut problems);
    let checked = Figment::from(Serialized::defaults(Value::from(known)));
    // Each section is read on its own, so a type error in one does not hide the others; a
    // section that cannot be read is replaced by its defaults for the semantic checks below.
    let config = Config {
        server: section(&checked, "server", &mut problems),
        sse: section(&checked, "sse", &mut problems),
        ws: section(&checked, "ws", &mut problems),
        connection: section(&checked, "connection", &mut problems),
        publish: section(&checked, "publish", &mut problems),
        channels: section(&checked, "channels", &mut problems),
        engine: section(&checked, "engine", &mut problems),
        auth: section(&checked, "auth", &mut problems),
        proxy: section(&checked, "proxy", &mut problems),
        metrics: section(&checked, "metrics", &mut problems),
        admin: section(&checked, "admin", &mut problems),
        connectors: section(&checked, "connectors", &mut problems),
        log: section(&checked, "log", &mut problems),
    };
    problems.extend(config.problems());
    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Problems(problems))
    }
}

/// `value` as a figment dictionary (its serialized form).
fn dict_of<T: Serialize>(value: T) -> Dict {
    Figment::from(Serialized::defaults(value))
        .data()
        .ok()
        .and_then(|d| d.into_values().next())
        .unwrap_or_default()
}

fn section<T: serde::de::DeserializeOwned + Default>(
    figment: &Figment,
    key: &str,
    problems: &mut Vec<String>,
) -> T {
    match figment.extract_inner::<T>(key) {
        Ok(v) => v,
        Err(e) => {
            problems.extend(e.into_iter().map(|e| {
                // figment's path may repeat the section name; print it once, first.
                let rest: Vec<&str> = e
                    .path
                    .iter()
                    .map(String::as_str)
                    .filter(|p| *p != key)
                    .collect();
                let path = std::iter::once(key)
                    .chain(rest)
                    .collect::<Vec<_>>()
                    .join(".");
                format!("{path}: {}", e.kind)
            }));
            T::default()
        }
    }
}

/// Reports keys of `user` that `schema` does not have, and returns `user` without them.
fn unknown_keys(user: &Dict, schema: &Dict, path: &str, out: &mut Vec<String>) -> Dict {
    let mut kept = Dict::new();
    for (key, value) in user {
        let full = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        if path == "channels.namespaces" {
            let ns_schema = Figment::from(Serialized::defaults(
                herald_core::NamespaceOptions::default(),
            ))
            .data()
            .ok()
            .and_then(|d| d.into_values().next())
            .unwrap_or_default();
            if let Value::Dict(tag, d) = value {
                let pruned = unknown_keys(d, &ns_schema, &full, out);
                kept.insert(key.clone(), Value::Dict(*tag, pruned));
            } else {
                out.push(format!("{full} must be a table of namespace options"));
            }
            continue;
        }
        match (schema.get(key), value) {
            (None, _) => out.push(format!("unknown key `{full}`")),
            (Some(Value::Dict(_, s)), Value::Dict(tag, u)) => {
                let pruned = unknown_keys(u, s, &full, out);
                kept.insert(key.clone(), Value::Dict(*tag, pruned));
            }
            _ => {
                kept.insert(key.clone(), value.clone());
            }
        }
    }
    kept
}

impl Config {
    /// Semantic checks that types alone cannot express.
    fn problems(&self) -> Vec<String> {
        let mut out = self.server.problems();
        out.extend(self.admin.problems(self.auth.api_keys.len()));
        out.extend(self.auth.problems(self.server.listen));
        out.extend(self.ws.problems());
        out.extend(self.channels.problems());
        out.extend(self.proxy.problems(self.channels.uses_proxy()));
        if self.connection.max_channels == 0 {
            out.push("connection.max_channels must be at least 1".to_owned());
        }
        if self.connection.outbox_messages == 0 {
            out.push("connection.outbox_messages must be at least 1".to_owned());
        }
        if self.connection.outbox_bytes.as_u64() < 1024 {
            out.push("connection.outbox_bytes must be at least 1KiB".to_owned());
        }
        if self.publish.max_data.as_u64() == 0 {
            out.push("publish.max_data must be more than 0".to_owned());
        }
        if self.publish.max_data.as_u64() + 1024 > self.ws.max_message.as_u64() {
            out.push(format!(
                "ws.max_message ({}) must exceed publish.max_data ({}) by at least 1KiB, so a client can publish the largest allowed payload",
                self.ws.max_message, self.publish.max_data
            ));
        }
        out.extend(herald_server::webhook_problems(&self.connectors.webhook));
        out.extend(herald_connectors::problems(
            &self.connectors.pulled(&self.engine),
        ));
        let window = self.publish.idempotency_window;
        if window < std::time::Duration::from_secs(1)
            || window > std::time::Duration::from_secs(86_400)
        {
            out.push("publish.idempotency_window must be 1s to 1day".to_owned());
        }
        if self.sse.keepalive.is_zero() {
            out.push("sse.keepalive must be more than 0s".to_owned());
        }
        match &self.engine {
            EngineConfig::Memory(m) => {
                if m.max_channels == 0 {
                    out.push("engine.max_channels must be at least 1".to_owned());
                }
                if let Some(dir) = &m.data_dir {
                    if dir.exists() && !dir.is_dir() {
                        out.push(format!(
                            "engine.data_dir: {} exists and is not a directory",
                            dir.display()
                        ));
                    }
                }
            }
            EngineConfig::Redis(r) => {
                remote_problems(
                    &r.url,
                    "redis://",
                    r.presence_lease,
                    r.command_timeout,
                    &mut out,
                );
                if r.prefix.is_empty() || r.prefix.contains(['{', '}', ' ']) {
                    out.push(
                        "engine.prefix must be non-empty, without braces or spaces".to_owned(),
                    );
                }
            }
            EngineConfig::Nats(n) => {
                remote_problems(
                    &n.url,
                    "nats://",
                    n.presence_lease,
                    n.command_timeout,
                    &mut out,
                );
                if n.prefix.is_empty()
                    || !n.prefix.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-'
                    })
                {
                    out.push(
                        "engine.prefix must be non-empty lowercase letters, digits, _ or -"
                            .to_owned(),
                    );
                }
            }
        }
        out
    }
}

/// Checks shared by the engines that connect to a server.
fn remote_problems(
    url: &str,
    scheme: &str,
    lease: std::time::Duration,
    timeout: std::time::Duration,
    out: &mut Vec<String>,
) {
    let schemes: &[&str] = if scheme == "redis://" {
        &[
            "redis://",
            "rediss://",
            "redis-cluster://",
            "redis-sentinel://",
        ]
    } else {
        &["nats://", "tls://"]
    };
    if !schemes.iter().any(|s| url.starts_with(s)) {
        out.push(format!(
            "engine.url {url:?} must start with {}",
            schemes.join(" or ")
        ));
    }
    if lease < std::time::Duration::from_secs(1) {
        out.push("engine.presence_lease must be at least 1s".to_owned());
    }
    if timeout.is_zero() {
        out.push("engine.command_timeout must be more than 0s".to_owned());
    }
}

/// The effective configuration as TOML. Secrets (API keys, token secrets, the bot token,
/// credentials in engine URLs) are `Secret` and `SecretUrl` values, which serialize redacted.
pub(crate) fn render(config: &Config) -> anyhow::Result<String> {
    toml::to_string(config).context("rendering the configuration as TOML")
}

#[cfg(test)]
mod tests;
