//! Starting the Redis engine: connecting its two clients (commands, and pub/sub), then the
//! node's tasks.

use crate::config::RedisEngineConfig;
use crate::engine::RedisEngine;
use crate::presence::RedisPresence;
use crate::scripts::{self, Lua};
use crate::{ingest, loops};
use fred::error::Error as RedisError;
use fred::interfaces::{ClientLike, PubsubInterface};
use fred::prelude::{Builder, Config as FredConfig, ReconnectPolicy};
use herald_core::{EngineError, EngineParts, Hub, LinkState, NodeParts, Remote};
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Pub/sub messages buffered between fred's reader and the message loop; overflowing it
/// triggers a recovery from history, never a silent loss. (The message loop only decodes and
/// queues, so it falls this far behind only when the node is starved of CPU.)
const MESSAGE_BUFFER: usize = 2048;

impl RedisEngine {
    /// Connects to Redis, failing when it cannot be reached, and spawns on `tracker` the
    /// message loop, the reconnect watcher, the presence refresher, the worker stream consumer
    /// (when `ingest` is on) and the canary, recovery and re-subscription tasks, all stopping
    /// when `shutdown` is cancelled. Returns once the first canary made the round trip or
    /// failed.
    pub async fn start(
        config: RedisEngineConfig,
        node: &NodeParts,
        shutdown: CancellationToken,
        tracker: &TaskTracker,
    ) -> Result<EngineParts, EngineError> {
        let engine = Self::connect(config, node.hub.clone(), node.channels.clone()).await?;
        let publisher = node.publisher(engine.clone());
        loops::spawn(&engine, &shutdown, tracker);
        if engine.config.ingest {
            let (me, p, t) = (engine.clone(), publisher.clone(), shutdown.clone());
            tracker.spawn(async move { ingest::run(me, p, t).await });
        }
        engine.remote.start(engine.clone(), shutdown, tracker).await;
        Ok(EngineParts {
            broker: engine.clone(),
            history: engine.clone(),
            presence: engine.presence.clone(),
            publisher,
            leases: engine.clone(),
        })
    }

    /// Connects both clients and checks the round trip once.
    async fn connect(
        config: RedisEngineConfig,
        hub: Arc<Hub>,
        channels: Arc<herald_core::ChannelsConfig>,
    ) -> Result<Arc<Self>, EngineError> {
        let fred_config = FredConfig::from_url(&config.url)
            .map_err(|e| EngineError::start("engine.url is not a Redis URL", e))?;
        // Hosts only: the URL may carry a password.
        let hosts = fred_config
            .server
            .hosts()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        let sharded = fred_config.server.is_clustered();
        let mut builder = Builder::from_config(fred_config);
        builder
            .set_policy(ReconnectPolicy::new_exponential(0, 100, 2_000, 2))
            .with_connection_config(|c| {
                c.connection_timeout = config.command_timeout;
                c.internal_command_timeout = config.command_timeout;
            })
            .with_performance_config(|p| {
                p.default_command_timeout = config.command_timeout;
            });
        let client = builder
            .build()
            .map_err(|e| EngineError::start("cannot build the Redis client", e))?;
        // fred gives each client eight broadcast channels of this capacity, allocated up
        // front; only the subscriber needs a deep one.
        builder.with_performance_config(|p| p.broadcast_channel_capacity = MESSAGE_BUFFER);
        let subscriber = builder
            .build_subscriber_client()
            .map_err(|e| EngineError::start("cannot build the Redis pub/sub client", e))?;
        let started = tokio::time::timeout(config.command_timeout * 3, async {
            client.init().await?;
            subscriber.init().await?;
            Ok::<_, RedisError>(())
        })
        .await;
        let unreachable = format!("cannot reach Redis at {hosts}");
        match started {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(EngineError::start(unreachable, e)),
            Err(_) => return Err(EngineError::start(unreachable, "timed out")),
        }
        let canary_channel = format!("{}:canary:{:016x}", config.prefix, fastrand::u64(..));
        let presence = Arc::new(RedisPresence::new(client.clone(), &config));
        let engine = Arc::new(Self {
            client,
            subscriber,
            remote: Remote::new::<Self>(hub),
            presence,
            channels,
            publish_script: Lua::new(scripts::PUBLISH),
            publish_once_script: Lua::new(scripts::PUBLISH_ONCE),
            read_script: Lua::new(scripts::READ),
            latest_script: Lua::new(scripts::READ_LATEST),
            count_latest_script: Lua::new(scripts::LATEST_COUNT),
            lease_hold_script: Lua::new(scripts::LEASE_HOLD),
            lease_release_script: Lua::new(scripts::LEASE_RELEASE),
            latest_counted: std::sync::Mutex::new(std::collections::HashSet::new()),
            canary_channel,
            canary_seen: AtomicU64::new(0),
            canary_arrived: Notify::new(),
            sharded,
            config,
        });
        engine
            .subscriber
            .subscribe(engine.canary_channel.as_str())
            .await
            .map_err(|e| EngineError::start(format!("cannot subscribe on Redis at {hosts}"), e))?;
        engine.remote.health().set_state(LinkState::Connected);
        Ok(engine)
    }
}
