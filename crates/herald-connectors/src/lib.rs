//! Connectors: sources outside Herald whose events become channel publications, through the
//! same [`Publisher`] as the HTTP API.
//!
//! - `postgres`: an outbox table filled by `herald_publish()` inside the application's
//!   transactions (lossless, commit order per channel), or existing triggers' NOTIFYs.
//! - `redis`: plain `PUBLISH`es on any Redis (at most once) and a stream read as a consumer
//!   group (lossless).
//! - `twitch`: a broadcaster's EventSub WebSocket session and a Helix stats poll.
//!
//! Each pulled source runs on one node of a cluster at a time: the node holding its lease in
//! the engine ([`herald_core::Leases`]); when that node dies its lease expires and another
//! takes over. Lossless sources publish with an idempotency key naming the source's own
//! position, so what the dead node published but had not yet marked done is not published
//! twice. Each connector's state is a [`ConnectorStatus`] on the node's [`Connectors`].
//! Webhooks, which need no lease, are served by `herald-server`.

mod postgres;
mod publish;
mod redis;
mod run;
mod twitch;

pub use postgres::{PostgresConfig, PostgresMode};
pub use redis::RedisSourceConfig;
pub use twitch::{TwitchConfig, DEFAULT_EVENTS};

use herald_core::{ConnectorStatus, Connectors, Leases, Publisher};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Every pulled connector of the configuration.
#[derive(Debug, Clone, Default)]
pub struct ConnectorSet {
    /// `[[connectors.postgres]]`.
    pub postgres: Vec<PostgresConfig>,
    /// `[[connectors.redis]]`.
    pub redis: Vec<RedisSourceConfig>,
    /// `[[connectors.twitch]]`.
    pub twitch: Vec<TwitchConfig>,
    /// The Redis engine's key prefix, when the engine is Redis: its own traffic is never
    /// read back by a Redis connector.
    pub engine_prefix: Option<String>,
}

/// Every problem with the connectors, for `check-config`.
pub fn problems(set: &ConnectorSet) -> Vec<String> {
    let mut out = Vec::new();
    postgres::problems(&set.postgres, &mut out);
    redis::problems(&set.redis, set.engine_prefix.as_deref(), &mut out);
    twitch::problems(&set.twitch, &mut out);
    let mut seen = std::collections::HashSet::new();
    let names = set.postgres.iter().map(|c| ("postgres", &c.name));
    let names = names.chain(set.redis.iter().map(|c| ("redis", &c.name)));
    let names = names.chain(set.twitch.iter().map(|c| ("twitch", &c.name)));
    for (kind, name) in names {
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            out.push(format!(
                "connectors.{kind} name {name:?} must be letters, digits, '-' or '_'"
            ));
        } else if !seen.insert((kind, name.clone())) {
            out.push(format!("connectors.{kind} name {name:?} is used twice"));
        }
    }
    out
}

/// One run of a connector, until its token is cancelled.
type Work = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Starts every connector on `tracker`; they stop when `token` is cancelled.
pub fn start(
    set: &ConnectorSet,
    publisher: &Arc<Publisher>,
    leases: &Arc<dyn Leases>,
    token: &CancellationToken,
    tracker: &TaskTracker,
) -> Arc<Connectors> {
    let holder = format!("node-{:016x}", fastrand::u64(..));
    let mut list = Vec::new();
    // Each connector runs under its lease; `work` makes one run of it.
    let mut spawn = |status: Arc<ConnectorStatus>,
                     work: Box<dyn FnMut(CancellationToken) -> Work + Send>| {
        list.push(status.clone());
        tracker.spawn(run::lead(
            leases.clone(),
            holder.clone(),
            status,
            token.clone(),
            work,
        ));
    };
    for c in &set.postgres {
        let status = ConnectorStatus::new("postgres", c.name.clone());
        let (config, publisher, s) = (Arc::new(c.clone()), publisher.clone(), status.clone());
        spawn(
            status,
            Box::new(move |t| {
                Box::pin(postgres::run(
                    config.clone(),
                    publisher.clone(),
                    s.clone(),
                    t,
                ))
            }),
        );
    }
    for c in &set.redis {
        let status = ConnectorStatus::new("redis", c.name.clone());
        let (config, publisher, s) = (Arc::new(c.clone()), publisher.clone(), status.clone());
        let prefix = set.engine_prefix.clone();
        spawn(
            status,
            Box::new(move |t| {
                Box::pin(redis::run(
                    config.clone(),
                    publisher.clone(),
                    s.clone(),
                    prefix.clone(),
                    t,
                ))
            }),
        );
    }
    for c in &set.twitch {
        let status = ConnectorStatus::new("twitch", c.name.clone());
        let (config, publisher, s) = (Arc::new(c.clone()), publisher.clone(), status.clone());
        spawn(
            status,
            Box::new(move |t| {
                Box::pin(twitch::run(config.clone(), publisher.clone(), s.clone(), t))
            }),
        );
    }
    Arc::new(Connectors { list })
}
