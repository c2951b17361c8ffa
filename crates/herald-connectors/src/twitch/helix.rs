//! Helix calls with the broadcaster's user token, and the stats poll.
//!
//! The token is checked (`/validate`) on first use to learn when it expires, refreshed a
//! minute before that and after any 401 (one retry), and each refresh's rotated pair is
//! written to `token_file` before it is used, so a restart continues with it.

use super::{Account, TwitchConfig};
use herald_core::ConnectorStatus;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// How long before its expiry a token is refreshed.
const REFRESH_AHEAD: Duration = Duration::from_secs(60);
/// Longest wait for one Helix or OAuth call.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// The user token pair, as kept in `token_file`.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Tokens {
    access_token: String,
    refresh_token: String,
    /// Unix milliseconds; `None` until validated or refreshed.
    #[serde(default)]
    expires_at_ms: Option<u64>,
}

/// A Helix client for one account.
pub(crate) struct Helix {
    config: Arc<TwitchConfig>,
    status: Arc<ConnectorStatus>,
    http: reqwest::Client,
    tokens: tokio::sync::Mutex<Tokens>,
}

impl Helix {
    /// A client starting from `token_file` when it holds tokens, else from the configured ones.
    pub(crate) fn new(config: Arc<TwitchConfig>, status: Arc<ConnectorStatus>) -> Self {
        let saved = config.token_file.as_ref().and_then(|path| {
            let text = std::fs::read_to_string(path).ok()?;
            match serde_json::from_str::<Tokens>(&text) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(connector = %config.name, file = %path.display(), error = %e, "The Twitch token file cannot be read; starting from the configured tokens.");
                    None
                }
            }
        });
        let tokens = saved.unwrap_or_else(|| Tokens {
            access_token: config.access_token.to_string(),
            refresh_token: config.refresh_token.to_string(),
            expires_at_ms: None,
        });
        Self {
            http: reqwest::Client::builder()
                .timeout(CALL_TIMEOUT)
                .build()
                .unwrap_or_default(),
            config,
            status,
            tokens: tokio::sync::Mutex::new(tokens),
        }
    }

    /// A token to call with: validated once, refreshed when it is about to expire.
    async fn access(&self) -> Result<String, String> {
        let mut tokens = self.tokens.lock().await;
        if tokens.expires_at_ms.is_none() {
            let resp = self
                .http
                .get(format!("{}/validate", self.config.oauth_url))
                .header("authorization", format!("OAuth {}", tokens.access_token))
                .send()
                .await
                .map_err(|e| format!("validating the token: {e}"))?;
            if resp.status() != StatusCode::OK {
                self.refresh_locked(&mut tokens).await?;
                return Ok(tokens.access_token.clone());
            }
            let v: Value = resp.json().await.map_err(|e| e.to_string())?;
            let secs = v["expires_in"].as_u64().unwrap_or(0);
            tokens.expires_at_ms = Some(herald_core::now_ms() + secs * 1000);
        }
        // A token about to expire is refreshed before it is handed out, also right after its
        // first check: handing it out would leave that call racing the next one's refresh.
        let refresh_at = tokens
            .expires_at_ms
            .map_or(0, |at| at.saturating_sub(REFRESH_AHEAD.as_millis() as u64));
        if refresh_at <= herald_core::now_ms() {
            self.refresh_locked(&mut tokens).await?;
        }
        Ok(tokens.access_token.clone())
    }

    /// Refreshes after a 401 on `stale`, unless another call already did.
    async fn refresh(&self, stale: &str) -> Result<(), String> {
        let mut tokens = self.tokens.lock().await;
        if tokens.access_token != stale {
            return Ok(());
        }
        self.refresh_locked(&mut tokens).await
    }

    async fn refresh_locked(&self, tokens: &mut Tokens) -> Result<(), String> {
        let resp = self
            .http
            .post(format!("{}/token", self.config.oauth_url))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens.refresh_token.as_str()),
                ("client_id", self.config.client_id.as_str()),
                ("client_secret", &self.config.client_secret),
            ])
            .send()
            .await
            .map_err(|e| format!("refreshing the token: {e}"))?;
        let status = resp.status();
        let v: Value = resp.json().await.unwrap_or(Value::Null);
        let (Some(access), Some(refresh)) =
            (v["access_token"].as_str(), v["refresh_token"].as_str())
        else {
            return Err(format!(
                "refreshing the token failed ({status}): {}; the broadcaster must authorize again",
                v["message"].as_str().unwrap_or("no token in the answer")
            ));
        };
        let next = Tokens {
            access_token: access.to_owned(),
            refresh_token: refresh.to_owned(),
            expires_at_ms: v["expires_in"]
                .as_u64()
                .map(|s| herald_core::now_ms() + s * 1000),
        };
        if let Some(path) = &self.config.token_file {
            save(path, &next)
                .map_err(|e| format!("writing the refreshed tokens to {}: {e}", path.display()))?;
        }
        *tokens = next;
        self.status.add("token_refreshes", 1);
        tracing::info!(connector = %self.config.name, "Refreshed the Twitch user token.");
        Ok(())
    }

    /// Calls Helix at `path` (below `helix_url`), refreshing the token and retrying once
    /// after a 401. Returns the status and the JSON body (`null` when there is none).
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Value), String> {
        let mut retried = false;
        loop {
            let token = self.access().await?;
            let mut req = self
                .http
                .request(method.clone(), format!("{}{path}", self.config.helix_url))
                .bearer_auth(&token)
                .header("client-id", &self.config.client_id);
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = req.send().await.map_err(|e| format!("Helix {path}: {e}"))?;
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !retried {
                retried = true;
                tracing::info!(connector = %self.config.name, path, "Helix answered 401; refreshing the token.");
                self.refresh(&token).await?;
                continue;
            }
            let v = resp.json().await.unwrap_or(Value::Null);
            return Ok((status, v));
        }
    }

    /// GETs `path`, failing unless 200.
    async fn get(&self, path: &str) -> Result<Value, String> {
        match self.call(Method::GET, path, None).await? {
            (StatusCode::OK, v) => Ok(v),
            (status, v) => Err(format!("Helix {path} answered {status}: {v}")),
        }
    }
}

