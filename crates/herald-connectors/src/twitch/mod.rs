//! `[[connectors.twitch]]`: one Twitch account's EventSub WebSocket session and a Helix stats
//! poll become events on the account's channel, as the overlays of an OBS scene expect.
//!
//! - **EventSub** (`eventsub.rs`): on `session_welcome` the configured subscriptions are
//!   created through Helix; any message resets a keepalive watchdog (silence past the
//!   session's keepalive timeout plus a margin reconnects and subscribes again);
//!   `session_reconnect` opens the new socket, keeps reading the old one until the new
//!   welcome, then closes it, without re-creating subscriptions; revocations are logged,
//!   counted and shown. Each notification is published under its EventSub type with the
//!   event as data, with the idempotency key `twitch:MESSAGE_ID`, so a message Twitch
//!   delivers twice (or both sockets of a hand-off deliver) is published once, on any node.
//! - **Stats** (`helix.rs`): every `poll_interval` the stream, follower and subscriber
//!   counts are read and `stats` (`{live, viewers, followers, subs}`) is published when it
//!   changed; follows, new subscriptions and online/offline update it between polls (an
//!   ended subscription shows at the next poll). Give the channel's
//!   namespace `latest_state = "per_event"` so a widget opened late gets it at once.
//! - **Tokens**: the user token is refreshed before it expires and after a 401, and the
//!   rotated refresh token is written to `token_file`, so a restart needs no new login.

mod eventsub;
mod helix;

use crate::publish::{publish_keyed, Fate};
use crate::run::{pause, Backoff};
use herald_core::{ConnectorOutcome, ConnectorState, ConnectorStatus, Publisher, Secret, Source};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// The subscriptions created by default.
pub const DEFAULT_EVENTS: [&str; 7] = [
    "channel.follow",
    "channel.subscribe",
    "channel.subscription.gift",
    "channel.cheer",
    "channel.raid",
    "stream.online",
    "stream.offline",
];

/// One `[[connectors.twitch]]`: a broadcaster's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TwitchConfig {
    /// Names the connector in stats, logs and its lease.
    pub name: String,
    /// The application's client id.
    pub client_id: String,
    /// The application's client secret (to refresh the user token).
    pub client_secret: Secret,
    /// The broadcaster's user id.
    pub broadcaster_id: String,
    /// The broadcaster's login, for the channel template.
    pub broadcaster_login: String,
    /// The user access token the broadcaster authorized (first start; then `token_file`).
    pub access_token: Secret,
    /// Its refresh token.
    pub refresh_token: Secret,
    /// Where the refreshed tokens are kept across restarts (written 0600); empty: nowhere,
    /// and a restart after a refresh needs the new tokens in the configuration.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// The Herald channel, a template over `broadcaster_login` and `broadcaster_id`.
    #[serde(default = "default_channel")]
    pub channel: String,
    /// EventSub subscription types to create.
    #[serde(default = "default_events")]
    pub events: Vec<String>,
    /// How often the stats are read from Helix.
    #[serde(default = "default_poll", with = "humantime_serde")]
    pub poll_interval: Duration,
    /// The keepalive timeout asked of EventSub (10s to 600s).
    #[serde(default = "default_keepalive", with = "humantime_serde")]
    pub keepalive_timeout: Duration,
    /// The EventSub WebSocket URL.
    #[serde(default = "default_eventsub_url")]
    pub eventsub_url: String,
    /// The Helix API's base URL.
    #[serde(default = "default_helix_url")]
    pub helix_url: String,
    /// The OAuth base URL (`/token`, `/validate`).
    #[serde(default = "default_oauth_url")]
    pub oauth_url: String,
}

fn default_channel() -> String {
    "twitch:{broadcaster_login}".to_owned()
}
fn default_events() -> Vec<String> {
    DEFAULT_EVENTS.iter().map(|s| (*s).to_owned()).collect()
}
fn default_poll() -> Duration {
    Duration::from_secs(60)
}
fn default_keepalive() -> Duration {
    Duration::from_secs(10)
}
fn default_eventsub_url() -> String {
    "wss://eventsub.wss.twitch.tv/ws".to_owned()
}
fn default_helix_url() -> String {
    "https://api.twitch.tv/helix".to_owned()
}
fn default_oauth_url() -> String {
    "https://id.twitch.tv/oauth2".to_owned()
}

/// Every problem with the Twitch connectors, for `check-config`.
pub(crate) fn problems(configs: &[TwitchConfig], out: &mut Vec<String>) {
    for (i, c) in configs.iter().enumerate() {
        let at = format!("connectors.twitch[{i}]");
        for (what, v) in [
            ("client_id", c.client_id.as_str()),
            ("client_secret", &c.client_secret),
            ("broadcaster_id", c.broadcaster_id.as_str()),
            ("broadcaster_login", c.broadcaster_login.as_str()),
            ("access_token", &c.access_token),
            ("refresh_token", &c.refresh_token),
        ] {
            if v.is_empty() {
                out.push(format!("{at}.{what} must not be empty"));
            }
        }
        if !c.broadcaster_id.bytes().all(|b| b.is_ascii_digit()) {
            out.push(format!("{at}.broadcaster_id must be the numeric user id"));
        }
        if let Err(e) = herald_core::template::check(&c.channel) {
            out.push(format!("{at}.channel: {e}"));
        }
        if c.events.is_empty() {
            out.push(format!("{at}.events must name at least one EventSub type"));
        }
        for e in &c.events {
            if eventsub::version(e).is_none() {
                out.push(format!(
                    "{at}.events: {e:?} is not one Herald subscribes to ({})",
                    DEFAULT_EVENTS.join(", ")
                ));
            }
        }
        if c.poll_interval < Duration::from_secs(1) {
            out.push(format!("{at}.poll_interval must be at least 1s"));
        }
        if !(10..=600).contains(&c.keepalive_timeout.as_secs()) {
            out.push(format!("{at}.keepalive_timeout must be 10s to 600s"));
        }
        for (what, url, schemes) in [
            ("eventsub_url", &c.eventsub_url, ["ws://", "wss://"]),
            ("helix_url", &c.helix_url, ["http://", "https://"]),
            ("oauth_url", &c.oauth_url, ["http://", "https://"]),
        ] {
            if !schemes.iter().any(|s| url.starts_with(s)) {
                out.push(format!(
                    "{at}.{what} must start with {}",
                    schemes.join(" or ")
                ));
            }
        }
    }
}

