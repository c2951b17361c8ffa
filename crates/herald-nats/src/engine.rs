//! `NatsEngine`: the broker and history store over JetStream and core NATS (see the crate docs
//! for the layout and the ordering argument), the state they share, and how subjects are named.
//! Set-up is in `setup.rs`, publishing in `publish.rs`, reads in `history.rs`, the per-channel
//! receive tasks and the presence refresher in `loops.rs`, and what the shared remote-engine
//! parts call in `remote.rs`.

use crate::config::NatsEngineConfig;
use crate::presence::NatsPresence;
use async_nats::jetstream::{self, kv, stream::Stream};
use async_nats::{Client, Subscriber};
use herald_core::{ChannelName, Remote};
use herald_protocol::Epoch;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Local publish locks (and one-entry caches of the last append), shared by channels by hash.
pub(crate) const STRIPES: usize = 256;

/// One namespace's history stream.
pub(crate) struct Namespace {
    pub(crate) stream: Stream,
    /// The subject token: the namespace in hex, or `_` for the default namespace.
    pub(crate) token: String,
    /// Publications kept per channel (0: the stream holds only each channel's position).
    pub(crate) retained: usize,
    /// `history_ttl` in milliseconds, applied when reading.
    pub(crate) ttl_ms: u64,
    /// The namespace's `latest_state`.
    pub(crate) latest: herald_core::LatestState,
    /// Its `latest_state_ttl` in milliseconds, applied when reading; `None` until replaced.
    pub(crate) latest_ttl_ms: Option<u64>,
}

/// A channel's last appended message: where the next publish continues.
#[derive(Debug)]
pub(crate) struct Tip {
    pub(crate) epoch: Epoch,
    pub(crate) offset: u64,
    pub(crate) seq: u64,
}

pub(crate) type Stripe = tokio::sync::Mutex<Option<(ChannelName, Tip)>>;

/// The NATS broker and history store; see the crate docs. Started with
/// [`NatsEngine::start`].
pub struct NatsEngine {
    pub(crate) config: NatsEngineConfig,
    pub(crate) client: Client,
    pub(crate) js: jetstream::Context,
    pub(crate) default_ns: Namespace,
    pub(crate) namespaces: HashMap<String, Namespace>,
    pub(crate) epochs: kv::Store,
    /// Latest state, apart from history (`latest.rs`).
    pub(crate) latest_stream: Stream,
    /// The channels keeping latest state, one key each (`latest.rs`).
    pub(crate) latest_channels: kv::Store,
    /// The stream of `latest_channels`, whose message count is the number of channels.
    pub(crate) latest_channels_stream: Stream,
    /// Channels this node has counted in `latest_channels`.
    pub(crate) latest_counted: Mutex<std::collections::HashSet<ChannelName>>,
    /// Leases of pulled sources (see `lease.rs`).
    pub(crate) leases: kv::Store,
    pub(crate) presence: Arc<NatsPresence>,
    /// What this engine shares with the other remote engines' parts: delivery, health,
    /// subscriptions, recovery.
    pub(crate) remote: Arc<Remote>,
    /// The receive task of each channel this node receives, stopped through its token.
    pub(crate) subs: Mutex<HashMap<ChannelName, CancellationToken>>,
    pub(crate) stripes: Box<[Stripe]>,
    pub(crate) hasher: RandomState,
    pub(crate) canary_subject: String,
    /// This node's canary subscription; one round trip at a time.
    pub(crate) canary: tokio::sync::Mutex<Subscriber>,
    /// Per-channel receive tasks, stopped through `stop` when the engine closes.
    pub(crate) tasks: TaskTracker,
    pub(crate) stop: CancellationToken,
}

impl fmt::Debug for NatsEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsEngine")
            .field("url", &self.config.url)
            .field("prefix", &self.config.prefix)
            .field("subscriptions", &lock(&self.subs).len())
            .finish_non_exhaustive()
    }
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl NatsEngine {
    pub(crate) fn timeout(&self) -> Duration {
        self.config.command_timeout
    }

    pub(crate) fn namespace(&self, channel: &ChannelName) -> &Namespace {
        self.namespaces
            .get(channel.namespace())
            .unwrap_or(&self.default_ns)
    }

    pub(crate) fn history_subject(&self, ns: &Namespace, chan: &str) -> String {
        format!("{}.h.{}.{chan}", self.config.prefix, ns.token)
    }

    pub(crate) fn fanout_subject(&self, chan: &str) -> String {
        format!("{}.f.{chan}", self.config.prefix)
    }

    pub(crate) fn stripe(&self, channel: &ChannelName) -> &Stripe {
        &self.stripes[(self.hasher.hash_one(channel.as_str()) as usize) % STRIPES]
    }
}