/// Writes `tokens` to `path` (0600) through a temporary file renamed over it.
fn save(path: &std::path::Path, tokens: &Tokens) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(serde_json::to_string(tokens).unwrap_or_default().as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Reads the stats every `poll_interval` and publishes them when they changed.
pub(crate) async fn poll(account: Arc<Account>, token: CancellationToken) {
    let mut tick = tokio::time::interval(account.config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = token.cancelled() => return,
            _ = tick.tick() => {}
        }
        match read_stats(&account).await {
            Ok((live, viewers, followers, subs)) => {
                account
                    .update_stats(|s| {
                        s.live = live;
                        s.viewers = viewers;
                        s.followers = followers;
                        s.subs = subs;
                    })
                    .await;
            }
            Err(e) => {
                account.status.error(&e);
                tracing::warn!(connector = %account.config.name, error = %e, "Reading the Twitch stats failed; trying again at the next poll.");
            }
        }
    }
}

async fn read_stats(account: &Account) -> Result<(bool, u64, u64, u64), String> {
    let id = &account.config.broadcaster_id;
    let helix = &account.helix;
    let streams = helix.get(&format!("/streams?user_id={id}")).await?;
    let stream = streams["data"].as_array().and_then(|d| d.first());
    let followers = helix
        .get(&format!("/channels/followers?broadcaster_id={id}"))
        .await?;
    let subs = helix
        .get(&format!("/subscriptions?broadcaster_id={id}"))
        .await?;
    Ok((
        stream.is_some(),
        stream.and_then(|s| s["viewer_count"].as_u64()).unwrap_or(0),
        followers["total"].as_u64().unwrap_or(0),
        subs["total"].as_u64().unwrap_or(0),
    ))
}