/// What the overlays' stats widget shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Stats {
    live: bool,
    viewers: u64,
    followers: u64,
    subs: u64,
}

/// What the EventSub session and the poller share.
pub(crate) struct Account {
    config: Arc<TwitchConfig>,
    publisher: Arc<Publisher>,
    status: Arc<ConnectorStatus>,
    channel: String,
    helix: helix::Helix,
    /// The last stats published; `None` before the first poll.
    stats: Mutex<Option<Stats>>,
}

impl Account {
    /// Publishes a notification under its EventSub type, once per message id. True when it
    /// was published now (not a repeat, not refused).
    async fn publish_event(
        &self,
        message_id: &str,
        kind: &str,
        event: &Value,
    ) -> Result<bool, String> {
        let data = serde_json::value::to_raw_value(event).map_err(|e| e.to_string())?;
        let key = format!("twitch:{message_id}");
        let event = (self.channel.as_str(), Some(kind), data);
        match publish_keyed(&self.publisher, &self.status, Source::Twitch, event, &key).await {
            Fate::Done { new } => Ok(new),
            Fate::Rejected(reason) => {
                self.status.count(ConnectorOutcome::Rejected, 1);
                tracing::warn!(connector = %self.config.name, kind, reason, "Refused a Twitch notification.");
                Ok(false)
            }
            Fate::Retry(e) => Err(e),
        }
    }

    /// Applies `change` to the stats and publishes them when they changed (always the first
    /// time).
    async fn update_stats(&self, change: impl FnOnce(&mut Stats)) {
        let next = {
            let mut stats = self.stats.lock().unwrap_or_else(|p| p.into_inner());
            let before = *stats;
            let mut s = before.unwrap_or_default();
            change(&mut s);
            if before == Some(s) {
                return;
            }
            *stats = Some(s);
            s
        };
        let data = json!({
            "live": next.live,
            "viewers": next.viewers,
            "followers": next.followers,
            "subs": next.subs,
        });
        let Ok(data) = serde_json::value::to_raw_value(&data) else {
            return;
        };
        let mut backoff = Backoff::default();
        for _ in 0..5 {
            let Ok(prepared) = self
                .publisher
                .prepare(&self.channel, Some("stats"), data.clone())
            else {
                return;
            };
            match self.publisher.publish(prepared, Source::Twitch).await {
                Ok(_) => return,
                Err(e) => {
                    self.status.error(format!("publishing stats: {e}"));
                    tokio::time::sleep(backoff.next()).await;
                }
            }
        }
        // Not published: the next change or poll publishes the current stats again.
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

/// Runs the account until `token` is cancelled: the EventSub session and the stats poller.
pub(crate) async fn run(
    config: Arc<TwitchConfig>,
    publisher: Arc<Publisher>,
    status: Arc<ConnectorStatus>,
    token: CancellationToken,
) {
    let doc = json!({"broadcaster_login": config.broadcaster_login, "broadcaster_id": config.broadcaster_id});
    let channel = match herald_core::template::render(&config.channel, &doc) {
        Ok(c) => c,
        Err(e) => {
            status.error(format!("channel: {e}"));
            tracing::error!(connector = %config.name, error = %e, "The Twitch connector's channel template cannot be filled; it is stopped.");
            return;
        }
    };
    if let Ok(name) = herald_core::ChannelName::parse(&channel) {
        if publisher.retention(&name).latest.mode != herald_core::LatestState::PerEvent {
            tracing::warn!(connector = %config.name, channel, "The Twitch channel's namespace does not keep the latest state per event: a widget opened between changes waits for the next stats. Set latest_state = \"per_event\" on its namespace.");
        }
    }
    let account = Arc::new(Account {
        helix: helix::Helix::new(config.clone(), status.clone()),
        config,
        publisher,
        status,
        channel,
        stats: Mutex::new(None),
    });
    let polled = helix::poll(account.clone(), token.clone());
    let sessions = async {
        let mut backoff = Backoff::default();
        let mut first = true;
        while !token.is_cancelled() {
            account.status.set_state(ConnectorState::Connecting);
            if !first {
                account.status.reconnected();
            }
            first = false;
            match eventsub::session(&account, &token, &mut backoff).await {
                Ok(()) => break,
                Err(e) => {
                    account.status.error(&e);
                    let wait = backoff.next();
                    tracing::warn!(connector = %account.config.name, error = %e, retry_in = ?wait, "Twitch EventSub session ended; connecting again.");
                    if !pause(&token, wait).await {
                        break;
                    }
                }
            }
        }
    };
    tokio::join!(polled, sessions);
}
